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

import hashlib
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lowbit.rtl.synth import MODULE_RE, SynthError, SynthResult, synthesize

NUMBERED = re.compile(r"([A-Za-z_]\w*?)?\$(\d+)")  # a numbered name part and the name stem before it


@dataclass
class HierResult:
    """A hierarchically synthesised design: each module's own netlist and how often it is instantiated."""

    top: str
    modules: dict[str, SynthResult]            # module name -> its own cells (children excluded)
    instances: dict[str, int]                  # module name -> instances in the design (top: 1)
    keys: dict[str, str] = field(default_factory=dict)  # module name -> cache key (equal keys: one synthesis)
    missing: dict[str, str] = field(default_factory=dict)  # module -> why it has no netlist (keep_going only)

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
        return synthesize([f], m, cache_dir=cache_dir, liberty=liberty, target_ps=target_ps,
                          keep_memories=keep_memories, libs=libs,
                          key_text=f"hier-module {k} {target_ps:.0f} {keep_memories}")

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
    missing = {m: why[keys[m]] for m in order if keys[m] in why}
    return HierResult(top, done, inst, {m: keys[m] for m in order}, missing)
