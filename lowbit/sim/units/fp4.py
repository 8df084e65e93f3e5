"""FP4 core timing (W4A8 block dot products; numerics in sim.numerics.fp4dot).

`lanes` lanes each take `elems_per_cycle` (E2M1 weight, INT8 act) pairs per cycle.
Beats = passes * ceil(k / elems_per_cycle).
Latency = 1 (E2M1 decode + product) + clog2(elems_per_cycle) (block-sum tree) + 1 (block-scale apply)
          + 1 (accumulator).
"""

from __future__ import annotations

from lowbit.sim.config import Fp4Config
from lowbit.sim.units import ceil_div, clog2


def fp4_latency(cfg: Fp4Config) -> int:
    return clog2(cfg.elems_per_cycle) + 3


def fp4_tile_cycles(cfg: Fp4Config, k: int, passes: int) -> int:
    return passes * ceil_div(k, cfg.elems_per_cycle) + fp4_latency(cfg)
