"""cocotb bench: SFU quantization barrier vs sim.numerics.sfu.sfu_absmax_quantize (bit-exact codes and
row amax) and cycles start->done vs sim.units.sfu.sfu_cycles(cfg, "quantize", rows, dim) (exact).
Each row is driven as pass-1 beats, sfu_recip_cycles() don't-care stall beats (the divider), pass-2 beats.

Vectors = rows. Corners: all-zero rows, the most negative input -2^(W-1), +-(2^(W-1)-1), exact rounding
ties (x = amax/2 -> 63.5 etc.), single-element rows, dim < lanes and dim not a multiple of lanes,
one-lane rows of small magnitude (amax = 1, 2, 3).
"""

from __future__ import annotations

import cocotb
import numpy as np

from lowbit.rtl.bench.common import load_job, pack, unpack, write_result
from lowbit.rtl.bench.stream import StreamTile, run_stream, summarize
from lowbit.sim.config import SfuConfig
from lowbit.sim.numerics.sfu import SFU_IN_BITS, sfu_absmax_quantize
from lowbit.sim.units.sfu import sfu_cycles, sfu_recip_cycles


def make_tile(cfg: SfuConfig, x: np.ndarray, kind: str, in_bits: int, recip_bits: int | None) -> StreamTile:
    n = cfg.lanes
    rows, dim = x.shape
    q, amax = sfu_absmax_quantize(x, in_bits, recip_bits)
    nb = -(-dim // n)
    xp = np.zeros((rows, nb * n), np.int64)
    xp[:, :dim] = x
    # reciprocal stall cycles (the DUT's default R): x is don't-care, driven with -2^(W-1) so that a stall
    # beat leaking into the absmax or the output would show up as a mismatch
    stall = [{"x": pack(np.full(n, -(1 << (in_bits - 1))), in_bits)}] * sfu_recip_cycles(in_bits)
    beats = []
    for r in range(rows):
        row = [{"x": pack(xp[r, b * n:(b + 1) * n], in_bits)} for b in range(nb)]
        beats += row + stall + row
    return StreamTile(start={"beats": nb, "rows": rows}, beats=beats,
                      expect=(q.astype(np.int64), amax[:, 0].astype(np.int64)),
                      expect_cycles=sfu_cycles(cfg, "quantize", rows, dim),
                      meta={"kind": kind, "rows": rows, "dim": dim})


def random_rows(rng, rows: int, dim: int, w: int) -> np.ndarray:
    """Rows with per-row magnitudes spread over the whole W-bit range."""
    x = rng.integers(-(1 << (w - 1)), 1 << (w - 1), (rows, dim))
    return x >> rng.integers(0, w - 1, (rows, 1))


def tiles_for(cfg: SfuConfig, rng, n_vectors: int, corners: bool, w: int, r: int | None) -> list[StreamTile]:
    n = cfg.lanes
    lo, hi = -(1 << (w - 1)), (1 << (w - 1)) - 1
    tiles = []
    if corners:
        d = 2 * n + 1
        tiles.append(make_tile(cfg, np.zeros((2, d), np.int64), "zeros", w, r))
        ext = rng.choice([lo, hi, -hi, 0, 1, -1], (3, d))
        ext[:, 0] = [lo, hi, -hi]
        tiles.append(make_tile(cfg, ext, "extremes", w, r))
        am = (1 << (w - 2)) + 6  # even, not a power of two: x = amax/2 and (2j+1)amax/254 are exact ties
        ties = np.array([[am, am // 2, -am // 2, (3 * am) // 254 if (3 * am) % 254 == 0 else am // 2, 0]])
        ties = np.concatenate([ties, np.array([[6, 3, -3, 1, 2]]), np.array([[254, 1, 3, -5, 127]])])
        tiles.append(make_tile(cfg, ties, "ties", w, r))
        tiles.append(make_tile(cfg, np.array([[lo]]), "single", w, r))
        tiles.append(make_tile(cfg, random_rows(rng, 2, max(1, n - 1), w), "dim_lt_lanes", w, r))
        tiles.append(make_tile(cfg, rng.integers(-3, 4, (4, 3 * n + 2)), "small_amax", w, r))
    have = sum(t.start["rows"] for t in tiles)
    while have < n_vectors:
        rows = int(rng.integers(1, 4))
        dim = int(rng.integers(1, 4 * n + 2)) if rng.random() < 0.7 else n * int(rng.integers(1, 4))
        x = random_rows(rng, rows, dim, w)
        if rng.random() < 0.2:  # plant exact ties: half of the row max
            x[:, -1] = (np.abs(x).max(axis=1) // 2) * rng.choice([-1, 1])
        tiles.append(make_tile(cfg, x, "random", w, r))
        have += rows
    return tiles


@cocotb.test()
async def sfu_bench(dut):
    job = load_job()
    p = job["parameters"]
    opts = job["options"]
    cfg = SfuConfig(lanes=p["lanes"], latency=p["latency"])
    w = SFU_IN_BITS  # the registry builds SfuQuantize(cfg) with the default input width
    gold_r = opts.get("override", {}).get("recip_bits")  # a wrong golden: the bench must fail
    rng = np.random.default_rng(job["seed"])
    tiles = tiles_for(cfg, rng, job["vectors"], opts.get("corners", True), w, gold_r)
    n = cfg.lanes

    def collect(d):
        return unpack(int(d.out_q.value), 8, n), int(d.out_amax.value)

    def bad(t: StreamTile) -> int:
        q, amax = t.expect
        rows, dim = q.shape
        nb = -(-dim // n)
        if len(t.got) != rows * nb:
            return rows
        got = np.array([g for g, _ in t.got]).reshape(rows, nb * n)[:, :dim]
        gam = np.array([a for _, a in t.got]).reshape(rows, nb)
        return int(np.sum(np.any(got != q, axis=1) | np.any(gam != amax[:, None], axis=1)))

    idle = {"x": 0, "beats": 0, "rows": 0}
    total = await run_stream(dut, tiles, idle, collect)
    for t in tiles:
        t.expect_cycles += opts.get("cycle_offset", 0)
    res = summarize(tiles, lambda t: t.start["rows"], bad)
    res["sim_cycles"] = total
    write_result(job, res)
