"""Verilog generation for registered units, with a content-addressed cache.

``generate(cfg, unit, out_dir)`` validates the unit's parameters (LowbitError before any Amaranth work),
converts the component with ``amaranth.back.verilog.convert`` (``emit_src=False`` so the text does not
depend on checkout paths), and writes ``<unit>.v`` plus ``manifest.json`` (merged per unit; sorted keys,
so output is deterministic). Conversion costs ~2-3 s (wasm Yosys start-up), so the Verilog is cached
under ``cache_dir("verilog")`` (lowbit.sim.cache) keyed by sha256(unit, parameters, amaranth version,
RTL sources), written atomically under a per-entry lock (two concurrent runs share one conversion).
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowbit.rtl.registry import RtlUnit, get_unit
from lowbit.sim import procs
from lowbit.sim.atomic import atomic_write, locked
from lowbit.sim.cache import cache_dir

SRC_ROOT = Path(__file__).resolve().parents[2]  # the directory holding the lowbit package


def top_name(unit: str) -> str:
    return f"lowbit_{unit}"


@dataclass(frozen=True)
class Generated:
    unit: str
    top: str
    verilog: str
    ports: list[dict[str, Any]]
    parameters: dict[str, Any]
    key: str


_TRACKED = ("lowbit.rtl", "lowbit.sim.numerics", "lowbit.sim.units")


def _module_file(module: str) -> Path:
    base = SRC_ROOT / module.replace(".", "/")
    path = base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"
    if not path.exists():  # a registry entry naming a missing module: fail, never hash nothing
        raise FileNotFoundError(path)
    return path


def _rtl_sources(module: str) -> set[Path]:
    """The module's file plus every lowbit.rtl / lowbit.sim.numerics / lowbit.sim.units module it imports,
    transitively: the files whose text can change the generated Verilog."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        mod = todo.pop()
        path = _module_file(mod)
        if path in seen:
            continue
        seen.add(path)
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
                names = [".".join(x for x in (base, node.module) if x)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            todo += [n for n in names if n.startswith(_TRACKED)]
    return seen


def _sources_digest(spec: RtlUnit) -> str:
    h = hashlib.sha256()
    for p in sorted(_rtl_sources(spec.component.split(":")[0])):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def cache_key(spec: RtlUnit, params: dict[str, Any]) -> str:
    import amaranth

    blob = json.dumps({"unit": spec.name, "params": params, "amaranth": amaranth.__version__,
                       "src": _sources_digest(spec)}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _ports(component) -> list[dict[str, Any]]:
    from amaranth.hdl import Shape
    from amaranth.lib import data

    ports = [{"name": "clk", "direction": "in", "width": 1}, {"name": "rst", "direction": "in", "width": 1}]
    for name, member in component.signature.members.items():
        shape = member.shape
        if isinstance(shape, data.Layout):
            width, signed = shape.size, False
        else:
            s = Shape.cast(shape)
            width, signed = s.width, s.signed
        entry = {"name": name, "direction": "in" if member.flow.name == "In" else "out", "width": width}
        if isinstance(shape, data.ArrayLayout):
            elem = Shape.cast(shape.elem_shape)
            entry.update(elements=shape.length, element_width=elem.width, element_signed=elem.signed)
        elif signed:
            entry["signed"] = True
        ports.append(entry)
    return ports


def build_verilog(unit: str, section_cfg: Any, use_cache: bool = True) -> Generated:
    """Validate, then return (cached) Verilog + port list for one unit and one config section."""
    spec = get_unit(unit)
    spec.validate(section_cfg)
    params = spec.parameters(section_cfg)
    key = cache_key(spec, params)
    vpath = cache_dir("verilog") / f"{unit}-{key}.v"
    jpath = vpath.with_suffix(".json")
    if use_cache and vpath.exists() and jpath.exists():
        return Generated(unit, top_name(unit), vpath.read_text(), json.loads(jpath.read_text()), params, key)
    # one conversion per key at a time: a concurrent run waits and reuses the entry (lowbit.sim.atomic)
    with locked(vpath.with_name(f".{unit}-{key}.lock")):
        if use_cache and vpath.exists() and jpath.exists():
            return Generated(unit, top_name(unit), vpath.read_text(), json.loads(jpath.read_text()), params, key)
        import amaranth._toolchain.yosys as amaranth_yosys
        from amaranth.back import verilog

        dut = spec.build(section_cfg)
        with procs.adopt(amaranth_yosys):  # Amaranth's yosys child: own process group, dies with lowbit
            text = verilog.convert(dut, name=top_name(unit), emit_src=False)
        ports = _ports(dut)
        atomic_write(jpath, json.dumps(ports, indent=1, sort_keys=True))  # ports first: .v marks the entry complete
        atomic_write(vpath, text)
    return Generated(unit, top_name(unit), text, ports, params, key)


def manifest_entry(g: Generated) -> dict[str, Any]:
    import amaranth

    spec = get_unit(g.unit)
    return {
        "unit": g.unit, "top": g.top, "verilog": f"{g.unit}.v", "parameters": g.parameters,
        "ports": g.ports, "clock": "clk (rising edge)", "reset": "rst (synchronous, active high)",
        "cycle_formula": spec.cycle_formula, "cycle_functions": list(spec.cycle_functions),
        "cycle_convention": "start high in cycle 0 (sampled at edge 0); beat j sampled at edge j+1; "
                            "done high for one cycle in cycle N = beats + latency",
        "amaranth_version": amaranth.__version__, "cache_key": g.key,
    }


def generate(cfg: Any, unit: str, out_dir: str | Path, use_cache: bool = True) -> list[Path]:
    """Write ``<unit>.v`` and merge the unit's entry into ``manifest.json`` in out_dir; return both paths."""
    spec = get_unit(unit)
    g = build_verilog(unit, spec.section_cfg(cfg), use_cache=use_cache)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vfile = out / f"{unit}.v"
    atomic_write(vfile, g.verilog)
    mfile = out / "manifest.json"
    manifest: dict[str, Any] = {"hw": getattr(cfg, "name", ""), "units": {}}
    if mfile.exists():
        try:
            old = json.loads(mfile.read_text())
            if isinstance(old, dict) and old.get("hw") == manifest["hw"] and isinstance(old.get("units"), dict):
                manifest = old
        except (OSError, ValueError):  # unreadable or not JSON: start a new manifest
            pass
    manifest["units"][unit] = manifest_entry(g)
    atomic_write(mfile, json.dumps(manifest, indent=1, sort_keys=True, default=list) + "\n")
    return [vfile, mfile]


__all__ = ["generate", "build_verilog", "top_name", "Generated"]
