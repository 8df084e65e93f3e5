"""Per-unit tile timing models: exact cycle counts of one tile operation, as functions of the config.

Contract shared with the RTL (rtl/<unit>.py): a tile starts with a one-cycle `start` pulse; the unit then
consumes one input beat per cycle (beats listed per unit) and asserts `done` for one cycle when the last
result is valid. cycles(start -> done) = beats + latency, where latency is the unit's pipeline depth below.
Change a formula here only together with the RTL that realises it (and its cocotb bench).
"""

from __future__ import annotations

import math

from lowbit.sim.errors import ConfigError


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def clog2(n: int) -> int:
    """ceil(log2(n)) for n >= 1 (0 for n = 1): number of stages of a binary reduction tree."""
    return max(0, math.ceil(math.log2(n))) if n > 1 else 0


def check_acc_bits(at: str, field: str, bits: int) -> None:
    """Accumulator / score widths the golden models and RTL support: 8..64 bits."""
    if not 8 <= bits <= 64:
        raise ConfigError(f"{at}: {field} = {bits}: must be in 8..64")
