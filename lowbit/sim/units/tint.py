"""TINT core timing (docs/reference/vitallm.md §5.2, design hypothesis).

One core has `lanes` lanes; each lane reduces `tree_width` ternary x INT8 products per cycle in a
pipelined adder tree and accumulates. A tile = `passes` groups of `lanes` dot products of length k
(one group per token x output-row block). Beats = passes * ceil(k / tree_width).
Latency = 1 (operand register + ternary select) + clog2(tree_width) (registered tree stages)
          + 1 (accumulator / output register).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lowbit.sim.units import ceil_div, check_acc_bits, clog2


@dataclass(frozen=True, kw_only=True)
class TintConfig:
    """TINT core(s): multiplier-free ternary x INT8 dot-product lanes (docs/reference/vitallm.md §5.2).

    Per cycle each of `lanes` lanes of each core takes `tree_width` (ternary code, INT8 act) pairs,
    selects +a/-a/0 and reduces them in an adder tree into an `acc_bits` accumulator.
    """

    cores: int = 2
    lanes: int = 8
    tree_width: int = 12
    acc_bits: int = 24
    weight_packing: Literal["2bit", "5trit"] = "2bit"
    zero_skip: bool = False

    @property
    def macs_per_cycle(self) -> int:
        return self.cores * self.lanes * self.tree_width

    def check(self, at: str) -> None:
        check_acc_bits(at, "tint.acc_bits", self.acc_bits)


def tint_latency(cfg: TintConfig) -> int:
    return clog2(cfg.tree_width) + 2


def tint_beats(cfg: TintConfig, k: int, passes: int) -> int:
    return passes * ceil_div(k, cfg.tree_width)


def tint_tile_cycles(cfg: TintConfig, k: int, passes: int) -> int:
    """Cycles start->done for `passes` x `lanes` dot products of length k on one TINT core."""
    return tint_beats(cfg, k, passes) + tint_latency(cfg)

