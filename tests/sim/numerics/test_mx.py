"""MXFP4 / NVFP4 quantizers against independent re-derivations, worked examples and error bounds.

The references here are written differently from ``sim/numerics/mx.py``: scalar Python loops,
exponents from ``math.log2`` with correction, E2M1 rounding by nearest-grid search, and ml_dtypes
casts for E4M3 / E2M1 in the NVFP4 recipe (float32 rounding emulated by ``np.float32`` after each op).
"""

from __future__ import annotations

import math

import ml_dtypes as md
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.sim.numerics.fp import e2m1_decode, e4m3_decode, e8m0_decode
from lowbit.sim.numerics.mx import (
    MXFP4Tensor,
    NVFP4Tensor,
    fp4_fakequant,
    mxfp4_dequantize,
    mxfp4_quantize,
    nvfp4_dequantize,
    nvfp4_quantize,
)

F32 = np.float32
GRID = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def ref_e2m1(v: float) -> float:
    """Nearest E2M1 value by grid search; ties go to the grid point with even index (even mantissa)."""
    a = min(abs(v), 6.0)
    best = min(range(8), key=lambda i: (abs(GRID[i] - a), i % 2))
    return math.copysign(GRID[best], v)


def ref_floor_exp(amax: float) -> int:
    e = math.floor(math.log2(amax))
    while 2.0**e > amax:  # log2 may be off by one ulp near powers of two
        e -= 1
    while 2.0 ** (e + 1) <= amax:
        e += 1
    return e


def ref_mxfp4(x: np.ndarray, block: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Scalar MXFP4 FLOOR reference for a 1-D float32 row: (dequantized float64, E8M0 codes)."""
    k = len(x)
    out, codes = np.zeros(k), []
    for start in range(0, k, block):
        blk = [float(v) for v in x[start : start + block]]
        amax = max(abs(v) for v in blk)
        e = -127 if amax == 0 else max(ref_floor_exp(amax) - 2, -127)
        codes.append(e + 127)
        for j, v in enumerate(blk):
            out[start + j] = ref_e2m1(v / 2.0**e) * 2.0**e
    return out, np.array(codes)


def rand_rows(rng, rows: int, k: int) -> np.ndarray:
    """Rows with block-varying magnitudes, zero blocks and exact ties (multiples of 0.25)."""
    x = rng.standard_normal((rows, k)) * np.exp2(rng.integers(-20, 20, (rows, 1)))
    x[:, : min(k, 32)] = rng.integers(-28, 29, (rows, min(k, 32))) * 0.25  # ties in E2M1 units
    if k > 64:
        x[:, 64:96] = 0.0
    return x.astype(F32)


# ----------------------------------------------------------------------------- MXFP4


@pytest.mark.parametrize("k", [32, 40, 128, 7])
def test_mxfp4_floor_matches_scalar_reference(k):
    rng = np.random.default_rng(k)
    x = rand_rows(rng, 6, k)
    t = mxfp4_quantize(x)
    assert t.codes.shape == (6, -(-k // 32) * 32) and t.scales.shape == (6, -(-k // 32))
    deq = mxfp4_dequantize(t)
    assert deq.shape == x.shape and deq.dtype == F32
    for r in range(6):
        ref, codes = ref_mxfp4(x[r])
        np.testing.assert_array_equal(t.scales[r], codes)
        np.testing.assert_array_equal(deq[r].astype(np.float64), ref)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=70))
def test_mxfp4_hypothesis_vs_reference(vals):
    x = np.array(vals, F32)
    ref, codes = ref_mxfp4(x)
    t = mxfp4_quantize(x)
    np.testing.assert_array_equal(t.scales, codes)
    np.testing.assert_array_equal(mxfp4_dequantize(t).astype(np.float64), ref)


def test_mxfp4_worked_example_2_6():
    v = ((np.arange(32) - 16) * 0.37).astype(F32)
    t = mxfp4_quantize(v)
    expect = [
        -6,
        -6,
        -6,
        -4,
        -4,
        -4,
        -4,
        -3,
        -3,
        -3,
        -2,
        -2,
        -1.5,
        -1,
        -0.5,
        -0.5,
        0,
        0.5,
        0.5,
        1,
        1.5,
        2,
        2,
        3,
        3,
        3,
        4,
        4,
        4,
        4,
        6,
        6,
    ]
    assert t.scales.tolist() == [127]
    np.testing.assert_array_equal(mxfp4_dequantize(t), np.array(expect, F32))
    assert abs(np.abs(mxfp4_dequantize(t) - v).max() - 0.82) < 1e-5


@pytest.mark.parametrize(
    "val, exp, deq", [(7.0, 0, 6.0), (0.75, -3, 0.75), (5.0, 0, 4.0), (1e-40, -127, 0.0)]
)
def test_mxfp4_single_value_table(val, exp, deq):
    x = np.zeros(32, F32)
    x[5] = val
    t = mxfp4_quantize(x)
    assert int(t.scales[0]) - 127 == exp
    assert mxfp4_dequantize(t)[5] == F32(deq)


def test_mxfp4_zero_and_nan_blocks():
    x = np.zeros((2, 64), F32)
    x[1, 40] = np.nan
    x[1, 3] = 1.0
    t = mxfp4_quantize(x)
    assert t.scales.tolist() == [[0, 0], [125, 255]]
    d = mxfp4_dequantize(t)
    assert (
        np.all(d[0] == 0) and np.isnan(d[1, 32:]).all() and d[1, 3] == 1.0 and not np.isnan(d[1, :32]).any()
    )


def test_mxfp4_roundtrip_error_bounds_floor_and_rceil():
    rng = np.random.default_rng(7)
    x = rand_rows(rng, 16, 256).astype(np.float64)
    for mode in ("floor", "rceil"):
        t = mxfp4_quantize(x, scale_mode=mode)
        X = np.repeat(e8m0_decode(t.scales), 32, axis=-1)
        err = np.abs(mxfp4_dequantize(t) - x)
        inrange = np.abs(x) <= 6 * X
        assert np.all(err[inrange] <= X[inrange])  # half the widest grid gap (2) times X
        assert np.all(err <= 2 * X)  # FLOOR saturation: amax < 8X clips to 6X
        if mode == "rceil":
            assert inrange.all()  # RCEIL never saturates
            amax = np.abs(x).reshape(16, 8, 32).max(-1)
            Xb = e8m0_decode(t.scales)
            assert np.all((amax == 0) | (amax > 3 * Xb))  # and X is the smallest such power of two


def test_mxfp4_floor_saturates_where_rceil_does_not():
    x = np.zeros(32, F32)
    x[0] = 7.0
    assert mxfp4_dequantize(mxfp4_quantize(x, scale_mode="rceil"))[0] == 8.0
    assert mxfp4_dequantize(mxfp4_quantize(x, scale_mode="floor"))[0] == 6.0


# ----------------------------------------------------------------------------- NVFP4


def ref_nvfp4(x: np.ndarray, block: int = 16, tensor_amax: float | None = None):
    """Scalar ModelOpt recipe with float32 rounding after each op, E4M3/E2M1 through ml_dtypes.

    Plus lowbit's documented edges: a zero tensor scale gives block scales 1.0, and a block whose
    decode scale ``f32(s8 · s_global)`` is 0 stores signed zeros.
    """
    amax = F32(np.max(np.abs(x))) if tensor_amax is None else F32(tensor_amax)
    s_global = F32(float(amax) / 2688.0)
    rows, k = x.shape
    deq = np.zeros((rows, k), F32)
    scales = []
    for r in range(rows):
        for start in range(0, k, block):
            blk = x[r, start : start + block]
            bmax = F32(np.max(np.abs(blk)))
            if s_global == 0:
                s = F32(1.0)
            else:
                s = F32(float(bmax) / float(F32(6.0 * float(s_global))))
                s = F32(1.0) if s == 0 else min(max(s, F32(2.0**-9)), F32(448))
            s8 = np.array([s], F32).astype(md.float8_e4m3fn)
            scales.append(int(s8.view(np.uint8)[0]))
            denom = F32(float(s8.astype(F32)[0]) * float(s_global))
            if denom == 0:
                deq[r, start : start + len(blk)] = np.copysign(F32(0.0), blk)
                continue
            y = np.array([F32(float(v) / float(denom)) for v in blk], F32)
            q = y.astype(md.float4_e2m1fn).astype(F32)
            deq[r, start : start + len(blk)] = q * denom
    return deq, np.array(scales).reshape(rows, -1), s_global


@pytest.mark.parametrize("k", [16, 48, 20])
def test_nvfp4_matches_modelopt_recipe(k):
    rng = np.random.default_rng(100 + k)
    x = rand_rows(rng, 5, k)
    t = nvfp4_quantize(x)
    ref, scales, sg = ref_nvfp4(x)
    assert t.tensor_scale == sg and t.tensor_scale.dtype == F32
    np.testing.assert_array_equal(t.scales, scales)
    np.testing.assert_array_equal(nvfp4_dequantize(t), ref)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-1e4, 1e4, width=32, allow_subnormal=True), min_size=1, max_size=40),
    st.sampled_from([None, 1.0, 123.0]),
)
def test_nvfp4_hypothesis_vs_reference(vals, tensor_amax):
    x = np.array([vals], F32)
    t = nvfp4_quantize(x, tensor_amax=tensor_amax)
    ref, scales, _ = ref_nvfp4(x, tensor_amax=tensor_amax)
    np.testing.assert_array_equal(t.scales, scales)
    d = nvfp4_dequantize(t)
    np.testing.assert_array_equal(d, ref)
    np.testing.assert_array_equal(np.signbit(d), np.signbit(ref))  # -0.0 kept bit for bit


def test_nvfp4_worked_example_3_4():
    v = ((np.arange(32) - 16) * 0.37).astype(F32)
    t = nvfp4_quantize(v)
    assert abs(float(t.tensor_scale) - 0.0022024) < 1e-7
    np.testing.assert_array_equal(e4m3_decode(t.scales), [448.0, 416.0])
    d = nvfp4_dequantize(t)
    assert abs(d[31] - 5.497) < 1e-3  # 5.55 encodes to 6.06, clips to 6
    assert abs(np.abs(d - v).max() - 0.863) < 1e-3


def test_nvfp4_roundtrip_error_bound():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 128)).astype(F32) * 3
    t = nvfp4_quantize(x)
    sb = np.repeat(e4m3_decode(t.scales).astype(np.float64) * float(t.tensor_scale), 16, axis=-1)
    # Nearest E4M3 scales can clip the block max by up to 1/16: still within one scale unit.
    assert np.all(np.abs(nvfp4_dequantize(t) - x) <= sb * (1 + 1e-6))


def test_nvfp4_all_zero_and_zero_blocks_and_tiny_clamp():
    t = nvfp4_quantize(np.zeros((2, 16), F32))
    assert t.tensor_scale == 0 and np.all(e4m3_decode(t.scales) == 1.0) and np.all(t.codes == 0)
    assert np.all(nvfp4_dequantize(t) == 0)
    x = np.zeros(48, F32)
    x[0], x[20], x[40] = 1000.0, 0.0, 1e-6  # middle block zero, last block tiny
    t = nvfp4_quantize(x)
    s = e4m3_decode(t.scales)
    assert s[1] == 1.0 and s[2] == 2.0**-9  # ModelOpt zero-block rule, 2^-9 lower clamp
    with pytest.raises(ValueError):
        nvfp4_quantize(np.array([1.0, np.nan]))
    with pytest.raises(ValueError):
        nvfp4_quantize(np.ones(16), tensor_amax=0.0)


def test_nvfp4_calibrated_tensor_amax_clamps_scale_at_448():
    t = nvfp4_quantize(np.full(16, 10.0, F32), tensor_amax=1.0)
    assert e4m3_decode(t.scales).tolist() == [448.0]
    assert np.all(e2m1_decode(t.codes) == 6.0)


def test_fakequant_formats_and_types():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 50)).astype(F32)
    for fmt in ("nvfp4", "mxfp4"):
        y = fp4_fakequant(x, fmt)
        assert y.shape == x.shape and y.dtype == F32
        assert np.max(np.abs(y - x)) < 0.5 * np.max(np.abs(x))
    np.testing.assert_array_equal(fp4_fakequant(x, "mxfp4"), mxfp4_dequantize(mxfp4_quantize(x)))
    with pytest.raises(ValueError):
        fp4_fakequant(x, "int4")
    assert isinstance(mxfp4_quantize(x), MXFP4Tensor) and isinstance(nvfp4_quantize(x), NVFP4Tensor)


def test_nvfp4_block_scale_uses_float32_steps():
    # Found by search: the exact ratio sits so close to an E4M3 midpoint that float32 rounding of
    # 6·s_global and of the division flips the E4M3 code (float32 path: 106, float64 path: 107).
    x = np.zeros(32, F32)
    x[0], x[16] = 98.10269927978516, 18.394256591796875
    assert nvfp4_quantize(x).scales.tolist() == [126, 106]


@pytest.mark.parametrize(
    "amax, s8, v, code",  # float32 division lands exactly on an E2M1 tie; float64 would not
    [
        (7.172608375549316, 7.5, 0.050032150000333786, 4),
        (82.85570526123047, 7.5, 1.1559110879898071, 7),
        (32.0992546081543, 52.0, 0.7762097120285034, 2),
    ],
)
def test_nvfp4_element_division_is_float32(amax, s8, v, code):
    sg = F32(F32(amax) / F32(2688))
    x = np.zeros(16, F32)
    x[0], x[1] = F32(s8 * 6 * float(sg)), v
    t = nvfp4_quantize(x, tensor_amax=amax)
    assert e4m3_decode(t.scales).tolist() == [s8]
    assert int(t.codes[1]) == code
