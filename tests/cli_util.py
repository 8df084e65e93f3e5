"""Run the `lowbit` CLI in a subprocess, as a user would."""

from __future__ import annotations

import re
import subprocess
import sys


def lowbit(*args: str, cwd=None, env=None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lowbit", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def assert_one_line_error(r: subprocess.CompletedProcess, pattern: str, what: str = "") -> None:
    """Exit status 2, exactly one stderr line starting with 'error: ', matching `pattern` (no traceback)."""
    assert r.returncode == 2, (what, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert re.search(pattern, lines[0]), lines[0]
