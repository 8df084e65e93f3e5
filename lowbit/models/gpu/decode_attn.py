"""Dense decode attention in Triton for short contexts: one new token per sequence, one program per KV
group reading each cached K/V row once for the group's ``G = H / KVH`` query heads (GQA; MHA is G = 1).

``out[h] = softmax(q_h · K^T / sqrt(d)) V`` over the first ``m`` cached tokens (the flash-attention
recurrence of Dao et al., "FlashAttention", NeurIPS 2022: running max ``m_i``, running sum ``l_i``, float32
accumulation, bf16 K/V cache and output), what ``F.scaled_dot_product_attention`` computes for one query.

Why kernels of their own: at decode contexts of a few hundred tokens the step is latency-bound, and a
Triton kernel can issue its K/V loads before it waits for the Wqkv GEMV (programmatic dependent launch,
below), which torch SDPA (cuDNN's flash kernel) cannot.

:func:`split_decode_attention` is the split-context form ("flash-decoding": Dao, Haziza, Massa, Sizov,
"Flash-Decoding for long-context inference", 2023, on the FlashAttention-2 online softmax): a grid of
(B·KVH, S) programs, program (g, s) attending over the tokens [s·CH, (s+1)·CH) and writing its partial
(running max ``m_s``, running sum ``l_s``, unnormalized float32 ``acc_s``); the combine is
``out = Σ_s exp(m_s - M) acc_s / Σ_s exp(m_s - M) l_s`` with ``M = max_s m_s``, done by the group's last
program to finish (an int32 counter per group) or by a second launch. The decode step takes it for the
low-bit formats up to :data:`SPLIT_MAX_CTX` tokens (:func:`split_attention_fits`), SDPA beyond. Measured
in whole decode steps with PDL at 192 tokens (reports/gpu-probes/attn-step-h200.json, an H200 on
2026-12-05, bench/gpu_attn_step_probe.py): BitNet-3B (MHA) ternary 893.8 µs with the plan of
:func:`split_plan` (13 splits of at most 16 tokens, 2 warps), 951.5 / 973.9 µs with SDPA; BitNet-2B4T
(GQA) 925.3 µs, 962.3 µs with the one-program-per-group kernel; 3B NVFP4 1696.8 vs 1738.7 µs (SDPA). On an
H100 (reports/gpu-probes/bench-h100-full.md) 3B ternary 1006.1 vs 1061.5 µs. Alone, without a kernel to overlap,
it is not faster than SDPA (there: 3B at 193 tokens 8.3 vs 7.8 µs, at 1024 17.1 vs 13.6, at 4096 42.1 vs
29.9): in the step it can read the cached K/V before it waits for the Wqkv GEMV (below), which cuDNN's
kernel cannot. :func:`dense_decode_attention` (one program per KV group, looping over the context)
stays as the table's alternative (``LOWBIT_GPU_ATTN=dense``).

With programmatic dependent launch (``ternary.pdl_kw``) both kernels read their first block of cached K/V
before ``griddepcontrol.wait``: the kernel before them (the Wqkv GEMV's RoPE + append) writes only the new
row ``m - 1``, which is read after the wait.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .ternary import INTERPRET, pdl_kw, pdl_launch, pdl_wait, sm_count

__all__ = ["attend_block", "attend_rows", "group_query", "split_attention_fits", "dense_decode_attention", "SPLIT_MAX_CTX",
           "split_decode_attention", "split_plan"]

# Up to here the decode step takes split_decode_attention, beyond it SDPA: a design choice between the
# step measured at 192 tokens (split ahead) and the kernels alone at 1024 (SDPA ahead), module docstring
SPLIT_MAX_CTX = 384


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
    """Load the K/V cache rows ``rows`` [KS] (where ``ok``; :func:`_kv_rows`) and run :func:`attend_block` on
    them, or, for one query row (GQ = 1, MHA), :func:`_attend_row` (no ``tl.dot`` tile padded to 16 rows)."""
    k, v = _kv_rows(k_ptr, v_ptr, rows, ok, D, DP)
    if q.shape[0] == 1:
        m_i, l_i, o1 = _attend_row(tl.reshape(q, [DP]).to(tl.float32), k, v, ok, m_i, l_i, tl.reshape(o, [DP]),
                                   sm_scale)
        return m_i, l_i, tl.reshape(o1, [1, DP])
    return attend_block(q, k, v, ok, m_i, l_i, o, sm_scale, DOT_F32)


@triton.jit
def _dense_kernel(q_ptr, k_ptr, v_ptr, out_ptr, M, D: tl.constexpr, KVH, MMAX, sm_scale, G: tl.constexpr, GQ: tl.constexpr,
                  DP: tl.constexpr, KS: tl.constexpr, DOT_F32: tl.constexpr, PDL: tl.constexpr = False):
    pdl_launch(PDL)
    g = tl.program_id(0)  # b * KVH + kv head; its query heads are h0 .. h0 + G - 1
    h0 = (g // KVH) * KVH * G + (g % KVH) * G
    # the first block's rows before the wait, the appended row M - 1 after it (as _split_kernel)
    rm = tl.arange(0, KS)
    k, v = _kv_rows(k_ptr, v_ptr, g * MMAX + rm, rm < M - 1, D, DP)
    pdl_wait(PDL)
    k_new, v_new = _kv_rows(k_ptr, v_ptr, g * MMAX + rm, rm == M - 1, D, DP)
    q, m_i, l_i, o = group_query(q_ptr, h0, D, G, GQ, DP)
    m_i, l_i, o = attend_block(q, k + k_new, v + v_new, rm < M, m_i, l_i, o, sm_scale, DOT_F32)
    for i0 in range(KS, M, KS):
        rm = i0 + tl.arange(0, KS)
        m_i, l_i, o = attend_rows(q, k_ptr, v_ptr, g * MMAX + rm, rm < M, m_i, l_i, o, D, sm_scale, DP, DOT_F32)
    o = o / l_i[:, None]
    rg = tl.arange(0, GQ)
    rd = tl.arange(0, DP)
    tl.store(out_ptr + (h0 + rg)[:, None] * D + rd[None, :], o.to(tl.bfloat16), mask=(rg < G)[:, None] & (rd < D)[None, :])


def split_attention_fits(m: int) -> bool:
    """Whether the decode step serves a context of ``m`` tokens with :func:`split_decode_attention` (else
    SDPA): m <= :data:`SPLIT_MAX_CTX`."""
    return m <= SPLIT_MAX_CTX


def _check(q, k_cache, v_cache, m):
    bsz, h, d = q.shape
    kvh, mmax = k_cache.shape[1], k_cache.shape[2]
    if h % kvh or not 1 <= m <= mmax or k_cache.shape[-1] != d or v_cache.shape != k_cache.shape:
        raise ValueError(f"bad shapes: q {tuple(q.shape)}, k_cache {tuple(k_cache.shape)}, "
                         f"v_cache {tuple(v_cache.shape)}, m={m}")
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("k_cache and v_cache must be contiguous")
    return bsz, h, d, kvh, mmax


def dense_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, m: int,
                           scale: float | None = None, *, block_tokens: int = 64, num_warps: int = 4) -> torch.Tensor:
    """Attention of one query per sequence over the first ``m`` cached tokens.

    q: bf16 [B, H, d]; k_cache/v_cache: bf16 [B, KVH, Mmax, d] (contiguous); H a multiple of KVH; ``scale``
    defaults to 1/sqrt(d) (pass 1/sqrt(head_dim) when d carries zero padding). Returns bf16 [B, H, d]."""
    bsz, h, d, kvh, mmax = _check(q, k_cache, v_cache, m)
    grp = h // kvh
    gpu = q.is_cuda and not INTERPRET
    out = torch.empty(bsz, h, d, dtype=torch.bfloat16, device=q.device)
    _dense_kernel[(bsz * kvh,)](q.contiguous(), k_cache, v_cache, out, m, d, kvh, mmax,
                                scale if scale is not None else 1.0 / math.sqrt(d), G=grp,
                                GQ=max(16, triton.next_power_of_2(grp)), DP=max(16, triton.next_power_of_2(d)),
                                KS=block_tokens, DOT_F32=not gpu, num_warps=num_warps, **pdl_kw(q.device))
    return out


# ---- split-context decode attention (flash-decoding) ----

_SPLIT_SCRATCH: dict = {}  # (device, groups, splits, GC, DP) -> (m, l, acc partials, counters)


@triton.jit
def _attend_ew(q, k, v, ok, m_i, l_i, o, sm_scale):
    """:func:`attend_block` on the CUDA cores: q [GP, DP] float32 (GP may be 1), k/v [BT, DP] bf16; the scores
    and P·V as broadcast products summed over d / over the tokens (no MMA rows padded to 16)."""
    kf = k.to(tl.float32)
    sc = tl.sum(q[:, None, :] * kf[None, :, :], axis=2)
    sc = tl.where(ok[None, :], sc * sm_scale, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(sc, axis=1))
    alpha = tl.exp(m_i - m_new)
    p = tl.exp(sc - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    o = o * alpha[:, None] + tl.sum(p[:, :, None] * v.to(tl.float32)[None, :, :], axis=1)
    return m_new, l_i, o


@triton.jit
def _attend_row(q, k, v, ok, m_i, l_i, o, sm_scale):
    """:func:`_attend_ew` for one query row: q [DP] float32, k/v [BT, DP] bf16, running max/sum scalars, o [DP]."""
    sc = tl.where(ok, tl.sum(q[None, :] * k.to(tl.float32), axis=1) * sm_scale, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(sc, axis=0))
    alpha = tl.exp(m_i - m_new)
    p = tl.exp(sc - m_new)
    return m_new, l_i * alpha + tl.sum(p, axis=0), o * alpha + tl.sum(p[:, None] * v.to(tl.float32), axis=0)


@triton.jit
def _split_combine(pm_ptr, pl_ptr, pa_ptr, out_ptr, g, NS, D, G: tl.constexpr, GC: tl.constexpr,
                   DP: tl.constexpr, SC: tl.constexpr):
    """out = Σ_s exp(m_s - M) acc_s / Σ_s exp(m_s - M) l_s over the NS partials of group g (M = max_s m_s),
    read SC partials at a time (at L2: ``.cg``, they were written by other programs)."""
    rs = tl.arange(0, SC)
    rc = tl.arange(0, GC)
    rd = tl.arange(0, DP)
    c_ok = rc < G
    mx = tl.full([GC], float("-inf"), tl.float32)
    for s0 in range(0, NS, SC):
        ok = ((s0 + rs) < NS)[:, None] & c_ok[None, :]
        prow = (g * NS + s0 + rs)[:, None] * GC + rc[None, :]  # [SC, GC]
        mx = tl.maximum(mx, tl.max(tl.load(pm_ptr + prow, mask=ok, other=float("-inf"), cache_modifier=".cg"), axis=0))
    mx = tl.where(c_ok, mx, 0.0)
    lsum = tl.zeros([GC], tl.float32)
    acc = tl.zeros([GC, DP], tl.float32)
    for s0 in range(0, NS, SC):
        ok = ((s0 + rs) < NS)[:, None] & c_ok[None, :]
        prow = (g * NS + s0 + rs)[:, None] * GC + rc[None, :]
        w = tl.exp(tl.load(pm_ptr + prow, mask=ok, other=float("-inf"), cache_modifier=".cg") - mx[None, :])
        lsum += tl.sum(w * tl.load(pl_ptr + prow, mask=ok, other=0.0, cache_modifier=".cg"), axis=0)
        a = tl.load(pa_ptr + prow[:, :, None] * DP + rd[None, None, :], mask=ok[:, :, None], other=0.0,
                    cache_modifier=".cg")
        acc += tl.sum(w[:, :, None] * a, axis=0)
    res = acc / tl.where(c_ok, lsum, 1.0)[:, None]
    tl.store(out_ptr + (g * G + rc)[:, None] * D + rd[None, :], res.to(tl.bfloat16),
             mask=c_ok[:, None] & (rd < D)[None, :])


@triton.jit
def _split_kernel(q_ptr, k_ptr, v_ptr, out_ptr, pm_ptr, pl_ptr, pa_ptr, cnt_ptr, M, D: tl.constexpr, MMAX, CH, NS,
                  sm_scale,
                  G: tl.constexpr, GQ: tl.constexpr, GC: tl.constexpr, DP: tl.constexpr, BT: tl.constexpr,
                  SC: tl.constexpr, USE_DOT: tl.constexpr, DOT_F32: tl.constexpr, LAST: tl.constexpr,
                  PDL: tl.constexpr = False):
    pdl_launch(PDL)
    g = tl.program_id(0)  # b * KVH + kv head; its query heads are g * G .. g * G + G - 1
    s = tl.program_id(1)  # tokens [s * CH, min((s + 1) * CH, M))
    rd = tl.arange(0, DP)
    lo = s * CH
    hi = tl.minimum(lo + CH, M)
    # the first block's cached rows are read before the wait: the predecessor (the Wqkv GEMV's RoPE + append)
    # writes only row M - 1, which is read after it
    rm = lo + tl.arange(0, BT)
    ok = rm < hi
    k, v = _kv_rows(k_ptr, v_ptr, g * MMAX + rm, ok & (rm < M - 1), D, DP)
    pdl_wait(PDL)
    k_new, v_new = _kv_rows(k_ptr, v_ptr, g * MMAX + rm, ok & (rm == M - 1), D, DP)
    k += k_new  # zero where not loaded: each element is one of the two, exactly
    v += v_new
    q, m_i, l_i, o = group_query(q_ptr, g * G, D, G, GQ, DP)
    if GQ == 1:  # MHA: one query row, [BT, DP] tiles (the [1, BT, DP] broadcast form took more shuffles)
        q1 = tl.sum(q.to(tl.float32), axis=0)
        m1, l1, o1 = tl.max(m_i, axis=0), tl.sum(l_i, axis=0), tl.sum(o, axis=0)
    elif not USE_DOT:
        q = q.to(tl.float32)
    for i0 in range(lo, hi, BT):
        if i0 > lo:
            rm = i0 + tl.arange(0, BT)
            ok = rm < hi
            k, v = _kv_rows(k_ptr, v_ptr, g * MMAX + rm, ok, D, DP)
        if GQ == 1:
            m1, l1, o1 = _attend_row(q1, k, v, ok, m1, l1, o1, sm_scale)
        elif USE_DOT:
            m_i, l_i, o = attend_block(q, k, v, ok, m_i, l_i, o, sm_scale, DOT_F32)
        else:
            m_i, l_i, o = _attend_ew(q, k, v, ok, m_i, l_i, o, sm_scale)
    if GQ == 1:
        zero = tl.zeros([GQ], tl.float32)
        m_i, l_i, o = zero + m1, zero + l1, zero[:, None] + o1[None, :]
    rg = tl.arange(0, GQ)
    g_ok = rg < G
    prow = (g * NS + s) * GC + rg
    tl.store(pm_ptr + prow, m_i, mask=g_ok)
    tl.store(pl_ptr + prow, l_i, mask=g_ok)
    tl.store(pa_ptr + prow[:, None] * DP + rd[None, :], o, mask=g_ok[:, None])
    if LAST:
        # every thread's partial stores precede the signal (barrier), which releases them at GPU scope; the
        # program that arrives last acquires them all, combines, and resets the counter for the next call
        tl.debug_barrier()
        old = tl.atomic_add(cnt_ptr + g, 1, sem="acq_rel", scope="gpu")
        if old == NS - 1:
            _split_combine(pm_ptr, pl_ptr, pa_ptr, out_ptr, g, NS, D, G, GC, DP, SC)
            tl.atomic_xchg(cnt_ptr + g, 0, sem="relaxed", scope="gpu")


@triton.jit
def _kv_rows(k_ptr, v_ptr, rows, ok, D, DP: tl.constexpr):
    """The K and V cache rows ``rows`` [BT] where ``ok`` (zero elsewhere and past D) as [BT, DP] bf16."""
    rd = tl.arange(0, DP)
    lm = ok[:, None] & (rd < D)[None, :]
    return (tl.load(k_ptr + rows[:, None] * D + rd[None, :], mask=lm, other=0.0),
            tl.load(v_ptr + rows[:, None] * D + rd[None, :], mask=lm, other=0.0))


@triton.jit
def _split_combine_kernel(pm_ptr, pl_ptr, pa_ptr, out_ptr, NS, D: tl.constexpr, G: tl.constexpr, GC: tl.constexpr,
                          DP: tl.constexpr, SC: tl.constexpr):
    _split_combine(pm_ptr, pl_ptr, pa_ptr, out_ptr, tl.program_id(0), NS, D, G, GC, DP, SC)


def split_plan(m: int, groups: int, device, splits: int | None = None, block_tokens: int = 64,
               min_split: int = 16) -> tuple[int, int, int]:
    """(splits S, tokens per split CH, tokens per iteration BT) of :func:`split_decode_attention` for a
    context of ``m`` tokens and ``groups`` = B·KVH. Default S: up to :data:`SPLIT_MAX_CTX` tokens,
    ``min_split`` tokens a split (one block per program, the fastest plan measured at 193 tokens) but at
    most about four programs per SM (``groups · S <= 4 · SMs``); for longer contexts about one program per
    SM (``groups · S ≈ SMs``, at least ``min_split`` tokens a split: at 1024 and 4096 tokens 2B4T took
    12.9 and 18.5 µs this way on an H200 and 13.1 and 19.2 µs on an H100, reports/gpu-baseline.md and
    reports/gpu-probes/bench-h100-full.md); 4 SMs off CUDA. CH = ceil(m / S), S then ceil(m / CH) (no empty
    split); BT the power of two >= CH (16 .. ``block_tokens``), a program looping over ceil(CH / BT) blocks."""
    if splits is None:
        dev = torch.device(device)
        sms = sm_count(dev.index or 0) if dev.type == "cuda" else 4
        per_sm = 4 if m <= SPLIT_MAX_CTX else 1
        splits = min(-(-per_sm * sms // groups), -(-m // min_split))
    splits = max(1, min(int(splits), m))
    ch = -(-m // splits)
    bt = min(max(16, triton.next_power_of_2(block_tokens)), max(16, triton.next_power_of_2(ch)))
    return -(-m // ch), ch, bt


def _split_scratch(dev, groups: int, ns: int, gc: int, dp: int):
    key = (str(dev), groups, ns, gc, dp)
    if key not in _SPLIT_SCRATCH:
        rows = groups * ns * gc
        _SPLIT_SCRATCH[key] = (torch.empty(rows, dtype=torch.float32, device=dev),
                               torch.empty(rows, dtype=torch.float32, device=dev),
                               torch.empty(rows * dp, dtype=torch.float32, device=dev),
                               torch.zeros(groups, dtype=torch.int32, device=dev))
    return _SPLIT_SCRATCH[key]


def split_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, m: int,
                           scale: float | None = None, *, splits: int | None = None, block_tokens: int = 64,
                           num_warps: int | None = None, combine: str = "last", dot: bool | None = None) -> torch.Tensor:
    """:func:`dense_decode_attention` (same arguments and result) split over the context: program (g, s) of
    a (B·KVH, S) grid runs the online softmax of the G query heads of KV group g over its CH tokens and
    writes (m_s, l_s, acc_s); ``out = Σ_s exp(m_s - M) acc_s / Σ_s exp(m_s - M) l_s``, M = max_s m_s
    (flash-decoding, Dao et al. 2023).

    ``splits`` / ``block_tokens``: :func:`split_plan`; ``num_warps`` defaults to 2 for blocks of up to 32
    tokens, else 4 (the fastest measured, module docstring). ``combine``: ``"last"`` (one launch: the group's last
    program to finish combines, counted by an int32 counter it resets to 0) or ``"kernel"`` (a second launch).
    ``dot``: scores and P·V by ``tl.dot`` on the G heads padded to 16 rows (default for G >= 2), else
    elementwise on the CUDA cores (default for MHA, G = 1; BT then capped so that G·BT·d_pad <= 8192). The
    partials and counters are allocated once per (device, shape) and reused, so a call is CUDA-graph
    capturable after one eager call of the same shape; calls sharing them must not run concurrently (one
    stream)."""
    bsz, h, d, kvh, mmax = _check(q, k_cache, v_cache, m)
    if combine not in ("last", "kernel"):
        raise ValueError(f"unknown combine {combine!r}")
    grp, groups = h // kvh, bsz * kvh
    use_dot = grp >= 2 if dot is None else bool(dot)
    ns, ch, bt = split_plan(m, groups, q.device, splits, block_tokens)
    gc, dp = triton.next_power_of_2(grp), max(16, triton.next_power_of_2(d))
    gq = max(16, gc) if use_dot else gc
    if not use_dot:  # the broadcast product is [G, BT, DP] floats: at most 8192 (64 per thread at 4 warps)
        bt = min(bt, max(16, 8192 // (gc * dp)))
    sc = max(1, min(triton.next_power_of_2(ns), 8192 // (gc * dp)))
    if num_warps is None:
        num_warps = 2 if bt <= 32 else 4
    pm, pl, pa, cnt = _split_scratch(q.device, groups, ns, gc, dp)
    out = torch.empty(bsz, h, d, dtype=torch.bfloat16, device=q.device)
    sm_scale = scale if scale is not None else 1.0 / math.sqrt(d)
    last = combine == "last"
    _split_kernel[(groups, ns)](q.contiguous(), k_cache, v_cache, out, pm, pl, pa, cnt, m, d, mmax, ch, ns, sm_scale,
                                G=grp, GQ=gq, GC=gc, DP=dp, BT=bt, SC=sc, USE_DOT=use_dot,
                                DOT_F32=not (q.is_cuda and not INTERPRET), LAST=last, num_warps=num_warps,
                                **pdl_kw(q.device))
    if not last:
        _split_combine_kernel[(groups,)](pm, pl, pa, out, ns, d, G=grp, GC=gc, DP=dp, SC=sc, num_warps=num_warps)
    return out
