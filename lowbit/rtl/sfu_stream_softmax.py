"""Softmax's stream engine: the two passes of a score row whose max the producer reduced, bit-exact with
``sim.numerics.sfu_reduce.sfu_softmax`` (base-2 exponential, reciprocal and rounding rules there; Stevens et
al. 2021, Softermax) and cycle-exact with the program's fused softmax word (sim.lower ``_sfu``)::

    cycles = rows * 2 * beats + latency.softmax        (>= SOFTMAX_PIPE = 12)

Per row: the row's max (a row-statistics word, its low 16 bits two's complement, read with the row's first
beat), pass A streams the Q7.8 scores through rtl/sfu_softmax.py's exponential pipeline and sums them, pass B
streams them again, recomputes the exponentials and multiplies them by the reciprocal of the sum, which its
pipeline forms while pass B's first beats wait in delay registers: the datapath of rtl/sfu_softmax.py less
its max pass, the read port's register standing for its input register. The last pass-B beat read in cycle c
is written (UQ1.15 words of ``lanes`` uint16; tail lanes 0) at edge c + 12, before the done cycle.
Ports, timing and addressing: rtl/sfu_stream.py's (rows ``beats`` words apart, both passes reading the same
words; ``tail``: the valid lanes of a row's last beat, 1..lanes). ``ragged``: rows of different lengths (a
causal prompt's score rows, lowbit.rtl.chip_softmax): no ``tail``, and the caller gives the valid lanes of the
word on ``x_rdata`` on ``x_live`` in the same cycle; a lane that is not valid is an absent key (exponential 0).
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import COUNT_BITS, delay
from lowbit.rtl.sfu_softmax import exp2_lane, recip_stages
from lowbit.rtl.sfu_stream import StreamWalk, pointer, q78_word, stream_validate
from lowbit.sim.units.sfu import SfuConfig

SOFTMAX_PIPE = 12


def prob_word(lanes: int) -> data.ArrayLayout:
    """A probability word: `lanes` uint16 UQ1.15."""
    return data.ArrayLayout(16, lanes)


class SfuSoftmaxStream(wiring.Component):
    def __init__(self, cfg: SfuConfig, *, a_bits: int, s_bits: int, ragged: bool = False) -> None:
        stream_validate(cfg, "softmax", SOFTMAX_PIPE)
        self.cfg, self.ragged = cfg, ragged
        n = cfg.lanes
        super().__init__({
            "start": In(1), "rows": In(COUNT_BITS), "beats": In(COUNT_BITS),
            **({"x_live": In(n)} if ragged else {"tail": In(range(n + 1))}),
            "x_addr": In(a_bits), "o_addr": In(a_bits), "m_addr": In(s_bits),
            "ready": Out(1), "done": Out(1), "done_next": Out(1),
            "x_raddr": Out(a_bits), "x_rdata": In(q78_word(n)), "m_raddr": Out(s_bits), "m_rdata": In(signed(16)),
            "o_wen": Out(1), "o_waddr": Out(a_bits), "o_wdata": Out(prob_word(n)),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        n = self.cfg.lanes
        go = Signal()
        m.d.comb += go.eq(self.start & self.ready & (self.rows != 0) & (self.beats != 0))
        beats_r = Signal(COUNT_BITS)
        with m.If(go):
            m.d.sync += beats_r.eq(self.beats)
        beats = Mux(go, self.beats, beats_r)
        wk = StreamWalk(m, go, self.rows, (self.beats << 1)[:COUNT_BITS])  # a row's slot: passes A and B
        m.d.comb += self.ready.eq(~wk.busy)
        pb = Signal()
        m.d.comb += pb.eq(wk.count >= beats)
        row_r = Signal(len(self.x_addr))
        row = Mux(go, self.x_addr, row_r)              # the row's first word
        with m.If(wk.last):
            m.d.sync += row_r.eq(row + beats)
        with m.Elif(go):
            m.d.sync += row_r.eq(self.x_addr)
        xa = row + Mux(pb, wk.count - beats, wk.count)
        oa = pointer(m, go, self.o_addr, wk.valid & pb, "oa")
        ma = pointer(m, go, self.m_addr, wk.last, "ma")
        m.d.comb += [self.x_raddr.eq(Mux(wk.valid, xa, 0)), self.m_raddr.eq(Mux(wk.row_start, ma, 0))]

        def reg(v, name, shape=None):
            r = Signal(shape if shape is not None else v.shape(), name=name)
            m.d.sync += r.eq(v)
            return r

        # the beat's tags (valid in cycle c + 1, with its words on the read port)
        lastp = (wk.count == beats - 1) | wk.last  # the last beat of a pass
        firstp = (wk.count == 0) | (wk.count == beats)
        v1, ps1, first1, last1, rf1 = (reg(s, f"{nm}1") for s, nm in (
            (wk.valid, "v"), (pb, "ps"), (firstp, "first"), (lastp, "last"), (wk.row_start, "rf")))
        if self.ragged:  # the caller's valid lanes, with the word
            live = [self.x_live[i] for i in range(n)]
        else:
            tail_r = Signal(range(n + 1))
            with m.If(go):
                m.d.sync += tail_r.eq(self.tail)
            tail = Mux(go, self.tail, tail_r)
            live = [reg(~lastp | (tail > i), f"live{i}") for i in range(n)]
        xi = [self.x_rdata[i] for i in range(n)]
        mx_r = Signal(signed(16))
        mx = Signal(signed(16))
        m.d.comb += mx.eq(Mux(rf1, self.m_rdata, mx_r))
        with m.If(v1 & rf1):
            m.d.sync += mx_r.eq(self.m_rdata)

        # ---- both passes: e = 2^((x - max) log2 e) in Q1.20, stages 2 .. 6 (rtl/sfu_softmax.py)
        es = [exp2_lane(reg, i, xi[i], mx) for i in range(n)]
        live5 = [delay(m, lv, 4, f"live_d{i}") for i, lv in enumerate(live)]
        ctl = [(v1, ps1, first1, last1)]
        for s in range(5):
            ctl.append(tuple(reg(c, f"c{s}_{k}") for k, c in enumerate(ctl[-1])))
        e6 = [reg(Mux(live5[i] & (n5 < 22), (p2 + half) >> n5, 0), f"e6_{i}", 21)          # 6
              for i, (p2, n5, half) in enumerate(es)]
        v6, ps6, first6, last6 = ctl[5]
        # ---- pass A: Z = sum e (stage 7)
        zacc = Signal(40)
        with m.If(v6 & ~ps6):
            m.d.sync += zacc.eq(Mux(first6, 0, zacc) + sum(e6[1:], e6[0]))
        row_end = reg(v6 & ~ps6 & last6, "row_end")
        # ---- reciprocal of Z (sim.numerics.sfu_reduce.sfu_recip), stages N .. R1
        r_row, s_row = recip_stages(m, reg, zacc, row_end)
        # ---- pass B: e delayed to meet r, times r (edge c + 11), round, clip at 1.0 and write (cycle c + 12)
        ed = [delay(m, e, 5, f"ed{i}") for i, e in enumerate(e6)]
        vd = delay(m, v6 & ps6, 5, "o_vd")
        pr = [reg(e * r_row, f"pr{i}", 45) for i, e in enumerate(ed)]
        v11, s11 = reg(vd, "o_v11"), reg(s_row, "o_s11")
        rnd = (Const(1, 46) << (s11 - 1).as_unsigned())[:46]
        for i, p in enumerate(pr):
            q = (p + rnd) >> s11
            m.d.comb += self.o_wdata[i].eq(Mux(q > 1 << 15, 1 << 15, q)[:16])
        m.d.comb += [self.o_wen.eq(v11), self.o_waddr.eq(delay(m, oa, 12, "oad"))]
        lat = self.cfg.op_latency("softmax")
        m.d.comb += [self.done_next.eq(delay(m, wk.final, lat, "fin")), self.done.eq(delay(m, wk.final, lat + 1, "fin_d"))]
        return m


__all__ = ["SOFTMAX_PIPE", "SfuSoftmaxStream", "prob_word"]
