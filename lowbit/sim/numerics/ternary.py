"""BitNet b1.58 ternary weight quantizer (absmean, per tensor).

Rule (docs/reference/numerics.md §0, §1.1; transformers ``integrations/bitnet.py`` ``WeightQuant.forward``;
microsoft/BitNet ``gpu/convert_checkpoint.py`` ``quant_weight_int8``)::

    s  = 1 / clamp(mean|W|, min=eps)          # eps = 1e-5
    Wq = clamp(round(W * s), -1, 1)            # torch.round = half to even
    W  ~ Wq / s = Wq * mean|W|                 # stored checkpoint scale is mean|W| (docs/reference/numerics.md §1.3)

The paper form ``RoundClip(W / (gamma + eps), -1, 1)`` (arXiv:2402.17764) adds eps instead of
clamping; we follow the *reference code*, not the paper.

Exact float64 recipe used here (so that a torch float64 re-implementation is bit-identical):

1. ``scale = max(fsum(|W|) / n, eps)``: the sum of |W| (W cast to float64, exact) is taken with
   :func:`math.fsum`, i.e. correctly rounded and independent of summation order; then one float64
   division by ``n``. (torch/numpy ``mean`` use blocked/pairwise sums that may differ by a few ulp; to
   reproduce codes bit-exactly in torch, pass this ``scale`` in rather than recomputing ``mean``.)
2. ``inv = 1.0 / scale`` (one correctly rounded float64 division), as the reference code does.
3. ``codes = clip(rint(W * inv), -1, 1)``: one float64 multiply, round-half-even, clip.

We deliberately keep the reference code's ``W * (1/scale)`` rather than ``W / scale``: the two can differ
by one ulp and hence flip a code exactly at a ±0.5 boundary. In torch float64:
``(W.double() * (1.0 / scale)).round().clamp(-1, 1)`` reproduces ``codes`` exactly.

transformers' ``WeightQuant`` runs the same formula in float32 (torch's float32 mean, eps as a float32):
its codes differ from these only where ``W·s`` lies within float32 rounding of ±0.5
(docs/numerics.md §3.5; checked against transformers in tests/sim/numerics/test_oracle_bitnet.py).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from .rounding import round_half_even

__all__ = [
    "TERNARY_EPS",
    "ternary_absmean_scale",
    "ternary_quantize",
    "ternary_dequantize",
]

TERNARY_EPS: float = 1e-5
"""Lower clamp of mean|W| in BitNet's weight quantizer (``clamp(min=1e-5)``)."""


def _as_finite_f64(w: npt.ArrayLike) -> np.ndarray:
    a = np.asarray(w, dtype=np.float64)
    if a.size == 0:
        raise ValueError("cannot quantize an empty tensor (mean|W| undefined)")
    if not np.all(np.isfinite(a)):
        raise ValueError("weights contain NaN or Inf")
    return a


def ternary_absmean_scale(w: npt.ArrayLike, eps: float = TERNARY_EPS) -> float:
    """Per-tensor BitNet scale ``max(mean|W|, eps)`` in float64 (the dequant factor, = 1/s).

    ``mean|W| = math.fsum(|W|) / n`` (correctly rounded sum, then one float64 division), so the value is
    independent of array layout and summation order. Source: transformers ``WeightQuant``,
    BitNet ``gpu/convert_checkpoint.py`` (docs/reference/numerics.md §1.1).
    """
    a = _as_finite_f64(w)
    mean = math.fsum(np.abs(a).ravel().tolist()) / a.size
    return float(max(mean, float(eps)))


def ternary_quantize(
    w: npt.ArrayLike, eps: float = TERNARY_EPS, scale: float | None = None
) -> tuple[np.ndarray, float]:
    """Quantize ``w`` to ternary codes with one absmean scale: returns ``(codes int8, scale float)``.

    ``scale = max(mean|W|, eps)`` (see :func:`ternary_absmean_scale`; pass ``scale`` to reuse a stored
    one), ``codes = clip(rint(W * (1.0/scale)), -1, 1)`` in float64 with round-half-even
    (docs/reference/numerics.md §1.1, transformers ``WeightQuant``). ``codes`` has ``w``'s shape and values in
    {-1, 0, 1}; the dequantized weight is ``codes * scale``.
    """
    a = _as_finite_f64(w)
    if scale is None:
        scale = ternary_absmean_scale(a, eps)
    elif not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be finite and > 0, got {scale}")
    inv = 1.0 / float(scale)  # reference code multiplies by s = 1/mean|W|
    codes = np.clip(round_half_even(a * inv), -1.0, 1.0).astype(np.int8)
    return codes, float(scale)


def ternary_dequantize(codes: npt.ArrayLike, scale: float) -> np.ndarray:
    """Dequantize ternary codes: ``codes * scale`` in float64 (``Wq / s`` with ``1/s = scale``).

    Source: docs/reference/numerics.md §1.1 ("dequant ``Wq/s``") and §1.3 (stored scale is mean|W|).
    """
    c = np.asarray(codes)
    if c.size and (c.min() < -1 or c.max() > 1):
        raise ValueError("ternary codes must lie in {-1, 0, 1}")
    return c.astype(np.float64) * float(scale)
