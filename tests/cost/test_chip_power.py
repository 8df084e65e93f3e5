"""Full-chip power from the chip netlist and the chip bench's activity (cost/chip_power.py): module owners,
activity per owner busy cycle and energy per busy cycle, hand-computed on made-up netlists (no yosys)."""

from __future__ import annotations

import pytest

from lowbit.cost.area import PLACEMENT_UTILISATION, sky130_to
from lowbit.cost.chip_power import chip_cost, chip_sfu_ops, choose_build
from lowbit.cost.power import block_energy
from lowbit.cost.sram import sram_estimate
from lowbit.rtl.activity_chip import ChipActivity
from lowbit.rtl.synth import SynthResult
from lowbit.rtl.synth_hier import HierResult, add_netlist
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
    mods["lowbit_chip.sfu_rms"].mapping, mods["lowbit_chip.sfu_rms"].target_ps = "quick", 1000.0
    h = HierResult("lowbit_chip", mods, {m: 1 for m in mods}, missing={"lowbit_chip.embed": "timed out"},
                   roms={"lowbit_chip.sfu_rms": [{"name": "t", "cells": 3}]})
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
    assert c.missing == {"lowbit_chip.embed": "timed out"} and c.roms == {"lowbit_chip.sfu_rms": [{"name": "t", "cells": 3}]}
    assert c.area_mapped == c.quick_mapped == ["lowbit_chip.sfu_rms"]


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


def test_memory_rule_picks_the_smaller_area():
    assert choose_build(sram_um2=10.0, regfile_um2=5.0) == "regfile"
    assert choose_build(sram_um2=5.0, regfile_um2=10.0) == "sram"
    assert choose_build(sram_um2=5.0, regfile_um2=5.0) == "sram"  # a tie keeps the macro


def test_chip_memories_are_built_where_the_rule_says():
    """Two extra memories and a buffer in the control module: the small instruction memory becomes a register
    file (its cells join the module), the large one stays a macro (the "control memories" part), the buffer
    is not a choice."""
    chars = {"inv_1": _cell("inv_1", {"A": 0.002}, 0.010, 0.0),
             "dfxtp_1": _cell("dfxtp_1", {"CLK": 0.0015, "D": 0.001}, 0.05, 0.03, clock=0.02, out="Q", fn="IQ")}
    imem = {"name": "imem", "width": 113, "size": 16, "rd_ports": 1, "wr_ports": 1, "clocked": True}
    big = {"name": "qmem", "width": 64, "size": 2048, "rd_ports": 1, "wr_ports": 1, "clocked": False}
    buf = {"name": "bank0", "width": 64, "size": 1024, "rd_ports": 1, "wr_ports": 1}
    top = SynthResult("lowbit_chip", {"inv_1": 4, "dfxtp_1": 2}, 60.0, 20.0, "k",
                      net_loads={"inv_1": [[0.002, 1, 4]], "dfxtp_1": [[0.001, 1, 2]]}, delay_ps=500.0,
                      memories=[imem, big, buf])
    h = HierResult("lowbit_chip", {"lowbit_chip": top}, {"lowbit_chip": 1})
    act = ChipActivity("vitallm", "w", 1000, {}, {"lowbit_chip": [600, 20]}, "x.v", {})
    asked = []

    def regfile(mem):  # made-up netlists: 10 µm² per flop, one flop per stored bit (+ a read register)
        asked.append(mem["name"])
        n = mem["size"] * mem["width"] + (mem["width"] if mem["clocked"] else 0)
        return SynthResult("lowbit_rf", {"dfxtp_1": n}, 10.0 * n, 10.0 * n, "k", net_loads={"dfxtp_1": [[0.001, 1, n]]},
                           delay_ps=300.0)

    cfg = load_hw("vitallm")
    c = chip_cost(cfg, h, act, chars, target_ps=1000.0, regfile=regfile, flop_um2=10.0)
    af, ef = sky130_to(cfg.node_nm, cfg.supply_v)
    # config buffers are not offered a register file; qmem's 2048 x 64 flops alone exceed its macro: not synthesised
    assert asked == ["imem"]
    m = {x["name"]: x for x in c.memories}
    rf_imem = 10.0 * (16 * 113 + 113) * af / PLACEMENT_UTILISATION
    rf_big = 10.0 * 2048 * 64 * af / PLACEMENT_UTILISATION
    s_imem = sram_estimate("imem", 16 * 113 // 8, 1, 1, cfg.node_nm, cfg.supply_v, word_bits=113).area_um2
    s_big = sram_estimate("qmem", 2048 * 64 // 8, 1, 1, cfg.node_nm, cfg.supply_v, word_bits=64).area_um2
    assert rf_imem < s_imem and rf_big > s_big  # the two sides of the rule, by these made-up netlists
    assert m["imem"]["built"] == "regfile" and m["imem"]["area_um2"] == pytest.approx(rf_imem)
    assert m["imem"]["sram_area_um2"] == pytest.approx(s_imem) and m["imem"]["regfile_flops"] == 16 * 113 + 113
    assert m["qmem"]["built"] == "sram" and m["qmem"]["regfile_area_um2"] == pytest.approx(rf_big)
    assert m["qmem"]["regfile_bound"] and not m["imem"]["regfile_bound"]
    assert m["bank0"]["role"] == "buffer" and "regfile_area_um2" not in m["bank0"]
    parts = {p.name: p for p in c.parts}
    assert parts["control memories"].area_um2 == pytest.approx(s_big)
    assert parts["control"].area_um2 == pytest.approx((60.0 + 10.0 * (16 * 113 + 113)) * af / PLACEMENT_UTILISATION)
    assert parts["control"].flops == 2 + 16 * 113 + 113
    want = block_energy(add_netlist(top, regfile(imem)), chars)  # the register file charged as the module's logic
    assert parts["control"].cycle_energy_j == pytest.approx((0.03 * want.toggle_pj + want.clock_pj) * 1e-12 * ef)
    from lowbit.cost.chip_report import chip_netlist_section

    text = "\n".join(chip_netlist_section(c, cfg))
    assert (f"| lowbit_chip | imem | 1 | 16 x 113 | 1R 1W | registered | {s_imem:,.0f} | {rf_imem:,.0f} | 1,921 | "
            "register file |") in text
    assert f"| lowbit_chip | qmem | 1 | 2,048 x 64 | 1R 1W | combinational | {s_big:,.0f} | ≥ {rf_big:,.0f} |" in text
    assert "1 register files" in text and "1 macros" in text


def test_chip_sfu_ops_names_every_sfu_engine():
    """The chip's RoPE and softmax engines cover their ops: their standalone datapaths are not added again."""
    from types import SimpleNamespace

    mods = [SimpleNamespace(name=f"lowbit_chip.{n}", part="sfu") for n in ("sfu_rope", "sfu_softmax", "sfu_headq")]
    mods.append(SimpleNamespace(name="lowbit_chip.sfu_rope", part="control"))
    assert chip_sfu_ops(SimpleNamespace(modules=mods)) == {"rope", "softmax"}


def test_chip_netlist_asked_by_name_is_refused_not_replaced(monkeypatch):
    """`--control chip:HW`: a chip netlist that cannot be built (here the chip bench's build failing) stops the
    report with the reason, instead of quietly costing the design with the control estimate."""
    import lowbit.cost.chip_power as cp
    from lowbit.cost.power import build_hw_cost_liberty
    from lowbit.sim.errors import LowbitError

    def fail(*a, **k):
        raise LowbitError("Verilator build failed: out of memory\nmore detail")

    monkeypatch.setattr(cp, "chip_from_bench", fail)
    with pytest.raises(LowbitError) as e:
        build_hw_cost_liberty(load_hw("vitallm"), control="chip")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("vitallm: the chip netlist was asked for (--control chip:vitallm)")
    assert msg.endswith("could not be used: Verilator build failed: out of memory")
    with pytest.raises(LowbitError, match="one of estimate, chip, chip-if-runs"):
        build_hw_cost_liberty(load_hw("vitallm"), control="netlist")
