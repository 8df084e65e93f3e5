"""Full-chip power from the chip netlist and the chip bench's activity (cost/chip_power.py): module owners,
activity per owner busy cycle and energy per busy cycle, hand-computed on made-up netlists (no yosys)."""

from __future__ import annotations

import pytest

from lowbit.cost.area import sky130_to
from lowbit.cost.chip_power import chip_cost, chip_sfu_ops
from lowbit.cost.power import block_energy
from lowbit.rtl.activity_chip import ChipActivity
from lowbit.rtl.synth import SynthResult
from lowbit.rtl.synth_hier import HierResult
from lowbit.sim.config import load_hw
from tests.cost.test_power import _cell


def test_chip_cost_hand_computed():
    chars = {"inv_1": _cell("inv_1", {"A": 0.002}, 0.010, 0.0),
             "dfxtp_1": _cell("dfxtp_1", {"CLK": 0.0015, "D": 0.001}, 0.05, 0.03, clock=0.02, out="Q", fn="IQ")}

    def res(n_inv: int, n_ff: int) -> SynthResult:
        return SynthResult("m", {"inv_1": n_inv, "dfxtp_1": n_ff}, 10.0 * (n_inv + n_ff), 10.0 * n_ff, "k",
                           net_loads={"inv_1": [[0.002, 1, n_inv]], "dfxtp_1": [[0.001, 1, n_ff]]}, delay_ps=500.0)

    mods = {"lowbit_chip": res(4, 2), "lowbit_chip.eng_tint0": res(10, 5), "lowbit_chip.eng_tint1": res(10, 5),
            "lowbit_chip.sfu_rms": res(6, 3), "lowbit_chip.q_dma_w": res(2, 2)}
    h = HierResult("lowbit_chip", mods, {m: 1 for m in mods})
    # toggles, bits; run of 1,000 cycles: tint0 busy 400, tint1 busy 200, sfu busy 100
    act = ChipActivity("vitallm", "w", 1000, {"tint0": 400, "tint1": 200, "sfu": 100, "dma_w": 50},
                       {"lowbit_chip": [600, 20], "lowbit_chip.eng_tint0": [4000, 50],
                        "lowbit_chip.eng_tint1": [1000, 50], "lowbit_chip.sfu_rms": [90, 30],
                        "lowbit_chip.q_dma_w": [100, 10]}, "x.v", {})
    cfg = load_hw("vitallm")
    c = chip_cost(cfg, h, act, chars, target_ps=1000.0)
    _af, ef = sky130_to(cfg.node_nm, cfg.supply_v)
    a = {m.name: m.activity for m in c.modules}
    assert a["lowbit_chip.eng_tint0"] == pytest.approx(4000 / (50 * 400))   # per its own queue's busy cycle
    assert a["lowbit_chip.eng_tint1"] == pytest.approx(1000 / (50 * 200))
    assert a["lowbit_chip.sfu_rms"] == pytest.approx(90 / (30 * 100))
    assert a["lowbit_chip"] == pytest.approx(600 / (20 * 1000))              # control: every cycle of the run
    b = block_energy(mods["lowbit_chip.eng_tint0"], chars)
    tint = next(u for u in c.units if u.name == "tint")
    assert tint.instances == 2 and tint.hw_unit == "tint"
    want = (0.2 * b.toggle_pj + b.clock_pj) + (0.1 * b.toggle_pj + b.clock_pj)  # both instances, per busy cycle
    assert tint.cycle_energy_j == pytest.approx(want * 1e-12 * ef)
    parts = {p.name: p for p in c.parts}
    bc = block_energy(mods["lowbit_chip"], chars)
    assert parts["control"].cycle_energy_j == pytest.approx((0.03 * bc.toggle_pj + bc.clock_pj) * 1e-12 * ef)
    assert set(parts) == {"control", "DMA, memory port"}
    assert chip_sfu_ops(c) == {"rmsnorm"}


def test_sta_starts_undriven_nets_like_inputs():
    """A kept memory's read data has no driver in the netlist: it starts at 0 like a block input (rtl/sta.py)."""
    from lowbit.rtl.sta import critical_path_ps

    chars = {"inv_1": _cell("inv_1", {"A": 0.002}, 0.010, 0.0)}
    net = {"modules": {"m": {"attributes": {"top": 1}, "ports": {"y": {"direction": "output", "bits": [3]}},
                             "cells": {"a": {"type": "sky130_fd_sc_hd__inv_1", "connections": {"A": [5], "Y": [6]}},
                                       "b": {"type": "sky130_fd_sc_hd__inv_1", "connections": {"A": [6], "Y": [3]}}}}}}
    assert critical_path_ps(net, chars, "inv_1", 0.005) == pytest.approx(200.0)  # two 0.1 ns stages


def test_report_refuses_bad_control(tmp_path, capsys):
    from lowbit.cli import main

    assert main(["report", "--hw", "vitallm", "--out", str(tmp_path / "r"), "--control", "chip:vitallm-fp4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "chip:HW[,HW]" in err[0]
