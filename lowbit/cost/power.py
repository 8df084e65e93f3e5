"""Unit power from the characterised Liberty: internal energy + switched net capacitance + clock + leakage.

Per RTL block, from its timing-driven netlist (rtl/synth.py, liberty="characterised") and the characterised
cells (rtl/characterize.py), all at sky130 HD / 1.8 V / tt, then scaled to the design's node:

    E_net(n)      = ½ · (Σ sink pin C + C_wire(fanout)) · V²             per output transition of net n
    E_int(n)      = mean over the driver's input arcs of ½(rise + fall) internal energy, from the Liberty
                    tables at (net load, input ramp) — input ramp = the driver's own output transition at
                    that load / 0.6 (DESIGN ASSUMPTION: the previous stage is alike)
    E_toggle      = Σ_nets E_net + E_int                                 (every cell output toggles once)
    E_clock       = Σ_flops (E_clk,internal + C_CLK · V²) + C_tree · V² per clock cycle
    E_cycle(unit) = a · E_toggle + E_clock                               (a = RTL toggle rate, rtl/activity.py)

flip-flops: E_int(Q) = CLK->Q internal energy minus the clock-only energy (counted in E_clock).
C_wire(f) = c_w · L(f), c_w = met1 minimum-width capacitance from the sky130 HD tech LEF
(`CAPACITANCE CPERSQDIST 25.7784E-6` pF/µm² x 0.14 µm + 2 x `EDGECAPACITANCE 40.567E-6` pF/µm = 0.0847 fF/µm),
L(f) = 2·sqrt((f + 1) · A_site) with A_site = the block's mean placed cell area (DESIGN ASSUMPTION: a net's
f + 1 pins sit in a square of f + 1 placement sites and the route is twice its side; local nets only).
Clock tree: an H-tree over the block's placed area A with N flop sinks has wire length 1.5·sqrt(A)·sqrt(N)
(level k of an H-tree on a square of side D holds 4^(k-1) H shapes of three segments of D/2^k:
Σ_k 1.5·D·2^(k-1) = 1.5·D·(sqrt(N) − 1); H. B. Bakoglu, "Circuits, Interconnections, and Packaging for VLSI",
1990, §8 for the H-tree), at c_w; clock buffers are not counted (an underestimate).
Leakage at the node: the LOGIC_LEAK_W_PER_UM2 density of cost/area.py (the sky130 value from the Liberty is
reported beside it; no published rule scales leakage from 130 nm planar to 16 nm FinFET).
Scaling to the node: Stillmaker & Baas 2017 energy and area factors (cost/area.py), delay factor for timing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lowbit.cost.area import (
    LOGIC_LEAK_W_PER_UM2,
    PLACEMENT_UTILISATION,
    SKY130_NODE_NM,
    SKY130_VDD,
    delay_factor,
    sky130_to,
)
from lowbit.cost.energy import HwCost, UnitCost, hw_cost, unit_cost, unit_rates
from lowbit.rtl.activity import unit_activity
from lowbit.rtl.liberty import DFF_CELL
from lowbit.rtl.registry import get_unit, units_for
from lowbit.rtl.synth import SynthResult, instances, synth_unit

MET1_CPERSQDIST_PF_UM2 = 25.7784e-6  # sky130_fd_sc_hd__nom.tlef, LAYER met1
MET1_EDGECAP_PF_UM = 40.567e-6
MET1_WIDTH_UM = 0.14
WIRE_PF_PER_UM = MET1_CPERSQDIST_PF_UM2 * MET1_WIDTH_UM + 2 * MET1_EDGECAP_PF_UM
H_TREE_FACTOR = 1.5


@dataclass
class BlockEnergy:
    """Energies of one block instance at sky130 / 1.8 V (pJ) and its timing."""

    toggle_pj: float        # every cell output toggles once (internal + nets)
    internal_pj: float      # of which cell-internal
    net_pj: float           # of which net switching (pins + wire)
    clock_pj: float         # per clock cycle: flop clock pins + internal clock energy + H-tree wire
    tree_pf: float          # clock-tree wire capacitance
    leak_sky130_w: float    # Σ cell leakage from the Liberty
    flops: int
    delay_ps: float         # critical path at sky130 (rtl/sta.py)


def wire_pf(fanout: int, site_um2: float) -> float:
    return WIRE_PF_PER_UM * 2 * math.sqrt((fanout + 1) * site_um2)


def block_energy(r: SynthResult, chars: dict, vdd: float = SKY130_VDD) -> BlockEnergy:
    """BlockEnergy of one timing-driven netlist (see module docstring for the rules)."""
    n_cells = max(1, r.n_cells)
    site = r.area_um2 / n_cells / PLACEMENT_UTILISATION
    e_int = e_net = 0.0
    for cell, rows in r.net_loads.items():
        c = chars[cell]
        for pin_pf, fanout, count in rows:
            load = pin_pf + wire_pf(int(fanout), site)
            ramp = c.transition_ns(load, 0.1) / 0.6
            e = sum(c.mean_energy_pj(p, ramp, load) for p in c.energy_pj) / len(c.energy_pj)
            if cell == DFF_CELL:
                e -= c.clock_energy_pj
            e_int += count * e
            e_net += count * 0.5 * load * vdd * vdd
    flops = r.cells.get(DFF_CELL, 0)
    tree = WIRE_PF_PER_UM * H_TREE_FACTOR * math.sqrt(r.area_um2 / PLACEMENT_UTILISATION) * max(0.0, math.sqrt(flops) - 1)
    clock = 0.0
    if flops:
        ff = chars[DFF_CELL]
        clock = flops * (ff.clock_energy_pj + ff.pin_cap_pf["CLK"] * vdd * vdd) + tree * vdd * vdd
    leak = sum(n * chars[c].leakage_nw for c, n in r.cells.items()) * 1e-9
    return BlockEnergy(e_int + e_net, e_int, e_net, clock, tree, leak, flops, r.delay_ps)


def target_ps(cfg) -> float:
    """abc's delay target: the design's clock period translated to sky130 with the Stillmaker-Baas delay
    fit, i.e. the sky130 netlist meets it when the same netlist at the design's node meets its clock."""
    return 1e12 / cfg.clock_hz / delay_factor(SKY130_NODE_NM, SKY130_VDD, cfg.node_nm, cfg.supply_v)


@dataclass
class LibertyUnit:
    """What the report shows beside UnitCost for the Liberty model (per unit, all instances, at the node)."""

    name: str
    toggle_j: float
    clock_j_per_cycle: float
    delay_ps_node: float
    delay_ps_sky130: float
    meets_clock: bool
    leak_sky130_w: float
    flops: int


def build_hw_cost_liberty(cfg, measure_activity: bool = True, exclude: tuple[str, ...] = ()) -> HwCost:
    """HwCost whose units carry Liberty-model energies (UnitCost.cycle_energy_j) and, in `liberty`,
    the clock share, timing and sky130 leakage. Characterises the cells on first use (cached)."""
    from lowbit.rtl.characterize import characterised_liberty

    _lib, chars = characterised_liberty()
    af, ef = sky130_to(cfg.node_nm, cfg.supply_v)
    dfac = delay_factor(SKY130_NODE_NM, SKY130_VDD, cfg.node_nm, cfg.supply_v)
    tgt = target_ps(cfg)
    blocks = units_for(cfg)
    covered = {get_unit(b).hw_unit for b in blocks}
    costs = [unit_cost(cfg, u, None, {}, 1, None, note="the unit catalogue has no RTL for it")
             for u in cfg.units if u not in covered]
    extra: dict[str, LibertyUnit] = {}
    for unit in blocks:
        if unit in exclude:
            costs.append(unit_cost(cfg, unit, None, {}, 1, None, note="excluded by --exclude-unit"))
            continue
        r = synth_unit(cfg, unit, liberty="characterised", target_ps=tgt)
        n = instances(cfg, unit)
        b = block_energy(r, chars)
        a = unit_activity(cfg, unit) if measure_activity else 0.25
        e_cycle = (a * b.toggle_pj + b.clock_pj) * 1e-12 * n * ef
        area_node = r.area_um2 * n * af
        costs.append(UnitCost(unit, n, r.n_cells * n, r.area_um2 * n, area_node / PLACEMENT_UTILISATION, e_cycle,
                              area_node * LOGIC_LEAK_W_PER_UM2, a,
                              "measured (random data)" if measure_activity else "default", unit_rates(cfg, unit),
                              True, get_unit(unit).block.scope))
        extra[unit] = LibertyUnit(unit, b.toggle_pj * 1e-12 * n * ef, b.clock_pj * 1e-12 * n * ef, b.delay_ps * dfac,
                                  b.delay_ps, b.delay_ps <= tgt, b.leak_sky130_w * n, b.flops * n)
    hw = hw_cost(cfg, costs)
    hw.liberty = extra
    return hw
