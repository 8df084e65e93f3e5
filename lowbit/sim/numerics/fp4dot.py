"""Golden model of the accelerator's FP4 (W4A8) block dot-product unit, bit-exact.

Weights are MXFP4 or NVFP4 blocks (``mx.py``); activations are INT8 with a per-token absmax scale
(the BitNet activation quantizer, docs/reference/numerics.md §1.2). The datapath, per output (t, n) and per weight
block b, in block order b = 0, 1, ...:

1. **Products.** ``2·E2M1`` is an integer in {0, ±1, ±2, ±3, ±4, ±6, ±8, ±12}, so ``p_j = (2·w_j)·a_j``
   is an exact integer, |p_j| <= 12·128 = 1536 (12-bit signed).
2. **Block sum** ``S_b = Σ_j p_j`` in a ``block_sum_bits`` signed register. Exact width: 16 products
   -> |S| <= 24576 -> **16 bits**; 32 products -> |S| <= 49152 -> **17 bits** (same widths for
   activations limited to ±127). Overflow is judged on the final sum (a wrapping adder tree gives the
   modular sum whatever the order), then saturated or wrapped per ``overflow_mode``.
3. **Block scale** as an integer significand and a shift:
   * MXFP4 E8M0 ``2^e``: significand 1; the block contributes ``S_b · 2^(e - 1)`` (the -1 undoes
     the ×2 of step 1), i.e. ``S_b`` shifted by ``e - 1 + frac_bits`` into the accumulator.
   * NVFP4 E4M3 ``1.mmm·2^E`` = ``m4 · 2^(E-10)`` with the 4-bit integer significand
     ``m4 = 8 + mmm`` (normal) or ``mmm`` (subnormal, exponent -9): ``P_b = m4 · S_b`` (exact,
     ``block_sum_bits + 4`` bits), shifted by ``E - 11 + frac_bits``.
   Left shifts are exact. **Right shifts round toward -inf (arithmetic shift, dropping bits)** by
   default, the cheapest hardware; ``shift_rounding="rne"`` rounds half to even instead. Every block
   whose shift drops non-zero bits is counted in ``Fp4DotResult.inexact``.
4. **Accumulator**: ``acc_bits`` signed fixed point with ``frac_bits`` fractional bits. Each block
   contribution and each add is checked against the range; ``overflow_mode="saturate"`` (default)
   clamps, ``"wrap"`` wraps two's-complement. ``Fp4DotResult.overflow`` is a sticky flag set by any
   block-sum, contribution or accumulator overflow of that output.
5. **Output scales** once, in float64: ``value = acc · 2^-frac_bits · tensor_scale · a_scale[t]``
   (tensor_scale = NVFP4 float32 ``s_global``, 1 for MXFP4; a_scale = per-token dequant factor
   ``absmax/127``).

A NaN block scale (MX 0xFF, E4M3 0x7F/0xFF) poisons its output: the block contributes 0 to ``acc``
and ``value`` is NaN (OCP MX v1.0 / torchao NaN-scale rule, docs/reference/numerics.md §2.3, §9 item 5).

numpy only; vectorised over tokens and output channels (the block loop is sequential, as in the
hardware, so saturation is order-dependent exactly like the RTL).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import numpy as np
import numpy.typing as npt

from .fp import E8M0_BIAS, E8M0_NAN, e2m1_decode
from .mx import MXFP4Tensor, NVFP4Tensor, fp4_fakequant
from .rounding import int_range, wrap_signed

__all__ = [
    "Fp4DotResult",
    "Fp4Widths",
    "fp4_block_dot",
    "fp4_dot_exact",
    "fp4_min_widths",
    "fp4_block_sum_bits",
    "fp4_fakequant",
]

MAX_ACC_BITS = 62  # keeps every add of two in-range values inside int64


@dataclass(frozen=True)
class Fp4DotResult:
    """Output of ``fp4_block_dot``; all arrays are [..., N] for activations [..., K].

    acc: int64 raw accumulator (fixed point, value ``acc · 2^-frac_bits`` before output scales).
    overflow: bool, sticky overflow flag. value: float64 fully scaled result.
    inexact: int64 count of blocks whose right shift lost non-zero bits. frac_bits: as passed.
    """

    acc: np.ndarray
    overflow: np.ndarray
    value: np.ndarray
    inexact: np.ndarray
    frac_bits: int


@dataclass(frozen=True)
class Fp4Widths:
    """Register widths that make ``fp4_block_dot`` exact (no overflow, no dropped bits)."""

    block_sum_bits: int
    frac_bits: int
    acc_bits: int


@dataclass(frozen=True)
class _Blocks:
    """Weight blocks as integers: w2 [N, nb, B] = 2·E2M1, and scale = mant · 2^exp per [N, nb]."""

    w2: np.ndarray
    mant: np.ndarray
    exp: np.ndarray
    nan: np.ndarray
    post_scale: float


_W2_TABLE = (2 * e2m1_decode(np.arange(16))).astype(np.int64)  # exact: values are multiples of 0.5


def _signed_bits(magnitude: int) -> int:
    """Smallest two's-complement width holding every integer in [-magnitude, magnitude]."""
    return int(magnitude).bit_length() + 1


def fp4_block_sum_bits(block: int, a_max: int = 128) -> int:
    """Data-independent exact block-sum width: ``block`` products of |2·w| <= 12 and |a| <= a_max.

    block 16 -> 16 bits (24576), block 32 -> 17 bits (49152), with a_max 128 or 127.
    """
    return _signed_bits(block * 12 * a_max)


def _weight_blocks(w: MXFP4Tensor | NVFP4Tensor) -> _Blocks:
    """Split FP4 weights [N, Kp] into integer elements and integer-significand block scales."""
    if len(w.shape) != 2:
        raise ValueError(f"FP4 weights must be 2-D [N, K], got shape {w.shape}")
    n, kp = w.codes.shape
    w2 = _W2_TABLE[w.codes.astype(np.intp)].reshape(n, kp // w.block, w.block)
    s = w.scales.astype(np.int64)
    if isinstance(w, MXFP4Tensor):
        nan = s == E8M0_NAN
        mant = np.where(nan, 0, 1)
        exp = s - E8M0_BIAS - 1  # -1: the elements were doubled to make them integers
        return _Blocks(w2, mant.astype(np.int64), exp, nan, 1.0)
    if isinstance(w, NVFP4Tensor):
        e_field, m_field = (s >> 3) & 0xF, s & 0x7
        nan = (s & 0x7F) == 0x7F
        m4 = np.where(e_field == 0, m_field, 8 + m_field)
        mant = np.where(nan, 0, np.where(s & 0x80, -m4, m4))  # the sign bit of E4M3 flips the block
        exp = np.where(e_field == 0, -9, e_field - 10) - 1
        return _Blocks(w2, mant.astype(np.int64), exp.astype(np.int64), nan, float(w.tensor_scale))
    raise TypeError(f"expected MXFP4Tensor or NVFP4Tensor, got {type(w).__name__}")


def _acts(a_q: npt.ArrayLike, k: int, kp: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """Validate INT8 activations [..., K], flatten to [T, Kp] (zero-padded like the weights)."""
    a = np.asarray(a_q)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"a_q must be an integer array (int8 values), got dtype {a.dtype}")
    if a.ndim < 1 or a.shape[-1] != k:
        raise ValueError(f"a_q last dim must equal the weight K={k}, got shape {a.shape}")
    if a.size and (a.min() < -128 or a.max() > 127):
        raise ValueError("a_q values must lie in the int8 range [-128, 127]")
    lead = a.shape[:-1]
    a2 = np.zeros((int(np.prod(lead, dtype=np.int64)), kp), np.int64)
    a2[:, :k] = a.reshape(-1, k)
    return a2, lead


def _block_sums(blk: _Blocks, a2: np.ndarray) -> np.ndarray:
    """Exact integer block sums S[t, n, b] = Σ_j w2[n, b, j] · a[t, b, j] (int64, no BLAS)."""
    nb, bs = blk.w2.shape[1], blk.w2.shape[2]
    ab = a2.reshape(a2.shape[0], nb, bs)
    return np.einsum("nbj,tbj->tnb", blk.w2, ab, optimize=False)


def _fit(x: np.ndarray, bits: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Put int64 values into a ``bits``-bit signed register: (stored value, overflowed flag)."""
    lo, hi = int_range(bits)
    over = (x < lo) | (x > hi)
    if mode == "wrap":
        return wrap_signed(x, bits), over
    return np.clip(x, lo, hi), over


def _shift_right(p: np.ndarray, r: np.ndarray, rounding: str) -> tuple[np.ndarray, np.ndarray]:
    """p · 2^-r for r >= 1 with floor or RNE rounding; also returns 'dropped non-zero bits'.

    r is clipped to 62: |p| < 2^61 here, so a larger shift gives the same floor (0 or -1) and RNE
    (always 0) result.
    """
    r = np.minimum(r, 62)
    q = p >> r
    rem = p - (q << r)
    if rounding == "rne":
        half = np.int64(1) << (r - 1)
        q = q + ((rem > half) | ((rem == half) & ((q & 1) == 1)))
    return q, rem != 0


def _shift_left(p: np.ndarray, s: np.ndarray, acc_bits: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """p · 2^s for s >= 0 into an ``acc_bits`` register without int64 overflow: (value, overflowed)."""
    lo, hi = int_range(acc_bits)
    big = s >= acc_bits  # any non-zero p overflows
    sc = np.minimum(s, acc_bits - 1)
    over = big & (p != 0)
    over |= ~big & ((p > (hi >> sc)) | (p < -(np.int64(1) << (acc_bits - 1 - sc))))
    if mode == "wrap":
        # Keep only the bits that land inside the register, then reinterpret as signed.
        low = p & ((np.int64(1) << (acc_bits - sc)) - 1)
        val = np.where(big, 0, wrap_signed(low << sc, acc_bits))
    else:
        safe = np.where(over, 0, p) << sc
        val = np.where(over, np.where(p > 0, hi, lo), safe)
    return val, over


def _contributions(
    p: np.ndarray, shift: np.ndarray, acc_bits: int, mode: str, rounding: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shift scaled block sums into accumulator units: (contribution, overflow, inexact)."""
    left = shift >= 0
    lv, lover = _shift_left(p, np.where(left, shift, 0), acc_bits, mode)
    rv, lost = _shift_right(p, np.where(left, 1, -shift), rounding)
    rv, rover = _fit(rv, acc_bits, mode)
    return np.where(left, lv, rv), np.where(left, lover, rover), ~left & lost


def fp4_block_dot(
    w: MXFP4Tensor | NVFP4Tensor,
    a_q: npt.ArrayLike,
    *,
    block_sum_bits: int,
    acc_bits: int,
    frac_bits: int,
    a_scale: npt.ArrayLike | None = None,
    overflow_mode: Literal["saturate", "wrap"] = "saturate",
    shift_rounding: Literal["floor", "rne"] = "floor",
) -> Fp4DotResult:
    """Bit-exact W4A8 FP4 block dot product: weights [N, K] × INT8 activations [..., K] -> [..., N].

    Datapath and every rounding / saturation choice: see the module docstring (products exact,
    ``block_sum_bits`` block adder, MX E8M0 scale = shift, NVFP4 E4M3 scale = 4-bit significand
    multiply + shift, right shifts floor by default and counted in ``inexact``, ``acc_bits`` signed
    accumulator with ``frac_bits`` fraction bits, saturating by default, sticky ``overflow``; output
    scales in float64). ``a_scale`` is the per-token activation dequant factor (shape ``[...]`` or
    scalar, default 1). Formats: OCP MX v1.0 (docs/reference/numerics.md §2), TE nvfp4.rst / ModelOpt (§3).
    """
    if overflow_mode not in ("saturate", "wrap"):
        raise ValueError(f"overflow_mode must be 'saturate' or 'wrap', got {overflow_mode!r}")
    if shift_rounding not in ("floor", "rne"):
        raise ValueError(f"shift_rounding must be 'floor' or 'rne', got {shift_rounding!r}")
    if not 2 <= acc_bits <= MAX_ACC_BITS:
        raise ValueError(f"acc_bits must be in [2, {MAX_ACC_BITS}], got {acc_bits}")
    if not 2 <= block_sum_bits <= 40:
        raise ValueError(f"block_sum_bits must be in [2, 40], got {block_sum_bits}")
    if not 0 <= frac_bits <= 256:
        raise ValueError(f"frac_bits must be in [0, 256], got {frac_bits}")
    blk = _weight_blocks(w)
    a2, lead = _acts(a_q, w.shape[-1], w.codes.shape[-1])
    s, over = _fit(_block_sums(blk, a2), block_sum_bits, overflow_mode)
    p = s * np.where(blk.nan, 0, blk.mant)[None]
    c, cover, lost = _contributions(p, (blk.exp + frac_bits)[None], acc_bits, overflow_mode, shift_rounding)
    over = over | cover
    acc = np.zeros(c.shape[:2], np.int64)
    flag = over.any(axis=-1)
    for b in range(c.shape[-1]):  # sequential, as the hardware accumulates block after block
        acc, o = _fit(acc + c[..., b], acc_bits, overflow_mode)
        flag |= o
    value = _output_scale(acc, frac_bits, blk, a_scale, lead)
    out = (*lead, acc.shape[-1])
    return Fp4DotResult(
        acc=acc.reshape(out),
        overflow=flag.reshape(out),
        value=value.reshape(out),
        inexact=lost.sum(axis=-1).astype(np.int64).reshape(out),
        frac_bits=frac_bits,
    )


def _token_scales(a_scale: npt.ArrayLike | None, lead: tuple[int, ...]) -> np.ndarray:
    """Per-token float64 activation scales flattened to [T, 1]."""
    if a_scale is None:
        return np.ones((int(np.prod(lead, dtype=np.int64)), 1))
    return np.broadcast_to(np.asarray(a_scale, np.float64), lead).reshape(-1, 1)


def _output_scale(
    acc: np.ndarray, frac_bits: int, blk: _Blocks, a_scale: npt.ArrayLike | None, lead: tuple[int, ...]
) -> np.ndarray:
    """float64: acc · 2^-F (exact) · tensor_scale · a_scale, NaN where a block scale was NaN."""
    v = np.ldexp(acc.astype(np.float64), -frac_bits) * blk.post_scale * _token_scales(a_scale, lead)
    return np.where(blk.nan.any(axis=-1)[None], np.nan, v)


def _pow2_objects(e: np.ndarray) -> np.ndarray:
    """Object array of exact Python ints 2^e for non-negative int64 e."""
    return np.frompyfunc(lambda k: 1 << int(k), 1, 1)(e)


def fp4_dot_exact(
    w: MXFP4Tensor | NVFP4Tensor,
    a_q: npt.ArrayLike,
    *,
    a_scale: npt.ArrayLike | None = None,
    scaled: bool = True,
) -> np.ndarray:
    """Exact rational reference of the same quantized operands: object array of ``Fraction`` [..., N].

    ``scaled=False`` returns ``Σ_b S_b · scale_b / 2`` (what ``acc · 2^-frac_bits`` must equal when
    the widths are large enough); ``scaled=True`` also multiplies by the float32 tensor scale and the
    float64 ``a_scale`` taken as exact rationals. Raises ValueError on NaN block scales.
    """
    blk = _weight_blocks(w)
    if blk.nan.any():
        raise ValueError("fp4_dot_exact: NaN block scale has no exact value")
    a2, lead = _acts(a_q, w.shape[-1], w.codes.shape[-1])
    p = _block_sums(blk, a2) * blk.mant[None]
    e0 = int(blk.exp.min()) if blk.exp.size else 0
    # Common denominator 2^-e0: numerator = Σ_b p_b · 2^(exp_b - e0), in unbounded Python ints.
    num = (p.astype(object) * _pow2_objects(blk.exp - e0)[None]).sum(axis=-1)
    den = Fraction(2) ** e0
    res = np.frompyfunc(lambda x: Fraction(int(x)) * den, 1, 1)(num)
    if scaled:
        post = Fraction(blk.post_scale)
        ts = _token_scales(a_scale, lead)
        res = np.frompyfunc(lambda x, t: x * post * Fraction(float(t)), 2, 1)(res, ts)
    return np.asarray(res, dtype=object).reshape(*lead, -1)


def fp4_min_widths(w: MXFP4Tensor | NVFP4Tensor, a_q: npt.ArrayLike | None = None) -> Fp4Widths:
    """Sufficient widths for ``fp4_block_dot`` to be exact on these weights.

    With ``a_q=None`` the bound holds for every INT8 activation (|a| <= 128); with ``a_q`` it uses
    those activations' per-position magnitudes. block_sum_bits: max over blocks of Σ|2w|·|a|.
    frac_bits: ``max(0, -min exp)`` over blocks with a non-zero weight (so no right shift drops
    bits; all-zero blocks, e.g. MX code 0, are ignored). acc_bits: bound on every prefix sum,
    ``Σ_b bound_b·|m_b|·2^(exp_b + frac_bits)``. The result may exceed the 62-bit model limit for
    MX tensors whose block exponents span a wide range.
    """
    blk = _weight_blocks(w)
    kp = w.codes.shape[-1]
    if a_q is None:
        amag = np.full((1, kp), 128, np.int64)
    else:
        a2, _ = _acts(a_q, w.shape[-1], kp)
        amag = np.abs(a2).max(axis=0, keepdims=True) if a2.size else np.zeros((1, kp), np.int64)
    bound = _block_sums(_Blocks(np.abs(blk.w2), blk.mant, blk.exp, blk.nan, 1.0), amag)[0]  # [N, nb]
    live = (bound > 0) & ~blk.nan
    bsb = _signed_bits(int(bound.max(initial=0)))
    frac = max(0, -int(blk.exp[live].min())) if live.any() else 0
    sh = np.where(live, blk.exp + frac, 0)
    terms = (bound * np.abs(blk.mant)).astype(object) * _pow2_objects(sh)
    terms = np.where(live, terms, 0)
    total = max((int(t) for t in terms.sum(axis=-1)), default=0) if terms.size else 0
    return Fp4Widths(block_sum_bits=bsb, frac_bits=frac, acc_bits=_signed_bits(total))
