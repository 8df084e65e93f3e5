"""Tiling rules (sim.tiling) on the `tiny` preset, against the numbers derived by hand in the module
docstring's rules: weight share 1024 B tile / 2 consumers = 512 B, psum 1024 B (not double-buffered),
act 1024 B per tile, TINT and BoothFlex 2 lanes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lowbit.sim.config import load_config
from lowbit.sim.errors import WorkloadError
from lowbit.sim.isa import C_BOOTH, C_TINT
from lowbit.sim.sram import Buffers
from lowbit.sim.tiling import causal_pairs, head_group, plan_linear, query_chunks, tile_grid


def _tiny(**sram):
    base = {"weight": 2048, "act": 2048, "kv": 1024, "lop": 512, "psum": 1024, "sfu": 512}
    base.update(sram)
    cfg = load_config("tiny").replace(sram=[{"name": k, "bytes": v, "double_buffered": k not in ("psum", "sfu")}
                                            for k, v in base.items()])
    return cfg, Buffers.from_config(cfg)


def test_plan_decode_projection():
    cfg, bufs = _tiny()
    p = plan_linear(cfg, bufs, "q", 1, 64, 64, "ternary")
    # L = lcm(2, 2); R = min(512 B / 16 B per row, 512 B psum / 4 B) = 32 rows
    assert (p.main, p.alt, p.L, p.R, p.nk, p.kc, p.tc, p.spill, p.row_bytes) == \
        (C_TINT, C_BOOTH, 2, 32, 1, 64, 1, False, 16)
    solo = plan_linear(cfg, bufs, "q", 1, 64, 64, "ternary", dual_core=False)
    assert (solo.alt, solo.R) == (-1, 64)  # one consumer: 1024 B share -> 64 rows (all of them)


def test_plan_prefill_spills_in_token_chunks():
    cfg, bufs = _tiny()
    p = plan_linear(cfg, bufs, "up", 64, 64, 128, "ternary")
    assert p.spill and p.tc == 1024 // 64  # 64 tokens x 64 inputs > 1024 B act tile
    # psum share 512 B: R = min(32, 512 / (16 tokens x 4 B) = 8) rows
    assert p.R == 8


def test_plan_splits_the_input_width():
    cfg, bufs = _tiny(act=8192)
    p = plan_linear(cfg, bufs, "down", 1, 1536, 64, "ternary")
    # 2 rows x 384 B > 512 B share -> 2 chunks of 768 inputs (192 B per row)
    assert (p.nk, p.kc, p.row_bytes) == (2, 768, 192)


def test_plan_errors():
    cfg, bufs = _tiny()
    with pytest.raises(WorkloadError, match="FP4 core"):
        plan_linear(cfg, bufs, "q", 1, 64, 64, "nvfp4")
    with pytest.raises(WorkloadError, match="no unit runs bf16"):
        plan_linear(cfg, bufs, "lm_head", 1, 64, 64, "bf16")


def test_tile_grid_covers_the_matrix():
    cfg, bufs = _tiny()
    p = plan_linear(cfg, bufs, "q", 1, 64, 70, "ternary")
    rr, kk, wb, woff = tile_grid(p, 64, 70, "ternary", "2bit")
    assert rr.tolist() == [32, 32, 6] and kk.tolist() == [64, 64, 64]
    assert wb.tolist() == [512, 512, 96] and woff.tolist() == [0, 512, 1024]  # 2 bit: rows x k / 4 B
    rr, kk, wb, _ = tile_grid(p, 64, 70, "ternary", "5trit")
    assert wb.tolist() == [32 * 13, 32 * 13, 6 * 13]  # ceil(64 / 5) B per row


def test_causal_pairs_brute_force():
    for q0, q1, qpos0, k0, k1 in itertools.product(range(3), range(3, 6), range(4), range(0, 8, 3), range(8, 12)):
        want = sum(1 for i in range(q0, q1) for j in range(k0, k1) if j <= qpos0 + i)
        assert causal_pairs(q0, q1, qpos0, k0, k1) == want


def test_query_chunks_fit_psum():
    _, bufs = _tiny()
    assert query_chunks(bufs, 2, 30, 10) == [(0, 12), (12, 24), (24, 30)]  # 1024 B / (2 x 10 x 4 B) = 12
    assert query_chunks(bufs, 2, 3, 100) == [(0, 1), (1, 2), (2, 3)]
    with pytest.raises(WorkloadError, match="'psum'"):
        query_chunks(bufs, 2, 1, 200)  # 1600 B of scores for one query


def test_head_group():
    assert head_group(12, 100, 20) == 3  # 3 heads of 100 rows = 300, a multiple of 12
    assert head_group(12, 100, 2) == 2
    assert head_group(2, 16, 8) == 1
    assert all((head_group(L, hd, 64) * hd) % L == 0 for L in (2, 6, 12, 16) for hd in (64, 100, 128))
    assert np.lcm(12, 100) // 100 == head_group(12, 100, 99)
