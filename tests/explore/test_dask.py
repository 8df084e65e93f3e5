"""A real Dask cluster on localhost (`dask scheduler` + two `dask worker` processes, started here): a sweep through
--scheduler, one worker killed mid-sweep (every point still present and equal to serial runs), an interrupted
sweep that resumes computing only the missing points, and a point re-run alone from its printed line."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_util import lowbit

pytest.importorskip("distributed")

DASK = str(Path(sys.executable).parent / "dask")
SPEC = """
[sweep]
base = "tiny"
objectives = ["decode_tok_s", "prefill_latency_s"]

[workload]
model = "bitnet-tiny"
prefill = 16
decode = 48

[params]
"tint.cores" = [1, 2]
"lop.k" = [2, 4, 8, 16]
schedule = ["inorder", "dependency-aware"]
"""
N = 16
METRICS = ("decode_tok_s", "prefill_latency_s", "cycles")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """`dask scheduler` and two single-thread `dask worker` processes without nannies (a killed worker stays dead)."""
    from dask.distributed import Client

    d = tmp_path_factory.mktemp("dask")
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    sched = _start([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], d / "scheduler.log")
    workers = [_start([DASK, "worker", addr, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", f"w{i}"],
                      d / f"worker{i}.log") for i in range(2)]
    try:
        with Client(addr, timeout="30s") as c:
            c.wait_for_workers(2, timeout=90)
        yield addr, workers
    finally:
        for p in [*workers, sched]:
            _stop(p)


def _spec(tmp_path: Path) -> Path:
    p = tmp_path / "spec.toml"
    p.write_text(SPEC)
    return p


def _cached(cache: Path) -> int:
    return len(list(cache.glob("*/*.json")))


def _pids_in(cache: Path) -> set[str]:
    """The worker process ids that computed the cached results so far."""
    pids = set()
    for f in cache.glob("*/*.json"):
        try:
            pids.add(json.loads(f.read_text())["worker"].rsplit(":", 1)[1])
        except (ValueError, KeyError, OSError):
            pass  # a file being written (results are renamed into place, but be lenient)
    return pids


def _wait_for(cond, timeout: float, what: str) -> None:
    t = time.monotonic()
    while not cond():
        if time.monotonic() - t > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _table(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return sorted(pq.read_table(out / "results.parquet").to_pylist(), key=lambda r: r["point"])


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """The same points evaluated one by one in one process, without Dask."""
    d = tmp_path_factory.mktemp("serial")
    r = lowbit("sweep", "run", str(_spec(d)), "--out", str(d / "out"), "--serial", "--cache", str(d / "cache"), timeout=300)
    assert r.returncode == 0, r.stderr
    rows = _table(d / "out")
    assert len(rows) == N and all(r["status"] == "ok" for r in rows)
    return rows


def _freeze(procs: list[subprocess.Popen], sig: int) -> None:
    for w in procs:
        if w.poll() is None:
            os.killpg(w.pid, sig)


def _as_from_a_terminal(args: list[str], **kw) -> subprocess.Popen:
    """Start `args` with SIGINT at its default, as a command run in a terminal. A test run started in the
    background of a non-interactive shell (`make test &`, a CI runner) inherits SIGINT ignored, and lowbit
    keeps an ignored SIGINT ignored (as nohup expects): the Ctrl-C these tests send would never arrive. A
    Python handler installed here becomes the default disposition in the child at exec."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    finally:
        signal.signal(signal.SIGINT, old)


def _errors(stderr: str) -> list[str]:
    """stderr without the progress lines (`sweep: 3/16 done, ...` every 30 s when stderr is not a terminal)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("sweep: ")]


def _cache_entries_whole(cache: Path) -> bool:
    """Every cache entry is a complete record and no temp file is left behind."""
    entries = list(cache.glob("*/*.json"))
    return (all(json.loads(f.read_text())["status"] == "ok" for f in entries)
            and not [f for f in cache.rglob("*") if f.is_file() and f.suffix != ".json"])


def test_interrupted_sweep_resumes_only_the_missing_points(cluster, tmp_path, serial):
    addr, workers = cluster
    cache, out = tmp_path / "cache", tmp_path / "out"
    args = [sys.executable, "-m", "lowbit", "sweep", "run", str(_spec(tmp_path)), "--out", str(out), "--scheduler", addr,
            "--cache", str(cache)]
    p = _as_from_a_terminal(args)
    try:
        _wait_for(lambda: _cached(cache) >= 3 or p.poll() is not None, 120, "the first results")
        _freeze(workers, signal.SIGSTOP)  # no point finishes while the client is being interrupted
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)  # 0.3 s on an idle machine, 2.5 s at load 6.6
    finally:
        _freeze(workers, signal.SIGCONT)
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert _errors(err) == ["error: interrupted (SIGINT); unfinished outputs were not written"], err
    assert not out.exists() and _cache_entries_whole(cache)  # nothing half-written
    first = _cached(cache)
    assert 3 <= first < N
    r = lowbit("sweep", "run", str(_spec(tmp_path)), "--out", str(out), "--scheduler", addr, "--cache", str(cache),
               timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{first} from the result cache, {N - first} computed" in r.stdout, r.stdout
    rows = _table(out)
    assert sum(row["cached"] for row in rows) == first and _cached(cache) == N
    for a, b in zip(rows, serial, strict=True):
        assert {m: a[m] for m in METRICS} == {m: b[m] for m in METRICS}, a["point"]


def _alive_in_group(pgid: int) -> list[str]:
    """The processes of process group `pgid` that still run (zombies, exited but not yet reaped, are not)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(stat.parent.name)
    return alive


def test_ctrl_c_on_a_local_cluster_sweep(tmp_path):
    """Ctrl-C in a terminal signals the whole process group, the LocalCluster's worker processes included: the
    client alone handles it (one line, status 130, no worker traceback), closes the cluster (no process of the
    group is left) and keeps every result it received, whole."""
    cache, out = tmp_path / "cache", tmp_path / "out"
    p = _as_from_a_terminal([sys.executable, "-m", "lowbit", "sweep", "run", str(_spec(tmp_path)), "--out", str(out),
                             "--workers", "2", "--cache", str(cache)], start_new_session=True)
    try:
        _wait_for(lambda: len(_pids_in(cache)) == 2 or p.poll() is not None, 180, "results of both workers")
        worker_pids = [int(pid) for pid in _pids_in(cache)]
        for pid in worker_pids:  # the sweep cannot end before the Ctrl-C
            os.kill(pid, signal.SIGSTOP)
        os.killpg(p.pid, signal.SIGINT)
        for pid in worker_pids:  # the client handles the signal before it takes any further result
            os.kill(pid, signal.SIGCONT)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 130, err
    assert _errors(err) == ["error: interrupted (SIGINT); unfinished outputs were not written"], err
    t0 = time.monotonic()  # a worker the closed cluster told to stop may still be exiting on a loaded host
    while (left := _alive_in_group(p.pid)) and time.monotonic() - t0 < 10:
        time.sleep(0.1)
    assert not left, f"processes of the interrupted sweep still running 10 s after it ended: {left}"
    assert not out.exists() and _cache_entries_whole(cache) and 2 <= _cached(cache) < N


def test_rerun_line_gives_identical_numbers(serial):
    row = next(r for r in serial if r["pareto"])
    argv = shlex.split(row["rerun"])
    assert argv[:2] == ["lowbit", "sim"]
    r = lowbit(*argv[1:], "--json", "-")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (d["decode_tokens_per_s"], d["prefill_latency_s"], d["cycles"]) == \
        (row["decode_tok_s"], row["prefill_latency_s"], row["cycles"])


def test_killed_worker_mid_sweep(cluster, tmp_path, serial):
    """Last in this module: it leaves one worker."""
    addr, workers = cluster
    cache, out = tmp_path / "cache", tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "lowbit", "sweep", "run", str(_spec(tmp_path)), "--out", str(out),
                          "--scheduler", addr, "--cache", str(cache)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        victim = workers[0]
        # the victim must have computed a point, so that the table shows both workers
        _wait_for(lambda: str(victim.pid) in _pids_in(cache) or p.poll() is not None, 120, "a result of the victim")
        _freeze(workers, signal.SIGSTOP)  # the sweep cannot end between this check and the kill
        killed_at = _cached(cache)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        _freeze(workers[1:], signal.SIGCONT)
        stdout, stderr = p.communicate(timeout=300)
    finally:
        _freeze(workers[1:], signal.SIGCONT)
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, stderr
    assert killed_at < N, "the sweep ended before the kill"
    assert f"{N} points: {N} ok, 0 infeasible, 0 failed" in stdout
    rows = _table(out)
    assert [r["point"] for r in rows] == list(range(N)) and all(r["status"] == "ok" for r in rows)
    for a, b in zip(rows, serial, strict=True):
        assert {m: a[m] for m in METRICS} == {m: b[m] for m in METRICS}, a["point"]
    pids = {r["worker"].rsplit(":", 1)[1] for r in rows}
    assert str(victim.pid) in pids and len(pids) == 2  # both workers computed points; the survivor finished


def test_show_keeps_new_notes_with_the_results(serial, tmp_path_factory):
    """`lowbit sweep show DIR --notes FILE` renders the new discussion and keeps it in sweep.json, so that a later
    `show` without --notes renders it again; the table is not touched."""
    import shutil

    d = tmp_path_factory.mktemp("show")
    out = d / "out"
    shutil.copytree(next(tmp_path_factory.getbasetemp().glob("serial*/out")), out)  # the `serial` fixture's sweep
    table = (out / "results.parquet").read_bytes()
    (d / "notes.md").write_text("## Discussion\n\nK = 16 is on the front.\n")
    assert lowbit("sweep", "show", str(out), "--notes", str(d / "notes.md")).returncode == 0
    assert json.loads((out / "sweep.json").read_text())["notes"] == "## Discussion\n\nK = 16 is on the front.\n"
    (out / "summary.md").unlink()
    r = lowbit("sweep", "show", str(out))
    assert r.returncode == 0, r.stderr
    assert "K = 16 is on the front." in (out / "summary.md").read_text()
    assert (out / "results.parquet").read_bytes() == table
