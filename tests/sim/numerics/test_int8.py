"""Per-token INT8 absmax quantizer and BitLinear scale algebra vs plain-Python float64 references."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lowbit.sim.numerics.int8 import (
    INT8_ABSMAX_EPS,
    dequantize_accumulator,
    int8_absmax_quantize,
    int8_dequantize,
    int8_matmul_dequant,
    int_matmul_exact,
)

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
acts = hnp.arrays(
    np.float64, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9), elements=finite
)


def ref_row(row: list[float], eps: float = INT8_ABSMAX_EPS) -> tuple[list[int], float]:
    """Plain Python floats (IEEE double): s = 127*(1/max(amax, eps)) as torch evaluates `127 / t`;
    q = clamp(round(v*s)) with Python's half-even round."""
    amax = max(abs(v) for v in row)
    s = 127.0 * (1.0 / max(amax, eps))
    return [max(-128, min(127, round(v * s))) for v in row], s


@settings(max_examples=150, deadline=None)
@given(acts)
def test_quantize_matches_reference(x: np.ndarray) -> None:
    q, s = int8_absmax_quantize(x)
    assert q.dtype == np.int8 and q.shape == x.shape
    assert s.dtype == np.float64 and s.shape == x.shape[:-1] + (1,)
    rows = x.reshape(-1, x.shape[-1])
    for r, (qr, sr) in enumerate(zip(q.reshape(rows.shape), s.reshape(-1), strict=True)):
        ref_q, ref_s = ref_row(rows[r].tolist())
        assert sr == ref_s
        assert qr.tolist() == ref_q


@settings(max_examples=100, deadline=None)
@given(acts)
def test_quantize_properties(x: np.ndarray) -> None:
    q, s = int8_absmax_quantize(x)
    assert q.min() >= -127  # |x*s| <= 127, so -128 is never produced (docs/reference/numerics.md §1.2)
    amax = np.abs(x).max(axis=-1, keepdims=True)
    big = amax[..., 0] >= INT8_ABSMAX_EPS
    assert np.all(np.abs(q).max(axis=-1)[big] == 127)
    # the rounding error is at most half an LSB (checked against exact rationals)
    for v, qq, ss in zip(x.reshape(-1), q.reshape(-1), np.broadcast_to(s, x.shape).reshape(-1), strict=True):
        assert abs(Fraction(int(qq)) - Fraction(float(v)) * Fraction(float(ss))) <= Fraction(1, 2) + Fraction(
            1, 10**9
        )


def test_ties_half_even_and_eps() -> None:
    q, s = int8_absmax_quantize(np.array([127.0, 0.5, 1.5, 2.5, -2.5]) / 8)
    assert s[0] == 8.0 and q.tolist() == [127, 0, 2, 2, -2]
    q, s = int8_absmax_quantize(np.zeros((2, 3)))
    assert np.all(s == 127.0 * (1.0 / INT8_ABSMAX_EPS)) and not q.any()


def test_dequantize_accumulator_reference() -> None:
    rng = np.random.default_rng(1)
    acc = rng.integers(-(2**21), 2**21, size=(3, 5))
    xs = rng.uniform(0.1, 100, size=(3, 1))
    w_scale = 0.0173
    y = dequantize_accumulator(acc, w_scale, xs)
    for i in range(3):
        for j in range(5):
            assert y[i, j] == (float(int(acc[i, j])) * w_scale) / float(xs[i, 0])


def test_int8_dequantize_roundtrip_error() -> None:
    x = np.array([[0.3, -1.7, 2.2], [1e-3, 0.0, -5e-4]])
    q, s = int8_absmax_quantize(x)
    err = np.abs(int8_dequantize(q, s) - x)
    assert np.all(err <= 0.5 / s + 1e-12)


def test_int_matmul_exact_worst_case() -> None:
    k = 8640
    xq = np.full((1, k), -128, np.int8)
    w = -np.ones((2, k), np.int8)
    w[1, ::2] = 1
    acc = int_matmul_exact(xq, w)
    assert acc.dtype == np.int64 and acc.tolist() == [[128 * k, 0]]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 12), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_bitlinear_matches_reference(t: int, k: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((t, k)) * 3
    w = rng.integers(-1, 2, size=(n, k)).astype(np.int8)
    w_scale = float(rng.uniform(0.01, 1.0))
    y = int8_matmul_dequant(x, w, w_scale)
    for i in range(t):
        q, s = ref_row(x[i].tolist())
        for j in range(n):
            acc = sum(int(q[kk]) * int(w[j, kk]) for kk in range(k))
            assert y[i, j] == (float(acc) * w_scale) / s


def test_shape_errors() -> None:
    with pytest.raises(ValueError):
        int8_absmax_quantize(np.float64(1.0))
    with pytest.raises(ValueError):
        int8_absmax_quantize(np.array([1.0, np.nan]))
    with pytest.raises(ValueError):
        int_matmul_exact(np.zeros((1, 3), np.int8), np.zeros((2, 4), np.int8))


def test_torch_float64_activation_quant() -> None:
    """transformers ActQuant formula in torch float64 gives identical q and s."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 7, 33)) * 10
    q, s = int8_absmax_quantize(x)
    tx = torch.from_numpy(x)
    ts = 127 / tx.abs().max(dim=-1, keepdim=True).values.clamp(min=1e-5)
    tq = (tx * ts).round().clamp(-128, 127).to(torch.int8)
    assert np.array_equal(s, ts.numpy()) and np.array_equal(q, tq.numpy())


def test_scale_uses_torch_rdiv_form() -> None:
    # torch evaluates `127 / t` as `127 * t.reciprocal()`; for amax = 3.0 the two differ by one ulp
    amax = 3.0
    assert 127 / amax != 127 * (1 / amax)
    _, s = int8_absmax_quantize(np.array([amax, -1.0]))
    assert s[0] == 127.0 * (1.0 / amax)
