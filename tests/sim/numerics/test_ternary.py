"""BitNet absmean ternary quantizer vs an independent Fraction / plain-Python re-derivation."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lowbit.sim.numerics.ternary import (
    TERNARY_EPS,
    ternary_absmean_scale,
    ternary_dequantize,
    ternary_quantize,
)

finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False, width=32)
weights = hnp.arrays(
    np.float32, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=7), elements=finite
)


def ref_quantize(w: np.ndarray, eps: float = TERNARY_EPS) -> tuple[list[int], float]:
    """Independent: exact Fraction sum -> correctly rounded float -> /n; Python float mul; round() (RNE)."""
    vals = [float(v) for v in w.ravel()]
    exact = sum((Fraction(abs(v)) for v in vals), Fraction(0))
    scale = max(float(exact) / len(vals), eps)
    inv = 1.0 / scale
    codes = [max(-1, min(1, round(v * inv))) for v in vals]
    return codes, scale


@settings(max_examples=150, deadline=None)
@given(weights)
def test_matches_reference(w: np.ndarray) -> None:
    codes, scale = ternary_quantize(w)
    ref_codes, ref_scale = ref_quantize(w)
    assert scale == ref_scale
    assert codes.dtype == np.int8 and codes.shape == w.shape
    assert codes.ravel().tolist() == ref_codes


@settings(max_examples=100, deadline=None)
@given(weights)
def test_sign_and_monotone(w: np.ndarray) -> None:
    codes, _ = ternary_quantize(w)
    flat_w, flat_c = w.ravel().astype(np.float64), codes.ravel()
    assert set(np.unique(flat_c)) <= {-1, 0, 1}
    assert np.all((flat_c == 0) | (np.sign(flat_c) == np.sign(flat_w)))
    order = np.argsort(flat_w, kind="stable")
    assert np.all(np.diff(flat_c[order].astype(int)) >= 0)


def test_ties_round_half_even() -> None:
    # mean|W| = 1 exactly, so w * inv = w: 0.5 -> 0 (half-even), half-away-from-zero would give 1.
    codes, scale = ternary_quantize(np.array([0.5, 1.5, -0.5, -1.5]))
    assert scale == 1.0
    assert codes.tolist() == [0, 1, 0, -1]


def test_eps_clamp_and_zero_tensor() -> None:
    codes, scale = ternary_quantize(np.zeros((3, 4)))
    assert scale == TERNARY_EPS and not codes.any()
    codes, scale = ternary_quantize(np.array([1e-7, -2e-6]), eps=1e-5)
    assert scale == 1e-5 and codes.tolist() == [0, 0]
    codes, scale = ternary_quantize(np.array([1e-5, -1e-5]), eps=1e-6)
    assert scale == 1e-5 and codes.tolist() == [1, -1]


def test_scale_is_order_independent() -> None:
    # a pairwise/naive float sum would differ across these orders; fsum is correctly rounded
    rng = np.random.default_rng(0)
    w = rng.standard_normal(10_000) * np.float64(2.0) ** rng.integers(-30, 30, 10_000)
    s = ternary_absmean_scale(w)
    assert s == ternary_absmean_scale(w[::-1]) == ternary_absmean_scale(rng.permutation(w))
    assert s == float(sum(Fraction(abs(float(v))) for v in w) / 1) / w.size


def test_scale_override_and_dequantize() -> None:
    w = np.array([[0.3, -0.9], [1.2, 0.0]])
    codes, scale = ternary_quantize(w, scale=0.5)
    assert scale == 0.5 and codes.tolist() == [[1, -1], [1, 0]]
    deq = ternary_dequantize(codes, scale)
    assert deq.dtype == np.float64 and deq.tolist() == [[0.5, -0.5], [0.5, 0.0]]


@pytest.mark.parametrize("bad", [np.array([]), np.array([1.0, np.nan]), np.array([np.inf])])
def test_rejects_bad_input(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        ternary_quantize(bad)


def test_rejects_bad_scale_and_codes() -> None:
    with pytest.raises(ValueError):
        ternary_quantize(np.ones(3), scale=0.0)
    with pytest.raises(ValueError):
        ternary_dequantize(np.array([2]), 1.0)


def test_multiplies_by_inverse_scale_like_reference() -> None:
    # w * (1/s) == 0.5 exactly (-> 0 under RNE) while w / s is one ulp above 0.5 (-> 1): pins the
    # reference code's `round(W * s)` form, s = 1/mean|W| (transformers WeightQuant).
    s, v = 0.9136280215049445, 0.4568140107524723
    assert v * (1.0 / s) == 0.5 and v / s > 0.5
    w = np.array([v, 2 * s - v])
    assert ternary_absmean_scale(w) == s
    codes, _ = ternary_quantize(w)
    assert codes.tolist() == [0, 1]
    assert ternary_quantize(np.array([v]), scale=s)[0].tolist() == [0]


def test_torch_float64_reference_formula() -> None:
    """The documented torch recipe reproduces the codes bit-exactly given our scale."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    w = rng.standard_normal((64, 96)).astype(np.float32)
    w[0, :4] = [0.5, -0.5, 1.5, -1.5]
    codes, scale = ternary_quantize(w)
    tw = torch.from_numpy(w).double()
    ref = (tw * (1.0 / scale)).round().clamp(-1, 1).to(torch.int8).numpy()
    assert np.array_equal(codes, ref)
    assert abs(scale - float(tw.abs().mean().clamp(min=1e-5))) <= 4 * np.spacing(scale)
