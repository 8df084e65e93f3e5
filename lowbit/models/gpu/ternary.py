"""Ternary W1.58A8 on the GPU: the packed weight layout, the per-token INT8 activation quantizer and the
decode GEMV (quantizer fused in) as Triton kernels; the prefill GEMM is :mod:`.ternary_gemm`, the
single-token whole-row GEMV :mod:`.rowgemv`.

Numerics (bit-exact with ``sim.numerics``; docs/reference/numerics.md §1.2, §1.3):

* activations: ``s = 127 * (1 / max(max|x|, 1e-5))``, ``q = clip(rne(x*s), -128, 127)`` computed in
  **float64** inside the kernels (the ops of ``sim.numerics.int8.int8_absmax_quantize``, so codes are identical);
* weights: ternary codes ``w`` in {-1,0,1}, one scale per output row (per-tensor = a repeated value, the
  fused QKV / gate-up layouts of BitNet 2B4T keep one scale per projection: docs/reference/numerics.md §1.1);
* ``acc = sum_k w[n,k] q[m,k]`` exact in INT32 (|acc| <= 128*K << 2^31);
* ``y = (acc * w_scale[n]) / s[m]`` in float32, stored as bf16 (the sim's op order, float64 there).

GPU weight layout (design of this module): the 2-bit code ``c = w+1`` in {0,1,2} of the sim's
``sim.numerics.packing.pack_ternary_2bit``, K zero-weight-padded to a multiple of 16, one row = ``Kp/16``
little-endian int32 words; inside word ``j`` element ``16j + 4t + b`` sits in bits ``[8b+2t+1 : 8b+2t]``
(byte ``b``, slot ``t``). This is ``pack_ternary_2bit`` of the codes with each group of 16 transposed as a
4x4 block, so ``word & (3 << 2t)`` per byte = ``4^t`` times the codes of elements ``16j+4t .. 16j+4t+3``:
four consecutive elements, the int8 activations of which are one int32 word of the activation row.

GEMV (decode): per weight word and slot ``t`` one AND and one ``dp4a.u32.s32`` (four byte products summed
into an int32; PTX ISA "dp4a") against activation word ``4j+t``; the four slots keep separate
accumulators (each an exact multiple of ``4^t``), combined once at the end::

    S = acc0 + acc1/4 + acc2/16 + acc3/64 = sum_k c[n,k] q[m,k],   acc = S - sum_k q[m,k]

Two instructions per four weights, no activation pre-packing. ``fused`` = the quantizer runs inside the
GEMV (every program reads the bf16 row from L2, takes its absmax, quantizes its slices): one launch per
BitLinear. The Triton interpreter has no inline PTX; there ``dp4a`` is evaluated byte by byte.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
from dataclasses import dataclass

import numpy as np
import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from lowbit.sim.numerics.packing import pack_ternary_2bit

__all__ = [
    "TernaryWeight",
    "pack_ternary_gpu",
    "pack_ternary_gpu_torch",
    "QuantAct",
    "act_quant",
    "ternary_gemv",
    "K_ALIGN",
    "INTERPRET",
    "pdl_kw",
    "sm_count",
]

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
try:  # grid dependency control (programmatic dependent launch, sm_90+); absent from older Triton releases
    from triton.language.extra import cuda as _gdc
    _HAS_GDC = hasattr(_gdc, "gdc_wait") and hasattr(_gdc, "gdc_launch_dependents")
except ImportError:
    _gdc, _HAS_GDC = None, False
# programmatic dependent launch: off unless LOWBIT_GPU_PDL=1. Mixed on the decode step (reports/gpu-baseline.md,
# H200): BitNet-3B 1091.4 -> 975.1 µs with it, 2B4T 1033.4 vs 1033.2 (1003.1 -> 1044.7 in an earlier run there;
# on an H100 with the split-context attention 3B 1073.4 -> 1006.1, 2B4T 1013.9 -> 1044.5,
# reports/gpu-probes/bench-h100-full.md)
PDL = os.environ.get("LOWBIT_GPU_PDL", "0") == "1"


@functools.cache
def sm_count(index: int) -> int:
    """The streaming multiprocessors of CUDA device ``index`` (sizes the persistent and split grids)."""
    return torch.cuda.get_device_properties(index).multi_processor_count


@functools.cache
def _pdl_device(index: int) -> bool:
    return torch.cuda.get_device_capability(index)[0] >= 9


def pdl_kw(device, on: bool | None = None) -> dict:
    """Launch keywords of the decode kernels: with programmatic dependent launch (CUDA graphs keep it as a
    programmatic edge; Hopper and later) a kernel starts while its predecessor still runs, issues its
    first loads of immutable weights, then waits (``griddepcontrol.wait``) for the predecessor's results
    before it reads activations or writes anything. The launch latency and the weight stream's ramp-up
    overlap the previous kernel (CUDA Programming Guide, "Programmatic Dependent Launch")."""
    if (PDL if on is None else on) and _HAS_GDC and not INTERPRET and device.type == "cuda" and _pdl_device(device.index or 0):
        return {"PDL": True, "launch_pdl": True}
    return {"PDL": False}


@triton.jit
def pdl_launch(PDL: tl.constexpr):
    """Allow the next kernel of the stream to start now (no-op without programmatic dependent launch)."""
    if PDL:
        _gdc.gdc_launch_dependents()


@triton.jit
def pdl_wait(PDL: tl.constexpr):
    """Wait until the previous kernel of the stream has finished and its writes are visible."""
    if PDL:
        _gdc.gdc_wait()


@contextlib.contextmanager
def gc_paused():
    """Python's cyclic garbage collector off (after one collection) for the body: a Triton kernel that
    the collector finalizes unloads its CUDA module, which invalidates a CUDA-graph capture in progress
    (``cudaErrorStreamCaptureInvalidated``, then every later call fails; seen on Triton 3.6 after kernels
    that did not compile left such objects behind). Triton 3.9's ``do_bench_cudagraph`` does the same."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def graph_capture(fn):
    """``(graph, fn's result)``: ``fn()`` captured in a new ``torch.cuda.CUDAGraph`` with the collector
    paused (:func:`gc_paused`)."""
    g = torch.cuda.CUDAGraph()
    with gc_paused(), torch.cuda.graph(g):
        out = fn()
    return g, out


def _fast_bench(fn, quantiles=None):
    # CUDA-graph timing: a plain do_bench of a ~5 us kernel measures the Python launch path instead. A graph of
    # 5 ms of calls replayed 10 times (Triton's default is 20 ms): hundreds of calls per replay for the
    # 5-100 µs kernels tuned here, at a quarter of the capture and replay time per config
    with gc_paused():
        return triton.testing.do_bench_cudagraph(fn, rep=5, quantiles=quantiles)


def autotune(configs, key, **kw):
    """``triton.autotune`` timing each config by CUDA-graph replay (launch overhead excluded); the chosen
    config is cached on disk (``cache_results``) where this Triton supports it. The operands stay in L2
    during the replays: a cold-L2 timing outside a graph would time the launch path instead."""
    for extra in ({"do_bench": _fast_bench, "cache_results": True}, {"do_bench": _fast_bench}, {"use_cuda_graph": True}):
        try:
            return triton.autotune(configs, key=key, **extra, **kw)
        except TypeError:  # older triton: fewer keyword arguments
            continue
    return triton.autotune(configs, key=key, **kw)


K_ALIGN = 16  # weights per int32 word; K is zero-padded to a multiple of this


@dataclass
class TernaryWeight:
    """Packed ternary weight on one device: ``words`` int32 [N, Kp/16] (layout: module docstring),
    ``scale`` float32 [N] (w_scale = mean|W| per row), ``n``/``k`` logical shape."""

    words: torch.Tensor
    scale: torch.Tensor
    n: int
    k: int

    @property
    def kp(self) -> int:
        return self.words.shape[1] * K_ALIGN

    @property
    def nbytes(self) -> int:
        return self.words.numel() * 4 + self.scale.numel() * 4

    def to(self, device) -> TernaryWeight:
        return TernaryWeight(self.words.to(device), self.scale.to(device), self.n, self.k)


def _scale_vec(scale, n: int) -> torch.Tensor:
    s = torch.as_tensor(scale, dtype=torch.float32).flatten()
    if s.numel() == 1:
        s = s.expand(n).clone()
    if s.numel() != n:
        raise ValueError(f"w_scale must be a scalar or have {n} entries, got {s.numel()}")
    return s


def pack_ternary_gpu(codes: np.ndarray, scale, device="cpu") -> TernaryWeight:
    """Host packing with the sim's ``pack_ternary_2bit`` (K zero-padded to a multiple of 16, each group of
    16 transposed as a 4x4 block first: the layout of the module docstring)."""
    c = np.asarray(codes)
    if c.ndim != 2:
        raise ValueError(f"codes must be 2-D [N, K], got shape {c.shape}")
    n, k = c.shape
    pad = (-k) % K_ALIGN
    if pad:
        c = np.concatenate([c, np.zeros((n, pad), c.dtype)], axis=1)
    perm = c.reshape(n, -1, 4, 4).transpose(0, 1, 3, 2).reshape(n, -1)
    packed, _ = pack_ternary_2bit(perm)  # uint8 [N, Kp/4], validates codes
    words = np.ascontiguousarray(packed).view("<i4")
    return TernaryWeight(torch.from_numpy(words.copy()).to(device), _scale_vec(scale, n).to(device), n, k)


def pack_ternary_gpu_torch(codes: torch.Tensor, scale) -> TernaryWeight:
    """Same layout as :func:`pack_ternary_gpu`, computed with torch ops on ``codes``' device (int8 [N,K])."""
    n, k = codes.shape
    pad = (-k) % K_ALIGN
    u = codes.to(torch.int64) + 1
    if pad:
        u = torch.cat([u, torch.ones(n, pad, dtype=torch.int64, device=codes.device)], dim=1)
    g = u.view(n, -1, 4, 4)  # [.., t, b]: element 16j + 4t + b
    ar = torch.arange(4, device=codes.device, dtype=torch.int64)
    shifts = 8 * ar[None, :] + 2 * ar[:, None]  # bit 8b + 2t
    words = (g << shifts).sum(dim=(-2, -1))  # < 2^32, fits int64
    words = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)
    return TernaryWeight(words.contiguous(), _scale_vec(scale, n).to(codes.device), n, k)


# ----------------------------------------------------------------------------- activation quantizer

@dataclass
class QuantAct:
    """Per-token INT8 activations: ``q`` [M, Kp] (zero-padded): the codes as int8 (read as int32 words by the
    GEMV), or the same integers as bf16 for the bf16 tensor-core GEMM (exact: |q| <= 128 < 2^8);
    ``qsum`` int32 [M] (sum of q), ``s`` float32 [M] (= 127/max|x|), ``k``."""

    q: torch.Tensor
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


# On the GPU the float64 product must be rounded exactly once to float64 and then to an integer. The
# floor/compare form of :func:`_rne_f64` is not safe there: Triton contracts ``v * s + 0.5`` into one
# ``fma.rn.f64`` (seen in its PTX), which skips the product's rounding, and near-ties (``x = max/2`` gives
# ``x * s = 63.5`` up to the last bit of ``s``) came out wrong on an H200 (reports/gpu-baseline.md). So on the GPU:
# ``magic`` (default): ``mul.rn.f64`` (inline PTX: an explicit rounding mode is never contracted) then
# ``+ 1.5 * 2^52`` (round half to even onto the integers; the low word is the code);
# ``cvt``: one ``cvt.rni.s32.f64`` on the product (a lone multiply, nothing to contract).
# The interpreter (numpy: no contraction, no PTX) evaluates :func:`_rne_f64`. LOWBIT_GPU_QUANT picks the GPU form.
_QMODE: tl.constexpr = tl.constexpr(0 if INTERPRET else {"cvt": 1, "magic": 2}.get(
    os.environ.get("LOWBIT_GPU_QUANT", "magic"), 2))


@triton.jit
def quant_i8(v, s):
    """INT8 code of float64 ``v`` at scale ``s`` (float64): clip(rne(v*s), -128, 127) as int32."""
    if _QMODE == 1:
        r = libdevice.double2int_rn(v * s)
        return tl.minimum(tl.maximum(r, -128), 127)
    elif _QMODE == 2:
        t = tl.inline_asm_elementwise("mul.rn.f64 $0, $1, $2;", "=d,d,d", [v, tl.broadcast_to(s, v.shape)],
                                      dtype=tl.float64, is_pure=True, pack=1)
        r = (t + 6755399441055744.0).to(tl.int64, bitcast=True).to(tl.int32)
        return tl.minimum(tl.maximum(r, -128), 127)
    else:
        return tl.minimum(tl.maximum(_rne_f64(v * s), -128.0), 127.0).to(tl.int32)


@triton.jit
def absmax_scale(mx, eps):
    """``127 * (1 / max(mx, eps))`` in float64, torch's evaluation of ``127 / t`` (sim.numerics.int8)."""
    return 127.0 * (1.0 / tl.maximum(mx.to(tl.float64), eps))


@triton.jit
def _act_quant_kernel(x_ptr, q_ptr, qsum_ptr, s_ptr, K, KP, stride_xm, stride_qm, eps, BLOCK: tl.constexpr):
    m = tl.program_id(0)
    r = tl.arange(0, BLOCK)
    xrow = x_ptr + m * stride_xm
    amax = tl.zeros([BLOCK], tl.float32)
    for k0 in range(0, K, BLOCK):
        a = tl.load(xrow + k0 + r, mask=k0 + r < K, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.abs(a))
    s = absmax_scale(tl.max(amax, axis=0), eps)
    qs = tl.zeros([BLOCK], tl.int32)
    for k0 in range(0, KP, BLOCK):
        a = tl.load(xrow + k0 + r, mask=k0 + r < K, other=0.0).to(tl.float64)
        q = quant_i8(a, s)
        qs += q
        if q_ptr.dtype.element_ty == tl.bfloat16:  # via float32: exact, and the interpreter's int -> bf16 is not
            qc = q.to(tl.float32).to(tl.bfloat16)
        else:
            qc = q.to(tl.int8)
        tl.store(q_ptr + m * stride_qm + k0 + r, qc, mask=k0 + r < KP)
    tl.store(qsum_ptr + m, tl.sum(qs, axis=0))
    tl.store(s_ptr + m, s.to(tl.float32))


def act_quant(x: torch.Tensor, eps: float = 1e-5, codes: torch.dtype = torch.int8) -> QuantAct:
    """Quantize ``x`` [M, K] (bf16/fp16/fp32) per token; bit-exact with ``int8_absmax_quantize``. ``codes``:
    the dtype the INT8 codes are stored in, ``torch.int8`` or ``torch.bfloat16`` (same values)."""
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D [M, K], got {tuple(x.shape)}")
    if codes not in (torch.int8, torch.bfloat16):
        raise ValueError(f"codes must be torch.int8 or torch.bfloat16, got {codes}")
    x = x.contiguous()
    m, k = x.shape
    kp = triton.cdiv(k, K_ALIGN) * K_ALIGN
    dev = x.device
    q = torch.empty(m, kp, dtype=codes, device=dev)
    qsum = torch.empty(m, dtype=torch.int32, device=dev)
    s = torch.empty(m, dtype=torch.float32, device=dev)
    block = min(triton.next_power_of_2(kp), 4096)
    _act_quant_kernel[(m,)](x, q, qsum, s, k, kp, x.stride(0), q.stride(0), eps, BLOCK=block,
                            num_warps=4 if block <= 1024 else 8)
    return QuantAct(q, qsum, s, k)


# ----------------------------------------------------------------------------- decode GEMV (dp4a)

@triton.jit
def dp4a(a, b, c, USE_ASM: tl.constexpr):
    """``c + sum_i u8(a)_i * s8(b)_i`` over the four bytes (PTX ``dp4a.u32.s32``); byte by byte without PTX."""
    if USE_ASM:
        r = tl.inline_asm_elementwise("dp4a.u32.s32 $0, $1, $2, $3;", "=r,r,r,r", [a, b, c], dtype=tl.int32,
                                      is_pure=True, pack=1)
    else:
        r = c
        for i in tl.static_range(4):
            r += ((a >> (8 * i)) & 255) * ((b << (24 - 8 * i)) >> 24)
    return r


@triton.jit
def _slot(w, t: tl.constexpr):
    # w & (0x03030303 << 2t), the constant written as a signed int32 (t = 3: 0xC0C0C0C0)
    if t == 0:
        r = w & 0x03030303
    elif t == 1:
        r = w & 0x0C0C0C0C
    elif t == 2:
        r = w & 0x30303030
    else:
        r = w & -1061109568
    return r


@triton.jit
def _fused_scale(x_ptr, rm, m_ok, K, stride_xm, eps, BLOCK_M: tl.constexpr, AB: tl.constexpr):
    # per-token absmax scale of the bf16 rows (read whole, from L2)
    ra = tl.arange(0, AB)
    amax = tl.zeros([BLOCK_M, AB], tl.float32)
    for k0 in range(0, K, AB):
        kk = k0 + ra
        v = tl.load(x_ptr + rm[:, None] * stride_xm + kk[None, :], mask=m_ok[:, None] & (kk < K)[None, :], other=0.0)
        amax = tl.maximum(amax, tl.abs(v.to(tl.float32)))
    return absmax_scale(tl.max(amax, axis=1), eps)  # [BLOCK_M] float64


@triton.jit
def _tgemv_kernel(x_ptr, q_ptr, qsum_ptr, xs_ptr, w_ptr, ws_ptr, r_ptr, y_ptr, M, N, KW, K,
                  stride_xm, stride_qm, stride_wn, stride_rm, stride_ym, eps,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr, FUSED: tl.constexpr,
                  OUT_ACC: tl.constexpr, RESIDUAL: tl.constexpr, USE_ASM: tl.constexpr, AB: tl.constexpr,
                  PDL: tl.constexpr = False):
    pdl_launch(PDL)
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rj = tl.arange(0, BLOCK_KW)
    rb = tl.arange(0, 4)
    m_ok = rm < M
    n_ok = rn < N
    # the first weight tile is loaded before the activation scale, so the weight stream starts at once;
    # each iteration then loads the next tile before computing on the current one
    w = tl.load(w_ptr + rn[:, None] * stride_wn + rj[None, :], mask=n_ok[:, None] & (rj < KW)[None, :], other=0)
    pdl_wait(PDL)  # activations, residual and output only after the previous kernel
    if FUSED:
        s64 = _fused_scale(x_ptr, rm, m_ok, K, stride_xm, eps, BLOCK_M, AB)
        qs = tl.zeros([BLOCK_M, BLOCK_KW], tl.int32)
    acc0 = tl.zeros([BLOCK_M, BLOCK_N, BLOCK_KW], tl.int32)
    acc1 = tl.zeros([BLOCK_M, BLOCK_N, BLOCK_KW], tl.int32)
    acc2 = tl.zeros([BLOCK_M, BLOCK_N, BLOCK_KW], tl.int32)
    acc3 = tl.zeros([BLOCK_M, BLOCK_N, BLOCK_KW], tl.int32)
    for j0 in range(0, KW, BLOCK_KW):
        j = j0 + rj
        j_ok = j < KW
        jn = j + BLOCK_KW
        w_next = tl.load(w_ptr + rn[:, None] * stride_wn + jn[None, :], mask=n_ok[:, None] & (jn < KW)[None, :], other=0)
        for t in tl.static_range(4):
            if FUSED:
                kk = (j * 16 + 4 * t)[None, :, None] + rb[None, None, :]  # [1, BKW, 4]
                xv = tl.load(x_ptr + rm[:, None, None] * stride_xm + kk, mask=m_ok[:, None, None] & (kk < K),
                             other=0.0).to(tl.float64)
                q = quant_i8(xv, s64[:, None, None])
                qs += tl.sum(q, axis=2)
                a = tl.sum((q & 255) << (8 * rb)[None, None, :], axis=2)  # [BM, BKW] packed int8 x4
            else:
                a = tl.load(q_ptr + rm[:, None] * stride_qm + (4 * j + t)[None, :], mask=m_ok[:, None] & j_ok[None, :],
                            other=0)
            wm = _slot(w, t)[None, :, :]
            a3 = a[:, None, :]
            wm, a3 = tl.broadcast(wm, a3)
            if t == 0:
                acc0 = dp4a(wm, a3, acc0, USE_ASM)
            elif t == 1:
                acc1 = dp4a(wm, a3, acc1, USE_ASM)
            elif t == 2:
                acc2 = dp4a(wm, a3, acc2, USE_ASM)
            else:
                acc3 = dp4a(wm, a3, acc3, USE_ASM)
        w = w_next
    S = tl.sum(acc0 + (acc1 >> 2) + (acc2 >> 4) + (acc3 >> 6), axis=2)  # each acc_t is a multiple of 4^t
    if FUSED:
        qsum = tl.sum(qs, axis=1)
        xs = s64.to(tl.float32)
    else:
        qsum = tl.load(qsum_ptr + rm, mask=m_ok, other=0)
        xs = tl.load(xs_ptr + rm, mask=m_ok, other=1.0)
    yint = S - qsum[:, None]
    out = y_ptr + rm[:, None] * stride_ym + rn[None, :]
    omask = m_ok[:, None] & n_ok[None, :]
    if OUT_ACC:
        tl.store(out, yint, mask=omask)
    else:
        ws = tl.load(ws_ptr + rn, mask=n_ok, other=0.0)
        y = ((yint.to(tl.float32) * ws[None, :]) / xs[:, None]).to(tl.bfloat16)
        if RESIDUAL:  # x + W(x): the bf16 GEMV output added to the bf16 residual, as the unfused torch add
            r = tl.load(r_ptr + rm[:, None] * stride_rm + rn[None, :], mask=omask, other=0.0)
            y = (r.to(tl.float32) + y.to(tl.float32)).to(tl.bfloat16)
        tl.store(out, y, mask=omask)


def _gemv_prune(configs, named_args, **kw):
    bm = kw.get("BLOCK_M", named_args.get("BLOCK_M", 1))
    kw_ = named_args["KW"]
    ok = [c for c in configs if bm * c.kwargs["BLOCK_N"] * c.kwargs["BLOCK_KW"] <= 4096
          and c.kwargs["BLOCK_KW"] <= max(triton.next_power_of_2(kw_), 16)]
    return ok or configs[:1]


_GEMV_CONFIGS = [
    triton.Config({"BLOCK_N": bn, "BLOCK_KW": bk}, num_warps=nw, num_stages=ns)
    for bn, bk, nw, ns in [(16, 64, 4, 3), (32, 32, 4, 3), (8, 128, 4, 3), (32, 64, 8, 3), (64, 32, 8, 3),
                           (16, 128, 8, 2), (64, 64, 8, 2), (4, 64, 4, 3), (8, 32, 4, 4)]
]
_tgemv_tuned = autotune(_GEMV_CONFIGS, key=["M", "N", "KW", "BLOCK_M", "FUSED"],
                        prune_configs_by={"early_config_prune": _gemv_prune})(_tgemv_kernel)


def ternary_gemv(a: QuantAct | torch.Tensor, w: TernaryWeight, out_acc: bool = False, block_m: int | None = None,
                 config: dict | None = None, residual: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Decode GEMV (any M; meant for 1..15): bf16 [M, N] (or the int32 accumulator with ``out_acc``).

    ``a``: a :class:`QuantAct` (pre-quantized), or the bf16 activations [M, K] themselves: then the
    quantizer runs inside this kernel (``fused``). ``residual`` [M, N] bf16: returns ``residual + y``.
    Tokens are tiled by ``block_m`` (default min(next_pow2(M), 8)); one token without ``block_m`` runs the
    whole-row persistent kernel of :mod:`.rowgemv` (``config``, if given, must then name ``PER_SM``)."""
    fused = isinstance(a, torch.Tensor)
    if fused:
        if a.dim() != 2 or a.shape[1] != w.k:
            raise ValueError(f"x must be [M, {w.k}], got {tuple(a.shape)}")
        x = a.contiguous()
        m, dev = x.shape[0], x.device
        q, qsum, xs = x, x, x  # unused pointers
    else:
        if a.q.shape[1] != w.kp:
            raise ValueError(f"K mismatch: activations padded to {a.q.shape[1]}, weight to {w.kp}")
        if a.q.dtype != torch.int8:
            raise ValueError(f"the GEMV reads int8 codes, got {a.q.dtype} (act_quant(x) without codes=)")
        m, dev = a.q.shape[0], a.q.device
        x, q, qsum, xs = a.q, a.q.view(torch.int32), a.qsum, a.s
    y = torch.empty(m, w.n, dtype=torch.int32 if out_acc else torch.bfloat16, device=dev)
    r = residual if residual is not None else y
    if residual is not None and (residual.shape != y.shape or residual.stride(1) != 1):
        raise ValueError(f"residual must be a row-major [{m}, {w.n}] tensor, got {tuple(residual.shape)}")
    if m == 1 and block_m is None and (config is None or "PER_SM" in config):
        from .rowgemv import ternary_gemv_row  # one token: the whole-row persistent kernel

        return ternary_gemv_row(a, w, out_acc=out_acc, config=config, residual=residual, eps=eps)
    bm = block_m or min(triton.next_power_of_2(m), 8)
    # absmax pass length: one [BLOCK_M, AB] float32 tile, at most 8K values (larger tiles spill)
    ab = min(triton.next_power_of_2(w.k), max(1024, 8192 // bm))
    args = (x, q, qsum, xs, w.words, w.scale, r, y, m, w.n, w.words.shape[1], w.k,
            x.stride(0), q.stride(0), w.words.stride(0), r.stride(0), y.stride(0), eps)
    flags = dict(BLOCK_M=bm, FUSED=fused, OUT_ACC=out_acc, RESIDUAL=residual is not None,
                 USE_ASM=dev.type == "cuda" and not INTERPRET, AB=ab, **pdl_kw(dev))
    if dev.type == "cuda" and config is None:
        grid = lambda meta: (triton.cdiv(w.n, meta["BLOCK_N"]), triton.cdiv(m, bm))  # noqa: E731
        _tgemv_tuned[grid](*args, **flags)
    else:
        cfg = dict(config or {"BLOCK_N": 64, "BLOCK_KW": 16})  # interpreter: few, wide programs run fastest
        nw = cfg.pop("num_warps", 4)
        ns = cfg.pop("num_stages", 2)
        grid = (triton.cdiv(w.n, cfg["BLOCK_N"]), triton.cdiv(m, bm))
        _tgemv_kernel[grid](*args, **flags, num_warps=nw, num_stages=ns, **cfg)
    return y
