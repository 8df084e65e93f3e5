"""The FP4 core on the chip's data path: FP4 weight words in the weight buffer, an engine running each FP4 tile
from the weight and act buffers on lowbit.rtl.fp4.Fp4Core, its accumulators to psum (docs/rtl.md "Data path").

FP4 weight word (DESIGN ASSUMPTION: a word is what the core takes in a beat, so a beat is one buffer read): the
`lanes * E` E2M1 codes of the beat (E = fp4.elems_per_cycle; 4 bits each, element i = lane * E + e at bits
4i .. 4i + 3), then the `lanes * S` block scale codes (S = max(1, E / block); 8 bits each, lane l's j-th block
of the beat at byte l * S + j after the codes; for E < block the current block's scale on each of its beats):
`lanes * (4 E + 8 S)` bits, 108 bytes on vitallm-fp4 (NVFP4, 6 lanes x 32 elements: 96 bytes of codes, 12 of
E4M3 scales). The word is little-endian in DRAM, as a TINT word.

Tile layout in DRAM and in the weight buffer (`fp4_tile_words`), the TINT tile's order: pass p, then beat b,
lane l holds row p * lanes + l, elements b * E .. b * E + E - 1 of the deployed tensor (sim.numerics.mx
NVFP4Tensor / MXFP4Tensor: codes and block scales; rows and the tail beat padded with code 0 and scale code 0,
which contribute exactly 0), so a tile of `rows` x `k` weights is passes * beats consecutive words. The tensor
scale is not in the word: it is folded into the requantizer's constant (lowbit.sim.golden_fp4).

A tile on `Fp4Engine` walks its beats as TintEngine does (lowbit.rtl.chip_data.TileWalk: pass (t, g), t over
tokens, g over row groups; weight words w_addr + g * beats + b, act words a_addr + t * a_stride + b of E INT8),
reads are presented in the cycle before the core consumes them (synchronous read ports), lanes beyond the last
group's `tail_lanes` read code 0 / scale 0, and each pass's `lanes` accumulators go to psum at p_addr + pass.
Cycles start -> done are the core's, sim.units.fp4.fp4_tile_cycles with passes = tokens * groups; results are
sim.numerics.fp4dot.fp4_block_dot's (saturating, right shifts floor), i.e. the FP4 golden's accumulators.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from lowbit.rtl.chip_data import BankedBuffer, TileWalk, psum_writes
from lowbit.rtl.common import COUNT_BITS, delay
from lowbit.rtl.fp4 import Fp4Core
from lowbit.sim.config import Fp4Config
from lowbit.sim.numerics.mx import MXFP4Tensor, NVFP4Tensor
from lowbit.sim.units.fp4 import fp4_latency

__all__ = ["fp4_word_bits", "fp4_tile_words", "pack_fp4_words", "pack_fp4_tile", "fp4_psum_layout", "Fp4Engine", "Fp4TileDatapath"]


def _scales_per_beat(cfg: Fp4Config) -> int:
    return max(1, cfg.elems_per_cycle // cfg.block)


def fp4_word_bits(cfg: Fp4Config) -> int:
    """Bits of an FP4 weight word: lanes * (4 E + 8 S) (module docstring)."""
    return cfg.lanes * (4 * cfg.elems_per_cycle + 8 * _scales_per_beat(cfg))


def fp4_tile_words(t: NVFP4Tensor | MXFP4Tensor, cfg: Fp4Config) -> tuple[np.ndarray, np.ndarray]:
    """A deployed FP4 tensor [rows, k] in tile order: (E2M1 codes [words, lanes * E], scale codes
    [words, lanes * S]), uint8, one row per buffer word (module docstring)."""
    if (t.block, isinstance(t, NVFP4Tensor)) != (cfg.block, cfg.format == "nvfp4"):
        raise ValueError(f"a {type(t).__name__} of block {t.block} on an {cfg.format} core")
    rows, k = t.shape
    n, e, blk, s = cfg.lanes, cfg.elems_per_cycle, cfg.block, _scales_per_beat(cfg)
    passes, beats = -(-rows // n), -(-k // e)
    codes = np.zeros((passes * n, beats * e), np.uint8)
    codes[:rows, :k] = t.codes[:, :k]
    nb = -(-beats * e // blk)
    sc = np.zeros((passes * n, max(nb, beats * s)), np.uint8)
    sc[:rows, :t.scales.shape[1]] = t.scales
    if e >= blk:
        per_beat = sc[:, :beats * s].reshape(passes * n, beats, s)
    else:  # a block spans blk / e beats: its scale on each
        per_beat = sc[:, (np.arange(beats) * e) // blk][..., None]
    c = codes.reshape(passes, n, beats, e).transpose(0, 2, 1, 3).reshape(passes * beats, n * e)
    p = per_beat.reshape(passes, n, beats, s).transpose(0, 2, 1, 3).reshape(passes * beats, n * s)
    return c, p


def pack_fp4_words(codes: np.ndarray, scales: np.ndarray, cfg: Fp4Config) -> bytes:
    """FP4 weight words (codes [words, lanes * E], scale codes [words, lanes * S]) as DRAM bytes, little-endian
    word after word (module docstring)."""
    bits = fp4_word_bits(cfg)
    if bits % 8:
        raise ValueError(f"an FP4 weight word of {bits} bits is not a whole number of bytes")
    base = 4 * cfg.lanes * cfg.elems_per_cycle
    out = []
    for cw, sw in zip(codes, scales, strict=True):
        v = sum(int(c) << (4 * i) for i, c in enumerate(cw))
        v |= sum(int(x) << (base + 8 * j) for j, x in enumerate(sw))
        out.append(v.to_bytes(bits // 8, "little"))
    return b"".join(out)


def pack_fp4_tile(t: NVFP4Tensor | MXFP4Tensor, cfg: Fp4Config) -> bytes:
    """The DRAM bytes of an FP4 weight tile: pack_fp4_words of fp4_tile_words."""
    return pack_fp4_words(*fp4_tile_words(t, cfg), cfg)


def fp4_psum_layout(cfg: Fp4Config) -> data.StructLayout:
    """A psum word of the FP4 core: one pass's `lanes` accumulators and their sticky overflow flags."""
    return data.StructLayout({"acc": data.ArrayLayout(signed(cfg.acc_bits), cfg.lanes), "ovf": cfg.lanes})


class Fp4Engine(wiring.Component):
    """One FP4 core with its address generators (module docstring): weight and act read ports (`w_raddr` /
    `w_rdata`, `a_raddr` / `a_rdata`, data the cycle after the address), each pass's results to psum (`p_*`).
    `done_next` is high in the cycle before `done` (start + fp4_tile_cycles), as TintEngine's."""

    def __init__(self, cfg: Fp4Config, *, w_bits: int, a_bits: int, p_bits: int) -> None:
        self.cfg = cfg
        n = cfg.lanes
        super().__init__({
            "start": In(1),
            "beats": In(COUNT_BITS), "groups": In(COUNT_BITS), "tokens": In(COUNT_BITS),
            "tail_lanes": In(range(n + 1)),
            "w_addr": In(w_bits), "a_addr": In(a_bits), "a_stride": In(COUNT_BITS), "p_addr": In(p_bits),
            "ready": Out(1), "done": Out(1), "done_next": Out(1),
            "w_raddr": Out(w_bits),
            "w_rdata": In(fp4_word_bits(cfg)),
            "a_raddr": Out(a_bits),
            "a_rdata": In(data.ArrayLayout(signed(8), cfg.elems_per_cycle)),
            "p_valid": Out(1),
            "p_addr_o": Out(p_bits),
            "p_acc": Out(data.ArrayLayout(signed(cfg.acc_bits), n)),
            "p_ovf": Out(n),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        n, e, s = cfg.lanes, cfg.elems_per_cycle, _scales_per_beat(cfg)
        m.submodules.core = core = Fp4Core(cfg)
        go = Signal()
        m.d.comb += go.eq(self.start & core.ready & (self.beats != 0) & (self.groups != 0) & (self.tokens != 0))
        self.tail_step = Const(1, 1)  # every word is one buffer unit, the last row group's too
        walk = TileWalk(m, self, go, w_step=1, a_step=1, tail=True)
        m.d.comb += self.done_next.eq(delay(m, walk.last_rd, fp4_latency(cfg), "fin"))
        m.d.comb += [self.w_raddr.eq(walk.wa), self.a_raddr.eq(walk.aa)]
        mask = Signal(n)  # lanes of the word read this cycle that hold no row (applied when it arrives)
        for lane in range(n):
            m.d.sync += mask[lane].eq(walk.last_g & (walk.tail_lanes <= lane))
        m.d.comb += [core.start.eq(go), core.beats.eq(self.beats), core.passes.eq(self.groups * self.tokens),
                     self.ready.eq(core.ready & ~walk.busy), core.act.eq(self.a_rdata)]
        base = 4 * n * e
        for i in range(n * e):
            m.d.comb += core.codes[i].eq(Mux(mask[i // e], 0, self.w_rdata[4 * i:4 * i + 4]))
        for j in range(n * s):
            m.d.comb += core.scales[j].eq(Mux(mask[j // s], 0, self.w_rdata[base + 8 * j:base + 8 * j + 8]))
        psum_writes(m, self, go, core)
        return m


class Fp4TileDatapath(wiring.Component):
    """Weight, act and psum buffers of `depth` words each and one Fp4Engine computing tiles from them (the
    standalone check of the engine; the weight buffer is two banks of one word a unit, written a word a cycle
    with `fill_*`)."""

    def __init__(self, cfg: Fp4Config, *, depth: int = 256) -> None:
        self.cfg, self.depth = cfg, depth
        n, e = cfg.lanes, cfg.elems_per_cycle
        ab = (depth - 1).bit_length()
        super().__init__({
            "fill_valid": In(1), "fill_addr": In(ab), "fill_data": In(fp4_word_bits(cfg)),
            "fill_count": In(range(3)),  # words of this write (1; 0 writes nothing)
            "act_valid": In(1), "act_addr": In(ab), "act_data": In(data.ArrayLayout(signed(8), e)),
            "start": In(1), "beats": In(COUNT_BITS), "passes": In(COUNT_BITS), "tokens": In(COUNT_BITS),
            "a_stride": In(COUNT_BITS), "tail_lanes": In(range(n + 1)),
            "w_addr": In(ab), "a_addr": In(ab), "p_addr": In(ab),
            "ready": Out(1), "done": Out(1), "done_next": Out(1),
            "psum_addr": In(ab),
            "psum_data": Out(data.ArrayLayout(signed(cfg.acc_bits), n)),
            "psum_ovf": Out(n),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        ab = len(self.w_addr)
        m.submodules.wbuf = wbuf = BankedBuffer(depth=self.depth, banks=2, unit_bits=fp4_word_bits(cfg))
        m.submodules.abuf = abuf = Memory(shape=data.ArrayLayout(signed(8), cfg.elems_per_cycle), depth=self.depth,
                                          init=[])
        m.submodules.pbuf = pbuf = Memory(shape=fp4_psum_layout(cfg), depth=self.depth, init=[])
        m.submodules.eng = eng = Fp4Engine(cfg, w_bits=ab, a_bits=ab, p_bits=ab)
        aw, ar = abuf.write_port(), abuf.read_port()
        pw, pr = pbuf.write_port(), pbuf.read_port()
        m.d.comb += [wbuf.wr_valid.eq(self.fill_valid), wbuf.wr_addr.eq(self.fill_addr), wbuf.wr_count.eq(self.fill_count),
                     wbuf.wr_data[0].eq(self.fill_data),
                     aw.en.eq(self.act_valid), aw.addr.eq(self.act_addr), aw.data.eq(self.act_data),
                     pr.addr.eq(self.psum_addr), self.psum_data.eq(pr.data.acc), self.psum_ovf.eq(pr.data.ovf)]
        m.d.comb += [eng.start.eq(self.start), eng.beats.eq(self.beats), eng.groups.eq(self.passes),
                     eng.tokens.eq(self.tokens), eng.w_addr.eq(self.w_addr), eng.a_addr.eq(self.a_addr),
                     eng.a_stride.eq(self.a_stride), eng.p_addr.eq(self.p_addr),
                     eng.tail_lanes.eq(self.tail_lanes),
                     self.ready.eq(eng.ready), self.done.eq(eng.done), self.done_next.eq(eng.done_next),
                     wbuf.raddr[0].eq(eng.w_raddr), eng.w_rdata.eq(wbuf.rdata0),
                     ar.addr.eq(eng.a_raddr), eng.a_rdata.eq(ar.data),
                     pw.en.eq(eng.p_valid), pw.addr.eq(eng.p_addr_o), pw.data.acc.eq(eng.p_acc),
                     pw.data.ovf.eq(eng.p_ovf)]
        return m
