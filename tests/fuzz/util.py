"""Shared pieces of the fuzz tests: the case budget, a per-case timeout, the one-line-error check and a pool of
hostile JSON/TOML values."""

from __future__ import annotations

import contextlib
import io
import math
import signal
from collections.abc import Iterator

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from lowbit.sim.errors import LowbitError

CASES = 1000          # generated cases per loader per run (the CI budget)
CASE_TIMEOUT_S = 5.0  # one case longer than this is a hang
FUZZ = settings(max_examples=CASES, deadline=None, database=None, derandomize=False,
                suppress_health_check=list(HealthCheck))


class CaseTimeout(BaseException):
    """Raised by the per-case alarm; a BaseException so that no `except Exception` in the code under test can
    swallow it."""


@contextlib.contextmanager
def case_timeout(seconds: float = CASE_TIMEOUT_S) -> Iterator[None]:
    """Fail a case that runs longer than `seconds` (SIGALRM in the test's main thread)."""
    def fire(signum, frame):
        raise CaseTimeout(f"case ran longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_case(fn, *args, what: str = "", timeout: float = CASE_TIMEOUT_S, **kw):
    """Call fn(*args, **kw) under the timeout. Returns (result, None) or (None, LowbitError); any other exception
    (a traceback) or a timeout (a hang) fails the case with the input in the message."""
    try:
        with case_timeout(timeout):
            return fn(*args, **kw), None
    except LowbitError as e:
        check_message(str(e), what)
        return None, e
    except CaseTimeout as e:
        raise AssertionError(f"hang: {e} on {what}") from None


def check_message(msg: str, what: str = "") -> None:
    """A user error is one non-empty line of bounded length."""
    assert msg.strip(), f"empty error message for {what}"
    assert "\n" not in msg and "\r" not in msg, f"multi-line error for {what}: {msg!r}"
    assert len(msg) < 2000, f"error message of {len(msg)} characters for {what}"


def cli(argv: list[str], timeout: float = CASE_TIMEOUT_S) -> tuple[int, str, str]:
    """lowbit.cli.main(argv) in-process, under the timeout: (status, stdout, stderr)."""
    from lowbit.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with case_timeout(timeout), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    except CaseTimeout as e:
        raise AssertionError(f"hang: {e} on lowbit {argv}") from None
    return rc, out.getvalue(), err.getvalue()


def assert_clean_exit(rc: int, err: str, argv: list[str]) -> None:
    """Success, or a usage error (click, status 2), or one `error:` line with status 2 -- never a traceback."""
    assert "Traceback" not in err, f"traceback on lowbit {argv}:\n{err}"
    assert rc in (0, 2), f"status {rc} on lowbit {argv}:\n{err}"
    if rc == 2 and err.startswith("error:"):
        lines = err.strip().splitlines()
        assert len(lines) == 1, f"multi-line error on lowbit {argv}:\n{err}"


# Values a careless or hostile file may hold where a number, a name or a table is expected.
HOSTILE_NUMBERS = [0, -1, 1, 2, 3, 7, 8, 2**16, 2**31, 2**53 + 1, 2**63, -(2**63), 10**19, 10**30, 10**400,
                   0.0, -0.0, 0.5, 1.5, 1e-300, 1e19, 1e300, -1e300, math.nan, math.inf, -math.inf, 5e-324]
hostile_number = st.sampled_from(HOSTILE_NUMBERS) | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
hostile_scalar = (hostile_number | st.booleans() | st.none() | st.text(max_size=12)
                  | st.sampled_from(["", "nan", "1e12", "ternary", "lpddr", "LPDDR5X", "decode", "prefill", "\u0000"]))
hostile_value = st.recursive(hostile_scalar, lambda inner: st.lists(inner, max_size=3)
                             | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
