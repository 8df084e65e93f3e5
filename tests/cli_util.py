"""Run the `lowbit` CLI in a subprocess, as a user would."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap


def lowbit(*args: str, cwd=None, env=None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lowbit", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def assert_one_line_error(r: subprocess.CompletedProcess, pattern: str, what: str = "") -> None:
    """Exit status 2, exactly one stderr line starting with 'error: ', matching `pattern` (no traceback)."""
    assert r.returncode == 2, (what, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert re.search(pattern, lines[0]), lines[0]


_BLOCK = """
import importlib.abc, json, sys
BLOCKED = tuple(json.loads(sys.argv[1]))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"blocked for this test: {name}", name=name)
        return None
sys.meta_path.insert(0, Block())
"""


def python_without(modules: tuple[str, ...], code: str, *argv: str, cwd=None,
                   timeout: int = 120) -> subprocess.CompletedProcess:
    """Run Python `code` in a subprocess where the top-level modules `modules` cannot be found or imported, as
    on a machine without the optional extra that provides them (`sys.argv[2:]` = argv)."""
    return subprocess.run([sys.executable, "-c", _BLOCK + textwrap.dedent(code), json.dumps(list(modules)), *argv],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)


def lowbit_without(modules: tuple[str, ...], *args: str, cwd=None, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run `lowbit ARGS` in a subprocess where the top-level modules `modules` cannot be imported."""
    return python_without(modules, "from lowbit.cli import main\nsys.exit(main(json.loads(sys.argv[2])))",
                          json.dumps(list(args)), cwd=cwd, timeout=timeout)
