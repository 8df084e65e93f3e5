"""RoPE's stream engine: rotate-half rotary embedding of q and k head rows in the Q7.8 buffer, bit-exact with
``sim.numerics.sfu_elem.sfu_rope`` (Su et al. 2021; Q2.14 table, round half up, saturation there) and
cycle-exact with the program's rope word (one pass)::

    cycles = rows * beats + latency.rope               (>= ROPE_PIPE = 3),  beats = ceil(head_dim / lanes)

A row is one head of one token (the program's rows = tokens x heads); ``hpp`` consecutive rows share a
position (the heads of a token in the word). Element i of the first half pairs with i + h (h = head_dim / 2):
out[i] = x[i] cos - x[i+h] sin, out[i+h] = x[i+h] cos + x[i] sin. Two layouts, by the row's words
(DESIGN ASSUMPTION: others are refused by the loader, :func:`rope_layout_ok`):

* ``beats > 1`` with h a multiple of ``lanes``: beat b reads its word and the partner word
  (b + beats/2) mod beats on the Q7.8 buffer's two read ports and writes one whole word;
* ``beats == 1`` (head_dim <= lanes): the pair is inside the word; ``half`` = h picks the partner lane.

The table is the compiler's (sim.numerics.sfu_elem.rope_table) laid out as words of ``lanes`` (cos, sin)
Q2.14 pairs in the engine's order: position p's beat b holds, at lane l, the entry (b * lanes + l) mod h
(zero past head_dim), at table word ``t_addr + p * beats + b`` (the row's position counted from the word's
first, ``hpp`` rows each). Cycle c reads; products at edge c + 1; round, saturate and write at edge c + 2;
each row's amax = max |y| (the reduction of the per-head absmax INT8 quantize of q and k that follows,
docs/golden.md) goes to the row-statistics word ``a_addr + row`` at edge c + 3 with the row's last beat.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import COUNT_BITS, delay
from lowbit.rtl.sfu_seq import sat
from lowbit.rtl.sfu_stream import (
    STAT_BITS,
    magnitude,
    pointer,
    q78_word,
    row_stat,
    stream_start,
    stream_validate,
)
from lowbit.sim.numerics.sfu_elem import TRIG_FRAC
from lowbit.sim.units.sfu import SfuConfig

ROPE_PIPE = 3


def trig_word(lanes: int) -> data.ArrayLayout:
    """A RoPE table word: per lane a (cos, sin) pair, Q2.14."""
    return data.ArrayLayout(data.StructLayout({"cos": signed(16), "sin": signed(16)}), lanes)


def rope_layout_ok(head_dim: int, lanes: int) -> bool:
    """Whether the engine rotates rows of `head_dim` with `lanes`-element words (module docstring)."""
    return head_dim % 2 == 0 and (head_dim <= lanes or (head_dim // 2) % lanes == 0)


class SfuRopeStream(wiring.Component):
    def __init__(self, cfg: SfuConfig, *, a_bits: int, t_bits: int, s_bits: int = 8) -> None:
        stream_validate(cfg, "rope", ROPE_PIPE)
        self.cfg = cfg
        n = cfg.lanes
        w = q78_word(n)
        super().__init__({
            "start": In(1), "rows": In(COUNT_BITS), "beats": In(COUNT_BITS), "hpp": In(COUNT_BITS),
            "half": In(range(n + 1)), "x_addr": In(a_bits), "o_addr": In(a_bits), "t_addr": In(t_bits), "a_addr": In(s_bits),
            "ready": Out(1), "done": Out(1), "done_next": Out(1),
            "x_raddr": Out(a_bits), "x_rdata": In(w), "y_raddr": Out(a_bits), "y_rdata": In(w),
            "t_raddr": Out(t_bits), "t_rdata": In(trig_word(n)),
            "o_wen": Out(1), "o_waddr": Out(a_bits), "o_wdata": Out(w),
            "a_wen": Out(1), "a_waddr": Out(s_bits), "a_wdata": Out(STAT_BITS),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        n = self.cfg.lanes
        go, wk = stream_start(m, self, extra=self.hpp != 0)
        regs = {k: Signal.like(getattr(self, k), name=f"t_{k}") for k in ("beats", "hpp", "half", "t_addr")}
        with m.If(go):
            m.d.sync += [r.eq(getattr(self, k)) for k, r in regs.items()]
        beats, hpp, half, t0 = (Mux(go, getattr(self, k), regs[k]) for k in ("beats", "hpp", "half", "t_addr"))
        hb = beats >> 1
        b = wk.count                                       # the beat within the row
        row_r = Signal(len(self.x_addr))
        row = Mux(go, self.x_addr, row_r)
        # the position's first table word and the rows left at this position
        tp_r, left_r = Signal(len(self.t_addr)), Signal(COUNT_BITS)
        tp, left = Mux(go, t0, tp_r), Mux(go, hpp, left_r)
        with m.If(wk.last):
            m.d.sync += [row_r.eq(row + beats), tp_r.eq(Mux(left == 1, tp + beats, tp)),
                         left_r.eq(Mux(left == 1, hpp, left - 1))]
        with m.Elif(go):
            m.d.sync += [row_r.eq(self.x_addr), tp_r.eq(t0), left_r.eq(hpp)]
        first_half = b < hb
        partner = Mux(first_half, b + hb, b - hb)
        oa = pointer(m, go, self.o_addr, wk.valid, "oa")
        m.d.comb += [self.x_raddr.eq(Mux(wk.valid, row + b, 0)), self.y_raddr.eq(Mux(wk.valid, row + partner, 0)),
                     self.t_raddr.eq(Mux(wk.valid, tp + b, 0))]
        # cycle c + 1: the words; each lane's partner and the sign of its sin term
        v1, in_word, fh1, oa1 = Signal(), Signal(), Signal(), Signal.like(oa)
        h1 = Signal.like(self.half)
        m.d.sync += [v1.eq(wk.valid), in_word.eq(beats == 1), fh1.eq(first_half), oa1.eq(oa), h1.eq(half)]
        xs = Array(self.x_rdata[i] for i in range(n))
        pc, ps = [], []
        for i in range(n):
            lo = i < h1                                     # in-word: lane i < h pairs with i + h
            pf = Mux(lo, i + h1, i - h1)
            p = Mux(in_word, Mux(pf < n, xs[pf[:max(1, (n - 1).bit_length())]], 0), self.y_rdata[i])
            neg = Mux(in_word, lo, fh1)
            c = Signal(signed(32), name=f"xc{i}")
            s = Signal(signed(32), name=f"ps{i}")
            m.d.sync += [c.eq(self.x_rdata[i] * self.t_rdata[i].cos),
                         s.eq(Mux(neg, -(p * self.t_rdata[i].sin), p * self.t_rdata[i].sin))]
            pc.append(c)
            ps.append(s)
        # cycle c + 2: sum, round half up, saturate, write
        v2, oa2 = Signal(), Signal.like(oa)
        m.d.sync += [v2.eq(v1), oa2.eq(oa1)]
        m.d.comb += [self.o_wdata[i].eq(sat((pc[i] + ps[i] + (1 << (TRIG_FRAC - 1))) >> TRIG_FRAC, 16))
                     for i in range(n)]
        m.d.comb += [self.o_wen.eq(v2), self.o_waddr.eq(oa2)]
        bmax = magnitude(self.o_wdata[0])
        for i in range(1, n):  # a running max, one named net a lane
            mg, bm = Signal(16, name=f"mag{i}"), Signal(16, name=f"bmax{i}")
            m.d.comb += [mg.eq(magnitude(self.o_wdata[i])), bm.eq(Mux(mg > bmax, mg, bmax))]
            bmax = bm
        aa = pointer(m, go, self.a_addr, wk.last, "aa")
        wen, val = row_stat(m, v2, delay(m, b == 0, 2, "first"), delay(m, wk.last, 2, "lastb"), bmax, "max", "am")
        m.d.comb += [self.a_wen.eq(wen), self.a_waddr.eq(delay(m, aa, 3, "aad")), self.a_wdata.eq(val)]
        lat = self.cfg.op_latency("rope")
        m.d.comb += [self.done_next.eq(delay(m, wk.final, lat, "fin")), self.done.eq(delay(m, wk.final, lat + 1, "fin_d"))]
        return m


def rope_table_words(cos_q, sin_q, head_dim: int, lanes: int) -> list[list[dict[str, int]]]:
    """The RoPE table in the engine's layout (module docstring): per position, `beats` words of `lanes`
    (cos, sin) pairs, from sim.numerics.sfu_elem.rope_table's [positions, head_dim / 2] arrays."""
    h = head_dim // 2
    beats = -(-head_dim // lanes)
    out = []
    for c, s in zip(cos_q, sin_q, strict=True):
        for b in range(beats):
            idx = [b * lanes + j for j in range(lanes)]
            out.append([{"cos": int(c[i % h]), "sin": int(s[i % h])} if i < head_dim else {"cos": 0, "sin": 0}
                        for i in idx])
    return out


__all__ = ["ROPE_PIPE", "SfuRopeStream", "rope_layout_ok", "rope_table_words", "trig_word"]
