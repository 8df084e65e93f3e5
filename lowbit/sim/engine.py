"""Simulator entry point: `simulate(cfg, trace, schedule, lop_k) -> SimResult`.

Steps: check the options and select LOP keys (sim.lop_select, when the trace carries q/k tensors); then, for
every forward step (prefill = step 0, decode steps 1..D) and every chunk of it (one run of ops of one layer):
lower (sim.lower) -> schedule (sim.sched, numba) -> fold the per-instruction (unit, start, end) records into
`Counters`, so memory does not grow with the number of steps or the context length (only the KV metadata of
the current step is built); without observers a decoder layer's chunk is lowered, scheduled and folded window
by window (sim.window: the same schedule), so memory does not grow with the prompt either; finally assemble
the SimResult. Decode steps are autoregressive: every
instruction that needs the new token waits for the previous step's end (weight prefetch does not, under
"dependency-aware").

Observers: every scheduled chunk is handed, as a sim.sched.Scheduled record, to the optional `observers`
(timelines, lowbit.sim.timeline; the per-op breakdown, lowbit.sim.breakdown), which stream what they need.

Metrics (each ≤ the run's cycles; tests/sim/test_invariants.py checks them on every preset): per compute
unit busy + stalls + idle = cycles (sim.sched: idle = nothing to do, stall = waiting on data, memory, the
step barrier or buffer room); `dram.busy_cycles` is data-bus busy time per channel (mean over channels);
LOP savings are net of the LO-code (surrogate) reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

import numpy as np

import lowbit.sim.isa
from lowbit.sim.breakdown import Breakdown
from lowbit.sim.config import HwConfig
from lowbit.sim.dram import dram_params, dram_stats, new_dram_state
from lowbit.sim.errors import WorkloadError
from lowbit.sim.isa import (
    ACTIVITY,
    BUFFERS,
    DRAM_CLASSES,
    M_TERN,
    REASONS,
    UNIT_CLASS_BASE,
)
from lowbit.sim.lop_select import lop_selected_positions
from lowbit.sim.lower import POLICIES, Chunk, Lowering, StepStats
from lowbit.sim.nbcache import njit_cached
from lowbit.sim.sched import Scheduled, Scheduler
from lowbit.sim.tiling import UnitAssigner, physical_units
from lowbit.sim.trace import OP_KINDS, Op, Trace
from lowbit.sim.window import WindowRun


@dataclass
class SimResult:
    """Everything `lowbit sim --json` writes. Times in seconds, cycles at cfg.clock_hz."""

    model: str
    hw: str
    schedule: str
    prefill_tokens: int
    decode_tokens: int
    clock_hz: float
    cycles: int
    prefill_cycles: int
    decode_cycles: int
    prefill_latency_s: float | None
    decode_tokens_per_s: float | None
    utilization: dict[str, float]
    dram_bytes: dict[str, int]
    stalls: dict[str, dict[str, int]]
    idle: dict[str, int]
    activity: dict[str, Any]
    op_cycles: dict[str, int]
    lop: dict[str, Any]
    lm_head: dict[str, Any]
    dram: dict[str, Any]
    instructions: int
    instructions_by_unit: dict[str, int]
    notes: list[str] = field(default_factory=list)
    # host wall-clock seconds (wall_s, lop_select_s, lower_s, schedule_s): the only non-deterministic part, so
    # two runs of the same input differ nowhere else
    timing: dict[str, float] = field(default_factory=dict)
    step_cycles: list[int] = field(default_factory=list)
    breakdown: dict[str, Any] | None = None
    batch: int = 1  # sequences decoded together (a batched trace, lowbit.sim.trace)
    # decode tokens of all sequences per second of decode (= decode_tokens_per_s at batch 1)
    throughput_tokens_per_s: float | None = None
    # batched traces: per sequence its lengths, first-token and last-token times (s from the run's start)
    requests: list[dict[str, Any]] | None = None
    # activity counters at the end of prefill (the instructions of step 0 only; same keys as `activity`), so
    # decode energy = activity - prefill_activity needs no second, prefill-only simulation; None without prefill
    prefill_activity: dict[str, Any] | None = None

    @property
    def wall_s(self) -> float:
        """Host wall-clock seconds of the whole simulate() call (timing["wall_s"])."""
        return self.timing.get("wall_s", 0.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)


def unit_list(cfg: HwConfig) -> list[tuple[str, int]]:
    """Physical units (name, class) in scheduler order (lowbit.sim.tiling.physical_units: the design's catalogued
    units in catalogue order, a replicated unit as name0, name1, ..., then the DMA queues)."""
    return physical_units(cfg)


def simulate(cfg: HwConfig, trace: Trace, schedule: str = "dependency-aware", lop_k: int | None = None,
             no_lop: bool = False, progress: Callable[[int, int], None] | None = None,
             timeline: Any = None, dual_core: bool = True, breakdown: Breakdown | None = None,
             observers: tuple = (), lop_positions: dict | None = None, source: ChunkSource | None = None) -> SimResult:
    """Simulate `trace` on `cfg`. `lop_k` overrides cfg.lop.k; `no_lop` disables LOP (dense attention);
    `dual_core=False` keeps ternary projection tiles off BoothFlex (ablation); `progress(done, total)` is
    called after every chunk (one decoder layer of one step). `timeline` (a lowbit.sim.timeline writer),
    `breakdown` (lowbit.sim.breakdown.Breakdown, result in SimResult.breakdown) and `observers` see every
    scheduled chunk. `lop_positions` ({(layer, decode step): ascending positions per KV head}) gives the LOP
    selections explicitly instead of deriving them from the trace's q/k tensors. `source` (e.g. a loaded
    program, lowbit.sim.program) supplies the chunks instead of lowering the trace, which then only gives the
    run's metadata (model, prefill, decode)."""
    t_wall = time.perf_counter()
    cfg = _configure(cfg, schedule, lop_k)
    trace.model.validate()
    notes: list[str] = []
    lop_on = cfg.has("lop") and cfg.lop.enabled and not no_lop
    t_sel = time.perf_counter()
    counts = (lop_positions if lop_positions is not None else _lop_counts(trace, cfg, notes)) \
        if lop_on and source is None else None
    t_sel = time.perf_counter() - t_sel
    lw = Lowering(cfg, trace.model, schedule, lop_on, cfg.lop.k, counts, dual_core=dual_core)
    units = unit_list(cfg)
    sched = Scheduler([c for _, c in units], lw.bufs.capacity_array(), dram_params(cfg), new_dram_state(cfg))
    ctr = Counters.zeros(len(units))
    obs = tuple(o for o in (timeline, breakdown, *observers) if o is not None)
    snap: dict[str, Any] = {}

    def at_prefill_end() -> None:
        ds0 = dram_stats(sched.dstate)
        snap["activity"] = _activity(units, ctr, ds0, _dram_bytes(ds0))

    src = source if source is not None else LoweredSteps(lw, trace.steps(), trace.n_chunks())
    if source is None and not obs:  # observers see whole chunks; without them a chunk streams in windows
        src.sink = WindowRun(sched, src.assigner, ctr.fold)
    run = _run_steps(src, sched, ctr, progress, obs, at_prefill_end)
    clk, total, pre = cfg.clock_hz, run.total, run.prefill_end
    sched.finish(total)
    dec, D = total - pre, trace.decode
    ds = dram_stats(sched.dstate)
    dram_bytes = _dram_bytes(ds)
    return SimResult(
        model=trace.model.name, hw=cfg.name, schedule=schedule, prefill_tokens=trace.prefill, decode_tokens=D,
        clock_hz=clk, cycles=int(total), prefill_cycles=int(pre), decode_cycles=int(dec),
        prefill_latency_s=pre / clk if trace.prefill else None,
        decode_tokens_per_s=(D / (dec / clk)) if D and dec else None,
        utilization=_utilization(cfg, units, ctr, ds, total), dram_bytes=dram_bytes,
        stalls={name: {r: int(sched.stall[i, j]) for j, r in enumerate(REASONS) if sched.stall[i, j]}
                for i, (name, _) in enumerate(units)},
        idle={name: int(sched.idle[i]) for i, (name, _) in enumerate(units)},
        activity=_activity(units, ctr, ds, dram_bytes), op_cycles=ctr.op_cycles_by_kind(),
        lop=_lop_summary(cfg, lop_on, counts is not None if source is None else source.data_driven, ctr.stats),
        lm_head={"placement": cfg.lm_head, "macs": ctr.stats.lm_head_macs,
                 "weight_bytes_per_step": ctr.stats.lm_head_bytes // max(1, len(run.step_cycles)),
                 "note": "host: excluded from accelerator cycles" if cfg.lm_head == "host" else ""},
        dram=_dram_summary(cfg, ds), instructions=run.instructions,
        instructions_by_unit={units[i][0]: int(v) for i, v in enumerate(ctr.count)},
        notes=notes, step_cycles=run.step_cycles,
        timing={"wall_s": time.perf_counter() - t_wall, "lop_select_s": t_sel, "lower_s": run.lower_s,
                "schedule_s": run.schedule_s},
        breakdown=breakdown.result() if breakdown is not None else None,
        prefill_activity=snap.get("activity") if trace.prefill else None,
        batch=trace.batch, throughput_tokens_per_s=_throughput(trace, dec / clk),
        requests=_requests(trace, run.step_cycles, clk) if trace.sequences is not None else None)


# ---------------------------------------------------------------------------------------------- preparation


def _configure(cfg: HwConfig, schedule: str, lop_k: int | None) -> HwConfig:
    """Check the run options; the config with the `lop_k` override applied."""
    if schedule not in POLICIES:
        raise WorkloadError(f"unknown schedule '{schedule}'; allowed: {', '.join(POLICIES)}")
    if lop_k is not None:
        if lop_k <= 0:
            raise WorkloadError(f"--lop-k {lop_k}: must be > 0")
        cfg = cfg.replace(**{"lop.k": int(lop_k)})
    return cfg


def _lop_counts(trace: Trace, cfg: HwConfig, notes: list[str]) -> dict | None:
    """Data-driven LOP selection counts from the trace's q/k tensors (None: min(K, M) per head)."""
    if not trace.has_tensors():
        return None
    counts = lop_selected_positions(trace, cfg)
    if counts:
        notes.append(f"LOP: data-driven selection from trace tensors ({len(counts)} (layer, step) entries)")
    return dict(counts) if counts else None


# ---------------------------------------------------------------------------------------------- step loop


@dataclass
class Counters:
    """Run totals folded from every scheduled chunk."""

    busy: np.ndarray        # busy cycles per unit (compute units)
    tern: np.ndarray        # ternary MACs per unit
    work: np.ndarray        # work per activity class (sim.isa.ACTIVITY)
    sram_rd: np.ndarray     # bytes read per SRAM buffer (sim.isa.BUFFERS)
    sram_wr: np.ndarray     # bytes written per SRAM buffer
    op_cycles: np.ndarray   # compute-unit cycles per trace op kind (sim.trace.OP_KINDS)
    count: np.ndarray       # instructions run per unit (compute units and DMA queues)
    stats: StepStats = field(default_factory=StepStats)  # static lowering counters (LOP, host lm_head)

    @classmethod
    def zeros(cls, n_units: int) -> Counters:
        return cls(np.zeros(n_units, np.int64), np.zeros(n_units, np.int64), np.zeros(len(ACTIVITY), np.int64),
                   np.zeros(len(BUFFERS), np.int64), np.zeros(len(BUFFERS), np.int64),
                   np.zeros(len(OP_KINDS), np.int64), np.zeros(n_units, np.int64))

    def fold(self, ch: Chunk, s: np.ndarray, t: np.ndarray, u: np.ndarray) -> None:
        """Add one chunk's (unit, start, end) records and its static counters."""
        a = ch.cols
        kind_of_op = np.asarray([OP_KINDS.index(k) for k in ch.kinds] or [0], np.int64)
        _fold_kernel(a["main"], a["mcls"], a["macs"], a["opi"], a["rbuf"], a["rbytes"], a["rbuf2"], a["rbytes2"],
                     a["wbuf"], a["wbytes"], s, t, u, kind_of_op, self.busy, self.tern, self.work, self.sram_rd,
                     self.sram_wr, self.op_cycles)
        self.count += np.bincount(u[u >= 0], minlength=len(self.count))
        self.add_stats(ch.stats)

    def add_stats(self, st: StepStats) -> None:
        for f in fields(StepStats):
            setattr(self.stats, f.name, getattr(self.stats, f.name) + getattr(st, f.name))

    def op_cycles_by_kind(self) -> dict[str, int]:
        return {k: int(v) for k, v in zip(OP_KINDS, self.op_cycles, strict=True) if v}


@njit_cached(lowbit.sim.isa)  # freezes UNIT_CLASS_BASE and M_TERN (sim.isa) as constants
def _fold_kernel(main, mcls, macs, opi, rbuf, rbytes, rbuf2, rbytes2, wbuf, wbytes, s, t, u, kind_of_op,
                 busy, tern, work, srd, swr, opc):
    for i in range(main.shape[0]):
        if u[i] >= 0 and main[i] >= UNIT_CLASS_BASE:
            d = t[i] - s[i]
            busy[u[i]] += d
            opc[kind_of_op[opi[i]]] += d
            if mcls[i] == M_TERN:
                tern[u[i]] += macs[i]
        if mcls[i] >= 0:
            work[mcls[i]] += macs[i]
        if rbuf[i] >= 0:
            srd[rbuf[i]] += rbytes[i]
        if rbuf2[i] >= 0:
            srd[rbuf2[i]] += rbytes2[i]
        if wbuf[i] >= 0:
            swr[wbuf[i]] += wbytes[i]


@dataclass
class StepsRun:
    """Timing of the step loop: end of the run and of prefill (cycles), cycles per step, work counts."""

    total: int
    prefill_end: int
    step_cycles: list[int]
    instructions: int
    lower_s: float
    schedule_s: float


@dataclass
class StepChunks:
    """One forward step as a chunk source gives it: phase, the trace's step number, each op's role, and its
    chunks with their decoder layer (-1: model-level ops), produced lazily."""

    phase: str
    trace_step: int
    roles: dict[str, str]
    chunks: Iterator[tuple[Chunk, int]]


class ChunkSource(Protocol):
    """Where the step loop takes its chunks from: a Lowering of a trace (LoweredSteps) or a loaded program
    (lowbit.sim.program.ProgramReader). Iterating yields one StepChunks per forward step."""

    n_chunks: int       # chunks in the whole run (progress reporting)
    data_driven: bool   # LOP selections came from trace tensors

    def __iter__(self) -> Iterator[StepChunks]: ...


class LoweredSteps:
    """The chunk source of a trace: every step lowered on demand (sim.lower)."""

    def __init__(self, lw: Lowering, steps: Iterable[list[Op]], n_chunks: int) -> None:
        self.lw, self.steps, self.n_chunks = lw, steps, n_chunks
        self.data_driven = lw.lop_counts is not None
        self.assigner = UnitAssigner.from_config(lw.cfg)
        self.sink: WindowRun | None = None  # set: decoder layers stream into it window by window

    def __iter__(self) -> Iterator[StepChunks]:
        for ops in self.steps:
            layer_of = {o.name: o.layer for o in ops}
            yield StepChunks(ops[0].phase, ops[0].step, {o.name: o.role for o in ops},
                             (self._assigned(ch, layer_of) for ch in self.lw.lower_step(ops, self.sink)))

    def _assigned(self, ch: Chunk, layer_of: dict[str, int]) -> tuple[Chunk, int]:
        """The chunk with every instruction on its statically assigned unit (sim.tiling.UnitAssigner), and its
        decoder layer (-1: model-level ops)."""
        if not ch.streamed:
            ch.cols = self.assigner.assign(ch.cols)
        return ch, layer_of.get(ch.names[0], -1) if ch.names else -1


def _run_steps(source: ChunkSource, sched: Scheduler, ctr: Counters,
               progress: Callable[[int, int], None] | None, observers: tuple,
               at_prefill_end: Callable[[], None] | None = None) -> StepsRun:
    """lower (or read) -> schedule -> fold, chunk by chunk. A step starts at the previous step's end (t_barrier); a
    chunk's input is ready at the end of the previous chunk's output instruction (t_ext, id ext_id).
    `at_prefill_end()` is called once every prefill instruction has been folded into `ctr`."""
    n_chunks = source.n_chunks
    done = n_instr = 0
    t_barrier = prefill_end = 0
    t_low = t_sch = 0.0
    step_cycles: list[int] = []
    sink: WindowRun | None = getattr(source, "sink", None)
    for si, stp in enumerate(source):
        t_ext = step_end = t_barrier
        ext_id = -1
        role = stp.roles
        for ob in observers:
            ob.begin_step(si, t_barrier)
        while True:
            t0 = time.perf_counter()
            if sink is not None:
                sink.begin(t_barrier, t_ext, ext_id, si, n_instr)
                sched_s = sink.schedule_s
            nxt = next(stp.chunks, None)
            if nxt is None:
                break
            ch, layer = nxt
            t1 = time.perf_counter()
            base = n_instr
            if ch.streamed:  # lowered, scheduled and folded window by window (lowbit.sim.window)
                dt = sink.schedule_s - sched_s
                t_low += t1 - t0 - dt
                t_sch += dt
                n_instr += sink.n
                done += 1
                if progress is not None:
                    progress(done, n_chunks)
                step_end = max(step_end, sink.step_end)
                if ch.out >= 0:
                    t_ext = sink.end_of(ch.out)
                    ext_id = base + ch.out
                ctr.add_stats(ch.stats)
                continue
            n_instr += len(ch.cols["main"])
            s, t, u = sched.run(ch.cols, t_barrier, t_ext, step=si, base=base, ext_id=ext_id)
            t_low += t1 - t0
            t_sch += time.perf_counter() - t1
            done += 1
            if progress is not None:
                progress(done, n_chunks)
            if len(t):
                step_end = max(step_end, int(t.max()))
            if ch.out >= 0:
                t_ext = int(t[ch.out])
                ext_id = base + ch.out
            ctr.fold(ch, s, t, u)
            if observers:
                rec = Scheduled(ch.cols, ch.names, ch.kinds, [role.get(n, "") for n in ch.names], si, stp.phase,
                                stp.trace_step, layer, base, t_barrier, s, t, u, sched.last_pred, sched.last_bind)
                for ob in observers:
                    ob.add(rec, sched, ext_id)
        for ob in observers:
            ob.end_step(si, step_end)
        step_cycles.append(step_end - t_barrier)
        t_barrier = step_end
        if stp.phase == "prefill":
            prefill_end = step_end
            if at_prefill_end is not None:
                at_prefill_end()
    return StepsRun(t_barrier, prefill_end, step_cycles, n_instr, t_low, t_sch)


# ---------------------------------------------------------------------------------------------- result


def _throughput(trace: Trace, dec_s: float) -> float | None:
    """Decode tokens of all sequences per decode second."""
    n = sum(q.decode for q in trace.sequences) if trace.sequences is not None else trace.decode
    return n / dec_s if n and dec_s else None


def _requests(trace: Trace, step_cycles: list[int], clk: float) -> list[dict[str, Any]]:
    """Per sequence of a batched trace: its first output token comes from the step that ends its prompt
    (prefill, or decode step 1 without one), its last from decode step D_b; its decode rate is D_b over the
    time from the start of decode to its last token (times in s from the start of the run)."""
    ends = np.cumsum(np.asarray(step_cycles, np.int64)) / clk
    off = 1 if trace.prefill else 0  # index of decode step 1 in step_cycles
    out = []
    for b, q in enumerate(trace.sequences or []):
        first = float(ends[0]) if q.prefill else float(ends[off]) if q.decode else None
        last = float(ends[off + q.decode - 1]) if q.decode else first
        dec0 = float(ends[off - 1]) if off else 0.0
        out.append({"seq": b, "context": q.context, "prefill": q.prefill, "decode": q.decode,
                    "first_token_s": first, "last_token_s": last,
                    "decode_tokens_per_s": q.decode / (last - dec0) if q.decode and last and last > dec0 else None})
    return out


def _compute_units(units: list[tuple[str, int]]) -> list[int]:
    return [i for i, (_, c) in enumerate(units) if c >= UNIT_CLASS_BASE]


def _utilization(cfg: HwConfig, units: list[tuple[str, int]], ctr: Counters, ds: dict, total: int) -> dict:
    """Busy fraction of every compute unit, and of the DRAM (data-bus busy cycles per channel / cycles)."""
    util = {units[i][0]: (float(ctr.busy[i]) / total if total else 0.0) for i in _compute_units(units)}
    util["dram"] = ds["busy_cycles"] / (_channels(cfg) * total) if total else 0.0
    return util


def _channels(cfg: HwConfig) -> int:
    """Channels the DRAM model keeps busy counters for (the simple model is one aggregated channel)."""
    return cfg.dram.channels if cfg.dram.model == "lpddr" else 1


def _dram_summary(cfg: HwConfig, ds: dict) -> dict:
    """DRAM counters; `busy_cycles` is per channel (mean over the channels, ≤ the run's cycles), the sum over
    channels is `busy_cycles_all_channels`."""
    out = {k: v for k, v in ds.items() if k != "bytes"}
    out["busy_cycles_all_channels"] = ds["busy_cycles"]
    out["busy_cycles"] = ds["busy_cycles"] / _channels(cfg)
    out["channels"] = _channels(cfg)
    return out


def _dram_bytes(ds: dict) -> dict[str, int]:
    """DRAM bytes per traffic class (sim.isa.DRAM_CLASSES) from the DRAM model's counters."""
    return {DRAM_CLASSES[i]: int(v) for i, v in enumerate(ds["bytes"].values())}


def _activity(units: list[tuple[str, int]], ctr: Counters, ds: dict, dram_bytes: dict[str, int]) -> dict:
    """Activity counters (the energy model's input, lowbit.cost.energy)."""
    return {
        **{name: int(ctr.work[i]) for i, name in enumerate(ACTIVITY)},
        "ternary_macs_by_unit": {units[i][0]: int(v) for i, v in enumerate(ctr.tern) if v},
        "busy_cycles": {units[i][0]: int(ctr.busy[i]) for i in _compute_units(units)},
        "sram_read_bytes": {b: int(ctr.sram_rd[i]) for i, b in enumerate(BUFFERS)},
        "sram_write_bytes": {b: int(ctr.sram_wr[i]) for i, b in enumerate(BUFFERS)},
        "dram_bytes": dram_bytes, "dram_read_bytes": ds["read_bytes"], "dram_write_bytes": ds["write_bytes"],
    }


def _lop_summary(cfg: HwConfig, lop_on: bool, data_driven: bool, st: StepStats) -> dict:
    """LOP accounting over the LOP-eligible (decode) steps: K+V bytes dense attention would read vs. K+V bytes
    read plus LO-code (surrogate) bytes read. Savings are net of the LO-code reads: kv_bytes_saved =
    dense - read - lo_codes (negative when the codes cost more than they save), kv_reduction_x = dense /
    (read + lo_codes); the K+V-only figures are kept as kv_bytes_saved_gross and kv_only_reduction_x."""
    dense, got, lopb = st.kv_dense_bytes, st.kv_read_bytes, st.lop_bytes
    return {"enabled": lop_on, "k": cfg.lop.k if lop_on else None, "data_driven": data_driven,
            "surrogate_storage": cfg.lop.surrogate_storage,
            "kv_dense_bytes": dense, "kv_read_bytes": got, "lop_bytes": lopb,
            "kv_bytes_saved": dense - got - lopb, "kv_reduction_x": (dense / (got + lopb)) if got + lopb else None,
            "kv_bytes_saved_gross": dense - got, "kv_only_reduction_x": (dense / got) if got else None}


__all__ = ["simulate", "SimResult", "unit_list"]
