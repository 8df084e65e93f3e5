"""MXFP4 / NVFP4 edge cases, one test each, with hand-computed codes (docs/numerics.md "Edge cases").

Every expected code below is derived by hand in the comment next to it from the rule the quantizer
states; no value is read back from the implementation.
"""

from __future__ import annotations

import numpy as np
import pytest

from lowbit.sim.numerics.mx import mxfp4_dequantize, mxfp4_quantize, nvfp4_dequantize, nvfp4_quantize

F32 = np.float32
TIES = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]  # E2M1 midpoints
TIE_CODES = [0, 2, 2, 4, 4, 6, 6]  # RNE: 0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0 (even mantissa wins)


def block32(*vals: float) -> np.ndarray:
    x = np.zeros(32, F32)
    x[: len(vals)] = vals
    return x


def f32_above(v: float) -> float:
    return float(np.nextafter(F32(v), F32(np.inf)))


def f32_below(v: float) -> float:
    return float(np.nextafter(F32(v), F32(0)))


# ----------------------------------------------------------------------------- MXFP4 scales


@pytest.mark.parametrize(
    "amax",
    [
        2.0**-149,  # amax/6 = 2^-151.6 rounds to 0 in float32
        3 * 2.0**-149,  # amax/6 = 2^-150 exactly: tie between 0 and 2^-149, RNE -> 0
    ],
)
def test_mxfp4_rceil_scale_underflow_is_code_0(amax):
    # ceil(log2(f32(amax/6))) = ceil(log2 0) = -inf, clamped to -127: code 0 (was 127 via frexp(0)).
    t = mxfp4_quantize(block32(amax, -amax), scale_mode="rceil")
    assert t.scales.tolist() == [0]
    assert t.codes[:2].tolist() == [0, 8]  # amax / 2^-127 < 2^-21 rounds to a signed zero
    d = mxfp4_dequantize(t)
    assert d[0] == 0 and not np.signbit(d[0]) and np.signbit(d[1])


def test_mxfp4_rceil_subnormal_descale():
    # amax = 9·2^-127: d = 1.5·2^-127 (a float32 subnormal, exact); ceil(log2 d) = -126 -> code 1.
    # Element: 9·2^-127 / 2^-126 = 4.5 -> RNE between 4 and 6 -> 4 (code 6).
    t = mxfp4_quantize(block32(9 * 2.0**-127), scale_mode="rceil")
    assert t.scales.tolist() == [1] and int(t.codes[0]) == 6


def test_mxfp4_rceil_float32_rounding_of_descale_can_saturate():
    # amax = 3·2^-126 + 2^-148 (next float32 above 6·2^-127): exact amax/6 = 2^-127 + 2^-150.58,
    # float32 subnormal spacing 2^-149 -> d = 2^-127 exactly -> E = -127 (code 0), so the element
    # amax / 2^-127 = 6 + 2^-21.58 saturates to 6 (code 7): the documented float32-rounding caveat.
    amax = f32_above(6 * 2.0**-127)
    assert amax == 3 * 2.0**-126 + 2.0**-148
    t = mxfp4_quantize(block32(amax), scale_mode="rceil")
    assert t.scales.tolist() == [0] and int(t.codes[0]) == 7


@pytest.mark.parametrize("k", [-100, -1, 0, 1, 100])
def test_mxfp4_rceil_exact_at_powers_of_two(k):
    # amax = 6·2^k: d = 2^k exactly -> E = k. One float32 ulp above: d > 2^k -> E = k + 1.
    # One ulp below: E = k (d in (2^(k-1), 2^k)).
    six = 6 * 2.0**k
    codes = [
        int(mxfp4_quantize(block32(a), scale_mode="rceil").scales[0])
        for a in (six, f32_above(six), f32_below(six))
    ]
    assert codes == [k + 127, k + 128, k + 127]


def test_mxfp4_floor_code_0_threshold_is_2_pow_minus_124():
    # floor(log2 2^-124) - 2 = -126 -> code 1; the float32 just below has floor -125 -> -127 -> code 0.
    t = mxfp4_quantize(np.stack([block32(2.0**-124), block32(f32_below(2.0**-124))]))
    assert t.scales.tolist() == [[1], [0]]


@pytest.mark.parametrize("mode", ["floor", "rceil"])
def test_mxfp4_all_zero_block_is_code_0_with_signed_zeros(mode):
    x = block32(0.0, -0.0, -0.0)
    t = mxfp4_quantize(x, scale_mode=mode)
    assert t.scales.tolist() == [0]
    assert t.codes[:4].tolist() == [0, 8, 8, 0]  # -0.0 keeps the sign bit (code 8)
    d = mxfp4_dequantize(t)
    assert np.all(d == 0) and np.signbit(d[:4]).tolist() == [False, True, True, False]


def test_mxfp4_subnormal_float32_amax():
    # amax = 2^-149 (float32 min subnormal): floor log2 = -149 -> -151, clamped to -127 (code 0);
    # element 2^-149 / 2^-127 = 2^-22 -> 0.
    t = mxfp4_quantize(block32(2.0**-149))
    assert t.scales.tolist() == [0] and int(t.codes[0]) == 0


def test_mxfp4_e2m1_subnormal_element_and_e8m0_code_0_dequantize_exactly():
    # amax = 2^-125 -> floor -125 - 2 = -127 (code 0, X = 2^-127, itself a float32 subnormal).
    # 2^-128 / X = 0.5: the E2M1 subnormal (code 1); dequantized back to 2^-128 exactly in float32.
    t = mxfp4_quantize(block32(2.0**-125, 2.0**-128, -(2.0**-128), 0.75 * 2.0**-127))
    assert t.scales.tolist() == [0]
    assert t.codes[:4].tolist() == [6, 1, 9, 2]  # 4.0, 0.5, -0.5, tie 0.75 -> 1.0
    assert mxfp4_dequantize(t)[:4].tolist() == [2.0**-125, 2.0**-128, -(2.0**-128), 2.0**-127]


@pytest.mark.parametrize("k", [-127, -10, 0, 10, 120])
def test_mxfp4_e2m1_ties_round_half_even_at_every_scale(k):
    # 6·2^k sets X = 2^k (floor log2 6 = 2); t·2^k for every E2M1 midpoint t rounds to the even code.
    X = 2.0**k
    vals = [6 * X] + [t * X for t in TIES] + [-t * X for t in TIES]
    t = mxfp4_quantize(block32(*vals))
    assert int(t.scales[0]) == k + 127
    n = len(TIES)
    assert t.codes[1 : 1 + n].tolist() == TIE_CODES
    assert t.codes[1 + n : 1 + 2 * n].tolist() == [c | 8 for c in TIE_CODES]  # -0.25 -> -0 (code 8)


def test_mxfp4_floor_saturates_6x_to_8x():
    # amax = 7.99 -> X = 1; 7.99 and 6.5 both clamp to 6 (code 7) under the spec's saturate rule.
    t = mxfp4_quantize(block32(7.99, 6.5, -7.5))
    assert t.scales.tolist() == [127] and t.codes[:3].tolist() == [7, 7, 15]


@pytest.mark.parametrize("mode", ["floor", "rceil"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_mxfp4_nan_inf_blocks_are_poisoned(mode, bad):
    x = np.stack([block32(1.0, bad), block32(1.0)])
    t = mxfp4_quantize(x, scale_mode=mode)
    assert t.scales[:, 0].tolist() == [0xFF, 125]  # floor(log2 1) - 2 = ceil(log2(1/6)) = -2
    assert not t.codes[0].any()  # poisoned block: element codes 0
    d = mxfp4_dequantize(t)
    assert np.isnan(d[0]).all() and d[1, 0] == 1.0


def test_mxfp4_rceil_dequantize_overflows_float32_near_its_max():
    # amax = 1.875·2^127: d = 1.25·2^125 -> E = 126 (code 253); amax / 2^126 = 3.75 rounds to 4
    # (code 6), and 4·2^126 = 2^128 is beyond float32: +Inf (FLOOR picks X = 2^125 and saturates to 6X).
    t = mxfp4_quantize(block32(1.875 * 2.0**127), scale_mode="rceil")
    assert t.scales.tolist() == [253] and int(t.codes[0]) == 6
    assert mxfp4_dequantize(t)[0] == np.inf
    assert mxfp4_dequantize(mxfp4_quantize(block32(1.875 * 2.0**127)))[0] == F32(6 * 2.0**125)


def test_mxfp4_float64_beyond_float32_range_is_inf():
    # 1e39 rounds to +Inf when cast to float32, so its block is poisoned like an Inf block.
    t = mxfp4_quantize(np.array([1e39] + [0.0] * 31 + [1.0] + [0.0] * 31))
    assert t.scales.tolist() == [0xFF, 125]


def test_mxfp4_negative_values_rounding_to_zero_keep_sign():
    t = mxfp4_quantize(block32(4.0, -0.1, 0.1))  # X = 1: |0.1| < 0.25 rounds to 0
    assert t.codes[:3].tolist() == [6, 8, 0]


# ----------------------------------------------------------------------------- NVFP4


def nv_block(amax_t: float, *vals: float) -> np.ndarray:
    """A [2, 16] tensor: row 0 holds the tensor amax alone, row 1 the block under test."""
    x = np.zeros((2, 16), F32)
    x[0, 0] = amax_t
    x[1, : len(vals)] = vals
    return x


def test_nvfp4_computed_scale_underflow_becomes_1():
    # s_global = 3e38/2688; block amax 1e-30: 1e-30 / (6·s_global) ~ 1.5e-66 underflows to 0 in
    # float32 -> ModelOpt sets a computed zero scale to 1.0 (E4M3 0x38), not the 2^-9 clamp (0x01).
    t = nvfp4_quantize(nv_block(3e38, 1e-30, -1e-30))
    assert int(t.scales[1, 0]) == 0x38
    assert t.codes[1, :2].tolist() == [0, 8]  # 1e-30 / s_global rounds to signed zeros


def test_nvfp4_tiny_scale_clamps_to_e4m3_min_subnormal():
    # s_global = 1000/2688; block amax 1e-6: s = 4.5e-7 (non-zero) -> clamped up to 2^-9 (code 1).
    t = nvfp4_quantize(nv_block(1000.0, 1e-6))
    assert int(t.scales[1, 0]) == 1


@pytest.mark.parametrize(
    "m, code",  # s = m·2^-9 with s_global = 1 (tensor amax 2688): E4M3 subnormal grid 2^-9, RNE
    [(1.0, 1), (2.5, 2), (3.5, 4), (6.5, 6), (7.5, 8), (7.0, 7)],
)
def test_nvfp4_subnormal_e4m3_block_scales_round_half_even(m, code):
    # block amax = 6·s exactly, so s = amax/6 is exact in float32 and only the E4M3 cast rounds;
    # 7.5·2^-9 rounds up into the first normal binade, code 8 = 2^-6.
    t = nvfp4_quantize(nv_block(2688.0, 6 * m * 2.0**-9))
    assert t.tensor_scale == 1.0 and int(t.scales[1, 0]) == code


@pytest.mark.parametrize("s, code", [(1.0625, 0x38), (1.1875, 0x3A), (1.0, 0x38), (448.0, 0x7E)])
def test_nvfp4_normal_e4m3_block_scale_ties(s, code):
    # 1.0625 is the midpoint of 1.0 (0x38) and 1.125 (0x39): even mantissa -> 0x38;
    # 1.1875 between 1.125 (0x39) and 1.25 (0x3A) -> 0x3A.
    t = nvfp4_quantize(nv_block(2688.0, 6 * s))
    assert int(t.scales[1, 0]) == code


def test_nvfp4_e2m1_ties_after_division():
    # s_global = 1, block amax 6 -> s_block = 1 exactly, so y = x and ties are exact E2M1 midpoints.
    t = nvfp4_quantize(nv_block(2688.0, 6.0, *TIES))
    assert t.codes[1, 1 : 1 + len(TIES)].tolist() == TIE_CODES
    t = nvfp4_quantize(nv_block(2688.0, 6.0, *(-v for v in TIES)))
    assert t.codes[1, 1 : 1 + len(TIES)].tolist() == [c | 8 for c in TIE_CODES]


def test_nvfp4_tensor_scale_underflow_flushes_to_signed_zero():
    # 2.8e-43 / 2688 underflows float32 -> s_global = 0: block scales 1.0, codes signed zeros.
    x = np.array([[2.8e-43, -2.8e-43, 0.0, -0.0]], F32)
    t = nvfp4_quantize(x)
    assert t.tensor_scale == 0 and t.scales.tolist() == [[0x38]]
    assert t.codes[0, :4].tolist() == [0, 8, 0, 8]
    d = nvfp4_dequantize(t)
    assert np.all(d == 0) and np.signbit(d).tolist() == [[False, True, False, True]]
    assert nvfp4_quantize(x, tensor_amax=1e-42).tensor_scale == 0  # calibrated, covers the data


def test_nvfp4_zero_tensor_scale_with_data_beyond_it_is_refused():
    with pytest.raises(ValueError, match="tensor_amax"):
        nvfp4_quantize(np.ones(16, F32), tensor_amax=0.0)
    with pytest.raises(ValueError, match="tensor_amax"):
        nvfp4_quantize(np.full(16, 1e-40, F32), tensor_amax=1e-43)


def test_nvfp4_all_zero_tensor():
    t = nvfp4_quantize(np.array([[0.0, -0.0] * 8], F32))
    assert t.tensor_scale == 0 and t.scales.tolist() == [[0x38]]
    assert t.codes[0, :4].tolist() == [0, 8, 0, 8]


def test_nvfp4_decode_scale_underflow_stores_signed_zeros():
    # tensor amax 2688·2^-145 -> s_global = 2^-145 (a float32 subnormal). Block amax 2^-149:
    # d = 6·2^-145 = 1.5·2^-143; s = 2^-149 / d = 2^-6/1.5 = 5.33·2^-9 -> E4M3 subnormal 5·2^-9 (code 5);
    # decode scale 5·2^-9 · 2^-145 = 0.15625·2^-149 rounds to 0 -> elements stored as signed zeros
    # (a plain division would give x/0 = ±Inf and 0/0 = NaN).
    x = nv_block(2688 * 2.0**-145, 2.0**-149, 0.0, -0.0, -(2.0**-149))
    t = nvfp4_quantize(x)
    assert t.tensor_scale == F32(2.0**-145) and int(t.scales[1, 0]) == 5
    assert t.codes[1, :4].tolist() == [0, 0, 8, 8]
    d = nvfp4_dequantize(t)[1, :4]
    assert np.all(d == 0) and np.signbit(d).tolist() == [False, False, True, True]


def test_nvfp4_negative_zero_keeps_code_8():
    t = nvfp4_quantize(np.array([4.0, -0.0, -0.01] + [0.0] * 13, F32))
    assert t.codes[:3].tolist() == [7, 8, 8] and np.signbit(nvfp4_dequantize(t)[1])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e39])
def test_nvfp4_non_finite_input_is_refused(bad):
    with pytest.raises(ValueError, match="NaN or Inf"):
        nvfp4_quantize(np.array([1.0, bad]))


@pytest.mark.parametrize("amax", [-1.0, np.nan, np.inf, 1e39])
def test_nvfp4_bad_tensor_amax_is_refused(amax):
    with pytest.raises(ValueError, match="tensor_amax"):
        nvfp4_quantize(np.ones(16, F32), tensor_amax=amax)
