"""BoothFlex / BoothFlex-BS timing (docs/reference/vitallm.md §5.3, §5.6, design hypothesis).

`lanes` lanes x `width` radix-4 Booth units; each lane's units share one compressor tree over their
4*width partial-product rows.
- INT8 x INT8 mode: a lane reduces `width` products per cycle -> beats = passes * ceil(k / width).
- ternary x INT8 mode: each unit takes 4 ternary pairs (one per PP row) -> beats = passes * ceil(k / (4*width)).
- BoothFlex-BS (bit-serial): one Booth digit of the multiplier per cycle -> an n-bit operand takes n/2 beats
  (ternary: 1), so beats = passes * ceil(k / width) * digits(bits).
- INT8 tile of ragged passes (a causal score.V tile, sim.attention.pv_pass_keys): pass p is as long as its
  longest row's k_p inputs -> beats = sum_p ceil(k_p / width) (x digits(8) on BoothFlex-BS); a pass of
  k_p = 0 (rows that attend to none of the tile's keys) takes no beat. Uniform passes give the formula above.
Latency = 1 (Booth encode + PP select) + clog2(4*width) (compressor stages) + 1 (accumulator).
BoothFlex-BS latency = 1 (digit select + Booth encode + PP select) + clog2(width) (one PP row per unit per
cycle, so the tree has `width` rows) + 1 (Horner shift-add merged into the accumulator add on the last
digit) -- realised by rtl/booth_bs.py (changed from clog2(4*width) + 2 when the RTL was built).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lowbit.sim.errors import ConfigError
from lowbit.sim.units import ceil_div, check_acc_bits, clog2


@dataclass(frozen=True, kw_only=True)
class BoothConfig:
    """BoothFlex core: `lanes` x `width` radix-4 Booth units sharing one compressor tree per lane.

    INT8 mode: one INT8xINT8 product per unit per cycle. Ternary mode (docs/reference/vitallm.md §5.3, design
    hypothesis): each unit's 4 partial-product rows take 4 independent ternary x INT8 pairs.
    `bit_serial` selects BoothFlex-BS (one Booth digit per cycle; cycles scale with precision).
    """

    lanes: int = 4
    width: int = 4
    acc_bits: int = 24
    ternary_mode: bool = True
    bit_serial: bool = False
    precisions: tuple[int, ...] = (2, 4, 8)

    @property
    def int8_macs_per_cycle(self) -> int:
        return self.lanes * self.width

    @property
    def ternary_macs_per_cycle(self) -> int:
        return 4 * self.lanes * self.width if self.ternary_mode else 0

    def check(self, at: str) -> None:
        check_acc_bits(at, "booth.acc_bits", self.acc_bits)
        for p in self.precisions:
            if p not in (2, 4, 8):
                raise ConfigError(f"{at}: booth.precisions contains {p}: allowed 2, 4, 8")


def booth_latency(cfg: BoothConfig) -> int:
    return clog2(4 * cfg.width) + 2


def booth_bs_latency(cfg: BoothConfig) -> int:
    return clog2(cfg.width) + 2


def booth_digits(bits: int) -> int:
    """Radix-4 Booth digits of an operand: bits/2 for 2/4/8-bit, 1 for a ternary weight (bits=1.58 -> pass 1)."""
    if bits == 1:
        return 1
    if bits not in (2, 4, 8):
        raise ValueError(f"BoothFlex-BS precision {bits}: allowed 1 (ternary), 2, 4, 8")
    return bits // 2


def booth_int8_tile_cycles(cfg: BoothConfig, k: int, passes: int) -> int:
    if cfg.bit_serial:
        return booth_bs_tile_cycles(cfg, k, passes, 8)
    return passes * ceil_div(k, cfg.width) + booth_latency(cfg)


def booth_ternary_tile_cycles(cfg: BoothConfig, k: int, passes: int) -> int:
    if cfg.bit_serial:
        return booth_bs_tile_cycles(cfg, k, passes, 1)
    return passes * ceil_div(k, 4 * cfg.width) + booth_latency(cfg)


def booth_bs_tile_cycles(cfg: BoothConfig, k: int, passes: int, bits: int) -> int:
    """BoothFlex-BS: `bits` is the serial operand's precision (1 = ternary, 2, 4, 8)."""
    return passes * ceil_div(k, cfg.width) * booth_digits(bits) + booth_bs_latency(cfg)


def booth_int8_pass_cycles(cfg: BoothConfig, runs: Sequence[tuple[int, int]]) -> int:
    """INT8 tile whose passes are ragged: `runs` = (k, n) for n passes of k inputs each (module docstring):
    sum n ceil(k / width) beats (x digits(8) bit-serially) + the tile's latency."""
    beats = sum(n * ceil_div(k, cfg.width) for k, n in runs)
    if cfg.bit_serial:
        return beats * booth_digits(8) + booth_bs_latency(cfg)
    return beats + booth_latency(cfg)
