"""Full-chip area and power from the chip top's own netlist (rtl/synth_hier.py) and the chip bench's own
activity (rtl/activity_chip.py), for `lowbit report --control chip`.

Per module m of the chip top (hierarchical synthesis, timing-driven on the characterised Liberty; its
BlockEnergy from cost/power.py), with its owner: a compute queue's engine (`eng_<q>`, `rq_<q>` -> queue q,
`lop_engine` -> lop, `sfu_*` -> sfu) or a chip part charged every cycle (DMA and memory port: `q_dma_*`,
`fill`, `kvfill`, `ring_*`; control: the other queue controllers, the scoreboard/join logic and buffer
ports in the top, `wbuf`, `kvbuf`):

    a_m        = toggles_m / (net bits_m x busy_m)      busy_m = the owner queue's busy cycles in the run
                                                         (every cycle of the run for DMA and control)
    E_busy(m)  = a_m x E_toggle(m) + E_clock(m)           per busy cycle of the owner (sky130), x energy factor

A unit's E per busy cycle is the sum over its modules (all instances); the report charges it the 3B run's
busy cycles of that unit from `lowbit sim` (per unit class: TINT, LOP, SFU), the chip parts every cycle.
ASSUMPTIONS: idle engines are clock-gated (as in cost/power.py); the SFU engines' energy per SFU busy cycle is
the run's average over its op mix (the chip bench runs the tiny model; the 3B model's op mix differs).
Units the chip runs as timers (no engine in the netlist, e.g. BoothFlex, the attention datapaths softmax and
RoPE) keep their standalone netlists and random-data activity (cost/power.py), flagged in the report.
Memories (`$mem_v2` kept by the synthesis): those that are the config's buffers (weight, kv, act, psum, SFU,
LOP code banks) are costed at the config's sizes (cost/sram.py, as before). The chip's other memories
(instruction rings, requantizer multipliers, the LOP engine's query and group memories) are each costed
both ways: (a) an SRAM macro at its RTL size (cost/sram.py, extrapolated below the published macros' range)
and (b) a register file of its width, depth, read/write ports and read kind (rtl/synth_hier.regfile_verilog,
flops and read multiplexers by yosys's memory_map) through the same flow and target as the module, its
placed area at the node = cells / PLACEMENT_UTILISATION. DESIGN ASSUMPTION (MEMORY_RULE): each is built the
way with the smaller area at the node. A macro adds area and leakage as a "control memories" part (accesses
not charged: the model has no access counts for these memories); a register file's cells join its module's
netlist, so its leakage, its reads and writes (toggles at the module's measured rate) and its flops' clock
(every busy cycle of the module's owner, no per-word clock gating) are charged like the module's logic.
Read-only tables that
yosys turns into memories (`proc_rom`: a `case` over a constant table, e.g. the activation engine's lookup
tables) are logic, not SRAM: rtl/synth_hier.roms_as_logic maps each from its contents to cells (as the
standalone activation datapath's synthesis does) and counts them in their module, at its activity. A module
whose delay mapping runs past LOWBIT_SYNTH_TIMEOUT_S is mapped area-oriented (rtl/synth_hier.py) and the
report names it; one whose synthesis fails is not counted and the report lists it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from lowbit.cost.area import LOGIC_LEAK_W_PER_UM2, PLACEMENT_UTILISATION, delay_factor, sky130_to
from lowbit.cost.energy import ChipPart, UnitCost, unit_rates
from lowbit.cost.power import BlockEnergy, LibertyUnit, block_energy
from lowbit.cost.sram import sram_estimate
from lowbit.rtl.activity_chip import TOP, owner
from lowbit.rtl.registry import UNITS

# the catalogue block whose work rates (ops per busy cycle) a chip unit has (the report's pJ/op column)
RATE_BLOCK = {"lop": "lop_score"}

# chip memories that hold one of the config's SRAM buffers (costed at the config's size): name prefixes
BUFFER_MEMORIES = ("bank", "abuf", "pbuf", "psum_", "sfu_", "codes")

# DESIGN ASSUMPTION: a chip memory that is not a config buffer is built as whichever of an SRAM macro and a
# standard-cell register file has the smaller area at the node. Small memories are built from standard cells
# in practice: P. Meinerzhagen et al., "Benchmarking of standard-cell based memories in the sub-VT domain in
# 65-nm CMOS technology", IEEE JETCAS 1(2) 2011, compare latch/flip-flop arrays with compiled SRAM macros and
# find them competitive in area at small capacities (a few kbit), where a macro's fixed periphery dominates.
# The rule compares the two estimates per memory; nothing in it is fitted to a chip's published area.
MEMORY_RULE = "the smaller area at the node of an SRAM macro and a standard-cell register file"


def choose_build(sram_um2: float, regfile_um2: float) -> str:
    """MEMORY_RULE: "regfile" where the register file's placed area is smaller than the macro's, else "sram"."""
    return "regfile" if regfile_um2 < sram_um2 else "sram"


@dataclass
class ModuleCost:
    """One chip module's netlist, activity and energy (sky130 / 1.8 V unless stated)."""

    name: str
    part: str
    queue: str
    cells: int
    flops: int
    area_sky130_um2: float
    toggles: int
    bits: int
    busy: int
    activity: float
    energy: BlockEnergy
    meets_clock: bool

    @property
    def busy_pj(self) -> float:
        return self.activity * self.energy.toggle_pj + self.energy.clock_pj


@dataclass
class ChipCost:
    """The chip top as cost-model parts: units (UnitCost), every-cycle parts (ChipPart), extra memories."""

    modules: list[ModuleCost]
    units: list[UnitCost]
    liberty: dict[str, LibertyUnit]
    parts: list[ChipPart]
    memories: list[dict] = field(default_factory=list)   # every chip memory, with "role": buffer | extra
    workload: str = ""
    cycles: int = 0
    missing: dict[str, str] = field(default_factory=dict)  # chip modules without a netlist: not counted
    area_mapped: list[str] = field(default_factory=list)  # modules mapped area-oriented (delay mapping timed out)
    quick_mapped: list[str] = field(default_factory=list)  # of those, mapped quick (area mapping timed out too)
    roms: dict[str, list[dict]] = field(default_factory=dict)  # module -> its read-only tables, counted as logic

    @property
    def unit_names(self) -> set[str]:
        return {u.hw_unit for u in self.units}


def module_costs(hier, act, chars, target_ps: float) -> list[ModuleCost]:
    """ModuleCost of every module instance of a HierResult with a ChipActivity (module docstring)."""
    queues = list(act.busy)
    out = []
    for m, r in hier.modules.items():
        part, q = owner(m, queues)
        busy = act.busy.get(q, 0) if q else act.cycles
        tog, bits = act.modules.get(m, [0, 0])
        a = tog / (bits * busy) if bits and busy else 0.0
        b = block_energy(r, chars)
        for _ in range(hier.instances[m]):
            out.append(ModuleCost(m, part, q, r.n_cells, r.n_flops, r.area_um2, tog, bits, busy, a, b,
                                  r.delay_ps <= target_ps))
    return out


def place_memories(cfg, hier, regfile: Callable[[dict], object], flop_um2: float | None = None):
    """(hier with every register-file-built memory's netlist added to its module, one row per chip memory and
    module instance with both costs and the choice: module docstring). `regfile(mem)` synthesises the
    register file of a memory dict (rtl/synth_hier.regfile_result with the flow's arguments). Where the
    storage flops alone (words x width x `flop_um2`, the sky130 flop's area; placed, at the node) already
    reach the macro's area, the register file cannot be the smaller and is not synthesised: its area is
    given as that lower bound (`regfile_bound`)."""
    from lowbit.rtl.synth_hier import add_netlist, read_kinds

    af, _ef = sky130_to(cfg.node_nm, cfg.supply_v)
    mods, per, rfs = dict(hier.modules), {}, {}
    for m, r in hier.modules.items():
        kinds, rows = None, []
        for mem in r.memories:
            role = ("rom" if mem["wr_ports"] == 0 else "buffer" if mem["name"].startswith(BUFFER_MEMORIES)
                    else "extra")
            ports = max(1, mem["rd_ports"] + mem["wr_ports"] - 1)  # ASSUMPTION: a read and a write port share one
            s = sram_estimate(mem["name"], mem["size"] * mem["width"] // 8, 1, ports, cfg.node_nm, cfg.supply_v,
                              word_bits=mem["width"])
            row = {**mem, "module": m, "role": role, "bytes": s.bytes, "ports": ports, "area_um2": s.area_um2,
                   "leak_w": s.leak_w, "note": s.note, "sram_area_um2": s.area_um2, "built": "sram"}
            if role == "extra":
                if "clocked" not in mem:
                    kinds = read_kinds(r) if kinds is None else kinds
                clocked = bool(mem.get("clocked", kinds.get(mem["name"], True) if kinds else True))
                if flop_um2 is None:
                    from lowbit.rtl.liberty import DFF_CELL, library_cells

                    flop_um2 = library_cells()[DFF_CELL].area_um2
                floor = mem["size"] * mem["width"] * flop_um2 * af / PLACEMENT_UTILISATION
                if floor >= s.area_um2:
                    row.update(clocked=clocked, regfile_area_um2=floor, regfile_bound=True, regfile_cells=0,
                               regfile_flops=mem["size"] * mem["width"])
                    rows.append(row)
                    continue
                shape = (mem["width"], mem["size"], mem["rd_ports"], mem["wr_ports"], clocked)
                if shape not in rfs:
                    rfs[shape] = regfile({**mem, "clocked": clocked})
                x = rfs[shape]
                rf = x.area_um2 * af / PLACEMENT_UTILISATION
                row.update(clocked=clocked, regfile_area_um2=rf, regfile_bound=False, regfile_cells=x.n_cells,
                           regfile_flops=x.n_flops)
                if choose_build(s.area_um2, rf) == "regfile":
                    row.update(built="regfile", area_um2=rf, leak_w=0.0, note="")  # leakage: in its module's logic
                    mods[m] = add_netlist(mods[m], x)
            rows.append(row)
        per[m] = rows
    mems = [row for m in hier.modules for _ in range(hier.instances[m]) for row in per[m]]
    return dataclasses.replace(hier, modules=mods), mems


def chip_cost(cfg, hier, act, chars, target_ps: float, regfile: Callable[[dict], object] | None = None,
              flop_um2: float | None = None) -> ChipCost:
    """Units, chip parts and memories of the chip top (module docstring), at the config's node. `regfile`:
    the register-file synthesis of a memory (default: rtl/synth_hier.regfile_result, characterised flow);
    `flop_um2`: place_memories' flop area (default: the sky130 library's)."""
    if regfile is None:
        from lowbit.rtl.synth_hier import regfile_result

        def regfile(mem):
            return regfile_result(mem, liberty="characterised", target_ps=target_ps)

    af, ef = sky130_to(cfg.node_nm, cfg.supply_v)
    dfac = delay_factor(130, 1.8, cfg.node_nm, cfg.supply_v)
    hier, mems = place_memories(cfg, hier, regfile, flop_um2)
    mods = module_costs(hier, act, chars, target_ps)
    units, lib, parts = [], {}, []
    for part in sorted({m.part for m in mods}):
        ms = [m for m in mods if m.part == part]
        area = sum(m.area_sky130_um2 for m in ms)
        e = sum(m.busy_pj for m in ms) * 1e-12 * ef
        leak = area * af * LOGIC_LEAK_W_PER_UM2
        cells, flops = sum(m.cells for m in ms), sum(m.flops for m in ms)
        tog, denom = sum(m.toggles for m in ms), sum(m.bits * m.busy for m in ms)
        a = tog / denom if denom else 0.0
        if part in ("dma", "control"):
            what = ("DMA engines, their rings and fill logic, the memory port" if part == "dma" else
                    "queue controllers, scoreboard and join logic, buffer ports")
            parts.append(ChipPart("DMA, memory port" if part == "dma" else "control", area * af / PLACEMENT_UTILISATION,
                                  e, leak, f"chip top netlist: {what} ({len(ms)} modules), activity {a:.3f} from the "
                                  f"chip bench ({act.workload}), every cycle", cells, flops))
            continue
        inst = len({m.queue for m in ms})
        block = RATE_BLOCK.get(part, part)
        rates = unit_rates(cfg, block) if block in UNITS else {}
        u = UnitCost(part, inst, cells, area, area * af / PLACEMENT_UTILISATION, e, leak, a,
                     f"measured (chip bench: {act.workload})", rates, True,
                     f"chip top netlist: {', '.join(sorted({m.name.split('.')[1] for m in ms}))}", hw_unit=part)
        units.append(u)
        worst = max(ms, key=lambda m: m.energy.delay_ps)
        lib[part] = LibertyUnit(part, sum(m.energy.toggle_pj for m in ms) * 1e-12 * ef,
                                sum(m.energy.clock_pj for m in ms) * 1e-12 * ef, worst.energy.delay_ps * dfac,
                                worst.energy.delay_ps, worst.energy.delay_ps <= target_ps,
                                sum(m.energy.leak_sky130_w for m in ms), flops)
    extra = [m for m in mems if m["role"] == "extra"]
    macros = [m for m in extra if m["built"] == "sram"]
    if macros:
        parts.append(ChipPart("control memories", sum(m["area_um2"] for m in macros), 0.0,
                              sum(m["leak_w"] for m in macros),
                              f"{len(macros)} of the {len(extra)} chip memories that are not config buffers, built "
                              f"as SRAM macros at their RTL sizes (cost/sram.py; {MEMORY_RULE}); accesses not "
                              f"charged; the other {len(extra) - len(macros)} are register files "
                              f"({sum(m['area_um2'] for m in extra if m['built'] == 'regfile'):,.0f} µm²) counted "
                              "in their modules' parts"))
    return ChipCost(mods, units, lib, parts, mems, act.workload, act.cycles, missing=dict(hier.missing),
                    area_mapped=list(hier.area_mapped), quick_mapped=list(hier.quick_mapped), roms=dict(hier.roms))


# The chip's SFU stream engines (instance name) and the SFU op each executes (sim.breakdown's op groups).
CHIP_SFU_ENGINES = {"sfu_quant": "quantize", "sfu_rms": "rmsnorm", "sfu_res": "elementwise", "sfu_act": "activation",
                    "sfu_rope": "rope", "sfu_softmax": "softmax"}


def chip_sfu_ops(cc: ChipCost) -> set[str]:
    """The SFU ops that have an engine in the chip netlist."""
    return {CHIP_SFU_ENGINES[m.name.split(".")[1]] for m in cc.modules
            if m.part == "sfu" and m.name.split(".")[1] in CHIP_SFU_ENGINES}


def chip_from_bench(cfg, chars, target_ps: float, progress=None, activity: str | None = None) -> ChipCost:
    """ChipCost of cfg's chip: the chip bench's activity run (rtl/activity_chip.py, cached; or `activity`, a
    stored ChipActivity JSON of an earlier run, whose Verilog it names) and the hierarchical synthesis of the
    Verilog it ran (rtl/synth_hier.py, cached per module)."""
    import sys
    from pathlib import Path

    from lowbit.rtl.activity_chip import chip_activity, load_activity
    from lowbit.rtl.synth import CHIP_JOBS
    from lowbit.rtl.synth_hier import synth_hier

    log = progress or (lambda s: print(s, file=sys.stderr, flush=True))
    act = load_activity(activity, cfg) if activity else chip_activity(cfg, cfg.name, progress=log)
    hier = synth_hier(Path(act.verilog).read_text(), TOP, liberty="characterised", target_ps=target_ps,
                      progress=lambda m, i, n: log(f"[{cfg.name}] synthesising chip module {m} ({i + 1}/{n})"),
                      keep_going=True, jobs=CHIP_JOBS)
    return chip_cost(cfg, hier, act, chars, target_ps)
