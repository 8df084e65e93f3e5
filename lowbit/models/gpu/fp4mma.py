"""FP4 weight (NVFP4, MXFP4) x bf16 activation GEMM on the bf16 tensor cores for 2 to 512 tokens, each weight
tile decoded in registers (no bf16 scratch weight).

Layout and decode are :mod:`.fp4`'s: element ``8j + s`` of a row is nibble ``s`` of int32 word ``j``; a nibble's
E2M1 value is rebuilt exactly as fp16 bits (``value · 2^-14``), multiplied in float32 by its block scale times
``2^22`` (NVFP4: E4M3 read as ``value · 2^-8``) or ``2^14`` (MXFP4: E8M0 exact), which leaves ``E2M1 · scale``
exactly (at most 6 significant bits), and rounded to bf16 without error. The tensor scale of NVFP4 multiplies
the float32 accumulator. So the result is the bf16 GEMM of the exact dequantized weight, as
:func:`.fp4.fp4_gemm`'s dequantize + cuBLAS path, in another summation order.

The tile is built by three levels of ``tl.join`` (the joined axis innermost and held by one thread, as
:func:`.ternary_gemm.unpack_join`): a thread keeps its word's eight values contiguous, the reshape to
``[BLOCK_N, 8 · BLOCK_KW]`` moves no data. ``SWAP`` computes ``W x^T`` with the decoded weight tile as the
MMA's first operand, so few tokens fill the MMA's narrow dimension (``BLOCK_M`` 16) and many output features
its wide one; without it ``x W^T``.

:func:`fp4_linear` is the FP4 linear layer for any token count: one token, the whole-row GEMV of
:mod:`.fp4row`; more, whichever of this kernel, :func:`.fp4.fp4_gemm`'s dequantize + cuBLAS path and (below
16 tokens) :func:`.fp4.fp4_gemv`'s tiled GEMV the GPU runs fastest for that (tokens, rounded up to a power
of two from 16; N, K, format), timed once by CUDA-graph replay with the operands in L2 (as the autotuner) and kept for the process.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .fp4 import FP4Weight, _block_scale_f32, _e2m1_nibble_f32, fp4_gemm, fp4_gemv
from .ternary import autotune
from .ternary_gemm import PathChoice, join8, tile_rows

__all__ = ["fp4_mma", "fp4_linear", "decode_join", "MMA_CONFIGS", "linear_choices"]


@triton.jit
def decode_join(w, scf, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    """int32 words [BN, BKW] and each word's float32 scale (block scale x 2^22 or 2^14) -> bf16 [BN, 8 BKW]
    in element order (:func:`.ternary_gemm.join8` of the eight nibbles' values)."""
    p0 = (_e2m1_nibble_f32(w, 0) * scf).to(tl.bfloat16)
    p1 = (_e2m1_nibble_f32(w, 1) * scf).to(tl.bfloat16)
    p2 = (_e2m1_nibble_f32(w, 2) * scf).to(tl.bfloat16)
    p3 = (_e2m1_nibble_f32(w, 3) * scf).to(tl.bfloat16)
    p4 = (_e2m1_nibble_f32(w, 4) * scf).to(tl.bfloat16)
    p5 = (_e2m1_nibble_f32(w, 5) * scf).to(tl.bfloat16)
    p6 = (_e2m1_nibble_f32(w, 6) * scf).to(tl.bfloat16)
    p7 = (_e2m1_nibble_f32(w, 7) * scf).to(tl.bfloat16)
    return tl.reshape(join8(p0, p1, p2, p3, p4, p5, p6, p7), [BLOCK_N, BLOCK_KW * 8])


@triton.jit
def _fp4_mma_kernel(x_ptr, w_ptr, s_ptr, y_ptr, out_mul, M, N, KW, K, stride_xm, stride_wn, stride_sn, stride_ym,
                    IS_NV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr,
                    GROUP_M: tl.constexpr, SWAP: tl.constexpr, DOT_F32: tl.constexpr = False):
    WPB: tl.constexpr = 2 if IS_NV else 4  # words per scale block
    rm, rn, m_ok, n_ok = tile_rows(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rj = tl.arange(0, BLOCK_KW)
    rk = tl.arange(0, BLOCK_KW * 8)
    if SWAP:
        acc = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for j0 in range(0, KW, BLOCK_KW):
        j = j0 + rj
        wm = n_ok[:, None] & (j < KW)[None, :]
        w = tl.load(w_ptr + rn[:, None] * stride_wn + j[None, :], mask=wm, other=0)
        sc = tl.load(s_ptr + rn[:, None] * stride_sn + (j // WPB)[None, :], mask=wm, other=0).to(tl.int32)
        scf = _block_scale_f32(sc, IS_NV) * (4194304.0 if IS_NV else 16384.0)
        wt = decode_join(w, scf, BLOCK_N, BLOCK_KW)
        kk = j0 * 8 + rk
        # padding past K: zero activations (the padded codes are zero too)
        if SWAP:
            xt = tl.load(x_ptr + rm[None, :] * stride_xm + kk[:, None], mask=m_ok[None, :] & (kk < K)[:, None],
                         other=0.0)
            if DOT_F32:  # Triton interpreter: its bf16 tl.dot is wrong; bf16 -> fp32 is exact
                acc = tl.dot(wt.to(tl.float32), xt.to(tl.float32), acc)
            else:
                acc = tl.dot(wt, xt, acc)
        else:
            x = tl.load(x_ptr + rm[:, None] * stride_xm + kk[None, :], mask=m_ok[:, None] & (kk < K)[None, :],
                        other=0.0)
            if DOT_F32:
                acc = tl.dot(x.to(tl.float32), tl.trans(wt).to(tl.float32), acc)
            else:
                acc = tl.dot(x, tl.trans(wt), acc)
    if SWAP:
        acc = tl.trans(acc)
    y = acc * out_mul
    tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :], y.to(tl.bfloat16), mask=m_ok[:, None] & n_ok[None, :])


# every config swapped: Triton 3.6 (the H200 machine's) cannot build the unswapped kernel on sm_90 (its
# TritonGPUOptimizeDotOperands pass fails on the transposed register tile: "Illegal shared layout"); the
# swapped one compiles to wgmma with the decoded weights as the register operand. Tiles up to 256 tokens.
MMA_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_KW": bkw, "GROUP_M": 8, "SWAP": True}, num_warps=nw,
                  num_stages=ns)
    for bm, bn, bkw, nw, ns in [(16, 64, 8, 4, 4), (16, 128, 8, 4, 3), (32, 64, 8, 4, 4), (64, 64, 8, 4, 4),
                                (64, 128, 8, 4, 3), (128, 128, 8, 8, 3), (128, 256, 8, 8, 3), (256, 128, 8, 8, 3)]]


def _mma_prune(configs, named_args, **kw):
    # tiles no taller than the token count (16 at least)
    m = named_args["M"]
    ok = [c for c in configs if c.kwargs["BLOCK_M"] <= max(16, triton.next_power_of_2(m))]
    return ok or configs[:1]


_fp4_mma_tuned = autotune(MMA_CONFIGS, key=["M", "N", "KW", "IS_NV"],
                          prune_configs_by={"early_config_prune": _mma_prune})(_fp4_mma_kernel)


def fp4_mma(x: torch.Tensor, w: FP4Weight, config: dict | None = None) -> torch.Tensor:
    """bf16 ``x`` [M, K] x FP4 ``w`` -> bf16 [M, N] with the weight decoded tile by tile in registers (module
    docstring); ``config`` (BLOCK_M, BLOCK_N, BLOCK_KW, GROUP_M, SWAP, num_warps, num_stages) skips the
    autotuner."""
    if x.dim() != 2 or x.shape[1] != w.k:
        raise ValueError(f"x must be [M, {w.k}], got {tuple(x.shape)}")
    x = x.contiguous().to(torch.bfloat16)
    m = x.shape[0]
    y = torch.empty(m, w.n, dtype=torch.bfloat16, device=x.device)
    args = (x, w.words, w.scales, y, w.gscale, m, w.n, w.words.shape[1], w.k,
            x.stride(0), w.words.stride(0), w.scales.stride(0), y.stride(0))
    is_nv = w.fmt == "nvfp4"
    if x.is_cuda and config is None:
        grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(w.n, meta["BLOCK_N"]),)  # noqa: E731
        _fp4_mma_tuned[grid](*args, IS_NV=is_nv)
        return y
    cfg = dict(config or {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_KW": 4, "GROUP_M": 4, "SWAP": True})
    nw = cfg.pop("num_warps", 4)
    ns = cfg.pop("num_stages", 2)
    grid = (triton.cdiv(m, cfg["BLOCK_M"]) * triton.cdiv(w.n, cfg["BLOCK_N"]),)
    _fp4_mma_kernel[grid](*args, IS_NV=is_nv, DOT_F32=not x.is_cuda, num_warps=nw, num_stages=ns, **cfg)
    return y


_CHOICE = PathChoice()  # (tokens, N, K, format) -> "gemv", "mma" or "dequant"


def linear_choices() -> dict[tuple, str]:
    """The path :func:`fp4_linear` took per (tokens or their power-of-two bucket, N, K, format): ``"gemv"``, ``"mma"`` or ``"dequant"``
    (with the reason where a kernel did not compile)."""
    return _CHOICE.summary()


def fp4_linear(x: torch.Tensor, w: FP4Weight) -> torch.Tensor:
    """FP4 linear on bf16 ``x`` [M, K] -> bf16 [M, N] (module docstring: the path per token count)."""
    if x.dim() != 2 or x.shape[1] != w.k:
        raise ValueError(f"x must be [M, {w.k}], got {tuple(x.shape)}")
    m = x.shape[0]
    if m == 1:
        return fp4_gemv(x, w)
    if not x.is_cuda:
        return fp4_mma(x, w)
    key = (m if m < 16 else triton.next_power_of_2(m), w.n, w.k, w.fmt)  # below 16 the candidates differ
    paths = _paths(m)
    return paths[_CHOICE.pick(key, paths, lambda fn: fn(x, w))](x, w)


def _paths(m: int) -> dict:
    # the candidates for m > 1 tokens: the tiled float32 GEMV below 16 tokens, the in-register decode, dequantize
    return {**({"gemv": fp4_gemv} if m < 16 else {}), "mma": fp4_mma, "dequant": fp4_gemm}
