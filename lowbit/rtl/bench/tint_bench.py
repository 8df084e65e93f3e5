"""cocotb bench: TINT core vs sim.numerics.tint.tint_dot (bit-exact) and sim.units.tint cycles (exact).

Vectors = lane dot products. Corner tiles first (INT8 extremes, all-zero weights/activations, all -1
weights, the exact accumulator boundary and one past it, long accumulations that overflow a narrow
accumulator in both directions), then random tiles (k in 1..8*tree_width, 1..3 passes).
"""

from __future__ import annotations

import dataclasses

import cocotb
import numpy as np

from lowbit.rtl.bench.common import (
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
from lowbit.sim.config import TintConfig
from lowbit.sim.numerics.tint import tint_dot
from lowbit.sim.units.tint import tint_tile_cycles

MAX_BEATS = 8192  # longest corner tile we simulate (cycles); longer overflow corners are skipped


def make_tile(cfg: TintConfig, w: np.ndarray, a: np.ndarray, rng, kind: str) -> StreamTile:
    """w: (lanes, passes, k) ternary, a: (passes, k) INT8 (activations broadcast to all lanes)."""
    lanes, t = cfg.lanes, cfg.tree_width
    _, passes, k = w.shape
    nb = -(-k // t)
    pad = nb * t - k
    codes = ternary_codes(w, rng)
    if pad:
        codes = np.concatenate([codes, np.zeros((lanes, passes, pad), np.int64)], axis=-1)
        a_p = np.concatenate([a, np.zeros((passes, pad), np.int64)], axis=-1)
    else:
        a_p = a
    beats = []
    for p in range(passes):
        for b in range(nb):
            c = codes[:, p, b * t:(b + 1) * t].reshape(-1)  # lane-major: index l*t + i
            beats.append({"codes": pack(c, 2), "act": pack(a_p[p, b * t:(b + 1) * t], 8)})
    acc, ovf = tint_dot(w, a[None, :, :], t, cfg.acc_bits)  # (lanes, passes)
    return StreamTile(start={"beats": nb, "passes": passes}, beats=beats, expect=(acc.T, ovf.T),
                      expect_cycles=tint_tile_cycles(cfg, k, passes), meta={"kind": kind, "k": k, "passes": passes})


def corner_tiles(cfg: TintConfig, rng) -> list[StreamTile]:
    L, t, A = cfg.lanes, cfg.tree_width, cfg.acc_bits
    tiles = []

    def add(kind, w, a):
        tiles.append(make_tile(cfg, w, a, rng, kind))

    k = 3 * t + 1
    add("zeros_w", np.zeros((L, 2, k), np.int64), int8(rng, (2, k), 0.5))
    add("zeros_a", ternary(rng, (L, 1, k)), np.zeros((1, k), np.int64))
    add("all_-1_w", -np.ones((L, 1, k), np.int64), int8(rng, (1, k)))
    add("extremes", ternary(rng, (L, 2, k), 0.0), rng.choice([-128, 127], (2, k)))
    add("single_elem", ternary(rng, (L, 3, 1), 0.0), np.array([[-128], [127], [-1]]))
    half = 1 << (A - 1)
    kb = half // 128  # -128 * kb == -2^(A-1): exactly representable; one more element overflows
    if -(-(kb + 1) // t) <= MAX_BEATS:
        add("boundary_exact", np.ones((L, 1, kb), np.int64), np.full((1, kb), -128))
        add("boundary_plus1", np.ones((L, 1, kb + 1), np.int64), np.full((1, kb + 1), -128))
        ko = kb + 2 * t  # long accumulation, overflow in both directions (wraps back as well)
        w = np.stack([np.full(ko, -1 if lane % 2 == 0 else 1) for lane in range(L)])[:, None, :]
        add("overflow_long", w, np.full((1, ko), -128))
    return tiles


def random_tiles(cfg: TintConfig, rng, n_vectors: int) -> list[StreamTile]:
    tiles, have = [], 0
    while have < n_vectors:
        k = int(rng.integers(1, 8 * cfg.tree_width + 1))
        if rng.random() < 0.3:
            k = cfg.tree_width * int(rng.integers(1, 9))
        passes = int(rng.integers(1, 4))
        w = ternary(rng, (cfg.lanes, passes, k), float(rng.choice([0.0, 1 / 3, 0.8])))
        a = int8(rng, (passes, k), float(rng.choice([0.0, 0.1, 0.5])))
        tiles.append(make_tile(cfg, w, a, rng, "random"))
        have += cfg.lanes * passes
    return tiles


@cocotb.test()
async def tint_bench(dut):
    job = load_job()
    p = job["parameters"]
    opts = job["options"]
    dut_cfg = TintConfig(lanes=p["lanes"], tree_width=p["tree_width"], acc_bits=p["acc_bits"])
    cfg = dataclasses.replace(dut_cfg, **opts.get("override", {}))  # override: harness self-test only
    rng = np.random.default_rng(job["seed"])
    tiles = corner_tiles(cfg, rng) if opts.get("corners", True) else []
    tiles += random_tiles(cfg, rng, max(0, job["vectors"] - sum(t.expect[0].size for t in tiles)))
    idle = {"codes": 0, "act": 0, "beats": 0, "passes": 0}
    for t in tiles:
        t.expect_cycles += opts.get("cycle_offset", 0)  # harness self-test only
    total = await run_tiles(dut, tiles, dut_cfg.lanes, dut_cfg.acc_bits, idle)
    res = compare(tiles)
    res["sim_cycles"] = total
    write_result(job, res)
