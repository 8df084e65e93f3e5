"""GPU probe: how much the ``torch.compile`` max-autotune bf16 decode step varies between independent
compilations on one machine. Each compilation runs in its own process with its own, empty inductor cache
(so max-autotune benchmarks its candidate kernels afresh), builds BitNet-3B's bf16 decode step at 192 cached
tokens (:func:`lowbit.models.gpu.decode.build_model`, the bench's ``bf16`` and ``bf16_compile`` rows) and
times it as the bench does (CUDA graph, median of 50 replays), with the 12 costliest kernels per step:

    python bench/gpu_compile_spread_probe.py DIR [N]   # writes DIR/compile_spread.json, DIR/compile_<i>.log
"""

import json
import os
import subprocess
import sys
import time

MODEL, CTX = "bitnet-b1.58-3b", 192


def one(out: str, i: int) -> None:
    """One process: the eager and the compiled bf16 step, to DIR/compile_<i>.json."""
    import torch

    from lowbit.models.gpu.decode import build_model, time_decode_step

    rows = {}
    for fmt, comp in (("bf16", False), ("bf16_compile", True)):
        t0 = time.monotonic()
        mdl = build_model(MODEL, "bf16", batch=1, context=CTX, attn="dense", k_sel=CTX // 16, seed=2, compile=comp)
        r = time_decode_step(mdl, CTX, profile=True)
        rows[fmt] = {"step_us": round(r["step_us"], 1), "build_s": round(time.monotonic() - t0, 1),
                     "profile": [(n[:90], round(us, 1)) for n, us in r["profile"]]}
        del mdl
        torch.cuda.empty_cache()
    with open(f"{out}/compile_{i}.json", "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, **rows}, f, indent=1)


def main(out: str, n: int) -> None:
    runs = []
    for i in range(n):
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=f"/tmp/inductor_spread_{i}",
                   TORCHINDUCTOR_FORCE_DISABLE_CACHES="1")
        with open(f"{out}/compile_{i}.log", "w") as log:
            rc = subprocess.call([sys.executable, __file__, "--one", out, str(i)], env=env, stdout=log,
                                 stderr=subprocess.STDOUT)
        if rc != 0:
            print(f"compilation {i}: exit {rc} (see compile_{i}.log)", flush=True)
            continue
        with open(f"{out}/compile_{i}.json") as f:
            r = json.load(f)
        runs.append(r)
        top = "; ".join(f"{k} {us}" for k, us in r["bf16_compile"]["profile"][:4])
        print(f"compilation {i}: eager {r['bf16']['step_us']} us, compiled {r['bf16_compile']['step_us']} us "
              f"(build {r['bf16_compile']['build_s']} s); top kernels: {top}", flush=True)
    with open(f"{out}/compile_spread.json", "w") as f:
        json.dump({"model": MODEL, "context": CTX, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    if sys.argv[1] == "--one":
        one(sys.argv[2], int(sys.argv[3]))
    else:
        main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4)
