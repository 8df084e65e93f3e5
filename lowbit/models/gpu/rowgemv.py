"""Single-token ternary GEMV that holds the whole quantized activation row in registers (decode batch 1).

Design of this module: a persistent grid (a few programs per SM) in which every program first turns the
activation row into the form the weight loop consumes — the per-token INT8 quantizer
(``sim.numerics.int8.int8_absmax_quantize``: absmax, ``s = 127 * (1/max)``, RNE in float64, the ops of
:func:`.ternary.quant_i8`) packed into the four dp4a slot words of the :mod:`.ternary` layout — and then streams row blocks ``pid, pid + P, pid + 2P, ...`` of the weight, each
block one ``[BLOCK_N, KW]`` tile covering the whole reduction. The quantizer therefore runs ``P`` times per
call (P ≈ 2-4 × SM count) instead of once per output tile, and each weight tile is a single wide load
that the pipeliner prefetches while the previous block is reduced: the kernel is one launch that only
streams weights, the property a bandwidth-bound GEMV needs.

Ternary inner step per weight word ``w`` (element ``16j + 4t + b`` at bits ``8b + 2t``)::

    S_j = dp4a(w & M, a0_j, dp4a((w >> 2) & M, a1_j, dp4a((w >> 4) & M, a2_j, dp4a((w >> 6) & M, a3_j, 0))))

with ``M = 0x03030303``: the codes ``c = w + 1`` of four consecutive elements against the four INT8
activations of word ``a_t``; ``acc = sum_j S_j - sum_k q_k`` (exact INT32, the same integers as the
tiled kernel of :mod:`.ternary`). ``>>`` is arithmetic; the sign fill only reaches bits the mask drops.

The whole-row tile is ``next_pow2(K/16)`` words wide; where that pads the row by more than 45 % (K = 8640:
540 of 1024 words) the row is a power-of-two main tile plus a power-of-two tail tile instead (512 + 32
words; :func:`row_tiles`). Measured on an H200 for 3200x8640 (reports/gpu-baseline.md as of commit 417a8ad):
6.7 µs with the quantizer fused, where the tiled kernel of :mod:`.ternary` took 9.7 µs (6.0 vs 6.7 µs
pre-quantized), so every single-token GEMV runs here. A same-layout FP4 variant (float32 row in registers) measured
1.5-3x slower than the tiled FP4 GEMV there and is not kept.

Epilogues: the bf16 output (``ws · acc / s``), plus a bf16 residual, or, for Wqkv (:class:`Rope`), the RoPE +
KV append of :func:`.fused.rope_append` on that bf16 output (q rotated into the queries' buffer, k rotated and
v as it is into the caches' row ``pos``; the same float32 ops and bf16 roundings, bit-identical): with the
RMSNorm prologue (:func:`norm_gemv`) the whole norm + quantizer + Wqkv + RoPE + append chain of one token is
one launch. :mod:`.fp4row`'s FP4 kernel shares this epilogue.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .ternary import INTERPRET, absmax_scale, autotune, dp4a, pdl_kw, pdl_launch, pdl_wait, quant_i8, sm_count

__all__ = ["ternary_gemv_row", "row_kernel_fits", "row_tiles", "norm_gemv", "gate_gemv", "n_programs", "Rope"]


def n_programs(n_blocks: int, per_sm: int, device) -> int:
    """Persistent grid size: ``per_sm`` programs per SM, never more than there are row blocks."""
    sms = sm_count(device.index or 0) if device.type == "cuda" else 4
    return max(1, min(n_blocks, per_sm * sms))


@triton.jit
def _pack4(q, rb):
    # int32 codes [KWP, 4] (four consecutive elements) -> one int32 word of their int8 bytes
    return tl.sum((q & 255) << (8 * rb)[None, :], axis=1)


@triton.jit
def _row_in(x_ptr, kk, K, GATE: tl.constexpr):
    """Activation elements ``kk`` as float32: x itself (GATE 0) or, for x = [gate | up] (2K wide), the GLU
    ``bf16(bf16(act(gate)) * up)`` with act SiLU (GATE 1) or ReLU² (GATE 2): the ops of
    ``fused.gate_quant``."""
    v = tl.load(x_ptr + kk, mask=kk < K, other=0.0).to(tl.float32)
    if GATE != 0:
        up = tl.load(x_ptr + K + kk, mask=kk < K, other=0.0).to(tl.float32)
        if GATE == 1:
            a = (v / (1.0 + tl.exp(-v))).to(tl.bfloat16)
        else:
            r = tl.maximum(v, 0.0)
            a = (r * r).to(tl.bfloat16)
        v = (a.to(tl.float32) * up).to(tl.bfloat16).to(tl.float32)
    return v


@triton.jit
def _row_quant_words(x0, x1, x2, x3, s64, rb):
    """Float32 slot values [W, 4] -> the four packed INT8 slot words [W] and their code sum."""
    q0 = quant_i8(x0.to(tl.float64), s64)
    q1 = quant_i8(x1.to(tl.float64), s64)
    q2 = quant_i8(x2.to(tl.float64), s64)
    q3 = quant_i8(x3.to(tl.float64), s64)
    # the code sum before the packing: packed first, the fused 1024-word kernel took 180 registers instead of 140
    # (Triton 3.6, sm_90a) and 4096x14336 ran 11.9 instead of 9.1 µs on an H200 (reports/gpu-baseline.md as of
    # commit 417a8ad; the current report's earlier-runs analysis: the fix did not restore 9.1 either)
    qsum = tl.sum(tl.sum(q0 + q1 + q2 + q3, axis=1), axis=0)
    return _pack4(q0, rb), _pack4(q1, rb), _pack4(q2, rb), _pack4(q3, rb), qsum


@triton.jit
def _row_norm(v, inv, g_ptr, kk, K):
    # bf16(x * rsqrt(mean(x^2) + eps) * g) in float32, the op order of fused.rmsnorm_quant
    return (v * inv * tl.load(g_ptr + kk, mask=kk < K, other=0.0).to(tl.float32)).to(tl.bfloat16).to(tl.float32)


@triton.jit
def _row_dot(w, a0, a1, a2, a3, USE_ASM: tl.constexpr):
    # the chained dp4a of the module docstring over one [BLOCK_N, W] tile: [BLOCK_N] partial sums
    s = dp4a((w >> 6) & 0x03030303, a3[None, :], tl.zeros_like(w), USE_ASM)
    s = dp4a((w >> 4) & 0x03030303, a2[None, :], s, USE_ASM)
    s = dp4a((w >> 2) & 0x03030303, a1[None, :], s, USE_ASM)
    s = dp4a(w & 0x03030303, a0[None, :], s, USE_ASM)
    return tl.sum(s, axis=1)


@triton.jit
def _tgemv_row_kernel(x_ptr, q_ptr, qsum_ptr, xs_ptr, w_ptr, ws_ptr, r_ptr, y_ptr, g_ptr, N, KW, K, stride_wn, eps,
                      eps_n, cos_ptr, sin_ptr, kc_ptr, vc_ptr, H, KVH, D, DC, MMAX, POS, BLOCK_N: tl.constexpr,
                      KWP: tl.constexpr, FUSED: tl.constexpr, OUT_ACC: tl.constexpr, RESIDUAL: tl.constexpr,
                      USE_ASM: tl.constexpr, PER_SM, PIPE: tl.constexpr, NORM: tl.constexpr, GATE: tl.constexpr = 0,
                      KWT: tl.constexpr = 0, ROPE: tl.constexpr = False, PDL: tl.constexpr = False):
    # PER_SM only sizes the grid (host side); NORM (with FUSED): RMSNorm with weight g before the quantizer;
    # GATE (with FUSED): x is [gate | up] and the row is their GLU (:func:`_row_in`); KWT > 0: words KWP ..
    # KWP+KWT-1 are a tail tile (:func:`row_tiles`); without one (KWT 0) the tail names alias the main tile's;
    # ROPE: the bf16 output goes through :func:`_rope_store` (y_ptr the rotated queries' buffer, BLOCK_N even)
    pdl_launch(PDL)
    pid = tl.program_id(0)
    NPROG = tl.num_programs(0)
    rj = tl.arange(0, KWP)
    rb = tl.arange(0, 4)
    j_ok = rj < KW
    rn0 = tl.arange(0, BLOCK_N)
    n_blocks = tl.cdiv(N, BLOCK_N)
    if KWT > 0:
        rt = KWP + tl.arange(0, KWT)
        t_ok = rt < KW
    else:  # unused: next_tiles takes the main tile twice
        rt, t_ok = rj, j_ok
    # the first weight tile is requested before the activation work, so the weight stream starts at once
    if not PIPE:
        rn = pid * BLOCK_N + rn0
        w = tl.load(w_ptr + rn[:, None] * stride_wn + rj[None, :], mask=(rn < N)[:, None] & j_ok[None, :], other=0)
        if KWT > 0:
            wt = tl.load(w_ptr + rn[:, None] * stride_wn + rt[None, :], mask=(rn < N)[:, None] & t_ok[None, :], other=0)
        else:
            wt = w
    pdl_wait(PDL)  # the activation row, residual and output only after the previous kernel
    if FUSED:
        kk = rj[:, None] * 16 + rb[None, :]  # [KWP, 4]: elements 16j + 4t + b of slot t = 0
        x0 = _row_in(x_ptr, kk, K, GATE)
        x1 = _row_in(x_ptr, kk + 4, K, GATE)
        x2 = _row_in(x_ptr, kk + 8, K, GATE)
        x3 = _row_in(x_ptr, kk + 12, K, GATE)
        if KWT > 0:
            kt = rt[:, None] * 16 + rb[None, :]
            y0 = _row_in(x_ptr, kt, K, GATE)
            y1 = _row_in(x_ptr, kt + 4, K, GATE)
            y2 = _row_in(x_ptr, kt + 8, K, GATE)
            y3 = _row_in(x_ptr, kt + 12, K, GATE)
        if NORM:
            ss = tl.sum(tl.sum(x0 * x0 + x1 * x1 + x2 * x2 + x3 * x3, axis=1), axis=0)
            if KWT > 0:
                ss += tl.sum(tl.sum(y0 * y0 + y1 * y1 + y2 * y2 + y3 * y3, axis=1), axis=0)
            inv = 1.0 / tl.sqrt(ss / K + eps_n)
            x0 = _row_norm(x0, inv, g_ptr, kk, K)
            x1 = _row_norm(x1, inv, g_ptr, kk + 4, K)
            x2 = _row_norm(x2, inv, g_ptr, kk + 8, K)
            x3 = _row_norm(x3, inv, g_ptr, kk + 12, K)
            if KWT > 0:
                y0 = _row_norm(y0, inv, g_ptr, kt, K)
                y1 = _row_norm(y1, inv, g_ptr, kt + 4, K)
                y2 = _row_norm(y2, inv, g_ptr, kt + 8, K)
                y3 = _row_norm(y3, inv, g_ptr, kt + 12, K)
        mx = tl.max(tl.maximum(tl.maximum(tl.abs(x0), tl.abs(x1)), tl.maximum(tl.abs(x2), tl.abs(x3))))
        if KWT > 0:
            mx = tl.maximum(mx, tl.max(tl.maximum(tl.maximum(tl.abs(y0), tl.abs(y1)),
                                                  tl.maximum(tl.abs(y2), tl.abs(y3)))))
        s64 = absmax_scale(mx, eps)
        a0, a1, a2, a3, qsum = _row_quant_words(x0, x1, x2, x3, s64, rb)
        if KWT > 0:
            t0, t1, t2, t3, qsum_t = _row_quant_words(y0, y1, y2, y3, s64, rb)
            qsum += qsum_t
        xs = s64.to(tl.float32)
    else:
        a0 = tl.load(q_ptr + 4 * rj, mask=j_ok, other=0)
        a1 = tl.load(q_ptr + 4 * rj + 1, mask=j_ok, other=0)
        a2 = tl.load(q_ptr + 4 * rj + 2, mask=j_ok, other=0)
        a3 = tl.load(q_ptr + 4 * rj + 3, mask=j_ok, other=0)
        if KWT > 0:
            t0 = tl.load(q_ptr + 4 * rt, mask=t_ok, other=0)
            t1 = tl.load(q_ptr + 4 * rt + 1, mask=t_ok, other=0)
            t2 = tl.load(q_ptr + 4 * rt + 2, mask=t_ok, other=0)
            t3 = tl.load(q_ptr + 4 * rt + 3, mask=t_ok, other=0)
        qsum = tl.load(qsum_ptr)
        xs = tl.load(xs_ptr)
    if KWT == 0:
        t0, t1, t2, t3 = a0, a1, a2, a3
    if PIPE:  # plain loop: Triton's pipeliner keeps num_stages - 1 tiles in flight (cp.async, shared memory)
        for nb in range(pid, n_blocks, NPROG):
            rn = nb * BLOCK_N + rn0
            w = tl.load(w_ptr + rn[:, None] * stride_wn + rj[None, :], mask=(rn < N)[:, None] & j_ok[None, :], other=0)
            if KWT > 0:
                wt = tl.load(w_ptr + rn[:, None] * stride_wn + rt[None, :], mask=(rn < N)[:, None] & t_ok[None, :],
                             other=0)
            else:
                wt = w
            _row_block(w, wt, nb, rn, a0, a1, a2, a3, t0, t1, t2, t3, qsum, xs, ws_ptr, r_ptr, y_ptr, N, cos_ptr,
                       sin_ptr, kc_ptr, vc_ptr, H, KVH, D, DC, MMAX, POS, OUT_ACC, RESIDUAL, USE_ASM, KWT, ROPE, BLOCK_N)
    else:  # the next tile is loaded (into registers) before the current one is reduced
        for nb in range(pid, n_blocks, NPROG):
            rn = nb * BLOCK_N + rn0
            w_next, wt_next = next_tiles(w_ptr, rn + NPROG * BLOCK_N, N, stride_wn, rj, j_ok, rt, t_ok, KWT)
            _row_block(w, wt, nb, rn, a0, a1, a2, a3, t0, t1, t2, t3, qsum, xs, ws_ptr, r_ptr, y_ptr, N, cos_ptr,
                       sin_ptr, kc_ptr, vc_ptr, H, KVH, D, DC, MMAX, POS, OUT_ACC, RESIDUAL, USE_ASM, KWT, ROPE, BLOCK_N)
            w = w_next
            wt = wt_next


@triton.jit
def next_tiles(w_ptr, rn_next, N, stride_wn, rj, j_ok, rt, t_ok, KWT: tl.constexpr):
    """The next row block's main tile (words ``rj``) and tail tile (words ``rt``; the main tile again when
    KWT is 0), loaded into registers before the current block is reduced."""
    w_next = tl.load(w_ptr + rn_next[:, None] * stride_wn + rj[None, :], mask=(rn_next < N)[:, None] & j_ok[None, :],
                     other=0)
    if KWT > 0:
        wt_next = tl.load(w_ptr + rn_next[:, None] * stride_wn + rt[None, :],
                          mask=(rn_next < N)[:, None] & t_ok[None, :], other=0)
    else:
        wt_next = w_next
    return w_next, wt_next


@triton.jit
def _row_block(w, wt, nb, rn, a0, a1, a2, a3, t0, t1, t2, t3, qsum, xs, ws_ptr, r_ptr, y_ptr, N, cos_ptr, sin_ptr,
               kc_ptr, vc_ptr, H, KVH, D, DC, MMAX, POS, OUT_ACC: tl.constexpr, RESIDUAL: tl.constexpr,
               USE_ASM: tl.constexpr, KWT: tl.constexpr, ROPE: tl.constexpr, BLOCK_N: tl.constexpr):
    # the dp4a sums of row block nb (rows rn; main tile [+ tail tile]), then the epilogue
    n_ok = rn < N
    yint = _row_dot(w, a0, a1, a2, a3, USE_ASM) - qsum
    if KWT > 0:
        yint += _row_dot(wt, t0, t1, t2, t3, USE_ASM)
    if OUT_ACC:
        tl.store(y_ptr + rn, yint, mask=n_ok)
    else:
        ws = tl.load(ws_ptr + rn, mask=n_ok, other=0.0)
        y = ((yint.to(tl.float32) * ws) / xs).to(tl.bfloat16)
        store_row_out(y, rn, n_ok, nb, N, r_ptr, y_ptr, cos_ptr, sin_ptr, kc_ptr, vc_ptr, H, KVH, D, DC, MMAX, POS,
                      RESIDUAL, ROPE, BLOCK_N)


@triton.jit
def store_row_out(y, rn, n_ok, nb, N, r_ptr, y_ptr, cos_ptr, sin_ptr, kc_ptr, vc_ptr, H, KVH, D, DC, MMAX, POS,
                  RESIDUAL: tl.constexpr, ROPE: tl.constexpr, BLOCK_N: tl.constexpr):
    """The bf16 epilogue of a whole-row GEMV's row block ``rn``: RoPE + KV append (:func:`_rope_store`), or
    the store of ``y`` [+ the bf16 residual, added in float32 and rounded as the unfused add]."""
    if ROPE:
        _rope_store(y, nb, N, cos_ptr, sin_ptr, y_ptr, kc_ptr, vc_ptr, H, KVH, D, DC, MMAX, POS, BLOCK_N)
    else:
        if RESIDUAL:
            y = (tl.load(r_ptr + rn, mask=n_ok, other=0.0).to(tl.float32) + y.to(tl.float32)).to(tl.bfloat16)
        tl.store(y_ptr + rn, y, mask=n_ok)


@triton.jit
def _rope_store(y, nb, N, cos_ptr, sin_ptr, q_ptr, kc_ptr, vc_ptr, H, KVH, D, DC, MMAX, POS, BLOCK_N: tl.constexpr):
    # the epilogue of fused.rope_append on the bf16 rows nb*BLOCK_N ..: q rows rotated into q [H, DC], k rows
    # rotated and v rows as they are into the caches' row POS ([KVH, MMAX, DC]); pairs (2i, 2i+1) of a head
    # (D and BLOCK_N even: a pair never spans two blocks or heads), rotated in float32 and rounded to bf16 as there
    e, o = tl.split(tl.reshape(y.to(tl.float32), [BLOCK_N // 2, 2]))
    ne = nb * BLOCK_N + 2 * tl.arange(0, BLOCK_N // 2)
    ok = ne < N
    head = ne // D
    d = ne % D
    rot = ok & (head < H + KVH)
    c = tl.load(cos_ptr + d // 2, mask=rot, other=1.0)
    s = tl.load(sin_ptr + d // 2, mask=rot, other=0.0)
    y0 = tl.where(rot, e * c - o * s, e).to(tl.bfloat16)
    y1 = tl.where(rot, e * s + o * c, o).to(tl.bfloat16)
    kv = tl.where(head < H + KVH, head - H, head - H - KVH)
    ptr = tl.where(head < H, q_ptr + head * DC + d,
                   tl.where(head < H + KVH, kc_ptr, vc_ptr) + (kv * MMAX + POS) * DC + d)
    tl.store(ptr, y0, mask=ok)
    tl.store(ptr + 1, y1, mask=ok)


@dataclass
class Rope:
    """RoPE + KV append after the Wqkv GEMV (one token): ``cos``/``sin`` float32 [d/2] of this position, the
    layer's caches bf16 [1, KVH, Mmax, dc] (row ``pos`` written), ``q`` bf16 [1, H, dc] the rotated queries'
    buffer (its padding past ``head_dim`` zero: never written)."""

    cos: torch.Tensor
    sin: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    q: torch.Tensor
    n_heads: int
    n_kv: int
    head_dim: int
    pos: int

    def check(self, n: int) -> None:
        dc = self.k_cache.shape[-1]
        if (n != (self.n_heads + 2 * self.n_kv) * self.head_dim or self.head_dim % 2 or self.k_cache.shape[0] != 1
                or tuple(self.q.shape) != (1, self.n_heads, dc) or not self.head_dim <= dc):
            raise ValueError(f"RoPE epilogue: Wqkv rows {n}, heads {self.n_heads}/{self.n_kv} x {self.head_dim}, "
                             f"caches {tuple(self.k_cache.shape)}, q {tuple(self.q.shape)} do not match")

    def args(self) -> tuple:
        """The kernels' RoPE arguments (cos, sin, caches, H, KVH, D, DC, MMAX, POS)."""
        return (self.cos, self.sin, self.k_cache, self.v_cache, self.n_heads, self.n_kv, self.head_dim,
                self.k_cache.shape[-1], self.k_cache.shape[-2], self.pos)


# Measured on an H200 with cold weights (a sweep of 36 configs on seven shapes, 2560x2560 to 20480x3200, in
# bench-gpu's CUDA-graph timing): these two are within 5 % of the fastest on every shape. The autotuner
# times with the operands L2-resident, where its pick among a wider list (PIPE 1: the pipeliner's
# prefetch, 1-2 programs per SM) ran 1-12 % slower once the weights came from HBM. Rows of > 4096 weights
# (not in that sweep) also keep the earlier list's 8-warp config.
_ROW_CONFIGS = [
    triton.Config({"BLOCK_N": bn, "PER_SM": ps, "PIPE": pipe}, num_warps=nw, num_stages=ns)
    for bn, ps, nw, ns, pipe in [(16, 4, 4, 1, 0), (8, 4, 4, 1, 0), (8, 2, 8, 1, 0)]
]


def row_tiles(kw: int) -> tuple[int, int]:
    """(KWP, KWT): the whole-row tile of ``next_pow2(kw)`` words and no tail (KWT 0) where
    :func:`row_kernel_fits`, else a power-of-two main tile of all-valid words plus a power-of-two tail tile
    (K = 8640: 512 + 32 words for 540, instead of 1024)."""
    if row_kernel_fits(kw):
        return triton.next_power_of_2(kw), 0
    main = triton.next_power_of_2(kw) // 2
    return main, triton.next_power_of_2(kw - main)


def row_kernel_fits(kw: int) -> bool:
    """Whether the whole-row tile (``next_pow2(kw)`` words) wastes at most 45 % of its width."""
    return kw >= 0.55 * triton.next_power_of_2(kw)


def norm_gemv(x: torch.Tensor, g: torch.Tensor, eps: float, w, residual=None, rope: Rope | None = None) -> torch.Tensor:
    """``ternary_gemv(rmsnorm_quant(x, g, eps), w, residual=residual)``; for one token as one launch (the
    RMSNorm in the whole-row kernel's prologue). ``rope`` (one token, ``w`` = Wqkv): the RoPE + KV append of
    :func:`.fused.rope_append` in the same launch; returns the rotated queries ``rope.q``."""
    from .fused import rmsnorm_quant
    from .ternary import ternary_gemv

    if x.shape[0] == 1:
        return ternary_gemv_row(x, w, residual=residual, norm=g, norm_eps=eps, rope=rope)
    if rope is not None:
        raise ValueError(f"the RoPE epilogue takes one token, got {x.shape[0]}")
    return ternary_gemv(rmsnorm_quant(x, g, eps), w, residual=residual)


def gate_gemv(h: torch.Tensor, act: str, g: torch.Tensor | None, eps: float, w, residual=None) -> torch.Tensor:
    """``ternary_gemv(gate_quant(h, act, g, eps), w, residual=residual)``: the down projection of a GLU
    FFN from ``h`` = [gate | up] bf16 [M, 2F]; for one token as one launch of the whole-row kernel (GLU,
    SubLN and quantizer in its prologue; on an H200 8.3 µs for BitNet-3B's 3200x8640, 11.0 µs as two launches)."""
    from .fused import gate_quant
    from .ternary import ternary_gemv

    if h.shape[0] == 1:
        return ternary_gemv_row(h, w, residual=residual, norm=g, norm_eps=eps, gate=act)
    return ternary_gemv(gate_quant(h, act, g, eps), w, residual=residual)


def _row_prune(configs, named_args, **kw):
    # at most 8K weight words per tile (two tiles live: the current and the prefetched one)
    kwp = kw.get("KWP", named_args.get("KWP", 256)) + kw.get("KWT", named_args.get("KWT", 0))
    return [c for c in configs if c.kwargs["BLOCK_N"] * kwp <= 8192 and (c.num_warps == 4 or kwp > 256)] or configs[1:2]


def _row_launch(kernel, tuned, args, flags, n, kw, config, dev):
    kwp, kwt = row_tiles(kw)
    if dev.type == "cuda" and config is None:
        grid = lambda meta: (n_programs(triton.cdiv(n, meta["BLOCK_N"]), meta["PER_SM"], dev),)  # noqa: E731
        tuned[grid](*args, **flags, KWP=kwp, KWT=kwt)
        return
    cfg = {"PIPE": 0, **(config or {"BLOCK_N": 4, "PER_SM": 1})}
    nw = cfg.pop("num_warps", 4)
    ns = cfg.pop("num_stages", 1)
    grid = (n_programs(triton.cdiv(n, cfg["BLOCK_N"]), cfg["PER_SM"], dev),)
    kernel[grid](*args, **flags, KWP=kwp, KWT=kwt, num_warps=nw, num_stages=ns, **cfg)


_tgemv_row_tuned = autotune(_ROW_CONFIGS, key=["N", "KW", "FUSED", "RESIDUAL", "NORM", "GATE", "ROPE"],
                            prune_configs_by={"early_config_prune": _row_prune})(_tgemv_row_kernel)


GATES = {"swiglu": 1, "relu2": 2}


def ternary_gemv_row(a, w, out_acc: bool = False, config: dict | None = None, residual=None,
                     eps: float = 1e-5, norm: torch.Tensor | None = None, norm_eps: float = 1e-6,
                     gate: str | None = None, rope: Rope | None = None) -> torch.Tensor:
    """Batch-1 ternary GEMV (see :func:`.ternary.ternary_gemv`, same arguments and integers): ``a`` is a
    single-token :class:`.ternary.QuantAct` or bf16 [1, K] (quantizer fused). ``norm`` (bf16 [K], with bf16
    ``a``): RMSNorm of the row with this weight first (``fused.rmsnorm_quant``'s formula; the float32 sum
    of squares is taken in another order, so a code can differ by one where a value sits on a rounding
    boundary). ``gate`` ('swiglu' or 'relu2', with bf16 ``a`` = [gate | up] of [1, 2K]): the GLU of
    ``fused.gate_quant`` first (then ``norm``, the SubLN). ``rope`` (``w`` = Wqkv, bf16 output, no residual):
    the output is not stored; :func:`.fused.rope_append`'s RoPE and KV append run on its bf16 values instead
    (the same float32 ops and roundings) and the rotated queries are returned (``rope.q``); an even
    ``BLOCK_N``."""
    fused = isinstance(a, torch.Tensor)
    if fused:
        x = a.contiguous()
        dev = x.device
        q, qsum, xs = x, x, x  # unused pointers
    else:
        x, q, qsum, xs = a.q, a.q.view(torch.int32), a.qsum, a.s
        dev = q.device
    kw = w.words.shape[1]
    if rope is not None:
        if out_acc or residual is not None:
            raise ValueError("the RoPE epilogue takes the bf16 output without a residual")
        if config is not None and config["BLOCK_N"] % 2:
            raise ValueError(f"the RoPE epilogue needs an even BLOCK_N (pairs 2i, 2i+1 in one block), got "
                             f"{config['BLOCK_N']}")
        rope.check(w.n)
        y = rope.q
        ra = rope.args()
    else:
        y = torch.empty(1, w.n, dtype=torch.int32 if out_acc else torch.bfloat16, device=dev)
        ra = (y, y, y, y, 0, 0, 1, 1, 1, 0)
    r = residual if residual is not None else y
    if (norm is not None or gate is not None) and not fused:
        raise ValueError("norm and gate need the bf16 activations, not a QuantAct")
    if gate is not None and (gate not in GATES or x.shape[-1] != 2 * w.k):
        raise ValueError(f"gate must be one of {sorted(GATES)} with [1, {2 * w.k}] activations, got {gate!r} "
                         f"and {tuple(x.shape)}")
    g = norm if norm is not None else y
    args = (x, q, qsum, xs, w.words, w.scale, r, y, g, w.n, kw, w.k, w.words.stride(0), eps, norm_eps, *ra)
    flags = dict(FUSED=fused, OUT_ACC=out_acc, RESIDUAL=residual is not None,
                 USE_ASM=dev.type == "cuda" and not INTERPRET, NORM=norm is not None, GATE=GATES.get(gate, 0),
                 ROPE=rope is not None, **pdl_kw(dev))
    _row_launch(_tgemv_row_kernel, _tgemv_row_tuned, args, flags, w.n, kw, config, dev)
    return y

