"""The KV cache in DRAM (lowbit.sim.kvcache, docs/kv-cache.md): addresses per layer, head and position, the
gather of LOP-selected keys, the bytes a step moves and the DRAM row hits/misses the gathers cause, all
against hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest

from lowbit.sim.config import load_config
from lowbit.sim.dram import dram_access, dram_params, dram_stats, new_dram_state
from lowbit.sim.engine import simulate
from lowbit.sim.errors import WorkloadError
from lowbit.sim.isa import C_DMAKV, C_JOIN, D_KV, D_LOP, KV_BASE, LOP_BASE, SUB
from lowbit.sim.kvcache import expand_gathers, fixed_positions, gather_segments, kv_addr, lo_addr, runs
from lowbit.sim.lower import Lowering
from lowbit.sim.modelspec import get_model
from lowbit.sim.trace import Trace
from lowbit.sim.validation import decode_step_trace
from lowbit.sim.workloads import step_ops

TINY = get_model("bitnet-tiny")      # 2 layers, 2 KV heads, head_dim 16, 256 positions
B3 = get_model("bitnet-b1.58-3b")    # 26 layers, 32 KV heads, head_dim 100, 2048 positions


def test_addresses_by_hand():
    # K[l=1, g=1, p=5] = KV_BASE + (((1*2 + 1)*2 + 0)*256 + 5)*16; V: is_v = 1; LO codes: 8 B per key
    assert kv_addr(TINY, 1, 1, False, 5) == KV_BASE + 24_656
    assert kv_addr(TINY, 1, 1, True, 5) == KV_BASE + 28_752
    assert lo_addr(TINY, 1, 1, 5) == LOP_BASE + 6_184
    # sequence 1 of a batched trace: one whole sequence (2 layers x 2 heads x 2 planes x 4096 B) higher
    assert kv_addr(TINY, 0, 0, False, 0, seq=1) == KV_BASE + 32_768
    # 3B: the K plane of (layer 2, head 3) starts after 2*32 + 3 heads' K+V planes of 204,800 B
    assert kv_addr(B3, 2, 3, False, 0) == KV_BASE + (2 * 32 + 3) * 2 * 204_800


def _chunks(cfg, model, ops, positions=None):
    lw = Lowering(cfg, model, "dependency-aware", True, cfg.lop.k, positions)
    return list(lw.lower_step(ops))


def test_kv_writes_land_at_layer_head_position():
    cfg = load_config("tiny")
    ctx = 100  # the new token is position 99
    chunks = _chunks(cfg, TINY, step_ops(TINY, "decode", 1, 1, ctx))
    layer1 = [c for c in chunks if "layers.1.attn.kv_append" in c.names][0].cols
    wr = (layer1["main"] == C_DMAKV) & (layer1["wr"] == 1)
    got = sorted(zip(layer1["addr"][wr].tolist(), layer1["nbytes"][wr].tolist(), layer1["dcls"][wr].tolist(), strict=True))
    want = sorted([(kv_addr(TINY, 1, g, v, 99), 16, D_KV) for g in range(2) for v in (False, True)]
                  + [(lo_addr(TINY, 1, g, 99), 8, D_LOP) for g in range(2)])
    assert got == want


def test_runs_and_fixed_positions():
    st, ln = runs(np.array([0, 1, 2, 7, 9, 10]))
    assert st.tolist() == [0, 7, 9] and ln.tolist() == [3, 1, 2]
    assert fixed_positions(200, 8).tolist() == [0, 25, 50, 75, 100, 125, 150, 175]
    assert fixed_positions(5, 8).tolist() == [0, 1, 2, 3, 4]
    # two DMA rows (keys 0..3 and 4..5 of a selection): a run never crosses a row boundary
    row, first, length = gather_segments(np.array([3, 4, 5, 9, 10, 11]), np.array([0, 4, 6]))
    assert row.tolist() == [0, 0, 1] and first.tolist() == [3, 9, 10] and length.tolist() == [3, 1, 2]


def _k_reads(cols, plane):
    """(addr, nbytes) of the K-fetch DMAs into one K plane (204,800 B for 3B), in list order."""
    sel = (cols["sub"] == SUB["k_dma"]) & (cols["addr"] >= plane) & (cols["addr"] < plane + 204_800)
    return list(zip(cols["addr"][sel].tolist(), cols["nbytes"][sel].tolist(), strict=True))


def _replay(cfg, reads):
    p, s = dram_params(cfg), new_dram_state(cfg)
    for a, n in reads:
        dram_access(p, s, a, n, 0.0, False, 1)
    st = dram_stats(s)
    return st["row_misses"], st["row_hits"]


def test_scattered_vs_contiguous_fetches_row_misses():
    """3B on vitallm at M = 2048, K = 32 (4 channels x 32 B bursts, 2 KB rows per channel = 8 KB stripes).
    Fixed ratio: keys 64 apart (6,400 B); each 100 B key starts burst-aligned -> 4 bursts, one per channel;
    key i lies in stripe floor(25 i / 32), so 25 stripes -> 25 row misses per channel: 100 misses, 28 hits.
    Contiguous keys 0..31: 3,200 B = 100 bursts in stripe 0: 4 misses (one per channel), 96 hits."""
    cfg = load_config("vitallm")
    ops = [o for o in step_ops(B3, "decode", 1, 1, 2048) if o.layer == 0]
    plane = kv_addr(B3, 0, 0, False, 0)
    scattered = [c for c in _chunks(cfg, B3, ops) if c.kinds and "attn_qk" in c.kinds][0].cols
    reads = _k_reads(scattered, plane)
    assert reads == [(plane + 6400 * i, 100) for i in range(32)]
    j = int(np.flatnonzero(scattered["addr"] == plane + 6400 * 31)[0]) + 1  # a join over the 32 gathers
    assert scattered["main"][j] == C_JOIN and scattered["jhi"][j] - scattered["jlo"][j] == 32
    assert _replay(cfg, reads) == (100, 28)
    block = {(0, 1): [np.arange(32)] * 32}
    contiguous = [c for c in _chunks(cfg, B3, ops, block) if c.kinds and "attn_qk" in c.kinds][0].cols
    reads = _k_reads(contiguous, plane)
    assert reads == [(plane, 3200)]
    assert _replay(cfg, reads) == (4, 96)


def test_bytes_per_step_and_selection_changes_cycles():
    """One 3B decode step (attention ops) at M = 2048, K = 32: bytes by hand, and a selection of adjacent keys
    (one DMA per head) is faster than the same number of scattered keys, with equal bytes."""
    cfg = load_config("vitallm")
    tr = decode_step_trace("bitnet-b1.58-3b", 2048, attention_only=True)
    fixed = simulate(cfg, tr)
    lop = fixed.lop
    assert lop["kv_dense_bytes"] == 2 * 2048 * 100 * 32 * 26 == 340_787_200
    assert lop["kv_read_bytes"] == 2 * 32 * 100 * 32 * 26 == 5_324_800
    assert lop["lop_bytes"] == 2048 * 50 * 32 * 26 == 85_196_800
    assert lop["kv_reduction_x"] == pytest.approx(340_787_200 / (5_324_800 + 85_196_800))
    # DRAM: + the new token's K and V (2 x 100 B) and LO codes (50 B) per head and layer
    assert fixed.dram_bytes["kv"] == 5_324_800 + 166_400
    assert fixed.dram_bytes["lop"] == 85_196_800 + 41_600
    recent = {(layer, 1): [np.arange(2016, 2048)] * 32 for layer in range(26)}  # the 32 most recent keys
    block = simulate(cfg, tr, lop_positions=recent)
    assert block.dram_bytes == fixed.dram_bytes and {**block.lop, "data_driven": False} == lop
    assert block.dram["row_misses"] < fixed.dram["row_misses"]
    assert block.cycles < fixed.cycles


def test_expand_gathers_remaps_indices():
    cols = ("main", "nbytes", "addr", "dep0", "free_of", "jlo", "jhi", "buf", "alloc")
    from lowbit.sim.isa import COLS, DEFAULT
    blk = {c: np.full(3, DEFAULT.get(c, 0), np.int64) for c in COLS}
    # 0: DMA (allocates 48 B), 1: tile depending on it and freeing it, 2: join over [0, 2)
    for c, v in zip(cols, ([C_DMAKV, 9, C_JOIN], [48, 0, 0], [1000, 0, 0], [-1, 0, -1], [-1, 0, -1],
                           [0, 0, 0], [0, 0, 2], [2, -1, -1], [48, 0, 0]), strict=False):
        blk[c] = np.asarray(v, np.int64)
    out = expand_gathers(blk, np.array([0]), np.array([0, 0]), np.array([1000, 1112]), np.array([16, 32]))
    assert out["main"].tolist() == [C_DMAKV, C_DMAKV, C_JOIN, 9, C_JOIN]
    assert out["addr"][:2].tolist() == [1000, 1112] and out["nbytes"][:2].tolist() == [16, 32]
    assert out["alloc"][:2].tolist() == [48, 0]           # the first gather allocates the chunk
    assert (out["jlo"][2], out["jhi"][2]) == (0, 2)       # the new join waits for both gathers
    assert out["dep0"][3] == 2 and out["free_of"][3] == 0  # the tile waits for the join, frees the first
    assert (out["jlo"][4], out["jhi"][4]) == (0, 4)       # the old join's range covers the expansion


def test_context_beyond_position_limit_is_refused():
    m = get_model("bitnet-b1.58-2b4t")  # 4096 positions
    tr = Trace(m, 4096, 1, step_ops(m, "decode", 1, 1, 4097), meta={})
    with pytest.raises(WorkloadError, match="context 4097 exceeds bitnet-b1.58-2b4t's max_positions 4096"):
        simulate(load_config("vitallm"), tr)
