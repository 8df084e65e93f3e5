"""Energy, power and area model of a whole accelerator (no amaranth import at module level).

Per compute unit (from its synthesised sky130 netlist, rtl/synth.py):
    E_toggle(cell)  = 1/2 * K_PAR * C_gate(cell) * V_sky130^2           (one output transition)
    E_cycle(unit)   = sum_cells n_c * E_toggle(c) * a_c,  a_c = activity (+ BETA_CLK for flip-flops)
    scaled to the config node/voltage with the Stillmaker-Baas energy factor (cost/area.py)
C_gate = Cox * sum(W*L) of the cell's transistors (rtl/liberty.py, from the sky130 netlists).
activity = RTL-net toggle rate of the unit on random data (rtl/activity.py) when measured, else
DEFAULT_ACTIVITY (documented default).
Dynamic energy of a run = sum_units busy_cycles(unit) * E_cycle(unit) + SRAM bytes * pJ/byte + DRAM bits *
pJ/bit; busy_cycles = ops / ops-per-cycle of the unit (idle units are assumed clock-gated: they only leak).
Leakage = (logic leakage density x cell area + SRAM bit leakage) x time.

ASSUMPTIONS (design, stated in reports): K_PAR = 2 (diffusion + wire capacitance ~ gate capacitance,
Weste & Harris rule of thumb), BETA_CLK = 0.8 (about 40 % of a master-slave flop's capacitance is clocked and
toggles twice per cycle), no clock-tree or glitch energy, idle units clock-gated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lowbit.cost.area import (
    LOGIC_LEAK_W_PER_UM2,
    PLACEMENT_UTILISATION,
    SKY130_VDD,
    area_factor,
    energy_factor,
    sky130_to,
)
from lowbit.cost.sram import SramEstimate, sram_for_config
from lowbit.rtl.activity import unit_activity
from lowbit.rtl.liberty import library_cells
from lowbit.rtl.registry import UNITS, get_unit, units_for
from lowbit.rtl.synth import instances, synth_unit
from lowbit.sim.errors import LowbitError
from lowbit.sim.units import catalog

K_PAR = 2.0
BETA_CLK = 0.8
DEFAULT_ACTIVITY = 0.25
FLOP_PREFIX = "df"


def toggle_energy_j(gate_cap_f: float, vdd: float = SKY130_VDD) -> float:
    """Energy of one output transition of a cell with total transistor gate capacitance `gate_cap_f`."""
    return 0.5 * K_PAR * gate_cap_f * vdd * vdd


def cycle_energy_sky130_j(cells: dict[str, int], gate_cap_f: dict[str, float], activity: float) -> float:
    """Energy per active cycle of a netlist at sky130 / 1.8 V (see module docstring)."""
    e = 0.0
    for c, n in cells.items():
        if c not in gate_cap_f:
            raise LowbitError(f"no gate capacitance for cell {c!r}")
        a = activity + (BETA_CLK if c.startswith(FLOP_PREFIX) else 0.0)
        e += n * toggle_energy_j(gate_cap_f[c]) * a
    return e


def unit_rates(cfg, unit: str) -> dict[str, float]:
    """Work per busy cycle (all instances) of an RTL block, per activity counter: the catalogue's cost hook."""
    return get_unit(unit).rates(cfg)


@dataclass
class UnitCost:
    """One compute unit at the config's node: area, energy per active cycle, leakage."""

    name: str
    instances: int
    cells: int
    area_sky130_um2: float            # all instances, standard cells only
    area_um2: float                   # at node, placed (/ PLACEMENT_UTILISATION)
    cycle_energy_j: float             # at node, all instances, per busy cycle
    leak_w: float
    activity: float
    activity_source: str
    rates: dict[str, float] = field(default_factory=dict)
    synthesised: bool = True
    note: str = ""
    hw_unit: str = ""  # HwConfig.units name / simulator unit it belongs to (tint, booth, lop, ...)
    # SFU ops this block executes: it is charged only those ops' busy cycles (activity["sfu_busy_by_op"]);
    # empty: every busy cycle of its hardware unit
    ops: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.hw_unit:
            self.hw_unit = get_unit(self.name).hw_unit if self.name in UNITS else self.name


@dataclass
class ChipPart:
    """A chip-level part outside the compute units, charged every clock cycle of a run (not clock-gated):
    the control/DMA estimate (cost/control.py) and the global clock tree (cost/power.py)."""

    name: str
    area_um2: float          # at node, placed
    cycle_energy_j: float    # at node, per clock cycle
    leak_w: float
    source: str
    cells: int = 0
    flops: int = 0


@dataclass
class HwCost:
    name: str
    node_nm: float
    vdd: float
    clock_hz: float
    units: list[UnitCost]
    srams: list[SramEstimate]
    area_factor: float
    energy_factor: float
    # Liberty power model only (cost/power.py): per RTL block, clock share / timing / sky130 leakage
    liberty: dict[str, Any] = field(default_factory=dict)
    chip: list[ChipPart] = field(default_factory=list)  # control/DMA estimate, global clock tree
    chip_netlist: Any = None  # `--control chip`: cost/chip_power.ChipCost (modules, memories, workload)

    @property
    def logic_area_um2(self) -> float:
        return sum(u.area_um2 for u in self.units)

    @property
    def sram_area_um2(self) -> float:
        return sum(s.area_um2 for s in self.srams)

    @property
    def chip_area_um2(self) -> float:
        return sum(p.area_um2 for p in self.chip)

    @property
    def area_mm2(self) -> float:
        return (self.logic_area_um2 + self.sram_area_um2 + self.chip_area_um2) / 1e6

    @property
    def leak_w(self) -> float:
        return sum(u.leak_w for u in self.units) + sum(s.leak_w for s in self.srams) + sum(p.leak_w for p in self.chip)

    def missing_units(self) -> list[str]:
        return [u.name for u in self.units if not u.synthesised]


def unit_cost(cfg, unit: str, cells: dict[str, int] | None, gate_cap_f: dict[str, float], instances: int,
              activity: float | None, area_sky130_um2: float = 0.0, note: str = "") -> UnitCost:
    """Cost of one unit from its cell counts (None -> not synthesised: zero area/energy, flagged)."""
    af, ef = sky130_to(cfg.node_nm, cfg.supply_v)
    rates = unit_rates(cfg, unit) if unit in UNITS else {}
    if cells is None:
        return UnitCost(unit, instances, 0, 0.0, 0.0, 0.0, 0.0, 0.0, "n/a", rates, False, note)
    a, src = (activity, "measured (random data)") if activity is not None else (DEFAULT_ACTIVITY, "default")
    e_sky = cycle_energy_sky130_j(cells, gate_cap_f, a) * instances
    area_sky = area_sky130_um2 * instances
    area_node_cells = area_sky * af
    return UnitCost(unit, instances, sum(cells.values()) * instances, area_sky, area_node_cells / PLACEMENT_UTILISATION,
                    e_sky * ef, area_node_cells * LOGIC_LEAK_W_PER_UM2, a, src, rates, True, note)


def hw_cost(cfg, unit_costs: list[UnitCost]) -> HwCost:
    af, ef = sky130_to(cfg.node_nm, cfg.supply_v)
    return HwCost(cfg.name, cfg.node_nm, cfg.supply_v, cfg.clock_hz, unit_costs, sram_for_config(cfg), af, ef)


# ----------------------------------------------------------------------------- run energy


@dataclass
class PhaseEnergy:
    """Energy of one phase (prefill or decode) of a run."""

    tokens: int
    time_s: float
    logic_j: dict[str, float]
    sram_j: float
    dram_j: float
    leak_j: float
    busy_cycles: dict[str, float]
    sram_by_buffer_j: dict[str, float] = field(default_factory=dict)
    chip_j: dict[str, float] = field(default_factory=dict)  # HwCost.chip parts: every cycle of the phase

    @property
    def core_j(self) -> float:
        """On-chip energy (logic + chip-level parts + SRAM + leakage), DRAM excluded (the papers' power is core-only)."""
        return sum(self.logic_j.values()) + sum(self.chip_j.values()) + self.sram_j + self.leak_j

    @property
    def total_j(self) -> float:
        return self.core_j + self.dram_j

    @property
    def energy_per_token_j(self) -> float:
        return self.core_j / self.tokens if self.tokens else 0.0

    @property
    def core_power_w(self) -> float:
        return self.core_j / self.time_s if self.time_s else 0.0

    @property
    def total_power_w(self) -> float:
        return self.total_j / self.time_s if self.time_s else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.time_s if self.time_s else 0.0

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(core_j=self.core_j, total_j=self.total_j, energy_per_token_j=self.energy_per_token_j,
                 core_power_w=self.core_power_w, total_power_w=self.total_power_w, tokens_per_s=self.tokens_per_s)
        return d


def _split_ternary(hw: HwCost, activity: dict[str, float]) -> dict[str, dict[str, float]]:
    """ops per cost unit. A counter served by several hardware units (ternary MACs: TINT and BoothFlex) is split
    by their per-cycle capacity unless `<hw_unit>_<counter>` is given; every RTL block of one hardware unit
    (lop_score + lop_topk) sees that unit's whole share."""
    per: dict[str, dict[str, float]] = {u.name: {} for u in hw.units}
    for counter in catalog.WORK:
        total = float(activity.get(counter, 0.0))
        groups: dict[str, list[UnitCost]] = {}
        for u in hw.units:
            if counter in u.rates:
                groups.setdefault(u.hw_unit, []).append(u)
        rate = {g: max(u.rates[counter] for u in us) for g, us in groups.items()}
        explicit = {g: float(activity[f"{g}_{counter}"]) for g in groups if f"{g}_{counter}" in activity}
        rest = total - sum(explicit.values())
        cap = sum(r for g, r in rate.items() if g not in explicit)
        if rest > 0 and cap <= 0:
            raise LowbitError(f"activity has {counter} = {total:g} but no unit of {hw.name} executes it")
        for g, us in groups.items():
            share = explicit.get(g, rest * rate[g] / cap if cap else 0.0)
            for u in us:
                per[u.name][counter] = share
    return per


def _units_of_sim(sim_name: str, hw: HwCost) -> list[UnitCost]:
    """Cost units of a simulator unit name (tint0/tint1 -> tint, lop -> lop_score + lop_topk)."""
    exact = [u for u in hw.units if u.hw_unit == sim_name]  # "fp4" is a unit name, not fp + instance 4
    if exact:
        return exact
    base = sim_name.rstrip("0123456789")
    return [u for u in hw.units if u.hw_unit == base]


def normalise_activity(activity: dict[str, Any]) -> dict[str, Any]:
    """Flatten the simulator's activity dict (sim.engine.SimResult.activity) to scalar counters."""
    out: dict[str, Any] = {}
    for k, v in activity.items():
        if k in ("sram_read_bytes", "sram_write_bytes") and isinstance(v, dict):
            kind = k.split("_")[1]
            for buf, n in v.items():
                out[f"sram_{buf}_{kind}_bytes"] = float(n)
        elif k == "dram_bytes" and isinstance(v, dict):
            out["dram_bytes"] = float(sum(v.values()))
        elif isinstance(v, dict):
            out[k] = dict(v)
        else:
            out[k] = v
    return out


def phase_energy(hw: HwCost, cfg, activity: dict[str, Any], tokens: int, time_s: float) -> PhaseEnergy:
    """Energy of a phase from simulator activity counters (see module docstring).

    Busy cycles per unit come from `activity["busy_cycles"]` when the simulator reports them (instances
    summed: tint0 + tint1 -> tint), else from ops / ops-per-cycle of each unit."""
    act = normalise_activity(activity)
    units = {u.name: u for u in hw.units}
    if isinstance(act.get("busy_cycles"), dict):
        busy = {u: 0.0 for u in units}
        for name, cyc in act["busy_cycles"].items():
            us = _units_of_sim(name, hw)
            if not us:
                raise LowbitError(f"simulator unit {name!r} has no cost model in {hw.name}")
            for u in us:
                busy[u.name] += float(cyc)
        by_op = act.get("sfu_busy_by_op")
        for u in units.values():
            if u.ops:
                if not isinstance(by_op, dict):
                    raise LowbitError(f"{u.name} runs SFU ops {', '.join(u.ops)} but the activity has no per-op SFU "
                                      "busy cycles (sfu_busy_by_op); simulate with a sim.breakdown.Breakdown")
                busy[u.name] = float(sum(by_op.get(op, 0) for op in u.ops))
        logic = {n: busy[n] * u.cycle_energy_j / max(1, u.instances) for n, u in units.items()}
    else:
        per = _split_ternary(hw, act)
        busy = {u.name: sum(ops / u.rates[c] for c, ops in per[u.name].items() if u.rates.get(c)) for u in hw.units}
        logic = {u.name: busy[u.name] * u.cycle_energy_j for u in hw.units}  # busy = cycles of all instances together
    cap = sum(s.bytes for s in hw.srams) or 1
    rd = sum(s.read_pj_per_byte * s.bytes for s in hw.srams) / cap  # capacity-weighted mean when not per buffer
    wr = sum(s.write_pj_per_byte * s.bytes for s in hw.srams) / cap
    by_buf: dict[str, float] = {}
    for s in hw.srams:
        by_buf[s.name] = 1e-12 * (float(act.get(f"sram_{s.name}_read_bytes", 0.0)) * s.read_pj_per_byte
                                  + float(act.get(f"sram_{s.name}_write_bytes", 0.0)) * s.write_pj_per_byte)
    if not isinstance(act.get("sram_read_bytes", 0.0), dict):
        by_buf["(unattributed)"] = 1e-12 * (float(act.get("sram_read_bytes", 0.0)) * rd
                                            + float(act.get("sram_write_bytes", 0.0)) * wr)
    dram_j = float(act.get("dram_bytes", 0.0)) * 8 * cfg.dram.energy_pj_per_bit * 1e-12
    chip = {p.name: p.cycle_energy_j * time_s * hw.clock_hz for p in hw.chip}
    return PhaseEnergy(tokens, time_s, logic, sum(by_buf.values()), dram_j, hw.leak_w * time_s, busy, by_buf, chip)


def subtract_activity(full: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """full - part, counter by counter (nested dicts too): the decode share of a prefill+decode run."""
    out: dict[str, Any] = {}
    for k, v in full.items():
        p = part.get(k, 0 if not isinstance(v, dict) else {})
        if isinstance(v, dict):
            out[k] = subtract_activity(v, p if isinstance(p, dict) else {})
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[k] = v - (p if isinstance(p, int | float) else 0)
        else:
            out[k] = v
    return out


# ----------------------------------------------------------------------------- building from RTL


def build_hw_cost(cfg, measure_activity: bool = True, exclude: tuple[str, ...] = (),
                  power_model: str = "netlist", control: str = "estimate", chip_activity: str | None = None) -> HwCost:
    """Synthesise every RTL block of cfg (cached) and assemble its HwCost. Blocks in `exclude`, and units
    the catalogue has no RTL for, are not synthesised and are flagged (their cost is missing).
    power_model "liberty": the characterised-Liberty model of cost/power.py instead of this module's."""
    if power_model == "liberty":
        from lowbit.cost.power import build_hw_cost_liberty

        return build_hw_cost_liberty(cfg, measure_activity, exclude, control=control, chip_activity=chip_activity)
    caps = {c: i.gate_cap_f for c, i in library_cells().items()}
    blocks = units_for(cfg)
    covered = {get_unit(b).hw_unit for b in blocks}
    costs = [unit_cost(cfg, u, None, caps, 1, None, note="the unit catalogue has no RTL for it")
             for u in cfg.units if u not in covered]
    for unit in blocks:
        if unit in exclude:
            costs.append(unit_cost(cfg, unit, None, caps, 1, None, note="excluded by --exclude-unit"))
            continue
        r = synth_unit(cfg, unit)
        act = unit_activity(cfg, unit) if measure_activity else None
        note = get_unit(unit).block.scope
        costs.append(unit_cost(cfg, unit, r.cells, caps, instances(cfg, unit), act, r.area_um2, note))
    return hw_cost(cfg, costs)


def scale_note(cfg) -> str:
    af = area_factor(130, cfg.node_nm)
    ef = energy_factor(130, SKY130_VDD, cfg.node_nm, cfg.supply_v)
    return (f"sky130 HD (130 nm, 1.8 V) -> {cfg.node_nm:g} nm, {cfg.supply_v:g} V: area x{af:.4f}, "
            f"energy x{ef:.5f} (Stillmaker & Baas 2017, HP fits below 45 nm)")
