"""MXFP4 and NVFP4 block quantizers (golden model, numpy only).

* **MXFP4** (OCP MX v1.0, docs/reference/numerics.md §2): blocks of 32 E2M1 elements along the last axis sharing one
  E8M0 power-of-two scale ``X``; value ``X · P_i``.
* **NVFP4** (NVIDIA, docs/reference/numerics.md §3): blocks of 16 E2M1 elements with an E4M3 block scale, plus one
  float32 per-tensor scale; value ``P_i · s_block · s_global``.

Blocking and padding: the **last axis** is the blocked axis. If its length K is not a multiple of the
block, it is padded with zeros up to ``Kp = ceil(K / block) · block`` (zeros never change a block's
amax, so the scales are those of the unpadded data; ModelOpt ``reduce_block_padding`` also pads). The
stored ``codes`` keep the padded length ``Kp`` (the layout the hardware streams), ``shape`` records the
original shape, and the dequantizers crop back to it.

Elements are RNE onto the E2M1 grid with saturation to ±6 (``fp.e2m1_encode``; docs/reference/numerics.md §2.5,
§3.2); the sign bit is ``signbit(x)``, so -0.0 and negatives that round to zero keep code 8 (-0).
Every rule, edge case and deliberate difference from torchao / ModelOpt / microxcaling is tabulated
in docs/numerics.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from .fp import (
    E2M1_MAX,
    E4M3_MAX,
    E8M0_BIAS,
    E8M0_NAN,
    e2m1_decode,
    e2m1_encode,
    e4m3_decode,
    e4m3_encode,
    e8m0_decode,
    e8m0_from_exponent,
)

__all__ = [
    "MXFP4Tensor",
    "NVFP4Tensor",
    "mxfp4_quantize",
    "mxfp4_dequantize",
    "nvfp4_quantize",
    "nvfp4_dequantize",
    "fp4_fakequant",
]

# log2 of the largest power of two in E2M1 (6 = 1.5·2^2): microxcaling ``emax_elem`` /
# torchao ``F4_E2M1_MAX_POW2`` (docs/reference/numerics.md §2.2, §2.4).
E2M1_EMAX = 2
NVFP4_GLOBAL_DIV = np.float32(E4M3_MAX * E2M1_MAX)  # 448 · 6 = 2688, exact in float32


@dataclass(frozen=True)
class MXFP4Tensor:
    """MXFP4 quantized tensor.

    codes: uint8 E2M1 codes [..., Kp] (one per byte, zero-padded to a multiple of ``block``).
    scales: uint8 E8M0 codes [..., Kp // block]. shape: the original (unpadded) shape. block: 32.
    """

    codes: np.ndarray
    scales: np.ndarray
    shape: tuple[int, ...]
    block: int = 32


@dataclass(frozen=True)
class NVFP4Tensor:
    """NVFP4 quantized tensor.

    codes: uint8 E2M1 codes [..., Kp]; scales: uint8 E4M3 block-scale codes [..., Kp // block];
    tensor_scale: float32 per-tensor decode scale ``s_global = amax / (448 · 6)``; shape: original
    shape; block: 16.
    """

    codes: np.ndarray
    scales: np.ndarray
    tensor_scale: np.float32
    shape: tuple[int, ...]
    block: int = 16


def _blocked(x: np.ndarray, block: int) -> np.ndarray:
    """Zero-pad the last axis to a multiple of ``block`` and reshape to [..., nblocks, block]."""
    if x.ndim == 0:
        raise ValueError("FP4 quantizers need at least one axis (the blocked last axis)")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    pad = (-x.shape[-1]) % block
    if pad:
        x = np.concatenate([x, np.zeros((*x.shape[:-1], pad), x.dtype)], axis=-1)
    return x.reshape(*x.shape[:-1], x.shape[-1] // block, block)


def _floor_log2(v: np.ndarray) -> np.ndarray:
    """Exact floor(log2 v) for finite v > 0 (float32/float64), via frexp; int64."""
    _, e = np.frexp(v)
    return e.astype(np.int64) - 1


def _mx_shared_exponent(amax: np.ndarray, scale_mode: str) -> np.ndarray:
    """Unbiased block exponent from a float32 block amax (> 0, finite), before the E8M0 clamp.

    floor (OCP MX v1.0 §6.3 "minimally supported" conversion, torchao FLOOR, microxcaling):
    ``floor(log2 amax) - emax_elem`` with emax_elem = 2; the block max lands in [4, 8)·X and values in
    [6X, 8X) saturate (docs/reference/numerics.md §2.4, §9 item 3).
    rceil (NVIDIA cuBLAS 1D block quantization, PTX ``cvt.rp.satfinite.ue8m0x2.f32``, torchao RCEIL):
    ``ceil(log2(d))`` with ``d = amax / 6`` rounded once to float32 (subnormals kept, as IEEE float32
    division gives). Exact ceil of the exact log2 of that float32 ``d``; when ``d`` underflows to 0,
    ``log2 0 = -inf``, i.e. the lowest E8M0 code after the clamp. Never saturates (up to the float32
    rounding of ``d``).
    """
    if scale_mode == "floor":
        return _floor_log2(amax) - E2M1_EMAX
    with np.errstate(under="ignore"):
        d = (amax.astype(np.float32) / np.float32(E2M1_MAX)).astype(np.float32)
    frac, e = np.frexp(d)  # d = frac·2^e, frac in [0.5, 1): ceil(log2 d) = e - 1 unless frac == 0.5
    ceil_log2 = e.astype(np.int64) - (frac == 0.5)
    # np.frexp(0) = (0, 0) would claim exponent 0 (code 127): log2(0) = -inf clamps to code 0 instead.
    return np.where(d == 0, -E8M0_BIAS, ceil_log2)


def mxfp4_quantize(
    x: npt.ArrayLike, block: int = 32, scale_mode: Literal["floor", "rceil"] = "floor"
) -> MXFP4Tensor:
    """Quantize to MXFP4 along the last axis (OCP MX v1.0, docs/reference/numerics.md §2, docs/numerics.md).

    ``x`` is cast to float32 first (RNE; float64 magnitudes beyond the float32 range become ±Inf), as
    torchao ``to_mx`` works on float32. Per block:
      1. ``amax = max|x_i|`` (float32, exact).
      2. Shared exponent ``E``: ``floor``: ``floor(log2 amax) - 2`` (OCP MX v1.0 §6.3, torchao FLOOR
         default); ``rceil``: ``ceil(log2(f32(amax / 6)))`` (see ``_mx_shared_exponent``). Clamped below
         to -127 (E8M0 code 0, microxcaling / torchao); the upper clamp is never reached from float32
         (``E <= 126``).
      3. All-zero blocks (amax = ±0) get code 0 (2^-127) in both modes, as torchao (exponent bits of
         0.0, ``log2 0``) and microxcaling (amax -> fp32 min normal, then clamped) produce; elements
         keep their sign (``+0`` code 0, ``-0`` code 8).
      4. A NaN or ±Inf anywhere in the block gives scale 0xFF (NaN), which poisons the whole block on
         dequantize; that block's element codes are 0. This is microxcaling's rule (Inf/NaN amax ->
         NaN shared exponent); torchao poisons NaN blocks only (FLOOR gives an Inf block code 253,
         RCEIL 0xFE), docs/numerics.md.
      5. ``P_i = RNE_E2M1(x_i / 2^E)`` saturating at ±6, ``x_i / 2^E`` exact (float64, power of two),
         so each element is rounded once, subnormal E2M1 (0.5) included. Code-0 blocks
         (``amax < 2^-124`` under floor) divide by 2^-127 exactly; torchao divides by
         ``max(X, 2^-126)`` (FLOOR) or multiplies by 1.0 (RCEIL) there.
    """
    if scale_mode not in ("floor", "rceil"):
        raise ValueError(f"mxfp4_quantize: scale_mode must be 'floor' or 'rceil', got {scale_mode!r}")
    with np.errstate(over="ignore"):
        xf = np.asarray(x, dtype=np.float32)
    xb = _blocked(xf, block)
    amax = np.max(np.abs(xb), axis=-1)  # NaN propagates through np.max
    bad = ~np.isfinite(amax)
    zero = amax == 0
    ok_amax = np.where(bad | zero, np.float32(1.0), amax)
    e = np.where(zero, -E8M0_BIAS, _mx_shared_exponent(ok_amax, scale_mode))
    scales = np.where(bad, E8M0_NAN, e8m0_from_exponent(e)).astype(np.uint8)
    # Exact scaling in float64 by 2^-e (clamped exponent, i.e. the stored one) before the one RNE.
    e_stored = np.clip(e, -E8M0_BIAS, E8M0_BIAS)
    scaled = np.ldexp(xb.astype(np.float64), -e_stored[..., None])
    scaled = np.where(bad[..., None], 0.0, scaled)
    codes = e2m1_encode(scaled)
    return MXFP4Tensor(
        codes=codes.reshape(*xb.shape[:-2], -1), scales=scales, shape=tuple(xf.shape), block=block
    )


def _crop(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Drop the zero padding of the last axis."""
    return values[..., : shape[-1]].reshape(shape)


def mxfp4_dequantize(t: MXFP4Tensor) -> np.ndarray:
    """MXFP4 -> float32: ``E2M1(P_i) · 2^(code-127)``; a 0xFF scale gives NaN for its block.

    The product is formed in float64 (exact) and rounded once to float32: exact for every E8M0
    code (2^-127 times 0.5 is the float32 subnormal 2^-128), except that 2^128 and above overflow
    to ±Inf, as in torchao. Only RCEIL reaches that, for elements at or above 1.75·2^127 whose E2M1
    code rounds up to 4·2^126.
    """
    vals = e2m1_decode(t.codes).astype(np.float64)
    vb = vals.reshape(*vals.shape[:-1], -1, t.block) * e8m0_decode(t.scales)[..., None]
    with np.errstate(over="ignore"):
        return _crop(vb.reshape(vals.shape).astype(np.float32), t.shape)


def _nvfp4_block_scale_f32(block_amax: np.ndarray, s_global: np.float32) -> np.ndarray:
    """ModelOpt ``get_weights_scaling_factor`` in float32: ``amax_b / (6 · s_global)``, ``s_global > 0``.

    Steps, each a float32 IEEE op: ``d = 6 · s_global``; ``s = amax_b / d``; a computed ``s == 0``
    (all-zero block, or a quotient that underflows float32) becomes 1.0 (ModelOpt tests the scale,
    not the block amax); clamp below at 2^-9 (ModelOpt; torchao uses 2^-6, docs/reference/numerics.md
    §9 item 4) and above at 448 (torchao and ModelOpt's static path; the dynamic path relies on the
    saturating E4M3 cast of torch >= 2.12, same result). The upper clamp is reached only when a
    calibrated ``tensor_amax`` is smaller than the data.
    """
    d = np.float32(np.float32(E2M1_MAX) * s_global)
    with np.errstate(over="ignore", under="ignore"):
        s = (block_amax / d).astype(np.float32)
    s = np.where(s == 0, np.float32(1.0), s)
    return np.clip(s, np.float32(2.0**-9), np.float32(E4M3_MAX)).astype(np.float32)


def nvfp4_quantize(x: npt.ArrayLike, block: int = 16, tensor_amax: float | None = None) -> NVFP4Tensor:
    """Quantize to NVFP4 along the last axis (TE ``nvfp4.rst``, ModelOpt ``nvfp4_tensor.py``, §3).

    Reference followed: ModelOpt ``NVFP4QTensor.quantize`` (dynamic path), all in float32:
      1. ``s_global = f32(amax_tensor) / 2688`` (= 448·6, exact) — float32 division. ``tensor_amax``
         overrides the data amax (a calibrated value); otherwise ``max|x|`` of the float32 input.
      2. ``s_block = amax_block / (6 · s_global)`` (float32 multiply, then float32 divide); a computed
         ``s_block == 0`` -> 1.0; clamped to [2^-9, 448]; cast to E4M3 **round-to-nearest-even**
         (a plain ``.to(float8_e4m3fn)``; nearest can clip the block max, unlike cuDNN's round-up,
         §3.2). Scales below 2^-6 are E4M3 subnormals.
      3. ``y = x / f32(f32(s_block_e4m3) · s_global)`` (float32 multiply then float32 divide; ModelOpt
         divides, torchao multiplies by a reciprocal, which can flip ties), then
         ``P = RNE_E2M1(y)`` saturating at ±6, sign bit ``signbit(x)``.
    Edges (docs/numerics.md): when ``s_global`` underflows to 0 (``amax_tensor <= 2688 · 2^-150``,
    all-zero tensors included) every block scale is 1.0 and ``tensor_scale`` is 0; whenever a block's
    decode scale ``f32(s_block · s_global)`` is 0 its elements are stored as signed zeros (``+0`` code 0,
    ``-0`` code 8), so they dequantize to ±0 (error <= the tensor amax). ModelOpt forms 0/0 = NaN there.
    Refused with ValueError: NaN or Inf in the input (NVFP4 has no block-poisoning code; float64
    beyond the float32 range counts as Inf), a negative or non-finite ``tensor_amax``, and a
    ``tensor_amax`` whose ``s_global`` underflows to 0 while the data exceeds it (e.g. 0 with
    non-zero data).
    """
    with np.errstate(over="ignore"):
        xf = np.asarray(x, dtype=np.float32)
    if not np.all(np.isfinite(xf)):
        raise ValueError("nvfp4_quantize: input contains NaN or Inf (or values beyond the float32 range)")
    xb = _blocked(xf, block)
    data_amax = np.float32(np.max(np.abs(xf))) if xf.size else np.float32(0.0)
    if tensor_amax is None:
        amax_t = data_amax
    else:
        with np.errstate(over="ignore"):
            amax_t = np.float32(tensor_amax)
        if not np.isfinite(amax_t) or amax_t < 0:
            raise ValueError(f"nvfp4_quantize: tensor_amax must be finite and >= 0, got {tensor_amax}")
    block_amax = np.max(np.abs(xb), axis=-1)
    with np.errstate(under="ignore"):
        s_global = np.float32(amax_t / NVFP4_GLOBAL_DIV)
    if s_global == 0:
        if data_amax > amax_t:
            raise ValueError(
                f"nvfp4_quantize: tensor_amax={tensor_amax} gives a zero tensor scale (amax/2688 underflows "
                f"float32) but the data reaches |x| = {float(data_amax)}; pass tensor_amax >= max|x| or None"
            )
        s_block = np.ones(block_amax.shape, np.float32)
    else:
        s_block = _nvfp4_block_scale_f32(block_amax, s_global)
    scales = e4m3_encode(s_block)
    with np.errstate(under="ignore"):
        denom = (e4m3_decode(scales) * s_global).astype(np.float32)[..., None]
    live = denom > 0
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        y = (xb / np.where(live, denom, np.float32(1.0))).astype(np.float32)
    codes = e2m1_encode(np.where(live, y, np.copysign(np.float32(0.0), xb)))
    return NVFP4Tensor(
        codes=codes.reshape(*xb.shape[:-2], -1),
        scales=scales,
        tensor_scale=s_global,
        shape=tuple(xf.shape),
        block=block,
    )


def nvfp4_dequantize(t: NVFP4Tensor) -> np.ndarray:
    """NVFP4 -> float32 as ModelOpt ``dequantize``: ``E2M1(P) · f32(f32(s_block) · s_global)``.

    Both multiplies are float32 (the block scale product is rounded once, then the element product).
    """
    vals = e2m1_decode(t.codes)
    scale = (e4m3_decode(t.scales) * np.float32(t.tensor_scale)).astype(np.float32)
    vb = vals.reshape(*vals.shape[:-1], -1, t.block) * scale[..., None]
    return _crop(vb.reshape(vals.shape).astype(np.float32), t.shape)


def fp4_fakequant(x: npt.ArrayLike, fmt: Literal["nvfp4", "mxfp4"] = "nvfp4") -> np.ndarray:
    """Quantize then dequantize (float32, same shape) for PTQ simulation on the PyTorch side.

    ``nvfp4``: ``nvfp4_quantize`` (block 16, tensor amax from the data); ``mxfp4``: ``mxfp4_quantize``
    (block 32, FLOOR scales).
    """
    if fmt == "nvfp4":
        return nvfp4_dequantize(nvfp4_quantize(x))
    if fmt == "mxfp4":
        return mxfp4_dequantize(mxfp4_quantize(x))
    raise ValueError(f"fp4_fakequant: fmt must be 'nvfp4' or 'mxfp4', got {fmt!r}")
