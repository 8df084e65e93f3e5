"""Running a sweep on Dask distributed: a LocalCluster on all cores by default, or a running cluster
(`scheduler="tcp://HOST:8786"`); `serial=True` evaluates in this process (tests, benchmarks).

Per batch of points (the whole sweep for grid and random, one generation for NSGA-II):
1. resolve each point's config on the client; an invalid combination is recorded as infeasible at once;
2. look each point up in the result cache (lowbit.explore.store): hits are not recomputed;
3. submit one synthesis task per distinct RTL block parameterisation the missing points need (level
   area/energy; lowbit.explore.evaluate.synthesis_jobs), then one task per missing point, run after its
   blocks' tasks (which fill the RTL flow's on-disk caches the point's cost model reads);
4. as results arrive, store them in the cache (client side, atomically) and advance the progress bar.
A worker that dies has its tasks rescheduled by the Dask scheduler (up to its allowed-failures, default 3);
a point whose task still fails is recorded as failed with the reason, and is not cached, so a re-run
retries it. Constraints are applied on the client, after the cache, so changing them needs no recompute.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lowbit.explore.evaluate import Point, evaluate, point_key, resolve, synthesis_jobs, synthesise
from lowbit.explore.spec import OBJECTIVES, Constraint, Param, SweepSpec, grid_points
from lowbit.explore.store import ResultCache
from lowbit.sim.config import HwConfig, to_dict
from lowbit.sim.errors import LowbitError


@dataclass
class RunStats:
    total: int = 0
    cached: int = 0
    computed: int = 0
    failed: int = 0
    infeasible: int = 0
    blocks: int = 0         # RTL block parameterisations handed to synthesis (cache hits of the RTL flow included)
    wall_s: float = 0.0
    dashboard: str = ""
    workers: int = 0


@dataclass
class Runner:
    """Evaluates batches of points with the result cache in front; `progress(done, total, failed)`."""

    spec: SweepSpec
    cache: ResultCache
    client: Any = None                  # a dask.distributed.Client, or None: in this process
    progress: Callable[[int, int, int], None] | None = None
    stats: RunStats = field(default_factory=RunStats)
    base: HwConfig | None = None
    blocks: dict[str, Any] = field(default_factory=dict)  # synthesis key -> block name (serial) or its future
    # (Dask), kept across batches (NSGA-II generations) so that each parameterisation is synthesised once per sweep

    def __post_init__(self) -> None:
        self.base = self.spec.base_config()

    def evaluate(self, points: list[Point]) -> list[dict[str, Any]]:
        level = self.spec.level
        records: dict[int, dict[str, Any]] = {}
        todo: dict[str, tuple[Point, HwConfig, list[int]]] = {}
        for p in points:
            try:
                cfg = resolve(self.base, p)
            except LowbitError as e:
                records[p.index] = {"status": "infeasible", "reason": str(e), "cached": False, "key": ""}
                continue
            key = point_key(cfg, p, level, self.spec.cost)
            hit = self.cache.get(key)
            if hit is not None:
                records[p.index] = {**hit, "cached": True, "key": key}
            elif key in todo:
                todo[key][2].append(p.index)  # the same design twice (random sampling): computed once
            else:
                todo[key] = (p, cfg, [p.index])
        self.stats.total += len(points)
        self.stats.cached += sum(1 for r in records.values() if r.get("cached"))
        done = len(records)
        failed = 0
        self._tick(done, len(points), failed)
        for key, rec in self._compute(todo, level):
            if rec["status"] != "failed":
                self.cache.put(key, rec)
                self.stats.computed += 1
            else:
                failed += 1
                self.stats.failed += 1
            for i in todo[key][2]:
                records[i] = {**rec, "cached": False, "key": key}
                done += 1
            self._tick(done, len(points), failed)
        out = []
        for p in points:
            r = apply_constraints(dict(records[p.index]), self.spec.constraints)
            self.stats.infeasible += r["status"] == "infeasible"
            out.append({"point": p.index, "workload": p.workload.name, "values": p.values, **r})
        return out

    def _tick(self, done: int, total: int, failed: int) -> None:
        if self.progress is not None:
            self.progress(done, total, failed)

    def _compute(self, todo: dict[str, tuple[Point, HwConfig, list[int]]], level: str) -> Iterator[tuple[str, dict]]:
        need_blocks = level != "sim"
        cost = self.spec.cost
        if self.client is None:
            for key, (p, cfg, _) in todo.items():
                try:
                    for bk, b in (synthesis_jobs(cfg, cost).items() if need_blocks else ()):
                        if bk not in self.blocks:
                            self.blocks[bk] = synthesise(to_dict(cfg), b, cost)
                            self.stats.blocks += 1
                    yield key, evaluate(to_dict(cfg), p, level, cost)
                except Exception as e:  # noqa: BLE001 -- any failure of one point is recorded, the sweep goes on
                    yield key, failure(e)
            return
        from dask.distributed import as_completed

        block_futs: dict[str, Any] = self.blocks
        futs = {}
        for key, (p, cfg, _) in todo.items():
            after = []
            if need_blocks:
                for bk, b in synthesis_jobs(cfg, cost).items():
                    if bk not in block_futs:
                        block_futs[bk] = self.client.submit(synthesise, to_dict(cfg), b, cost, key=f"synth-{bk}",
                                                            pure=False)
                        self.stats.blocks += 1
                    after.append(block_futs[bk])
            fut = self.client.submit(evaluate, to_dict(cfg), p, level, cost, after, key=f"point-{key}", pure=False)
            futs[fut] = key
        for fut in as_completed(list(futs)):
            key = futs[fut]
            try:
                rec = fut.result()
            except Exception as e:  # noqa: BLE001 -- KilledWorker, a synthesis error, ...
                rec = failure(e)
            fut.release()
            yield key, rec


def failure(e: BaseException) -> dict[str, Any]:
    name = type(e).__name__
    msg = str(e).splitlines()[0] if str(e) else ""
    if name == "KilledWorker":
        msg = "the workers running it died repeatedly (Dask KilledWorker); " + msg
    return {"status": "failed", "reason": f"{name}: {msg}"[:500]}


def apply_constraints(rec: dict[str, Any], constraints: tuple[Constraint, ...]) -> dict[str, Any]:
    if rec["status"] != "ok":
        return rec
    broken = [f"{c} violated ({c.metric} = {rec.get(c.metric):.4g})" if rec.get(c.metric) is not None
              else f"{c}: {c.metric} not computed" for c in constraints if not c.holds(rec.get(c.metric))]
    if broken:
        rec.update(status="infeasible", reason="; ".join(broken))
    return rec


# ----------------------------------------------------------------------------- strategies


def _sample(p: Param, rng: np.random.Generator) -> Any:
    if p.values:
        return p.values[int(rng.integers(len(p.values)))]
    if p.step:
        g = p.grid()
        return g[int(rng.integers(len(g)))]
    assert p.lo is not None and p.hi is not None
    x = math.exp(rng.uniform(math.log(p.lo), math.log(p.hi))) if p.log else rng.uniform(p.lo, p.hi)
    return int(round(x)) if p.integer else float(x)


def points_of(spec: SweepSpec) -> list[Point]:
    """The points of a grid or random sweep, every parameter combination on every workload."""
    if spec.strategy == "grid":
        combos = grid_points(spec)
    else:
        rng = np.random.default_rng(spec.seed)
        combos = [{p.path: _sample(p, rng) for p in spec.params} for _ in range(spec.samples)]
    return [Point(i * len(spec.workloads) + j, c, w) for i, c in enumerate(combos) for j, w in enumerate(spec.workloads)]


def run_nsga2(spec: SweepSpec, runner: Runner) -> list[dict[str, Any]]:
    """Optuna's NSGA-II (multi-objective, constrained): one generation of `population` points per batch."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {p.path: _distribution(p) for p in spec.params}
    modern = hasattr(optuna.trial.Trial, "set_constraint")  # Optuna >= 5: constraints live on the trial
    sampler = optuna.samplers.NSGAIISampler(
        population_size=spec.population, seed=spec.seed,
        **({} if modern else {"constraints_func": lambda t: t.user_attrs.get("constraints", [0.0])}))
    study = optuna.create_study(directions=["maximize" if OBJECTIVES[o].sense == "max" else "minimize"
                                            for o in spec.objectives], sampler=sampler)
    out: list[dict[str, Any]] = []
    while len(out) < spec.samples:
        trials = [study.ask(dists) for _ in range(min(spec.population, spec.samples - len(out)))]
        points = [Point(len(out) + i, {p.path: _from_trial(p, t.params[p.path]) for p in spec.params}, spec.workloads[0])
                  for i, t in enumerate(trials)]
        for t, rec in zip(trials, runner.evaluate(points), strict=True):
            values = [rec.get(o) for o in spec.objectives]
            if any(v is None for v in values):  # failed, or an invalid design: no metrics to learn from
                study.tell(t, state=optuna.trial.TrialState.FAIL)
            else:
                violations = [_violation(c, rec.get(c.metric)) for c in spec.constraints]
                if modern:
                    for c, v in zip(spec.constraints, violations, strict=True):
                        t.set_constraint(str(c), v)
                else:
                    t.set_user_attr("constraints", violations or [0.0])
                study.tell(t, values)
            out.append(rec)
    return out


def _distribution(p: Param):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if p.values:
        return CategoricalDistribution(list(range(len(p.values))))  # indices: values may be lists
    if p.integer:
        return IntDistribution(int(p.lo), int(p.hi), log=p.log, step=int(p.step or 1))
    return FloatDistribution(float(p.lo), float(p.hi), log=p.log, step=p.step)


def _from_trial(p: Param, v: Any) -> Any:
    return p.values[v] if p.values else v


def _violation(c: Constraint, v: float | None) -> float:
    """Optuna's convention: <= 0 feasible, > 0 by how much it is violated."""
    if v is None:
        return 1.0
    if c.op in ("<=", "<"):
        return v - c.bound if not c.holds(v) or c.op == "<=" else -1.0
    if c.op in (">=", ">"):
        return c.bound - v if not c.holds(v) or c.op == ">=" else -1.0
    return abs(v - c.bound)


# ----------------------------------------------------------------------------- the cluster


def connect(scheduler: str | None, workers: int | None, dashboard: bool = True):
    """(client, cluster or None): a running scheduler, or a LocalCluster of `workers` one-thread processes."""
    import logging
    import os

    import dask
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="10s"), None
        except OSError as e:
            raise LowbitError(f"--scheduler {scheduler}: cannot connect ({e}); start one with `dask scheduler` "
                              "and workers with `dask worker SCHEDULER` (docs/sweep.md)") from None
    n = workers or os.cpu_count() or 1
    with warnings.catch_warnings(), dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environ()}):
        # "port 8787 is in use, hosting on another": the address in use is printed
        warnings.filterwarnings("ignore", message="Port .* is already in use", category=UserWarning)
        # a point's failure reaches the client as its future's exception (one line); the workers' own logs would
        # only add a heartbeat traceback when an interrupted sweep tears the cluster down under them
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, silence_logs=logging.CRITICAL,
                               dashboard_address=":8787" if dashboard else None, preload=[__name__])
    return Client(cluster), cluster


def worker_environ() -> dict[str, Any]:
    """Environment of the LocalCluster's worker processes: Dask's defaults without MALLOC_TRIM_THRESHOLD_, plus
    MALLOC_ARENA_MAX=1. A point runs in the worker's executor thread; with a fixed trim threshold (which also
    turns off glibc's dynamic mmap threshold) and a per-thread arena, the simulator's short-lived arrays were
    returned to the kernel and faulted in again: 10-40x the page faults of the same simulation in a plain
    process (bench/results-sweep.md). With one arena and glibc's own thresholds a point faults as in `lowbit sim`."""
    import dask

    env = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
           if k != "MALLOC_TRIM_THRESHOLD_"}
    return {**env, "MALLOC_ARENA_MAX": 1}


def dask_setup(worker: Any) -> None:
    """Preload of the LocalCluster's worker processes: they ignore SIGINT. Ctrl-C in a terminal reaches the
    whole foreground process group; the client alone handles it and then closes the cluster in order (the
    workers would otherwise die mid-task, each printing a traceback, while the nannies restart them)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():  # the worker's event loop runs in its main thread
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def run(spec: SweepSpec, *, scheduler: str | None = None, workers: int | None = None, serial: bool = False,
        cache: ResultCache | None = None, progress: Callable[[int, int, int], None] | None = None,
        on_start: Callable[[RunStats], None] | None = None) -> tuple[list[dict[str, Any]], RunStats]:
    """Evaluate every point of the sweep; returns (records in point order, stats)."""
    t0 = time.perf_counter()
    client = cluster = None
    if not serial:
        client, cluster = connect(scheduler, workers)
    try:
        runner = Runner(spec, cache if cache is not None else ResultCache(), client, progress)
        if client is not None:
            runner.stats.dashboard = client.dashboard_link or ""
            runner.stats.workers = len(client.scheduler_info().get("workers", {}))
        if on_start is not None:
            on_start(runner.stats)
        try:
            records = run_nsga2(spec, runner) if spec.strategy == "nsga2" else runner.evaluate(points_of(spec))
        except OSError as e:  # the scheduler went away (CommClosedError is an OSError)
            if client is None:
                raise
            raise LowbitError(f"lost the Dask scheduler ({type(e).__name__}: {e}); the {runner.stats.computed} points "
                              "received are in the result cache: run the same command again to resume") from None
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    runner.stats.wall_s = time.perf_counter() - t0
    return records, runner.stats


__all__ = ["run", "Runner", "RunStats", "points_of", "apply_constraints", "failure"]
