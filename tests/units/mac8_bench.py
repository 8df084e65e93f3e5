"""cocotb bench of MAC8 (test-suite unit): RTL vs tests.units.mac8.mac8_dot (bit-exact) and
mac8_tile_cycles (exact), on INT8 extremes and random tiles."""

from __future__ import annotations

import cocotb
import numpy as np

from lowbit.rtl.bench.common import compare, int8, load_job, pack, run_tiles, write_result
from lowbit.rtl.bench.stream import StreamTile
from tests.units.mac8 import Mac8Config, mac8_dot, mac8_tile_cycles


def make_tile(cfg: Mac8Config, w: np.ndarray, a: np.ndarray, kind: str) -> StreamTile:
    """w: (lanes, passes, k) INT8 weights, a: (passes, k) INT8 activations shared by the lanes."""
    t = cfg.width
    _, passes, k = w.shape
    nb = -(-k // t)
    wp = np.zeros((cfg.lanes, passes, nb * t), np.int64)
    ap = np.zeros((passes, nb * t), np.int64)
    wp[..., :k], ap[:, :k] = w, a
    beats = [{"w": pack(wp[:, p, b * t:(b + 1) * t].reshape(-1), 8), "act": pack(ap[p, b * t:(b + 1) * t], 8)}
             for p in range(passes) for b in range(nb)]
    acc, ovf = mac8_dot(w, a[None, :, :], cfg.acc_bits)  # (lanes, passes)
    return StreamTile(start={"beats": nb, "passes": passes}, beats=beats, expect=(acc.T, ovf.T),
                      expect_cycles=mac8_tile_cycles(cfg, k, passes), meta={"kind": kind, "k": k, "passes": passes})


@cocotb.test()
async def mac8_bench(dut):
    job = load_job()
    cfg = Mac8Config(**job["parameters"])
    rng = np.random.default_rng(job["seed"])
    k = 3 * cfg.width + 1
    tiles = [make_tile(cfg, np.full((cfg.lanes, 2, k), -128), np.full((2, k), -128), "extremes")]
    long_k = (1 << (cfg.acc_bits - 1)) // (1 << 14) + cfg.width  # -128 * -128 summed past the accumulator
    if long_k <= 4096:
        tiles.append(make_tile(cfg, np.full((cfg.lanes, 1, long_k), -128), np.full((1, long_k), -128), "overflow"))
    while sum(t.expect[0].size for t in tiles) < job["vectors"]:
        k, passes = int(rng.integers(1, 6 * cfg.width)), int(rng.integers(1, 4))
        tiles.append(make_tile(cfg, int8(rng, (cfg.lanes, passes, k)), int8(rng, (passes, k)), "random"))
    await run_tiles(dut, tiles, cfg.lanes, cfg.acc_bits, {"w": 0, "act": 0, "beats": 0, "passes": 0})
    write_result(job, compare(tiles))
