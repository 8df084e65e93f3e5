"""Dense decode attention in Triton for short contexts: one new token per sequence, one program per KV
group reading each cached K/V row once for the group's ``G = H / KVH`` query heads (GQA; MHA is G = 1).

``out[h] = softmax(q_h · K^T / sqrt(d)) V`` over the first ``m`` cached tokens (the flash-attention
recurrence of Dao et al., "FlashAttention", NeurIPS 2022: running max ``m_i``, running sum ``l_i``, float32
accumulation, bf16 K/V cache and output), what ``F.scaled_dot_product_attention`` computes for one query.

Why a kernel of its own: at decode contexts of a few hundred tokens the step is latency-bound; one
program per KV group issues its K/V loads at once and ends without a second pass, where cuDNN's flash
kernel (torch SDPA) took 8.7 µs per bitnet-2B4T layer at 193 tokens on an H200, this kernel 6.2 µs.
The grid has only B·KVH programs, so long contexts and MHA go to SDPA (:func:`dense_attention_fits`).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .ternary import INTERPRET

__all__ = ["attend_block", "attend_rows", "group_query", "dense_attention_fits", "dense_decode_attention", "DENSE_MAX_CTX"]

# Where the kernel is used instead of SDPA, from measurements on an H200 (flash SDPA vs this kernel, µs,
# reports/gpu-baseline.md): bitnet-2B4T (GQA 20/5, d 128) 193 tokens 8.7 vs 6.2, 384: 9.2 vs 8.4, 512: 9.3
# vs 10.5; bitnet-3B (MHA, d 100 in rows of 104) 193 tokens 10.1 vs 13.6 (32 programs, 15 of 16 MMA rows
# idle). So: query heads sharing a KV head (G >= 2) and contexts up to DENSE_MAX_CTX tokens.
DENSE_MAX_CTX = 384


@triton.jit
def attend_block(q, k, v, ok, m_i, l_i, o, sm_scale, DOT_F32: tl.constexpr):
    """One block of the online softmax: q [GQ, DP] bf16, k/v [KS, DP] bf16, ok [KS] (valid keys, at least
    one); returns the updated (m_i [GQ], l_i [GQ], o [GQ, DP] float32)."""
    if DOT_F32:  # Triton interpreter: its bf16 tl.dot is unreliable; bf16 -> fp32 is exact
        sc = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)))
    else:
        sc = tl.dot(q, tl.trans(k))
    sc = tl.where(ok[None, :], sc * sm_scale, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(sc, axis=1))
    alpha = tl.exp(m_i - m_new)
    p = tl.exp(sc - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    if DOT_F32:
        o = o * alpha[:, None] + tl.dot(p, v.to(tl.float32))
    else:
        o = o * alpha[:, None] + tl.dot(p.to(tl.bfloat16), v)
    return m_new, l_i, o


@triton.jit
def group_query(q_ptr, h0, D, G: tl.constexpr, GQ: tl.constexpr, DP: tl.constexpr):
    """The G query rows h0 .. h0 + G - 1 as a [GQ, DP] bf16 tile (zero past G and D) and the empty online
    softmax state (m_i, l_i, o)."""
    rg = tl.arange(0, GQ)
    rd = tl.arange(0, DP)
    q = tl.load(q_ptr + (h0 + rg)[:, None] * D + rd[None, :], mask=(rg < G)[:, None] & (rd < D)[None, :], other=0.0)
    return q, tl.full([GQ], float("-inf"), tl.float32), tl.zeros([GQ], tl.float32), tl.zeros([GQ, DP], tl.float32)


@triton.jit
def attend_rows(q, k_ptr, v_ptr, rows, ok, m_i, l_i, o, D, sm_scale, DP: tl.constexpr, DOT_F32: tl.constexpr):
    """Load the K/V cache rows ``rows`` [KS] (where ``ok``) and run :func:`attend_block` on them."""
    rd = tl.arange(0, DP)
    lm = ok[:, None] & (rd < D)[None, :]
    k = tl.load(k_ptr + rows[:, None] * D + rd[None, :], mask=lm, other=0.0)
    v = tl.load(v_ptr + rows[:, None] * D + rd[None, :], mask=lm, other=0.0)
    return attend_block(q, k, v, ok, m_i, l_i, o, sm_scale, DOT_F32)


@triton.jit
def _dense_kernel(q_ptr, k_ptr, v_ptr, out_ptr, M, D, KVH, MMAX, sm_scale, G: tl.constexpr, GQ: tl.constexpr,
                  DP: tl.constexpr, KS: tl.constexpr, DOT_F32: tl.constexpr):
    g = tl.program_id(0)  # b * KVH + kv head; its query heads are h0 .. h0 + G - 1
    h0 = (g // KVH) * KVH * G + (g % KVH) * G
    q, m_i, l_i, o = group_query(q_ptr, h0, D, G, GQ, DP)
    for i0 in range(0, M, KS):
        rm = i0 + tl.arange(0, KS)
        m_i, l_i, o = attend_rows(q, k_ptr, v_ptr, g * MMAX + rm, rm < M, m_i, l_i, o, D, sm_scale, DP, DOT_F32)
    o = o / l_i[:, None]
    rg = tl.arange(0, GQ)
    rd = tl.arange(0, DP)
    tl.store(out_ptr + (h0 + rg)[:, None] * D + rd[None, :], o.to(tl.bfloat16), mask=(rg < G)[:, None] & (rd < D)[None, :])


def dense_attention_fits(m: int, group: int) -> bool:
    """Whether :func:`dense_decode_attention` serves a context of ``m`` tokens with ``group`` query heads per
    KV head (else SDPA is faster: the measurements above)."""
    return group >= 2 and m <= DENSE_MAX_CTX


def dense_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, m: int,
                           scale: float | None = None) -> torch.Tensor:
    """Attention of one query per sequence over the first ``m`` cached tokens.

    q: bf16 [B, H, d]; k_cache/v_cache: bf16 [B, KVH, Mmax, d] (contiguous); H a multiple of KVH; ``scale``
    defaults to 1/sqrt(d) (pass 1/sqrt(head_dim) when d carries zero padding). Returns bf16 [B, H, d]."""
    bsz, h, d = q.shape
    kvh, mmax = k_cache.shape[1], k_cache.shape[2]
    if h % kvh or not 1 <= m <= mmax or k_cache.shape[-1] != d or v_cache.shape != k_cache.shape:
        raise ValueError(f"bad shapes: q {tuple(q.shape)}, k_cache {tuple(k_cache.shape)}, "
                         f"v_cache {tuple(v_cache.shape)}, m={m}")
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("k_cache and v_cache must be contiguous")
    grp = h // kvh
    gpu = q.is_cuda and not INTERPRET
    out = torch.empty(bsz, h, d, dtype=torch.bfloat16, device=q.device)
    _dense_kernel[(bsz * kvh,)](q.contiguous(), k_cache, v_cache, out, m, d, kvh, mmax,
                                scale if scale is not None else 1.0 / math.sqrt(d), G=grp,
                                GQ=max(16, triton.next_power_of_2(grp)), DP=max(16, triton.next_power_of_2(d)),
                                KS=64, DOT_F32=not gpu, num_warps=4)
    return out
