"""BoothFlex and BoothFlex-BS RTL (Verilator + cocotb) vs sim.numerics.booth and sim.units.booth cycles."""

from __future__ import annotations

import pytest

pytest.importorskip("amaranth")
pytest.importorskip("cocotb")

from lowbit.rtl.cocotb_runner import run_bench  # noqa: E402
from lowbit.sim.config import BoothConfig, load_config  # noqa: E402

BOOTH = {
    "small": load_config("tiny").booth,  # lanes 2, width 2, acc_bits 20 (shares the CLI test's build)
    "vitallm": load_config("vitallm").booth,  # lanes 4, width 4, acc_bits 24, ternary mode
    "odd": BoothConfig(lanes=3, width=3, acc_bits=17),  # 12-row tree; INT8 corners overflow after 4 products
}
BOOTH_BS = {
    "small": BoothConfig(lanes=1, width=2, acc_bits=18, bit_serial=True),
    "vitallm-bs": load_config("vitallm-bs").booth,  # lanes 4, width 4, acc_bits 24, precisions 2/4/8
    "odd": BoothConfig(lanes=3, width=5, acc_bits=20, bit_serial=True, precisions=(2, 4)),  # 2-digit max
}


def _check(r, kinds):
    assert r.mismatches == 0, r.examples
    assert r.cycle_checks > 20 and r.cycle_mismatches == 0, [c for c in r.cycles if c["sim"] != c["rtl"]][:3]
    assert kinds <= {c["kind"] for c in r.cycles}


@pytest.mark.parametrize("name", BOOTH)
def test_booth_matches_golden_and_cycles(name):
    r = run_bench("booth", BOOTH[name], vectors=300, seed=21)
    assert r.vectors >= 300
    _check(r, {"-128x-128", "127x127", "zeros_w", "all_-1_w", "overflow_long", "boundary_plus1", "boundary_in_range"})
    assert {"int8", "ternary"} == {c["mode"] for c in r.cycles}


@pytest.mark.parametrize("name", BOOTH_BS)
def test_booth_bs_matches_golden_and_cycles(name):
    cfg = BOOTH_BS[name]
    r = run_bench("booth_bs", cfg, vectors=300, seed=31)
    assert r.vectors >= 300
    _check(r, {"min_x_min", "max_x_max", "zeros_a", "overflow_long"})
    assert {c["mode"] for c in r.cycles} == {f"int{p}" for p in cfg.precisions} | {"ternary"}


@pytest.mark.parametrize("unit,cfg", [("booth", BOOTH["small"]), ("booth_bs", BOOTH_BS["small"])])
def test_booth_bench_detects_wrong_model(unit, cfg):
    """The comparison can fail: golden for a 1-bit wider accumulator than the DUT, and cycles +1."""
    r = run_bench(unit, cfg, vectors=60, seed=3, options={"override": {"acc_bits": cfg.acc_bits + 1},
                                                          "cycle_offset": 1})
    assert r.mismatches > 0
    assert r.cycle_mismatches == r.cycle_checks


@pytest.mark.slow
@pytest.mark.parametrize("name", BOOTH)
def test_booth_soak(name):
    r = run_bench("booth", BOOTH[name], vectors=100_000, seed=54321, options={"corners": False})
    assert r.ok, (r.mismatches, r.examples, r.cycle_mismatches)


@pytest.mark.slow
@pytest.mark.parametrize("name", BOOTH_BS)
def test_booth_bs_soak(name):
    r = run_bench("booth_bs", BOOTH_BS[name], vectors=100_000, seed=54321, options={"corners": False})
    assert r.ok, (r.mismatches, r.examples, r.cycle_mismatches)
