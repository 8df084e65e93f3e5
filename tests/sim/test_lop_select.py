"""LOP selection from trace tensors: equals direct sim.numerics.lop calls, one top-K per KV group (GQA), M <= K,
determinism."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file

from lowbit.sim import lop_select
from lowbit.sim.config import LopConfig, load_config
from lowbit.sim.errors import TraceError
from lowbit.sim.lop_select import (
    lo_values,
    lop_selected_counts,
    lop_selection,
    synthetic_qk_trace,
    write_qk_trace,
)
from lowbit.sim.modelspec import ModelSpec, get_model
from lowbit.sim.numerics.int8 import int8_absmax_quantize
from lowbit.sim.numerics.lop import lo_scores, lop_topk
from lowbit.sim.trace import write_trace
from lowbit.sim.trace_load import load_trace
from lowbit.sim.workloads import standard_trace

TINY = get_model("bitnet-tiny")  # 2 layers, 4 heads, 2 kv heads (GQA group 2), head_dim 16
CFG = LopConfig(k=6, buckets=63)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return load_trace(synthetic_qk_trace("bitnet-tiny", 30, 4, tmp_path_factory.mktemp("lop") / "t", seed=3))


def reference(trace, cfg, k, heads=False):
    """Direct library calls on the whole trace, no streaming: {(layer, step): [indices per kv head]}, the lop_topk of
    the sum of the group's query heads' lo_scores (`heads`: the union of each query head's own lop_topk)."""
    m = trace.model
    group = m.n_heads // m.n_kv_heads
    keys = {layer: [] for layer in range(m.n_layers)}
    out = {}
    for o in trace.ops:
        if o.op == "kv_append":
            keys[o.layer].append(int8_absmax_quantize(trace.load_tensor(o.tensors["k"]))[0])
        elif o.op == "attn_qk" and o.phase == "decode":
            K = np.concatenate(keys[o.layer], axis=1)  # [KV, M, hd] int8
            q = int8_absmax_quantize(trace.load_tensor(o.tensors["q"]))[0]
            hs = [range(g * group, (g + 1) * group) for g in range(m.n_kv_heads)]
            out[(o.layer, o.step)] = [
                sorted({int(j) for h in hs[g] for j in lop_topk(lo_scores(q[h], K[g]), k, cfg.buckets)}) if heads
                else lop_topk(sum(lo_scores(q[h], K[g]) for h in hs[g]), k, cfg.buckets) for g in range(m.n_kv_heads)]
    return out


def test_lo_values_matmul_equals_lo_scores_exactly():
    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, (5, 64)).astype(np.int8)
    k = rng.integers(-128, 128, (40, 64)).astype(np.int8)
    k[3] = 0
    k[4, :10] = -128
    got = (lo_values(q) @ lo_values(k).T).astype(np.int64)
    assert np.array_equal(got, np.stack([lo_scores(qi, k) for qi in q]))
    # worst case for float32 exactness: head_dim 1024, every product 2^14 -> 2^24
    big = np.full((1, 1024), -128, np.int8)
    assert int((lo_values(big) @ lo_values(big).T)[0, 0]) == int(lo_scores(big[0], big)[0]) == 1 << 24


@pytest.mark.parametrize("k", [1, 6, 13])
def test_selection_equals_direct_library_calls(synth, k):
    sel = lop_selection(synth, CFG, k=k, keep_indices=True)
    ref = reference(synth, CFG, k)
    assert set(sel.indices) == set(ref)
    for key, per_kv in ref.items():
        for g, idx in enumerate(per_kv):
            assert np.array_equal(sel.indices[key][g], idx), (key, g)
        assert np.array_equal(sel.fetched_for(*key), [len(i) for i in per_kv])
    assert list(sel.context) == [31, 32, 33, 34]
    assert np.all(sel.fetched == k)  # exactly K keys per KV head (K < M = 31..34)


def onehot_trace(tmp_path, q_rows):
    """P = 4 prefill keys + 1 decode key, key j = e_j (one-hot; INT8 127 at dim j); queries given per head."""
    hd = TINY.head_dim

    def make(layer, phase, step):
        t = 4 if phase == "prefill" else 1
        first = 0 if phase == "prefill" else 4
        k = np.zeros((TINY.n_kv_heads, t, hd), np.float32)
        for i in range(t):
            k[:, i, first + i] = 1.0
        out = {"k": k, "v": np.zeros_like(k)}
        if phase == "decode":
            q = np.zeros((TINY.n_heads, hd), np.float32)
            for h, dims in enumerate(q_rows):
                for d, val in dims.items():
                    q[h, d] = val
            out["q"] = q
        return out

    return load_trace(write_qk_trace(TINY, 4, 1, tmp_path / "onehot", make))


def test_gqa_group_rule_hand_built(tmp_path):
    # heads 0,1 -> kv 0; heads 2,3 -> kv 1. Score of key j = 2^(6+6) if q has 127 at dim j, else 0, so kv 0's
    # group scores are [2^12, 2^13, 2^12, 0, 0] and kv 1's [0, 0, 0, 2^13, 2^13].
    tr = onehot_trace(tmp_path, [{0: 1.0, 1: 1.0}, {1: 1.0, 2: 1.0}, {3: 1.0, 4: 1.0}, {3: 1.0, 4: 1.0}])
    sel = lop_selection(tr, CFG, k=2, keep_indices=True)
    for layer in range(2):
        assert sel.fetched_for(layer, 1).tolist() == [2, 2]  # per head top-2 and a union would fetch {0,1,2}
        assert [i.tolist() for i in sel.indices[(layer, 1)]] == [[0, 1], [3, 4]]  # key 1, then the tie: 0
    assert sel.kv_fetch_fraction == pytest.approx((2 + 2) / (2 * 5))
    assert {k: v.tolist() for k, v in sel.as_counts().items()} == {(0, 1): [2, 2], (1, 1): [2, 2]}
    # k = 1: the key both heads of kv 0 score (a union of per-head top-1s with the lowest-index tie rule: {0, 1})
    sel1 = lop_selection(tr, CFG, k=1, keep_indices=True)
    assert [i.tolist() for i in sel1.indices[(0, 1)]] == [[1], [3]]


def test_negative_scores_rank_below_zero(tmp_path):
    # head 0: +key1, -key2: top-2 = key 1 (positive) + lowest-index zero-score key 0; key 2 is never chosen
    tr = onehot_trace(tmp_path, [{1: 1.0, 2: -1.0}, {1: 1.0, 2: -1.0}, {0: 1.0}, {0: 1.0}])
    sel = lop_selection(tr, CFG, k=2, keep_indices=True)
    assert [i.tolist() for i in sel.indices[(0, 1)]] == [[0, 1], [0, 1]]


def test_m_le_k_selects_all_and_disabled_selects_all(synth):
    sel = lop_selection(synth, CFG, k=34)  # k >= M at every step (M = 31..34)
    assert np.array_equal(sel.fetched, np.broadcast_to(sel.context[None, :, None], sel.fetched.shape))
    assert sel.kv_fetch_fraction == 1.0
    off = lop_selection(synth, LopConfig(enabled=False, k=2, buckets=63))
    assert off.kv_fetch_fraction == 1.0
    part = lop_selection(synth, CFG, k=33, keep_indices=True)  # k >= M up to step 3, k < M = 34 at step 4
    assert np.all(part.fetched[:, :3] == part.context[None, :3, None])
    ref = reference(synth, CFG, 33)
    assert [len(i) for i in ref[(0, 4)]] == part.fetched_for(0, 4).tolist()
    assert np.all(part.fetched[:, 3] == 33)


def test_deterministic(tmp_path, synth):
    a = lop_selection(synth, CFG, keep_indices=True)
    b = lop_selection(synth, CFG, keep_indices=True)
    assert np.array_equal(a.fetched, b.fetched)
    again = load_trace(synthetic_qk_trace("bitnet-tiny", 30, 4, tmp_path / "again", seed=3))
    other = load_trace(synthetic_qk_trace("bitnet-tiny", 30, 4, tmp_path / "other", seed=4))
    key = "L1.s2.q"
    assert np.array_equal(again.load_tensor(key), synth.load_tensor(key))
    assert not np.array_equal(other.load_tensor(key), synth.load_tensor(key))
    assert np.array_equal(lop_selection(again, CFG).fetched, a.fetched)


def test_tensor_contract_shapes(synth):
    kv = next(o for o in synth.ops if o.op == "kv_append" and o.phase == "prefill")
    qk = next(o for o in synth.ops if o.op == "attn_qk" and o.phase == "decode")
    assert synth.load_tensor(kv.tensors["k"]).shape == (2, 30, 16)
    assert synth.load_tensor(kv.tensors["v"]).dtype == np.float32
    assert synth.load_tensor(qk.tensors["q"]).shape == (4, 16)


def test_trace_without_tensors_is_a_clear_error(tmp_path):
    p = write_trace(standard_trace("bitnet-tiny", 8, 2), tmp_path / "plain")
    with pytest.raises(TraceError, match="--tensors"):
        lop_selection(load_trace(p), CFG)


def test_engine_entry_point(tmp_path, synth):
    cfg = load_config("vitallm").replace(**{"lop.k": 6})
    counts = lop_selected_counts(synth, cfg)
    assert set(counts) == {(layer, s) for layer in range(2) for s in range(1, 5)}
    sel = lop_selection(synth, cfg.lop)
    assert all(np.array_equal(counts[key], sel.fetched_for(*key)) for key in counts)
    plain = load_trace(write_trace(standard_trace("bitnet-tiny", 8, 2), tmp_path / "plain"))
    assert lop_selected_counts(plain, cfg) == {}


# ----------------------------------------------------------------------------- batched == per-head reference

GQA4 = ModelSpec("gqa4-test", 3, 64, 8, 2, 128, 256)  # 3 layers, 8 heads on 2 kv heads (group 4), head_dim 8


def random_trace(tmp_path, dist: str, seed: int):
    """Random q/k on GQA4, prefill 6 + decode 5 (M = 7..11). "coarse": small integers, so INT8 codes repeat
    and scores tie exactly (also within buckets); some keys and query heads are all zero (score 0)."""
    def make(layer, phase, step):
        r = np.random.default_rng([seed, layer, step])
        t = 6 if phase == "prefill" else 1
        shape_k, shape_q = (GQA4.n_kv_heads, t, GQA4.head_dim), (GQA4.n_heads, GQA4.head_dim)
        if dist == "coarse":
            k = r.integers(-2, 3, shape_k).astype(np.float32)
            q = r.integers(-2, 3, shape_q).astype(np.float32)
            k[:, r.random(t) < 0.2] = 0.0
            q[r.random(GQA4.n_heads) < 0.15] = 0.0
        else:
            k = r.standard_normal(shape_k).astype(np.float32)
            q = r.standard_normal(shape_q).astype(np.float32)
        out = {"k": k, "v": k}
        if phase == "decode":
            out["q"] = q
        return out

    return load_trace(write_qk_trace(GQA4, 6, 5, tmp_path / f"{dist}{seed}", make))


@pytest.mark.parametrize("dist", ["gauss", "coarse"])
def test_batched_selection_equals_per_head_library_calls(tmp_path, dist):
    tr = random_trace(tmp_path, dist, seed=11)
    overlap = 0
    for buckets in (3, 63):
        cfg = LopConfig(k=4, buckets=buckets)
        for k in (1, 4, 9, 11, 40):  # 9: k < M for the last two steps only; 11, 40: M <= K everywhere
            sel = lop_selection(tr, cfg, k=k, keep_indices=True)
            ref = reference(tr, cfg, k)
            assert set(sel.indices) == set(ref)
            for key, per_kv in ref.items():
                for g, idx in enumerate(per_kv):
                    assert np.array_equal(sel.indices[key][g], idx), (buckets, k, key, g)
                assert sel.fetched_for(*key).tolist() == [len(i) for i in per_kv]
            assert np.all(sel.fetched == np.minimum(k, sel.context)[None, :, None])
            if k >= 11:
                assert sel.kv_fetch_fraction == 1.0
            if k < 9:  # a key some query head's own top-K keeps but the group's top-K drops
                own = reference(tr, cfg, k, heads=True)
                overlap += sum(not set(sel.indices[key][g].tolist()) >= set(own[key][g]) for key in own
                               for g in range(GQA4.n_kv_heads))
    assert overlap > 0  # the group rule is not one head's choice: it drops keys a head's own top-K keeps


def test_chunked_and_eager_paths_equal_default(tmp_path, monkeypatch):
    # tiny score chunks (one layer per lop_topk call) and every key tensor stored at once, as for long contexts
    tr = random_trace(tmp_path, "coarse", seed=5)
    want = lop_selection(tr, CFG, k=3, keep_indices=True)
    monkeypatch.setattr(lop_select, "_SCORE_CHUNK", 1)
    monkeypatch.setattr(lop_select, "_DEFER_MAX_ELEMS", 1)
    got = lop_selection(tr, CFG, k=3, keep_indices=True)
    assert np.array_equal(got.fetched, want.fetched) and np.all(want.fetched == 3)
    assert all(np.array_equal(a, b) for key in want.indices for a, b in zip(got.indices[key], want.indices[key],
                                                                            strict=True))


def test_npz_tensor_files_and_sliced_reads(tmp_path, monkeypatch):
    # the same tensors stored as .npz instead of .safetensors; sliced prefill reads (one token per chunk)
    src = random_trace(tmp_path, "gauss", seed=7)
    tdir = tmp_path / "npz_tensors"
    tdir.mkdir()
    files = []
    for i, rel in enumerate(src.tensor_files):
        np.savez(tdir / f"t{i}.npz", **load_file(str(src.root / rel)))
        files.append(f"tensors/t{i}.npz")
    src.tensor_files = files
    npz = load_trace(write_trace(src, tmp_path / "npz", tensor_dir=tdir))
    assert npz.tensor_files[0].endswith(".npz")
    want = lop_selection(random_trace(tmp_path / "again", "gauss", seed=7), CFG, k=3)
    assert np.array_equal(lop_selection(npz, CFG, k=3).fetched, want.fetched)
    monkeypatch.setattr(lop_select, "_DEFER_MAX_ELEMS", 1)
    assert np.array_equal(lop_selection(npz, CFG, k=3).fetched, want.fetched)
    assert np.array_equal(lop_selection(random_trace(tmp_path / "st", "gauss", seed=7), CFG, k=3).fetched,
                          want.fetched)
