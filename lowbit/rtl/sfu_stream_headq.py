"""The per-head absmax INT8 quantize behind the RoPE stream (lowbit.rtl.sfu_stream_rope): each RoPE'd q or k head
row becomes INT8 words with the row's amax as its scale, bit-exact with ``sim.numerics.sfu.sfu_absmax_quantize``
(the golden's q8 / k8, docs/golden.md), inside the RoPE word's cycles::

    q = sign(x) * RNE(127 |x| / amax)        (0 where amax = 0)

which is exactly the golden's rule (its module docstring proves the reciprocal form equals RNE(127 x / amax) for
R >= W + 2). Here each lane divides directly (DESIGN ASSUMPTION: a 7-step restoring divider a lane, since
127 |x| / amax < 128; Q7.8 |x| <= 2^15): n = floor(127 |x| / amax), r = 127 |x| - n amax, q = n + 1 where
2r > amax or (2r = amax and n odd), round half to even (IEEE 754 roundTiesToEven).

Timing (cycle c = the RoPE engine's read of a row's last beat): the engine writes the row's words in cycles
.. c + 2 (`i_wen`), its amax comes with `a_wen` in cycle c + 3, and word j of the row is quantized in cycle
c + 3 + j and written (`q_wen` / `k_wen`) in c + 4 + j, so the row's last word lands in c + 3 + beats: the
RoPE word's latency must be at least beats + 3 (`HEADQ_PIPE`). The rows' words wait in two row buffers
(`max_beats` words each, the row being quantized and the next), a register file.

Rows, in the RoPE word's order: per token `hpp` rows, the first `nq` q rows (head h of group gi at row
gi x grp + h), then k rows. A q row (token t, group gi, head h) goes to act words
o_addr + (gi x gstride + t x grp + h) x beats .. (Q K^T's query layout: a group's rows (t, h) in order,
groups `gstride` rows apart), its amax to `s_*` with that row index; the k rows, t x (hpp - nq) + kk, to
`k_*` and `s_*` (`s_k` 1) from 0.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import COUNT_BITS
from lowbit.rtl.sfu_stream import STAT_BITS, magnitude, q78_word

HEADQ_PIPE = 3  # latency the RoPE word needs past its last read, plus its beats (module docstring)
QMAX = 127


def i8_word(lanes: int) -> data.ArrayLayout:
    return data.ArrayLayout(signed(8), lanes)


def rne_quant(m: Module, x, amax, name: str):
    """sign(x) RNE(127 |x| / amax) of a signed 16-bit x with |x| <= amax (an unsigned 17-bit value), 0 for
    amax 0: a combinational 7-step restoring divider (module docstring)."""
    mag = Signal(17, name=f"{name}_mag")
    m.d.comb += mag.eq(magnitude(x))
    rem = mag * QMAX
    bits = []
    for k in range(6, -1, -1):
        d = amax << k
        ge = Signal(name=f"{name}_ge{k}")
        r_ = Signal(24, name=f"{name}_r{k}")
        m.d.comb += [ge.eq(rem >= d), r_.eq(Mux(ge, rem - d, rem))]
        rem = r_
        bits.append(ge)
    n = Signal(7, name=f"{name}_n")
    m.d.comb += n.eq(sum(b << k for b, k in zip(bits, range(6, -1, -1), strict=True)))
    up = ((rem << 1) > amax) | (((rem << 1) == amax) & n[0])
    q = Signal(8, name=f"{name}_q")
    m.d.comb += q.eq(Mux(amax == 0, 0, n + up))
    return Mux(x < 0, -q, q)


class SfuHeadQuant(wiring.Component):
    """Per-head absmax INT8 quantize of the RoPE stream's rows (module docstring)."""

    def __init__(self, lanes: int, *, max_beats: int, a_bits: int) -> None:
        self.lanes, self.max_beats = lanes, max_beats
        super().__init__({
            "start": In(1), "beats": In(COUNT_BITS), "hpp": In(COUNT_BITS), "nq": In(COUNT_BITS),
            "grp": In(COUNT_BITS), "gstride": In(a_bits), "o_addr": In(a_bits),
            "i_wen": In(1), "i_wdata": In(q78_word(lanes)), "a_wen": In(1), "a_wdata": In(STAT_BITS),
            "q_wen": Out(1), "q_waddr": Out(a_bits), "q_wdata": Out(i8_word(lanes)),
            "k_wen": Out(1), "k_waddr": Out(a_bits), "k_wdata": Out(i8_word(lanes)),
            "s_wen": Out(1), "s_k": Out(1), "s_row": Out(a_bits), "s_amax": Out(17),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        n, mb = self.lanes, self.max_beats
        ab = len(self.o_addr)
        cfg = {k: Signal.like(getattr(self, k), name=f"c_{k}") for k in ("beats", "hpp", "nq", "grp", "gstride", "o_addr")}
        with m.If(self.start):
            m.d.sync += [r.eq(getattr(self, k)) for k, r in cfg.items()]
        beats, hpp, nq, grp, gstride, o_addr = cfg.values()
        # the two row buffers: words arrive in order, a row's `beats` words, rows alternating buffers
        store = Array(Array(Signal(q78_word(n), name=f"row{p}_{b}") for b in range(mb)) for p in range(2))
        wpar, wb = Signal(), Signal(range(max(2, mb)))
        with m.If(self.start):
            m.d.sync += [wpar.eq(0), wb.eq(0)]
        with m.Elif(self.i_wen):
            for p in range(2):  # one enable a word (no indexed write: every case covered)
                for b in range(mb):
                    with m.If((wpar == p) & (wb == b)):
                        m.d.sync += store[p][b].eq(self.i_wdata)
            with m.If(wb == beats - 1):
                m.d.sync += [wb.eq(0), wpar.eq(~wpar)]
            with m.Else():
                m.d.sync += wb.eq(wb + 1)
        # the drain: a row's words from its amax cycle on, one a cycle
        busy, j_r, rpar, amax_r = Signal(), Signal(range(max(2, mb))), Signal(), Signal(17)
        a_in = Signal(17)  # the statistic word's amax (<= 2^15; a wider word would clamp, never reached)
        m.d.comb += a_in.eq(Mux(self.a_wdata[17:].any(), (1 << 17) - 1, self.a_wdata[:17]))
        act = busy | self.a_wen
        j = Mux(self.a_wen, 0, j_r)
        amax = Mux(self.a_wen, a_in, amax_r)
        last = act & (j == beats - 1)
        with m.If(self.a_wen):
            m.d.sync += amax_r.eq(a_in)
        with m.If(self.start):
            m.d.sync += [busy.eq(0), j_r.eq(0), rpar.eq(0)]
        with m.Elif(last):
            m.d.sync += [busy.eq(0), j_r.eq(0), rpar.eq(~rpar)]
        with m.Elif(act):
            m.d.sync += [busy.eq(1), j_r.eq(j + 1)]
        # the row walk (module docstring): position in the token, head in the group, group and token offsets
        jpos, hcnt, gi_r, t_r, kidx = (Signal(ab, name=x) for x in ("jpos", "hcnt", "gi_r", "t_r", "kidx"))
        is_q = jpos < nq
        with m.If(self.start):
            m.d.sync += [x.eq(0) for x in (jpos, hcnt, gi_r, t_r, kidx)]
        with m.Elif(last):
            with m.If(jpos == hpp - 1):
                m.d.sync += [jpos.eq(0), hcnt.eq(0), gi_r.eq(0), t_r.eq(t_r + grp)]
            with m.Else():
                m.d.sync += jpos.eq(jpos + 1)
                with m.If(is_q & (hcnt == grp - 1)):
                    m.d.sync += [hcnt.eq(0), gi_r.eq(gi_r + gstride)]
                with m.Elif(is_q):
                    m.d.sync += hcnt.eq(hcnt + 1)
            with m.If(~is_q):
                m.d.sync += kidx.eq(kidx + 1)
        qrow = Signal(ab)
        m.d.comb += qrow.eq(gi_r + t_r + hcnt)
        word = store[rpar][j] if mb > 1 else store[rpar][0]  # a one-word row: no index (lint: no partial case)
        qw = Signal(i8_word(n))
        m.d.comb += [qw[i].eq(rne_quant(m, word[i], amax, f"l{i}")) for i in range(n)]
        # registered outputs: the words in the cycle after, the row's amax with its first word
        m.d.sync += [self.q_wen.eq(act & is_q), self.k_wen.eq(act & ~is_q),
                     self.q_waddr.eq(o_addr + qrow * beats + j), self.k_waddr.eq(kidx * beats + j),
                     self.q_wdata.eq(qw), self.k_wdata.eq(qw),
                     self.s_wen.eq(act & (j == 0)), self.s_k.eq(~is_q), self.s_row.eq(Mux(is_q, qrow, kidx)),
                     self.s_amax.eq(amax)]
        return m


__all__ = ["HEADQ_PIPE", "SfuHeadQuant", "i8_word", "rne_quant"]
