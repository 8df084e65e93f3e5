"""cocotb bench: BoothFlex vs sim.numerics.booth (booth_multiply, booth_ternary_dot; bit-exact) and
sim.units.booth cycles (booth_int8_tile_cycles / booth_ternary_tile_cycles, exact).

Vectors = lane dot products, in both modes (tiles alternate modes, so mode switches between overlapping
tiles are exercised). INT8 corners: -128 x -128, -128 x 127, 127 x 127, all-zero, long accumulations
that overflow a narrow accumulator; ternary corners as for TINT. Unused row operands (rows 1..3 in INT8
mode) carry random junk, which must be ignored.
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
from lowbit.sim.numerics.booth import booth_multiply, booth_ternary_dot
from lowbit.sim.units.booth import booth_int8_tile_cycles, booth_ternary_tile_cycles

ROWS = 4
MAX_BEATS = 8192


def int8_tile(cfg: BoothConfig, a: np.ndarray, b: np.ndarray, rng, kind: str) -> StreamTile:
    """a, b: (lanes, passes, k) INT8; lane l computes sum_k a*b per pass."""
    L, W = cfg.lanes, cfg.width
    _, P, k = a.shape
    nb = -(-k // W)
    pad = nb * W - k
    ap = np.concatenate([a, np.zeros((L, P, pad), np.int64)], axis=-1)
    bp = np.concatenate([b, np.zeros((L, P, pad), np.int64)], axis=-1)
    beats = []
    for p in range(P):
        for j in range(nb):
            acts = rng.integers(-128, 128, (L, W, ROWS))  # junk in rows 1..3
            acts[:, :, 0] = ap[:, p, j * W:(j + 1) * W]
            beats.append({"act": pack(acts.reshape(-1), 8), "wb": pack(bp[:, p, j * W:(j + 1) * W].reshape(-1), 8)})
    prods = booth_multiply(a, b, 8)  # (L, P, k) via Booth partial products
    acc, ovf = accumulate(beat_sums(prods, W), cfg.acc_bits)
    return StreamTile(start={"beats": nb, "passes": P, "mode": 0}, beats=beats, expect=(acc.T, ovf.T),
                      expect_cycles=booth_int8_tile_cycles(cfg, k, P),
                      meta={"kind": kind, "mode": "int8", "k": k, "passes": P})


def ternary_tile(cfg: BoothConfig, w: np.ndarray, a: np.ndarray, rng, kind: str) -> StreamTile:
    """w ternary, a INT8, both (lanes, passes, k); 4*width pairs per lane per beat."""
    L, W = cfg.lanes, cfg.width
    _, P, k = a.shape
    per = ROWS * W
    nb = -(-k // per)
    pad = nb * per - k
    ap = np.concatenate([a, np.zeros((L, P, pad), np.int64)], axis=-1)
    wp = np.concatenate([w, np.zeros((L, P, pad), np.int64)], axis=-1)
    codes = ternary_codes(wp, rng)
    beats = []
    for p in range(P):
        for j in range(nb):
            seg = slice(j * per, (j + 1) * per)  # element u*4 + r of the beat -> unit u, row r
            c = codes[:, p, seg].reshape(L * W, ROWS)
            wb = [pack(c[i], 2) for i in range(L * W)]
            beats.append({"act": pack(ap[:, p, seg].reshape(-1), 8), "wb": pack(wb, 8)})
    dots = booth_ternary_dot(wp.reshape(L, P, nb, W, ROWS), ap.reshape(L, P, nb, W, ROWS))  # (L,P,nb,W)
    acc, ovf = accumulate(dots.sum(axis=-1), cfg.acc_bits)
    return StreamTile(start={"beats": nb, "passes": P, "mode": 1}, beats=beats, expect=(acc.T, ovf.T),
                      expect_cycles=booth_ternary_tile_cycles(cfg, k, P),
                      meta={"kind": kind, "mode": "ternary", "k": k, "passes": P})


def corner_tiles(cfg: BoothConfig, rng, modes) -> list[StreamTile]:
    L, W, A = cfg.lanes, cfg.width, cfg.acc_bits
    tiles = []
    k = 2 * W + 1
    if "int8" in modes:
        full = lambda v, kk=k: np.full((L, 1, kk), v)  # noqa: E731
        tiles.append(int8_tile(cfg, full(-128), full(-128), rng, "-128x-128"))
        tiles.append(int8_tile(cfg, full(-128), full(127), rng, "-128x127"))
        tiles.append(int8_tile(cfg, full(127), full(127), rng, "127x127"))
        tiles.append(int8_tile(cfg, np.zeros((L, 2, k), np.int64), int8(rng, (L, 2, k)), rng, "zeros_a"))
        tiles.append(int8_tile(cfg, int8(rng, (L, 2, k)), np.zeros((L, 2, k), np.int64), rng, "zeros_b"))
        tiles.append(int8_tile(cfg, int8(rng, (L, 1, k), 1.0), int8(rng, (L, 1, k), 1.0), rng, "extremes"))
        kb = (1 << (A - 1)) // (1 << 14)  # kb products of -128*-128 = 2^14 sum to 2^(A-1) = max + 1
        if -(-(kb + 2 * W) // W) <= MAX_BEATS:
            tiles.append(int8_tile(cfg, full(-128, kb), full(-128, kb), rng, "boundary_plus1"))
            b = np.full((L, 1, kb), -128)
            b[:, :, -1] = 127  # last product -128*127 = -16256: sum = 2^(A-1) - 2^14 - 16256, in range
            tiles.append(int8_tile(cfg, full(-128, kb), b, rng, "boundary_in_range"))
            ko = kb + 2 * W
            sgn = np.where(np.arange(L) % 2 == 0, -128, 127)[:, None, None] * np.ones((1, 1, ko), np.int64)
            tiles.append(int8_tile(cfg, full(-128, ko), sgn, rng, "overflow_long"))
    if "ternary" in modes:
        kt = 4 * W * 2 + 3
        tiles.append(ternary_tile(cfg, np.zeros((L, 1, kt), np.int64), int8(rng, (L, 1, kt)), rng, "zeros_w"))
        tiles.append(ternary_tile(cfg, -np.ones((L, 1, kt), np.int64), int8(rng, (L, 1, kt)), rng, "all_-1_w"))
        tiles.append(ternary_tile(cfg, ternary(rng, (L, 2, kt), 0), rng.choice([-128, 127], (L, 2, kt)), rng,
                                  "extremes"))
        kb = (1 << (A - 1)) // 128
        if -(-(kb + 8 * W) // (4 * W)) <= MAX_BEATS:
            ko = kb + 8 * W
            tiles.append(ternary_tile(cfg, np.ones((L, 1, ko), np.int64), np.full((L, 1, ko), -128), rng,
                                      "overflow_long"))
    return tiles


def random_tiles(cfg: BoothConfig, rng, n_vectors: int, modes) -> list[StreamTile]:
    tiles, have = [], 0
    while have < n_vectors:
        mode = modes[len(tiles) % len(modes)]
        per = cfg.width if mode == "int8" else 4 * cfg.width
        k = int(rng.integers(1, 6 * per + 1))
        P = int(rng.integers(1, 4))
        a = int8(rng, (cfg.lanes, P, k), float(rng.choice([0.0, 0.1, 0.5])))
        if mode == "int8":
            tiles.append(int8_tile(cfg, a, int8(rng, (cfg.lanes, P, k), float(rng.choice([0.0, 0.1, 0.5]))),
                                   rng, "random"))
        else:
            tiles.append(ternary_tile(cfg, ternary(rng, (cfg.lanes, P, k), float(rng.choice([0.0, 1 / 3, 0.8]))),
                                      a, rng, "random"))
        have += cfg.lanes * P
    return tiles


@cocotb.test()
async def booth_bench(dut):
    job = load_job()
    p, opts = job["parameters"], job["options"]
    dut_cfg = BoothConfig(lanes=p["lanes"], width=p["width"], acc_bits=p["acc_bits"],
                          ternary_mode=p["ternary_mode"], bit_serial=False)
    cfg = dataclasses.replace(dut_cfg, **opts.get("override", {}))  # override: harness self-test only
    modes = opts.get("modes", ["int8", "ternary"] if cfg.ternary_mode else ["int8"])
    rng = np.random.default_rng(job["seed"])
    tiles = corner_tiles(cfg, rng, modes) if opts.get("corners", True) else []
    tiles += random_tiles(cfg, rng, max(0, job["vectors"] - sum(t.expect[0].size for t in tiles)), modes)
    for t in tiles:
        t.expect_cycles += opts.get("cycle_offset", 0)  # harness self-test only
    idle = {"act": 0, "wb": 0, "beats": 0, "passes": 0, "mode": 0}
    total = await run_tiles(dut, tiles, dut_cfg.lanes, dut_cfg.acc_bits, idle)
    res = compare(tiles)
    res["sim_cycles"] = total
    write_result(job, res)
