"""BoothFlex RTL: `lanes` x `width` radix-4 Booth units, INT8 x INT8 and ternary x INT8 modes sharing
one compressor (adder) tree per lane (docs/reference/vitallm.md §5.3, docs/reference/numerics.md §8.1; design hypothesis).

Per unit u of lane l and beat, ports carry four row operands ``act[(l*width+u)*4 + r]`` (signed 8) and
one 8-bit word ``wb[l*width+u]``:
* INT8 mode (``mode`` = 0): multiplicand A = row operand 0 (rows 1..3 ignored), multiplier B = wb.
  Booth encoder per digit r (triplet b[2r+1], b[2r], b[2r-1], b[-1] = 0): one = b[2r]^b[2r-1],
  two = (b[2r+1]&~b[2r]&~b[2r-1]) | (~b[2r+1]&b[2r]&b[2r-1]), neg = b[2r+1]; row r = ±{0, A, 2A} << 2r.
* ternary mode (``mode`` = 1): wb holds four 2-bit {nz, sign} codes (code r in wb[2r+1:2r], the TINT
  code of rtl/tint.py); row r = (one = nz, two = 0, neg = sign) applied to row operand r, no shift --
  four independent ternary x INT8 products per unit (docs/reference/numerics.md §8.1 "Reuse for ternary x INT8").
The 4*width rows of a lane go through one pipelined tree into a wrapping `acc_bits` accumulator with
a sticky overflow flag (same rule as TINT). ``mode`` is sampled with ``start`` (one mode per tile).

Timing (rtl/common.py convention): latency = 1 (Booth encode + PP select register) + clog2(4*width)
(tree levels) + 1 (accumulator) = sim.units.booth.booth_latency; beats per pass = ceil(k/width) (INT8)
or ceil(k/(4*width)) (ternary) -> booth_int8_tile_cycles / booth_ternary_tile_cycles (bit_serial=False).
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import COUNT_BITS, TileSequencer, delay, mux_neg, pipelined_tree, wrap_accumulate
from lowbit.sim.config import BoothConfig
from lowbit.sim.errors import LowbitError

ROWS = 4  # radix-4 Booth digits of an 8-bit multiplier = PP rows per unit


def validate(cfg: BoothConfig) -> None:
    """acc_bits must hold one beat's tree sum exactly: INT8 mode |sum| <= width*2^14 (-128*-128 each),
    ternary mode <= 4*width*128."""
    if cfg.lanes < 1 or cfg.width < 1:
        raise LowbitError(f"booth.lanes = {cfg.lanes}, booth.width = {cfg.width}: both must be >= 1")
    need = (cfg.width * (1 << 14)).bit_length() + 1
    if cfg.acc_bits < need:
        raise LowbitError(
            f"booth.acc_bits = {cfg.acc_bits} is narrower than one beat's INT8 product sum "
            f"(width {cfg.width} x 2^14 needs {need} bits); raise booth.acc_bits to >= {need}")
    if cfg.acc_bits > 63:
        raise LowbitError(f"booth.acc_bits = {cfg.acc_bits}: the RTL/golden model support at most 63 bits")


def booth_encode(hi, mid, lo):
    """Radix-4 Booth encoder (docs/reference/numerics.md §8.1): (one, two, neg) of the triplet (b[2i+1], b[2i], b[2i-1])."""
    return mid ^ lo, (hi & ~mid & ~lo) | (~hi & mid & lo), hi


def pp_row(a, one, two, neg):
    """Partial-product row: select 0 / A / 2A, then conditional inversion + the +neg LSB (rtl.common.mux_neg)."""
    sel = Mux(two, a << 1, Mux(one, a, 0))  # signed 9 bits
    return mux_neg(sel, neg)  # signed 10 bits, value = ±sel


class BoothFlex(wiring.Component):
    """Ports: start, beats[16], passes[16], mode -> ready; act: lanes*width*4 x signed 8;
    wb: lanes*width x 8; out_acc: lanes x signed acc_bits; out_ovf: lanes; out_valid, done."""

    def __init__(self, cfg: BoothConfig):
        validate(cfg)
        self.cfg = cfg
        units = cfg.lanes * cfg.width
        super().__init__({
            "start": In(1),
            "beats": In(COUNT_BITS),
            "passes": In(COUNT_BITS),
            "mode": In(1),  # 0 = INT8 x INT8, 1 = ternary x INT8 (ignored unless cfg.ternary_mode)
            "ready": Out(1),
            "act": In(data.ArrayLayout(signed(8), units * ROWS)),
            "wb": In(data.ArrayLayout(8, units)),
            "out_acc": Out(data.ArrayLayout(signed(cfg.acc_bits), cfg.lanes)),
            "out_ovf": Out(cfg.lanes),
            "out_valid": Out(1),
            "done": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        seq = TileSequencer(m, self.start, self.beats, self.passes)
        m.d.comb += self.ready.eq(seq.ready)
        tern = Signal()  # tile mode, latched at start
        if cfg.ternary_mode:
            with m.If(self.start & seq.ready):
                m.d.sync += tern.eq(self.mode)
        else:
            m.d.comb += tern.eq(0)

        depth = 0
        sums = []
        for lane in range(cfg.lanes):
            rows = []
            for u in range(cfg.width):
                idx = lane * cfg.width + u
                b = self.wb[idx]
                for r in range(ROWS):
                    hi, mid = b[2 * r + 1], b[2 * r]
                    lo = b[2 * r - 1] if r > 0 else Const(0, 1)
                    one, two, neg = booth_encode(hi, mid, lo)
                    a_int8 = self.act[idx * ROWS]
                    if cfg.ternary_mode:  # ternary: code r = wb[2r+1:2r] = {sign, nz}
                        one = Mux(tern, mid, one)
                        two = Mux(tern, 0, two)
                        neg = Mux(tern, hi, neg)
                        a = Mux(tern, self.act[idx * ROWS + r], a_int8)
                        row = pp_row(a, one, two, neg)
                        row = Mux(tern, row, row << (2 * r))
                    else:
                        row = pp_row(a_int8, one, two, neg) << (2 * r)
                    reg = Signal(signed(10 + 2 * (ROWS - 1)), name=f"pp_{lane}_{u}_{r}")
                    m.d.sync += reg.eq(row)
                    rows.append(reg)
            s, depth = pipelined_tree(m, rows, f"tree{lane}")
            sums.append(s)
        valid, pass_last, tile_last = (delay(m, v, 1 + depth, f"tag{j}") for j, v in
                                       enumerate([seq.tags.valid, seq.tags.pass_last, seq.tags.tile_last]))
        for lane in range(cfg.lanes):
            acc = Signal(signed(cfg.acc_bits), name=f"acc{lane}")
            ovf = Signal(name=f"ovf{lane}")
            wrap_accumulate(m, acc, ovf, sums[lane], valid, pass_last, self.out_acc[lane], self.out_ovf[lane])
        m.d.sync += [self.out_valid.eq(valid & pass_last), self.done.eq(valid & tile_last)]
        return m
