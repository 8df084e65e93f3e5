"""Ternary prefill GEMM on INT8 tensor cores (weights in the packed layout of :mod:`.ternary`), the
unpack-to-int8 + cuBLAS alternative, and :func:`ternary_linear` (GEMV below ``gemm_from`` tokens, GEMM
from there).

The GEMM unpacks each weight tile once to the int8 codes ``c = w + 1`` in {0, 1, 2} (``tl.join`` tree: a
thread expands its own words, the tile goes to shared memory in 16-byte writes; a shift and an AND per
weight) and multiplies it with the INT8 activations on the tensor cores (``tl.dot``, int32 accumulate),
then subtracts the token's activation sum: ``sum_k q c = sum_k q w + sum_k q`` (as the GEMV of
:mod:`.ternary`), so the accumulator is exact, the integers of ``sim.numerics``. The unsigned codes save
the subtraction per weight: the kernel alone is 1.2-1.6x faster at 512 tokens on an H200 than with
``c - 1`` unpacked (reports/gpu-baseline.gemm.json; reports/gpu-baseline.md quotes both). Split-K
for long rows at few tokens (int32 atomics, exact in any order). ``SWAP`` computes the transposed tile
``W q^T`` (the unpacked weights as the MMA's first operand). Dequantisation ``y = acc * w_scale / s`` in
float32, as :mod:`.ternary` (docs/reference/numerics.md §1.2, §1.3).

``TC16``: the same GEMM on the bf16 tensor cores, for activations quantized to bf16 codes (``act_quant(x,
codes=torch.bfloat16)``: the INT8 integers, exact in bf16), the weights unpacked to ``v = 1 + c/2`` in {1, 1.5,
2} (the bf16 bits ``0x3F80 + 64 c``: one integer multiply-add per weight), so ``sum q w = 2 sum q v - 3 sum q``.
Why: Triton (3.6 and 3.9) issues an INT8 wgmma and
waits for it before the next K step (``warp_group_dot_wait {pendings = 0}`` in the compiled loop, even for a
plain int8 matmul), while a bf16 loop with the unpacked weights as the register operand and the activation
tile arriving by ``cp.async`` keeps several wgmma in flight (``pendings = 3``), so unpacking overlaps the
tensor cores. Exactness: each product ``v q`` is a multiple of 1/2 of magnitude <= 256 and every partial sum
one below ``256 Kp < 2^23`` (``TC16_MAX_KP``), which float32 represents exactly whatever the summation order
or alignment, so ``2 sum q v`` converts to the INT8 path's integers (a design argument: the GPU check of
``lowbit bench-gpu`` compares the two bit for bit). With split-K each split adds its ``2 sum q v`` and the first
subtracts ``3 sum q`` once. :func:`ternary_linear` times both forms per shape.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .ternary import QuantAct, TernaryWeight, _fast_bench, act_quant, autotune, ternary_gemv

__all__ = ["ternary_gemm", "ternary_gemm_unpacked", "ternary_unpack", "ternary_linear", "ternary_choices", "auto_split_k",
           "choose_path", "PathChoice", "grouped_tile", "join8", "tile_rows", "unpack_join", "SPLIT_K_MIN_KP", "TC16_MAX_KP"]

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
def tile_rows(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """This program's output rows and columns (:func:`grouped_tile` of ``program_id(0)``) and their masks."""
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    return rm, rn, rm < M, rn < N


@triton.jit
def _unpack_codes(w, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    # int32 words [BN, BKW] -> int8 weights c-1 [BN, BKW*16] in element order (element 4t+b at bit 8b+2t);
    # used by the unpack pass (ternary_unpack)
    rs = tl.arange(0, 16)
    sh = 8 * (rs % 4) + 2 * (rs // 4)
    codes = ((w[:, :, None] >> sh[None, None, :]) & 3) - 1
    return tl.reshape(codes, [BLOCK_N, BLOCK_KW * 16]).to(tl.int8)


@triton.jit
def _code(w, s: tl.constexpr, BF16: tl.constexpr):
    # code c = w + 1 of element s (0..15) of each word (element 4t+b sits at bits 8b+2t), int8 or bf16
    c = (w >> (8 * (s % 4) + 2 * (s // 4))) & 3
    if BF16:  # the bf16 bits of v = 1 + c/2 (exponent 127, mantissa 64c; c = 2 carries into 2.0): one integer
        # multiply-add, no int -> float conversion (quarter-rate, and wrong in the Triton interpreter)
        r = (c * 64 + 0x3F80).to(tl.int16).to(tl.bfloat16, bitcast=True)
    else:
        r = c.to(tl.int8)
    return r


@triton.jit
def unpack_join(w, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr, BF16: tl.constexpr = False):
    """int32 words [BN, BKW] -> codes c [BN, BKW*16] (int8, or bf16 with ``BF16``) in element order, built by four levels of
    ``tl.join``: the joined axis is always the innermost and held by one thread, so each thread keeps its
    word's 16 codes contiguous, the reshape moves no data and the tile goes to shared memory as 16-byte
    stores (the broadcast form of :func:`_unpack_codes` spreads a word over 16 lanes: one byte store
    per weight). The first join makes the highest bit of the element index ``s``, the last the lowest."""
    p0 = tl.join(_code(w, 0, BF16), _code(w, 8, BF16))
    p1 = tl.join(_code(w, 1, BF16), _code(w, 9, BF16))
    p2 = tl.join(_code(w, 2, BF16), _code(w, 10, BF16))
    p3 = tl.join(_code(w, 3, BF16), _code(w, 11, BF16))
    p4 = tl.join(_code(w, 4, BF16), _code(w, 12, BF16))
    p5 = tl.join(_code(w, 5, BF16), _code(w, 13, BF16))
    p6 = tl.join(_code(w, 6, BF16), _code(w, 14, BF16))
    p7 = tl.join(_code(w, 7, BF16), _code(w, 15, BF16))
    return tl.reshape(join8(p0, p1, p2, p3, p4, p5, p6, p7), [BLOCK_N, BLOCK_KW * 16])


@triton.jit
def join8(p0, p1, p2, p3, p4, p5, p6, p7):
    """Eight tensors joined in three new innermost axes ``(a, b, c)`` holding ``p_(4a + 2b + c)``, so a
    reshape that flattens them puts ``p_s`` at offset ``s``: ``join(join(join(p0, p4), join(p2, p6)),
    join(join(p1, p5), join(p3, p7)))``."""
    return tl.join(tl.join(tl.join(p0, p4), tl.join(p2, p6)), tl.join(tl.join(p1, p5), tl.join(p3, p7)))


@triton.jit
def _tgemm_kernel(q_ptr, qsum_ptr, xs_ptr, w_ptr, ws_ptr, y_ptr, acc_ptr, M, N, KW, stride_qm, stride_wn, stride_ym,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr, GROUP_M: tl.constexpr,
                  SPLIT_K: tl.constexpr, OUT_ACC: tl.constexpr, SWAP: tl.constexpr = False, TC16: tl.constexpr = False,
                  DOT_F32: tl.constexpr = False):
    # SPLIT_K > 1 (skinny shapes: few output tiles): each split adds its int32 partial into acc_ptr
    # (zeroed) with atomics; integer addition is exact in any order, so the result is deterministic.
    # TC16 (bf16 codes in q_ptr, SWAP only): bf16 tensor cores, weights as 1 + c/2, float32 half-integers (module
    # docstring); DOT_F32: its float32 form for the Triton interpreter, whose bf16 tl.dot is wrong
    tl.static_assert(SWAP or not TC16, "the bf16 tensor-core GEMM takes the swapped operands only")
    pid_k = tl.program_id(1)
    rm, rn, m_ok, n_ok = tile_rows(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rj = tl.arange(0, BLOCK_KW)
    rk = tl.arange(0, BLOCK_KW * 16)
    if SWAP:
        acc = tl.zeros([BLOCK_N, BLOCK_M], tl.float32 if TC16 else tl.int32)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.int32)
    nk = tl.cdiv(KW, BLOCK_KW)
    per = tl.cdiv(nk, SPLIT_K)
    k_lo = pid_k * per
    for kb in range(k_lo, tl.minimum(nk, k_lo + per)):
        j0 = kb * BLOCK_KW
        kk = j0 * 16 + rk
        j = j0 + rj
        # padding past K: zero activations, so any code there adds nothing
        w = tl.load(w_ptr + rn[:, None] * stride_wn + j[None, :], mask=n_ok[:, None] & (j < KW)[None, :], other=0)
        if SWAP:
            xt = tl.load(q_ptr + rm[None, :] * stride_qm + kk[:, None], mask=m_ok[None, :] & (kk < KW * 16)[:, None],
                         other=0)
            if TC16 and DOT_F32:
                acc = tl.dot(unpack_join(w, BLOCK_N, BLOCK_KW, True).to(tl.float32), xt.to(tl.float32), acc)
            elif TC16:
                acc = tl.dot(unpack_join(w, BLOCK_N, BLOCK_KW, True), xt, acc)
            else:
                acc = tl.dot(unpack_join(w, BLOCK_N, BLOCK_KW), xt, acc, out_dtype=tl.int32)
        else:
            x = tl.load(q_ptr + rm[:, None] * stride_qm + kk[None, :], mask=m_ok[:, None] & (kk < KW * 16)[None, :],
                        other=0)
            acc = tl.dot(x, tl.trans(unpack_join(w, BLOCK_N, BLOCK_KW)), acc, out_dtype=tl.int32)
    if TC16:  # 2 sum q v = 2 sum q + sum q c: integers below 2^24 in float32, converted exactly
        acc = (acc * 2.0).to(tl.int32)
    if SWAP:
        acc = tl.trans(acc)
    if pid_k == 0:  # sum_k q w = sum_k q c - sum_k q (TC16: 2 sum q v - 3 sum q), the token's sum taken once
        acc -= tl.load(qsum_ptr + rm, mask=m_ok, other=0)[:, None] * (3 if TC16 else 1)
    omask = m_ok[:, None] & n_ok[None, :]
    if SPLIT_K > 1:
        tl.atomic_add(acc_ptr + rm[:, None] * N + rn[None, :], acc, mask=omask, sem="relaxed")
    else:
        out = y_ptr + rm[:, None] * stride_ym + rn[None, :]
        if OUT_ACC:
            tl.store(out, acc, mask=omask)
        else:
            ws = tl.load(ws_ptr + rn, mask=n_ok, other=0.0)
            xs = tl.load(xs_ptr + rm, mask=m_ok, other=1.0)
            y = (acc.to(tl.float32) * ws[None, :]) / xs[:, None]
            tl.store(out, y.to(tl.bfloat16), mask=omask)


# (BLOCK_M, BLOCK_N, BLOCK_KW, warps, stages, SWAP): the fastest per shape in H200 sweeps of 14 (64 tokens)
# and 12 (512 tokens) configs on the seven BitNet shapes (reports/gpu-baseline.md); tiles of 32 output
# features win at 64 tokens (more programs on a skinny output), 128x64 at 512, where the swapped operands
# were 3-5 % faster on two shapes (reports/gpu-baseline.tune.log)
_GEMM_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_KW": bk, "GROUP_M": 8, "SWAP": sw}, num_warps=nw,
                  num_stages=ns)
    for bm, bn, bk, nw, ns, sw in [(64, 32, 8, 4, 4, False), (64, 64, 16, 4, 3, False), (64, 64, 8, 4, 4, False),
                                   (128, 64, 8, 4, 4, False), (128, 64, 8, 4, 4, True), (128, 128, 8, 4, 3, False),
                                   (128, 128, 8, 8, 3, False), (256, 128, 4, 8, 3, False)]
]
# bf16 tensor cores (TC16): every config swapped, the unpacked weights the register operand; BLOCK_M (tokens) is
# the MMA's N (8-256), BLOCK_N its M (64 rows per warp group). Design assumption (Triton 3.6 and 3.9 pipeline
# its wgmma loop: warp_group_dot_wait with pendings > 0) that did not hold when timed: on H100s it took 1.17-1.61x
# the INT8 GEMM's time on all 14 GEMM points (reports/gpu-probes/bench-h100-tc16.md, bench-h100-full.md), so
# ternary_linear, which times both, has kept INT8 everywhere
_TC16_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_KW": bk, "GROUP_M": 8, "SWAP": True}, num_warps=nw,
                  num_stages=ns)
    for bm, bn, bk, nw, ns in [(32, 64, 4, 4, 4), (64, 64, 4, 4, 4), (128, 64, 4, 4, 4), (128, 128, 4, 8, 3),
                               (256, 128, 4, 8, 3)]
]
TC16_MAX_KP = (1 << 24) // 512 - 1  # float32 holds every sum of the half-integers v q (|v q| <= 256) exactly
SPLIT_K_MIN_KP = 6144  # split K four ways for long rows at <= 64 tokens (H200: 3200x8640 27 vs 35 µs)


def _gemm_prune(configs, named_args, **kw):
    m = named_args["M"]
    ok = [c for c in configs if c.kwargs["BLOCK_M"] <= max(64, triton.next_power_of_2(m))]
    return ok or configs[:1]


_tgemm_tuned = autotune(_GEMM_CONFIGS, key=["M", "N", "KW", "SPLIT_K"], reset_to_zero=["acc_ptr"],
                        prune_configs_by={"early_config_prune": _gemm_prune})(_tgemm_kernel)
_tgemm_tc16_tuned = autotune(_TC16_CONFIGS, key=["M", "N", "KW", "SPLIT_K"], reset_to_zero=["acc_ptr"],
                             prune_configs_by={"early_config_prune": _gemm_prune})(_tgemm_kernel)


def auto_split_k(m: int, kp: int) -> int:
    """K splits of :func:`ternary_gemm` when none is given: 4 for rows of >= ``SPLIT_K_MIN_KP`` weights at
    <= 64 tokens (too few output tiles to fill the GPU), else 1."""
    return 4 if m <= 64 and kp >= SPLIT_K_MIN_KP else 1


def ternary_gemm(a: QuantAct, w: TernaryWeight, out_acc: bool = False, config: dict | None = None,
                 split_k: int | None = None) -> torch.Tensor:
    """Prefill GEMM: bf16 [M, N] (or the int32 acc). INT8 codes (``act_quant(x)``): INT8 tensor cores
    (``tl.dot``, int32 accumulate); bf16 codes (``act_quant(x, codes=torch.bfloat16)``): bf16 tensor cores
    (swapped operands, weights as 1 + c/2: the same integers, K up to ``TC16_MAX_KP``).
    ``split_k`` > 1 splits K over programs (int32 atomics, exact) and dequantizes in a second launch;
    ``None``: :func:`auto_split_k` on the GPU, 1 elsewhere."""
    m = a.q.shape[0]
    if a.q.shape[1] != w.kp:
        raise ValueError(f"K mismatch: activations padded to {a.q.shape[1]}, weight to {w.kp}")
    tc16 = a.q.dtype == torch.bfloat16
    if tc16 and w.kp > TC16_MAX_KP:
        raise ValueError(f"bf16 codes: K padded to {w.kp} > {TC16_MAX_KP} is not exact in float32; use int8 codes")
    dev = a.q.device
    if split_k is None:
        split_k = auto_split_k(m, w.kp) if dev.type == "cuda" else 1
    y = torch.empty(m, w.n, dtype=torch.int32 if out_acc else torch.bfloat16, device=dev)
    acc = torch.zeros(m, w.n, dtype=torch.int32, device=dev) if split_k > 1 else y
    args = (a.q, a.qsum, a.s, w.words, w.scale, y, acc, m, w.n, w.words.shape[1], a.q.stride(0), w.words.stride(0),
            y.stride(0))
    if dev.type == "cuda" and config is None:
        grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(w.n, meta["BLOCK_N"]), split_k)  # noqa: E731
        (_tgemm_tc16_tuned if tc16 else _tgemm_tuned)[grid](*args, SPLIT_K=split_k, OUT_ACC=out_acc, TC16=tc16)
    else:
        cfg = dict(config or {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_KW": 4, "GROUP_M": 4, "SWAP": tc16})
        nw = cfg.pop("num_warps", 4)
        ns = cfg.pop("num_stages", 2)
        grid = (triton.cdiv(m, cfg["BLOCK_M"]) * triton.cdiv(w.n, cfg["BLOCK_N"]), split_k)
        _tgemm_kernel[grid](*args, SPLIT_K=split_k, OUT_ACC=out_acc, TC16=tc16, DOT_F32=tc16 and dev.type != "cuda",
                            num_warps=nw, num_stages=ns, **cfg)
    if split_k > 1:
        if out_acc:
            return acc
        _dequant_acc_kernel[(m, triton.cdiv(w.n, 1024))](acc, w.scale, a.s, y, w.n, BLOCK=1024, num_warps=4)
    return y


@triton.jit
def _tunpack_kernel(w_ptr, out_ptr, N, KW, stride_wn, stride_on, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rj = pid_k * BLOCK_KW + tl.arange(0, BLOCK_KW)
    ok = (rn < N)[:, None] & (rj < KW)[None, :]
    w = tl.load(w_ptr + rn[:, None] * stride_wn + rj[None, :], mask=ok, other=0x55555555)
    codes = _unpack_codes(w, BLOCK_N, BLOCK_KW)
    kk = pid_k * BLOCK_KW * 16 + tl.arange(0, BLOCK_KW * 16)
    tl.store(out_ptr + rn[:, None] * stride_on + kk[None, :], codes, mask=(rn < N)[:, None] & (kk < KW * 16)[None, :])


@triton.jit
def _dequant_acc_kernel(acc_ptr, ws_ptr, xs_ptr, y_ptr, N, BLOCK: tl.constexpr):
    m = tl.program_id(0)
    rn = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = rn < N
    acc = tl.load(acc_ptr + m * N + rn, mask=ok, other=0)
    y = (acc.to(tl.float32) * tl.load(ws_ptr + rn, mask=ok, other=0.0)) / tl.load(xs_ptr + m)
    tl.store(y_ptr + m * N + rn, y.to(tl.bfloat16), mask=ok)


def ternary_unpack(w: TernaryWeight) -> torch.Tensor:
    """Unpack the 2-bit words to int8 weights [N, Kp] in element order (one pass over the packed weight)."""
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


def choose_path(paths: dict, call, timer=_fast_bench) -> tuple[str, str]:
    """(the fastest of ``paths`` by ``timer(lambda: call(fn))``, why another did not compete). A path that
    cannot be built here is left out: Triton's frontend raises ``CompilationError``, its MLIR pass pipeline
    a ``RuntimeError`` (Triton 3.6 on the FP4 kernel's unswapped in-register decode tile)."""
    times, why, err = {}, "", None
    for name, fn in paths.items():
        try:
            call(fn)  # compile (and autotune) outside the timing
        except (triton.CompilationError, RuntimeError) as e:
            err = e
            why = f" ({name} does not compile: {(str(e).splitlines() or [type(e).__name__])[0][:120]})"
            continue
        times[name] = timer(lambda fn=fn: call(fn))
    if not times:
        raise err
    return min(times, key=times.get), why


class PathChoice:
    """Per key, the fastest of some paths (:func:`choose_path`), timed on the key's first call and kept for the
    process."""

    def __init__(self) -> None:
        self._chosen: dict[tuple, tuple[str, str]] = {}

    def pick(self, key: tuple, paths: dict, call) -> str:
        if key not in self._chosen:
            self._chosen[key] = choose_path(paths, call)
        return self._chosen[key][0]

    def summary(self) -> dict[tuple, str]:
        """key -> the chosen path's name, with the reason where another path did not compile."""
        return {k: name + why for k, (name, why) in self._chosen.items()}


_CHOICE = PathChoice()  # (tokens rounded up to a power of two, N, K) -> "int8", "bf16" or "unpack"


def ternary_choices() -> dict[tuple, str]:
    """The path :func:`ternary_linear` took per (tokens bucket, N, K): ``"int8"`` / ``"bf16"`` (:func:`ternary_gemm`
    on INT8 / bf16 codes) or ``"unpack"`` (:func:`ternary_gemm_unpacked`)."""
    return _CHOICE.summary()


def ternary_linear(x: torch.Tensor, w: TernaryWeight, gemm_from: int = 16) -> torch.Tensor:
    """BitLinear forward on bf16 ``x`` [M, K]: the fused quantizer + GEMV below ``gemm_from`` tokens; from there
    quantize + the fastest on this GPU for (tokens rounded up to a power of two, N, K) of: the GEMM on INT8
    or bf16 tensor cores, or (above 16 tokens) unpack + cuBLAS INT8 (:func:`ternary_gemm_unpacked`, faster at
    512 tokens on BitNet-3B's 8640x3200 and 3200x8640 on an H100: 69.8 and 58.1 vs 73.8 and 68.7 µs,
    reports/gpu-probes/bench-h100-full.md), timed once by CUDA-graph replay (as the autotuner) and kept for the
    process; the INT8 GEMM off the GPU. All give the same integers and the same dequantisation, so the choice
    never changes the output."""
    if x.shape[-1] != w.k:
        raise ValueError(f"x has K={x.shape[-1]}, weight has K={w.k}")
    m = x.shape[0]
    if m < gemm_from:
        return ternary_gemv(x, w)
    if not x.is_cuda:
        return ternary_gemm(act_quant(x), w)
    paths = {"int8": lambda: ternary_gemm(act_quant(x), w)}
    if w.kp <= TC16_MAX_KP:
        paths["bf16"] = lambda: ternary_gemm(act_quant(x, codes=torch.bfloat16), w)
    if m > 16:  # tokens buckets above 16 hold no call of 16 or fewer tokens, which cuBLAS INT8 refuses
        paths["unpack"] = lambda: ternary_gemm_unpacked(act_quant(x), w)
    return paths[_CHOICE.pick((triton.next_power_of_2(m), w.n, w.k), paths, lambda fn: fn())]()
