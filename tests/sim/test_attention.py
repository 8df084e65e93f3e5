"""Attention tiling and lowering (sim.tiling.attention_plan, sim.attention): dense vs online softmax, against
numbers derived by hand from the module docstrings' rules on the `tiny` preset and bitnet-tiny (head_dim 16,
2 query heads per KV head, 2 KV heads, 2 layers): KV tile 512 B -> key blocks of 32 keys; BoothFlex 2 lanes x
width 2 (int8 tile = passes x ceil(k / 2) + 5 cycles); SFU 4 lanes, softmax latency 16."""

from __future__ import annotations

import numpy as np
import pytest

from lowbit.sim.attention import online_block_cycles, online_final_cycles, pv_pass_keys
from lowbit.sim.config import load_config
from lowbit.sim.engine import simulate
from lowbit.sim.errors import WorkloadError
from lowbit.sim.isa import C_DMAKV, SUB
from lowbit.sim.lower import Lowering
from lowbit.sim.modelspec import get_model
from lowbit.sim.sram import Buffers
from lowbit.sim.tiling import attention_plan, query_chunks
from lowbit.sim.trace import SeqSpec
from lowbit.sim.workloads import batch_trace, check_workload, layer_ops


def _cfg(psum: int = 1024):
    base = {"weight": 2048, "act": 2048, "kv": 1024, "lop": 512, "psum": psum, "sfu": 512}
    return load_config("tiny").replace(sram=[{"name": k, "bytes": v, "double_buffered": k not in ("psum", "sfu")}
                                             for k, v in base.items()])


def test_plan_dense_when_its_chunk_is_not_smaller():
    bufs = Buffers.from_config(_cfg())
    # 30 keys: dense 1024 / (2 x 30 x 4) = 4 queries; online kb = 30, 1024 / (2 x (30 + 16 + 2) x 4) = 2
    p = attention_plan(bufs, 2, 16, 30, 30)
    assert not p.online and p.queries == query_chunks(bufs, 2, 30, 30) and p.key_block == 32
    # one decode query over 120 keys: dense holds it (1024 / 960 = 1)
    assert not attention_plan(bufs, 2, 16, 1, 120).online


def test_plan_online_when_dense_is_refused_or_smaller():
    bufs = Buffers.from_config(_cfg())
    # 200 keys: one query's scores (2 x 200 x 4 = 1600 B) exceed psum: refused before, now online
    with pytest.raises(WorkloadError):
        query_chunks(bufs, 2, 1, 200)
    p = attention_plan(bufs, 2, 16, 1, 200)
    assert p.online and p.queries == [(0, 1)] and p.key_block == 32
    # psum 2048, 64 queries x 64 keys: dense 2048 / 512 = 4 queries < online 2048 / (2 x 50 x 4) = 5
    big = Buffers.from_config(_cfg(2048))
    p = attention_plan(big, 2, 16, 64, 64)
    assert p.online and p.key_block == 32
    assert p.queries == [(q, min(64, q + 5)) for q in range(0, 64, 5)]


def test_plan_shrinks_the_key_block_then_refuses():
    bufs = Buffers.from_config(_cfg(256))
    # 256 B: 256 / (2 x 50 x 4) = 0 queries with 32 keys -> kb = 256 / 8 - 18 = 14 keys, 1 query
    p = attention_plan(bufs, 2, 16, 4, 100)
    assert p.online and p.key_block == 14 and p.queries == [(0, 1), (1, 2), (2, 3), (3, 4)]
    with pytest.raises(WorkloadError, match="'psum'"):
        attention_plan(Buffers.from_config(_cfg(128)), 2, 16, 1, 100)  # 2 x (16 + 3) x 4 = 152 B > 128 B


def test_online_sfu_cycles_by_hand():
    # 2 rows, 32 keys, head_dim 16, 4 lanes, latency 16
    assert online_block_cycles(4, 16, 2, 32, 16, first=True, fused_max=True) == 2 * 8 + 16
    assert online_block_cycles(4, 16, 2, 32, 16, first=True, fused_max=False) == 2 * (8 + 8) + 16
    # later block: exp of 32 scores + the correction factor (ceil(33 / 4) = 9), rescale of O (16 / 4 = 4)
    assert online_block_cycles(4, 16, 2, 32, 16, first=False, fused_max=True) == 2 * (9 + 4) + 16
    assert online_final_cycles(4, 16, 2, 16) == 2 * 4 + 16


def test_pv_pass_keys_by_hand():
    # 3 queries, 3 outputs a query, 2 lanes: passes end at outputs 1, 3, 5, 7, 8 -> 1 pass in query 0's rows
    # (keys 1), 2 in query 1's (keys 2), 2 in query 2's (keys 3)
    assert pv_pass_keys(0, 5, 3, 3, 2) == ((1, 1), (2, 2), (3, 2))
    # a chunk starting 2 keys past the first query: queries 0, 1 see none of its keys, 2 and 3 one and two
    assert pv_pass_keys(-2, 4, 4, 2, 2) == ((0, 1), (0, 1), (1, 1), (2, 1))
    # keys capped at the chunk's 3 (non-causal: a >= n - 1)
    assert pv_pass_keys(3, 3, 2, 4, 4) == ((3, 1), (3, 1))


def test_causal_score_v_tiles_by_hand():
    """Prefill 8 (one dense query chunk): 8 queries x 2 heads x 16 dims, 2 lanes -> 16 passes a query over
    its own t + 1 keys: 16 x (1 + 1 + 2 + 2 + 3 + 3 + 4 + 4) + 5 = 325 (the average keys, ceil(36 / 8) = 5,
    gave 128 x 3 + 5 = 389). Prefill 20: query chunks of floor(1024 / (2 x 20 x 4)) = 6 queries; chunk
    [6, 12) sees 7 .. 12 keys: 16 x (4 + 4 + 5 + 5 + 6 + 6) + 5 = 485, chunk [18, 20) 16 x (10 + 10) + 5."""
    c, _ = _layer(8, 8)
    assert c["cyc"][c["sub"] == SUB["av"]].tolist() == [325, 325]
    c, _ = _layer(20, 20)
    av = c["cyc"][c["sub"] == SUB["av"]].tolist()
    assert av == [16 * (1 + 1 + 2 + 2 + 3 + 3) + 5, 485, 16 * (7 + 7 + 8 + 8 + 9 + 9) + 5, 325] * 2


def _layer(tokens: int, context: int, psum: int = 1024, policy: str = "dependency-aware"):
    m = get_model("bitnet-tiny")
    ops = layer_ops(m, 0, "decode" if tokens == 1 else "prefill", 0, tokens, context)
    ch = next(c for c in Lowering(_cfg(psum), m, policy, False, 8).lower_step(ops))
    return ch.cols, ch.names


@pytest.mark.parametrize("policy", ["dependency-aware", "inorder"])
def test_online_decode_by_hand(policy):
    """One decode query over 200 keys (refused before): 7 key blocks (6 x 32 + 8) per KV head."""
    c, names = _layer(1, 200, policy=policy)
    k = c["sub"] == SUB["k_dma"]
    v = c["sub"] == SUB["v_dma"]
    assert k.sum() == v.sum() == 2 * 7
    assert c["nbytes"][k].sum() == c["nbytes"][v].sum() == 2 * 200 * 16  # each key once per query block
    assert (c["main"][k] == C_DMAKV).all()
    # QK^T: outs = 2n scores, n passes of 16 inputs: 8n + 5; score.V: 16 passes over n keys: 16 ceil(n/2) + 5
    assert c["cyc"][c["sub"] == SUB["qk"]].tolist() == [261] * 6 + [69] + [261] * 6 + [69]
    assert c["cyc"][c["sub"] == SUB["av"]].tolist() == [261] * 6 + [69] + [261] * 6 + [69]
    sm = (c["sub"] == SUB["softmax"]) & (c["opi"] == names.index("layers.0.attn.softmax"))
    # rows 2, lanes 4, latency 16: block 0: 2 x 8; blocks 1-5: 2 x (9 + 4); block 6 (8 keys): 2 x (3 + 4);
    # each + the max pass (2 x 8, 2 x 2 for 8 keys) unless fused with QK^T; final O /= l: 2 x 4
    nf = policy != "dependency-aware"
    head = [16 + 16 * nf] + [26 + 16 * nf] * 5 + [14 + 4 * nf] + [8]
    assert c["cyc"][sm].tolist() == [x + 16 for x in head] * 2


def test_online_prefill_kv_reuse_by_hand():
    """64 causal queries x 64 keys on psum 2048: query blocks of 5; blocks 0-5 (queries < 30) see key block 0
    only, blocks 6-12 both: 20 K (and V) fetches of 32 keys per KV head (dense chunks of 4 would take 24)."""
    c, _ = _layer(64, 64, psum=2048)
    k = c["sub"] == SUB["k_dma"]
    assert k.sum() == 2 * 20
    assert c["nbytes"][k].sum() == 2 * 20 * 32 * 16
    # MACs of QK^T: every causal (query, key) pair once, for 2 query heads x 16 dims, 2 KV heads
    assert c["macs"][c["sub"] == SUB["qk"]].sum() == 2 * (64 * 65 // 2) * 2 * 16
    # score.V, block [30, 35) (queries at 30 .. 34, 16 passes each): key block 0 (32 keys) 31, 32 keys, then
    # 32 for the rest: 16 x (16 + 16 + 16 x 3) + 5 = 1285; key block 1: 0, 0, 1, 2, 3 keys: 16 x (1 + 1 + 2) + 5
    av = c["cyc"][c["sub"] == SUB["av"]].tolist()
    assert av[6:8] == [1285, 69]


def test_refused_decode_now_runs_and_reads_what_dense_reads():
    tr = batch_trace("bitnet-tiny", [SeqSpec(199, 0, 1)])
    online = simulate(_cfg(), tr, no_lop=True)
    dense = simulate(_cfg(4096), tr, no_lop=True)  # 4096 / (2 x 200 x 4) = 2 queries: dense
    # 2 layers x 2 KV heads x (200 K + 200 V) x 16 B read, plus the new token's K and V written
    assert online.dram_bytes["kv"] == dense.dram_bytes["kv"] == 2 * 2 * 2 * 200 * 16 + 2 * 2 * 2 * 16
    assert check_workload(_cfg(), tr, no_lop=True).instructions >= online.instructions
    assert online.cycles > 0 and np.isfinite(online.decode_tokens_per_s)
