"""cocotb bench: SFU activation datapath vs sim.numerics.sfu_elem.sfu_act (bit-exact) for SiLU and ReLU^2,
gated and not, and cycles start->done vs sim.units.sfu.sfu_cycles(cfg, "activation", rows, dim) (exact).

Rows = vectors. Corners: every table region of the sigmoid (|g| around 0, the 1/16 interval ends, 16.0
where the table ends, the int16 extremes), saturating products (gated ReLU^2 of large values), a
one-element row and dim not a multiple of lanes; the mode changes from tile to tile.
"""

from __future__ import annotations

import cocotb
import numpy as np

from lowbit.rtl.bench.common import pack
from lowbit.rtl.bench.sfu_stream import fill_tiles, lanes_of, make_tile, run_op_bench
from lowbit.rtl.bench.stream import StreamTile
from lowbit.rtl.sfu_act import FN_CODES
from lowbit.sim.config import SfuConfig
from lowbit.sim.numerics.sfu_elem import sfu_act


def act_tile(cfg: SfuConfig, g: np.ndarray, u: np.ndarray | None, fn: str, kind: str) -> StreamTile:
    n = cfg.lanes
    rows, dim = g.shape
    y = sfu_act(g, u, fn).astype(np.int64)
    uu = np.zeros_like(g) if u is None else u  # the DUT ignores u when not gated
    nb = -(-dim // n)
    beats, expect = [], []
    for r in range(rows):
        for b, (gb, ub, yb) in enumerate(zip(lanes_of(g[r], n), lanes_of(uu[r], n), lanes_of(y[r], n), strict=True)):
            beats.append({"g": pack(gb, 16), "u": pack(ub, 16)})
            expect.append((yb, np.arange(n) + b * n < dim))
    start = {"beats": nb, "fn": FN_CODES[fn], "gated": int(u is not None)}
    return make_tile(cfg, "activation", start, beats, expect, rows, dim, f"{kind}_{fn}{'_glu' if u is not None else ''}")


def tiles_for(cfg: SfuConfig, rng: np.random.Generator, n_vectors: int, corners: bool) -> list[StreamTile]:
    n = cfg.lanes
    tiles = []
    if corners:
        edges = np.array([0, 1, -1, 15, 16, 17, -16, 4095, 4096, 4097, -4096, -4097, 32767, -32768, 256, -256])
        g = np.resize(edges, (2, max(len(edges), 2 * n + 1)))
        for fn in ("silu", "relu2"):
            tiles.append(act_tile(cfg, g, None, fn, "edges"))
            tiles.append(act_tile(cfg, g, rng.choice([-32768, 32767, 1, -1, 0, 300], g.shape), fn, "edges"))
        tiles.append(act_tile(cfg, np.array([[-77]]), np.array([[1234]]), "silu", "single"))

    def rand() -> StreamTile:
        rows = int(rng.integers(1, 4))
        dim = int(rng.integers(1, 4 * n + 2))
        g = rng.integers(-(1 << 15), 1 << 15, (rows, dim)) >> rng.integers(0, 15, (rows, 1))
        u = rng.integers(-(1 << 15), 1 << 15, (rows, dim)) >> rng.integers(0, 15, (rows, 1))
        return act_tile(cfg, g, u if rng.random() < 0.7 else None, str(rng.choice(["silu", "relu2"])), "random")

    return fill_tiles(tiles, n_vectors, rand)


@cocotb.test()
async def sfu_act_bench(dut):
    await run_op_bench(dut, tiles_for, {"g": 0, "u": 0, "beats": 0, "rows": 0, "fn": 0, "gated": 0})
