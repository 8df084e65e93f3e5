"""LOP unit timing (docs/reference/vitallm.md §5.4): LO surrogate scoring then comparison-free top-K.

Scoring: `lanes` keys in parallel, `width` elements of each key per cycle (sign/zero/exponent codes, a
shift-add tree per lane). Beats = ceil(M / lanes) * ceil(d / width).
Latency = 1 (LO decode + exponent add) + clog2(width) (shift-add tree) + 1 (score register).

Top-K (bucket/radix select, no comparators): pass 1 histograms the M scores into `buckets` counters at
`lanes` scores per cycle; a scan walks the buckets from the top, one per cycle; pass 2 emits the selected
indices at `lanes` per cycle. Beats = 2 * ceil(M / lanes) + buckets; latency = 2.
"""

from __future__ import annotations

from lowbit.sim.config import LopConfig
from lowbit.sim.units import ceil_div, clog2


def lop_score_latency(cfg: LopConfig) -> int:
    return clog2(cfg.width) + 2


def lop_score_cycles(cfg: LopConfig, m: int, head_dim: int) -> int:
    return ceil_div(m, cfg.lanes) * ceil_div(head_dim, cfg.width) + lop_score_latency(cfg)


def lop_topk_cycles(cfg: LopConfig, m: int) -> int:
    return 2 * ceil_div(m, cfg.lanes) + cfg.buckets + 2
