"""The RTL view of the unit catalogue (lowbit.sim.units.catalog): one `RtlUnit` per RTL block.

The catalogue names each block's generator, validator and cocotb bench as "module:attribute" strings (the
torch-free core never imports this layer); this module resolves them. Nothing here imports amaranth or
cocotb at module level, so the CLI can list units without the [rtl] extra. To add a unit, see
docs/adding-a-unit.md: nothing in this file changes.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from lowbit.sim.errors import LowbitError
from lowbit.sim.units import catalog


@dataclass(frozen=True)
class RtlUnit:
    """One RTL block of a catalogued unit, with the names the RTL flow needs."""

    unit: catalog.Unit
    block: catalog.RtlBlock

    @property
    def name(self) -> str:
        return self.block.name

    @property
    def hw_unit(self) -> str:
        """The catalogued unit (HwConfig.units name, config section) this block belongs to."""
        return self.unit.name

    @property
    def component(self) -> str:
        return self.block.component

    @property
    def bench(self) -> str:
        return self.block.bench

    @property
    def params(self) -> tuple[str, ...]:
        return self.block.params

    @property
    def cycle_formula(self) -> str:
        return self.block.formula

    @property
    def cycle_functions(self) -> tuple[str, ...]:
        """The timing formulas the bench checks, as "module:function" (written to manifest.json)."""
        return tuple(f"{f.__module__}:{f.__qualname__}" for f in self.block.cycles)

    def section_cfg(self, cfg: Any) -> Any:
        return cfg.section(self.unit.name)

    def parameters(self, section_cfg: Any) -> dict[str, Any]:
        return {p: getattr(section_cfg, p) for p in self.block.params}

    def build(self, section_cfg: Any):
        return _resolve(self.block.component)(section_cfg)

    def validate(self, section_cfg: Any) -> None:
        _resolve(self.block.validator)(section_cfg)

    def instances(self, cfg: Any) -> int:
        return self.block.instances(self.section_cfg(cfg))

    def rates(self, cfg: Any) -> dict[str, float]:
        return self.block.rates(self.section_cfg(cfg))


def _resolve(path: str):
    mod, attr = path.split(":")
    return getattr(importlib.import_module(mod), attr)


class _Registry(Mapping[str, RtlUnit]):
    """RTL blocks by name, read from the catalogue on every access (units registered later included)."""

    def _all(self) -> dict[str, RtlUnit]:
        return {name: RtlUnit(u, b) for name, (u, b) in catalog.rtl_blocks().items()}

    def __getitem__(self, name: str) -> RtlUnit:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


UNITS: Mapping[str, RtlUnit] = _Registry()


def get_unit(name: str) -> RtlUnit:
    if name not in UNITS:
        raise LowbitError(f"unknown RTL unit '{name}'; available: {', '.join(UNITS)}")
    return UNITS[name]


def units_for(cfg: Any) -> list[str]:
    """RTL blocks a hardware config instantiates, in catalogue order (booth -> booth_bs when bit_serial)."""
    return [r.name for r in UNITS.values() if cfg.has(r.hw_unit) and r.block.selected(cfg.section(r.hw_unit))]
