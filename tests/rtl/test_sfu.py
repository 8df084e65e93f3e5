"""SFU quantization barrier RTL (Verilator + cocotb) vs sim.numerics.sfu.sfu_absmax_quantize, bit-exact
(codes and row amax), and cycles start->done vs sim.units.sfu.sfu_cycles("quantize"), exact."""

from __future__ import annotations

import pytest

pytest.importorskip("amaranth")
pytest.importorskip("cocotb")

from lowbit.rtl.cocotb_runner import run_bench  # noqa: E402
from lowbit.sim.config import SfuConfig, load_config  # noqa: E402
from lowbit.sim.errors import LowbitError  # noqa: E402

_LAT = SfuConfig().latency
PARAMS = {
    "small": SfuConfig(lanes=2, latency={**_LAT, "quantize": 3}),  # minimum pipeline, no padding
    "vitallm": load_config("vitallm").sfu,  # lanes 16, quantize latency 6
    "odd": SfuConfig(lanes=5, latency={**_LAT, "quantize": 9}),
}


@pytest.mark.parametrize("name", PARAMS)
def test_sfu_matches_golden_and_cycles(name):
    r = run_bench("sfu", PARAMS[name], vectors=300, seed=41)
    assert r.vectors >= 300
    assert r.mismatches == 0, r.examples
    assert r.cycle_checks > 20 and r.cycle_mismatches == 0, [c for c in r.cycles if c["sim"] != c["rtl"]][:3]
    assert {"zeros", "extremes", "ties", "single", "dim_lt_lanes", "small_amax"} <= {c["kind"] for c in r.cycles}


def test_sfu_bench_detects_wrong_model():
    """The comparison can fail: golden with a 4-bit reciprocal, cycles +1."""
    r = run_bench("sfu", PARAMS["small"], vectors=60, seed=3,
                  options={"override": {"recip_bits": 4}, "cycle_offset": 1})
    assert r.mismatches > 0 and r.cycle_mismatches == r.cycle_checks


def test_sfu_rejects_unrealisable():
    from lowbit.rtl.sfu import validate

    with pytest.raises(LowbitError, match="sfu.latency.quantize"):
        validate(SfuConfig(lanes=4, latency={**_LAT, "quantize": 2}))
    with pytest.raises(LowbitError, match="recip_bits"):
        validate(SfuConfig(lanes=4), in_bits=24, recip_bits=20)


@pytest.mark.parametrize("name", PARAMS)
def test_sfu_verilator_lint_clean(name):
    """verilator --lint-only -Wall: only rtl.lint's documented Amaranth-idiom waivers."""
    from lowbit.rtl.generate import build_verilog
    from lowbit.rtl.lint import lint
    from lowbit.sim.cache import cache_dir

    for unit in ("sfu",):
        g = build_verilog(unit, PARAMS[name])
        r = lint(cache_dir("verilog") / f"{unit}-{g.key}.v", g.top)
        assert r.ok, (unit, r.errors[:5])


@pytest.mark.slow
@pytest.mark.parametrize("name", PARAMS)
def test_sfu_soak(name):
    r = run_bench("sfu", PARAMS[name], vectors=100_000, seed=12345, options={"corners": False})
    assert r.ok, (r.mismatches, r.examples, r.cycle_mismatches)
