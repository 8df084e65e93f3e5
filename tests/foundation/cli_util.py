"""Run the `lowbit` CLI in a subprocess, as a user would."""

from __future__ import annotations

import subprocess
import sys


def lowbit(*args: str, cwd=None, env=None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)
