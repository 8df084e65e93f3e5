"""Event-driven list scheduler over the accelerator's units (numba-compiled hot loop).

Input: one *chunk* of tile instructions (sim.isa: classes, fields and their meaning; built by sim.lower, one
forward step or one decoder layer) as parallel int64 arrays, in priority order.

Scheduling rule (list scheduling, static priority = list order): each instruction, in list order, starts at
    start = max(all dependencies' end, barrier, earliest free time of the chosen unit[, buffer room])
and on a compute class picks, among the units of its class(es), the one that finishes it first (ties: lowest
unit index). A compute unit is busy start -> end with end = start + cycles (the sim.units formula
"cycles(start -> done)"; a unit accepts its next tile after `done`). A DMA queue issues requests in its list
order (issue times non-decreasing) with many in flight, and each buffer allocates in list order; their completion comes from the DRAM model
(sim.dram.dram_access), which owns bus/bank occupancy. A DMA that allocates buffer bytes waits until the
buffer pool (full capacity; see sim.sram) has room given the release times of earlier allocations.
Deterministic: no randomness, no dictionaries, ties broken by index.

Stall accounting: when a unit starts an instruction later than it became free, the gap is charged to the
binding constraint: data (a compute/SFU result), memory (a DMA result), step (token barrier) or buffer
(DMA waiting for SRAM room).
"""

from __future__ import annotations

import numpy as np

import lowbit.sim.dram
import lowbit.sim.isa
from lowbit.sim.dram import dram_access
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


# Cache keyed on sched.py + dram.py (dram_access is compiled in) + isa.py (fixed-class and reason constants are
# frozen in). Compute classes are handled generically: the last branch serves every class >= UNIT_CLASS_BASE.
@njit_cached(lowbit.sim.dram, lowbit.sim.isa)
def _kernel(main, alt, cyc, cyc_alt, nbytes, addr, wr, dcls, buf, alloc, free_of, dep0, dep1, dep2, jlo, jhi,
            barrier, t_barrier, t_ext, ucls, ufree, buf_cap, blast, live_rel, live_bytes, live_owner, live_n,
            dparams, dstate, o_start, o_end, o_unit, o_reason, stall):
    n = main.shape[0]
    nu = ucls.shape[0]
    for i in range(n):
        c = main[i]
        ready = np.int64(0)
        reason = R_DATA
        if barrier[i] != 0:
            ready = t_barrier
            reason = R_STEP
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
            elif d == EXT and t_ext > ready:
                ready = t_ext
                reason = R_DATA
        if c == C_JOIN:
            t = ready
            for j in range(jlo[i], jhi[i]):
                if o_end[j] > t:
                    t = o_end[j]
                    reason = o_reason[j]
            o_start[i] = t
            o_end[i] = t
            o_unit[i] = -1
            o_reason[i] = reason
        elif c == C_DMAW or c == C_DMAKV:
            u = -1
            for v in range(nu):
                if ucls[v] == c:
                    u = v
                    break
            if u < 0:
                return -(i + 1)
            t = max(ready, ufree[u])
            if ready > ufree[u]:
                stall[u, reason] += ready - ufree[u]
            b = buf[i]
            if b >= 0 and alloc[i] > 0:
                need = alloc[i]
                t0 = t
                if blast[b] > t:  # a buffer allocates in list order (ring/FIFO allocator)
                    t = blast[b]
                while True:
                    used = np.int64(0)
                    nxt = np.int64(-1)
                    for e in range(live_n[b]):
                        r = live_rel[b, e]
                        if r < 0 or r > t:
                            used += live_bytes[b, e]
                        if r > t and (nxt < 0 or r < nxt):
                            nxt = r
                    if used + need <= buf_cap[b]:
                        break
                    if nxt < 0:
                        return -(i + 1)  # would wait for a release that is never scheduled (lowering bug)
                    t = nxt
                if t > t0:
                    stall[u, R_BUFFER] += t - t0
                # drop entries released by now (later allocations of this buffer start at >= t)
                blast[b] = t
                m = 0
                for e in range(live_n[b]):
                    r = live_rel[b, e]
                    if r < 0 or r > t:
                        live_rel[b, m] = r
                        live_bytes[b, m] = live_bytes[b, e]
                        live_owner[b, m] = live_owner[b, e]
                        m += 1
                if m >= live_rel.shape[1]:
                    return -(i + 1)
                live_rel[b, m] = -1
                live_bytes[b, m] = need
                live_owner[b, m] = i
                live_n[b] = m + 1
            done = dram_access(dparams, dstate, addr[i], nbytes[i], float(t), wr[i] != 0, dcls[i])
            e_ = np.int64(np.ceil(done))
            if e_ < t:
                e_ = t
            o_start[i] = t
            o_end[i] = e_
            o_unit[i] = u
            o_reason[i] = R_MEM
            ufree[u] = t
        else:
            best = -1
            bst = np.int64(0)
            bfin = np.int64(0)
            for v in range(nu):
                cv = ucls[v]
                if cv == c:
                    cy = cyc[i]
                elif cv == alt[i] and alt[i] >= 0:
                    cy = cyc_alt[i]
                else:
                    continue
                st = max(ready, ufree[v])
                fin = st + cy
                if best < 0 or fin < bfin:
                    best = v
                    bst = st
                    bfin = fin
            if best < 0:
                return -(i + 1)
            if bst > ufree[best]:
                stall[best, reason] += bst - ufree[best]
            o_start[i] = bst
            o_end[i] = bfin
            o_unit[i] = best
            o_reason[i] = R_DATA
            ufree[best] = bfin
        f = free_of[i]
        if f >= 0:
            b = buf[f]
            for e in range(live_n[b]):
                if live_owner[b, e] == f and live_rel[b, e] < 0:
                    live_rel[b, e] = o_end[i]
                    live_owner[b, e] = -1
                    break
    return 0


class Scheduler:
    """Scheduler state carried across chunks (unit free times, buffer pools, DRAM state)."""

    def __init__(self, unit_classes: list[int], buf_cap: np.ndarray, dparams: np.ndarray, dstate: np.ndarray):
        self.ucls = np.asarray(unit_classes, np.int64)
        self.ufree = np.zeros(len(unit_classes), np.int64)
        self.buf_cap = np.asarray(buf_cap, np.int64)
        nb = len(buf_cap)
        self.live_rel = np.zeros((nb, MAXLIVE), np.int64)
        self.live_bytes = np.zeros((nb, MAXLIVE), np.int64)
        self.live_owner = np.zeros((nb, MAXLIVE), np.int64)
        self.live_n = np.zeros(nb, np.int64)
        self.blast = np.zeros(nb, np.int64)
        self.dparams = dparams
        self.dstate = dstate
        self.stall = np.zeros((len(unit_classes), len(REASONS)), np.float64)

    def run(self, a: dict[str, np.ndarray], t_barrier: int, t_ext: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Schedule one chunk; returns (start, end, unit) per instruction. Raises RuntimeError on a lowering
        inconsistency (an instruction no unit can run, or a buffer allocation that can never be satisfied)."""
        n = len(a["main"])
        o_start = np.zeros(n, np.int64)
        o_end = np.zeros(n, np.int64)
        o_unit = np.zeros(n, np.int64)
        o_reason = np.zeros(n, np.int64)
        # owners are chunk-local indices: entries from earlier chunks must already be released
        self.live_owner[:] = -1
        if np.any(self.live_rel[np.arange(MAXLIVE)[None, :] < self.live_n[:, None]] < 0):
            raise RuntimeError("scheduler: buffer allocation still live across a step boundary")
        rc = _kernel(*(a[f] for f in SCHED_COLS), np.int64(t_barrier), np.int64(t_ext), self.ucls, self.ufree, self.buf_cap, self.blast,
                     self.live_rel, self.live_bytes, self.live_owner, self.live_n, self.dparams, self.dstate,
                     o_start, o_end, o_unit, o_reason, self.stall)
        if rc != 0:
            i = -rc - 1
            raise RuntimeError(f"scheduler: instruction {i} (class {class_name(int(a['main'][i]))}) cannot be scheduled")
        return o_start, o_end, o_unit
