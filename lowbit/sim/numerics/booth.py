"""Radix-4 (modified) Booth multiplication, ternary reuse, and the bit-serial (BoothFlex-BS) variant.

Recoding (docs/reference/numerics.md §8.1): pad the multiplier ``b`` (``bits``-bit two's complement, ``bits`` even)
with ``b[-1] = 0``; digit ``i`` (i = 0 .. bits/2-1, LSB first) is::

    d_i = -2*b[2i+1] + b[2i] + b[2i-1]  in {-2, -1, 0, 1, 2},   b = sum_i d_i * 4^i

Encoder signals per digit (the 3-signal encoder of docs/reference/numerics.md §8.1)::

    one = b[2i] XOR b[2i-1]                 (|d| = 1)
    two = (b[2i+1] AND NOT b[2i] AND NOT b[2i-1]) OR (NOT b[2i+1] AND b[2i] AND b[2i-1])   (|d| = 2)
    neg = b[2i+1]                           (negate: invert + inject neg at the row LSB)

so ``d_i = (one + 2*two) * (1 - 2*neg)`` (the triple 111 gives one=two=0, neg=1 -> -0 = 0). PP row
``i`` is ``d_i * a * 4^i``; the rows are summed by a compressor tree (here: exact int64 sum).

Ternary mode (docs/reference/numerics.md §8.1 "Reuse for ternary x INT8", docs/reference/vitallm.md §5.3): a ternary weight is a
Booth digit with ``two = 0``; ``one = (w != 0)``, ``neg = (w < 0)``. One INT8 Booth unit has 4 rows, so
with shifts disabled it computes ``sum_j w_j * a_j`` over 4 independent pairs per cycle.

Bit-serial (docs/reference/vitallm.md §5.6, docs/reference/numerics.md §8.1 "Bit-serial"): one Booth digit of ``b`` per cycle,
**MSB-first** Horner form ``acc <- (acc << 2) + d_i * a`` for i = n-1 .. 0. MSB-first is chosen because
the partial result after ``t`` cycles is already ``a * round(b / 4^(n-t))`` (a usable coarse product for
early termination / MSB-first prediction): with ``m = n - t`` remaining digits it equals exactly
``a * ((b >> 2m) + b[2m-1])``. Cycles = bits/2 (INT2: 1, INT4: 2, INT8: 4, INT16: 8); ternary: 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "BoothEncoding",
    "booth_digits",
    "booth_encode",
    "booth_partial_products",
    "booth_pp_rows_hw",
    "booth_multiply",
    "ternary_booth_encode",
    "booth_ternary_dot",
    "BOOTH_TERNARY_ROWS",
    "booth_serial_cycles",
    "booth_serial_trace",
    "booth_serial_multiply",
]

BOOTH_TERNARY_ROWS = 4
"""Independent ternary x INT8 pairs per INT8 Booth unit in ternary mode (= PP rows of an 8-bit b)."""

SerialBits = int | Literal["ternary"]


@dataclass(frozen=True)
class BoothEncoding:
    """Per-digit Booth encoder outputs, each shaped ``b.shape + (n_digits,)`` (digit 0 = LSB pair)."""

    one: np.ndarray  # |d| == 1 (int8 0/1)
    two: np.ndarray  # |d| == 2 (int8 0/1)
    neg: np.ndarray  # negate row (int8 0/1) = b[2i+1]

    @property
    def digits(self) -> np.ndarray:
        """``d = (one + 2*two) * (1 - 2*neg)`` as int8."""
        mag = self.one.astype(np.int8) + 2 * self.two.astype(np.int8)
        return (mag * (1 - 2 * self.neg.astype(np.int8))).astype(np.int8)


def _check_bits(bits: int) -> int:
    if not isinstance(bits, int | np.integer) or bits < 2 or bits % 2 or bits > 62:
        raise ValueError(f"bits must be an even int in [2, 62], got {bits!r}")
    return int(bits)


def _signed_operand(x: npt.ArrayLike, bits: int, name: str) -> np.ndarray:
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, got {a.dtype}")
    a = a.astype(np.int64)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if a.size and (a.min() < lo or a.max() > hi):
        raise ValueError(f"{name} out of signed {bits}-bit range [{lo}, {hi}]")
    return a


def _bit_triplets(b: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(b[2i+1], b[2i], b[2i-1])`` stacked on a new last axis, from the two's-complement pattern."""
    u = b & ((1 << bits) - 1)  # two's-complement bit pattern (numpy & on negative int64 is 2's-c)
    idx = np.arange(bits // 2, dtype=np.int64)
    hi = (u[..., None] >> (2 * idx + 1)) & 1
    mid = (u[..., None] >> (2 * idx)) & 1
    lo = np.where(idx == 0, 0, (u[..., None] << 1 >> (2 * idx)) & 1)  # b[-1] = 0
    return hi, mid, lo


def booth_encode(b: npt.ArrayLike, bits: int = 8) -> BoothEncoding:
    """Radix-4 Booth encoder signals (one, two, neg) for each digit of the ``bits``-bit signed ``b``.

    ``one = b[2i]^b[2i-1]``, ``two = (b[2i+1] & ~b[2i] & ~b[2i-1]) | (~b[2i+1] & b[2i] & b[2i-1])``,
    ``neg = b[2i+1]`` (docs/reference/numerics.md §8.1 encoder table).
    """
    bits = _check_bits(bits)
    hi, mid, lo = _bit_triplets(_signed_operand(b, bits, "b"), bits)
    one = mid ^ lo
    two = (hi & (1 - mid) & (1 - lo)) | ((1 - hi) & mid & lo)
    return BoothEncoding(one=one.astype(np.int8), two=two.astype(np.int8), neg=hi.astype(np.int8))


def booth_digits(b: npt.ArrayLike, bits: int = 8) -> np.ndarray:
    """Radix-4 Booth digits of ``b``: ``d_i = -2 b[2i+1] + b[2i] + b[2i-1]``, shape ``b.shape + (bits/2,)``.

    Digit 0 is the least significant; ``b == sum_i d_i 4^i`` (docs/reference/numerics.md §8.1). int8 in {-2..2}.
    """
    bits = _check_bits(bits)
    hi, mid, lo = _bit_triplets(_signed_operand(b, bits, "b"), bits)
    return (-2 * hi + mid + lo).astype(np.int8)


def booth_partial_products(a: npt.ArrayLike, b: npt.ArrayLike, bits: int = 8) -> np.ndarray:
    """Shifted Booth PP rows ``d_i * a * 4^i`` as int64, shape ``broadcast(a, b).shape + (bits/2,)``.

    Row ``i`` selects 0 / a / 2a by the encoder's (one, two), negates when ``neg``, and is shifted left
    by ``2i`` (docs/reference/numerics.md §8.1). ``a`` is a signed ``bits``-bit multiplicand.
    """
    bits = _check_bits(bits)
    av = _signed_operand(a, bits, "a")
    enc = booth_encode(b, bits)
    sel = av[..., None] * (enc.one.astype(np.int64) + 2 * enc.two.astype(np.int64))  # mux 0 / A / 2A
    row = np.where(enc.neg.astype(bool), -sel, sel)
    shifts = 2 * np.arange(bits // 2, dtype=np.int64)
    return row << shifts


def booth_pp_rows_hw(a: npt.ArrayLike, b: npt.ArrayLike, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Hardware view of the unshifted rows: ``(pattern, neg)`` with ``pattern`` a ``bits+2``-bit field.

    ``pattern = (sel XOR (neg ? all-ones : 0)) mod 2^(bits+2)`` where ``sel`` = 0/A/2A (needs bits+1
    bits signed, +1 so that ``-sel`` fits); the row's value is ``signext(pattern) + neg`` (the "+neg"
    bit injected at the row LSB completes the negation, docs/reference/numerics.md §8.1). Both int64, shape
    ``broadcast(a, b).shape + (bits/2,)``.
    """
    bits = _check_bits(bits)
    av = _signed_operand(a, bits, "a")
    enc = booth_encode(b, bits)
    sel = av[..., None] * (enc.one.astype(np.int64) + 2 * enc.two.astype(np.int64))
    neg = enc.neg.astype(np.int64)
    width_mask = (1 << (bits + 2)) - 1
    pattern = (sel ^ (-neg)) & width_mask  # -neg is all ones when neg = 1: conditional inversion
    return pattern, neg


def booth_multiply(a: npt.ArrayLike, b: npt.ArrayLike, bits: int = 8) -> np.ndarray:
    """Radix-4 Booth product: sum of :func:`booth_partial_products` rows (exact int64; equals ``a*b``)."""
    return booth_partial_products(a, b, bits).sum(axis=-1)


def _ternary_operand(w: npt.ArrayLike) -> np.ndarray:
    t = np.asarray(w)
    if not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"ternary weights must be integers, got {t.dtype}")
    if t.size and (t.min() < -1 or t.max() > 1):
        raise ValueError("ternary weights must lie in {-1, 0, 1}")
    return t.astype(np.int64)


def ternary_booth_encode(w: npt.ArrayLike) -> BoothEncoding:
    """Encoder signals for ternary weights used directly as Booth digits: ``one = w!=0``, ``two = 0``,
    ``neg = w<0`` (docs/reference/numerics.md §8.1 "Reuse for ternary x INT8"; no recoding needed)."""
    t = _ternary_operand(w)
    return BoothEncoding(
        one=(t != 0).astype(np.int8), two=np.zeros(t.shape, np.int8), neg=(t < 0).astype(np.int8)
    )


def booth_ternary_dot(w: npt.ArrayLike, a: npt.ArrayLike) -> np.ndarray:
    """One Booth unit in ternary mode: ``sum_j w_j * a_j`` over the last axis of length 4.

    Each (ternary ``w_j``, INT8 ``a_j``) pair drives PP row ``j`` as a Booth digit (one/neg, two = 0),
    with the 4^j shifts disabled; the compressor tree sums the 4 aligned rows (docs/reference/vitallm.md §5.3,
    docs/reference/numerics.md §8.1). Vectorized over broadcast leading dims; returns int64.
    """
    enc = ternary_booth_encode(w)
    av = _signed_operand(a, 8, "a")
    if enc.one.shape[-1] != BOOTH_TERNARY_ROWS or av.shape[-1] != BOOTH_TERNARY_ROWS:
        raise ValueError(f"last dim must be {BOOTH_TERNARY_ROWS} (one pair per PP row)")
    sel = av * enc.one.astype(np.int64)  # mux: 0 or A (two is never asserted)
    rows = np.where(enc.neg.astype(bool), -sel, sel)  # no shift in ternary mode
    return rows.sum(axis=-1)


def booth_serial_cycles(bits: SerialBits) -> int:
    """Cycles of the digit-serial Booth multiplier: one radix-4 digit per cycle, ``bits/2``; ternary 1.

    docs/reference/vitallm.md §5.6: INT4 -> 2, INT8 -> 4, INT16 -> 8 cycles, a ternary weight a single digit-cycle.
    """
    if bits == "ternary":
        return 1
    return _check_bits(bits) // 2  # type: ignore[arg-type]


def _serial_digits(b: npt.ArrayLike, bits: SerialBits) -> np.ndarray:
    if bits == "ternary":
        return _ternary_operand(b)[..., None]  # the weight is the single digit
    return booth_digits(b, bits).astype(np.int64)  # type: ignore[arg-type]


def booth_serial_trace(a: npt.ArrayLike, b: npt.ArrayLike, bits: SerialBits = 8) -> np.ndarray:
    """Accumulator after each cycle of the MSB-first digit-serial multiply, shape ``(..., cycles)``.

    Cycle ``t`` (t = 1..n) does ``acc <- (acc << 2) + d_{n-t} * a`` (2-bit-shift accumulator). The last
    entry is ``a*b``; entry ``t`` equals ``a * ((b >> 2m) + b[2m-1])`` with ``m = n - t``.
    ``a`` is a signed INT8 (or ``bits``-bit if larger) multiplicand.
    """
    digits = _serial_digits(b, bits)
    a_bits = 8 if bits == "ternary" else max(8, int(bits))  # type: ignore[call-overload]
    av = _signed_operand(a, a_bits, "a")
    n = digits.shape[-1]
    shape = np.broadcast_shapes(av.shape, digits.shape[:-1])
    acc = np.zeros(shape, dtype=np.int64)
    trace = np.empty(shape + (n,), dtype=np.int64)
    for t in range(n):  # one Booth digit per cycle, most significant first
        acc = (acc << 2) + digits[..., n - 1 - t] * av
        trace[..., t] = acc
    return trace


def booth_serial_multiply(a: npt.ArrayLike, b: npt.ArrayLike, bits: SerialBits = 8) -> tuple[np.ndarray, int]:
    """Digit-serial (BoothFlex-BS) product ``a*b``: returns ``(product int64, cycles)``.

    ``bits`` in {2, 4, 8, 16, ...} (``b`` signed ``bits``-bit) or ``"ternary"`` (``b`` in {-1,0,1}, one
    digit). MSB-first, one digit per cycle, ``cycles = booth_serial_cycles(bits)`` (docs/reference/vitallm.md §5.6).
    """
    trace = booth_serial_trace(a, b, bits)
    return trace[..., -1], booth_serial_cycles(bits)
