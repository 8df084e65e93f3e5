"""The projections' output stage: psum accumulators -> Q7.8 act words, bit-exact with
``sim.numerics.requant.requant`` (rule and source there: Jacob et al. 2018 §2.2; docs/golden.md).

``SfuRequantStage`` is the arithmetic, ``lanes`` results a cycle, REQUANT_LATENCY = 4 registered stages::

    E1  G_i = scale * m_i                      (scale: the token's amax from the quantizer, UQ scale_bits)
    E2  e_i = max(bit_length(G_i) - 16, 0);  g_i = G_i >> e_i;  s_i = sh_i - e_i     (leading-one detector)
    E3  P_i = acc_i * g_i                      (exact: acc_bits + 17 bits)
    E4  y_i = sat16((P_i + 2^(s_i - 1)) >> s_i)                                      (round half up)

``s`` must lie in 1..62 (the compiler's multipliers; sim.numerics.requant refuses others). ``PsumRequant`` puts
it behind a projection engine's psum write port (chip_data.TintEngine's ``p_valid`` / ``p_acc``): in the cycle
of each write it reads the row group's multipliers (a multiplier word: ``lanes`` x (m: 16, sh: 6), the
compiler's sim.golden.linear_multipliers of the group's rows, DESIGN ASSUMPTION: loaded with the weights)
and the token's amax (the low 16 bits of the row-statistics word the quantizer read), and REQUANT_DELAY = 5 edges after the
psum write it writes the group's ``lanes`` results into the Q7.8 row of its token: psum passes run token
after token and, within a token, row group after row group, so group g of token t holds elements
``off + g * lanes ..`` of the row at Q7.8 word ``o_addr + t * o_stride`` (``off``: the tile's first row
within the output row; the last group's rows: ``tail_lanes``). A group may straddle two Q7.8 words (``lanes``
does not divide the SFU's, e.g. 6 into 16 on ``vitallm``): the Q7.8 buffer is two banks interleaved by word
address with one write enable per element (DESIGN ASSUMPTION), so both words are written in one cycle and a
group never touches elements outside its rows.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import COUNT_BITS, bit_length
from lowbit.rtl.sfu_seq import sat
from lowbit.rtl.sfu_stream import q78_word
from lowbit.sim.errors import LowbitError
from lowbit.sim.numerics.requant import MULT_BITS

REQUANT_LATENCY = 4
REQUANT_DELAY = 5
"""Edges from a psum write to the Q7.8 write of its results: one multiplier/amax read, then the stage."""
SH_BITS = 6


def mult_word(lanes: int) -> data.ArrayLayout:
    """A multiplier word: per lane (row) the compiler's normalised multiplier m and its exponent sh."""
    return data.ArrayLayout(data.StructLayout({"m": unsigned(MULT_BITS), "sh": unsigned(SH_BITS)}), lanes)


class SfuRequantStage(wiring.Component):
    """Requantize `lanes` accumulators a cycle (module docstring); `tag` travels with them."""

    def __init__(self, *, lanes: int, acc_bits: int, scale_bits: int = 16, tag_bits: int = 1) -> None:
        if not 1 <= scale_bits <= 37:
            raise LowbitError(f"requant scale_bits = {scale_bits}: sim.numerics.requant takes scales below 2^37")
        self.lanes, self.acc_bits, self.scale_bits = lanes, acc_bits, scale_bits
        super().__init__({
            "in_valid": In(1), "acc": In(data.ArrayLayout(signed(acc_bits), lanes)), "scale": In(scale_bits),
            "mult": In(mult_word(lanes)), "tag": In(tag_bits),
            "out_valid": Out(1), "out": Out(q78_word(lanes)), "out_tag": Out(tag_bits),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        n = self.lanes

        def reg(v, name, shape=None):
            r = Signal(shape if shape is not None else v.shape(), name=name)
            m.d.sync += r.eq(v)
            return r

        gw = self.scale_bits + MULT_BITS
        big = [reg(self.scale * self.mult[i].m, f"G{i}", gw) for i in range(n)]                 # E1
        acc1 = [reg(self.acc[i], f"acc1_{i}") for i in range(n)]
        sh1 = [reg(self.mult[i].sh, f"sh1_{i}") for i in range(n)]
        tg = [(self.in_valid, self.tag)]
        tg.append(tuple(reg(v, f"tag1_{k}") for k, v in enumerate(tg[-1])))
        g2, s2 = [], []
        for i in range(n):                                                                      # E2
            bl = bit_length(m, big[i], f"G_bl{i}")
            e = Mux(bl > MULT_BITS, bl - MULT_BITS, 0)[:6]
            g2.append(reg((big[i] >> e)[:MULT_BITS], f"g{i}", MULT_BITS))
            s2.append(reg((sh1[i] - e)[:6], f"s2_{i}", 6))  # 1..62 (module docstring)
        acc2 = [reg(a, f"acc2_{i}") for i, a in enumerate(acc1)]
        tg.append(tuple(reg(v, f"tag2_{k}") for k, v in enumerate(tg[-1])))
        p3 = [reg(acc2[i] * g2[i], f"p{i}", signed(self.acc_bits + MULT_BITS + 1)) for i in range(n)]  # E3
        s3 = [reg(s, f"s3_{i}") for i, s in enumerate(s2)]
        tg.append(tuple(reg(v, f"tag3_{k}") for k, v in enumerate(tg[-1])))
        for i in range(n):                                                                      # E4
            sh = s3[i]
            half = (Const(1, 64) << (sh - 1).as_unsigned()[:6])[:64]
            m.d.sync += self.out[i].eq(sat((p3[i] + half) >> sh, 16))
        m.d.sync += [self.out_valid.eq(tg[-1][0]), self.out_tag.eq(tg[-1][1])]
        return m


class PsumRequant(wiring.Component):
    """A projection engine's psum writes -> Q7.8 words in a two-bank, element-enabled buffer (module
    docstring). `start` with the tile's fields (`groups`, `tail_lanes`, `off`, `o_addr`, `o_stride`,
    `m_addr`, `s_addr`) in the projection tile's start cycle; `p_valid` / `p_acc`: the engine's psum writes;
    `m_*`, `s_*`: multiplier and statistics read ports (data the cycle after); `w{0,1}_*`: the even and odd
    bank's write ports (`waddr` = word address / 2, `wmask`: one bit per element)."""

    def __init__(self, *, lanes: int, acc_bits: int, sfu_lanes: int, a_bits: int, m_bits: int, s_bits: int) -> None:
        if lanes > sfu_lanes:
            raise LowbitError(f"psum word of {lanes} lanes wider than the SFU's {sfu_lanes}: a group would span "
                              "three Q7.8 words; raise sfu.lanes")
        self.lanes, self.acc_bits, self.sfu_lanes = lanes, acc_bits, sfu_lanes
        lb = (sfu_lanes - 1).bit_length() or 1
        banks = {}
        for b in (0, 1):
            banks |= {f"w{b}_en": Out(1), f"w{b}_addr": Out(max(1, a_bits - 1)), f"w{b}_data": Out(q78_word(sfu_lanes)),
                      f"w{b}_mask": Out(sfu_lanes)}
        super().__init__({
            "start": In(1), "groups": In(COUNT_BITS), "tail_lanes": In(range(lanes + 1)),
            "off": In(lb), "o_addr": In(a_bits), "o_stride": In(COUNT_BITS), "m_addr": In(m_bits), "s_addr": In(s_bits),
            "p_valid": In(1), "p_acc": In(data.ArrayLayout(signed(acc_bits), lanes)),
            "m_raddr": Out(m_bits), "m_rdata": In(mult_word(lanes)), "s_raddr": Out(s_bits), "s_rdata": In(16),
            **banks,
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        n, big_l = self.lanes, self.sfu_lanes
        ab = len(self.o_addr)
        lb = len(self.off)
        # the tile's fields, and the position of the next psum pass: group g of token t
        groups, tail, off, stride = (Signal.like(s, name=f"t_{s.name}") for s in
                                     (self.groups, self.tail_lanes, self.off, self.o_stride))
        m0, s0 = Signal.like(self.m_addr), Signal.like(self.s_addr)
        g, row_w, word = Signal(COUNT_BITS), Signal(ab), Signal(ab)
        elem = Signal(lb + 1)
        t_addr = Signal.like(self.s_addr)
        last_g = g == groups - 1
        with m.If(self.start):
            m.d.sync += [groups.eq(self.groups), tail.eq(self.tail_lanes), off.eq(self.off),
                         stride.eq(self.o_stride), m0.eq(self.m_addr), s0.eq(self.s_addr), g.eq(0),
                         row_w.eq(self.o_addr), word.eq(self.o_addr), elem.eq(self.off), t_addr.eq(self.s_addr)]
        with m.Elif(self.p_valid):
            with m.If(last_g):  # next token's row
                m.d.sync += [g.eq(0), row_w.eq(row_w + stride), word.eq(row_w + stride), elem.eq(off),
                             t_addr.eq(t_addr + 1)]
            with m.Else():
                wrap = elem + n >= big_l
                m.d.sync += [g.eq(g + 1), word.eq(word + wrap), elem.eq(Mux(wrap, elem + n - big_l, elem + n))]
        m.d.comb += [self.m_raddr.eq(Mux(self.p_valid, m0 + g, 0)), self.s_raddr.eq(Mux(self.p_valid, t_addr, 0))]
        # the pass's accumulators and placement, registered with the reads
        acc1 = Signal.like(self.p_acc)
        v1 = Signal()
        tag_l = data.StructLayout({"word": unsigned(ab), "elem": unsigned(lb + 1), "n": range(n + 1)})
        tag1 = Signal(tag_l)
        m.d.sync += [acc1.eq(self.p_acc), v1.eq(self.p_valid), tag1.word.eq(word), tag1.elem.eq(elem),
                     tag1.n.eq(Mux(last_g, tail, n))]
        m.submodules.stage = st = SfuRequantStage(lanes=n, acc_bits=self.acc_bits, scale_bits=16,
                                                  tag_bits=tag_l.size)
        m.d.comb += [st.in_valid.eq(v1), st.acc.eq(acc1), st.scale.eq(self.s_rdata), st.mult.eq(self.m_rdata),
                     st.tag.eq(tag1.as_value())]
        tag = data.View(tag_l, st.out_tag)
        # placement: element j of the first word takes out[j - elem]; of the second word out[j + L - elem]
        w_first, w_second = [], []
        for j in range(big_l):
            d0, k0 = 0, Signal(name=f"k0_{j}")
            d1, k1 = 0, Signal(name=f"k1_{j}")
            m.d.comb += [k0.eq(0), k1.eq(0)]
            for i in range(n):
                hit0 = (tag.elem + i == j) & (i < tag.n)
                hit1 = (tag.elem + i == j + big_l) & (i < tag.n)
                d0, d1 = Mux(hit0, st.out[i], d0), Mux(hit1, st.out[i], d1)
                with m.If(hit0):
                    m.d.comb += k0.eq(1)
                with m.If(hit1):
                    m.d.comb += k1.eq(1)
            w_first.append((d0, k0))
            w_second.append((d1, k1))
        second = tag.elem + tag.n > big_l
        for b in (0, 1):
            en, addr, dat, mask = (getattr(self, f"w{b}_{f}") for f in ("en", "addr", "data", "mask"))
            here = tag.word[0] == b  # the first word is in this bank, else the second one is
            m.d.comb += [en.eq(st.out_valid & (here | second)),
                         addr.eq(Mux(here, tag.word >> 1, (tag.word + 1) >> 1))]
            for j in range(big_l):
                m.d.comb += [dat[j].eq(Mux(here, w_first[j][0], w_second[j][0])),
                             mask[j].eq(Mux(here, w_first[j][1], w_second[j][1]))]
        return m


__all__ = ["REQUANT_LATENCY", "REQUANT_DELAY", "SH_BITS", "mult_word", "SfuRequantStage", "PsumRequant"]
