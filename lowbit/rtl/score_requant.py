"""The attention scores' output stage: Q K^T accumulators -> Q7.8 scores with a scale per output, bit-exact
with sim.golden `_attention`'s ``requant(acc, q_amax[t, h] x k_amax[j], m_qk, sh_qk)``
(sim.numerics.requant.requant: Jacob et al. 2018 §2.2; m_qk, sh_qk: sim.golden.attn_multipliers' ``qk``,
1 / (127^2 x 2^8 x sqrt(head_dim))).

A Q K^T pass's `lanes` outputs are (query t, head h, key j) of different rows and keys, so unlike a projection's
requantizer (lowbit.rtl.sfu_stream_requant, one amax a token) every lane has its own scale: DESIGN
ASSUMPTION, the stage takes each lane's query amax and key amax (16-bit: absmax of Q7.8 rows, at most 2^15)
and forms their product itself. SCORE_LATENCY = 5 registered stages::

    E0  scale_i = qa_i * ka_i                  (< 2^30)
    E1  G_i = scale_i * m_qk
    E2  e_i = max(bit_length(G_i) - 16, 0);  g_i = G_i >> e_i;  s_i = sh_qk - e_i
    E3  P_i = acc_i * g_i
    E4  y_i = sat16((P_i + 2^(s_i - 1)) >> s_i)

E0 .. E2 do not depend on the accumulators, so behind BoothFlex's psum port they can run ahead of the psum
write as the projections' prefetcher does (a pass's keys and rows are known from the tile's fields); this
module is the arithmetic, `lanes` outputs a cycle.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import delay
from lowbit.rtl.sfu_stream import q78_word
from lowbit.rtl.sfu_stream_requant import coefficients, mult_word, round_sat

SCORE_LATENCY = 5
AMAX_BITS = 16


class ScoreRequantStage(wiring.Component):
    """Requantize `lanes` Q K^T accumulators a cycle, each with the scale qa_i x ka_i (module docstring), the
    multiplier `mult` = (m, sh) a constant of the design; `tag` travels with them."""

    def __init__(self, *, lanes: int, acc_bits: int, mult: tuple[int, int], tag_bits: int = 1) -> None:
        self.lanes, self.acc_bits, self.mult = lanes, acc_bits, mult
        super().__init__({
            "in_valid": In(1), "acc": In(data.ArrayLayout(signed(acc_bits), lanes)),
            "qa": In(data.ArrayLayout(AMAX_BITS, lanes)), "ka": In(data.ArrayLayout(AMAX_BITS, lanes)),
            "tag": In(tag_bits), "out_valid": Out(1), "out": Out(q78_word(lanes)), "out_tag": Out(tag_bits),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        mult = Signal(mult_word(1), name="c_mult")
        m.d.comb += [mult[0].m.eq(self.mult[0]), mult[0].sh.eq(self.mult[1])]
        p3, s3 = [], []
        for i in range(self.lanes):
            sc = delay(m, self.qa[i] * self.ka[i], 1, f"scale{i}")                               # E0
            (g,), (s,) = coefficients(m, sc, mult, f"c{i}")                                    # E1, E2
            acc = delay(m, self.acc[i], 3, f"acc{i}")
            p3.append(delay(m, acc * g, 1, f"p{i}"))                                           # E3
            s3.append(delay(m, s, 1, f"s3_{i}"))
        m.d.sync += [self.out[i].eq(round_sat(p3[i], s3[i])) for i in range(self.lanes)]       # E4
        m.d.sync += [self.out_valid.eq(delay(m, self.in_valid, SCORE_LATENCY - 1, "v")),
                     self.out_tag.eq(delay(m, self.tag, SCORE_LATENCY - 1, "tag"))]
        return m


__all__ = ["AMAX_BITS", "SCORE_LATENCY", "ScoreRequantStage"]
