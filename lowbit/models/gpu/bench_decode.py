"""The whole-model decode section of the GPU benchmark (:mod:`.bench`): per (model, format, context,
attention) one CUDA-graph decode step (:func:`.decode.time_decode_step`) with GPU energy per token, rows of
``data["decode"]`` (schema: :mod:`.bench`). A format ending in ``_pdl`` runs every ternary and
decode-attention kernel with programmatic dependent launch (``ternary.PDL``); attention ``split`` / ``sdpa``
takes the split-context kernel / torch SDPA for every dense attention (``decode.ATTN_MODE``); ``_compile`` wraps the torch layer in
``torch.compile``. Speedups are against the bf16 eager and compiled rows of the same model and context.
"""

from __future__ import annotations

import time

from .bench_budget import Budget


def run_decode(configs, data, log, budget: Budget, seed: int) -> None:
    import torch

    from . import decode as decode_mod
    from . import ternary as ternary_mod
    from .decode import build_model, gpu_energy_j, time_decode_step

    dev_name = data["device"]
    rows = data["decode"]
    energy = gpu_energy_j()
    if isinstance(energy, str):
        data["skipped"].append({"what": "GPU energy per token", "why": energy})
    for model, fmt, ctx, attn in configs:
        what = f"decode {model} {fmt} ctx={ctx} {attn}"
        if not budget.ok(what):
            continue
        mdl = None
        t0 = time.monotonic()
        base = fmt.removesuffix("_compile").removesuffix("_pdl")
        pdl_was, mode_was = ternary_mod.PDL, decode_mod.ATTN_MODE
        try:
            ternary_mod.PDL = pdl_was or fmt.endswith("_pdl")  # every ternary decode kernel with PDL
            forced = attn in ("split", "sdpa")  # this kernel for every dense attention
            if forced:
                decode_mod.ATTN_MODE = attn
            mdl = build_model(model, base, batch=1, context=ctx, attn="dense" if forced else attn,
                              k_sel=max(1, ctx // 16), seed=seed + 2, compile=fmt.endswith("_compile"))
            r = time_decode_step(mdl, ctx, profile=(base in ("ternary", "nvfp4") and ctx == 192), energy=energy)
        except Exception as e:  # report and continue: one failing config must not lose the others
            log(f"{what}: FAILED {type(e).__name__}: {str(e)[:300]}")
            data["skipped"].append({"what": what, "why": f"{type(e).__name__}: {str(e)[:200]}"})
            continue
        finally:
            ternary_mod.PDL, decode_mod.ATTN_MODE = pdl_was, mode_was
            mdl = None
            torch.cuda.empty_cache()
        floor_us = r["weight_bytes"] / (data["copy_gbps"] * 1e9) * 1e6
        row = {"kernel": fmt, "model": model, "batch": 1, "context": ctx, "attn": attn,
               "step_us": round(r["step_us"], 2), "tokens_per_s": round(r["tokens_per_s"], 1),
               "weight_bytes": r["weight_bytes"], "floor_frac": round(floor_us / r["step_us"], 4),
               "speedup_vs_torch": None, "speedup_vs_compile": None, "j_per_token": None, "avg_w": None,
               "device": dev_name, "finite": r["finite"], "build_s": round(time.monotonic() - t0, 1)}
        if "j_per_token" in r:
            row["j_per_token"], row["avg_w"] = round(r["j_per_token"], 4), round(r["avg_w"], 1)
        rows.append(row)
        log(f"{what}: {r['step_us']:.1f} us/token = {r['tokens_per_s']:.0f} tok/s"
            + (f", {r['j_per_token']:.3f} J/token at {r['avg_w']:.0f} W" if "j_per_token" in r else "")
            + f" ({row['build_s']:.0f} s incl. build)")
        if "tuned" in r:
            log("  cold-tuned FP4 GEMV configs (BLOCK_N/PER_SM/warps: us): " + "; ".join(
                f"{role} {t['us']}" for role, t in r["tuned"].items()))
        if "profile" in r:
            log("  top kernels per step (us): " + "; ".join(f"{n[:60]} {t:.0f}" for n, t in r["profile"]))
    for r in rows:
        for key, base_kernel in (("speedup_vs_torch", "bf16"), ("speedup_vs_compile", "bf16_compile")):
            b = next((x for x in rows if x["kernel"] == base_kernel and x["attn"] == "dense"
                      and (x["model"], x["context"]) == (r["model"], r["context"])), None)
            if b and b is not r and r["kernel"] not in ("bf16",) + (("bf16_compile",) if key == "speedup_vs_compile" else ()):
                r[key] = round(b["step_us"] / r["step_us"], 3)
