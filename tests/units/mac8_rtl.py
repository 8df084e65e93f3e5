"""MAC8's RTL layer (test-suite unit, docs/adding-a-unit.md): an Amaranth component following the start/done
tile convention of lowbit/rtl/common.py, built from the same shared blocks as the TINT core."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import COUNT_BITS, TileSequencer, delay, pipelined_tree, wrap_accumulate
from lowbit.sim.errors import LowbitError
from tests.units.mac8 import Mac8Config


def validate(cfg: Mac8Config) -> None:
    """One beat's tree sum (width x 2^14) must fit the accumulator exactly."""
    need = (cfg.width * (1 << 14)).bit_length() + 1
    if cfg.acc_bits < need or cfg.acc_bits > 63:
        raise LowbitError(f"mac8.acc_bits = {cfg.acc_bits}: must be in {need}..63 for width {cfg.width}")


class Mac8Core(wiring.Component):
    """start, beats, passes -> ready; w: lanes*width x signed 8 (lane l, element i at l*width + i);
    act: width x signed 8; out_acc: lanes x signed acc_bits; out_ovf: lanes; out_valid, done."""

    def __init__(self, cfg: Mac8Config):
        validate(cfg)
        self.cfg = cfg
        super().__init__({
            "start": In(1), "beats": In(COUNT_BITS), "passes": In(COUNT_BITS), "ready": Out(1),
            "w": In(data.ArrayLayout(signed(8), cfg.lanes * cfg.width)),
            "act": In(data.ArrayLayout(signed(8), cfg.width)),
            "out_acc": Out(data.ArrayLayout(signed(cfg.acc_bits), cfg.lanes)),
            "out_ovf": Out(cfg.lanes), "out_valid": Out(1), "done": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        n, t = self.cfg.lanes, self.cfg.width
        seq = TileSequencer(m, self.start, self.beats, self.passes)
        m.d.comb += self.ready.eq(seq.ready)
        sums, depth = [], 0
        for lane in range(n):
            rows = []
            for i in range(t):
                p = Signal(signed(16), name=f"prod_{lane}_{i}")
                m.d.sync += p.eq(self.w[lane * t + i] * self.act[i])
                rows.append(p)
            s, depth = pipelined_tree(m, rows, f"tree{lane}")
            sums.append(s)
        valid, pass_last, tile_last = (delay(m, v, 1 + depth, f"tag{j}") for j, v in
                                       enumerate([seq.tags.valid, seq.tags.pass_last, seq.tags.tile_last]))
        for lane in range(n):
            acc = Signal(signed(self.cfg.acc_bits), name=f"acc{lane}")
            ovf = Signal(name=f"ovf{lane}")
            wrap_accumulate(m, acc, ovf, sums[lane], valid, pass_last, self.out_acc[lane], self.out_ovf[lane])
        m.d.sync += [self.out_valid.eq(valid & pass_last), self.done.eq(valid & tile_last)]
        return m
