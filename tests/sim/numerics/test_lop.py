"""LOP: leading-one codes, surrogate scores vs loops, bucket monotonicity, top-K vs a sort-based reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lowbit.sim.numerics.lop import (
    LOP_SURROGATE_BITS_PER_ELEM,
    leading_one,
    lo_code4,
    lo_decode4,
    lo_encode,
    lo_scores,
    lop_bucket,
    lop_group_scores,
    lop_group_topk,
    lop_histogram,
    lop_threshold_bucket,
    lop_topk,
)

INT8 = np.arange(-128, 128)


def ref_e(x: int) -> int:
    return abs(x).bit_length() - 1  # -1 for 0


def test_leading_one_exhaustive() -> None:
    assert leading_one(INT8.astype(np.int8)).tolist() == [ref_e(int(x)) for x in INT8]
    assert leading_one(np.array([0, 1, 127, -128, 2**40 + 5])).tolist() == [-1, 0, 6, 7, 40]


def test_lo_encode_exhaustive() -> None:
    sign, zero, e = lo_encode(INT8)
    assert sign.tolist() == [int(x < 0) for x in INT8]
    assert zero.tolist() == [int(x == 0) for x in INT8]
    assert e.tolist() == [max(ref_e(int(x)), 0) for x in INT8]
    assert e.max() == 7  # only -128


def test_code4_lossless_on_quantizer_range() -> None:
    assert LOP_SURROGATE_BITS_PER_ELEM == 4
    x = np.arange(-127, 128)
    c = lo_code4(x)
    assert c.max() < 1 << LOP_SURROGATE_BITS_PER_ELEM and not np.any(c == 8)
    expect = [0 if v == 0 else (1 if v > 0 else -1) * (1 << ref_e(int(v))) for v in x]
    assert lo_decode4(c).tolist() == expect
    assert len(set(c.tolist())) == 15  # zero + 2 signs x 7 exponents
    assert lo_decode4(lo_code4(np.array([-128]))).tolist() == [-64]  # saturated


def ref_scores(q: list[int], ks: list[list[int]]) -> list[int]:
    out = []
    for k in ks:
        s = 0
        for qi, ki in zip(q, k, strict=True):
            if qi != 0 and ki != 0:
                sgn = 1 if (qi > 0) == (ki > 0) else -1
                s += sgn * 2 ** (ref_e(qi) + ref_e(ki))
        out.append(s)
    return out


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 3), st.integers(1, 9), st.integers(1, 24), st.integers(0, 2**32 - 1))
def test_lo_scores_vs_loop(b: int, m: int, d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    q = rng.integers(-128, 128, size=(b, d)).astype(np.int8)
    k = rng.integers(-128, 128, size=(b, m, d)).astype(np.int8)
    k[..., ::3] = 0  # exercise the zero flag
    s = lo_scores(q, k)
    assert s.dtype == np.int64 and s.shape == (b, m)
    for i in range(b):
        assert s[i].tolist() == ref_scores(q[i].tolist(), k[i].tolist())


def test_lo_scores_extremes() -> None:
    q = np.full(128, -128, np.int8)
    k = np.full((2, 128), -128, np.int8)
    k[1] = 127
    assert lo_scores(q, k).tolist() == [128 * 2**14, -128 * 2**13]


scores_st = hnp.arrays(np.int64, st.integers(0, 40), elements=st.integers(-(2**24), 2**24))


@settings(max_examples=150, deadline=None)
@given(scores_st, st.sampled_from([3, 7, 15, 63]), st.integers(0, 3))
def test_bucket_monotone_and_in_range(s: np.ndarray, nb: int, mb: int) -> None:
    b = lop_bucket(s, nb, mb)
    assert b.shape == s.shape
    assert np.all((b >= 0) & (b < nb))
    order = np.argsort(s, kind="stable")
    assert np.all(np.diff(b[order]) >= 0)
    assert np.all(b[s == 0] == (nb - 1) // 2)
    assert np.all(b[s > 0] > (nb - 1) // 2) and np.all(b[s < 0] < (nb - 1) // 2)


def ref_bucket(s: int, nb: int) -> int:
    half = (nb - 1) // 2
    mag = min(abs(s).bit_length(), half)  # leading-one position + 1, 0 for 0
    return half + (mag if s > 0 else -mag)


def ref_topk(scores: list[int], k: int, nb: int) -> list[int]:
    """Sort-based: order by (bucket desc, index asc), take the first K, return ascending."""
    keyed = sorted(range(len(scores)), key=lambda j: (-ref_bucket(scores[j], nb), j))
    return sorted(keyed[:k])


@settings(max_examples=200, deadline=None)
@given(scores_st, st.integers(0, 45), st.sampled_from([3, 9, 63]))
def test_topk_vs_sort_reference(s: np.ndarray, k: int, nb: int) -> None:
    idx = lop_topk(s, k, n_buckets=nb)
    m = s.size
    assert idx.shape == (min(k, m),)
    assert idx.tolist() == ref_topk(s.tolist(), k, nb)
    assert lop_bucket(s, nb).tolist() == [ref_bucket(int(v), nb) for v in s]
    if 0 < k <= m:
        b = lop_bucket(s, nb)
        t = int(lop_threshold_bucket(lop_histogram(b, nb), k))
        sel = np.zeros(m, bool)
        sel[idx] = True
        assert np.all(sel[b > t])  # every key above the threshold bucket is taken
        assert not np.any(sel[b < t])
        assert np.all(np.diff(idx) > 0)
        if (~sel).any():
            assert b[sel].min() >= b[~sel].max()


def ref_group_topk(scores: list[list[int]], group: int, k: int, nb: int) -> list[list[int]]:
    """Plain loops: per KV head the integer sum of its `group` query heads' scores, then the sort-based top-K."""
    out = []
    for g in range(len(scores) // group):
        tot = [0] * len(scores[0])
        for h in range(g * group, (g + 1) * group):
            for j, v in enumerate(scores[h]):
                tot[j] += v
        out.append(ref_topk(tot, k, nb))
    return out


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([(1, 1), (2, 1), (4, 2), (6, 3), (8, 1)]), st.integers(1, 30), st.integers(0, 35),
       st.sampled_from([3, 31, 63]), st.integers(0, 2**32 - 1))
def test_group_topk_vs_loops(hk: tuple[int, int], m: int, k: int, nb: int, seed: int) -> None:
    h, kv = hk
    rng = np.random.default_rng(seed)
    s = rng.integers(-(2**14), 2**14, (h, m)) >> rng.integers(0, 14, (h, m))  # many magnitudes and bucket ties
    gs, idx = lop_group_topk(s, h // kv, k, n_buckets=nb)
    assert gs.tolist() == [[sum(int(s[r, j]) for r in range(g * (h // kv), (g + 1) * (h // kv))) for j in range(m)]
                           for g in range(kv)]
    assert idx.shape == (kv, min(k, m)) and idx.tolist() == ref_group_topk(s.tolist(), h // kv, k, nb)
    if h == kv:  # MHA: one head per group, the per-head rule bit for bit
        assert np.array_equal(idx, lop_topk(s, k, n_buckets=nb))


def test_group_rule_differs_from_the_union_of_head_top_k() -> None:
    """GQA, 2 heads on 1 KV head, K = 2: head 0's top-2 is keys 0, 1, head 1's keys 0, 3 (the tie of three 8s goes
    to key 0); their union would fetch 3 keys, the group's top-2 of the sums [40, 24, 8, 33, 0] exactly 2
    (bucket 32..63: keys 0 and 3)."""
    s = np.array([[32, 16, 0, 1, 0],
                  [8, 8, 8, 32, 0]])
    per_head = {int(j) for h in range(2) for j in lop_topk(s[h], 2)}
    assert sorted(per_head) == [0, 1, 3]
    gs, idx = lop_group_topk(s, 2, 2)
    assert gs.tolist() == [[40, 24, 8, 33, 0]] and idx.tolist() == [[0, 3]] == ref_group_topk(s.tolist(), 2, 2, 63)
    # batched leading dims: two steps x (4 heads on 2 KV heads) equal the rows one by one
    b = np.stack([np.concatenate([s, s[::-1]]), np.concatenate([s[::-1], -s])])
    got = lop_group_topk(b, 2, 2)[1]
    assert got.shape == (2, 2, 2)
    assert all(np.array_equal(got[i, g], lop_group_topk(b[i, 2 * g:2 * g + 2], 2, 2)[1][0])
               for i in range(2) for g in range(2))
    with pytest.raises(ValueError, match="multiple of group"):
        lop_group_scores(np.zeros((3, 4), np.int64), 2)


def test_topk_tie_rule_lowest_index() -> None:
    s = np.array([5, 1, 5, 9, 0, 5, 6])  # 5 and 6 share the leading-one bucket
    assert lop_topk(s, 3).tolist() == [0, 2, 3]
    assert lop_topk(s, 4).tolist() == [0, 2, 3, 5]
    assert lop_topk(s, 0).tolist() == [] and lop_topk(s, 99).tolist() == list(range(7))


def test_topk_batched_matches_rows() -> None:
    rng = np.random.default_rng(3)
    s = rng.integers(-1000, 1000, size=(2, 3, 50))
    out = lop_topk(s, 10, n_buckets=15, mant_bits=2)
    assert out.shape == (2, 3, 10)
    for i in range(2):
        for j in range(3):
            assert np.array_equal(out[i, j], lop_topk(s[i, j], 10, n_buckets=15, mant_bits=2))


def test_bucket_mant_bits_refines() -> None:
    s = np.array([8, 9, 10, 12, 15])
    assert len(set(lop_bucket(s, 63, 0).tolist())) == 1
    assert lop_bucket(s, 63, 2).tolist() == [31 + 16, 31 + 16, 31 + 17, 31 + 18, 31 + 19]


def test_errors() -> None:
    with pytest.raises(ValueError):
        lop_bucket(np.array([1]), 8)
    with pytest.raises(ValueError):
        lop_topk(np.array([1, 2]), -1)
    with pytest.raises(ValueError):
        lo_scores(np.array([1, 2], np.int8), np.array([1, 2], np.int8))
    with pytest.raises(ValueError):
        lo_decode4(np.array([8]))
    with pytest.raises(TypeError):
        leading_one(np.array([1.5]))
