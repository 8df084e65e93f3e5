"""SFU op datapaths (RMSNorm, softmax, RoPE, SiLU/ReLU^2 gating) on Verilator + cocotb vs the fixed-point golden
models (sim.numerics.sfu_reduce, sfu_elem), bit-exact, and cycles start->done vs sim.units.sfu.sfu_cycles, exact.

make test builds each op once, at the vitallm parameters (16 lanes; rmsnorm/softmax/rope latencies above
their pipelines' minimum, so the padding registers are exercised; activation at its minimum); the slow
soak adds two lanes at the minimum latencies and an odd-width design.
"""

from __future__ import annotations

import pytest

pytest.importorskip("amaranth")
pytest.importorskip("cocotb")

from lowbit.rtl.cocotb_runner import run_bench  # noqa: E402
from lowbit.sim.config import SfuConfig, load_config  # noqa: E402
from lowbit.sim.errors import LowbitError  # noqa: E402

OPS = {"sfu_rmsnorm": "rmsnorm", "sfu_softmax": "softmax", "sfu_rope": "rope", "sfu_act": "activation"}
KINDS = {
    "sfu_rmsnorm": {"zeros", "zeros_eps", "one_hot", "extremes", "tiny", "single", "one_beat", "random"},
    "sfu_softmax": {"constant", "dominant", "extremes", "negative", "single", "one_beat", "random"},
    "sfu_rope": {"extremes", "random_trig", "one_pair", "random"},
    "sfu_act": {"edges_silu", "edges_silu_glu", "edges_relu2", "edges_relu2_glu", "single_silu_glu"},
}
VITALLM = load_config("vitallm").sfu
_LAT = SfuConfig().latency
MIN = {"rmsnorm": 11, "softmax": 13, "rope": 3, "activation": 6}


@pytest.mark.parametrize("unit", OPS)
def test_sfu_op_matches_golden_and_cycles(unit):
    r = run_bench(unit, VITALLM, vectors=150, seed=17)
    assert r.vectors >= 150
    assert r.mismatches == 0, r.examples
    assert r.cycle_checks > 20 and r.cycle_mismatches == 0, [c for c in r.cycles if c["sim"] != c["rtl"]][:3]
    assert KINDS[unit] <= {c["kind"] for c in r.cycles}


@pytest.mark.parametrize("unit", ["sfu_rmsnorm", "sfu_softmax"])
def test_sfu_op_bench_detects_wrong_model(unit):
    """The comparison can fail: every expected value +1, every expected cycle count +1 (same build as above)."""
    r = run_bench(unit, VITALLM, vectors=20, seed=3, options={"corrupt": True, "cycle_offset": 1, "corners": False})
    assert r.mismatches == r.vectors and r.cycle_mismatches == r.cycle_checks


@pytest.mark.parametrize("unit,op", OPS.items())
def test_sfu_op_rejects_short_latency(unit, op):
    from lowbit.rtl.registry import get_unit

    u = get_unit(unit)
    u.validate(SfuConfig(lanes=4, latency={**_LAT, op: MIN[op]}))
    with pytest.raises(LowbitError, match=f"sfu.latency.{op} = {MIN[op] - 1}"):
        u.validate(SfuConfig(lanes=4, latency={**_LAT, op: MIN[op] - 1}))


def test_sfu_rope_needs_even_lanes():
    from lowbit.rtl.sfu_rope import validate

    with pytest.raises(LowbitError, match="sfu.lanes = 5"):
        validate(SfuConfig(lanes=5))


@pytest.mark.parametrize("unit", OPS)
def test_sfu_op_verilator_lint_clean(unit):
    """verilator --lint-only -Wall: only rtl.lint's documented Amaranth-idiom waivers."""
    from lowbit.rtl.generate import build_verilog
    from lowbit.rtl.lint import lint
    from lowbit.sim.cache import cache_dir

    g = build_verilog(unit, VITALLM)
    r = lint(cache_dir("verilog") / f"{unit}-{g.key}.v", g.top)
    assert r.ok, (unit, r.errors[:5])


SOAK = {
    "min": SfuConfig(lanes=2, latency=MIN),
    "vitallm": VITALLM,
    "wide": SfuConfig(lanes=6, latency={**_LAT, "rmsnorm": 15, "softmax": 20, "rope": 4, "activation": 9}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", SOAK)
@pytest.mark.parametrize("unit", OPS)
def test_sfu_op_soak(unit, name):
    r = run_bench(unit, SOAK[name], vectors=20_000, seed=2024, options={"corners": name != "vitallm"})
    assert r.ok, (r.mismatches, r.examples, r.cycle_mismatches)
