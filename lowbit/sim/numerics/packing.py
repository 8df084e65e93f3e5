"""Ternary weight packing: 2-bit codes (4 per byte) and 1.6-bit base-3 (5 trits per byte).

Both formats pack along the **last axis** of the code array (one row of a weight matrix = one packed
row), so ``[..., n]`` int8 codes become ``[..., ceil(n/4)]`` or ``[..., ceil(n/5)]`` uint8 bytes.

2-bit layout (docs/reference/vitallm.md §5.2 "2-bit ternary code"; the {0,1,2} offset code is bitnet.cpp I2_S's,
docs/reference/numerics.md §1.7, but here in plain sequential order, *not* I2_S's 32-byte strided interleave)::

    code_i = w_i + 1 in {0, 1, 2}          (code 3 is never produced; unpack rejects it)
    byte[i // 4] bits [2*(i%4)+1 : 2*(i%4)] = code_i       (element 0 in the two LSBs: little-end first)

1.6-bit base-3 layout (docs/reference/vitallm.md §5.2 "1.6 bits/weight (5 trits per byte)")::

    byte[g] = sum_{j=0..4} (w_{5g+j} + 1) * 3^j in [0, 242]  (element 5g in the least significant trit)

Padding: when ``n`` is not a multiple of 4 (resp. 5) the row is padded at the end with **zero
weights** (code 1 / trit 1), so the padding decodes to 0 and contributes nothing to a dot product.
``pack_*`` returns ``(packed, n)``; ``unpack_*(packed, n)`` drops the padding.

Import/export: ``layout="transformers"`` reads and writes the 2-bit layout of Hugging Face
transformers' BitNet integration (``integrations/bitnet.py`` ``pack_weights`` / ``unpack_weights``,
the packed ``BitLinear.weight`` buffer ``[out // 4, in]``), which differs from the one above in three
ways (docs/numerics.md): it packs along **axis 0**, not the last axis; it is **strided**, not
sequential: with ``R = ceil(N/4)`` packed rows, byte row ``r`` holds rows ``r, r+R, r+2R, r+3R`` in
bits [1:0], [3:2], [5:4], [7:6]; and its padding slots are ``0b00``, which transformers' unpack
decodes to **-1** (so crop to ``n``; lowbit's unpack does).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "TERNARY_2BIT_LAYOUTS",
    "TERNARY_2BIT_PER_BYTE",
    "TERNARY_BASE3_PER_BYTE",
    "BITS_PER_WEIGHT_2BIT",
    "BITS_PER_WEIGHT_BASE3",
    "packed_nbytes_2bit",
    "packed_nbytes_base3",
    "pack_ternary_2bit",
    "unpack_ternary_2bit",
    "pack_ternary_base3",
    "unpack_ternary_base3",
]

TERNARY_2BIT_PER_BYTE = 4
TERNARY_BASE3_PER_BYTE = 5
BITS_PER_WEIGHT_2BIT = 2.0
BITS_PER_WEIGHT_BASE3 = 8.0 / 5.0  # 3^5 = 243 <= 256
_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.int64)
TERNARY_2BIT_LAYOUTS = ("sequential", "transformers")
Layout2bit = Literal["sequential", "transformers"]


def packed_nbytes_2bit(n: int) -> int:
    """Bytes for one packed row of ``n`` ternary weights in the 2-bit format: ``ceil(n/4)``."""
    return -(-int(n) // TERNARY_2BIT_PER_BYTE)


def packed_nbytes_base3(n: int) -> int:
    """Bytes for one packed row of ``n`` ternary weights in the base-3 format: ``ceil(n/5)``."""
    return -(-int(n) // TERNARY_BASE3_PER_BYTE)


def _offset_codes(codes: npt.ArrayLike, group: int) -> tuple[np.ndarray, int]:
    """Validate ternary codes, return ``(w+1 as int64 padded to a multiple of group on the last axis, n)``."""
    c = np.asarray(codes)
    if c.ndim == 0:
        raise ValueError("codes must have at least one dimension")
    if not np.issubdtype(c.dtype, np.integer):
        raise TypeError(f"codes must be an integer array, got {c.dtype}")
    if c.size and (c.min() < -1 or c.max() > 1):
        raise ValueError("ternary codes must lie in {-1, 0, 1}")
    n = c.shape[-1]
    pad = (-n) % group
    u = c.astype(np.int64) + 1
    if pad:
        # pad with zero weights (offset code 1) so padding decodes to 0
        u = np.concatenate([u, np.ones(c.shape[:-1] + (pad,), dtype=np.int64)], axis=-1)
    return u, n


def _check_unpack_len(packed: np.ndarray, n: int, per_byte: int) -> None:
    if packed.ndim == 0:
        raise ValueError("packed must have at least one dimension")
    if not 0 <= n <= packed.shape[-1] * per_byte or packed.shape[-1] != -(-n // per_byte):
        raise ValueError(f"length {n} does not match {packed.shape[-1]} packed bytes")


def _check_layout(layout: str) -> None:
    if layout not in TERNARY_2BIT_LAYOUTS:
        raise ValueError(f"layout must be one of {TERNARY_2BIT_LAYOUTS}, got {layout!r}")


def pack_ternary_2bit(codes: npt.ArrayLike, *, layout: Layout2bit = "sequential") -> tuple[np.ndarray, int]:
    """Pack ternary codes into uint8, 2 bits each (code ``w + 1``): returns ``(packed, n)``.

    ``layout="sequential"`` (default): ``[..., n]`` -> ``[..., ceil(n/4)]``,
    ``byte[g] = sum_{j=0..3} (w_{4g+j} + 1) << 2j`` (element ``i`` in bits ``[2(i%4)+1 : 2(i%4)]`` of byte
    ``i//4``); tail padded with zero weights; ``n`` is the last-axis length. Layout: module docstring
    (docs/reference/vitallm.md §5.2).
    ``layout="transformers"``: ``[N, ...]`` -> ``[ceil(N/4), ...]`` along axis 0, byte row ``r`` holding
    rows ``r + jR`` in bits ``[2j+1 : 2j]`` (``R = ceil(N/4)``), padding slots ``0b00``; bit-identical
    to transformers ``pack_weights``; ``n = N``.
    """
    _check_layout(layout)
    if layout == "transformers":
        c = np.asarray(codes)
        u, n = _offset_codes(np.moveaxis(c, 0, -1) if c.ndim else c, 1)
        u = np.moveaxis(u, -1, 0)
        rows = packed_nbytes_2bit(n)
        packed = np.zeros((rows,) + u.shape[1:], np.int64)
        for j in range(TERNARY_2BIT_PER_BYTE):
            part = u[j * rows : (j + 1) * rows]
            packed[: len(part)] |= part << (2 * j)
        return packed.astype(np.uint8), n
    u, n = _offset_codes(codes, TERNARY_2BIT_PER_BYTE)
    g = u.reshape(u.shape[:-1] + (u.shape[-1] // TERNARY_2BIT_PER_BYTE, TERNARY_2BIT_PER_BYTE))
    packed = g[..., 0] | (g[..., 1] << 2) | (g[..., 2] << 4) | (g[..., 3] << 6)
    return packed.astype(np.uint8), n


def unpack_ternary_2bit(packed: npt.ArrayLike, n: int, *, layout: Layout2bit = "sequential") -> np.ndarray:
    """Inverse of :func:`pack_ternary_2bit` for the same ``layout``: uint8 -> int8 codes in {-1, 0, 1}.

    ``sequential``: ``[..., ceil(n/4)]`` -> ``[..., n]``. ``transformers``: ``[ceil(n/4), ...]`` ->
    ``[n, ...]`` (axis 0; the padding slots, -1 in transformers ``unpack_weights``, are dropped).
    Raises ``ValueError`` on the unused code 3 (it would decode to +2, which is not ternary).
    """
    _check_layout(layout)
    p = np.asarray(packed)
    if layout == "transformers":
        if p.ndim == 0:
            raise ValueError("packed must have at least one dimension")
        back = unpack_ternary_2bit(np.moveaxis(p, 0, -1)[..., None], TERNARY_2BIT_PER_BYTE)
        # back[..., r, j] is row r + j·R: put j first so rows run 0..4R-1 in order, then crop.
        strided = np.moveaxis(back, (-2, -1), (1, 0)) if back.ndim > 2 else back.T
        flat = strided.reshape((TERNARY_2BIT_PER_BYTE * p.shape[0],) + p.shape[1:])
        if not 0 <= n <= flat.shape[0] or p.shape[0] != packed_nbytes_2bit(n):
            raise ValueError(f"length {n} does not match {p.shape[0]} packed rows")
        return flat[:n]
    _check_unpack_len(p, n, TERNARY_2BIT_PER_BYTE)
    p = p.astype(np.int64)
    fields = np.stack([(p >> (2 * j)) & 3 for j in range(TERNARY_2BIT_PER_BYTE)], axis=-1)
    if np.any(fields == 3):
        raise ValueError("invalid 2-bit ternary code 3 in packed data")
    flat = fields.reshape(p.shape[:-1] + (p.shape[-1] * TERNARY_2BIT_PER_BYTE,))[..., :n]
    return (flat - 1).astype(np.int8)


def pack_ternary_base3(codes: npt.ArrayLike) -> tuple[np.ndarray, int]:
    """Pack ternary codes ``[..., n]`` into ``[..., ceil(n/5)]`` uint8, 5 trits per byte: ``(packed, n)``.

    ``byte[g] = sum_{j=0..4} (w_{5g+j} + 1) * 3^j`` in [0, 242]; tail padded with zero weights (trit 1).
    1.6 bits/weight (docs/reference/vitallm.md §5.2).
    """
    u, n = _offset_codes(codes, TERNARY_BASE3_PER_BYTE)
    g = u.reshape(u.shape[:-1] + (u.shape[-1] // TERNARY_BASE3_PER_BYTE, TERNARY_BASE3_PER_BYTE))
    packed = (g * _POW3).sum(axis=-1)
    return packed.astype(np.uint8), n


def unpack_ternary_base3(packed: npt.ArrayLike, n: int) -> np.ndarray:
    """Inverse of :func:`pack_ternary_base3`: ``[..., ceil(n/5)]`` uint8 -> ``[..., n]`` int8.

    Digit ``j`` of byte ``b`` is ``(b // 3^j) % 3``; bytes above 242 are invalid (ValueError).
    """
    p = np.asarray(packed)
    _check_unpack_len(p, n, TERNARY_BASE3_PER_BYTE)
    p = p.astype(np.int64)
    if p.size and (p.min() < 0 or p.max() > 242):
        raise ValueError("base-3 packed byte out of range [0, 242]")
    trits = (p[..., None] // _POW3) % 3
    flat = trits.reshape(p.shape[:-1] + (p.shape[-1] * TERNARY_BASE3_PER_BYTE,))[..., :n]
    return (flat - 1).astype(np.int8)
