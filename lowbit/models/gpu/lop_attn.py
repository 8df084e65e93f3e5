"""LOP decode attention in Triton: leading-one surrogate scores, comparison-free top-K shared by the query
heads of a KV group, exact attention over the K selected keys/values.

Semantics = ``sim.numerics.lop`` (docs/reference/vitallm.md §5.4, docs/reference/numerics.md §8.2):

1. each query head is quantized to INT8 (per-head absmax, ``sim.numerics.int8.int8_absmax_quantize``);
2. group score of key ``m`` for KV head ``g`` = the sum over the ``G = H / KVH`` query heads ``h`` of ``g``
   of ``lo_scores(q_h, k_m)`` = ``sum_h sum_i sign(q_hi) sign(k_mi) 2^(e(q_hi) + e(k_mi))``, exact int32.
   It factors as ``sum_i Q_g[i] · sign(k_mi) 2^e(k_mi)`` with ``Q_g[i] = sum_h sign(q_hi) 2^e(q_hi)``, so a
   group costs one pass over its keys' surrogates whatever G is (MHA: G = 1, the per-head score);
3. ``lop_topk`` of the group scores (monotone bucket ``lop_bucket``, ``n_buckets`` odd, ``mant_bits``,
   histogram, threshold bucket ``t`` = highest with ``count(bucket >= t) >= min(K, M)``; every token above
   ``t`` plus the lowest-index tokens of bucket ``t`` until exactly ``min(K, M)``): one index list per
   KV group, shared by its query heads (design of this module: the selection runs once per group);
4. softmax(q·k/sqrt(d)) v over the chosen tokens only, per query head (float32 accumulation, bf16 K/V
   cache, bf16 output).

Key storage (what the simulator charges, ``surrogate_storage = "dram"``): the 4-bit LO code of every
cached key element (``sim.numerics.lop.lo_code4``: 0 = zero, else ``sign << 3 | (e+1)``), nibble-packed
like ``sim.numerics.fp.pack_fp4`` (even element low nibble), head_dim zero-padded to a multiple of 8,
viewed as int32 words: cache ``lo`` int32 [B, KVH, Mmax, ceil(d/8)]. The bf16 K/V cache stays as for
dense attention; only the K selected rows of it are read.

Two launches, grid (B·KVH, chunks of ``chunk`` tokens) each:
(1) quantize the group's queries, score + bucket + per-chunk histogram; the last program of a group to
    finish (an atomic counter, reset by that program) reduces the histograms to the threshold and, per
    chunk, the count of bucket-``t`` tokens and of chosen tokens before it;
(2) each chunk writes its chosen indices compacted at their global rank and runs exact attention for the
    G heads over them (``tl.dot``: the K/V rows are read once per group); the last program of the group
    merges the per-chunk partial softmaxes.
The counters live in a per-device buffer created by the first call (make that call before capturing the
function in a CUDA graph).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .ternary import INTERPRET, absmax_scale, quant_i8

__all__ = ["lo_pack_keys_torch", "lop_attention", "LOP_CHUNK"]

LOP_CHUNK = 256
_COUNTERS: dict = {}


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
def _lop_score_kernel(q_ptr, qi_ptr, lo_ptr, bucket_ptr, hist_ptr, score_ptr, sel_ptr, cinfo_ptr, cnt_ptr,
                      M, D, H, KVH, MMAX, DW, NC, KSEL, eps,
                      G: tl.constexpr, GP: tl.constexpr, NB: tl.constexpr, MANT: tl.constexpr, CH: tl.constexpr,
                      DWP: tl.constexpr, NBP: tl.constexpr, NCP: tl.constexpr, WRITE_DBG: tl.constexpr):
    g = tl.program_id(0)  # b * KVH + kv head
    c = tl.program_id(1)
    b = g // KVH
    h0 = b * H + (g % KVH) * G
    rg = tl.arange(0, GP)
    rj = tl.arange(0, DWP)
    rs = tl.arange(0, 8)
    # the chunk's packed LO codes first: the longest load, independent of the query work below
    rm = c * CH + tl.arange(0, CH)
    m_ok = rm < M
    w = tl.load(lo_ptr + (g * MMAX + rm)[:, None] * DW + rj[None, :], mask=m_ok[:, None] & (rj < DW)[None, :], other=0)
    # (1) the group's INT8 queries and Q_g[i] = sum_h sign(q_hi) 2^e(q_hi), as [DWP, 8] (element 8j + s)
    dd = rj[:, None] * 8 + rs[None, :]
    qm = (rg < G)[:, None, None] & (dd < D)[None, :, :]
    qoff = (h0 + rg)[:, None, None] * D + dd[None, :, :]
    qf = tl.load(q_ptr + qoff, mask=qm, other=0.0).to(tl.float32)
    s = absmax_scale(tl.max(tl.max(tl.abs(qf), axis=2), axis=1), eps)  # [GP] float64
    qi = quant_i8(qf.to(tl.float64), s[:, None, None])
    if WRITE_DBG:
        if c == 0:
            tl.store(qi_ptr + qoff, qi.to(tl.int8), mask=qm)
    sp = (qi.to(tl.float32).to(tl.int32, bitcast=True) & -8388608).to(tl.float32, bitcast=True).to(tl.int32)
    qg = tl.sum(sp, axis=0)  # [DWP, 8]
    # (2) group scores of this chunk's keys from the packed LO codes (exact int32)
    acc = tl.zeros([CH, DWP], tl.int32)
    for si in tl.static_range(8):
        qcol = tl.sum(tl.where(rs[None, :] == si, qg, 0), axis=1)  # [DWP]
        code = (w >> (4 * si)) & 15
        mag = code & 7
        term = tl.where(mag == 0, 0, qcol[None, :] << tl.maximum(mag - 1, 0))
        acc += tl.where((code & 8) != 0, -term, term)
    score = tl.sum(acc, axis=1)
    if WRITE_DBG:
        tl.store(score_ptr + g * MMAX + rm, score, mask=m_ok)
    # (3) monotone bucket (sim.numerics.lop.lop_bucket) and this chunk's histogram
    a = tl.abs(score)
    e = ((a.to(tl.float32).to(tl.int32, bitcast=True) >> 23) & 255) - 127
    ep = tl.maximum(e, 0)
    below = a - tl.where(a == 0, 0, 1 << ep)
    f = tl.where(ep >= MANT, below >> tl.maximum(ep - MANT, 0), below << tl.maximum(MANT - ep, 0))
    mag = tl.where(a == 0, 0, ((ep + 1) << MANT) | f)
    HALF: tl.constexpr = (NB - 1) // 2
    sgn = tl.where(score > 0, 1, tl.where(score < 0, -1, 0))
    bucket = HALF + sgn * tl.minimum(mag, HALF)
    tl.store(bucket_ptr + g * MMAX + rm, bucket.to(tl.int8), mask=m_ok)
    rb = tl.arange(0, NBP)
    # tokens past M go to bin NBP-1, which no bucket uses (NB is odd, NBP = next_pow2(NB) > NB)
    hist = tl.histogram(tl.where(m_ok, bucket, NBP - 1), NBP)
    tl.store(hist_ptr + (g * NC + c) * NBP + rb, tl.where(rb < NB, hist, 0))
    # (4) the group's last program: threshold bucket, and per chunk the bucket-t and chosen counts before it
    done = tl.atomic_add(cnt_ptr + g, 1)
    if done == NC - 1:
        rc = tl.arange(0, NCP)
        hall = tl.load(hist_ptr + (g * NC + rc[:, None]) * NBP + rb[None, :], mask=(rc < NC)[:, None], other=0,
                       cache_modifier=".cg")
        tot = tl.sum(hall, axis=0)
        need = tl.minimum(KSEL, M)
        cum_desc = tl.sum(tl.where(rb[None, :] >= rb[:, None], tot[None, :], 0), axis=1)  # count(bucket >= t)
        t = tl.sum(((cum_desc >= need) & (rb < NB)).to(tl.int32), axis=0) - 1
        n_fill = need - tl.sum(tl.where(rb > t, tot, 0), axis=0)
        ht = tl.sum(tl.where(rb[None, :] == t, hall, 0), axis=1)  # [NCP] bucket-t tokens per chunk
        prior_t = tl.cumsum(ht, axis=0) - ht
        cnt = tl.sum(tl.where(rb[None, :] > t, hall, 0), axis=1) + tl.minimum(tl.maximum(n_fill - prior_t, 0), ht)
        base = tl.cumsum(cnt, axis=0) - cnt
        tl.store(sel_ptr + g * 2, t)
        tl.store(sel_ptr + g * 2 + 1, n_fill)
        tl.store(cinfo_ptr + (g * NC + rc) * 2, prior_t, mask=rc < NC)
        tl.store(cinfo_ptr + (g * NC + rc) * 2 + 1, base, mask=rc < NC)
        tl.store(cnt_ptr + g, 0)


@triton.jit
def _lop_attend_kernel(q_ptr, k_ptr, v_ptr, bucket_ptr, sel_ptr, cinfo_ptr, idx_ptr, pm_ptr, pl_ptr, po_ptr,
                       out_ptr, cnt_ptr, M, D, H, KVH, MMAX, NC, KSEL, sm_scale,
                       G: tl.constexpr, GP: tl.constexpr, GQ: tl.constexpr, CH: tl.constexpr, KS: tl.constexpr,
                       DP: tl.constexpr, NCP: tl.constexpr, DOT_F32: tl.constexpr):
    g = tl.program_id(0)
    c = tl.program_id(1)
    b = g // KVH
    h0 = b * H + (g % KVH) * G
    # chosen tokens of this chunk, written compacted at their global rank (ascending)
    t = tl.load(sel_ptr + g * 2)
    n_fill = tl.load(sel_ptr + g * 2 + 1)
    prior_t = tl.load(cinfo_ptr + (g * NC + c) * 2)
    base = tl.load(cinfo_ptr + (g * NC + c) * 2 + 1)
    rm = c * CH + tl.arange(0, CH)
    m_ok = rm < M
    bk = tl.load(bucket_ptr + g * MMAX + rm, mask=m_ok, other=-1).to(tl.int32)
    at = (bk == t).to(tl.int32)
    rank = prior_t + tl.cumsum(at, axis=0) - at
    chosen = ((bk > t) | ((at == 1) & (rank < n_fill))).to(tl.int32)
    tl.store(idx_ptr + g * KSEL + base + tl.cumsum(chosen, axis=0) - chosen, rm, mask=chosen == 1)
    nsel = tl.sum(chosen, axis=0)
    tl.debug_barrier()  # the compacted indices are read back below by other threads of this program
    # exact attention of the G heads over them (flash-decoding partial per chunk)
    rg = tl.arange(0, GQ)
    rd = tl.arange(0, DP)
    d_ok = rd < D
    g_ok = rg < G
    q = tl.load(q_ptr + (h0 + rg)[:, None] * D + rd[None, :], mask=g_ok[:, None] & d_ok[None, :], other=0.0)
    m_i = tl.full([GQ], float("-inf"), tl.float32)
    l_i = tl.zeros([GQ], tl.float32)
    o = tl.zeros([GQ, DP], tl.float32)
    for i0 in range(0, nsel, KS):
        ri = i0 + tl.arange(0, KS)
        ok = ri < nsel
        tok = tl.load(idx_ptr + g * KSEL + base + ri, mask=ok, other=0)
        rows = g * MMAX + tok
        lm = ok[:, None] & d_ok[None, :]
        k = tl.load(k_ptr + rows[:, None] * D + rd[None, :], mask=lm, other=0.0)
        v = tl.load(v_ptr + rows[:, None] * D + rd[None, :], mask=lm, other=0.0)
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
        m_i = m_new
    hrow = (h0 + rg) * NC + c
    tl.store(pm_ptr + hrow, m_i, mask=g_ok)
    tl.store(pl_ptr + hrow, l_i, mask=g_ok)
    tl.store(po_ptr + hrow[:, None] * DP + rd[None, :], o, mask=g_ok[:, None])
    # the group's last program merges the partial softmaxes of its G heads
    done = tl.atomic_add(cnt_ptr + g, 1)
    if done == NC - 1:
        rc = tl.arange(0, NCP)
        rgc = tl.arange(0, GP)  # the G heads (GQ above is padded for tl.dot)
        gc_ok = rgc < G
        c_ok = (rc < NC)[None, :] & gc_ok[:, None]
        prow = (h0 + rgc)[:, None] * NC + rc[None, :]  # [GP, NCP]
        pm = tl.load(pm_ptr + prow, mask=c_ok, other=0.0, cache_modifier=".cg")
        pl = tl.load(pl_ptr + prow, mask=c_ok, other=0.0, cache_modifier=".cg")
        live = pl > 0
        mmax = tl.max(tl.where(live, pm, float("-inf")), axis=1)
        wgt = tl.where(live, tl.exp(pm - mmax[:, None]), 0.0)
        po = tl.load(po_ptr + prow[:, :, None] * DP + rd[None, None, :], mask=c_ok[:, :, None], other=0.0,
                     cache_modifier=".cg")
        res = tl.sum(wgt[:, :, None] * po, axis=1) / tl.maximum(tl.sum(wgt * pl, axis=1), 1e-30)[:, None]
        tl.store(out_ptr + (h0 + rgc)[:, None] * D + rd[None, :], res.to(tl.bfloat16), mask=gc_ok[:, None] & d_ok[None, :])
        tl.store(cnt_ptr + g, 0)


def _counters(dev, n: int) -> torch.Tensor:
    key = (str(dev), n)
    if key not in _COUNTERS:
        _COUNTERS[key] = torch.zeros(2, n, dtype=torch.int32, device=dev)
    return _COUNTERS[key]


def lop_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, lo_cache: torch.Tensor, m: int,
                  k_sel: int, n_buckets: int = 63, mant_bits: int = 0, chunk: int = LOP_CHUNK,
                  return_debug: bool = False, stages: int = 2, eps: float = 1e-5):
    """LOP decode attention for one new token per sequence, one top-K per KV group.

    q: bf16 [B, H, d]; k_cache/v_cache: bf16 [B, KVH, Mmax, d]; lo_cache: int32 [B, KVH, Mmax, ceil(d/8)];
    m: context length (<= Mmax); k_sel: K. Returns bf16 [B, H, d] (and, with ``return_debug``, a dict with
    ``scores`` int32 [B·KVH, m] group scores, ``idx`` int64 [B·KVH, min(K, m)], ``q_i8`` int8 [B·H, d]).
    ``stages`` = 1 stops after the scoring launch (profiling only: the output is then not written).
    """
    if n_buckets < 3 or n_buckets % 2 == 0 or n_buckets > 127:
        raise ValueError(f"n_buckets must be odd in [3, 127], got {n_buckets}")
    if k_sel < 1:
        raise ValueError("k_sel must be >= 1")
    bsz, h, d = q.shape
    kvh, mmax = k_cache.shape[1], k_cache.shape[2]
    if h % kvh or not 1 <= m <= mmax:
        raise ValueError(f"bad shapes: H={h}, KVH={kvh}, m={m}, Mmax={mmax}")
    if k_cache.stride(-1) != 1 or k_cache.stride(2) != d or v_cache.stride(2) != d or lo_cache.stride(2) != lo_cache.shape[-1]:
        raise ValueError("k_cache, v_cache and lo_cache must be contiguous in their last two dimensions")
    grp = h // kvh
    dw = lo_cache.shape[-1]
    dev = q.device
    ng = bsz * kvh
    q2 = q.reshape(bsz * h, d).contiguous()
    nc = triton.cdiv(m, chunk)
    nbp = triton.next_power_of_2(n_buckets)
    ncp = max(triton.next_power_of_2(nc), 2)
    dp = max(triton.next_power_of_2(d), 16)
    kk = min(k_sel, m)
    cnt = _counters(dev, ng)
    buckets = torch.empty(ng, mmax, dtype=torch.int8, device=dev)
    hist = torch.empty(ng, nc, nbp, dtype=torch.int32, device=dev)
    sel = torch.empty(ng, 2, dtype=torch.int32, device=dev)
    cinfo = torch.empty(ng, nc, 2, dtype=torch.int32, device=dev)
    scores = torch.empty(ng, mmax, dtype=torch.int32, device=dev) if return_debug else buckets
    q_i8 = torch.empty(bsz * h, d, dtype=torch.int8, device=dev) if return_debug else buckets
    idx = torch.empty(ng, kk, dtype=torch.int32, device=dev)
    out = torch.empty(bsz, h, d, dtype=torch.bfloat16, device=dev)
    # k/v/lo are addressed as row g * Mmax + token: the batch and KV-head strides must be the dense ones
    kc, vc, lo = (x.reshape(ng, mmax, -1) for x in (k_cache, v_cache, lo_cache))
    _lop_score_kernel[(ng, nc)](q2, q_i8, lo, buckets, hist, scores, sel, cinfo, cnt[0], m, d, h, kvh, mmax, dw,
                                nc, kk, eps, G=grp, GP=triton.next_power_of_2(grp), NB=n_buckets, MANT=mant_bits,
                                CH=chunk, DWP=triton.next_power_of_2(dw), NBP=nbp, NCP=ncp, WRITE_DBG=return_debug,
                                num_warps=4)
    if stages < 2:
        return out
    pm = torch.empty(bsz * h, nc, dtype=torch.float32, device=dev)
    pl = torch.empty(bsz * h, nc, dtype=torch.float32, device=dev)
    po = torch.empty(bsz * h, nc, dp, dtype=torch.float32, device=dev)
    _lop_attend_kernel[(ng, nc)](q2, kc, vc, buckets, sel, cinfo, idx, pm, pl, po, out, cnt[1], m, d, h, kvh, mmax,
                                 nc, kk, 1.0 / math.sqrt(d), G=grp, GP=triton.next_power_of_2(grp),
                                 GQ=max(16, triton.next_power_of_2(grp)), CH=chunk,
                                 KS=32, DP=dp, NCP=ncp, DOT_F32=INTERPRET or not q.is_cuda, num_warps=8)
    if return_debug:
        return out, {"scores": scores[:, :m], "idx": idx.to(torch.int64), "q_i8": q_i8}
    return out
