"""DRAM model: hand-computed cycle counts for each timing rule, streaming efficiency, simple mode, numba use."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from lowbit.sim.config import load_config
from lowbit.sim.dram import (
    P_T_BURST,
    dram_access,
    dram_params,
    dram_stats,
    new_dram_state,
    stream_bandwidth,
    stream_efficiency,
)
from lowbit.sim.errors import ConfigError

# Round numbers so every expected value below is hand-computable: 1 GHz core clock (1 cycle = 1 ns),
# 8000 MT/s x16 BL16 -> 32 B bursts of 2 cycles, 2 channels x 4 banks, 256 B rows (8 bursts/row).
# tRCD 18, tRP 18, tCL 17, tRAS 42, tRFC 280, tREFI 3906.
BASE = load_config("vitallm").replace(**{
    "clock_hz": 1e9, "dram.channels": 2, "dram.banks": 4, "dram.row_bytes": 256,
    "dram.data_rate_mtps": 8000, "dram.burst_length": 16, "dram.tRCD_ns": 18.0, "dram.tRP_ns": 18.0,
    "dram.tCL_ns": 17.0, "dram.tRAS_ns": 42.0, "dram.tRFC_ns": 280.0, "dram.tREFI_ns": 3906.0,
})
TB = 2.0          # burst time
MISS = 18 + 17    # tRCD + tCL from ACT to first data


def fresh(cfg=BASE):
    return dram_params(cfg), new_dram_state(cfg)


def addr_of(cfg, ch, bank, row, col=0):
    """Inverse of the documented RoBaCoCh mapping (independent of the model's code)."""
    d = cfg.dram
    bpr = d.row_bytes // d.burst_bytes
    cb = (row * d.banks + bank) * bpr + col
    return (cb * d.channels + ch) * d.burst_bytes


def test_params_in_cycles():
    p, _ = fresh()
    assert p[P_T_BURST] == TB
    cfg = BASE.replace(**{"clock_hz": 5e8})
    assert dram_params(cfg)[P_T_BURST] == 1.0  # 2 ns at 500 MHz


def test_row_miss_closed_bank_then_row_hit():
    p, s = fresh()
    # closed bank: ACT at 0, RD at tRCD = 18, data 35..37
    assert dram_access(p, s, 0, 32, 0.0, False, 0) == MISS + TB
    # same row (col 1 of ch 0 row 0): RD at 100, data 117..119
    assert dram_access(p, s, addr_of(BASE, 0, 0, 0, 1), 32, 100.0, False, 0) == 100 + 17 + TB
    st = dram_stats(s)
    assert (st["row_misses"], st["row_hits"]) == (1, 1)


def test_row_miss_with_open_row():
    p, s = fresh()
    dram_access(p, s, 0, 32, 0.0, False, 0)  # opens row 0 of bank 0, ACT at 0
    # another row of the same bank at 200 (> tRAS): PRE 200, ACT 218, RD 236, data 253..255
    assert dram_access(p, s, addr_of(BASE, 0, 0, 1), 32, 200.0, False, 0) == 200 + 18 + MISS + TB


def test_tras_constraint():
    p, s = fresh()
    dram_access(p, s, 0, 32, 0.0, False, 0)  # ACT at 0
    # at t=1 the row cannot be closed before ACT + tRAS = 42: PRE 42, ACT 60, RD 78, data 95..97
    assert dram_access(p, s, addr_of(BASE, 0, 0, 1), 32, 1.0, False, 0) == 42 + 18 + MISS + TB


def test_other_bank_waits_only_for_trrd():
    p, s = fresh()
    dram_access(p, s, 0, 32, 0.0, False, 0)
    # bank 1 is closed and needs no tRAS wait, but ACTs on a channel are >= tRRD = 5 ns (LPDDR5X) apart:
    # ACT 5, RD 23, data 40..42
    assert dram_access(p, s, addr_of(BASE, 0, 1, 0), 32, 1.0, False, 0) == 5 + MISS + TB
    # the other channel has its own ACT slot: ACT 1, data 36..38
    assert dram_access(p, s, addr_of(BASE, 1, 1, 0), 32, 1.0, False, 0) == 1 + MISS + TB


def test_request_to_free_bank_overtakes_bank_conflict():
    p, s = fresh()
    assert dram_access(p, s, 0, 32, 0.0, False, 0) == MISS + TB                      # A: ACT 0, data 35..37
    b = dram_access(p, s, addr_of(BASE, 0, 0, 1), 32, 1.0, False, 0)                # B: row conflict, waits tRAS
    assert b == 42 + 18 + MISS + TB                                                 # PRE 42, ACT 60, data 95..97
    # C (bank 1) goes ahead of B (bounded reordering): its ACT slot is after B's nominal slot 19 -> ACT 24,
    # data 59..61, long before B's data
    c = dram_access(p, s, addr_of(BASE, 0, 1, 0), 32, 1.0, False, 0)
    assert c == 24 + MISS + TB


def test_refresh_collision_closed_and_open():
    p, s = fresh()
    # due at tREFI = 3906: REFab 3906..4186, then a closed-bank miss
    assert dram_access(p, s, 0, 32, 3906.0, False, 0) == 3906 + 280 + MISS + TB
    assert dram_stats(s)["refreshes"] == 1
    p, s = fresh()
    dram_access(p, s, 0, 32, 0.0, False, 0)  # row 0 open
    # refresh needs precharge-all first (tRP), and the open row is gone afterwards (miss, not hit)
    assert dram_access(p, s, 32 * 2, 32, 3906.0, False, 0) == 3906 + 18 + 280 + MISS + TB
    st = dram_stats(s)
    assert (st["refreshes"], st["row_misses"], st["row_hits"]) == (1, 2, 0)


def test_refresh_in_idle_time_costs_nothing():
    p, s = fresh()
    t = 10 * 3906 + 1000.0  # refreshes at 3906, ..., 39060 all finished by t
    assert dram_access(p, s, 0, 32, t, False, 0) == t + MISS + TB
    assert dram_stats(s)["refreshes"] == 10


def test_channel_parallelism():
    p, s = fresh()
    assert dram_access(p, s, 0, 64, 0.0, False, 0) == MISS + TB          # 1 burst per channel, in parallel
    p, s = fresh()
    assert dram_access(p, s, 0, 128, 0.0, False, 0) == MISS + 2 * TB     # 2 back-to-back bursts per channel
    one = BASE.replace(**{"dram.channels": 1})
    p, s = fresh(one)
    assert dram_access(p, s, 0, 128, 0.0, False, 0) == MISS + 4 * TB     # same 4 bursts on one channel


def test_unaligned_request_touches_both_bursts():
    p, s = fresh()
    assert dram_access(p, s, 16, 32, 0.0, False, 0) == MISS + TB  # bytes 16..47: bursts 0 (ch0) and 1 (ch1)
    assert dram_stats(s)["bursts"] == 2


def test_next_row_goes_to_next_bank_and_is_hidden():
    # 2 rows per channel streamed: row 0 -> bank 0, row 1 -> bank 1; the ACT of bank 1 is issued early
    # (controller lookahead), so the 16 bursts per channel arrive back-to-back: 35 + 16 * 2.
    p, s = fresh()
    n = 2 * 2 * 256
    assert dram_access(p, s, 0, n, 0.0, False, 0) == MISS + 16 * TB
    st = dram_stats(s)
    assert (st["row_misses"], st["row_hits"]) == (4, 28)
    assert st["busy_cycles"] == 32 * TB


def test_queueing_behind_busy_bus_and_class_counters():
    p, s = fresh()
    a = dram_access(p, s, 0, 1024, 0.0, False, 0)
    b = dram_access(p, s, 1024, 64, 0.0, True, 1)  # issued at 0 but queued behind the first request
    assert b == a + TB
    st = dram_stats(s)
    assert st["bytes"] == {"weights": 1024, "kv": 64, "act": 0, "lop": 0}
    assert (st["read_bytes"], st["write_bytes"], st["accesses"]) == (1024, 64, 2)


@pytest.mark.parametrize("preset", ["vitallm", "vitallm-lpddr4x"])
def test_streaming_efficiency(preset):
    cfg = load_config(preset)
    eff = stream_efficiency(cfg, 16 << 20)
    # refresh dominates the loss: ~ (tRFC + tRP + tRCD + tCL) / tREFI ~ 8.5 % for LPDDR5X / LPDDR4X
    assert 0.85 < eff < 0.95, eff
    assert stream_bandwidth(cfg, 16 << 20) == pytest.approx(eff * cfg.dram.peak_bytes_per_s)


@pytest.mark.parametrize("preset", ["vitallm", "vitallm-lpddr4x"])
def test_random_small_reads_are_act_rate_bound(preset):
    # random 32 B reads: every burst is a row miss; the ACT rate (one per tRRD = tFAW/4 per channel) bounds
    # throughput at 32 B / tRRD = 37.5 % of peak for both presets; bank conflicts (tRC) beyond the
    # 32-entry queue window cost more.
    cfg = load_config(preset)
    p, s = fresh(cfg)
    rng = np.random.default_rng(1)
    addrs = rng.integers(0, 1 << 30, 4000) // 32 * 32
    done = max(dram_access(p, s, int(a), 32, 0.0, False, 1) for a in addrs)
    eff = 4000 * 32 / (done / cfg.clock_hz) / cfg.dram.peak_bytes_per_s
    assert 0.15 < eff <= 0.376, eff  # measured: 19 % LPDDR5X (16 banks, W = 60 ns), 27 % LPDDR4X
    assert dram_stats(s)["row_hits"] < 10  # (a few random hits on an open row)


def test_streaming_without_refresh_is_near_peak():
    cfg = load_config("vitallm").replace(**{"dram.tREFI_ns": 0.0})
    assert stream_efficiency(cfg, 4 << 20) > 0.999


def test_simple_mode_formula():
    cfg = load_config("tiny")
    d = cfg.dram
    assert d.model == "simple"
    p, s = fresh(cfg)
    bpc = d.channels * d.bus_bits / 8 * d.data_rate_mtps * 1e6 * d.efficiency / cfg.clock_hz
    lat = d.latency_ns * cfg.clock_hz / 1e9
    t1 = dram_access(p, s, 0, 1000, 5.0, False, 2)
    assert t1 == pytest.approx(5 + lat + 1000 / bpc, rel=1e-12)
    # second request at 6 waits for the bus (free at 5 + 1000/bpc), latency is pipelined
    t2 = dram_access(p, s, 4096, 500, 6.0, False, 2)
    assert t2 == pytest.approx(5 + 1000 / bpc + lat + 500 / bpc, rel=1e-12)
    # after an idle gap the bus is free again
    assert dram_access(p, s, 0, 10, 1e6, False, 2) == pytest.approx(1e6 + lat + 10 / bpc, rel=1e-12)
    assert dram_stats(s)["bytes"]["act"] == 1510


def test_bad_class_is_rejected():
    p, s = fresh()
    with pytest.raises(ValueError, match="cls"):
        dram_access(p, s, 0, 32, 0.0, False, 4)


def test_zero_bytes_is_free():
    p, s = fresh()
    before = s.copy()
    assert dram_access(p, s, 0, 0, 7.0, False, 0) == 7.0
    assert np.array_equal(before, s)


def test_callable_from_njit():
    @njit
    def issue_all(p, s, addrs, sizes, times):
        out = np.empty(addrs.size)
        for j in range(addrs.size):
            out[j] = dram_access(p, s, addrs[j], sizes[j], times[j], False, 1)
        return out

    rng = np.random.default_rng(0)
    addrs = rng.integers(0, 1 << 20, 200)
    sizes = rng.integers(1, 5000, 200)
    times = np.sort(rng.uniform(0, 20000, 200))
    p, s1 = fresh()
    got = issue_all(p, s1, addrs, sizes, times)
    _, s2 = fresh()
    ref = [dram_access(p, s2, int(a), int(n), float(t), False, 1) for a, n, t in zip(addrs, sizes, times, strict=True)]
    assert np.array_equal(got, np.array(ref)) and np.array_equal(s1, s2)
    assert np.all(got > times)


def test_row_bytes_must_hold_whole_bursts():
    with pytest.raises(ConfigError, match="row_bytes"):
        dram_params(BASE.replace(**{"dram.row_bytes": 100}))


def test_lpddr4x_preset_differs_only_in_dram():
    from lowbit.sim.config import to_dict

    a, b = to_dict(load_config("vitallm")), to_dict(load_config("vitallm-lpddr4x"))
    for d in (a, b):
        for k in ("name", "description", "dram"):
            d.pop(k)
        d.pop("source", None)
    assert a == b
    d4 = load_config("vitallm-lpddr4x").dram
    # JESD209-4: LPDDR4X-4266 x64 = 34.128 GB/s peak, 8 banks, RL 36 nCK at 2133 MHz
    assert (d4.type, d4.banks, d4.peak_bytes_per_s) == ("LPDDR4X", 8, 34.128e9)
    assert d4.tCL_ns == pytest.approx(36 / (4266 / 2 / 1000), abs=0.01)


# ----------------------------------------------------------------------------- arithmetic range (no silent wrap)


def _one_dma_chunk(nbytes: int = 64):
    from lowbit.sim.isa import C_DMAW, D_W, Emitter

    e = Emitter()
    e.emit(C_DMAW, nbytes=nbytes, addr=0, dcls=D_W)
    return e.finish()


def _scheduler(p, s):
    from lowbit.sim.isa import BUFFERS, C_DMAKV, C_DMAW
    from lowbit.sim.sched import Scheduler

    return Scheduler([C_DMAW, C_DMAKV], np.zeros(len(BUFFERS), np.int64), p, s)


def test_dram_times_at_the_exact_range_boundary():
    """A DMA that ends exactly at 2^53 cycles is scheduled exactly; one cycle more is an error, not a wrap.
    (float64 -> int64 of 1e19 gives INT64_MIN in compiled code: without the guard the DMA would "end" at its
    start, i.e. fewer cycles.)"""
    from lowbit.sim.dram import P_SIMPLE_BPC, P_SIMPLE_LAT
    from lowbit.sim.errors import WorkloadError
    from lowbit.sim.schema import EXACT_CYCLES

    cfg = load_config("tiny")
    p, s = fresh(cfg)
    p[P_SIMPLE_BPC] = 64.0  # one cycle for 64 bytes: end = latency + 1
    p[P_SIMPLE_LAT] = float(EXACT_CYCLES - 1)
    _, end, _ = _scheduler(p, s).run(_one_dma_chunk(), 0)
    assert int(end[0]) == EXACT_CYCLES  # exact: 2^53 - 1 + 1
    for lat in (float(EXACT_CYCLES), 1e19, float("inf")):
        p2, s2 = fresh(cfg)
        p2[P_SIMPLE_LAT] = lat
        with pytest.raises(WorkloadError, match="exact cycle range"):
            _scheduler(p2, s2).run(_one_dma_chunk(), 0)


def test_check_times_bounds():
    from lowbit.sim.dram import S_LAST_DONE, check_times
    from lowbit.sim.errors import WorkloadError
    from lowbit.sim.schema import EXACT_CYCLES

    p, s = fresh()
    check_times(np.array([0, EXACT_CYCLES], np.int64), p, s)
    for end in ([EXACT_CYCLES + 1], [-1], [np.iinfo(np.int64).min]):
        with pytest.raises(WorkloadError, match="2\\^53"):
            check_times(np.array(end, np.int64), p, s)
    s[S_LAST_DONE] = float(EXACT_CYCLES) * 2
    with pytest.raises(WorkloadError):
        check_times(np.array([5], np.int64), p, s)


@pytest.mark.parametrize("field,top,over", [
    ("dram.tRCD_ns", 1e6, 1e19), ("dram.tRFC_ns", 1e6, 1.0000001e6), ("dram.latency_ns", 1e6, 1e300),
    ("clock_hz", 1e11, 1e300), ("sram.0.bytes", 2**30, 2**70), ("dram.channels", 64, 10**9),
])
def test_config_ranges_at_the_boundary(field, top, over):
    """The largest value of each range loads (and gives finite cycle parameters); one beyond is refused."""
    cfg = load_config("vitallm")
    key = field.replace("sram.0.", "")
    if field.startswith("sram"):
        def change(v):
            from lowbit.sim.config import from_dict, to_dict
            d = to_dict(cfg)
            d["sram"][0]["bytes"] = v
            return from_dict(d)
    else:
        def change(v):
            extra = {"dram.tREFI_ns": 2e6} if key == "dram.tRFC_ns" else {}
            return cfg.replace(**{key: v, **extra})
    ok = change(top)
    assert np.all(np.isfinite(dram_params(ok))) and dram_params(ok).max() < 2**53
    with pytest.raises(ConfigError, match=f"{key.split('.')[-1]} = .*must be <="):
        change(over)
