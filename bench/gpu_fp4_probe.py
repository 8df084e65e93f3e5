"""H200 probe for the single-token FP4 GEMV (:mod:`lowbit.models.gpu.fp4row`) and the fused FP4 decode step:
batch-1 GEMV times (cold weights, CUDA graph over distinct copies as ``lowbit bench-gpu``) of torch bf16, the
tiled FP4 GEMV of :mod:`lowbit.models.gpu.fp4` and the whole-row kernel under each config, with rel-L2 errors;
then whole-model decode steps (bf16, NVFP4 unfused and fused) with the costliest kernels of the fused step.

    python bench/gpu_fp4_probe.py --out DIR [--budget-s S]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lowbit.models.gpu.bench import _fp4_reference_weight, bench_graph, l2_bytes, n_copies
from lowbit.models.gpu.decode import build_model, time_decode_step
from lowbit.models.gpu.fp4 import fp4_gemv, random_fp4_weight_torch
from lowbit.models.gpu.fp4row import fp4_gemv_row

SHAPES = [(9600, 3200), (3200, 3328), (17280, 3200), (3200, 8640), (3840, 2560), (2560, 2560), (13824, 2560),
          (2560, 6912), (14336, 4096), (4096, 14336)]
CONFIGS = [(8, 4, 4), (4, 4, 4), (8, 2, 8), (4, 2, 8), (2, 4, 4), (16, 2, 8), (4, 1, 8), (2, 2, 4), (1, 4, 4)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, default=300)
    ap.add_argument("--what", default="gemv,decode")
    ap.add_argument("--fmts", default="bf16,nvfp4,mxfp4")
    ap.add_argument("--rope-off", action="store_true")
    ap.add_argument("--tag", default="")
    ap.add_argument("--configs", action="store_true")
    a = ap.parse_args()
    t0 = time.monotonic()
    out = {"gemv": [], "decode": []}
    l2 = l2_bytes()
    gen = torch.Generator(device="cuda").manual_seed(0)
    if "gemv" in a.what:
        for n, k in SHAPES:
            if time.monotonic() - t0 > a.budget_s * 0.6:
                break
            x = (torch.randn(1, k, device="cuda", generator=gen)).to(torch.bfloat16)
            row = {"shape": f"{n}x{k}"}
            ws = [random_fp4_weight_torch(n, k, "nvfp4", "cuda", gen) for _ in range(n_copies(n * k // 2, l2))]
            wb = [(torch.randn(n, k, device="cuda", generator=gen) / k**0.5).to(torch.bfloat16)
                  for _ in range(n_copies(2 * n * k, l2))]
            ref = x.double() @ _fp4_reference_weight(ws[0]).T
            y = fp4_gemv_row(x, ws[0]).double()
            row["rel_l2_row"] = float(torch.linalg.norm(y - ref) / torch.linalg.norm(ref))
            row["bf16"] = bench_graph([lambda w=w, x=x: F.linear(x, w) for w in wb])
            row["tiled"] = bench_graph([lambda w=w, x=x: fp4_gemv(x, w, block_m=1) for w in ws])
            row["row_tuned"] = bench_graph([lambda w=w, x=x: fp4_gemv_row(x, w) for w in ws])
            for bn, ps, nw in CONFIGS if a.configs else []:
                cfg = {"BLOCK_N": bn, "PER_SM": ps, "num_warps": nw}
                try:
                    row[f"row{bn}/{ps}/{nw}"] = bench_graph([lambda w=w, c=cfg, x=x: fp4_gemv_row(x, w, config=dict(c))
                                                             for w in ws])
                except Exception as e:  # noqa: BLE001 - a config that does not compile (registers)
                    row[f"row{bn}/{ps}/{nw}"] = repr(e)[:60]
            row["gbps_row"] = ws[0].nbytes / (row["row_tuned"] * 1e-6) / 1e9
            out["gemv"].append(row)
            print(json.dumps({k2: (round(v, 2) if isinstance(v, float) else v) for k2, v in row.items()}), flush=True)
            del ws, wb
            torch.cuda.empty_cache()
    if "decode" in a.what:
        fmts = [(f, True, True) for f in a.fmts.split(",")] + ([("nvfp4", True, False)] if a.rope_off else [])
        for model in ("bitnet-b1.58-3b", "bitnet-b1.58-2b4t"):
            for fmt, fused, rope in fmts:
                if time.monotonic() - t0 > a.budget_s or (fmt == "mxfp4" and model != "bitnet-b1.58-3b"):
                    continue
                m = build_model(model, fmt, context=192, seed=2, fused=fused)
                m.rope_epilogue = rope
                r = time_decode_step(m, 192, profile=fused and fmt == "nvfp4" and rope)
                row = {"model": model, "fmt": fmt, "fused": fused, "rope_epilogue": rope,
                       "step_us": round(r["step_us"], 1), "weight_mb": round(r["weight_bytes"] / 1e6),
                       "tuned": r.get("tuned"), "profile": [(n[:40], round(t, 1)) for n, t in r.get("profile") or []]}
                out["decode"].append(row)
                print(json.dumps(row), flush=True)
                del m
                torch.cuda.empty_cache()
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / f"fp4_probe{a.tag}.json").write_text(json.dumps(out, indent=1))
    print(f"done in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
