"""Hierarchical synthesis of a multi-module Verilog design (the chip top): each unique module once.

Rule: the design's Verilog (one file, as Amaranth writes it: one module per elaborated instance) is split
into its modules; every module is synthesised on its own (rtl/synth.py, the same script) with its child
modules read as blackboxes (`read_verilog -lib`), and the design's cells are Σ over the hierarchy of each
module's own cells x the instances of that module. Modules are cached by a name-independent form of
their text (module_key): the module's own name, its children's names (replaced by their keys) and
Amaranth's numbered names (`$721`, `port$357$13`: renumbered by rank among the numbers of the same stem)
do not enter the key, and its lines are
sorted (Amaranth sorts declarations by name, so renumbering reorders them), so two instances that Amaranth
writes as two identical modules (`eng_tint0.core`, `eng_tint1.core`), or a module whose numbering shifted
because another module changed, synthesise once.
Against a flattened synthesis (`synth -flatten`): abc does not optimise across module boundaries (a
constant into a child, an unused child output keep their logic), and a net crossing a boundary is timed
and loaded as a block boundary (rtl/synth.py boundary_netlist).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lowbit.rtl.synth import MODULE_RE, YOSYS_TIMEOUT_S, SynthError, SynthResult, synthesize
from lowbit.sim.cache import cache_dir as _cache_dir

NUMBERED = re.compile(r"([A-Za-z_]\w*?)?\$(\d+)")  # a numbered name part and the name stem before it


@dataclass
class HierResult:
    """A hierarchically synthesised design: each module's own netlist and how often it is instantiated."""

    top: str
    modules: dict[str, SynthResult]            # module name -> its own cells (children excluded)
    instances: dict[str, int]                  # module name -> instances in the design (top: 1)
    keys: dict[str, str] = field(default_factory=dict)  # module name -> cache key (equal keys: one synthesis)
    missing: dict[str, str] = field(default_factory=dict)  # module -> why it has no netlist (keep_going only)
    roms: dict[str, list[dict]] = field(default_factory=dict)  # module -> its read-only tables mapped to logic

    @property
    def area_mapped(self) -> list[str]:
        """Modules whose delay mapping timed out, mapped area-oriented or quick instead (synth_hier's
        fallbacks)."""
        return [m for m, r in self.modules.items() if r.mapping != "delay" and r.target_ps]

    @property
    def quick_mapped(self) -> list[str]:
        """Modules whose area-oriented mapping timed out too, mapped with synth.QUICK_ABC."""
        return [m for m, r in self.modules.items() if r.mapping == "quick" and r.target_ps]

    @property
    def area_um2(self) -> float:
        return sum(r.area_um2 * self.instances[m] for m, r in self.modules.items())

    @property
    def cells(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m, r in self.modules.items():
            for c, n in r.cells.items():
                out[c] = out.get(c, 0) + n * self.instances[m]
        return dict(sorted(out.items()))

    @property
    def n_cells(self) -> int:
        return sum(self.cells.values())

    @property
    def n_flops(self) -> int:
        return sum(r.n_flops * self.instances[m] for m, r in self.modules.items())

    @property
    def memories(self) -> list[dict]:
        return [{**mem, "module": m} for m, r in self.modules.items() for _ in range(self.instances[m])
                for mem in r.memories]

    def subtree(self, name: str) -> list[str]:
        """`name` and every module below it (Amaranth's hierarchical module names)."""
        return [m for m in self.modules if m == name or m.startswith(name + ".")]


def split_modules(text: str) -> dict[str, str]:
    """Module name (escaped names without the backslash) -> its text, attributes before it included."""
    out: dict[str, str] = {}
    lines = text.splitlines(keepends=True)
    start = 0
    name = None
    for i, line in enumerate(lines):
        m = MODULE_RE.match(line)
        if m:
            name = m.group(1).lstrip("\\")
            j = i
            while j > start and lines[j - 1].lstrip().startswith("(*"):
                j -= 1
            start = j
        elif line.startswith("endmodule") and name is not None:
            out[name] = "".join(lines[start:i + 1])
            start, name = i + 1, None
    if not out:
        raise SynthError("no Verilog module found in the design text")
    return out


def children_of(text: str, names: set[str]) -> list[str]:
    """The module types a module's text instantiates (one entry per instance), among `names`."""
    out = []
    for line in text.splitlines()[1:]:
        tok = line.split()
        if len(tok) >= 2 and tok[-1] == "(" and tok[0].lstrip("\\") in names:
            out.append(tok[0].lstrip("\\"))
    return out


def _esc(name: str) -> str:
    """A module name as it appears in Verilog text (escaped identifier where needed)."""
    return name if re.fullmatch(r"[A-Za-z_][\w$]*", name) else f"\\{name} "


def _sub_name(text: str, name: str, new: str) -> str:
    e = _esc(name)
    if e.startswith("\\"):
        return text.replace(e, new)
    return re.sub(rf"(?<![\w$.\\]){re.escape(name)}(?![\w$.])", lambda _m: new, text)


def module_key(name: str, text: str, child_keys: dict[str, str]) -> str:
    """Name-independent key of one module (module docstring)."""
    t = text
    for c, k in child_keys.items():
        t = _sub_name(t, c, f"\\C{k} ")
    t = _sub_name(t, name, "\\M ")
    stems: dict[str, set[int]] = {}
    for stem, n in NUMBERED.findall(t):
        stems.setdefault(stem, set()).add(int(n))
    rank = {st: {n: i for i, n in enumerate(sorted(ns))} for st, ns in stems.items()}
    t = NUMBERED.sub(lambda m: f"{m.group(1) or ''}${rank[m.group(1) or ''][int(m.group(2))]}", t)
    return hashlib.sha256("\n".join(sorted(t.splitlines())).encode()).hexdigest()[:20]


def synth_hier(text: str, top: str, *, cache_dir: Path | None = None, liberty: str = "area",
               target_ps: float = 0.0, keep_memories: bool = True, progress=None, jobs: int = 1,
               keep_going: bool = False) -> HierResult:
    """Synthesise each unique module of `text` once (module docstring), `jobs` yosys runs at a time;
    `progress(name, i, n)` is called before each unique module (cached or not). keep_going: a module whose
    synthesis fails (e.g. times out, LOWBIT_SYNTH_TIMEOUT_S) is listed in HierResult.missing instead of
    failing the whole design (its cells are then not counted)."""
    mods = split_modules(text)
    if top not in mods:
        raise SynthError(f"top module {top!r} not in the design (modules: {', '.join(list(mods)[:5])}, ...)")
    names = set(mods)
    kids = {m: children_of(t, names) for m, t in mods.items()}
    inst: dict[str, int] = {}

    def count(m: str, n: int) -> None:
        inst[m] = inst.get(m, 0) + n
        for c in kids[m]:
            count(c, n)

    count(top, 1)
    keys: dict[str, str] = {}

    def key(m: str) -> str:
        if m not in keys:
            keys[m] = module_key(m, mods[m], {c: key(c) for c in set(kids[m])})
        return keys[m]

    order = sorted(inst, key=lambda m: -len(mods[m]))  # largest first: the long runs start early
    first: dict[str, str] = {}
    for m in order:
        first.setdefault(key(m), m)
    reps = list(first.values())

    def one(i: int, m: str, td: Path) -> SynthResult:
        k = keys[m]
        f = Path(td) / f"m{i}.v"
        f.write_text(mods[m])
        libs = []
        for j, c in enumerate(sorted(set(kids[m]))):
            lf = Path(td) / f"m{i}_c{j}.v"
            lf.write_text(mods[c])
            libs.append(lf)
        if progress is not None:
            progress(m, i, len(reps))
        kw = {"cache_dir": cache_dir, "liberty": liberty, "target_ps": target_ps, "keep_memories": keep_memories,
              "libs": libs, "key_text": f"hier-module {k} {target_ps:.0f} {keep_memories}"}
        if liberty != "characterised":
            return synthesize([f], m, **kw)
        return _map_with_fallbacks(f, m, kw, Path(cache_dir) if cache_dir else _cache_dir("synth"))

    with tempfile.TemporaryDirectory(prefix="lowbit-hier-") as td, ThreadPoolExecutor(max(1, jobs)) as pool:
        futs = {m: pool.submit(one, i, m, Path(td)) for i, m in enumerate(reps)}
        by_key, why = {}, {}
        for m, f in futs.items():
            try:
                by_key[keys[m]] = f.result()
            except SynthError as e:
                if not keep_going:
                    raise
                why[keys[m]] = str(e).splitlines()[0].split("; yosys log")[0]
        done = {m: by_key[keys[m]] for m in order if keys[m] in by_key}
        roms = {}
        for m, r in list(done.items()):
            if any(x["wr_ports"] == 0 for x in r.memories):
                done[m], roms[m] = roms_as_logic(r, Path(td), cache_dir=cache_dir, liberty=liberty,
                                                 target_ps=target_ps)
    missing = {m: why[keys[m]] for m in order if keys[m] in why}
    return HierResult(top, done, inst, {m: keys[m] for m in order}, missing, roms)


def _map_with_fallbacks(f: Path, m: str, kw: dict, root: Path) -> SynthResult:
    """The characterised flow's mapping of one module: for delay (abc -D); where that runs past the yosys
    timeout, abc's area-oriented mapping onto the same cells; where that runs past it too, the quick mapping
    (synth.QUICK_ABC, allowed at least synth.YOSYS_TIMEOUT_S); each timed and loaded the same way
    (SynthResult.mapping). Why the fallbacks are fair stand-ins: each is a complete netlist of the module on
    the same cells; a delay mapping restructures and duplicates logic for speed, so its area and switched
    capacitance are at least as large (an underestimate, flagged in the report), and no engine meets the
    clock with drive-1 cells either way. A timeout is remembered (a marker per mapping in the cache) so a
    rerun with the same limit goes to the next mapping at once."""
    limit = float(os.environ.get("LOWBIT_SYNTH_TIMEOUT_S", YOSYS_TIMEOUT_S))
    for mapping in ("delay", "area"):
        tag = kw["key_text"] if mapping == "delay" else f"{kw['key_text']} {mapping}"
        marker = root / f"{mapping}-timeout-{hashlib.sha256(tag.encode()).hexdigest()[:20]}"
        try:
            tried = float(marker.read_text())
        except (OSError, ValueError):
            tried = 0.0
        if tried >= limit:
            continue
        try:
            return synthesize([f], m, **kw, mapping=mapping)
        except SynthError as e:
            if "timed out" not in str(e):
                raise
            root.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"{limit:.0f}\n")
    return synthesize([f], m, **kw, mapping="quick", timeout_s=max(limit, YOSYS_TIMEOUT_S))


def rom_verilog(name: str, mem: dict) -> str:
    """A read-only table as a Verilog module (`clk`, `a` -> `d`): a `case` over its contents (`init`, word 0
    in the low bits, yosys's INIT), registered where the chip's table reads synchronously (`clocked`)."""
    w, n = mem["width"], mem["size"]
    ab = max(1, (n - 1).bit_length())
    init = mem["init"]
    rows = "\n".join(f"    {ab}'d{i}: v = {w}'h{(init >> (i * w)) & ((1 << w) - 1):x};" for i in range(n))
    out = ("  always @(posedge clk) d <= v;\n" if mem["clocked"] else "  always @* d = v;\n")
    return (f"module {name} (input clk, input [{ab - 1}:0] a, output reg [{w - 1}:0] d);\n  reg [{w - 1}:0] v;\n"
            f"  always @* begin\n  case (a)\n{rows}\n    default: v = {w}'h0;\n  endcase\n  end\n{out}endmodule\n")


def roms_as_logic(r: SynthResult, td: Path, **kw) -> tuple[SynthResult, list[dict]]:
    """Module result `r` with its read-only tables (memories without a write port, e.g. a lookup table yosys
    keeps as a ROM) mapped to logic: each table synthesised from its contents (the `$mem_v2` INIT of the
    module's kept memories, mems.json beside its log) as a `case` ROM (rom_verilog; the same flow and
    target), its cells, area and net loads added to the module's. Returns (result, the tables)."""
    try:
        cells = json.loads((Path(r.log_path).parent / "mems.json").read_text())["modules"]
    except (OSError, ValueError, KeyError) as e:
        raise SynthError(f"{r.top}: the contents of its read-only tables are not readable ({e})") from None
    found = []
    for mod in cells.values():
        for c in mod.get("cells", {}).values():
            p = c.get("parameters", {})
            if c.get("type") == "$mem_v2" and int(str(p["WR_PORTS"]), 2) == 0:
                bits = str(p["INIT"]).replace("x", "0").replace("z", "0")
                found.append({"name": str(p.get("MEMID", "")).lstrip("\\"), "width": int(str(p["WIDTH"]), 2),
                              "size": int(str(p["SIZE"]), 2), "init": int(bits, 2) if bits else 0,
                              "clocked": "1" in str(p.get("RD_CLK_ENABLE", "0")),
                              "rd_ports": int(str(p["RD_PORTS"]), 2)})
    out = dataclasses.replace(r, memories=[x for x in r.memories if x["wr_ports"] != 0])
    tables = []
    for mem in found:
        text = rom_verilog("lowbit_rom", mem)
        h = hashlib.sha256(text.encode()).hexdigest()[:12]
        f = td / f"rom-{h}.v"
        f.write_text(text)
        x = synthesize([f], "lowbit_rom", **kw)
        k = mem["rd_ports"]  # one table copy per read port
        out = add_netlist(out, x, k)
        tables.append({"name": mem["name"], "width": mem["width"], "size": mem["size"], "cells": x.n_cells * k,
                       "area_um2": x.area_um2 * k})
    return out, tables


def add_netlist(r: SynthResult, x: SynthResult, k: int = 1) -> SynthResult:
    """A copy of module result `r` with `k` copies of netlist `x` added: cells, area, net loads; the critical
    path is the longer of the two."""
    out = dataclasses.replace(r, cells=dict(r.cells), cell_area_um2=dict(r.cell_area_um2),
                              net_loads={c: [list(v) for v in rows] for c, rows in r.net_loads.items()})
    for c, n in x.cells.items():
        out.cells[c] = out.cells.get(c, 0) + k * n
    for c, a in x.cell_area_um2.items():
        out.cell_area_um2[c] = out.cell_area_um2.get(c, 0.0) + k * a
    for c, v in x.net_loads.items():
        out.net_loads.setdefault(c, []).extend([cap, fo, k * n] for cap, fo, n in v)
    out.area_um2 += k * x.area_um2
    out.seq_area_um2 += k * x.seq_area_um2
    out.delay_ps = max(out.delay_ps, x.delay_ps)
    return out


def regfile_verilog(name: str, mem: dict) -> str:
    """A writable memory as a register file (Verilog module): `size` words of `width` bits, `wr_ports` write
    ports (`we<j>`, `wa<j>`, `wd<j>`; on one address the later port wins) and `rd_ports` read ports
    (`ra<i>` -> `rd<i>`), read through a data register where the chip's memory reads synchronously
    (`clocked`), combinationally otherwise. Synthesised without keep_memories, yosys's memory_map turns it
    into one flop per stored bit and a read multiplexer per read port."""
    w, n, nr, nw = mem["width"], mem["size"], mem["rd_ports"], mem["wr_ports"]
    if w < 1 or n < 1 or nr < 1 or nw < 1:
        raise SynthError(f"register file {mem.get('name', name)!r}: width {w}, size {n}, {nr} read and {nw} write "
                         "ports: each must be >= 1")
    ab = max(1, (n - 1).bit_length())
    ports = [*(f"input we{j}, input [{ab - 1}:0] wa{j}, input [{w - 1}:0] wd{j}" for j in range(nw)),
             *(f"input [{ab - 1}:0] ra{i}, output reg [{w - 1}:0] rd{i}" for i in range(nr))]
    writes = "".join(f"    if (we{j}) mem[wa{j}] <= wd{j};\n" for j in range(nw))
    kind = "always @(posedge clk)" if mem["clocked"] else "always @*"
    eq = "<=" if mem["clocked"] else "="
    reads = "".join(f"  {kind} rd{i} {eq} mem[ra{i}];\n" for i in range(nr))
    return (f"module {name} (input clk, {', '.join(ports)});\n  reg [{w - 1}:0] mem [0:{n - 1}];\n"
            f"  always @(posedge clk) begin\n{writes}  end\n{reads}endmodule\n")


def regfile_result(mem: dict, **kw) -> SynthResult:
    """The register file of one chip memory (regfile_verilog) synthesised by rtl/synth.py (keyword arguments
    as synthesize's: the flow, target, cache)."""
    text = regfile_verilog("lowbit_rf", mem)
    with tempfile.TemporaryDirectory(prefix="lowbit-rf-") as td:
        f = Path(td) / "rf.v"
        f.write_text(text)
        return synthesize([f], "lowbit_rf", **kw)


def read_kinds(r: SynthResult) -> dict[str, bool]:
    """Memory name -> whether it reads through a clocked port (yosys's RD_CLK_ENABLE), from the $mem_v2 cells
    a module's synthesis kept (mems.json beside its log)."""
    try:
        mods = json.loads((Path(r.log_path).parent / "mems.json").read_text())["modules"]
    except (OSError, ValueError, KeyError) as e:
        raise SynthError(f"{r.top}: its kept memories are not readable ({e})") from None
    return {str(c["parameters"].get("MEMID", n)).lstrip("\\"): "1" in str(c["parameters"].get("RD_CLK_ENABLE", "0"))
            for mod in mods.values() for n, c in mod.get("cells", {}).items() if c.get("type") == "$mem_v2"}
