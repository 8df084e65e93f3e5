"""TINT core RTL: `lanes` multiplier-free ternary x INT8 dot-product lanes (docs/reference/vitallm.md §5.2).

Per beat every lane takes `tree_width` 2-bit weight codes and the shared activation vector (INT8 x
tree_width, broadcast to all lanes -- design assumption: lanes = output rows of one token), selects
+a / -a / 0 per element, reduces them in a pipelined adder tree and accumulates into a wrapping
`acc_bits` accumulator with a sticky overflow flag (bit-exact with sim.numerics.tint.tint_dot).

Weight code (datapath format, {nz, sign}): bit 0 = nz (weight is non-zero), bit 1 = sign (negative).
    0b00 -> 0, 0b01 -> +1, 0b11 -> -1, 0b10 -> 0 ("negative zero": sign ignored when nz = 0).
From the 2-bit storage code c = w + 1 of sim.numerics.packing: nz = ~c[0], sign = ~c[1] & ~c[0]
(a two-gate decoder in front of this port; not part of this unit).

Timing (rtl/common.py convention): latency = 1 (operand register after the ternary select)
+ clog2(tree_width) (registered tree levels) + 1 (accumulator/output register)
= sim.units.tint.tint_latency; cycles start->done = sim.units.tint.tint_tile_cycles(cfg, k, passes)
with beats = ceil(k / tree_width) per pass (the tail beat is zero-padded by the driver).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import COUNT_BITS, delay, pipelined_tree, wrap_accumulate
from lowbit.rtl.common import TileSequencer as _Seq
from lowbit.sim.config import TintConfig
from lowbit.sim.errors import LowbitError


def validate(cfg: TintConfig, max_k: int | None = None) -> None:
    """Reject parameters this RTL cannot realise (LowbitError naming the field), before generation.

    acc_bits must hold one beat's tree sum exactly (tint_acc_bits_required(tree_width)); with
    ``max_k`` (the model's longest dot product) it must hold the whole dot product exactly.
    """
    from lowbit.sim.numerics.tint import tint_acc_bits_required

    if cfg.lanes < 1 or cfg.tree_width < 1:
        raise LowbitError(f"tint.lanes = {cfg.lanes}, tint.tree_width = {cfg.tree_width}: both must be >= 1")
    need = tint_acc_bits_required(cfg.tree_width)
    if cfg.acc_bits < need:
        raise LowbitError(
            f"tint.acc_bits = {cfg.acc_bits} is narrower than one beat's adder-tree sum "
            f"(tree_width {cfg.tree_width} x 128 needs {need} bits); raise tint.acc_bits to >= {need}")
    if max_k is not None and cfg.acc_bits < tint_acc_bits_required(max_k):
        raise LowbitError(
            f"tint.acc_bits = {cfg.acc_bits} cannot hold a length-{max_k} dot product exactly "
            f"(needs {tint_acc_bits_required(max_k)} bits); raise tint.acc_bits")
    if cfg.acc_bits > 63:
        raise LowbitError(f"tint.acc_bits = {cfg.acc_bits}: the RTL/golden model support at most 63 bits")


class TintCore(wiring.Component):
    """One TINT core. Ports (flat little-endian arrays in Verilog):

    start, beats[16], passes[16] -> ready;  codes: lanes*tree_width x 2 bit (lane l, element i at index
    l*tree_width + i);  act: tree_width x signed 8;  out_acc: lanes x signed acc_bits;  out_ovf: lanes;
    out_valid, done.
    """

    def __init__(self, cfg: TintConfig):
        validate(cfg)
        self.cfg = cfg
        n, t = cfg.lanes, cfg.tree_width
        super().__init__({
            "start": In(1),
            "beats": In(COUNT_BITS),
            "passes": In(COUNT_BITS),
            "ready": Out(1),
            "codes": In(data.ArrayLayout(2, n * t)),
            "act": In(data.ArrayLayout(signed(8), t)),
            "out_acc": Out(data.ArrayLayout(signed(cfg.acc_bits), n)),
            "out_ovf": Out(n),
            "out_valid": Out(1),
            "done": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        n, t = cfg.lanes, cfg.tree_width
        seq = _Seq(m, self.start, self.beats, self.passes)
        m.d.comb += self.ready.eq(seq.ready)

        # stage 0: ternary select (+a / -a / 0) and operand register
        depth = None
        tree_out = []
        for lane in range(n):
            rows = []
            for i in range(t):
                code = self.codes[lane * t + i]
                a = self.act[i]
                r = Signal(signed(9), name=f"sel_{lane}_{i}")
                m.d.sync += r.eq(Mux(code[0], Mux(code[1], -a, a), 0))
                rows.append(r)
            s, depth = pipelined_tree(m, rows, f"tree{lane}")
            tree_out.append(s)
        tags = [delay(m, v, 1 + depth, f"tag{j}")
                for j, v in enumerate([seq.tags.valid, seq.tags.pass_last, seq.tags.tile_last])]
        valid, pass_last, tile_last = tags

        # accumulator / output register
        for lane in range(n):
            acc = Signal(signed(cfg.acc_bits), name=f"acc{lane}")
            ovf = Signal(name=f"ovf{lane}")
            wrap_accumulate(m, acc, ovf, tree_out[lane], valid, pass_last,
                            self.out_acc[lane], self.out_ovf[lane])
        m.d.sync += [self.out_valid.eq(valid & pass_last), self.done.eq(valid & tile_last)]
        return m


__all__ = ["TintCore", "validate"]
