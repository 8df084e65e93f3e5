"""FP4 weight (NVFP4, MXFP4) x bf16 activation Triton kernels: decode GEMV and prefill GEMM.

Weights come from the golden quantizers ``sim.numerics.mx`` (``nvfp4_quantize`` / ``mxfp4_quantize``): E2M1
codes, nibble-packed with ``sim.numerics.fp.pack_fp4`` (even element in the low nibble, docs/reference/numerics.md §3.5),
and one scale byte per block (E4M3 for NVFP4 blocks of 16 plus the float32 tensor scale; E8M0 for MXFP4
blocks of 32). GPU layout = those bytes viewed as little-endian int32 words: element ``8j+s`` of a row is
nibble ``s`` (bits [4s+3 : 4s]) of word ``j``; scales stay uint8 [N, Kp/block]. No re-tiling.

Dequantisation in registers, exact (design of this module):

* E2M1 -> fp16 bits: ``(EEM << 9) | (S << 15)`` read as fp16 equals ``value · 2^-14`` for every code,
  subnormal 0.5 included (fp16 has bias 15, E2M1 bias 1; both subnormal ranges line up);
* E4M3 -> fp16 bits: ``(code & 0x7F) << 7 | (code & 0x80) << 8`` equals ``value · 2^-8`` (bias 7 vs 15);
  the NaN code 0x7F is not representable this way (the quantizer never emits it: block scales are
  clamped to 448);
* E8M0 -> fp32 bits ``code << 23`` = ``2^(code-127)`` for codes 1..254; code 0 (2^-127, only zero or
  sub-2^-125 blocks) reads as 0, code 0xFF gives NaN for the block (docs/reference/numerics.md §2.3).

``y[m,n] = sum_blocks scale_b · sum_{k in b} E2M1(w[n,k]) · x[m,k]`` in float32 (block partial sums,
then one multiply by the block scale), times ``2^22 · s_global`` (NVFP4) or ``2^14`` (MXFP4); bf16 out.
The GEMM path rebuilds the exact bf16 weight (E2M1 x E4M3 has <= 6 significant bits) for a bf16 GEMM;
:mod:`.fp4mma` decodes the same values tile by tile for the tensor cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import triton
import triton.language as tl

from lowbit.sim.numerics.fp import pack_fp4
from lowbit.sim.numerics.mx import MXFP4Tensor, NVFP4Tensor

from .ternary import autotune, pdl_kw, pdl_launch, pdl_wait

__all__ = ["FP4Weight", "pack_fp4_gpu", "fp4_gemv", "fp4_gemm", "fp4_dequant", "random_fp4_weight_torch"]


@dataclass
class FP4Weight:
    """``words`` int32 [N, Kp/8], ``scales`` uint8 [N, Kp/block], ``gscale`` (NVFP4 tensor scale, 1 for MX)."""

    words: torch.Tensor
    scales: torch.Tensor
    gscale: float
    fmt: str  # "nvfp4" | "mxfp4"
    n: int
    k: int

    @property
    def block(self) -> int:
        return 16 if self.fmt == "nvfp4" else 32

    @property
    def kp(self) -> int:
        return self.words.shape[1] * 8

    @property
    def nbytes(self) -> int:
        return self.words.numel() * 4 + self.scales.numel()


def pack_fp4_gpu(t: MXFP4Tensor | NVFP4Tensor, device="cpu") -> FP4Weight:
    """GPU layout of a sim FP4 tensor [N, K] (codes already zero-padded to Kp by the quantizer)."""
    if len(t.shape) != 2:
        raise ValueError(f"FP4 weight must be 2-D [N, K], got shape {t.shape}")
    n, k = t.shape
    fmt = "nvfp4" if isinstance(t, NVFP4Tensor) else "mxfp4"
    if t.block != (16 if fmt == "nvfp4" else 32):
        raise ValueError(f"{fmt} kernels support block {16 if fmt == 'nvfp4' else 32}, got {t.block}")
    packed = pack_fp4(t.codes)  # [N, Kp/2] uint8; Kp is a multiple of 16, so a multiple of 4 bytes
    words = np.ascontiguousarray(packed).view("<i4")
    g = float(t.tensor_scale) if fmt == "nvfp4" else 1.0
    return FP4Weight(torch.from_numpy(words.copy()).to(device), torch.from_numpy(np.ascontiguousarray(t.scales)).to(device),
                     g, fmt, n, k)


def random_fp4_weight_torch(n: int, k: int, fmt: str, device, gen: torch.Generator | None = None) -> FP4Weight:
    """Random FP4 weight built directly on ``device`` (benchmarks): uniform codes, scales near 1."""
    block = 16 if fmt == "nvfp4" else 32
    kp = -(-k // block) * block
    words = torch.randint(-2**31, 2**31 - 1, (n, kp // 8), dtype=torch.int32, device=device, generator=gen)
    if fmt == "nvfp4":
        scales = torch.randint(0x30, 0x40, (n, kp // block), dtype=torch.uint8, device=device, generator=gen)
        g = 1.0 / 64
    else:
        scales = torch.randint(120, 128, (n, kp // block), dtype=torch.uint8, device=device, generator=gen)
        g = 1.0
    return FP4Weight(words, scales, g, fmt, n, k)


@triton.jit
def _shift(w, sh: tl.constexpr):
    if sh >= 0:
        r = w << sh
    else:
        r = w >> (-sh)
    return r


@triton.jit
def _e2m1_nibble_f32(w, s: tl.constexpr):
    # nibble s of int32 words -> E2M1 value * 2^-14 as float32 (exact)
    bits = (_shift(w, 9 - 4 * s) & 0x0E00) | (_shift(w, 12 - 4 * s) & 0x8000)
    return bits.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _block_scale_f32(c, IS_NV: tl.constexpr):
    # scale byte (int32 0..255) -> float32; NVFP4: E4M3 value * 2^-8; MXFP4: E8M0 value (0xFF -> NaN)
    if IS_NV:
        bits = ((c & 0x7F) << 7) | ((c & 0x80) << 8)
        v = bits.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
    else:
        v = (c << 23).to(tl.float32, bitcast=True)
        v = tl.where(c == 255, float("nan"), v)
    return v


@triton.jit
def _fp4_gemv_kernel(x_ptr, w_ptr, s_ptr, y_ptr, out_mul, M, N, KW, K,
                     stride_xm, stride_wn, stride_sn, stride_ym,
                     IS_NV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr,
                     PDL: tl.constexpr = False):
    WPB: tl.constexpr = 2 if IS_NV else 4  # words per scale block
    pdl_launch(PDL)
    pdl_wait(PDL)
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rj = tl.arange(0, BLOCK_KW)
    m_ok = rm < M
    n_ok = rn < N
    acc = tl.zeros([BLOCK_M, BLOCK_N, BLOCK_KW], tl.float32)
    for j0 in range(0, KW, BLOCK_KW):
        j = j0 + rj
        j_ok = j < KW
        wm = n_ok[:, None] & j_ok[None, :]
        w = tl.load(w_ptr + rn[:, None] * stride_wn + j[None, :], mask=wm, other=0)
        sc = tl.load(s_ptr + rn[:, None] * stride_sn + (j // WPB)[None, :], mask=wm, other=0).to(tl.int32)
        part = tl.zeros([BLOCK_M, BLOCK_N, BLOCK_KW], tl.float32)
        for s in tl.static_range(8):
            v = _e2m1_nibble_f32(w, s)
            kk = j * 8 + s
            xv = tl.load(x_ptr + rm[:, None] * stride_xm + kk[None, :], mask=m_ok[:, None] & (kk < K)[None, :],
                         other=0.0).to(tl.float32)
            part += v[None, :, :] * xv[:, None, :]
        acc += part * _block_scale_f32(sc, IS_NV)[None, :, :]
    y = tl.sum(acc, axis=2) * out_mul
    tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :], y.to(tl.bfloat16), mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _fp4_gemv1_kernel(x_ptr, w_ptr, s_ptr, y_ptr, out_mul, N, KW, K, stride_xm, stride_wn, stride_sn, stride_ym,
                      IS_NV: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    # one token per program: the 8 activations of a word are one contiguous [BKW, 8] load; decode of the
    # 8 nibbles and their products are in-thread (3-D tile, summed over the last axis)
    WPB: tl.constexpr = 2 if IS_NV else 4
    pid_n = tl.program_id(0)
    m = tl.program_id(1)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rj = tl.arange(0, BLOCK_KW)
    rs = tl.arange(0, 8)
    n_ok = rn < N
    acc = tl.zeros([BLOCK_N, BLOCK_KW], tl.float32)
    for j0 in range(0, KW, BLOCK_KW):
        j = j0 + rj
        wm = n_ok[:, None] & (j < KW)[None, :]
        w = tl.load(w_ptr + rn[:, None] * stride_wn + j[None, :], mask=wm, other=0)
        sc = tl.load(s_ptr + rn[:, None] * stride_sn + (j // WPB)[None, :], mask=wm, other=0).to(tl.int32)
        kk = j[:, None] * 8 + rs[None, :]
        xv = tl.load(x_ptr + m * stride_xm + kk, mask=kk < K, other=0.0).to(tl.float32)
        nib = w[:, :, None] >> (4 * rs)[None, None, :]
        bits = ((nib << 9) & 0x0E00) | ((nib << 12) & 0x8000)
        v = bits.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
        acc += tl.sum(v * xv[None, :, :], axis=2) * _block_scale_f32(sc, IS_NV)
    y = tl.sum(acc, axis=1) * out_mul
    tl.store(y_ptr + m * stride_ym + rn, y.to(tl.bfloat16), mask=n_ok)


_GEMV1_CONFIGS = [
    triton.Config({"BLOCK_N": bn, "BLOCK_KW": bk}, num_warps=nw)
    for bn, bk, nw in [(4, 256, 4), (8, 128, 4), (8, 256, 8), (16, 64, 4), (16, 128, 8), (2, 256, 4), (32, 32, 4),
                       (4, 128, 4)]
]
_fp4_gemv1_tuned = autotune(_GEMV1_CONFIGS, key=["N", "KW", "IS_NV"])(_fp4_gemv1_kernel)

_GEMV_CONFIGS = [
    triton.Config({"BLOCK_N": bn, "BLOCK_KW": bk}, num_warps=nw)
    for bn, bk, nw in [(4, 256, 4), (8, 256, 4), (8, 256, 8), (16, 128, 4), (32, 64, 4), (8, 128, 4),
                       (2, 512, 4), (32, 32, 4), (64, 32, 4), (16, 64, 4), (64, 64, 8)]
]
_fp4_gemv_tuned = autotune(_GEMV_CONFIGS, key=["M", "N", "KW", "BLOCK_M", "IS_NV"])(_fp4_gemv_kernel)


def _out_mul(w: FP4Weight) -> float:
    return (2.0**22) * w.gscale if w.fmt == "nvfp4" else 2.0**14


def fp4_gemv(x: torch.Tensor, w: FP4Weight, block_m: int | None = None, config: dict | None = None,
             single_max: int = 0) -> torch.Tensor:
    """Decode GEMV: bf16 ``x`` [M, K] times FP4 ``w`` [N, K]^T -> bf16 [M, N]. Tokens tiled by ``block_m``;
    M <= ``single_max`` selects the single-token kernel (slower on an H100, kept for comparison). One token on
    a GPU with neither option nor ``config``: the whole-row kernel of :mod:`.fp4row` (fp16 pair products;
    1.8-2.3x faster than this module's float32 kernels on an H200, reports/gpu-baseline.md's 2026-12-04 run)."""
    if x.dim() != 2 or x.shape[1] != w.k:
        raise ValueError(f"x must be [M, {w.k}], got {tuple(x.shape)}")
    x = x.contiguous()
    m = x.shape[0]
    if m == 1 and x.is_cuda and block_m is None and config is None and single_max == 0:
        from .fp4row import fp4_gemv_row

        return fp4_gemv_row(x, w)
    y = torch.empty(m, w.n, dtype=torch.bfloat16, device=x.device)
    is_nv = w.fmt == "nvfp4"
    if block_m is None and m <= single_max:  # one program per token and row block
        args1 = (x, w.words, w.scales, y, _out_mul(w), w.n, w.words.shape[1], w.k,
                 x.stride(0), w.words.stride(0), w.scales.stride(0), y.stride(0))
        if x.is_cuda and config is None:
            _fp4_gemv1_tuned[lambda meta: (triton.cdiv(w.n, meta["BLOCK_N"]), m)](*args1, IS_NV=is_nv)
        else:
            cfg = dict(config or {"BLOCK_N": 16, "BLOCK_KW": 32, "num_warps": 4})
            nw = cfg.pop("num_warps", 4)
            _fp4_gemv1_kernel[(triton.cdiv(w.n, cfg["BLOCK_N"]), m)](*args1, IS_NV=is_nv, num_warps=nw, **cfg)
        return y
    bm = block_m or min(triton.next_power_of_2(m), 8)
    args = (x, w.words, w.scales, y, _out_mul(w), m, w.n, w.words.shape[1], w.k,
            x.stride(0), w.words.stride(0), w.scales.stride(0), y.stride(0))
    if x.is_cuda and config is None:
        grid = lambda meta: (triton.cdiv(w.n, meta["BLOCK_N"]), triton.cdiv(m, bm))  # noqa: E731
        _fp4_gemv_tuned[grid](*args, IS_NV=is_nv, BLOCK_M=bm, **pdl_kw(x.device))
    else:
        cfg = dict(config or {"BLOCK_N": 16, "BLOCK_KW": 64, "num_warps": 4})
        nw = cfg.pop("num_warps", 4)
        grid = (triton.cdiv(w.n, cfg["BLOCK_N"]), triton.cdiv(m, bm))
        _fp4_gemv_kernel[grid](*args, IS_NV=is_nv, BLOCK_M=bm, num_warps=nw, **cfg)
    return y


@triton.jit
def _dequant_tile(w, sc, rs, IS_NV: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    # words [BN, BKW] and their scale bytes -> bf16 [BN, BKW * 8] = E2M1 x block scale (x 1 / s_global for NVFP4),
    # exact: E2M1 x E4M3 has <= 6 significant bits; 2^22 (NV) / 2^14 (MX) undoes the fp16 decodes' offsets
    scf = _block_scale_f32(sc, IS_NV)  # [BN, BKW]
    nib = (w[:, :, None] >> (4 * rs)[None, None, :]) & 0xF  # [BN, BKW, 8]
    bits = ((nib & 7) << 9) | ((nib & 8) << 12)
    v = bits.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32) * scf[:, :, None]
    return tl.reshape(v * (4194304.0 if IS_NV else 16384.0), [BLOCK_N, BLOCK_KW * 8]).to(tl.bfloat16)


@triton.jit
def _dequant_kernel(w_ptr, s_ptr, o_ptr, N, KW, K, stride_wn, stride_sn, stride_on, IS_NV: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    WPB: tl.constexpr = 2 if IS_NV else 4
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    j = tl.program_id(1) * BLOCK_KW + tl.arange(0, BLOCK_KW)
    wm = (rn < N)[:, None] & (j < KW)[None, :]
    w = tl.load(w_ptr + rn[:, None] * stride_wn + j[None, :], mask=wm, other=0)
    sc = tl.load(s_ptr + rn[:, None] * stride_sn + (j // WPB)[None, :], mask=wm, other=0).to(tl.int32)
    wt = _dequant_tile(w, sc, tl.arange(0, 8), IS_NV, BLOCK_N, BLOCK_KW)
    kk = tl.program_id(1) * BLOCK_KW * 8 + tl.arange(0, BLOCK_KW * 8)
    tl.store(o_ptr + rn[:, None] * stride_on + kk[None, :], wt, mask=(rn < N)[:, None] & (kk < K)[None, :])


def fp4_dequant(w: FP4Weight) -> torch.Tensor:
    """The FP4 weight as bf16 [N, K] without the NVFP4 tensor scale (exact; one Triton launch)."""
    o = torch.empty(w.n, w.k, dtype=torch.bfloat16, device=w.words.device)
    bn, bkw = 16, 32
    _dequant_kernel[(triton.cdiv(w.n, bn), triton.cdiv(w.words.shape[1], bkw))](
        w.words, w.scales, o, w.n, w.words.shape[1], w.k, w.words.stride(0), w.scales.stride(0), o.stride(0),
        IS_NV=w.fmt == "nvfp4", BLOCK_N=bn, BLOCK_KW=bkw, num_warps=4)
    return o


def fp4_gemm(x: torch.Tensor, w: FP4Weight) -> torch.Tensor:
    """Prefill GEMM: bf16 ``x`` [M, K] x FP4 ``w`` -> bf16 [M, N]: :func:`fp4_dequant` into a bf16 scratch
    weight, then the bf16 GEMM (cuBLAS on a GPU; ``addmm`` with ``alpha`` = the tensor scale). The kernel that
    decodes each tile in registers instead is :func:`.fp4mma.fp4_mma`."""
    if x.dim() != 2 or x.shape[1] != w.k:
        raise ValueError(f"x must be [M, {w.k}], got {tuple(x.shape)}")
    x = x.contiguous().to(torch.bfloat16)
    wb = fp4_dequant(w)
    # beta 0: the uninitialised output is not read (torch.addmm)
    return torch.empty(x.shape[0], w.n, dtype=torch.bfloat16, device=x.device).addmm_(x, wb.t(), beta=0,
                                                                                        alpha=w.gscale)
