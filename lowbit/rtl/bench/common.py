"""Shared cocotb driver: issue tiles per the rtl/common.py cycle convention, collect and compare results.

The driver works on falling edges: at the falling edge inside cycle c it reads the registered outputs
(their values during cycle c) and drives the inputs sampled at the rising edge that ends cycle c. A
tile's start is driven in the first cycle the unit is ``ready``; its beats follow back to back, so
tiles overlap in the pipeline. cycles(start -> done) = (cycle with done high) - (cycle with start high).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lowbit.sim.numerics.rounding import int_range, wrap_signed

CODE = {0: 0b00, 1: 0b01, -1: 0b11}  # TINT/Booth ternary {nz, sign} datapath code (rtl/tint.py)


def load_job() -> dict[str, Any]:
    with open(os.environ["LOWBIT_BENCH_JOB"]) as f:
        return json.load(f)


def pack(values, bits: int) -> int:
    """Little-endian flat array port value: element i at bits [i*bits, (i+1)*bits)."""
    mask = (1 << bits) - 1
    out = 0
    for i, v in enumerate(values):
        out |= (int(v) & mask) << (i * bits)
    return out


def unpack(x: int, bits: int, n: int, signed: bool = True) -> list[int]:
    mask = (1 << bits) - 1
    out = []
    for i in range(n):
        v = (x >> (i * bits)) & mask
        if signed and v >> (bits - 1):
            v -= 1 << bits
        out.append(v)
    return out


def ternary_codes(w: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """{nz, sign} codes of ternary weights; with rng, zero weights randomly use the 0b10 'negative zero'."""
    c = np.where(w == 1, 0b01, np.where(w == -1, 0b11, 0b00)).astype(np.int64)
    if rng is not None:
        c = np.where((w == 0) & (rng.random(w.shape) < 0.5), 0b10, c)
    return c


def accumulate(beat_sums: np.ndarray, acc_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Wrapping accumulator with sticky overflow over the last axis (the rule of sim.numerics.tint.tint_dot).

    Register = wrap(total) (addition mod 2^acc_bits); overflow = any exact prefix sum out of range
    (exact until the first overflow, sticky afterwards).
    """
    lo, hi = int_range(acc_bits, signed=True)
    prefix = np.cumsum(beat_sums.astype(np.int64), axis=-1)
    return wrap_signed(prefix[..., -1], acc_bits), np.any((prefix < lo) | (prefix > hi), axis=-1)


def beat_sums(products: np.ndarray, per_beat: int) -> np.ndarray:
    """Sum products (..., k) in groups of per_beat (zero-padded tail) -> (..., ceil(k/per_beat))."""
    k = products.shape[-1]
    nb = -(-k // per_beat)
    pad = nb * per_beat - k
    if pad:
        products = np.concatenate([products, np.zeros(products.shape[:-1] + (pad,), np.int64)], axis=-1)
    return products.reshape(products.shape[:-1] + (nb, per_beat)).sum(axis=-1)


@dataclass
class Tile:
    start: dict[str, int]  # ports driven with start (beats, passes, modes)
    beats: list[dict[str, int]]  # per-beat port values, len == passes * beats * digits
    expect_acc: np.ndarray  # (passes, lanes) int
    expect_ovf: np.ndarray  # (passes, lanes) bool
    expect_cycles: int
    meta: dict[str, Any] = field(default_factory=dict)
    got: list[tuple[list[int], list[int]]] = field(default_factory=list)  # (acc, ovf) per out_valid
    start_cycle: int = -1
    cycles: int = -1

    @property
    def got_acc(self) -> list[list[int]]:
        return [acc for acc, _ in self.got]

    @property
    def got_ovf(self) -> list[list[int]]:
        return [ovf for _, ovf in self.got]


async def run_tiles(dut, tiles: list[Tile], lanes: int, acc_bits: int, idle: dict[str, int]) -> int:
    """Drive all tiles (overlapping) with the shared stream driver; each out_valid appends the lanes'
    (acc, overflow) to the oldest pending tile. Returns total simulated cycles."""
    from lowbit.rtl.bench.stream import run_stream

    def collect(d) -> tuple[list[int], list[int]]:
        return (unpack(int(d.out_acc.value), acc_bits, lanes), unpack(int(d.out_ovf.value), 1, lanes, signed=False))

    return await run_stream(dut, tiles, idle, collect)


def compare(tiles: list[Tile], max_examples: int = 5) -> dict[str, Any]:
    """Count lane-result mismatches (acc or overflow flag) and cycle mismatches; collect examples."""
    vectors = mismatches = cyc_bad = 0
    examples: list[Any] = []
    cycles = []
    for ti, t in enumerate(tiles):
        exp_acc, exp_ovf = np.asarray(t.expect_acc), np.asarray(t.expect_ovf)
        n = exp_acc.size
        vectors += n
        if len(t.got_acc) != exp_acc.shape[0]:
            mismatches += n
            examples.append({"tile": ti, "error": f"got {len(t.got_acc)} pass results, want {exp_acc.shape[0]}",
                             **t.meta})
        else:
            got_acc, got_ovf = np.array(t.got_acc), np.array(t.got_ovf, dtype=bool)
            bad = (got_acc != exp_acc) | (got_ovf != exp_ovf)
            mismatches += int(bad.sum())
            for p, lane in zip(*np.nonzero(bad), strict=True):
                if len(examples) < max_examples:
                    examples.append({"tile": ti, "pass": int(p), "lane": int(lane), **t.meta,
                                     "got": [int(got_acc[p, lane]), bool(got_ovf[p, lane])],
                                     "want": [int(exp_acc[p, lane]), bool(exp_ovf[p, lane])]})
        if t.cycles != t.expect_cycles:
            cyc_bad += 1
        cycles.append({**t.meta, "sim": int(t.expect_cycles), "rtl": int(t.cycles)})
    return {"vectors": vectors, "mismatches": mismatches, "cycle_checks": len(tiles),
            "cycle_mismatches": cyc_bad, "examples": examples, "cycles": cycles}


def write_result(job: dict[str, Any], result: dict[str, Any]) -> None:
    path = job["result"]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1, default=str)
    os.replace(tmp, path)


def int8(rng: np.random.Generator, shape, extreme: float = 0.1) -> np.ndarray:
    """Uniform INT8 with a fraction `extreme` of values forced to -128 / 127."""
    a = rng.integers(-128, 128, shape)
    e = rng.random(shape)
    a = np.where(e < extreme / 2, -128, np.where(e < extreme, 127, a))
    return a.astype(np.int64)


def ternary(rng: np.random.Generator, shape, p_zero: float = 1 / 3) -> np.ndarray:
    z = rng.random(shape) < p_zero
    return np.where(z, 0, rng.choice([-1, 1], shape)).astype(np.int64)
