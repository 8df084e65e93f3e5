"""GPU baseline benchmark (``lowbit bench-gpu``, or ``python -m lowbit.models.gpu.bench`` on a CUDA machine).

Measures, on BitNet-3B and 2B4T layer shapes, the Triton kernels of this package against torch bf16
(``F.linear`` / SDPA): median µs per call with ``triton.testing.do_bench`` (L2 flushed) over a CUDA graph of
back-to-back calls on distinct operand copies (:func:`bench_graph`: no Python launch overhead, weights
never L2-resident), achieved
GB/s of the essential traffic (weights as stored + bf16 activations in + bf16 out, each once) and the
speedup over torch. The copy bandwidth (device-to-device ``copy_``, read + write bytes) is measured too, as
the practical ceiling. Then one whole-model decode step per preset in a CUDA graph (tokens/s).

JSON schema (``schema = "lowbit.gpu-baseline/1"``), kept flat for ``lowbit report``::

    {"schema", "device", "torch", "triton", "created", "copy_gbps",
     "results":   [{"kernel", "model", "layer", "shape" ("NxK"), "n", "k", "batch", "median_us", "gbps",
                    "speedup_vs_torch", "device"}],
     "attention": [{"kernel" ("lop"|"torch_sdpa"), "model", "shape" ("H{h}/KV{kvh}/d{d}"), "batch",
                    "context", "k_sel", "median_us", "gbps", "speedup_vs_torch", "device",
                    "stage_us" (lop only: {"score", "score+select"} cumulative µs)}],
     "decode":    [{"kernel" (weight format), "model", "batch", "context", "attn", "step_us",
                    "tokens_per_s", "weight_bytes", "speedup_vs_torch", "device", "finite"}],
     "checks":    [{"what", "ok", "detail"}]}

``kernel`` values in results: ``ternary`` (act_quant + GEMV for batch < 16, + INT8 tensor-core GEMM from
16 tokens: the whole BitLinear from bf16 input), ``ternary_kernel`` (GEMV/GEMM alone on pre-quantized
activations), ``ternary_1tok`` (batch 1 through the single-token GEMV kernel variant),
``ternary_gemv`` (batch 16 through the CUDA-core GEMV instead), ``ternary_unpack`` (unpack to int8 + cuBLAS
INT8 GEMM + dequant kernel, pre-quantized activations, > 16 tokens), ``nvfp4``, ``mxfp4``
(bf16 activations; GEMV below 16 tokens, bf16 tensor-core GEMM from 16) and ``torch_bf16``. ``speedup_vs_torch`` = torch µs /
kernel µs for the same shape and batch (None for torch itself). The markdown report keeps any text below
the line ``<!-- analysis -->`` of an existing file.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from lowbit.sim.atomic import atomic_write

LAYER_SHAPES = {  # (layer, N, K): docs/reference/numerics.md §1.5 / §1.6
    "bitnet-b1.58-3b": [("qkvo", 3200, 3200), ("gate/up", 8640, 3200), ("down", 3200, 8640)],
    "bitnet-b1.58-2b4t": [("qkv", 3840, 2560), ("o", 2560, 2560), ("gate|up", 13824, 2560), ("down", 2560, 6912)],
}
BATCHES = (1, 4, 16, 64, 512)
GEMM_FROM = 16  # decode batches from 16 tokens go to the tensor-core GEMM paths
MARKER = "<!-- analysis -->"


def _bench(fn) -> float:
    import triton

    return float(triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median")) * 1e3  # µs


L2_BYTES = 50 * 2**20  # H100 SXM (KINDS.md: PyTorch reported 50 MB)


def n_copies(nbytes: int) -> int:
    """Distinct operand copies so that one graph replay streams >= 2x the L2 size (cold weights)."""
    return int(min(64, max(4, math.ceil(2 * L2_BYTES / max(nbytes, 1)))))


def bench_graph(fns) -> float:
    """Median µs per call: all ``fns`` (one per operand copy) captured back to back in one CUDA graph, the
    replay timed with ``do_bench`` (L2 flushed before each replay), divided by ``len(fns)``. This removes
    the Python launch overhead (tens of µs per Triton launch), which would otherwise dominate µs kernels;
    cycling through copies keeps the weights out of L2 as a flush between calls would."""
    import torch

    for f in fns:  # autotune / compile outside the capture
        f()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for f in fns:
            f()
    g.replay()
    torch.cuda.synchronize()
    return _bench(g.replay) / len(fns)


def copy_bandwidth() -> float:
    import torch

    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    us = _bench(lambda: dst.copy_(src))
    return 2 * n / (us * 1e-6) / 1e9


def _fp4_reference_weight(w):
    """Dequantize an FP4Weight on the GPU with torch ops (independent of the Triton decode)."""
    import torch

    words = w.words.to(torch.int64) & 0xFFFFFFFF
    codes = ((words[..., None] >> (4 * torch.arange(8, device=words.device))) & 15).flatten(1)
    lut = torch.tensor([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6], dtype=torch.float64,
                       device=words.device)
    vals = lut[codes]
    if w.fmt == "nvfp4":
        sc = w.scales.view(torch.float8_e4m3fn).to(torch.float64) * w.gscale
    else:
        sc = torch.exp2(w.scales.to(torch.float64) - 127)
    return (vals.view(w.n, -1, w.block) * sc[..., None]).flatten(1)[:, : w.k]


def run_linear(models, batches, checks, log, rows: list | None = None, save=lambda: None) -> list[dict]:
    import torch
    import torch.nn.functional as F

    from .fp4 import FP4Weight, fp4_gemm, fp4_gemv, random_fp4_weight_torch
    from .ternary import (
        TernaryWeight,
        act_quant,
        pack_ternary_gpu_torch,
        ternary_gemm,
        ternary_gemm_unpacked,
        ternary_gemv,
    )

    dev_name = torch.cuda.get_device_name()
    gen = torch.Generator(device="cuda").manual_seed(0)
    rows = [] if rows is None else rows
    for model in models:
        for layer, n, k in LAYER_SHAPES[model]:
            codes = torch.randint(-1, 2, (n, k), dtype=torch.int8, device="cuda", generator=gen)
            tw = pack_ternary_gpu_torch(codes, 0.8)
            wb = (torch.randn(n, k, device="cuda", generator=gen) / math.sqrt(k)).to(torch.bfloat16)
            fws = {f: random_fp4_weight_torch(n, k, f, "cuda", gen) for f in ("nvfp4", "mxfp4")}
            tws = [tw] + [TernaryWeight(tw.words.clone(), tw.csum, tw.scale, n, k) for _ in range(n_copies(tw.nbytes) - 1)]
            wbs = [wb] + [wb.clone() for _ in range(n_copies(n * k * 2) - 1)]
            fwss = {f: [fw] + [FP4Weight(fw.words.clone(), fw.scales.clone(), fw.gscale, f, n, k)
                               for _ in range(n_copies(fw.nbytes) - 1)] for f, fw in fws.items()}
            for m in batches:
                x = torch.randn(m, k, device="cuda", generator=gen).to(torch.bfloat16)
                io = m * k * 2 + m * n * 2
                gemm = m >= GEMM_FROM
                cands = {"torch_bf16": ([lambda x=x, w=w: F.linear(x, w) for w in wbs], n * k * 2)}
                a = act_quant(x, write_q=True)
                if gemm:
                    cands["ternary"] = ([lambda x=x, w=w: ternary_gemm(act_quant(x, write_q=True), w) for w in tws], tw.nbytes)
                    cands["ternary_kernel"] = ([lambda a=a, w=w: ternary_gemm(a, w) for w in tws], tw.nbytes)
                    if m > 16:  # unpack to int8 + cuBLAS INT8 GEMM (torch._int_mm)
                        cands["ternary_unpack"] = ([lambda a=a, w=w: ternary_gemm_unpacked(a, w) for w in tws], tw.nbytes)
                    if m == GEMM_FROM:  # the CUDA-core GEMV path at the crossover batch, for comparison
                        cands["ternary_gemv"] = ([lambda x=x, w=w: ternary_gemv(act_quant(x, write_q=False), w)
                                                  for w in tws], tw.nbytes)
                else:
                    cands["ternary"] = ([lambda x=x, w=w: ternary_gemv(act_quant(x, write_q=False), w) for w in tws], tw.nbytes)
                    cands["ternary_kernel"] = ([lambda a=a, w=w: ternary_gemv(a, w) for w in tws], tw.nbytes)
                    if m == 1:  # the single-token kernel variant, for the record
                        cands["ternary_1tok"] = ([lambda a=a, w=w: ternary_gemv(a, w, single_max=1) for w in tws],
                                                 tw.nbytes)

                for f, fw in fws.items():
                    fn = fp4_gemm if gemm else fp4_gemv
                    cands[f] = ([lambda x=x, w=w, fn=fn: fn(x, w) for w in fwss[f]], fw.nbytes)
                # correctness on the device (exact integers; FP4 vs float64)
                if m in (1, 4, 16, 64):
                    ref = a.q[:, :k].double() @ codes.double().T
                    accs = {"gemm": ternary_gemm(a, tw, out_acc=True)} if gemm else {
                        "gemv": ternary_gemv(a, tw, out_acc=True), "gemv_1tok": ternary_gemv(a, tw, out_acc=True, single_max=8)}
                    if m > 16:
                        accs["unpack"] = ternary_gemm_unpacked(a, tw, out_acc=True)
                    for nm, acc in accs.items():
                        ok = bool(torch.equal(acc.double(), ref))
                        checks.append({"what": f"ternary {nm} acc exact {model} {n}x{k} M={m}", "ok": ok, "detail": ""})
                    for f, fw in fws.items():
                        y = (fp4_gemm if gemm else fp4_gemv)(x, fw).double()
                        r = x.double() @ _fp4_reference_weight(fw).T
                        err = float(torch.linalg.norm(y - r) / torch.linalg.norm(r))
                        checks.append({"what": f"{f} rel-L2 {model} {n}x{k} M={m}", "ok": err < 1e-2, "detail": f"{err:.2e}"})
                res = {}
                for name, (fns, wbytes) in cands.items():
                    us = bench_graph(fns)
                    res[name] = us
                    rows.append({"kernel": name, "model": model, "layer": layer, "shape": f"{n}x{k}", "n": n, "k": k,
                                 "batch": m, "median_us": round(us, 3), "gbps": round((wbytes + io) / (us * 1e-6) / 1e9, 1),
                                 "speedup_vs_torch": None, "device": dev_name})
                for r in rows:
                    if r["model"] == model and r["shape"] == f"{n}x{k}" and r["batch"] == m and r["kernel"] != "torch_bf16":
                        r["speedup_vs_torch"] = round(res["torch_bf16"] / r["median_us"], 3)
                log(f"{model} {layer} {n}x{k} M={m}: " + ", ".join(f"{k_}={v:.1f}" for k_, v in res.items()))
            save()
    return rows


ATTN_SHAPES = {"bitnet-b1.58-3b": (32, 32, 100), "bitnet-b1.58-2b4t": (20, 5, 128)}


def run_attention(models, contexts, ratio, checks, log) -> list[dict]:
    import torch
    import torch.nn.functional as F

    from .lop_attn import lo_pack_keys_torch, lop_attention

    dev_name = torch.cuda.get_device_name()
    rows = []
    gen = torch.Generator(device="cuda").manual_seed(1)
    for model in models:
        h, kvh, d = ATTN_SHAPES[model]
        for m in contexts:
            ksel = max(1, m // ratio)
            q = torch.randn(1, h, d, device="cuda", generator=gen).to(torch.bfloat16)
            caches = []
            for _ in range(n_copies(2 * kvh * m * d * 2)):
                kc = torch.randn(1, kvh, m, d, device="cuda", generator=gen).to(torch.bfloat16)
                vc = torch.randn(1, kvh, m, d, device="cuda", generator=gen).to(torch.bfloat16)
                lo = lo_pack_keys_torch(torch.randint(-127, 128, (1, kvh, m, d), dtype=torch.int8, device="cuda",
                                                      generator=gen))
                caches.append((kc, vc, lo))
            gqa = h != kvh
            dense = [lambda q=q, kc=kc, vc=vc, g=gqa: F.scaled_dot_product_attention(q.unsqueeze(2), kc, vc, enable_gqa=g)
                     for kc, vc, _ in caches]
            lop = [lambda q=q, kc=kc, vc=vc, lo=lo, m=m, ks=ksel: lop_attention(q, kc, vc, lo, m, ks)
                   for kc, vc, lo in caches]
            stage_us = {}
            for st in (1, 2):  # breakdown: quantize q + score/bucket/histogram; + top-K selection
                stage_us[st] = bench_graph([lambda q=q, kc=kc, vc=vc, lo=lo, m=m, ks=ksel, st=st:
                                            lop_attention(q, kc, vc, lo, m, ks, stages=st) for kc, vc, lo in caches])
            kc, vc, lo = caches[0]
            full = lop_attention(q, kc, vc, lo, m, m).float()
            r = dense[0]().squeeze(2).float()
            err = float(torch.linalg.norm(full - r) / torch.linalg.norm(r))
            checks.append({"what": f"lop K=M equals SDPA {model} M={m}", "ok": err < 1e-2, "detail": f"{err:.2e}"})
            t_dense = bench_graph(dense)
            t_lop = bench_graph(lop)
            dense_bytes = 2 * kvh * m * d * 2 + 2 * h * d * 2
            lop_bytes = lo.numel() * 4 + 2 * h * ksel * d * 2 + 2 * h * d * 2
            shape = f"H{h}/KV{kvh}/d{d}"
            for name, us, nb, sp in (("torch_sdpa", t_dense, dense_bytes, None), ("lop", t_lop, lop_bytes, t_dense / t_lop)):
                rows.append({"kernel": name, "model": model, "shape": shape, "batch": 1, "context": m, "k_sel": ksel,
                             "median_us": round(us, 3), "gbps": round(nb / (us * 1e-6) / 1e9, 1),
                             "speedup_vs_torch": None if sp is None else round(sp, 3), "device": dev_name})
            rows[-1]["stage_us"] = {"score": round(stage_us[1], 2), "score+select": round(stage_us[2], 2)}
            log(f"attn {model} M={m} K={ksel}: sdpa={t_dense:.1f}us lop={t_lop:.1f}us ({t_dense / t_lop:.2f}x) "
                f"stages {stage_us[1]:.1f}/{stage_us[2]:.1f}us")
    return rows


def run_decode(configs, log) -> list[dict]:
    import torch

    from .decode import build_model, time_decode_step

    dev_name = torch.cuda.get_device_name()
    rows = []
    base = {}
    for model, fmt, ctx, attn in configs:
        try:
            mdl = build_model(model, fmt, batch=1, context=ctx, attn=attn, k_sel=max(1, ctx // 16))
            r = time_decode_step(mdl, ctx, profile=(fmt == "ternary" and ctx == 192))
        except Exception as e:  # report and continue: one failing config must not lose the others
            log(f"decode {model} {fmt} ctx={ctx} {attn}: FAILED {type(e).__name__}: {e}")
            continue
        finally:
            mdl = None
            torch.cuda.empty_cache()
        if fmt == "bf16" and attn == "dense":
            base[(model, ctx)] = r["step_us"]
        rows.append({"kernel": fmt, "model": model, "batch": 1, "context": ctx, "attn": attn,
                     "step_us": round(r["step_us"], 2), "tokens_per_s": round(r["tokens_per_s"], 1),
                     "weight_bytes": r["weight_bytes"], "speedup_vs_torch": None, "device": dev_name,
                     "finite": r["finite"]})
        log(f"decode {model} {fmt} ctx={ctx} {attn}: {r['step_us']:.1f} us/token = {r['tokens_per_s']:.0f} tok/s")
        if r.get("profile"):
            log("  top kernels per step (us): " + "; ".join(f"{n[:60]} {t:.0f}" for n, t in r["profile"]))
    for r in rows:
        b = base.get((r["model"], r["context"]))
        if b and not (r["kernel"] == "bf16" and r["attn"] == "dense"):
            r["speedup_vs_torch"] = round(b / r["step_us"], 3)
    return rows


def render_markdown(data: dict, keep: str = "") -> str:
    dev = data["device"]
    out = [f"# GPU baseline: {dev}", "",
           f"Generated by `lowbit bench-gpu` ({data['created']}); torch {data['torch']}, triton {data['triton']}. "
           f"Measured device-to-device copy bandwidth: **{data['copy_gbps']:.0f} GB/s** (read + write). "
           "Times are medians of `triton.testing.do_bench` with the L2 flushed before each call; GB/s counts the "
           "essential bytes (weights as stored, bf16 activations in, bf16 out). Raw data: `reports/gpu-baseline.json`.",
           "", "## Linear layers (µs; speedup over torch bf16 `F.linear` in brackets)", ""]
    res = data["results"]
    kernels = [k for k in ("torch_bf16", "ternary", "ternary_kernel", "ternary_1tok", "ternary_gemv", "ternary_unpack",
                         "nvfp4", "mxfp4")
               if any(r["kernel"] == k for r in res)]
    out.append("| model | layer | N×K | batch | " + " | ".join(kernels) + " | ternary GB/s (% copy) |")
    out.append("|---|---|---|---|" + "---|" * len(kernels) + "---|")
    keys = []
    for r in res:
        kk = (r["model"], r["layer"], r["shape"], r["batch"])
        if kk not in keys:
            keys.append(kk)
    for kk in keys:
        cells = []
        tern_gbps = ""
        for k in kernels:
            r = next((r for r in res if (r["model"], r["layer"], r["shape"], r["batch"]) == kk and r["kernel"] == k), None)
            if r is None:
                cells.append("")
                continue
            sp = f" ({r['speedup_vs_torch']:.2f}×)" if r["speedup_vs_torch"] else ""
            cells.append(f"{r['median_us']:.1f}{sp}")
            if k == "ternary_kernel":
                tern_gbps = f"{r['gbps']:.0f} ({100 * r['gbps'] / data['copy_gbps']:.0f} %)"
        out.append(f"| {kk[0]} | {kk[1]} | {kk[2]} | {kk[3]} | " + " | ".join(cells) + f" | {tern_gbps} |")
    if data.get("attention"):
        out += ["", "## Decode attention: LOP (top-K of M by leading-one surrogate) vs dense torch SDPA", "",
                "| model | heads | context M | K | SDPA µs | LOP µs | speedup | LOP GB/s |", "|---|---|---|---|---|---|---|---|"]
        att = data["attention"]
        for r in att:
            if r["kernel"] != "lop":
                continue
            d = next(x for x in att if x["kernel"] == "torch_sdpa" and x["model"] == r["model"] and x["context"] == r["context"])
            out.append(f"| {r['model']} | {r['shape']} | {r['context']} | {r['k_sel']} | {d['median_us']:.1f} | "
                       f"{r['median_us']:.1f} | {r['speedup_vs_torch']:.2f}× | {r['gbps']:.0f} |")
    if data.get("decode"):
        out += ["", "## Whole-model decode step (batch 1, CUDA graph, random weights, lm_head excluded)", "",
                "| model | weights | context | attention | µs/token | tokens/s | weight MB | speedup vs bf16 |",
                "|---|---|---|---|---|---|---|---|"]
        for r in data["decode"]:
            sp = f"{r['speedup_vs_torch']:.2f}×" if r["speedup_vs_torch"] else "—"
            out.append(f"| {r['model']} | {r['kernel']} | {r['context']} | {r['attn']} | {r['step_us']:.1f} | "
                       f"{r['tokens_per_s']:.0f} | {r['weight_bytes'] / 1e6:.0f} | {sp} |")
    if data.get("checks"):
        bad = [c for c in data["checks"] if not c["ok"]]
        out += ["", f"## On-device correctness checks: {len(data['checks']) - len(bad)}/{len(data['checks'])} passed", ""]
        out += [f"- FAILED: {c['what']} {c['detail']}" for c in bad]
    out += ["", MARKER, keep.strip(), ""]
    return "\n".join(out)


def run_all(out_json: Path, out_md: Path, quick: bool = False, sections: str = "linear,attention,decode",
            log=print) -> dict:
    import torch
    import triton

    if not torch.cuda.is_available():
        from lowbit.sim.errors import LowbitError

        raise LowbitError("bench-gpu needs a CUDA GPU (torch.cuda.is_available() is False); run it on a GPU machine")
    secs = set(sections.split(","))
    models = list(LAYER_SHAPES)
    data = {"schema": "lowbit.gpu-baseline/1", "device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "triton": triton.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "copy_gbps": round(copy_bandwidth(), 1), "results": [], "attention": [], "decode": [], "checks": []}
    log(f"device {data['device']}: copy {data['copy_gbps']:.0f} GB/s")

    def save():
        atomic_write(out_json, json.dumps(data, indent=1))
        keep = out_md.read_text().split(MARKER, 1)[1] if out_md.exists() and MARKER in out_md.read_text() else ""
        atomic_write(out_md, render_markdown(data, keep))

    if "attention" in secs:
        data["attention"] = run_attention(models, (4096,) if quick else (1024, 4096), 16, data["checks"], log)
        save()
    if "decode" in secs:
        cfgs = [(m, f, 192, "dense") for m in models for f in ("bf16", "ternary", "nvfp4")]
        cfgs += [("bitnet-b1.58-2b4t", "ternary", 4000, "dense"), ("bitnet-b1.58-2b4t", "ternary", 4000, "lop"),
                 ("bitnet-b1.58-2b4t", "bf16", 4000, "dense")]
        data["decode"] = run_decode(cfgs[:2] if quick else cfgs, log)
        save()
    if "linear" in secs:
        run_linear(models[:1] if quick else models, (1, 64) if quick else BATCHES, data["checks"], log,
                   rows=data["results"], save=save)
    save()
    return data


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-json", default="reports/gpu-baseline.json")
    p.add_argument("--out-md", default="reports/gpu-baseline.md")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sections", default="linear,attention,decode")
    a = p.parse_args(argv)
    run_all(Path(a.out_json), Path(a.out_md), a.quick, a.sections, log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
