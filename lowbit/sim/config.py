"""Hardware description of a lowbit accelerator: typed, validated, loaded from TOML.

One `HwConfig` drives the simulator's timing models, the RTL generators and the energy/area model,
so that every layer describes the same hardware. Presets live in `lowbit/sim/presets/*.toml`; every number
in them is either cited from the VitaLLM papers (docs/reference/vitallm.md) or marked as a
design assumption with its reasoning.

Validation rule: a bad config never produces a traceback; `load_config` raises `ConfigError` with a
one-line message naming the file, the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lowbit.sim.config_check import check_semantics
from lowbit.sim.errors import ConfigError, did_you_mean
from lowbit.sim.link import LinkConfig
from lowbit.sim.units import catalog
from lowbit.sim.units.booth import BoothConfig
from lowbit.sim.units.fp4 import Fp4Config
from lowbit.sim.units.lop import LopConfig
from lowbit.sim.units.sfu import SfuConfig
from lowbit.sim.units.tint import TintConfig

PRESET_DIR = Path(__file__).parent / "presets"

# The compute units' sections live with their unit (lowbit.sim.units.<name>) and are declared in the unit
# catalogue; they are re-exported here so that everything a config holds can be imported from one module.
__all__ = ["HwConfig", "SramBuffer", "DramConfig", "LinkConfig", "TintConfig", "BoothConfig", "Fp4Config", "LopConfig",
           "SfuConfig", "load_config", "load_hw", "apply_sets", "from_dict", "to_dict", "list_presets", "PRESET_DIR"]


# ----------------------------------------------------------------------------- shared resources


@dataclass(frozen=True)
class SramBuffer:
    """One on-chip SRAM buffer. `double_buffered` halves the capacity usable by one tile."""

    name: str
    bytes: int
    banks: int = 1
    ports: int = 1
    double_buffered: bool = True

    @property
    def tile_bytes(self) -> int:
        return self.bytes // 2 if self.double_buffered else self.bytes


@dataclass(frozen=True)
class DramConfig:
    """Off-chip DRAM. `model = "lpddr"` runs the bank/row-buffer timing model; `"simple"` uses
    `bandwidth = channels * bus_bits/8 * data_rate * efficiency` plus a fixed `latency_ns`.
    Timing values are datasheet numbers cited in each preset."""

    model: Literal["lpddr", "simple"] = "lpddr"
    type: Literal["LPDDR4X", "LPDDR5", "LPDDR5X"] = "LPDDR5X"
    channels: int = 4
    bus_bits: int = 16
    data_rate_mtps: int = 8533
    banks: int = 16
    row_bytes: int = 2048
    burst_length: int = 16
    tRCD_ns: float = 18.0
    tRP_ns: float = 18.0
    tCL_ns: float = 17.0
    tRAS_ns: float = 42.0
    tRFC_ns: float = 280.0
    tREFI_ns: float = 3906.0
    latency_ns: float = 60.0
    efficiency: float = 0.9
    energy_pj_per_bit: float = 4.0

    @property
    def peak_bytes_per_s(self) -> float:
        return self.channels * self.bus_bits / 8 * self.data_rate_mtps * 1e6

    @property
    def burst_bytes(self) -> int:
        return self.bus_bits * self.burst_length // 8


@dataclass(frozen=True, kw_only=True)
class HwConfig:
    """A whole accelerator. `units` lists which compute units exist (e.g. vitallm-fp4 has no TINT).

    `lm_head`: "host" leaves the vocabulary projection to the host (excluded from the accelerator's time);
    "ternary", "int8", "nvfp4" or "mxfp4" run it on the chip with weights in that format (sim.lower).
    `link`: the chip-to-chip link of a multi-chip system (lowbit.sim.link; unused by one chip).

    `sections` holds one config section per catalogued unit (lowbit.sim.units.catalog), present or not, so
    that a design can be changed by listing a unit; `cfg.tint`, `cfg.booth`, ... read them."""

    name: str
    description: str = ""
    clock_hz: float = 1e9
    node_nm: float = 16.0
    supply_v: float = 0.8
    units: tuple[str, ...] = ("tint", "booth", "lop", "sfu")
    lm_head: Literal["host", "ternary", "int8", "nvfp4", "mxfp4"] = "host"
    sections: dict[str, Any] = field(default_factory=dict)
    sram: tuple[SramBuffer, ...] = ()
    dram: DramConfig = field(default_factory=DramConfig)
    link: LinkConfig = field(default_factory=LinkConfig)
    source: str = ""

    if typing.TYPE_CHECKING:  # the built-in units' sections, for readers and type checkers
        tint: TintConfig
        booth: BoothConfig
        fp4: Fp4Config
        lop: LopConfig
        sfu: SfuConfig

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(f"HwConfig has no field or unit section '{name}'")

    def section(self, unit: str) -> Any:
        """The config section of a catalogued unit (its defaults when the TOML has no such table)."""
        if unit not in self.sections:
            catalog.get(unit)  # raises with the catalogue's names
        return self.sections[unit]

    def buffer(self, name: str) -> SramBuffer:
        for b in self.sram:
            if b.name == name:
                return b
        names = ", ".join(b.name for b in self.sram) or "none"
        raise ConfigError(f"{self.name}: no SRAM buffer named '{name}' (have: {names}); add a [[sram]] entry")

    @property
    def sram_bytes(self) -> int:
        return sum(b.bytes for b in self.sram)

    def has(self, unit: str) -> bool:
        return unit in self.units

    def replace(self, **changes: Any) -> HwConfig:
        """A copy with top-level or dotted changes, e.g. replace(**{"lop.k": 32}); re-validated."""
        data = to_dict(self)
        for key, value in changes.items():
            node = data
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
        return from_dict(data, source=self.source)





# ----------------------------------------------------------------------------- loading / validation


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_config(name_or_path: str | Path) -> HwConfig:
    """Load a preset by name (`vitallm`) or a TOML file path; raise ConfigError on any problem.

    Inheritance: a file may say `extends = "NAME|PATH"` (a preset, or a path relative to the file) and give
    only what differs. Tables merge key by key (recursively); arrays, [[sram]] included, replace the base's
    array whole; `name` defaults to the file's stem. Chains are allowed, cycles are refused. A file without
    `extends` must be complete (`REQUIRED`): a missing part is an error naming it, never a silent default."""
    path = _config_path(name_or_path)
    data = _load_tree(path, ())
    _check_complete(data, str(path))
    return from_dict(data, source=str(path))


def load_hw(hw: str | Path, sets: list[str] | tuple[str, ...] = ()) -> HwConfig:
    """`--hw NAME|FILE` plus `--set section.field=value` overrides (applied in order, see `apply_sets`)."""
    cfg = load_config(hw)
    return apply_sets(cfg, sets) if sets else cfg


def apply_sets(cfg: HwConfig, sets: list[str] | tuple[str, ...]) -> HwConfig:
    """A copy of `cfg` with `section.field=value` overrides: `clock_hz=5e8`, `tint.lanes=8`,
    `sfu.latency.softmax=20`, `dram.type=LPDDR4X`, `units=tint,booth,lop,sfu` (or a TOML array), and SRAM
    buffers by name, `sram.kv.bytes=32768`. Each value is parsed as the type of the field it replaces (a
    string field takes the text as is); the resulting config is then validated as a whole, exactly like a
    file (some fields must change together, e.g. `units` and `fp4.enabled`)."""
    data = to_dict(cfg)
    for s in sets:
        set_field(data, s)
    new = from_dict(data, source="--set")
    return dataclasses.replace(new, source=cfg.source)


def set_field(data: dict[str, Any], s: str) -> None:
    """Apply one `section.field=value` to a config's plain data (`to_dict`) in place: the path and the
    value's type are checked here, the whole config by `from_dict` afterwards."""
    key, raw = parse_set(s)
    _apply_set(data, key, raw)


def parse_set(s: str) -> tuple[str, str]:
    """'section.field=value' -> (dotted key, value text)."""
    key, eq, raw = s.partition("=")
    if not eq or not key.strip():
        raise ConfigError(f"--set {s!r}: expected SECTION.FIELD=VALUE (e.g. --set tint.lanes=8)")
    return key.strip(), raw.strip()


# What a file without `extends` must name; everything else has the documented dataclass default.
REQUIRED = ("name", "clock_hz", "node_nm", "units", "a [<unit>] table for each unit listed in units",
            "one [[sram]] entry per buffer (" + ", ".join(r.name for r in catalog.SRAM_BUFFERS) + ")",
            "[dram] with model")


def _config_path(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    """A preset name (no .toml suffix) or a .toml path (relative to `relative_to` when given)."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        preset = PRESET_DIR / f"{name_or_path}.toml"
        if not preset.exists():
            hint = did_you_mean(str(name_or_path), list_presets())
            raise ConfigError(
                f"unknown hardware preset '{name_or_path}'{hint}; available: {', '.join(list_presets())} "
                "(or pass a path to a .toml file)"
            )
        return preset
    if relative_to is not None and not path.is_absolute():
        path = relative_to / path
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    return path


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) TOML file") from None


def _load_tree(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The file's data with its `extends` chain resolved (base first, then this file merged over it)."""
    data = _read_toml(path)
    if "extends" not in data:
        return data
    base = data.pop("extends")
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: extends = {base!r}: must be a preset name or a path to a .toml file")
    here = (*chain, path.resolve())
    try:
        base_path = _config_path(base, relative_to=path.parent)
    except ConfigError as e:
        raise ConfigError(f"{path}: extends = {base!r}: {e}") from None
    if base_path.resolve() in here:
        cycle = " -> ".join(p.name for p in (*here, base_path.resolve()))
        raise ConfigError(f"{path}: extends = {base!r} makes a cycle ({cycle}); remove one of the extends")
    merged = _merge(_load_tree(base_path, here), data)
    if "name" not in data:
        merged["name"] = path.stem
    return merged


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`: tables merge key by key, any other value (arrays too) replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _check_complete(data: dict[str, Any], source: str) -> None:
    """A file (after `extends`) must name everything in REQUIRED: partial files are errors, not defaults."""
    missing = [f for f in ("name", "clock_hz", "node_nm", "units") if f not in data]
    units = data.get("units") if isinstance(data.get("units"), list) else []
    missing += [f"[{u}]" for u in units if isinstance(u, str) and u in catalog.UNITS and u not in data]
    sram = data.get("sram") if isinstance(data.get("sram"), list) else []
    have = [b.get("name") for b in sram if isinstance(b, dict)]
    dup = len(have) != len(set(have))  # from_dict reports a duplicate name, the likelier mistake
    bufs = [] if dup else [r.name for r in catalog.SRAM_BUFFERS if r.name not in have]
    if bufs:
        missing.append("[[sram]] " + ", ".join(f"'{b}'" for b in bufs))
    if not isinstance(data.get("dram"), dict) or "model" not in data["dram"]:
        missing.append("[dram] model")
    if missing == ["name"]:
        return  # from_dict names it, with the line to add
    if missing:
        raise ConfigError(
            f"{source}: incomplete hardware config, missing {'; '.join(missing)}; write them, or start the file "
            'with extends = "vitallm" (a preset or a path) and give only what differs'
        )


def _apply_set(data: dict[str, Any], key: str, raw: str) -> None:
    """Replace the value at dotted `key` of a config's plain data with `raw` parsed as that value's type."""
    parts = key.split(".")
    node: Any = data
    where = ""
    if parts[0] == "sram":
        if len(parts) != 3:
            raise ConfigError(f"--set {key}={raw}: SRAM buffers are set by name: sram.<buffer>.<field>, "
                              "e.g. sram.kv.bytes=32768")
        names = [b["name"] for b in data["sram"]]
        if parts[1] not in names:
            raise ConfigError(f"--set {key}={raw}: no SRAM buffer named '{parts[1]}'{did_you_mean(parts[1], names)}; "
                              f"have: {', '.join(names)}")
        node, where, parts = data["sram"][names.index(parts[1])], f"sram.{parts[1]}.", parts[2:]
    for i, p in enumerate(parts):
        if not isinstance(node, dict) or p not in node:
            allowed = [k for k in node] if isinstance(node, dict) else []
            what = "field" if i == len(parts) - 1 else "section"
            raise ConfigError(f"--set {key}={raw}: unknown {what} '{where + p}'{did_you_mean(p, allowed)}; "
                              f"allowed in {where.rstrip('.') or 'the top level'}: {', '.join(allowed)}")
        if i < len(parts) - 1:
            node, where = node[p], f"{where}{p}."
    leaf, current = parts[-1], node[parts[-1]]
    if isinstance(current, dict):
        raise ConfigError(f"--set {key}={raw}: '{key}' is a table; set one of its fields ({', '.join(current)})")
    node[leaf] = _typed(raw, current, f"--set {key}={raw}")


def _toml_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return None


def _typed(raw: str, current: Any, where: str) -> Any:
    """`raw` parsed as the type of `current` (bool, int, float, str, or a list of them)."""
    if isinstance(current, list | tuple):
        parsed = _toml_value(raw) if raw.startswith("[") else None
        items = parsed if isinstance(parsed, list) else [x.strip() for x in raw.split(",") if x.strip()]
        like = current[0] if current else ""
        return [x if not isinstance(x, str) else _typed(x, like, where) for x in items]
    v = _toml_value(raw)
    if isinstance(current, bool):
        if not isinstance(v, bool):
            raise ConfigError(f"{where}: must be true or false")
        return v
    if isinstance(current, int):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{where}: must be an integer")
        return v
    if isinstance(current, float):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"{where}: must be a number")
        return float(v)
    return v if isinstance(v, str) else raw  # a string field takes the text itself (quotes optional)


def from_dict(data: dict[str, Any], source: str = "<dict>") -> HwConfig:
    """Build and validate an HwConfig from plain data (as parsed from TOML)."""
    if "name" not in data:
        raise ConfigError(f"{source}: missing required field 'name' (add `name = \"my-design\"` at the top)")
    data = dict(data)
    sections = {u.name: _build(u.config, data.pop(u.name), source, f"{u.name}.") if u.name in data else u.config()
                for u in catalog.UNITS.values()}
    top = _build(HwConfig, data, source, "", extra=tuple(catalog.UNITS))
    cfg = dataclasses.replace(top, sections=sections, source=source)
    check_semantics(cfg, source)
    return cfg


def to_dict(cfg: Any) -> Any:
    """Plain-data form of a config (TOML/JSON friendly)."""
    if isinstance(cfg, HwConfig):  # unit sections appear as top-level tables, as in TOML
        out = {}
        for f in _fields(HwConfig):
            if f == "sections":
                out.update({k: to_dict(v) for k, v in cfg.sections.items()})
            else:
                out[f] = to_dict(getattr(cfg, f))
        return out
    if dataclasses.is_dataclass(cfg):
        return {f: to_dict(getattr(cfg, f)) for f in _fields(type(cfg))}
    if isinstance(cfg, tuple):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def _where(source: str, path: str) -> str:
    return f"{source}: {path}" if path else source


def _fields(cls: type) -> list[str]:
    # `source` records where a config came from; it is not part of the hardware description.
    return [f.name for f in dataclasses.fields(cls) if f.name != "source"]


def _build(cls: type, data: Any, source: str, path: str, extra: tuple[str, ...] = ()) -> Any:
    """`cls(**data)` with every value type-checked; `extra` names tables handled by the caller (unit sections)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{_where(source, path)} must be a table, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = [f for f in _fields(cls) if f != "sections"]
    allowed = fields[:fields.index("sram")] + list(extra) + fields[fields.index("sram"):] if extra else fields
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(
                f"{_where(source, path + key)}: unknown field{did_you_mean(key, allowed)}; "
                f"allowed in {'[' + path.rstrip('.') + ']' if path else 'the top level'}: {', '.join(allowed)}"
            )
        kwargs[key] = _coerce(hints[key], value, source, path + key)
    for f in dataclasses.fields(cls):  # fields without a default (e.g. an [[sram]] entry's name and bytes)
        if f.init and f.name not in kwargs and f.default is dataclasses.MISSING \
                and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_where(source, path.rstrip('.'))}: missing required field '{f.name}'")
    return cls(**kwargs)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, source: str, path: str) -> Any:
    origin = typing.get_origin(tp)
    bad = f"{source}: {path} = {value!r}"
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{bad}: must be one of {', '.join(repr(a) for a in allowed)}{did_you_mean(str(value), map(str, allowed))}")
        return value
    if origin in (tuple,):
        (inner, *_rest) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{bad}: must be a list")
        return tuple(_coerce(inner, v, source, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        _k, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{bad}: must be a table")
        return {k: _coerce(vt, v, source, f"{path}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{bad}: unsupported union type")  # not used in the schema
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, source, path + ".")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{bad}: must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{bad}: must be an integer (got {type(value).__name__})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{bad}: must be a number (got {type(value).__name__})")
        if isinstance(value, int) and abs(value) > 2**1023:  # beyond float64: float() would overflow
            raise ConfigError(f"{bad}: too large")
        if not math.isfinite(value):
            raise ConfigError(f"{bad}: must be finite")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{bad}: must be a string")
        return value
    raise ConfigError(f"{bad}: unsupported type {_type_name(tp)}")
