"""Sweep specification (TOML): a base design, the parameters to vary, workloads, objectives, constraints and
a search strategy. Validated like a hardware config: any mistake is one `SpecError` line naming the file,
the key, the value and what is allowed.

    [sweep]
    base = "vitallm"                 # a preset or a .toml path (relative to this file)
    strategy = "grid"                # grid | random | nsga2
    samples = 200                    # random, nsga2: number of points (nsga2: trials)
    population = 16                  # nsga2: points per generation
    seed = 0
    objectives = ["decode_tok_s", "area_mm2", "energy_per_token_mj"]
    constraints = ["area_mm2 <= 0.5"]
    power_model = "liberty"          # the cost model, as `lowbit report --power-model` (liberty | netlist)
    control = "estimate"             # liberty: as `lowbit report --control` (estimate | chip)
    exclude_units = ["sfu_rmsnorm"]  # as `lowbit report --exclude-unit`: left out of area and energy, flagged

    [workload]                       # or [[workload]] tables, each a dimension of the sweep
    model = "bitnet-b1.58-3b"
    prefill = 64
    decode = 128

    [params]                         # a config field (dotted, as `--set`) or a run option
    "tint.cores" = [1, 2, 3]                      # choices: a list (the grid's values)
    "sram.kv.bytes" = { range = [8192, 65536], step = 8192 }   # range with a step: a lattice
    clock_hz = { range = [5e8, 1.5e9], log = true }            # continuous range: random / nsga2 only
    schedule = ["inorder", "dependency-aware"]    # run options: schedule, weights

    batch = 8                        # optional: sequences decoded together (weights fetched once per step)
    context = 2048                   # optional: tokens already in each sequence's KV cache

`model` is anything `lowbit sim --model` takes: a built-in shape, a shipped config.json preset, or a
config.json path (relative to this file). Objectives have a fixed sense (OBJECTIVES).
"""

from __future__ import annotations

import itertools
import math
import operator
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lowbit.sim.config import HwConfig, load_config, set_field, to_dict
from lowbit.sim.errors import LowbitError, did_you_mean
from lowbit.sim.lower import POLICIES
from lowbit.sim.modelspec import WEIGHT_FORMATS, get_model
from lowbit.sim.schema import Range, as_float, as_int


class SpecError(LowbitError):
    """A sweep specification is invalid."""


@dataclass(frozen=True)
class Objective:
    name: str
    sense: str          # "max" or "min"
    label: str
    level: str          # what a point must compute for it: sim < area < energy
    scale: float = 1.0  # record value -> display value


# Each objective, its sense, and the evaluation level it needs (lowbit.explore.evaluate).
OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Objective("decode_tok_s", "max", "decode tokens/s", "sim"),
    Objective("throughput_tok_s", "max", "decode throughput, all sequences (tokens/s)", "sim"),
    Objective("prefill_latency_s", "min", "prefill latency (s)", "sim"),
    Objective("area_mm2", "min", "area (mm²)", "area"),
    Objective("decode_power_mw", "min", "decode core power (mW, DRAM excluded)", "energy"),
    Objective("energy_per_token_mj", "min", "decode energy/token incl. DRAM (mJ)", "energy"),
    Objective("tops_per_mm2_w", "max", "TOPS/mm²/W (decode, core power)", "energy"),
)}
LEVELS = ("sim", "area", "energy")
RUN_PARAMS = {"schedule": POLICIES, "weights": WEIGHT_FORMATS}  # run options, not config fields
STRATEGIES = ("grid", "random", "nsga2")
_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq}
_CONSTRAINT = re.compile(r"^\s*([a-z_0-9]+)\s*(<=|>=|==|<|>)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Param:
    """One swept parameter: `values` (choices) or `range` = (lo, hi) with an optional `step` / `log`."""

    path: str
    values: tuple[Any, ...] = ()
    lo: float | None = None
    hi: float | None = None
    step: float | None = None
    log: bool = False
    integer: bool = False

    @property
    def is_run_option(self) -> bool:
        return self.path in RUN_PARAMS

    def grid(self) -> tuple[Any, ...]:
        """The values a grid takes: the choices, or the lattice lo, lo + step, ... <= hi."""
        if self.values:
            return self.values
        assert self.lo is not None and self.hi is not None and self.step
        n = int(math.floor((self.hi - self.lo) / self.step + 1e-9)) + 1
        vals = [self.lo + i * self.step for i in range(n)]
        return tuple(int(round(v)) if self.integer else v for v in vals)


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: str
    bound: float

    def holds(self, value: float | None) -> bool:
        return value is not None and _OPS[self.op](value, self.bound)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


@dataclass(frozen=True)
class Workload:
    model: str          # as `lowbit sim --model` takes it (a path resolved against the spec's folder)
    prefill: int
    decode: int
    batch: int = 1      # sequences decoded together, each with this prefill and decode
    context: int = 0    # tokens already in each sequence's KV cache

    @property
    def name(self) -> str:
        extra = (f" x{self.batch}" if self.batch > 1 else "") + (f" @{self.context}" if self.context else "")
        return f"{self.model} {self.prefill}+{self.decode}{extra}"


POWER_MODELS = ("liberty", "netlist")
CONTROLS = ("estimate", "chip")


@dataclass(frozen=True, kw_only=True)
class CostOptions:
    """How a point's area and energy are computed: the options of `lowbit report` (its defaults too), so
    that a point's area, power and energy are the numbers `lowbit report` gives for that design."""

    power_model: str = "liberty"
    control: str = "estimate"
    exclude_units: tuple[str, ...] = ()

    def report_flags(self) -> list[str]:
        """The `lowbit report` options giving the same cost model."""
        return ([f"--power-model={self.power_model}"] if self.power_model != "liberty" else []) + \
            ([f"--control={self.control}"] if self.control != "estimate" else []) + \
            [f"--exclude-unit={u}" for u in self.exclude_units]


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    source: str
    base: str                       # as written (a preset name or a path relative to the spec file)
    base_path: str                  # what load_config takes: the preset name or the resolved path
    strategy: str
    samples: int
    population: int
    seed: int
    objectives: tuple[str, ...]
    constraints: tuple[Constraint, ...]
    workloads: tuple[Workload, ...]
    params: tuple[Param, ...]
    cost: CostOptions = CostOptions()
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def level(self) -> str:
        """The deepest evaluation the objectives and constraints need."""
        names = list(self.objectives) + [c.metric for c in self.constraints]
        return max((OBJECTIVES[n].level for n in names), key=LEVELS.index, default="sim")

    def base_config(self) -> HwConfig:
        return load_config(self.base_path)

    def grid_size(self) -> int:
        return math.prod(len(p.grid()) for p in self.params) * len(self.workloads)


def load_spec(path: str | Path) -> SweepSpec:
    path = Path(path)
    if not path.exists():
        raise SpecError(f"sweep spec not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text (UTF-8) TOML file") from None
    return spec_from_dict(data, str(path), path.parent)


def _table(data: dict, key: str, src: str, allowed: tuple[str, ...]) -> dict:
    t = data.get(key, {})
    if not isinstance(t, dict):
        raise SpecError(f"{src}: [{key}] must be a table")
    for k in t:
        if k not in allowed:
            raise SpecError(f"{src}: {key}.{k}: unknown key{did_you_mean(k, allowed)}; allowed: {', '.join(allowed)}")
    return t


# Bounds of the [sweep] numbers (lowbit.sim.schema): a sweep's size is a number of simulations, so it is capped
# where the grid is (a million points); the seed is numpy's 32-bit seed range.
SAMPLES = Range(1, 1_000_000, "points")
POPULATION = Range(2, 100_000, "points")
SEED = Range(0, 2**32 - 1)


def _int(v: Any, where: str, path: str, rng: Range) -> int:
    return as_int(v, where, path, rng, error=SpecError)


def spec_from_dict(data: dict[str, Any], src: str = "<spec>", root: Path = Path(".")) -> SweepSpec:
    for k in data:
        if k not in ("sweep", "workload", "params"):
            raise SpecError(f"{src}: [{k}]: unknown table{did_you_mean(k, ('sweep', 'workload', 'params'))}; "
                            "allowed: [sweep], [workload] or [[workload]], [params]")
    sw = _table(data, "sweep", src, ("base", "strategy", "samples", "population", "seed", "objectives", "constraints",
                                     "power_model", "control", "exclude_units"))
    base = sw.get("base")
    if not isinstance(base, str) or not base:
        raise SpecError(f"{src}: sweep.base: required, a hardware preset name or a .toml path (e.g. base = \"vitallm\")")
    base_path = str(root / base) if base.endswith(".toml") and not Path(base).is_absolute() else base
    try:
        cfg = load_config(base_path)
    except LowbitError as e:
        raise SpecError(f"{src}: sweep.base = {base!r}: {e}") from None
    strategy = sw.get("strategy", "grid")
    if strategy not in STRATEGIES:
        raise SpecError(f"{src}: sweep.strategy = {strategy!r}: must be one of {', '.join(STRATEGIES)}"
                        f"{did_you_mean(str(strategy), STRATEGIES)}")
    samples = _int(sw.get("samples", 64), src, "sweep.samples", SAMPLES)  # random and nsga2 only
    population = _int(sw.get("population", 16), src, "sweep.population", POPULATION)
    seed = _int(sw.get("seed", 0), src, "sweep.seed", SEED)
    objectives = sw.get("objectives", ["decode_tok_s", "area_mm2", "energy_per_token_mj"])
    if not isinstance(objectives, list) or not objectives or not all(isinstance(o, str) for o in objectives):
        raise SpecError(f"{src}: sweep.objectives: a non-empty list of names ({', '.join(OBJECTIVES)})")
    for o in objectives:
        if o not in OBJECTIVES:
            raise SpecError(f"{src}: sweep.objectives: unknown objective '{o}'{did_you_mean(o, OBJECTIVES)}; "
                            f"allowed: {', '.join(OBJECTIVES)}")
    if len(set(objectives)) != len(objectives):
        raise SpecError(f"{src}: sweep.objectives lists an objective twice: {objectives}")
    constraints = []
    for c in sw.get("constraints", []) if isinstance(sw.get("constraints", []), list) else [None]:
        m = _CONSTRAINT.match(c) if isinstance(c, str) else None
        if not m:
            raise SpecError(f"{src}: sweep.constraints: {c!r}: write 'METRIC OP NUMBER', e.g. \"area_mm2 <= 0.3\" "
                            f"(OP one of {', '.join(_OPS)})")
        if m.group(1) not in OBJECTIVES:
            raise SpecError(f"{src}: sweep.constraints: unknown metric '{m.group(1)}'"
                            f"{did_you_mean(m.group(1), OBJECTIVES)}; allowed: {', '.join(OBJECTIVES)}")
        try:
            bound = float(m.group(3))
        except ValueError:
            raise SpecError(f"{src}: sweep.constraints: {c!r}: '{m.group(3)}' is not a number") from None
        constraints.append(Constraint(m.group(1), m.group(2), bound))
    workloads = _workloads(data.get("workload"), src, root)
    params = _params(data.get("params"), src, cfg, strategy)
    spec = SweepSpec(source=src, base=base, base_path=base_path, strategy=strategy, samples=samples,
                     population=population, seed=seed, objectives=tuple(objectives), constraints=tuple(constraints),
                     workloads=workloads, params=params, cost=_cost(sw, src), raw=data)
    if strategy == "nsga2" and len(workloads) > 1:
        raise SpecError(f"{src}: strategy = \"nsga2\" optimises one workload; give one [workload] (or sweep each)")
    if strategy == "grid" and spec.grid_size() > 1_000_000:
        raise SpecError(f"{src}: the grid has {spec.grid_size():,} points; narrow it or use strategy = \"random\"")
    return spec


def _cost(sw: dict, src: str) -> CostOptions:
    from lowbit.rtl.registry import UNITS

    pm, ctl, ex = sw.get("power_model", "liberty"), sw.get("control", "estimate"), sw.get("exclude_units", [])
    if pm not in POWER_MODELS:
        raise SpecError(f"{src}: sweep.power_model = {pm!r}: one of {', '.join(POWER_MODELS)}")
    if ctl not in CONTROLS:
        raise SpecError(f"{src}: sweep.control = {ctl!r}: one of {', '.join(CONTROLS)}")
    if not isinstance(ex, list) or not all(isinstance(u, str) for u in ex):
        raise SpecError(f"{src}: sweep.exclude_units = {ex!r}: a list of RTL unit names ({', '.join(UNITS)})")
    for u in ex:
        if u not in UNITS:
            raise SpecError(f"{src}: sweep.exclude_units: unknown RTL unit '{u}'{did_you_mean(u, UNITS)}; "
                            f"allowed: {', '.join(UNITS)}")
    return CostOptions(power_model=pm, control=ctl, exclude_units=tuple(dict.fromkeys(ex)))


WORKLOAD_KEYS = ("model", "prefill", "decode", "batch", "context")
BATCH = Range(1, 4096, "sequences")


def _workloads(w: Any, src: str, root: Path) -> tuple[Workload, ...]:
    if w is None:
        raise SpecError(f"{src}: [workload] missing: give model, prefill and decode")
    items = w if isinstance(w, list) else [w]
    out = []
    for i, t in enumerate(items):
        where = f"{src}: workload" + (f"[{i}]" if isinstance(w, list) else "")
        if not isinstance(t, dict):
            raise SpecError(f"{where}: must be a table with model, prefill, decode")
        for k in t:
            if k not in WORKLOAD_KEYS:
                raise SpecError(f"{where}.{k}: unknown key{did_you_mean(k, WORKLOAD_KEYS)}; "
                                f"allowed: {', '.join(WORKLOAD_KEYS)}")
        model = t.get("model")
        if not isinstance(model, str) or not model:
            raise SpecError(f"{where}.model = {model!r}: a model name (`lowbit models list`) or a config.json path")
        if not Path(model).is_absolute() and (root / model).exists():
            model = str(root / model)
        try:
            spec = get_model(model)
        except LowbitError as e:
            raise SpecError(f"{where}.model: {e}") from None
        mp = spec.max_positions
        tokens = Range(0, mp, "tokens", why=f"max_positions of {spec.name}")
        pre = _int(t.get("prefill", 64), where, "prefill", tokens)
        dec = _int(t.get("decode", 128), where, "decode", tokens)
        batch = _int(t.get("batch", 1), where, "batch", BATCH)
        ctx = _int(t.get("context", 0), where, "context", tokens)
        if pre + dec == 0 or ctx + pre + dec > mp:
            raise SpecError(f"{where}: context + prefill + decode = {ctx + pre + dec}: must be in 1..{mp} "
                            f"(max_positions of {spec.name})")
        out.append(Workload(model, pre, dec, batch, ctx))
    if len(set(out)) != len(out):
        raise SpecError(f"{src}: a workload is listed twice")
    return tuple(out)


def format_value(v: Any) -> str:
    """A parameter value as `--set` text (parsed back to the same value by lowbit.sim.config)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list | tuple):
        return ",".join(format_value(x) for x in v)
    return str(v)


def _check_value(cfg: HwConfig, p: Param, v: Any, src: str) -> None:
    """A value of a parameter must name a real field and have its type (the whole design is checked per point)."""
    if p.is_run_option:
        if v not in RUN_PARAMS[p.path]:
            raise SpecError(f"{src}: params.{p.path}: {v!r} is not one of {', '.join(RUN_PARAMS[p.path])}")
        return
    try:
        set_field(to_dict(cfg), f"{p.path}={format_value(v)}")
    except LowbitError as e:
        raise SpecError(f"{src}: params.{p.path}: {e}") from None


def _params(t: Any, src: str, cfg: HwConfig, strategy: str) -> tuple[Param, ...]:
    if not isinstance(t, dict) or not t:
        raise SpecError(f"{src}: [params] missing or empty: name at least one config field, e.g. \"lop.k\" = [16, 32]")
    out = []
    for path, v in t.items():
        where = f"{src}: params.{path}"
        if isinstance(v, list):
            if not v:
                raise SpecError(f"{where}: empty list of values")
            if len(set(map(repr, v))) != len(v):
                raise SpecError(f"{where}: a value is listed twice: {v}")
            p = Param(path, values=tuple(tuple(x) if isinstance(x, list) else x for x in v))
            for x in p.values:
                _check_value(cfg, p, x, src)
        elif isinstance(v, dict):
            for k in v:
                if k not in ("range", "step", "log"):
                    raise SpecError(f"{where}.{k}: unknown key{did_you_mean(k, ('range', 'step', 'log'))}; "
                                    "allowed: range, step, log (or give a list of values)")
            r = v.get("range")
            if not (isinstance(r, list) and len(r) == 2):
                raise SpecError(f"{where}.range = {r!r}: must be [low, high] numbers with low < high")
            for i, x in enumerate(r):
                as_float(x, src, f"params.{path}.range[{i}]", error=SpecError)  # finite numbers, not booleans
            if not r[0] < r[1]:
                raise SpecError(f"{where}.range = {r!r}: must be [low, high] numbers with low < high")
            step, log = v.get("step"), v.get("log", False)
            if step is not None:
                as_float(step, src, f"params.{path}.step", Range(0, lo_open=True), error=SpecError)
            if not isinstance(log, bool) or (log and (r[0] <= 0 or step is not None)):
                raise SpecError(f"{where}.log = {log!r}: true or false; a log range needs low > 0 and no step")
            integer = all(isinstance(x, int) for x in r) and (step is None or isinstance(step, int))
            p = Param(path, lo=r[0], hi=r[1], step=step, log=log, integer=integer)
            if strategy == "grid" and step is None:
                raise SpecError(f"{where}: a grid needs values or a range with a step (or use strategy = \"random\")")
            if p.is_run_option:
                raise SpecError(f"{where}: a run option takes a list of values ({', '.join(RUN_PARAMS[path])})")
            for x in (p.grid() if step else (p.lo, p.hi)):
                _check_value(cfg, p, int(x) if integer else float(x), src)
        else:
            raise SpecError(f"{where} = {v!r}: give a list of values or {{ range = [low, high], step = ... }}")
        out.append(p)
    return tuple(out)


def grid_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every combination, the last parameter varying fastest."""
    names = [p.path for p in spec.params]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(p.grid() for p in spec.params))]
