"""One exception type for every user-facing error.

The CLI turns a LowbitError into a single line on stderr and a non-zero exit (no traceback):
the message must say what is wrong, which field/value, and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' — the hint every unknown-name error carries."""
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class LowbitError(Exception):
    """A user error with a one-line, actionable message."""

    exit_code = 2


class ConfigError(LowbitError):
    """An invalid hardware config (unknown field, wrong type, out-of-range value, unknown preset)."""


class TraceError(LowbitError):
    """An invalid or unreadable trace (bad JSON, unknown op, missing field, version mismatch)."""


class WorkloadError(LowbitError):
    """A workload the hardware cannot run (unknown model, tile too large for SRAM, bad sizes)."""


class MissingExtraError(LowbitError):
    """A command needs an optional dependency group (`pip install 'lowbit[extra]'`) that is not installed."""
