"""H200 probe for the FP4 tensor-core GEMM with in-register weight decode (:mod:`lowbit.models.gpu.fp4mma`):
per (shape, tokens) the times (cold weights, CUDA graph over distinct copies, as ``lowbit bench-gpu``) of torch
bf16 ``F.linear``, the dequantize + cuBLAS path (:func:`lowbit.models.gpu.fp4.fp4_gemm`) and the product dispatch (:func:`lowbit.models.gpu.fp4mma.fp4_linear`) and the new kernel under each
config of ``MMA_CONFIGS``, with rel-L2 errors against float64; prints a table, writes JSON.

    python bench/gpu_fp4_mma_probe.py --out DIR [--batches 4,16,64,512] [--budget-s S]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lowbit.models.gpu.bench import _fp4_reference_weight, bench_graph, l2_bytes, n_copies
from lowbit.models.gpu.fp4 import fp4_gemm, fp4_gemv, random_fp4_weight_torch
from lowbit.models.gpu.fp4mma import MMA_CONFIGS, fp4_linear, fp4_mma
from lowbit.models.gpu.ternary import act_quant, pack_ternary_gpu_torch
from lowbit.models.gpu.ternary_gemm import ternary_gemm, ternary_linear, ternary_unpack

# (BLOCK_M, BLOCK_N, BLOCK_KW, warps, stages, SWAP) of the ternary INT8 GEMM tried for few tokens
T_CONFIGS = [(16, 32, 8, 4, 4, True), (16, 64, 8, 4, 4, True), (16, 64, 16, 4, 4, True), (16, 128, 8, 4, 3, True),
             (16, 32, 16, 4, 3, True)]

SHAPES = [(3200, 3200), (8640, 3200), (3200, 8640), (3840, 2560), (2560, 2560), (13824, 2560), (2560, 6912)]


def _cfg(c) -> dict:
    return {**c.kwargs, "num_warps": c.num_warps, "num_stages": c.num_stages}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--batches", default="4,16,64,512")
    ap.add_argument("--budget-s", type=float, default=400)
    ap.add_argument("--fmt", default="nvfp4")
    ap.add_argument("--ternary-batches", default="4")
    ap.add_argument("--pieces", default="512", help="token counts for the ternary prefill pieces (empty: none)")
    a = ap.parse_args()
    t0 = time.monotonic()
    l2 = l2_bytes()
    gen = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for m in (int(b) for b in a.batches.split(",")):
        for n, k in SHAPES:
            if time.monotonic() - t0 > a.budget_s:
                print("budget spent", flush=True)
                break
            ws = [random_fp4_weight_torch(n, k, a.fmt, "cuda", gen) for _ in range(n_copies(n * k // 2, l2))]
            wb = [(torch.randn(n, k, device="cuda", generator=gen) / k**0.5).to(torch.bfloat16)
                  for _ in range(n_copies(2 * n * k, l2))]
            x = torch.randn(m, k, device="cuda", generator=gen).to(torch.bfloat16)
            ref = x.double() @ _fp4_reference_weight(ws[0]).T
            row = {"shape": f"{n}x{k}", "m": m, "bf16": bench_graph([lambda w=w, x=x: F.linear(x, w) for w in wb]),
                   "today": bench_graph([lambda w=w, x=x, f=fp4_gemv if m < 16 else fp4_gemm: f(x, w) for w in ws]),
                   "linear": bench_graph([lambda w=w, x=x: fp4_linear(x, w) for w in ws])}
            best = None
            for c in MMA_CONFIGS:
                cfg = _cfg(c)
                if cfg["BLOCK_M"] > max(16, 2 * m):
                    continue
                key = "mma_{BLOCK_M}x{BLOCK_N}x{BLOCK_KW}_w{num_warps}s{num_stages}{sw}".format(
                    **cfg, sw="T" if cfg["SWAP"] else "")
                try:
                    y = fp4_mma(x, ws[0], config=cfg).double()
                    err = float(torch.linalg.norm(y - ref) / torch.linalg.norm(ref))
                    us = bench_graph([lambda w=w, x=x, cfg=cfg: fp4_mma(x, w, config=cfg) for w in ws])
                except Exception as e:  # noqa: BLE001 - a config that fails to compile is reported, not fatal
                    row[key] = f"error: {type(e).__name__}: {str(e)[:80]}"
                    continue
                row[key] = us
                row[key + "_err"] = err
                if best is None or us < best[1]:
                    best = (key, us)
            row["best"] = best
            rows.append(row)
            b = f"{best[0]} {best[1]:.1f}" if best else "-"
            print(f"M={m:4d} {n}x{k}: bf16 {row['bf16']:.1f} today {row['today']:.1f} linear {row['linear']:.1f} best {b} "
                  f"({row['bf16'] / best[1]:.2f}x bf16)" if best else "", flush=True)
            Path(a.out).mkdir(parents=True, exist_ok=True)
            (Path(a.out) / f"fp4_mma_{a.fmt}.json").write_text(json.dumps(rows, indent=1))
    for m in (int(b) for b in a.ternary_batches.split(",") if b):
        for n, k in SHAPES:
            if time.monotonic() - t0 > a.budget_s:
                break
            tws = [pack_ternary_gpu_torch(torch.randint(-1, 2, (n, k), dtype=torch.int8, device="cuda", generator=gen),
                                          0.8) for _ in range(n_copies(n * k // 4, l2))]
            x = torch.randn(m, k, device="cuda", generator=gen).to(torch.bfloat16)
            want = ternary_linear(x, tws[0])
            row = {"shape": f"{n}x{k}", "m": m, "kind": "ternary",
                   "today": bench_graph([lambda w=w, x=x: ternary_linear(x, w) for w in tws])}
            best = None
            for bm, bn, bkw, nw, ns, sw in T_CONFIGS:
                cfg = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_KW": bkw, "GROUP_M": 8, "SWAP": sw, "num_warps": nw,
                       "num_stages": ns}
                key = f"tgemm_{bm}x{bn}x{bkw}_w{nw}s{ns}"
                try:
                    same = bool(torch.equal(ternary_gemm(act_quant(x), tws[0], config=dict(cfg), split_k=1), want))
                    us = bench_graph([lambda w=w, x=x, cfg=cfg: ternary_gemm(act_quant(x), w, config=dict(cfg),
                                                                             split_k=1) for w in tws])
                except Exception as e:  # noqa: BLE001
                    row[key] = f"error: {type(e).__name__}: {str(e)[:80]}"
                    continue
                row[key], row[key + "_same"] = us, same
                if best is None or us < best[1]:
                    best = (key, us)
            row["best"] = best
            rows.append(row)
            print(f"ternary M={m} {n}x{k}: today {row['today']:.1f} best {best}", flush=True)
            (Path(a.out) / f"fp4_mma_{a.fmt}.json").write_text(json.dumps(rows, indent=1))
    for m in (int(b) for b in a.pieces.split(",") if b):
        for n, k in SHAPES[1:3]:
            tws = [pack_ternary_gpu_torch(torch.randint(-1, 2, (n, k), dtype=torch.int8, device="cuda", generator=gen),
                                          0.8) for _ in range(n_copies(n * k // 4, l2))]
            wus = [ternary_unpack(w) for w in tws[:n_copies(n * k, l2)]]
            wts = [u.t().contiguous() for u in wus]
            x = torch.randn(m, k, device="cuda", generator=gen).to(torch.bfloat16)
            q = act_quant(x)
            row = {"shape": f"{n}x{k}", "m": m, "kind": "pieces",
                   "act_quant": bench_graph([lambda x=x: act_quant(x)] * 8),
                   "unpack": bench_graph([lambda w=w: ternary_unpack(w) for w in tws]),
                   "int_mm_nt": bench_graph([lambda u=u, q=q: torch._int_mm(q.q, u.t()) for u in wus]),
                   "int_mm_nn": bench_graph([lambda u=u, q=q: torch._int_mm(q.q, u) for u in wts]),
                   "tgemm_kernel": bench_graph([lambda w=w, q=q: ternary_gemm(q, w) for w in tws])}
            rows.append(row)
            print("pieces", json.dumps(row), flush=True)
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
