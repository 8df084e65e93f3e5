"""SFU timing: `lanes` elements per cycle, a number of passes over each row, plus a pipeline latency.

Passes per row (design assumption): reductions need a pass to reduce and a pass to apply —
rmsnorm 2 (sum of squares, scale), quantize 2 (absmax, scale+round), softmax 3 (max, exp+sum, normalise);
rope, activation, elementwise 1. cycles = rows * passes * ceil(dim / lanes) + latency[op], except quantize:

    quantize = rows * (2 * ceil(dim / lanes) + D_recip) + latency["quantize"]
    D_recip  = ceil((R + 7) / RECIP_BITS_PER_CYCLE),  R = sfu_recip_bits(in_bits) = in_bits + 2

Between the absmax pass and the scale pass of each row the quantizer stalls D_recip cycles while a
digit-recurrence (restoring, RECIP_BITS_PER_CYCLE quotient bits per cycle) divider forms the R+7-bit
reciprocal c = floor(127 * 2^(W-1+R) / m) of sim.numerics.sfu (rtl/sfu.py; DESIGN ASSUMPTION: 2 bits per
cycle, i.e. radix-4 throughput from two chained restoring steps, keeps the step at ~2 adder delays).
SFU_IN_BITS = 24 gives D_recip = ceil(33 / 2) = 17.

The other ops stream with no stall (rtl/sfu_rmsnorm.py, sfu_softmax.py, sfu_rope.py, sfu_act.py: the
reciprocal square root and the reciprocal are pipelined and overlap the next pass); their fixed pipelines
need latency >= 11 (rmsnorm), 13 (softmax), 3 (rope), 6 (activation) cycles, which DEFAULT_LATENCY meets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lowbit.sim.errors import ConfigError, did_you_mean
from lowbit.sim.numerics.sfu import SFU_IN_BITS, sfu_recip_bits
from lowbit.sim.units import ceil_div

SFU_OPS = ("rmsnorm", "softmax", "rope", "activation", "elementwise", "quantize")
DEFAULT_LATENCY = {"rmsnorm": 12, "softmax": 16, "rope": 8, "activation": 6, "elementwise": 2, "quantize": 6}


@dataclass(frozen=True, kw_only=True)
class SfuConfig:
    """Special-function unit: `lanes` elements per cycle plus a fixed pipeline latency per op.

    A partial `latency` table overrides only the ops it names; the others keep DEFAULT_LATENCY."""

    lanes: int = 16
    latency: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LATENCY))

    def __post_init__(self) -> None:
        object.__setattr__(self, "latency", {**DEFAULT_LATENCY, **self.latency})

    def op_latency(self, op: str) -> int:
        if op not in self.latency:
            raise ConfigError(f"sfu.latency has no entry for op '{op}'; add `{op} = <cycles>` to [sfu.latency]")
        return self.latency[op]

    def check(self, at: str) -> None:
        for op, lat in self.latency.items():
            if op not in SFU_OPS:
                raise ConfigError(f"{at}: sfu.latency.{op}: unknown op{did_you_mean(op, SFU_OPS)}; "
                                  f"allowed: {', '.join(SFU_OPS)}")
            if lat < 0:
                raise ConfigError(f"{at}: sfu.latency.{op} = {lat}: must be >= 0")

SFU_PASSES = {"rmsnorm": 2, "quantize": 2, "softmax": 3, "rope": 1, "activation": 1, "elementwise": 1}
RECIP_BITS_PER_CYCLE = 2


def sfu_recip_cycles(in_bits: int = SFU_IN_BITS, recip_bits: int | None = None) -> int:
    """Stall cycles per quantized row for the reciprocal: ceil((R + 7) / RECIP_BITS_PER_CYCLE) (c < 2^(R+7))."""
    r = sfu_recip_bits(in_bits) if recip_bits is None else recip_bits
    return ceil_div(r + 7, RECIP_BITS_PER_CYCLE)


def sfu_cycles(cfg: SfuConfig, op: str, rows: int, dim: int) -> int:
    stall = sfu_recip_cycles() if op == "quantize" else 0
    return rows * (SFU_PASSES[op] * ceil_div(dim, cfg.lanes) + stall) + cfg.op_latency(op)
