"""The checks a program must pass (the tile ISA's refusals, docs/isa.md "Checks"): the compiler runs them
before it writes a block and the loader after it decodes one, so a bad program is refused with one line
(ProgramError) and never simulated or run on the chip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lowbit.sim.errors import LowbitError
from lowbit.sim.isa import (
    ACT_BASE,
    BUFFERS,
    C_DMAKV,
    C_DMAW,
    C_JOIN,
    C_LOP,
    D_KV,
    EXT,
    KV_BASE,
    LOP_BASE,
    SUB,
    UNIT_CLASS_BASE,
    class_name,
)
from lowbit.sim.units import catalog

if TYPE_CHECKING:
    from lowbit.sim.program import Queues

# DRAM region of each traffic class (sim.isa address map): weights, kv, activations, lop
REGIONS = ((0, KV_BASE), (KV_BASE, LOP_BASE), (ACT_BASE, ACT_BASE + (1 << 32)), (LOP_BASE, ACT_BASE))


class ProgramError(LowbitError):
    """A program that cannot be written or run: a field out of its width, an unknown opcode, a wait that is
    never signalled (dependency cycle / deadlock), a buffer overflow, an address out of range, a wrong ISA
    version or config, a truncated file."""



@dataclass
class Context:
    """What the checks need: queues, buffer capacities, and where (for messages)."""

    queues: Queues  # lowbit.sim.program.Queues
    caps: np.ndarray
    where: str


def check_block(cols: dict[str, np.ndarray], ctx: Context) -> None:
    """Refuse a block a controller could not run: unknown opcode or one its queue does not run, a wait on an
    instruction that does not come earlier in the program (never signalled: deadlock / dependency cycle),
    a release of something that is not an allocation, an allocation larger than its buffer or one whose
    ring room needs a release later in the program (deadlock), an allocation never released in the chunk,
    a DRAM address outside its traffic class's region, an inconsistent indirect K/V fetch (check_indirect)."""
    w, n = ctx.where, len(cols["main"])
    main = cols["main"]
    known = UNIT_CLASS_BASE + len(catalog.UNITS)
    bad = (main < 0) | (main >= known)
    if bad.any():
        i = int(np.argmax(bad))
        raise ProgramError(f"{w}: instruction {i}: unknown opcode {int(main[i])} (known 0..{known - 1}); "
                           f"recompile with this lowbit")
    idx = np.arange(n)
    for c in ("dep0", "dep1", "dep2", "free_of"):
        d = cols[c]
        bad = (d >= idx) | (d < EXT) | (d >= n)
        if bad.any():
            i = int(np.argmax(bad))
            raise ProgramError(f"{w}: instruction {i} ({class_name(int(main[i]))}) {'waits on' if c != 'free_of' else 'releases'} "
                               f"instruction {int(d[i])}, which does not come before it: a token never signalled "
                               f"(dependency cycle / deadlock)")
    join = main == C_JOIN
    bad = join & ((cols["jhi"] > idx) | (cols["jlo"] > cols["jhi"]))
    if bad.any():
        i = int(np.argmax(bad))
        raise ProgramError(f"{w}: join {i} waits on instructions {int(cols['jlo'][i])}..{int(cols['jhi'][i]) - 1}, "
                           f"not all before it: a token never signalled (dependency cycle / deadlock)")
    dma = (main == C_DMAW) | (main == C_DMAKV)
    has = cols["free_of"] >= 0
    f = cols["free_of"][has]
    if len(f) and not np.all(dma[f] & (cols["alloc"][f] > 0) & (cols["buf"][f] >= 0)):
        i = int(np.nonzero(has)[0][np.argmax(~(dma[f] & (cols["alloc"][f] > 0)))])
        raise ProgramError(f"{w}: instruction {i} releases instruction {int(cols['free_of'][i])}, which allocated no SRAM")
    if len(np.unique(f)) != len(f):
        raise ProgramError(f"{w}: an SRAM allocation is released twice")
    alloc = dma & (cols["alloc"] > 0) & (cols["buf"] >= 0)
    rel_at = np.full(n, -1, np.int64)
    rel_at[f] = np.nonzero(has)[0]
    for i in np.nonzero(alloc & (rel_at < 0))[0][:1]:
        raise ProgramError(f"{w}: DMA {int(i)} allocates {int(cols['alloc'][i])} B of '{BUFFERS[cols['buf'][i]]}' "
                           f"that nothing in the chunk releases (the ring would fill up: deadlock)")
    for b in range(len(BUFFERS)):
        ai = np.nonzero(alloc & (cols["buf"] == b))[0]
        if not len(ai):
            continue
        cap = int(ctx.caps[b])
        big = cols["alloc"][ai] > cap
        if big.any():
            i = int(ai[np.argmax(big)])
            raise ProgramError(f"{w}: DMA {i}: buffer overflow: allocation of {int(cols['alloc'][i])} B in "
                               f"'{BUFFERS[b]}' of {cap} B")
        # ring room without a later release: allocation j is still held when allocation k (k > j) issues if
        # its release comes later in the program; bytes return in order, so everything from the first such j
        # on stays held. last[j] = the last k that j holds back; first held j for k = first j with
        # max(last[:j+1]) >= k.
        k = np.arange(len(ai))
        last = np.searchsorted(ai, rel_at[ai], side="left") - 1
        first = np.searchsorted(np.maximum.accumulate(last), k, side="left")
        first = np.where(first < k, first, k)
        cum = np.concatenate([[0], np.cumsum(cols["alloc"][ai])])
        need = cum[k] - cum[first] + cols["alloc"][ai]
        bad = need > cap
        if bad.any():
            i = int(ai[np.argmax(bad)])
            raise ProgramError(f"{w}: DMA {i}: buffer overflow: '{BUFFERS[b]}' ({cap} B) has room only after a "
                               f"release later in the program (deadlock)")
    d = cols["dcls"][dma]
    a0 = cols["addr"][dma]
    a1 = a0 + cols["nbytes"][dma]
    lo = np.asarray([r[0] for r in REGIONS], np.int64)[d]
    hi = np.asarray([r[1] for r in REGIONS], np.int64)[d]
    bad = (a0 < lo) | (a1 > hi) | (cols["nbytes"][dma] < 0)
    if bad.any():
        k = int(np.argmax(bad))
        i = int(np.nonzero(dma)[0][k])
        raise ProgramError(f"{w}: DMA {i}: DRAM address out of range: {int(a0[k]):#x} + {int(cols['nbytes'][i])} B "
                           f"outside the {('weights', 'kv', 'activations', 'lop')[int(d[k])]} region "
                           f"[{int(lo[k]):#x}, {int(hi[k]):#x})")
    q = ctx.queues.queue_of(cols)
    nq = len(ctx.queues.names)
    bad = (~join) & ((q < 0) | (q >= nq - 1))
    if bad.any():
        i = int(np.argmax(bad))
        raise ProgramError(f"{w}: instruction {i} ({class_name(int(main[i]))}) has no unit of the design (unit {int(q[i])})")
    cls_q = np.asarray(ctx.queues.classes, np.int64)[np.clip(q, 0, nq - 1)]
    bad = cls_q != main
    if bad.any():
        i = int(np.argmax(bad))
        raise ProgramError(f"{w}: instruction {i}: opcode {class_name(int(main[i]))} in queue "
                           f"{ctx.queues.names[int(q[i])]}, which runs {class_name(int(cls_q[i]))}")
    check_indirect(cols, w)


def check_indirect(cols: dict[str, np.ndarray], where: str) -> None:
    """Refuse inconsistent indirect K/V fetches (sim.lop_fetch): an `ind` word that is no K/V cache read, one
    whose `isel` names no lop_topk word before it, one that takes no index, and a LOP selection whose K words
    (or V words) together take a different number of indices than its `nidx` (the selection's K)."""
    ind = cols["ind"]
    if not ind.any():
        return
    n = len(ind)
    main, sub, isel, nidx = cols["main"], cols["sub"], cols["isel"], cols["nidx"]
    bad = (ind != 0) & ((ind != 1) | (main != C_DMAKV) | (cols["dcls"] != D_KV) | (cols["wr"] != 0)
                        | ~np.isin(sub, (SUB["k_dma"], SUB["v_dma"])))
    if bad.any():
        i = int(np.argmax(bad))
        raise ProgramError(f"{where}: instruction {i} ({class_name(int(main[i]))}) is marked indirect but is no K/V "
                           "cache read; only the K/V fetches of a LOP step take indices")
    rows = np.flatnonzero(ind)
    t = isel[rows]
    ok = (t >= 0) & (t < rows)
    tt = np.where(ok, t, 0)
    ok &= (main[tt] == C_LOP) & (sub[tt] == SUB["lop_topk"])
    if not ok.all():
        i = int(rows[np.argmax(~ok)])
        raise ProgramError(f"{where}: indirect K/V fetch {i} names instruction {int(isel[i])}, which is no LOP "
                           "selection (lop_topk) before it; emit the selection first or fetch directly")
    if np.any(nidx[rows] < 1):
        i = int(rows[np.argmax(nidx[rows] < 1)])
        raise ProgramError(f"{where}: indirect K/V fetch {i} takes {int(nidx[i])} indices; it must take at least 1")
    for plane in ("k_dma", "v_dma"):
        r = rows[sub[rows] == SUB[plane]]
        took = np.bincount(isel[r], weights=nidx[r], minlength=n).astype(np.int64)
        sel = np.unique(t)
        bad = took[sel] != nidx[sel]
        if bad.any():
            j = int(sel[np.argmax(bad)])
            raise ProgramError(f"{where}: LOP selection {j} selects {int(nidx[j])} keys but its indirect "
                               f"{plane[0].upper()} fetches take {int(took[j])} indices; the counts must match")
