"""The unit catalogue: every unit of a lowbit accelerator, declared once.

An entry says, for one unit: its config section (the `[name]` TOML table and `HwConfig.<name>`), the golden
numerics it computes (lowbit.sim.numerics), its tile timing formulas (lowbit.sim.units.<name>), which
projection weight formats it runs, the RTL blocks that realise it (generator, cocotb bench, the formulas
the bench checks) and its cost hooks (work per busy cycle, instances). Every other list of units derives
from here: config validation, the scheduler's unit classes and physical units, the lowering's choice of
unit, the RTL registry, synthesis instances and the energy model. docs/adding-a-unit.md walks through
adding one.

RTL objects are named as "module:attribute" strings because this catalogue belongs to the torch-free core,
which never imports the RTL layer; lowbit.rtl.registry resolves them. DMA queues and SRAM buffers are the
accelerator's shared resources; they are listed here too (`DMA_QUEUES`, `SRAM_BUFFERS`).

Order matters and is part of the description: the scheduler lists physical units in catalogue order and
breaks ties between equally fast units by that order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lowbit.sim.errors import ConfigError, did_you_mean
from lowbit.sim.numerics.booth import booth_multiply, booth_serial_multiply, booth_ternary_dot
from lowbit.sim.numerics.fp4dot import fp4_block_dot
from lowbit.sim.numerics.lop import lo_scores, lop_topk
from lowbit.sim.numerics.sfu import sfu_absmax_quantize
from lowbit.sim.numerics.tint import tint_dot
from lowbit.sim.units.booth import (
    BoothConfig,
    booth_bs_tile_cycles,
    booth_int8_pass_cycles,
    booth_int8_tile_cycles,
    booth_ternary_tile_cycles,
)
from lowbit.sim.units.fp4 import Fp4Config, fp4_tile_cycles
from lowbit.sim.units.lop import LopConfig, lop_score_cycles, lop_topk_cycles
from lowbit.sim.units.sfu import SFU_PASSES, SfuConfig, sfu_cycles
from lowbit.sim.units.tint import TintConfig, tint_tile_cycles

Section = Any  # a unit's config section (a frozen dataclass)


def _one(section: Section) -> int:
    return 1


def _always(section: Section) -> bool:
    return True


@dataclass(frozen=True, kw_only=True)
class RtlBlock:
    """One generated RTL block realising (part of) a unit; `component(section)` builds it."""

    name: str                                   # `lowbit rtl --unit NAME`
    component: str                              # "module:Class" of an Amaranth wiring.Component
    validator: str                              # "module:function", raises LowbitError on parameters it can't build
    bench: str                                  # cocotb test module (RTL vs golden numerics, cycles vs formulas)
    cycles: tuple[Callable[..., int], ...]      # the timing formulas the bench checks cycle-exactly
    formula: str                                # the same formulas as text, for manifest.json
    params: tuple[str, ...]                     # section fields the RTL depends on
    rates: Callable[[Section], dict[str, float]]  # cost hook: work per busy cycle, all instances together
    instances: Callable[[Section], int] = _one  # copies a design instantiates (cost hook)
    selected: Callable[[Section], bool] = _always  # whether these section parameters are built by this block
    scope: str = ""                             # what the RTL covers where it is less than the simulated unit


@dataclass(frozen=True, kw_only=True)
class Unit:
    """One compute unit: config section, numerics, timing, RTL and cost hooks (module docstring)."""

    name: str                                   # in HwConfig.units, the TOML section and the scheduler
    config: type                                # the section dataclass; must define check(self, at)
    summary: str
    golden: tuple[Callable[..., Any], ...]      # golden-model functions whose results the unit produces
    work: tuple[str, ...]                       # activity counters (WORK) its tiles add to
    replicas: Callable[[Section], int] | None = None  # replicated units: physical copies name0, name1, ...
    formats: tuple[str, ...] = ()               # projection weight formats it can be built to run
    runs: Callable[[Section, str], bool] | None = None  # ... and whether these parameters run `fmt`
    lanes: Callable[[Section], int] | None = None     # output rows per pass of a projection tile
    align: Callable[[Section], int] = _one      # granularity of a tile's input width (FP4: the scale block)
    tile_cycles: Callable[[Section, str, int, int], int] | None = None  # (section, fmt, k, passes) -> cycles
    # INT8 tiles of ragged passes (causal score.V): (section, [(k, passes), ...]) -> cycles; without it a
    # tile runs every pass at its longest k (sim.attention)
    pass_cycles: Callable[[Section, list[tuple[int, int]]], int] | None = None
    rtl: tuple[RtlBlock, ...] = ()

    def copies(self, section: Section) -> int:
        return self.replicas(section) if self.replicas else 1

    def can_run(self, section: Section, fmt: str) -> bool:
        """Whether a unit with these parameters computes projection tiles of `fmt` weights."""
        return fmt in self.formats and (self.runs is None or self.runs(section, fmt))


@dataclass(frozen=True)
class Resource:
    """A shared resource the scheduler models: a DMA queue or a logical SRAM buffer."""

    name: str
    summary: str


def _booth_rates(b: BoothConfig) -> dict[str, float]:
    return {"int8_macs": b.int8_macs_per_cycle, **({"ternary_macs": b.ternary_macs_per_cycle} if b.ternary_mode else {})}


def _booth_bs_rates(b: BoothConfig) -> dict[str, float]:
    # one radix-4 digit per cycle: INT8 = 4 digits, ternary = 1 digit (docs/reference/vitallm.md §5.6)
    return {"int8_macs": b.lanes * b.width / 4, **({"ternary_macs": b.lanes * b.width} if b.ternary_mode else {})}


def _booth_runs(b: BoothConfig, fmt: str) -> bool:
    return fmt == "int8" or b.ternary_mode


def _booth_cycles(b: BoothConfig, fmt: str, k: int, passes: int) -> int:
    return (booth_int8_tile_cycles if fmt == "int8" else booth_ternary_tile_cycles)(b, k, passes)


def _lop_rates(c: LopConfig) -> dict[str, float]:
    return {"lop_elems": c.lanes * c.width}  # score and top-K both run while the LOP unit is busy


TINT = Unit(
    name="tint", config=TintConfig, golden=(tint_dot,), work=("ternary_macs",),
    summary="multiplier-free ternary x INT8 adder-tree lanes (docs/reference/vitallm.md §5.2)",
    replicas=lambda c: c.cores, formats=("ternary",), lanes=lambda c: c.lanes,
    tile_cycles=lambda c, fmt, k, passes: tint_tile_cycles(c, k, passes),
    rtl=(RtlBlock(
        name="tint", component="lowbit.rtl.tint:TintCore", validator="lowbit.rtl.tint:validate",
        bench="lowbit.rtl.bench.tint_bench", cycles=(tint_tile_cycles,),
        formula="passes*ceil(k/tree_width) + clog2(tree_width) + 2",
        params=("lanes", "tree_width", "acc_bits"),
        rates=lambda c: {"ternary_macs": c.macs_per_cycle}, instances=lambda c: c.cores,
    ),),
)

BOOTH = Unit(
    name="booth", config=BoothConfig, golden=(booth_multiply, booth_ternary_dot, booth_serial_multiply),
    work=("int8_macs", "ternary_macs"),
    summary="BoothFlex radix-4 Booth core, INT8 and ternary modes; BoothFlex-BS when bit_serial "
            "(docs/reference/vitallm.md §5.3, §5.6)",
    formats=("int8", "ternary"), runs=_booth_runs, lanes=lambda c: c.lanes, tile_cycles=_booth_cycles,
    pass_cycles=booth_int8_pass_cycles,
    rtl=(
        RtlBlock(
            name="booth", component="lowbit.rtl.booth:BoothFlex", validator="lowbit.rtl.booth:validate",
            bench="lowbit.rtl.bench.booth_bench", cycles=(booth_int8_tile_cycles, booth_ternary_tile_cycles),
            formula="int8: passes*ceil(k/width) + clog2(4*width) + 2; "
                    "ternary: passes*ceil(k/(4*width)) + clog2(4*width) + 2",
            params=("lanes", "width", "acc_bits", "ternary_mode"), rates=_booth_rates,
            selected=lambda c: not c.bit_serial,
        ),
        RtlBlock(
            name="booth_bs", component="lowbit.rtl.booth_bs:BoothFlexBS", validator="lowbit.rtl.booth_bs:validate",
            bench="lowbit.rtl.bench.booth_bs_bench", cycles=(booth_bs_tile_cycles,),
            formula="passes*ceil(k/width)*digits(bits) + clog2(width) + 2, digits = bits/2 (ternary: 1)",
            params=("lanes", "width", "acc_bits", "ternary_mode", "precisions"), rates=_booth_bs_rates,
            selected=lambda c: c.bit_serial,
        ),
    ),
)

FP4 = Unit(
    name="fp4", config=Fp4Config, golden=(fp4_block_dot,), work=("fp4_macs",),
    summary="FP4 core: W4A8 NVFP4/MXFP4 block dot products (docs/reference/numerics.md §2, §3)",
    formats=("nvfp4", "mxfp4"), runs=lambda c, fmt: fmt == c.format, lanes=lambda c: c.lanes,
    align=lambda c: c.block,
    tile_cycles=lambda c, fmt, k, passes: fp4_tile_cycles(c, k, passes),
    rtl=(RtlBlock(
        name="fp4", component="lowbit.rtl.fp4:Fp4Core", validator="lowbit.rtl.fp4:validate",
        bench="lowbit.rtl.bench.fp4_bench", cycles=(fp4_tile_cycles,),
        formula="passes*ceil(k/elems_per_cycle) + clog2(elems_per_cycle) + 3",
        params=("format", "lanes", "elems_per_cycle", "block_sum_bits", "frac_bits", "acc_bits"),
        rates=lambda c: {"fp4_macs": c.macs_per_cycle},
    ),),
)

LOP = Unit(
    name="lop", config=LopConfig, golden=(lo_scores, lop_topk), work=("lop_elems",),
    summary="leading-one prediction: LO surrogate scores + comparison-free top-K (docs/reference/vitallm.md §5.4)",
    rtl=(
        RtlBlock(
            name="lop_score", component="lowbit.rtl.lop:LopScore", validator="lowbit.rtl.lop:validate",
            bench="lowbit.rtl.bench.lop_bench", cycles=(lop_score_cycles,),
            formula="ceil(M/lanes)*ceil(d/width) + clog2(width) + 2",
            params=("lanes", "width", "exp_bits", "score_bits"), rates=_lop_rates,
        ),
        RtlBlock(
            name="lop_topk", component="lowbit.rtl.lop:LopTopK", validator="lowbit.rtl.lop:validate",
            bench="lowbit.rtl.bench.lop_bench", cycles=(lop_topk_cycles,),
            formula="2*ceil(M/lanes) + buckets + 2", params=("lanes", "score_bits", "buckets", "k"),
            rates=_lop_rates,
            scope="charged for every LOP busy cycle together with lop_score (both run while LOP is busy)",
        ),
    ),
)

SFU = Unit(
    name="sfu", config=SfuConfig, golden=(sfu_absmax_quantize,), work=("sfu_elems",),
    summary="special-function unit: RMSNorm, softmax, RoPE, activation, elementwise, absmax quantize",
    rtl=(RtlBlock(
        name="sfu", component="lowbit.rtl.sfu:SfuQuantize", validator="lowbit.rtl.sfu:validate",
        bench="lowbit.rtl.bench.sfu_bench", cycles=(sfu_cycles,),
        formula="quantize: rows*(2*ceil(dim/lanes) + D_recip) + latency.quantize, "
                "D_recip = ceil((in_bits + 9) / 2) = 17 (reciprocal divider stall per row)",
        params=("lanes", "latency"), rates=lambda c: {"sfu_elems": c.lanes},
        scope="RTL = absmax INT8 quantizer (rtl/sfu.py, restoring divider for the reciprocal); the RMSNorm, softmax, "
              "RoPE and activation datapaths are separate blocks (sfu_rmsnorm, sfu_softmax, sfu_rope, sfu_act) "
              "not yet in the cost model; all SFU busy cycles are charged at this energy",
    ), *(RtlBlock(
        name=f"sfu_{op}", component=f"lowbit.rtl.sfu_{op}:{cls}", validator=f"lowbit.rtl.sfu_{op}:validate",
        bench=f"lowbit.rtl.bench.sfu_{op}_bench", cycles=(sfu_cycles,),
        formula=f"{name}: rows*{SFU_PASSES[name]}*ceil(dim/lanes) + latency.{name}",
        params=("lanes", "latency"), rates=lambda c: {"sfu_elems": c.lanes},
        # built, verified and synthesised by name (`--unit sfu_rmsnorm`), but not yet part of a design's
        # synthesis and energy: the energy model charges every block of a unit for all of its busy cycles,
        # while the SFU runs one op at a time
        selected=lambda c: False,
        scope=f"SFU {name} datapath (rtl/sfu_{op}.py)",
    ) for op, name, cls in (("rmsnorm", "rmsnorm", "SfuRmsNorm"), ("softmax", "softmax", "SfuSoftmax"),
                            ("rope", "rope", "SfuRope"),
                            ("act", "activation", "SfuAct"))),
    ),
)

UNITS: dict[str, Unit] = {u.name: u for u in (TINT, BOOTH, FP4, LOP, SFU)}

# Kinds of work the simulator counts (SimResult.activity); a unit's tiles add to some of them.
WORK = ("ternary_macs", "int8_macs", "fp4_macs", "lop_elems", "sfu_elems")

DMA_QUEUES = (
    Resource("dma_w", "weights and activations DMA queue"),
    Resource("dma_kv", "KV cache and LO-code DMA queue"),
)
SRAM_BUFFERS = (
    Resource("weight", "weight tiles, split among the units that consume them"),
    Resource("act", "activations of the current layer (decode) or token chunk (prefill)"),
    Resource("kv", "K/V chunks of one KV head"),
    Resource("lop", "LO codes being scored"),
    Resource("psum", "partial sums and attention scores (4 B each)"),
    Resource("sfu", "SFU working rows"),
)


def register(unit: Unit) -> Unit:
    """Add a unit to the catalogue (appended: the classes and order of existing units do not change)."""
    if unit.name in UNITS or unit.name in {r.name for r in DMA_QUEUES}:
        raise ConfigError(f"unit '{unit.name}' is already in the catalogue")
    if not callable(getattr(unit.config, "check", None)):
        raise ConfigError(f"unit '{unit.name}': its config section {unit.config.__name__} needs check(self, at)")
    if not set(unit.work) <= set(WORK):
        raise ConfigError(f"unit '{unit.name}': work {unit.work} must be among {', '.join(WORK)}")
    if unit.formats and (unit.lanes is None or unit.tile_cycles is None):
        raise ConfigError(f"unit '{unit.name}' runs {', '.join(unit.formats)} weights: it needs lanes and tile_cycles")
    UNITS[unit.name] = unit
    return unit


def get(name: str) -> Unit:
    if name not in UNITS:
        raise ConfigError(f"unknown unit '{name}'{did_you_mean(name, UNITS)}; catalogue: {', '.join(UNITS)}")
    return UNITS[name]


def rtl_blocks() -> dict[str, tuple[Unit, RtlBlock]]:
    """Every RTL block by name, with the unit it belongs to."""
    return {b.name: (u, b) for u in UNITS.values() for b in u.rtl}
