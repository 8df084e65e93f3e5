"""A unit that exists only in the test suite: MAC8, `lanes` lanes of `width` INT8 x INT8 multipliers feeding a
pipelined adder tree and a wrapping accumulator (the walk-through of docs/adding-a-unit.md).

This file is its simulator layer: config section, golden numerics, tile timing and the catalogue entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowbit.sim.numerics.rounding import int_range, wrap_signed
from lowbit.sim.units import ceil_div, check_acc_bits, clog2
from lowbit.sim.units.catalog import RtlBlock, Unit


@dataclass(frozen=True, kw_only=True)
class Mac8Config:
    """[mac8]: `lanes` output rows, `width` INT8 products per lane per cycle, `acc_bits` accumulator."""

    lanes: int = 4
    width: int = 8
    acc_bits: int = 24

    def check(self, at: str) -> None:
        check_acc_bits(at, "mac8.acc_bits", self.acc_bits)


def mac8_dot(w: np.ndarray, a: np.ndarray, acc_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Golden model: sum_i w[..., i] * a[..., i] in a wrapping `acc_bits` register, with a sticky overflow flag
    set when any prefix sum leaves the signed range (exact Python integers)."""
    lo, hi = int_range(acc_bits, signed=True)
    prods = np.asarray(w, dtype=object) * np.asarray(a, dtype=object)
    prefix = np.cumsum(prods, axis=-1)
    ovf = np.any((prefix < lo) | (prefix > hi), axis=-1)
    return wrap_signed(prefix[..., -1].astype(np.int64), acc_bits), ovf


def mac8_latency(cfg: Mac8Config) -> int:
    """1 (product register) + clog2(width) (registered tree levels) + 1 (accumulator)."""
    return clog2(cfg.width) + 2


def mac8_tile_cycles(cfg: Mac8Config, k: int, passes: int) -> int:
    """cycles(start -> done) = passes * ceil(k / width) + latency."""
    return passes * ceil_div(k, cfg.width) + mac8_latency(cfg)


MAC8 = Unit(
    name="mac8", config=Mac8Config, summary="INT8 x INT8 dot-product lanes (test-suite unit)",
    golden=(mac8_dot,), work=("int8_macs",),
    formats=("int8",), lanes=lambda c: c.lanes,
    tile_cycles=lambda c, fmt, k, passes: mac8_tile_cycles(c, k, passes),
    rtl=(RtlBlock(
        name="mac8", component="tests.units.mac8_rtl:Mac8Core", validator="tests.units.mac8_rtl:validate",
        bench="tests.units.mac8_bench", cycles=(mac8_tile_cycles,),
        formula="passes*ceil(k/width) + clog2(width) + 2", params=("lanes", "width", "acc_bits"),
        rates=lambda c: {"int8_macs": c.lanes * c.width},
    ),),
)
