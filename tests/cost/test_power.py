"""The Liberty power model's arithmetic on hand-made cells and netlist statistics (no ngspice needed), the
clock target translation, and the report's breakdown section."""

from __future__ import annotations

import math

import pytest

from lowbit.cost.chip_report import liberty_section
from lowbit.cost.power import WIRE_PF_PER_UM, LibertyUnit, block_energy, target_ps
from lowbit.rtl.characterize import LOADS_PF, SLEWS_NS, CellChar
from lowbit.rtl.synth import SynthResult
from lowbit.sim.config import load_hw


def _const(v: float) -> list[list[float]]:
    return [[v] * len(SLEWS_NS) for _ in LOADS_PF]


def _cell(name, caps, rise, fall, clock=0.0, out="Y", fn="!A"):
    timing = [{"related_pin": p, "cell_rise": _const(0.1), "cell_fall": _const(0.1),
               "rise_transition": _const(0.05), "fall_transition": _const(0.05)} for p in caps]
    energy = {p: {"rise": _const(rise), "fall": _const(fall)} for p in (["CLK"] if clock else caps)}
    return CellChar(name, 10.0, out, fn, caps, timing, energy, leakage_nw=2.0, clock_energy_pj=clock)


def test_block_energy_hand_computed():
    chars = {"inv_1": _cell("inv_1", {"A": 0.002}, 0.010, 0.0),
             "dfxtp_1": _cell("dfxtp_1", {"CLK": 0.0015, "D": 0.001}, 0.05, 0.03, clock=0.02, out="Q", fn="IQ")}
    r = SynthResult("t", {"inv_1": 2, "dfxtp_1": 1}, 30.0, 20.0, "k",
                    net_loads={"inv_1": [[0.002, 1, 2]], "dfxtp_1": [[0.001, 1, 1]]})
    b = block_energy(r, chars)
    site = 30.0 / 3 / 0.70
    wire = WIRE_PF_PER_UM * 2 * math.sqrt(2 * site)  # fanout 1: two pins
    v2 = 1.8 ** 2
    # inv: mean(rise, fall) = 0.005 per toggle; flop: mean(0.05, 0.03) - clock-only 0.02 = 0.02
    assert b.internal_pj == pytest.approx(2 * 0.005 + 0.02)
    assert b.net_pj == pytest.approx(0.5 * v2 * (2 * (0.002 + wire) + (0.001 + wire)))
    assert b.toggle_pj == pytest.approx(b.internal_pj + b.net_pj)
    # one flop: no H-tree (sqrt(1) - 1 = 0); clock = internal clock energy + CLK pin C·V²
    assert b.tree_pf == 0.0
    assert b.clock_pj == pytest.approx(0.02 + 0.0015 * v2)
    assert b.leak_sky130_w == pytest.approx(3 * 2.0e-9)
    assert WIRE_PF_PER_UM == pytest.approx(25.7784e-6 * 0.14 + 2 * 40.567e-6)  # sky130 HD tech LEF, met1


def test_clock_tree_grows_with_sqrt_of_flops():
    chars = {"dfxtp_1": _cell("dfxtp_1", {"CLK": 0.0015, "D": 0.001}, 0.05, 0.03, clock=0.02, out="Q", fn="IQ")}
    r = SynthResult("t", {"dfxtp_1": 100}, 2000.0, 2000.0, "k", net_loads={})
    b = block_energy(r, chars)
    assert b.tree_pf == pytest.approx(WIRE_PF_PER_UM * 1.5 * math.sqrt(2000.0 / 0.70) * (10 - 1))


def test_target_is_the_clock_period_in_sky130_terms():
    """vitallm: 1 GHz at 16 nm / 0.8 V. Stillmaker-Baas delay fits: HP16 24.8 V² - 47.52 V + 28.87 at 0.8 V
    = 6.726; 130 nm -76.65 V³ + 334.9 V² - 493.4 V + 275.8 at 1.8 V = 25.74 (hand-evaluated)."""
    d16 = 24.8 * 0.64 - 47.52 * 0.8 + 28.87
    d130 = -76.65 * 1.8 ** 3 + 334.9 * 1.8 ** 2 - 493.4 * 1.8 + 275.8
    assert target_ps(load_hw("vitallm")) == pytest.approx(1000.0 * d130 / d16, rel=1e-9)
    assert 3700 < target_ps(load_hw("vitallm")) < 3950


def test_breakdown_section_names_what_is_not_counted():
    class R:  # the parts of a DesignResult the section reads
        cfg = load_hw("vitallm")

        class hw:  # noqa: N801
            liberty = {"tint": LibertyUnit("tint", 1e-12, 2e-13, 900.0, 3000.0, True, 1e-6, 500)}
            chip = []
            units = []

        @staticmethod
        def breakdown():
            return {"sfu_uncharged_cycles": {"elementwise": 1234},
                    "area_mm2": {"units": 0.05, "sfu": 0.02, "sram": 0.15, "control": None},
                    "decode_power_mw": {"units": 10.0, "sfu": 0.5, "clock": 2.0, "sram": 30.0, "control": None,
                                        "leakage": 1.0}}

    text = "\n".join(liberty_section(R()))
    # 0.05 + 0.02 + 0.15 = 0.22 mm²; 10 + 0.5 + 2 + 30 + 1 = 43.5 mW
    assert "| **total** | **0.2200** (-1 % vs 0.223, +3 % vs 0.214) | **43.50** (-34 % vs 65.97) | |" in text
    assert "| control, DMA, memory port | not counted | not counted | needs the chip top RTL |" in text
    assert "1,234 elementwise busy cycles have no RTL and are not charged" in text
    assert "| tint | 500 | 3,000 | 900 | 1,000 | yes | 0.200 | 1.000 |" in text
