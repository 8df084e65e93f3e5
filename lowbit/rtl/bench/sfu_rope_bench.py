"""cocotb bench: SFU RoPE datapath vs sim.numerics.sfu_elem.sfu_rope (bit-exact), cycles start->done vs
sim.units.sfu.sfu_cycles(cfg, "rope", rows, head_dim) (exact).

Rows = vectors. Corners: full-range x with +-1.0 cos/sin (saturation at +-2^15), random int16 cos/sin (the
datapath's whole input range), a one-pair row, head_dim not a multiple of lanes; random tiles use the
real RoPE table (rope_table) at random positions.
"""

from __future__ import annotations

import cocotb
import numpy as np

from lowbit.rtl.bench.common import pack
from lowbit.rtl.bench.sfu_stream import fill_tiles, lanes_of, make_tile, run_op_bench
from lowbit.rtl.bench.stream import StreamTile
from lowbit.sim.config import SfuConfig
from lowbit.sim.numerics.sfu_elem import rope_table, sfu_rope


def rope_tile(cfg: SfuConfig, x: np.ndarray, c: np.ndarray, s: np.ndarray, kind: str) -> StreamTile:
    hp = cfg.lanes // 2
    rows, dim = x.shape
    h = dim // 2
    y = sfu_rope(x, c, s).astype(np.int64)
    nb = -(-h // hp)
    beats, expect = [], []
    for r in range(rows):
        x1, x2, y1, y2 = lanes_of(x[r, :h], hp), lanes_of(x[r, h:], hp), lanes_of(y[r, :h], hp), lanes_of(y[r, h:], hp)
        cc, ss = lanes_of(c[r], hp), lanes_of(s[r], hp)
        for b in range(nb):
            beats.append({"x": pack(np.concatenate([x1[b], x2[b]]), 16), "cos": pack(cc[b], 16),
                          "sin": pack(ss[b], 16)})
            live = np.arange(hp) + b * hp < h
            expect.append((np.concatenate([y1[b], y2[b]]), np.concatenate([live, live])))
    return make_tile(cfg, "rope", {"beats": nb}, beats, expect, rows, dim, kind)


def tiles_for(cfg: SfuConfig, rng: np.random.Generator, n_vectors: int, corners: bool) -> list[StreamTile]:
    n = cfg.lanes
    tiles = []
    if corners:
        d = 2 * n + 2
        x = rng.choice([-(1 << 15), (1 << 15) - 1, 0, 1, -1], (3, d))
        one = np.full((3, d // 2), 1 << 14)
        tiles.append(rope_tile(cfg, x, one, -one, "extremes"))
        x = rng.integers(-(1 << 15), 1 << 15, (3, d))
        tiles.append(rope_tile(cfg, x, *(rng.integers(-(1 << 15), 1 << 15, (2, 3, d // 2))), "random_trig"))
        tiles.append(rope_tile(cfg, rng.integers(-999, 999, (2, 2)), *rope_table([5, 77], 2), "one_pair"))

    def rand() -> StreamTile:
        rows = int(rng.integers(1, 4))
        dim = 2 * int(rng.integers(1, 2 * n + 2))
        pos = rng.integers(0, 4096, rows)
        x = rng.integers(-(1 << 15), 1 << 15, (rows, dim)) >> rng.integers(0, 15, (rows, 1))
        return rope_tile(cfg, x, *rope_table(pos, dim), "random")

    return fill_tiles(tiles, n_vectors, rand)


@cocotb.test()
async def sfu_rope_bench(dut):
    await run_op_bench(dut, tiles_for, {"x": 0, "cos": 0, "sin": 0, "beats": 0, "rows": 0})
