"""The chip's data path: SRAM buffers with contents, the DMA's read data landing in them, and TINT tiles
computed from them (docs/rtl.md "Chip", "Data path").

Buffers (Amaranth memories; DESIGN ASSUMPTION: a buffer word is what its consumer takes in a cycle, so a
beat is one read of each buffer and needs no crossbar):
- weight (`BankedBuffer`): words of `lanes * tree_width` 2-bit storage codes (sim.numerics.packing 2-bit
  sequential code c = w + 1, element 0 in the LSBs), interleaved over `banks` banks by word address, so that
  one memory-port data beat of `banks` consecutive words lands in one cycle at any word address (one word
  per bank, rotated by the address);
- act: `tree_width` INT8 activations per word;
- psum: `lanes` signed `acc_bits` results and their overflow flags per word, one word per pass.

Tile layout in DRAM and in the weight buffer (`tile_codes`): pass p, then beat b, then lane l, then element
e holds W[p * lanes + l, b * tree_width + e] (rows and the tail beat padded with zero weights), so a tile
of `rows` x `k` weights is passes * beats consecutive words and the DMA copies it without reordering.

`DmaFill` places read data by request: per completion-table entry, the buffer word address of the
request's ring allocation and its length in words, written when the request issues; each data beat names
the request (its completion-table slot) and lands after the words of that request already received.

A tile on `TintEngine` (start with beats per pass, row groups, tokens and the buffer word addresses):
pass (t, g), t over tokens and g over row groups, reads weight words w_addr + g * beats + b and activation
words a_addr + t * a_stride + b, b = 0 .. beats - 1, one beat per cycle, presented in the cycle before
lowbit.rtl.tint.TintCore consumes them (synchronous read ports); the storage codes are decoded to the
core's {nz, sign} format (nz = ~c[0], sign = ~c[1] & ~c[0]) and each pass's `lanes` accumulators go to
psum at p_addr + pass. Cycles start -> done are the core's, sim.units.tint.tint_tile_cycles with
passes = tokens * groups; results are sim.numerics.tint.tint_dot's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import COUNT_BITS, delay
from lowbit.rtl.tint import TintCore
from lowbit.sim.config import TintConfig
from lowbit.sim.units.tint import tint_latency


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


def _lg(n: int) -> int:
    return (n - 1).bit_length()


class BankedBuffer(wiring.Component):
    """A buffer of `depth` units of `unit_bits`, interleaved over `banks` banks (unit address a: bank
    a mod banks, row a div banks; both powers of two). One write beat per cycle: `wr_count` (1 .. banks)
    consecutive units from unit address `wr_addr` (any alignment; bank b takes beat unit (b - wr_addr) mod
    banks). One read port per entry of `word_units`, port r reading a word of word_units[r] consecutive
    units (<= banks, so one from each of that many banks) from any unit address (`raddr`), on `rdata<r>`
    the cycle after its address. Addresses wrap at `depth`."""

    def __init__(self, *, depth: int, banks: int, unit_bits: int, word_units: tuple[int, ...] = (1,)) -> None:
        assert banks & (banks - 1) == 0 and depth & (depth - 1) == 0 and depth >= banks >= max(word_units)
        self.depth, self.banks, self.unit_bits, self.n_read = depth, banks, unit_bits, len(word_units)
        self.word_units = word_units
        ab = max(1, _lg(depth))
        super().__init__({
            "wr_valid": In(1),
            "wr_addr": In(ab),
            "wr_count": In(range(banks + 1)),
            "wr_data": In(data.ArrayLayout(unsigned(unit_bits), banks)),
            "raddr": In(data.ArrayLayout(unsigned(ab), len(word_units))),
            **{f"rdata{r}": Out(unit_bits * n) for r, n in enumerate(word_units)},
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        nb, lb = self.banks, _lg(self.banks)
        rows = self.depth // nb
        units = Array(self.wr_data[o] for o in range(nb))

        def row(b: int, a):
            """Row that bank b holds of the units a .. a + banks - 1 (the one at offset (b - a) mod banks)."""
            return ((a + ((b - a)[:lb] if lb else 0)) >> lb)[:max(1, _lg(rows))]

        outs: list[list] = [[] for _ in range(self.n_read)]
        for b in range(nb):
            mem = Memory(shape=unsigned(self.unit_bits), depth=rows, init=[])
            m.submodules[f"bank{b}"] = mem
            wp = mem.write_port()
            o = Signal(max(1, lb), name=f"off{b}")  # the beat unit this bank takes
            m.d.comb += o.eq((b - self.wr_addr)[:lb] if lb else 0)
            m.d.comb += [wp.en.eq(self.wr_valid & (o < self.wr_count)), wp.addr.eq(row(b, self.wr_addr)),
                         wp.data.eq(units[o])]
            for r in range(self.n_read):
                rp = mem.read_port()
                m.d.comb += rp.addr.eq(row(b, self.raddr[r]))
                outs[r].append(rp.data)
        for r in range(self.n_read):
            rd = getattr(self, f"rdata{r}")
            if nb == 1:
                m.d.comb += rd.eq(outs[r][0])
                continue
            sel = Signal(lb, name=f"rsel{r}")  # the first unit's bank, read in the previous cycle
            m.d.sync += sel.eq(self.raddr[r][:lb])
            n = self.word_units[r]
            if n == 1:
                m.d.comb += rd.eq(Array(outs[r])[sel])
            else:  # the word starting at each bank, one multiplexer over them
                m.d.comb += rd.eq(Array(Cat(*(outs[r][(s + j) % nb] for j in range(n))) for s in range(nb))[sel])
        return m


class DmaFill(wiring.Component):
    """The data side of a DMA engine's reads: for each completion-table slot (`table`), the buffer unit
    address of the request's ring allocation and its length in units, written by the issue lanes (`n_issue`,
    the engine's request lanes; a request with 0 units carries no data); a data beat (`data_slot`, up to
    `banks` buffer units, the request's units in order, requests interleaved in any order) goes to the
    buffer at that address + the units of the request already received (`wr_*`, a BankedBuffer's write
    beat). Buffer unit addresses wrap at the buffer's depth (a power of two), as the ring's bytes do."""

    def __init__(self, *, table: int, n_issue: int, addr_bits: int, banks: int, unit_bits: int,
                 len_bits: int = 16) -> None:
        assert table & (table - 1) == 0
        self.table, self.n_issue, self.banks = table, n_issue, banks
        sb = max(1, _lg(table))
        super().__init__({
            "issue_valid": In(n_issue),
            "issue_slot": In(data.ArrayLayout(unsigned(sb), n_issue)),
            "issue_addr": In(data.ArrayLayout(unsigned(addr_bits), n_issue)),
            "issue_words": In(data.ArrayLayout(unsigned(len_bits), n_issue)),
            "data_valid": In(1),
            "data_slot": In(sb),
            "data": In(data.ArrayLayout(unsigned(unit_bits), banks)),
            "wr_valid": Out(1),
            "wr_addr": Out(addr_bits),
            "wr_count": Out(range(banks + 1)),
            "wr_data": Out(data.ArrayLayout(unsigned(unit_bits), banks)),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        ab, lb = len(self.wr_addr), len(self.issue_words[0])
        base = [Signal(ab, name=f"base{i}") for i in range(self.table)]
        left = [Signal(lb, name=f"left{i}") for i in range(self.table)]  # words still to come
        for i in range(self.table):
            b, n = base[i], left[i]
            for k in range(self.n_issue):  # at most one lane issues a given slot in a cycle
                hit = self.issue_valid[k] & (self.issue_slot[k] == i)
                b, n = Mux(hit, self.issue_addr[k], b), Mux(hit, self.issue_words[k], n)
            beat = self.data_valid & (self.data_slot == i)
            m.d.sync += [base[i].eq(Mux(beat, base[i] + self.banks, b)),
                         left[i].eq(Mux(beat, Mux(left[i] > self.banks, left[i] - self.banks, 0), n))]
        cur_b, cur_n = Array(base)[self.data_slot], Array(left)[self.data_slot]
        m.d.comb += [self.wr_valid.eq(self.data_valid), self.wr_addr.eq(cur_b),
                     self.wr_count.eq(Mux(cur_n > self.banks, self.banks, cur_n)), self.wr_data.eq(self.data)]
        return m


def tint_engine_signature(cfg: TintConfig, *, w_bits: int, a_bits: int, p_bits: int, w_step: int = 1) -> dict:
    """The tile inputs of a TintEngine (the TINT compute word's data fields) and their widths."""
    return {"beats": COUNT_BITS, "groups": COUNT_BITS, "tokens": COUNT_BITS, "tail_lanes": range(cfg.lanes + 1),
            "tail_step": range(w_step + 1), "w_addr": w_bits, "a_addr": a_bits, "a_stride": COUNT_BITS,
            "p_addr": p_bits}


class TileWalk:
    """The buffer addresses of a tile's beats, one beat a cycle from the start cycle `go` (module docstring):
    pass (t, g), t over `e.tokens` and g over `e.groups`, beat b over `e.beats`, reads weight address
    w_addr + (g * beats + b) * w_step and act address a_addr + t * a_stride + b * a_step. With `tail`, the
    last row group's words are `e.tail_step` units apart instead of w_step. `wa`, `aa`: this cycle's
    addresses; `last_g`: this beat is in the last row group; `last_rd`: this is the tile's last beat;
    `busy`: beats after the start cycle remain."""

    def __init__(self, m: Module, e, go, *, w_step: int, a_step: int, tail: bool = False) -> None:
        wb, abits = len(e.w_addr), len(e.a_addr)
        self.busy = busy = Signal(name="walk_busy")
        left = Signal(3 * COUNT_BITS, name="walk_left")
        nb, ng, w0, stride = (Signal(COUNT_BITS, name="walk_nb"), Signal(COUNT_BITS, name="walk_ng"),
                              Signal(wb, name="walk_w0"), Signal(COUNT_BITS, name="walk_stride"))
        r_wa, r_aa, r_ab = Signal(wb, name="walk_wa"), Signal(abits, name="walk_aa"), Signal(abits, name="walk_ab")
        r_b, r_g = Signal(COUNT_BITS, name="walk_b"), Signal(COUNT_BITS, name="walk_g")
        self.wa, self.aa = wa, aa = Signal(wb, name="cur_wa"), Signal(abits, name="cur_aa")
        ab_, b, g = Signal(abits, name="cur_ab"), Signal(COUNT_BITS, name="cur_b"), Signal(COUNT_BITS, name="cur_g")
        c_nb, c_ng, c_w0, c_st = (Signal(COUNT_BITS, name="cur_nb"), Signal(COUNT_BITS, name="cur_ng"),
                                  Signal(wb, name="cur_w0"), Signal(COUNT_BITS, name="cur_st"))
        cur = [wa.eq(r_wa), aa.eq(r_aa), ab_.eq(r_ab), b.eq(r_b), g.eq(r_g), c_nb.eq(nb), c_ng.eq(ng), c_w0.eq(w0),
               c_st.eq(stride)]
        start = [wa.eq(e.w_addr), aa.eq(e.a_addr), ab_.eq(e.a_addr), b.eq(0), g.eq(0), c_nb.eq(e.beats),
                 c_ng.eq(e.groups), c_w0.eq(e.w_addr), c_st.eq(e.a_stride)]
        load = [nb.eq(e.beats), ng.eq(e.groups), w0.eq(e.w_addr), stride.eq(e.a_stride),
                left.eq(e.beats * e.groups * e.tokens - 1), busy.eq(e.beats * e.groups * e.tokens > 1)]
        step = w_step
        if tail:
            self.last_g = last_g = Signal(name="walk_last_g")
            m.d.comb += last_g.eq(g == c_ng - 1)
            tl, ts = Signal.like(e.tail_lanes, name="walk_tl"), Signal.like(e.tail_step, name="walk_ts")
            self.tail_lanes = c_tl = Signal.like(e.tail_lanes, name="cur_tl")
            c_ts = Signal.like(e.tail_step, name="cur_ts")
            cur += [c_tl.eq(tl), c_ts.eq(ts)]
            start += [c_tl.eq(e.tail_lanes), c_ts.eq(e.tail_step)]
            load += [tl.eq(e.tail_lanes), ts.eq(e.tail_step)]
            step = Mux(last_g, c_ts, w_step)
        with m.If(go):
            m.d.comb += start
            m.d.sync += load
        with m.Else():
            m.d.comb += cur
            with m.If(busy):
                m.d.sync += [left.eq(left - 1), busy.eq(left > 1)]
        self.last_rd = Signal(name="walk_last_rd")
        m.d.comb += self.last_rd.eq(Mux(go, e.beats * e.groups * e.tokens == 1, busy & (left == 1)))
        # next beat: the next element chunk, else the next row group (same token), else the next token
        with m.If(b != c_nb - 1):
            m.d.sync += [r_b.eq(b + 1), r_g.eq(g), r_wa.eq(wa + step), r_aa.eq(aa + a_step), r_ab.eq(ab_)]
        with m.Elif(g != c_ng - 1):
            m.d.sync += [r_b.eq(0), r_g.eq(g + 1), r_wa.eq(wa + step), r_aa.eq(ab_), r_ab.eq(ab_)]
        with m.Else():
            m.d.sync += [r_b.eq(0), r_g.eq(0), r_wa.eq(c_w0), r_aa.eq(ab_ + c_st), r_ab.eq(ab_ + c_st)]


class TintEngine(wiring.Component):
    """One TINT core with its address generators (module docstring): reads the weight and act buffers
    through read ports (`w_raddr` / `w_rdata`, `a_raddr` / `a_rdata`, data the cycle after the address) and
    writes each pass's results to psum (`p_*`); weight addresses are in buffer units, `w_step` to a word
    (`tail_step` in the last row group, which holds `tail_lanes` rows, its other lanes read as zero weights).
    `done_next` is high in the cycle before `done` (the tile's
    last read delayed by the core's pipeline, sim.units.tint.tint_latency): a queue raising its completion
    count on it shows the tile complete in the `done` cycle, start + tint_tile_cycles, which is when the
    unit contract (lowbit/rtl/common.py) lets the next tile start."""

    def __init__(self, cfg: TintConfig, *, w_bits: int, a_bits: int, p_bits: int, w_step: int = 1) -> None:
        self.cfg, self.w_step = cfg, w_step
        n, t = cfg.lanes, cfg.tree_width
        sig = {k: In(v) for k, v in tint_engine_signature(cfg, w_bits=w_bits, a_bits=a_bits, p_bits=p_bits,
                                                          w_step=w_step).items()}
        super().__init__({
            "start": In(1),
            **sig,
            "ready": Out(1),
            "done": Out(1),
            "done_next": Out(1),
            "w_raddr": Out(w_bits),
            "w_rdata": In(2 * n * t),
            "a_raddr": Out(a_bits),
            "a_rdata": In(data.ArrayLayout(signed(8), t)),
            "p_valid": Out(1),
            "p_addr_o": Out(p_bits),
            "p_acc": Out(data.ArrayLayout(signed(cfg.acc_bits), n)),
            "p_ovf": Out(n),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        n, t = cfg.lanes, cfg.tree_width
        m.submodules.core = core = TintCore(cfg)
        go, mask = start_tile(m, self, core, tint_latency(cfg))
        # 2-bit storage code c = w + 1 -> the core's {nz, sign}: nz = ~c[0], sign = ~c[1] & ~c[0]
        for i in range(n * t):
            c = self.w_rdata[2 * i:2 * i + 2]
            m.d.comb += core.codes[i].eq(Mux(mask[i // t], 0, ~c[0] | ((~c[1] & ~c[0]) << 1)))
        psum_writes(m, self, go, core)
        return m


def start_tile(m: Module, e, core, latency: int) -> tuple[Signal, Signal]:
    """A projection engine's tile start (TINT, FP4): `go` when the word starts and the core is ready, the tile
    walk driving the weight and act read addresses, `done_next` the last read delayed by the core's `latency`,
    and the per-lane mask of a last row group's empty lanes (the word read this cycle; applied when it arrives).
    The core starts in the cycle of the first read: its beat j is driven in cycle start + 1 + j, when the words
    read in cycle start + j are on the read ports. Returns (go, mask)."""
    go = Signal()
    m.d.comb += go.eq(e.start & core.ready & (e.beats != 0) & (e.groups != 0) & (e.tokens != 0))
    walk = TileWalk(m, e, go, w_step=e.w_step, a_step=1, tail=True)
    m.d.comb += e.done_next.eq(delay(m, walk.last_rd, latency, "fin"))
    m.d.comb += [e.w_raddr.eq(walk.wa), e.a_raddr.eq(walk.aa)]
    mask = Signal(len(e.p_ovf))
    for lane in range(len(e.p_ovf)):
        m.d.sync += mask[lane].eq(walk.last_g & (walk.tail_lanes <= lane))
    m.d.comb += [core.start.eq(go), core.beats.eq(e.beats), core.passes.eq(e.groups * e.tokens),
                 e.ready.eq(core.ready & ~walk.busy), core.act.eq(e.a_rdata)]
    return go, mask


def psum_writes(m: Module, e, go, core) -> None:
    """An engine's psum port: each pass's accumulators (`core.out_*`) at e.p_addr + pass, in order."""
    pa, pn = Signal(len(e.p_addr), name="psum_base"), Signal(len(e.p_addr), name="psum_n")
    with m.If(go):
        m.d.sync += [pa.eq(e.p_addr), pn.eq(0)]
    with m.Elif(core.out_valid):
        m.d.sync += pn.eq(pn + 1)
    m.d.comb += [e.p_valid.eq(core.out_valid), e.p_addr_o.eq(pa + pn), e.p_acc.eq(core.out_acc),
                 e.p_ovf.eq(core.out_ovf), e.done.eq(core.done)]


def psum_layout(cfg: TintConfig) -> data.StructLayout:
    """A psum word: one pass's `lanes` accumulators and their sticky overflow flags."""
    return data.StructLayout({"acc": data.ArrayLayout(signed(cfg.acc_bits), cfg.lanes), "ovf": unsigned(cfg.lanes)})


class TintTileDatapath(wiring.Component):
    """Weight, act and psum buffers of `depth` words each and one TintEngine computing tiles from them
    (`passes` row groups per token, the last with `tail_lanes` rows, `tokens` tokens `a_stride` act words
    apart); the weight buffer (two banks, one word a unit) is written one word per cycle (`fill_*`)."""

    def __init__(self, cfg: TintConfig, *, depth: int = 256) -> None:
        self.cfg, self.depth = cfg, depth
        n, t = cfg.lanes, cfg.tree_width
        ab = (depth - 1).bit_length()
        self.word_bits = 2 * n * t
        super().__init__({
            "fill_valid": In(1),
            "fill_addr": In(ab),
            "fill_data": In(self.word_bits),
            "fill_count": In(range(3)),  # words of this write (1; 0 writes nothing)
            "act_valid": In(1),
            "act_addr": In(ab),
            "act_data": In(data.ArrayLayout(signed(8), t)),
            "start": In(1),
            "beats": In(COUNT_BITS),
            "passes": In(COUNT_BITS),
            "tokens": In(COUNT_BITS),
            "a_stride": In(COUNT_BITS),
            "tail_lanes": In(range(n + 1)),
            "tail_step": In(range(2)),
            "w_addr": In(ab),
            "a_addr": In(ab),
            "p_addr": In(ab),
            "ready": Out(1),
            "done": Out(1),
            "done_next": Out(1),
            "psum_addr": In(ab),
            "psum_data": Out(data.ArrayLayout(signed(cfg.acc_bits), n)),
            "psum_ovf": Out(n),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        t = cfg.tree_width
        ab = len(self.w_addr)
        m.submodules.wbuf = wbuf = BankedBuffer(depth=self.depth, banks=2, unit_bits=self.word_bits)
        m.submodules.eng = eng = TintEngine(cfg, w_bits=ab, a_bits=ab, p_bits=ab)
        m.d.comb += wbuf.wr_data[0].eq(self.fill_data)
        wire_tile_datapath(m, self, wbuf, eng, data.ArrayLayout(signed(8), t), psum_layout(cfg))
        return m


def wire_tile_datapath(m: Module, dp, wbuf: BankedBuffer, eng, act_shape, psum_shape) -> None:
    """A standalone tile datapath (an engine with its own weight, act and psum buffers, for the engine's
    bench): `dp`'s ports to the act and psum memories it adds to `m`, the weight buffer's fill port (all but its
    data) and the engine's start fields, read ports and psum writes."""
    m.submodules.abuf = abuf = Memory(shape=act_shape, depth=dp.depth, init=[])
    m.submodules.pbuf = pbuf = Memory(shape=psum_shape, depth=dp.depth, init=[])
    aw, ar = abuf.write_port(), abuf.read_port()
    pw, pr = pbuf.write_port(), pbuf.read_port()
    m.d.comb += [wbuf.wr_valid.eq(dp.fill_valid), wbuf.wr_addr.eq(dp.fill_addr), wbuf.wr_count.eq(dp.fill_count),
                 aw.en.eq(dp.act_valid), aw.addr.eq(dp.act_addr), aw.data.eq(dp.act_data),
                 pr.addr.eq(dp.psum_addr), dp.psum_data.eq(pr.data.acc), dp.psum_ovf.eq(pr.data.ovf)]
    m.d.comb += [eng.start.eq(dp.start), eng.beats.eq(dp.beats), eng.groups.eq(dp.passes),
                 eng.tokens.eq(dp.tokens), eng.w_addr.eq(dp.w_addr), eng.a_addr.eq(dp.a_addr),
                 eng.a_stride.eq(dp.a_stride), eng.p_addr.eq(dp.p_addr),
                 eng.tail_lanes.eq(dp.tail_lanes), eng.tail_step.eq(dp.tail_step),
                 dp.ready.eq(eng.ready), dp.done.eq(eng.done), dp.done_next.eq(eng.done_next),
                 wbuf.raddr[0].eq(eng.w_raddr), eng.w_rdata.eq(wbuf.rdata0),
                 ar.addr.eq(eng.a_raddr), eng.a_rdata.eq(ar.data),
                 pw.en.eq(eng.p_valid), pw.addr.eq(eng.p_addr_o), pw.data.acc.eq(eng.p_acc),
                 pw.data.ovf.eq(eng.p_ovf)]


def _pow2_floor(n: int) -> int:
    return 1 << (max(n, 1).bit_length() - 1)


@dataclass(frozen=True)
class DataDims:
    """The chip's data-path buffer geometry for a config (DESIGN ASSUMPTIONS). The weight buffer holds the
    weight ring's capacity in *units* of `unit_bytes` = gcd(TINT word bytes, capacity), a power of two of
    them, so ring byte addresses map to unit addresses by a division and wrap with them; a TINT word is
    `word_units` consecutive units, read in one cycle from as many banks. The act buffer holds
    floor-to-a-power-of-two act words of `tree_width` INT8, each TINT core's psum bank its share of the psum
    capacity in psum words (4 bytes a result, sim.tiling ACC_BYTES), floored to a power of two. The kv
    buffer holds the kv ring's capacity in the same units where that is a power of two of them, at least a
    beat and at most the weight buffer's (`k_depth`; else 0, and K/V reads carry no data)."""

    banks: int
    lanes: int
    word_bits: int
    unit_bytes: int
    w_depth: int      # weight buffer units
    a_depth: int
    p_depth: int
    k_depth: int = 0  # kv buffer units (dma_kv's K/V reads land there); 0: the kv buffer holds no data

    @property
    def word_bytes(self) -> int:
        return self.word_bits // 8

    @property
    def unit_bits(self) -> int:
        return 8 * self.unit_bytes

    @property
    def word_units(self) -> int:
        return self.word_bytes // self.unit_bytes

    @property
    def w_bits(self) -> int:
        return max(1, _lg(self.w_depth))

    @property
    def a_bits(self) -> int:
        return max(1, _lg(self.a_depth))

    @property
    def p_bits(self) -> int:
        return max(1, _lg(self.p_depth))

    @property
    def k_bits(self) -> int:
        return max(1, _lg(self.k_depth))


def data_dims(cfg, banks: int | None = None) -> tuple[DataDims | None, str]:
    """(geometry, '') of the data path of `cfg`, or (None, why not). `banks` (weight banks = units per
    memory-port data beat), by default the smallest power of two, at least 2 and at least a word's units,
    whose beat carries the DRAM's peak bytes per clock cycle (DESIGN ASSUMPTION: the port never limits the
    DRAM model's bandwidth)."""
    import math

    from lowbit.sim.sram import Buffers

    if not cfg.has("tint"):
        if cfg.has("fp4"):  # projections on the FP4 core (lowbit.rtl.chip_fp4)
            from lowbit.rtl.chip_fp4 import fp4_data_dims

            return fp4_data_dims(cfg, banks)
        return None, "the design has no TINT core"
    t = cfg.tint
    if t.weight_packing != "2bit" or (2 * t.lanes * t.tree_width) % 8:
        return None, "a TINT weight word is not a whole number of bytes of 2-bit codes"
    caps = dict(zip(("weight", "act", "kv", "lop", "psum", "sfu"), Buffers.from_config(cfg).capacity, strict=True))
    wb = 2 * t.lanes * t.tree_width // 8
    ub = math.gcd(wb, caps["weight"])
    units = caps["weight"] // ub
    if banks is None:
        need = max(2, wb // ub, math.ceil(cfg.dram.peak_bytes_per_s / cfg.clock_hz / ub))
        banks = 1 << (need - 1).bit_length()
    if units & (units - 1) or units < banks or banks < wb // ub:
        return None, (f"the weight ring's {caps['weight']} bytes are not a power-of-two number (>= {banks}) of "
                      f"{ub}-byte units, or a {wb}-byte TINT word spans more than {banks} banks")
    kv = caps["kv"] // ub if caps["kv"] % ub == 0 else 0
    kv = kv if kv & (kv - 1) == 0 and banks <= kv <= units else 0  # addressed like the weight buffer
    return DataDims(banks, t.lanes, 8 * wb, ub, units, _pow2_floor(caps["act"] // t.tree_width),
                    _pow2_floor(caps["psum"] // (4 * t.lanes * t.cores)), kv), ""
