"""2-bit and base-3 ternary packing: layout vs a plain loop reference, round trips, padding, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lowbit.sim.numerics.packing import (
    BITS_PER_WEIGHT_BASE3,
    pack_ternary_2bit,
    pack_ternary_base3,
    packed_nbytes_2bit,
    packed_nbytes_base3,
    unpack_ternary_2bit,
    unpack_ternary_base3,
)

codes_st = hnp.arrays(
    np.int8,
    hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=13),
    elements=st.integers(-1, 1),
)


def ref_pack_row(row: list[int], per_byte: int) -> list[int]:
    out = [0] * -(-len(row) // per_byte)
    padded = row + [0] * (len(out) * per_byte - len(row))
    for i, w in enumerate(padded):
        if per_byte == 4:
            out[i // 4] |= (w + 1) << (2 * (i % 4))
        else:
            out[i // 5] += (w + 1) * 3 ** (i % 5)
    return out


@settings(max_examples=150, deadline=None)
@given(codes_st)
def test_layout_and_roundtrip(c: np.ndarray) -> None:
    n = c.shape[-1]
    for pack, unpack, per_byte in (
        (pack_ternary_2bit, unpack_ternary_2bit, 4),
        (pack_ternary_base3, unpack_ternary_base3, 5),
    ):
        packed, length = pack(c)
        assert length == n and packed.dtype == np.uint8
        assert packed.shape == c.shape[:-1] + (-(-n // per_byte),)
        n_rows = int(np.prod(c.shape[:-1]))
        rows_c = c.reshape(n_rows, n)
        rows_p = packed.reshape(n_rows, packed.shape[-1])
        for rc, rp in zip(rows_c, rows_p, strict=True):
            assert rp.tolist() == ref_pack_row(rc.tolist(), per_byte)
        back = unpack(packed, n)
        assert back.dtype == np.int8 and np.array_equal(back, c)


def test_known_bytes_and_padding() -> None:
    p, n = pack_ternary_2bit(np.array([-1, 0, 1, 1], np.int8))
    assert n == 4 and p.tolist() == [0b10_10_01_00]
    p, n = pack_ternary_2bit(np.array([1, 0, 0, 0, -1], np.int8))
    assert n == 5 and p.tolist() == [0b01_01_01_10, 0b01_01_01_00]  # padding = zero weights (code 01)
    p, n = pack_ternary_base3(np.array([1] * 5 + [-1] * 5 + [0] * 5 + [1], np.int8))
    assert n == 16 and p.tolist() == [242, 0, 121, 2 + 3 + 9 + 27 + 81]
    assert packed_nbytes_2bit(8640) == 2160 and packed_nbytes_base3(8640) == 1728
    assert packed_nbytes_2bit(5) == 2 and packed_nbytes_base3(6) == 2 and BITS_PER_WEIGHT_BASE3 == 1.6


def test_all_valid_bytes_roundtrip() -> None:
    b = np.arange(256, dtype=np.uint8)
    valid2 = np.array([all((v >> (2 * j)) & 3 != 3 for j in range(4)) for v in range(256)])
    assert valid2.sum() == 81
    for v in b[valid2]:
        assert pack_ternary_2bit(unpack_ternary_2bit(np.array([v]), 4))[0].tolist() == [v]
    u = unpack_ternary_base3(b[:243], 243 * 5)
    assert np.array_equal(pack_ternary_base3(u)[0], b[:243])
    assert len({tuple(r) for r in u.reshape(243, 5).tolist()}) == 243  # bijective


def test_errors() -> None:
    with pytest.raises(ValueError):
        unpack_ternary_2bit(np.array([0xFF], np.uint8), 4)
    with pytest.raises(ValueError):
        unpack_ternary_base3(np.array([243], np.uint8), 5)
    with pytest.raises(ValueError):
        pack_ternary_2bit(np.array([2, 0], np.int8))
    with pytest.raises(TypeError):
        pack_ternary_base3(np.array([0.0]))
    with pytest.raises(ValueError):
        unpack_ternary_2bit(np.array([0x55], np.uint8), 5)  # 1 byte holds 4, not 5
    with pytest.raises(ValueError):
        unpack_ternary_base3(np.array([121, 121], np.uint8), 5)  # 2 bytes means n in 6..10


# ----------------------------------------------------------------------------- transformers layout


@settings(max_examples=100, deadline=None)
@given(codes_st)
def test_transformers_layout_roundtrip_and_strides(c: np.ndarray) -> None:
    packed, n = pack_ternary_2bit(c, layout="transformers")
    assert n == c.shape[0] and packed.shape == (-(-n // 4),) + c.shape[1:]
    rows = packed.shape[0]
    for r in range(n):  # row r sits in byte row r % R at bits 2·(r // R)
        assert np.array_equal((packed[r % rows] >> (2 * (r // rows))) & 3, c[r].astype(np.int64) + 1)
    pad = [(r % rows, r // rows) for r in range(n, 4 * rows)]
    assert all(not ((packed[b] >> (2 * j)) & 3).any() for b, j in pad)  # padding slots are 0b00
    assert np.array_equal(unpack_ternary_2bit(packed, n, layout="transformers"), c)


def test_transformers_layout_docstring_example() -> None:
    # transformers' unpack_weights docstring: bytes [[0b10100001, 0b00011000], [0b10010000, 0b00001010]]
    # hold 8 rows x 2 columns; byte row r holds rows r, r+2, r+4, r+6 from the low bits up.
    p = np.array([[0b10100001, 0b00011000], [0b10010000, 0b00001010]], np.uint8)
    w = [[0, -1], [-1, 1], [-1, 1], [-1, 1], [1, 0], [0, -1], [1, -1], [1, -1]]
    assert unpack_ternary_2bit(p, 8, layout="transformers").tolist() == w
    assert pack_ternary_2bit(np.array(w, np.int8), layout="transformers")[0].tolist() == p.tolist()


def test_transformers_layout_errors() -> None:
    with pytest.raises(ValueError, match="layout"):
        pack_ternary_2bit(np.zeros(4, np.int8), layout="i2_s")
    with pytest.raises(ValueError, match="code 3"):
        unpack_ternary_2bit(np.array([0b11], np.uint8), 1, layout="transformers")
    with pytest.raises(ValueError, match="packed rows"):
        unpack_ternary_2bit(np.zeros((2, 3), np.uint8), 9, layout="transformers")  # 2 rows hold 5..8
    with pytest.raises(ValueError):
        pack_ternary_2bit(np.array(1, np.int8), layout="transformers")
