"""Fixed-point absmax INT8 quantization barrier of the SFU (golden model of rtl/sfu.py), integer-exact.

The float reference is BitNet's per-token quantizer (sim.numerics.int8.int8_absmax_quantize,
docs/reference/numerics.md §1.2): ``q = clip(rint(x * 127/max|x|), -128, 127)``. On chip the inputs are signed integer
accumulators (e.g. TINT/BoothFlex ``acc_bits`` = 24) and there is no float unit, so the SFU computes,
per row of ``dim`` elements (design choice, documented here; docs/reference/vitallm.md §4.8 quantization barrier)::

    W     = in_bits                          # x: signed W-bit integers, |x| <= 2^(W-1)
    amax  = max_i |x_i|                      # pass 1 (unsigned W bits)
    if amax == 0: q = 0                      # all-zero row (the float reference also gives 0)
    e     = floor(log2 amax)                 # leading-one detector, 0..W-1
    m     = amax << (W-1-e)                  # normalised significand, 2^(W-1) <= m < 2^W
    c     = floor(127 * 2^(W-1+R) / m)       # reciprocal with R fractional bits, 127 folded in
    s     = R + e
    P     = |x_i| * c                        # pass 2: one multiply per element
    n, r  = P >> s, P mod 2^s                # integer part and remainder of the fixed-point quotient
    h     = 2^(s-1)
    tie   = h - 2^(e+1) < r <= h             # exact-tie window (see below)
    qmag  = n + (r > h  or  (tie and n odd)) # round half to even
    q     = sign(x_i) * min(qmag, 127)       # the clip never triggers: P <= 127 * 2^s

because ``127*|x|/amax = |x| * (127 * 2^(W-1+R)/m) * 2^-s``. The reciprocal ``c`` (R+7 bits) is what a
ROM + Newton or a digit-recurrence divider returns after its final floor correction; the RTL computes it
once per row between the passes.

Why the tie window makes this exact (proved here, checked exhaustively for small W in
tests/numerics/test_sfu.py): ``c`` is low by less than 1, so ``P`` is below ``2^s * 127|x|/amax`` by
``d`` with ``0 <= d < |x| < 2^(e+1)``. An exact tie (``254|x| = (2n+1) amax``) therefore lands in
``(h - 2^(e+1), h]``; a non-tie exact quotient is at least ``2^s/(2 amax) > 2^(R-2)`` away from the
half, so with ``R >= e + 3`` it never lands in the window and rounds correctly. With
``R >= W + 2`` (the default) **q = RNE(127 x / amax) exactly**, for every input. The float reference
``rint(x * (127 * (1/amax)))`` rounds the float64 scale first, so it can differ from the exact result at
exact ties only (by one code); tests/numerics/test_sfu.py measures that distance.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["SFU_IN_BITS", "sfu_recip_bits", "sfu_reciprocal", "sfu_absmax_quantize"]

SFU_IN_BITS = 24
"""Default input width: the 24-bit TINT / BoothFlex accumulators of the vitallm preset."""


def sfu_recip_bits(in_bits: int) -> int:
    """Default reciprocal fraction bits R = in_bits + 2: the smallest R for which q is exactly RNE(127x/amax)."""
    return in_bits + 2


def _check(in_bits: int, recip_bits: int) -> None:
    if not 2 <= in_bits <= 32:
        raise ValueError(f"in_bits must be in 2..32, got {in_bits}")
    if not 3 <= recip_bits <= 40:
        raise ValueError(f"recip_bits must be in 3..40, got {recip_bits}")


def sfu_reciprocal(amax: int, in_bits: int = SFU_IN_BITS, recip_bits: int | None = None) -> tuple[int, int]:
    """(c, e) for one row: ``e = floor(log2 amax)``, ``c = floor(127 * 2^(W-1+R) / (amax << (W-1-e)))``.

    amax must be in 1..2^(W-1).
    """
    r = sfu_recip_bits(in_bits) if recip_bits is None else recip_bits
    _check(in_bits, r)
    if not 1 <= amax <= 1 << (in_bits - 1):
        raise ValueError(f"amax must be in 1..2^{in_bits - 1}, got {amax}")
    e = int(amax).bit_length() - 1
    m = int(amax) << (in_bits - 1 - e)
    return (127 << (in_bits - 1 + r)) // m, e


def sfu_absmax_quantize(
    x: npt.ArrayLike, in_bits: int = SFU_IN_BITS, recip_bits: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-point per-row (last axis) absmax INT8 quantization: returns ``(q int8, amax int64 [..., 1])``.

    ``x``: signed integers of ``in_bits`` bits ([-2^(W-1), 2^(W-1)-1]). Rule: module docstring. The
    dequantized value is ``q * amax / 127`` (the scale the consumer applies; same as the float
    reference's ``1/s``).
    """
    r = sfu_recip_bits(in_bits) if recip_bits is None else recip_bits
    _check(in_bits, r)
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"x must be an integer array, got {a.dtype}")
    if a.ndim == 0 or a.shape[-1] == 0:
        raise ValueError("x must have a non-empty last (feature) dimension")
    a = a.astype(np.int64)
    lo, hi = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1
    if a.size and (a.min() < lo or a.max() > hi):
        raise ValueError(f"x must be signed {in_bits}-bit integers")
    mag = np.abs(a)
    amax = mag.max(axis=-1, keepdims=True)
    ce = [sfu_reciprocal(int(am), in_bits, r) if am else (0, 0) for am in amax.reshape(-1)]
    c = np.array([v[0] for v in ce], dtype=object).reshape(amax.shape)
    sh = np.array([r + v[1] for v in ce], dtype=np.int64).reshape(amax.shape)
    # |x| * c < 2^(W-1) * 127 * 2^(R+1): int64 when that fits, exact Python ints otherwise
    dt = np.int64 if (in_bits - 1) + 7 + r + 1 <= 62 else object
    p = mag.astype(dt) * c.astype(dt)
    qm = p >> sh.astype(dt)
    rem = p - (qm << sh.astype(dt))
    half = np.int64(1) << np.maximum(sh - 1, 0)
    win = (np.int64(1) << (sh - r + 1)).astype(dt)  # 2^(e+1)
    tie = (rem > half - win) & (rem <= half)
    up = (rem > half) | (tie & (qm % 2 == 1))
    qm = np.minimum((qm + up).astype(np.int64), 127)
    q = np.where(a < 0, -qm, qm)
    return q.astype(np.int8), amax
