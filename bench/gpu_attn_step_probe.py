"""GPU probe of the decode step's attention kernel: the CUDA-graph decode step
(:func:`lowbit.models.gpu.decode.time_decode_step`, 192 cached tokens, programmatic dependent launch on)
of BitNet-3B (MHA) and 2B4T (GQA), ternary and NVFP4 (one NVFP4 row with PDL off), with torch SDPA, with the split-context kernel under
several plans (splits / warps / tokens per block; :func:`lowbit.models.gpu.decode_attn.split_decode_attention`)
and with the one-program-per-group kernel, each swapped into ``lowbit.models.gpu.decode`` for its step:

    python bench/gpu_attn_step_probe.py DIR   # writes DIR/attn_step_probe.json
"""

import functools
import json
import sys
import time

import torch

from lowbit.models.gpu import decode as D
from lowbit.models.gpu import ternary as T

ORIG = (D.split_decode_attention, D.dense_decode_attention)
M3, M2 = "bitnet-b1.58-3b", "bitnet-b1.58-2b4t"
# (label, model, format, LOWBIT_GPU_ATTN mode, split_decode_attention keywords)
RUNS = [("sdpa", M3, "ternary", "sdpa", None), ("split, default plan", M3, "ternary", "split", None),
        ("split 8/2w/32", M3, "ternary", "split", dict(splits=8, num_warps=2, block_tokens=32)),
        ("split 13/2w/16", M3, "ternary", "split", dict(splits=13, num_warps=2, block_tokens=16)),
        ("split 4/4w/64", M3, "ternary", "split", dict(splits=4, num_warps=4, block_tokens=64)),
        ("one program per group", M3, "ternary", "dense", None), ("sdpa, again", M3, "ternary", "sdpa", None),
        ("split, default plan", M2, "ternary", "split", None),
        ("split 13/2w", M2, "ternary", "split", dict(splits=13, num_warps=2)),
        ("split 7/4w", M2, "ternary", "split", dict(splits=7, num_warps=4)),
        ("one program per group", M2, "ternary", "dense", None),
        ("sdpa", M3, "nvfp4", "sdpa", None), ("split 8/2w/32", M3, "nvfp4", "split", dict(splits=8, num_warps=2, block_tokens=32)),
        ("sdpa, PDL off", M3, "nvfp4", "sdpa", None)]


def main(out: str) -> None:
    rows, t0 = [], time.monotonic()
    print(torch.cuda.get_device_name(0), flush=True)
    for label, model, fmt, mode, kw in RUNS:
        if time.monotonic() - t0 > 420:
            print("time budget spent: stop", flush=True)
            break
        T.PDL, D.ATTN_MODE = "PDL off" not in label, mode
        if kw:
            D.split_decode_attention = functools.partial(ORIG[0], **kw)
        try:
            r = D.time_decode_step(D.build_model(model, fmt, context=192, seed=2), 192)
            rows.append({"label": label, "model": model, "fmt": fmt, "ctx": 192, "us": round(r["step_us"], 2),
                         "device": torch.cuda.get_device_name(0), "pdl": T.PDL})
            print(f"{model} {fmt} {label}: {r['step_us']:.1f} us", flush=True)
        except Exception as e:  # noqa: BLE001 - report and go on with the next variant
            print(f"{model} {fmt} {label}: FAILED {type(e).__name__}: {str(e)[:200]}", flush=True)
        finally:
            D.split_decode_attention, D.dense_decode_attention = ORIG
            T.PDL, D.ATTN_MODE = False, "auto"
            torch.cuda.empty_cache()
    with open(f"{out}/attn_step_probe.json", "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
