"""Field checks shared by every input schema: hardware configs, traces, Hugging Face config.json, sweep
specs and command-line options.

A field is checked for its type, then against a `Range` with a physical unit. Every failure is one line
(docs/errors.md):

    <where>: <path> = <value>: must be <what is allowed> [(<why>)]

`where` names the file (or the option), `path` the field inside it (`dram.tRCD_ns`, `sram[0].bytes`,
`model.d_model`). NaN and ±inf are never accepted, booleans are not numbers, and every bound is finite, so
a value that passes can be multiplied by any other checked value without leaving int64.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lowbit.sim.errors import ConfigError, LowbitError, OptionError, did_you_mean

INT64_MAX = 2**63 - 1
# float64 holds every integer up to 2^53 exactly: the DRAM model's float64 cycle times stay exact below it,
# and the scheduler's int64 times (sim.sched) never have to hold more.
EXACT_CYCLES = 2**53


def fmt_num(x: float) -> str:
    """A bound as text: integers as written, floats in the shortest form (1e+06, 0.8, 1e+11)."""
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int) or float(x).is_integer() and abs(x) < 1e6:
        return str(int(x))
    return f"{x:g}"


def fmt_value(x: Any) -> str:
    """A value as the user wrote it: repr (1.0, 1e+19, nan, 'two')."""
    return repr(x)


@dataclass(frozen=True)
class Range:
    """Allowed values of a number: lo..hi in `unit` (either bound may be open), integer or not.

    `why` says where the bound comes from (a model's validity range, a hardware limit, a simulator bound);
    it is appended to the error message."""

    lo: float | None = None
    hi: float | None = None
    unit: str = ""
    integer: bool = False
    lo_open: bool = False
    hi_open: bool = False
    why: str = ""

    def _u(self) -> str:
        return f" {self.unit}" if self.unit else ""

    def allowed(self) -> str:
        """'in 1..64 banks', '> 0 and <= 1e+06 ns', '>= 0 ns' ..."""
        lo = None if self.lo is None else ("> " if self.lo_open else ">= ") + fmt_num(self.lo)
        hi = None if self.hi is None else ("< " if self.hi_open else "<= ") + fmt_num(self.hi)
        if lo and hi and not self.lo_open and not self.hi_open:
            return f"in {fmt_num(self.lo)}..{fmt_num(self.hi)}{self._u()}"  # type: ignore[arg-type]
        return " and ".join(x for x in (lo, hi) if x) + self._u() if (lo or hi) else "any value"

    def violation(self, value: float) -> str | None:
        """What is wrong with `value` ('must be >= 1 bytes', ...), or None when it is allowed."""
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number {self.allowed()}"
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return f"must be {'>' if self.lo_open else '>='} {fmt_num(self.lo)}{self._u()}"
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return f"must be {'<' if self.hi_open else '<='} {fmt_num(self.hi)}{self._u()}"
        return None

    def check(self, value: float, where: str, path: str, error: type[LowbitError] = ConfigError) -> None:
        bad = self.violation(value)
        if bad:
            raise error(f"{where}: {path} = {fmt_value(value)}: {bad}" + (f" ({self.why})" if self.why else ""))


def _at(where: str, path: str) -> str:
    return f"{where}: {path}" if path else where


def as_int(value: Any, where: str, path: str, rng: Range | None = None,
           error: type[LowbitError] = ConfigError) -> int:
    """An integer (not a bool, not a float) inside `rng`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{_at(where, path)} = {short(value)}: must be an integer"
                    + (f" {rng.allowed()}" if rng else "") + f" (got {type(value).__name__})")
    if rng is not None:
        rng.check(value, where, path, error)
    return value


def as_float(value: Any, where: str, path: str, rng: Range | None = None,
             error: type[LowbitError] = ConfigError) -> float:
    """A finite number (int or float, not a bool) inside `rng`, as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"{_at(where, path)} = {short(value)}: must be a number"
                    + (f" {rng.allowed()}" if rng else "") + f" (got {type(value).__name__})")
    if isinstance(value, int) and abs(value) > 2**1023:
        raise error(f"{_at(where, path)} = {short(value)}: too large"
                    + (f"; must be {rng.allowed()}" if rng else ""))
    v = float(value)
    if not math.isfinite(v):
        raise error(f"{_at(where, path)} = {fmt_value(v)}: must be a finite number"
                    + (f" {rng.allowed()}" if rng else ""))
    if rng is not None:
        rng.check(v, where, path, error)
    return v


def as_str(value: Any, where: str, path: str, error: type[LowbitError] = ConfigError, max_len: int = 4096) -> str:
    if not isinstance(value, str):
        raise error(f"{_at(where, path)} = {short(value)}: must be a string")
    if len(value) > max_len:
        raise error(f"{_at(where, path)}: a string of {len(value)} characters; at most {max_len}")
    return value


def as_bool(value: Any, where: str, path: str, error: type[LowbitError] = ConfigError) -> bool:
    if not isinstance(value, bool):
        raise error(f"{_at(where, path)} = {short(value)}: must be true or false")
    return value


def as_choice(value: Any, choices: Iterable[str], where: str, path: str,
              error: type[LowbitError] = ConfigError) -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        raise error(f"{_at(where, path)} = {short(value)}: must be one of {', '.join(repr(c) for c in choices)}{hint}")
    return value


def short(value: Any, limit: int = 60) -> str:
    """repr of a value, cut to `limit` characters (a one-line message never carries a whole document)."""
    return clip(repr(value), limit)


def clip(text: str, limit: int = 60) -> str:
    """`text` on one line, cut to `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- command-line options


def option_int(name: str, value: int, rng: Range) -> int:
    """A command-line integer option inside `rng`: OptionError '--prefill 1000000000000: must be <= ...'."""
    bad = rng.violation(value)
    if bad:
        raise OptionError(f"{name} {fmt_value(value)}: {bad}" + (f" ({rng.why})" if rng.why else ""))
    return value


def option_float(name: str, value: float, rng: Range) -> float:
    """A command-line number option: finite (NaN/inf are refused) and inside `rng`."""
    if not math.isfinite(value):
        raise OptionError(f"{name} {fmt_value(value)}: must be a finite number {rng.allowed()}")
    return option_int(name, value, rng)  # type: ignore[arg-type]


def option_int_list(name: str, text: str, rng: Range, max_items: int = 64) -> list[int]:
    """A comma-separated list of integers ('128,512'), each inside `rng`, at most `max_items` of them."""
    parts = [x.strip() for x in str(text).split(",") if x.strip()]
    if not parts:
        raise OptionError(f"{name} {text!r}: must list at least one integer (comma-separated)")
    if len(parts) > max_items:
        raise OptionError(f"{name}: {len(parts)} values; at most {max_items}")
    out = []
    for p in parts:
        try:
            v = int(p)
        except ValueError:
            raise OptionError(f"{name} {short(text)}: '{clip(p, 20)}' is not an integer; "
                              "give comma-separated integers") from None
        option_int(name, v, rng)
        out.append(v)
    return out


SEED = Range(0, 2**32 - 1, why="the random generators take 32-bit seeds")
