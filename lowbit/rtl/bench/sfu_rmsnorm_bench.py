"""cocotb bench: SFU RMSNorm datapath vs sim.numerics.sfu_reduce.sfu_rmsnorm (bit-exact), cycles start->done
vs sim.units.sfu.sfu_cycles(cfg, "rmsnorm", rows, dim) (exact).

Rows = vectors. Corners: all-zero rows (eps = 0 and eps > 0), one non-zero element (output at the
saturation edge), the int16 extremes with full-range gains (saturation), tiny rows (|x| = 1: the
left-shift normalisation), rows of 1 element and dim not a multiple of lanes, back-to-back one-beat rows.
"""

from __future__ import annotations

import cocotb
import numpy as np

from lowbit.rtl.bench.common import pack
from lowbit.rtl.bench.sfu_stream import fill_tiles, lanes_of, make_tile, run_op_bench
from lowbit.rtl.bench.stream import StreamTile
from lowbit.sim.config import SfuConfig
from lowbit.sim.numerics.sfu_reduce import rmsnorm_consts, sfu_rmsnorm


def norm_tile(cfg: SfuConfig, x: np.ndarray, g: np.ndarray, eps: float, kind: str) -> StreamTile:
    n = cfg.lanes
    rows, dim = x.shape
    y = sfu_rmsnorm(x, g, eps).astype(np.int64)
    eps_q, sd, e_sd = rmsnorm_consts(dim, eps)
    gb = lanes_of(g, n)
    nb = len(gb)
    beats, expect = [], []
    for r in range(rows):
        xb = lanes_of(x[r], n)
        beats += [{"x": pack(v, 16), "g": pack(np.zeros(n), 16)} for v in xb]  # pass 1: g unused
        beats += [{"x": pack(v, 16), "g": pack(w, 16)} for v, w in zip(xb, gb, strict=True)]
        expect += [(yb, np.arange(n) + b * n < dim) for b, yb in enumerate(lanes_of(y[r], n))]
    start = {"beats": nb, "eps_q": eps_q, "sd": sd, "e_sd": e_sd}
    return make_tile(cfg, "rmsnorm", start, beats, expect, rows, dim, kind)


def tiles_for(cfg: SfuConfig, rng: np.random.Generator, n_vectors: int, corners: bool) -> list[StreamTile]:
    n = cfg.lanes
    tiles = []
    full = (-(1 << 15), 1 << 15)
    if corners:
        d = 2 * n + 1
        tiles.append(norm_tile(cfg, np.zeros((2, d), np.int64), rng.integers(*full, d), 0.0, "zeros"))
        tiles.append(norm_tile(cfg, np.zeros((1, d), np.int64), rng.integers(*full, d), 1e-5, "zeros_eps"))
        one = np.zeros((2, d), np.int64)
        one[0, 3], one[1, -1] = -(1 << 15), 5
        tiles.append(norm_tile(cfg, one, rng.integers(*full, d), 1e-6, "one_hot"))
        ext = rng.choice([-(1 << 15), (1 << 15) - 1, 0], (3, d))
        tiles.append(norm_tile(cfg, ext, rng.integers(*full, d), 1e-6, "extremes"))
        tiles.append(norm_tile(cfg, rng.integers(-1, 2, (3, d)), np.full(d, 1 << 10), 1e-6, "tiny"))
        tiles.append(norm_tile(cfg, rng.integers(*full, (4, 1)), np.array([777]), 1e-6, "single"))
        tiles.append(norm_tile(cfg, rng.integers(*full, (5, n)), rng.integers(*full, n), 1e-6, "one_beat"))

    def rand() -> StreamTile:
        rows = int(rng.integers(1, 4))
        dim = int(rng.integers(1, 4 * n + 2)) if rng.random() < 0.8 else n * int(rng.integers(1, 4))
        x = rng.integers(*full, (rows, dim)) >> rng.integers(0, 15, (rows, 1))
        g = rng.integers(*full, dim) >> int(rng.integers(0, 6))
        return norm_tile(cfg, x, g, float(rng.choice([0.0, 1e-6, 1e-5])), "random")

    return fill_tiles(tiles, n_vectors, rand)


@cocotb.test()
async def sfu_rmsnorm_bench(dut):
    await run_op_bench(dut, tiles_for, {"x": 0, "g": 0, "beats": 0, "rows": 0, "eps_q": 0, "sd": 0, "e_sd": 0})
