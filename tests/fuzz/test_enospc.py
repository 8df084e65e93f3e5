"""A full disk (ENOSPC) simulated for every writer: each command fails with one line and status 2, the previous
output stays as it was, and no partial or temp file remains.

The full disk: every file opened for writing from Python accepts half of the first write and then raises
OSError(ENOSPC), as a real full device does; safetensors' own (Rust) writer raises its SafetensorError the
same way. Reads work normally."""

from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path

import pytest

from lowbit.sim.atomic import TMP_SUFFIX
from tests.fuzz.util import cli

OLD = "old output\n"


class _FullFile:
    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __getattr__(self, name):
        return getattr(self._f, name)


@pytest.fixture()
def full_disk(monkeypatch):
    """full_disk() fills the disk, full_disk(False) frees it again."""
    real_open = builtins.open

    def fake_open(file, mode="r", *args, **kw):
        f = real_open(file, mode, *args, **kw)
        return _FullFile(f) if any(c in mode for c in "wax+") else f

    def fake_save_file(tensors, filename, metadata=None):
        from safetensors import SafetensorError

        Path(filename).write_bytes(b"\x00" * 10)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    import safetensors.torch

    real_save = safetensors.torch.save_file

    def fill(full: bool = True):
        monkeypatch.setattr(builtins, "open", fake_open if full else real_open)
        monkeypatch.setattr(io, "open", fake_open if full else real_open)
        monkeypatch.setattr(safetensors.torch, "save_file", fake_save_file if full else real_save)

    return fill


def _fails_cleanly(argv: list[str], root: Path, kept: list[Path]) -> str:
    rc, _, err = cli(argv, timeout=120)
    assert rc == 2, (argv, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "no space left on device" in err.lower(), err
    for p in kept:
        assert p.read_text() == OLD, f"{p} changed"
    assert not list(root.rglob(f"*{TMP_SUFFIX}")), list(root.rglob("*"))
    return err


def _old(*paths: Path) -> list[Path]:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(OLD)
    return list(paths)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    from lowbit.sim import cache

    monkeypatch.setenv(cache.ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_sim_json_and_timeline(tmp_path, full_disk):
    j, tl = _old(tmp_path / "o" / "r.json", tmp_path / "o" / "t.json")
    full_disk()
    base = ["sim", "--model", "bitnet-tiny", "--hw", "tiny", "--prefill", "2", "--decode", "1", "--quiet"]
    _fails_cleanly(base + ["--json", str(j)], tmp_path, [j])
    _fails_cleanly(base + ["--timeline", str(tl)], tmp_path, [tl])


def test_config_show_and_trace_info_json(tmp_path, full_disk):
    from lowbit.sim.trace import write_trace
    from lowbit.sim.workloads import standard_trace

    tr = write_trace(standard_trace("bitnet-tiny", 2, 1), tmp_path / "tr")
    j = _old(tmp_path / "o" / "c.json")
    full_disk()
    _fails_cleanly(["config", "show", "vitallm", "--json", str(j[0])], tmp_path, j)
    _fails_cleanly(["trace", "info", str(tr), "--json", str(j[0])], tmp_path, j)


def test_validate_markdown(tmp_path, full_disk, monkeypatch):
    import lowbit.sim.validation

    monkeypatch.setattr(lowbit.sim.validation, "build_report", lambda **kw: "# validation\n" * 100)
    md = _old(tmp_path / "rep" / "validation-vitallm.md")
    full_disk()
    _fails_cleanly(["validate", "vitallm", "--out", str(tmp_path / "rep"), "--decode", "2"], tmp_path, md)


@pytest.mark.parametrize("tensors", [False, True])
def test_trace_capture(tmp_path, full_disk, tensors):
    pytest.importorskip("torch")
    out = tmp_path / "t"
    full_disk()
    argv = ["trace", "--model", "bitnet-tiny", "--prefill", "4", "--decode", "2", "--out", str(out)]
    _fails_cleanly(argv + (["--tensors"] if tensors else []), tmp_path, [])
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_rtl_verilog_cache_and_output(tmp_path, full_disk, cache):
    pytest.importorskip("amaranth")
    out = tmp_path / "rtl"
    argv = ["rtl", "--hw", "tiny", "--unit", "tint", "--out", str(out)]
    full_disk()  # the Verilog cache entry is written while the disk is full
    _fails_cleanly(argv, tmp_path, [])
    assert not list((cache / "verilog").glob("*.v"))  # no cache entry
    full_disk(False)
    assert cli(argv)[0] == 0  # disk free again: the cache entry and the output
    v = out / "tint.v"
    good = v.read_text()
    kept = _old(v, out / "manifest.json")
    full_disk()
    _fails_cleanly(argv, tmp_path, kept)
    assert good.startswith("/* Generated by Amaranth")


def test_synth_cache_and_json(tmp_path, full_disk, cache, sky130_root):
    pytest.importorskip("amaranth")
    j = tmp_path / "o" / "s.json"
    argv = ["synth", "--hw", "tiny", "--unit", "tint", "--json", str(j)]
    assert cli(argv, timeout=300)[0] == 0  # synthesised once, cached
    kept = _old(j)
    full_disk()
    _fails_cleanly(argv, tmp_path, kept)  # the JSON
    entry = next(d for d in (cache / "synth").iterdir() if (d / "result.json").exists())
    import shutil

    shutil.rmtree(entry)
    _fails_cleanly(argv, tmp_path, kept)  # a new cache entry: its work directory is written first
    assert not [d for d in (cache / "synth").iterdir() if not d.name.startswith(".")]


def test_report(tmp_path, full_disk, monkeypatch):
    pytest.importorskip("amaranth")
    import lowbit.cost.energy as energy
    from tests.cost.test_report import _fake_hw

    monkeypatch.setattr(energy, "build_hw_cost", lambda cfg, **kw: _fake_hw(cfg))
    out = tmp_path / "rep"
    names = ["area.png", "energy.png", "perf.png", "power.png", "report.html", "report.md", "metrics.json"]
    kept = _old(*(out / n for n in names))
    full_disk()
    _fails_cleanly(["report", "--hw", "tiny", "--model", "bitnet-tiny", "--prefill", "4", "--decode", "2",
                    "--out", str(out), "--json", str(out / "metrics.json")], tmp_path, kept)
