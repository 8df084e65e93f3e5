"""Shared RTL building blocks and the exact start/done cycle convention of every lowbit unit.

Cycle convention (realises the contract of sim/units/__init__.py; every unit in rtl/ follows it):

* Cycle 0 is the clock period in which ``start`` is high; the rising edge that ends cycle c is edge c.
  ``start`` is sampled at edge 0 together with the tile parameters (``beats``, ``passes``, unit modes),
  and only while ``ready`` is high (a start while busy is ignored).
* Beat j (j = 0 .. passes*beats_per_pass - 1) is driven in cycle j + 1 and sampled at edge j + 1:
  the unit consumes one beat per cycle with no stalls (no valid/ready on the beat bus).
* The pipeline is: stage 0 (operand register after the per-element select/encode) at edge j + 1,
  ``clog2(rows)`` registered adder-tree levels, then the accumulator/output register; so the last beat
  reaches the output register at edge ``beats + latency - 1`` and ``done`` (a register) is high for
  exactly one cycle, cycle ``N = beats + latency`` -- the number the sim/units formula returns.
* Each pass ends with ``out_valid`` high for one cycle with the per-lane results on ``out_acc`` /
  ``out_ovf``; the final pass's ``out_valid`` coincides with ``done``.
* ``ready`` rises again in the cycle after the last beat, so a new tile may start while the previous
  one drains (tiles overlap; results stay in order because the accumulator clears on each pass end).

Accumulators wrap in two's complement at ``acc_bits`` and carry a sticky per-pass overflow flag that
is set when any accumulation ``acc + tree_sum`` leaves the signed range (sim/numerics/tint.py rule).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Const, Module, Mux, Signal, Value, signed

COUNT_BITS = 16
"""Width of the per-tile ``beats`` / ``passes`` inputs (design choice: up to 65535 beats per pass)."""


def pipelined_tree(m: Module, rows: list[Value], name: str) -> tuple[Value, int]:
    """Sum ``rows`` in a binary adder tree with one register per level; returns (sum, levels).

    Levels = clog2(len(rows)); an odd operand at a level is registered unchanged so that all paths have
    equal depth. Widths grow by one bit per level (Amaranth's ``+`` widening), so the sum is exact.
    """
    level = list(rows)
    depth = 0
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), 2):
            v = level[i] + level[i + 1] if i + 1 < len(level) else level[i]
            r = Signal(v.shape(), name=f"{name}_l{depth}_{i // 2}")
            m.d.sync += r.eq(v)
            nxt.append(r)
        level = nxt
        depth += 1
    return level[0], depth


def bit_length(m: Module, v: Value, name: str) -> Signal:
    """Leading-one detector: bit length of unsigned ``v`` (0 for v = 0; floor(log2 v) + 1 otherwise)."""
    n = len(v)
    out = Signal(range(n + 1), name=name)
    expr = Const(0, range(n + 1))
    for i in range(n):  # priority: the highest set bit wins
        expr = Mux(v[i], i + 1, expr)
    m.d.comb += out.eq(expr)
    return out


def delay(m: Module, v: Value, n: int, name: str) -> Value:
    """``v`` delayed by n registers (n = 0 returns v)."""
    for i in range(n):
        r = Signal(v.shape(), name=f"{name}_d{i}")
        m.d.sync += r.eq(v)
        v = r
    return v


@dataclass
class BeatTags:
    """Per-beat control bits that travel down the pipeline with the data."""

    valid: Value
    pass_last: Value
    tile_last: Value
    first_digit: Value  # bit-serial only (constant 1 otherwise)
    last_digit: Value  # bit-serial only (constant 1 otherwise)
    digit: Value  # index of the Booth digit of this beat (bit-serial only)

    def as_list(self) -> list[Value]:
        return [self.valid, self.pass_last, self.tile_last, self.first_digit, self.last_digit]


class TileSequencer:
    """Counts beats of a tile: ``passes`` x ``beats`` (x ``digits``) beats after a start at edge 0.

    With ``digits`` (a Value, bit-serial units) every element group takes ``digits`` consecutive beats,
    issued MSB digit first; ``tags.digit`` is the Booth digit index of the current beat. All tags are
    combinational from the counters and describe the beat driven in the current cycle.
    """

    def __init__(self, m: Module, start: Value, beats: Value, passes: Value, digits: Value | None = None):
        self.busy = Signal()
        self.beats_r = Signal(beats.shape())
        self.passes_r = Signal(passes.shape())
        self.beat = Signal(beats.shape())
        self.pas = Signal(passes.shape())
        self.ready = ~self.busy
        load = [self.busy.eq(1), self.beats_r.eq(beats), self.passes_r.eq(passes),
                self.beat.eq(0), self.pas.eq(0)]
        if digits is not None:
            self.ndig_r = Signal(digits.shape())
            self.dig = Signal(digits.shape())  # 0 .. ndig-1; digit index = ndig-1-dig (MSB first)
            last_digit = self.dig == self.ndig_r - 1
            digit = Signal(digits.shape())
            m.d.comb += digit.eq(self.ndig_r - 1 - self.dig)
            load += [self.ndig_r.eq(digits), self.dig.eq(0)]
        else:
            last_digit, digit = Const(1), Const(0)
        pass_last = last_digit & (self.beat == self.beats_r - 1)
        tile_last = pass_last & (self.pas == self.passes_r - 1)
        self.tags = BeatTags(valid=self.busy, pass_last=pass_last, tile_last=tile_last,
                             first_digit=(self.dig == 0) if digits is not None else Const(1),
                             last_digit=last_digit, digit=digit)
        with m.If(self.busy):
            with m.If(last_digit):
                if digits is not None:
                    m.d.sync += self.dig.eq(0)
                with m.If(self.beat == self.beats_r - 1):
                    m.d.sync += self.beat.eq(0)
                    with m.If(self.pas == self.passes_r - 1):
                        m.d.sync += self.busy.eq(0)
                    with m.Else():
                        m.d.sync += self.pas.eq(self.pas + 1)
                with m.Else():
                    m.d.sync += self.beat.eq(self.beat + 1)
            if digits is not None:
                with m.Else():
                    m.d.sync += self.dig.eq(self.dig + 1)
        with m.Elif(start & (beats != 0) & (passes != 0)):
            # zero beats or passes: nothing to do, the start is ignored (no done) -- documented limitation
            m.d.sync += load


def wrap_accumulate(m: Module, acc: Signal, ovf: Signal, addend: Value, en: Value, pass_last: Value,
                    out_acc: Signal, out_ovf: Signal) -> None:
    """One accumulator/output register stage (sync): acc <- wrap(acc + addend), sticky overflow.

    When ``en & pass_last`` the final value goes to ``out_acc`` / ``out_ovf`` and acc/ovf clear for the
    next pass. Overflow: the exact sum (one bit wider than both operands) leaves
    [-2^(acc_bits-1), 2^(acc_bits-1)-1] -- same rule as sim.numerics.tint.tint_dot.
    """
    bits = len(acc)
    s = Signal(signed(max(bits, len(addend)) + 1), name=f"{acc.name}_sum")
    m.d.comb += s.eq(acc + addend)
    out_of_range = (s < -(1 << (bits - 1))) | (s > (1 << (bits - 1)) - 1)
    wrapped = s[:bits].as_signed()
    with m.If(en):
        with m.If(pass_last):
            m.d.sync += [out_acc.eq(wrapped), out_ovf.eq(ovf | out_of_range), acc.eq(0), ovf.eq(0)]
        with m.Else():
            m.d.sync += [acc.eq(wrapped), ovf.eq(ovf | out_of_range)]


def mux_neg(v: Value, neg: Value) -> Value:
    """Booth row negation: conditional inversion (XOR with ``neg``) plus the ``+neg`` LSB injection.

    Folding the +neg into the row keeps the row value exact (= -v when neg); in a full-custom tree the
    +neg bit would sit in a spare LSB slot of the compressor -- arithmetically identical.
    """
    w = len(v) + 1
    ext = v.as_signed() if not v.shape().signed else v
    pattern = Mux(neg, ~ext, ext)
    return (pattern + neg)[:w].as_signed()


def count_mismatches(got: list, want: list) -> int:
    """Recorded values that differ from the expected ones in order, missing and extra ones counted."""
    return sum(g != w for g, w in zip(got, want, strict=False)) + abs(len(got) - len(want))
