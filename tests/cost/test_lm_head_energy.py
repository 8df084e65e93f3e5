"""The lm_head on the chip reaches the energy model through the simulator's activity counters."""

from __future__ import annotations

import pytest

from lowbit.cost.energy import UnitCost, hw_cost, phase_energy
from lowbit.sim.config import load_config
from lowbit.sim.engine import simulate
from lowbit.sim.workloads import standard_trace

E_CYCLE = {"tint": 1e-12, "booth": 2e-12, "lop": 3e-12, "sfu": 4e-12}  # J per busy cycle (made up, distinct)


def _energy(lm_head: str):
    cfg = load_config("tiny").replace(lm_head=lm_head)
    r = simulate(cfg, standard_trace("bitnet-tiny", 0, 2))
    units = [UnitCost(u, 1, 1, 0.0, 0.0, e, 0.0, 0.0, "test", hw_unit=u) for u, e in E_CYCLE.items()]
    return r, phase_energy(hw_cost(cfg, units), cfg, r.activity, r.decode_tokens, r.decode_cycles / cfg.clock_hz)


def test_int8_lm_head_energy():
    host, eh = _energy("host")
    chip, ec = _energy("int8")
    # BoothFlex runs the INT8 tiles (16 tiles of 261 cycles per step), the SFU one quantize (39 cycles)
    assert ec.busy_cycles["booth"] - eh.busy_cycles["booth"] == 2 * 16 * 261
    assert ec.logic_j["booth"] - eh.logic_j["booth"] == pytest.approx(2 * 16 * 261 * 2e-12)
    assert ec.logic_j["sfu"] - eh.logic_j["sfu"] == pytest.approx(2 * 39 * 4e-12)
    # DRAM: 256 x 64 INT8 weights and 256 bf16 logits per step, at the preset's pJ/bit
    extra = sum(chip.dram_bytes.values()) - sum(host.dram_bytes.values())
    assert extra == 2 * (256 * 64 + 256 * 2)
    assert ec.dram_j - eh.dram_j == pytest.approx(extra * 8 * load_config("tiny").dram.energy_pj_per_bit * 1e-12)
