"""The FP4 core on the chip's data path: FP4 weight words in the weight buffer, an engine running each FP4 tile
from the weight and act buffers on lowbit.rtl.fp4.Fp4Core, its accumulators to psum (docs/rtl.md "Data path").

FP4 weight word (DESIGN ASSUMPTION: a word is what the core takes in a beat, so a beat is one buffer read): lane
after lane, each lane `4 E + 8 S` bits: its E E2M1 codes of the beat (E = fp4.elems_per_cycle; 4 bits each,
element e at bits 4e .. 4e + 3 of the lane) then its S block scale codes (S = max(1, E / block); 8 bits each; for
E < block the current block's scale on each of its beats). `lanes * (4 E + 8 S)` bits, 108 bytes on vitallm-fp4
(NVFP4, 6 lanes of 32 codes and 2 E4M3 scales: 18 bytes a lane, 4.5 bits a weight, the program's NVFP4 byte
count). Little-endian in DRAM, as a TINT word; a tile's last row group's words hold its rows' lanes only (a
prefix of a full word), so a tile is exactly the program's bytes.

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

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Module, Mux, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.chip_data import BankedBuffer, psum_writes, start_tile, wire_tile_datapath
from lowbit.rtl.common import COUNT_BITS
from lowbit.rtl.fp4 import Fp4Core
from lowbit.sim.config import Fp4Config
from lowbit.sim.numerics.mx import MXFP4Tensor, NVFP4Tensor
from lowbit.sim.units.fp4 import fp4_latency

__all__ = ["fp4_word_bits", "fp4_lane_bits", "fp4_tile_words", "pack_fp4_words", "pack_fp4_tile", "fp4_psum_layout", "Fp4Engine", "Fp4TileDatapath",
           "Fp4Tile", "fp4_program_tiles", "fp4_rows", "fp4_data_dims", "fp4_data_plan"]


def _scales_per_beat(cfg: Fp4Config) -> int:
    return max(1, cfg.elems_per_cycle // cfg.block)


def fp4_word_bits(cfg: Fp4Config) -> int:
    """Bits of an FP4 weight word: lanes * (4 E + 8 S) (module docstring)."""
    return cfg.lanes * fp4_lane_bits(cfg)


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


def fp4_lane_bits(cfg: Fp4Config) -> int:
    """Bits of one lane of an FP4 weight word: 4 E + 8 S."""
    return 4 * cfg.elems_per_cycle + 8 * _scales_per_beat(cfg)


def pack_fp4_words(codes: np.ndarray, scales: np.ndarray, cfg: Fp4Config, lanes: int | None = None) -> bytes:
    """FP4 weight words (codes [words, lanes * E], scale codes [words, lanes * S]) as DRAM bytes, little-endian
    word after word (module docstring); `lanes` < cfg.lanes packs only the first lanes of each word (a last
    row group's words)."""
    n = cfg.lanes if lanes is None else lanes
    lb, e, s = fp4_lane_bits(cfg), cfg.elems_per_cycle, _scales_per_beat(cfg)
    if lb * n % 8:
        raise ValueError(f"an FP4 weight word of {n} lanes x {lb} bits is not a whole number of bytes")
    out = []
    for cw, sw in zip(codes, scales, strict=True):
        v = 0
        for lane in range(n):
            lv = sum(int(c) << (4 * i) for i, c in enumerate(cw[lane * e:(lane + 1) * e]))
            lv |= sum(int(x) << (4 * e + 8 * j) for j, x in enumerate(sw[lane * s:(lane + 1) * s]))
            v |= lv << (lane * lb)
        out.append(v.to_bytes(lb * n // 8, "little"))
    return b"".join(out)


def pack_fp4_tile(t: NVFP4Tensor | MXFP4Tensor, cfg: Fp4Config) -> bytes:
    """The DRAM bytes of an FP4 weight tile: pack_fp4_words of fp4_tile_words, the last row group's words with
    its rows' lanes only."""
    codes, scales = fp4_tile_words(t, cfg)
    rows = t.shape[0]
    groups, beats = -(-rows // cfg.lanes), len(codes) // -(-rows // cfg.lanes)
    tail = rows - (groups - 1) * cfg.lanes
    cut = (groups - 1) * beats
    return pack_fp4_words(codes[:cut], scales[:cut], cfg) + pack_fp4_words(codes[cut:], scales[cut:], cfg, tail)


def fp4_psum_layout(cfg: Fp4Config) -> data.StructLayout:
    """A psum word of the FP4 core: one pass's `lanes` accumulators and their sticky overflow flags."""
    return data.StructLayout({"acc": data.ArrayLayout(signed(cfg.acc_bits), cfg.lanes), "ovf": cfg.lanes})


class Fp4Engine(wiring.Component):
    """One FP4 core with its address generators (module docstring): weight and act read ports (`w_raddr` /
    `w_rdata`, `a_raddr` / `a_rdata`, data the cycle after the address), each pass's results to psum (`p_*`).
    `done_next` is high in the cycle before `done` (start + fp4_tile_cycles), as TintEngine's."""

    def __init__(self, cfg: Fp4Config, *, w_bits: int, a_bits: int, p_bits: int, w_step: int = 1) -> None:
        self.cfg, self.w_step = cfg, w_step
        n = cfg.lanes
        super().__init__({
            "start": In(1),
            "beats": In(COUNT_BITS), "groups": In(COUNT_BITS), "tokens": In(COUNT_BITS),
            "tail_lanes": In(range(n + 1)), "tail_step": In(range(w_step + 1)),
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
        go, mask = start_tile(m, self, core, fp4_latency(cfg))
        lb = fp4_lane_bits(cfg)
        for i in range(n * e):
            at = (i // e) * lb + 4 * (i % e)
            m.d.comb += core.codes[i].eq(Mux(mask[i // e], 0, self.w_rdata[at:at + 4]))
        for j in range(n * s):
            at = (j // s) * lb + 4 * e + 8 * (j % s)
            m.d.comb += core.scales[j].eq(Mux(mask[j // s], 0, self.w_rdata[at:at + 8]))
        psum_writes(m, self, go, core)
        return m


class Fp4TileDatapath(wiring.Component):
    """Weight, act and psum buffers of `depth` entries each and one Fp4Engine computing tiles from them (the
    standalone check of the engine). The weight buffer is `banks` banks of `unit_bytes` units (default: a word a
    unit, two banks), written a memory-port beat at a time with `fill_*` (`fill_count` units from unit address
    `fill_addr`, lowbit.rtl.chip_data.BankedBuffer); a word is `word_units` consecutive units at any unit
    address, a last row group's word `tail_step` units."""

    def __init__(self, cfg: Fp4Config, *, depth: int = 256, banks: int = 2, unit_bytes: int | None = None) -> None:
        self.cfg, self.depth, self.banks = cfg, depth, banks
        n, e = cfg.lanes, cfg.elems_per_cycle
        wbits = fp4_word_bits(cfg)
        self.unit_bits = wbits if unit_bytes is None else 8 * unit_bytes
        assert wbits % self.unit_bits == 0
        self.word_units = wbits // self.unit_bits
        ab = (depth - 1).bit_length()
        super().__init__({
            "fill_valid": In(1), "fill_addr": In(ab),
            "fill_data": In(data.ArrayLayout(unsigned(self.unit_bits), banks)),
            "fill_count": In(range(banks + 1)),  # units of this beat (0 writes nothing)
            "act_valid": In(1), "act_addr": In(ab), "act_data": In(data.ArrayLayout(signed(8), e)),
            "start": In(1), "beats": In(COUNT_BITS), "passes": In(COUNT_BITS), "tokens": In(COUNT_BITS),
            "a_stride": In(COUNT_BITS), "tail_lanes": In(range(n + 1)), "tail_step": In(range(self.word_units + 1)),
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
        m.submodules.wbuf = wbuf = BankedBuffer(depth=self.depth, banks=self.banks, unit_bits=self.unit_bits,
                                                word_units=(self.word_units,))
        m.submodules.eng = eng = Fp4Engine(cfg, w_bits=ab, a_bits=ab, p_bits=ab, w_step=self.word_units)
        m.d.comb += wbuf.wr_data.eq(self.fill_data)
        wire_tile_datapath(m, self, wbuf, eng, data.ArrayLayout(signed(8), cfg.elems_per_cycle), fp4_psum_layout(cfg))
        return m


@dataclass(frozen=True)
class Fp4Tile:
    """One FP4 compute word of a program as a tile (`fp4_program_tiles`): its op, step, shape, engine fields,
    the weight DMA it releases and the rows of the op's matrix that DMA's bytes hold."""

    word: int
    op: str
    step: int
    rows: int
    k: int
    tokens: int
    beats: int
    groups: int
    tail_lanes: int
    dma: tuple[int, int]
    addr: int
    nbytes: int
    row0: int


def fp4_program_tiles(img, cfg) -> tuple[list[Fp4Tile], str]:
    """The FP4 queue's words of a program image as tiles, or ([], why not): the shape from the word's fields
    (lowbit.rtl.chip_golden.tile_shape: sim.lower's macs / rbytes2 / wbytes accounting), checked against its
    `cyc` (sim.units.fp4.fp4_tile_cycles with passes = tokens * groups) and its weight DMA's bytes (the packed
    tile, module docstring); the first row is the DMA's DRAM offset from the op's lowest weight address over
    the bytes of a row (beats * (4 E + 8 S) / 8)."""
    from lowbit.rtl.chip_golden import tile_shape
    from lowbit.sim.isa import C_FP4
    from lowbit.sim.units.fp4 import fp4_tile_cycles

    f = cfg.fp4
    q = next((i for i, c in enumerate(img.classes) if c == C_FP4), None)
    if q is None:
        return [], "the design has no FP4 core"
    lb = fp4_lane_bits(f)
    base: dict[str, int] = {}
    for w in img.words[q]:
        if w.get("free") and "free_q" in w:
            base[w["op"]] = min(base.get(w["op"], 1 << 62), img.words[w["free_q"]][w["free_i"]]["addr"])
    out = []
    for i, w in enumerate(img.words[q]):
        shape = tile_shape(w)
        if shape is None or "free_q" not in w:
            return [], f"fp4 word {i}: no projection tile shape (macs {w.get('macs')}, rbytes2 {w.get('rbytes2')})"
        rows, k, tokens = shape
        beats, groups = -(-k // f.elems_per_cycle), -(-rows // f.lanes)
        if fp4_tile_cycles(f, k, tokens * groups) != w["cyc"]:
            return [], f"fp4 word {i}: {rows} x {k} x {tokens} tokens is not its {w['cyc']} cycles"
        d = img.words[w["free_q"]][w["free_i"]]
        if d["nbytes"] * 8 != rows * beats * lb:
            return [], f"fp4 word {i}: its weight DMA's {d['nbytes']} bytes are not a {rows} x {k} FP4 tile"
        off = (d["addr"] - base[w["op"]]) * 8
        if off % (beats * lb):
            return [], f"fp4 word {i}: DRAM byte {d['addr']} is no whole row of '{w['op']}'"
        out.append(Fp4Tile(i, w["op"], w["step"], rows, k, tokens, beats, groups, rows - (groups - 1) * f.lanes,
                           (w["free_q"], w["free_i"]), d["addr"], d["nbytes"], off // (beats * lb)))
    return out, ""


def fp4_rows(t: NVFP4Tensor | MXFP4Tensor, r0: int, n: int) -> NVFP4Tensor | MXFP4Tensor:
    """Rows r0 .. r0 + n - 1 of a deployed FP4 tensor (a tile's weights)."""
    k = t.shape[1]
    if isinstance(t, NVFP4Tensor):
        return NVFP4Tensor(t.codes[r0:r0 + n], t.scales[r0:r0 + n], t.tensor_scale, (n, k), t.block)
    return MXFP4Tensor(t.codes[r0:r0 + n], t.scales[r0:r0 + n], (n, k), t.block)


def fp4_data_dims(cfg, banks: int | None = None):
    """The data path's geometry on a design whose projections run on the FP4 core (lowbit.rtl.chip_data.data_dims'
    rules with the FP4 weight word): units of gcd(word bytes, weight ring bytes), `banks` (default: a power of two
    >= 2, >= a word's units and >= the DRAM's peak bytes a cycle in units), act words of E INT8, one psum bank of
    `lanes` 4-byte results a word; the kv buffer holds data where its capacity is a power-of-two number of units
    (>= banks, <= the weight buffer's; data_dims' rule). (DataDims, '') or (None, why not)."""
    import math

    from lowbit.rtl.chip_data import DataDims, _pow2_floor
    from lowbit.sim.sram import Buffers

    f = cfg.fp4
    if fp4_word_bits(f) % 8:
        return None, f"an FP4 weight word of {fp4_word_bits(f)} bits is not a whole number of bytes"
    caps = dict(zip(("weight", "act", "kv", "lop", "psum", "sfu"), Buffers.from_config(cfg).capacity, strict=True))
    wb = fp4_word_bits(f) // 8
    ub = math.gcd(wb, caps["weight"])
    units = caps["weight"] // ub
    if banks is None:
        need = max(2, wb // ub, math.ceil(cfg.dram.peak_bytes_per_s / cfg.clock_hz / ub))
        banks = 1 << (need - 1).bit_length()
    if units & (units - 1) or units < banks or banks < wb // ub:
        return None, (f"the weight ring's {caps['weight']} bytes are not a power-of-two number (>= {banks}) of "
                      f"{ub}-byte units, or a {wb}-byte FP4 word spans more than {banks} banks")
    kv = caps["kv"] // ub if caps["kv"] % ub == 0 else 0
    kv = kv if kv & (kv - 1) == 0 and banks <= kv <= units else 0  # addressed like the weight buffer
    return DataDims(banks, f.lanes, 8 * wb, ub, units, _pow2_floor(caps["act"] // f.elems_per_cycle),
                    _pow2_floor(caps["psum"] // (4 * f.lanes)), kv), ""


def _seeded_tensor(cfg, rows: int, k: int, rng) -> NVFP4Tensor | MXFP4Tensor:
    """Random FP4 weights: codes uniform, block scales within a range that keeps the accumulator exact."""
    f = cfg.fp4
    nb = -(-k // f.block)
    codes = np.zeros((rows, nb * f.block), np.uint8)
    codes[:, :k] = rng.integers(0, 16, (rows, k))
    if f.format == "nvfp4":
        return NVFP4Tensor(codes, rng.integers(0x20, 0x40, (rows, nb)).astype(np.uint8), np.float32(1.0), (rows, k))
    return MXFP4Tensor(codes, rng.integers(120, 128, (rows, nb)).astype(np.uint8), (rows, k))


def fp4_data_plan(img, cfg, seed: int, model):
    """The loader's data plan on an FP4 design (lowbit.rtl.chip_golden.data_plan's rules with FP4 tiles): the
    weight DMAs' fill fields, each FP4 word's engine fields (the TINT word's: beats, row groups, tokens,
    tail_lanes, tail_step in units, w_addr, a_addr 0, a_stride beats, p_addr after the previous tile's),
    the DRAM image (each tile's packed FP4 rows at its DMA's address) and the expected psum words: with
    `model` the deployed FP4 rows, the golden's INT8 activations (written in their quantize words' cycles)
    and accumulators, the FP4 core's requantizer (lowbit.rtl.chip_golden.requant_plan: its tiles' RQ fields,
    the FP4 per-row multipliers) and, where the kv buffer holds data, dma_kv's K/V chunk reads, LO-code reads
    and KV writes (lowbit.rtl.chip_kvread, chip_lop.lo_image, chip_kv: data_plan's rules) with BoothFlex's
    Q K^T and P V tiles where they run on data (lowbit.rtl.chip.qk_data, chip_golden.attn_plan); without,
    seeded-random FP4 weights and act words against sim.numerics.fp4dot. (DataPlan, '') or (None, why not)."""
    from lowbit.rtl.chip import qk_data
    from lowbit.rtl.chip_golden import (
        DATA_FIELDS,
        DataPlan,
        _psum_words,
        attention_fields,
        attn_plan,
        requant_plan,
    )
    from lowbit.rtl.chip_kvread import kv_reads
    from lowbit.rtl.chip_lop import lo_image
    from lowbit.rtl.chip_model import input_of
    from lowbit.rtl.chip_sfu import sfu_data_ok
    from lowbit.sim.isa import B_WEIGHT, C_BOOTH, C_DMAKV, C_DMAW, C_FP4, C_SFU
    from lowbit.sim.numerics.fp4dot import fp4_block_dot

    dims, why = fp4_data_dims(cfg)
    if dims is None:
        return None, why
    f = cfg.fp4
    e, lanes, ub = f.elems_per_cycle, f.lanes, dims.unit_bytes
    lb = fp4_lane_bits(f)
    fq = next(q for q, c in enumerate(img.classes) if c == C_FP4)
    dw = next(q for q, c in enumerate(img.classes) if c == C_DMAW)
    plan = DataPlan(dims, model=model)
    fields: dict[tuple[int, int], dict] = {}
    for i, w in enumerate(img.words[dw]):
        if w["alloc_en"] and w["buf"] == B_WEIGHT and not w["wr"]:
            if w["nbytes"] % ub or w["sbyte"] % ub:
                return None, (f"weight DMA {i} ({w['nbytes']} bytes at ring byte {w['sbyte']}) is not whole "
                              f"{ub}-byte buffer units")
            fields[(dw, i)] = {"dwords": w["nbytes"] // ub, "dbase": w["sbyte"] // ub}
    tiles, why = fp4_program_tiles(img, cfg)
    if why:
        return None, why
    kq = next((q for q, c in enumerate(img.classes) if c == C_DMAKV), -1)
    kqs = (kq,) if dims.k_depth and kq >= 0 and model is not None else ()
    if kqs:  # K/V chunk reads into the kv buffer and the LO-code reads' bytes (chip_kvread, chip_lop)
        fields.update(kv_reads(plan, img, kq))
        lo_image(plan, img, kq)
    if model is None:
        plan.act = np.random.default_rng([seed, 1 << 40]).integers(-128, 128, (dims.a_depth, e)).astype(np.int64)
    reads: dict[tuple[int, str], int] = {}
    out: list = []
    pnext = 0
    for t in tiles:
        what = f"fp4 word {t.word} ({t.op}, step {t.step})"
        if t.dma not in fields:
            return None, f"{what}: its weight DMA does not fill the weight ring"
        if t.tokens * t.beats > dims.a_depth or t.tokens * t.groups > dims.p_depth:
            return None, f"{what}: {t.tokens} tokens of {t.beats} words do not fit the act / psum buffers"
        if t.tail_lanes * lb % (8 * ub):
            return None, f"{what}: its last row group's {t.tail_lanes}-row words are no whole {ub}-byte units"
        if model is not None:
            lin = model.dep.linears.get(t.op)
            if lin is None or lin.fp4 is None:
                return None, f"{what}: the golden's '{t.op}' is not an FP4 projection"
            sub = fp4_rows(lin.fp4, t.row0, t.rows)
        else:
            sub = _seeded_tensor(cfg, t.rows, t.k, np.random.default_rng([seed, t.addr]))
        raw = pack_fp4_tile(sub, f)
        if plan.dram.get(t.addr, raw) != raw:
            return None, f"{what}: the weights at DRAM byte {t.addr} are read as two different tiles"
        plan.dram[t.addr] = raw
        fields[(fq, t.word)] = {"beats": t.beats, "groups": t.groups, "tokens": t.tokens, "tail_lanes": t.tail_lanes,
                                "tail_step": t.tail_lanes * lb // (8 * ub), "w_addr": fields[t.dma]["dbase"],
                                "a_addr": 0, "a_stride": t.beats, "p_addr": pnext % dims.p_depth}
        pnext += t.tokens * t.groups
        pad = np.zeros((t.tokens, t.groups * lanes), np.int64)
        ovf = np.zeros(pad.shape, bool)
        if model is not None:
            model.acts(t.step, t.op, t.tokens, t.k, what)
            reads[(t.step, input_of(t.op))] = t.beats
            pad[:, :t.rows] = model.acc(t.step, t.op, t.row0, t.rows)
            acc = model.run.steps[t.step].buffers[f"{t.op}.acc"]
            plan.cover.setdefault((t.step, t.op), np.zeros(acc.shape, bool))[:, t.row0:t.row0 + t.rows] = True
            plan.proj[(fq, t.word)] = {"op": t.op, "step": t.step, "r0": t.row0, "rows": t.rows, "tokens": t.tokens,
                                       "groups": t.groups, "bt": t.beats, "lanes": lanes, "tail": t.tail_lanes}
        else:
            acts = plan.act[:t.tokens * t.beats].reshape(t.tokens, t.beats * e)[:, :t.k]
            r = fp4_block_dot(sub, acts, block_sum_bits=f.block_sum_bits, acc_bits=f.acc_bits, frac_bits=f.frac_bits)
            pad[:, :t.rows], ovf[:, :t.rows] = r.acc, r.overflow
        out += _psum_words(pad, ovf, lanes)
    name = img.queues[fq]
    plan.expect[name], plan.tiles[name], plan.fmt[name] = out, len(tiles), (lanes, f.acc_bits)
    bq = [q for q, c in enumerate(img.classes) if c == C_BOOTH] if kqs and qk_data(cfg, dims) else []
    for q in bq:  # BoothFlex's Q K^T and P V tiles (chip_golden.attn_plan), the rest of its words timers
        qmap, out, pnext = attn_plan(plan, img, cfg, q), [], 0
        for i in sorted(qmap):
            fields[(q, i)] = {**qmap[i][0], "p_addr": pnext % dims.p_depth}
            out += qmap[i][1]
            pnext += qmap[i][0]["groups"]
        name = img.queues[q]
        plan.expect[name], plan.tiles[name], plan.fmt[name] = out, len(qmap), (cfg.booth.lanes, cfg.booth.acc_bits)
    why = requant_plan(plan, img, cfg, fields, reads, e, [fq])  # the FP4 core's requantizer, the act writes
    if why:
        return None, why
    attention_fields(plan, img, cfg, fields, bq, kq if kqs else None)
    sq = [q for q, c in enumerate(img.classes) if c == C_SFU and not sfu_data_ok(cfg)]  # its words on the engines
    fields.update({**{(q, i): f for q in sq for i, f in plan.sfu_fields.items()}, **plan.emb_fields})
    for q, kind in ((fq, "tint"), (dw, "dma"), *((q, "sfu") for q in sq), *((q, "dma_kv") for q in kqs),
                    *((q, "booth") for q in bq)):
        for i, w in enumerate(img.words[q]):
            w.update({**dict.fromkeys(DATA_FIELDS[kind], 0), **fields.get((q, i), {})})
    return plan, ""
