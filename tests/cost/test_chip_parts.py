"""Full-chip parts of the cost model, by hand: the SFU op split of busy cycles, chip parts charged every cycle,
the global clock tree, and the control estimate's shape."""

from __future__ import annotations

import math

import pytest

from lowbit.cost.area import sky130_to
from lowbit.cost.control import INSTR_BITS, control_shape
from lowbit.cost.energy import ChipPart, HwCost, UnitCost, phase_energy
from lowbit.cost.power import H_TREE_FACTOR, SRAM_CLK_PIN_PF, WIRE_PF_PER_UM, clock_tree_part
from lowbit.cost.sram import sram_for_config
from lowbit.sim.config import load_config
from lowbit.sim.errors import LowbitError
from lowbit.sim.program import INSTR


def _hw(cfg, units, chip=()):
    af, ef = sky130_to(cfg.node_nm, cfg.supply_v)
    return HwCost(cfg.name, cfg.node_nm, cfg.supply_v, cfg.clock_hz, units, sram_for_config(cfg), af, ef,
                  chip=list(chip))


def _u(name, e, ops=(), hw_unit="sfu"):
    return UnitCost(name, 1, 10, 100.0, 1000.0, e, 0.0, 0.2, "x", {}, True, "", hw_unit, ops)


def test_sfu_ops_are_charged_their_own_busy_cycles():
    cfg = load_config("vitallm")
    hw = _hw(cfg, [_u("sfu", 1e-12, ("quantize",)), _u("sfu_rmsnorm", 2e-12, ("rmsnorm",)),
                   _u("sfu_softmax", 4e-12, ("softmax",))],
             [ChipPart("control", 5000.0, 3e-13, 1e-6, "est")])
    act = {"busy_cycles": {"sfu": 1000}, "sfu_busy_by_op": {"quantize": 400, "rmsnorm": 300, "softmax": 200,
                                                             "elementwise": 100}}
    pe = phase_energy(hw, cfg, act, 2, 1e-3)
    assert pe.busy_cycles == {"sfu": 400, "sfu_rmsnorm": 300, "sfu_softmax": 200}  # elementwise: no block
    assert pe.logic_j == pytest.approx({"sfu": 400e-12, "sfu_rmsnorm": 600e-12, "sfu_softmax": 800e-12})
    # chip parts: every cycle of the phase, 1 ms at 1 GHz = 1e6 cycles
    assert pe.chip_j == pytest.approx({"control": 3e-13 * 1e6})
    assert pe.core_j == pytest.approx(1.8e-9 + 3e-7 + pe.sram_j + pe.leak_j)
    assert hw.area_mm2 == pytest.approx((3 * 1000.0 + sum(s.area_um2 for s in hw.srams) + 5000.0) / 1e6)
    with pytest.raises(LowbitError, match="sfu_busy_by_op"):
        phase_energy(hw, cfg, {"busy_cycles": {"sfu": 1000}}, 2, 1e-3)


def test_global_clock_tree_hand_computed():
    cfg = load_config("vitallm")
    hw = _hw(cfg, [_u("tint", 1e-12, hw_unit="tint"), _u("sfu", 1e-12)], [ChipPart("control", 0.0, 0.0, 0.0, "e")])
    af, ef = sky130_to(16, 0.8)
    die = hw.area_mm2 * 1e6 / af                                  # µm² at sky130
    macros = 4 + 4 + 2 + 1 + 2 + 1                                # vitallm's banks
    n = 2 + 1 + macros                                            # 2 blocks + control + macros
    c = WIRE_PF_PER_UM * H_TREE_FACTOR * math.sqrt(die) * (math.sqrt(n) - 1) + macros * SRAM_CLK_PIN_PF
    p = clock_tree_part(cfg, hw)
    assert p.cycle_energy_j == pytest.approx(c * 1.8 ** 2 * 1e-12 * ef)
    assert p.area_um2 == 0.0 and "14 SRAM macros" in p.source


def test_control_estimate_shape():
    s = control_shape(load_config("vitallm"))
    # tint0, tint1, booth, lop, sfu, dma_w, dma_kv + the sync queue; LPDDR5X BL16 x 16 bit = 32 bytes
    assert (s.queues, s.dma_queues, s.burst_bytes) == (8, 2, 32)
    assert INSTR_BITS == sum(f.bits for f in INSTR.fields)
