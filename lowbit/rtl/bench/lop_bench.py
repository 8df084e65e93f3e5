"""cocotb bench: LOP scoring (LopScore) and comparison-free top-K (LopTopK) vs sim.numerics.lop, bit-exact,
and cycles start->done vs sim.units.lop (exact).

lop_score vectors = key scores: ``lo_scores(q, lo_decode4(lo_code4(k)))``; corners: INT8 extremes (q = -128,
k = -128 saturating to code e = 6, +-127), all-zero q / keys, the longest head_dim the accumulator holds
at maximum |term| (2^13) in both signs, M < lanes, M not a multiple of lanes, d not a multiple of width.
lop_topk vectors = top-K problems: ``lop_topk(scores, k, buckets)`` (selected index sets); corners: all
scores equal (one bucket, lowest-index fill), K = 0, K = M, K > M, M = 1, M not a multiple of lanes,
saturating buckets (|score| up to 2^(score_bits-1)), zeros, ties straddling the threshold bucket.
"""

from __future__ import annotations

import cocotb
import numpy as np

from lowbit.rtl.bench.common import int8, load_job, pack, unpack, write_result
from lowbit.rtl.bench.stream import StreamTile, run_stream, summarize
from lowbit.sim.config import LopConfig
from lowbit.sim.numerics.lop import lo_code4, lo_decode4, lo_scores, lop_topk
from lowbit.sim.units.lop import lop_score_cycles, lop_topk_cycles

TERM_MAX_LOG2 = 13


def _cfg(p: dict) -> LopConfig:
    return LopConfig(**{k: v for k, v in p.items() if k in LopConfig.__dataclass_fields__})


# ----------------------------------------------------------------------------- scoring


def score_tile(cfg: LopConfig, q: np.ndarray, keys: np.ndarray, kind: str) -> StreamTile:
    """q: (d,) INT8, keys: (M, d) INT8 -> tile with expected scores (M,)."""
    n, w = cfg.lanes, cfg.width
    m, d = keys.shape
    codes = lo_code4(keys).astype(np.int64)
    expect = lo_scores(q, lo_decode4(codes))
    passes, nb = -(-m // n), -(-d // w)
    qp = np.zeros(nb * w, np.int64)
    qp[:d] = q
    cp = np.zeros((passes * n, nb * w), np.int64)
    cp[:m, :d] = codes
    beats = []
    for p in range(passes):
        for b in range(nb):
            beats.append({"q": pack(qp[b * w:(b + 1) * w], 8),
                          "kcode": pack(cp[p * n:(p + 1) * n, b * w:(b + 1) * w].reshape(-1), 4)})
    return StreamTile(start={"beats": nb, "passes": passes}, beats=beats, expect=expect,
                      expect_cycles=lop_score_cycles(cfg, m, d), meta={"kind": kind, "m": m, "d": d})


def score_tiles(cfg: LopConfig, rng, n_vectors: int, corners: bool) -> list[StreamTile]:
    n, w = cfg.lanes, cfg.width
    max_d = ((1 << (cfg.score_bits - 1)) - 1) >> TERM_MAX_LOG2
    tiles = []
    if corners:
        d = 3 * w + 1
        tiles.append(score_tile(cfg, int8(rng, d), np.zeros((n + 1, d), np.int64), "zero_keys"))
        tiles.append(score_tile(cfg, np.zeros(d, np.int64), int8(rng, (n, d)), "zero_q"))
        tiles.append(score_tile(cfg, rng.choice([-128, 127], d), rng.choice([-128, 127, -127], (2 * n + 1, d)),
                                "extremes"))
        tiles.append(score_tile(cfg, int8(rng, 1), int8(rng, (1, 1)), "m1_d1"))
        dm = min(max_d, 2048)  # longest key at max |term| = 2^13 (q = -128, k = +-127 -> code e = 6)
        kmax = np.stack([np.full(dm, 127), np.full(dm, -127), np.full(dm, -128)])
        tiles.append(score_tile(cfg, np.full(dm, -128), kmax, "max_score"))
        if n > 1:
            tiles.append(score_tile(cfg, int8(rng, w), int8(rng, (n - 1, w)), "m_lt_lanes"))
    have = sum(len(t.expect) for t in tiles)
    while have < n_vectors:
        m = int(rng.integers(1, 4 * n + 2))
        d = int(rng.integers(1, 3 * w + 2)) if rng.random() < 0.7 else w * int(rng.integers(1, 4))
        ext = float(rng.choice([0.0, 0.1, 0.5]))
        keys = int8(rng, (m, d), ext)
        keys = np.where(rng.random((m, d)) < rng.choice([0.0, 0.3]), 0, keys)
        tiles.append(score_tile(cfg, int8(rng, d, ext), keys, "random"))
        have += m
    return tiles


def _collect_scores(cfg: LopConfig):
    def f(dut):
        return (unpack(int(dut.out_score.value), cfg.score_bits, cfg.lanes),
                unpack(int(dut.out_ovf.value), 1, cfg.lanes, signed=False))
    return f


def _score_bad(cfg: LopConfig):
    def f(t: StreamTile) -> int:
        m = len(t.expect)
        got = [s for g, _ in t.got for s in g][:m]
        ovf = [o for _, g in t.got for o in g][:m]
        if len(got) != m:
            return m
        return int(np.sum(np.asarray(got) != t.expect) + np.sum(np.asarray(ovf) != 0))
    return f


# ----------------------------------------------------------------------------- top-K


def topk_tile(cfg: LopConfig, scores: np.ndarray, k: int, kind: str) -> StreamTile:
    n, nb = cfg.lanes, cfg.buckets
    m = len(scores)
    p = -(-m // n)
    sp = np.zeros(p * n, np.int64)
    sp[:m] = scores
    p1 = [{"scores": pack(sp[i * n:(i + 1) * n], cfg.score_bits)} for i in range(p)]
    beats = p1 + [None] * nb + p1
    expect = lop_topk(scores, k, nb)
    return StreamTile(start={"m": m, "k": k}, beats=beats, expect=[int(i) for i in expect],
                      expect_cycles=lop_topk_cycles(cfg, m), meta={"kind": kind, "m": m, "k": k, "scores": scores})


def random_scores(cfg: LopConfig, rng, m: int) -> np.ndarray:
    """Signed scores with log-uniform magnitudes over the whole score range (spreads the buckets)."""
    top = cfg.score_bits - 1
    e = rng.integers(0, top + 1, m)
    mag = np.array([int(rng.integers(0, 1 << int(x))) if x else 0 for x in e], dtype=np.int64)
    mag = np.where(e == top, np.minimum(mag + (1 << (top - 1)), (1 << top) - 1), mag)
    s = np.where(rng.random(m) < 0.5, -mag, mag)
    return np.where(rng.random(m) < 0.02, -(1 << top), s)


def topk_tiles(cfg: LopConfig, rng, n_vectors: int, corners: bool) -> list[StreamTile]:
    n, sb = cfg.lanes, cfg.score_bits
    tiles = []
    if corners:
        m = 3 * n + 1
        tiles.append(topk_tile(cfg, np.full(m, 77), min(cfg.k, m - 1) or 1, "all_equal"))
        tiles.append(topk_tile(cfg, np.zeros(m, np.int64), 2, "all_zero"))
        tiles.append(topk_tile(cfg, random_scores(cfg, rng, m), 0, "k0"))
        tiles.append(topk_tile(cfg, random_scores(cfg, rng, m), m, "k_eq_m"))
        tiles.append(topk_tile(cfg, random_scores(cfg, rng, m), m + 5, "k_gt_m"))
        tiles.append(topk_tile(cfg, np.array([-5]), 1, "m1"))
        ext = np.array([-(1 << (sb - 1)), (1 << (sb - 1)) - 1, 1, -1, 0] * n)
        tiles.append(topk_tile(cfg, ext, n + 1, "saturating_buckets"))
        ties = np.array(([9, 8, 12, 15, 3] * (n + 1))[:2 * n + 3])  # 8..15 share a bucket
        tiles.append(topk_tile(cfg, ties, n, "ties_at_threshold"))
        q, keys = int8(rng, 64), int8(rng, (5 * n + 3, 64))
        tiles.append(topk_tile(cfg, lo_scores(q, lo_decode4(lo_code4(keys))), cfg.k, "lo_scores"))
    while len(tiles) < n_vectors:
        m = int(rng.integers(1, 6 * n + 3))
        k = int(rng.integers(0, m + 3)) if rng.random() < 0.5 else min(cfg.k, m)
        if rng.random() < 0.3:  # few distinct values -> heavy ties
            s = rng.choice(random_scores(cfg, rng, 3), m)
        else:
            s = random_scores(cfg, rng, m)
        tiles.append(topk_tile(cfg, s, k, "random"))
    return tiles


def _collect_sel(cfg: LopConfig):
    def f(dut):
        s, base = int(dut.out_sel.value), int(dut.out_base.value)
        return [base + lane for lane in range(cfg.lanes) if s >> lane & 1]
    return f


def _topk_bad(t: StreamTile) -> int:
    got = [i for g in t.got for i in g]
    return int(got != t.expect)


# ----------------------------------------------------------------------------- test


@cocotb.test()
async def lop_bench(dut):
    job = load_job()
    cfg = _cfg(job["parameters"])
    rng = np.random.default_rng(job["seed"])
    opts = job["options"]
    corners = opts.get("corners", True)
    gold = _cfg({**job["parameters"], **opts.get("override", {})})  # override: check the bench can fail
    if job["unit"] == "lop_score":
        tiles = score_tiles(cfg, rng, job["vectors"], corners)
        if gold != cfg:
            for t in tiles:
                t.expect = t.expect + 1
        idle = {"q": 0, "kcode": 0, "beats": 0, "passes": 0}
        total = await run_stream(dut, tiles, idle, _collect_scores(cfg))
    else:
        tiles = topk_tiles(cfg, rng, job["vectors"], corners)
        for t in tiles:
            t.expect = [int(i) for i in lop_topk(t.meta["scores"], t.meta["k"], gold.buckets)]
        idle = {"scores": 0, "m": 0, "k": 0}
        total = await run_stream(dut, tiles, idle, _collect_sel(cfg))
    for t in tiles:
        t.meta.pop("scores", None)
        t.expect_cycles += opts.get("cycle_offset", 0)
    res = summarize(tiles, lambda t: len(t.expect) if job["unit"] == "lop_score" else 1,
                    _score_bad(cfg) if job["unit"] == "lop_score" else _topk_bad)
    res["sim_cycles"] = total
    write_result(job, res)
