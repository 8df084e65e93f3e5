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
viewed as int32 words, stored word-major: cache ``lo`` int32 [B, KVH, ceil(d/8), Mmax], so that word j of
consecutive tokens is contiguous and the scoring loads a chunk's words as one [words, tokens] tile, each thread
its own tokens as 16-byte vectors (design of this module: key-major rows of ceil(d/8) words had Triton spread
each row over up to 16 lanes, every lane then repeating the row's bucket and histogram work; compiled for sm_90
the scoring launch of bitnet-3B at 8k tokens had 5904 instructions per thread; a loop over the words, one
load per word, kept only one or two words' loads in flight: on an H100 bitnet-2B4T's scoring launch at 8k tokens
took 9.1 µs that way, 5.0 as a tile, reports/gpu-probes/lop-ab-h100.json). The bf16 K/V cache stays as for dense attention;
only the K selected rows of it are read.

Group scores without a multiply (design of this module): ``Q_g`` is split as ``128 Qh + Ql`` (both
fit int8 for G <= 127) and packed four dimensions to a word; per LO word (8 codes) four byte
permutes (PTX ``prmt``, a table of the magnitudes ``2^(mag-1)``; its sign-replicate mode zeroes the negative
codes, and on the sign-flipped word the positive ones) and eight ``dp4a`` (positive minus negative codes'
sums) give the exact int32 score: 2 instructions per key element where the shift-and-select form took about 12 (on an H200
that scoring launch was 18.2 µs of LOP's 27.5 for bitnet-2B4T at 8k tokens, reports/gpu-baseline.md as of commit
bf2367f; 5.3 of 14.6 µs on an H100 in the current one). MHA (G = 1) needs no split: ``|Q_g| <= 64``, so four
``dp4a`` per word (sm_90, Triton 3.6: bitnet-3B's scoring launch at 8k tokens 1840 -> 1520 instructions per
thread).

One kernel, grid (B·KVH, chunks of ``chunk`` tokens), in two phases:
(1) quantize the group's queries, score + bucket + the chunk's histogram;
(2) from the group's histograms the threshold and, for this chunk, the bucket-``t`` and chosen tokens
    before it (every program reduces them itself); write the chunk's chosen indices compacted at their
    global rank and run exact attention for the G heads over them (``tl.dot``: the K/V rows are read
    once per group); the last program of the group merges the per-chunk partial softmaxes. MHA (G = 1)
    attends with float32 products and sums (``decode_attn.attend_rows``), not a ``tl.dot`` tile padded to
    16 query rows, and the head dim is a compile-time constant (bitnet-3B's rows of 100 bf16 are then read
    as 8-byte vectors, not 2-byte loads): compiled for sm_90 (Triton 3.6) phase 2 needs 96 registers per
    thread instead of 167, so 5 programs fit an SM, not 3, and bitnet-3B's 512 programs at 4k and 8k tokens
    run in one wave on 132 SMs, not two.
The two phases are two launches of the same kernel, the second with programmatic dependent launch, so it
is set up while the first runs. (A one-launch form, a group barrier between the phases for grids of at most
one program per SM, was slower than the two launches at every context where it applied, with and without
programmatic dependent launch, on an H100: 8.34 vs 7.18 µs for bitnet-2B4T at 128 tokens, 9.86 vs 9.09 at
1k, 11.22 vs 10.80 for bitnet-3B at 512, reports/gpu-probes/lop-launch-h100.json; it also needed every
program resident, which an MPS limit or a kernel on another stream breaks.) The last program of each group
counts the group's programs with an atomic counter in a per-device buffer, created by the first call and
reset by that program (make that first call before capturing the function in a CUDA graph).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .decode_attn import attend_rows, group_query
from .ternary import INTERPRET, absmax_scale, dp4a, pdl_kw, pdl_launch, pdl_wait, quant_i8, sm_count

__all__ = ["LOP_CHUNKS", "lo_words", "lo_pack_keys_torch", "lo_cache_torch", "lop_attention", "lop_chunk", "lop_default_chunk"]

_BUFFERS: dict = {}  # per-device buffers: the groups' merge counters, prmt's table


def lo_words(d: int) -> int:
    """Int32 words of one key's packed LO codes: ceil(d / 8) (head_dim zero-padded to a multiple of 8)."""
    return -(-d // 8)


def lo_pack_keys_torch(k_i8: torch.Tensor) -> torch.Tensor:
    """INT8 keys [..., d] -> packed 4-bit LO codes int32 [..., ceil(d/8)] (layout: module docstring)."""
    d = k_i8.shape[-1]
    dw = lo_words(d)
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


def lo_cache_torch(k_i8: torch.Tensor) -> torch.Tensor:
    """INT8 keys [..., M, d] -> the LO cache int32 [..., ceil(d/8), M]: :func:`lo_pack_keys_torch`'s words,
    word-major (module docstring)."""
    return lo_pack_keys_torch(k_i8).transpose(-1, -2).contiguous()


@triton.jit
def _prmt_lo(sel, tab, USE_ASM: tl.constexpr):
    """PTX ``prmt.b32 d, tab, 0x40201008, sel`` (default mode; ``tab`` = 0x04020100 in a register, see
    :func:`_score_chunk`): byte i of d is byte ``n & 7`` of the table [0, 1, 2, 4, 8, 16, 32, 64] for the i-th
    nibble ``n`` of ``sel``'s low 16 bits, or, with ``n & 8``, that byte's sign bit replicated (always 0 here). For a 4-bit LO code (``sign << 3 | mag``): ``2^(mag-1)``
    if positive, 0 if negative or zero."""
    if USE_ASM:
        hi = tl.full(sel.shape, 0x40201008, tl.int32)
        r = tl.inline_asm_elementwise("prmt.b32 $0, $1, $2, $3;", "=r,r,r,r", [tab, hi, sel], dtype=tl.int32,
                                      is_pure=True, pack=1)
    else:
        r = tl.zeros(sel.shape, tl.int32)
        for i in tl.static_range(4):
            n = (sel >> (4 * i)) & 15
            r += tl.where(n >= 8, 0, (1 << (n & 7)) >> 1) << (8 * i)
    return r


@triton.jit
def _pack4(v, rs, half: tl.constexpr):
    """[DWP, 8] int32 (int8 range) -> [DWP] int32 holding the bytes of columns 4 half .. 4 half + 3."""
    return tl.sum(tl.where((rs // 4 == half)[None, :], (v & 255) << (8 * (rs % 4))[None, :], 0), axis=1)


@triton.jit
def _code_dot(p0, p1, n0, n1, q0, q1, USE_ASM: tl.constexpr):
    """Per word, sum over its 8 LO codes of ``sign · 2^(mag-1) · q``: the positive codes' magnitudes
    (``p0``, ``p1``: the permuted low and high halves) dotted with the query bytes of those halves (``q0``,
    ``q1``: [DWP, 1] columns of :func:`_pack4`), minus the negative codes' (``n0``, ``n1``)."""
    zero = tl.zeros_like(p0)
    return dp4a(p1, q1, dp4a(p0, q0, zero, USE_ASM), USE_ASM) - dp4a(n1, q1, dp4a(n0, q0, zero, USE_ASM), USE_ASM)


@triton.jit
def _score_chunk(q_ptr, qi_ptr, lo_ptr, tab_ptr, bucket_ptr, hist_ptr, score_ptr, g, c, h0, M, MMAX, NC, eps,
                 D: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, NB: tl.constexpr, MANT: tl.constexpr, CH: tl.constexpr,
                 DW: tl.constexpr, DWP: tl.constexpr, NBP: tl.constexpr, WRITE_DBG: tl.constexpr,
                 USE_ASM: tl.constexpr):
    """Group scores, buckets (stored) and the histogram (stored) of the chunk's tokens."""
    rg = tl.arange(0, GP)
    rj = tl.arange(0, DWP)
    rs = tl.arange(0, 8)
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
    # Q_g = 128 Qh + Ql with Qh, Ql int8 (|Q_g| <= 128 G, G <= 127), four dimensions a word, as [DWP, 1]
    # columns against the [DWP, CH] tile of LO words below
    qg = tl.sum(sp, axis=0)  # [DWP, 8]
    ql = qg if G == 1 else qg & 127  # MHA: |Q_g| <= 64, no high part
    ql0 = _pack4(ql, rs, 0)[:, None]
    ql1 = _pack4(ql, rs, 1)[:, None]
    # prmt's table word loaded, so that it stays in a register (as an immediate ptxas copied it from a uniform
    # register before every permute)
    tab = tl.load(tab_ptr)
    rm = c * CH + tl.arange(0, CH)
    m_ok = rm < M
    # (2) group scores from the packed LO codes (exact int32): all of the chunk's words in one [DWP, CH] load
    # (the cache is word-major: a word's codes of consecutive tokens are contiguous), so that every load is in
    # flight at once, then summed over the words. One byte permute per four codes gives 2^(mag-1) for a
    # positive code, 0 for a negative one (sign-replicate mode on a table of bytes < 0x80) or the zero code
    # (also the padding words); on the sign-flipped codes (w ^ 0x88888888) the negative ones' magnitudes
    w = tl.load(lo_ptr + (g * DW + rj[:, None]) * MMAX + rm[None, :], mask=(rj < DW)[:, None] & m_ok[None, :],
                other=0)
    wn = w ^ -2004318072
    p0 = _prmt_lo(w, tab, USE_ASM)
    p1 = _prmt_lo(w >> 16, tab, USE_ASM)
    n0 = _prmt_lo(wn, tab, USE_ASM)
    n1 = _prmt_lo(wn >> 16, tab, USE_ASM)
    part = _code_dot(p0, p1, n0, n1, ql0, ql1, USE_ASM)
    if G > 1:
        part += 128 * _code_dot(p0, p1, n0, n1, _pack4(qg >> 7, rs, 0)[:, None], _pack4(qg >> 7, rs, 1)[:, None],
                                USE_ASM)
    score = tl.sum(part, axis=0)
    if WRITE_DBG:
        tl.store(score_ptr + g * MMAX + rm, score, mask=m_ok)
    # (3) monotone bucket (sim.numerics.lop.lop_bucket) and the histogram
    HALF: tl.constexpr = (NB - 1) // 2
    a = tl.abs(score)
    e = ((a.to(tl.float32).to(tl.int32, bitcast=True) >> 23) & 255) - 127
    ep = tl.maximum(e, 0)
    below = a - tl.where(a == 0, 0, 1 << ep)
    f = tl.where(ep >= MANT, below >> tl.maximum(ep - MANT, 0), below << tl.maximum(MANT - ep, 0))
    mag = tl.where(a == 0, 0, ((ep + 1) << MANT) | f)
    sgn = tl.where(score > 0, 1, tl.where(score < 0, -1, 0))
    bucket = HALF + sgn * tl.minimum(mag, HALF)
    tl.store(bucket_ptr + g * MMAX + rm, bucket.to(tl.int8), mask=m_ok)
    # tokens past M go to bin NBP-1, which no bucket uses (NB is odd, NBP = next_pow2(NB) > NB)
    hist = tl.histogram(tl.where(m_ok, bucket, NBP - 1), NBP)
    rb = tl.arange(0, NBP)
    tl.store(hist_ptr + (g * NC + c) * NBP + rb, tl.where(rb < NB, hist, 0))


@triton.jit
def _threshold(hist_ptr, g, c, M, NC, KSEL, NB: tl.constexpr, NBP: tl.constexpr, NCP: tl.constexpr):
    """From the group's chunk histograms: threshold bucket t, the bucket-t tokens to take (n_fill), and for
    chunk c the bucket-t tokens and the chosen tokens in the chunks before it."""
    rb = tl.arange(0, NBP)
    rc = tl.arange(0, NCP)
    hall = tl.load(hist_ptr + (g * NC + rc[:, None]) * NBP + rb[None, :], mask=(rc < NC)[:, None], other=0,
                   cache_modifier=".cg")  # written by other programs: past L1
    tot = tl.sum(hall, axis=0)
    need = tl.minimum(KSEL, M)
    cum_desc = tl.sum(tot, axis=0) - tl.cumsum(tot, axis=0) + tot  # count(bucket >= t)
    t = tl.sum(((cum_desc >= need) & (rb < NB)).to(tl.int32), axis=0) - 1
    n_fill = need - tl.sum(tl.where(rb > t, tot, 0), axis=0)
    ht = tl.sum(tl.where(rb[None, :] == t, hall, 0), axis=1)  # [NCP] bucket-t tokens per chunk
    before = rc < c
    prior_t = tl.sum(tl.where(before, ht, 0), axis=0)
    prior_ht = tl.cumsum(ht, axis=0) - ht
    cnt = tl.sum(tl.where(rb[None, :] > t, hall, 0), axis=1) + tl.minimum(tl.maximum(n_fill - prior_ht, 0), ht)
    base = tl.sum(tl.where(before, cnt, 0), axis=0)
    return t, n_fill, prior_t, base


@triton.jit
def _lop_kernel(q_ptr, qi_ptr, lo_ptr, tab_ptr, k_ptr, v_ptr, bucket_ptr, hist_ptr, score_ptr, idx_ptr, pm_ptr, pl_ptr,
                po_ptr, out_ptr, cnt_ptr, M, D: tl.constexpr, H, KVH, MMAX, NC, KSEL, eps, sm_scale,
                G: tl.constexpr, GP: tl.constexpr, GQ: tl.constexpr, NB: tl.constexpr, MANT: tl.constexpr,
                CH: tl.constexpr, DW: tl.constexpr, DWP: tl.constexpr, NBP: tl.constexpr, NCP: tl.constexpr,
                KS: tl.constexpr, MB: tl.constexpr,
                DP: tl.constexpr, PHASE: tl.constexpr, WRITE_DBG: tl.constexpr, USE_ASM: tl.constexpr,
                DOT_F32: tl.constexpr, PDL: tl.constexpr = False):
    # PHASE 1: score the chunk; 2: select + attend (its own launch: it reads every chunk's histogram).
    # PDL: the next launch may start now; this one waits for its predecessor before it reads or writes anything
    pdl_launch(PDL)
    pdl_wait(PDL)
    g = tl.program_id(0)  # b * KVH + kv head
    c = tl.program_id(1)
    b = g // KVH
    h0 = b * H + (g % KVH) * G
    if PHASE == 1:
        _score_chunk(q_ptr, qi_ptr, lo_ptr, tab_ptr, bucket_ptr, hist_ptr, score_ptr, g, c, h0, M, MMAX, NC, eps,
                     D, G, GP, NB, MANT, CH, DW, DWP, NBP, WRITE_DBG, USE_ASM)
    if PHASE == 2:
        # the chunk's buckets are loaded before the threshold is reduced: the two loads overlap
        rm = c * CH + tl.arange(0, CH)
        m_ok = rm < M
        bk = tl.load(bucket_ptr + g * MMAX + rm, mask=m_ok, other=-1, cache_modifier=".cg").to(tl.int32)
        t, n_fill, prior_t, base = _threshold(hist_ptr, g, c, M, NC, KSEL, NB, NBP, NCP)
        # chosen tokens of this chunk, written compacted at their global rank (ascending)
        # one scan for both counts before each token (packed: bucket-t tokens low, tokens above t high, each
        # < 2^16): the bucket-t tokens are taken in index order while the group's count is below n_fill, so
        # the chosen ones before a token are min(bucket-t before it, n_fill - prior_t) + those above t
        at = (bk == t).to(tl.int32)
        gt = (bk > t).to(tl.int32)
        both = at + (gt << 16)
        excl = tl.cumsum(both, axis=0) - both
        take_t = tl.maximum(n_fill - prior_t, 0)
        chosen = (gt == 1) | ((at == 1) & ((excl & 65535) < take_t))
        tl.store(idx_ptr + g * KSEL + base + (excl >> 16) + tl.minimum(excl & 65535, take_t), rm, mask=chosen)
        nsel = tl.sum(gt, axis=0) + tl.minimum(tl.sum(at, axis=0), take_t)
        tl.debug_barrier()  # the compacted indices are read back below by other threads of this program
        # exact attention of the G heads over them (flash-decoding partial per chunk)
        q, m_i, l_i, o = group_query(q_ptr, h0, D, G, GQ, DP)
        for i0 in range(0, nsel, KS):
            ri = i0 + tl.arange(0, KS)
            ok = ri < nsel
            tok = tl.load(idx_ptr + g * KSEL + base + ri, mask=ok, other=0)
            m_i, l_i, o = attend_rows(q, k_ptr, v_ptr, g * MMAX + tok, ok, m_i, l_i, o, D, sm_scale, DP, DOT_F32)
        rg = tl.arange(0, GQ)
        rd = tl.arange(0, DP)
        d_ok = rd < D
        g_ok = rg < G
        hrow = (h0 + rg) * NC + c
        tl.store(pm_ptr + hrow, m_i, mask=g_ok)
        tl.store(pl_ptr + hrow, l_i, mask=g_ok)
        tl.store(po_ptr + hrow[:, None] * DP + rd[None, :], o, mask=g_ok[:, None])
        # the group's last program merges the partial softmaxes of its G heads and resets the group's counter
        done = tl.atomic_add(cnt_ptr + g, 1)
        if done == NC - 1:
            rgc = tl.arange(0, GP)  # the G heads (GQ above is padded for tl.dot)
            gc_ok = rgc < G
            # the chunks' partials in blocks of MB chunks (online rescaling): at most 128 x DP floats at once
            mrun = tl.full([GP], float("-inf"), tl.float32)
            lrun = tl.zeros([GP], tl.float32)
            orun = tl.zeros([GP, DP], tl.float32)
            for c0 in tl.static_range(0, NCP, MB):
                rc = c0 + tl.arange(0, MB)
                c_ok = (rc < NC)[None, :] & gc_ok[:, None]
                prow = (h0 + rgc)[:, None] * NC + rc[None, :]  # [GP, MB]
                pm = tl.load(pm_ptr + prow, mask=c_ok, other=0.0, cache_modifier=".cg")
                pl = tl.load(pl_ptr + prow, mask=c_ok, other=0.0, cache_modifier=".cg")
                po = tl.load(po_ptr + prow[:, :, None] * DP + rd[None, None, :], mask=c_ok[:, :, None], other=0.0,
                             cache_modifier=".cg")
                live = pl > 0
                m_new = tl.maximum(mrun, tl.max(tl.where(live, pm, float("-inf")), axis=1))
                a_old = tl.where(mrun == float("-inf"), 0.0, tl.exp(mrun - m_new))
                wgt = tl.where(live, tl.exp(pm - m_new[:, None]), 0.0)
                orun = orun * a_old[:, None] + tl.sum(wgt[:, :, None] * po, axis=1)
                lrun = lrun * a_old + tl.sum(wgt * pl, axis=1)
                mrun = m_new
            res = orun / tl.maximum(lrun, 1e-30)[:, None]
            tl.store(out_ptr + (h0 + rgc)[:, None] * D + rd[None, :], res.to(tl.bfloat16),
                     mask=gc_ok[:, None] & d_ok[None, :])
            tl.store(cnt_ptr + g, 0)


def _device_buffer(dev, key, values) -> torch.Tensor:
    """An int32 buffer made once per device and ``key`` from ``values`` (a list) and kept: the groups' merge
    counters (zeros, reset by the kernel) and the low word of prmt's byte table (``_prmt_lo``)."""
    k = (str(dev), key)
    if k not in _BUFFERS:
        _BUFFERS[k] = torch.tensor(values, dtype=torch.int32, device=dev)
    return _BUFFERS[k]


def lop_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, lo_cache: torch.Tensor, m: int,
                  k_sel: int, n_buckets: int = 63, mant_bits: int = 0, chunk: int | None = None,
                  return_debug: bool = False, stages: int = 2, eps: float = 1e-5, num_warps: int = 4,
                  pdl: bool = True):
    """LOP decode attention for one new token per sequence, one top-K per KV group.

    q: bf16 [B, H, d]; k_cache/v_cache: bf16 [B, KVH, Mmax, d]; lo_cache: int32 [B, KVH, ceil(d/8), Mmax]
    (word-major, :func:`lo_cache_torch`);
    m: context length (<= Mmax); k_sel: K. Returns bf16 [B, H, d] (and, with ``return_debug``, a dict with
    ``scores`` int32 [B·KVH, m] group scores, ``idx`` int64 [B·KVH, min(K, m)], ``q_i8`` int8 [B·H, d]).
    ``chunk``: tokens per program (default :func:`lop_chunk`).
    ``stages`` = 1 stops after the scoring launch (profiling only: the output is not written).
    ``pdl``: launch with programmatic dependent launch (``ternary.pdl_kw``; Hopper and later, not in the
    interpreter), so that the select-and-attend launch is set up while the scoring launch runs; each launch
    waits for its predecessor before its first access to memory, so the results are those without it.
    """
    if n_buckets < 3 or n_buckets % 2 == 0 or n_buckets > 127:
        raise ValueError(f"n_buckets must be odd in [3, 127], got {n_buckets}")
    if k_sel < 1:
        raise ValueError("k_sel must be >= 1")
    bsz, h, d = q.shape
    kvh, mmax = k_cache.shape[1], k_cache.shape[2]
    if h % kvh or not 1 <= m <= mmax or h // kvh > 127:
        raise ValueError(f"bad shapes: H={h}, KVH={kvh} (at most 127 query heads per KV head), m={m}, Mmax={mmax}")
    dw = lo_words(d)
    if lo_cache.shape[2:] != (dw, mmax):
        raise ValueError(f"lo_cache must be [B, KVH, {dw}, {mmax}] (word-major, lo_cache_torch), got {tuple(lo_cache.shape)}")
    if k_cache.stride(-1) != 1 or k_cache.stride(2) != d or v_cache.stride(2) != d or lo_cache.stride(2) != mmax:
        raise ValueError("k_cache, v_cache and lo_cache must be contiguous in their last two dimensions")
    grp = h // kvh
    dev = q.device
    ng = bsz * kvh
    gpu = q.is_cuda and not INTERPRET
    chunk = chunk or lop_default_chunk(ng, m, dev)
    if chunk < 16 or chunk & (chunk - 1):
        raise ValueError(f"chunk must be a power of two >= 16, got {chunk}")
    q2 = q.reshape(bsz * h, d).contiguous()
    nc = triton.cdiv(m, chunk)
    nbp = triton.next_power_of_2(n_buckets)
    dp = max(triton.next_power_of_2(d), 16)
    kk = min(k_sel, m)
    cnt = _device_buffer(dev, ("counters", ng), [0] * ng)
    buckets = torch.empty(ng, mmax, dtype=torch.int8, device=dev)
    hist = torch.empty(ng, nc, nbp, dtype=torch.int32, device=dev)
    scores = torch.empty(ng, mmax, dtype=torch.int32, device=dev) if return_debug else buckets
    q_i8 = torch.empty(bsz * h, d, dtype=torch.int8, device=dev) if return_debug else buckets
    idx = torch.empty(ng, kk, dtype=torch.int32, device=dev)
    out = torch.empty(bsz, h, d, dtype=torch.bfloat16, device=dev)
    pm = torch.empty(bsz * h, nc, dtype=torch.float32, device=dev)
    pl = torch.empty(bsz * h, nc, dtype=torch.float32, device=dev)
    po = torch.empty(bsz * h, nc, dp, dtype=torch.float32, device=dev)
    dwp = max(triton.next_power_of_2(dw), 2)
    tab = _device_buffer(dev, "prmt", [0x04020100])
    # k/v are addressed as row g * Mmax + token, lo as (g * DW + word) * Mmax + token: the batch and KV-head
    # strides must be the dense ones
    kc, vc = (x.reshape(ng, mmax, -1) for x in (k_cache, v_cache))
    lo = lo_cache.reshape(ng, dw, mmax)
    gp = triton.next_power_of_2(grp)
    args = (q2, q_i8, lo, tab, kc, vc, buckets, hist, scores, idx, pm, pl, po, out, cnt, m, d, h, kvh, mmax, nc, kk,
            eps, 1.0 / math.sqrt(d))
    meta = dict(G=grp, GP=gp, GQ=1 if grp == 1 else max(16, gp), NB=n_buckets, MANT=mant_bits, CH=chunk, DW=dw, DWP=dwp, NBP=nbp,
                NCP=max(triton.next_power_of_2(nc), 2), KS=32, MB=min(max(triton.next_power_of_2(nc), 2), max(2, 128 // gp)), DP=dp,
                WRITE_DBG=return_debug, USE_ASM=gpu, DOT_F32=not gpu, num_warps=num_warps)
    for phase in (1, 2)[:stages]:
        _lop_kernel[(ng, nc)](*args, PHASE=phase, **meta, **pdl_kw(dev, pdl))
    if return_debug:
        return out, {"scores": scores[:, :m], "idx": idx.to(torch.int64), "q_i8": q_i8}
    return out


def lop_default_chunk(groups: int, m: int, device) -> int:
    """Tokens per program of :func:`lop_attention`'s default call for ``groups`` = B·KVH and context ``m`` on
    ``device`` (:func:`lop_chunk`; 132 SMs assumed off the GPU)."""
    gpu = device.type == "cuda" and not INTERPRET
    return lop_chunk(groups, m, sm_count(device.index or 0) if gpu else 132)


LOP_CHUNKS = (128, 256, 512, 1024)  # the tokens per program lop_chunk chooses from


def lop_chunk(groups: int, m: int, sms: int) -> int:
    """Tokens per program: the smallest of :data:`LOP_CHUNKS` that gives each group at most 32 chunks and the
    grid at most 4 programs per SM, or 8 for chunks of 256 tokens or more (the largest chunk if none does).
    Fitted to one H100 run of ``lowbit bench-gpu``'s LOP table (K/M = 1/16, every chunk size timed;
    reports/gpu-probes/bench-h100-lop-tile.md): the best chunk was 128 tokens for bitnet-2B4T (5 groups) at 1k and 4k context
    and 256 at 8k; for bitnet-3B (32 groups) 128 at 1k and 256 at 4k and 8k, where 128 at 4k gave the
    same grid as 256 at 8k (1024 programs) but was slower (25.0 vs 23.2 µs): each program quantizes the
    queries and reduces the group's histograms once, a cost that small chunks repeat in more waves."""
    for c in LOP_CHUNKS:
        n = triton.cdiv(m, c)
        if n <= 32 and groups * n <= (8 if c >= 256 else 4) * sms:
            return c
    return LOP_CHUNKS[-1]
