"""Bench helpers shared by the SFU op benches (sfu_rmsnorm_bench, sfu_softmax_bench, sfu_rope_bench,
sfu_act_bench): tiles of rows streamed pass by pass, expected outputs per output beat with a lane mask
(tail lanes of a row are don't-care), row-level mismatch counting and the run loop.

A tile is ``rows`` rows of one ``dim``; its start carries ``beats`` = ceil(dim / lanes) (RoPE: pairs) and
``rows`` plus the op's per-tile parameters; it expects ``sim.units.sfu.sfu_cycles(cfg, op, rows, dim)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lowbit.rtl.bench.common import load_job, unpack, write_result
from lowbit.rtl.bench.stream import StreamTile, run_stream, summarize
from lowbit.sim.config import SfuConfig
from lowbit.sim.units.sfu import SFU_PASSES, sfu_cycles


def lanes_of(row: np.ndarray, lanes: int) -> list[np.ndarray]:
    """A row cut into beats of ``lanes`` values, the tail zero-padded."""
    nb = -(-len(row) // lanes)
    p = np.zeros(nb * lanes, np.int64)
    p[:len(row)] = row
    return [p[b * lanes:(b + 1) * lanes] for b in range(nb)]


def make_tile(cfg: SfuConfig, op: str, start: dict[str, int], beats: list[dict[str, int]],
              expect: list[tuple[np.ndarray, np.ndarray]], rows: int, dim: int, kind: str) -> StreamTile:
    """``expect``: one (values, mask) per output beat, in order; a row's output beats are contiguous."""
    assert len(beats) == rows * SFU_PASSES[op] * start["beats"]
    return StreamTile(start={**start, "rows": rows}, beats=beats, expect=expect,
                      expect_cycles=sfu_cycles(cfg, op, rows, dim),
                      meta={"kind": kind, "rows": rows, "dim": dim})


def _bad(t: StreamTile) -> int:
    rows = t.meta["rows"]
    if len(t.got) != len(t.expect):
        return rows
    per_row = len(t.expect) // rows
    bad = 0
    for r in range(rows):
        for b in range(r * per_row, (r + 1) * per_row):
            want, mask = t.expect[b]
            if np.any((np.asarray(t.got[b]) != want) & mask):
                bad += 1
                break
    return bad


def _examples(ti: int, t: StreamTile) -> list[dict[str, Any]]:
    if len(t.got) != len(t.expect):
        return [{"tile": ti, **t.meta, "error": f"got {len(t.got)} output beats, want {len(t.expect)}"}]
    out = []
    for b, (want, mask) in enumerate(t.expect):
        got = np.asarray(t.got[b])
        for lane in np.nonzero((got != want) & mask)[0][:2]:
            out.append({"tile": ti, **t.meta, "beat": b, "lane": int(lane), "got": int(got[lane]),
                        "want": int(want[lane])})
    return out[:5]


async def run_op_bench(dut, make_tiles: Callable[[SfuConfig, np.random.Generator, int, bool], list[StreamTile]],
                       idle: dict[str, int], out_signed: bool = True) -> None:
    """The whole bench: job -> tiles -> drive -> result.json (rows compared; cycles per tile)."""
    job = load_job()
    p = job["parameters"]
    opts = job["options"]
    cfg = SfuConfig(lanes=p["lanes"], latency=p["latency"])
    rng = np.random.default_rng(job["seed"])
    tiles = make_tiles(cfg, rng, job["vectors"], opts.get("corners", True))
    if opts.get("corrupt"):  # a wrong golden: the bench must fail
        for t in tiles:
            t.expect = [(w + 1, m) for w, m in t.expect]
    n = cfg.lanes
    total = await run_stream(dut, tiles, idle, lambda d: unpack(int(d.out.value), 16, n, signed=out_signed))
    for t in tiles:
        t.expect_cycles += opts.get("cycle_offset", 0)
    res = summarize(tiles, lambda t: t.meta["rows"], _bad, examples=_examples)
    res["sim_cycles"] = total
    write_result(job, res)


def fill_tiles(tiles: list[StreamTile], n_vectors: int, make_random: Callable[[], StreamTile]) -> list[StreamTile]:
    """Append random tiles until the tiles hold at least ``n_vectors`` rows."""
    have = sum(t.meta["rows"] for t in tiles)
    while have < n_vectors:
        t = make_random()
        tiles.append(t)
        have += t.meta["rows"]
    return tiles
