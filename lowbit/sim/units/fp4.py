"""FP4 core timing (W4A8 block dot products; numerics in sim.numerics.fp4dot).

`lanes` lanes each take `elems_per_cycle` (E2M1 weight, INT8 act) pairs per cycle.
Beats = passes * ceil(k / elems_per_cycle).
Latency = 1 (E2M1 decode + product) + clog2(elems_per_cycle) (block-sum tree) + 1 (block-scale apply)
          + 1 (accumulator).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lowbit.sim.errors import ConfigError
from lowbit.sim.units import ceil_div, check_acc_bits, clog2


@dataclass(frozen=True, kw_only=True)
class Fp4Config:
    """FP4 core: W4A8 block dot products (MXFP4: 32-element E8M0 blocks; NVFP4: 16-element E4M3)."""

    enabled: bool = False
    format: Literal["nvfp4", "mxfp4"] = "nvfp4"
    lanes: int = 8
    elems_per_cycle: int = 32
    block_sum_bits: int = 16
    frac_bits: int = 8
    acc_bits: int = 32

    @property
    def block(self) -> int:
        return 16 if self.format == "nvfp4" else 32

    @property
    def macs_per_cycle(self) -> int:
        return self.lanes * self.elems_per_cycle if self.enabled else 0

    def check(self, at: str) -> None:
        check_acc_bits(at, "fp4.acc_bits", self.acc_bits)
        if self.elems_per_cycle % self.block and self.block % self.elems_per_cycle:
            raise ConfigError(
                f"{at}: fp4.elems_per_cycle = {self.elems_per_cycle}: must divide or be a multiple of the "
                f"{self.format} block size {self.block}"
            )


def fp4_latency(cfg: Fp4Config) -> int:
    return clog2(cfg.elems_per_cycle) + 3


def fp4_tile_cycles(cfg: Fp4Config, k: int, passes: int) -> int:
    return passes * ceil_div(k, cfg.elems_per_cycle) + fp4_latency(cfg)
