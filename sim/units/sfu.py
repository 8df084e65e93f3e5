"""SFU timing: `lanes` elements per cycle, a number of passes over each row, plus a pipeline latency.

Passes per row (design assumption): reductions need a pass to reduce and a pass to apply —
rmsnorm 2 (sum of squares, scale), quantize 2 (absmax, scale+round), softmax 3 (max, exp+sum, normalise);
rope, activation, elementwise 1. cycles = rows * passes * ceil(dim / lanes) + latency[op].
"""

from __future__ import annotations

from sim.config import SfuConfig
from sim.units import ceil_div

SFU_PASSES = {"rmsnorm": 2, "quantize": 2, "softmax": 3, "rope": 1, "activation": 1, "elementwise": 1}


def sfu_cycles(cfg: SfuConfig, op: str, rows: int, dim: int) -> int:
    return rows * SFU_PASSES[op] * ceil_div(dim, cfg.lanes) + cfg.op_latency(op)
