"""`sim` must import, and its CLI must start, with torch, amaranth, triton and cocotb unavailable."""

from __future__ import annotations

import subprocess

from tests.cli_util import python_without

HEAVY = ("torch", "amaranth", "triton", "cocotb", "cocotb_tools", "transformers")


def run_blocked(code: str) -> subprocess.CompletedProcess:
    return python_without(HEAVY, code, timeout=300)


def test_blocker_really_blocks():
    r = run_blocked("import torch")
    assert r.returncode != 0 and "blocked for this test" in r.stderr


def test_every_sim_module_imports_without_heavy_deps():
    r = run_blocked(
        """
        import pkgutil, importlib, lowbit.sim as sim
        mods = [m.name for m in pkgutil.walk_packages(sim.__path__, "lowbit.sim.")]
        for m in mods:
            importlib.import_module(m)
        print(len(mods))
        """
    )
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) >= 10


def test_cli_starts_and_runs_without_heavy_deps():
    r = run_blocked(
        """
        import sys
        from lowbit.cli import main
        rc = main(["config", "show", "vitallm"])
        assert rc == 0, rc
        try:
            main(["--help"])
        except SystemExit:
            pass
        """
    )
    assert r.returncode == 0, r.stderr
    assert "vitallm" in r.stdout and "tint.lanes" in r.stdout


def test_trace_capture_without_torch_gives_install_hint(tmp_path):
    r = run_blocked(
        f"""
        import sys
        from lowbit.cli import main
        sys.exit(main(["trace", "--model", "bitnet-tiny", "--out", r"{tmp_path / 't'}"]))
        """
    )
    assert r.returncode == 2
    assert "pip install 'lowbit[torch]'" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "t").exists()
