"""E2M1 / E4M3 / E8M0 codecs and FP4 packing against ml_dtypes 0.6 as an independent oracle.

ml_dtypes pitfalls handled here (docs/reference/numerics.md §4): always cast *from float32*; NaN -> E2M1 gives -0
silently (we mask NaNs); the E4M3 cast does not saturate (compared with ``saturate=False`` or after an
explicit clip); the E8M0 cast rounds to nearest with ties up, so it only checks ``mode="nearest"``.
"""

from __future__ import annotations

import math

import ml_dtypes as md
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lowbit.sim.numerics.fp import (
    e2m1_decode,
    e2m1_encode,
    e4m3_decode,
    e4m3_encode,
    e8m0_decode,
    e8m0_encode,
    e8m0_from_exponent,
    pack_fp4,
    unpack_fp4,
)

F32 = np.float32


def ml_codes(x: np.ndarray, dtype) -> np.ndarray:
    """ml_dtypes cast from float32, returned as uint8 codes."""
    return np.asarray(x, F32).astype(dtype).view(np.uint8)


def midpoints_and_neighbours(grid: np.ndarray) -> np.ndarray:
    """Every exact midpoint of consecutive grid values plus its float32 neighbours (tie stress)."""
    g = np.unique(grid.astype(np.float64))
    mids = ((g[:-1] + g[1:]) / 2).astype(F32)
    pts = np.concatenate(
        [g.astype(F32), mids, np.nextafter(mids, F32(-np.inf)), np.nextafter(mids, F32(np.inf))]
    )
    return np.concatenate([pts, -pts])


# ----------------------------------------------------------------------------- E2M1


def test_e2m1_decode_all_codes_match_ml_dtypes():
    codes = np.arange(16, dtype=np.uint8)
    ref = codes.view(md.float4_e2m1fn).astype(F32)
    got = e2m1_decode(codes)
    assert got.dtype == F32
    np.testing.assert_array_equal(got, ref)
    assert np.array_equal(np.signbit(got), np.signbit(ref))  # code 8 is -0


@pytest.mark.parametrize(
    "x, code",
    [
        (0.25, 0),
        (0.75, 2),
        (1.25, 2),
        (1.75, 4),
        (2.5, 4),
        (3.5, 6),
        (5.0, 6),
        (-0.25, 8),
        (-0.75, 10),
        (-2.5, 12),
        (-5.0, 14),
        (6.5, 7),
        (1e30, 7),
        (-7.0, 15),
    ],
)
def test_e2m1_ties_and_saturation(x, code):
    assert int(e2m1_encode(np.float32(x))) == code
    assert int(ml_codes(np.array([x]), md.float4_e2m1fn)[0]) == code


def test_e2m1_encode_dense_sweep_matches_ml_dtypes():
    grid = e2m1_decode(np.arange(8))
    x = np.concatenate(
        [
            midpoints_and_neighbours(grid),
            np.linspace(-9, 9, 100_001, dtype=F32),
            np.array([np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 3.4e38], F32),
        ]
    )
    np.testing.assert_array_equal(e2m1_encode(x), ml_codes(x, md.float4_e2m1fn))


@settings(max_examples=300, deadline=None)
@given(arrays(F32, st.integers(1, 64), elements=st.floats(width=32, allow_nan=False)))
def test_e2m1_encode_hypothesis(x):
    np.testing.assert_array_equal(e2m1_encode(x), ml_codes(x, md.float4_e2m1fn))


def test_e2m1_nan_policy():
    with pytest.raises(ValueError):
        e2m1_encode(np.array([1.0, np.nan]))
    assert e2m1_encode(np.array([np.nan, -np.nan]), nan="zero").tolist() == [0, 0]


def test_e2m1_float64_input_is_rounded_once():
    # 0.25 + 2^-40 is above the tie in float64 and must round up; a cast to float32 first would lose it.
    assert int(e2m1_encode(np.float64(0.25 + 2.0**-40))) == 1
    assert int(e2m1_encode(np.float64(2.5 + 2.0**-40))) == 5


# ----------------------------------------------------------------------------- E4M3


def test_e4m3_decode_all_codes_match_ml_dtypes():
    codes = np.arange(256, dtype=np.uint8)
    ref = codes.view(md.float8_e4m3fn).astype(F32)
    got = e4m3_decode(codes)
    np.testing.assert_array_equal(got, ref)  # NaNs compare equal in assert_array_equal
    assert np.isnan(got[[0x7F, 0xFF]]).all() and np.isfinite(np.delete(got, [0x7F, 0xFF])).all()
    assert got[0x7E] == 448 and got[1] == 2.0**-9 and got[8] == 2.0**-6


def _e4m3_sweep() -> np.ndarray:
    grid = e4m3_decode(np.arange(0x7F))
    rng = np.random.default_rng(1)
    rand = (rng.standard_normal(50_000) * np.exp2(rng.integers(-14, 11, 50_000))).astype(F32)
    extra = np.array([2.0**-10, 1.5 * 2.0**-10, 2.0**-11, 464, 465, 479, 480, 1e30, np.inf], F32)
    return np.concatenate([midpoints_and_neighbours(grid), rand, extra, -extra])


def test_e4m3_encode_nonsaturating_matches_ml_dtypes():
    x = _e4m3_sweep()
    got, ref = e4m3_encode(x, saturate=False), ml_codes(x, md.float8_e4m3fn)
    # NaN codes may differ in sign bit only where ml_dtypes makes NaN; compare decoded values.
    np.testing.assert_array_equal(e4m3_decode(got), e4m3_decode(ref))
    np.testing.assert_array_equal(got[~np.isnan(e4m3_decode(ref))], ref[~np.isnan(e4m3_decode(ref))])


def test_e4m3_encode_saturating_equals_clip_then_cast():
    x = _e4m3_sweep()
    np.testing.assert_array_equal(e4m3_encode(x), ml_codes(np.clip(x, -448, 448), md.float8_e4m3fn))
    assert e4m3_encode(np.array([np.inf, -np.inf, 1e6])).tolist() == [0x7E, 0xFE, 0x7E]
    assert e4m3_encode(np.array([np.nan])).tolist() == [0x7F]
    # Subnormal ties: 2^-10 -> 0 (even), 1.5·2^-10 -> 2^-9, 3·2^-10 -> 2·2^-9 (even).
    assert e4m3_encode(np.array([2.0**-10, 1.5 * 2.0**-10, 3 * 2.0**-10])).tolist() == [0, 1, 2]


@settings(max_examples=300, deadline=None)
@given(arrays(F32, st.integers(1, 64), elements=st.floats(width=32, allow_nan=False)))
def test_e4m3_encode_hypothesis(x):
    got, ref = e4m3_encode(x, saturate=False), ml_codes(x, md.float8_e4m3fn)
    np.testing.assert_array_equal(e4m3_decode(got), e4m3_decode(ref))
    np.testing.assert_array_equal(e4m3_encode(x), ml_codes(np.clip(x, -448, 448), md.float8_e4m3fn))


# ----------------------------------------------------------------------------- E8M0


def test_e8m0_decode_all_codes_match_ml_dtypes():
    codes = np.arange(256, dtype=np.uint8)
    ref = codes.view(md.float8_e8m0fnu).astype(np.float64)
    got = e8m0_decode(codes)
    np.testing.assert_array_equal(got, ref)
    assert np.isnan(got[255]) and got[0] == 2.0**-127 and got[127] == 1.0 and got[254] == 2.0**127


def _positive_sweep() -> np.ndarray:
    rng = np.random.default_rng(2)
    e = rng.integers(-126, 127, 20_000)
    m = rng.uniform(1, 2, 20_000)
    pts = np.ldexp(m, e)
    exact = np.ldexp(np.array([1.0, 1.5, 1.4999999, 1.5000001, 1.75]), 5)
    return np.concatenate([pts, exact, [2.0**-127, 2.0**127, 1.5, 3.0, 6.0, 2.9999]]).astype(F32)


def test_e8m0_nearest_matches_ml_dtypes():
    x = _positive_sweep()
    x = x[(x >= 2.0**-127) & (x < 1.5 * 2.0**127)]
    np.testing.assert_array_equal(e8m0_encode(x, mode="nearest"), ml_codes(x, md.float8_e8m0fnu))


def test_e8m0_floor_and_ceil_bracket_the_value():
    x = _positive_sweep().astype(np.float64)
    fl = e8m0_decode(e8m0_encode(x, mode="floor"))
    ce = e8m0_decode(e8m0_encode(x, mode="ceil"))
    assert np.all(fl <= x) and np.all(x < 2 * fl)
    assert np.all(ce >= x) and np.all(x > ce / 2)
    for v in (1.0, 3.0, 0.75, 2.0**-100):  # independent scalar derivation with math.frexp
        m, e = math.frexp(v)
        assert int(e8m0_encode(v, mode="floor")) == e - 1 + 127
        assert int(e8m0_encode(v, mode="ceil")) == e - 1 + 127 + (m != 0.5)


def test_e8m0_invalid_and_out_of_range():
    assert e8m0_encode(np.array([0.0, -1.0, np.nan, np.inf])).tolist() == [255] * 4
    assert int(e8m0_encode(2.0**-140)) == 0
    assert e8m0_from_exponent(np.array([-200, -127, 0, 127, 128])).tolist() == [0, 0, 127, 254, 255]


# ----------------------------------------------------------------------------- packing


def test_pack_even_element_in_low_nibble():
    assert pack_fp4(np.array([0x1, 0x2, 0xF, 0x0], np.uint8)).tolist() == [0x21, 0x0F]
    assert pack_fp4(np.array([0x7, 0x9, 0x3])).tolist() == [0x97, 0x03]  # odd length: zero pad


@settings(max_examples=100, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 3), st.integers(1, 33)), elements=st.integers(0, 15)))
def test_pack_unpack_roundtrip(c):
    packed = pack_fp4(c)
    assert packed.shape == (*c.shape[:-1], (c.shape[-1] + 1) // 2)
    np.testing.assert_array_equal(unpack_fp4(packed, c.shape[-1]), c)
    # torchao pack_uint4 formula as a second, independent reference (even length only).
    if c.shape[-1] % 2 == 0:
        np.testing.assert_array_equal(packed, c[..., ::2] | (c[..., 1::2] << 4))


def test_pack_rejects_out_of_range():
    with pytest.raises(ValueError):
        pack_fp4(np.array([16]))
    with pytest.raises(ValueError):
        unpack_fp4(np.zeros(2, np.uint8), 5)
