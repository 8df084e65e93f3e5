"""SFU quantization barrier RTL: per-row absmax INT8 quantization in fixed point, bit-exact with
``sim.numerics.sfu.sfu_absmax_quantize(x, in_bits, recip_bits)`` (rule and exactness proof there).

``lanes`` elements per beat; each row of ``dim`` elements is streamed twice (sim.units.sfu: quantize = 2
passes): pass 1 reduces max|x| (running max over the beats), pass 2 quantizes. Between the passes the row
stalls D = sim.units.sfu.sfu_recip_cycles(in_bits, recip_bits) cycles (17 for 24-bit inputs) while a
restoring digit-recurrence divider forms ``c = floor(127 * 2^(W-1+R) / m)``: the first stall cycle
registers the leading-one detector's normalised m (and the shift), then D cycles of RECIP_BITS_PER_CYCLE
chained restoring steps (remainder < m, W+1-bit compare/subtract) shift the quotient bits into ``rc``;
the last step coincides with the first pass-2 beat's input register, so ``c`` is final when that beat
reaches the multiplier. Restoring division returns exactly floor(X / m), so ``c`` is bit-exact with
sim.numerics.sfu.sfu_reciprocal (no correction step). Pass-2 pipeline: input register -> multiply
``|x| * c`` -> round-half-even with the tie window + sign -> output register, then ``latency - 3`` delay
registers so that cycles(start -> done) = rows * (2 * ceil(dim / lanes) + D) + latency["quantize"]
= sim.units.sfu.sfu_cycles.

Ports: start, beats[16] (= ceil(dim/lanes)), rows[16] -> ready; x: lanes x signed in_bits (per row: the
pass-1 beats, D don't-care stall cycles, the pass-2 beats, back to back; tail lanes zero-padded by the driver);
out_q: lanes x signed 8, out_amax: in_bits (the row's max|x|, dequant scale amax/127), out_valid (per
pass-2 beat), done. Timing convention of rtl/common.py (tiles may overlap: ready rises after the last beat).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import COUNT_BITS, bit_length, delay
from lowbit.sim.config import SfuConfig
from lowbit.sim.errors import LowbitError
from lowbit.sim.numerics.sfu import SFU_IN_BITS, sfu_recip_bits
from lowbit.sim.units.sfu import RECIP_BITS_PER_CYCLE, sfu_recip_cycles

MIN_LATENCY = 3  # input register, multiply, round/output register


def validate(cfg: SfuConfig, in_bits: int = SFU_IN_BITS, recip_bits: int | None = None) -> None:
    """Reject SFU quantize parameters this RTL cannot realise (LowbitError naming the field)."""
    if cfg.lanes < 1:
        raise LowbitError(f"sfu.lanes = {cfg.lanes}: must be >= 1")
    lat = cfg.op_latency("quantize")
    if lat < MIN_LATENCY:
        raise LowbitError(
            f"sfu.latency.quantize = {lat}: the fixed-point quantizer pipeline needs >= {MIN_LATENCY} cycles "
            "(input register, multiply, round); raise it")
    if not 2 <= in_bits <= 32:
        raise LowbitError(f"SFU in_bits = {in_bits}: the RTL supports 2..32-bit inputs")
    r = sfu_recip_bits(in_bits) if recip_bits is None else recip_bits
    if r < in_bits + 2 or r > 40:
        raise LowbitError(f"SFU recip_bits = {r}: must be in {in_bits + 2}..40 (exact RNE needs >= in_bits + 2)")


def round_int8(p: Value, shm: Value, half: Value, win: Value, neg: Value) -> Value:
    """One lane's INT8 code from its product p = |x| * c: p >> shm rounded half to even, where a remainder within
    `win` (2^(e+1), the reciprocal's truncation) below `half` counts as a tie (module docstring), clipped to 127,
    then the sign (sim.numerics.sfu.sfu_absmax_quantize)."""
    nq = p >> shm
    rem = p - (nq << shm)
    tie = (rem > half - win) & (rem <= half)
    qn = nq + ((rem > half) | (tie & nq[0]))
    qm = Mux(qn > 127, 127, qn)[:8]
    return Mux(neg, -qm, qm)


class SfuQuantize(wiring.Component):
    def __init__(self, cfg: SfuConfig, in_bits: int = SFU_IN_BITS, recip_bits: int | None = None):
        validate(cfg, in_bits, recip_bits)
        self.cfg = cfg
        self.in_bits = in_bits
        self.recip_bits = sfu_recip_bits(in_bits) if recip_bits is None else recip_bits
        self.latency = cfg.op_latency("quantize")
        n = cfg.lanes
        super().__init__({
            "start": In(1),
            "beats": In(COUNT_BITS),
            "rows": In(COUNT_BITS),
            "ready": Out(1),
            "x": In(data.ArrayLayout(signed(in_bits), n)),
            "out_q": Out(data.ArrayLayout(signed(8), n)),
            "out_amax": Out(in_bits),
            "out_valid": Out(1),
            "done": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        n, w, r = self.cfg.lanes, self.in_bits, self.recip_bits
        k, d = RECIP_BITS_PER_CYCLE, sfu_recip_cycles(w, r)
        qw = k * d  # quotient register width >= R + 7 (c < 2^(R+7))

        # ---- sequencer: per row P1 (beats) -> DIV (d stall cycles) -> P2 (beats)
        busy = Signal()
        beats_r = Signal(COUNT_BITS)
        rows_r = Signal(COUNT_BITS)
        beat = Signal(COUNT_BITS)
        row = Signal(COUNT_BITS)
        ph = Signal(2)  # 0 = pass 1 (absmax), 1 = reciprocal stall, 2 = pass 2 (quantize)
        dcnt = Signal(range(d + 1))
        m.d.comb += self.ready.eq(~busy)
        beat_last = beat == beats_r - 1
        v1 = busy & (ph == 0)
        v2 = busy & (ph == 2)
        first = beat == 0
        with m.If(busy):
            with m.If(ph == 0):
                with m.If(beat_last):
                    m.d.sync += [beat.eq(0), ph.eq(1), dcnt.eq(0)]
                with m.Else():
                    m.d.sync += beat.eq(beat + 1)
            with m.Elif(ph == 1):
                with m.If(dcnt == d - 1):
                    m.d.sync += ph.eq(2)
                with m.Else():
                    m.d.sync += dcnt.eq(dcnt + 1)
            with m.Else():
                with m.If(beat_last):
                    m.d.sync += [beat.eq(0), ph.eq(0), row.eq(row + 1)]
                    with m.If(row == rows_r - 1):
                        m.d.sync += busy.eq(0)
                with m.Else():
                    m.d.sync += beat.eq(beat + 1)
        with m.Elif(self.start & (self.beats != 0) & (self.rows != 0)):
            # zero beats or rows: nothing to do, the start is ignored (no done) -- documented limitation
            m.d.sync += [busy.eq(1), beats_r.eq(self.beats), rows_r.eq(self.rows), beat.eq(0), row.eq(0),
                         ph.eq(0)]

        # ---- stage I: pass-1 running max | pass-2 input register
        mags = []
        for lane in range(n):
            v = self.x[lane]
            mg = Signal(w, name=f"mag{lane}")
            m.d.comb += mg.eq(Mux(v < 0, -v, v))  # |-2^(W-1)| fits W unsigned bits
            mags.append(mg)
        bmax = mags[0]
        for lane in range(1, n):
            bm = Signal(w, name=f"bmax{lane}")
            m.d.comb += bm.eq(Mux(mags[lane] > bmax, mags[lane], bmax))
            bmax = bm
        amax = Signal(w)
        with m.If(v1):
            m.d.sync += amax.eq(Mux(first | (bmax > amax), bmax, amax))
        xi_mag = [Signal(w, name=f"xi_mag{lane}") for lane in range(n)]
        xi_neg = [Signal(name=f"xi_neg{lane}") for lane in range(n)]
        m.d.sync += [s.eq(mg) for s, mg in zip(xi_mag, mags, strict=True)]
        m.d.sync += [s.eq(self.x[lane] < 0) for lane, s in enumerate(xi_neg)]
        vi = Signal()
        li = Signal()
        m.d.sync += [vi.eq(v2), li.eq(v2 & beat_last & (row == rows_r - 1))]

        # ---- reciprocal: setup the cycle after the last pass-1 beat (first stall cycle), then d cycles of
        # k restoring steps each; the last one coincides with the first pass-2 beat's stage I, so rc is
        # final when that beat reaches stage M.
        p1_end = Signal()
        m.d.sync += p1_end.eq(v1 & beat_last)
        e = bit_length(m, amax, "amax_bl")  # e + 1 (0 when amax = 0)
        nsh = Signal(range(w + 1))
        m.d.comb += nsh.eq(w - e)  # W-1-floor(log2 amax)
        norm = Signal(w)
        m.d.comb += norm.eq(amax << nsh)
        num = 127 << (w - 1 + r)  # dividend X; quotient bits qw-1..0 consume X's low qw bits
        xlow = Const(num & ((1 << qw) - 1), qw)
        dm = Signal(w)  # normalised divisor m in [2^(W-1), 2^W)
        rem = Signal(w)  # partial remainder, invariant rem < m
        rc = Signal(qw)  # quotient shift register = c once the d steps are done
        it = Signal(range(d + 1))  # iterations left
        rsh = Signal(range(r + w + 1))
        ramax = Signal(w)
        with m.If(p1_end):
            m.d.sync += [dm.eq(norm), rem.eq(num >> qw), rc.eq(0), it.eq(Mux(amax == 0, 0, d)),
                         rsh.eq(Mux(amax == 0, r, r + e - 1)), ramax.eq(amax)]
        with m.Elif(it != 0):
            rv = rem
            qbits = []
            for s in range(k):
                bit = xlow.bit_select(it * k - 1 - s, 1) if num & ((1 << qw) - 1) else Const(0, 1)
                r2 = Signal(w + 1, name=f"div_r2_{s}")
                ge = Signal(name=f"div_ge_{s}")
                nr = Signal(w, name=f"div_rem_{s}")
                m.d.comb += [r2.eq(Cat(bit, rv)), ge.eq(r2 >= dm), nr.eq(Mux(ge, r2 - dm, r2))]
                qbits.append(ge)
                rv = nr
            m.d.sync += [rem.eq(rv), rc.eq(Cat(*reversed(qbits), rc)), it.eq(it - 1)]

        # ---- stage M: multiply |x| * c (shift amount and amax travel with the data)
        p_w = w + qw
        pm = [Signal(p_w, name=f"pm{lane}") for lane in range(n)]
        negm = [Signal(name=f"negm{lane}") for lane in range(n)]
        shm = Signal.like(rsh)
        amaxm = Signal(w)
        vm, lm = Signal(), Signal()
        m.d.sync += [d.eq(xi_mag[lane] * rc) for lane, d in enumerate(pm)]
        m.d.sync += [d.eq(xi_neg[lane]) for lane, d in enumerate(negm)]
        m.d.sync += [shm.eq(rsh), amaxm.eq(ramax), vm.eq(vi), lm.eq(li)]

        # ---- stage Q: round half to even with the exact-tie window, sign, register; then padding to
        # the configured latency (stage Q writes the output ports directly when latency == 3)
        pad = self.latency - 3
        if pad == 0:
            q_out, amaxq, vq, lq = self.out_q, self.out_amax, self.out_valid, self.done
        else:
            q_out, amaxq, vq, lq = (Signal(data.ArrayLayout(signed(8), n), name="qreg"), Signal(w, name="amaxq"),
                                    Signal(name="vq"), Signal(name="lq"))
        half = Const(1, 1) << (shm - 1).as_unsigned()  # s - 1 >= 0
        win = Const(1, 1) << (shm - (r - 1)).as_unsigned()  # 2^(e+1); s - R + 1 = e + 1 >= 0
        for lane in range(n):
            m.d.sync += q_out[lane].eq(round_int8(pm[lane], shm, half, win, negm[lane]))
        m.d.sync += [vq.eq(vm), lq.eq(lm & vm), amaxq.eq(amaxm)]
        if pad:
            m.d.sync += [self.out_q.eq(delay(m, q_out.as_value(), pad - 1, "pq")),
                         self.out_amax.eq(delay(m, amaxq, pad - 1, "pa")),
                         self.out_valid.eq(delay(m, vq, pad - 1, "pv")),
                         self.done.eq(delay(m, lq, pad - 1, "pd"))]
        return m


__all__ = ["SfuQuantize", "round_int8", "validate", "MIN_LATENCY"]
