"""LOP decode attention in Triton: leading-one surrogate scores, comparison-free top-K, exact attention
over the K selected keys/values.

Semantics = ``sim.numerics.lop`` (docs/reference/vitallm.md §5.4, docs/reference/numerics.md §8.2):

1. ``s_hat[m] = sum_i sign(q_i) sign(k_i) 2^(e(q_i) + e(k_i))`` over INT8 query/key (exact int32 here);
2. ``lop_topk``: monotone bucket of each score (``lop_bucket``, ``n_buckets`` odd, ``mant_bits``), histogram,
   threshold bucket ``t`` = highest with ``count(bucket >= t) >= min(K, M)``; every token above ``t`` plus
   the lowest-index tokens of bucket ``t`` until exactly ``min(K, M)`` are chosen;
3. softmax(q·k/sqrt(d)) v over the chosen tokens only (float32, bf16 K/V cache, bf16 output).

Key storage (what the simulator charges, ``surrogate_storage = "dram"``): the 4-bit LO code of every
cached key element (``sim.numerics.lop.lo_code4``: 0 = zero, else ``sign << 3 | (e+1)``), nibble-packed
like ``sim.numerics.fp.pack_fp4`` (even element low nibble), head_dim zero-padded to a multiple of 8,
viewed as int32 words: cache ``lo`` int32 [B, KVH, Mmax, ceil(d/8)]. The bf16 K/V cache stays as for
dense attention; only the K selected rows of it are read.

Exact float decode (design of this module): LO code -> fp16 bits ``(code & 7) << 10 | (code & 8) << 12``
= ``±2^(e-14)`` (code 0 -> +0); the query's ``sign·2^e(q)`` is its float32 with the mantissa masked off.
Each product is a power of two and |sum| < 2^7 with resolution 2^-14, so the float32 sum is exact
(< 2^24 units) and ``round(sum · 2^14)`` is the integer surrogate score.

Four launches (plus the query quantizer): (1) score + bucket + per-chunk histogram, grid (B·H, chunks);
(2) threshold + selection, writing the K indices compacted in ascending order, grid (B·H, chunks);
(3) exact attention over 64 selected rows per program (gathered K/V reads only), grid (B·H, ceil(K/64));
(4) combine the partial softmaxes, grid (B·H).
GQA: query head h reads KV head ``h // (H / KVH)``.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .ternary import act_quant

__all__ = ["lo_pack_keys_torch", "lop_attention", "LOP_CHUNK"]

LOP_CHUNK = 256


def lo_pack_keys_torch(k_i8: torch.Tensor) -> torch.Tensor:
    """INT8 keys [..., d] -> packed 4-bit LO codes int32 [..., ceil(d/8)] (layout: module docstring)."""
    d = k_i8.shape[-1]
    dw = -(-d // 8)
    k = k_i8.to(torch.int64)
    a = k.abs()
    _, ex = torch.frexp(a.to(torch.float64))
    e = torch.clamp(ex.to(torch.int64) - 1, max=6)  # -128 saturates to e = 6 (lo_code4)
    code = torch.where(a == 0, torch.zeros_like(k), ((k < 0).to(torch.int64) << 3) | (e + 1))
    pad = dw * 8 - d
    if pad:
        code = torch.cat([code, torch.zeros(*code.shape[:-1], pad, dtype=torch.int64, device=code.device)], dim=-1)
    g = code.view(*code.shape[:-1], dw, 8)
    words = (g << (4 * torch.arange(8, device=code.device, dtype=torch.int64))).sum(-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


@triton.jit
def _lop_score_kernel(qi_ptr, lo_ptr, bucket_ptr, hist_ptr, score_ptr, M, D, H, KVH, MMAX, DW, NC,
                      stride_qi, NB: tl.constexpr, MANT: tl.constexpr, CH: tl.constexpr, DWP: tl.constexpr,
                      NBP: tl.constexpr, WRITE_SCORES: tl.constexpr):
    bh = tl.program_id(0)
    c = tl.program_id(1)
    b = bh // H
    kvh = (bh % H) // (H // KVH)
    rm = c * CH + tl.arange(0, CH)
    rj = tl.arange(0, DWP)
    m_ok = rm < M
    j_ok = rj < DW
    rows = (b * KVH + kvh) * MMAX + rm
    w = tl.load(lo_ptr + rows[:, None] * DW + rj[None, :], mask=m_ok[:, None] & j_ok[None, :], other=0)
    acc = tl.zeros([CH, DWP], tl.float32)
    for s in tl.static_range(8):
        dd = rj * 8 + s
        qv = tl.load(qi_ptr + bh * stride_qi + dd, mask=dd < D, other=0).to(tl.float32)
        qp = (qv.to(tl.int32, bitcast=True) & -8388608).to(tl.float32, bitcast=True)  # sign * 2^e(q)
        if 10 - 4 * s >= 0:
            mpart = (w << (10 - 4 * s)) & 0x1C00
        else:
            mpart = (w >> (4 * s - 10)) & 0x1C00
        if 12 - 4 * s >= 0:
            spart = (w << (12 - 4 * s)) & 0x8000
        else:
            spart = (w >> (4 * s - 12)) & 0x8000
        kv = (mpart | spart).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
        acc += kv * qp[None, :]
    score = (tl.sum(acc, axis=1) * 16384.0).to(tl.int32)
    if WRITE_SCORES:
        tl.store(score_ptr + bh * MMAX + rm, score, mask=m_ok)
    # monotone bucket (sim.numerics.lop.lop_bucket)
    a = tl.abs(score)
    e = ((a.to(tl.float32).to(tl.int32, bitcast=True) >> 23) & 255) - 127
    ep = tl.maximum(e, 0)
    below = a - tl.where(a == 0, 0, 1 << ep)
    f = tl.where(ep >= MANT, below >> tl.maximum(ep - MANT, 0), below << tl.maximum(MANT - ep, 0))
    mag = tl.where(a == 0, 0, ((ep + 1) << MANT) | f)
    HALF: tl.constexpr = (NB - 1) // 2
    sgn = tl.where(score > 0, 1, tl.where(score < 0, -1, 0))
    bucket = HALF + sgn * tl.minimum(mag, HALF)
    tl.store(bucket_ptr + bh * MMAX + rm, bucket.to(tl.int8), mask=m_ok)
    rb = tl.arange(0, NBP)
    hit = (bucket[None, :] == rb[:, None]) & m_ok[None, :]
    tl.store(hist_ptr + (bh * NC + c) * NBP + rb, tl.sum(hit.to(tl.int32), axis=1))


@triton.jit
def _lop_select_kernel(bucket_ptr, hist_ptr, idx_ptr, M, MMAX, NC, KSEL,
                       NB: tl.constexpr, CH: tl.constexpr, NBP: tl.constexpr, NCP: tl.constexpr):
    # threshold bucket from the summed chunk histograms, then this chunk's chosen tokens, written compacted
    # (ascending) at their global rank: prefix counts of earlier chunks come from their histograms
    bh = tl.program_id(0)
    c = tl.program_id(1)
    rc = tl.arange(0, NCP)
    rb = tl.arange(0, NBP)
    hist = tl.load(hist_ptr + (bh * NC + rc[:, None]) * NBP + rb[None, :], mask=(rc < NC)[:, None], other=0)
    tot = tl.sum(hist, axis=0)  # [NBP]
    need = tl.minimum(KSEL, M)
    cum_desc = tl.sum(tl.where(rb[None, :] >= rb[:, None], tot[None, :], 0), axis=1)  # count(bucket >= t)
    t = tl.sum(((cum_desc >= need) & (rb < NB)).to(tl.int32), axis=0) - 1
    above = tl.sum(tl.where(rb > t, tot, 0), axis=0)
    n_fill = need - above
    ht = tl.sum(tl.where(rb[None, :] == t, hist, 0), axis=1)  # [NCP] count of bucket t per chunk
    prior_vec = tl.cumsum(ht, axis=0) - ht
    prior_t = tl.sum(tl.where(rc == c, prior_vec, 0), axis=0)
    rm = c * CH + tl.arange(0, CH)
    m_ok = rm < M
    bk = tl.load(bucket_ptr + bh * MMAX + rm, mask=m_ok, other=-1).to(tl.int32)
    at = (bk == t).to(tl.int32)
    rank = prior_t + tl.cumsum(at, axis=0) - at
    chosen = (bk > t) | ((at == 1) & (rank < n_fill))
    above_c = tl.sum(tl.where(rb[None, :] > t, hist, 0), axis=1)
    cnt = above_c + tl.minimum(tl.maximum(n_fill - prior_vec, 0), ht)
    base = tl.sum(tl.where(rc < c, cnt, 0), axis=0)
    ch_i = chosen.to(tl.int32)
    pos = base + tl.cumsum(ch_i, axis=0) - ch_i
    tl.store(idx_ptr + bh * KSEL + pos, rm, mask=chosen)


@triton.jit
def _lop_partial_kernel(q_ptr, k_ptr, v_ptr, idx_ptr, pm_ptr, pl_ptr, po_ptr, D, H, KVH, MMAX, KK, KSEL, NS,
                        sm_scale, stride_q, KS: tl.constexpr, DP: tl.constexpr):
    # exact attention over KS of the selected tokens (flash-decoding split over the K list)
    bh = tl.program_id(0)
    sp = tl.program_id(1)
    b = bh // H
    kvh = (bh % H) // (H // KVH)
    ri = sp * KS + tl.arange(0, KS)
    i_ok = ri < KK
    tok = tl.load(idx_ptr + bh * KSEL + ri, mask=i_ok, other=0)
    rd = tl.arange(0, DP)
    d_ok = rd < D
    q = tl.load(q_ptr + bh * stride_q + rd, mask=d_ok, other=0.0).to(tl.float32)
    rows = (b * KVH + kvh) * MMAX + tok
    lm = i_ok[:, None] & d_ok[None, :]
    k = tl.load(k_ptr + rows[:, None] * D + rd[None, :], mask=lm, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + rows[:, None] * D + rd[None, :], mask=lm, other=0.0).to(tl.float32)
    sc = tl.where(i_ok, tl.sum(k * q[None, :], axis=1) * sm_scale, float("-inf"))
    mx = tl.max(sc, axis=0)
    p = tl.where(i_ok, tl.exp(sc - mx), 0.0)
    tl.store(pm_ptr + bh * NS + sp, mx)
    tl.store(pl_ptr + bh * NS + sp, tl.sum(p, axis=0))
    tl.store(po_ptr + (bh * NS + sp) * DP + rd, tl.sum(p[:, None] * v, axis=0))


@triton.jit
def _lop_combine_kernel(pm_ptr, pl_ptr, po_ptr, out_ptr, D, NC, NCP: tl.constexpr, DP: tl.constexpr):
    bh = tl.program_id(0)
    rc = tl.arange(0, NCP)
    rd = tl.arange(0, DP)
    c_ok = rc < NC
    m = tl.load(pm_ptr + bh * NC + rc, mask=c_ok, other=0.0)
    l = tl.load(pl_ptr + bh * NC + rc, mask=c_ok, other=0.0)
    live = l > 0
    mmax = tl.max(tl.where(live, m, float("-inf")), axis=0)
    wgt = tl.where(live, tl.exp(m - mmax), 0.0)
    L = tl.sum(wgt * l, axis=0)
    o = tl.load(po_ptr + (bh * NC + rc[:, None]) * DP + rd[None, :], mask=c_ok[:, None], other=0.0)
    out = tl.sum(wgt[:, None] * o, axis=0) / L
    tl.store(out_ptr + bh * D + rd, out.to(tl.bfloat16), mask=rd < D)


def lop_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, lo_cache: torch.Tensor, m: int,
                  k_sel: int, n_buckets: int = 63, mant_bits: int = 0, chunk: int = LOP_CHUNK,
                  return_debug: bool = False, q_i8: torch.Tensor | None = None, stages: int = 3):
    """LOP decode attention for one new token per sequence.

    q: bf16 [B, H, d]; k_cache/v_cache: bf16 [B, KVH, Mmax, d]; lo_cache: int32 [B, KVH, Mmax, ceil(d/8)];
    m: context length (<= Mmax); k_sel: K. Returns bf16 [B, H, d] (and a dict with ``scores`` int32
    [B·H, Mmax], ``idx`` int64 [B·H, min(K, m)], ``q_i8`` when ``return_debug``). ``q_i8`` overrides the
    query's INT8 quantisation (default: per head absmax, ``act_quant``). ``stages`` < 3 stops after launch 1
    or 2 (profiling only: the output is then not written).
    """
    if n_buckets < 3 or n_buckets % 2 == 0 or n_buckets > 127:
        raise ValueError(f"n_buckets must be odd in [3, 127], got {n_buckets}")
    if k_sel < 1:
        raise ValueError("k_sel must be >= 1")
    bsz, h, d = q.shape
    kvh, mmax = k_cache.shape[1], k_cache.shape[2]
    if h % kvh or not 1 <= m <= mmax:
        raise ValueError(f"bad shapes: H={h}, KVH={kvh}, m={m}, Mmax={mmax}")
    dw = lo_cache.shape[-1]
    dev = q.device
    bhn = bsz * h
    q2 = q.reshape(bhn, d).contiguous()
    if q_i8 is None:
        q_i8 = act_quant(q2, write_q=True).q  # [BH, ceil16(d)] int8
    nc = triton.cdiv(m, chunk)
    nbp = triton.next_power_of_2(n_buckets)
    ncp = max(triton.next_power_of_2(nc), 2)
    dp = triton.next_power_of_2(d)
    buckets = torch.empty(bhn, mmax, dtype=torch.int8, device=dev)
    hist = torch.empty(bhn, nc, nbp, dtype=torch.int32, device=dev)
    scores = torch.empty(bhn, mmax, dtype=torch.int32, device=dev) if return_debug else buckets
    kk = min(k_sel, m)
    ks = 64
    ns = triton.cdiv(kk, ks)
    nsp = max(triton.next_power_of_2(ns), 2)
    idx = torch.empty(bhn, kk, dtype=torch.int32, device=dev)
    pm = torch.empty(bhn, ns, dtype=torch.float32, device=dev)
    pl = torch.empty(bhn, ns, dtype=torch.float32, device=dev)
    po = torch.empty(bhn, ns, dp, dtype=torch.float32, device=dev)
    out = torch.empty(bsz, h, d, dtype=torch.bfloat16, device=dev)
    _lop_score_kernel[(bhn, nc)](q_i8, lo_cache, buckets, hist, scores, m, d, h, kvh, mmax, dw, nc, q_i8.stride(0),
                                 NB=n_buckets, MANT=mant_bits, CH=chunk, DWP=triton.next_power_of_2(dw), NBP=nbp,
                                 WRITE_SCORES=return_debug, num_warps=4)
    if stages < 2:
        return out
    _lop_select_kernel[(bhn, nc)](buckets, hist, idx, m, mmax, nc, kk, NB=n_buckets, CH=chunk, NBP=nbp, NCP=ncp,
                                  num_warps=4)
    if stages < 3:
        return out
    _lop_partial_kernel[(bhn, ns)](q2, k_cache, v_cache, idx, pm, pl, po, d, h, kvh, mmax, kk, kk, ns,
                                   1.0 / math.sqrt(d), q2.stride(0), KS=ks, DP=dp, num_warps=4)
    _lop_combine_kernel[(bhn,)](pm, pl, po, out, d, ns, NCP=nsp, DP=dp, num_warps=4)
    if return_debug:
        return out, {"scores": scores[:, :m], "idx": idx.to(torch.int64), "q_i8": q_i8[:, :d]}
    return out
