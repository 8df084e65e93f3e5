"""One design point: resolve its config, simulate it, cost it. Runs on a Dask worker (or in-process).

A point is the base design plus `--set` overrides (lowbit.sim.config.apply_sets) and run options
(schedule, weights) on one workload. What it computes depends on the sweep's level:

    sim     one simulation (prefill + decode): decode tokens/s, prefill latency, cycles
    area    + the design's area (lowbit.cost.energy.HwCost from the synthesised RTL blocks)
    energy  + the cost model on the same simulation: decode activity = activity - prefill_activity (the
            engine's snapshot at the end of prefill), exactly as `lowbit report` (lowbit.cost.report.evaluate)
            does: decode core power, energy/token incl. DRAM, TOPS/mm²/W

Synthesis is per RTL block parameterisation (`block_key`): the sweep synthesises each distinct one once
as its own task (`block_cost`, which also fills the RTL flow's caches) and hands the result to every point
that uses it, so a thousand points with the same TINT core synthesise it once, and workers need no shared
disk. `point_key` hashes what a result depends on: the resolved config (its name and description aside),
the workload, the run options, the level and the lowbit code version.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import resource
import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lowbit
from lowbit.explore.spec import RUN_PARAMS, SweepSpec, Workload, format_value
from lowbit.sim.config import HwConfig, apply_sets, from_dict, to_dict
from lowbit.sim.errors import LowbitError

METRICS = ("decode_tok_s", "throughput_tok_s", "prefill_latency_s", "cycles", "area_mm2", "decode_power_mw",
           "energy_per_token_mj", "tops_per_mm2_w")


@dataclass(frozen=True)
class Point:
    """One design point of a sweep: parameter values on one workload."""

    index: int
    values: dict[str, Any]
    workload: Workload

    def sets(self) -> list[str]:
        return [f"{k}={format_value(v)}" for k, v in self.values.items() if k not in RUN_PARAMS]

    def option(self, name: str) -> Any:
        return self.values.get(name)


@dataclass(frozen=True)
class BlockCost:
    """What the cost model needs from one synthesised RTL block: cells, sky130 area, switching activity."""

    cells: dict[str, int]
    area_um2: float
    activity: float | None


@functools.cache
def code_version() -> str:
    """lowbit's version plus a digest of the sources that decide a point's numbers (simulator, RTL, cost,
    this module), so that a result cache never serves numbers an edited checkout would not reproduce."""
    root = Path(lowbit.__file__).parent
    h = hashlib.sha256()
    files = [p for d in ("sim", "rtl", "cost") for p in sorted((root / d).rglob("*")) if p.suffix in (".py", ".toml")]
    for p in [*files, Path(__file__)]:
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return f"{lowbit.__version__}+{h.hexdigest()[:12]}"


def resolve(base: HwConfig, point: Point) -> HwConfig:
    """The point's config (LowbitError if the combination is invalid)."""
    return apply_sets(base, point.sets())


def point_key(cfg: HwConfig, point: Point, level: str) -> str:
    hw = {k: v for k, v in to_dict(cfg).items() if k not in ("name", "description")}
    run = {k: point.option(k) for k in RUN_PARAMS}
    blob = json.dumps({"hw": hw, "workload": asdict(point.workload), "run": run, "level": level,
                       "version": code_version()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def block_keys(cfg: HwConfig) -> dict[str, str]:
    """RTL block -> key of its parameterisation (the section fields the RTL depends on)."""
    from lowbit.rtl.registry import get_unit, units_for

    out = {}
    for b in units_for(cfg):
        u = get_unit(b)
        params = json.dumps(to_dict(u.parameters(u.section_cfg(cfg))), sort_keys=True)
        out[b] = f"{b}-" + hashlib.sha256(params.encode()).hexdigest()[:16]
    return out


def block_cost(cfg_data: dict[str, Any], block: str) -> BlockCost:
    """Synthesise one RTL block of a design and measure its activity (both cached by the RTL flow)."""
    from lowbit.rtl.activity import unit_activity
    from lowbit.rtl.synth import synth_unit

    cfg = from_dict(cfg_data, source="sweep")
    r = synth_unit(cfg, block)
    return BlockCost(dict(r.cells), r.area_um2, unit_activity(cfg, block))


def hw_cost(cfg: HwConfig, blocks: dict[str, BlockCost]):
    """The design's HwCost from its blocks' synthesis results: lowbit.cost.energy.build_hw_cost without the
    synthesis (tests/explore checks the two agree)."""
    from lowbit.cost.energy import hw_cost as assemble
    from lowbit.cost.energy import unit_cost
    from lowbit.rtl.liberty import library_cells
    from lowbit.rtl.registry import get_unit, units_for
    from lowbit.rtl.synth import instances

    caps = {c: i.gate_cap_f for c, i in library_cells().items()}
    names = units_for(cfg)
    covered = {get_unit(b).hw_unit for b in names}
    costs = [unit_cost(cfg, u, None, caps, 1, None, note="the unit catalogue has no RTL for it")
             for u in cfg.units if u not in covered]
    for b in names:
        c = blocks[b]
        costs.append(unit_cost(cfg, b, c.cells, caps, instances(cfg, b), c.activity, c.area_um2, get_unit(b).block.scope))
    return assemble(cfg, costs)


def evaluate(cfg_data: dict[str, Any], point: Point, level: str,
             blocks: dict[str, BlockCost] | None = None) -> dict[str, Any]:
    """Metrics of one point (see module docstring). A LowbitError (a tile that does not fit, a bad
    combination) makes the point infeasible, with the error as its reason; other exceptions propagate."""
    t0, c0, f0 = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    out: dict[str, Any] = {"status": "ok", "reason": "", "worker": f"{os.uname().nodename}:{os.getpid()}"}
    try:
        out.update(_metrics(from_dict(cfg_data, source="sweep"), point, level, blocks or {}, out))
    except LowbitError as e:
        out.update(status="infeasible", reason=str(e))
    out["t_total_s"] = time.perf_counter() - t0
    out["t_cpu_s"] = time.process_time() - c0  # this worker process's CPU (one task at a time): load-independent
    out["minflt"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0  # page faults: memory churn
    return out


def _metrics(cfg: HwConfig, point: Point, level: str, blocks: dict[str, BlockCost], timing: dict) -> dict[str, Any]:
    from lowbit.sim.engine import simulate

    w = point.workload
    schedule = point.option("schedule") or "dependency-aware"
    t, c = time.perf_counter(), time.process_time()
    full = simulate(cfg, workload_trace(cfg, w, point.option("weights")), schedule=schedule)
    timing["t_sim_s"], timing["t_sim_cpu_s"] = time.perf_counter() - t, time.process_time() - c
    m: dict[str, Any] = {"decode_tok_s": full.decode_tokens_per_s, "throughput_tok_s": full.throughput_tokens_per_s,
                         "prefill_latency_s": full.prefill_latency_s, "cycles": full.cycles}
    if level == "sim":
        return m
    t = time.perf_counter()
    hw = hw_cost(cfg, blocks)
    m["area_mm2"] = hw.area_mm2
    if level == "energy" and w.decode:
        from lowbit.cost.energy import phase_energy, subtract_activity
        from lowbit.cost.report import DesignResult, _macs

        act, pe = full.activity, None
        if w.prefill:  # the engine's activity snapshot at the end of prefill, as `lowbit report` uses it
            pre = full.prefill_activity
            pe = phase_energy(hw, cfg, pre, w.prefill * w.batch, full.prefill_cycles / cfg.clock_hz)
            act = subtract_activity(full.activity, pre)
        de = phase_energy(hw, cfg, act, w.decode * w.batch, full.decode_cycles / cfg.clock_hz)
        r = DesignResult(cfg, hw, full.to_dict(), pe, de, _macs(act), w.model)
        m.update(decode_power_mw=r.power_w * 1e3, energy_per_token_mj=de.total_j / de.tokens * 1e3,
                 tops_per_mm2_w=r.fom)
    timing["t_cost_s"] = time.perf_counter() - t
    return m


def workload_trace(cfg: HwConfig, w: Workload, weights: str | None):
    """The trace `lowbit sim --model M --prefill P --decode D [--batch B --cached C,...] [--weights W]` builds."""
    from lowbit.sim.modelspec import get_model
    from lowbit.sim.workloads import batch_from_options, deployed_format, standard_trace

    m = get_model(w.model)
    tr = standard_trace(m, w.prefill, w.decode, deployed_format(cfg, m, weights))
    if w.batch > 1 or w.context:
        tr = batch_from_options(tr, False, w.batch, [w.context] * w.batch if w.context else None)
    return tr


def rerun_command(spec: SweepSpec, point: Point) -> str:
    """The `lowbit sim` line that re-runs this point alone (same decode tokens/s and prefill latency)."""
    w = point.workload
    args = ["lowbit", "sim", "--model", w.model, "--hw", spec.base_path, "--prefill", str(w.prefill),
            "--decode", str(w.decode)]
    if w.context:
        args += ["--cached", ",".join([str(w.context)] * w.batch)]
    elif w.batch > 1:
        args += ["--batch", str(w.batch)]
    for opt in RUN_PARAMS:
        if point.option(opt) is not None:
            args += [f"--{opt}", str(point.option(opt))]
    for s in point.sets():
        args += ["--set", s]
    return shlex.join(args)
