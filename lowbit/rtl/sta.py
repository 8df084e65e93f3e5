"""Static timing of a mapped sky130 netlist with the characterised NLDM tables (rtl/characterize.py).

Rule (graph-based STA, as in e.g. OpenSTA, without path-based refinements): start points are block inputs
(arrival 0, slew of the driving cell `inv_1` at the net's load) and flip-flop Q pins (arrival = CLK->Q delay
at the Q net's load); every combinational cell's output arrival = max over its input pins of (input arrival +
NLDM delay at (net load, input slew)), worst of rise/fall; the output slew is the worst transition. Undriven nets
(a kept memory's read data) start like block inputs. End points are flip-flop D pins and block outputs. Net load = Σ sink pin capacitances (+ the block-output load for
output nets); no wire capacitance (the power model adds its wire load separately), no setup time (not
characterised), no clock skew. The NLDM slew index is the 0-100 % input ramp lctime applies; output
transitions are 20-80 %, so a driver's transition t feeds the next stage as a ramp of t / 0.6.
"""

from __future__ import annotations

from collections import defaultdict

SLEW_TO_RAMP = 1 / 0.6  # 20-80 % of a linear ramp is 60 % of its 0-100 % time


def _lookup(table: list[list[float]], loads: tuple[float, ...], slews: tuple[float, ...], load: float,
            slew: float) -> float:
    from lowbit.rtl.characterize import _bilinear

    return _bilinear(table, loads, slews, load, slew)


def critical_path_ps(netlist: dict, chars: dict, driving_cell: str, output_load_pf: float,
                     dff_cell: str = "dfxtp_1", prefix: str = "sky130_fd_sc_hd__") -> float:
    """Longest register/input -> register/output delay (ps) of a yosys `write_json` netlist (one module)."""
    mod = next(iter(netlist["modules"].values())) if len(netlist["modules"]) == 1 else next(
        m for m in netlist["modules"].values() if m.get("attributes", {}).get("top"))
    load: dict[int, float] = defaultdict(float)
    cells = []
    for cell in mod["cells"].values():
        short = cell["type"].removeprefix(prefix)
        c = chars[short]
        ins = {p: [b for b in bits if isinstance(b, int)] for p, bits in cell["connections"].items() if p in c.pin_cap_pf}
        out = [b for p, bits in cell["connections"].items() if p not in c.pin_cap_pf for b in bits if isinstance(b, int)]
        for p, bits in ins.items():
            for b in bits:
                load[b] += c.pin_cap_pf[p]
        cells.append((short, c, ins, out[0] if out else None))
    outs = {b for p in mod["ports"].values() if p["direction"] == "output" for b in p["bits"] if isinstance(b, int)}
    for b in outs:
        load[b] += output_load_pf
    arr: dict[int, tuple[float, float]] = {}  # net -> (arrival ns, 20-80 % transition ns)
    drv = chars[driving_cell]
    for p in mod["ports"].values():
        if p["direction"] == "input":
            for b in p["bits"]:
                if isinstance(b, int):
                    arr[b] = (0.0, drv.transition_ns(load[b], 0.1))
    # nets no cell or input port drives (a kept memory's read data: the SRAM macro drives it) start at 0 like
    # block inputs (ASSUMPTION: the macro's clock-to-output delay is not counted)
    driven = set(arr) | {out for _s, _c, _i, out in cells if out is not None}
    for _short, _c, ins, _out in cells:
        for bits in ins.values():
            for b in bits:
                if b not in driven:
                    arr[b] = (0.0, drv.transition_ns(load[b], 0.1))
                    driven.add(b)
    comb = []
    for short, c, ins, out in cells:
        if out is None:
            continue
        if short == dff_cell:
            g = c.timing[0]
            d = max(_lookup(g[k], c.loads_pf, c.slews_ns, load[out], 0.1) for k in ("cell_rise", "cell_fall"))
            arr[out] = (d, c.transition_ns(load[out], 0.1))
        else:
            comb.append((c, ins, out))
    # Kahn's topological order over the combinational cells: a cell is timed once all its input nets are
    waiting = {i: sum(1 for bits in ins.values() for b in bits if b not in arr) for i, (_c, ins, _o) in enumerate(comb)}
    readers: dict[int, list[int]] = defaultdict(list)
    for i, (_c, ins, _o) in enumerate(comb):
        for bits in ins.values():
            for b in bits:
                if b not in arr:
                    readers[b].append(i)
    ready = [i for i, n in waiting.items() if n == 0]
    done = 0
    while ready:
        i = ready.pop()
        done += 1
        c, ins, out = comb[i]
        t_out, s_out = 0.0, 0.0
        for g in c.timing:
            for b in ins.get(g["related_pin"], []):
                t_in, s_in = arr[b]
                ramp = s_in * SLEW_TO_RAMP
                d = max(_lookup(g[k], c.loads_pf, c.slews_ns, load[out], ramp) for k in ("cell_rise", "cell_fall"))
                s = max(_lookup(g[k], c.loads_pf, c.slews_ns, load[out], ramp)
                        for k in ("rise_transition", "fall_transition"))
                t_out, s_out = max(t_out, t_in + d), max(s_out, s)
        arr[out] = (t_out, s_out)
        for j in readers.get(out, []):
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    if done != len(comb):
        raise ValueError("combinational loop in the mapped netlist")
    ends = [arr[b][0] for b in outs if b in arr]
    for short, _c, ins, _out in cells:
        if short == dff_cell:
            ends += [arr[b][0] for b in ins.get("D", []) if b in arr]
    return max(ends, default=0.0) * 1e3
