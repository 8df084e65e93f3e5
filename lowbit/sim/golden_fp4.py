"""FP4 projections of the hardware-exact golden: a model's projections deployed as NVFP4 or MXFP4 and run on the
FP4 core's W4A8 block dot product (sim.numerics.fp4dot), then requantized to the Q7.8 activation format.

Deployment: each projection ``W [out, in]`` is quantized along its input (reduction) axis by the FP4 PTQ's
quantizers (sim.numerics.mx.nvfp4_quantize / mxfp4_quantize; lowbit.models.fp4ptq applies the same ones): E2M1
codes, one E4M3 (NVFP4, 16 elements) or E8M0 (MXFP4, 32 elements) scale per block, and for NVFP4 the float32
tensor scale ``s_global = amax / 2688`` (TE nvfp4.rst / ModelOpt, docs/reference/numerics.md §3; OCP MX v1.0, §2).

Forward: ``acc = fp4_block_dot(W, xq).acc`` with the preset's ``fp4.block_sum_bits``, ``fp4.acc_bits`` and
``fp4.frac_bits`` (saturating registers, right shifts floor), so ``acc · 2^-frac_bits · s_global ≈ W · xq``; any
block-sum, contribution or accumulator overflow is refused (as a ternary accumulator's). Requantization
(sim.numerics.requant, the ternary path's rule with ``wscale`` replaced):

    y = requant(acc, amax, m, sh),  (m, sh) = fixed_multiplier(s_global · 2^-frac_bits / 127)

DESIGN ASSUMPTION: one multiplier per tensor, the tensor scale folded by the compiler into the requantizer's
constant exactly as the ternary path folds ``mean|W|`` (``s_global = 1`` for MXFP4); ``amax`` is the input row's
absmax (the run-time scale), so ``y ≈ 256 · W · x`` in Q7.8 with ``x ≈ xq · amax / (127 · 256)``.
"""

from __future__ import annotations

import numpy as np

from lowbit.sim.errors import WorkloadError
from lowbit.sim.numerics.fp4dot import fp4_block_dot
from lowbit.sim.numerics.mx import MXFP4Tensor, NVFP4Tensor, mxfp4_quantize, nvfp4_quantize
from lowbit.sim.numerics.requant import fixed_multiplier

__all__ = ["FP4_FORMATS", "fp4_weights", "fp4_multiplier", "fp4_row_multipliers", "fp4_accumulate"]

FP4_FORMATS = ("nvfp4", "mxfp4")


def fp4_weights(w: np.ndarray, fmt: str) -> NVFP4Tensor | MXFP4Tensor:
    """The deployed FP4 tensor of real weights [out, in], blocks along `in` (the PTQ quantizers' rule)."""
    if fmt == "nvfp4":
        return nvfp4_quantize(np.asarray(w, np.float32))
    if fmt == "mxfp4":
        return mxfp4_quantize(np.asarray(w, np.float32))
    raise WorkloadError(f"projection format '{fmt}': FP4 formats are {', '.join(FP4_FORMATS)}")


def _tensor_scale(t: NVFP4Tensor | MXFP4Tensor) -> float:
    return float(t.tensor_scale) if isinstance(t, NVFP4Tensor) else 1.0


def fp4_multiplier(t: NVFP4Tensor | MXFP4Tensor, frac_bits: int) -> tuple[int, int]:
    """Requantizer constant (m, sh) of ``s_global · 2^-frac_bits / 127`` (module docstring); an all-zero NVFP4
    tensor (s_global 0) gets the smallest normalised multiplier: its accumulators are 0."""
    real = _tensor_scale(t) * 2.0 ** -frac_bits / 127.0
    return fixed_multiplier(real) if real > 0 else (1 << 15, 62)


def fp4_row_multipliers(t: NVFP4Tensor | MXFP4Tensor, frac_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """fp4_multiplier repeated per output row (the layout of lowbit.sim.golden.linear_multipliers)."""
    m, sh = fp4_multiplier(t, frac_bits)
    n = t.codes.shape[0]
    return np.full(n, m, np.int64), np.full(n, sh, np.int64)


def fp4_accumulate(t: NVFP4Tensor | MXFP4Tensor, xq: np.ndarray, *, block_sum_bits: int, acc_bits: int,
                   frac_bits: int, what: str) -> np.ndarray:
    """The FP4 core's accumulators [T, out] of INT8 rows xq [T, in] (fp4_block_dot; overflow refused)."""
    r = fp4_block_dot(t, xq, block_sum_bits=block_sum_bits, acc_bits=acc_bits, frac_bits=frac_bits)
    if np.any(r.overflow):
        raise WorkloadError(f"{what}: an FP4 register (fp4.block_sum_bits {block_sum_bits}, fp4.acc_bits {acc_bits}, "
                            f"fp4.frac_bits {frac_bits}) overflows; widen it")
    if np.any(np.isnan(r.value)):
        raise WorkloadError(f"{what}: a NaN FP4 block scale; deploy finite weights")
    return r.acc
