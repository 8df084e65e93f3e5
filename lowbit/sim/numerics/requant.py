"""Fixed-point requantization of integer accumulators to the SFU activation format, and the residual add.

Both are DESIGN ASSUMPTIONS of the chip's data path (the papers do not state them); the golden forward step
(lowbit.sim.golden) and its PyTorch twin (lowbit.models.hwexact) use exactly these integers.

Requantization (Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", arXiv:1712.05877, §2.2: a real multiplier ``M = M0 * 2^-n`` with ``M0`` an
integer of fixed width, applied as an integer multiply and a rounding right shift; gemmlowp's
``RoundingDivideByPOT``). A projection's ``int32`` accumulator ``acc`` stands for ``acc * S * M`` where ``S`` is
an integer scale known only at run time (the SFU absmax quantizer's ``amax`` of the input row; for attention the
product of the query's and the key's ``amax``) and ``M`` a per-tensor real constant the compiler folds
(``mean|W| / 127`` for a ternary projection). Rule::

    (m, sh) = fixed_multiplier(M)            # compiler: m = RNE(M * 2^sh), 2^15 <= m < 2^16 (UQ16, exponent sh)
    G       = S * m                          # exact, S < 2^37 so G < 2^53
    e       = max(bit_length(G) - 16, 0)     # leading-one detector
    g       = G >> e                         # 16-bit normalised multiplier (truncated)
    s       = sh - e
    y       = sat_out((acc * g + 2^(s-1)) >> s)      # round half up, then saturate (int16 Q7.8 by default)

``acc * g`` is exact (``|acc| < 2^31``, ``g < 2^16``), and ``s`` must lie in 1..62. ``G = 0`` (an all-zero
input row) gives 0. The relative error of ``g`` is below ``2^-15``; one rounding at the end (half up, as every
SFU output rounding in sim.numerics.sfu_reduce).

Residual add: the residual stream is the SFU's signed 16-bit Q7.8 activation format
(sim.numerics.sfu_reduce.ACT_FRAC); ``x + y`` is added exactly and saturated to int16 (no wraparound), the
rule of a saturating adder (ARM ``QADD16``; DESIGN ASSUMPTION: no wider residual register).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from .rounding import int_range

__all__ = ["MULT_BITS", "fixed_multiplier", "requant", "residual_add"]

MULT_BITS = 16
"""Width of the normalised multiplier m (and of g after the leading-one normalisation)."""


def fixed_multiplier(real: float, bits: int = MULT_BITS) -> tuple[int, int]:
    """``(m, sh)`` with ``m / 2^sh`` the nearest ``bits``-bit normalised value to ``real`` (> 0, finite):
    ``2^(bits-1) <= m < 2^bits``, ``m = RNE(real * 2^sh)`` (float64 frexp/ldexp are exact)."""
    if not (math.isfinite(real) and real > 0):
        raise ValueError(f"multiplier must be finite and > 0, got {real}")
    if not 2 <= bits <= 30:
        raise ValueError(f"bits must be in 2..30, got {bits}")
    f, e = math.frexp(real)  # real = f * 2^e, 0.5 <= f < 1
    m = round(math.ldexp(f, bits))  # Python round: half to even
    sh = bits - e
    if m == 1 << bits:  # f rounded up to 1.0
        m, sh = m >> 1, sh - 1
    return int(m), int(sh)


def _bit_length(g: np.ndarray) -> np.ndarray:
    """bit_length of non-negative int64 values below 2^53 (frexp of the exact float)."""
    return np.frexp(g.astype(np.float64))[1].astype(np.int64)


def requant(acc: npt.ArrayLike, scale: npt.ArrayLike, m: npt.ArrayLike, sh: npt.ArrayLike,
            out_bits: int = 16) -> np.ndarray:
    """Requantize integer accumulators: ``sat(RHU(acc * g, s))`` with ``g, s`` from ``G = scale * m`` (module
    docstring). ``scale`` (integers in 0..2^37-1), ``m`` (from :func:`fixed_multiplier`) and ``sh`` broadcast
    against ``acc``. Returns int64 in the signed ``out_bits`` range."""
    a, sc = np.asarray(acc), np.asarray(scale)
    mm, ss = np.asarray(m), np.asarray(sh)
    if not all(np.issubdtype(v.dtype, np.integer) for v in (a, sc, mm, ss)):
        raise TypeError("acc, scale, m and sh must be integer arrays")
    a, sc, mm, ss = (v.astype(np.int64) for v in (a, sc, mm, ss))
    if a.size and np.abs(a).max() >= 1 << 31:
        raise ValueError("acc must be a signed 32-bit accumulator")
    if sc.size and (sc.min() < 0 or sc.max() >= 1 << 37):
        raise ValueError(f"scale must lie in 0..2^37-1, got {sc.min()}..{sc.max()}")
    if mm.size and (mm.min() < 1 << (MULT_BITS - 1) or mm.max() >= 1 << MULT_BITS):
        raise ValueError(f"m must be a normalised {MULT_BITS}-bit multiplier")
    G = sc * mm
    e = np.maximum(_bit_length(G) - MULT_BITS, 0)
    g = G >> e
    s = ss - e
    if np.any((s < 1) | (s > 62)):
        raise ValueError(f"shift sh - e out of 1..62 (sh = {ss.min()}..{ss.max()}): multiplier out of range")
    y = (a * g + (np.int64(1) << (s - 1))) >> s
    return np.clip(y, *int_range(out_bits)).astype(np.int64)


def residual_add(x: npt.ArrayLike, y: npt.ArrayLike, bits: int = 16) -> np.ndarray:
    """Saturating residual add ``sat(x + y)`` of signed ``bits``-bit integers (module docstring), int64."""
    a, b = np.asarray(x), np.asarray(y)
    if not (np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer)):
        raise TypeError("residual operands must be integer arrays")
    return np.clip(a.astype(np.int64) + b.astype(np.int64), *int_range(bits)).astype(np.int64)
