"""GPU probe of the decode step's launch-level choices: per model and format the CUDA-graph decode step
(:func:`lowbit.models.gpu.decode.time_decode_step`, 192 cached tokens, with its costliest kernels) with the
Wqkv GEMV's RoPE + KV-append epilogue on and off, the default dense attention against the split-context
kernel (``decode.ATTN_MODE``), and bf16 for reference; the dense decode attention variants
(:func:`lowbit.models.gpu.bench_attention.time_dense_attention`) under several split plans; and, on the GPU,
that the epilogue gives the separate launch's step output and cache rows bit for bit. Programmatic dependent
launch is read from ``LOWBIT_GPU_PDL`` at import, so each setting is its own process:

    LOWBIT_GPU_PDL=0 python bench/gpu_decode_probe.py DIR   # writes DIR/decode_probe_pdl0.json
    LOWBIT_GPU_PDL=1 python bench/gpu_decode_probe.py DIR   # the steps only, PDL on
"""

import json
import os
import sys
import time

import torch

from lowbit.models.gpu import decode
from lowbit.models.gpu.decode import build_model, time_decode_step

out = sys.argv[1]
tag = os.environ.get("LOWBIT_GPU_PDL", "0")
rows = []
t0 = time.monotonic()
def save():
    json.dump(rows, open(f"{out}/decode_probe_pdl{tag}.json", "w"), indent=1, default=str)
if tag == "0":
    from lowbit.models.gpu.bench_attention import DENSE_SHAPES, time_dense_attention
    tries = [("bitnet-b1.58-3b", 193, {}), ("bitnet-b1.58-3b", 193, dict(splits=8, block_tokens=32, num_warps=2)),
             ("bitnet-b1.58-3b", 193, dict(splits=4, block_tokens=64, num_warps=4)),
             ("bitnet-b1.58-3b", 193, dict(splits=8, block_tokens=32, num_warps=4)),
             ("bitnet-b1.58-3b", 1024, {}), ("bitnet-b1.58-3b", 4096, {}),
             ("bitnet-b1.58-2b4t", 193, {}), ("bitnet-b1.58-2b4t", 193, dict(splits=13, block_tokens=16, dot=False)),
             ("bitnet-b1.58-2b4t", 193, dict(splits=8, block_tokens=32)), ("bitnet-b1.58-2b4t", 1024, {}),
             ("bitnet-b1.58-2b4t", 4096, {})]
    for name, ctx, kw in tries:
        h, kvh, d, dc = DENSE_SHAPES[name]
        try:
            r = time_dense_attention(h, kvh, d, dc, ctx, **kw)
        except Exception as e:
            r = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
        print(f"ATTN {name} ctx {ctx} {kw}: {json.dumps(r, default=str)}", flush=True)
        rows.append({"attn": name, "ctx": ctx, "kw": kw, **r})
        save()
cases = [("bitnet-b1.58-3b", "ternary", 1, "auto"), ("bitnet-b1.58-3b", "ternary", 1, "split"),
         ("bitnet-b1.58-2b4t", "ternary", 1, "split"), ("bitnet-b1.58-3b", "nvfp4", 1, "split")]
if tag == "0":
    cases = [("bitnet-b1.58-3b", "ternary", 0, "auto")] + cases + [("bitnet-b1.58-2b4t", "ternary", 1, "auto"),
             ("bitnet-b1.58-3b", "nvfp4", 1, "auto"), ("bitnet-b1.58-3b", "bf16", 1, "auto")]
for name, fmt, rope, mode in cases:
    decode.ATTN_MODE = mode
    try:
        m = build_model(name, fmt, context=192)
        m.rope_epilogue = bool(rope)
        r = time_decode_step(m, 192, profile=True)
    except Exception as e:
        print(f"STEP PDL={tag} rope={rope} attn={mode} {name} {fmt}: ERROR {type(e).__name__}: {str(e)[:300]}", flush=True)
        continue
    r.pop("tuned", None)
    print(f"STEP PDL={tag} rope={rope} attn={mode} {name} {fmt}: {r['step_us']:.1f} us finite={r['finite']}", flush=True)
    for k, v in r["profile"]:
        print(f"   {v:8.1f} {k[:90]}")
    rows.append({"pdl": tag, "rope": rope, "attn": mode, "model": name, "fmt": fmt, **r})
    save()
    del m
    torch.cuda.empty_cache()
if tag == "0":
    decode.ATTN_MODE = "auto"
    for name in ("bitnet-b1.58-3b", "bitnet-b1.58-2b4t"):
        m = build_model(name, "ternary", context=192)
        x = (torch.randn(1, m.spec.d_model, device="cuda") * 0.5).to(torch.bfloat16)
        res = []
        for rope in (True, False):
            m.rope_epilogue = rope
            y = m.step(x, 192).clone()
            res.append((y, [k[:, :, 192].clone() for k in m.k_cache], [v[:, :, 192].clone() for v in m.v_cache]))
        (y1, k1, v1), (y2, k2, v2) = res
        same = torch.equal(y1, y2) and all(torch.equal(a, b) for a, b in zip(k1 + v1, k2 + v2, strict=True))
        print(f"CHECK rope epilogue == separate launch on GPU {name}: {same}", flush=True)
        rows.append({"check": f"rope {name}", "ok": same})
        del m
    save()
print(f"probe done in {time.monotonic() - t0:.0f} s", flush=True)
