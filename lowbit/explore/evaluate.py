"""One design point: resolve its config, simulate it, cost it. Runs on a Dask worker (or in-process).

A point is the base design plus `--set` overrides (lowbit.sim.config.apply_sets) and run options
(schedule, weights) on one workload. What it computes depends on the sweep's level:

    sim     one simulation (prefill + decode): decode tokens/s, prefill latency, cycles
    area    + the design's full-chip area: lowbit.cost.energy.build_hw_cost, the function `lowbit report`
            uses, with the spec's cost options (CostOptions: power model, control, excluded units)
    energy  + the cost model on the same simulation: lowbit.cost.report.evaluate_trace, the function
            `lowbit report` turns its simulation into decode core power, energy/token incl. DRAM and
            TOPS/mm²/W with; a point's numbers are the report's numbers for that design and workload

Synthesis is per RTL block parameterisation (`synthesis_jobs`): the sweep runs each distinct one once as its
own task (`synthesise`, which fills the RTL flow's on-disk caches) before the points that need it, so a
thousand points with the same TINT core synthesise it once per machine. With the Liberty model a block's
netlist is timing-driven at the design's clock (lowbit.cost.power.target_ps): a clock is a new synthesis of
every block. `point_key` hashes what a result depends on: the resolved config (its name and description
aside), the workload, the run options, the level, the cost options and the lowbit code version.
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
from lowbit.explore.spec import RUN_PARAMS, CostOptions, SweepSpec, Workload, format_value
from lowbit.sim.config import HwConfig, apply_sets, from_dict, to_dict
from lowbit.sim.errors import LowbitError

METRICS = ("decode_tok_s", "throughput_tok_s", "prefill_latency_s", "cycles", "area_mm2", "decode_power_mw",
           "energy_per_token_mj", "tops_per_mm2_w")
CONTROL = "control"  # the synthesis job of the control/DMA estimate (lowbit.cost.control)


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


def point_key(cfg: HwConfig, point: Point, level: str, cost: CostOptions = CostOptions()) -> str:
    hw = {k: v for k, v in to_dict(cfg).items() if k not in ("name", "description")}
    run = {k: point.option(k) for k in RUN_PARAMS}
    blob = json.dumps({"hw": hw, "workload": asdict(point.workload), "run": run, "level": level,
                       "cost": asdict(cost) if level != "sim" else None, "version": code_version()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _liberty(cost: CostOptions) -> bool:
    return cost.power_model == "liberty"


def synthesis_jobs(cfg: HwConfig, cost: CostOptions = CostOptions()) -> dict[str, str]:
    """Key of one synthesis parameterisation -> the RTL block (or CONTROL) that build_hw_cost synthesises for
    this design: the block's parameters (the section fields its RTL depends on) and, with the Liberty model,
    the timing target; the control estimate by its shape. Excluded blocks are not synthesised."""
    from lowbit.rtl.registry import get_unit, units_for

    blocks = units_for(cfg)
    tgt = ""
    if _liberty(cost):
        from lowbit.cost.power import SFU_OP_BLOCKS, target_ps

        if "sfu" in blocks:
            blocks += [b for b in SFU_OP_BLOCKS if b not in blocks]
        tgt = repr(target_ps(cfg))
    out = {}
    for b in blocks:
        if b in cost.exclude_units:
            continue
        u = get_unit(b)
        params = json.dumps(to_dict(u.parameters(u.section_cfg(cfg))), sort_keys=True)
        out[f"{b}-" + hashlib.sha256(f"{params}\0{tgt}".encode()).hexdigest()[:16]] = b
    if _liberty(cost) and cost.control == "estimate":
        from lowbit.cost.control import control_shape

        out[f"{CONTROL}-" + hashlib.sha256(f"{control_shape(cfg)}\0{tgt}".encode()).hexdigest()[:16]] = CONTROL
    return out


def block_keys(cfg: HwConfig, cost: CostOptions = CostOptions(power_model="netlist")) -> dict[str, str]:
    """RTL block -> key of its synthesis parameterisation (synthesis_jobs by block)."""
    return {b: k for k, b in synthesis_jobs(cfg, cost).items()}


def synthesise(cfg_data: dict[str, Any], block: str, cost: CostOptions = CostOptions()) -> str:
    """Synthesise one RTL block (or the control estimate) of a design as build_hw_cost will ask for it and
    measure its switching activity; both land in the RTL flow's caches. Returns the block's name."""
    from lowbit.rtl.activity import unit_activity
    from lowbit.rtl.synth import synth_unit

    cfg = from_dict(cfg_data, source="sweep")
    if not _liberty(cost):
        synth_unit(cfg, block)
        unit_activity(cfg, block)
        return block
    from lowbit.cost.power import target_ps
    from lowbit.rtl.characterize import characterised_liberty

    characterised_liberty()
    if block == CONTROL:
        from lowbit.cost.control import control_activity, control_shape, synth_control

        synth_control(cfg, target_ps(cfg))
        control_activity(control_shape(cfg))
    else:
        synth_unit(cfg, block, liberty="characterised", target_ps=target_ps(cfg))
        unit_activity(cfg, block)
    return block


def design_cost(cfg: HwConfig, cost: CostOptions = CostOptions()):
    """The design's HwCost exactly as `lowbit report` builds it (lowbit.cost.energy.build_hw_cost)."""
    from lowbit.cost.energy import build_hw_cost

    opts = {"power_model": cost.power_model, "control": cost.control} if _liberty(cost) else {}
    return build_hw_cost(cfg, exclude=cost.exclude_units, **opts)


def evaluate(cfg_data: dict[str, Any], point: Point, level: str, cost: CostOptions = CostOptions(),
             after: Any = None) -> dict[str, Any]:
    """Metrics of one point (see module docstring). A LowbitError (a tile that does not fit, a bad
    combination) makes the point infeasible, with the error as its reason; other exceptions propagate.
    `after`: the synthesis tasks this point waits for (Dask passes their results; unused)."""
    t0, c0, f0 = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    out: dict[str, Any] = {"status": "ok", "reason": "", "worker": f"{os.uname().nodename}:{os.getpid()}"}
    try:
        out.update(_metrics(from_dict(cfg_data, source="sweep"), point, level, cost, out))
    except LowbitError as e:
        out.update(status="infeasible", reason=str(e))
    out["t_total_s"] = time.perf_counter() - t0
    out["t_cpu_s"] = time.process_time() - c0  # this worker process's CPU (one task at a time): load-independent
    out["minflt"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0  # page faults: memory churn
    return out


def _metrics(cfg: HwConfig, point: Point, level: str, cost: CostOptions, timing: dict) -> dict[str, Any]:
    from lowbit.sim.engine import simulate

    w = point.workload
    schedule = point.option("schedule") or "dependency-aware"
    tr = workload_trace(cfg, w, point.option("weights"))

    def timed(*args, **kw):
        t, c = time.perf_counter(), time.process_time()
        r = simulate(*args, **kw)
        timing["t_sim_s"], timing["t_sim_cpu_s"] = time.perf_counter() - t, time.process_time() - c
        return r

    if level == "sim":
        full = timed(cfg, tr, schedule=schedule)
        return {"decode_tok_s": full.decode_tokens_per_s, "throughput_tok_s": full.throughput_tokens_per_s,
                "prefill_latency_s": full.prefill_latency_s, "cycles": full.cycles}
    from lowbit.cost.report import evaluate_trace

    t, c = time.perf_counter(), time.process_time()
    hw = design_cost(cfg, cost)
    timing["t_cost_s"], timing["t_cost_cpu_s"] = time.perf_counter() - t, time.process_time() - c
    m: dict[str, Any] = {"area_mm2": hw.area_mm2}
    if level == "area":
        full = timed(cfg, tr, schedule=schedule)
        return {"decode_tok_s": full.decode_tokens_per_s, "throughput_tok_s": full.throughput_tokens_per_s,
                "prefill_latency_s": full.prefill_latency_s, "cycles": full.cycles, **m}
    r = evaluate_trace(cfg, hw, tr, w.model, w.prefill * w.batch, w.decode * w.batch, timed, schedule)
    s = r.sim
    m.update(decode_tok_s=s["decode_tokens_per_s"], throughput_tok_s=s["throughput_tokens_per_s"],
             prefill_latency_s=s["prefill_latency_s"], cycles=s["cycles"])
    if r.decode is not None:  # the report's power_mw, energy_per_token_with_dram_j and fom_tops_per_mm2_w
        m.update(decode_power_mw=r.power_w * 1e3, energy_per_token_mj=r.decode.total_j / r.decode.tokens * 1e3,
                 tops_per_mm2_w=r.fom)
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
