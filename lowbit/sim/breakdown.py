"""Per-layer, per-op breakdown of a simulation: where the cycles go and what binds them.

Rows are (layer, op group): layer -1 holds the model-level ops (embedding, final norm, lm_head); op groups
(`GROUPS`) are the projections by role (q, k, v, o, gate, up, down; `linear` for an unnamed role),
`attention` (K/V reads and writes, QK^T and score.V on the INT8 core), `lop` (LO-code reads, scoring and
top-K of the attention op), the SFU ops by kind (rmsnorm, quantize, rope, softmax, activation, elementwise),
`embedding` and `lm_head`. Phases: prefill, decode (all decode steps) and any chosen decode steps alone.

Columns (per row and phase):
- critical-path cycles. Definition: walk back from the instruction that ends a forward step last; at each
  instruction step to its *binding predecessor*, the one that determined its start time (sim.sched: the
  latest-ending dependency, the unit's previous instruction when the unit was busy, the DMA queue's previous
  issue, the buffer allocation order or the buffer release that made room), until the step's start. Each
  instruction on that chain owns the cycles from its start (or the step's start) to the point where the
  chain left it; a DMA issued at the same cycle as its predecessor owns none. The chain covers the step
  without gaps, so the critical-path cycles of all rows add up to the step's cycles exactly, and over a
  phase to prefill_cycles / decode_cycles.
- critical-path cycles by constraint (what binds them): `compute` (a compute instruction the next one waited
  for because the unit was busy, or the step's last instruction), `dram` (a DMA: DRAM latency and bandwidth),
  `dependency` (a compute instruction whose result the next one needed: a serial chain, not throughput),
  `buffer` (an instruction whose end released SRAM buffer room a DMA waited for). The row's binding
  constraint is the largest; a row with no critical-path cycles is `overlapped` (hidden behind others).
- span cycles: per trace op, first start to last end of its compute instructions (its latency as a
  profiler shows a kernel), summed over the ops of the row.
- busy cycles per unit, DRAM bytes by class, work (MACs by format, LOP/SFU elements);
  operational intensity = MACs / DRAM bytes; achieved MAC/cycle = MACs / span cycles.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import lowbit.sim.isa
import lowbit.sim.sched
from lowbit.sim.errors import LowbitError
from lowbit.sim.isa import (
    ACTIVITY,
    C_DMAKV,
    C_DMAW,
    DRAM_CLASSES,
    SUB,
    UNIT_CLASS_BASE,
)
from lowbit.sim.nbcache import njit_cached
from lowbit.sim.sched import BIND_BUFFER, BIND_UNIT, Scheduled

GROUPS = ("embedding", "q", "k", "v", "o", "gate", "up", "down", "linear", "attention", "lop", "rmsnorm",
          "quantize", "rope", "softmax", "activation", "elementwise", "lm_head")
NG = len(GROUPS)
LABELS = ("compute", "dram", "dependency", "buffer")
L_COMPUTE, L_DRAM, L_DEP, L_BUFFER = range(4)
PROJ_ROLES = ("q", "k", "v", "o", "gate", "up", "down")
LOP_SUBS = (SUB["lop_dma"], SUB["lop_score"], SUB["lop_topk"])
MAC_WORK = tuple(i for i, w in enumerate(ACTIVITY) if w.endswith("_macs"))


def group_of(kind: str, role: str) -> int:
    """Op group of a trace op (LOP instructions of an attention op are regrouped by sub-kind)."""
    if kind in ("linear", "lm_head"):
        return GROUPS.index(role if kind == "linear" and role in PROJ_ROLES else
                            "lm_head" if kind == "lm_head" else "linear")
    if kind in ("attn_qk", "attn_av", "kv_append"):
        return GROUPS.index("attention")
    return GROUPS.index(kind) if kind in GROUPS else GROUPS.index("elementwise")


@njit_cached(lowbit.sim.sched)  # freezes BIND_* as constants
def _label(is_dma, bind):
    """Constraint of a chain segment: a DMA's is dram; a compute instruction's depends on why the next
    instruction on the chain waited for it (unit busy: compute; buffer room: buffer; its result: dependency)."""
    if is_dma:
        return L_DRAM
    if bind == BIND_UNIT:
        return L_COMPUTE
    if bind == BIND_BUFFER:
        return L_BUFFER
    return L_DEP


@njit_cached(lowbit.sim.sched)
def _walk(x, base, T, start, pred, bind, isdma, row, lid, lstart, lrow, ldma, lpre, out):
    """Add to `out` [rows, labels] the critical chain before instruction x (chunk-local index) starts."""
    cur = x
    tau = max(start[x], T)
    while tau > T:
        p = pred[cur]
        k = bind[cur]
        if p >= base:
            pi = p - base
            lo = max(start[pi], T)
            if tau > lo:
                out[row[pi], _label(isdma[pi], k)] += tau - lo
            tau = lo
            cur = pi
            continue
        j = np.searchsorted(lid, p) if p >= 0 else -1
        if j >= 0 and j < lid.shape[0] and lid[j] == p:
            lo = max(lstart[j], T)
            if tau > lo:
                out[lrow[j], _label(ldma[j], k)] += tau - lo
            if lstart[j] > T:
                out += lpre[j]
        elif tau > T:  # not reached in practice (the chain is gap-free); keep the sum exact
            out[row[cur], L_DEP] += tau - T
        break


@njit_cached(lowbit.sim.isa)  # freezes UNIT_CLASS_BASE and the DMA classes
def _accumulate(rows, key, key_row, main, s, t, u, nbytes, dcls, macs, mcls, busy, dbytes, work, span, lo, hi):
    """Per-row busy cycles per unit, DRAM bytes per class and work of one chunk; span (first compute start to
    last compute end) per op of the chunk (`key`: the op, LOP instructions apart), added to its row."""
    lo[:] = -1
    hi[:] = -1
    for i in range(main.shape[0]):
        r = rows[i]
        if main[i] >= UNIT_CLASS_BASE and u[i] >= 0:
            busy[r, u[i]] += t[i] - s[i]
            k = key[i]
            if lo[k] < 0 or s[i] < lo[k]:
                lo[k] = s[i]
            if t[i] > hi[k]:
                hi[k] = t[i]
        elif main[i] == C_DMAW or main[i] == C_DMAKV:
            dbytes[r, dcls[i]] += nbytes[i]
        if mcls[i] >= 0:
            work[r, mcls[i]] += macs[i]
    for k in range(key_row.shape[0]):
        if lo[k] >= 0:
            span[key_row[k]] += hi[k] - lo[k]


class _Acc:
    """Counters of one phase (or one step), indexed by row = (layer + 1) * NG + group."""

    def __init__(self, rows: int, n_units: int):
        self.path = np.zeros((rows, len(LABELS)), np.int64)
        self.busy = np.zeros((rows, n_units), np.int64)
        self.dbytes = np.zeros((rows, len(DRAM_CLASSES)), np.int64)
        self.work = np.zeros((rows, len(ACTIVITY)), np.int64)
        self.span = np.zeros(rows, np.int64)
        self.cycles = 0
        self.steps = 0

    def add(self, o: _Acc) -> None:
        for f in ("path", "busy", "dbytes", "work", "span"):
            getattr(self, f).__iadd__(getattr(o, f))
        self.cycles += o.cycles
        self.steps += o.steps


class Breakdown:
    """Observer of a simulation (lowbit.sim.engine.simulate(..., breakdown=)) that builds the breakdown
    described in the module docstring. `steps`: decode steps (trace step numbers) reported on their own."""

    def __init__(self, n_layers: int, units: list[tuple[str, int]], steps: tuple[int, ...] = ()):
        self.n_layers = n_layers
        self.units = [n for n, _ in units]
        self.rows = (n_layers + 1) * NG
        self.want = set(steps)
        self.phases: dict[str, _Acc] = {}
        self.chosen: dict[int, _Acc] = {}
        self._empty_live()

    def _empty_live(self) -> None:
        self.lid = np.zeros(0, np.int64)
        self.lstart = np.zeros(0, np.int64)
        self.lrow = np.zeros(0, np.int64)
        self.ldma = np.zeros(0, np.bool_)
        self.lpre = np.zeros((0, self.rows, len(LABELS)), np.int64)

    # ------------------------------------------------------------------------------------ observer

    def begin_step(self, step: int, t_barrier: int) -> None:
        self.cur = _Acc(self.rows, len(self.units))
        self.t0 = t_barrier
        self.last_end = t_barrier
        self.last_row = -1
        self.last_dma = False
        self.last_start = t_barrier
        self.last_pre = np.zeros((self.rows, len(LABELS)), np.int64)
        self.phase = ""
        self.trace_step = 0
        self._empty_live()

    def add(self, rec: Scheduled, sched: Any, ext_id: int) -> None:
        a = rec.cols
        self.phase, self.trace_step = rec.phase, rec.trace_step
        grp = np.array([group_of(k, r) for k, r in zip(rec.kinds, rec.roles, strict=True)] or [0], np.int64)
        r0 = (max(rec.layer, -1) + 1) * NG
        lop = np.isin(a["sub"], LOP_SUBS)
        rows = r0 + grp[a["opi"]]
        rows[lop] = r0 + GROUPS.index("lop")
        key = 2 * a["opi"] + lop
        key_row = np.repeat(r0 + grp, 2)
        key_row[1::2] = r0 + GROUPS.index("lop")
        c = self.cur
        lo, hi = np.empty(len(key_row), np.int64), np.empty(len(key_row), np.int64)
        _accumulate(rows, key, key_row, a["main"], rec.start, rec.end, rec.unit, a["nbytes"], a["dcls"], a["macs"],
                    a["mcls"], c.busy, c.dbytes, c.work, c.span, lo, hi)
        isdma = (a["main"] == C_DMAW) | (a["main"] == C_DMAKV)
        n = len(a["main"])
        # the step's last-ending instruction so far (first of equals), with the chain before it
        if n and int(rec.end.max()) > self.last_end:
            x = int(np.argmax(rec.end))
            pre = np.zeros((self.rows, len(LABELS)), np.int64)
            _walk(x, rec.base, self.t0, rec.start, rec.pred, rec.bind, isdma, rows, self.lid, self.lstart,
                  self.lrow, self.ldma, self.lpre, pre)
            self.last_end, self.last_start = int(rec.end[x]), int(rec.start[x])
            self.last_row, self.last_dma, self.last_pre = int(rows[x]), bool(isdma[x]), pre
        # instructions later chunks can bind to: keep their start, row and the chain before them
        ids = sched.live_ids()
        if ext_id >= 0:
            ids = np.union1d(ids, [ext_id])
        k = len(ids)
        nid, nst, nrow = np.zeros(k, np.int64), np.zeros(k, np.int64), np.zeros(k, np.int64)
        ndma = np.zeros(k, np.bool_)
        npre = np.zeros((k, self.rows, len(LABELS)), np.int64)
        m = 0
        for g in ids.tolist():
            if g >= rec.base + n:
                continue
            if g >= rec.base:
                x = g - rec.base
                _walk(x, rec.base, self.t0, rec.start, rec.pred, rec.bind, isdma, rows, self.lid, self.lstart,
                      self.lrow, self.ldma, self.lpre, npre[m])
                nst[m], nrow[m], ndma[m] = rec.start[x], rows[x], isdma[x]
            else:
                j = int(np.searchsorted(self.lid, g))
                if j >= len(self.lid) or self.lid[j] != g:
                    continue  # an instruction of an earlier step: the chain stops at the step's start
                nst[m], nrow[m], ndma[m], npre[m] = self.lstart[j], self.lrow[j], self.ldma[j], self.lpre[j]
            nid[m] = g
            m += 1
        self.lid, self.lstart, self.lrow, self.ldma, self.lpre = nid[:m], nst[:m], nrow[:m], ndma[:m], npre[:m]

    def end_step(self, step: int, step_end: int) -> None:
        c = self.cur
        if self.last_row >= 0:
            lo = max(self.last_start, self.t0)
            c.path += self.last_pre
            c.path[self.last_row, L_DRAM if self.last_dma else L_COMPUTE] += step_end - lo
        c.cycles, c.steps = step_end - self.t0, 1
        self.phases.setdefault(self.phase, _Acc(self.rows, len(self.units))).add(c)
        if self.phase == "decode" and self.trace_step in self.want:
            self.chosen[self.trace_step] = c
        self._empty_live()

    # ------------------------------------------------------------------------------------ result

    def result(self) -> dict[str, Any]:
        """{"definition", "groups", "constraints", "phases": {name: table}}; names: prefill, decode,
        "decode step N"; a table = {"cycles", "steps", "rows": [...], "by_op": [...], "by_layer": [...]}."""
        out: dict[str, Any] = {"definition": __doc__.split("Columns (per row and phase):")[1].strip(),
                               "groups": list(GROUPS), "constraints": list(LABELS), "phases": {}}
        for name, acc in self.phases.items():
            out["phases"][name] = self._table(acc)
        for s in sorted(self.chosen):
            out["phases"][f"decode step {s}"] = self._table(self.chosen[s])
        return out

    def _table(self, acc: _Acc) -> dict[str, Any]:
        L = self.n_layers + 1
        rows = []
        for r in range(self.rows):
            rec = self._row(acc, [r])
            if rec is not None:
                rows.append({"layer": r // NG - 1, "op": GROUPS[r % NG], **rec})
        by_op = []
        for g in range(NG):
            rec = self._row(acc, [lay * NG + g for lay in range(L)])
            if rec is not None:
                by_op.append({"op": GROUPS[g], **rec})
        by_layer = []
        for lay in range(L):
            rec = self._row(acc, list(range(lay * NG, (lay + 1) * NG)))
            if rec is not None:
                by_layer.append({"layer": lay - 1, **rec})
        return {"cycles": int(acc.cycles), "steps": acc.steps, "rows": rows, "by_op": by_op, "by_layer": by_layer}

    def _row(self, acc: _Acc, rs: list[int]) -> dict[str, Any] | None:
        path = acc.path[rs].sum(axis=0)
        busy = acc.busy[rs].sum(axis=0)
        db = acc.dbytes[rs].sum(axis=0)
        work = acc.work[rs].sum(axis=0)
        span = int(acc.span[rs].sum())
        if not (path.any() or busy.any() or db.any() or work.any()):
            return None
        macs = int(work[list(MAC_WORK)].sum())
        dram = int(db.sum())
        cp = int(path.sum())
        return {
            "critical_path_cycles": cp,
            "critical_path_share": cp / acc.cycles if acc.cycles else 0.0,
            "critical_path_by_constraint": {lab: int(v) for lab, v in zip(LABELS, path, strict=True)},
            "binding": LABELS[int(np.argmax(path))] if cp else "overlapped",
            "span_cycles": span,
            "busy_cycles": {u: int(v) for u, v in zip(self.units, busy, strict=True) if v},
            "dram_bytes": {c: int(v) for c, v in zip(DRAM_CLASSES, db, strict=True)},
            "work": {w: int(v) for w, v in zip(ACTIVITY, work, strict=True) if v},
            "macs": macs,
            "operational_intensity": macs / dram if dram else None,
            "achieved_macs_per_cycle": macs / span if span else None,
        }


# ------------------------------------------------------------------------------------ text


def decode_steps(text: str, decode: int) -> tuple[int, ...]:
    """`--breakdown-steps '1,128'`: decode step numbers, each in 1..decode."""
    out = []
    for p in filter(None, (x.strip() for x in text.split(","))):
        if not p.isdigit() or not 1 <= int(p) <= decode:
            raise LowbitError(f"--breakdown-steps {text!r}: '{p}' is not a decode step (1..{decode})")
        out.append(int(p))
    return tuple(out)


def _cells(x: dict[str, Any], cycles: int) -> list[str]:
    cp = x["critical_path_cycles"]
    by = x["critical_path_by_constraint"]
    bind = f"{x['binding']} {100 * by[x['binding']] / cp:.0f} %" if cp else x["binding"]
    busy = max(x["busy_cycles"].items(), key=lambda kv: kv[1], default=None)
    oi = x["operational_intensity"]
    ach = x["achieved_macs_per_cycle"]
    return [f"{cp:,}", f"{100 * cp / cycles:.1f} %" if cycles else "-", bind, f"{x['span_cycles']:,}",
            f"{busy[0]} {busy[1]:,}" if busy else "-", _bytes(sum(x["dram_bytes"].values())),
            f"{x['macs']:,}" if x["macs"] else "-", f"{oi:.2f}" if oi else "-", f"{ach:.1f}" if ach else "-"]


def _bytes(n: int) -> str:
    return "-" if not n else f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n / 1e3:,.1f} kB"


HEADERS = ["critical-path cycles", "share", "binding (its share)", "span cycles", "busiest unit (busy cycles)",
           "DRAM bytes", "MACs", "MAC/byte", "MAC/cycle"]


def markdown(result: dict[str, Any], phase: str, by: str = "by_op") -> str:
    """One breakdown table (`by`: by_op, by_layer or rows) of a phase as Markdown."""
    tab = result["phases"][phase]
    key = {"by_op": ["op"], "by_layer": ["layer"], "rows": ["layer", "op"]}[by]
    lines = ["| " + " | ".join(key + HEADERS) + " |", "|" + "---|" * (len(key) + len(HEADERS))]
    for x in tab[by]:
        lines.append("| " + " | ".join([str(x[k]) for k in key] + _cells(x, tab["cycles"])) + " |")
    return "\n".join(lines)


def print_breakdown(result: dict[str, Any], console: Any) -> None:
    """Rich tables: per op for every phase, per layer for decode (and prefill when there is no decode)."""
    from rich.table import Table

    for phase, tab in result["phases"].items():
        for by in ("by_op", "by_layer") if phase in ("decode", "prefill") else ("by_op",):
            if by == "by_layer" and phase == "prefill" and "decode" in result["phases"]:
                continue
            t = Table(title=f"breakdown, {phase} ({tab['steps']} step(s), {tab['cycles']:,} cycles), "
                            f"{'per op' if by == 'by_op' else 'per layer (-1: model-level ops)'}")
            t.add_column("op" if by == "by_op" else "layer")
            for h in HEADERS:
                t.add_column(h, justify="right")
            for x in tab[by]:
                t.add_row(str(x["op"] if by == "by_op" else x["layer"]), *_cells(x, tab["cycles"]))
            console.print(t)
    console.print("[dim]critical-path cycles: the chain of binding predecessors back from each step's last "
                  "instruction; they add up to the phase's cycles (lowbit.sim.breakdown)[/dim]")


__all__ = ["Breakdown", "GROUPS", "LABELS", "group_of", "markdown", "print_breakdown"]
