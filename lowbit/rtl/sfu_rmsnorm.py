"""SFU RMSNorm datapath (SubLN included: the same op with its own gain), bit-exact with
``sim.numerics.sfu_reduce.sfu_rmsnorm`` (formats, reciprocal square root and rounding rules there).

Two passes per row (sim.units.sfu.SFU_PASSES["rmsnorm"] = 2), no stall between them: pass 1 streams x and
accumulates S = sum x^2; pass 2 streams x and the gain g and forms x * g while the row's reciprocal square
root is computed by a 7-stage pipeline (normalise -> table read -> interpolated seed -> y^2 -> mu y^2 -> NR
step -> times sqrt(dim)); the x * g products wait in delay registers until the row scale R is ready, so
pass 2's first beat meets it. Stage by stage for the first pass-2 beat sampled at edge c (the last pass-1
beat at edge c - 1): x^2 at c, S final at c + 1, rsqrt stages c + 2 .. c + 8; pass-2 input register c,
x * g at c + 1, delayed to c + 8, times R at c + 9, round/saturate into the output register at c + 10:
11 stages (MIN_LATENCY), then ``latency.rmsnorm - 11`` delay registers, so
cycles = rows * 2 * ceil(dim / lanes) + latency.rmsnorm (sim.units.sfu.sfu_cycles). The row scale for
row r + 1 is written 2 * beats cycles after row r's, after row r's last pass-2 beat has used it.

Ports: start, beats, rows, eps_q[32], sd[25], e_sd[3] (rmsnorm_consts(dim, eps, x_frac)) -> ready;
x, g: lanes x signed 16 (Q7.8, Q5.10; g is read in pass 2 only; tail lanes zero-padded by the driver);
out: lanes x signed 16 (Q7.8), out_valid (pass-2 beats), done.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import COUNT_BITS, bit_length, delay
from lowbit.rtl.sfu_seq import output_stage, rom, sat, sequencer, validate_op
from lowbit.sim.numerics.sfu_reduce import RSQRT_TABLE
from lowbit.sim.units.sfu import SfuConfig

MIN_LATENCY = 11


def validate(cfg: SfuConfig) -> None:
    validate_op(cfg, "rmsnorm", MIN_LATENCY,
                "input register, x*g, 7-stage reciprocal square root, times R, round")


class SfuRmsNorm(wiring.Component):
    def __init__(self, cfg: SfuConfig):
        validate(cfg)
        self.cfg = cfg
        n = cfg.lanes
        super().__init__({
            "start": In(1), "beats": In(COUNT_BITS), "rows": In(COUNT_BITS),
            "eps_q": In(32), "sd": In(25), "e_sd": In(3), "ready": Out(1),
            "x": In(data.ArrayLayout(signed(16), n)), "g": In(data.ArrayLayout(signed(16), n)),
            "out": Out(data.ArrayLayout(signed(16), n)), "out_valid": Out(1), "done": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        n = self.cfg.lanes
        b = sequencer(m, self.start, self.beats, self.rows, self.ready, passes=2)

        def reg(v, name, shape=None):
            r = Signal(shape if shape is not None else v.shape(), name=name)
            m.d.sync += r.eq(v)
            return r

        eps_t, sd_t, esd_t = Signal(32), Signal(25), Signal(3)  # per-tile constants
        with m.If(b.accept):
            m.d.sync += [eps_t.eq(self.eps_q), sd_t.eq(self.sd), esd_t.eq(self.e_sd)]

        # stage 1: input registers and the beat's tag
        xi = [reg(self.x[i], f"xi{i}") for i in range(n)]
        gi = [reg(self.g[i], f"gi{i}") for i in range(n)]
        v1, p1, first1, last1, fin1 = (reg(s, f"{nm}1") for s, nm in (
            (b.valid, "v"), (b.ps == 1, "p2"), (b.first, "first"), (b.last, "last"), (b.final, "fin")))

        # ---- pass 1: squares (stage 2), S = sum (stage 3)
        sq = [reg((xi[i] * xi[i]).as_unsigned(), f"sq{i}", 31) for i in range(n)]
        v2, p2, first2, last2 = reg(v1, "v2"), reg(p1, "p2_2"), reg(first1, "first2"), reg(last1, "last2")
        acc = Signal(48)
        tot = sum(sq[1:], sq[0])
        with m.If(v2 & ~p2):
            m.d.sync += acc.eq(Mux(first2, 0, acc) + tot)
        row_end = reg(v2 & ~p2 & last2, "row_end")  # acc holds this row's S
        eps3, sd3, esd3 = reg(eps_t, "eps3"), reg(sd_t, "sd3"), reg(esd_t, "esd3")

        # ---- reciprocal square root of v = S + eps_q (sim.numerics.sfu_reduce.sfu_rsqrt), stages N .. R
        vv = Signal(49)
        m.d.comb += vv.eq(acc + eps3)
        bl = bit_length(m, vv, "v_bl")
        k2 = Signal(signed(8))
        m.d.comb += k2.eq(bl + bl[0] - 24)
        rsh, lsh = Mux(k2 >= 0, k2, 0)[:5], Mux(k2 < 0, -k2, 0)[:5]  # <= 25 right, <= 22 left
        mn = reg(Mux(k2 >= 0, vv >> rsh, vv << lsh)[:24], "rs_m", 24)                   # stage N
        kn = reg(k2 >> 1, "rs_k")
        fN, sdN, esdN = reg(row_end, "rs_fN"), reg(sd3, "rs_sdN"), reg(esd3, "rs_esdN")
        idx = ((mn >> 18)[:6] - 16)[:6]  # 0..47 for a normalised m
        t_lo = reg(rom(RSQRT_TABLE[:-1], idx, 24), "rs_tlo")                             # stage L
        t_hi = reg(rom(RSQRT_TABLE[1:], idx, 24), "rs_thi")
        dL, mL = reg(mn[:18], "rs_d"), reg(mn, "rs_mL")
        ctl = [(fN, kn, sdN, esdN)]

        def ctl_stage(s):
            ctl.append(tuple(reg(c, f"rs_c{s}_{k}") for k, c in enumerate(ctl[-1])))

        ctl_stage(0)
        y0 = reg(t_lo - (((t_lo - t_hi) * dL) >> 18), "rs_y0", 24)                       # stage Y0
        mY = reg(mL, "rs_mY")
        ctl_stage(1)
        tt = reg((y0 * y0) >> 23, "rs_t", 25)                                            # stage T
        y0t, mT = reg(y0, "rs_y0t"), reg(mY, "rs_mT")
        ctl_stage(2)
        uu = reg((mT * tt) >> 22, "rs_u", 27)                                            # stage U
        y0u = reg(y0t, "rs_y0u")
        ctl_stage(3)
        y1 = reg((y0u * ((3 << 23) - uu).as_unsigned()) >> 24, "rs_y1", 25)               # stage Y1
        ctl_stage(4)
        f5, k5, sd5, esd5 = ctl[-1]
        r_row = Signal(24)                                                               # stage R
        s_row = Signal(range(64))
        with m.If(f5):
            m.d.sync += [r_row.eq((y1 * sd5) >> 24), s_row.eq(35 + k5 - esd5)]

        # ---- pass 2: x * g (stage 2), delayed to meet R (stage 9), times R, round (stage 10 -> out)
        pg = [reg(xi[i] * gi[i], f"pg{i}", signed(32)) for i in range(n)]
        v2b, f2b = reg(v1 & p1, "o_v2"), reg(fin1, "o_f2")
        pd = [delay(m, p, 7, f"pgd{i}") for i, p in enumerate(pg)]
        vd, fd = delay(m, v2b, 7, "o_vd"), delay(m, f2b, 7, "o_fd")
        pr = [reg(p * r_row, f"pr{i}", signed(57)) for i, p in enumerate(pd)]
        v9, f9, s9 = reg(vd, "o_v9"), reg(fd, "o_f9"), reg(s_row, "o_s9")
        half = (Const(1, 48) << (s9 - 1).as_unsigned())[:48]
        outs = [sat((p + half) >> s9, 16) for p in pr]
        output_stage(m, self, outs, v9, f9, self.cfg.op_latency("rmsnorm") - MIN_LATENCY)
        return m


__all__ = ["SfuRmsNorm", "validate", "MIN_LATENCY"]
