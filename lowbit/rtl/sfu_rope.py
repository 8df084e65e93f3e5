"""SFU RoPE datapath: rotate-half rotary embedding in fixed point, bit-exact with
``sim.numerics.sfu_elem.sfu_rope`` (formats and rule there).

One pass (sim.units.sfu.SFU_PASSES["rope"] = 1): a beat carries ``lanes / 2`` rotation pairs: lane j holds
x[i] and lane j + lanes/2 holds x[i + head_dim/2] for i = beat * lanes/2 + j (the buffer reads the two
halves of a row in parallel -- DESIGN ASSUMPTION: two read banks), with ``cos`` / ``sin`` (lanes/2 x Q2.14)
from the RoPE table beside them. So ceil(head_dim / lanes) beats per row, as the timing formula. Pipeline:
input register -> the four products per pair -> add, round half up, saturate, output register (3 stages),
then ``latency.rope - 3`` delay registers: cycles = rows * ceil(head_dim / lanes) + latency.rope.

Ports: start, beats, rows -> ready; x: lanes x signed 16 (Q7.8); cos, sin: lanes/2 x signed 16 (Q2.14);
out: lanes x signed 16 (same lane layout as x), out_valid, done.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import COUNT_BITS
from lowbit.rtl.sfu_seq import output_stage, sat, sequencer, validate_op
from lowbit.sim.numerics.sfu_elem import TRIG_FRAC
from lowbit.sim.units.sfu import SfuConfig

MIN_LATENCY = 3


def validate(cfg: SfuConfig) -> None:
    validate_op(cfg, "rope", MIN_LATENCY, "input register, multiply, round", even_lanes=True)


class SfuRope(wiring.Component):
    def __init__(self, cfg: SfuConfig):
        validate(cfg)
        self.cfg = cfg
        n = cfg.lanes
        super().__init__({
            "start": In(1), "beats": In(COUNT_BITS), "rows": In(COUNT_BITS), "ready": Out(1),
            "x": In(data.ArrayLayout(signed(16), n)),
            "cos": In(data.ArrayLayout(signed(16), n // 2)),
            "sin": In(data.ArrayLayout(signed(16), n // 2)),
            "out": Out(data.ArrayLayout(signed(16), n)), "out_valid": Out(1), "done": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        n, h = self.cfg.lanes, self.cfg.lanes // 2
        b = sequencer(m, self.start, self.beats, self.rows, self.ready, passes=1)
        # stage 1: input register
        xi = [Signal(signed(16), name=f"xi{i}") for i in range(n)]
        ci = [Signal(signed(16), name=f"ci{j}") for j in range(h)]
        si = [Signal(signed(16), name=f"si{j}") for j in range(h)]
        v1, f1 = Signal(), Signal()
        m.d.sync += [r.eq(self.x[i]) for i, r in enumerate(xi)]
        m.d.sync += [r.eq(self.cos[j]) for j, r in enumerate(ci)] + [r.eq(self.sin[j]) for j, r in enumerate(si)]
        m.d.sync += [v1.eq(b.valid), f1.eq(b.final)]
        # stage 2: products (Q.22, exact)
        pr = {}
        for j in range(h):
            x1, x2 = xi[j], xi[h + j]
            for name, a, c in (("a", x1, ci[j]), ("b", x2, si[j]), ("c", x2, ci[j]), ("d", x1, si[j])):
                r = Signal(signed(32), name=f"p{name}{j}")
                m.d.sync += r.eq(a * c)
                pr[name, j] = r
        v2, f2 = Signal(), Signal()
        m.d.sync += [v2.eq(v1), f2.eq(f1)]
        # stage 3: x1 c - x2 s and x2 c + x1 s, round half up, saturate -> output register
        half = 1 << (TRIG_FRAC - 1)
        outs = [None] * n
        for j in range(h):
            outs[j] = sat((pr["a", j] - pr["b", j] + half) >> TRIG_FRAC, 16)
            outs[h + j] = sat((pr["c", j] + pr["d", j] + half) >> TRIG_FRAC, 16)
        output_stage(m, self, outs, v2, f2, self.cfg.op_latency("rope") - MIN_LATENCY)
        return m


__all__ = ["SfuRope", "validate", "MIN_LATENCY"]
