"""sim.nbcache: a cached kernel is recompiled when a module it calls into changes (numba alone would not)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lowbit.sim.nbcache import source_digest

ROOT = Path(__file__).resolve().parents[2]

DEP = "from numba import njit\n\n\n@njit(cache=True)\ndef f(x):\n    return x + {inc}\n"
KERN = """import dep
from lowbit.sim.nbcache import njit_cached


@njit_cached(dep)
def k(x):
    return dep.f(x)


print(k(1))
"""


def test_source_digest_tracks_content(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("x = 1\n")
    d1 = source_digest([a])
    a.write_text("x = 2\n")
    assert source_digest([a]) != d1 and len(d1) == 16
    a.write_text("x = 1\n")
    assert source_digest([a]) == d1


def test_dependency_change_recompiles_and_prunes(tmp_path):
    # Verified by hand with plain @njit(cache=True) on `k`: the second run prints the stale 2.
    (tmp_path / "kern.py").write_text(KERN)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "NUMBA_CACHE_DIR": str(tmp_path / "nbc")}

    def run(inc: int) -> int:
        (tmp_path / "dep.py").write_text(DEP.format(inc=inc))
        out = subprocess.run([sys.executable, "kern.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=120, check=True)
        return int(out.stdout.strip())

    assert run(1) == 2
    assert run(20) == 21  # cached kernel from the first run must not be reused
    kern_files = sorted(p.name for p in (tmp_path / "nbc").rglob("kern.k_src*"))
    assert len(kern_files) == 2 and all(".nbi" in n or ".nbc" in n for n in kern_files), kern_files  # old pruned
