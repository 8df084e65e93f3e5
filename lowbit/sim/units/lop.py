"""LOP unit timing (docs/reference/vitallm.md §5.4): LO surrogate scoring then comparison-free top-K.

Scoring: `lanes` keys in parallel, `width` elements of each key per cycle (sign/zero/exponent codes, a
shift-add tree per lane). Beats = ceil(M / lanes) * ceil(d / width).
Latency = 1 (LO decode + exponent add) + clog2(width) (shift-add tree) + 1 (score register).

Top-K (bucket/radix select, no comparators): pass 1 histograms the M scores into `buckets` counters at
`lanes` scores per cycle; a scan walks the buckets from the top, one per cycle; pass 2 emits the selected
indices at `lanes` per cycle. Beats = 2 * ceil(M / lanes) + buckets; latency = 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lowbit.sim.errors import ConfigError
from lowbit.sim.units import ceil_div, check_acc_bits, clog2


@dataclass(frozen=True, kw_only=True)
class LopConfig:
    """Leading-one prediction: LO surrogate scores over M cached keys + comparison-free top-K."""

    enabled: bool = True
    k: int = 64
    lanes: int = 8
    width: int = 32
    exp_bits: int = 3
    score_bits: int = 24
    buckets: int = 63
    surrogate_storage: Literal["dram", "sram"] = "dram"

    def check(self, at: str) -> None:
        check_acc_bits(at, "lop.score_bits", self.score_bits)
        if self.buckets < 3 or self.buckets % 2 == 0:
            # offset-binary signed leading-one buckets (lowbit.sim.numerics.lop.lop_bucket): 2*L + 1 of them
            raise ConfigError(f"{at}: lop.buckets = {self.buckets}: must be odd and >= 3 (2 x magnitudes + 1)")


def lop_score_latency(cfg: LopConfig) -> int:
    return clog2(cfg.width) + 2


def lop_score_cycles(cfg: LopConfig, m: int, head_dim: int) -> int:
    return ceil_div(m, cfg.lanes) * ceil_div(head_dim, cfg.width) + lop_score_latency(cfg)


def lop_topk_cycles(cfg: LopConfig, m: int) -> int:
    return 2 * ceil_div(m, cfg.lanes) + cfg.buckets + 2
