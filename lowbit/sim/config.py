"""Hardware description of a lowbit accelerator: typed, validated, loaded from TOML.

One `HwConfig` drives the simulator's timing models, the RTL generators and the energy/area model,
so that every layer describes the same hardware. Presets live in `sim/presets/*.toml`; every number
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

from lowbit.sim.errors import ConfigError, did_you_mean

PRESET_DIR = Path(__file__).parent / "presets"


# ----------------------------------------------------------------------------- unit sections


@dataclass(frozen=True)
class TintConfig:
    """TINT core(s): multiplier-free ternary x INT8 dot-product lanes (docs/reference/vitallm.md §5.2).

    Per cycle each of `lanes` lanes of each core takes `tree_width` (ternary code, INT8 act) pairs,
    selects +a/-a/0 and reduces them in an adder tree into an `acc_bits` accumulator.
    """

    cores: int = 2
    lanes: int = 8
    tree_width: int = 12
    acc_bits: int = 24
    weight_packing: Literal["2bit", "5trit"] = "2bit"
    zero_skip: bool = False

    @property
    def macs_per_cycle(self) -> int:
        return self.cores * self.lanes * self.tree_width


@dataclass(frozen=True)
class BoothConfig:
    """BoothFlex core: `lanes` x `width` radix-4 Booth units sharing one compressor tree per lane.

    INT8 mode: one INT8xINT8 product per unit per cycle. Ternary mode (docs/reference/vitallm.md §5.3, design
    hypothesis): each unit's 4 partial-product rows take 4 independent ternary x INT8 pairs.
    `bit_serial` selects BoothFlex-BS (one Booth digit per cycle; cycles scale with precision).
    """

    lanes: int = 4
    width: int = 4
    acc_bits: int = 24
    ternary_mode: bool = True
    bit_serial: bool = False
    precisions: tuple[int, ...] = (2, 4, 8)

    @property
    def int8_macs_per_cycle(self) -> int:
        return self.lanes * self.width

    @property
    def ternary_macs_per_cycle(self) -> int:
        return 4 * self.lanes * self.width if self.ternary_mode else 0


@dataclass(frozen=True)
class Fp4Config:
    """FP4 core: W4A8 block dot products (MXFP4: 32-element E8M0 blocks; NVFP4: 16-element E4M3)."""

    enabled: bool = False
    format: Literal["nvfp4", "mxfp4"] = "nvfp4"
    lanes: int = 8
    elems_per_cycle: int = 32
    block_sum_bits: int = 16
    frac_bits: int = 8
    acc_bits: int = 32

    @property
    def block(self) -> int:
        return 16 if self.format == "nvfp4" else 32

    @property
    def macs_per_cycle(self) -> int:
        return self.lanes * self.elems_per_cycle if self.enabled else 0


@dataclass(frozen=True)
class LopConfig:
    """Leading-one prediction: LO surrogate scores over M cached keys + comparison-free top-K."""

    enabled: bool = True
    k: int = 64
    lanes: int = 8
    width: int = 32
    exp_bits: int = 3
    score_bits: int = 24
    buckets: int = 63
    surrogate_storage: Literal["dram", "sram"] = "dram"


@dataclass(frozen=True)
class SfuConfig:
    """Special-function unit: `lanes` elements per cycle plus a fixed pipeline latency per op."""

    lanes: int = 16
    latency: dict[str, int] = field(
        default_factory=lambda: {
            "rmsnorm": 12, "softmax": 16, "rope": 8, "activation": 6,
            "elementwise": 2, "quantize": 6,
        }
    )

    def op_latency(self, op: str) -> int:
        if op not in self.latency:
            raise ConfigError(f"sfu.latency has no entry for op '{op}'; add `{op} = <cycles>` to [sfu.latency]")
        return self.latency[op]


SFU_OPS = ("rmsnorm", "softmax", "rope", "activation", "elementwise", "quantize")


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


@dataclass(frozen=True)
class HwConfig:
    """A whole accelerator. `units` lists which compute units exist (e.g. vitallm-fp4 has no TINT)."""

    name: str
    description: str = ""
    clock_hz: float = 1e9
    node_nm: float = 16.0
    supply_v: float = 0.8
    units: tuple[str, ...] = ("tint", "booth", "lop", "sfu")
    lm_head: Literal["host", "accelerator"] = "host"
    tint: TintConfig = field(default_factory=TintConfig)
    booth: BoothConfig = field(default_factory=BoothConfig)
    fp4: Fp4Config = field(default_factory=Fp4Config)
    lop: LopConfig = field(default_factory=LopConfig)
    sfu: SfuConfig = field(default_factory=SfuConfig)
    sram: tuple[SramBuffer, ...] = ()
    dram: DramConfig = field(default_factory=DramConfig)
    source: str = ""

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


KNOWN_UNITS = ("tint", "booth", "fp4", "lop", "sfu")


# ----------------------------------------------------------------------------- loading / validation


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_config(name_or_path: str | Path) -> HwConfig:
    """Load a preset by name (`vitallm`) or a TOML file path; raise ConfigError on any problem."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        preset = PRESET_DIR / f"{name_or_path}.toml"
        if not preset.exists():
            hint = did_you_mean(str(name_or_path), list_presets())
            raise ConfigError(
                f"unknown hardware preset '{name_or_path}'{hint}; available: {', '.join(list_presets())} "
                "(or pass a path to a .toml file)"
            )
        path = preset
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) TOML file") from None
    return from_dict(data, source=str(path))


def from_dict(data: dict[str, Any], source: str = "<dict>") -> HwConfig:
    """Build and validate an HwConfig from plain data (as parsed from TOML)."""
    if "name" not in data:
        raise ConfigError(f"{source}: missing required field 'name' (add `name = \"my-design\"` at the top)")
    cfg = _build(HwConfig, data, source, "")
    for op in cfg.sfu.latency:
        if op not in SFU_OPS:
            raise ConfigError(f"{source}: sfu.latency.{op}: unknown op{did_you_mean(op, SFU_OPS)}; allowed: {', '.join(SFU_OPS)}")
    # A partial [sfu.latency] table overrides only the ops it names.
    latency = {**SfuConfig().latency, **cfg.sfu.latency}
    cfg = dataclasses.replace(cfg, source=source, sfu=dataclasses.replace(cfg.sfu, latency=latency))
    _check_semantics(cfg, source)
    return cfg


def to_dict(cfg: Any) -> Any:
    """Plain-data form of a config (TOML/JSON friendly)."""
    if dataclasses.is_dataclass(cfg):
        # `source` records where a config came from; it is not part of the hardware description.
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.name != "source"}
    if isinstance(cfg, tuple):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def _where(source: str, path: str) -> str:
    return f"{source}: {path}" if path else source


def _build(cls: type, data: Any, source: str, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{_where(source, path)} must be a table, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(
                f"{_where(source, path + key)}: unknown field{did_you_mean(key, fields)}; "
                f"allowed in {'[' + path.rstrip('.') + ']' if path else 'the top level'}: {', '.join(fields)}"
            )
        kwargs[key] = _coerce(hints[key], value, source, path + key)
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
        if not math.isfinite(value):
            raise ConfigError(f"{bad}: must be finite")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{bad}: must be a string")
        return value
    raise ConfigError(f"{bad}: unsupported type {_type_name(tp)}")


def _positive(source: str, path: str, value: float, minimum: float = 1) -> None:
    if value < minimum:
        raise ConfigError(f"{source}: {path} = {value!r}: must be >= {minimum}")


def _check_semantics(cfg: HwConfig, src: str) -> None:
    """Range and consistency checks the type system cannot express."""
    _positive(src, "clock_hz", cfg.clock_hz, 1e6)
    if not 3 <= cfg.node_nm <= 180:
        raise ConfigError(f"{src}: node_nm = {cfg.node_nm}: the area/energy scaling model covers 3..180 nm")
    for u in cfg.units:
        if u not in KNOWN_UNITS:
            raise ConfigError(f"{src}: units contains '{u}'{did_you_mean(u, KNOWN_UNITS)}; allowed: {', '.join(KNOWN_UNITS)}")
    if not (cfg.has("tint") or cfg.has("booth") or cfg.has("fp4")):
        raise ConfigError(f"{src}: units = {list(cfg.units)}: need at least one of tint, booth, fp4 for projections")
    if cfg.has("fp4") != cfg.fp4.enabled:
        raise ConfigError(f"{src}: fp4.enabled = {str(cfg.fp4.enabled).lower()} disagrees with units = {list(cfg.units)}; set both")
    for sec in ("tint", "booth", "fp4", "lop", "sfu"):
        obj = getattr(cfg, sec)
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if isinstance(v, int) and not isinstance(v, bool):
                _positive(src, f"{sec}.{f.name}", v)
    for name, bits in (("tint.acc_bits", cfg.tint.acc_bits), ("booth.acc_bits", cfg.booth.acc_bits),
                       ("fp4.acc_bits", cfg.fp4.acc_bits), ("lop.score_bits", cfg.lop.score_bits)):
        if not 8 <= bits <= 64:
            raise ConfigError(f"{src}: {name} = {bits}: must be in 8..64")
    for p in cfg.booth.precisions:
        if p not in (2, 4, 8):
            raise ConfigError(f"{src}: booth.precisions contains {p}: allowed 2, 4, 8")
    if cfg.fp4.elems_per_cycle % cfg.fp4.block and cfg.fp4.block % cfg.fp4.elems_per_cycle:
        raise ConfigError(
            f"{src}: fp4.elems_per_cycle = {cfg.fp4.elems_per_cycle}: must divide or be a multiple of the "
            f"{cfg.fp4.format} block size {cfg.fp4.block}"
        )
    if cfg.lop.buckets < 3 or cfg.lop.buckets % 2 == 0:
        # offset-binary signed leading-one buckets (sim.numerics.lop.lop_bucket): 2*L + 1 of them
        raise ConfigError(f"{src}: lop.buckets = {cfg.lop.buckets}: must be odd and >= 3 (2 x magnitudes + 1)")
    for op, lat in cfg.sfu.latency.items():
        if lat < 0:
            raise ConfigError(f"{src}: sfu.latency.{op} = {lat}: must be >= 0")
    seen = set()
    for i, b in enumerate(cfg.sram):
        if b.name in seen:
            raise ConfigError(f"{src}: sram[{i}].name = '{b.name}': duplicate buffer name")
        seen.add(b.name)
        for f in ("bytes", "banks", "ports"):
            _positive(src, f"sram[{i}].{f}", getattr(b, f))
    d = cfg.dram
    for f in ("channels", "bus_bits", "data_rate_mtps", "banks", "row_bytes", "burst_length"):
        _positive(src, f"dram.{f}", getattr(d, f))
    for f in ("tRCD_ns", "tRP_ns", "tCL_ns", "tRAS_ns", "tRFC_ns", "tREFI_ns", "latency_ns"):
        if getattr(d, f) < 0:
            raise ConfigError(f"{src}: dram.{f} = {getattr(d, f)}: must be >= 0")
    if not 0 < d.efficiency <= 1:
        raise ConfigError(f"{src}: dram.efficiency = {d.efficiency}: must be in (0, 1]")
    if d.tREFI_ns and d.tRFC_ns >= d.tREFI_ns:
        raise ConfigError(f"{src}: dram.tRFC_ns = {d.tRFC_ns} must be smaller than tREFI_ns = {d.tREFI_ns}")
