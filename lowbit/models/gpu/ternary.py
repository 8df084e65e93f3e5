"""Ternary W1.58A8 Triton kernels: per-token INT8 activation quantizer, decode GEMV, prefill GEMM.

Numerics (bit-exact with ``sim.numerics``; docs/reference/numerics.md §1.2, §1.3):

* activations: ``s = 127 / max(max|x|, 1e-5)``, ``q = clip(rne(x*s), -128, 127)`` computed in **float64**
  inside the kernel (the same ops as ``sim.numerics.int8.int8_absmax_quantize``, so codes are identical);
* weights: ternary codes ``w`` in {-1,0,1}, one scale per output row (per-tensor = a repeated value, the
  fused QKV / gate-up layouts of BitNet 2B4T keep one scale per projection: docs/reference/numerics.md §1.1);
* ``acc = sum_k w[n,k] q[m,k]`` exact in INT32 (|acc| <= 128*K << 2^31);
* ``y = (acc * w_scale[n]) / s[m]`` in float32, stored as bf16 (the sim's op order, float64 there).

GPU weight layout = the sim's 2-bit layout (``sim.numerics.packing.pack_ternary_2bit``: code ``w+1`` in
{0,1,2}, element i in bits [2(i%4)+1 : 2(i%4)] of byte i//4) after zero-weight padding of K to a
multiple of 16, **viewed as little-endian int32 words**: element ``16j+s`` of a row sits in bits
[2s+1 : 2s] of word ``j``. No re-tiling: one row is ``Kp/16`` contiguous words, loaded coalesced.

GEMV trick (decode, design of this module): ``(word >> 2s) & 0x00030003`` extracts the codes of elements
``16j+s`` (low half) and ``16j+s+8`` (high half) at once. Multiplying by the activation pair
``P[8j+s] = x'[16j+s+8] | x'[16j+s] << 16`` (``x' = q + 128`` in 0..255) puts
``c[s]·x'[s] + c[s+8]·x'[s+8]`` in bits 16..31 of one IMAD (the low-half product stays below 2^16,
the cross term above 2^32 wraps away). Eight IMADs per word are summed before ``>> 16`` (at most
8·1020 < 2^15, no carry from the low half: 8·510 < 2^16), so a pair of weights costs one shift, one AND and
one IMAD. With ``C[n] = sum_k c[n,k]`` (host, at pack time) and ``Q[m] = sum_k q[m,k]``::

    sum_k (c-1)(x'-128) = S - 128*C[n] - Q[m]       with S = sum_k c*x'

The prefill GEMM unpacks a tile to int8 ``c-1`` and uses INT8 tensor cores (``tl.dot``, int32 acc).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import triton
import triton.language as tl

from lowbit.sim.numerics.packing import pack_ternary_2bit

__all__ = [
    "TernaryWeight",
    "pack_ternary_gpu",
    "pack_ternary_gpu_torch",
    "QuantAct",
    "act_quant",
    "ternary_gemv",
    "ternary_gemm",
    "ternary_linear",
    "K_ALIGN",
]

def _fast_bench(fn, quantiles=None):
    # CUDA-graph timing: a plain do_bench of a ~5 us kernel measures the Python launch path instead
    return triton.testing.do_bench_cudagraph(fn, rep=20, quantiles=quantiles)


def autotune(configs, key):
    """``triton.autotune`` timing each config by CUDA-graph replay (launch overhead excluded)."""
    try:
        return triton.autotune(configs, key=key, do_bench=_fast_bench)
    except TypeError:  # older triton: no do_bench argument
        return triton.autotune(configs, key=key, use_cuda_graph=True)


K_ALIGN = 16  # weights per int32 word; K is zero-padded to a multiple of this
_ZERO_WORD = 0x55555555  # sixteen codes "1" = sixteen zero weights (padding / masked loads)


@dataclass
class TernaryWeight:
    """Packed ternary weight on one device: ``words`` int32 [N, Kp/16], ``csum`` int32 [N] (sum of codes
    w+1 over Kp), ``scale`` float32 [N] (w_scale = mean|W| per row), ``n``/``k`` logical shape."""

    words: torch.Tensor
    csum: torch.Tensor
    scale: torch.Tensor
    n: int
    k: int

    @property
    def kp(self) -> int:
        return self.words.shape[1] * K_ALIGN

    @property
    def nbytes(self) -> int:
        return self.words.numel() * 4 + self.csum.numel() * 4 + self.scale.numel() * 4

    def to(self, device) -> TernaryWeight:
        return TernaryWeight(self.words.to(device), self.csum.to(device), self.scale.to(device), self.n, self.k)


def _scale_vec(scale, n: int) -> torch.Tensor:
    s = torch.as_tensor(scale, dtype=torch.float32).flatten()
    if s.numel() == 1:
        s = s.expand(n).clone()
    if s.numel() != n:
        raise ValueError(f"w_scale must be a scalar or have {n} entries, got {s.numel()}")
    return s


def pack_ternary_gpu(codes: np.ndarray, scale, device="cpu") -> TernaryWeight:
    """Host packing with the sim's ``pack_ternary_2bit`` (K zero-padded to a multiple of 16 first)."""
    c = np.asarray(codes)
    if c.ndim != 2:
        raise ValueError(f"codes must be 2-D [N, K], got shape {c.shape}")
    n, k = c.shape
    pad = (-k) % K_ALIGN
    if pad:
        c = np.concatenate([c, np.zeros((n, pad), c.dtype)], axis=1)
    packed, _ = pack_ternary_2bit(c)  # uint8 [N, Kp/4], validates codes
    words = np.ascontiguousarray(packed).view("<i4")  # little-endian: element 16j+s in bits 2s of word j
    csum = (c.astype(np.int64) + 1).sum(axis=1).astype(np.int32)
    return TernaryWeight(torch.from_numpy(words.copy()).to(device), torch.from_numpy(csum).to(device),
                         _scale_vec(scale, n).to(device), n, k)


def pack_ternary_gpu_torch(codes: torch.Tensor, scale) -> TernaryWeight:
    """Same layout as :func:`pack_ternary_gpu`, computed with torch ops on ``codes``' device (int8 [N,K])."""
    n, k = codes.shape
    pad = (-k) % K_ALIGN
    u = (codes.to(torch.int64) + 1)
    if pad:
        u = torch.cat([u, torch.ones(n, pad, dtype=torch.int64, device=codes.device)], dim=1)
    g = u.view(n, -1, K_ALIGN)
    shifts = (2 * torch.arange(K_ALIGN, device=codes.device, dtype=torch.int64))
    words = (g << shifts).sum(dim=-1)  # < 2^32, fits int64
    words = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)
    csum = u.sum(dim=1).to(torch.int32)
    return TernaryWeight(words.contiguous(), csum, _scale_vec(scale, n).to(codes.device), n, k)


# ----------------------------------------------------------------------------- activation quantizer

@dataclass
class QuantAct:
    """Per-token INT8 activations: ``q`` int8 [M, Kp] (zero-padded), ``pairs`` int32 [M, Kp/2] (GEMV
    operand, see module docstring), ``qsum`` int32 [M], ``s`` float32 [M] (= 127/max|x|), ``k``."""

    q: torch.Tensor
    pairs: torch.Tensor
    qsum: torch.Tensor
    s: torch.Tensor
    k: int


@triton.jit
def _rne_f64(v):
    # round half to even in float64 (|v| <= 127.5 here, so v + 0.5 is exact)
    r = tl.floor(v + 0.5)
    half_r = tl.floor(r * 0.5)
    odd = (r - 2.0 * half_r) == 1.0
    tie = (r - v) == 0.5
    return tl.where(tie & odd, r - 1.0, r)


@triton.jit
def _act_quant_kernel(x_ptr, q_ptr, p_ptr, qsum_ptr, s_ptr, K, KW, stride_xm, stride_qm, stride_pm, eps,
                      BLOCK_J: tl.constexpr, WRITE_Q: tl.constexpr):
    m = tl.program_id(0)
    rj = tl.arange(0, BLOCK_J)
    rs = tl.arange(0, 8)
    xrow = x_ptr + m * stride_xm
    amax = tl.zeros([BLOCK_J, 8], tl.float64)
    for j0 in range(0, KW, BLOCK_J):
        j = j0 + rj
        k_hi = j[:, None] * 16 + rs[None, :]
        k_lo = k_hi + 8
        a = tl.load(xrow + k_hi, mask=k_hi < K, other=0.0).to(tl.float64)
        b = tl.load(xrow + k_lo, mask=k_lo < K, other=0.0).to(tl.float64)
        amax = tl.maximum(amax, tl.maximum(tl.abs(a), tl.abs(b)))
    mx = tl.max(tl.max(amax, axis=1), axis=0)
    s = 127.0 / tl.maximum(mx, eps)
    qs = tl.zeros([BLOCK_J, 8], tl.int32)
    for j0 in range(0, KW, BLOCK_J):
        j = j0 + rj
        jm = (j < KW)[:, None]
        k_hi = j[:, None] * 16 + rs[None, :]
        k_lo = k_hi + 8
        a = tl.load(xrow + k_hi, mask=k_hi < K, other=0.0).to(tl.float64)
        b = tl.load(xrow + k_lo, mask=k_lo < K, other=0.0).to(tl.float64)
        qa = tl.minimum(tl.maximum(_rne_f64(a * s), -128.0), 127.0).to(tl.int32)
        qb = tl.minimum(tl.maximum(_rne_f64(b * s), -128.0), 127.0).to(tl.int32)
        qs += qa + qb
        if WRITE_Q:
            tl.store(q_ptr + m * stride_qm + k_hi, qa.to(tl.int8), mask=jm)
            tl.store(q_ptr + m * stride_qm + k_lo, qb.to(tl.int8), mask=jm)
        pair = (qb + 128) | ((qa + 128) << 16)
        tl.store(p_ptr + m * stride_pm + j[:, None] * 8 + rs[None, :], pair, mask=jm)
    tl.store(qsum_ptr + m, tl.sum(tl.sum(qs, axis=1), axis=0))
    tl.store(s_ptr + m, s.to(tl.float32))


def act_quant(x: torch.Tensor, write_q: bool = True, eps: float = 1e-5) -> QuantAct:
    """Quantize ``x`` [M, K] (bf16/fp16/fp32) per token; bit-exact with ``int8_absmax_quantize``."""
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D [M, K], got {tuple(x.shape)}")
    x = x.contiguous()
    m, k = x.shape
    kw = triton.cdiv(k, K_ALIGN)
    dev = x.device
    q = torch.empty(m, kw * K_ALIGN, dtype=torch.int8, device=dev) if write_q else torch.empty(1, 1, dtype=torch.int8, device=dev)
    pairs = torch.empty(m, kw * 8, dtype=torch.int32, device=dev)
    qsum = torch.empty(m, dtype=torch.int32, device=dev)
    s = torch.empty(m, dtype=torch.float32, device=dev)
    # one tile covers the whole row (K <= 16384): both passes are a single iteration, so the quantizer costs
    # about two memory latencies instead of two per 1024 elements
    block_j = min(triton.next_power_of_2(kw), 1024)
    nw = 4 if block_j <= 64 else (8 if block_j <= 256 else 16)
    _act_quant_kernel[(m,)](x, q, pairs, qsum, s, k, kw, x.stride(0), q.stride(0), pairs.stride(0), eps,
                            BLOCK_J=block_j, WRITE_Q=write_q, num_warps=nw)
    return QuantAct(q, pairs, qsum, s, k)


# ----------------------------------------------------------------------------- decode GEMV (CUDA cores)

@triton.jit
def _tgemv_kernel(p_ptr, qsum_ptr, xs_ptr, w_ptr, c_ptr, ws_ptr, y_ptr, M, N, KW,
                  stride_pm, stride_wn, stride_ym,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr, OUT_ACC: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rj = tl.arange(0, BLOCK_KW)
    m_ok = rm < M
    n_ok = rn < N
    acc = tl.zeros([BLOCK_M, BLOCK_N, BLOCK_KW], tl.int32)
    for j0 in range(0, KW, BLOCK_KW):
        j = j0 + rj
        j_ok = j < KW
        w = tl.load(w_ptr + rn[:, None] * stride_wn + j[None, :], mask=n_ok[:, None] & j_ok[None, :],
                    other=0x55555555)
        t = tl.zeros([BLOCK_M, BLOCK_N, BLOCK_KW], tl.int32)
        for s in tl.static_range(8):
            cw = (w >> (2 * s)) & 0x00030003
            pv = tl.load(p_ptr + rm[:, None] * stride_pm + (j * 8 + s)[None, :],
                         mask=m_ok[:, None] & j_ok[None, :], other=0)
            t += cw[None, :, :] * pv[:, None, :]
        acc += t >> 16
    S = tl.sum(acc, axis=2)
    qs = tl.load(qsum_ptr + rm, mask=m_ok, other=0)
    cs = tl.load(c_ptr + rn, mask=n_ok, other=0)
    yint = S - 128 * cs[None, :] - qs[:, None]
    out = y_ptr + rm[:, None] * stride_ym + rn[None, :]
    omask = m_ok[:, None] & n_ok[None, :]
    if OUT_ACC:
        tl.store(out, yint, mask=omask)
    else:
        ws = tl.load(ws_ptr + rn, mask=n_ok, other=0.0)
        xs = tl.load(xs_ptr + rm, mask=m_ok, other=1.0)
        y = (yint.to(tl.float32) * ws[None, :]) / xs[:, None]
        tl.store(out, y.to(tl.bfloat16), mask=omask)


@triton.jit
def _tgemv1_kernel(p_ptr, qsum_ptr, xs_ptr, w_ptr, c_ptr, ws_ptr, y_ptr, N, KW, stride_pm, stride_wn, stride_ym,
                   BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr, OUT_ACC: tl.constexpr):
    # one token per program (grid axis 1): the 8 pair operands of a word are one contiguous 32-byte load
    # ([BKW, 8] tile) instead of eight strided gathers; the 8 products of a word are summed in-thread
    pid_n = tl.program_id(0)
    m = tl.program_id(1)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rj = tl.arange(0, BLOCK_KW)
    rs = tl.arange(0, 8)
    n_ok = rn < N
    acc = tl.zeros([BLOCK_N, BLOCK_KW], tl.int32)
    for j0 in range(0, KW, BLOCK_KW):
        j = j0 + rj
        j_ok = j < KW
        w = tl.load(w_ptr + rn[:, None] * stride_wn + j[None, :], mask=n_ok[:, None] & j_ok[None, :],
                    other=0x55555555)
        p = tl.load(p_ptr + m * stride_pm + j[:, None] * 8 + rs[None, :], mask=j_ok[:, None], other=0)
        cw = (w[:, :, None] >> (2 * rs)[None, None, :]) & 0x00030003
        t = tl.sum(cw * p[None, :, :], axis=2)  # mod 2^32; < 2^29, see module docstring
        acc += t >> 16
    S = tl.sum(acc, axis=1)
    qs = tl.load(qsum_ptr + m)
    cs = tl.load(c_ptr + rn, mask=n_ok, other=0)
    yint = S - 128 * cs - qs
    if OUT_ACC:
        tl.store(y_ptr + m * stride_ym + rn, yint, mask=n_ok)
    else:
        ws = tl.load(ws_ptr + rn, mask=n_ok, other=0.0)
        xs = tl.load(xs_ptr + m)
        tl.store(y_ptr + m * stride_ym + rn, ((yint.to(tl.float32) * ws) / xs).to(tl.bfloat16), mask=n_ok)


_GEMV1_CONFIGS = [
    triton.Config({"BLOCK_N": bn, "BLOCK_KW": bk}, num_warps=nw)
    for bn, bk, nw in [(4, 256, 4), (8, 128, 4), (8, 256, 8), (16, 64, 4), (16, 128, 8), (2, 256, 4), (32, 32, 4),
                       (4, 128, 4)]
]
_tgemv1_tuned = autotune(_GEMV1_CONFIGS, key=["N", "KW"])(_tgemv1_kernel)

_GEMV_CONFIGS = [
    triton.Config({"BLOCK_N": bn, "BLOCK_KW": bk}, num_warps=nw)
    for bn, bk, nw in [(4, 256, 4), (8, 256, 4), (8, 256, 8), (16, 128, 4), (32, 64, 4), (8, 128, 4),
                       (2, 256, 4), (32, 32, 4), (64, 32, 4), (64, 16, 4), (16, 64, 4), (64, 64, 8)]
]
_tgemv_tuned = autotune(_GEMV_CONFIGS, key=["M", "N", "KW", "BLOCK_M"])(_tgemv_kernel)


def ternary_gemv(a: QuantAct, w: TernaryWeight, out_acc: bool = False, block_m: int | None = None,
                 config: dict | None = None, single_max: int = 0) -> torch.Tensor:
    """Decode GEMV (any M; meant for 1..15): bf16 [M, N] (or the int32 accumulator). Tokens are tiled by
    ``block_m`` (default min(next_pow2(M), 8)). M <= ``single_max`` selects the single-token kernel
    instead (one program per token; 2.4x slower on an H100 at M = 1, kept for comparison)."""
    m = a.pairs.shape[0]
    if a.pairs.shape[1] * 2 != w.kp:
        raise ValueError(f"K mismatch: activations padded to {a.pairs.shape[1] * 2}, weight to {w.kp}")
    y = torch.empty(m, w.n, dtype=torch.int32 if out_acc else torch.bfloat16, device=a.pairs.device)
    if block_m is None and m <= single_max:
        args1 = (a.pairs, a.qsum, a.s, w.words, w.csum, w.scale, y, w.n, w.words.shape[1],
                 a.pairs.stride(0), w.words.stride(0), y.stride(0))
        if a.pairs.is_cuda and config is None:
            _tgemv1_tuned[lambda meta: (triton.cdiv(w.n, meta["BLOCK_N"]), m)](*args1, OUT_ACC=out_acc)
        else:
            cfg = dict(config or {"BLOCK_N": 16, "BLOCK_KW": 32, "num_warps": 4})
            nw = cfg.pop("num_warps", 4)
            _tgemv1_kernel[(triton.cdiv(w.n, cfg["BLOCK_N"]), m)](*args1, OUT_ACC=out_acc, num_warps=nw, **cfg)
        return y
    bm = block_m or min(triton.next_power_of_2(m), 8)
    args = (a.pairs, a.qsum, a.s, w.words, w.csum, w.scale, y, m, w.n, w.words.shape[1],
            a.pairs.stride(0), w.words.stride(0), y.stride(0))
    if a.pairs.is_cuda and config is None:
        grid = lambda meta: (triton.cdiv(w.n, meta["BLOCK_N"]), triton.cdiv(m, bm))  # noqa: E731
        _tgemv_tuned[grid](*args, BLOCK_M=bm, OUT_ACC=out_acc)
    else:
        cfg = config or {"BLOCK_N": 16, "BLOCK_KW": 64, "num_warps": 4}
        cfg = dict(cfg)
        nw = cfg.pop("num_warps", 4)
        grid = (triton.cdiv(w.n, cfg["BLOCK_N"]), triton.cdiv(m, bm))
        _tgemv_kernel[grid](*args, BLOCK_M=bm, OUT_ACC=out_acc, num_warps=nw, **cfg)
    return y


# ----------------------------------------------------------------------------- prefill GEMM (INT8 tensor cores)

@triton.jit
def grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of a GEMM tile with GROUP_M row-tiles per group, so neighbouring programs share
    weight tiles in L2 (the grouped ordering of the Triton matmul tutorial)."""
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    group = GROUP_M * num_n
    first_m = (pid // group) * GROUP_M
    gsize = tl.minimum(num_m - first_m, GROUP_M)
    return first_m + (pid % group) % gsize, (pid % group) // gsize


@triton.jit
def _tgemm_kernel(q_ptr, xs_ptr, w_ptr, ws_ptr, y_ptr, M, N, KW, stride_qm, stride_wn, stride_ym,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr, GROUP_M: tl.constexpr,
                  OUT_ACC: tl.constexpr):
    pid = tl.program_id(0)
    pid_m, pid_n = grouped_tile(pid, M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rj = tl.arange(0, BLOCK_KW)
    rk = tl.arange(0, BLOCK_KW * 16)
    rs = tl.arange(0, 16)
    m_ok = rm < M
    n_ok = rn < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.int32)
    for j0 in range(0, KW, BLOCK_KW):
        kk = j0 * 16 + rk
        x = tl.load(q_ptr + rm[:, None] * stride_qm + kk[None, :], mask=m_ok[:, None] & (kk < KW * 16)[None, :],
                    other=0)
        j = j0 + rj
        w = tl.load(w_ptr + rn[:, None] * stride_wn + j[None, :], mask=n_ok[:, None] & (j < KW)[None, :],
                    other=0x55555555)
        codes = ((w[:, :, None] >> (2 * rs)[None, None, :]) & 3) - 1
        wt = tl.reshape(codes, [BLOCK_N, BLOCK_KW * 16]).to(tl.int8)
        acc = tl.dot(x, tl.trans(wt), acc, out_dtype=tl.int32)
    out = y_ptr + rm[:, None] * stride_ym + rn[None, :]
    omask = m_ok[:, None] & n_ok[None, :]
    if OUT_ACC:
        tl.store(out, acc, mask=omask)
    else:
        ws = tl.load(ws_ptr + rn, mask=n_ok, other=0.0)
        xs = tl.load(xs_ptr + rm, mask=m_ok, other=1.0)
        y = (acc.to(tl.float32) * ws[None, :]) / xs[:, None]
        tl.store(out, y.to(tl.bfloat16), mask=omask)


_GEMM_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_KW": bk, "GROUP_M": 8}, num_warps=nw, num_stages=ns)
    for bm, bn, bk, nw, ns in [(128, 128, 4, 8, 3), (128, 128, 8, 8, 3), (64, 128, 8, 4, 4), (128, 256, 4, 8, 3),
                               (64, 64, 8, 4, 4), (16, 64, 8, 4, 4), (16, 128, 8, 4, 3)]
]
_tgemm_tuned = autotune(_GEMM_CONFIGS, key=["M", "N", "KW"])(_tgemm_kernel)


def ternary_gemm(a: QuantAct, w: TernaryWeight, out_acc: bool = False, config: dict | None = None) -> torch.Tensor:
    """Prefill GEMM with INT8 tensor cores (``tl.dot``, int32 accumulate): bf16 [M, N] (or int32 acc)."""
    m = a.q.shape[0]
    if a.q.shape[1] != w.kp:
        raise ValueError(f"K mismatch: activations padded to {a.q.shape[1]}, weight to {w.kp} (need act_quant(write_q=True))")
    y = torch.empty(m, w.n, dtype=torch.int32 if out_acc else torch.bfloat16, device=a.q.device)
    args = (a.q, a.s, w.words, w.scale, y, m, w.n, w.words.shape[1], a.q.stride(0), w.words.stride(0), y.stride(0))
    if a.q.is_cuda and config is None:
        grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(w.n, meta["BLOCK_N"]),)  # noqa: E731
        _tgemm_tuned[grid](*args, OUT_ACC=out_acc)
    else:
        cfg = dict(config or {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_KW": 4, "GROUP_M": 4})
        nw = cfg.pop("num_warps", 4)
        ns = cfg.pop("num_stages", 2)
        grid = (triton.cdiv(m, cfg["BLOCK_M"]) * triton.cdiv(w.n, cfg["BLOCK_N"]),)
        _tgemm_kernel[grid](*args, OUT_ACC=out_acc, num_warps=nw, num_stages=ns, **cfg)
    return y


@triton.jit
def _tunpack_kernel(w_ptr, out_ptr, N, KW, stride_wn, stride_on, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rj = pid_k * BLOCK_KW + tl.arange(0, BLOCK_KW)
    rs = tl.arange(0, 16)
    ok = (rn < N)[:, None] & (rj < KW)[None, :]
    w = tl.load(w_ptr + rn[:, None] * stride_wn + rj[None, :], mask=ok, other=0x55555555)
    codes = (((w[:, :, None] >> (2 * rs)[None, None, :]) & 3) - 1).to(tl.int8)
    offs = rn[:, None, None] * stride_on + rj[None, :, None] * 16 + rs[None, None, :]
    tl.store(out_ptr + offs, codes, mask=ok[:, :, None])


@triton.jit
def _dequant_acc_kernel(acc_ptr, ws_ptr, xs_ptr, y_ptr, N, BLOCK: tl.constexpr):
    m = tl.program_id(0)
    rn = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = rn < N
    acc = tl.load(acc_ptr + m * N + rn, mask=ok, other=0)
    y = (acc.to(tl.float32) * tl.load(ws_ptr + rn, mask=ok, other=0.0)) / tl.load(xs_ptr + m)
    tl.store(y_ptr + m * N + rn, y.to(tl.bfloat16), mask=ok)


def ternary_unpack(w: TernaryWeight) -> torch.Tensor:
    """Unpack the 2-bit words to int8 codes [N, Kp] (one pass over the packed weight)."""
    out = torch.empty(w.n, w.kp, dtype=torch.int8, device=w.words.device)
    grid = (triton.cdiv(w.n, 16), triton.cdiv(w.words.shape[1], 64))
    _tunpack_kernel[grid](w.words, out, w.n, w.words.shape[1], w.words.stride(0), out.stride(0),
                          BLOCK_N=16, BLOCK_KW=64, num_warps=4)
    return out


def ternary_gemm_unpacked(a: QuantAct, w: TernaryWeight, out_acc: bool = False) -> torch.Tensor:
    """Prefill alternative: unpack the weight to int8, cuBLAS INT8 GEMM (``torch._int_mm``, int32 accumulate,
    needs M > 16), then the BitNet dequantisation. Same integers as :func:`ternary_gemm`."""
    m = a.q.shape[0]
    if m <= 16:
        raise ValueError(f"ternary_gemm_unpacked needs more than 16 tokens (cuBLAS int8 GEMM), got {m}")
    acc = torch._int_mm(a.q, ternary_unpack(w).t())
    if out_acc:
        return acc
    y = torch.empty(m, w.n, dtype=torch.bfloat16, device=acc.device)
    _dequant_acc_kernel[(m, triton.cdiv(w.n, 1024))](acc, w.scale, a.s, y, w.n, BLOCK=1024, num_warps=4)
    return y


def ternary_linear(x: torch.Tensor, w: TernaryWeight, gemm_from: int = 16) -> torch.Tensor:
    """BitLinear forward on bf16 ``x`` [M, K]: quantize, then GEMV (M < gemm_from) or GEMM."""
    if x.shape[-1] != w.k:
        raise ValueError(f"x has K={x.shape[-1]}, weight has K={w.k}")
    use_gemm = x.shape[0] >= gemm_from
    a = act_quant(x, write_q=use_gemm)
    return ternary_gemm(a, w) if use_gemm else ternary_gemv(a, w)
