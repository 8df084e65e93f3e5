"""Simulator entry point: `simulate(cfg, trace, schedule, lop_k) -> SimResult`.

Runs one chunk per forward step (prefill = step 0, decode steps 1..D): lower (sim.lower) -> schedule
(sim.sched, numba) -> fold the per-instruction (unit, start, end) records into counters, so memory does not
grow with the number of steps or the context length (only the KV metadata of the current step is built).
Decode steps are autoregressive: every instruction that needs the new token waits for the previous step's end
(weight prefetch does not, under "dependency-aware").
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import lowbit.sim.lower
import lowbit.sim.sched
from lowbit.sim.config import HwConfig
from lowbit.sim.dram import dram_params, dram_stats, new_dram_state
from lowbit.sim.errors import WorkloadError
from lowbit.sim.lower import COLS, M_FP4, M_INT8, M_LOP, M_SFU, M_TERN, POLICIES, SUBS, Lowering
from lowbit.sim.lowerstep import lower_runs
from lowbit.sim.nbcache import njit_cached
from lowbit.sim.sched import C_BOOTH, C_DMAKV, C_DMAW, C_FP4, C_LOP, C_SFU, C_TINT, REASONS, Scheduler
from lowbit.sim.sram import BUFFERS
from lowbit.sim.trace import Trace

DRAM_CLASSES = ("weights", "kv", "activations", "lop")
_KINDS = ("embedding", "rmsnorm", "quantize", "linear", "rope", "kv_append", "attn_qk", "softmax", "attn_av",
          "activation", "elementwise", "lm_head")


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
    activity: dict[str, Any]
    op_cycles: dict[str, int]
    lop: dict[str, Any]
    lm_head: dict[str, Any]
    dram: dict[str, Any]
    instructions: int
    wall_s: float
    notes: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    step_cycles: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)


def unit_list(cfg: HwConfig) -> list[tuple[str, int]]:
    """Physical units (name, class) in scheduler order."""
    u: list[tuple[str, int]] = []
    if cfg.has("tint"):
        u += [(f"tint{i}", C_TINT) for i in range(cfg.tint.cores)]
    if cfg.has("booth"):
        u.append(("booth", C_BOOTH))
    if cfg.has("fp4"):
        u.append(("fp4", C_FP4))
    if cfg.has("lop"):
        u.append(("lop", C_LOP))
    if cfg.has("sfu"):
        u.append(("sfu", C_SFU))
    u += [("dma_w", C_DMAW), ("dma_kv", C_DMAKV)]
    return u


def _steps(trace: Trace) -> list[list]:
    steps: list[list] = []
    key = None
    for o in trace.ops:
        k = (o.phase, o.step)
        if k != key:
            steps.append([])
            key = k
        steps[-1].append(o)
    return steps


def _lop_counts(trace: Trace, cfg: HwConfig, notes: list[str]) -> dict | None:
    if not any(o.tensors for o in trace.ops):
        return None
    try:
        from lowbit.sim.lop_select import lop_selected_counts
    except ImportError:
        notes.append("trace has tensors but sim.lop_select is not available: LOP selection uses min(K, M)")
        return None
    counts = lop_selected_counts(trace, cfg)
    if counts:
        notes.append(f"LOP: data-driven selection from trace tensors ({len(counts)} (layer, step) entries)")
    return dict(counts) if counts else None


class Timeline:
    """Chrome/Perfetto trace-event collector, capped at `cap` events (first steps first)."""

    def __init__(self, units: list[str], clock_hz: float, cap: int):
        self.units, self.clock, self.cap = units, clock_hz, cap
        self.events: list[dict] = []
        self.truncated_at: int | None = None

    def add(self, step: int, a: dict, s: np.ndarray, t: np.ndarray, u: np.ndarray, names: list[str]) -> None:
        if self.truncated_at is not None:
            return
        idx = np.nonzero(u >= 0)[0]
        room = self.cap - len(self.events)
        if len(idx) > room:
            idx = idx[:room]
            self.truncated_at = step
        us = 1e6 / self.clock
        for i in idx.tolist():
            self.events.append({"name": f"{names[a['opi'][i]]}:{SUBS[a['sub'][i]]}", "ph": "X", "pid": 0,
                                "tid": int(u[i]), "ts": float(s[i]) * us, "dur": float(t[i] - s[i]) * us,
                                "args": {"step": step}})

    def to_json(self) -> dict:
        meta = [{"name": "thread_name", "ph": "M", "pid": 0, "tid": i, "args": {"name": n}}
                for i, n in enumerate(self.units)]
        note = (f"truncated: first {self.cap} events (stopped in step {self.truncated_at})"
                if self.truncated_at is not None else "complete")
        return {"traceEvents": meta + self.events, "displayTimeUnit": "ns", "otherData": {"lowbit": note}}


def simulate(cfg: HwConfig, trace: Trace, schedule: str = "dependency-aware", lop_k: int | None = None,
             no_lop: bool = False, progress: Callable[[int, int], None] | None = None,
             timeline: Timeline | None = None, dual_core: bool = True) -> SimResult:
    """Simulate `trace` on `cfg`. `lop_k` overrides cfg.lop.k; `no_lop` disables LOP (dense attention);
    `dual_core=False` keeps ternary projection tiles off BoothFlex (ablation); `progress(done, total)` is
    called after every chunk (one decoder layer of one step)."""
    t_wall = time.perf_counter()
    if schedule not in POLICIES:
        raise WorkloadError(f"unknown schedule '{schedule}'; allowed: {', '.join(POLICIES)}")
    if lop_k is not None:
        if lop_k <= 0:
            raise WorkloadError(f"--lop-k {lop_k}: must be > 0")
        cfg = cfg.replace(**{"lop.k": int(lop_k)})
    m = trace.model
    m.validate()
    notes: list[str] = []
    lop_on = cfg.has("lop") and cfg.lop.enabled and not no_lop
    t_sel = time.perf_counter()
    counts = _lop_counts(trace, cfg, notes) if lop_on else None
    t_sel = time.perf_counter() - t_sel
    t_low = t_sch = 0.0
    lw = Lowering(cfg, m, schedule, lop_on, cfg.lop.k, counts, dual_core=dual_core)
    units = unit_list(cfg)
    nu = len(units)
    sched = Scheduler([c for _, c in units], lw.bufs.capacity_array(), dram_params(cfg), new_dram_state(cfg))
    steps = _steps(trace)
    n_chunks = sum(1 + sum(1 for a, b in zip(ops, ops[1:], strict=False) if a.layer != b.layer) for ops in steps)
    chunks_done = 0
    acc: dict[str, Any] = {"busy": np.zeros(nu, np.int64), "tern": np.zeros(nu, np.int64),
                           "act": np.zeros(5, np.int64), "srd": np.zeros(len(BUFFERS), np.int64),
                           "swr": np.zeros(len(BUFFERS), np.int64), "opc": np.zeros(len(_KINDS), np.int64), "lm_macs": 0, "lm_bytes": 0}
    lop_tot = {"kv_dense_bytes": 0, "kv_read_bytes": 0, "lop_bytes": 0}
    t_barrier = 0
    prefill_end = 0
    n_instr = 0
    step_cycles: list[int] = []
    for si, ops in enumerate(steps):
        t_ext = t_barrier
        step_end = t_barrier
        gen = lower_runs(lw, ops)
        while True:
            t0 = time.perf_counter()
            try:
                a, names, kinds, st, out = next(gen)
            except StopIteration:
                break
            t1 = time.perf_counter()
            n_instr += len(a["main"])
            s, t, u = sched.run(a, t_barrier, t_ext)
            t_low += t1 - t0
            t_sch += time.perf_counter() - t1
            chunks_done += 1
            if progress is not None:
                progress(chunks_done, n_chunks)
            if len(t):
                step_end = max(step_end, int(t.max()))
            if out >= 0:
                t_ext = int(t[out])
            _fold(a, s, t, u, kinds, acc)
            for f in lop_tot:
                lop_tot[f] += getattr(st, f)
            acc["lm_macs"] += st.lm_head_macs
            acc["lm_bytes"] += st.lm_head_bytes
            if timeline is not None:
                timeline.add(si, a, s, t, u, names)
        step_cycles.append(step_end - t_barrier)
        t_barrier = step_end
        if ops[0].phase == "prefill":
            prefill_end = step_end
    total = t_barrier
    busy, tern_by_unit, act, srd, swr = acc["busy"], acc["tern"], acc["act"], acc["srd"], acc["swr"]
    op_cycles = {k: int(v) for k, v in zip(_KINDS, acc["opc"], strict=True) if v}
    lm_macs, lm_bytes = acc["lm_macs"], acc["lm_bytes"]
    clk = cfg.clock_hz
    ds = dram_stats(sched.dstate)
    decode_cycles = total - prefill_end
    util = {name: (float(busy[i]) / total if total else 0.0) for i, (name, c) in enumerate(units) if c < C_DMAW}
    chans = cfg.dram.channels if cfg.dram.model == "lpddr" else 1
    util["dram"] = ds["busy_cycles"] / (chans * total) if total else 0.0
    stalls = {name: {r: int(sched.stall[i, j]) for j, r in enumerate(REASONS) if sched.stall[i, j]}
              for i, (name, _) in enumerate(units)}
    dram_bytes = {DRAM_CLASSES[i]: int(v) for i, v in enumerate(ds["bytes"].values())}
    activity = {
        "ternary_macs": int(act[M_TERN]), "int8_macs": int(act[M_INT8]), "fp4_macs": int(act[M_FP4]),
        "lop_elems": int(act[M_LOP]), "sfu_elems": int(act[M_SFU]),
        "ternary_macs_by_unit": {units[i][0]: int(v) for i, v in enumerate(tern_by_unit) if v},
        "busy_cycles": {units[i][0]: int(busy[i]) for i in range(nu) if units[i][1] < C_DMAW},
        "sram_read_bytes": {b: int(srd[i]) for i, b in enumerate(BUFFERS)},
        "sram_write_bytes": {b: int(swr[i]) for i, b in enumerate(BUFFERS)},
        "dram_bytes": dram_bytes, "dram_read_bytes": ds["read_bytes"], "dram_write_bytes": ds["write_bytes"],
    }
    dense, got, lopb = lop_tot["kv_dense_bytes"], lop_tot["kv_read_bytes"], lop_tot["lop_bytes"]
    lop = {"enabled": lop_on, "k": cfg.lop.k if lop_on else None, "data_driven": counts is not None,
           "surrogate_storage": cfg.lop.surrogate_storage, **lop_tot,
           "kv_bytes_saved": dense - got, "kv_reduction_x": (dense / got) if got else None,
           "kv_plus_lop_reduction_x": (dense / (got + lopb)) if got + lopb else None}
    D = trace.decode
    res = SimResult(
        model=m.name, hw=cfg.name, schedule=schedule, prefill_tokens=trace.prefill, decode_tokens=D,
        clock_hz=clk, cycles=int(total), prefill_cycles=int(prefill_end), decode_cycles=int(decode_cycles),
        prefill_latency_s=prefill_end / clk if trace.prefill else None,
        decode_tokens_per_s=(D / (decode_cycles / clk)) if D and decode_cycles else None,
        utilization=util, dram_bytes=dram_bytes, stalls=stalls, activity=activity, op_cycles=op_cycles,
        lop=lop, lm_head={"placement": cfg.lm_head, "macs": lm_macs, "weight_bytes_per_step": lm_bytes // max(1, len(steps)),
                          "note": "host: excluded from accelerator cycles" if cfg.lm_head == "host" else ""},
        dram={k: v for k, v in ds.items() if k != "bytes"}, instructions=n_instr,
        wall_s=time.perf_counter() - t_wall, notes=notes, step_cycles=step_cycles,
        timing={"lop_select_s": t_sel, "lower_s": t_low, "schedule_s": t_sch})
    return res


@njit_cached(lowbit.sim.lower, lowbit.sim.sched)  # freezes C_DMAW (sim.sched) and M_TERN (sim.lower) as constants
def _fold_kernel(main, mcls, macs, opi, rbuf, rbytes, rbuf2, rbytes2, wbuf, wbytes, s, t, u, kind_of_op,
                 busy, tern, act, srd, swr, opc):
    for i in range(main.shape[0]):
        if u[i] >= 0 and main[i] < C_DMAW:
            d = t[i] - s[i]
            busy[u[i]] += d
            opc[kind_of_op[opi[i]]] += d
            if mcls[i] == M_TERN:
                tern[u[i]] += macs[i]
        if mcls[i] >= 0:
            act[mcls[i]] += macs[i]
        if rbuf[i] >= 0:
            srd[rbuf[i]] += rbytes[i]
        if rbuf2[i] >= 0:
            srd[rbuf2[i]] += rbytes2[i]
        if wbuf[i] >= 0:
            swr[wbuf[i]] += wbytes[i]


def _fold(a: dict, s: np.ndarray, t: np.ndarray, u: np.ndarray, kinds: list[str], acc: dict) -> None:
    """Fold one chunk's (unit, start, end) records into the run's counters."""
    kind_of_op = np.asarray([_KINDS.index(k) for k in kinds] or [0], np.int64)
    _fold_kernel(a["main"], a["mcls"], a["macs"], a["opi"], a["rbuf"], a["rbytes"], a["rbuf2"], a["rbytes2"],
                 a["wbuf"], a["wbytes"], s, t, u, kind_of_op, acc["busy"], acc["tern"], acc["act"], acc["srd"],
                 acc["swr"], acc["opc"])




__all__ = ["simulate", "SimResult", "Timeline", "unit_list", "COLS"]
