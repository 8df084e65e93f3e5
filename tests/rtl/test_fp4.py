"""FP4 core RTL (Verilator + cocotb) vs sim.numerics.fp4dot.fp4_block_dot (saturate + floor), bit-exact on
acc / overflow / NaN, and cycles start->done vs sim.units.fp4.fp4_tile_cycles, exact."""

from __future__ import annotations

import dataclasses
import json

import pytest

pytest.importorskip("amaranth")
pytest.importorskip("cocotb")

from lowbit.rtl.cocotb_runner import run_bench  # noqa: E402
from lowbit.sim.config import Fp4Config, load_config  # noqa: E402
from lowbit.sim.errors import LowbitError  # noqa: E402

PARAMS = {
    # MXFP4, 8 elements/beat < block 32 (a block spans 4 beats), narrow block sum -> saturation
    "small": Fp4Config(enabled=True, format="mxfp4", lanes=2, elems_per_cycle=8, block_sum_bits=12,
                       frac_bits=4, acc_bits=20),
    "vitallm": load_config("vitallm-fp4").fp4,  # nvfp4, lanes 6, 32/beat (2 blocks), 16/8/32 bits
    # NVFP4 with 48 elements/beat (3 blocks per beat, non-power-of-two tree), one lane, odd widths
    "odd": Fp4Config(enabled=True, format="nvfp4", lanes=1, elems_per_cycle=48, block_sum_bits=15,
                     frac_bits=5, acc_bits=23),
}


@pytest.mark.parametrize("name", PARAMS)
def test_fp4_matches_golden_and_cycles(name):
    r = run_bench("fp4", PARAMS[name], vectors=300, seed=31)
    assert r.vectors >= 300
    assert r.mismatches == 0, r.examples
    assert r.cycle_checks > 20 and r.cycle_mismatches == 0, [c for c in r.cycles if c["sim"] != c["rtl"]][:3]
    kinds = {c["kind"] for c in r.cycles}
    assert {"saturating", "saturating_acc", "nan_scale", "k1", "k_not_multiple", "tiny_scales"} <= kinds
    res = json.loads((r.run_dir / "result.json").read_text())
    assert res["overflow_vectors"] > 0 and res["nan_vectors"] > 0  # both flags exercised


def test_fp4_bench_detects_wrong_model():
    """The comparison can fail: golden with one more fraction bit, cycles +1."""
    cfg = PARAMS["small"]
    r = run_bench("fp4", cfg, vectors=40, seed=3, options={"override": {"frac_bits": 5}, "cycle_offset": 1})
    assert r.mismatches > 0 and r.cycle_mismatches == r.cycle_checks


@pytest.mark.parametrize("field,value,match", [
    ("acc_bits", 16, "fp4.acc_bits"), ("block_sum_bits", 1, "fp4.block_sum_bits"),
    ("elems_per_cycle", 12, "fp4.elems_per_cycle"), ("frac_bits", 300, "fp4.frac_bits"), ("acc_bits", 63, "fp4.acc_bits"),
])
def test_fp4_rejects_unrealisable(field, value, match):
    from lowbit.rtl.fp4 import validate

    with pytest.raises(LowbitError, match=match):
        validate(dataclasses.replace(PARAMS["vitallm"], **{field: value}))


@pytest.mark.parametrize("name", PARAMS)
def test_fp4_verilator_lint_clean(name):
    """verilator --lint-only -Wall: only rtl.lint's documented Amaranth-idiom waivers."""
    from lowbit.rtl.generate import build_verilog
    from lowbit.rtl.lint import lint
    from lowbit.sim.cache import cache_dir

    for unit in ("fp4",):
        g = build_verilog(unit, PARAMS[name])
        r = lint(cache_dir("verilog") / f"{unit}-{g.key}.v", g.top)
        assert r.ok, (unit, r.errors[:5])


@pytest.mark.slow
@pytest.mark.parametrize("name", PARAMS)
def test_fp4_soak(name):
    r = run_bench("fp4", PARAMS[name], vectors=100_000, seed=12345, options={"corners": False})
    assert r.ok, (r.mismatches, r.examples, r.cycle_mismatches)
