"""TINT core RTL (Verilator + cocotb) vs sim.numerics.tint.tint_dot and sim.units.tint cycles."""

from __future__ import annotations

import pytest

pytest.importorskip("amaranth")
pytest.importorskip("cocotb")

from lowbit.rtl.cocotb_runner import run_bench  # noqa: E402
from lowbit.sim.config import TintConfig, load_config  # noqa: E402

PARAMS = {
    "small": load_config("tiny").tint,  # lanes 2, tree_width 4, acc_bits 20 (shares the CLI test's build)
    "vitallm": load_config("vitallm").tint,  # lanes 6, tree_width 16, acc_bits 24
    "odd": TintConfig(lanes=3, tree_width=5, acc_bits=12),  # non-power-of-two tree, narrow accumulator
}


@pytest.mark.parametrize("name", PARAMS)
def test_tint_matches_golden_and_cycles(name):
    r = run_bench("tint", PARAMS[name], vectors=300, seed=11)
    assert r.vectors >= 300
    assert r.mismatches == 0, r.examples
    assert r.cycle_checks > 20 and r.cycle_mismatches == 0, [c for c in r.cycles if c["sim"] != c["rtl"]][:3]
    kinds = {c["kind"] for c in r.cycles}
    assert {"extremes", "zeros_w", "all_-1_w", "overflow_long", "boundary_plus1"} <= kinds


def test_tint_bench_detects_wrong_model():
    """The comparison can fail: golden computed for a 21-bit accumulator vs a 20-bit DUT, and cycles +1."""
    r = run_bench("tint", PARAMS["small"], vectors=60, seed=3,
                  options={"override": {"acc_bits": 21}, "cycle_offset": 1})
    assert r.mismatches > 0
    assert r.cycle_mismatches == r.cycle_checks


@pytest.mark.slow
@pytest.mark.parametrize("name", PARAMS)
def test_tint_soak(name):
    r = run_bench("tint", PARAMS[name], vectors=100_000, seed=12345, options={"corners": False})
    assert r.ok, (r.mismatches, r.examples, r.cycle_mismatches)
