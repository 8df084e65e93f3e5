"""GPU probe of the FP4 whole-row GEMV (:mod:`lowbit.models.gpu.fp4row`) by row length: every
:data:`~lowbit.models.gpu.fp4row.COLD_CONFIGS` entry plus wider programs (8 and 16 warps, one or two per SM),
timed as the decode step's cold tuning times them (:func:`~lowbit.models.gpu.fp4row.tune_cold`: one CUDA graph
over distinct weights together larger than the L2). Each config's output is checked against the first
config's (relative error below 2^-7)::

    python bench/gpu_fp4_longk_probe.py DIR [long|short|parts] [TILE8_MIN_KWP]

``long`` (the default; DIR/fp4_long_probe.json): BitNet-3B's down projection (3200x8640) with its decode
prologue (ReLU² gating, SubLN, residual) and plain, a 4096x14336 down projection and the 8640x3200 up
projection with the 3200x8640 bytes. ``short`` (DIR/fp4_short_probe.json): BitNet-3B's rows of 3200 with
their decode prologues (Wqkv 9600x3200 and W13 17280x3200 after RMSNorm, Wo 3200x3200 after SubLN with the
residual). ``parts`` (DIR/fp4_prologue_parts.json): the 3200x8640 decode prologue taken apart (residual add,
ReLU² gating, SubLN, each alone and together) under three configs. ``TILE8_MIN_KWP``: the row length in
words from which the kernel reads the row as [words, 8] tiles (:data:`~lowbit.models.gpu.fp4row.TILE8_MIN_KWP`;
set before the first compile, so run each value in its own process on one lease to compare).
"""

import json
import sys
import time

import torch

from lowbit.models.gpu import fp4row
from lowbit.models.gpu.bench import copy_bandwidth, l2_bytes, n_copies
from lowbit.models.gpu.fp4 import random_fp4_weight_torch

EXTRA = [{"BLOCK_N": bn, "PER_SM": ps, "num_warps": nw} for bn, ps, nw in [(4, 1, 16), (8, 1, 16), (2, 2, 8), (2, 1, 16)]]
SHAPES = {"long": [("3b down, decode prologue", 3200, 8640, "glu"), ("3b down", 3200, 8640, None),
                   ("w2 4096x14336", 4096, 14336, None), ("3b up", 8640, 3200, None)],
          "short": [("3b qkv, RMSNorm", 9600, 3200, "norm"), ("3b w13, RMSNorm", 17280, 3200, "norm"),
                    ("3b o, SubLN + residual", 3200, 3200, "norm+residual")]}


def _header() -> dict:
    return {"device": torch.cuda.get_device_name(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "torch": torch.__version__}


def _weights(n: int, k: int, dev, gen) -> tuple[list, int]:
    """Distinct NVFP4 weights [n, k], together larger than the L2, and the bytes of one."""
    w0 = random_fp4_weight_torch(n, k, "nvfp4", dev, gen)
    nbytes = w0.words.numel() * 4 + w0.scales.numel() * w0.scales.element_size()
    return [w0] + [random_fp4_weight_torch(n, k, "nvfp4", dev, gen) for _ in range(n_copies(nbytes, l2_bytes()) - 1)], nbytes


def main(out: str, mode: str = "long", budget_s: float = 240.0) -> None:
    t0 = time.time()
    dev = torch.device("cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    fp4row.COLD_CONFIGS.extend(c for c in EXTRA if c not in fp4row.COLD_CONFIGS)
    data = {**_header(), "copy_gbps": copy_bandwidth(), "rows": [], "skipped": []}
    for name, n, k, prologue in SHAPES[mode]:
        if time.time() - t0 > budget_s:
            data["skipped"].append(name)
            continue
        ws, nbytes = _weights(n, k, dev, gen)
        x = torch.randn(1, 2 * k if prologue == "glu" else k, device=dev, generator=gen).to(torch.bfloat16)
        g = (1 + 0.1 * torch.randn(k, device=dev, generator=gen)).to(torch.bfloat16)
        res = torch.randn(1, n, device=dev, generator=gen).to(torch.bfloat16)
        kw = {"glu": dict(gate="relu2", norm=g, residual=res), "norm": dict(norm=g),
              "norm+residual": dict(norm=g, residual=res), None: {}}[prologue]
        calls = [dict(x=x, w=w, **kw) for w in ws]
        best, times = fp4row.tune_cold(calls)
        outs = {}
        for cfg in fp4row.COLD_CONFIGS:
            key = f"{cfg['BLOCK_N']}/{cfg['PER_SM']}/{cfg['num_warps']}"
            if key in times:
                outs[key] = fp4row.fp4_gemv_row(config=dict(cfg), **calls[0]).float()
        ref = next(iter(outs.values()))
        err = {c: float((o - ref).abs().max() / ref.abs().max()) for c, o in outs.items()}
        row = {"shape": name, "n": n, "k": k, "bytes": nbytes, "copies": len(ws), "us": times,
               "best": f"{best['BLOCK_N']}/{best['PER_SM']}/{best['num_warps']}", "err_vs_first": err,
               "ok": all(e < 2 ** -7 for e in err.values())}
        row["best_gbps"] = round(nbytes / (min(times.values()) * 1e-6) / 1e9, 1)
        data["rows"].append(row)
        print(f"{name} {n}x{k}: best {row['best']} {min(times.values()):.2f} us ({row['best_gbps']} GB/s); {times}; "
              f"outputs agree: {row['ok']}", flush=True)
    data["tile8_min_kwp"] = fp4row.TILE8_MIN_KWP.value
    with open(f"{out}/fp4_{mode}_probe.json", "w") as f:
        json.dump(data, f, indent=1)


def parts(out: str) -> None:
    from lowbit.models.gpu.bench import bench_graph

    dev = torch.device("cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    n, k = 3200, 8640
    ws, _ = _weights(n, k, dev, gen)
    x1 = torch.randn(1, k, device=dev, generator=gen).to(torch.bfloat16)
    x2 = torch.randn(1, 2 * k, device=dev, generator=gen).to(torch.bfloat16)
    g = (1 + 0.1 * torch.randn(k, device=dev, generator=gen)).to(torch.bfloat16)
    res = torch.randn(1, n, device=dev, generator=gen).to(torch.bfloat16)
    forms = {"plain": dict(x=x1), "residual": dict(x=x1, residual=res), "norm": dict(x=x1, norm=g),
             "gate": dict(x=x2, gate="relu2"), "gate+norm": dict(x=x2, gate="relu2", norm=g),
             "gate+norm+residual": dict(x=x2, gate="relu2", norm=g, residual=res)}
    data = {**_header(), "shape": f"{n}x{k}", "copies": len(ws), "us": {}}
    for cfg in ({"BLOCK_N": 2, "PER_SM": 2, "num_warps": 4}, {"BLOCK_N": 2, "PER_SM": 4, "num_warps": 4},
                {"BLOCK_N": 4, "PER_SM": 4, "num_warps": 4}):
        key = f"{cfg['BLOCK_N']}/{cfg['PER_SM']}/{cfg['num_warps']}"
        data["us"][key] = {f: round(bench_graph([lambda w=w, kw=kw, cfg=cfg: fp4row.fp4_gemv_row(w=w, config=dict(cfg), **kw)
                                                 for w in ws]), 2) for f, kw in forms.items()}
        print(key, data["us"][key], flush=True)
    with open(f"{out}/fp4_prologue_parts.json", "w") as f:
        json.dump(data, f, indent=1)


if __name__ == "__main__":
    mode = sys.argv[2] if len(sys.argv) > 2 else "long"
    if len(sys.argv) > 3:
        import triton.language as tl

        fp4row.TILE8_MIN_KWP = tl.constexpr(int(sys.argv[3]))
    if mode == "parts":
        parts(sys.argv[1])
    else:
        main(sys.argv[1], mode)
