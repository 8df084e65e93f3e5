"""Layers only point down: every import of every lowbit module, read with ast (function bodies included).

    lowbit.sim     -> lowbit.sim
    lowbit.rtl     -> lowbit.sim, lowbit.rtl
    lowbit.models  -> lowbit.sim, lowbit.models
    lowbit.cost    -> lowbit.sim, lowbit.rtl, lowbit.models, lowbit.cost
    lowbit.explore -> lowbit.sim, lowbit.rtl, lowbit.models, lowbit.cost, lowbit.explore
    lowbit.cli     -> anything; only lowbit/__main__.py imports it

An import is an ``import``/``from ... import`` statement (relative ones resolved; ``from lowbit.x import y``
counts as lowbit.x.y when y is a module), or, in a module that calls importlib itself (``import_module``,
``__import__``, ``find_spec``), a string naming a lowbit module -- ``"lowbit.sim.units.tint"`` or
``"lowbit.sim.units.tint:tint_tile_cycles"``. A string that a module only passes on (for a higher layer to
resolve) names a module without importing it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ALLOWED: dict[str, set[str]] = {
    "sim": {"sim"},
    "rtl": {"sim", "rtl"},
    "models": {"sim", "models"},
    "cost": {"sim", "rtl", "models", "cost"},
    "explore": {"sim", "rtl", "models", "cost", "explore"},
}
CLI_IMPORTERS = {"lowbit.__main__"}
_MODULE_STRING = re.compile(r"lowbit(?:\.\w+)+(?::\w+)?")
_RESOLVERS = {"import_module", "__import__", "find_spec"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str, root: Path) -> bool:
    base = root / name.replace(".", "/")
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def imports_of(path: Path, root: Path) -> set[str]:
    """Every lowbit module that the file at `path` imports (statements anywhere, and module strings)."""
    mod = module_name(path, root)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    resolves = any(isinstance(n, ast.Call) and (getattr(n.func, "attr", None) or getattr(n.func, "id", None)) in _RESOLVERS
                   for n in ast.walk(tree))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if is_module(sub, root) else base)
        elif resolves and isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and _MODULE_STRING.fullmatch(node.value):
            name = node.value.split(":")[0]
            if is_module(name, root):
                found.add(name)
    return {n for n in found if n == "lowbit" or n.startswith("lowbit.")}


def layer(module: str) -> str:
    """'sim', 'rtl', 'models', 'cost', 'explore', or the module itself for lowbit, lowbit.cli and lowbit.__main__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else module


def violations(root: Path) -> list[tuple[str, str]]:
    """(module, imported lowbit module) pairs that point up or sideways."""
    bad = []
    for path in sorted((root / "lowbit").rglob("*.py")):
        mod = module_name(path, root)
        src = layer(mod)
        for target in sorted(imports_of(path, root)):
            dst = layer(target)
            if dst == "lowbit":  # the namespace package itself holds nothing but a docstring and __version__
                ok = True
            elif dst == "lowbit.cli":
                ok = mod in CLI_IMPORTERS or mod == "lowbit.cli"
            elif src in ALLOWED:
                ok = dst in ALLOWED[src]
            else:  # lowbit.cli, lowbit.__main__: the top assembles everything
                ok = True
            if not ok:
                bad.append((mod, target))
    return bad


def test_layers_only_point_down():
    bad = violations(ROOT)
    assert not bad, "imports against the layering (module -> imported):\n" + "\n".join(
        f"  {m} -> {t}" for m, t in bad)


def test_the_scan_sees_the_real_graph():
    """The checker reads what it claims to: lazy and string imports of the actual tree."""
    n_modules = len(list((ROOT / "lowbit").rglob("*.py")))
    assert n_modules >= 60
    assert "lowbit.cli" in imports_of(ROOT / "lowbit/__main__.py", ROOT)
    assert "lowbit.rtl.cocotb_runner" in imports_of(ROOT / "lowbit/rtl/lint.py", ROOT)  # inside lint()
    assert {"lowbit.sim.cli", "lowbit.cost.cli"} <= imports_of(ROOT / "lowbit/cli.py", ROOT)  # from lowbit.x import cli


def test_checker_flags_upward_imports(tmp_path):
    files = {
        "lowbit/__init__.py": "",
        "lowbit/cli.py": "import lowbit.cost.report\n",
        "lowbit/__main__.py": "from lowbit import cli\n",
        "lowbit/sim/__init__.py": "",
        "lowbit/sim/core.py": "def f():\n    from lowbit.rtl import synth\n    from . import other\n",
        "lowbit/sim/other.py": "import importlib\nM = importlib.import_module('lowbit.models.net')\n",
        "lowbit/sim/names.py": "GEN = 'lowbit.rtl.synth:Gen'  # only named, resolved by a higher layer\n",
        "lowbit/rtl/__init__.py": "",
        "lowbit/rtl/synth.py": "from ..sim import core\nfrom lowbit.cost.report import x\nREF = 'lowbit.sim.core:f'\n",
        "lowbit/rtl/resolve.py": "import importlib\nT = ['lowbit.sim.names', 'lowbit.cost.report:x']\n"
                                 "def get(s):\n    return importlib.import_module(s)\n",
        "lowbit/models/__init__.py": "",
        "lowbit/models/net.py": "from lowbit.rtl.synth import REF\nimport lowbit.cli\n",
        "lowbit/cost/__init__.py": "",
        "lowbit/cost/report.py": "from lowbit.models import net\nfrom lowbit import cli\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert violations(tmp_path) == [
        ("lowbit.cost.report", "lowbit.cli"),
        ("lowbit.models.net", "lowbit.cli"),
        ("lowbit.models.net", "lowbit.rtl.synth"),
        ("lowbit.rtl.resolve", "lowbit.cost.report"),
        ("lowbit.rtl.synth", "lowbit.cost.report"),
        ("lowbit.sim.core", "lowbit.rtl.synth"),
        ("lowbit.sim.other", "lowbit.models.net"),
    ]
