"""Energy arithmetic on hand-computed cases."""

from __future__ import annotations

import pytest

from lowbit.cost.area import sky130_to
from lowbit.cost.energy import (
    BETA_CLK,
    K_PAR,
    cycle_energy_sky130_j,
    hw_cost,
    phase_energy,
    subtract_activity,
    toggle_energy_j,
    unit_cost,
)
from lowbit.sim.config import load_config

CAPS = {"nand2_1": 4e-15, "dfxtp_1": 16e-15}


def test_toggle_and_cycle_energy_hand():
    assert toggle_energy_j(4e-15) == pytest.approx(0.5 * K_PAR * 4e-15 * 1.8 ** 2)
    e = cycle_energy_sky130_j({"nand2_1": 10, "dfxtp_1": 2}, CAPS, 0.5)
    hand = 10 * 0.5 * (0.5 * 2 * 4e-15 * 3.24) + 2 * (0.5 + BETA_CLK) * (0.5 * 2 * 16e-15 * 3.24)
    assert e == pytest.approx(hand)


def _tiny_hw():
    cfg = load_config("tiny")
    u = unit_cost(cfg, "tint", {"nand2_1": 100, "dfxtp_1": 10}, CAPS, 1, 0.2, area_sky130_um2=1000.0)
    b = unit_cost(cfg, "booth", None, CAPS, 1, None)  # not synthesised
    return cfg, hw_cost(cfg, [u, b]), u


def test_unit_cost_scaling_hand():
    cfg, hw, u = _tiny_hw()
    af, ef = sky130_to(cfg.node_nm, cfg.supply_v)
    assert u.area_um2 == pytest.approx(1000.0 * af / 0.7)
    e_sky = 100 * 0.2 * toggle_energy_j(4e-15) + 10 * (0.2 + BETA_CLK) * toggle_energy_j(16e-15)
    assert u.cycle_energy_j == pytest.approx(e_sky * ef)
    assert hw.missing_units() == ["booth"]
    assert hw.area_mm2 == pytest.approx((u.area_um2 + sum(s.area_um2 for s in hw.srams)) / 1e6)


def test_phase_energy_hand():
    cfg, hw, u = _tiny_hw()
    act = {"busy_cycles": {"tint0": 1000, "booth": 50}, "sram_read_bytes": {"weight": 400, "act": 100},
           "sram_write_bytes": {"psum": 40}, "dram_bytes": {"weights": 1000, "kv": 24}}
    p = phase_energy(hw, cfg, act, tokens=4, time_s=2e-3)
    s = {x.name: x for x in hw.srams}
    assert p.logic_j["tint"] == pytest.approx(1000 * u.cycle_energy_j)
    assert p.logic_j["booth"] == 0.0
    sram = 400 * s["weight"].read_pj_per_byte + 100 * s["act"].read_pj_per_byte + 40 * s["psum"].write_pj_per_byte
    assert p.sram_j == pytest.approx(sram * 1e-12)
    assert p.dram_j == pytest.approx(1024 * 8 * cfg.dram.energy_pj_per_bit * 1e-12)
    assert p.leak_j == pytest.approx(hw.leak_w * 2e-3)
    assert p.core_j == pytest.approx(p.logic_j["tint"] + p.sram_j + p.leak_j)
    assert p.energy_per_token_j == pytest.approx(p.core_j / 4)
    assert p.core_power_w == pytest.approx(p.core_j / 2e-3)
    assert p.tokens_per_s == pytest.approx(2000)


def test_phase_energy_from_op_counts():
    cfg, hw, u = _tiny_hw()
    # no busy_cycles: ternary MACs split by capacity between tint (8/cycle) and booth (16/cycle in ternary mode)
    p = phase_energy(hw, cfg, {"ternary_macs": 2400}, tokens=1, time_s=1e-6)
    assert p.busy_cycles["tint"] == pytest.approx(2400 * 8 / 24 / 8)
    assert p.logic_j["tint"] == pytest.approx(100 * u.cycle_energy_j)


def test_subtract_activity_nested():
    full = {"a": 10, "b": {"x": 5, "y": 7}, "s": "keep"}
    part = {"a": 4, "b": {"x": 5}}
    assert subtract_activity(full, part) == {"a": 6, "b": {"x": 0, "y": 7}, "s": "keep"}


def test_fp4_unit_name_is_not_an_instance_index():
    cfg = load_config("vitallm-fp4")
    hw = hw_cost(cfg, [unit_cost(cfg, "fp4", {"nand2_1": 10}, CAPS, 1, 0.5, area_sky130_um2=37.5)])
    p = phase_energy(hw, cfg, {"busy_cycles": {"fp4": 100}}, tokens=1, time_s=1e-6)
    assert p.logic_j["fp4"] == pytest.approx(100 * hw.units[0].cycle_energy_j)
