"""GPU baseline benchmark (``lowbit bench-gpu``, or ``python -m lowbit.models.gpu.bench`` on a CUDA machine
without the CLI's dependencies; both take ``--out DIR --seed N --quick --sections --budget-s --resume``).

Measures, on BitNet-3B and 2B4T layer shapes (plus the larger linear shapes of common 7-8B models), the
Triton kernels of this package against torch bf16 (``F.linear`` / SDPA, ``torch.compile``) and, where
installed, bitsandbytes 4-bit: median µs per call with ``triton.testing.do_bench`` over a CUDA graph of
back-to-back calls on distinct operand copies (:func:`bench_graph`: no Python launch overhead, weights
never L2-resident), achieved GB/s of the essential traffic (weights as stored + bf16 activations in +
bf16 out, each once) against the measured copy bandwidth (device-to-device ``copy_``, read + write bytes:
the practical floor), then whole-model decode steps in a CUDA graph (tokens/s, GPU joules per token from
NVML's energy counter). Each unit of work draws its random data from a generator seeded with ``--seed``
and its own name (:func:`.bench_budget.unit_seed`). Work past ``--budget-s`` seconds is skipped and listed
as skipped; ``--resume`` continues a finished run in ``--out``, running only what its budget skipped
(:mod:`.bench_budget`): a complete run in parts where one command may run only a few minutes.

Writes DIR/gpu-baseline.json, .md, .log and .png (roofline-style: achieved GB/s per shape against the
copy bandwidth). JSON schema ``lowbit.gpu-baseline/2``, flat for ``lowbit report``::

    {"schema", "device", "torch", "triton", "created", "seed", "copy_gbps", "l2_bytes", "finished" (the run
     reached its end), "parts" (resumed runs only: [{"created", "copy_gbps"}] of each continuation),
     "results":   [{"kernel", "model", "layer", "shape" ("NxK"), "n", "k", "batch", "median_us", "gbps",
                    "floor_frac" (gbps / copy_gbps), "speedup_vs_torch", "device"}],
     "attention": [{"kernel" ("lop"|"torch_sdpa"), "model", "shape" ("H{h}/KV{kvh}/d{d}"), "batch", "context",
                    "k_sel", "median_us", "gbps", "speedup_vs_torch", "device", "backend" (sdpa only),
                    "stage_us" (lop only: {"score": µs of the scoring launch alone, "no_pdl": µs of the call
                    without programmatic dependent launch}), "chunk", "by_chunk_us" (lop only)}],
     "decode":    [{"kernel" ("bf16"|"bf16_compile"|"ternary"|"ternary_pdl"|"nvfp4"|"nvfp4_pdl"), "model", "batch",
                    "context", "attn" ("dense"|"split"|"sdpa"|"lop"),
                    "step_us", "tokens_per_s", "weight_bytes", "floor_frac" (weight bytes / copy bandwidth
                    / step time), "speedup_vs_torch" (vs bf16 eager), "speedup_vs_compile", "j_per_token",
                    "avg_w", "device", "finite"}],
     "dense_attention": [{"model", "shape", "context", "copies", "splits" ([S, tokens per split, block]),
                    "us" ({variant: µs}), "err" ({variant: max error / max |reference|}), "checks"}],
     "references": [{"kernel", "shape", "median_us", "note"}],
     "copies":    [{"kernel" ("copy_ternary_bytes"|"copy_fp4_bytes"), "model", "layer", "shape", "n", "k", "batch" (1),
                    "bytes" (read + write), "median_us", "gbps", "floor_frac", "device"}]: one device copy kernel
                    moving the bytes of that batch-1 ternary / NVFP4 GEMV (:func:`same_byte_copies`),
     "checks":    [{"what", "ok", "detail"}], "skipped": [{"what", "why"}]}

The attention section is :mod:`.bench_attention`.

``kernel`` values in results: ``ternary`` (the whole BitLinear from bf16 input: quantizer fused into the
GEMV below 16 tokens — at one token the whole-row kernel, with a tail tile where its power-of-two tile does not fit —
quantizer + the GEMM on INT8 or bf16 tensor cores from 16, whichever ``ternary_linear`` timed faster for
the shape), ``ternary_kernel`` (GEMV / INT8 GEMM alone on pre-quantized activations), ``ternary_tc16``
(the bf16 tensor-core GEMM alone on bf16 codes), ``ternary_splitk`` (GEMM with split-K), ``ternary_unpack`` (unpack to int8 +
cuBLAS INT8 GEMM, > 16 tokens), ``nvfp4``, ``mxfp4`` (bf16 activations; GEMV below 16 tokens, bf16
tensor-core GEMM from 16), ``bnb_nf4`` / ``bnb_fp4`` (bitsandbytes ``matmul_4bit``) and ``torch_bf16``.
The markdown report keeps any text below the line ``<!-- analysis -->`` of an existing file.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from lowbit.sim.atomic import atomic_write
from lowbit.sim.errors import LowbitError

from .bench_budget import Budget, resume, unit_seed
from .report import BATCHES_GEMM, BATCHES_GEMV, MARKER, render_markdown, roofline_png

SCHEMA = "lowbit.gpu-baseline/2"
LAYER_SHAPES = {  # (layer, N, K): docs/reference/numerics.md §1.5 / §1.6
    "bitnet-b1.58-3b": [("qkvo", 3200, 3200), ("gate/up", 8640, 3200), ("down", 3200, 8640)],
    "bitnet-b1.58-2b4t": [("qkv", 3840, 2560), ("o", 2560, 2560), ("gate|up", 13824, 2560), ("down", 2560, 6912)],
}
# larger batch-1 shapes: Llama-2/3-7-8B FFN (14336x4096: Llama-3-8B up; 4096x14336 down), 3B-class projections
EXTRA_SHAPES = [("other", "w13", 14336, 4096), ("other", "w2", 4096, 14336), ("other", "up", 20480, 3200),
                ("other", "qkv", 4800, 3200), ("other", "down", 3200, 10240)]
# the hand-written BitNet W2A8 CUDA GEMV (github.com/microsoft/BitNet gpu/, kernel alone, its activation
# quantizer excluded), µs on an H200: reference values, not measured by this command
W2A8_REF_US = {(2560, 2560): 5.4, (3840, 2560): 5.3, (13824, 2560): 9.1, (2560, 6912): 10.6, (3200, 3200): 6.1,
               (4800, 3200): 6.2, (3200, 10240): 14.6, (20480, 3200): 13.8}
ODD_SHAPES = [(4099, 3001), (37, 1000), (1000, 37)]
GEMM_FROM = 16  # decode batches from 16 tokens go to the tensor-core GEMM paths


def _bench(fn) -> float:
    import triton

    return float(triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median")) * 1e3  # µs


def l2_bytes() -> int:
    import torch

    return int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 * 2**20))


def n_copies(nbytes: int, l2: int) -> int:
    """Distinct operand copies so that one graph replay streams >= 2x the L2 size (cold weights)."""
    return int(min(64, max(4, math.ceil(2 * l2 / max(nbytes, 1)))))


def bench_graph(fns) -> float:
    """Median µs per call: all ``fns`` (one per operand copy) captured back to back in one CUDA graph, the
    replay timed with ``do_bench`` (L2 flushed before each replay), divided by ``len(fns)``. This removes
    the Python launch overhead (tens of µs per Triton launch), which would otherwise dominate µs kernels;
    cycling through copies keeps the weights out of L2 as a flush between calls would."""
    import torch

    from .ternary import graph_capture

    for f in fns:  # autotune / compile outside the capture
        f()
    torch.cuda.synchronize()
    g, _ = graph_capture(lambda: [f() for f in fns])
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


def same_byte_copies(nbytes: int, l2: int) -> tuple[list, int]:
    """Device-to-device ``copy_`` calls for :func:`bench_graph`, one per distinct buffer pair (cold in L2),
    each reading and writing ``nbytes / 2`` bytes (read + write, as the copy bandwidth counts them), and the
    bytes one call moves. What one kernel moving as many bytes as a GEMV takes, launch and HBM ramp-up
    included: the time a kernel of that size can physically reach."""
    import torch

    half = max(1, (nbytes + 1) // 2)
    pairs = [(torch.empty(half, dtype=torch.uint8, device="cuda").fill_(1), torch.empty(half, dtype=torch.uint8,
                                                                                        device="cuda"))
             for _ in range(n_copies(2 * half, l2))]
    return [lambda s=s, d=d: d.copy_(s) for s, d in pairs], 2 * half


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


def _bnb():
    """The bitsandbytes module, or a string saying why it cannot be used."""
    try:
        import bitsandbytes as bnb
        import bitsandbytes.functional as bnbf  # noqa: F401
    except Exception as e:  # noqa: BLE001 - ImportError, or a missing CUDA binary raising at import
        return f"bitsandbytes not usable: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    return bnb


def _ternary_codes(n, k, gen):
    import torch

    return torch.randint(-1, 2, (n, k), dtype=torch.int8, device="cuda", generator=gen)


def run_linear(shapes, batches, data, log, budget: Budget, seed: int, save=lambda: None, tag: str = "batch 1") -> None:
    """Time every candidate on every (shape, batch); on-device exactness checks for batches <= 64. ``tag``
    names the section in the units' names (``linear <tag> NxK [M=m]``)."""
    import torch
    import torch.nn.functional as F

    from .fp4 import FP4Weight, fp4_gemm, random_fp4_weight_torch
    from .fp4mma import fp4_linear
    from .ternary import TernaryWeight, act_quant, pack_ternary_gpu_torch, ternary_gemv
    from .ternary_gemm import ternary_gemm, ternary_gemm_unpacked, ternary_linear

    dev_name, l2 = data["device"], data["l2_bytes"]
    rows, checks, skipped = data["results"], data["checks"], data["skipped"]
    gen = torch.Generator(device="cuda")
    bnb = _bnb()
    if isinstance(bnb, str) and not any(s["what"] == "bitsandbytes peers" for s in skipped):
        skipped.append({"what": "bitsandbytes peers", "why": bnb})
    for model, layer, n, k in shapes:
        if not budget.ok(unit := f"linear {tag} {n}x{k}"):
            continue
        gen.manual_seed(unit_seed(seed, unit))
        codes = _ternary_codes(n, k, gen)
        tw = pack_ternary_gpu_torch(codes, 0.8)
        wb = (torch.randn(n, k, device="cuda", generator=gen) / math.sqrt(k)).to(torch.bfloat16)
        fws = {f: random_fp4_weight_torch(n, k, f, "cuda", gen) for f in ("nvfp4", "mxfp4")}
        tws = [tw] + [TernaryWeight(tw.words.clone(), tw.scale, n, k) for _ in range(n_copies(tw.nbytes, l2) - 1)]
        wbs = [wb] + [wb.clone() for _ in range(n_copies(n * k * 2, l2) - 1)]
        fwss = {f: [fw] + [FP4Weight(fw.words.clone(), fw.scales.clone(), fw.gscale, f, n, k)
                           for _ in range(n_copies(fw.nbytes, l2) - 1)] for f, fw in fws.items()}
        bq = {}
        if not isinstance(bnb, str):
            for qt in ("nf4", "fp4"):
                try:
                    qw, qs = bnb.functional.quantize_4bit(wb, quant_type=qt)
                    nb = qw.numel() * qw.element_size() + qs.absmax.numel() * qs.absmax.element_size()
                    bq[qt] = ([(qw, qs)] + [(qw.clone(), qs) for _ in range(n_copies(nb, l2) - 1)], nb)
                except Exception as e:  # noqa: BLE001
                    skipped.append({"what": f"bnb_{qt} {n}x{k}", "why": f"{type(e).__name__}: {e}"[:160]})
        for m in batches:
            if not budget.ok(unit_m := f"{unit} M={m}"):
                continue
            gen.manual_seed(unit_seed(seed, unit_m))
            x = torch.randn(m, k, device="cuda", generator=gen).to(torch.bfloat16)
            io = m * k * 2 + m * n * 2
            gemm = m >= GEMM_FROM
            a = act_quant(x)
            cands = {"torch_bf16": ([lambda x=x, w=w: F.linear(x, w) for w in wbs], n * k * 2)}
            if gemm:
                a16 = act_quant(x, codes=torch.bfloat16)
                cands["ternary"] = ([lambda x=x, w=w: ternary_linear(x, w) for w in tws], tw.nbytes)
                cands["ternary_kernel"] = ([lambda a=a, w=w: ternary_gemm(a, w) for w in tws], tw.nbytes)
                cands["ternary_tc16"] = ([lambda a=a16, w=w: ternary_gemm(a, w) for w in tws], tw.nbytes)
                if m == GEMM_FROM:
                    cands["ternary_splitk"] = ([lambda a=a, w=w: ternary_gemm(a, w, split_k=4) for w in tws], tw.nbytes)
                if m > 16:
                    cands["ternary_unpack"] = ([lambda a=a, w=w: ternary_gemm_unpacked(a, w) for w in tws], tw.nbytes)
            else:
                cands["ternary"] = ([lambda x=x, w=w: ternary_gemv(x, w) for w in tws], tw.nbytes)
                cands["ternary_kernel"] = ([lambda a=a, w=w: ternary_gemv(a, w) for w in tws], tw.nbytes)
            for f, fw in fws.items():
                cands[f] = ([lambda x=x, w=w: fp4_linear(x, w) for w in fwss[f]], fw.nbytes)
            if gemm:  # the dequantize + cuBLAS path beside the dispatch's choice
                cands["nvfp4_dequant"] = ([lambda x=x, w=w: fp4_gemm(x, w) for w in fwss["nvfp4"]], fws["nvfp4"].nbytes)
            for qt, (ws, nb) in bq.items():
                cands[f"bnb_{qt}"] = ([lambda x=x, w=w: bnb.matmul_4bit(x, w[0].t(), quant_state=w[1]) for w in ws], nb)
            if m == 1:  # one copy kernel moving the bytes each GEMV moves: the floor at this size, ramp included
                for name, wbytes in (("copy_ternary_bytes", tw.nbytes), ("copy_fp4_bytes", fws["nvfp4"].nbytes)):
                    fns, moved = same_byte_copies(wbytes + io, l2)
                    try:
                        us = bench_graph(fns)
                    except Exception as e:  # noqa: BLE001
                        skipped.append({"what": f"{name} {n}x{k}", "why": f"{type(e).__name__}: {e}"[:200]})
                        continue
                    gbps = moved / (us * 1e-6) / 1e9
                    data["copies"].append({"kernel": name, "model": model, "layer": layer, "shape": f"{n}x{k}",
                                           "n": n, "k": k, "batch": 1, "bytes": moved, "median_us": round(us, 3),
                                           "gbps": round(gbps, 1), "floor_frac": round(gbps / data["copy_gbps"], 4),
                                           "speedup_vs_torch": None, "device": dev_name})
                    fns = None
            if m <= 64:  # correctness on the device: exact integers; FP4 vs float64
                ref = a.q[:, :k].double() @ codes.double().T
                accs = {}
                if gemm:
                    accs["gemm"] = lambda a=a, tw=tw: ternary_gemm(a, tw, out_acc=True)
                    accs["gemm split-K"] = lambda a=a, tw=tw: ternary_gemm(a, tw, out_acc=True, split_k=4)
                    accs["gemm bf16 codes"] = lambda a=a16, tw=tw: ternary_gemm(a, tw, out_acc=True)
                    accs["gemm bf16 codes split-K"] = lambda a=a16, tw=tw: ternary_gemm(a, tw, out_acc=True, split_k=4)
                    if m > 16:
                        accs["unpack"] = lambda a=a, tw=tw: ternary_gemm_unpacked(a, tw, out_acc=True)
                else:
                    accs["gemv"] = lambda a=a, tw=tw: ternary_gemv(a, tw, out_acc=True)
                    accs["gemv fused"] = lambda x=x, tw=tw: ternary_gemv(x, tw, out_acc=True)
                for nm, fn in accs.items():
                    try:
                        ok = bool(torch.equal(fn().double(), ref))
                        checks.append({"what": f"ternary {nm} acc exact {n}x{k} M={m}", "ok": ok, "detail": ""})
                    except Exception as e:  # noqa: BLE001
                        checks.append({"what": f"ternary {nm} {n}x{k} M={m}", "ok": False, "detail": repr(e)[:200]})
                for f, fw in fws.items():
                    paths = {"": fp4_linear, " dequant": fp4_gemm} if gemm else {"": fp4_linear}
                    fp4_checks(checks, f"{f}{{}} rel-L2 {n}x{k} M={m}", paths, x, fw)
            res = {}
            for name, (fns, wbytes) in cands.items():
                try:
                    us = bench_graph(fns)
                except Exception as e:  # noqa: BLE001 - one failing candidate must not lose the others
                    skipped.append({"what": f"{name} {n}x{k} M={m}", "why": f"{type(e).__name__}: {e}"[:200]})
                    continue
                res[name] = us
                gbps = (wbytes + io) / (us * 1e-6) / 1e9
                rows.append({"kernel": name, "model": model, "layer": layer, "shape": f"{n}x{k}", "n": n, "k": k,
                             "batch": m, "median_us": round(us, 3), "gbps": round(gbps, 1),
                             "floor_frac": round(gbps / data["copy_gbps"], 4), "speedup_vs_torch": None,
                             "device": dev_name})
            for r in rows:
                if r["shape"] == f"{n}x{k}" and r["batch"] == m and r["kernel"] != "torch_bf16" and "torch_bf16" in res:
                    r["speedup_vs_torch"] = round(res["torch_bf16"] / r["median_us"], 3)
            log(f"{model} {layer} {n}x{k} M={m}: " + ", ".join(f"{k_}={v:.1f}" for k_, v in res.items()))
            save()


def fp4_checks(checks: list, what: str, paths: dict, x, fw) -> None:
    """One check per FP4 path of ``paths`` (``what`` with the path's name in its ``{}``): its output's rel-L2 against
    float64 from the sim's dequantized weight below 1e-2; a path that raises is a failed check, not a lost section."""
    import torch

    r = x.double() @ _fp4_reference_weight(fw).T
    for nm, fn in paths.items():
        try:
            y = fn(x, fw).double()
        except Exception as e:  # noqa: BLE001 - a failing kernel is a failed check
            checks.append({"what": what.format(nm), "ok": False, "detail": repr(e)[:200]})
            continue
        err = float(torch.linalg.norm(y - r) / torch.linalg.norm(r))
        checks.append({"what": what.format(nm), "ok": err < 1e-2, "detail": f"{err:.2e}"})


def run_odd_shapes(data, seed: int) -> None:
    """Correctness on shapes that are multiples of no block (exact integers; FP4 within 1e-2)."""
    import torch

    from .fp4 import fp4_gemm, random_fp4_weight_torch
    from .fp4mma import fp4_linear, fp4_mma
    from .ternary import act_quant, pack_ternary_gpu_torch, ternary_gemv
    from .ternary_gemm import ternary_gemm

    gen = torch.Generator(device="cuda").manual_seed(seed + 3)
    for n, k in ODD_SHAPES:
        codes = _ternary_codes(n, k, gen)
        tw = pack_ternary_gpu_torch(codes, 0.5)
        for m in (1, 3, 17):
            x = torch.randn(m, k, device="cuda", generator=gen).to(torch.bfloat16)
            a = act_quant(x)
            ref = a.q[:, :k].double() @ codes.double().T
            outs = {"gemv fused": lambda x=x, tw=tw: ternary_gemv(x, tw, out_acc=True)} if m < GEMM_FROM else {
                "gemm": lambda a=a, tw=tw: ternary_gemm(a, tw, out_acc=True),
                "gemm bf16 codes": lambda x=x, tw=tw: ternary_gemm(act_quant(x, codes=torch.bfloat16), tw, out_acc=True)}
            for nm, fn in outs.items():
                ok = bool(torch.equal(fn().double(), ref))
                data["checks"].append({"what": f"odd shape ternary {nm} {n}x{k} M={m}", "ok": ok, "detail": ""})
            fw = random_fp4_weight_torch(n, k, "nvfp4", "cuda", gen)
            paths = {"": fp4_linear, " mma": fp4_mma, " dequant": fp4_gemm} if m > 1 else {"": fp4_linear}
            fp4_checks(data["checks"], f"odd shape nvfp4{{}} {n}x{k} M={m}", paths, x, fw)


def run_all(out_dir: Path, quick: bool = False, sections: str = "attention,linear,decode,gemm", seed: int = 0,
            budget_s: float = 540.0, log=print, gemm_batches: tuple[int, ...] = BATCHES_GEMM,
            resumed: bool = False) -> dict:
    """The benchmark into ``out_dir``; ``resumed``: continue the finished run there, running only the units
    its budget skipped (:func:`.bench_budget.resume`; every section, whatever ``sections`` says)."""
    import torch
    import triton

    if not torch.cuda.is_available():
        raise LowbitError("bench-gpu needs a CUDA GPU (torch.cuda.is_available() is False); run it on a GPU machine")
    out_dir = Path(out_dir)
    secs = set(SECTIONS) if resumed else set(sections.split(","))
    models = list(LAYER_SHAPES)
    lines: list[str] = []

    def say(s: str) -> None:
        lines.append(s)
        log(s)

    head = {"schema": SCHEMA, "device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "triton": triton.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seed": seed,
            "copy_gbps": round(copy_bandwidth(), 1), "l2_bytes": l2_bytes()}
    pending = None
    if resumed:
        data, pending = resume(out_dir / "gpu-baseline.json", head)
        log_file = out_dir / "gpu-baseline.log"
        lines += log_file.read_text().splitlines() if log_file.exists() else []
        say(f"resumed {head['created']}: {len(pending)} units the run of {data['created']} skipped for its budget")
    else:
        data = {**head, "results": [], "attention": [], "decode": [], "dense_attention": [], "copies": [],
                "references": [{"kernel": "bitnet_w2a8_cuda", "shape": f"{n}x{k}", "median_us": us,
                                "note": "BitNet W2A8 CUDA GEMV, kernel alone, on an H200; not measured here"}
                               for (n, k), us in W2A8_REF_US.items()],
                "checks": [], "skipped": [], "finished": False}
    budget = Budget(budget_s, data["skipped"], only=pending)
    say(f"device {head['device']}: copy {head['copy_gbps']:.0f} GB/s, L2 {head['l2_bytes'] / 2**20:.0f} MiB, seed {seed}")

    def save():
        keep = ""
        md = out_dir / "gpu-baseline.md"
        if md.exists() and MARKER in md.read_text():
            keep = md.read_text().split(MARKER, 1)[1]
        atomic_write(out_dir / "gpu-baseline.json", json.dumps(data, indent=1))
        atomic_write(md, render_markdown(data, keep))
        atomic_write(out_dir / "gpu-baseline.log", "\n".join(lines) + "\n")

    gemv_shapes = [(mo, la, n, k) for mo in models for la, n, k in LAYER_SHAPES[mo]] + EXTRA_SHAPES
    if quick:
        gemv_shapes = gemv_shapes[1:2]
    t_start = time.monotonic()

    def section(name, fn):
        t0 = time.monotonic()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a failing section is reported; the others still run
            import traceback

            say(f"section {name} FAILED: {type(e).__name__}: {e}")
            say(traceback.format_exc()[-2000:])
            data["skipped"].append({"what": f"section {name} (partly)", "why": f"{type(e).__name__}: {str(e)[:200]}"})
        say(f"section {name}: {time.monotonic() - t0:.0f} s (at {time.monotonic() - t_start:.0f} s)")
        save()

    model_shapes = [s for s in gemv_shapes if s[0] != "other"]
    if "attention" in secs:
        from .bench_attention import run_attention
        section("attention", lambda: run_attention(models, (4096,) if quick else (1024, 4096, 8192), 16, data, say,
                                                   budget, seed))
        from .bench_attention import DENSE_CONTEXTS, run_dense_attention
        section("dense attention", lambda: run_dense_attention(models, DENSE_CONTEXTS[:1] if quick else DENSE_CONTEXTS,
                                                               data, say, budget, seed))
    if "linear" in secs:
        section("linear batch 1", lambda: run_linear(gemv_shapes, (1,), data, say, budget, seed, save))
        if budget.ok("odd shapes"):
            section("odd shapes", lambda: run_odd_shapes(data, seed))
    if "decode" in secs:
        cfgs = [(m, f, 192, "dense") for m in models for f in ("bf16", "ternary", "nvfp4")]
        cfgs += [(m, "bf16_compile", 192, "dense") for m in models]
        cfgs += [(m, f, 192, "dense") for m in models for f in ("ternary_pdl", "nvfp4_pdl")]
        cfgs += [("bitnet-b1.58-3b", f, 192, "sdpa") for f in ("ternary_pdl", "nvfp4_pdl")]
        cfgs += [("bitnet-b1.58-2b4t", f, 4000, a) for f, a in (("bf16", "dense"), ("ternary", "dense"), ("ternary", "lop"))]
        cfgs += [("bitnet-b1.58-3b", f, 4000, a) for f, a in (("bf16", "dense"), ("ternary", "dense"), ("ternary", "lop"))]
        from .bench_decode import run_decode
        section("decode", lambda: run_decode(cfgs[:2] if quick else cfgs, data, say, budget, seed))
    section("autotune log", lambda: _log_tuned(say))
    if "gemm" in secs:
        section("gemm", lambda: run_linear(model_shapes, (64,) if quick else gemm_batches, data, say, budget, seed, save,
                                           "gemm"))
    if "linear" in secs:  # last: the batch-1, decode and GEMM figures come first when the budget is short
        section("linear batch 4", lambda: run_linear(model_shapes, tuple(b for b in BATCHES_GEMV if b > 1), data, say,
                                                     budget, seed, save, "batch 4"))
    from .fp4mma import linear_choices
    from .ternary_gemm import ternary_choices

    for key, path in sorted(linear_choices().items()):
        say(f"  fp4_linear path (tokens {key[0]}, {key[1]}x{key[2]}, {key[3]}): {path}")
    for key, path in sorted(ternary_choices().items()):
        say(f"  ternary_linear path (tokens {key[0]}, {key[1]}x{key[2]}): {path}")
    data["finished"] = True
    data["skipped"][:] = [s for s in data["skipped"] if s["what"] != "roofline plot"]
    save()
    try:
        atomic_write(out_dir / "gpu-baseline.png", roofline_png(data))
    except Exception as e:  # noqa: BLE001 - the plot is optional (matplotlib missing)
        data["skipped"].append({"what": "roofline plot", "why": f"{type(e).__name__}: {e}"})
        save()
    return data


def _log_tuned(say) -> None:
    """The configs the autotuner chose (key -> config), for the record."""
    from .rowgemv import _tgemv_row_tuned
    from .ternary import _tgemv_tuned

    for key, cfg in list(getattr(_tgemv_tuned, "cache", {}).items())[:40]:
        say(f"  gemv tuned {key[:5]}: {cfg}")
    for key, cfg in list(getattr(_tgemv_row_tuned, "cache", {}).items())[:40]:
        say(f"  row gemv tuned {key[:5]}: {cfg}")


SECTIONS = ("attention", "linear", "decode", "gemm")


def check_sections(text: str) -> str:
    """``--sections``, refused if it names a section that does not exist."""
    bad = set(text.split(",")) - set(SECTIONS)
    if bad:
        raise LowbitError(f"--sections {text}: unknown {', '.join(sorted(bad))}; choose from {', '.join(SECTIONS)}")
    return text


def parse_gemm_batches(text: str) -> tuple[int, ...]:
    """``--gemm-batches`` as a tuple of token counts, each >= ``GEMM_FROM``."""
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        vals = ()
    if not vals or min(vals) < GEMM_FROM:
        raise LowbitError(f"--gemm-batches {text!r}: give comma-separated token counts >= {GEMM_FROM}, e.g. 64,512")
    return vals


def add_arguments(p) -> None:
    """The flags of ``python -m lowbit.models.gpu.bench`` (the same as ``lowbit bench-gpu``)."""
    p.add_argument("--out", default="reports", help="directory for gpu-baseline.{json,md,log,png}")
    p.add_argument("--seed", type=int, default=0, help="seed of every random weight, activation and cache")
    p.add_argument("--quick", action="store_true", help="one shape, one context, two decode configs")
    p.add_argument("--sections", default="attention,linear,decode,gemm", help="comma-separated subset to run")
    p.add_argument("--budget-s", type=float, default=540.0, help="skip (and list) work after this many seconds")
    p.add_argument("--gemm-batches", default=",".join(map(str, BATCHES_GEMM)),
                   help="comma-separated token counts of the batched GEMM section (each >= 16)")
    p.add_argument("--resume", action="store_true",
                   help="continue the finished run in --out: run only the work its budget skipped")


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    a = p.parse_args(argv)
    try:
        check_sections(a.sections)
        batches = parse_gemm_batches(a.gemm_batches)
        Path(a.out).mkdir(parents=True, exist_ok=True)
        run_all(Path(a.out), a.quick, a.sections, a.seed, a.budget_s, log=lambda s: print(s, flush=True),
                gemm_batches=batches, resumed=a.resume)
    except LowbitError as e:  # one line, as `lowbit bench-gpu` prints it
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
