"""Fixed-point SFU absmax quantizer (sim.numerics.sfu) vs exact rational rounding and vs the float
BitNet quantizer (sim.numerics.int8.int8_absmax_quantize).

Measured (asserted below): with the default R = in_bits + 2 the fixed-point codes equal the exact
RNE(127 x / amax) for every input (exhaustive for W = 6, 9, 11; 200k random 24-bit elements; 127
constructed 24-bit ties) and differ from the float reference by at most 1 code, only at exact ties,
where float64's rounded scale 127*(1/amax) breaks the tie the other way (W = 11 exhaustive: 182 of
2,101,246 codes, all at the 2,032 exact ties).
"""

from __future__ import annotations

import numpy as np
import pytest

from lowbit.sim.numerics.int8 import int8_absmax_quantize
from lowbit.sim.numerics.sfu import sfu_absmax_quantize, sfu_reciprocal


def exact_rne(x: np.ndarray, amax: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact RNE(127 x / amax) with integer arithmetic, and the exact-tie mask."""
    mag = np.abs(x).astype(np.int64)
    num, den = 127 * mag, np.maximum(amax, 1)
    qf, rem = num // den, num % den
    tie = 2 * rem == den
    q = qf + ((2 * rem > den) | (tie & (qf % 2 == 1)))
    q = np.where(amax == 0, 0, q)
    return np.where(x < 0, -q, q), tie & (amax > 0)


def _all_pairs(w: int) -> np.ndarray:
    """Rows [x, amax] for every amax in 1..2^(w-1) and x in -amax..amax (x = +2^(w-1) excluded)."""
    rows = []
    for am in range(1, (1 << (w - 1)) + 1):
        xs = np.arange(-am, am + 1)
        if am == 1 << (w - 1):
            xs = xs[:-1]  # +2^(w-1) is not a w-bit value; this amax comes from -2^(w-1)
            rows.append(np.stack([xs, np.full_like(xs, -am)], axis=1))
        else:
            rows.append(np.stack([xs, np.full_like(xs, am)], axis=1))
    return np.concatenate(rows)


@pytest.mark.parametrize("w", [6, 9, 11])
def test_exhaustive_small_width_equals_exact_rne(w):
    """Every (x, amax) pair of a W-bit input: fixed point == exact RNE(127 x / amax), ties included."""
    pairs = _all_pairs(w)
    q, amax = sfu_absmax_quantize(pairs, in_bits=w)
    ex, tie = exact_rne(pairs, amax)
    assert np.array_equal(q.astype(np.int64), ex)
    assert tie.sum() >= 32  # the set contains many exact ties (x = amax/2 -> 63.5, ...)


def test_too_short_reciprocal_breaks_exactness():
    """The R >= W + 2 condition matters: R = 4 at W = 9 misrounds (this check can fail)."""
    pairs = _all_pairs(9)
    q, amax = sfu_absmax_quantize(pairs, in_bits=9, recip_bits=4)
    ex, _ = exact_rne(pairs, amax)
    assert np.abs(q.astype(np.int64) - ex).max() >= 1


@pytest.mark.parametrize("w,diffs", [(6, 6), (9, 46), (11, 182)])
def test_exhaustive_vs_float_reference_at_most_one_code_only_at_ties(w, diffs):
    pairs = _all_pairs(w)
    q, amax = sfu_absmax_quantize(pairs, in_bits=w)
    qf, _ = int8_absmax_quantize(pairs)
    diff = np.abs(q.astype(np.int64) - qf.astype(np.int64))
    _, tie = exact_rne(pairs, amax)
    assert diff.max() == 1
    assert not diff[~tie].any()  # differences only at exact ties (float64's rounded scale)
    assert int(diff.sum()) == diffs  # measured; e.g. x = -3, amax = 6: exact -63.5 -> -64, float -63


def test_random_24bit_rows():
    rng = np.random.default_rng(0)
    mags = rng.integers(1, 24, (3125, 1))
    x = rng.integers(-(1 << 23), 1 << 23, (3125, 64)) >> (23 - mags)
    x[::7, 0] = -(1 << 23)  # the most negative accumulator value
    q, amax = sfu_absmax_quantize(x)
    qf, s = int8_absmax_quantize(x)
    ex, tie = exact_rne(x, amax)
    assert x.size == 200_000 and tie.sum() > 0
    assert np.array_equal(q.astype(np.int64), ex)
    d = np.abs(q.astype(np.int64) - qf)
    assert d.max() <= 1 and not d[~tie].any()
    assert np.allclose(127.0 / amax, s)


def test_constructed_ties_24bit():
    """127 x / amax = n + 1/2 for every n with a non-power-of-two 24-bit amax: exact RNE each time."""
    am = 3 * 127 * (1 << 14)  # 6_242_304 < 2^23
    xs = np.array([(2 * n + 1) * am // 254 for n in range(127)])
    rows = np.stack([xs, np.full_like(xs, am)], axis=1)
    q, amax = sfu_absmax_quantize(rows)
    _, tie = exact_rne(rows, amax)
    assert tie[:, 0].all()
    assert np.array_equal(q[:, 0].astype(np.int64), (np.arange(127) + 1) // 2 * 2)  # half to even
    qf, _ = int8_absmax_quantize(rows)
    assert np.abs(q.astype(np.int64) - qf).max() <= 1


def test_zero_rows_extremes_and_reciprocal():
    x = np.array([[0, 0, 0], [-(1 << 23), (1 << 23) - 1, 1], [5, -5, 0]])
    q, amax = sfu_absmax_quantize(x)
    assert q.tolist() == [[0, 0, 0], [-127, 127, 0], [127, -127, 0]]
    assert amax[:, 0].tolist() == [0, 1 << 23, 5]
    assert sfu_reciprocal(1 << 23) == (127 << 26, 23)  # power of two: exact reciprocal, R = 26
    c, e = sfu_reciprocal(3, in_bits=8)
    assert e == 1 and c == (127 << 17) // 192


@pytest.mark.parametrize("bad", [np.array([[1 << 23]]), np.array([[-(1 << 23) - 1]])])
def test_rejects_out_of_range(bad):
    with pytest.raises(ValueError, match="24-bit"):
        sfu_absmax_quantize(bad)


def test_rejects_float_and_empty():
    with pytest.raises(TypeError):
        sfu_absmax_quantize(np.array([[1.0]]))
    with pytest.raises(ValueError):
        sfu_absmax_quantize(np.zeros((2, 0), np.int64))
