"""cocotb bench: SFU softmax datapath vs sim.numerics.sfu_reduce.sfu_softmax (bit-exact), cycles start->done
vs sim.units.sfu.sfu_cycles(cfg, "softmax", rows, dim) (exact).

Rows = vectors. Corners: constant rows (uniform probabilities), one dominant score (1.0 exactly), the
int16 extremes (differences of 2^16 - 1: exponentials underflow to 0), all scores negative (the tail
lanes must not win the max), a one-element row, dim not a multiple of lanes, back-to-back one-beat rows.
"""

from __future__ import annotations

import cocotb
import numpy as np

from lowbit.rtl.bench.common import pack
from lowbit.rtl.bench.sfu_stream import fill_tiles, lanes_of, make_tile, run_op_bench
from lowbit.rtl.bench.stream import StreamTile
from lowbit.sim.config import SfuConfig
from lowbit.sim.numerics.sfu_reduce import sfu_softmax


def softmax_tile(cfg: SfuConfig, x: np.ndarray, kind: str) -> StreamTile:
    n = cfg.lanes
    rows, dim = x.shape
    y = sfu_softmax(x).astype(np.int64)
    nb = -(-dim // n)
    beats, expect = [], []
    for r in range(rows):
        xb = [{"x": pack(v, 16)} for v in lanes_of(x[r], n)]
        beats += xb * 3
        expect += [(yb, np.arange(n) + b * n < dim) for b, yb in enumerate(lanes_of(y[r], n))]
    return make_tile(cfg, "softmax", {"beats": nb, "tail": dim - (nb - 1) * n}, beats, expect, rows, dim, kind)


def tiles_for(cfg: SfuConfig, rng: np.random.Generator, n_vectors: int, corners: bool) -> list[StreamTile]:
    n = cfg.lanes
    tiles = []
    full = (-(1 << 15), 1 << 15)
    if corners:
        d = 2 * n + 1
        tiles.append(softmax_tile(cfg, np.full((2, d), -1234), "constant"))
        dom = np.full((2, d), -(1 << 15))
        dom[0, 4], dom[1, -1] = (1 << 15) - 1, 0
        tiles.append(softmax_tile(cfg, dom, "dominant"))
        tiles.append(softmax_tile(cfg, rng.choice([-(1 << 15), (1 << 15) - 1, 0, -1], (3, d)), "extremes"))
        tiles.append(softmax_tile(cfg, -rng.integers(1, 3000, (3, d)), "negative"))
        tiles.append(softmax_tile(cfg, rng.integers(*full, (3, 1)), "single"))
        tiles.append(softmax_tile(cfg, rng.integers(-2000, 2000, (5, n)), "one_beat"))

    def rand() -> StreamTile:
        rows = int(rng.integers(1, 4))
        dim = int(rng.integers(1, 4 * n + 2)) if rng.random() < 0.8 else n * int(rng.integers(1, 4))
        x = rng.integers(*full, (rows, dim)) >> rng.integers(2, 16, (rows, 1))
        return softmax_tile(cfg, x, "random")

    return fill_tiles(tiles, n_vectors, rand)


@cocotb.test()
async def sfu_softmax_bench(dut):
    await run_op_bench(dut, tiles_for, {"x": 0, "beats": 0, "rows": 0, "tail": 0}, out_signed=False)
