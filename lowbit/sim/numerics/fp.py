"""Bit-exact encode/decode of the small float formats used by MXFP4 and NVFP4.

Formats (docs/reference/numerics.md §2.2, §2.3, §3.1, §4):

* **E2M1** (FP4, OCP MX v1.0 element): ``S EE M``, bias 1, values ±{0, 0.5, 1, 1.5, 2, 3, 4, 6},
  no Inf, no NaN. Codes 0..15, bit 3 = sign.
* **E4M3** (OCP ``E4M3FN``, NVFP4 block scale): bias 7, max 448, min normal 2^-6, min subnormal 2^-9,
  no Inf, ``0x7F`` / ``0xFF`` = NaN.
* **E8M0** (MX shared scale): unsigned exponent, bias 127, value 2^(code-127) for codes 0..254,
  ``0xFF`` = NaN, no zero.

Rounding is round-half-to-even everywhere (docs/reference/numerics.md §2.5, §9 item 2: torchao
``_f32_to_floatx_unpacked``, ModelOpt ``_cast_fp4``, ml_dtypes casts are all RNE). The encoders work
in float64: every float16/float32/float64 input is converted exactly, and dividing by a power of two
is exact in float64, so each encode rounds exactly once (no double rounding).

Nibble packing follows torchao ``pack_uint4`` / ModelOpt: the **even element goes in the low
nibble** (docs/reference/numerics.md §3.5, §9 item 6).

numpy only (no torch / amaranth / triton imports in ``sim/``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from .rounding import round_half_even

__all__ = [
    "E2M1_MAX",
    "E2M1_VALUES",
    "E4M3_MAX",
    "E4M3_NAN",
    "E8M0_NAN",
    "E8M0_BIAS",
    "e2m1_encode",
    "e2m1_decode",
    "e4m3_encode",
    "e4m3_decode",
    "e8m0_encode",
    "e8m0_from_exponent",
    "e8m0_decode",
    "pack_fp4",
    "unpack_fp4",
]

E2M1_MAX = 6.0
E4M3_MAX = 448.0
E4M3_NAN = 0x7F
E8M0_NAN = 0xFF
E8M0_BIAS = 127

# Code -> value for E2M1 (docs/reference/numerics.md §2.2 table; codes 8..15 are the negatives, 8 = -0).
E2M1_VALUES = np.array(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
    dtype=np.float32,
)


def _rne_magnitude_code(mag: np.ndarray, mbits: int, emin: int) -> np.ndarray:
    """Round finite non-negative float64 magnitudes RNE onto a float grid; return the magnitude code.

    Grid: ``mbits`` explicit mantissa bits, minimum normal exponent ``emin`` (subnormals below it).
    For ``e = max(floor(log2 mag), emin)`` the quantum is ``2^(e-mbits)`` and ``n = RNE(mag/quantum)``
    lies in [0, 2^(mbits+1)]. The unsigned code is then ``(e - emin)·2^mbits + n``: this single
    formula covers subnormals (e = emin, n < 2^mbits), normals and the mantissa carry into the next
    binade (n = 2^(mbits+1)), because the exponent field is ``e - emin + 1`` for normals. The caller
    saturates codes above the format's max. No upper bound is applied here.
    """
    _, fexp = np.frexp(mag)  # mag = f·2^fexp with f in [0.5, 1), so floor(log2 mag) = fexp - 1
    # frexp(0) = (0, 0) would claim exponent -1; zero belongs to the lowest (subnormal) binade.
    e = np.where(mag == 0, emin, np.maximum(fexp.astype(np.int64) - 1, emin))
    quantum_exp = e - mbits
    n = round_half_even(np.ldexp(mag, -quantum_exp))  # exact power-of-two scaling, one rounding
    return (e - emin) * (1 << mbits) + n.astype(np.int64)


def _as_float64(x: npt.ArrayLike) -> np.ndarray:
    """Convert to float64 exactly (float16/32/64 and ints up to 2^53 are exact in float64)."""
    return np.asarray(x, dtype=np.float64)


def e2m1_encode(x: npt.ArrayLike, *, nan: Literal["raise", "zero"] = "raise") -> np.ndarray:
    """Encode reals to E2M1 codes (uint8, 0..15, bit 3 = sign).

    Rule: round-half-to-even onto ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}; ties 0.25→0, 0.75→1, 1.25→1,
    1.75→2, 2.5→2, 3.5→4, 5→4 (docs/reference/numerics.md §2.5, §3.5, §4 table). Magnitudes above 6 and ±Inf
    **saturate** to ±6 (OCP MX v1.0 "saturate_normals", torchao clamps to ±6, ModelOpt bounds
    search, ml_dtypes). The sign bit is ``signbit(x)``, so -0.0 and negative values rounding to
    zero give code 8 (-0), as ml_dtypes and torchao do (ModelOpt ``_cast_fp4`` uses ``y < 0`` on the
    scaled float32 value, so a -0.0 quotient gets code 0 there, and its decode table maps code 8 to
    +0; the decoded values compare equal, docs/numerics.md).

    NaN policy: E2M1 has no NaN. ``nan="raise"`` (default) raises ValueError; ``nan="zero"`` encodes
    NaN as +0 (code 0). Never the silent -0 of ml_dtypes (docs/reference/numerics.md §9 item 5). MX block code
    handles NaN separately through the 0xFF scale.
    """
    v = _as_float64(x)
    isnan = np.isnan(v)
    if nan == "raise" and isnan.any():
        raise ValueError("e2m1_encode: NaN input has no E2M1 encoding (pass nan='zero' to map it to +0)")
    if nan not in ("raise", "zero"):
        raise ValueError(f"e2m1_encode: nan must be 'raise' or 'zero', got {nan!r}")
    # Inf would break frexp; anything >= 6 saturates anyway, so cap the magnitude first.
    mag = np.minimum(np.abs(np.where(isnan, 0.0, v)), 8.0)
    code = np.minimum(_rne_magnitude_code(mag, mbits=1, emin=0), 7)
    sign = np.signbit(v) & ~isnan
    return (code | (sign.astype(np.int64) << 3)).astype(np.uint8)


def e2m1_decode(codes: npt.ArrayLike) -> np.ndarray:
    """Decode E2M1 codes (low 4 bits used) to float32 via the §2.2 table (exact; 8 decodes to -0.0)."""
    c = np.asarray(codes)
    if not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"e2m1_decode: codes must be integers, got dtype {c.dtype}")
    if c.size and (c.min() < 0 or c.max() > 15):
        raise ValueError("e2m1_decode: codes must lie in 0..15")
    return E2M1_VALUES[c.astype(np.intp)]


def e4m3_encode(x: npt.ArrayLike, saturate: bool = True) -> np.ndarray:
    """Encode reals to OCP E4M3FN codes (uint8): bias 7, max 448, subnormals down to 2^-9.

    Rounding: RNE (ml_dtypes ``float8_e4m3fn`` cast, torch ``.to(float8_e4m3fn)`` used by ModelOpt /
    TE / torchao for NVFP4 block scales, docs/reference/numerics.md §3.2, §4). Subnormals are exact: 2^-10 ties to
    0, 1.5·2^-10 rounds to 2^-9.

    Overflow: ``saturate=True`` clamps magnitudes (incl. ±Inf) to ±448, the explicit clamp the NVFP4
    references apply before casting. ``saturate=False`` is the raw ml_dtypes cast: RNE as if 480
    existed, so |x| <= 464 gives 448 and anything rounding to >= 480 (and ±Inf) becomes NaN
    (docs/reference/numerics.md §4 table, §9 item 5). NaN encodes to 0x7F / 0xFF keeping the sign bit.
    """
    v = _as_float64(x)
    isnan = np.isnan(v)
    isinf = np.isinf(v)
    mag = np.abs(np.where(isnan | isinf, 0.0, v))
    # Cap the magnitude so huge finite values do not overflow int64 codes; 1024 is past every bound.
    code = _rne_magnitude_code(np.minimum(mag, 1024.0), mbits=3, emin=-6)
    if saturate:
        code = np.where(isinf, 0x7E, np.minimum(code, 0x7E))
    else:
        code = np.where(isinf | (code >= 0x7F), E4M3_NAN, code)
    code = np.where(isnan, E4M3_NAN, code)
    sign = np.signbit(v).astype(np.int64) << 7
    return (code | sign).astype(np.uint8)


def _e4m3_table() -> np.ndarray:
    """All 256 E4M3FN code values: E=0: M·2^-9; else (8+M)·2^(E-10); 0x7F/0xFF NaN."""
    codes = np.arange(256)
    e_field = (codes >> 3) & 0xF
    m_field = codes & 0x7
    sig = np.where(e_field == 0, m_field, 8 + m_field)
    exp = np.where(e_field == 0, -9, e_field - 10)
    val = np.ldexp(sig.astype(np.float64), exp)
    val = np.where(codes >= 128, -val, val)
    val[(codes & 0x7F) == 0x7F] = np.nan
    return val.astype(np.float32)


_E4M3_VALUES = _e4m3_table()


def e4m3_decode(codes: npt.ArrayLike) -> np.ndarray:
    """Decode E4M3FN codes (uint8) to float32 exactly; 0x7F / 0xFF decode to NaN."""
    c = np.asarray(codes)
    if not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"e4m3_decode: codes must be integers, got dtype {c.dtype}")
    if c.size and (c.min() < 0 or c.max() > 255):
        raise ValueError("e4m3_decode: codes must lie in 0..255")
    return _E4M3_VALUES[c.astype(np.intp)]


def e8m0_from_exponent(exponent: npt.ArrayLike) -> np.ndarray:
    """Unbiased power-of-two exponent -> E8M0 code (uint8), torchao ``to_mx`` convention.

    Code = exponent + 127. Exponents below -127 clamp to code 0 (2^-127), exponents above 127 give
    0xFF (NaN): torchao clamps to [-127, 128] and 128 is the NaN code (docs/reference/numerics.md §2.4).
    """
    e = np.asarray(exponent)
    if not np.issubdtype(e.dtype, np.integer):
        raise ValueError(f"e8m0_from_exponent: exponent must be integer, got dtype {e.dtype}")
    e = e.astype(np.int64)
    code = np.maximum(e, -E8M0_BIAS) + E8M0_BIAS
    return np.where(e > E8M0_BIAS, E8M0_NAN, code).astype(np.uint8)


def e8m0_encode(x: npt.ArrayLike, mode: Literal["floor", "ceil", "nearest"] = "floor") -> np.ndarray:
    """Positive real -> E8M0 code (uint8) by rounding to a power of two.

    ``mode``:
      * ``"floor"``: largest power of two <= x (OCP MX v1.0 shared-exponent rule; read from the
        exponent, never via an ml_dtypes cast, docs/reference/numerics.md §4 pitfalls).
      * ``"ceil"``: smallest power of two >= x (the RCEIL rule, PTX ``cvt.rp.ue8m0x2.f32``, §2.4).
      * ``"nearest"``: nearest power of two with ties (mantissa exactly 1.5) rounded **up**, which is
        what ml_dtypes ``float8_e8m0fnu`` does (1.5→2, 3→4, 6→8, 1.4999→1; docs/reference/numerics.md §4).

    Out of range: results below 2^-127 clamp to code 0; above 2^127 become 0xFF (NaN), as
    ``e8m0_from_exponent``. Zero, negatives, NaN and Inf have no E8M0 value and give 0xFF (the
    ml_dtypes cast does the same). For MX block scales, zero blocks are handled in ``mx.py``.
    """
    if mode not in ("floor", "ceil", "nearest"):
        raise ValueError(f"e8m0_encode: mode must be floor|ceil|nearest, got {mode!r}")
    v = _as_float64(x)
    valid = np.isfinite(v) & (v > 0)
    frac, fexp = np.frexp(np.where(valid, v, 1.0))  # v = frac·2^fexp, frac in [0.5, 1)
    e = fexp.astype(np.int64) - 1  # floor(log2 v), exact (frexp handles subnormals)
    if mode == "ceil":
        e = e + (frac != 0.5)
    elif mode == "nearest":
        e = e + (frac >= 0.75)  # mantissa 2·frac >= 1.5 rounds up, ties included
    code = e8m0_from_exponent(e)
    return np.where(valid, code, E8M0_NAN).astype(np.uint8)


def e8m0_decode(codes: npt.ArrayLike) -> np.ndarray:
    """E8M0 code -> float64 value 2^(code-127) (exact; float64 avoids float32 subnormal 2^-127).

    0xFF decodes to NaN (OCP MX v1.0 via torchao ``mx_tensor.py``, docs/reference/numerics.md §2.3).
    """
    c = np.asarray(codes)
    if not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"e8m0_decode: codes must be integers, got dtype {c.dtype}")
    if c.size and (c.min() < 0 or c.max() > 255):
        raise ValueError("e8m0_decode: codes must lie in 0..255")
    c = c.astype(np.int64)
    val = np.ldexp(1.0, c - E8M0_BIAS)
    return np.where(c == E8M0_NAN, np.nan, val)


def pack_fp4(codes: npt.ArrayLike) -> np.ndarray:
    """Pack 4-bit codes along the last axis, two per byte, **even element in the low nibble**.

    ``byte = codes[..., 0::2] | codes[..., 1::2] << 4`` (torchao ``pack_uint4``, ModelOpt
    ``(q[..., 1::2] << 4) | q[..., 0::2]``, docs/reference/numerics.md §3.5). An odd length is padded with a zero
    high nibble; ``unpack_fp4`` needs the original length.
    """
    c = np.asarray(codes)
    if not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"pack_fp4: codes must be integers, got dtype {c.dtype}")
    if c.size and (c.min() < 0 or c.max() > 15):
        raise ValueError("pack_fp4: codes must lie in 0..15")
    c = c.astype(np.uint8)
    if c.shape[-1] % 2:
        c = np.concatenate([c, np.zeros((*c.shape[:-1], 1), np.uint8)], axis=-1)
    return (c[..., 0::2] | (c[..., 1::2] << 4)).astype(np.uint8)


def unpack_fp4(packed: npt.ArrayLike, n: int) -> np.ndarray:
    """Inverse of ``pack_fp4``: uint8 bytes [..., ceil(n/2)] -> codes uint8 [..., n]."""
    p = np.asarray(packed)
    if p.dtype != np.uint8:
        raise ValueError(f"unpack_fp4: packed must be uint8, got dtype {p.dtype}")
    if p.shape[-1] != (n + 1) // 2:
        raise ValueError(f"unpack_fp4: last dim {p.shape[-1]} does not hold n={n} nibbles")
    out = np.empty((*p.shape[:-1], 2 * p.shape[-1]), np.uint8)
    out[..., 0::2] = p & 0x0F
    out[..., 1::2] = p >> 4
    return out[..., :n]
