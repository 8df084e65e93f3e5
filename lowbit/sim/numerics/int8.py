"""BitNet per-token INT8 absmax activation quantizer and the BitLinear scale algebra.

Activation rule (docs/reference/numerics.md §0, §1.2; transformers ``ActQuant`` / ``BitLinear.activation_quant``;
BitNet ``gpu/model.py`` ``quant_input``)::

    s  = 127 / clamp(max|x| over the last dim, min=eps)      # eps = 1e-5, one s per token
    xq = clamp(round(x * s), -128, 127)                        # round half to even

Here everything is float64 (the reference runs in the activation dtype, bf16/fp32). Note that in
PyTorch ``127 / t`` (Python scalar divided by a tensor, ``Tensor.__rtruediv__``) is evaluated as
``t.reciprocal() * 127``, i.e. **two** roundings, and differs from a true division in ~25% of cases by
one ulp. To stay bit-exact with the torch reference run in float64 we compute exactly that:
``s = 127.0 * (1.0 / max(amax, eps))``, then one float64 multiply ``x*s``, ``np.rint`` (RNE), clip.
Because ``|x*s| <= 127`` (up to an ulp, which rounds back to 127) the output never contains -128
(docs/reference/numerics.md §1.2, inferred), but the clip interval stays [-128, 127]. transformers'
``ActQuant`` evaluates the same formula in float32: its codes differ from these only within float32
rounding of a half-integer (docs/numerics.md §3.5).

Scale algebra (docs/reference/numerics.md §1.3, docs/reference/vitallm.md §5.2/§6)::

    y = (sum_k Wq[n,k] * xq[k]) * w_scale / x_scale = acc * mean|W| * max|x| / 127

with ``w_scale = mean|W|`` (the dequant factor returned by :func:`ternary_quantize`) and
``x_scale = 127 / max|x|`` (the quant multiplier returned by :func:`int8_absmax_quantize`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .rounding import round_half_even

__all__ = [
    "INT8_ABSMAX_EPS",
    "INT8_QB",
    "int8_absmax_quantize",
    "int8_dequantize",
    "int_matmul_exact",
    "dequantize_accumulator",
    "int8_matmul_dequant",
]

INT8_ABSMAX_EPS: float = 1e-5
"""Lower clamp of max|x| in BitNet's activation quantizer."""

INT8_QB: float = 127.0
"""Q_b: the absmax maps to +-127 (BitNet code uses 127, not 2^7; docs/reference/numerics.md §1.2)."""


def int8_absmax_quantize(x: npt.ArrayLike, eps: float = INT8_ABSMAX_EPS) -> tuple[np.ndarray, np.ndarray]:
    """Per-token (last dim) absmax INT8 quantization: returns ``(q int8, s float64)``.

    ``s = 127 * (1 / max(max|x|, eps))`` (torch's evaluation of ``127 / t``) with shape
    ``x.shape[:-1] + (1,)``;
    ``q = clip(rint(x * s), -128, 127)`` (float64, round-half-even). Source: docs/reference/numerics.md §1.2,
    transformers ``ActQuant``, BitNet ``gpu/model.py`` ``quant_input``.
    """
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0:
        raise ValueError("x must have at least one dimension (the token's feature dim)")
    if a.shape[-1] == 0:
        raise ValueError("last dimension must be non-empty")
    if not np.all(np.isfinite(a)):
        raise ValueError("activations contain NaN or Inf")
    amax = np.max(np.abs(a), axis=-1, keepdims=True)
    s = INT8_QB * (1.0 / np.maximum(amax, float(eps)))  # torch's `127 / t` == 127 * t.reciprocal()
    q = np.clip(round_half_even(a * s), -128.0, 127.0).astype(np.int8)
    return q, s


def int8_dequantize(q: npt.ArrayLike, s: npt.ArrayLike) -> np.ndarray:
    """Dequantize per-token INT8 values: ``q / s`` in float64 (inverse of :func:`int8_absmax_quantize`)."""
    return np.asarray(q, dtype=np.float64) / np.asarray(s, dtype=np.float64)


def int_matmul_exact(x_q: npt.ArrayLike, w_codes: npt.ArrayLike) -> np.ndarray:
    """Exact integer ``x_q @ w_codes.T`` in int64: ``acc[..., n] = sum_k x_q[..., k] * W[n, k]``.

    numpy integer matmul does not go through BLAS, so it is exact while ``|acc| < 2^63``; for INT8 x
    ternary with K <= 2^55 that always holds (docs/reference/vitallm.md §4.2 bound ``|acc| <= 128*K``).
    """
    xq = np.asarray(x_q).astype(np.int64)
    w = np.asarray(w_codes).astype(np.int64)
    if w.ndim != 2:
        raise ValueError("w_codes must be 2-D [N, K]")
    if xq.shape[-1] != w.shape[1]:
        raise ValueError(f"K mismatch: x {xq.shape} vs W {w.shape}")
    return xq @ w.T


def dequantize_accumulator(acc: npt.ArrayLike, w_scale: npt.ArrayLike, x_scale: npt.ArrayLike) -> np.ndarray:
    """BitNet output dequantization ``y = (acc * w_scale) / x_scale`` in float64 (that op order).

    ``acc`` is the exact integer accumulator (converted to float64, exact for |acc| < 2^53),
    ``w_scale = mean|W|`` per tensor (or per output channel, broadcast), ``x_scale = 127/max|x|`` per
    token with shape ``[..., 1]``. Source: docs/reference/numerics.md §1.3 (``y = acc * mean|W| * max|x| / 127``),
    docs/reference/vitallm.md §5.2 (dequantize once per output by beta*gamma/Q_b).
    """
    a = np.asarray(acc, dtype=np.float64)
    return (a * np.asarray(w_scale, dtype=np.float64)) / np.asarray(x_scale, dtype=np.float64)


def int8_matmul_dequant(
    x: npt.ArrayLike,
    w_codes: npt.ArrayLike,
    w_scale: float,
    eps: float = INT8_ABSMAX_EPS,
) -> np.ndarray:
    """Golden BitLinear forward: quantize ``x`` per token, exact int64 ``x_q @ W.T``, dequantize.

    ``y = dequantize_accumulator(int_matmul_exact(q, w_codes), w_scale, s)`` with
    ``(q, s) = int8_absmax_quantize(x, eps)``; ``w_codes`` is ``[N, K]`` ternary (or any int8),
    ``w_scale = mean|W|`` from :func:`ternary_quantize`. Returns float64 ``[..., N]``. The RMSNorm
    that precedes BitLinear is not included (docs/reference/numerics.md §1.4).
    """
    q, s = int8_absmax_quantize(x, eps)
    acc = int_matmul_exact(q, w_codes)
    return dequantize_accumulator(acc, w_scale, s)
