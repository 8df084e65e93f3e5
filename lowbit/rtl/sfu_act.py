"""SFU activation datapath: SiLU or ReLU^2 of the gate, optionally times the up projection (SwiGLU /
ReLU^2-GLU), bit-exact with ``sim.numerics.sfu_elem.sfu_act`` (formats, sigmoid table and rule there).

One pass (sim.units.sfu.SFU_PASSES["activation"] = 1), ``lanes`` elements per beat, per-tile modes ``fn``
(0 = silu, 1 = relu2) and ``gated``. Pipeline, 6 stages = the default latency.activation:
input register -> sigmoid table read (S[j], S[j+1]) -> linear interpolation -> first product (g * sig, or
max(g, 0)^2) -> times up (gated) -> round half up, saturate, output register; then
``latency.activation - 6`` delay registers: cycles = rows * ceil(dim / lanes) + latency.activation.

Ports: start, beats, rows, fn, gated -> ready; g, u: lanes x signed 16 (Q7.8; u ignored when not gated);
out: lanes x signed 16 (Q7.8), out_valid, done.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import COUNT_BITS
from lowbit.rtl.sfu_seq import output_stage, rom, sat, sequencer, validate_op
from lowbit.sim.numerics.sfu_elem import SIG_FRAC, SIGMOID_TABLE
from lowbit.sim.units.sfu import SfuConfig

MIN_LATENCY = 6
FN_CODES = {"silu": 0, "relu2": 1}


def validate(cfg: SfuConfig) -> None:
    validate_op(cfg, "activation", MIN_LATENCY,
                "input register, table, interpolation, two products, round")


def gating_lane(m: Module, lane: int, g1: Value, u1: Value, *, relu3: Value, gated4: Value, fn5: Value,
                gated5: Value) -> Value:
    """One lane of the gating datapath from its registered inputs (cycle 1) to the rounded, saturated Q7.8
    result (cycle 6): sigmoid table read, interpolation, the first product (ReLU² when `relu3`, else g x
    sigmoid), times up when `gated4`, then sim.numerics.sfu_elem.sfu_act's rounding. The mode bits are those of
    the lane's data in each cycle; the standalone unit and the chip's stream engine share it."""

    def stage(v, name):
        r = Signal(v.shape(), name=name)
        m.d.sync += r.eq(v)
        return r

    mag = Mux(g1 < 0, -g1, g1)[:16]
    j = Mux(mag >= 16 << 8, 255, mag >> 4)[:8]
    s_lo = stage(rom(SIGMOID_TABLE[:-1], j, SIG_FRAC + 1), f"slo{lane}")       # 2: table read
    s_hi = stage(rom(SIGMOID_TABLE[1:], j, SIG_FRAC + 1), f"shi{lane}")
    d2 = stage(mag[:4], f"d2_{lane}")
    big2 = stage(mag >= 16 << 8, f"big2_{lane}")
    g2, u2 = stage(g1, f"g2_{lane}"), stage(u1, f"u2_{lane}")
    interp = s_lo + (((s_hi - s_lo) * d2) >> 4)                                 # 3: interpolation
    sp = Mux(big2, 1 << SIG_FRAC, interp)
    sig3 = stage(Mux(g2 < 0, (1 << SIG_FRAC) - sp, sp)[:SIG_FRAC + 1], f"sig3_{lane}")
    g3, u3 = stage(g2, f"g3_{lane}"), stage(u2, f"u3_{lane}")
    relu = Mux(g3 < 0, 0, g3)                                                   # 4: first product
    p4 = stage(Mux(relu3, relu * relu, g3 * sig3), f"p4_{lane}")
    u4 = stage(u3, f"u4_{lane}")
    p5 = Signal(signed(56), name=f"p5_{lane}")                                  # 5: times up
    m.d.sync += p5.eq(Mux(gated4, p4 * u4, p4))
    sh = Mux(fn5, Mux(gated5, 16, 8), Mux(gated5, SIG_FRAC + 8, SIG_FRAC))   # 6: round, saturate
    rnd = Mux(fn5, Mux(gated5, 1 << 15, 1 << 7), Mux(gated5, 1 << (SIG_FRAC + 7), 1 << (SIG_FRAC - 1)))
    return sat((p5 + rnd) >> sh, 16)


class SfuAct(wiring.Component):
    def __init__(self, cfg: SfuConfig):
        validate(cfg)
        self.cfg = cfg
        n = cfg.lanes
        super().__init__({
            "start": In(1), "beats": In(COUNT_BITS), "rows": In(COUNT_BITS), "fn": In(1), "gated": In(1),
            "ready": Out(1),
            "g": In(data.ArrayLayout(signed(16), n)), "u": In(data.ArrayLayout(signed(16), n)),
            "out": Out(data.ArrayLayout(signed(16), n)), "out_valid": Out(1), "done": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        n = self.cfg.lanes
        b = sequencer(m, self.start, self.beats, self.rows, self.ready, passes=1)
        fn_r, gated_r = Signal(), Signal()
        with m.If(b.accept):
            m.d.sync += [fn_r.eq(self.fn), gated_r.eq(self.gated)]

        def stage(v, name):
            r = Signal(v.shape(), name=name)
            m.d.sync += r.eq(v)
            return r

        # control travels with the data (a new tile's modes may be latched while this one drains)
        ctl = [(b.valid, b.final, fn_r, gated_r)]
        for s in range(5):
            ctl.append(tuple(stage(c, f"ctl{s}_{k}") for k, c in enumerate(ctl[-1])))
        outs = []
        for lane in range(n):
            g1 = stage(self.g[lane], f"g1_{lane}")                                     # 1: input register
            u1 = stage(self.u[lane], f"u1_{lane}")
            outs.append(gating_lane(m, lane, g1, u1, relu3=ctl[3][2], gated4=ctl[4][3], fn5=ctl[5][2],
                                    gated5=ctl[5][3]))
        output_stage(m, self, outs, ctl[5][0], ctl[5][1], self.cfg.op_latency("activation") - MIN_LATENCY)
        return m


__all__ = ["SfuAct", "gating_lane", "validate", "MIN_LATENCY", "FN_CODES"]
