"""FP4 W4A8 block-dot golden model: exactness at wide widths, overflow / precision-loss flags.

The exact references are ``fp4_dot_exact`` (Fractions) and an independent float64 matmul of the
dequantized MXFP4 weights (every product and partial sum is exact in float64 at these sizes).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.sim.numerics.fp import e2m1_decode, e2m1_encode, e4m3_decode, e4m3_encode
from lowbit.sim.numerics.fp4dot import (
    Fp4DotResult,
    fp4_block_dot,
    fp4_block_sum_bits,
    fp4_dot_exact,
    fp4_min_widths,
)
from lowbit.sim.numerics.mx import MXFP4Tensor, NVFP4Tensor, mxfp4_dequantize, mxfp4_quantize, nvfp4_quantize

F32 = np.float32


def quantize(fmt: str, w: np.ndarray):
    return mxfp4_quantize(w) if fmt == "mx" else nvfp4_quantize(w)


def run(w, a, widths, **kw) -> Fp4DotResult:
    return fp4_block_dot(
        w, a, block_sum_bits=widths.block_sum_bits, acc_bits=widths.acc_bits, frac_bits=widths.frac_bits, **kw
    )


def as_fraction(acc: np.ndarray, frac_bits: int) -> np.ndarray:
    return np.frompyfunc(lambda v: Fraction(int(v), 2**frac_bits), 1, 1)(acc)


def make_operands(seed: int, n: int, k: int, t: int, spread: int = 6):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k)) * np.exp2(rng.integers(-spread, spread + 1, (n, k)))).astype(F32)
    a = rng.integers(-128, 128, (t, k)).astype(np.int8)
    return w, a


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("fmt", ["mx", "nv"])
@pytest.mark.parametrize("k", [64, 70, 16])
def test_wide_widths_equal_exact_rational(fmt, k):
    w_f, a = make_operands(k, 7, k, 5)
    w = quantize(fmt, w_f)
    widths = fp4_min_widths(w)
    res = run(w, a, widths)
    assert not res.overflow.any() and not res.inexact.any()
    exact = fp4_dot_exact(w, a, scaled=False)
    assert (as_fraction(res.acc, res.frac_bits) == exact).all()
    # Fully scaled value: two float64 roundings at most (tensor scale, activation scale).
    a_scale = np.linspace(0.01, 0.2, 5)
    res = run(w, a, widths, a_scale=a_scale)
    ref = np.array(fp4_dot_exact(w, a, a_scale=a_scale).tolist(), dtype=float)
    np.testing.assert_allclose(res.value, ref, rtol=4e-16, atol=0)


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(["mx", "nv"]),
    st.integers(0, 2**31),
    st.integers(1, 4),
    st.integers(1, 80),
    st.integers(1, 3),
    st.integers(0, 12),
)
def test_wide_widths_exact_hypothesis(fmt, seed, n, k, t, spread):
    w_f, a = make_operands(seed, n, k, t, spread)
    w = quantize(fmt, w_f)
    widths = fp4_min_widths(w)
    if widths.acc_bits > 62:
        return  # exponent spread beyond the 62-bit model limit
    res = run(w, a, widths)
    assert not res.overflow.any() and not res.inexact.any()
    assert (as_fraction(res.acc, res.frac_bits) == fp4_dot_exact(w, a, scaled=False)).all()


def test_mxfp4_matches_float64_matmul_of_dequantized_weights():
    w_f, a = make_operands(11, 9, 96, 4, spread=3)
    w = mxfp4_quantize(w_f)
    res = run(w, a, fp4_min_widths(w))
    ref = a.astype(np.float64) @ mxfp4_dequantize(w).astype(np.float64).T
    np.testing.assert_array_equal(res.value, ref)
    assert res.value.shape == (4, 9) and res.acc.dtype == np.int64


def test_nvfp4_matches_float64_matmul_of_decoded_weights():
    # Independent of fp4dot's integer scale split: decode E2M1 and E4M3 by table, multiply in float64.
    w_f, a = make_operands(12, 6, 80, 3, spread=5)
    w = nvfp4_quantize(w_f)
    scale = np.repeat(e4m3_decode(w.scales).astype(np.float64), 16, axis=-1) * float(w.tensor_scale)
    w_deq = (e2m1_decode(w.codes).astype(np.float64) * scale)[:, :80]
    res = run(w, a, fp4_min_widths(w))
    np.testing.assert_allclose(res.value, a.astype(np.float64) @ w_deq.T, rtol=1e-13, atol=1e-300)


def test_batched_and_1d_activations():
    w_f, a = make_operands(5, 3, 32, 6)
    w = nvfp4_quantize(w_f)
    wd = fp4_min_widths(w)
    full = run(w, a, wd)
    np.testing.assert_array_equal(run(w, a.reshape(2, 3, 32), wd).acc, full.acc.reshape(2, 3, 3))
    np.testing.assert_array_equal(run(w, a[2], wd).acc, full.acc[2])


# ----------------------------------------------------------------------------- widths and flags


def test_block_sum_widths():
    assert fp4_block_sum_bits(16) == 16 and fp4_block_sum_bits(32) == 17
    assert fp4_block_sum_bits(16, a_max=127) == 16 and fp4_block_sum_bits(32, a_max=127) == 17
    # The worst case is reachable: all weights -6 at X = 1 and all activations -128.
    w = mxfp4_quantize(np.full((1, 32), -6.0, F32))
    a = np.full((1, 32), -128, np.int8)
    assert fp4_min_widths(w).block_sum_bits == 17
    ok = fp4_block_dot(w, a, block_sum_bits=17, acc_bits=40, frac_bits=4)
    assert not ok.overflow.any() and ok.value[0, 0] == 6 * 128 * 32
    bad = fp4_block_dot(w, a, block_sum_bits=16, acc_bits=40, frac_bits=4)
    assert bad.overflow.all() and bad.value[0, 0] == (2**15 - 1) / 2  # saturated block sum / 2


def worst_case(fmt: str, seed: int):
    """Weights and sign-matched activations: every prefix sum grows, so the width bound is tight."""
    w_f, _ = make_operands(seed, 4, 96, 1, spread=2)
    w = quantize(fmt, w_f)
    w2 = np.where(w.codes >= 8, -1, 1)
    a = (127 * w2).astype(np.int8)  # row t pairs with weight row t
    return w, a


@pytest.mark.parametrize("fmt", ["mx", "nv"])
def test_narrow_acc_flags_overflow_and_saturates_or_wraps(fmt):
    w, a = worst_case(fmt, 3)
    tight = fp4_min_widths(w, a)
    exact = run(w, a, tight)
    assert not exact.overflow.any()
    narrow = fp4_block_dot(
        w, a, block_sum_bits=tight.block_sum_bits, acc_bits=tight.acc_bits - 1, frac_bits=tight.frac_bits
    )
    diag = np.arange(4)
    assert narrow.overflow[diag, diag].all()  # each diagonal output reaches the bound
    hi = 2 ** (tight.acc_bits - 2) - 1
    assert (narrow.acc[diag, diag] == hi).all()  # saturated
    wrapped = fp4_block_dot(
        w,
        a,
        block_sum_bits=tight.block_sum_bits,
        acc_bits=tight.acc_bits - 1,
        frac_bits=tight.frac_bits,
        overflow_mode="wrap",
    )
    m = 2 ** (tight.acc_bits - 1)
    expect = (exact.acc + m // 2) % m - m // 2  # wrapping is modular, whatever the order
    np.testing.assert_array_equal(wrapped.acc, expect)
    assert wrapped.overflow[diag, diag].all()


@pytest.mark.parametrize("rounding", ["floor", "rne"])
def test_short_fraction_counts_precision_loss(rounding):
    w_f, a = make_operands(21, 5, 128, 3, spread=4)
    w = mxfp4_quantize(w_f * F32(2.0**-8))  # small scales: block exponents well below 0
    wide = fp4_min_widths(w)
    assert wide.frac_bits > 3
    res = fp4_block_dot(
        w,
        a,
        block_sum_bits=wide.block_sum_bits,
        acc_bits=wide.acc_bits,
        frac_bits=wide.frac_bits - 3,
        shift_rounding=rounding,
    )
    assert res.inexact.sum() > 0 and not res.overflow.any()
    exact = fp4_dot_exact(w, a, scaled=False)
    err = as_fraction(res.acc, res.frac_bits) - exact
    ulp = Fraction(1, 2**res.frac_bits)
    nb = 4
    if rounding == "floor":  # each block truncates down by < 1 ulp
        assert all(-nb * ulp < e <= 0 for e in err.ravel())
    else:  # each block rounds by <= 1/2 ulp
        assert all(abs(e) <= nb * ulp / 2 for e in err.ravel())
    assert all((e != 0) <= (i > 0) for e, i in zip(err.ravel(), res.inexact.ravel(), strict=True))


def test_nvfp4_subnormal_block_scale_needs_fraction_bits():
    # E4M3 scale 2^-9 (subnormal, significand 1): the block value is S · 2^-10.
    codes = e2m1_encode(np.full((1, 16), 0.5))
    w = NVFP4Tensor(
        codes=codes, scales=e4m3_encode(np.array([[2.0**-9]])), tensor_scale=F32(1), shape=(1, 16)
    )
    a = np.full((1, 16), 3, np.int8)
    assert fp4_min_widths(w).frac_bits == 10
    res = fp4_block_dot(w, a, block_sum_bits=16, acc_bits=32, frac_bits=10)
    assert res.acc[0, 0] == 48 and res.value[0, 0] == 48 * 2.0**-10 and not res.inexact.any()
    res = fp4_block_dot(w, a, block_sum_bits=16, acc_bits=32, frac_bits=4)
    assert res.acc[0, 0] == 0 and res.inexact[0, 0] == 1  # 48·2^-6 floors to 0


def test_nan_scale_poisons_only_its_output_row():
    codes = e2m1_encode(np.ones((2, 32)))
    w = MXFP4Tensor(codes=codes, scales=np.array([[127], [255]], np.uint8), shape=(2, 32))
    res = fp4_block_dot(w, np.ones((1, 32), np.int8), block_sum_bits=17, acc_bits=32, frac_bits=2)
    assert res.value[0, 0] == 32 and np.isnan(res.value[0, 1])
    with pytest.raises(ValueError):
        fp4_dot_exact(w, np.ones((1, 32), np.int8))


def test_rejects_bad_arguments():
    w = mxfp4_quantize(np.ones((2, 32), F32))
    good = dict(block_sum_bits=17, acc_bits=32, frac_bits=2)
    with pytest.raises(ValueError):
        fp4_block_dot(w, np.ones((1, 31), np.int8), **good)
    with pytest.raises(ValueError):
        fp4_block_dot(w, np.full((1, 32), 200), **good)
    with pytest.raises(ValueError):
        fp4_block_dot(w, np.ones((1, 32), np.int8), block_sum_bits=17, acc_bits=63, frac_bits=0)
    with pytest.raises(ValueError):
        fp4_block_dot(w, np.ones((1, 32), np.float32), **good)
