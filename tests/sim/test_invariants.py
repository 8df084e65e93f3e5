"""Metric invariants on every preset: every busy figure fits in the run, per-unit time is fully accounted
(busy + stalls + idle = cycles), the breakdown's critical path partitions each phase exactly, the
breakdown's per-op counters add up to the run's totals, and LOP savings are net of the LO-code reads."""

from __future__ import annotations

import re

import pytest

from lowbit.sim.breakdown import Breakdown
from lowbit.sim.config import list_presets, load_config
from lowbit.sim.engine import simulate, unit_list
from lowbit.sim.isa import UNIT_CLASS_BASE
from lowbit.sim.workloads import standard_trace, weight_format_for

MODEL = {"tiny": "bitnet-tiny"}  # the other presets run BitNet b1.58 700M shapes


def _run(preset: str, **kw):
    cfg = load_config(preset)
    tr = standard_trace(MODEL.get(preset, "bitnet-b1.58-700m"), 8, 3, weight_format_for(cfg))
    bd = Breakdown(tr.model.n_layers, unit_list(cfg), steps=(1, 3))
    return cfg, simulate(cfg, tr, breakdown=bd, **kw)


@pytest.mark.parametrize("preset", list_presets())
def test_invariants(preset):
    cfg, r = _run(preset)
    units = unit_list(cfg)
    compute = [n for n, c in units if c >= UNIT_CLASS_BASE]
    for n in compute:
        busy = r.activity["busy_cycles"][n]
        assert 0 <= busy <= r.cycles and 0 <= r.utilization[n] <= 1
        # every cycle of a compute unit is busy, a stall or idle
        assert busy + sum(r.stalls[n].values()) + r.idle[n] == r.cycles, n
    for n, c in units:
        if c < UNIT_CLASS_BASE:  # DMA queues: issue gaps, never more than the run
            assert sum(r.stalls[n].values()) + r.idle[n] <= r.cycles
    assert 0 < r.dram["busy_cycles"] <= r.cycles  # per channel, not summed
    assert r.dram["busy_cycles"] * r.dram["channels"] == pytest.approx(r.dram["busy_cycles_all_channels"])
    assert 0 < r.utilization["dram"] <= 1
    assert sum(r.instructions_by_unit.values()) <= r.instructions
    # LOP: the unit has nothing to do in prefill (dense attention): idle, not waiting on memory
    if cfg.has("lop") and cfg.lop.enabled:
        assert r.idle["lop"] >= r.prefill_cycles
        lop = r.lop
        assert lop["kv_bytes_saved"] == lop["kv_dense_bytes"] - lop["kv_read_bytes"] - lop["lop_bytes"]
        assert lop["kv_reduction_x"] == pytest.approx(lop["kv_dense_bytes"] / (lop["kv_read_bytes"] + lop["lop_bytes"]))
    # the critical path partitions each phase and each chosen step exactly
    ph = r.breakdown["phases"]
    assert sum(x["critical_path_cycles"] for x in ph["prefill"]["rows"]) == r.prefill_cycles == ph["prefill"]["cycles"]
    assert sum(x["critical_path_cycles"] for x in ph["decode"]["rows"]) == r.decode_cycles == ph["decode"]["cycles"]
    for s in (1, 3):
        assert sum(x["critical_path_cycles"] for x in ph[f"decode step {s}"]["by_op"]) == r.step_cycles[s]
    for x in ph["decode"]["rows"]:
        assert sum(x["critical_path_by_constraint"].values()) == x["critical_path_cycles"]
    # per-op counters add up to the run's totals
    for n in compute:
        assert sum(x["busy_cycles"].get(n, 0) for p in ("prefill", "decode") for x in ph[p]["rows"]) == \
            r.activity["busy_cycles"][n]
    for cls, total in r.dram_bytes.items():
        assert sum(x["dram_bytes"][cls] for p in ("prefill", "decode") for x in ph[p]["rows"]) == total
    macs = sum(r.activity[w] for w in ("ternary_macs", "int8_macs", "fp4_macs"))
    assert sum(x["macs"] for p in ("prefill", "decode") for x in ph[p]["by_op"]) == macs


def test_idle_vs_stall_inorder_and_no_lop():
    """Without LOP the LOP unit never runs: all of the run is idle; stalls stay the same with or without a
    breakdown observer (the accounting does not depend on observers)."""
    cfg = load_config("vitallm")
    tr = standard_trace("bitnet-tiny", 4, 2)
    r = simulate(cfg, tr, "inorder", no_lop=True)
    assert r.idle["lop"] == r.cycles and r.stalls["lop"] == {}
    r2 = simulate(cfg, tr, "inorder", no_lop=True, breakdown=Breakdown(tr.model.n_layers, unit_list(cfg)))
    assert (r2.stalls, r2.idle, r2.cycles) == (r.stalls, r.idle, r.cycles)


def test_dram_efficiency_hidden_where_it_has_no_effect():
    """dram.efficiency and dram.latency_ns drive the simple DRAM model only: `config show` of an lpddr design
    leaves them out (and says why); the lpddr model's timing ignores them; the simple model uses them."""
    import os

    from tests.cli_util import lowbit

    env = {**os.environ, "COLUMNS": "250"}
    shown = lowbit("config", "show", "vitallm", env=env).stdout
    row = re.compile(r"dram\.efficiency\s+│\s+[\d.]+")
    assert not row.search(shown) and "no effect with model" in shown and "dram.tRCD_ns" in shown
    assert row.search(lowbit("config", "show", "tiny", env=env).stdout)  # tiny uses the simple model
    tr = standard_trace("bitnet-tiny", 4, 2)
    base = load_config("vitallm")
    assert simulate(base.replace(**{"dram.efficiency": 0.3}), tr).cycles == simulate(base, tr).cycles
    tiny = load_config("tiny")
    assert simulate(tiny.replace(**{"dram.efficiency": 0.3}), tr).cycles > simulate(tiny, tr).cycles
