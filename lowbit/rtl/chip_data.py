"""The chip's data path for the TINT core: SRAM buffers with contents and a linear-layer tile computed from
them (docs/rtl.md "Chip", data path).

Buffers (Amaranth memories, one word per TINT beat; DESIGN ASSUMPTION: word = what the core consumes in a
cycle, so a beat is one read of each buffer):
- weight: `lanes * tree_width` 2-bit storage codes per word (sim.numerics.packing 2-bit sequential code
  c = w + 1, element 0 in the LSBs), filled by the DMA's data beats (`fill_*`, one word per cycle, from
  `DmaFill`: read-response beats of interleaved requests, each to its request's buffer address);
- act: `tree_width` INT8 activations per word (written through `act_*`);
- psum: `lanes` signed `acc_bits` results per word, one word per pass (read through `psum_*`).

Tile layout in DRAM and in the weight buffer (`tile_codes`): pass p, then beat b, then lane l, then element
e holds W[p * lanes + l, b * tree_width + e] (rows and the tail beat padded with zero weights), so a tile
of `rows` x `k` weights is passes * beats consecutive words and the DMA copies it without reordering.

A tile (`start` with beats, passes and the three buffer word addresses) runs on lowbit.rtl.tint.TintCore:
the engine presents beat j's weight and activation addresses in the cycle before the core consumes them
(synchronous read ports), decodes the storage codes to the core's {nz, sign} format (nz = ~c[0],
sign = ~c[1] & ~c[0]) and writes each pass's `lanes` accumulators to psum. Cycles start -> done are the core's,
sim.units.tint.tint_tile_cycles; results are sim.numerics.tint.tint_dot's.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import COUNT_BITS
from lowbit.rtl.tint import TintCore
from lowbit.sim.config import TintConfig


def tile_codes(w: np.ndarray, lanes: int, tree_width: int) -> np.ndarray:
    """Ternary weights W[rows, k] in tile order (module docstring): int8 codes, one row per buffer word."""
    rows, k = w.shape
    passes, beats = -(-rows // lanes), -(-k // tree_width)
    pad = np.zeros((passes * lanes, beats * tree_width), np.int8)
    pad[:rows, :k] = w
    t = pad.reshape(passes, lanes, beats, tree_width).transpose(0, 2, 1, 3)
    return t.reshape(passes * beats, lanes * tree_width)


def pack_tile(w: np.ndarray, lanes: int, tree_width: int) -> bytes:
    """The DRAM bytes of a weight tile: tile_codes packed with sim.numerics.packing.pack_ternary_2bit
    (sequential), word after word."""
    from lowbit.sim.numerics.packing import pack_ternary_2bit

    if lanes * tree_width % 4:
        raise ValueError(f"a weight word of {lanes} x {tree_width} codes is not a whole number of bytes")
    packed, _ = pack_ternary_2bit(tile_codes(w, lanes, tree_width).reshape(-1))
    return packed.tobytes()


class DmaFill(wiring.Component):
    """The data side of a DMA engine's reads: for each completion-table entry (`table`, the request's `id`
    slot), the buffer word address its ring allocation got at issue and its length in words; read-response
    data beats (`data_id`, one buffer word each, the request's words in order, requests interleaved in any
    order) are written to the buffer at that address + the entry's beat count, and the last beat of a
    request raises `done` with its id in the same cycle (the memory port's response, so the request
    completes on the scoreboard in the next cycle, as without data)."""

    def __init__(self, *, table: int, addr_bits: int, word_bits: int, len_bits: int = 16) -> None:
        assert table & (table - 1) == 0
        self.table = table
        ib = max(1, (table - 1).bit_length())
        super().__init__({
            "issue_valid": In(1),
            "issue_id": In(ib),
            "issue_addr": In(addr_bits),
            "issue_words": In(len_bits),
            "data_valid": In(1),
            "data_id": In(ib),
            "data": In(word_bits),
            "fill_valid": Out(1),
            "fill_addr": Out(addr_bits),
            "fill_data": Out(word_bits),
            "done": Out(1),
            "done_id": Out(ib),
        })

    def elaborate(self, platform) -> Module:
        from amaranth.hdl import Array

        m = Module()
        ab, lb = len(self.issue_addr), len(self.issue_words)
        base = Array(Signal(ab, name=f"base{i}") for i in range(self.table))
        words = Array(Signal(lb, name=f"words{i}") for i in range(self.table))
        beat = Array(Signal(lb, name=f"beat{i}") for i in range(self.table))
        with m.If(self.issue_valid):
            m.d.sync += [base[self.issue_id].eq(self.issue_addr), words[self.issue_id].eq(self.issue_words),
                         beat[self.issue_id].eq(0)]
        b = beat[self.data_id]
        last = b == words[self.data_id] - 1
        m.d.comb += [self.fill_valid.eq(self.data_valid), self.fill_addr.eq(base[self.data_id] + b),
                     self.fill_data.eq(self.data)]
        with m.If(self.data_valid):
            m.d.sync += b.eq(b + 1)
        # the last beat is the request's response (in its cycle: lowbit.rtl.chip_dma's resp_valid / resp_id)
        m.d.comb += [self.done.eq(self.data_valid & last), self.done_id.eq(self.data_id)]
        return m


class TintTileDatapath(wiring.Component):
    """Weight, act and psum buffers of `depth` words each and one TINT core computing tiles from them."""

    def __init__(self, cfg: TintConfig, *, depth: int = 256) -> None:
        self.cfg, self.depth = cfg, depth
        n, t = cfg.lanes, cfg.tree_width
        ab = (depth - 1).bit_length()
        self.word_bits = 2 * n * t
        super().__init__({
            "fill_valid": In(1),
            "fill_addr": In(ab),
            "fill_data": In(self.word_bits),
            "act_valid": In(1),
            "act_addr": In(ab),
            "act_data": In(data.ArrayLayout(signed(8), t)),
            "start": In(1),
            "beats": In(COUNT_BITS),
            "passes": In(COUNT_BITS),
            "w_addr": In(ab),
            "a_addr": In(ab),
            "p_addr": In(ab),
            "ready": Out(1),
            "done": Out(1),
            "psum_addr": In(ab),
            "psum_data": Out(data.ArrayLayout(signed(cfg.acc_bits), n)),
            "psum_ovf": Out(n),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        n, t = cfg.lanes, cfg.tree_width
        ab = len(self.w_addr)
        m.submodules.wbuf = wbuf = Memory(shape=unsigned(self.word_bits), depth=self.depth, init=[])
        m.submodules.abuf = abuf = Memory(shape=data.ArrayLayout(signed(8), t), depth=self.depth, init=[])
        m.submodules.pbuf = pbuf = Memory(shape=data.StructLayout({
            "acc": data.ArrayLayout(signed(cfg.acc_bits), n), "ovf": unsigned(n)}), depth=self.depth, init=[])
        m.submodules.core = core = TintCore(cfg)
        ww, wr = wbuf.write_port(), wbuf.read_port()
        aw, ar = abuf.write_port(), abuf.read_port()
        pw, pr = pbuf.write_port(), pbuf.read_port()
        m.d.comb += [ww.en.eq(self.fill_valid), ww.addr.eq(self.fill_addr), ww.data.eq(self.fill_data),
                     aw.en.eq(self.act_valid), aw.addr.eq(self.act_addr), aw.data.eq(self.act_data),
                     pr.addr.eq(self.psum_addr), self.psum_data.eq(pr.data.acc), self.psum_ovf.eq(pr.data.ovf)]
        # address generation, one cycle ahead of the core: beat j (0 .. passes * beats - 1) is read in the
        # start cycle + j and consumed by the core in the cycle after
        go = Signal()
        m.d.comb += go.eq(self.start & core.ready & (self.beats != 0) & (self.passes != 0))
        busy = Signal()
        wa, aa, b, left = Signal(ab), Signal(ab), Signal(COUNT_BITS), Signal(2 * COUNT_BITS)
        a0, nb = Signal(ab), Signal(COUNT_BITS)
        pa = Signal(ab)
        with m.If(go):
            m.d.comb += [wr.addr.eq(self.w_addr), ar.addr.eq(self.a_addr)]
            m.d.sync += [wa.eq(self.w_addr + 1), a0.eq(self.a_addr), nb.eq(self.beats), pa.eq(self.p_addr),
                         aa.eq(Mux(self.beats == 1, self.a_addr, self.a_addr + 1)),
                         b.eq(Mux(self.beats == 1, 0, 1)), left.eq(self.beats * self.passes - 1),
                         busy.eq(self.beats * self.passes > 1)]
        with m.Elif(busy):
            m.d.comb += [wr.addr.eq(wa), ar.addr.eq(aa)]
            last = b == nb - 1
            m.d.sync += [wa.eq(wa + 1), aa.eq(Mux(last, a0, aa + 1)), b.eq(Mux(last, 0, b + 1)),
                         left.eq(left - 1), busy.eq(left > 1)]
        # the core starts in the cycle of the first read: its beat j is driven in cycle start + 1 + j, when
        # the words read in cycle start + j are on the read ports
        m.d.comb += [core.start.eq(go), core.beats.eq(self.beats), core.passes.eq(self.passes),
                     self.ready.eq(core.ready & ~busy), core.act.eq(ar.data)]
        # 2-bit storage code c = w + 1 -> the core's {nz, sign}: nz = ~c[0], sign = ~c[1] & ~c[0]
        for i in range(n * t):
            c = wr.data[2 * i:2 * i + 2]
            m.d.comb += core.codes[i].eq(~c[0] | ((~c[1] & ~c[0]) << 1))
        # psum: one word per pass, in order
        pn = Signal(ab)
        with m.If(go):
            m.d.sync += pn.eq(0)
        m.d.comb += [pw.en.eq(core.out_valid), pw.addr.eq(pa + pn), pw.data.acc.eq(core.out_acc),
                     pw.data.ovf.eq(core.out_ovf)]
        with m.If(core.out_valid):
            m.d.sync += pn.eq(pn + 1)
        m.d.comb += self.done.eq(core.done)
        return m
