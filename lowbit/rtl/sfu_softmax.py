"""SFU softmax datapath, bit-exact with ``sim.numerics.sfu_reduce.sfu_softmax`` (formats, base-2 exponential,
reciprocal and rounding rules there).

Three passes per row (sim.units.sfu.SFU_PASSES["softmax"] = 3), no stalls: pass 1 keeps the running max;
passes 2 and 3 run the same exponential pipeline (x - max -> times log2 e -> table read -> interpolation
-> shift), pass 2 sums the exponentials, pass 3 recomputes them and multiplies by the reciprocal of the
sum. The reciprocal (normalise -> table read -> interpolated seed -> sigma r -> NR step) runs while pass
3's first beats go through the exponential pipeline, which then waits 5 delay registers for it. For the
first pass-3 beat sampled at edge c: exponential at c + 5 (the last pass-2 beat's at c + 4), sum final at
c + 5, reciprocal stages c + 6 .. c + 10, times r at c + 11, round into the output register at c + 12: 13
stages (MIN_LATENCY), then ``latency.softmax - 13`` delay registers, so
cycles = rows * 3 * ceil(dim / lanes) + latency.softmax (sim.units.sfu.sfu_cycles).

Ports: start, beats, rows, tail (valid lanes in a row's last beat, 1..lanes) -> ready;
x: lanes x signed 16 (Q7.8 scores); out: lanes x unsigned 16 (UQ1.15 probabilities; 0 in tail lanes),
out_valid (pass-3 beats), done.
"""

from __future__ import annotations

from collections.abc import Callable

from amaranth.hdl import Const, Module, Mux, Signal, Value, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import COUNT_BITS, bit_length, delay
from lowbit.rtl.sfu_seq import output_stage, rom, sequencer, validate_op
from lowbit.sim.numerics.sfu_reduce import EXP2_TABLE, L2E, RECIP_TABLE
from lowbit.sim.units.sfu import SfuConfig

MIN_LATENCY = 13


def validate(cfg: SfuConfig) -> None:
    validate_op(cfg, "softmax", MIN_LATENCY,
                "input register, 5-stage exponential, 5-stage reciprocal, times r, round")


def exp2_lane(reg: Callable, i: int, x: Value, mx: Value) -> tuple[Value, Value, Value]:
    """e = 2^((x - max) log2 e) of lane `i`, stages 2 .. 5 (sim.numerics.sfu_reduce.sfu_exp2): the difference, the
    product with log2 e, the table read and the interpolation; returns (mantissa p2, shift n5, 2^n5 >> 1) for
    stage 6's rounding shift. `reg(v, name, shape=None)` registers a value (one pipeline stage)."""
    dd = reg(x - mx, f"dd{i}", signed(17))                                             # 2
    z = reg((dd * L2E) >> 7, f"z{i}", signed(27))                                      # 3
    f = z[:16]
    j = f[9:16]
    e_lo = reg(rom(EXP2_TABLE[:-1], j, 22), f"elo{i}")                                 # 4
    e_hi = reg(rom(EXP2_TABLE[1:], j, 22), f"ehi{i}")
    d4 = reg(f[:9], f"d4_{i}")
    nn = -(z >> 16)
    n4 = reg(Mux(nn >= 22, 22, nn)[:5], f"n4_{i}")
    p2 = reg(e_lo + (((e_hi - e_lo) * d4) >> 9), f"p2_{i}", 22)                        # 5
    n5 = reg(n4, f"n5_{i}")
    half = (Const(1, 22) << n5)[1:23]                                                  # 2^n >> 1
    return p2, n5, half


def recip_stages(m: Module, reg: Callable, zacc: Value, row_end: Value) -> tuple[Signal, Signal]:
    """The reciprocal of a row's sum Z (sim.numerics.sfu_reduce.sfu_recip), stages N .. R1: normalise, table
    read, interpolation, one Newton step; latched in the cycle after `row_end` reaches R1 as (r, shift)."""
    bl = bit_length(m, zacc, "z_bl")
    lsh = Mux(bl <= 24, 24 - bl, 0)[:5]
    rsh = Mux(bl > 24, bl - 24, 0)[:5]
    sig = reg(Mux(bl <= 24, zacc << lsh, zacc >> rsh)[:24], "rc_sig", 24)               # N
    bN, fN = reg(bl, "rc_b"), reg(row_end, "rc_fN")
    idx = (sig[18:24] - 32)[:5]  # 0..31: sig is normalised to [2^23, 2^24)
    c_lo = reg(rom(RECIP_TABLE[:-1], idx, 24), "rc_clo")                                # L
    c_hi = reg(rom(RECIP_TABLE[1:], idx, 24), "rc_chi")
    dL, sigL, bL, fL = reg(sig[:18], "rc_d"), reg(sig, "rc_sigL"), reg(bN, "rc_bL"), reg(fN, "rc_fL")
    r0 = reg(c_lo - (((c_lo - c_hi) * dL) >> 18), "rc_r0", 24)                          # R0
    sigR, bR, fR = reg(sigL, "rc_sigR"), reg(bL, "rc_bR"), reg(fL, "rc_fR")
    uu = reg((sigR * r0) >> 23, "rc_u", 26)                                              # U
    r0u, bU, fU = reg(r0, "rc_r0u"), reg(bR, "rc_bU"), reg(fR, "rc_fU")
    r_row = Signal(24, name="r_row")                                                     # R1
    s_row = Signal(range(64), name="s_row")
    with m.If(fU):
        m.d.sync += [r_row.eq((r0u * ((1 << 24) - uu).as_unsigned()) >> 23), s_row.eq(bU + 7)]
    return r_row, s_row


class SfuSoftmax(wiring.Component):
    def __init__(self, cfg: SfuConfig):
        validate(cfg)
        self.cfg = cfg
        n = cfg.lanes
        super().__init__({
            "start": In(1), "beats": In(COUNT_BITS), "rows": In(COUNT_BITS), "tail": In(range(n + 1)),
            "ready": Out(1),
            "x": In(data.ArrayLayout(signed(16), n)),
            "out": Out(data.ArrayLayout(16, n)), "out_valid": Out(1), "done": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        n = self.cfg.lanes
        b = sequencer(m, self.start, self.beats, self.rows, self.ready, passes=3)

        def reg(v, name, shape=None):
            r = Signal(shape if shape is not None else v.shape(), name=name)
            m.d.sync += r.eq(v)
            return r

        tail_t = Signal(range(n + 1))
        with m.If(b.accept):
            m.d.sync += tail_t.eq(self.tail)

        # stage 1: input registers, lane mask, tag
        xi = [reg(self.x[i], f"xi{i}") for i in range(n)]
        live = [reg(~b.last | (tail_t > i), f"live{i}") for i in range(n)]
        v1, ps1, first1, last1, fin1 = (reg(s, f"{nm}1") for s, nm in (
            (b.valid, "v"), (b.ps, "ps"), (b.first, "first"), (b.last, "last"), (b.final, "fin")))

        # ---- pass 1: running max (stage 2); tail lanes count as -2^15
        mx = Signal(signed(16))
        bm = Signal(signed(16), name="bmax0")
        m.d.comb += bm.eq(Mux(live[0], xi[0], -(1 << 15)))
        for i in range(1, n):  # one named signal per step: the expression would double at every lane
            c = Mux(live[i], xi[i], -(1 << 15))
            nxt = Signal(signed(16), name=f"bmax{i}")
            m.d.comb += nxt.eq(Mux(c > bm, c, bm))
            bm = nxt
        with m.If(v1 & (ps1 == 0)):
            m.d.sync += mx.eq(Mux(first1 | (bm > mx), bm, mx))

        # ---- passes 2 and 3: e = 2^((x - max) log2 e) in Q1.20, stages 2 .. 6
        es = [exp2_lane(reg, i, xi[i], mx) for i in range(n)]
        live5 = [delay(m, lv, 4, f"live_d{i}") for i, lv in enumerate(live)]
        ctl = [(v1, ps1, first1, last1, fin1)]
        for s in range(5):
            ctl.append(tuple(reg(c, f"c{s}_{k}") for k, c in enumerate(ctl[-1])))
        e6 = [reg(Mux(live5[i] & (n5 < 22), (p2 + half) >> n5, 0), f"e6_{i}", 21)          # 6
              for i, (p2, n5, half) in enumerate(es)]
        v6, ps6, first6, last6, fin6 = ctl[5]

        # ---- pass 2: Z = sum e (stage 7)
        zacc = Signal(40)
        with m.If(v6 & (ps6 == 1)):
            m.d.sync += zacc.eq(Mux(first6, 0, zacc) + sum(e6[1:], e6[0]))
        row_end = reg(v6 & (ps6 == 1) & last6, "row_end")

        # ---- reciprocal of Z (sim.numerics.sfu_reduce.sfu_recip), stages N .. R1
        r_row, s_row = recip_stages(m, reg, zacc, row_end)

        # ---- pass 3: e delayed to meet r (stage 11: e * r), round and clip at 1.0 (stage 12 -> out)
        ed = [delay(m, e, 5, f"ed{i}") for i, e in enumerate(e6)]
        vd = delay(m, v6 & (ps6 == 2), 5, "o_vd")
        fd = delay(m, fin6, 5, "o_fd")
        pr = [reg(e * r_row, f"pr{i}", 45) for i, e in enumerate(ed)]
        v11, f11, s11 = reg(vd, "o_v11"), reg(fd, "o_f11"), reg(s_row, "o_s11")
        rnd = (Const(1, 46) << (s11 - 1).as_unsigned())[:46]
        outs = []
        for p in pr:
            q = (p + rnd) >> s11
            outs.append(Mux(q > 1 << 15, 1 << 15, q)[:16])
        output_stage(m, self, outs, v11, f11, self.cfg.op_latency("softmax") - MIN_LATENCY)
        return m


__all__ = ["SfuSoftmax", "exp2_lane", "recip_stages", "validate", "MIN_LATENCY"]
