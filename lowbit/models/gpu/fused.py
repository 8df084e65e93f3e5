"""Fused decode-step kernels around the ternary GEMV (one launch each, one program per token):

* :func:`rmsnorm_quant`: RMSNorm (or SubLN, the same op on a sub-layer output) + per-token INT8 quantizer;
* :func:`gate_quant`: GLU gating (SiLU or ReLU², docs/reference/numerics.md §1.4) [+ SubLN] + quantizer;
* :func:`rope_append`: RoPE on q and k + KV-cache append (bf16 K/V rows) + the INT8 key and its packed
  4-bit LO codes for LOP attention (``lop_attn`` layout).

Each computes what the unfused torch sequence computes, rounding to bf16 where that sequence stores a bf16
tensor: ``rms_norm`` = ``bf16(x · rsqrt(mean(x²) + eps) · g)`` in float32 (BitNet b1.58 ``RMSNorm``,
docs/reference/numerics.md §1.4); gating ``bf16(bf16(act(gate)) · up)``; RoPE on interleaved pairs
``(x0 c - x1 s, x0 s + x1 c)`` in float32. The INT8 quantizer is the one of ``ternary`` (float64, bit-exact
with ``sim.numerics.int8``). ``write_x`` also stores the bf16 intermediate, so tests check the integer codes
exactly against the unfused quantizer applied to it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .lop_attn import lo_words
from .ternary import (
    INTERPRET,
    K_ALIGN,
    QuantAct,
    absmax_scale,
    autotune,
    pdl_kw,
    pdl_launch,
    pdl_wait,
    quant_i8,
)

__all__ = ["rmsnorm_quant", "gate_quant", "rope_append"]


@triton.jit
def _rms_bf16(v, g_ptr, rk, k_ok, K, eps):
    # bf16(v * rsqrt(mean(v^2) + eps) * g), v float32 [BLOCK] with zeros past K
    ms = tl.sum(v * v, axis=0) / K
    g = tl.load(g_ptr + rk, mask=k_ok, other=0.0).to(tl.float32)
    return (v * (1.0 / tl.sqrt(ms + eps)) * g).to(tl.bfloat16)


@triton.jit
def _quant_store(n, rk, k_ok, m, q_ptr, qsum_ptr, s_ptr, stride_qm, KP, eps_q):
    # per-token INT8 quantizer on a bf16 row held whole in registers
    nf = n.to(tl.float32)
    s = absmax_scale(tl.max(tl.where(k_ok, tl.abs(nf), 0.0), axis=0), eps_q)
    q = tl.where(k_ok, quant_i8(nf.to(tl.float64), s), 0)
    tl.store(q_ptr + m * stride_qm + rk, q.to(tl.int8), mask=rk < KP)
    tl.store(qsum_ptr + m, tl.sum(q, axis=0))
    tl.store(s_ptr + m, s.to(tl.float32))


@triton.jit
def _rmsnorm_quant_kernel(x_ptr, g_ptr, xo_ptr, q_ptr, qsum_ptr, s_ptr, K, KP, stride_xm, stride_qm, eps, eps_q,
                          BLOCK: tl.constexpr, NORM: tl.constexpr, WRITE_X: tl.constexpr, PDL: tl.constexpr = False):
    pdl_launch(PDL)
    pdl_wait(PDL)
    m = tl.program_id(0)
    rk = tl.arange(0, BLOCK)
    k_ok = rk < K
    v = tl.load(x_ptr + m * stride_xm + rk, mask=k_ok, other=0.0).to(tl.float32)
    if NORM:
        n = _rms_bf16(v, g_ptr, rk, k_ok, K, eps)
    else:
        n = v.to(tl.bfloat16)
    if WRITE_X:
        tl.store(xo_ptr + m * K + rk, n, mask=k_ok)
    _quant_store(n, rk, k_ok, m, q_ptr, qsum_ptr, s_ptr, stride_qm, KP, eps_q)


@triton.jit
def _gate_quant_kernel(h_ptr, g_ptr, xo_ptr, q_ptr, qsum_ptr, s_ptr, F, KP, stride_hm, stride_qm, eps, eps_q,
                       BLOCK: tl.constexpr, ACT: tl.constexpr, NORM: tl.constexpr, WRITE_X: tl.constexpr,
                       PDL: tl.constexpr = False):
    pdl_launch(PDL)
    pdl_wait(PDL)
    m = tl.program_id(0)
    rk = tl.arange(0, BLOCK)
    k_ok = rk < F
    gate = tl.load(h_ptr + m * stride_hm + rk, mask=k_ok, other=0.0).to(tl.float32)
    up = tl.load(h_ptr + m * stride_hm + F + rk, mask=k_ok, other=0.0).to(tl.float32)
    if ACT == 0:  # SiLU
        a = (gate / (1.0 + tl.exp(-gate))).to(tl.bfloat16)
    else:  # ReLU²
        r = tl.maximum(gate, 0.0)
        a = (r * r).to(tl.bfloat16)
    hv = (a.to(tl.float32) * up).to(tl.bfloat16)
    if NORM:
        n = _rms_bf16(hv.to(tl.float32), g_ptr, rk, k_ok, F, eps)
    else:
        n = hv
    if WRITE_X:
        tl.store(xo_ptr + m * F + rk, n, mask=k_ok)
    _quant_store(n, rk, k_ok, m, q_ptr, qsum_ptr, s_ptr, stride_qm, KP, eps_q)


# one program per token: the warp count sets how many lanes share the row (the latency of the launch);
# chosen per row length by timing on the device
_ROW_WARPS = [triton.Config({}, num_warps=w) for w in (4, 8, 16)]
_rmsnorm_quant_tuned = autotune(_ROW_WARPS, key=["K", "BLOCK", "NORM"])(_rmsnorm_quant_kernel)
_gate_quant_tuned = autotune(_ROW_WARPS, key=["F", "BLOCK", "ACT", "NORM"])(_gate_quant_kernel)


def _launch(kernel, tuned, m, args, flags, block):
    if args[0].is_cuda and not INTERPRET:
        tuned[(m,)](*args, **flags, **pdl_kw(args[0].device))
    else:
        kernel[(m,)](*args, **flags, num_warps=4 if block <= 2048 else 8)


def _new_act(m: int, k: int, dev) -> QuantAct:
    kp = triton.cdiv(k, K_ALIGN) * K_ALIGN
    return QuantAct(torch.empty(m, kp, dtype=torch.int8, device=dev), torch.empty(m, dtype=torch.int32, device=dev),
                    torch.empty(m, dtype=torch.float32, device=dev), k)


def rmsnorm_quant(x: torch.Tensor, g: torch.Tensor | None, eps: float = 1e-6, write_x: bool = False,
                  eps_q: float = 1e-5):
    """``act_quant(rms_norm(x, g, eps))`` in one launch (``g`` None: quantizer only). x bf16 [M, K].
    Returns the :class:`QuantAct` (and the bf16 normalized rows with ``write_x``)."""
    if x.dim() != 2 or x.stride(1) != 1:
        raise ValueError(f"x must be a row-major [M, K] tensor, got {tuple(x.shape)}")
    m, k = x.shape
    a = _new_act(m, k, x.device)
    xo = torch.empty(m, k, dtype=torch.bfloat16, device=x.device) if write_x else a.q
    block = triton.next_power_of_2(a.q.shape[1])
    _launch(_rmsnorm_quant_kernel, _rmsnorm_quant_tuned, m,
            (x, g if g is not None else x, xo, a.q, a.qsum, a.s, k, a.q.shape[1], x.stride(0), a.q.stride(0), eps, eps_q),
            dict(BLOCK=block, NORM=g is not None, WRITE_X=write_x), block)
    return (a, xo) if write_x else a


def gate_quant(h: torch.Tensor, act: str, g: torch.Tensor | None = None, eps: float = 1e-6, write_x: bool = False,
               eps_q: float = 1e-5):
    """``act_quant([rms_norm](act(gate) * up))`` for ``h`` = [gate | up] bf16 [M, 2F] in one launch;
    ``act`` 'swiglu' (SiLU) or 'relu2'; ``g`` the SubLN weight or None."""
    if act not in ("swiglu", "relu2"):
        raise ValueError(f"act must be 'swiglu' or 'relu2', got {act!r}")
    if h.dim() != 2 or h.shape[1] % 2 or h.stride(1) != 1:
        raise ValueError(f"h must be a row-major [M, 2F] tensor, got {tuple(h.shape)}")
    m, f = h.shape[0], h.shape[1] // 2
    a = _new_act(m, f, h.device)
    xo = torch.empty(m, f, dtype=torch.bfloat16, device=h.device) if write_x else a.q
    block = triton.next_power_of_2(a.q.shape[1])
    _launch(_gate_quant_kernel, _gate_quant_tuned, m,
            (h, g if g is not None else h, xo, a.q, a.qsum, a.s, f, a.q.shape[1], h.stride(0), a.q.stride(0), eps, eps_q),
            dict(BLOCK=block, ACT=0 if act == "swiglu" else 1, NORM=g is not None, WRITE_X=write_x), block)
    return (a, xo) if write_x else a


@triton.jit
def _rope_append_kernel(qkv_ptr, cos_ptr, sin_ptr, qo_ptr, k_ptr, v_ptr, lo_ptr, H, KVH, D, DC, MMAX, POS, DW,
                        stride_qkv, eps_q, HALF: tl.constexpr, DWP: tl.constexpr, LOP: tl.constexpr,
                        PDL: tl.constexpr = False):
    # DC >= D: row length of the caches and of the returned queries (zero padding past D)
    # program (token b, slot): slots 0..H-1 are query heads, H..H+KVH-1 key heads (+ the value row)
    pdl_launch(PDL)
    pdl_wait(PDL)
    b = tl.program_id(0)
    hs = tl.program_id(1)
    ri = tl.arange(0, HALF)
    i_ok = ri < D // 2
    base = qkv_ptr + b * stride_qkv + hs * D
    x0 = tl.load(base + 2 * ri, mask=i_ok, other=0.0).to(tl.float32)
    x1 = tl.load(base + 2 * ri + 1, mask=i_ok, other=0.0).to(tl.float32)
    c = tl.load(cos_ptr + ri, mask=i_ok, other=1.0)
    s = tl.load(sin_ptr + ri, mask=i_ok, other=0.0)
    y0 = (x0 * c - x1 * s).to(tl.bfloat16)
    y1 = (x0 * s + x1 * c).to(tl.bfloat16)
    if hs < H:
        qo = qo_ptr + (b * H + hs) * DC
        tl.store(qo + 2 * ri, y0, mask=i_ok)
        tl.store(qo + 2 * ri + 1, y1, mask=i_ok)
        rz = tl.arange(0, 8)
        tl.store(qo + D + rz, tl.zeros([8], tl.bfloat16), mask=rz < DC - D)
    else:
        kvh = hs - H
        row = (b * KVH + kvh) * MMAX + POS
        tl.store(k_ptr + row * DC + 2 * ri, y0, mask=i_ok)
        tl.store(k_ptr + row * DC + 2 * ri + 1, y1, mask=i_ok)
        vb = qkv_ptr + b * stride_qkv + (H + KVH + kvh) * D
        tl.store(v_ptr + row * DC + 2 * ri, tl.load(vb + 2 * ri, mask=i_ok), mask=i_ok)
        tl.store(v_ptr + row * DC + 2 * ri + 1, tl.load(vb + 2 * ri + 1, mask=i_ok), mask=i_ok)
        if LOP:  # INT8 key (per-head absmax) -> packed 4-bit LO codes (sim.numerics.lop.lo_code4)
            f0 = y0.to(tl.float32)
            f1 = y1.to(tl.float32)
            sc = absmax_scale(tl.max(tl.maximum(tl.abs(f0), tl.abs(f1)), axis=0), eps_q)
            rj = tl.arange(0, DWP)
            rs = tl.arange(0, 4)
            # element 8j + 2p + e: e = 0 from y0, e = 1 from y1, pair index 4j + p
            pi = rj[:, None] * 4 + rs[None, :]
            p_ok = pi < D // 2
            # the rotated key again in this [DWP, 4] arrangement (recomputed: no shared-memory round trip)
            a0 = tl.load(base + 2 * pi, mask=p_ok, other=0.0).to(tl.float32)
            a1 = tl.load(base + 2 * pi + 1, mask=p_ok, other=0.0).to(tl.float32)
            cc = tl.load(cos_ptr + pi, mask=p_ok, other=1.0)
            ss = tl.load(sin_ptr + pi, mask=p_ok, other=0.0)
            z0 = (a0 * cc - a1 * ss).to(tl.bfloat16).to(tl.float64)
            z1 = (a0 * ss + a1 * cc).to(tl.bfloat16).to(tl.float64)
            words = tl.zeros([DWP], tl.int32)
            for e in tl.static_range(2):
                if e == 0:
                    qv = quant_i8(z0, sc)
                else:
                    qv = quant_i8(z1, sc)
                av = tl.abs(qv)
                ex = ((av.to(tl.float32).to(tl.int32, bitcast=True) >> 23) & 255) - 127
                code = tl.where(av == 0, 0, (tl.where(qv < 0, 8, 0)) | (tl.minimum(ex, 6) + 1))
                words += tl.sum(code << (4 * (2 * rs + e))[None, :], axis=1)
            tl.store(lo_ptr + ((b * KVH + kvh) * DW + rj) * MMAX + POS, words, mask=rj < DW)  # word-major


def rope_append(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_heads: int, n_kv: int,
                k_cache: torch.Tensor, v_cache: torch.Tensor, pos: int, lo_cache: torch.Tensor | None = None,
                eps_q: float = 1e-5, head_dim: int | None = None) -> torch.Tensor:
    """RoPE + KV append for one decode step. ``qkv`` bf16 [B, (H + 2 KVH) d] (q | k | v); ``cos``/``sin``
    float32 [d/2] for this position; caches bf16 [B, KVH, Mmax, d] (written at ``pos``) and, for LOP,
    ``lo_cache`` int32 [B, KVH, ceil(d/8), Mmax] (word-major, ``lop_attn``). Returns the rotated queries bf16 [B, H, d].
    ``head_dim`` < the caches' last dim ``dc`` (<= d + 8, no LOP): rows padded with zeros to ``dc`` (flash
    attention kernels take head dims in multiples of 8, and copy the whole cache otherwise); the returned
    queries are then [B, H, dc] with zeros past ``head_dim``."""
    bsz = qkv.shape[0]
    dc = k_cache.shape[-1]
    d = head_dim or dc
    if qkv.shape[1] != (n_heads + 2 * n_kv) * d or d % 2:
        raise ValueError(f"qkv must be [B, {(n_heads + 2 * n_kv) * d}] with an even head_dim, got {tuple(qkv.shape)}")
    if not d <= dc <= d + 8 or (dc != d and lo_cache is not None):
        raise ValueError(f"cache rows of {dc} for head_dim {d}: padding must be < 8 elements and without LOP")
    mmax = k_cache.shape[2]
    qo = torch.empty(bsz, n_heads, dc, dtype=torch.bfloat16, device=qkv.device)
    lo = lo_cache if lo_cache is not None else k_cache
    dw = lo_words(d) if lo_cache is not None else 1
    if lo_cache is not None and (lo_cache.shape[2:] != (dw, mmax) or not lo_cache.is_contiguous()):
        raise ValueError(f"lo_cache must be a contiguous [B, KVH, {dw}, {mmax}] (word-major), got {tuple(lo_cache.shape)}")
    _rope_append_kernel[(bsz, n_heads + n_kv)](qkv, cos, sin, qo, k_cache, v_cache, lo, n_heads, n_kv, d, dc, mmax, pos,
                                               dw, qkv.stride(0), eps_q, HALF=triton.next_power_of_2(d // 2),
                                               DWP=triton.next_power_of_2(dw), LOP=lo_cache is not None, num_warps=1,
                                               **pdl_kw(qkv.device))
    return qo
