"""The projections' output stage: psum accumulators -> Q7.8 act words, bit-exact with
``sim.numerics.requant.requant`` (rule and source there: Jacob et al. 2018 §2.2; docs/golden.md).

``SfuRequantStage`` is the arithmetic, ``lanes`` results a cycle, REQUANT_LATENCY = 4 registered stages::

    E1  G_i = scale * m_i                      (scale: the token's amax from the quantizer, UQ scale_bits)
    E2  e_i = max(bit_length(G_i) - 16, 0);  g_i = G_i >> e_i;  s_i = sh_i - e_i     (leading-one detector)
    E3  P_i = acc_i * g_i                      (exact: acc_bits + 17 bits)
    E4  y_i = sat16((P_i + 2^(s_i - 1)) >> s_i)                                      (round half up)

``s`` must lie in 1..62 (the compiler's multipliers; sim.numerics.requant refuses others). ``PsumRequant`` puts
the same arithmetic behind a projection engine's psum write port (chip_data.TintEngine's ``p_valid`` /
``p_acc``). E1 and E2 do not depend on the accumulators: from the tile's start cycle on, a prefetcher reads,
one pass a cycle, the row group's multipliers (a multiplier word: ``lanes`` x (m: 16, sh: 6), the compiler's
sim.golden.linear_multipliers of the group's rows, DESIGN ASSUMPTION: loaded before ``start`` like the norms'
gains) and the token's amax (the low 16 bits of the row-statistics word the quantizer read), runs E1 and E2
and queues each pass's (g, s) and placement in a PREFETCH_DEPTH-entry FIFO. A psum write pops its pass's
entry and runs E3; E4 writes the group's ``lanes`` results into the Q7.8 row of its token in the next cycle,
REQUANT_DELAY = 1 cycle after the psum write, so a consumer reading the word from the cycle after that on
sees it (docs/rtl.md "SFU streams": the drain rule). A pass's entry is ready PREFETCH = 3 cycles after the
start (the first pass's read in the start cycle, E1, E2); every projection engine's first psum write comes
later (its pipeline latency is at least 3, sim.units), and one pass a cycle keeps up with back-to-back writes.

Psum passes run token after token and, within a token, row group after row group, so group g of token t holds
elements ``off + g * lanes ..`` of the row at Q7.8 word ``o_addr + t * o_stride`` (``off``: the tile's first row
within the output row; the last group's rows: ``tail_lanes``). A group may straddle two Q7.8 words (``lanes``
does not divide the SFU's, e.g. 6 into 16 on ``vitallm``): the Q7.8 buffer is two banks interleaved by word
address with one write enable per element (DESIGN ASSUMPTION), so both words are written in one cycle and a
group never touches elements outside its rows. ``dst`` (0: the tile is not requantized) travels with the
writes and names the buffer they go to.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import COUNT_BITS, bit_length
from lowbit.rtl.sfu_seq import sat
from lowbit.rtl.sfu_stream import q78_word
from lowbit.sim.errors import LowbitError
from lowbit.sim.numerics.requant import MULT_BITS

REQUANT_LATENCY = 4
REQUANT_DELAY = 1
"""Cycles from a psum write to the Q7.8 write of its results (E3, then E4 into the buffer)."""
PREFETCH = 3
"""Cycles from a tile's start to its first pass's (g, s): the read, E1, E2."""
PREFETCH_DEPTH = 4
SH_BITS = 6
DST_BITS = 3  # the buffer a tile's results go to (0: none)


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

        g2, s2 = coefficients(m, self.scale, self.mult, "c")                                   # E1, E2
        acc1 = [reg(self.acc[i], f"acc1_{i}") for i in range(n)]
        acc2 = [reg(a, f"acc2_{i}") for i, a in enumerate(acc1)]
        tg = [(self.in_valid, self.tag)]
        for s in (1, 2, 3):
            tg.append(tuple(reg(v, f"tag{s}_{k}") for k, v in enumerate(tg[-1])))
        p3 = [reg(acc2[i] * g2[i], f"p{i}", signed(self.acc_bits + MULT_BITS + 1)) for i in range(n)]  # E3
        s3 = [reg(s, f"s3_{i}") for i, s in enumerate(s2)]
        m.d.sync += [self.out[i].eq(round_sat(p3[i], s3[i])) for i in range(n)]                 # E4
        m.d.sync += [self.out_valid.eq(tg[-1][0]), self.out_tag.eq(tg[-1][1])]
        return m


def round_sat(p: Value, s: Value) -> Value:
    """E4: sat16((p + 2^(s - 1)) >> s), round half up."""
    half = (Const(1, 64) << (s - 1).as_unsigned()[:6])[:64]
    return sat((p + half) >> s, 16)


def coefficients(m: Module, scale: Value, mult, name: str) -> tuple[list, list]:
    """E1 and E2 of the stage for one multiplier word (registered twice): (g_i, s_i) per lane."""
    n = len(mult)

    def reg(v, nm, shape=None):
        r = Signal(shape if shape is not None else v.shape(), name=f"{name}_{nm}")
        m.d.sync += r.eq(v)
        return r

    big = [reg(scale * mult[i].m, f"G{i}", len(scale) + MULT_BITS) for i in range(n)]               # E1
    sh1 = [reg(mult[i].sh, f"sh{i}") for i in range(n)]
    g2, s2 = [], []
    for i in range(n):                                                                                 # E2
        bl = bit_length(m, big[i], f"{name}_bl{i}")
        e = Mux(bl > MULT_BITS, bl - MULT_BITS, 0)[:6]
        g2.append(reg((big[i] >> e)[:MULT_BITS], f"g{i}", MULT_BITS))
        s2.append(reg((sh1[i] - e)[:6], f"s{i}", 6))  # 1..62 (module docstring)
    return g2, s2


class PsumRequant(wiring.Component):
    """A projection engine's psum writes -> Q7.8 words in a two-bank, element-enabled buffer (module
    docstring). `start` with the tile's fields (`groups`, `tokens`, `tail_lanes` (with `tail`; else every group is
    whole), `off`, `o_addr`, `o_stride`,
    `m_addr`, `s_addr`, `dst`; `dst` 0: a tile that is not requantized) in the engine's start cycle; `p_valid` /
    `p_acc`: the engine's psum writes; `m_*`, `s_*`: multiplier and statistics read ports (data the cycle
    after; the amax `scale_bits` wide); `w{0,1}_*`: the even and odd bank's write ports (`addr` = word address
    / 2, `mask`: one bit per
    element), `w_dst` the buffer they write. Options: `const_mult` (m, sh): one multiplier for every lane and
    pass, a constant (no multiplier port; attention's P V outputs); `s_every`: the statistic row advances every
    `s_groups` groups as well as at each token's end (a statistic per (token, head)); `x_bits`: a per-tile
    value `x`, latched at `start`, travels with each pass, shown with its token and whether it is the token's
    first group when it pops (`p_*`, the psum write's cycle) and when it is written (`w_*`)."""

    def __init__(self, *, lanes: int, acc_bits: int, sfu_lanes: int, a_bits: int, m_bits: int, s_bits: int,
                 scale_bits: int = 16, tail: bool = True, const_mult: tuple[int, int] | None = None,
                 s_every: bool = False, x_bits: int = 0) -> None:
        if lanes > sfu_lanes:
            raise LowbitError(f"psum word of {lanes} lanes wider than the SFU's {sfu_lanes}: a group would span "
                              "three Q7.8 words; raise sfu.lanes")
        self.lanes, self.acc_bits, self.sfu_lanes, self.tail = lanes, acc_bits, sfu_lanes, tail
        self.const_mult, self.s_every, self.x_bits = const_mult, s_every, x_bits
        mport = {} if const_mult is not None else {"m_raddr": Out(m_bits), "m_rdata": In(mult_word(lanes))}
        opt = {**({"s_groups": In(COUNT_BITS)} if s_every else {}),
               **({"x": In(x_bits), "p_x": Out(x_bits), "p_tok": Out(COUNT_BITS), "w_x": Out(x_bits),
                   "w_tok": Out(COUNT_BITS), "w_g0": Out(1)} if x_bits else {})}
        lb = (sfu_lanes - 1).bit_length() or 1
        banks = {}
        for b in (0, 1):
            banks |= {f"w{b}_en": Out(1), f"w{b}_addr": Out(max(1, a_bits - 1)), f"w{b}_data": Out(q78_word(sfu_lanes)),
                      f"w{b}_mask": Out(sfu_lanes)}
        super().__init__({
            "start": In(1), "groups": In(COUNT_BITS), "tokens": In(COUNT_BITS),
            **({"tail_lanes": In(range(lanes + 1))} if tail else {}), "off": In(lb), "o_addr": In(a_bits),
            "o_stride": In(COUNT_BITS), **({"m_addr": In(m_bits)} if const_mult is None else {}), "s_addr": In(s_bits),
            "dst": In(DST_BITS), "p_valid": In(1), "p_acc": In(data.ArrayLayout(signed(acc_bits), lanes)),
            **mport, "s_raddr": Out(s_bits), "s_rdata": In(scale_bits), **opt,
            **banks, "w_dst": Out(DST_BITS),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        n, big_l = self.lanes, self.sfu_lanes
        ab, lb = len(self.o_addr), len(self.off)
        go = self.start & (self.dst != 0)
        # the prefetcher: pass after pass from the start cycle (its registers, or the inputs in that cycle)
        names = ("groups", "off", "o_stride", "dst", *(("tail_lanes",) if self.tail else ()),
                 *(("m_addr",) if self.const_mult is None else ()), *(("s_groups",) if self.s_every else ()),
                 *(("x",) if self.x_bits else ()))
        regs = {k: Signal.like(getattr(self, k), name=f"t_{k}") for k in names}
        cur = {k: Mux(go, getattr(self, k), r) for k, r in regs.items()}
        left, g, row_w, word = Signal(2 * COUNT_BITS), Signal(COUNT_BITS), Signal(ab), Signal(ab)
        elem, t_addr = Signal(lb + 1), Signal.like(self.s_addr)
        tok, sg = Signal(COUNT_BITS), Signal(COUNT_BITS)  # the pass's token; groups since its statistic row began
        c_left = Mux(go, self.groups * self.tokens, left)
        c_g, c_row, c_word = Mux(go, 0, g), Mux(go, self.o_addr, row_w), Mux(go, self.o_addr, word)
        c_elem, c_t = Mux(go, self.off, elem), Mux(go, self.s_addr, t_addr)
        c_tok, c_sg = Mux(go, 0, tok), Mux(go, 0, sg)
        count, v1, v2, v3 = Signal(range(PREFETCH_DEPTH + 1)), Signal(), Signal(), Signal()
        issue = (c_left != 0) & (count + v1 + v2 + v3 < PREFETCH_DEPTH)
        last_g = c_g == cur["groups"] - 1
        with m.If(go):
            m.d.sync += [r.eq(getattr(self, k)) for k, r in regs.items()]
        m.d.sync += [left.eq(c_left - issue), g.eq(c_g), row_w.eq(c_row), word.eq(c_word), elem.eq(c_elem),
                     t_addr.eq(c_t), tok.eq(c_tok), sg.eq(c_sg)]
        with m.If(issue):
            with m.If(last_g):  # the next token's row
                nxt = c_row + cur["o_stride"]
                m.d.sync += [g.eq(0), row_w.eq(nxt), word.eq(nxt), elem.eq(cur["off"]), t_addr.eq(c_t + 1),
                             tok.eq(c_tok + 1), sg.eq(0)]
            with m.Else():
                wrap = c_elem + n >= big_l
                m.d.sync += [g.eq(c_g + 1), word.eq(c_word + wrap), elem.eq(Mux(wrap, c_elem + n - big_l, c_elem + n))]
                if self.s_every:  # a statistic row every s_groups groups (and at each token's end)
                    nxt_s = c_sg == cur["s_groups"] - 1
                    m.d.sync += [sg.eq(Mux(nxt_s, 0, c_sg + 1)), t_addr.eq(c_t + nxt_s)]
        if self.const_mult is None:
            m.d.comb += self.m_raddr.eq(Mux(issue, cur["m_addr"] + c_g, 0))
        m.d.comb += self.s_raddr.eq(Mux(issue, c_t, 0))
        tag_l = data.StructLayout({"word": unsigned(ab), "elem": unsigned(lb + 1), "n": range(n + 1), "dst": DST_BITS,
                                   **({"x": self.x_bits, "tok": COUNT_BITS, "g0": 1} if self.x_bits else {})})
        tag0 = Signal(tag_l)
        m.d.comb += [tag0.word.eq(c_word), tag0.elem.eq(c_elem), tag0.n.eq(Mux(last_g, cur["tail_lanes"], n)
                                                                             if self.tail else n),
                     tag0.dst.eq(cur["dst"])]
        if self.x_bits:
            m.d.comb += [tag0.x.eq(cur["x"]), tag0.tok.eq(c_tok), tag0.g0.eq(c_g == 0)]
        tag1, tag2, tag3 = Signal(tag_l), Signal(tag_l), Signal(tag_l)  # the read, E1, E2
        m.d.sync += [v1.eq(issue), tag1.eq(tag0), v2.eq(v1), tag2.eq(tag1), v3.eq(v2), tag3.eq(tag2)]
        if self.const_mult is None:
            mult = self.m_rdata
        else:  # one multiplier for every lane, a constant of the design
            mult = Signal(mult_word(n), name="c_mult")
            m.d.comb += [mult[i].m.eq(self.const_mult[0]) for i in range(n)]
            m.d.comb += [mult[i].sh.eq(self.const_mult[1]) for i in range(n)]
        g2, s2 = coefficients(m, self.s_rdata, mult, "pf")
        # the FIFO of ready passes: (g, s) per lane and the placement
        ent_l = data.StructLayout({"g": data.ArrayLayout(unsigned(MULT_BITS), n), "s": data.ArrayLayout(6, n),
                                   "tag": tag_l})
        fifo = [Signal(ent_l, name=f"fifo{k}") for k in range(PREFETCH_DEPTH)]
        pb = (PREFETCH_DEPTH - 1).bit_length()
        rp, wp = Signal(pb), Signal(pb)
        on = Signal()  # the tile writing psum words now is requantized
        with m.If(self.start):
            m.d.sync += on.eq(self.dst != 0)
        pop = self.p_valid & on
        incoming = Cat(*g2, *s2, tag3.as_value())
        for k in range(PREFETCH_DEPTH):
            with m.If(v3 & (wp == k)):
                m.d.sync += fifo[k].eq(incoming)
        with m.If(v3):
            m.d.sync += wp.eq(wp + 1)
        oldest = fifo[0]
        for k in range(1, PREFETCH_DEPTH):
            oldest = Mux(rp == k, fifo[k].as_value(), oldest)
        with m.If(pop):
            m.d.sync += rp.eq(rp + 1)
        m.d.sync += count.eq(count + v3 - pop)
        head = Signal(ent_l)  # an empty FIFO passes the entry arriving this cycle on (PREFETCH)
        m.d.comb += head.eq(Mux(count == 0, incoming, oldest))
        # E3 on the write, E4 into the buffer a cycle later
        p3 = [Signal(signed(self.acc_bits + MULT_BITS + 1), name=f"p{i}") for i in range(n)]
        s3 = [Signal(6, name=f"s3_{i}") for i in range(n)]
        v3, tag = Signal(), Signal(tag_l)
        m.d.sync += [v3.eq(pop), tag.eq(head.tag)]
        m.d.sync += [p3[i].eq(self.p_acc[i] * head.g[i]) for i in range(n)]
        m.d.sync += [s3[i].eq(head.s[i]) for i in range(n)]
        out = []
        for i in range(n):
            y = Signal(signed(16), name=f"y{i}")
            m.d.comb += y.eq(round_sat(p3[i], s3[i]))
            out.append(y)
        m.d.comb += self.w_dst.eq(tag.dst)
        if self.x_bits:  # the popped pass's and the written pass's extras, token and first-group flag
            m.d.comb += [self.p_x.eq(head.tag.x), self.p_tok.eq(head.tag.tok), self.w_x.eq(tag.x),
                         self.w_tok.eq(tag.tok), self.w_g0.eq(tag.g0)]
        # placement: element j of the first word takes out[j - elem]; of the second word out[j + L - elem]
        w_first, w_second = [], []
        for j in range(big_l):
            d0, k0 = 0, Signal(name=f"k0_{j}")
            d1, k1 = 0, Signal(name=f"k1_{j}")
            m.d.comb += [k0.eq(0), k1.eq(0)]
            for i in range(n):
                hit0 = (tag.elem + i == j) & (i < tag.n)
                hit1 = (tag.elem + i == j + big_l) & (i < tag.n)
                d0, d1 = Mux(hit0, out[i], d0), Mux(hit1, out[i], d1)
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
            m.d.comb += [en.eq(v3 & (here | second)), addr.eq(Mux(here, tag.word >> 1, (tag.word + 1) >> 1))]
            for j in range(big_l):
                m.d.comb += [dat[j].eq(Mux(here, w_first[j][0], w_second[j][0])),
                             mask[j].eq(Mux(here, w_first[j][1], w_second[j][1]))]
        return m


__all__ = ["REQUANT_LATENCY", "REQUANT_DELAY", "PREFETCH", "SH_BITS", "mult_word", "SfuRequantStage", "PsumRequant"]
