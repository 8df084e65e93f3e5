"""Event-driven list scheduler over the accelerator's units (numba-compiled hot loop).

Input: one *chunk* of tile instructions (sim.isa: classes, fields and their meaning; built by sim.lower, one
forward step or one decoder layer) as parallel int64 arrays, in priority order.

Scheduling rule: every instruction runs on the physical unit the program names (`unit`, fixed by the
compiler's static assignment, sim.tiling.UnitAssigner), and each unit executes its own instructions in
program order, so the schedule is what per-unit in-order queue controllers produce:
    start = max(all dependencies' end, barrier, the unit's previous instruction [, buffer room])
A compute unit is busy start -> end with end = start + cycles (the sim.units formula "cycles(start -> done)";
a unit accepts its next tile after `done`). A DMA queue issues requests in its program order (issue times
non-decreasing) with many in flight; their completion comes from the DRAM model (sim.dram.dram_access), which
owns bus/bank occupancy. Every SRAM buffer is a ring (sim.sram): allocations take bytes in allocation order
and bytes return in allocation order too (an allocation's bytes come back once it and every earlier one of
its buffer are released), so a DMA that allocates `alloc` bytes waits until capacity minus the bytes not yet
returned leaves room. Deterministic: no randomness, no dictionaries, ties broken by index.

What a controller knows (the causality audit; docs/isa.md "Causality"):
- unit choice: static, in the program (no "whichever unit finishes first");
- dependencies, barrier, unit availability: each is an event the controller observes at or before the start
  cycle (a scoreboard token, the step fence, its own unit's done);
- buffer room: the ring's head/tail pointers; the simulator evaluates the room rule in program order, which
  equals the hardware's rule as long as every release that comes before an allocation in time also comes
  before it in program order. The lowering keeps every buffer's consumers in program order after their DMA,
  and an allocation that would need a release later in the program is refused (program error);
- DRAM: requests reach the DRAM model in program order across the two DMA queues, not in issue-time order
  (a SIMULATOR APPROXIMATION: between the two queues a memory-port arbiter serves by time; the DRAM model
  reorders nothing, so a request listed first but issued later can take a bank first).

Idle and stall accounting. When a unit starts an instruction of step s at `a`, later than it became free
at `f`, the gap [f, a) is split at the step's start T (the end of step s-1) when f < T < a:
- [T, a) (or the whole gap when it lies on one side of T) is a *stall*, charged to the binding constraint:
  data (a compute/SFU result), memory (a DMA result), step (token barrier) or buffer (DMA waiting for SRAM
  room);
- [f, T) is *step_barrier* (a stall) when the unit ran an instruction in step s-1 (it waits for the token
  it works on), and *idle* otherwise: the unit had nothing to do (e.g. the LOP unit through prefill).
After the last instruction, `finish(total)` charges each unit's tail as idle. For a compute unit
busy + stalls + idle = total cycles exactly (every cycle is in exactly one bucket).

Binding predecessors (for critical-path analysis, lowbit.sim.breakdown): each instruction records the
instruction that determined its start (`last_pred`, a run-wide instruction id: chunk base + index) and why
(`last_bind`, BIND_*): a dependency's end, the unit's previous instruction (the unit was busy), the DMA
queue's previous issue, the buffer allocation order, the buffer release that made room, or the step barrier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

import lowbit.sim.dram
import lowbit.sim.isa
from lowbit.sim.dram import access, check_times
from lowbit.sim.isa import (
    C_DMAKV,
    C_DMAW,
    C_JOIN,
    EXT,
    R_BUFFER,
    R_DATA,
    R_MEM,
    R_STEP,
    REASONS,
    SCHED_COLS,
    class_name,
)
from lowbit.sim.nbcache import njit_cached

MAXLIVE = 256  # live allocations per buffer pool
# Why an instruction started when it did (`Scheduler.last_bind`).
BIND_NONE, BIND_DATA, BIND_BARRIER, BIND_UNIT, BIND_QUEUE, BIND_BUFORDER, BIND_BUFFER = range(7)
BINDS = ("none", "data", "barrier", "unit", "queue", "buffer_order", "buffer")


@njit(inline="always")  # inlined into _kernel (a call per instruction costs more than the body)
def _charge(stall, idle, ustep, u, f, a, t_barrier, si, reason):
    """Charge the gap [f, a) of unit u (module docstring: idle vs stall)."""
    if a <= f:
        return
    p = f
    if f < t_barrier < a:
        p = t_barrier
    stall[u, reason] += a - p
    if p > f:
        if ustep[u] == si - 1:
            stall[u, R_STEP] += p - f
        else:
            idle[u] += p - f


# Cache keyed on sched.py + dram.py (its access() is inlined) + isa.py (fixed-class and reason constants are
# frozen in). Compute classes are handled generically: the last branch serves every class >= UNIT_CLASS_BASE.
@njit_cached(lowbit.sim.dram, lowbit.sim.isa)
def _kernel(main, unit, cyc, nbytes, addr, wr, dcls, buf, alloc, free_of, dep0, dep1, dep2, jlo, jhi,
            barrier, t_barrier, t_ext, ucls, ufree, buf_cap, blast, live_rel, live_bytes, live_owner, live_n,
            dparams, dstate, o_start, o_end, o_unit, o_reason, stall, idle, ustep, ulast, live_frid, blast_id,
            si, gid, start, ext_id, o_pred, o_bind):
    n = main.shape[0]
    nu = ucls.shape[0]
    for i in range(start, n):
        c = main[i]
        ready = np.int64(0)
        reason = R_DATA
        pred = np.int64(-1)
        bind = BIND_NONE
        if barrier[i] != 0:
            ready = t_barrier
            reason = R_STEP
            bind = BIND_BARRIER
        for k in range(3):
            if k == 0:
                d = dep0[i]
            elif k == 1:
                d = dep1[i]
            else:
                d = dep2[i]
            if d >= 0 and o_end[d] > ready:
                ready = o_end[d]
                reason = o_reason[d]
                pred = gid[d]
                bind = BIND_DATA
            elif d == EXT and t_ext > ready:
                ready = t_ext
                reason = R_DATA
                pred = ext_id
                bind = BIND_DATA if ext_id >= 0 else BIND_BARRIER
        if c == C_JOIN:
            t = ready
            for j in range(jlo[i], jhi[i]):
                if o_end[j] > t:
                    t = o_end[j]
                    reason = o_reason[j]
                    pred = gid[j]
                    bind = BIND_DATA
            o_start[i] = t
            o_end[i] = t
            o_unit[i] = -1
            o_reason[i] = reason
            o_pred[i] = pred
            o_bind[i] = bind
        elif c == C_DMAW or c == C_DMAKV:
            u = unit[i]
            if u < 0:  # the class's DMA engine (one per class: nothing to choose)
                for v in range(nu):
                    if ucls[v] == c:
                        u = v
                        break
            if u < 0 or u >= nu or ucls[u] != c:
                return -(i + 1)
            t = max(ready, ufree[u])
            if ufree[u] > ready:
                pred = ulast[u]
                bind = BIND_QUEUE
            _charge(stall, idle, ustep, u, ufree[u], t, t_barrier, si, reason)
            b = buf[i]
            if b >= 0 and alloc[i] > 0:
                need = alloc[i]
                t0 = t
                if blast[b] > t:  # a buffer allocates in list order (ring/FIFO allocator)
                    t = blast[b]
                    pred = blast_id[b]
                    bind = BIND_BUFORDER
                while True:
                    # ring: an entry's bytes return at the latest release of it and every earlier entry
                    used = np.int64(0)
                    nxt = np.int64(-1)
                    nxt_id = np.int64(-1)
                    eff = np.int64(0)
                    eff_id = np.int64(-1)
                    pending = False
                    for e in range(live_n[b]):
                        r = live_rel[b, e]
                        if pending or r < 0:
                            pending = True
                            used += live_bytes[b, e]
                            continue
                        if r > eff:
                            eff = r
                            eff_id = live_frid[b, e]
                        if eff > t:
                            used += live_bytes[b, e]
                            if nxt < 0:
                                nxt = eff
                                nxt_id = eff_id
                    if used + need <= buf_cap[b]:
                        break
                    if nxt < 0:
                        return -(i + 1)  # room only after a release later in the program (program error)
                    t = nxt
                    pred = nxt_id
                    bind = BIND_BUFFER
                if t > t0:
                    stall[u, R_BUFFER] += t - t0
                # drop the prefix of entries whose bytes have returned by now (later allocations start at >= t)
                blast[b] = t
                blast_id[b] = gid[i]
                m = 0
                eff = np.int64(0)
                keep = False
                for e in range(live_n[b]):
                    r = live_rel[b, e]
                    if r < 0:
                        keep = True
                    elif r > eff:
                        eff = r
                    if eff > t:
                        keep = True
                    if keep:
                        live_rel[b, m] = r
                        live_bytes[b, m] = live_bytes[b, e]
                        live_owner[b, m] = live_owner[b, e]
                        live_frid[b, m] = live_frid[b, e]
                        m += 1
                if m >= live_rel.shape[1]:
                    return -(i + 1)
                live_rel[b, m] = -1
                live_bytes[b, m] = need
                live_owner[b, m] = gid[i]
                live_frid[b, m] = -1
                live_n[b] = m + 1
            done = access(dparams, dstate, addr[i], nbytes[i], float(t), wr[i] != 0, dcls[i])
            e_ = np.int64(np.ceil(done))
            if e_ < t:
                e_ = t
            o_start[i] = t
            o_end[i] = e_
            o_unit[i] = u
            o_reason[i] = R_MEM
            o_pred[i] = pred
            o_bind[i] = bind
            ufree[u] = t
            ulast[u] = gid[i]
            ustep[u] = si
        else:
            best = unit[i]
            if best < 0 or best >= nu or ucls[best] != c:
                return -(i + 1)  # no unit assigned, or one of another class
            bst = max(ready, ufree[best])
            bfin = bst + cyc[i]
            if ufree[best] > ready:
                pred = ulast[best]
                bind = BIND_UNIT
            _charge(stall, idle, ustep, best, ufree[best], bst, t_barrier, si, reason)
            o_start[i] = bst
            o_end[i] = bfin
            o_unit[i] = best
            o_reason[i] = R_DATA
            o_pred[i] = pred
            o_bind[i] = bind
            ufree[best] = bfin
            ulast[best] = gid[i]
            ustep[best] = si
        f = free_of[i]
        if f >= 0:
            b = buf[f]
            for e in range(live_n[b]):
                if live_owner[b, e] == gid[f] and live_rel[b, e] < 0:
                    live_rel[b, e] = o_end[i]
                    live_owner[b, e] = -1
                    live_frid[b, e] = gid[i]
                    break
    return 0


class Scheduler:
    """Scheduler state carried across chunks (unit free times, buffer pools, DRAM state, idle/stall counters).

    After `run`, `last_pred` / `last_bind` hold each instruction's binding predecessor (a run-wide id, -1:
    none) and its kind (BIND_*); `stall` and `idle` accumulate per unit (module docstring)."""

    def __init__(self, unit_classes: list[int], buf_cap: np.ndarray, dparams: np.ndarray, dstate: np.ndarray):
        self.ucls = np.asarray(unit_classes, np.int64)
        nu = len(unit_classes)
        self.ufree = np.zeros(nu, np.int64)
        self.buf_cap = np.asarray(buf_cap, np.int64)
        nb = len(buf_cap)
        self.live_rel = np.zeros((nb, MAXLIVE), np.int64)
        self.live_bytes = np.zeros((nb, MAXLIVE), np.int64)
        self.live_owner = np.zeros((nb, MAXLIVE), np.int64)
        self.live_frid = np.full((nb, MAXLIVE), -1, np.int64)
        self.live_n = np.zeros(nb, np.int64)
        self.blast = np.zeros(nb, np.int64)
        self.blast_id = np.full(nb, -1, np.int64)
        self.dparams = dparams
        self.dstate = dstate
        self.stall = np.zeros((nu, len(REASONS)), np.float64)
        self.idle = np.zeros(nu, np.float64)
        self.ustep = np.full(nu, -2, np.int64)  # step of each unit's last instruction (-2: none yet)
        self.ulast = np.full(nu, -1, np.int64)  # id of each unit's last instruction
        self.last_pred = np.zeros(0, np.int64)
        self.last_bind = np.zeros(0, np.int64)

    def run(self, a: dict[str, np.ndarray], t_barrier: int, t_ext: int = 0, *, step: int = 0, base: int = 0,
            ext_id: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Schedule one chunk of step `step`, whose instruction 0 has run-wide id `base` (`ext_id`: the id of
        the instruction that produces the chunk's input at `t_ext`); returns (start, end, unit) per
        instruction. Raises RuntimeError on a lowering inconsistency (an instruction no unit can run, or a
        buffer allocation that can never be satisfied)."""
        # owners are run-wide ids: entries from earlier chunks must already be released
        self.live_owner[:] = -1
        if np.any(self.live_rel[np.arange(MAXLIVE)[None, :] < self.live_n[:, None]] < 0):
            raise RuntimeError("scheduler: buffer allocation still live across a step boundary")
        n = len(a["main"])
        gid = base + np.arange(n, dtype=np.int64)
        return self.run_window(a, 0, gid, np.zeros(n, np.int64), np.zeros(n, np.int64), t_barrier, t_ext,
                               step=step, ext_id=ext_id)

    def run_window(self, a: dict[str, np.ndarray], start: int, gid: np.ndarray, o_end: np.ndarray,
                   o_reason: np.ndarray, t_barrier: int, t_ext: int, *, step: int, ext_id: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Schedule instructions start.. of `a`, whose rows before `start` were scheduled already (their end
        and binding reason given in o_end / o_reason; lowbit.sim.window); `gid` is every row's run-wide id.
        Buffer allocations stay live across calls. Returns (start, end, unit) of rows start..; the ends and
        reasons are written into o_end / o_reason."""
        n = len(a["main"])
        o_start = np.zeros(n, np.int64)
        o_unit = np.zeros(n, np.int64)
        o_pred = np.full(n, -1, np.int64)
        o_bind = np.zeros(n, np.int64)
        rc = _kernel(*(a[f] for f in SCHED_COLS), np.int64(t_barrier), np.int64(t_ext), self.ucls, self.ufree,
                     self.buf_cap, self.blast, self.live_rel, self.live_bytes, self.live_owner, self.live_n,
                     self.dparams, self.dstate, o_start, o_end, o_unit, o_reason, self.stall, self.idle, self.ustep,
                     self.ulast, self.live_frid, self.blast_id, np.int64(step), gid, np.int64(start),
                     np.int64(ext_id), o_pred, o_bind)
        if rc != 0:
            i = -rc - 1
            raise RuntimeError(f"scheduler: instruction {int(gid[i])} (class {class_name(int(a['main'][i]))}) "
                               "cannot be scheduled")
        # overflow guard: a time beyond the exact range is an error, never a wrapped (smaller) cycle count
        check_times(o_end[start:], self.dparams, self.dstate)
        self.last_pred, self.last_bind = o_pred[start:], o_bind[start:]
        return o_start[start:], o_end[start:], o_unit[start:]

    def finish(self, total: int) -> None:
        """Charge every unit's time after its last instruction up to `total` as idle."""
        self.idle += np.maximum(0, total - self.ufree)

    def live_ids(self) -> np.ndarray:
        """Ids of the instructions a later chunk can still bind to (units' last instructions, buffer
        allocation order, pending releases)."""
        rows = np.arange(MAXLIVE)[None, :] < self.live_n[:, None]
        ids = np.concatenate([self.ulast, self.blast_id, self.live_frid[rows]])
        return np.unique(ids[ids >= 0])


@dataclass
class Scheduled:
    """One scheduled chunk as the run's observers (timelines, breakdown) see it: the lowered columns
    (sim.isa), its ops (`opi` indexes names/kinds/roles), where it sits in the run, and the schedule:
    per-instruction start, end, unit (-1: none), binding predecessor id and kind (BIND_*)."""

    cols: dict[str, np.ndarray]
    names: list[str]
    kinds: list[str]
    roles: list[str]
    step: int            # forward step (0..), in trace order
    phase: str           # "prefill" or "decode"
    trace_step: int      # the trace's step number (prefill 0, decode 1..D)
    layer: int           # decoder layer of the chunk, -1: model-level ops (embedding, final norm, lm_head)
    base: int            # run-wide id of instruction 0
    t_barrier: int       # the step's start (end of the previous step)
    start: np.ndarray
    end: np.ndarray
    unit: np.ndarray
    pred: np.ndarray
    bind: np.ndarray
