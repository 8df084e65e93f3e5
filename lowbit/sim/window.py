"""Scheduling a chunk window by window, so that memory does not grow with the chunk (a long prompt's decoder
layer lowers to ~10^5-10^8 tile instructions).

The lowering hands a chunk's instructions to a `WindowRun` (the sim.isa.WindowSink of the engine) in windows
of W instructions while it emits them (sim.isa.Emitter with a sink). Each window is assigned to units
(sim.tiling.UnitAssigner, its load carried across the chunk's windows), scheduled (sim.sched.Scheduler
.run_window) and folded into the run's counters at once; afterwards only what later instructions of the chunk
can still refer to is kept:
- the previous window (its columns, ends and binding reasons): references reach at most one window back
  (every local reference of the lowering, e.g. a tile to its weight DMA, a spilled token chunk's join to its
  activation read, spans fewer than W instructions);
- every instruction the lowering hands on to later ops (joins, SFU and LOP results, DRAM writes; not the
  online-softmax SFU passes, sub-kind softmax, which only their query block's next instructions use): its
  end, binding reason and id (a few per op and KV head, not per tile);
- per open join range (Emitter.mark / a block's joins), the running maximum of the ends of its instructions
  that have left the previous window: the join's range is split into that value (given to the scheduler as
  the join's dependency: the same start, binding reason and binding instruction, since the scheduler takes
  the first strictly later end in program order) and the part still held.
The schedule is therefore exactly the one of the whole chunk at once: the same instructions in the same order
with the same dependencies. A reference to an instruction that was not kept is an error, never a guess.
"""

from __future__ import annotations

import time

import numpy as np

import lowbit.sim.isa
from lowbit.sim.isa import C_DMAKV, C_DMAW, C_JOIN, C_LOP, C_SFU, IDX_COLS, SCHED_COLS, SUB
from lowbit.sim.lower import Chunk, StepStats
from lowbit.sim.nbcache import njit_cached
from lowbit.sim.sched import Scheduler
from lowbit.sim.tiling import UnitAssigner

DEPS = ("dep0", "dep1", "dep2")


@njit_cached(lowbit.sim.isa)
def _far(dep0, dep1, dep2, free_of, p0):
    """Referenced instructions below the previous window (deps; a buffer release there is an error later)."""
    out = np.empty(3 * dep0.shape[0], np.int64)
    k = 0
    for i in range(dep0.shape[0]):
        for d in (dep0[i], dep1[i], dep2[i]):
            if 0 <= d < p0:
                out[k] = d
                k += 1
    return out[:k]


@njit_cached(lowbit.sim.isa)
def _remap(dep0, dep1, dep2, free_of, main, jlo, jhi, acc, need, o0, o1, o2, of, ol, oh, w0, p0, ne, start, c_join):
    """Chunk indices -> rows of [kept refs and range maxima | previous window | this window]; returns i + 1
    for a row that refers to a buffer allocation or a join range end before the previous window, else 0."""
    for i in range(dep0.shape[0]):
        for k in range(3):
            d = dep0[i] if k == 0 else dep1[i] if k == 1 else dep2[i]
            if d >= w0:
                d = d - w0 + start
            elif d >= p0:
                d = d - p0 + ne
            elif d >= 0:
                d = np.searchsorted(need, d)
            if k == 0:
                o0[i] = d
            elif k == 1:
                o1[i] = d
            else:
                o2[i] = d
        f = free_of[i]
        if f >= w0:
            f = f - w0 + start
        elif f >= p0:
            f = f - p0 + ne
        elif f >= 0:
            return i + 1
        of[i] = f
        if main[i] == c_join and jhi[i] > jlo[i]:
            if jhi[i] <= p0:
                return i + 1
            lo = jlo[i]
            ol[i] = lo - w0 + start if lo >= w0 else lo - p0 + ne if lo >= p0 else ne
            oh[i] = jhi[i] - w0 + start if jhi[i] >= w0 else jhi[i] - p0 + ne
            if acc[i] >= 0:
                o0[i] = acc[i]
        else:
            ol[i] = 0
            oh[i] = 0
    return 0


class WindowRun:
    """One chunk scheduled window by window (module docstring). `begin` per chunk, then the lowering calls
    `mark` / `window`, then `end` gives the chunk's totals."""

    def __init__(self, sched: Scheduler, assigner: UnitAssigner, fold) -> None:
        self.sched, self.assigner, self.fold = sched, assigner, fold
        self.kinds: list[str] = []
        self.schedule_s = 0.0
        self.bufs: dict[str, np.ndarray] = {}

    def begin(self, t_barrier: int, t_ext: int, ext_id: int, step: int, base: int) -> None:
        self.t_barrier, self.t_ext, self.ext_id, self.step, self.base = t_barrier, t_ext, ext_id, step, base
        self.n = 0
        self.step_end = t_barrier
        self.prev: dict[str, np.ndarray] | None = None  # previous window: sched columns, end, reason, w0
        self.p0 = 0
        self.k_idx: list[np.ndarray] = []  # kept instructions (chunk indices, ascending), end, reason
        self.k_end: list[np.ndarray] = []
        self.k_rsn: list[np.ndarray] = []
        self.kept: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.marks: dict[int, list[int]] = {}  # range start -> [uses left, max end, its reason, its id, covered to]

    def ops(self, kinds: list[str]) -> None:
        self.kinds = kinds

    def mark(self, i: int, uses: int) -> None:
        if i < self.n:
            raise RuntimeError(f"window: join range starting at {i} marked after it left the window")
        m = self.marks.get(i)
        if m is None:
            self.marks[i] = [uses, -1, 0, -1, i]
        else:
            m[0] += uses

    # ------------------------------------------------------------------------------------------ one window

    def window(self, cols: dict[str, np.ndarray], w0: int) -> None:
        if w0 != self.n:
            raise RuntimeError(f"window: expected instruction {self.n}, got {w0}")
        cols = self.assigner.assign(cols, keep_load=w0 > 0)
        n = len(cols["main"])
        prev = self.prev
        npv = 0 if prev is None else len(prev["_end"])
        p0 = self.p0
        # references into the kept table: deps below the previous window, join ranges starting below it
        need = np.unique(_far(cols["dep0"], cols["dep1"], cols["dep2"], cols["free_of"], p0))
        extra_e: list[int] = []
        extra_r: list[int] = []
        extra_g: list[int] = []
        if len(need):
            ki, ke, kr = self._kept()
            slot = np.minimum(np.searchsorted(ki, need), max(len(ki) - 1, 0))
            if not len(ki) or np.any(ki[slot] != need):
                bad = need[ki[slot] != need][0] if len(ki) else need[0]
                raise RuntimeError(f"window: instruction {int(bad)} is referenced after it left the window and "
                                   "was not kept (a buffer release, or a result the lowering did not hand on)")
            extra_e += ke[slot].tolist()
            extra_r += kr[slot].tolist()
            extra_g += (self.base + need).tolist()
        main, jlo, jhi = cols["main"], cols["jlo"], cols["jhi"]
        joins = np.nonzero((main == C_JOIN) & (jhi > jlo))[0]  # joins over a range
        far_j = joins[jlo[joins] < p0]
        acc = np.full(n, -1, np.int64)  # row -> slot of its range's running maximum
        for r in far_j.tolist():
            lo = int(jlo[r])
            m = self.marks.get(lo)
            if m is None or m[4] < p0:
                raise RuntimeError(f"window: join {w0 + r} waits on instructions from {lo}, which left the window "
                                   "without a mark")
            if any(cols[d][r] != -1 for d in DEPS):
                raise RuntimeError(f"window: join {w0 + r} over a range also has dependencies")
            acc[r] = len(extra_e)
            extra_e.append(m[1])
            extra_r.append(m[2])
            extra_g.append(m[3])
        ne = len(extra_e)
        start = ne + npv
        tot = start + n
        a = {c: self._buf(c, tot) for c in SCHED_COLS}
        for c in SCHED_COLS:
            if c not in IDX_COLS:  # index columns are remapped into the window below
                a[c][start:] = cols[c]
        if prev is not None:
            a["buf"][ne:start] = prev["buf"]
        rc = _remap(cols["dep0"], cols["dep1"], cols["dep2"], cols["free_of"], main, jlo, jhi, acc, need,
                    a["dep0"][start:], a["dep1"][start:], a["dep2"][start:], a["free_of"][start:], a["jlo"][start:],
                    a["jhi"][start:], w0, p0, ne, start, C_JOIN)
        if rc:
            raise RuntimeError(f"window: instruction {w0 + rc - 1} refers to a buffer allocation or join range "
                               "before the previous window")
        o_end, o_rsn, gid = self._buf("_end", tot), self._buf("_rsn", tot), self._buf("_gid", tot)
        o_end[:ne], o_rsn[:ne], gid[:ne] = extra_e, extra_r, extra_g
        if prev is not None:
            o_end[ne:start], o_rsn[ne:start] = prev["_end"], prev["_rsn"]
            gid[ne:start] = np.arange(self.base + p0, self.base + p0 + npv)
        gid[start:] = np.arange(self.base + w0, self.base + w0 + n)
        t0 = time.perf_counter()
        s, t, u = self.sched.run_window(a, start, gid[:tot], o_end[:tot], o_rsn[:tot], self.t_barrier, self.t_ext,
                                        step=self.step, ext_id=self.ext_id)
        self.schedule_s += time.perf_counter() - t0
        self.fold(Chunk(cols, [], self.kinds, StepStats(), -1), s, t, u)
        if len(t):
            self.step_end = max(self.step_end, int(t.max()))
        # the previous window leaves: fold it into the open ranges' maxima, keep what later ops refer to
        if prev is not None:
            self._retire(prev, p0)
        self.prev = {"_end": t.copy(), "_rsn": o_rsn[start:tot].copy(), "buf": cols["buf"].copy(), "main": main,
                     "sub": cols["sub"].copy(),
                     "wr": cols["wr"].copy()}
        self.p0 = w0
        self.n = w0 + n
        for lo in jlo[joins].tolist():
            m = self.marks.get(lo)
            if m is not None:
                m[0] -= 1
                if m[0] <= 0:
                    del self.marks[lo]

    def _buf(self, c: str, n: int) -> np.ndarray:
        """A reused int64 work array of at least n rows (its first n)."""
        b = self.bufs.get(c)
        if b is None or len(b) < n:
            b = self.bufs[c] = np.empty(max(n, 2 * len(b) if b is not None else n), np.int64)
        return b[:n]

    def _retire(self, prev: dict[str, np.ndarray], p0: int) -> None:
        end, rsn = prev["_end"], prev["_rsn"]
        n = len(end)
        for lo, m in self.marks.items():
            if lo >= p0 + n or m[4] >= p0 + n:
                continue
            i0 = max(lo, p0) - p0
            seg = end[i0:]
            j = int(np.argmax(seg))
            if seg[j] > m[1]:
                m[1], m[2], m[3] = int(seg[j]), int(rsn[i0 + j]), self.base + p0 + i0 + j
            m[4] = p0 + n
        main = prev["main"]
        # an online-softmax SFU pass (sub-kind softmax, sim.attention) is used only by its query block's next
        # instructions: not kept (one per key block: it would grow with the prompt squared)
        keep = (main == C_JOIN) | ((main == C_SFU) & (prev["sub"] != SUB["softmax"])) | (main == C_LOP) | \
            (((main == C_DMAW) | (main == C_DMAKV)) & (prev["wr"] != 0))
        idx = np.nonzero(keep)[0]
        if len(idx):
            self.k_idx.append(p0 + idx)
            self.k_end.append(end[idx])
            self.k_rsn.append(rsn[idx])
            self.kept = None

    def _kept(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.kept is None:
            if len(self.k_idx) > 1:
                self.k_idx = [np.concatenate(self.k_idx)]
                self.k_end = [np.concatenate(self.k_end)]
                self.k_rsn = [np.concatenate(self.k_rsn)]
            z = np.zeros(0, np.int64)
            self.kept = (self.k_idx[0] if self.k_idx else z, self.k_end[0] if self.k_end else z,
                         self.k_rsn[0] if self.k_rsn else z)
        return self.kept

    # ------------------------------------------------------------------------------------------ chunk end

    def end_of(self, i: int) -> int:
        """End cycle of instruction i of the chunk (held or kept)."""
        if self.prev is not None and i >= self.p0:
            return int(self.prev["_end"][i - self.p0])
        ki, ke, _ = self._kept()
        s = int(np.searchsorted(ki, i))
        if s >= len(ki) or ki[s] != i:
            raise RuntimeError(f"window: the chunk's output {i} was not kept")
        return int(ke[s])
