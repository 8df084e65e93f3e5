"""Shared pieces of the SFU op datapaths (rtl/sfu_rmsnorm.py, sfu_softmax.py, sfu_rope.py, sfu_act.py): the
row/pass/beat sequencer, a ROM read, the leading-one detector and the output stage with latency padding.

Every SFU op follows the cycle convention of rtl/common.py: ``start`` with the tile parameters in cycle 0
(``beats`` = ceil(dim / lanes) per pass, ``rows``), then ``rows * passes * beats`` beats back to back (per row:
pass 0's beats, pass 1's, ...), one per cycle, no stalls; the last beat's result reaches the output register
``latency - 1`` edges after it is sampled, so ``done`` is high in cycle ``rows * passes * beats + latency`` =
sim.units.sfu.sfu_cycles. Where the op's fixed pipeline is shorter than the configured latency, delay
registers after the output stage make up the difference. ``ready`` rises in the cycle after the last beat.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Array, Const, Module, Mux, Signal, Value

from lowbit.rtl.common import COUNT_BITS, delay
from lowbit.sim.errors import LowbitError
from lowbit.sim.units.sfu import SFU_PASSES, SfuConfig


def validate_op(cfg: SfuConfig, op: str, min_latency: int, what: str, even_lanes: bool = False) -> None:
    """Reject parameters the op's datapath cannot realise (LowbitError naming the field)."""
    if cfg.lanes < 1 or (even_lanes and cfg.lanes % 2):
        raise LowbitError(f"sfu.lanes = {cfg.lanes}: the {op} datapath needs "
                          + ("an even number of lanes (rotate-half pairs)" if even_lanes else ">= 1 lanes"))
    lat = cfg.op_latency(op)
    if lat < min_latency:
        raise LowbitError(f"sfu.latency.{op} = {lat}: the fixed-point {op} pipeline needs >= {min_latency} cycles "
                          f"({what}); raise it")


@dataclass
class Beat:
    """Per-cycle state of the sequencer for the beat on the input ports (all combinational)."""

    valid: Value    # a beat of a started tile is on the ports this cycle
    ps: Value       # its pass index 0 .. passes-1
    first: Value    # first beat of its pass
    last: Value     # last beat of its pass
    final: Value    # last beat of the whole tile
    accept: Value   # a start is accepted this cycle (latch per-tile parameters)


def sequencer(m: Module, start: Value, beats: Value, rows: Value, ready: Value, passes: int) -> Beat:
    """Count beats / passes / rows of a tile; a start with zero beats or rows is ignored (no done)."""
    busy = Signal()
    beats_r = Signal(COUNT_BITS)
    rows_r = Signal(COUNT_BITS)
    beat = Signal(COUNT_BITS)
    row = Signal(COUNT_BITS)
    ps = Signal(range(max(2, passes)))
    m.d.comb += ready.eq(~busy)
    last = beat == beats_r - 1
    last_pass = ps == passes - 1
    last_row = row == rows_r - 1
    accept = Signal()
    m.d.comb += accept.eq(~busy & start & (beats != 0) & (rows != 0))
    with m.If(busy):
        with m.If(~last):
            m.d.sync += beat.eq(beat + 1)
        with m.Else():
            m.d.sync += beat.eq(0)
            with m.If(~last_pass):
                m.d.sync += ps.eq(ps + 1)
            with m.Else():
                m.d.sync += [ps.eq(0), row.eq(row + 1)]
                with m.If(last_row):
                    m.d.sync += busy.eq(0)
    with m.Elif(accept):
        m.d.sync += [busy.eq(1), beats_r.eq(beats), rows_r.eq(rows), beat.eq(0), row.eq(0), ps.eq(0)]
    return Beat(valid=busy, ps=ps, first=beat == 0, last=last, final=busy & last & last_pass & last_row,
                accept=accept)


def rom(values: tuple[int, ...], index: Value, width: int) -> Value:
    """Combinational table lookup (synthesises to a ROM / mux tree). Index values past the table read its last
    entry, so every index is covered (no incomplete case, no X)."""
    full = list(values) + [values[-1]] * ((1 << len(index)) - len(values))
    return Array(Const(v, width) for v in full)[index]


def sat(v: Value, bits: int, signed: bool = True) -> Value:
    """Saturate v to a ``bits``-bit signed (or unsigned, v >= 0) range."""
    hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    if not signed:
        return Mux(v > hi, hi, v)
    lo = -(1 << (bits - 1))
    return Mux(v > hi, hi, Mux(v < lo, lo, v))


def output_stage(m: Module, comp, out_values: list[Value], valid: Value, final: Value, pad: int) -> None:
    """Register the lanes' results into ``comp.out`` (through ``pad`` extra delay registers), with
    ``out_valid`` and ``done`` (= the tile's final beat) aligned to them."""
    for lane, v in enumerate(out_values):
        q = Signal(comp.out[lane].shape(), name=f"q{lane}")  # the output width, before any padding register
        m.d.comb += q.eq(v)
        m.d.sync += comp.out[lane].eq(delay(m, q, pad, f"pad_o{lane}"))
    m.d.sync += [comp.out_valid.eq(delay(m, valid, pad, "pad_v")), comp.done.eq(delay(m, final & valid, pad, "pad_d"))]


__all__ = ["Beat", "sequencer", "rom", "sat", "output_stage", "validate_op", "SFU_PASSES"]
