"""TINT core timing (docs/reference/vitallm.md §5.2, design hypothesis).

One core has `lanes` lanes; each lane reduces `tree_width` ternary x INT8 products per cycle in a
pipelined adder tree and accumulates. A tile = `passes` groups of `lanes` dot products of length k
(one group per token x output-row block). Beats = passes * ceil(k / tree_width).
Latency = 1 (operand register + ternary select) + clog2(tree_width) (registered tree stages)
          + 1 (accumulator / output register).
"""

from __future__ import annotations

from lowbit.sim.config import TintConfig
from lowbit.sim.units import ceil_div, clog2


def tint_latency(cfg: TintConfig) -> int:
    return clog2(cfg.tree_width) + 2


def tint_beats(cfg: TintConfig, k: int, passes: int) -> int:
    return passes * ceil_div(k, cfg.tree_width)


def tint_tile_cycles(cfg: TintConfig, k: int, passes: int) -> int:
    """Cycles start->done for `passes` x `lanes` dot products of length k on one TINT core."""
    return tint_beats(cfg, k, passes) + tint_latency(cfg)
