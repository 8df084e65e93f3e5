"""Bench helpers: the job file, port packing, operand generators, and the lane-accumulator view of the
stream driver (lowbit.rtl.bench.stream) for TINT / Booth, whose tiles expect per pass and lane an
accumulator value and a sticky overflow flag: ``StreamTile.expect = (acc, ovf)``, each (passes, lanes).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from lowbit.rtl.bench.stream import StreamTile, run_stream, summarize
from lowbit.sim.atomic import atomic_write
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


async def run_tiles(dut, tiles: list[StreamTile], lanes: int, acc_bits: int, idle: dict[str, int]) -> int:
    """Drive all tiles with the stream driver; each out_valid appends the lanes' (acc, overflow) to the
    oldest pending tile. Returns total simulated cycles."""

    def collect(d) -> tuple[list[int], list[int]]:
        return (unpack(int(d.out_acc.value), acc_bits, lanes), unpack(int(d.out_ovf.value), 1, lanes, signed=False))

    return await run_stream(dut, tiles, idle, collect)


def _lane_results(t: StreamTile) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(got acc, got ovf, want acc, want ovf), each (passes, lanes); None if the pass count is wrong."""
    exp_acc, exp_ovf = (np.asarray(x) for x in t.expect)
    if len(t.got) != exp_acc.shape[0]:
        return None
    return np.array([a for a, _ in t.got]), np.array([o for _, o in t.got], dtype=bool), exp_acc, exp_ovf


def _lane_bad(t: StreamTile) -> int:
    r = _lane_results(t)
    if r is None:
        return int(np.asarray(t.expect[0]).size)
    got_acc, got_ovf, exp_acc, exp_ovf = r
    return int(((got_acc != exp_acc) | (got_ovf != exp_ovf)).sum())


def _lane_examples(ti: int, t: StreamTile) -> list[dict[str, Any]]:
    r = _lane_results(t)
    if r is None:
        return [{"tile": ti, "error": f"got {len(t.got)} pass results, want {len(t.expect[0])}", **t.meta}]
    got_acc, got_ovf, exp_acc, exp_ovf = r
    return [{"tile": ti, "pass": int(p), "lane": int(lane), **t.meta,
             "got": [int(got_acc[p, lane]), bool(got_ovf[p, lane])],
             "want": [int(exp_acc[p, lane]), bool(exp_ovf[p, lane])]}
            for p, lane in zip(*np.nonzero((got_acc != exp_acc) | (got_ovf != exp_ovf)), strict=True)]


def compare(tiles: list[StreamTile], max_examples: int = 5) -> dict[str, Any]:
    """Lane-result mismatches (acc or overflow flag) and cycle mismatches, in the stream summary format."""
    return summarize(tiles, lambda t: int(np.asarray(t.expect[0]).size), _lane_bad, max_examples, _lane_examples)


def write_result(job: dict[str, Any], result: dict[str, Any]) -> None:
    atomic_write(job["result"], json.dumps(result, indent=1, default=str))


def int8(rng: np.random.Generator, shape, extreme: float = 0.1) -> np.ndarray:
    """Uniform INT8 with a fraction `extreme` of values forced to -128 / 127."""
    a = rng.integers(-128, 128, shape)
    e = rng.random(shape)
    a = np.where(e < extreme / 2, -128, np.where(e < extreme, 127, a))
    return a.astype(np.int64)


def ternary(rng: np.random.Generator, shape, p_zero: float = 1 / 3) -> np.ndarray:
    z = rng.random(shape) < p_zero
    return np.where(z, 0, rng.choice([-1, 1], shape)).astype(np.int64)
