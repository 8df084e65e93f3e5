"""Radix-4 Booth: exhaustive products, encoder table, ternary dot mode, MSB-first bit-serial."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.sim.numerics.booth import (
    booth_digits,
    booth_encode,
    booth_multiply,
    booth_partial_products,
    booth_pp_rows_hw,
    booth_serial_cycles,
    booth_serial_multiply,
    booth_serial_trace,
    booth_ternary_dot,
    ternary_booth_encode,
)

INT8 = np.arange(-128, 128, dtype=np.int64)
A8, B8 = np.meshgrid(INT8, INT8, indexing="ij")  # all 65,536 pairs

# docs/reference/numerics.md §8.1 table: (b[2i+1], b[2i], b[2i-1]) -> digit
TABLE = {
    (0, 0, 0): 0,
    (0, 0, 1): 1,
    (0, 1, 0): 1,
    (0, 1, 1): 2,
    (1, 0, 0): -2,
    (1, 0, 1): -1,
    (1, 1, 0): -1,
    (1, 1, 1): 0,
}


def ref_digits(b: int, bits: int) -> list[int]:
    """Python ints (infinite two's complement): look the triplets up in the published table."""
    bit = [(b >> k) & 1 for k in range(bits)]
    return [TABLE[(bit[2 * i + 1], bit[2 * i], bit[2 * i - 1] if i else 0)] for i in range(bits // 2)]


def signed_range(bits: int) -> np.ndarray:
    return np.arange(-(1 << (bits - 1)), 1 << (bits - 1), dtype=np.int64)


@pytest.mark.parametrize("bits", [2, 4, 6, 8, 10])
def test_digits_exhaustive(bits: int) -> None:
    b = signed_range(bits)
    d = booth_digits(b, bits)
    assert d.shape == (b.size, bits // 2) and d.min() >= -2 and d.max() <= 2
    assert np.array_equal((d.astype(np.int64) * 4 ** np.arange(bits // 2)).sum(-1), b)
    assert d.tolist() == [ref_digits(int(v), bits) for v in b]


def test_encoder_signals_exhaustive() -> None:
    enc = booth_encode(INT8, 8)
    d = booth_digits(INT8, 8)
    assert np.array_equal(enc.digits, d)
    assert not np.any(enc.one & enc.two)
    assert np.array_equal(enc.one, (np.abs(d) == 1).astype(np.int8))
    assert np.array_equal(enc.two, (np.abs(d) == 2).astype(np.int8))
    # neg is the raw top bit of each triplet (so "111" gives neg=1 with a zero row)
    assert np.array_equal(enc.neg, ((INT8[:, None] & 0xFF) >> (2 * np.arange(4) + 1)) & 1)


def test_multiply_all_int8_pairs() -> None:
    assert np.array_equal(booth_multiply(A8, B8, 8), A8 * B8)


@pytest.mark.parametrize("bits", [2, 4, 6])
def test_multiply_exhaustive_small(bits: int) -> None:
    a, b = np.meshgrid(signed_range(bits), signed_range(bits), indexing="ij")
    assert np.array_equal(booth_multiply(a, b, bits), a * b)


@settings(max_examples=200, deadline=None)
@given(st.integers(-(2**15), 2**15 - 1), st.integers(-(2**15), 2**15 - 1))
def test_multiply_int16(a: int, b: int) -> None:
    assert int(booth_multiply(np.int64(a), np.int64(b), 16)) == a * b


def test_partial_product_rows_all_int8() -> None:
    rows = booth_partial_products(A8, B8, 8)
    d = booth_digits(B8, 8).astype(np.int64)
    assert np.array_equal(rows, d * A8[..., None] * 4 ** np.arange(4))
    pattern, neg = booth_pp_rows_hw(A8, B8, 8)
    assert pattern.min() >= 0 and pattern.max() < 1 << 10
    signext = np.where(pattern >= 1 << 9, pattern - (1 << 10), pattern)
    assert np.array_equal(signext + neg, d * A8[..., None])  # invert + "+neg" LSB injection


def test_ternary_single_pairs_exhaustive() -> None:
    w = np.array([-1, 0, 1])[:, None]
    for row in range(4):
        ww = np.zeros((3, 256, 4), np.int64)
        aa = np.zeros((3, 256, 4), np.int64)
        ww[..., row] = w
        aa[..., row] = INT8
        assert np.array_equal(booth_ternary_dot(ww, aa), w * INT8)


def test_ternary_dot_all_weight_patterns() -> None:
    grid = np.stack(np.meshgrid(*[[-1, 0, 1]] * 4, indexing="ij"), -1).reshape(81, 1, 4)
    rng = np.random.default_rng(2)
    acts = rng.integers(-128, 128, size=(1, 200, 4))
    acts[0, 0] = -128
    acts[0, 1] = 127
    out = booth_ternary_dot(grid, acts)
    assert out.shape == (81, 200)
    ref = [[sum(int(w) * int(a) for w, a in zip(g[0], ac, strict=True)) for ac in acts[0]] for g in grid]
    assert out.tolist() == ref
    enc = ternary_booth_encode(grid)
    assert not enc.two.any() and np.array_equal(enc.digits, grid.astype(np.int8))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(-1, 1), min_size=4, max_size=4),
    st.lists(st.integers(-128, 127), min_size=4, max_size=4),
)
def test_ternary_dot_property(w: list[int], a: list[int]) -> None:
    assert int(booth_ternary_dot(np.array(w), np.array(a))) == sum(x * y for x, y in zip(w, a, strict=True))


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_serial_exhaustive(bits: int) -> None:
    b = signed_range(bits)[None, :]
    a = INT8[:, None]
    prod, cycles = booth_serial_multiply(a, b, bits)
    assert cycles == bits // 2 == booth_serial_cycles(bits)
    assert np.array_equal(prod, a * b)


def test_serial_ternary() -> None:
    w = np.array([-1, 0, 1])[None, :]
    prod, cycles = booth_serial_multiply(INT8[:, None], w, "ternary")
    assert cycles == 1 == booth_serial_cycles("ternary")
    assert np.array_equal(prod, INT8[:, None] * w)
    assert booth_serial_cycles(16) == 8


def test_serial_is_msb_first() -> None:
    # after t cycles an MSB-first Horner accumulator holds a * (top digits of b) = a*((b>>2m) + b[2m-1]),
    # m = remaining digits; an LSB-first schedule would hold a * (low bits of b) instead.
    tr = booth_serial_trace(A8, B8, 8)
    assert tr.shape == (256, 256, 4)
    for t in range(1, 5):
        m = 4 - t
        top = (B8 >> (2 * m)) + (((B8 >> (2 * m - 1)) & 1) if m else 0)
        assert np.array_equal(tr[..., t - 1], A8 * top)


def test_errors() -> None:
    with pytest.raises(ValueError):
        booth_digits(np.array([1]), 7)
    with pytest.raises(ValueError):
        booth_digits(np.array([128]), 8)
    with pytest.raises(ValueError):
        booth_ternary_dot(np.array([1, 0, 0]), np.array([1, 2, 3]))
    with pytest.raises(ValueError):
        booth_ternary_dot(np.array([2, 0, 0, 0]), np.array([1, 2, 3, 4]))
    with pytest.raises(TypeError):
        booth_multiply(np.array([1.0]), np.array([1]))
