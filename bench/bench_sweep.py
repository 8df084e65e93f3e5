"""`lowbit sweep` throughput -> bench/results-sweep.md.

Workload: BitNet b1.58 3B, 64-token prefill + 128 decode tokens, around `vitallm`; the points differ in the
weight SRAM size only (no RTL block changes, so warm runs synthesise nothing). Measured, each as a real
`lowbit` command in a subprocess (start-up included) with a fresh result cache:

- a lone `lowbit sim` of the base point (the reference: what one point costs without the sweep);
- `lowbit sweep run --serial` at level sim (objectives decode tok/s + prefill latency: one simulation per
  point) and at level energy (+ area, energy/token: the cost model on the same simulation, whose prefill-end
  activity snapshot gives decode energy), to separate the sweep's own overhead from what energy adds;
- `lowbit sweep run` on a LocalCluster of 1 and 2 workers, warm synthesis cache (points per minute);
- the same with 2 workers and a cold cache root (empty $LOWBIT_CACHE_DIR: every RTL block of vitallm is
  synthesised with yosys and its activity measured before the points can be costed).
Per-point times come from the results table, measured on the worker: wall (t_total_s), CPU (t_cpu_s, the
worker process's CPU time for the point; t_sim_cpu_s, of which simulation) and minor page faults (minflt).
Wall times depend on the host's load average (reported with each row); CPU times depend on it less, but
still by +-15 % between runs here, so the sweep's own cost per point is read within each run, point by
point: (t_cpu_s - t_sim_cpu_s) / t_sim_cpu_s (config, cost model, bookkeeping). Page faults do not depend on
the load: they show the allocator behaviour of the worker processes against a plain process.

`--big` instead runs the committed example sweep (reports/sweep-vitallm/spec.toml, 256 points) on a
LocalCluster of 2 workers with a fresh result cache and a warm synthesis cache (every block parameterisation
its points need is synthesised first, outside the timing), sampling the load average every 30 s, and writes
the "Warm-cache sweep" section of the results (the rest of the file is kept; likewise the small runs keep it).
`--minutes M` stops it after M minutes and measures the points it finished. `--regenerate` makes that one
run also the committed example: the sweep writes its results next to the spec (with the spec folder's
notes.md), exactly as `lowbit sweep run SPEC --out DIR --notes DIR/notes.md`.

Usage: .venv/bin/python bench/bench_sweep.py [--points 4] [--quick] [--no-cold] [--out bench/results-sweep.md]
       .venv/bin/python bench/bench_sweep.py --big [SPEC] [--minutes M] [--regenerate] [--out bench/results-sweep.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIG = "## Warm-cache sweep of the committed example"


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def lowbit(args: list[str], env: dict | None = None) -> tuple[float, float]:
    """Run `lowbit ARGS`; (wall s, CPU s of the process and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "lowbit", *args], capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"lowbit {' '.join(args)} failed:\n{r.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def spec(model: str, prefill: int, decode: int, points: int, energy: bool) -> str:
    objectives = '["decode_tok_s", "area_mm2", "energy_per_token_mj"]' if energy else '["decode_tok_s", "prefill_latency_s"]'
    sizes = ", ".join(str(32768 + 1024 * i) for i in range(points))
    # the committed example's cost options (`make reports`' vitallm report): RMSNorm's datapath is not synthesised
    cost = 'exclude_units = ["sfu_rmsnorm"]\n' if energy else ""
    return (f'[sweep]\nbase = "vitallm"\nobjectives = {objectives}\n{cost}[workload]\nmodel = "{model}"\n'
            f'prefill = {prefill}\ndecode = {decode}\n[params]\n"sram.weight.bytes" = [{sizes}]\n')


def sweep(tmp: Path, name: str, text: str, extra: list[str], env: dict | None = None) -> dict:
    import pyarrow.parquet as pq

    d = tmp / name
    d.mkdir()
    (d / "spec.toml").write_text(text)
    la = load()
    wall, cpu = lowbit(["sweep", "run", str(d / "spec.toml"), "--out", str(d / "out"), "--cache", str(d / "cache"), *extra], env)
    rows = pq.read_table(d / "out" / "results.parquet").to_pylist()
    assert all(r["status"] == "ok" and not r["cached"] for r in rows), rows
    n = len(rows)
    return {"name": name, "points": n, "wall": wall, "cpu": cpu, "load": la, "per_min": 60 * n / wall,
            "t_total": sum(r["t_total_s"] for r in rows) / n, "t_sim": sum(r["t_sim_s"] for r in rows) / n,
            "cpu_pt": sum(r["t_cpu_s"] for r in rows) / n, "sim_cpu_pt": sum(r["t_sim_cpu_s"] for r in rows) / n,
            "cpu_warm": sum(r["t_cpu_s"] for r in rows[1:]) / max(1, n - 1),
            "cost_pt": sum(r.get("t_cost_cpu_s") or 0.0 for r in rows) / n,
            # the sweep's own: the point's CPU beyond its simulation and its cost model (config, bookkeeping)
            "own": statistics.median((r["t_cpu_s"] - r["t_sim_cpu_s"] - (r.get("t_cost_cpu_s") or 0.0)) / r["t_sim_cpu_s"]
                                     for r in rows),
            "own_s": statistics.median(r["t_cpu_s"] - r["t_sim_cpu_s"] - (r.get("t_cost_cpu_s") or 0.0) for r in rows),
            "faults": statistics.median(r["minflt"] for r in rows), "rate": [r["decode_tok_s"] for r in rows]}


def kept_section(path: Path, big: bool) -> str:
    """What the other mode wrote into the results file: the `--big` section (big=True) or the rest."""
    text = path.read_text() if path.exists() else ""
    head, sep, tail = text.partition(BIG)
    if big:
        return (sep + tail).rstrip() + "\n" if sep else ""
    return head.rstrip() + "\n\n" if head.strip() else ""


def autogroup_note() -> str:
    """The scheduling priority the run had: Linux's autogroup scheduling (sched_autogroup_enabled) shares the CPU
    fairly between sessions, so `nice` orders processes only within one session, and a session's own weight is
    the nice value of its autogroup (/proc/PID/autogroup, sched(7))."""
    try:
        on = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
        nice = int(Path("/proc/self/autogroup").read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return ""
    if not on:
        return ""
    return (f" The run's session had autogroup nice {nice} (sched(7): with autogroup scheduling the CPU is shared "
            "between sessions, and `nice` orders processes only within one)" + (
                "; the host's other jobs ran at nice 19 in their own sessions." if nice < 0 else "."))


def big_run(out: Path, spec_path: Path, minutes: float | None, regenerate: bool = False) -> None:
    """A whole sweep on 2 workers, fresh result cache, warm synthesis cache, load sampled. With `minutes`, the
    sweep is stopped (SIGTERM: its received points stay in the result cache) after that long and measured on
    the points it finished; the rate is then points done / wall time, start-up included."""
    import json
    import signal

    from lowbit.explore.evaluate import resolve, synthesis_jobs, synthesise
    from lowbit.explore.execute import points_of
    from lowbit.explore.spec import load_spec
    from lowbit.sim.config import to_dict

    spec = load_spec(spec_path)
    total = len(points_of(spec))
    t = time.perf_counter()
    seen: set[str] = set()
    for p in points_of(spec) if spec.level != "sim" else []:  # warm the synthesis cache (yosys + activity)
        cfg = resolve(spec.base_config(), p)
        for k, b in synthesis_jobs(cfg, spec.cost).items():
            if k not in seen:
                seen.add(k)
                synthesise(to_dict(cfg), b, spec.cost)
    warm_s = time.perf_counter() - t
    loads: list[float] = [os.getloadavg()[0]]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(30):
            loads.append(os.getloadavg()[0])

    with tempfile.TemporaryDirectory(prefix="bench-sweep-big-") as td:
        d = Path(td)
        la = load()
        threading.Thread(target=sample, daemon=True).start()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        res = spec_path.parent if regenerate else d / "out"
        notes = ["--notes", str(res / "notes.md")] if regenerate and (res / "notes.md").exists() else []
        cmd = ["lowbit", "sweep", "run", os.path.relpath(spec_path, ROOT), "--out", os.path.relpath(res, ROOT),
               *([notes[0], os.path.relpath(notes[1], ROOT)] if notes else []), "--workers", "2"]
        print(f"{time.strftime('%H:%M:%S')} {' '.join(cmd)} (fresh result cache {d / 'cache'}), load {la}", flush=True)
        proc = subprocess.Popen([sys.executable, "-m", "lowbit", *cmd[1:], "--cache", str(d / "cache")], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            printed, err = proc.communicate(timeout=minutes * 60 if minutes else None)
            stopped = False
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            printed, err = proc.communicate()
            stopped = True
        print(printed, end="", flush=True)  # what the sweep printed (the README quotes it)
        wall = time.perf_counter() - t
        stop.set()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != (143 if stopped else 0):
            raise SystemExit(f"the sweep failed (status {proc.returncode}):\n{err[-2000:]}")
        done = [json.loads(f.read_text()) for f in (d / "cache").glob("*/*.json")]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert all(r["status"] == "ok" for r in done), [r["reason"] for r in done if r["status"] != "ok"]
    n = len(done)
    if not n:
        raise SystemExit(f"no point finished within {minutes} min")
    med = {k: statistics.median(r.get(k, 0.0) for r in done)
           for k in ("t_total_s", "t_cpu_s", "t_sim_cpu_s", "t_cost_cpu_s", "minflt")}
    # the sweep's own CPU: what the worker spent on the point beyond the simulation and the cost model
    own = statistics.median((r["t_cpu_s"] - r["t_sim_cpu_s"] - r.get("t_cost_cpu_s", 0.0)) / r["t_sim_cpu_s"]
                            for r in done)
    rate = 60 * n / wall
    per256 = 256 / rate
    what = (f"stopped after {wall / 60:.0f} min with {n} of its {total} points done (measured on those)" if stopped
            else f"all {total} points")
    lines = [BIG, "",
             f"Generated by `python bench/bench_sweep.py --big{f' --minutes {minutes:g}' if minutes else ''}"
             f"{' --regenerate' if regenerate else ''}`: "
             f"`{' '.join(cmd)}` ({spec.workloads[0].name}, level {spec.level}, cost model "
             f"{spec.cost.power_model}{''.join(' --exclude-unit ' + u for u in spec.cost.exclude_units)}; {what}), "
             f"fresh result cache, synthesis cache warmed first ({len(seen)} block parameterisations, {warm_s:.0f} s, "
             "not counted). The load average is sampled every 30 s.", "",
             "| points done | wall (min) | points/min | 256 points at this rate (min) | per point, worker wall (s, median) | "
             "per point, worker CPU (s, median) | of which simulation CPU (s) | of which cost model CPU (s) | "
             "sweep's own CPU per point (median, % of its simulation) | page faults per point (median) | "
             "CPU of the command (s) | load at start | load during the run (1-min: mean, min-max) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
             f"| {n} | {wall / 60:.1f} | {rate:.2f} | {per256:.0f} | {med['t_total_s']:.1f} | "
             f"{med['t_cpu_s']:.2f} | {med['t_sim_cpu_s']:.2f} | {med['t_cost_cpu_s']:.2f} | {100 * own:+.2f} % | "
             f"{med['minflt']:,.0f} | {cpu:.0f} | {la} | {statistics.mean(loads):.1f}, {min(loads):.1f}-{max(loads):.1f} |", "",
             f"Goal: a warm-cache 256-point sweep in at most 45 minutes here: {per256:.0f} min at the measured rate "
             f"({'met' if per256 <= 45 else 'missed'}). The load average counts every runnable process of the host, "
             f"niced ones included; the workers' {med['t_cpu_s']:.1f} CPU-s per point against their "
             f"{med['t_total_s']:.1f} s wall per point ({100 * med['t_cpu_s'] / med['t_total_s']:.0f} %) say how much "
             f"of a core each had.{autogroup_note()}"]
    out.write_text(kept_section(out, big=False) + "\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="bitnet-tiny on vitallm, 8+8 tokens (checks the script)")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-cache run (minutes of yosys)")
    ap.add_argument("--big", nargs="?", type=Path, const=ROOT / "reports" / "sweep-vitallm" / "spec.toml", default=None,
                    metavar="SPEC", help="only a whole sweep on 2 workers (default: the committed 256-point example)")
    ap.add_argument("--minutes", type=float, default=None, help="with --big: stop the sweep after this long")
    ap.add_argument("--regenerate", action="store_true", help="with --big: the sweep writes the committed example "
                    "next to its spec (results, plots, HTML, summary with the folder's notes.md)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results-sweep.md")
    a = ap.parse_args()
    if a.big:
        big_run(a.out, a.big.resolve(), a.minutes, a.regenerate)
        return
    model, prefill, decode = ("bitnet-tiny", 8, 8) if a.quick else ("bitnet-b1.58-3b", 64, 128)
    n = a.points
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as td:
        tmp = Path(td)
        la = load()
        lone = [lowbit(["sim", "--model", model, "--hw", "vitallm", "--prefill", str(prefill), "--decode", str(decode),
                        "--set", "sram.weight.bytes=32768", "--quiet"]) for _ in range(2)]
        lone_wall, lone_cpu = min(w for w, _ in lone), min(c for _, c in lone)
        runs = [
            sweep(tmp, "serial-sim", spec(model, prefill, decode, n, False), ["--serial"]),
            sweep(tmp, "serial-energy", spec(model, prefill, decode, n, True), ["--serial"]),
            sweep(tmp, "dask-1-warm", spec(model, prefill, decode, n, True), ["--workers", "1"]),
            sweep(tmp, "dask-2-warm", spec(model, prefill, decode, n, True), ["--workers", "2"]),
        ]
        if not a.no_cold:
            runs.append(sweep(tmp, "dask-2-cold", spec(model, prefill, decode, n, True), ["--workers", "2"],
                              env={**os.environ, "LOWBIT_CACHE_DIR": str(tmp / "cold-cache-root")}))
    label = {"serial-sim": "`--serial`, level sim (1 simulation/point)",
             "serial-energy": "`--serial`, level energy (+ cost model on the same simulation)",
             "dask-1-warm": "LocalCluster, 1 worker, warm synthesis cache",
             "dask-2-warm": "LocalCluster, 2 workers, warm synthesis cache",
             "dask-2-cold": "LocalCluster, 2 workers, cold cache root (synthesis + activity of every vitallm block)"}
    lines = [
        "# `lowbit sweep` throughput", "",
        f"Generated by `python bench/bench_sweep.py{' --quick' if a.quick else ''} --points {n}` on {platform.machine()} "
        f"({os.cpu_count()} cores), Python {platform.python_version()}. Workload: {model}, {prefill}-token prefill + "
        f"{decode} decode tokens, around `vitallm`; {n} points per run (weight SRAM size varied: no RTL changes). Each run "
        "is a `lowbit` command in a subprocess with a fresh result cache (start-up included). Wall times depend on the "
        "load average of the host (1/5/15 min, at the start of each run); other jobs shared the 2 cores.", "",
        f"Lone `lowbit sim` of one point (best of 2): **{lone_wall:.1f} s wall, {lone_cpu:.1f} s CPU** (load {la}).", "",
        "| run | points | wall (s) | points/min | per point, worker wall (s) | per point, worker CPU (s) | "
        "of which simulation CPU (s) | of which cost model CPU (s) | sweep's own CPU per point (median, s and % of "
        "its simulation) | page faults per point (median) | per point CPU vs lone `lowbit sim` CPU | "
        "CPU of the command (s) | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(f"| {label[r['name']]} | {r['points']} | {r['wall']:.1f} | {r['per_min']:.2f} | {r['t_total']:.1f} | "
                     f"{r['cpu_pt']:.2f} | {r['sim_cpu_pt']:.2f} | {r['cost_pt']:.2f} | "
                     f"{r['own_s']:.3f} s, {100 * r['own']:+.2f} % | "
                     f"{r['faults']:,.0f} | {100 * (r['cpu_pt'] / lone_cpu - 1):+.0f} % | {r['cpu']:.0f} | {r['load']} |")
    s, e = runs[0], runs[1]
    first = ", ".join(f"{r['rate'][0]:.4f}" for r in runs)
    serial_faults = runs[0]["faults"]
    dask_runs = [r for r in runs if r["name"].startswith("dask")]
    lines += ["", "Reading the table:", "",
              f"- The sweep's own CPU per point, read point by point within each run (worker CPU of the point minus "
              f"its simulation's and its cost model's: config, bookkeeping): level sim {s['own_s']:.3f} s "
              f"({100 * s['own']:+.2f} %), level energy {e['own_s']:.3f} s ({100 * e['own']:+.2f} %).",
              f"- The cost model (level energy: `lowbit report`'s full-chip HwCost from the synthesis cache, then decode "
              f"energy from the simulation's activity minus its prefill-end snapshot, no second simulation) adds "
              f"{e['cost_pt']:.2f} s CPU per point, work `lowbit report` does too; the level-energy simulation also "
              "keeps the per-op breakdown the SFU datapaths are charged by.",
              f"- Page faults per point: {serial_faults:,.0f} in a plain process (`--serial`), "
              + ", ".join(f"{r['faults']:,.0f} on {label[r['name']].split(',')[1].strip()}" for r in dask_runs)
              + " (LocalCluster workers run with glibc's own malloc thresholds and one arena: lowbit.explore.execute."
              "worker_environ).",
              f"- CPU per point differs between runs of the same simulation by up to {100 * (max(r['sim_cpu_pt'] for r in runs) / min(r['sim_cpu_pt'] for r in runs) - 1):.0f} % "
              "here (the simulation CPU column): the load of the shared host (caches, memory bandwidth), so rows are "
              "compared only at similar load, and the overhead above is read within a run.",
              f"- A lone `lowbit sim` spends {lone_cpu:.1f} s CPU, its start-up (imports, numba cache load) included, "
              "which a sweep pays once per worker.",
              "- Points per minute with 2 workers vs 1 show how the 2 cores are shared with whatever else runs (see the "
              "load column); the cold run adds the one-off synthesis of vitallm's RTL blocks, after which every further "
              "point with the same blocks reuses it.",
              f"- Decode tokens/s of the first point in every run: {first} (identical: the sweep changes no number)."]
    warm = next(r for r in runs if r["name"] == "dask-2-warm")
    minutes = 256 / warm["per_min"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "missed"

    worst = max(r["own"] for r in runs)
    lines += ["", "Goals:", "",
              f"- At most 10 % per point over a lone `lowbit sim`: the sweep's own CPU is at most {100 * worst:+.2f} % "
              f"of a point's simulation in every run ({verdict(worst <= 0.10)}); per point the worker spends "
              f"{100 * (warm['cpu_pt'] / lone_cpu - 1):+.0f} % of a lone `lowbit sim`'s CPU (2 workers).",
              f"- A warm-cache 256-point sweep in at most 45 minutes: {warm['per_min']:.2f} points/min with 2 workers "
              f"over {warm['points']} points at load {warm['load']} would take {minutes:.0f} min; the real 256-point "
              "scale run is the next section (`--big`)."]
    a.out.write_text("\n".join(lines) + "\n\n" + kept_section(a.out, big=True))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
