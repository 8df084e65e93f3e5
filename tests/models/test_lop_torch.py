"""PyTorch LOP selection (models/lop_attention.py) == sim.numerics golden model, incl. GQA and causal masks."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lowbit.models.lop_attention import (  # noqa: E402
    LopAttention,
    int8_absmax_torch,
    lo_scores_torch,
    lop_bucket_torch,
    lop_select,
)
from lowbit.sim.numerics.int8 import int8_absmax_quantize  # noqa: E402
from lowbit.sim.numerics.lop import lo_scores, lop_bucket, lop_group_topk, lop_topk  # noqa: E402


def test_int8_matches_sim():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 17, 32, generator=g) * torch.rand(3, 4, 17, 1, generator=g) * 5
    x[0, 0, 0] = 0.0  # all-zero row -> eps clamp
    q_ref, _ = int8_absmax_quantize(x.numpy())
    np.testing.assert_array_equal(int8_absmax_torch(x).numpy().astype(np.int64), q_ref.astype(np.int64))


@pytest.mark.parametrize("mant_bits", [0, 2])
def test_bucket_matches_sim(mant_bits):
    rng = np.random.default_rng(1)
    s = np.concatenate([rng.integers(-(2**20), 2**20, 2000), np.arange(-40, 41), [2**40, -(2**40)]])
    for nb in (3, 15, 63):
        got = lop_bucket_torch(torch.from_numpy(s), nb, mant_bits).numpy()
        np.testing.assert_array_equal(got, lop_bucket(s, nb, mant_bits))


def test_scores_match_sim():
    rng = np.random.default_rng(2)
    q = rng.integers(-128, 128, (2, 3, 5, 16))
    k = rng.integers(-128, 128, (2, 3, 9, 16))
    q[0, 0, 0, :4] = 0
    got = lo_scores_torch(torch.from_numpy(q).double(), torch.from_numpy(k).double()).numpy()
    ref = np.stack([lo_scores(q[..., t, :], k) for t in range(q.shape[-2])], axis=-2)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("K", [1, 3, 8, 40])
def test_select_matches_lop_topk_with_ties(K):
    rng = np.random.default_rng(K)
    s = rng.integers(-300, 300, (4, 37))  # many bucket ties
    keep = lop_select(torch.from_numpy(s), K).numpy()
    for r in range(s.shape[0]):
        np.testing.assert_array_equal(np.nonzero(keep[r])[0], lop_topk(s[r], K))


@pytest.mark.parametrize("H,KV", [(4, 2), (4, 4), (6, 1)])
def test_attention_selection_gqa_causal(H, KV):
    """The keys LopAttention keeps for each (batch, KV head, query) == sim.numerics' group rule over the visible
    keys (one lop_topk of the group's summed lo_scores)."""
    g = torch.Generator().manual_seed(H * 10 + KV)
    B, T, S, hd, K, off = 2, 5, 12, 16, 4, 7
    q = torch.randn(B, H, T, hd, generator=g)
    k = torch.randn(B, KV, S, hd, generator=g)
    v = torch.randn(B, KV, S, hd, generator=g)
    kept = {}

    class Spy(LopAttention):
        def __call__(self, q, k, v, layer, offset):
            import lowbit.models.lop_attention as la

            orig = la.lop_select

            def spy(*a, **kw):
                m = orig(*a, **kw)
                kept["mask"] = m
                return m

            la.lop_select = spy
            try:
                return super().__call__(q, k, v, layer, offset)
            finally:
                la.lop_select = orig

    out = Spy(k=K)(q, k, v, 0, off)
    assert out.shape == (B, H, T, hd) and torch.isfinite(out).all()
    mask = kept["mask"].numpy()
    assert mask.shape == (B, KV, T, S)  # one selection per KV head, shared by its query heads
    qn, _ = int8_absmax_quantize(q.numpy())
    kn, _ = int8_absmax_quantize(k.numpy())
    grp = H // KV
    for b in range(B):
        for kv in range(KV):
            for t in range(T):
                vis = off + t + 1
                sc = np.stack([lo_scores(qn[b, h, t], kn[b, kv, :vis]) for h in range(kv * grp, (kv + 1) * grp)])
                _, want = lop_group_topk(sc, grp, K)
                np.testing.assert_array_equal(np.nonzero(mask[b, kv, t])[0], want[0])


def test_large_k_equals_dense_attention():
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 4, 9, 8, generator=g) for _ in range(3))
    lop = LopAttention(k=64)
    dense = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(lop(q, k, v, 0, 0), dense, rtol=1e-5, atol=1e-6)
    assert lop.kept_fraction == 1.0 and lop.recall == 1.0


def test_recall_counts_overlap_with_exact_topk():
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(1, 2, 40, 16, generator=g) for _ in range(3))
    lop, orc = LopAttention(k=4), LopAttention(k=4, oracle=True)
    lop(q, k, v, 0, 0)
    orc(q, k, v, 0, 0)
    assert orc.recall == 1.0 and lop.kept == orc.kept
    assert 0.3 < lop.recall < 1.0  # an approximation: good but not perfect on random data


def _masked_scores(attn: LopAttention, q, k, v) -> torch.Tensor:
    """The scores `attn` hands to softmax (dropped keys at -inf), caught by wrapping Tensor.softmax."""
    captured = {}
    orig = torch.Tensor.softmax

    def spy(self, dim):
        captured["att"] = self
        return orig(self, dim)

    torch.Tensor.softmax = spy
    try:
        attn(q, k, v, 0, 0)
    finally:
        torch.Tensor.softmax = orig
    return captured["att"]


def test_oracle_topk_keeps_the_largest_exact_scores():
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(1, 2, 6, 8, generator=g) for _ in range(3))
    att = _masked_scores(LopAttention(k=3, oracle=True), q, k, v)
    exact = (q @ k.transpose(-1, -2)) / 8**0.5
    for t in range(6):
        kept = torch.isfinite(att[0, 0, t]).nonzero().flatten().tolist()
        assert kept == sorted(exact[0, 0, t, : t + 1].topk(min(3, t + 1)).indices.tolist())


def test_shared_oracle_keeps_each_kv_heads_top_k_of_summed_exact_scores():
    """Independent loop: per KV head and query row, the K visible keys with the largest sum over its query
    heads of q.k / sqrt(d); every query head of the group keeps that same set."""
    g = torch.Generator().manual_seed(11)
    B, H, KV, T, hd, K = 1, 4, 2, 7, 8, 3
    q = torch.randn(B, H, T, hd, generator=g)
    k, v = (torch.randn(B, KV, T, hd, generator=g) for _ in range(2))
    orc = LopAttention(k=K, oracle=True, shared=True)
    kept = torch.isfinite(_masked_scores(orc, q, k, v))[0]  # [H, T, S]
    grp = H // KV
    for kv in range(KV):
        for t in range(T):
            sums = [sum(float(q[0, kv * grp + j, t] @ k[0, kv, s]) for j in range(grp)) for s in range(t + 1)]
            want = set(sorted(range(t + 1), key=lambda s: -sums[s])[:K])
            for j in range(grp):
                got = {s for s in range(T) if kept[kv * grp + j, t, s]}
                assert got == want, (kv, t, j)
    assert orc.kept == sum(min(K, t + 1) for t in range(T)) * H


def test_shared_oracle_is_the_per_head_oracle_on_mha():
    g = torch.Generator().manual_seed(12)
    q, k, v = (torch.randn(1, 2, 9, 8, generator=g) for _ in range(3))
    a = LopAttention(k=3, oracle=True)(q, k, v, 0, 0)
    b = LopAttention(k=3, oracle=True, shared=True)(q, k, v, 0, 0)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
