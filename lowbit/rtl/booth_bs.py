"""BoothFlex-BS RTL: bit-serial (digit-serial) radix-4 Booth, 2/4/8-bit multiplier precision + ternary
(docs/reference/vitallm.md §5.6, docs/reference/numerics.md §8.1 "Bit-serial"; design hypothesis).

`lanes` x `width` serial units. Per element group (one element per unit) the driver holds the INT8
multiplicand ``act[l*width+u]`` and the multiplier word ``wb[l*width+u]`` for ``digits`` consecutive beats;
each beat the unit recodes ONE radix-4 Booth digit of wb, most significant first (digit index
i = digits-1 .. 0, triplet wb[2i+1], wb[2i], wb[2i-1] with wb[-1] = 0), and emits one partial-product row
d_i * a. The lane's `width` rows are reduced by a pipelined tree; the accumulator stage keeps a Horner
register h <- (h << 2) + row_sum per digit (MSB-first, as sim.numerics.booth.booth_serial_trace), and on
the last digit adds (h << 2) + row_sum straight into the wrapping `acc_bits` accumulator (sticky
overflow, same rule as TINT; checked once per element group = per completed product sum).

Precision (``prec``, sampled with ``start``): 0 = ternary (wb[1:0] = {sign, nz} TINT code, 1 digit),
1 = INT2 (1 digit), 2 = INT4 (2 digits), 3 = INT8 (4 digits). The multiplier is the low `bits` bits of wb
(two's complement); higher bits are ignored. Precisions absent from cfg.precisions (or ternary without
cfg.ternary_mode) are not supported by the generated hardware.

Timing (rtl/common.py convention): beats per pass = ceil(k/width) * digits; latency = 1 (digit select +
encode + PP register) + clog2(width) (tree levels) + 1 (Horner/accumulator) =
sim.units.booth.booth_bs_latency -> sim.units.booth.booth_bs_tile_cycles(cfg, k, passes, bits).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.booth import booth_encode, pp_row
from lowbit.rtl.common import COUNT_BITS, TileSequencer, delay, pipelined_tree, wrap_accumulate
from lowbit.sim.config import BoothConfig
from lowbit.sim.errors import LowbitError
from lowbit.sim.units import clog2

PREC_CODES = {"ternary": 0, 2: 1, 4: 2, 8: 3}
DIGITS = {0: 1, 1: 1, 2: 2, 3: 4}


def validate(cfg: BoothConfig) -> None:
    """acc_bits must hold one element group's product sum exactly: width x 2^14 (INT8 -128 x -128)."""
    if cfg.lanes < 1 or cfg.width < 1:
        raise LowbitError(f"booth.lanes = {cfg.lanes}, booth.width = {cfg.width}: both must be >= 1")
    if not cfg.precisions or any(p not in (2, 4, 8) for p in cfg.precisions):
        raise LowbitError(f"booth.precisions = {list(cfg.precisions)}: need a non-empty subset of 2, 4, 8")
    pmax = max(cfg.precisions)
    need = (cfg.width * (1 << (7 + pmax - 1))).bit_length() + 1
    if cfg.acc_bits < need:
        raise LowbitError(
            f"booth.acc_bits = {cfg.acc_bits} is narrower than one element group's product sum "
            f"(width {cfg.width}, INT8 x INT{pmax} needs {need} bits); raise booth.acc_bits to >= {need}")
    if cfg.acc_bits > 63:
        raise LowbitError(f"booth.acc_bits = {cfg.acc_bits}: the RTL/golden model support at most 63 bits")


class BoothFlexBS(wiring.Component):
    """Ports: start, beats[16] (element groups per pass), passes[16], prec[2] -> ready;
    act: lanes*width x signed 8; wb: lanes*width x 8; out_acc: lanes x signed acc_bits; out_ovf: lanes;
    out_valid, done."""

    def __init__(self, cfg: BoothConfig):
        validate(cfg)
        self.cfg = cfg
        units = cfg.lanes * cfg.width
        super().__init__({
            "start": In(1),
            "beats": In(COUNT_BITS),
            "passes": In(COUNT_BITS),
            "prec": In(2),
            "ready": Out(1),
            "act": In(data.ArrayLayout(signed(8), units)),
            "wb": In(data.ArrayLayout(8, units)),
            "out_acc": Out(data.ArrayLayout(signed(cfg.acc_bits), cfg.lanes)),
            "out_ovf": Out(cfg.lanes),
            "out_valid": Out(1),
            "done": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        max_digits = max(cfg.precisions) // 2
        ndig = Signal(range(max_digits + 1))
        with m.Switch(self.prec):
            for code, d in DIGITS.items():
                with m.Case(code):
                    m.d.comb += ndig.eq(min(d, max_digits))
        seq = TileSequencer(m, self.start, self.beats, self.passes, digits=ndig)
        m.d.comb += self.ready.eq(seq.ready)
        tern = Signal()  # tile precision is ternary, latched at start
        if cfg.ternary_mode:
            with m.If(self.start & seq.ready):
                m.d.sync += tern.eq(self.prec == 0)

        digit = seq.tags.digit  # Booth digit index of this beat (MSB first)
        depth = 0
        sums = []
        for lane in range(cfg.lanes):
            rows = []
            for u in range(cfg.width):
                idx = lane * cfg.width + u
                b = self.wb[idx]
                bext = Cat(Const(0, 1), b[:2 * max_digits])  # bext[j] = b[j-1], b[-1] = 0
                if max_digits > 1:
                    tri = bext.bit_select(Cat(Const(0, 1), digit), 3)
                else:
                    tri = bext[0:3]
                lo, mid, hi = tri[0], tri[1], tri[2]
                one, two, neg = booth_encode(hi, mid, lo)
                if cfg.ternary_mode:  # ternary code {sign, nz} in wb[1:0]: one = nz, neg = sign
                    one = Mux(tern, b[0], one)
                    two = Mux(tern, 0, two)
                    neg = Mux(tern, b[1], neg)
                reg = Signal(signed(10), name=f"pp_{lane}_{u}")
                m.d.sync += reg.eq(pp_row(self.act[idx], one, two, neg))
                rows.append(reg)
            s, depth = pipelined_tree(m, rows, f"tree{lane}")
            sums.append(s)
        valid, pass_last, tile_last, first, last = (
            delay(m, v, 1 + depth, f"tag{j}") for j, v in enumerate(seq.tags.as_list()))

        hbits = 16 + clog2(cfg.width) + 3  # |partial Horner sum| <= width * 2^14 (sim.numerics.booth)
        for lane in range(cfg.lanes):
            h = Signal(signed(hbits), name=f"horner{lane}")
            t = Signal(signed(hbits), name=f"horner{lane}_next")
            m.d.comb += t.eq((Mux(first, 0, h) << 2) + sums[lane])
            with m.If(valid & ~last):
                m.d.sync += h.eq(t)
            acc = Signal(signed(cfg.acc_bits), name=f"acc{lane}")
            ovf = Signal(name=f"ovf{lane}")
            wrap_accumulate(m, acc, ovf, t, valid & last, pass_last, self.out_acc[lane], self.out_ovf[lane])
        m.d.sync += [self.out_valid.eq(valid & pass_last), self.done.eq(valid & tile_last)]
        return m
