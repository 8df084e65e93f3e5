"""The SFU's data-path engines of a decoder layer's norm chain: buffer words in, buffer words out, each pass
cycle-exact with the program's SFU word (docs/rtl.md "Data path", "SFU streams").

Under dependency-aware scheduling (sim.lower ``_sfu``) the reduction pass of RMSNorm (sum of squares) and of
the absmax quantizer (max |x|) is fused with the producer's output stream, so the program's word holds only the
remaining pass. The engines realise that split: each producer accumulates, per row, the statistic its consumer
needs while it writes, and stores it in a row-statistics memory (one ``STAT_BITS`` word per row):

* ``SfuResidualStream`` (the program's ``elementwise`` add): ``x + y`` saturated to int16 Q7.8
  (sim.numerics.requant.residual_add), writes the sum and accumulates ``S = sum sum^2`` per row;
* ``SfuRmsNormStream`` (``rmsnorm``, SubLN included: the same op with its own gain): reads the row's ``S``
  and streams ``x`` and the gain through sim.numerics.sfu_reduce.sfu_rmsnorm's fixed-point rule (the
  reciprocal square root pipeline of rtl/sfu_rmsnorm.py), writes the Q7.8 output and accumulates its
  ``amax = max |y|`` per row;
* ``SfuQuantStream`` (``quantize``): reads the row's ``amax``, forms the reciprocal with rtl/sfu.py's
  restoring divider and writes INT8 words (sim.numerics.sfu.sfu_absmax_quantize's rule). The divider is the
  ``SFU_IN_BITS`` = 24-bit one the cycle formula times (D_recip = 17); Q7.8 inputs are sign-extended, and
  the rule is exactly RNE(127 x / amax) for any input width (proof in sim.numerics.sfu), so the words equal
  the golden's 16-bit quantizer's.

The other stream engines build on this module's walker and conventions: the FFN gating (rtl/sfu_stream_act.py,
the producer of SubLN's S), softmax (sfu_stream_softmax.py), RoPE (sfu_stream_rope.py) and the projections'
psum requantizer (sfu_stream_requant.py); rtl/sfu_stream_chain.py instantiates the norm chain on buffers.

Cycles, start -> done (the program's word; sim.units.sfu.sfu_cycles less the fused pass, N = rows * beats,
beats = ceil(dim / lanes))::

    residual   N + latency.elementwise          (>= RESIDUAL_PIPE = 2)
    rmsnorm    N + latency.rmsnorm              (>= RMSNORM_PIPE = 10)
    quantize   rows * (beats + D_recip) + latency.quantize   (>= QUANT_PIPE = 3)

Timing (cycle convention of rtl/common.py, synchronous read ports as chip_data.TintEngine's): cycle 0 has
``start`` and the word's fields; reads go out from cycle 0 on, one beat a cycle (quantize: each row's
D_recip reciprocal cycles, the first reading the row's amax, then its beats; RMSNorm: from cycle rms_lag);
``done`` is high in cycle ``cycles`` and ``done_next`` in the cycle before. Every buffer write lands at an edge before the done
cycle, so an op started in the done cycle reads this one's results. ``ready`` rises after the last read:
a tile may start while the previous one drains. Read addresses are 0 in cycles without a read (engines
sharing a port OR them).

Words (DESIGN ASSUMPTIONS, docs/rtl.md): a Q7.8 word is ``lanes`` int16 (``lanes`` = sfu.lanes), a gain
word ``lanes`` int16 Q5.10, an INT8 word ``lanes`` int8 -- the act buffer's word (chip_data: ``tree_width``
INT8) when sfu.lanes = tint.tree_width, as on ``tiny`` and ``vitallm``. Row r's beat b is word
``addr + r * beats + b``; the gain's beat b is ``g_addr + b``; row r's statistic is ``st_addr + r``. A row's
tail lanes (dim not a multiple of lanes) hold zeros, and every engine keeps them zero.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import COUNT_BITS, bit_length, delay
from lowbit.rtl.sfu import round_int8
from lowbit.rtl.sfu_seq import rom, sat
from lowbit.sim.errors import LowbitError
from lowbit.sim.numerics.sfu import SFU_IN_BITS, sfu_recip_bits
from lowbit.sim.numerics.sfu_reduce import RSQRT_TABLE
from lowbit.sim.units.sfu import RECIP_BITS_PER_CYCLE, SfuConfig, sfu_recip_cycles

STAT_BITS = 48
"""A row statistic: S = sum x^2 of a Q7.8 row (< 2^46 for dim < 2^16) or amax (<= 2^15)."""
RESIDUAL_PIPE, RMSNORM_PIPE, QUANT_PIPE = 2, 10, 3
"""Edges from a tile's last read to its last write: the least latency each engine meets."""
RMS_LAG = 2
"""Cycles the RMSNorm engine's reads trail its walk where latency.rmsnorm has them to spare (rms_lag): a decode
row's attention output (lowbit.rtl.chip_av) lands its last S in the norm's cycle 1, readable from cycle 2."""


def rms_lag(cfg: SfuConfig) -> int:
    """Cycles after its walk's that SfuRmsNormStream reads a row's S, x and gain: RMS_LAG, less where
    latency.rmsnorm leaves fewer than that above RMSNORM_PIPE (its last write still lands before done)."""
    return max(0, min(RMS_LAG, cfg.op_latency("rmsnorm") - RMSNORM_PIPE))


def q78_word(lanes: int) -> data.ArrayLayout:
    """A Q7.8 (or Q5.10 gain) buffer word: `lanes` int16."""
    return data.ArrayLayout(signed(16), lanes)


def int8_word(lanes: int) -> data.ArrayLayout:
    """An INT8 activation word: `lanes` int8 (the act buffer word of chip_data when lanes = tree_width)."""
    return data.ArrayLayout(signed(8), lanes)


def stream_validate(cfg: SfuConfig, op: str, pipe: int) -> None:
    """Reject an SFU config whose latency for `op` is below the engine's pipeline (LowbitError naming it)."""
    if cfg.lanes < 1:
        raise LowbitError(f"sfu.lanes = {cfg.lanes}: must be >= 1")
    lat = cfg.op_latency(op)
    if lat < pipe:
        raise LowbitError(f"sfu.latency.{op} = {lat}: the {op} stream engine writes its last word {pipe} cycles "
                          f"after its last read; raise it to >= {pipe}")


def stream_cycles(cfg: SfuConfig, op: str, rows: int, beats: int) -> int:
    """Cycles start -> done of an engine (module docstring): the program's fused SFU word."""
    stall = sfu_recip_cycles() if op == "quantize" else 0
    return rows * (beats + stall) + cfg.op_latency(op)


def _port() -> dict:
    return {"start": In(1), "rows": In(COUNT_BITS), "beats": In(COUNT_BITS), "ready": Out(1), "done": Out(1),
            "done_next": Out(1)}


class StreamWalk:
    """The read cycles of a tile from the start cycle `go` (module docstring): per row, `stall` cycles then
    `beats` beat reads; all outputs describe the current cycle (combinational)."""

    def __init__(self, m: Module, go: Value, rows: Value, beats: Value, stall: int = 0) -> None:
        self.busy = busy = Signal(name="walk_busy")
        row, cnt = Signal(COUNT_BITS, name="walk_row"), Signal(COUNT_BITS + 6, name="walk_cnt")
        rows_r, beats_r = Signal(COUNT_BITS, name="walk_rows"), Signal(COUNT_BITS, name="walk_beats")
        c_row, c_cnt = Mux(go, 0, row), Mux(go, 0, cnt)
        c_rows, c_beats = Mux(go, rows, rows_r), Mux(go, beats, beats_r)
        self.active = active = Signal(name="walk_active")
        m.d.comb += active.eq(go | busy)
        row_end = c_cnt == c_beats + (stall - 1)
        tile_end = row_end & (c_row == c_rows - 1)
        self.count = c_cnt                               # the cycle's index within its row's slot
        self.row_start = active & (c_cnt == 0)           # first cycle of a row's slot
        self.valid = active & (c_cnt >= stall) if stall else active   # a beat read this cycle
        self.first = active & (c_cnt == stall)           # the row's first beat
        self.last = active & row_end                     # the row's last beat
        self.final = active & tile_end                   # the tile's last beat
        with m.If(go):
            m.d.sync += [rows_r.eq(rows), beats_r.eq(beats)]
        with m.If(active):
            m.d.sync += busy.eq(~tile_end)
            with m.If(row_end):
                m.d.sync += [cnt.eq(0), row.eq(c_row + 1)]
            with m.Else():
                m.d.sync += [cnt.eq(c_cnt + 1), row.eq(c_row)]


def stream_start(m: Module, comp, *, extra: Value | int = 1, stall: int = 0) -> tuple[Signal, StreamWalk]:
    """An engine's start cycle `go` (start while ready with a non-empty tile, and `extra`) and its tile walk;
    the engine is ready again after the walk's last read."""
    go = Signal(name="go")
    m.d.comb += go.eq(comp.start & comp.ready & (comp.rows != 0) & (comp.beats != 0) & extra)
    wk = StreamWalk(m, go, comp.rows, comp.beats, stall=stall)
    m.d.comb += comp.ready.eq(~wk.busy)
    return go, wk


def pointer(m: Module, go: Value, base: Value, step: Value, name: str) -> Value:
    """A running word address: `base` in the start cycle, then +1 after every cycle with `step`."""
    r = Signal(len(base), name=name)
    cur = Signal(len(base), name=f"{name}_cur")
    m.d.comb += cur.eq(Mux(go, base, r))
    with m.If(step):
        m.d.sync += r.eq(cur + 1)
    with m.Elif(go):
        m.d.sync += r.eq(base)
    return cur


def row_stat(m: Module, valid: Value, first: Value, last: Value, beat_val: Value, kind: str, name: str
             ) -> tuple[Value, Value]:
    """A row statistic accumulated over a stream's beats: `beat_val` (this beat's sum of squares or max |y|,
    combinational in the cycle its beat is written) is registered, then added (kind "sum") or maxed ("max")
    into the row's accumulator; returns the (write enable, value) of the row's statistic, one cycle after
    the row's last beat."""
    bv = Signal(STAT_BITS, name=f"{name}_beat")
    v, f, la = Signal(name=f"{name}_v"), Signal(name=f"{name}_f"), Signal(name=f"{name}_l")
    m.d.sync += [bv.eq(beat_val), v.eq(valid), f.eq(first), la.eq(last)]
    acc = Signal(STAT_BITS, name=f"{name}_acc")
    nxt = Signal(STAT_BITS, name=f"{name}_next")
    if kind == "sum":
        m.d.comb += nxt.eq(Mux(f, 0, acc) + bv)
    else:
        m.d.comb += nxt.eq(Mux(f | (bv > acc), bv, acc))
    with m.If(v):
        m.d.sync += acc.eq(nxt)
    return v & la, nxt


def _split(v: Value, like: tuple) -> list[Value]:
    """`v` cut into consecutive slices as wide as the values of `like` (the inverse of Cat(*like))."""
    out, at = [], 0
    for x in like:
        out.append(v[at:at + len(x)])
        at += len(x)
    return out


def magnitude(v: Value) -> Value:
    """|v| of a signed value, unsigned."""
    return Mux(v < 0, -v, v).as_unsigned()


def _finish(m: Module, comp, final: Value, lat: int) -> None:
    """done in cycle (last read) + lat + 1, done_next in the cycle before."""
    m.d.comb += [comp.done_next.eq(delay(m, final, lat, "fin")), comp.done.eq(delay(m, final, lat + 1, "fin_d"))]


class SfuResidualStream(wiring.Component):
    """Saturating residual add with the sum-of-squares reduction of the next RMSNorm (module docstring):
    reads x (`x_*`) and y (`y_*`) words, writes sat16(x + y) to `o_*` one cycle later and each row's S to
    `st_*`."""

    def __init__(self, cfg: SfuConfig, *, a_bits: int, s_bits: int) -> None:
        stream_validate(cfg, "elementwise", RESIDUAL_PIPE)
        self.cfg = cfg
        w = q78_word(cfg.lanes)
        super().__init__({
            **_port(), "x_addr": In(a_bits), "y_addr": In(a_bits), "o_addr": In(a_bits), "st_addr": In(s_bits),
            "x_raddr": Out(a_bits), "x_rdata": In(w), "y_raddr": Out(a_bits), "y_rdata": In(w),
            "o_wen": Out(1), "o_waddr": Out(a_bits), "o_wdata": Out(w),
            "st_wen": Out(1), "st_waddr": Out(s_bits), "st_wdata": Out(STAT_BITS),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        n = self.cfg.lanes
        go, wk = stream_start(m, self)
        xa = pointer(m, go, self.x_addr, wk.valid, "xa")
        ya = pointer(m, go, self.y_addr, wk.valid, "ya")
        oa = pointer(m, go, self.o_addr, wk.valid, "oa")
        sa = pointer(m, go, self.st_addr, wk.last, "sa")
        m.d.comb += [self.x_raddr.eq(Mux(wk.valid, xa, 0)), self.y_raddr.eq(Mux(wk.valid, ya, 0))]
        # cycle c + 1: the words are on the read ports; add, saturate, write
        v1, f1, l1 = (Signal(name=nm) for nm in ("v1", "f1", "l1"))
        oa1, sa1 = Signal.like(oa, name="oa1"), Signal.like(sa, name="sa1")
        m.d.sync += [v1.eq(wk.valid), f1.eq(wk.first), l1.eq(wk.last), oa1.eq(oa), sa1.eq(sa)]
        ys = [sat(self.x_rdata[i] + self.y_rdata[i], 16) for i in range(n)]
        m.d.comb += [self.o_wen.eq(v1), self.o_waddr.eq(oa1)]
        m.d.comb += [self.o_wdata[i].eq(ys[i]) for i in range(n)]
        sq = [Signal(31, name=f"sq{i}") for i in range(n)]
        m.d.comb += [sq[i].eq(self.o_wdata[i] * self.o_wdata[i]) for i in range(n)]
        wen, val = row_stat(m, v1, f1, l1, sum(sq[1:], sq[0]), "sum", "ss")
        sa2 = Signal.like(sa, name="sa2")
        m.d.sync += sa2.eq(sa1)
        m.d.comb += [self.st_wen.eq(wen), self.st_waddr.eq(sa2), self.st_wdata.eq(val)]
        _finish(m, self, wk.final, self.cfg.op_latency("elementwise"))
        return m


class SfuRmsNormStream(wiring.Component):
    """RMSNorm's scale pass with the absmax reduction of the next quantize (module docstring): reads the
    row's S (`s_*`, with its first beat) and x and gain words, writes the Q7.8 output to `o_*` and the row's
    amax to `a_*`. `eps_q`, `sd`, `e_sd`: sim.numerics.sfu_reduce.rmsnorm_consts(dim, eps). Its reads trail
    the walk by rms_lag cycles (the latency it has to spare), so a producer may land S (and x) that much
    later: beat b of row r is read in cycle r x beats + b + lag, its output written 9 cycles after."""

    def __init__(self, cfg: SfuConfig, *, a_bits: int, g_bits: int, s_bits: int) -> None:
        stream_validate(cfg, "rmsnorm", RMSNORM_PIPE)
        self.cfg = cfg
        w = q78_word(cfg.lanes)
        super().__init__({
            **_port(), "x_addr": In(a_bits), "g_addr": In(g_bits), "o_addr": In(a_bits),
            "s_addr": In(s_bits), "a_addr": In(s_bits), "eps_q": In(32), "sd": In(25), "e_sd": In(3),
            "x_raddr": Out(a_bits), "x_rdata": In(w), "g_raddr": Out(g_bits), "g_rdata": In(w),
            "s_raddr": Out(s_bits), "s_rdata": In(STAT_BITS),
            "o_wen": Out(1), "o_waddr": Out(a_bits), "o_wdata": Out(w),
            "a_wen": Out(1), "a_waddr": Out(s_bits), "a_wdata": Out(STAT_BITS),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        n = self.cfg.lanes
        go, wk = stream_start(m, self)
        xa = pointer(m, go, self.x_addr, wk.valid, "xa")
        oa = pointer(m, go, self.o_addr, wk.valid, "oa")
        sa = pointer(m, go, self.s_addr, wk.last, "sa")
        aa = pointer(m, go, self.a_addr, wk.last, "aa")
        gb = Signal(COUNT_BITS)  # beat within the row: the gain word's offset
        with m.If(wk.valid):
            m.d.sync += gb.eq(Mux(wk.last, 0, Mux(go, 0, gb) + 1))
        g0 = Signal(len(self.g_addr))
        with m.If(go):
            m.d.sync += g0.eq(self.g_addr)
        gcur = Mux(go, self.g_addr, g0) + Mux(go, 0, gb)
        eps_t, sd_t, esd_t = Signal(32), Signal(25), Signal(3)  # per-tile constants, also in the start cycle
        with m.If(go):
            m.d.sync += [eps_t.eq(self.eps_q), sd_t.eq(self.sd), esd_t.eq(self.e_sd)]
        eps_c, sd_c, esd_c = (Mux(go, p, r) for p, r in ((self.eps_q, eps_t), (self.sd, sd_t), (self.e_sd, esd_t)))
        # the reads go out `lag` cycles after the walk's (rms_lag): the walk's beat tags, addresses and the
        # row's constants through `lag` registers; done stays the walk's last beat + latency
        lag = rms_lag(self.cfg)
        rd = delay(m, Cat(wk.valid, wk.first, wk.last, xa, gcur, sa, oa, aa, eps_c, sd_c, esd_c), lag, "rl")
        valid, first, last = rd[0], rd[1], rd[2]
        xa, gcur, sa, oa, aa, eps_c, sd_c, esd_c = _split(rd[3:], (xa, gcur, sa, oa, aa, eps_c, sd_c, esd_c))
        m.d.comb += [self.x_raddr.eq(Mux(valid, xa, 0)), self.g_raddr.eq(Mux(valid, gcur, 0)),
                     self.s_raddr.eq(Mux(first, sa, 0))]

        def reg(v, name, shape=None):
            r = Signal(shape if shape is not None else v.shape(), name=name)
            m.d.sync += r.eq(v)
            return r

        # the beat's tags and the row's constants, registered with its read (valid in cycle c + 1)
        v1, f1, l1 = (reg(s, nm) for s, nm in ((valid, "v1"), (first, "f1"), (last, "l1")))
        eps1, sd1, esd1 = reg(eps_c, "eps1"), reg(sd_c, "sd1"), reg(esd_c, "esd1")
        oa1, aa1 = reg(oa, "oa1"), reg(aa, "aa1")
        # ---- reciprocal square root of v = S + eps_q (sim.numerics.sfu_reduce.sfu_rsqrt): stages N .. R,
        # edges c + 1 .. c + 7 (rtl/sfu_rmsnorm.py's pipeline), R valid from cycle c + 8
        vv = Signal(49)
        m.d.comb += vv.eq(self.s_rdata + eps1)
        bl = bit_length(m, vv, "v_bl")
        k2 = Signal(signed(8))
        m.d.comb += k2.eq(bl + bl[0] - 24)
        rsh, lsh = Mux(k2 >= 0, k2, 0)[:5], Mux(k2 < 0, -k2, 0)[:5]
        mn = reg(Mux(k2 >= 0, vv >> rsh, vv << lsh)[:24], "rs_m", 24)                   # N, edge c + 1
        ctl = [(reg(v1 & f1, "rs_f"), reg(k2 >> 1, "rs_k"), reg(sd1, "rs_sd"), reg(esd1, "rs_esd"))]

        def ctl_stage(s):
            ctl.append(tuple(reg(c, f"rs_c{s}_{k}") for k, c in enumerate(ctl[-1])))

        idx = ((mn >> 18)[:6] - 16)[:6]
        t_lo = reg(rom(RSQRT_TABLE[:-1], idx, 24), "rs_tlo")                             # L, c + 2
        t_hi = reg(rom(RSQRT_TABLE[1:], idx, 24), "rs_thi")
        d_l, m_l = reg(mn[:18], "rs_d"), reg(mn, "rs_mL")
        ctl_stage(0)
        y0 = reg(t_lo - (((t_lo - t_hi) * d_l) >> 18), "rs_y0", 24)                      # Y0, c + 3
        m_y = reg(m_l, "rs_mY")
        ctl_stage(1)
        tt = reg((y0 * y0) >> 23, "rs_t", 25)                                            # T, c + 4
        y0t, m_t = reg(y0, "rs_y0t"), reg(m_y, "rs_mT")
        ctl_stage(2)
        uu = reg((m_t * tt) >> 22, "rs_u", 27)                                           # U, c + 5
        y0u = reg(y0t, "rs_y0u")
        ctl_stage(3)
        y1 = reg((y0u * ((3 << 23) - uu).as_unsigned()) >> 24, "rs_y1", 25)              # Y1, c + 6
        ctl_stage(4)
        f5, k5, sd5, esd5 = ctl[-1]
        r_row, s_row = Signal(24), Signal(range(64))                                     # R, c + 7
        with m.If(f5):
            m.d.sync += [r_row.eq((y1 * sd5) >> 24), s_row.eq(35 + k5 - esd5)]
        # ---- x * g (edge c + 1), delayed to meet R (cycle c + 8), times R (edge c + 8), round and write
        # (cycle c + 9), the row's amax (edge c + 10)
        pg = [reg(self.x_rdata[i] * self.g_rdata[i], f"pg{i}", signed(32)) for i in range(n)]
        pd = [delay(m, p, 6, f"pgd{i}") for i, p in enumerate(pg)]
        tags = Cat(v1, f1, l1)
        td = delay(m, reg(tags, "tg2"), 6, "tgd")
        oad = delay(m, reg(oa1, "oa2"), 6, "oad")
        aad = delay(m, reg(aa1, "aa2"), 6, "aad")
        pr = [reg(p * r_row, f"pr{i}", signed(57)) for i, p in enumerate(pd)]
        s9 = reg(s_row, "s9")
        t9, oa9, aa9 = reg(td, "tg9"), reg(oad, "oa9"), reg(aad, "aa9")
        half = (Const(1, 48) << (s9 - 1).as_unsigned())[:48]
        m.d.comb += [self.o_wdata[i].eq(sat((p + half) >> s9, 16)) for i, p in enumerate(pr)]
        m.d.comb += [self.o_wen.eq(t9[0]), self.o_waddr.eq(oa9)]
        bmax = magnitude(self.o_wdata[0])
        for i in range(1, n):  # a running max, one named net a lane (an expression would repeat each level)
            mg, b = Signal(16, name=f"mag{i}"), Signal(16, name=f"bmax{i}")
            m.d.comb += [mg.eq(magnitude(self.o_wdata[i])), b.eq(Mux(mg > bmax, mg, bmax))]
            bmax = b
        wen, val = row_stat(m, t9[0], t9[1], t9[2], bmax, "am", "am")
        aa10 = reg(aa9, "aa10")
        m.d.comb += [self.a_wen.eq(wen), self.a_waddr.eq(aa10), self.a_wdata.eq(val)]
        _finish(m, self, wk.final, self.cfg.op_latency("rmsnorm"))
        return m


class SfuQuantStream(wiring.Component):
    """Absmax INT8 quantize of Q7.8 rows whose amax the producer reduced (module docstring): per row, the
    amax read (`a_*`, a statistics word's low SFU_IN_BITS bits) and D_recip divider cycles, then the row's x words (`x_*`) in and INT8 words (`o_*`)
    out, three cycles after each read. Divider, rounding and tie window: rtl/sfu.py (W = SFU_IN_BITS)."""

    def __init__(self, cfg: SfuConfig, *, a_bits: int, q_bits: int, s_bits: int) -> None:
        stream_validate(cfg, "quantize", QUANT_PIPE)
        self.cfg = cfg
        super().__init__({
            **_port(), "x_addr": In(a_bits), "o_addr": In(q_bits), "a_addr": In(s_bits),
            "x_raddr": Out(a_bits), "x_rdata": In(q78_word(cfg.lanes)), "a_raddr": Out(s_bits),
            "a_rdata": In(SFU_IN_BITS), "o_wen": Out(1), "o_waddr": Out(q_bits), "o_wdata": Out(int8_word(cfg.lanes)),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        n, w = self.cfg.lanes, SFU_IN_BITS
        r = sfu_recip_bits(w)
        k, d = RECIP_BITS_PER_CYCLE, sfu_recip_cycles(w, r)
        qw = k * d
        go, wk = stream_start(m, self, stall=d)
        xa = pointer(m, go, self.x_addr, wk.valid, "xa")
        oa = pointer(m, go, self.o_addr, wk.valid, "oa")
        sa = pointer(m, go, self.a_addr, wk.last, "sa")
        m.d.comb += [self.x_raddr.eq(Mux(wk.valid, xa, 0)), self.a_raddr.eq(Mux(wk.row_start, sa, 0))]
        # ---- reciprocal: amax on the port in cycle s_r + 1 (setup at that edge), d cycles of k restoring
        # steps at edges s_r + 2 .. s_r + d + 1; the row's first beat (read in s_r + d) multiplies at edge
        # s_r + d + 2. The next row's setup (edge s_r + d + beats + 1) is the edge of this row's last multiply.
        setup = Signal()
        m.d.sync += setup.eq(wk.row_start)
        amax = Signal(w)
        m.d.comb += amax.eq(self.a_rdata)
        e = bit_length(m, amax, "amax_bl")
        nsh = Signal(range(w + 1))
        m.d.comb += nsh.eq(w - e)
        norm = Signal(w)
        m.d.comb += norm.eq(amax << nsh)
        num = 127 << (w - 1 + r)
        xlow = Const(num & ((1 << qw) - 1), qw)
        dm, rem, rc = Signal(w), Signal(w), Signal(qw)
        it = Signal(range(d + 1))
        rsh = Signal(range(r + w + 1))
        with m.If(setup):
            m.d.sync += [dm.eq(norm), rem.eq(num >> qw), rc.eq(0), it.eq(Mux(amax == 0, 0, d)),
                         rsh.eq(Mux(amax == 0, r, r + e - 1))]
        with m.Elif(it != 0):
            rv = rem
            qbits = []
            for s in range(k):
                bit = xlow.bit_select(it * k - 1 - s, 1) if num & ((1 << qw) - 1) else Const(0, 1)
                r2, ge, nr = Signal(w + 1, name=f"div_r2_{s}"), Signal(name=f"div_ge_{s}"), Signal(w, name=f"div_rem_{s}")
                m.d.comb += [r2.eq(Cat(bit, rv)), ge.eq(r2 >= dm), nr.eq(Mux(ge, r2 - dm, r2))]
                qbits.append(ge)
                rv = nr
            m.d.sync += [rem.eq(rv), rc.eq(Cat(*reversed(qbits), rc)), it.eq(it - 1)]
        # ---- stage I (edge c + 1): |x| and sign; M (edge c + 2): |x| * c; Q (cycle c + 3): round, write
        xi_mag = [Signal(w, name=f"xi_mag{i}") for i in range(n)]
        xi_neg = [Signal(name=f"xi_neg{i}") for i in range(n)]
        m.d.sync += [xi_mag[i].eq(magnitude(self.x_rdata[i])) for i in range(n)]
        m.d.sync += [xi_neg[i].eq(self.x_rdata[i] < 0) for i in range(n)]
        v1, v2, v3 = Signal(), Signal(), Signal()
        oa1, oa2, oa3 = Signal.like(oa), Signal.like(oa), Signal.like(oa)
        m.d.sync += [v1.eq(wk.valid), v2.eq(v1), v3.eq(v2), oa1.eq(oa), oa2.eq(oa1), oa3.eq(oa2)]
        pm = [Signal(w + qw, name=f"pm{i}") for i in range(n)]
        negm = [Signal(name=f"negm{i}") for i in range(n)]
        shm = Signal.like(rsh)
        m.d.sync += [pm[i].eq(xi_mag[i] * rc) for i in range(n)]
        m.d.sync += [negm[i].eq(xi_neg[i]) for i in range(n)] + [shm.eq(rsh)]
        half = Const(1, 1) << (shm - 1).as_unsigned()
        win = Const(1, 1) << (shm - (r - 1)).as_unsigned()  # 2^(e+1)
        m.d.comb += [self.o_wdata[i].eq(round_int8(pm[i], shm, half, win, negm[i])) for i in range(n)]
        m.d.comb += [self.o_wen.eq(v3), self.o_waddr.eq(oa3)]
        _finish(m, self, wk.final, self.cfg.op_latency("quantize"))
        return m


__all__ = ["STAT_BITS", "RESIDUAL_PIPE", "RMSNORM_PIPE", "QUANT_PIPE", "q78_word", "int8_word", "stream_validate",
           "stream_cycles", "StreamWalk", "pointer", "row_stat", "magnitude", "SfuResidualStream", "SfuRmsNormStream",
           "SfuQuantStream"]
