"""Registry of RTL units: one entry per unit, one file per unit (rtl/<unit>.py) plus its cocotb bench.

To add a unit (e.g. LOP):
1. ``rtl/lop.py``: ``validate(section_cfg)`` raising LowbitError, and a ``wiring.Component`` built from
   the config section that follows the start/done convention of rtl/common.py.
2. ``rtl/bench/lop_bench.py``: a cocotb module with one ``@cocotb.test()`` that reads its job with
   ``rtl.bench.common.load_job()`` and writes ``write_result(...)`` (vectors, mismatches, cycles).
3. Add a ``UnitSpec`` to ``UNITS`` below (section, import paths, cycle formula) and a pytest wrapper in
   tests/rtl/ using ``rtl.cocotb_runner.run_bench``.
Nothing in this module imports amaranth or cocotb (the CLI imports it at start-up).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from lowbit.sim.errors import LowbitError


@dataclass(frozen=True)
class UnitSpec:
    name: str
    section: str  # HwConfig attribute holding the unit's parameters
    component: str  # "module:Class", built as Class(section_cfg)
    validator: str  # "module:function", validate(section_cfg) -> None or LowbitError
    bench: str  # cocotb test module (importable)
    cycle_functions: tuple[str, ...]  # "module:function" of the sim/units formulas the bench checks
    cycle_formula: str  # human-readable formula text for manifest.json
    params: tuple[str, ...]  # section fields the RTL depends on (cache key + manifest)
    hw_unit: str  # name in HwConfig.units that makes this unit part of a preset

    def section_cfg(self, cfg: Any) -> Any:
        return getattr(cfg, self.section)

    def parameters(self, section_cfg: Any) -> dict[str, Any]:
        return {p: getattr(section_cfg, p) for p in self.params}

    def build(self, section_cfg: Any):
        return _resolve(self.component)(section_cfg)

    def validate(self, section_cfg: Any) -> None:
        _resolve(self.validator)(section_cfg)


def _resolve(path: str):
    mod, attr = path.split(":")
    return getattr(importlib.import_module(mod), attr)


UNITS: dict[str, UnitSpec] = {}


def register_unit(spec: UnitSpec) -> UnitSpec:
    UNITS[spec.name] = spec
    return spec


register_unit(UnitSpec(
    name="tint", section="tint", component="lowbit.rtl.tint:TintCore", validator="lowbit.rtl.tint:validate",
    bench="lowbit.rtl.bench.tint_bench", cycle_functions=("lowbit.sim.units.tint:tint_tile_cycles",),
    cycle_formula="passes*ceil(k/tree_width) + clog2(tree_width) + 2",
    params=("lanes", "tree_width", "acc_bits"), hw_unit="tint",
))
register_unit(UnitSpec(
    name="booth", section="booth", component="lowbit.rtl.booth:BoothFlex", validator="lowbit.rtl.booth:validate",
    bench="lowbit.rtl.bench.booth_bench",
    cycle_functions=("lowbit.sim.units.booth:booth_int8_tile_cycles", "lowbit.sim.units.booth:booth_ternary_tile_cycles"),
    cycle_formula="int8: passes*ceil(k/width) + clog2(4*width) + 2; "
                  "ternary: passes*ceil(k/(4*width)) + clog2(4*width) + 2",
    params=("lanes", "width", "acc_bits", "ternary_mode"), hw_unit="booth",
))
register_unit(UnitSpec(
    name="booth_bs", section="booth", component="lowbit.rtl.booth_bs:BoothFlexBS", validator="lowbit.rtl.booth_bs:validate",
    bench="lowbit.rtl.bench.booth_bs_bench", cycle_functions=("lowbit.sim.units.booth:booth_bs_tile_cycles",),
    cycle_formula="passes*ceil(k/width)*digits(bits) + clog2(width) + 2, digits = bits/2 (ternary: 1)",
    params=("lanes", "width", "acc_bits", "ternary_mode", "precisions"), hw_unit="booth",
))

# LOP / FP4 / SFU units (rtl/lop.py, rtl/fp4.py, rtl/sfu.py; benches rtl/bench/{lop,fp4,sfu}_bench.py)
register_unit(UnitSpec(
    name="lop_score", section="lop", component="lowbit.rtl.lop:LopScore", validator="lowbit.rtl.lop:validate",
    bench="lowbit.rtl.bench.lop_bench", cycle_functions=("lowbit.sim.units.lop:lop_score_cycles",),
    cycle_formula="ceil(M/lanes)*ceil(d/width) + clog2(width) + 2",
    params=("lanes", "width", "exp_bits", "score_bits"), hw_unit="lop",
))
register_unit(UnitSpec(
    name="lop_topk", section="lop", component="lowbit.rtl.lop:LopTopK", validator="lowbit.rtl.lop:validate",
    bench="lowbit.rtl.bench.lop_bench", cycle_functions=("lowbit.sim.units.lop:lop_topk_cycles",),
    cycle_formula="2*ceil(M/lanes) + buckets + 2", params=("lanes", "score_bits", "buckets", "k"), hw_unit="lop",
))
register_unit(UnitSpec(
    name="fp4", section="fp4", component="lowbit.rtl.fp4:Fp4Core", validator="lowbit.rtl.fp4:validate",
    bench="lowbit.rtl.bench.fp4_bench", cycle_functions=("lowbit.sim.units.fp4:fp4_tile_cycles",),
    cycle_formula="passes*ceil(k/elems_per_cycle) + clog2(elems_per_cycle) + 3",
    params=("format", "lanes", "elems_per_cycle", "block_sum_bits", "frac_bits", "acc_bits"), hw_unit="fp4",
))
register_unit(UnitSpec(
    name="sfu", section="sfu", component="lowbit.rtl.sfu:SfuQuantize", validator="lowbit.rtl.sfu:validate",
    bench="lowbit.rtl.bench.sfu_bench", cycle_functions=("lowbit.sim.units.sfu:sfu_cycles",),
    cycle_formula="quantize: rows*(2*ceil(dim/lanes) + D_recip) + latency.quantize, "
                  "D_recip = ceil((in_bits + 9) / 2) = 17 (reciprocal divider stall per row)",
    params=("lanes", "latency"), hw_unit="sfu",
))


def get_unit(name: str) -> UnitSpec:
    if name not in UNITS:
        raise LowbitError(f"unknown RTL unit '{name}'; available: {', '.join(UNITS)}")
    return UNITS[name]


def units_for(cfg: Any) -> list[str]:
    """Units a hardware config instantiates (booth -> booth_bs when booth.bit_serial)."""
    out = []
    for spec in UNITS.values():
        if not cfg.has(spec.hw_unit):
            continue
        if spec.name == "booth" and cfg.booth.bit_serial:
            continue
        if spec.name == "booth_bs" and not cfg.booth.bit_serial:
            continue
        out.append(spec.name)
    return out
