"""Child processes (yosys, Verilator and make, simulators) that never outlive lowbit.

Rule: every child runs in its own process group (so a terminal's Ctrl-C reaches only lowbit, which then
decides) and is ended with its whole group when lowbit stops for any reason: an exception, a timeout,
Ctrl-C or SIGTERM (both unwind through `run`, which kills the group), or a SIGKILL of lowbit itself, for
which Linux delivers SIGKILL to the direct child (prctl PR_SET_PDEATHSIG, set before the child starts).
Grandchildren (the compilers make starts) are killed with the group in every case but the last; after a
SIGKILL of lowbit they finish the file they are compiling and exit.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import types
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_PR_SET_PDEATHSIG = 1


def _prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()  # resolved in the parent: the child runs only async-signal-safe work before exec


def _child_setup(parent: int) -> None:
    """In the child, between fork and exec: die with the parent (Linux)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def find_exe(name: str) -> str | None:
    """A program installed with lowbit: the running interpreter's bin directory first (a venv that is not
    activated), then PATH; None when neither has it."""
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else shutil.which(name)


def kill_group(p: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group and reap the child."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
        pass


def run(cmd: Sequence[str], *, cwd: Any = None, env: Mapping[str, str] | None = None,
        timeout: float | None = None, stdout: int | IO[Any] | None = None, stderr: int | IO[Any] | None = None,
        capture_output: bool = False, text: bool = False) -> subprocess.CompletedProcess:
    """subprocess.run with the rule above: own process group, killed with its group on any exit path
    (raises subprocess.TimeoutExpired after `timeout` seconds, like subprocess.run)."""
    if capture_output:
        stdout = stderr = subprocess.PIPE
    parent = os.getpid()
    p = subprocess.Popen(list(cmd), cwd=cwd, env=None if env is None else dict(env), stdout=stdout, stderr=stderr,
                         text=text, start_new_session=True, preexec_fn=lambda: _child_setup(parent))
    try:
        out, err = p.communicate(timeout=timeout)
    except BaseException:  # timeout, Ctrl-C, SIGTERM (lowbit.cli.Interrupted), any error: end the whole group
        kill_group(p)
        raise
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


@contextmanager
def adopt(module: types.ModuleType) -> Iterator[None]:
    """Apply the rule above to the children a third-party `module` starts with `subprocess.Popen` (e.g. the
    yosys that Amaranth runs to write Verilog): own process group, death with lowbit, and their groups
    killed if the block exits with an exception (Ctrl-C included)."""
    real = module.subprocess
    spawned: list[subprocess.Popen] = []

    def popen(*args: Any, **kw: Any) -> subprocess.Popen:
        parent = os.getpid()
        kw.setdefault("start_new_session", True)
        kw.setdefault("preexec_fn", lambda: _child_setup(parent))
        p = real.Popen(*args, **kw)
        spawned.append(p)
        return p

    proxy = types.SimpleNamespace(**{k: getattr(real, k) for k in dir(real) if not k.startswith("__")})
    proxy.Popen = popen
    module.subprocess = proxy
    try:
        yield
    except BaseException:
        for p in spawned:
            if p.poll() is None:
                kill_group(p)
        raise
    finally:
        module.subprocess = real
