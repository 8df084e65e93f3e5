"""H200 tuning probe for the prefill GEMM kernel: times candidate kernels and configs
with cold weights (CUDA graph over distinct weight copies, as ``lowbit bench-gpu``) and prints one table.

GEMM candidates: a copy of the kernel of :mod:`lowbit.models.gpu.ternary_gemm` with the weight tile formed
four ways (``UNPACK``: 0 signed ``c - 1`` by the join tree, 1 unsigned ``c`` by the join tree = the
kernel in use, 2 unsigned by a broadcast shift, 3 int8 weights unpacked beforehand: the INT8 tensor-core
ceiling without unpacking), both operand orders, a few tile configs and split-K; beside torch bf16, the
quantizer alone and cuBLAS INT8 on the unpacked weights. Output of one H200 lease:
reports/gpu-baseline.tune.log (which also holds LOP option sets timed by an earlier version of this probe; the
bench's attention section now times LOP's chunk sizes and the call without PDL).

    python bench/gpu_tune.py --out DIR [--budget-s S]
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from lowbit.models.gpu.bench import bench_graph, l2_bytes, n_copies
from lowbit.models.gpu.ternary import act_quant, pack_ternary_gpu_torch
from lowbit.models.gpu.ternary_gemm import (
    _dequant_acc_kernel,
    grouped_tile,
    ternary_gemm,
    ternary_unpack,
    unpack_join,
)


@triton.jit
def _code_s(w, s: tl.constexpr):
    # the signed weight c - 1 (the form before the unsigned codes of lowbit.models.gpu.ternary_gemm)
    return (((w >> (8 * (s % 4) + 2 * (s // 4))) & 3) - 1).to(tl.int8)


@triton.jit
def _unpack_join_s(w, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    p0 = tl.join(_code_s(w, 0), _code_s(w, 8))
    p1 = tl.join(_code_s(w, 1), _code_s(w, 9))
    p2 = tl.join(_code_s(w, 2), _code_s(w, 10))
    p3 = tl.join(_code_s(w, 3), _code_s(w, 11))
    p4 = tl.join(_code_s(w, 4), _code_s(w, 12))
    p5 = tl.join(_code_s(w, 5), _code_s(w, 13))
    p6 = tl.join(_code_s(w, 6), _code_s(w, 14))
    p7 = tl.join(_code_s(w, 7), _code_s(w, 15))
    r0 = tl.join(tl.join(p0, p4), tl.join(p2, p6))
    r1 = tl.join(tl.join(p1, p5), tl.join(p3, p7))
    return tl.reshape(tl.join(r0, r1), [BLOCK_N, BLOCK_KW * 16])


@triton.jit
def _unpack_bc_u(w, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    rs = tl.arange(0, 16)
    sh = 8 * (rs % 4) + 2 * (rs // 4)
    return tl.reshape((w[:, :, None] >> sh[None, None, :]) & 3, [BLOCK_N, BLOCK_KW * 16]).to(tl.int8)


@triton.jit
def _wtile(w_ptr, rn, n_ok, j0, KW, stride_wn, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr, UNPACK: tl.constexpr):
    if UNPACK == 3:  # int8 weights already unpacked (c - 1)
        kk = j0 * 16 + tl.arange(0, BLOCK_KW * 16)
        t = tl.load(w_ptr + rn[:, None] * stride_wn + kk[None, :], mask=n_ok[:, None] & (kk < KW * 16)[None, :], other=0)
    else:
        j = j0 + tl.arange(0, BLOCK_KW)
        w = tl.load(w_ptr + rn[:, None] * stride_wn + j[None, :], mask=n_ok[:, None] & (j < KW)[None, :], other=0)
        if UNPACK == 0:  # signed c - 1, join tree
            t = _unpack_join_s(w, BLOCK_N, BLOCK_KW)
        elif UNPACK == 1:  # unsigned c, join tree (lowbit's kernel)
            t = unpack_join(w, BLOCK_N, BLOCK_KW)
        else:
            t = _unpack_bc_u(w, BLOCK_N, BLOCK_KW)
    return t


@triton.jit
def _tg2_kernel(q_ptr, qsum_ptr, xs_ptr, w_ptr, ws_ptr, y_ptr, acc_ptr, M, N, KW, stride_qm, stride_wn, stride_ym,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr, GROUP_M: tl.constexpr,
                SPLIT_K: tl.constexpr, SWAP: tl.constexpr, UNPACK: tl.constexpr):
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m, pid_n = grouped_tile(pid, M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_KW * 16)
    m_ok = rm < M
    n_ok = rn < N
    if SWAP:
        acc = tl.zeros([BLOCK_N, BLOCK_M], tl.int32)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.int32)
    nk = tl.cdiv(KW, BLOCK_KW)
    per = tl.cdiv(nk, SPLIT_K)
    k_lo = pid_k * per
    for kb in range(k_lo, tl.minimum(nk, k_lo + per)):
        j0 = kb * BLOCK_KW
        kk = j0 * 16 + rk
        if SWAP:
            xt = tl.load(q_ptr + rm[None, :] * stride_qm + kk[:, None], mask=m_ok[None, :] & (kk < KW * 16)[:, None],
                         other=0)
            acc = tl.dot(_wtile(w_ptr, rn, n_ok, j0, KW, stride_wn, BLOCK_N, BLOCK_KW, UNPACK), xt, acc,
                         out_dtype=tl.int32)
        else:
            x = tl.load(q_ptr + rm[:, None] * stride_qm + kk[None, :], mask=m_ok[:, None] & (kk < KW * 16)[None, :],
                        other=0)
            acc = tl.dot(x, tl.trans(_wtile(w_ptr, rn, n_ok, j0, KW, stride_wn, BLOCK_N, BLOCK_KW, UNPACK)), acc,
                         out_dtype=tl.int32)
    if SWAP:
        acc = tl.trans(acc)
    if UNPACK == 1 or UNPACK == 2:
        if pid_k == 0:
            acc -= tl.load(qsum_ptr + rm, mask=m_ok, other=0)[:, None]
    omask = m_ok[:, None] & n_ok[None, :]
    if SPLIT_K > 1:
        tl.atomic_add(acc_ptr + rm[:, None] * N + rn[None, :], acc, mask=omask, sem="relaxed")
    else:
        ws = tl.load(ws_ptr + rn, mask=n_ok, other=0.0)
        xs = tl.load(xs_ptr + rm, mask=m_ok, other=1.0)
        y = (acc.to(tl.float32) * ws[None, :]) / xs[:, None]
        tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :], y.to(tl.bfloat16), mask=omask)


def tg2(a, words, scale, n, cfg, unpack, swap, split_k, out=None, acc=None):
    m = a.q.shape[0]
    kw = a.q.shape[1] // 16
    bm, bn, bk, nw, ns = cfg
    y = out if out is not None else torch.empty(m, n, dtype=torch.bfloat16, device=a.q.device)
    if split_k > 1:
        acc.zero_()
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn), split_k)
    _tg2_kernel[grid](a.q, a.qsum, a.s, words, scale, y, acc if acc is not None else y, m, n, kw, a.q.stride(0),
                      words.stride(0), y.stride(0), BLOCK_M=bm, BLOCK_N=bn, BLOCK_KW=bk, GROUP_M=8, SPLIT_K=split_k,
                      SWAP=swap, UNPACK=unpack, num_warps=nw, num_stages=ns)
    if split_k > 1:
        _dequant_acc_kernel[(m, triton.cdiv(n, 1024))](acc, scale, a.s, y, n, BLOCK=1024, num_warps=4)
    return y


def check_exact(dev, n=200, k=3000, m=100):
    """The candidates' int32 results (through bf16 with unit scales) equal ternary_gemm's on one odd shape."""
    g = torch.Generator(device=dev).manual_seed(3)
    codes = torch.randint(-1, 2, (n, k), device=dev, generator=g, dtype=torch.int8)
    w = pack_ternary_gpu_torch(codes, 1.0)
    x = torch.randn(m, k, device=dev, generator=g).to(torch.bfloat16)
    a = act_quant(x)
    ref = ternary_gemm(a, w, config={"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_KW": 8, "GROUP_M": 8}, split_k=1)
    wi8 = ternary_unpack(w)
    res = {}
    for unpack in (0, 1, 2, 3):
        for swap in (0, 1):
            for sk in (1, 2):
                acc = torch.zeros(m, n, dtype=torch.int32, device=dev)
                y = tg2(a, wi8 if unpack == 3 else w.words, w.scale, n, (64, 64, 8, 4, 3), unpack, swap, sk, acc=acc)
                res[f"u{unpack}s{swap}k{sk}"] = bool(torch.equal(y, ref))
    return res


GEMM_SHAPES = [(3200, 3200), (2560, 6912)]
CFG512 = [(128, 128, 8, 8, 3), (128, 256, 4, 8, 3), (128, 64, 8, 4, 4)]
CFG512_SWAP = [(128, 128, 8, 8, 3), (128, 64, 8, 4, 4), (64, 128, 8, 4, 4)]
CFG64 = [(64, 32, 8, 4, 4), (64, 64, 8, 4, 4)]
CFG64_SWAP = [(64, 64, 8, 4, 4), (64, 128, 8, 4, 4)]


def run_gemm(dev, rows, say, deadline):
    l2 = l2_bytes()
    gen = torch.Generator(device=dev).manual_seed(0)
    for n, k in GEMM_SHAPES:
        codes = torch.randint(-1, 2, (n, k), device=dev, generator=gen, dtype=torch.int8)
        w0 = pack_ternary_gpu_torch(codes, 0.5)
        ws = [pack_ternary_gpu_torch(codes, 0.5) for _ in range(n_copies(w0.words.numel() * 4, l2))]
        wi8 = [ternary_unpack(w) for w in ws[:n_copies(n * w0.kp, l2)]]
        wbf = [torch.randn(n, k, device=dev, generator=gen).to(torch.bfloat16) for _ in range(n_copies(2 * n * k, l2))]
        for m in (64, 512):
            if time.time() > deadline:
                return
            x = torch.randn(m, k, device=dev, generator=gen).to(torch.bfloat16)
            a = act_quant(x)
            t_bf = bench_graph([lambda w=w, x=x: F.linear(x, w) for w in wbf])
            t_q = bench_graph([lambda x=x: act_quant(x)])
            t_mm = bench_graph([lambda w=w, a=a: torch._int_mm(a.q, w.t()) for w in wi8])
            base = {"n": n, "k": k, "m": m, "bf16": t_bf, "quant": t_q, "int_mm": t_mm}
            say(f"{n}x{k} M={m}: bf16 {t_bf:.1f} quant {t_q:.1f} cublas-int8(unpacked) {t_mm:.1f}")
            y = torch.empty(m, n, dtype=torch.bfloat16, device=dev)
            acc = torch.zeros(m, n, dtype=torch.int32, device=dev)
            cands = []
            for swap in (0, 1):
                cfgs = (CFG512_SWAP if swap else CFG512) if m >= 256 else (CFG64_SWAP if swap else CFG64)
                for cfg in cfgs:
                    for unpack in ((1, 2, 3) if swap else (0, 1, 3)) if m >= 256 else ((1, 3) if swap else (0, 1, 3)):
                        for sk in ((1,) if m >= 256 else (1, 4)):
                            if sk > 1 and unpack == 3:
                                continue
                            cands.append((swap, cfg, unpack, sk))
            best = {}
            for swap, cfg, unpack, sk in cands:
                if time.time() > deadline:
                    break
                src = wi8 if unpack == 3 else [w.words for w in ws]
                try:
                    t = bench_graph([partial(tg2, a, w, w0.scale, n, cfg, unpack, swap, sk, out=y, acc=acc) for w in src])
                except Exception as e:  # noqa: BLE001 - a probe: report and go on
                    say(f"  fail swap={swap} cfg={cfg} unpack={unpack} sk={sk}: {type(e).__name__} {str(e)[:120]}")
                    continue
                rows.append({**base, "swap": swap, "cfg": cfg, "unpack": unpack, "split_k": sk, "us": t})
                key = (unpack, swap)
                if key not in best or t < best[key][0]:
                    best[key] = (t, cfg, sk)
            for (unpack, swap), (t, cfg, sk) in sorted(best.items()):
                say(f"  unpack={unpack} swap={swap}: best {t:.1f} us cfg={cfg} split_k={sk} "
                    f"(+quant {t + t_q:.1f} vs bf16 {t_bf:.1f}: {t_bf / (t + t_q):.2f}x)")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget-s", type=float, default=400)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.budget_s
    dev = torch.device("cuda")
    lines = []

    def say(s):
        print(s, flush=True)
        lines.append(s)

    rows = {"gemm": []}
    say(f"exact: {check_exact(dev)}")
    run_gemm(dev, rows["gemm"], say, deadline)
    (args.out / "tune.json").write_text(json.dumps(rows, indent=1))
    (args.out / "tune.log").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
