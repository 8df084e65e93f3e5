"""Single-token FP4 (NVFP4, MXFP4) GEMV with the whole activation row in registers as fp16 pairs (decode
batch 1), with the decode step's RMSNorm / SubLN, GLU gating and residual add fused in.

The weight layout is :mod:`.fp4`'s (element ``8j + s`` of a row is nibble ``s`` of int32 word ``j``). Nibbles
``s`` and ``s + 4`` sit 16 bits apart, so one word is four fp16x2 pairs ``(s, s + 4)``, ``s = 0..3``; pair
``s`` is decoded with two shifts, two masks and an OR (PTX ``lop3``)::

    h_s = ((w << (9 - 4s)) & 0x0E000E00) | ((w << (12 - 4s)) & 0x80008000)   (shifts right where negative)

which read as fp16x2 is the two E2M1 values times ``2^-14`` exactly (the E2M1 subnormal 0.5 lands on fp16's
subnormal 2^-15; :mod:`.fp4` docstring). The activation pair word ``p_s`` holds ``x[8j+s]`` and
``x[8j+s+4]`` as fp16 times ``2^14 r`` (``r``: the power of two that brings the row's absmax into [1, 2)),
so ``fma.rn.f16x2`` of ``h_s`` and ``p_s`` gives ``E2M1 · x · r`` with no further scaling. One inline-PTX call
takes two consecutive words (an NVFP4 block, half an MXFP4 block): its 16 products are summed in one fp16x2
accumulator (8 per half, each of magnitude < 12: no overflow), the two halves added in float32; each call's
sum is multiplied by its block scale and accumulated in float32::

    y = sum_pairs scale_b · S_pair · out,   out = 2^8 s_global / r (NVFP4, E4M3 read as value · 2^-8)
                                                 = 1 / r           (MXFP4, E8M0 exact)

Error: the fp16 products and sums of one call round to 11 significant bits, at most about ``15 · 2^-11`` of
the call's sum of ``|w x|`` and far less on random data (tests/models/gpu/test_fp4row.py checks ``2^-8`` on
the GPU; the interpreter's float32 form is near exact); activations below ``2^-24 / (2^14 r)`` of the absmax
become fp16 subnormals or zero. DESIGN ASSUMPTION: for a bf16 GEMV output (8 significant bits) this
partial-sum precision is enough; the float32 kernels of :mod:`.fp4` stay for more than one token. Measured on
an H200 (bench/gpu_fp4_probe.py, cold weights): 1.3-2.1x faster than :mod:`.fp4`'s GEMV, e.g. 17280x3200
16.3 vs 35.8 µs, 14336x4096 15.1 vs 32.2 (2.2 TB/s).

Grid, prologue, tiles and the residual epilogue are those of :mod:`.rowgemv`'s ternary kernel: a persistent
grid whose programs each build the pair words of the whole row (gating and RMSNorm first, the same float32
ops as the torch sequence they replace) and then stream ``[BLOCK_N, KW]`` weight tiles, the next one loaded
before the current one is reduced. For Wqkv the epilogue can be :func:`.fused.rope_append`'s RoPE + KV
append (:class:`.rowgemv.Rope`, the ternary kernel's epilogue too: one launch fewer per layer). The Triton
interpreter has no inline PTX; there the pair products are evaluated in float32 (``USE_ASM`` off).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .fp4 import FP4Weight, _block_scale_f32
from .rowgemv import GATES, Rope, _row_in, _row_launch, _row_norm, next_tiles, row_tiles, store_row_out
from .ternary import INTERPRET, autotune, pdl_kw, pdl_launch, pdl_wait

__all__ = ["fp4_gemv_row", "fp4_norm_gemv", "fp4_gate_gemv", "tune_cold", "COLD_CONFIGS", "Rope", "TILE8_MIN_KWP"]

# Rows of at least this many words (K > 4500) are read as [words, 8] tiles (_row8), shorter ones by eight strided
# loads (_pair_words). Measured on one H100 lease, 3200x8640 NVFP4, configs BLOCK_N/PER_SM/warps 2/2/4, 2/4/4,
# 4/4/4 (reports/gpu-probes/fp4-prologue-h100-{strided,tile8}.json, bench/gpu_fp4_longk_probe.py): plain
# 18.2/14.7/15.2 -> 15.6/11.6/14.0 µs; with the decode prologue (ReLU² gating, SubLN, residual) 20.6/25.1/22.1 ->
# 19.1/21.4/17.2; cold-tuned 20.5 -> 15.0 µs (fp4-longk-h100-{strided,tile8}.json, two leases). Shorter rows keep
# the strided loads: not compared on one lease (8640x3200 cold-tuned 11.95 -> 12.44 µs across two leases)
TILE8_MIN_KWP = tl.constexpr(1024)

# two consecutive weight words (an NVFP4 block, half an MXFP4 block) against their eight pair words: 16 products
_PAIR_ASM = """shl.b32 t, {w}, {a}; and.b32 t, t, 0x0E000E00; shl.b32 u, {w}, {b}; and.b32 u, u, 0x80008000; or.b32 h, t, u;
fma.rn.f16x2 acc, h, {p}, acc;
"""
_WORD2_ASM = tl.constexpr("{\n.reg .b32 t, u, h, acc;\n.reg .f16 lo, hi;\n.reg .f32 flo, fhi;\nmov.b32 acc, 0;\n" + "".join(
    _PAIR_ASM.format(w=w, p=p, a=a, b=b) for w, ps in (("$1", "$3 $4 $5 $6"), ("$2", "$7 $8 $9 $10"))
    for p, (a, b) in zip(ps.split(), ((9, 12), (5, 8), (1, 4), (-3, 0)), strict=True))
    .replace("shl.b32 t, $1, -3", "shr.b32 t, $1, 3").replace("shl.b32 t, $2, -3", "shr.b32 t, $2, 3")
    .replace("shl.b32 u, $1, 0;", "mov.b32 u, $1;").replace("shl.b32 u, $2, 0;", "mov.b32 u, $2;")
    + "mov.b32 {lo, hi}, acc;\ncvt.f32.f16 flo, lo;\ncvt.f32.f16 fhi, hi;\nadd.f32 $0, flo, fhi;\n}")


@triton.jit
def _half_f32(p, HI: tl.constexpr):
    # one fp16 half of an int32 pair word as float32
    if HI:
        b = (p >> 16) & 0xFFFF
    else:
        b = p & 0xFFFF
    return b.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _pair_f32(w, s: tl.constexpr, HI: tl.constexpr):
    # E2M1 value * 2^-14 of nibble s (+4 if HI) of w as float32 (the fp16 bits of the module docstring)
    sh: tl.constexpr = 4 * s + 16 * HI
    n = (w >> sh) & 15
    bits = ((n & 7) << 9) | ((n & 8) << 12)
    return bits.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _word_dot(w, p0, p1, p2, p3):
    """Per weight word of ``w`` [BLOCK_N, W]: the sum of its 8 products with the pair words, in float32 (the
    interpreter's form of the asm)."""
    r = tl.zeros(w.shape, tl.float32)
    for s in tl.static_range(4):
        if s == 0:
            p = p0
        elif s == 1:
            p = p1
        elif s == 2:
            p = p2
        else:
            p = p3
        r += _pair_f32(w, s, 0) * _half_f32(p, 0)[None, :] + _pair_f32(w, s, 1) * _half_f32(p, 1)[None, :]
    return r


@triton.jit
def _block_dot(we, wo, pe0, pe1, pe2, pe3, po0, po1, po2, po3, USE_ASM: tl.constexpr):
    """Per pair of weight words (``we`` even, ``wo`` odd, [BLOCK_N, W/2]): the sum of their 16 products."""
    if USE_ASM:
        r = tl.inline_asm_elementwise(_WORD2_ASM, "=f,r,r,r,r,r,r,r,r,r,r",
                                      [we, wo, pe0[None, :], pe1[None, :], pe2[None, :], pe3[None, :], po0[None, :],
                                       po1[None, :], po2[None, :], po3[None, :]], dtype=tl.float32, is_pure=True, pack=1)
    else:
        r = _word_dot(we, pe0, pe1, pe2, pe3) + _word_dot(wo, po0, po1, po2, po3)
    return r


@triton.jit
def _split2(p, W2: tl.constexpr):
    # words 2i and 2i + 1 of a [2 W2] row
    return tl.split(tl.reshape(p, [W2, 2]))


@triton.jit
def _pair_words(x_ptr, rj, K, GATE: tl.constexpr):
    """The 8 float32 elements ``8j + s`` of words ``rj`` (gated when GATE) and their sum of squares."""
    kk = rj * 8
    v0 = _row_in(x_ptr, kk, K, GATE)
    v1 = _row_in(x_ptr, kk + 1, K, GATE)
    v2 = _row_in(x_ptr, kk + 2, K, GATE)
    v3 = _row_in(x_ptr, kk + 3, K, GATE)
    v4 = _row_in(x_ptr, kk + 4, K, GATE)
    v5 = _row_in(x_ptr, kk + 5, K, GATE)
    v6 = _row_in(x_ptr, kk + 6, K, GATE)
    v7 = _row_in(x_ptr, kk + 7, K, GATE)
    ss = tl.sum(v0 * v0 + v1 * v1 + v2 * v2 + v3 * v3 + v4 * v4 + v5 * v5 + v6 * v6 + v7 * v7, axis=0)
    return v0, v1, v2, v3, v4, v5, v6, v7, ss


@triton.jit
def _norm8(v0, v1, v2, v3, v4, v5, v6, v7, inv, g_ptr, rj, K):
    kk = rj * 8
    return (_row_norm(v0, inv, g_ptr, kk, K), _row_norm(v1, inv, g_ptr, kk + 1, K), _row_norm(v2, inv, g_ptr, kk + 2, K),
            _row_norm(v3, inv, g_ptr, kk + 3, K), _row_norm(v4, inv, g_ptr, kk + 4, K), _row_norm(v5, inv, g_ptr, kk + 5, K),
            _row_norm(v6, inv, g_ptr, kk + 6, K), _row_norm(v7, inv, g_ptr, kk + 7, K))


@triton.jit
def _absmax8(v0, v1, v2, v3, v4, v5, v6, v7):
    a = tl.maximum(tl.maximum(tl.abs(v0), tl.abs(v1)), tl.maximum(tl.abs(v2), tl.abs(v3)))
    b = tl.maximum(tl.maximum(tl.abs(v4), tl.abs(v5)), tl.maximum(tl.abs(v6), tl.abs(v7)))
    return tl.max(tl.maximum(a, b), axis=0)


@triton.jit
def _row8(x_ptr, rj, K, GATE: tl.constexpr):
    """Elements ``8j + s`` (s = 0..7) of words ``rj`` as a float32 [len(rj), 8] tile, gated when GATE: one
    contiguous 16-byte load per word, where :func:`_pair_words`' eight loads of every eighth element fetch
    each sector eight times (rows of at least ``TILE8_MIN_KWP`` words)."""
    return _row_in(x_ptr, _tile8(rj), K, GATE)


@triton.jit
def _tile8(rj):
    # element indices 8j + s of words rj: [len(rj), 8]
    return rj[:, None] * 8 + tl.arange(0, 8)[None, :]


@triton.jit
def _norm_tile(t, inv, g_ptr, rj, K):
    return _row_norm(t, inv, g_ptr, _tile8(rj), K)


@triton.jit
def _split8(t, W: tl.constexpr):
    """The eight columns of a [W, 8] tile (column s = 4a + 2b + c of the [W, 2, 2, 2] view; tl.split takes
    the last axis)."""
    even, odd = tl.split(tl.reshape(t, [W, 2, 2, 2]))
    e0, e2 = tl.split(even)
    o1, o3 = tl.split(odd)
    v0, v4 = tl.split(e0)
    v2, v6 = tl.split(e2)
    v1, v5 = tl.split(o1)
    v3, v7 = tl.split(o3)
    return v0, v1, v2, v3, v4, v5, v6, v7


@triton.jit
def _sum_sq(t):
    return tl.sum(tl.sum(t * t, axis=1), axis=0)


@triton.jit
def _absmax(t):
    return tl.max(tl.max(tl.abs(t), axis=1), axis=0)


@triton.jit
def _pack_pair(lo, hi, c):
    # fp16(lo * c) in bits 0-15, fp16(hi * c) in bits 16-31 (c a power of two: exact for normal results)
    bl = (lo * c).to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
    bh = (hi * c).to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
    return bl | (bh << 16)


@triton.jit
def _fp4_row_kernel(x_ptr, w_ptr, s_ptr, r_ptr, y_ptr, g_ptr, N, KW, K, stride_wn, stride_sn, gmul, eps_n,
                    cos_ptr, sin_ptr, kc_ptr, vc_ptr, H, KVH, D, DC, MMAX, POS,
                    BLOCK_N: tl.constexpr, KWP: tl.constexpr, IS_NV: tl.constexpr, RESIDUAL: tl.constexpr,
                    USE_ASM: tl.constexpr, PER_SM, PIPE: tl.constexpr, NORM: tl.constexpr, GATE: tl.constexpr = 0,
                    KWT: tl.constexpr = 0, ROPE: tl.constexpr = False, PDL: tl.constexpr = False):
    # PER_SM and PIPE only size the grid / match rowgemv's config keys (always prefetch into registers);
    # KWT > 0: words KWP .. KWP+KWT-1 are a tail tile (rowgemv.row_tiles)
    WPB: tl.constexpr = 2 if IS_NV else 4  # words per scale block
    pdl_launch(PDL)
    pid = tl.program_id(0)
    NPROG = tl.num_programs(0)
    rj = tl.arange(0, KWP)
    j_ok = rj < KW
    rn0 = tl.arange(0, BLOCK_N)
    n_blocks = tl.cdiv(N, BLOCK_N)
    if KWT > 0:
        rt = KWP + tl.arange(0, KWT)
    else:
        rt = rj
    t_ok = rt < KW
    rn = pid * BLOCK_N + rn0
    w = tl.load(w_ptr + rn[:, None] * stride_wn + rj[None, :], mask=(rn < N)[:, None] & j_ok[None, :], other=0)
    wt = tl.load(w_ptr + rn[:, None] * stride_wn + rt[None, :], mask=(rn < N)[:, None] & t_ok[None, :], other=0)
    pdl_wait(PDL)
    if KWP >= TILE8_MIN_KWP:  # long rows: the row as [words, 8] tiles (_row8)
        xv = _row8(x_ptr, rj, K, GATE)
        if KWT > 0:
            xt = _row8(x_ptr, rt, K, GATE)
        if NORM:
            ss = _sum_sq(xv)
            if KWT > 0:
                ss += _sum_sq(xt)
            inv = 1.0 / tl.sqrt(ss / K + eps_n)
            xv = _norm_tile(xv, inv, g_ptr, rj, K)
            if KWT > 0:
                xt = _norm_tile(xt, inv, g_ptr, rt, K)
        mx = _absmax(xv)
        if KWT > 0:
            mx = tl.maximum(mx, _absmax(xt))
        v0, v1, v2, v3, v4, v5, v6, v7 = _split8(xv, KWP)
        if KWT > 0:
            u0, u1, u2, u3, u4, u5, u6, u7 = _split8(xt, KWT)
    else:
        v0, v1, v2, v3, v4, v5, v6, v7, ss = _pair_words(x_ptr, rj, K, GATE)
        if KWT > 0:
            u0, u1, u2, u3, u4, u5, u6, u7, ss_t = _pair_words(x_ptr, rt, K, GATE)
            ss += ss_t
        if NORM:
            inv = 1.0 / tl.sqrt(ss / K + eps_n)
            v0, v1, v2, v3, v4, v5, v6, v7 = _norm8(v0, v1, v2, v3, v4, v5, v6, v7, inv, g_ptr, rj, K)
            if KWT > 0:
                u0, u1, u2, u3, u4, u5, u6, u7 = _norm8(u0, u1, u2, u3, u4, u5, u6, u7, inv, g_ptr, rt, K)
        mx = _absmax8(v0, v1, v2, v3, v4, v5, v6, v7)
        if KWT > 0:
            mx = tl.maximum(mx, _absmax8(u0, u1, u2, u3, u4, u5, u6, u7))
    # r = 2^(127 - E) for the biased exponent E of the absmax: max |x r| in [1, 2)
    e = tl.minimum((mx.to(tl.int32, bitcast=True) >> 23) & 255, 253)
    r = ((254 - e) << 23).to(tl.float32, bitcast=True)
    c = r * 16384.0
    p0 = _pack_pair(v0, v4, c)
    p1 = _pack_pair(v1, v5, c)
    p2 = _pack_pair(v2, v6, c)
    p3 = _pack_pair(v3, v7, c)
    if KWT > 0:
        q0 = _pack_pair(u0, u4, c)
        q1 = _pack_pair(u1, u5, c)
        q2 = _pack_pair(u2, u6, c)
        q3 = _pack_pair(u3, u7, c)
    else:
        q0, q1, q2, q3 = p0, p1, p2, p3
    # even and odd words apart: the weight loop takes two words (16 products) per asm call
    W2: tl.constexpr = KWP // 2
    T2: tl.constexpr = KWT // 2 if KWT > 0 else KWP // 2
    pe0, po0 = _split2(p0, W2)
    pe1, po1 = _split2(p1, W2)
    pe2, po2 = _split2(p2, W2)
    pe3, po3 = _split2(p3, W2)
    qe0, qo0 = _split2(q0, T2)
    qe1, qo1 = _split2(q1, T2)
    qe2, qo2 = _split2(q2, T2)
    qe3, qo3 = _split2(q3, T2)
    ri = tl.arange(0, W2)
    if KWT > 0:
        rti = W2 + tl.arange(0, T2)
    else:
        rti = ri
    out = gmul / r
    for nb in range(pid, n_blocks, NPROG):
        rn = nb * BLOCK_N + rn0
        w_next, wt_next = next_tiles(w_ptr, rn + NPROG * BLOCK_N, N, stride_wn, rj, j_ok, rt, t_ok, KWT)
        n_ok = rn < N
        acc = _scaled_sum(w, rn, ri, KW, pe0, pe1, pe2, pe3, po0, po1, po2, po3, s_ptr, stride_sn, n_ok, IS_NV, WPB,
                          USE_ASM, BLOCK_N, W2)
        if KWT > 0:
            acc += _scaled_sum(wt, rn, rti, KW, qe0, qe1, qe2, qe3, qo0, qo1, qo2, qo3, s_ptr, stride_sn, n_ok, IS_NV,
                               WPB, USE_ASM, BLOCK_N, T2)
        y = (acc * out).to(tl.bfloat16)
        store_row_out(y, rn, n_ok, nb, N, r_ptr, y_ptr, cos_ptr, sin_ptr, kc_ptr, vc_ptr, H, KVH, D, DC, MMAX, POS,
                      RESIDUAL, ROPE, BLOCK_N)
        w = w_next
        wt = wt_next


@triton.jit
def _scaled_sum(w, rn, ri, KW, pe0, pe1, pe2, pe3, po0, po1, po2, po3, s_ptr, stride_sn, n_ok, IS_NV: tl.constexpr,
                WPB: tl.constexpr, USE_ASM: tl.constexpr, BLOCK_N: tl.constexpr, W2: tl.constexpr):
    # sum over the tile's word pairs ri (words 2 ri, 2 ri + 1) of block scale x pair sum: [BLOCK_N] float32
    we, wo = tl.split(tl.reshape(w, [BLOCK_N, W2, 2]))
    sc = tl.load(s_ptr + rn[:, None] * stride_sn + (ri // (WPB // 2))[None, :],
                 mask=n_ok[:, None] & (2 * ri < KW)[None, :], other=0).to(tl.int32)
    return tl.sum(_block_dot(we, wo, pe0, pe1, pe2, pe3, po0, po1, po2, po3, USE_ASM) * _block_scale_f32(sc, IS_NV),
                  axis=1)


# DESIGN ASSUMPTION: the ternary whole-row configs (rowgemv) with the tile budget doubled for the twice wider
# FP4 rows; the autotuner picks among them per shape
_ROW_CONFIGS = [
    triton.Config({"BLOCK_N": bn, "PER_SM": ps, "PIPE": 0}, num_warps=nw, num_stages=1)
    for bn, ps, nw in [(8, 4, 4), (4, 4, 4), (8, 2, 8), (4, 2, 8), (2, 4, 4), (16, 2, 8)]
]


def _prune(configs, named_args, **kw):
    kwp = kw.get("KWP", named_args.get("KWP", 256)) + kw.get("KWT", named_args.get("KWT", 0))
    return [c for c in configs if c.kwargs["BLOCK_N"] * kwp <= 8192 and (c.num_warps == 4 or kwp > 256)] or configs[4:5]


_fp4_row_tuned = autotune(_ROW_CONFIGS, key=["N", "KW", "IS_NV", "RESIDUAL", "NORM", "GATE", "ROPE"],
                          prune_configs_by={"early_config_prune": _prune})(_fp4_row_kernel)


# Cold-weight tuning (tune_cold): the autotuner times with the weight L2-resident, where its pick for the rows of
# > 512 words ran 10-20 % slower than the best config once the weights came from HBM (H200: 3200x8640 16.8 vs
# 15.0 µs, 4096x14336 25.1 vs 22.3). Candidates: the configs within 10 % of the fastest on some shape there.
COLD_CONFIGS = [{"BLOCK_N": bn, "PER_SM": ps, "num_warps": nw}
                for bn, ps, nw in [(4, 4, 4), (4, 2, 8), (2, 2, 4), (1, 4, 4), (2, 4, 4), (4, 1, 8)]]
_COLD: dict[tuple, dict] = {}
# programmatic dependent launch (ternary.pdl_kw) for this kernel unless LOWBIT_GPU_PDL=0: measured on an H200 with
# every decode kernel so launched, the FP4 decode step took BitNet-3B 1702 -> 1658 µs, 2B4T 1571 -> 1447 µs
PDL_ROW = os.environ.get("LOWBIT_GPU_PDL", "1") != "0"


def _key(w: FP4Weight, residual, norm, gate, rope) -> tuple:
    return (w.n, w.words.shape[1], w.fmt, residual is not None, norm is not None, gate, rope is not None)


def tune_cold(calls: list[dict]) -> tuple[dict, dict]:
    """Time every :data:`COLD_CONFIGS` entry (that fits the tile budget) on ``calls`` — keyword sets of
    :func:`fp4_gemv_row` for one shape and prologue, each on a distinct weight, together larger than the L2 —
    in one CUDA graph each; the fastest becomes that key's config for later calls. Returns it and the µs of
    every candidate."""
    from .bench import bench_graph  # the bench's cold-weight CUDA-graph timing

    w = calls[0]["w"]
    kwp, kwt = row_tiles(w.words.shape[1])
    times = {}
    for cfg in COLD_CONFIGS:
        if cfg["BLOCK_N"] * (kwp + kwt) > 8192 or (cfg["BLOCK_N"] < 2 and calls[0].get("rope") is not None):
            continue
        times[f"{cfg['BLOCK_N']}/{cfg['PER_SM']}/{cfg['num_warps']}"] = (
            bench_graph([lambda c=c, cfg=cfg: fp4_gemv_row(config=dict(cfg), **c) for c in calls]), cfg)
    best = min(times.values(), key=lambda t: t[0])[1]
    c0 = calls[0]
    _COLD[_key(w, c0.get("residual"), c0.get("norm"), c0.get("gate"), c0.get("rope"))] = best
    return best, {k: round(v[0], 2) for k, v in times.items()}


def fp4_gemv_row(x: torch.Tensor, w: FP4Weight, residual: torch.Tensor | None = None, norm: torch.Tensor | None = None,
                 norm_eps: float = 1e-6, gate: str | None = None, config: dict | None = None,
                 rope: Rope | None = None) -> torch.Tensor:
    """bf16 ``x`` [1, K] times FP4 ``w`` [N, K]^T -> bf16 [1, N] (+ ``residual``). ``gate`` ('swiglu' or
    'relu2', ``x`` = [gate | up] of [1, 2K]): the GLU ``bf16(bf16(act(gate)) · up)`` first; ``norm`` (bf16
    [K]): then the RMSNorm ``bf16(x · rsqrt(mean(x²) + eps) · g)`` (float32 sum of squares in another order
    than torch's). ``rope`` (``w`` = Wqkv): the output is not stored; :func:`.fused.rope_append`'s RoPE and KV
    append run on it instead and the rotated queries are returned (``rope.q``)."""
    x = x.contiguous()
    kx = 2 * w.k if gate is not None else w.k
    if x.dim() != 2 or x.shape[0] != 1 or x.shape[1] != kx:
        raise ValueError(f"x must be [1, {kx}], got {tuple(x.shape)}")
    if gate is not None and gate not in GATES:
        raise ValueError(f"gate must be one of {sorted(GATES)}, got {gate!r}")
    dev = x.device
    if config is None:
        config = _COLD.get(_key(w, residual, norm, gate, rope))
    if rope is not None:
        rope.check(w.n)
        y = rope.q
        if config is not None and config["BLOCK_N"] < 2:
            config = {**config, "BLOCK_N": 2}
        ra = rope.args()
    else:
        y = torch.empty(1, w.n, dtype=torch.bfloat16, device=dev)
        ra = (y, y, y, y, 0, 0, 1, 1, 1, 0)
    r = residual if residual is not None else y
    g = norm if norm is not None else y
    gmul = 256.0 * w.gscale if w.fmt == "nvfp4" else 1.0
    kw = w.words.shape[1]
    args = (x, w.words, w.scales, r, y, g, w.n, kw, w.k, w.words.stride(0), w.scales.stride(0), gmul, norm_eps, *ra)
    flags = dict(IS_NV=w.fmt == "nvfp4", RESIDUAL=residual is not None, USE_ASM=dev.type == "cuda" and not INTERPRET,
                 NORM=norm is not None, GATE=GATES.get(gate, 0), ROPE=rope is not None, **pdl_kw(dev, PDL_ROW))
    _row_launch(_fp4_row_kernel, _fp4_row_tuned, args, flags, w.n, kw, config, dev)
    return y


def fp4_norm_gemv(x: torch.Tensor, g: torch.Tensor | None, eps: float, w: FP4Weight, residual=None,
                  rope: Rope | None = None) -> torch.Tensor:
    """``fp4_gemv(rms_norm(x, g), w) [+ residual]``: one launch for one token, the torch ops otherwise
    (``rope``: one token only)."""
    from .fp4 import fp4_gemv

    if x.shape[0] == 1:
        return fp4_gemv_row(x, w, residual=residual, norm=g, norm_eps=eps, rope=rope)
    if rope is not None:
        raise ValueError(f"the RoPE epilogue takes one token, got {x.shape[0]}; run fused.rope_append on the GEMV "
                         "output instead")
    n = torch.nn.functional.rms_norm(x, (x.shape[-1],), g, eps) if g is not None else x
    y = fp4_gemv(n, w)
    return y if residual is None else residual + y


def fp4_gate_gemv(h: torch.Tensor, act: str, g: torch.Tensor | None, eps: float, w: FP4Weight,
                  residual=None) -> torch.Tensor:
    """Down projection of a GLU FFN from ``h`` = [gate | up] (bf16 [M, 2F]): GLU [+ SubLN] + FP4 GEMV
    [+ residual]; one launch for one token."""
    from .fp4 import fp4_gemv

    if h.shape[0] == 1:
        return fp4_gemv_row(h, w, residual=residual, norm=g, norm_eps=eps, gate=act)
    f = h.shape[-1] // 2
    a, u = h[:, :f], h[:, f:]
    a = torch.nn.functional.silu(a) if act == "swiglu" else torch.relu(a).square()
    n = a * u
    if g is not None:
        n = torch.nn.functional.rms_norm(n, (f,), g, eps)
    y = fp4_gemv(n, w)
    return y if residual is None else residual + y
