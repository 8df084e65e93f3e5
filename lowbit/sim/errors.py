"""One exception type for every user-facing error.

The CLI turns a LowbitError into a single line on stderr and exit status 2 (no traceback):
the message must say what is wrong, which field/value, and how to fix it. docs/errors.md lists the
classes and the exit statuses.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' — the hint every unknown-name error carries."""
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


# Control characters (and Unicode line breaks) a message may carry from user data (a key with a newline, a
# file name): shown escaped, so that a message is always exactly one line.
_ESCAPES = {i: f"\\x{i:02x}" for i in [*range(32), 127, 0x85]} | {9: "\\t", 10: "\\n", 13: "\\r",
                                                                  0x2028: "\\u2028", 0x2029: "\\u2029"}


def one_line(text: str) -> str:
    """`text` with control characters and line breaks escaped."""
    return str(text).translate(_ESCAPES)


class LowbitError(Exception):
    """A user error with a one-line, actionable message (control characters in it are shown escaped)."""

    exit_code = 2

    def __str__(self) -> str:
        return one_line(super().__str__())


class ConfigError(LowbitError):
    """An invalid hardware config (unknown field, wrong type, out-of-range value, unknown preset)."""


class TraceError(LowbitError):
    """An invalid or unreadable trace (bad JSON, unknown op, missing field, version mismatch)."""


class WorkloadError(LowbitError):
    """A workload the hardware cannot run (unknown model, tile too large for SRAM, bad sizes)."""


class OptionError(LowbitError):
    """A command-line option value outside what the command accepts (range, NaN/inf, malformed list)."""


class ModelImportError(LowbitError):
    """An unusable Hugging Face model directory (bad config.json, unsupported architecture, missing tensor)."""


class OutputError(LowbitError):
    """An output could not be written (disk full, permission, read-only file system); the previous file,
    if any, is left as it was and no partial file remains."""


class MissingExtraError(LowbitError):
    """A command needs an optional dependency group (`pip install 'lowbit[extra]'`) that is not installed."""
