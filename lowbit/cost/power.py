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
Global clock tree (clock_tree_part): the same H-tree rule over the whole die (logic + SRAM + control area, at
sky130 dimensions) with one sink per block instance and per SRAM macro (plus the macros' clk pin capacitance
from their .lib), toggling every cycle of a run (the root is not gated); the local trees above are gated with
their block. Chip parts (cost/energy.ChipPart) are charged every cycle: the global tree and the control/DMA
estimate of cost/control.py. The SFU op datapaths (SFU_OP_BLOCKS) are charged their own op's busy cycles
(sim.breakdown by op group), not every SFU busy cycle.
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
from lowbit.cost.energy import ChipPart, HwCost, UnitCost, hw_cost, unit_cost, unit_rates
from lowbit.rtl.activity import unit_activity
from lowbit.rtl.liberty import DFF_CELL
from lowbit.rtl.registry import get_unit, units_for
from lowbit.rtl.synth import SynthResult, instances, synth_unit
from lowbit.sim.errors import LowbitError

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


# SFU op datapaths (catalogue blocks synthesised by name) and the SFU ops each executes; the absmax quantizer
# block "sfu" runs "quantize". "elementwise" (residual add) has no RTL: its busy cycles are reported uncharged.
SFU_OP_BLOCKS = {"sfu": ("quantize",), "sfu_rmsnorm": ("rmsnorm",), "sfu_softmax": ("softmax",),
                 "sfu_rope": ("rope",), "sfu_act": ("activation",)}
SRAM_CLK_PIN_PF = 0.00689  # OpenRAM sky130 macros' clk0 capacitance (cost/sram.py's .lib files)


def _liberty_unit(cfg, unit: str, chars, tgt: float, measure_activity: bool, ops: tuple[str, ...] = (),
                  note: str = "") -> tuple[UnitCost, LibertyUnit]:
    af, ef = sky130_to(cfg.node_nm, cfg.supply_v)
    dfac = delay_factor(SKY130_NODE_NM, SKY130_VDD, cfg.node_nm, cfg.supply_v)
    r = synth_unit(cfg, unit, liberty="characterised", target_ps=tgt)
    n = instances(cfg, unit)
    b = block_energy(r, chars)
    a = unit_activity(cfg, unit) if measure_activity else 0.25
    e_cycle = (a * b.toggle_pj + b.clock_pj) * 1e-12 * n * ef
    area_node = r.area_um2 * n * af
    u = UnitCost(unit, n, r.n_cells * n, r.area_um2 * n, area_node / PLACEMENT_UTILISATION, e_cycle,
                 area_node * LOGIC_LEAK_W_PER_UM2, a, "measured (random data)" if measure_activity else "default",
                 unit_rates(cfg, unit), True, note or get_unit(unit).block.scope, ops=ops)
    x = LibertyUnit(unit, b.toggle_pj * 1e-12 * n * ef, b.clock_pj * 1e-12 * n * ef, b.delay_ps * dfac,
                    b.delay_ps, b.delay_ps <= tgt, b.leak_sky130_w * n, b.flops * n)
    return u, x


def control_part(cfg, chars, tgt: float) -> ChipPart:
    """The control/DMA/memory-port ESTIMATE (cost/control.py) as a chip part charged every cycle."""
    from lowbit.cost.control import control_activity, control_shape, synth_control

    af, ef = sky130_to(cfg.node_nm, cfg.supply_v)
    r = synth_control(cfg, tgt)
    b = block_energy(r, chars)
    a = control_activity(control_shape(cfg))
    area = r.area_um2 * af / PLACEMENT_UTILISATION
    return ChipPart("control", area, (a * b.toggle_pj + b.clock_pj) * 1e-12 * ef,
                    r.area_um2 * af * LOGIC_LEAK_W_PER_UM2,
                    f"ESTIMATE: representative queue controllers + scoreboard + {control_shape(cfg).dma_queues} DMA "
                    f"engines + memory port (cost/control.py), synthesised, activity {a:.3f}; `--control chip` uses "
                    "the chip top's netlist and the chip bench's activity instead (cost/chip_power.py)", r.n_cells,
                    r.n_flops)


def clock_tree_part(cfg, hw: HwCost) -> ChipPart:
    """Global clock H-tree over the die to every block instance and SRAM macro (module docstring: the H-tree
    rule; sinks: block roots + macro clk pins), at sky130 dimensions (die / area factor), toggling every cycle."""
    af, ef = sky130_to(cfg.node_nm, cfg.supply_v)
    die_sky = hw.area_mm2 * 1e6 / af
    blocks = sum(u.instances for u in hw.units if u.synthesised) + len(hw.chip)
    macros = sum(s.banks for s in hw.srams)
    n = blocks + macros
    wire = WIRE_PF_PER_UM * H_TREE_FACTOR * math.sqrt(die_sky) * max(0.0, math.sqrt(n) - 1)
    c = wire + macros * SRAM_CLK_PIN_PF
    return ChipPart("clock tree", 0.0, c * SKY130_VDD ** 2 * 1e-12 * ef, 0.0,
                    f"global H-tree over the die ({die_sky / 1e6:.2f} mm² at sky130) to {blocks} blocks and "
                    f"{macros} SRAM macros: {wire:.2f} pF wire + {macros * SRAM_CLK_PIN_PF:.3f} pF macro clock "
                    "pins, every cycle; clock buffers not counted")


def build_hw_cost_liberty(cfg, measure_activity: bool = True, exclude: tuple[str, ...] = (),
                          chip_parts: bool = True, control: str = "estimate", chip_activity: str | None = None) -> HwCost:
    """HwCost whose units carry Liberty-model energies (UnitCost.cycle_energy_j) and, in `liberty`,
    the clock share, timing and sky130 leakage. Characterises the cells on first use (cached).
    chip_parts: also the SFU op datapaths (each charged its own op's busy cycles), the control/DMA estimate
    and the global clock tree; control "estimate" (cost/control.py), "chip" (the chip top's netlist; refused
    with the reason where it cannot be built or run) or "chip-if-runs" (the netlist where it can be, else the
    estimate, said in the report)."""
    from lowbit.rtl.characterize import characterised_liberty

    _lib, chars = characterised_liberty()
    tgt = target_ps(cfg)
    blocks = units_for(cfg)
    if chip_parts and "sfu" in blocks:
        blocks += [b for b in SFU_OP_BLOCKS if b not in blocks]
    if chip_parts and control not in ("estimate", "chip", "chip-if-runs"):
        raise LowbitError(f"control = {control!r}: one of estimate, chip, chip-if-runs")
    cc, why = None, ""
    if chip_parts and control != "estimate":
        from lowbit.cost.chip_power import chip_from_bench

        try:
            cc = chip_from_bench(cfg, chars, tgt, activity=chip_activity)
        except LowbitError as e:
            first = str(e.args[0] if e.args else e).splitlines()[0]  # str(e) escapes the line breaks
            if control == "chip":  # asked for this design by name: its numbers must not silently change source
                raise LowbitError(f"{cfg.name}: the chip netlist was asked for (--control chip:{cfg.name}) but "
                                  f"could not be used: {first}") from None
            # "chip-if-runs": e.g. a design the chip bench does not run: the estimate, said in the report
            why = f"the chip netlist is not used for {cfg.name} ({first}); "
        if cc is not None:
            blocks = [b for b in blocks if not _chip_covers(cc, b)]
    covered = {get_unit(b).hw_unit for b in blocks} | (cc.unit_names if cc else set())
    costs = [unit_cost(cfg, u, None, {}, 1, None, note="the unit catalogue has no RTL for it")
             for u in cfg.units if u not in covered]
    extra: dict[str, LibertyUnit] = {}
    for unit in blocks:
        if unit in exclude:
            costs.append(unit_cost(cfg, unit, None, {}, 1, None, note="excluded by --exclude-unit"))
            continue
        ops = SFU_OP_BLOCKS.get(unit, ()) if chip_parts else ()
        note = (f"SFU {ops[0]} datapath (rtl/{unit}.py): charged the simulated busy cycles of {ops[0]} only"
                if ops else "")
        u, x = _liberty_unit(cfg, unit, chars, tgt, measure_activity, ops, note)
        costs.append(u)
        extra[unit] = x
    if cc is not None:
        costs = cc.units + costs
        extra = {**cc.liberty, **extra}
    hw = hw_cost(cfg, costs)
    hw.liberty = extra
    if chip_parts:
        hw.chip = cc.parts if cc is not None else [control_part(cfg, chars, tgt)]
        if why:
            hw.chip[0].source = why + hw.chip[0].source
        hw.chip.append(clock_tree_part(cfg, hw))
        hw.chip_netlist = cc
    return hw


def _chip_covers(cc, block: str) -> bool:
    """Whether the chip netlist replaces a standalone block: its unit has engines in the chip, and for an SFU
    op datapath, the chip has an engine for its op (CHIP_SFU_OPS)."""
    from lowbit.cost.chip_power import chip_sfu_ops

    hw_unit = get_unit(block).hw_unit
    if hw_unit not in cc.unit_names:
        return False
    ops = SFU_OP_BLOCKS.get(block, ())
    return not ops or set(ops) <= chip_sfu_ops(cc)
