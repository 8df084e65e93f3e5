"""One point's metrics: the same numbers as `lowbit report` and `lowbit sim`; synthesis keyed per block."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lowbit.explore.evaluate import Point, block_keys, evaluate, point_key, synthesis_jobs, synthesise
from lowbit.explore.execute import apply_constraints
from lowbit.explore.results import pareto_mask
from lowbit.explore.spec import Constraint, CostOptions, Workload
from lowbit.sim.config import load_config, load_hw, to_dict
from tests.cli_util import lowbit

W = Workload("bitnet-tiny", 8, 4)
NETLIST = CostOptions(power_model="netlist")


def test_block_keys_follow_the_rtl_parameters():
    base = block_keys(load_config("tiny"))
    assert sorted(base) == ["booth", "lop_score", "lop_topk", "sfu", "tint"]
    # instances, SRAM, DRAM and clock change no RTL block: nothing new to synthesise
    same = load_hw("tiny", ["tint.cores=3", "sram.kv.bytes=4096", "dram.channels=2", "clock_hz=1e8"])
    assert block_keys(same) == base
    lanes = block_keys(load_hw("tiny", ["tint.lanes=4"]))
    assert {b for b in base if base[b] != lanes[b]} == {"tint"}
    bs = block_keys(load_hw("tiny", ["booth.bit_serial=true"]))
    assert "booth" not in bs and bs["booth_bs"].startswith("booth_bs-")


def test_liberty_synthesis_jobs_follow_the_report_flow():
    """With the Liberty model (`lowbit report`'s default) build_hw_cost also synthesises the SFU op datapaths and the
    control estimate, every block mapped for delay at the design's clock: a clock is a new synthesis of every block,
    TINT instances only a new control estimate (one queue per core), an excluded block none."""
    cost = CostOptions(exclude_units=("sfu_rmsnorm",))
    base = synthesis_jobs(load_config("vitallm"), cost)
    assert sorted(base.values()) == ["booth", "control", "lop_score", "lop_topk", "sfu", "sfu_act", "sfu_rope",
                                     "sfu_softmax", "tint"]
    assert "sfu_rmsnorm" in synthesis_jobs(load_config("vitallm"), CostOptions()).values()
    cores = synthesis_jobs(load_hw("vitallm", ["tint.cores=3", "sram.weight.bytes=65536", "dram.channels=8"]), cost)
    assert sorted(base[k] for k in set(base) - set(cores)) == ["control"]
    clock = synthesis_jobs(load_hw("vitallm", ["clock_hz=8e8"]), cost)
    assert not set(clock) & set(base)
    k16 = synthesis_jobs(load_hw("vitallm", ["lop.k=16"]), cost)
    assert sorted(base[k] for k in set(base) - set(k16)) == ["lop_topk"]


def test_point_key_is_the_content_not_the_name():
    p = Point(0, {}, W)
    a, b = load_config("tiny"), load_hw("tiny", ["name=other", "description=x"])
    assert point_key(a, p, "sim") == point_key(b, p, "sim")
    assert point_key(a, p, "sim") != point_key(load_hw("tiny", ["lop.k=4"]), p, "sim")
    assert point_key(a, p, "sim") != point_key(a, p, "energy")
    assert point_key(a, p, "sim") != point_key(a, Point(0, {"schedule": "inorder"}, W), "sim")
    assert point_key(a, p, "sim") != point_key(a, Point(0, {}, Workload("bitnet-tiny", 8, 5)), "sim")
    # the cost options are part of an area/energy result, not of a simulation's
    assert point_key(a, p, "energy") != point_key(a, p, "energy", NETLIST)
    assert point_key(a, p, "sim") == point_key(a, p, "sim", NETLIST)


def test_energy_point_equals_lowbit_report(sky130_root):
    """area, decode power, energy/token incl. DRAM and FOM exactly as lowbit.cost.report.evaluate computes them
    (the gate-capacitance model here: the Liberty model's timing-driven synthesis takes minutes per block; the
    committed vitallm sweep is checked against `lowbit report` in tests/explore/test_sweep_notes.py)."""
    from lowbit.cost.report import evaluate as report_evaluate

    cfg = load_hw("tiny", ["tint.cores=2"])
    rec = evaluate(to_dict(cfg), Point(0, {}, W), "energy", NETLIST)
    ref = report_evaluate(cfg, "bitnet-tiny", 8, 4).to_json()
    assert ref["missing_units"] == []
    assert rec["status"] == "ok", rec
    assert rec["area_mm2"] == ref["area_mm2"]
    assert rec["decode_power_mw"] == ref["power_mw"]
    assert rec["energy_per_token_mj"] == ref["energy_per_token_with_dram_j"] * 1e3
    assert rec["tops_per_mm2_w"] == ref["fom_tops_per_mm2_w"]
    assert rec["decode_tok_s"] == ref["tokens_per_s"] and rec["prefill_latency_s"] == ref["prefill_latency_s"]
    assert rec["t_sim_s"] > 0 and rec["t_total_s"] >= rec["t_sim_s"] + rec["t_cost_s"]
    excl = evaluate(to_dict(cfg), Point(0, {}, W), "energy", CostOptions(power_model="netlist", exclude_units=("tint",)))
    ref = report_evaluate(cfg, "bitnet-tiny", 8, 4, exclude=("tint",)).to_json()
    assert ref["missing_units"] == ["tint"] and excl["area_mm2"] == ref["area_mm2"] < rec["area_mm2"]
    assert excl["decode_power_mw"] == ref["power_mw"] < rec["decode_power_mw"]


def test_sim_point_equals_simulate():
    from lowbit.sim.engine import simulate
    from lowbit.sim.workloads import standard_trace

    cfg = load_hw("tiny", ["lop.k=4"])
    rec = evaluate(to_dict(cfg), Point(0, {"schedule": "inorder"}, W), "sim")
    r = simulate(cfg, standard_trace("bitnet-tiny", 8, 4), schedule="inorder")
    assert (rec["decode_tok_s"], rec["prefill_latency_s"], rec["cycles"]) == \
        (r.decode_tokens_per_s, r.prefill_latency_s, r.cycles)
    assert "area_mm2" not in rec  # level sim: nothing synthesised


def test_infeasible_point_and_constraints():
    cfg = load_hw("tiny", ["sram.act.bytes=16"])
    rec = evaluate(to_dict(cfg), Point(0, {}, W), "sim")
    assert rec["status"] == "infeasible" and "tile of 64 B does not fit SRAM buffer 'act' (usable 8 B per tile of 16 B)" in rec["reason"]
    ok = {"status": "ok", "reason": "", "area_mm2": 0.35, "decode_tok_s": 10.0}
    r = apply_constraints(dict(ok), (Constraint("area_mm2", "<=", 0.3), Constraint("decode_tok_s", ">=", 5)))
    assert r["status"] == "infeasible" and r["reason"] == "area_mm2 <= 0.3 violated (area_mm2 = 0.35)"
    assert apply_constraints(dict(ok), (Constraint("area_mm2", "<", 0.4),))["status"] == "ok"


def test_pareto_mask_by_brute_force():
    rng = np.random.default_rng(3)
    v = rng.integers(0, 6, size=(60, 3)).astype(float)  # ties and duplicates included
    ref = [not any(all(v[j] >= v[i]) and any(v[j] > v[i]) for j in range(60)) for i in range(60)]
    assert pareto_mask(v).tolist() == ref
    assert pareto_mask(np.array([[1.0, 1.0], [2.0, 0.0], [0.5, 0.5], [1.0, 1.0]])).tolist() == [True, True, False, True]



pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_nsga2_is_seeded_and_resumable(tmp_path):
    """Optuna NSGA-II with a seed proposes the same points again; the second run finds them all in the cache."""
    pytest.importorskip("optuna")
    from lowbit.explore.execute import run
    from lowbit.explore.spec import load_spec
    from lowbit.explore.store import ResultCache

    (tmp_path / "spec.toml").write_text(
        '[sweep]\nbase = "tiny"\nstrategy = "nsga2"\nsamples = 12\npopulation = 4\nseed = 3\n'
        'objectives = ["decode_tok_s", "prefill_latency_s"]\n[workload]\nmodel = "bitnet-tiny"\nprefill = 4\ndecode = 4\n'
        '[params]\n"tint.cores" = { range = [1, 3], step = 1 }\n"lop.k" = [2, 4, 8]\n'
        'clock_hz = { range = [1e8, 4e8], log = true }\n')
    spec = load_spec(tmp_path / "spec.toml")
    a, sa = run(spec, serial=True, cache=ResultCache(tmp_path / "c"))
    b, sb = run(spec, serial=True, cache=ResultCache(tmp_path / "c"))
    assert len(a) == 12 and [r["values"] for r in a] == [r["values"] for r in b]
    assert all(1e8 <= r["values"]["clock_hz"] <= 4e8 and r["values"]["tint.cores"] in (1, 2, 3) for r in a)
    assert sa.computed >= 8 and (sb.cached, sb.computed) == (12, 0)


def test_each_rtl_parameterisation_is_synthesised_once_per_sweep(tmp_path, monkeypatch, sky130_root):
    """6 designs that share every RTL block (TINT instances and an SRAM size vary): 5 blocks synthesised, once each."""
    import lowbit.explore.execute as ex
    from lowbit.explore.spec import load_spec
    from lowbit.explore.store import ResultCache

    calls: list[str] = []

    def counting(cfg_data, block, cost):
        calls.append(block)
        return synthesise(cfg_data, block, cost)

    monkeypatch.setattr(ex, "synthesise", counting)
    (tmp_path / "spec.toml").write_text(
        '[sweep]\nbase = "tiny"\nobjectives = ["decode_tok_s", "area_mm2"]\npower_model = "netlist"\n'
        '[workload]\nmodel = "bitnet-tiny"\n'
        'prefill = 4\ndecode = 4\n[params]\n"tint.cores" = [1, 2, 3]\n"sram.kv.bytes" = [1024, 2048]\n')
    records, stats = ex.run(load_spec(tmp_path / "spec.toml"), serial=True, cache=ResultCache(tmp_path / "c"))
    assert sorted(calls) == ["booth", "lop_score", "lop_topk", "sfu", "tint"] and stats.blocks == 5
    areas = {(r["values"]["tint.cores"], r["values"]["sram.kv.bytes"]): r["area_mm2"] for r in records}
    assert areas[(2, 1024)] > areas[(1, 1024)] and areas[(1, 2048)] > areas[(1, 1024)]


def test_batched_point_equals_lowbit_sim_batch():
    """A workload with batch and context: the same numbers as `lowbit sim --cached C,C,C` (batch 3), whose
    throughput is 3 x the per-sequence decode rate, and the re-run line says so."""

    from lowbit.explore.evaluate import rerun_command
    from lowbit.explore.spec import spec_from_dict

    spec = spec_from_dict({"sweep": {"base": "tiny", "objectives": ["throughput_tok_s"]},
                           "workload": {"model": "bitnet-tiny", "prefill": 4, "decode": 3, "batch": 3, "context": 16},
                           "params": {"lop.k": [8]}})
    w = spec.workloads[0]
    assert (w.batch, w.context, w.name) == (3, 16, "bitnet-tiny 4+3 x3 @16")
    p = Point(0, {"lop.k": 8}, w)
    rec = evaluate(to_dict(load_hw("tiny", ["lop.k=8"])), p, "sim", {})
    line = rerun_command(spec, p)
    assert "--cached 16,16,16" in line and "--batch" not in line
    r = lowbit(*line.split()[1:], "--json", "-", "--quiet")
    assert r.returncode == 0, r.stderr
    ref = json.loads(r.stdout)
    assert ref["batch"] == 3
    assert rec["cycles"] == ref["cycles"] and rec["throughput_tok_s"] == ref["throughput_tokens_per_s"]
    assert rec["decode_tok_s"] == ref["decode_tokens_per_s"]
    assert rec["throughput_tok_s"] == pytest.approx(3 * rec["decode_tok_s"])
    # without batch/context: the plain single-sequence run
    one = evaluate(to_dict(load_hw("tiny", ["lop.k=8"])), Point(0, {"lop.k": 8}, Workload("bitnet-tiny", 4, 3)), "sim", {})
    assert one["throughput_tok_s"] == one["decode_tok_s"] and one["cycles"] < rec["cycles"]
