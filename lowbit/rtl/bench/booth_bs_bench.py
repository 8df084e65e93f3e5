"""cocotb bench: BoothFlex-BS vs sim.numerics.booth.booth_serial_multiply (bit-exact, MSB-first digit
serial) and sim.units.booth.booth_bs_tile_cycles (exact), for every configured precision + ternary.

Each element group is driven for `digits` beats (operands held). Multiplier words carry random junk
above the selected precision, which must be ignored. Corners: most negative multiplier of each
precision x -128, INT8 extremes, zeros, long accumulations that overflow a narrow accumulator.
"""

from __future__ import annotations

import dataclasses

import cocotb
import numpy as np

from lowbit.rtl.bench.common import (
    accumulate,
    beat_sums,
    compare,
    int8,
    load_job,
    pack,
    run_tiles,
    ternary,
    ternary_codes,
    write_result,
)
from lowbit.rtl.bench.stream import StreamTile
from lowbit.sim.config import BoothConfig
from lowbit.sim.numerics.booth import booth_serial_multiply
from lowbit.sim.units.booth import booth_bs_tile_cycles

PREC = {1: 0, 2: 1, 4: 2, 8: 3}  # bits (1 = ternary) -> prec port code
MAX_BEATS = 8192


def bs_tile(cfg: BoothConfig, bits: int, a: np.ndarray, b: np.ndarray, rng, kind: str) -> StreamTile:
    """a: INT8, b: `bits`-bit signed (bits=1: ternary), both (lanes, passes, k)."""
    L, W = cfg.lanes, cfg.width
    _, P, k = a.shape
    ng = -(-k // W)
    pad = ng * W - k
    ap = np.concatenate([a, np.zeros((L, P, pad), np.int64)], axis=-1)
    bp = np.concatenate([b, np.zeros((L, P, pad), np.int64)], axis=-1)
    if bits == 1:
        word = ternary_codes(bp, rng) | (rng.integers(0, 64, bp.shape) << 2)
        prods, n = booth_serial_multiply(ap, bp, "ternary")
    else:
        word = (bp & ((1 << bits) - 1)) | (rng.integers(0, 256, bp.shape) >> bits << bits)  # junk above
        prods, n = booth_serial_multiply(ap, bp, bits)
    beats = []
    for p in range(P):
        for j in range(ng):
            beat = {"act": pack(ap[:, p, j * W:(j + 1) * W].reshape(-1), 8),
                    "wb": pack(word[:, p, j * W:(j + 1) * W].reshape(-1), 8)}
            beats += [beat] * n  # operands held for the n digit cycles
    acc, ovf = accumulate(beat_sums(prods, W), cfg.acc_bits)
    return StreamTile(start={"beats": ng, "passes": P, "prec": PREC[bits]}, beats=beats, expect=(acc.T, ovf.T),
                      expect_cycles=booth_bs_tile_cycles(cfg, k, P, bits),
                      meta={"kind": kind, "mode": "ternary" if bits == 1 else f"int{bits}", "k": k, "passes": P})


def operand(rng, bits: int, shape, extreme: float = 0.1) -> np.ndarray:
    if bits == 1:
        return ternary(rng, shape)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    v = rng.integers(lo, hi + 1, shape)
    e = rng.random(shape)
    return np.where(e < extreme / 2, lo, np.where(e < extreme, hi, v)).astype(np.int64)


def corner_tiles(cfg: BoothConfig, rng, modes) -> list[StreamTile]:
    L, W, A = cfg.lanes, cfg.width, cfg.acc_bits
    tiles = []
    k = 2 * W + 1
    for bits in modes:
        lo = -1 if bits == 1 else -(1 << (bits - 1))
        hi = 1 if bits == 1 else (1 << (bits - 1)) - 1
        full = lambda v, kk=k: np.full((L, 1, kk), v)  # noqa: E731
        tiles.append(bs_tile(cfg, bits, full(-128), full(lo), rng, "min_x_min"))
        tiles.append(bs_tile(cfg, bits, full(127), full(hi), rng, "max_x_max"))
        tiles.append(bs_tile(cfg, bits, full(-128), full(hi), rng, "min_x_max"))
        tiles.append(bs_tile(cfg, bits, np.zeros((L, 2, k), np.int64), operand(rng, bits, (L, 2, k)), rng, "zeros_a"))
        tiles.append(bs_tile(cfg, bits, int8(rng, (L, 2, k)), np.zeros((L, 2, k), np.int64), rng, "zeros_b"))
        tiles.append(bs_tile(cfg, bits, rng.choice([-128, 127], (L, 1, k)), operand(rng, bits, (L, 1, k), 1.0),
                             rng, "extremes"))
        big = 128 * (-lo)  # |(-128) * lo| per product
        ko = (1 << (A - 1)) // big + 2 * W
        if -(-ko // W) * max(1, bits // 2) <= MAX_BEATS:
            sgn = np.where(np.arange(L) % 2 == 0, lo, hi)[:, None, None] * np.ones((1, 1, ko), np.int64)
            tiles.append(bs_tile(cfg, bits, full(-128, ko), sgn, rng, "overflow_long"))
    return tiles


def random_tiles(cfg: BoothConfig, rng, n_vectors: int, modes) -> list[StreamTile]:
    tiles, have = [], 0
    while have < n_vectors:
        bits = modes[len(tiles) % len(modes)]
        k = int(rng.integers(1, 6 * cfg.width + 1))
        P = int(rng.integers(1, 4))
        a = int8(rng, (cfg.lanes, P, k), float(rng.choice([0.0, 0.1, 0.5])))
        tiles.append(bs_tile(cfg, bits, a, operand(rng, bits, (cfg.lanes, P, k), float(rng.choice([0.0, 0.3]))),
                             rng, "random"))
        have += cfg.lanes * P
    return tiles


@cocotb.test()
async def booth_bs_bench(dut):
    job = load_job()
    p, opts = job["parameters"], job["options"]
    dut_cfg = BoothConfig(lanes=p["lanes"], width=p["width"], acc_bits=p["acc_bits"],
                          ternary_mode=p["ternary_mode"], bit_serial=True, precisions=tuple(p["precisions"]))
    cfg = dataclasses.replace(dut_cfg, **opts.get("override", {}))  # override: harness self-test only
    modes = opts.get("modes", list(cfg.precisions) + ([1] if cfg.ternary_mode else []))
    rng = np.random.default_rng(job["seed"])
    tiles = corner_tiles(cfg, rng, modes) if opts.get("corners", True) else []
    tiles += random_tiles(cfg, rng, max(0, job["vectors"] - sum(t.expect[0].size for t in tiles)), modes)
    for t in tiles:
        t.expect_cycles += opts.get("cycle_offset", 0)  # harness self-test only
    idle = {"act": 0, "wb": 0, "beats": 0, "passes": 0, "prec": 0}
    total = await run_tiles(dut, tiles, dut_cfg.lanes, dut_cfg.acc_bits, idle)
    res = compare(tiles)
    res["sim_cycles"] = total
    write_result(job, res)
