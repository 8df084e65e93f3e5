"""Scheduler invariants on random instruction graphs, checked from the emitted (unit, start, end) records
by an independent checker: no unit double-booked, dependencies respected, buffer capacity never exceeded,
durations equal the instruction's cycles on its statically assigned unit, every unit runs its instructions
in program order, buffers return bytes in allocation order (rings), DMA issue order kept, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from lowbit.sim.config import load_config
from lowbit.sim.dram import dram_params, new_dram_state
from lowbit.sim.isa import C_BOOTH, C_DMAKV, C_DMAW, C_JOIN, C_LOP, C_SFU, C_TINT, COLS, DEFAULT
from lowbit.sim.sched import Scheduler
from lowbit.sim.tiling import UnitAssigner

UNITS = [C_TINT, C_TINT, C_BOOTH, C_LOP, C_SFU, C_DMAW, C_DMAKV]
CAPS = np.array([4096, 2048, 1024, 512, 0, 0], np.int64)


def random_chunk(rng: np.random.Generator, n_groups: int) -> dict[str, np.ndarray]:
    rows: list[dict] = []

    def emit(**kw) -> int:
        r = dict(DEFAULT)
        r.update(kw)
        rows.append(r)
        return len(rows) - 1

    for _ in range(n_groups):
        kind = rng.integers(0, 4)
        n = len(rows)
        deps = [int(rng.integers(0, n)) if n and rng.random() < 0.6 else -1 for _ in range(3)]
        if kind == 0:  # DMA + consumer (+ maybe a second consumer joined)
            buf = int(rng.integers(0, 4))
            nbytes = int(rng.integers(1, CAPS[buf] // 2 + 1))
            q = C_DMAW if rng.random() < 0.5 else C_DMAKV
            d = emit(main=q, nbytes=nbytes, addr=int(rng.integers(0, 1 << 20)), buf=buf, alloc=nbytes,
                     dep0=deps[0], barrier=int(rng.random() < 0.5), dcls=int(rng.integers(0, 4)))
            emit(main=C_TINT, alt=C_BOOTH, cyc=int(rng.integers(1, 300)), cyc_alt=int(rng.integers(1, 300)),
                 dep0=d, dep1=deps[1], free_of=d)
        elif kind == 1:  # plain compute on some class
            c = int(rng.choice([C_TINT, C_BOOTH, C_LOP, C_SFU]))
            emit(main=c, cyc=int(rng.integers(0, 200)), dep0=deps[0], dep1=deps[1], dep2=deps[2])
        elif kind == 2 and n:  # join over a random range
            lo = int(rng.integers(0, n))
            emit(main=C_JOIN, jlo=lo, jhi=n, dep0=deps[0])
        else:  # DRAM write without buffer
            emit(main=C_DMAKV, nbytes=int(rng.integers(1, 5000)), wr=1, dep0=deps[0])
    return {c: np.asarray([r[c] for r in rows], np.int64) for c in COLS}


def run(a, t_barrier=0):
    """Assign units statically (the compiler's rule), then schedule; `a` gets the assigned columns."""
    cfg = load_config("vitallm")
    a.update(UnitAssigner([(str(i), c) for i, c in enumerate(UNITS)]).assign(a))
    s = Scheduler(UNITS, CAPS, dram_params(cfg), new_dram_state(cfg))
    return s.run(a, t_barrier)


def check(a, st, en, un, t_barrier=0):
    n = len(a["main"])
    for i in range(n):
        c = a["main"][i]
        assert en[i] >= st[i]
        for d in (a["dep0"][i], a["dep1"][i], a["dep2"][i]):
            if d >= 0:
                assert st[i] >= en[d], f"instr {i} starts before its dependency {d} ends"
        if a["barrier"][i]:
            assert st[i] >= t_barrier
        if c == C_JOIN:
            assert un[i] == -1
            lo, hi = a["jlo"][i], a["jhi"][i]
            if hi > lo:
                assert en[i] >= en[lo:hi].max()
            continue
        assert un[i] == a["unit"][i] and UNITS[un[i]] == c, "instruction ran off its assigned unit"
        if c not in (C_DMAW, C_DMAKV):
            assert en[i] - st[i] == a["cyc"][i]
    # no compute unit double-booked
    for u, cls in enumerate(UNITS):
        idx = np.nonzero(un == u)[0]
        if cls in (C_DMAW, C_DMAKV):
            assert np.all(np.diff(st[idx]) >= 0), "DMA queue issued out of order"
            continue
        # an in-order queue: each instruction starts after the previous one of its unit (program order) ends
        assert np.all(st[idx][1:] >= en[idx][:-1]), f"unit {u} double-booked or out of program order"
    # ring buffers: an allocation's bytes live from its DMA's start until it and every earlier allocation of
    # its buffer are released (bytes return in allocation order)
    for b in range(len(CAPS)):
        rel = {int(a["free_of"][i]): int(en[i]) for i in range(n) if a["free_of"][i] >= 0}
        allocs = [f for f in range(n) if a["buf"][f] == b and a["alloc"][f] > 0 and a["main"][f] in (C_DMAW, C_DMAKV)]
        events, back = [], 0
        for f in allocs:
            back = max(back, rel[f])
            events.append((st[f], a["alloc"][f]))
            events.append((back, -a["alloc"][f]))
        events.sort(key=lambda e: (e[0], e[1]))  # releases before allocations at the same cycle
        used = 0
        for _, delta in events:
            used += delta
            assert used <= CAPS[b], f"buffer {b} over capacity"


@pytest.mark.parametrize("seed", range(12))
def test_random_graphs(seed):
    rng = np.random.default_rng(seed)
    a = random_chunk(rng, 300)
    tb = int(rng.integers(0, 500))
    st, en, un = run(a, t_barrier=tb)
    check(a, st, en, un, tb)
    st2, en2, un2 = run(a, t_barrier=tb)
    assert np.array_equal(st, st2) and np.array_equal(en, en2) and np.array_equal(un, un2)


def test_barrier_and_checker_catches_violation():
    rng = np.random.default_rng(99)
    a = random_chunk(rng, 100)
    st, en, un = run(a, t_barrier=1000)
    check(a, st, en, un, 1000)
    # the checker must fail on a corrupted schedule (a test that cannot fail is a defect)
    j = int(np.nonzero(a["dep0"] >= 0)[0][-1])
    st_bad = st.copy()
    st_bad[j] = en[a["dep0"][j]] - 1
    with pytest.raises(AssertionError):
        check(a, st_bad, en, un, 1000)


def test_capacity_wait():
    """Two 3 KB allocations on a 4 KB buffer: the second DMA waits for the first consumer's end."""
    rows = [dict(DEFAULT, main=C_DMAW, nbytes=3072, buf=0, alloc=3072),
            dict(DEFAULT, main=C_TINT, cyc=1000, dep0=0, free_of=0),
            dict(DEFAULT, main=C_DMAW, nbytes=3072, addr=4096, buf=0, alloc=3072),
            dict(DEFAULT, main=C_TINT, cyc=10, dep0=2, free_of=2)]
    a = {c: np.asarray([r[c] for r in rows], np.int64) for c in COLS}
    st, en, un = run(a)
    assert st[2] == en[1]
    check(a, st, en, un)


def test_ring_returns_bytes_in_allocation_order():
    """4 KB ring, three 2 KB allocations: the third needs the bytes of the first, whose consumer (1000 cycles
    on TINT0) ends long after the second's (10 cycles on TINT1): it waits for the first (a byte pool would
    have reused the second's bytes at cycle ~10)."""
    rows = [dict(DEFAULT, main=C_DMAW, nbytes=2048, buf=0, alloc=2048),
            dict(DEFAULT, main=C_TINT, unit=0, cyc=1000, dep0=0, free_of=0),
            dict(DEFAULT, main=C_DMAW, nbytes=2048, addr=4096, buf=0, alloc=2048),
            dict(DEFAULT, main=C_TINT, unit=1, cyc=10, dep0=2, free_of=2),
            dict(DEFAULT, main=C_DMAW, nbytes=2048, addr=8192, buf=0, alloc=2048),
            dict(DEFAULT, main=C_TINT, unit=1, cyc=10, dep0=4, free_of=4)]
    a = {c: np.asarray([r[c] for r in rows], np.int64) for c in COLS}
    st, en, un = run(a)
    assert en[3] < 500 and st[4] == en[1] == st[1] + 1000
    check(a, st, en, un)


def test_static_assignment_rule():
    """Tiles of 10 cycles on a TINT core or 15 on BoothFlex: compile-time loads pick tint0, tint1, booth
    (15 < 20), tint0 (20 = 20: lowest index), tint1, tint0 (30 = 30 = 30: lowest index), tint1 (30 = 30)."""
    rows = [dict(DEFAULT, main=C_TINT, alt=C_BOOTH, cyc=10, cyc_alt=15) for _ in range(7)]
    a = {c: np.asarray([r[c] for r in rows], np.int64) for c in COLS}
    out = UnitAssigner([("tint0", C_TINT), ("tint1", C_TINT), ("booth", C_BOOTH)]).assign(a)
    # loads after each: (10,0,0) (10,10,0) (10,10,15) (20,10,15) (20,20,15) (30,20,15) (30,30,15)
    assert out["unit"].tolist() == [0, 1, 2, 0, 1, 0, 1]
    assert out["cyc"].tolist() == [10, 10, 15, 10, 10, 10, 10]
    assert out["main"].tolist() == [C_TINT, C_TINT, C_BOOTH, C_TINT, C_TINT, C_TINT, C_TINT]
    assert a["unit"].tolist() == [-1] * 7, "the input columns are left as they were"
