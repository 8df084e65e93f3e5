"""GPU probe of the whole-model decode goals on one lease, when a complete ``lowbit bench-gpu`` run does not
fit: the decode section's rows (:func:`lowbit.models.gpu.bench_decode.run_decode`, CUDA graph, 192 cached
tokens, NVML energy) for BitNet-3B bf16 eager, ternary and NVFP4 with programmatic dependent launch, and
bf16 under ``torch.compile`` max-autotune, in that order (the compiled baseline last but one: its build is
the slowest), with their speedups over the bf16 rows of the same lease:

    python bench/gpu_decode_goals_probe.py DIR [BUDGET_S]   # writes DIR/decode_goals_probe.json
"""

import json
import sys
import time

import torch

from lowbit.models.gpu.bench import copy_bandwidth
from lowbit.models.gpu.bench_budget import Budget
from lowbit.models.gpu.bench_decode import run_decode

MODEL = "bitnet-b1.58-3b"


def main(out: str, budget_s: float = 150.0) -> None:
    data = {"device": torch.cuda.get_device_name(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "torch": torch.__version__, "copy_gbps": copy_bandwidth(), "decode": [], "skipped": []}
    cfgs = [(MODEL, f, 192, "dense") for f in ("bf16", "ternary_pdl", "nvfp4_pdl", "bf16_compile")]
    cfgs.append((MODEL, "ternary_pdl", 192, "sdpa"))
    run_decode(cfgs, data, lambda s: print(s, flush=True), Budget(budget_s, data["skipped"]), seed=0)
    for r in data["decode"]:
        print(f"{r['kernel']} {r['attn']}: {r['step_us']:.1f} us, {r['tokens_per_s']:.0f} tok/s, "
              f"vs bf16 {r['speedup_vs_torch']}, vs compiled {r['speedup_vs_compile']}", flush=True)
    with open(f"{out}/decode_goals_probe.json", "w") as f:
        json.dump(data, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 150.0)
