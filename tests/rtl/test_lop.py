"""LOP RTL (Verilator + cocotb): LopScore vs sim.numerics.lop.lo_scores (stored 4-bit key codes) and
LopTopK vs sim.numerics.lop.lop_topk, bit-exact; cycles start->done vs sim.units.lop, exact."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("amaranth")
pytest.importorskip("cocotb")

from lowbit.rtl.cocotb_runner import run_bench  # noqa: E402
from lowbit.sim.config import LopConfig, load_config  # noqa: E402
from lowbit.sim.errors import LowbitError  # noqa: E402

PARAMS = {
    "small": LopConfig(k=4, lanes=2, width=4, score_bits=17, buckets=11),  # narrow score, saturating buckets
    "vitallm": load_config("vitallm").lop,  # k 32, lanes 8, width 25, score_bits 24, buckets 63
    "odd": LopConfig(k=5, lanes=3, width=7, score_bits=20, buckets=21),
}


@pytest.mark.parametrize("name", PARAMS)
def test_lop_score_matches_golden_and_cycles(name):
    r = run_bench("lop_score", PARAMS[name], vectors=300, seed=21)
    assert r.vectors >= 300
    assert r.mismatches == 0, r.examples
    assert r.cycle_checks > 20 and r.cycle_mismatches == 0, [c for c in r.cycles if c["sim"] != c["rtl"]][:3]
    assert {"extremes", "zero_q", "zero_keys", "max_score", "m1_d1"} <= {c["kind"] for c in r.cycles}


@pytest.mark.parametrize("name", PARAMS)
def test_lop_topk_matches_golden_and_cycles(name):
    r = run_bench("lop_topk", PARAMS[name], vectors=150, seed=22)
    assert r.vectors >= 150
    assert r.mismatches == 0, r.examples
    assert r.cycle_checks == r.vectors and r.cycle_mismatches == 0, [c for c in r.cycles if c["sim"] != c["rtl"]][:3]
    kinds = {c["kind"] for c in r.cycles}
    assert {"all_equal", "k0", "k_eq_m", "k_gt_m", "m1", "saturating_buckets", "ties_at_threshold"} <= kinds
    assert any(c["m"] % PARAMS[name].lanes for c in r.cycles)


def test_lop_bench_detects_wrong_model():
    """The comparisons can fail: golden with other buckets / shifted scores, cycles +1."""
    cfg = PARAMS["small"]
    r = run_bench("lop_topk", cfg, vectors=40, seed=3, options={"override": {"buckets": 9}, "cycle_offset": 1})
    assert r.mismatches > 0 and r.cycle_mismatches == r.cycle_checks
    r = run_bench("lop_score", cfg, vectors=20, seed=3, options={"override": {"k": 5}})
    assert r.mismatches > 0


@pytest.mark.parametrize("field,value,match", [
    ("score_bits", 16, "lop.score_bits"), ("width", 0, "lop.width"), ("exp_bits", 4, "lop.exp_bits"),
    ("buckets", 8, "lop.buckets"),
])
def test_lop_rejects_unrealisable(field, value, match):
    from lowbit.rtl.lop import validate

    with pytest.raises(LowbitError, match=match):
        validate(dataclasses.replace(PARAMS["small"], **{field: value}))


def test_lop_score_bits_vs_head_dim():
    from lowbit.rtl.lop import max_head_dim, validate

    cfg = PARAMS["vitallm"]
    assert max_head_dim(cfg) == 1023  # (2^23 - 1) >> 13
    validate(cfg, head_dim=100)
    with pytest.raises(LowbitError, match="head_dim 1024"):
        validate(cfg, head_dim=1024)


@pytest.mark.parametrize("name", PARAMS)
def test_lop_verilator_lint_clean(name):
    """verilator --lint-only -Wall: only rtl.lint's documented Amaranth-idiom waivers."""
    from lowbit.rtl.generate import build_verilog
    from lowbit.rtl.lint import lint
    from lowbit.sim.cache import cache_dir

    for unit in ("lop_score", "lop_topk",):
        g = build_verilog(unit, PARAMS[name])
        r = lint(cache_dir("verilog") / f"{unit}-{g.key}.v", g.top)
        assert r.ok, (unit, r.errors[:5])


@pytest.mark.slow
@pytest.mark.parametrize("unit", ["lop_score", "lop_topk"])
@pytest.mark.parametrize("name", PARAMS)
def test_lop_soak(unit, name):
    r = run_bench(unit, PARAMS[name], vectors=100_000 if unit == "lop_score" else 20_000, seed=12345,
                  options={"corners": False})
    assert r.ok, (r.mismatches, r.examples, r.cycle_mismatches)
