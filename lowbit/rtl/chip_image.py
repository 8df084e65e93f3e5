"""The chip's instruction-memory image of a program (lowbit.sim.program), and the schedule `lowbit sim` gives it.

`build_image` resolves what the program leaves relative to a chunk (the loader's job, done once on the host
before the run): sequence numbers become absolute, DRAM addresses get their chunk's base, and every wait
becomes a **threshold vector**, one required completion count per non-sync queue, plus one **DMA range**
[rlo, rhi) per DMA queue (the scoreboard rule, lowbit.rtl.chip_ctrl.thresholds_met: "an instruction may
start when count[q] >= thr[q] for every q and requests rlo[d] .. rhi[d] - 1 of every DMA queue d have
completed"). Compute queues complete in order, so a count says everything; a DMA engine's requests
complete in any order (the DRAM model's), so a wait on a request is a wait on that request only:

- a token (q, s): on a compute queue thr[q] >= s + 1, on a DMA queue the request s;
- a join (the sync queue) is folded into its consumers: its ranges (q, s, n) give thr[q] >= s + n on a
  compute queue and the requests s .. s + n - 1 on a DMA queue, its own waits are folded the same way, a
  range over joins folds each of them (joins complete in zero time at the latest of what they wait for,
  so the consumer starts at the same cycle either way);
- the chunk's input token is the token of the previous chunk's output (the step start without one);
- the step fence (`barrier`) is the per-queue instruction counts at the step's start (every instruction of
  the earlier steps completed): a threshold on every queue, DMA queues included (a prefix of requests).

The DMA requests a word waits on, less those below its threshold on that queue, are one run in the
programs the lowering emits; if they were not, the word would wait on the run's hull, a later start than
the simulator's (counted in `ChipImage.hulls`, so the bench's mismatch has a named cause). A run that
begins at or below the threshold extends the threshold instead (a prefix), and an empty range is (0, 0).

The joins stay in the image (sync queue) with their folded thresholds: the chip's join monitor records when
each completes. DMA words carry `tag`, their position among all DMA instructions in program order (the
memory port's ordering key, docs/rtl.md), and the ring allocation index that their consumer's `free`
names (`free_buf`, `free_slot`).

`reference_schedule` runs the same program through lowbit.sim.compile.run_program and returns every
instruction's (start, end) cycle per queue, the numbers the chip bench must reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lowbit.sim.config import HwConfig
from lowbit.sim.isa import BUFFERS, C_DMAKV, C_DMAW, C_JOIN, C_SFU, EXT
from lowbit.sim.program import ProgramError

# Field widths of the chip's instruction word (DESIGN ASSUMPTION: enough for the program format's values;
# the loader refuses a value that does not fit). Thresholds are `seq_bits` wide (ChipParams).
WORD_FIELDS: tuple[tuple[str, int, str], ...] = (
    ("valid", 1, "1: an instruction (0: end of the queue)"),
    ("cyc", 32, "compute: cycles start -> done (the sim.units formula)"),
    ("free", 1, "on completion, release the ring allocation (free_buf, free_slot)"),
    ("free_buf", 3, "buffer of that allocation (sim.isa.BUFFERS)"),
    ("free_slot", 8, "its allocation index in the buffer, modulo the ring's entry table"),
    ("tag", 24, "DMA: program-order number among all DMA instructions"),
    ("addr", 48, "DMA: absolute DRAM byte address"),
    ("nbytes", 32, "DMA: bytes"),
    ("wr", 1, "DMA: 1 writes DRAM"),
    ("dcls", 2, "DMA: DRAM traffic class"),
    ("alloc_en", 1, "DMA: takes `alloc` bytes of ring `buf` when it issues"),
    ("buf", 3, "DMA: ring it allocates in"),
    ("alloc", 24, "DMA: bytes allocated"),
)


@dataclass
class ChipImage:
    """Per-queue instruction words (dicts of WORD_FIELDS plus `thr`, a list over the non-sync queues, and
    what the data path's loader reads: a DMA allocation's SRAM byte address `sbyte`; a compute word's
    `macs`, `rbuf`, `rbytes2`, `wbytes`, its op's name `op` (sim.workloads' names) and `step` (the forward
    step's index in the program, 0 = the first) and, with `free`, the queue and index of the DMA it releases,
    `free_q` / `free_i`)."""

    queues: tuple[str, ...]
    classes: tuple[int, ...]
    caps: tuple[int, ...]
    words: list[list[dict]] = field(default_factory=list)
    n_dma: int = 0
    ring_queue: dict[str, str] = field(default_factory=dict)  # buffer -> the DMA queue allocating in it
    ring_live: int = 0  # most allocations a ring can hold at once (capacity // smallest allocation)
    hulls: int = 0      # words whose DMA waits are not one run (they wait on the run's hull)

    @property
    def n_thr(self) -> int:
        return len(self.queues) - 1  # the sync queue is last and has no counter

    @property
    def dma_queues(self) -> list[int]:
        return [q for q, c in enumerate(self.classes) if c in (C_DMAW, C_DMAKV)]

    def longest(self) -> int:
        return max(len(w) for w in self.words)


@dataclass
class _Wait:
    """What an instruction waits for: `thr`, a completion count per non-sync queue (a prefix), and `runs`,
    per DMA queue the sorted, merged runs [lo, hi) of requests it also needs."""

    thr: np.ndarray
    runs: dict[int, list[tuple[int, int]]]

    @staticmethod
    def on(n_thr: int, dq: list[int], q: int, s: int, n: int) -> _Wait:
        """Instructions s .. s + n - 1 of queue q."""
        thr = np.zeros(n_thr, np.int64)
        if q in dq:
            return _Wait(thr, {q: [(s, s + n)]} if n > 0 else {})
        thr[q] = s + n
        return _Wait(thr, {})

    def join(self, o: _Wait) -> _Wait:
        runs = dict(self.runs)
        for q, rs in o.runs.items():
            merged: list[tuple[int, int]] = []
            for lo, hi in sorted(runs.get(q, []) + rs):
                if merged and lo <= merged[-1][1]:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
                else:
                    merged.append((lo, hi))
            runs[q] = merged
        return _Wait(np.maximum(self.thr, o.thr), runs)

    def resolve(self, dq: list[int]) -> tuple[list[int], list[int], list[int], int]:
        """(thr, rlo, rhi per DMA queue, 1 if a queue's runs above its threshold are not one run)."""
        thr = self.thr.copy()
        rlo, rhi, hull = [], [], 0
        for q in dq:
            rs = [(max(lo, int(thr[q])), hi) for lo, hi in self.runs.get(q, []) if hi > thr[q]]
            if rs and rs[0][0] <= thr[q]:  # a run continuing the prefix extends it
                thr[q] = rs.pop(0)[1]
            lo = hi = 0
            if rs:
                hull |= len(rs) > 1
                lo, hi = rs[0][0], rs[-1][1]
            rlo.append(lo)
            rhi.append(hi)
        return [int(x) for x in thr], rlo, rhi, int(hull)


def build_image(path: str | Path, cfg: HwConfig) -> ChipImage:
    """Resolve a program into the chip's per-queue instruction words (module docstring)."""
    from lowbit.sim.engine import unit_list
    from lowbit.sim.program_io import ProgramReader

    rd = ProgramReader(path, cfg, unit_list(cfg))
    hd = rd.header
    names, classes = hd.queues.names, hd.queues.classes
    nq = len(names)
    sync = nq - 1
    img = ChipImage(tuple(names), tuple(int(c) for c in classes), tuple(int(c) for c in hd.caps),
                    [[] for _ in range(nq)])
    count = np.zeros(nq, np.int64)          # instructions per queue so far
    join_wait: list[_Wait] = []             # folded waits of every join (absolute sync seq)
    alloc_n = np.zeros(len(BUFFERS), np.int64)
    alloc_bytes = np.zeros(len(BUFFERS), np.int64)  # running bytes allocated per ring (its head, mod capacity)
    alloc_of: dict[tuple[int, int], tuple[int, int]] = {}  # (dma queue, abs seq) -> (buf, allocation index)
    buf_queue: dict[int, int] = {}
    smallest: dict[int, int] = {}
    fence = np.zeros(nq - 1, np.int64)
    cur_step = None
    step = -1
    tag = 0
    dq = img.dma_queues
    for s, cr in rd.chunk_records():
        key = (s["phase"], s["trace_step"])
        if key != cur_step:  # a new step: the fence is every queue's count so far
            cur_step = key
            step += 1
            fence = count[:-1].copy()
        blk, a, c = cr.block, cr.chunk.cols, cr.fields
        qb = cr.qbase
        n = len(a["main"])
        absq = blk.queue.astype(np.int64)
        abss = qb[absq] + blk.seq
        wait_i: list[_Wait | None] = [None] * n

        def token(q: int, sq: int) -> _Wait:
            if q == sync:
                return join_wait[sq]
            return _Wait.on(nq - 1, dq, q, sq, 1)

        ext = token(c["in_queue"], c["in_seq"]) if c["in_kind"] else _Wait(fence.copy(), {})
        for i in range(n):
            t = _Wait(fence.copy() if a["barrier"][i] else np.zeros(nq - 1, np.int64), {})
            for k in range(3):
                d = int(a[f"dep{k}"][i])
                if d >= 0:
                    t = t.join(wait_i[d] if absq[d] == sync else token(int(absq[d]), int(abss[d])))
                elif d == EXT:
                    t = t.join(ext)
            op = int(a["main"][i])
            if op == C_JOIN:
                r0 = blk.range_start[i]
                r1 = blk.range_start[i + 1] if i + 1 < len(blk.range_start) else len(blk.ranges)
                for rq, rs, rn in blk.ranges[r0:r1]:
                    rq, s0 = int(rq), int(qb[int(rq)] + rs)
                    if rq == sync:
                        for j in range(s0, s0 + int(rn)):
                            t = t.join(join_wait[j])
                    else:
                        t = t.join(_Wait.on(nq - 1, dq, rq, s0, int(rn)))
                join_wait.append(t)
            wait_i[i] = t
            thr, rlo, rhi, hull = t.resolve(dq)
            img.hulls += hull
            w = {"valid": 1, "thr": thr, "rlo": rlo, "rhi": rhi, "cyc": 0, "free": 0, "free_buf": 0,
                 "free_slot": 0, "tag": 0, "addr": 0, "nbytes": 0, "wr": 0, "dcls": 0, "alloc_en": 0, "buf": 0,
                 "alloc": 0}
            if op in (C_DMAW, C_DMAKV):
                w.update(tag=tag, addr=int(a["addr"][i]), nbytes=int(a["nbytes"][i]), wr=int(a["wr"][i]),
                         dcls=int(a["dcls"][i]), step=step, ind=int(a["ind"][i]), nidx=int(a["nidx"][i]))
                tag += 1
                b = int(a["buf"][i])
                if b >= 0 and a["alloc"][i] > 0:
                    if buf_queue.setdefault(b, int(absq[i])) != int(absq[i]):
                        raise ProgramError(f"{path}: buffer '{BUFFERS[b]}' is filled by two DMA queues; the chip's "
                                           f"rings take one allocating queue each")
                    w.update(alloc_en=1, buf=b, alloc=int(a["alloc"][i]), sbyte=int(alloc_bytes[b] % img.caps[b]))
                    alloc_bytes[b] += int(a["alloc"][i])
                    smallest[b] = min(smallest.get(b, 1 << 62), int(a["alloc"][i]))
                    alloc_of[(int(absq[i]), int(abss[i]))] = (b, int(alloc_n[b]))
                    alloc_n[b] += 1
            elif op != C_JOIN:
                name = cr.chunk.names[int(a["opi"][i])] if cr.chunk.names else ""
                w.update(cyc=int(a["cyc"][i]), macs=int(a["macs"][i]), rbuf=int(a["rbuf"][i]),
                         rbytes2=int(a["rbytes2"][i]), wbytes=int(a["wbytes"][i]), step=step,
                         op="lm_quant" if op == C_SFU and name == "lm_head" else name)  # the lm_head's quantize
            f = int(a["free_of"][i])
            if f >= 0:
                b, k = alloc_of[(int(absq[f]), int(abss[f]))]
                w.update(free=1, free_buf=b, free_slot=k, free_q=int(absq[f]), free_i=int(abss[f]))
            img.words[int(absq[i])].append(w)
        count += blk.counts
    img.n_dma = tag
    img.ring_queue = {BUFFERS[b]: names[q] for b, q in sorted(buf_queue.items())}
    img.ring_live = max((img.caps[b] // smallest[b] for b in smallest), default=1)
    return img


@dataclass
class QueueTimes:
    """Every instruction's (start, end) cycle of one queue, in queue order."""

    name: str
    start: list[int]
    end: list[int]


class _Collect:
    """A lowbit.sim.engine observer keeping (queue, start, end) per instruction."""

    def __init__(self, nq: int) -> None:
        self.start: list[list[int]] = [[] for _ in range(nq)]
        self.end: list[list[int]] = [[] for _ in range(nq)]
        self.nq = nq

    def begin_step(self, si: int, t: int) -> None:
        pass

    def end_step(self, si: int, t: int) -> None:
        pass

    def add(self, rec, sched, ext_id) -> None:
        # the chunk's instructions in program order; the unit index is the queue, joins (-1) are the sync queue
        for u, s, e in zip(rec.unit.tolist(), rec.start.tolist(), rec.end.tolist(), strict=True):
            q = u if u >= 0 else self.nq - 1
            self.start[q].append(s)
            self.end[q].append(e)


def reference_schedule(path: str | Path, cfg: HwConfig) -> tuple[list[QueueTimes], int]:
    """(per-queue start/end of every instruction, total cycles) of `lowbit sim --program path`."""
    from lowbit.sim.compile import run_program
    from lowbit.sim.program_io import ProgramReader

    names = ProgramReader(path).header.queues.names
    col = _Collect(len(names))
    res = run_program(cfg, path, observers=(col,))
    return ([QueueTimes(n, col.start[q], col.end[q]) for q, n in enumerate(names)], int(res.cycles))
