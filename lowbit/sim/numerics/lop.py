"""Leading-One Prediction (LOP): leading-one surrogate attention scores and comparison-free top-K.

Surrogate (docs/reference/vitallm.md §5.4 steps 1-2; docs/reference/numerics.md §8.2 "Leading-one-only" / attention sketch): for an
INT8 query ``q`` and key ``k``::

    e(x)  = floor(log2 |x|)  (0..7; e(-128) = 7), undefined for x = 0 (zero flag)
    s_hat = sum_{i : q_i != 0, k_i != 0} sign(q_i) * sign(k_i) * 2^(e(q_i) + e(k_i))

Every product is under-estimated by < 4x in magnitude (docs/reference/numerics.md §8.2). Exact int64.

Surrogate storage (what the simulator charges per cached key element): **4 bits**,
``LOP_SURROGATE_BITS_PER_ELEM = 4``. Code 0 = zero; otherwise ``code = (sign << 3) | (e + 1)`` with
``e + 1`` in 1..7. Sign + zero flag + 3-bit exponent would be 5 bits, but zero needs no sign and
``|x| <= 127`` needs only e in 0..6, so 15 states fit in 4 bits. This is lossless on the range of the
BitNet absmax quantizer ([-127, 127], docs/reference/numerics.md §1.2); the single value -128 (e = 7) is stored
saturated as e = 6 (see :func:`lo_code4`). :func:`lo_scores` itself uses the exact e (0..7).

Top-K (docs/reference/vitallm.md §5.4 step 3; radix-select without comparators): each score is mapped to a bucket by
a monotone quantisation (:func:`lop_bucket`: signed, offset-binary leading-one position of the score,
optionally with ``mant_bits`` bits below the leading one). A per-bucket histogram over the M tokens is
scanned from the top bucket until the running count reaches K; that bucket is the threshold ``t``.
Every token in a bucket ``> t`` is selected; the remaining ``K - count(> t)`` slots are filled from
bucket ``t`` in **ascending token index** (lowest index wins the tie). Exactly ``min(K, M)`` indices
are returned, sorted ascending.

GQA (:func:`lop_group_topk`): the ``G = H / KV`` query heads that share a KV head share ONE selection, the
top-K of the group score ``sum_{h in group} s_hat_h[j]`` (exact integer sum of the heads' LO scores), so a
KV head fetches exactly ``min(K, M)`` keys and values. DESIGN ASSUMPTION: VitaLLM's §5.4 selects per query
head for its model, BitNet b1.58 3B, which is MHA (32 query heads, 32 KV heads; docs/reference/vitallm.md
§4), where a group is one head and this rule is the same, bit for bit. Under GQA the group's heads read
the same K/V rows, so one fetch serves them all; a single top-K of their summed scores keeps the fetch at a
fixed ``min(K, M)`` rows per KV head (a static program and DMA schedule, the chip's K/V addresses from
the LOP unit's index FIFO), where a per-head top-K with a union would fetch a data-dependent K..G K rows.
The sum factors as ``sum_i Q_g[i] sign(k_i) 2^e(k_i)`` with ``Q_g[i] = sum_h sign(q_hi) 2^e(q_hi)``: one
pass over the group's keys whatever G is.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "LOP_SURROGATE_BITS_PER_ELEM",
    "LOP_DEFAULT_N_BUCKETS",
    "leading_one",
    "lo_encode",
    "lo_code4",
    "lo_decode4",
    "lo_scores",
    "lop_bucket",
    "lop_histogram",
    "lop_threshold_bucket",
    "lop_topk",
    "lop_group_scores",
    "lop_group_topk",
]

LOP_SURROGATE_BITS_PER_ELEM = 4
"""Bits stored per key element for the LO surrogate (4-bit code: zero, or sign + (e+1) in 1..7)."""

LOP_DEFAULT_N_BUCKETS = 63
"""Default bucket count: 6-bit bucket index, magnitudes 1..31 per sign plus the zero bucket."""


def _int_array(x: npt.ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, got {a.dtype}")
    return a.astype(np.int64)


def leading_one(x: npt.ArrayLike) -> np.ndarray:
    """Leading-one position ``floor(log2 |x|)`` of integers (int8: 0..7, |-128| -> 7), ``-1`` for 0.

    Exact for ``|x| < 2^53`` via ``frexp`` (``|x| = m * 2^E``, ``m`` in [0.5, 1) -> ``E - 1``);
    this is the LOD of docs/reference/numerics.md §8.2. Returns int64 with ``x``'s shape.
    """
    a = np.abs(_int_array(x, "x"))
    if a.size and a.max() >= 1 << 53:
        raise ValueError("|x| must be < 2^53")
    _, exp = np.frexp(a.astype(np.float64))
    return exp.astype(np.int64) - 1  # frexp(0) gives exponent 0 -> -1


def lo_encode(x: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leading-one surrogate fields of INT8 ``x``: ``(sign, zero, exponent)``, each int8.

    ``sign = 1`` if x < 0 else 0; ``zero = 1`` if x == 0; ``exponent = floor(log2|x|)`` (0..7; 0 when
    zero). docs/reference/vitallm.md §5.4 step 1 ("3 bits ... plus a zero flag and the sign").
    """
    a = _int_array(x, "x")
    if a.size and (a.min() < -128 or a.max() > 127):
        raise ValueError("x must be INT8")
    e = leading_one(a)
    zero = a == 0
    return (a < 0).astype(np.int8), zero.astype(np.int8), np.where(zero, 0, e).astype(np.int8)


def lo_code4(x: npt.ArrayLike) -> np.ndarray:
    """4-bit stored surrogate code of INT8 ``x`` (uint8 0..15): 0 for zero, else ``(sign<<3) | (min(e,6)+1)``.

    Lossless for x in [-127, 127]; -128 saturates to e = 6 (decodes as -64). Code 8 is unused.
    """
    sign, zero, e = lo_encode(x)
    code = (sign.astype(np.int64) << 3) | (np.minimum(e, 6).astype(np.int64) + 1)
    return np.where(zero.astype(bool), 0, code).astype(np.uint8)


def lo_decode4(code: npt.ArrayLike) -> np.ndarray:
    """Decode 4-bit surrogate codes to the signed power of two they represent, ``±2^e`` or 0 (int64)."""
    c = _int_array(code, "code")
    if c.size and (c.min() < 0 or c.max() > 15 or np.any(c == 8)):
        raise ValueError("invalid 4-bit LO code (must be 0..15, not 8)")
    mag = np.where(c & 7 == 0, 0, np.int64(1) << np.maximum((c & 7) - 1, 0))
    return np.where(c >> 3 == 1, -mag, mag)


def _signed_pow2(x: np.ndarray) -> np.ndarray:
    """``sign(x) * 2^e(x)`` (0 for x = 0): the per-element leading-one approximation of ``x``."""
    e = leading_one(x)
    mag = np.where(e < 0, 0, np.int64(1) << np.maximum(e, 0))
    return np.sign(x) * mag


def lo_scores(q: npt.ArrayLike, k: npt.ArrayLike) -> np.ndarray:
    """LO surrogate score per key: ``sum_i sign(q_i) sign(k_i) 2^(e(q_i)+e(k_i))`` over nonzero pairs.

    ``q``: INT8 ``[..., d]``; ``k``: INT8 ``[..., M, d]`` (leading dims broadcast) -> int64 ``[..., M]``.
    Since ``sign(q)2^e(q) * sign(k)2^e(k)`` factors, this is an exact integer matmul of the signed
    powers of two (hardware: shift-and-add). docs/reference/vitallm.md §5.4 step 2; docs/reference/numerics.md §8.2.
    """
    qa = _int_array(q, "q")
    ka = _int_array(k, "k")
    for name, arr in (("q", qa), ("k", ka)):
        if arr.size and (arr.min() < -128 or arr.max() > 127):
            raise ValueError(f"{name} must be INT8")
    if qa.ndim < 1 or ka.ndim < 2 or qa.shape[-1] != ka.shape[-1]:
        raise ValueError(f"need q [..., d] and k [..., M, d]; got {qa.shape}, {ka.shape}")
    return np.matmul(_signed_pow2(ka), _signed_pow2(qa)[..., None])[..., 0]


def lop_bucket(
    scores: npt.ArrayLike, n_buckets: int = LOP_DEFAULT_N_BUCKETS, mant_bits: int = 0
) -> np.ndarray:
    """Monotone bucket index of integer scores in ``[0, n_buckets)`` (non-decreasing in the score).

    ``mag(s) = 0`` for s = 0, else ``((e+1) << mant_bits) | f`` with ``e = floor(log2|s|)`` and ``f`` the
    ``mant_bits`` bits just below the leading one (zero-extended when ``e < mant_bits``); ``mag`` is
    saturated to ``L = (n_buckets-1)//2``; ``bucket = L + sign(s) * mag`` (offset binary). With
    ``mant_bits = 0`` this is the signed leading-one position of docs/reference/vitallm.md §5.4 step 3.
    ``n_buckets`` must be odd and >= 3.
    """
    if n_buckets < 3 or n_buckets % 2 == 0:
        raise ValueError(f"n_buckets must be odd and >= 3, got {n_buckets}")
    if mant_bits < 0:
        raise ValueError("mant_bits must be >= 0")
    s = _int_array(scores, "scores")
    a = np.abs(s)
    e = leading_one(a)
    ep = np.maximum(e, 0)
    below = a - np.where(e < 0, 0, np.int64(1) << ep)  # bits under the leading one
    f = np.where(
        ep >= mant_bits, below >> np.maximum(ep - mant_bits, 0), below << np.maximum(mant_bits - ep, 0)
    )
    mag = np.where(a == 0, 0, ((ep + 1) << mant_bits) | f)
    half = (n_buckets - 1) // 2
    return half + np.sign(s) * np.minimum(mag, half)


def lop_histogram(buckets: npt.ArrayLike, n_buckets: int) -> np.ndarray:
    """Per-bucket token counts over the last axis: ``[..., M]`` bucket ids -> ``[..., n_buckets]`` int64."""
    b = _int_array(buckets, "buckets")
    if b.ndim == 0:
        raise ValueError("buckets must have a token axis")
    if b.size and (b.min() < 0 or b.max() >= n_buckets):
        raise ValueError(f"bucket ids must lie in [0, {n_buckets})")
    lead = b.shape[:-1]
    rows = int(np.prod(lead, dtype=np.int64))
    m = b.shape[-1]
    flat = b.reshape(rows, m) + (np.arange(rows, dtype=np.int64) * n_buckets)[:, None]
    return np.bincount(flat.ravel(), minlength=rows * n_buckets).reshape(lead + (n_buckets,))


def lop_threshold_bucket(hist: npt.ArrayLike, k: int) -> np.ndarray:
    """Threshold bucket: the highest ``t`` with ``count(bucket >= t) >= min(k, M)`` (scan from the top).

    ``hist`` is ``[..., n_buckets]``; returns int64 ``[...]``. For ``min(k, M) = 0`` returns
    ``n_buckets`` (nothing is selected).
    """
    h = _int_array(hist, "hist")
    nb = h.shape[-1]
    need = np.minimum(k, h.sum(axis=-1))
    cum_desc = np.cumsum(h[..., ::-1], axis=-1)[..., ::-1]  # cum_desc[t] = count(bucket >= t)
    reached = cum_desc >= need[..., None]
    # highest t with reached[t]: reached is True on a prefix [0..t*], so t* = count(True) - 1
    t = reached.sum(axis=-1) - 1
    return np.where(need == 0, nb, t)


def lop_topk(
    scores: npt.ArrayLike,
    k: int,
    n_buckets: int = LOP_DEFAULT_N_BUCKETS,
    mant_bits: int = 0,
) -> np.ndarray:
    """Comparison-free top-K over the last axis: returns ``[..., min(k, M)]`` int64 indices, ascending.

    Buckets by :func:`lop_bucket`, histogram, threshold bucket ``t`` by :func:`lop_threshold_bucket`;
    selects all tokens with bucket ``> t`` plus the lowest-index tokens of bucket ``t`` until exactly
    ``min(k, M)`` are chosen (deterministic tie rule). docs/reference/vitallm.md §5.4 step 3.
    """
    if k < 0:
        raise ValueError("k must be >= 0")
    s = _int_array(scores, "scores")
    if s.ndim == 0:
        raise ValueError("scores must have a token axis")
    m = s.shape[-1]
    kk = min(int(k), m)
    lead = s.shape[:-1]
    if kk == 0:
        return np.zeros(lead + (0,), np.int64)
    b = lop_bucket(s, n_buckets, mant_bits)
    t = lop_threshold_bucket(lop_histogram(b, n_buckets), kk)[..., None]
    above = b > t
    at = b == t
    n_fill = kk - above.sum(axis=-1, keepdims=True)
    rank_in_t = np.cumsum(at, axis=-1) - at  # number of earlier tokens in bucket t
    chosen = above | (at & (rank_in_t < n_fill))
    rows = int(np.prod(lead, dtype=np.int64))
    _, idx = np.nonzero(chosen.reshape(rows, m))  # row-major: ascending per row, kk per row
    return idx.reshape(lead + (kk,))


def lop_group_scores(scores: npt.ArrayLike, group: int) -> np.ndarray:
    """Group scores: ``[..., H, M]`` per-query-head integer LO scores -> ``[..., H // group, M]`` int64, the
    exact sum over each KV head's ``group`` consecutive query heads (head h reads KV head h // group)."""
    s = _int_array(scores, "scores")
    if group < 1 or s.ndim < 2 or s.shape[-2] % group:
        raise ValueError(f"need scores [..., H, M] with H a multiple of group = {group}; got {s.shape}")
    return s.reshape(s.shape[:-2] + (s.shape[-2] // group, group, s.shape[-1])).sum(axis=-2)


def lop_group_topk(
    scores: npt.ArrayLike,
    group: int,
    k: int,
    n_buckets: int = LOP_DEFAULT_N_BUCKETS,
    mant_bits: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The GQA selection (module docstring): per-head scores ``[..., H, M]`` -> ``(group scores [..., KV, M],
    indices [..., KV, min(k, M)] ascending)``, one :func:`lop_topk` per KV head over its group scores."""
    g = lop_group_scores(scores, group)
    return g, lop_topk(g, k, n_buckets, mant_bits)
