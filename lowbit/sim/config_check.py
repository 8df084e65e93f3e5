"""Semantic checks of a hardware config: physical ranges (each with its unit) and cross-field consistency.

Every bound is finite, so a config that passes keeps the simulator's cycle and byte arithmetic far inside int64
(lowbit.sim.schema). Applied by lowbit.sim.config.from_dict after the types are checked.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from lowbit.sim.errors import ConfigError, did_you_mean
from lowbit.sim.link import LINK_RANGES
from lowbit.sim.schema import Range
from lowbit.sim.units import catalog

if TYPE_CHECKING:
    from lowbit.sim.config import DramConfig, HwConfig

# Physical ranges of the top-level, [[sram]] and [dram] fields (unit: the field's own). Every bound is finite,
# so a config that passes keeps the simulator's cycle and byte arithmetic far inside int64 (lowbit.sim.schema).
TOP_RANGES = {
    "clock_hz": Range(1e6, 1e11, "Hz", why="1 MHz..100 GHz"),
    "node_nm": Range(3, 180, "nm", why="the area/energy scaling model covers 3..180 nm"),
    "supply_v": Range(0.3, 1.8, "V", why="the energy scaling is used between near-threshold 0.3 V and the "
                      "1.8 V of 130 nm-class libraries"),
}
SRAM_RANGES = {
    "bytes": Range(1, 2**30, "bytes", integer=True, why="on-chip SRAM of up to 1 GiB per buffer"),
    "banks": Range(1, 1024, "banks", integer=True),
    "ports": Range(1, 8, "ports", integer=True),
}
_NS = Range(0, 1e6, "ns", why="DRAM timings are ns to µs; 1 ms bounds the cycle arithmetic")
DRAM_RANGES = {
    "channels": Range(1, 64, "channels", integer=True),
    "bus_bits": Range(8, 1024, "bits", integer=True),
    "data_rate_mtps": Range(1, 100_000, "MT/s", integer=True),
    "banks": Range(1, 1024, "banks", integer=True),
    "row_bytes": Range(1, 2**20, "bytes", integer=True),
    "burst_length": Range(1, 1024, "beats", integer=True),
    "tRCD_ns": _NS, "tRP_ns": _NS, "tCL_ns": _NS, "tRAS_ns": _NS, "tRFC_ns": _NS, "latency_ns": _NS,
    "efficiency": Range(0, 1, lo_open=True),
    "energy_pj_per_bit": Range(0, 1000, "pJ/bit"),
}
TREFI_NS = Range(100, 1e9, "ns", why="all-bank refresh interval (JEDEC: a few µs); 0 disables refresh")
# Integer parameters of a unit section (lanes, widths, latencies...): positive and at most 2^16; replicated units
# (e.g. TINT cores) at most MAX_REPLICAS physical copies (the scheduler visits every copy for every tile).
SECTION_INT = Range(1, 2**16, integer=True)
MAX_REPLICAS = 64


def check_semantics(cfg: HwConfig, src: str) -> None:
    """Physical ranges (schema.Range, each with its unit) and cross-field consistency the types cannot express."""
    for f, rng in TOP_RANGES.items():
        rng.check(getattr(cfg, f), src, f)
    known = tuple(catalog.UNITS)
    for u in cfg.units:
        if u not in known:
            raise ConfigError(f"{src}: units contains '{u}'{did_you_mean(u, known)}; allowed: {', '.join(known)}")
    projection = [u.name for u in catalog.UNITS.values() if u.formats]
    if not any(cfg.has(u) for u in projection):
        raise ConfigError(f"{src}: units = {list(cfg.units)}: need at least one of {', '.join(projection)} for projections")
    if cfg.has("fp4") != cfg.fp4.enabled:
        raise ConfigError(f"{src}: fp4.enabled = {str(cfg.fp4.enabled).lower()} disagrees with units = {list(cfg.units)}; set both")
    for name, sec in cfg.sections.items():
        for f in dataclasses.fields(sec):
            v = getattr(sec, f.name)
            if isinstance(v, int) and not isinstance(v, bool):
                SECTION_INT.check(v, src, f"{name}.{f.name}")
            elif isinstance(v, dict):
                for k, x in v.items():
                    if isinstance(x, int) and not isinstance(x, bool) and x > SECTION_INT.hi:
                        SECTION_INT.check(x, src, f"{name}.{f.name}.{k}")
    for sec in cfg.sections.values():
        sec.check(src)
    for u in catalog.UNITS.values():
        if u.replicas is not None and cfg.has(u.name) and u.copies(cfg.section(u.name)) > MAX_REPLICAS:
            raise ConfigError(f"{src}: {u.name}: {u.copies(cfg.section(u.name))} physical copies; at most "
                              f"{MAX_REPLICAS} (the scheduler considers every copy for every tile)")
    _check_sram(cfg, src)
    _check_dram(cfg.dram, src)
    for f, rng in LINK_RANGES.items():
        rng.check(getattr(cfg.link, f), src, f"link.{f}")


def _check_sram(cfg: HwConfig, src: str) -> None:
    names = [b.name for b in catalog.SRAM_BUFFERS]
    seen = set()
    for i, b in enumerate(cfg.sram):
        if b.name not in names:
            raise ConfigError(f"{src}: sram[{i}].name = '{b.name}': unknown buffer{did_you_mean(b.name, names)}; "
                              f"allowed: {', '.join(names)}")
        if b.name in seen:
            raise ConfigError(f"{src}: sram[{i}].name = '{b.name}': duplicate buffer name")
        seen.add(b.name)
        for f, rng in SRAM_RANGES.items():
            rng.check(getattr(b, f), src, f"sram[{i}].{f}")


def _check_dram(d: DramConfig, src: str) -> None:
    for f, rng in DRAM_RANGES.items():
        rng.check(getattr(d, f), src, f"dram.{f}")
    if d.tREFI_ns != 0:
        TREFI_NS.check(d.tREFI_ns, src, "dram.tREFI_ns")
    if d.bus_bits % 8:
        raise ConfigError(f"{src}: dram.bus_bits = {d.bus_bits}: must be a multiple of 8 (whole bytes per beat)")
    if d.row_bytes % d.burst_bytes:
        raise ConfigError(f"{src}: dram.row_bytes = {d.row_bytes} must be a multiple of the burst size "
                          f"{d.burst_bytes} B (bus_bits/8 * burst_length)")
    if d.tREFI_ns and d.tRFC_ns >= d.tREFI_ns:
        raise ConfigError(f"{src}: dram.tRFC_ns = {d.tRFC_ns} must be smaller than tREFI_ns = {d.tREFI_ns}")
