"""Shared rounding and saturation helpers for the golden-model numerics.

All quantizers in :mod:`sim.numerics` round with **round-half-to-even** (RNE), because that is what
the reference implementations do: PyTorch ``torch.round`` (used by transformers
``integrations/bitnet.py`` ``WeightQuant``/``ActQuant`` and BitNet ``gpu/convert_checkpoint.py``) is
half-to-even, ml_dtypes casts RNE, and torchao's FP4 cast is RNE (docs/reference/numerics.md §1, §2.5, §9 item 2).
C ``roundf`` (half away from zero) is *not* used anywhere here.

numpy only; no torch / amaranth / triton imports.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "round_half_even",
    "saturate_int",
    "saturate_signed",
    "int_range",
    "wrap_signed",
]


def round_half_even(x: npt.ArrayLike) -> np.ndarray:
    """Round to the nearest integer, ties to even (IEEE roundTiesToEven), returned as float.

    Exactly ``np.rint`` (which uses the current FP rounding mode, RNE by default): 0.5 -> 0,
    1.5 -> 2, 2.5 -> 2, -0.5 -> -0.0, -1.5 -> -2. Matches ``torch.round`` and Python ``round``
    (docs/reference/numerics.md §0 row "BitNet weight quantizer", §9 item 2). The result keeps the input's float
    dtype (float64 for Python scalars / int inputs) so callers decide when to cast to int.
    NaN/Inf pass through unchanged; callers must clip before casting to an integer type.
    """
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    return np.rint(a)


def int_range(bits: int, signed: bool = True) -> tuple[int, int]:
    """Return ``(lo, hi)`` of a ``bits``-bit two's-complement (or unsigned) integer.

    signed: ``[-2^(bits-1), 2^(bits-1)-1]``; unsigned: ``[0, 2^bits-1]``.
    """
    if bits < 1:
        raise ValueError(f"bits must be >= 1, got {bits}")
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def saturate_int(x: npt.ArrayLike, lo: float, hi: float) -> np.ndarray:
    """Clamp ``x`` to ``[lo, hi]`` (saturating arithmetic, no wraparound). NaN stays NaN.

    This is ``torch.clamp`` / ``np.clip`` semantics, as in BitNet's ``.clamp(-128, 127)``
    (docs/reference/numerics.md §1) and FP4's saturate-to-±6 rule (docs/reference/numerics.md §2.5).
    """
    return np.clip(np.asarray(x), lo, hi)


def saturate_signed(x: npt.ArrayLike, bits: int) -> np.ndarray:
    """Clamp an integer-valued array to the signed ``bits``-bit range ``[-2^(bits-1), 2^(bits-1)-1]``."""
    lo, hi = int_range(bits, signed=True)
    return np.clip(np.asarray(x), lo, hi)


def wrap_signed(x: npt.ArrayLike, bits: int) -> np.ndarray:
    """Two's-complement wraparound of int64 values to ``bits`` bits (1 <= bits <= 63), as int64.

    ``((x + 2^(bits-1)) mod 2^bits) - 2^(bits-1)``: what a ``bits``-wide hardware register holds
    after an overflowing add. Exact for |x| < 2^62 (the int64 add must not itself overflow).
    """
    if not 1 <= bits <= 63:
        raise ValueError(f"bits must be in [1, 63], got {bits}")
    a = np.asarray(x, dtype=np.int64)
    half = np.int64(1) << np.int64(bits - 1)
    mask = (np.int64(1) << np.int64(bits)) - np.int64(1)
    return ((a + half) & mask) - half
