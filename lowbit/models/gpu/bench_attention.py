"""The decode-attention section of the GPU benchmark (:mod:`.bench`): LOP attention (:mod:`.lop_attn`, one
top-K per KV group, K/M = ``1/ratio``) against dense torch SDPA (flash backend where it runs) on the
BitNet-3B (MHA) and 2B4T (GQA) attention shapes. SDPA is timed on the cache rows as LOP reads them (head_dim
wide) and on rows zero-padded to the decode step's width (``DENSE_SHAPES``: a multiple of 8, which the flash
kernel needs; at head_dim 100 SDPA otherwise pads the whole cache on every call), and the faster counts. On-device
checks: the group scores and the top-K
indices equal ``sim.numerics.lop`` (``lo_scores`` of the kernel's INT8 queries against the INT8 keys the LO
cache was packed from, summed per KV group, ``lop_topk``), and LOP with K = M equals SDPA within 1e-2.
Rows of ``data["attention"]`` (schema: :mod:`.bench`); a LOP row's ``stage_us`` holds ``score`` (the scoring
launch alone) and ``no_pdl`` (the default call without programmatic dependent launch).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from .bench import bench_graph, n_copies
from .bench_budget import Budget, unit_seed

ATTN_SHAPES = {"bitnet-b1.58-3b": (32, 32, 100), "bitnet-b1.58-2b4t": (20, 5, 128)}  # (H, KVH, head_dim)
DENSE_SHAPES = {"bitnet-b1.58-3b": (32, 32, 100, 104), "bitnet-b1.58-2b4t": (20, 5, 128, 128)}  # (H, KVH, d, dc)


def _exact_check(model, m, ksel, q, kc, vc, lo, k_i8, lop_attention) -> dict:
    """The kernel's group scores and top-K against ``sim.numerics.lop`` on its own INT8 queries."""
    from lowbit.sim.numerics.lop import lo_scores, lop_group_topk

    h, kvh = q.shape[1], k_i8.shape[1]
    _, dbg = lop_attention(q, kc, vc, lo, m, ksel, return_debug=True)
    qi = dbg["q_i8"].cpu().numpy().reshape(1, kvh, h // kvh, -1)  # head h reads KV head h // G
    kk = k_i8[:, :, None, :m].cpu().numpy()  # [1, KVH, 1, M, d], broadcast over the group's heads
    per_head = lo_scores(qi, kk).reshape(1, h, m)
    sref, iref = lop_group_topk(per_head, h // kvh, ksel)
    ok_s = np.array_equal(dbg["scores"].cpu().numpy().reshape(sref.shape), sref)
    ok_i = np.array_equal(dbg["idx"].cpu().numpy().reshape(iref.shape), iref)
    return {"what": f"lop scores and top-K equal sim.numerics.lop {model} M={m}", "ok": bool(ok_s and ok_i),
            "detail": f"scores {'equal' if ok_s else 'differ'}, indices {'equal' if ok_i else 'differ'}"}


def lop_caches(kvh: int, m: int, d: int, copies: int, gen):
    """``copies`` random caches (bf16 K [1, KVH, m, d], bf16 V, the LO cache of random INT8 keys) on
    ``gen``'s device, and the first copy's INT8 keys (the exactness check's reference input)."""
    import torch

    from .lop_attn import lo_cache_torch

    caches = []
    for i in range(copies):
        kc = torch.randn(1, kvh, m, d, device=gen.device, generator=gen).to(torch.bfloat16)
        vc = torch.randn(1, kvh, m, d, device=gen.device, generator=gen).to(torch.bfloat16)
        k_i8 = torch.randint(-127, 128, (1, kvh, m, d), dtype=torch.int8, device=gen.device, generator=gen)
        caches.append((kc, vc, lo_cache_torch(k_i8)))
        if i == 0:
            k_first = k_i8
    return caches, k_first


def run_attention(models, contexts, ratio, data, log, budget: Budget, seed: int) -> None:
    import torch
    import torch.nn.functional as F

    from .lop_attn import LOP_CHUNKS, lop_attention, lop_default_chunk

    dev_name, l2 = data["device"], data["l2_bytes"]
    rows, checks = data["attention"], data["checks"]
    gen = torch.Generator(device="cuda")
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        SDPBackend = sdpa_kernel = None
    for model in models:
        h, kvh, d = ATTN_SHAPES[model]
        for m in contexts:
            if not budget.ok(unit := f"attention {model} M={m}"):
                continue
            gen.manual_seed(unit_seed(seed, unit))
            ksel = max(1, m // ratio)
            q = torch.randn(1, h, d, device="cuda", generator=gen).to(torch.bfloat16)
            caches, k_first = lop_caches(kvh, m, d, n_copies(2 * kvh * m * d * 2, l2), gen)
            gqa = h != kvh
            dense = [lambda q=q, kc=kc, vc=vc, g=gqa: F.scaled_dot_product_attention(q.unsqueeze(2), kc, vc, enable_gqa=g)
                     for kc, vc, _ in caches]
            dc = DENSE_SHAPES[model][3]
            sdpa_us = {d: _sdpa_time(dense, sdpa_kernel, SDPBackend)}
            if dc != d:  # the same attention over rows padded with zeros: equal scores and outputs, scale 1/sqrt(d)
                pad = [(F.pad(kc, (0, dc - d)), F.pad(vc, (0, dc - d))) for kc, vc, _ in caches]
                qp = F.pad(q, (0, dc - d))
                padded = [lambda qp=qp, kc=kc, vc=vc, g=gqa, sc=d ** -0.5: F.scaled_dot_product_attention(
                    qp.unsqueeze(2), kc, vc, scale=sc, enable_gqa=g) for kc, vc in pad]
                sdpa_us[dc] = _sdpa_time(padded, sdpa_kernel, SDPBackend)
                ref = dense[0]().float()
                err = float(torch.linalg.norm(padded[0]()[..., :d].float() - ref) / torch.linalg.norm(ref))
                checks.append({"what": f"sdpa on rows of {dc} equals rows of {d} {model} M={m}", "ok": err < 1e-2,
                               "detail": f"{err:.2e}"})
                del pad, padded
            width = min(sdpa_us, key=lambda w: sdpa_us[w][0])
            t_dense, backend = sdpa_us[width]
            lop = [partial(lop_attention, q, kc, vc, lo, m, ksel) for kc, vc, lo in caches]
            t_score = bench_graph([partial(lop_attention, q, kc, vc, lo, m, ksel, stages=1) for kc, vc, lo in caches])
            chunk = lop_default_chunk(kvh, m, q.device)
            t_nopdl = bench_graph([partial(lop_attention, q, kc, vc, lo, m, ksel, pdl=False) for kc, vc, lo in caches])
            kc, vc, lo = caches[0]
            checks.append(_exact_check(model, m, ksel, q, kc, vc, lo, k_first, lop_attention))
            full = lop_attention(q, kc, vc, lo, m, m).float()
            r = dense[0]().squeeze(2).float()
            err = float(torch.linalg.norm(full - r) / torch.linalg.norm(r))
            checks.append({"what": f"lop K=M equals SDPA {model} M={m}", "ok": err < 1e-2, "detail": f"{err:.2e}"})
            t_lop = bench_graph(lop)
            # the default chunk rule (lop_chunk) against the other chunk sizes it chooses from
            by_chunk = {ch: bench_graph([partial(lop_attention, q, kc, vc, lo, m, ksel, chunk=ch) for kc, vc, lo in caches])
                        for ch in LOP_CHUNKS if ch != chunk and ch < 2 * m}
            dense_bytes = 2 * kvh * m * d * 2 + 2 * h * d * 2
            lop_bytes = lo.numel() * 4 + 2 * kvh * ksel * d * 2 + 2 * h * d * 2
            shape = f"H{h}/KV{kvh}/d{d}"
            for name, us, nb, sp in (("torch_sdpa", t_dense, dense_bytes, None), ("lop", t_lop, lop_bytes, t_dense / t_lop)):
                rows.append({"kernel": name, "model": model, "shape": shape, "batch": 1, "context": m, "k_sel": ksel,
                             "median_us": round(us, 3), "gbps": round(nb / (us * 1e-6) / 1e9, 1),
                             "speedup_vs_torch": None if sp is None else round(sp, 3), "device": dev_name})
            rows[-2]["backend"] = backend
            rows[-2]["cache_width"] = width
            rows[-2]["by_width_us"] = {str(w): round(t, 3) for w, (t, _) in sdpa_us.items()}
            rows[-1]["stage_us"] = {"score": round(t_score, 2), "no_pdl": round(t_nopdl, 2)}
            rows[-1]["chunk"] = chunk
            rows[-1]["by_chunk_us"] = {str(ch): round(t, 2) for ch, t in by_chunk.items()}
            rows[-1]["kernel_us"] = _kernel_times(lop[0])
            log(f"attn {model} M={m} K={ksel}: sdpa({backend})={t_dense:.1f}us lop={t_lop:.1f}us "
                f"({t_dense / t_lop:.2f}x; without PDL "
                f"{t_nopdl:.1f}us) score stage "
                f"{t_score:.1f}us; chunk {chunk}, others {rows[-1]['by_chunk_us']}; kernels (eager) {rows[-1]['kernel_us']}")


def _sdpa_time(calls, sdpa_kernel, backends) -> tuple[float, str]:
    """(µs, backend) of SDPA over ``calls`` (:func:`.bench.bench_graph`): the flash backend, as the goal asks,
    or torch's default choice where flash refuses the shape."""
    if sdpa_kernel is not None:
        try:
            with sdpa_kernel([backends.FLASH_ATTENTION]):
                return bench_graph(calls), "flash"
        except Exception:  # noqa: BLE001 - e.g. a head_dim or GQA layout this flash build refuses
            pass
    return bench_graph(calls), "default"


def _kernel_times(fn, reps: int = 10) -> dict:
    """Device time per kernel name of one call of ``fn`` (torch profiler, mean over ``reps`` eager calls)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                fn()
            torch.cuda.synchronize()
        tot: dict[str, float] = {}
        for ev in prof.events():
            if ev.device_type == torch.autograd.DeviceType.CUDA:
                tot[ev.name[:40]] = tot.get(ev.name[:40], 0.0) + ev.device_time / reps
        return {k: round(v, 2) for k, v in tot.items()}
    except Exception as e:  # noqa: BLE001 - a diagnostic only
        return {"profiler failed": f"{type(e).__name__}: {e}"[:100]}


def dense_variants(q, kc, vc, m: int, hd: int, splits=None, block_tokens: int = 64, num_warps: int = 4,
                   dot=None) -> dict:
    """The dense decode attention variants over the first ``m`` cached tokens (q [B, H, dc], caches
    [B, KVH, Mmax, dc], dc >= hd zero-padded, scale 1/sqrt(hd)) as name -> call: ``sdpa`` (torch's default
    backend), ``dense`` (:func:`.decode_attn.dense_decode_attention`), ``split_last`` / ``split_kernel``
    (:func:`.decode_attn.split_decode_attention`, combine by the last program / by a second launch; the
    keyword arguments are its tunables). Each returns bf16 [B, H, dc]."""
    import torch.nn.functional as F

    from .decode_attn import dense_decode_attention, split_decode_attention

    sc = hd ** -0.5
    gqa = q.shape[1] != kc.shape[1]
    kw = dict(splits=splits, block_tokens=block_tokens, num_warps=num_warps, dot=dot)
    return {"sdpa": lambda: F.scaled_dot_product_attention(q.unsqueeze(2), kc[:, :, :m], vc[:, :, :m], scale=sc,
                                                           enable_gqa=gqa).squeeze(2),
            "dense": lambda: dense_decode_attention(q, kc, vc, m, scale=sc),
            "split_last": lambda: split_decode_attention(q, kc, vc, m, sc, combine="last", **kw),
            "split_kernel": lambda: split_decode_attention(q, kc, vc, m, sc, combine="kernel", **kw)}


def time_dense_attention(h: int, kvh: int, d: int, dc: int, ctx: int, batch: int = 1, seed: int = 0,
                         **split_kw) -> dict:
    """µs per call (:func:`.bench.bench_graph`: CUDA graph, cold K/V copies) of :func:`dense_variants` plus
    ``sdpa_flash`` (SDPA forced to the flash backend; None where it refuses), for H query / KVH KV heads of
    head_dim ``d`` in cache rows of ``dc`` and a context of ``ctx`` tokens (cache of ctx + 1 rows, as the
    decode step has). ``err``: max |out - float64 reference| / max |reference| per variant; ``checks``:
    split_last equals split_kernel bitwise, a captured split_last replayed 3 times equals the eager call, and
    the group counters are 0 afterwards. ``split_kw``: :func:`.decode_attn.split_decode_attention` tunables."""
    import torch

    from .bench import l2_bytes
    from .decode_attn import _SPLIT_SCRATCH, split_plan
    from .ternary import graph_capture

    gen = torch.Generator(device="cuda").manual_seed(seed)

    def rnd(*shape):
        x = torch.randn(*shape, device="cuda", generator=gen)
        x[..., d:] = 0
        return x.to(torch.bfloat16)

    q = rnd(batch, h, dc)
    caches = [(rnd(batch, kvh, ctx + 1, dc), rnd(batch, kvh, ctx + 1, dc))
              for _ in range(n_copies(2 * batch * kvh * (ctx + 1) * dc * 2, l2_bytes()))]
    variants = [dense_variants(q, kc, vc, ctx, d, **split_kw) for kc, vc in caches]
    res: dict = {"shape": f"B{batch}/H{h}/KV{kvh}/d{d}/dc{dc}", "context": ctx, "copies": len(caches),
                 "splits": split_plan(ctx, batch * kvh, q.device, split_kw.get("splits"),
                                      split_kw.get("block_tokens", 64)),
                 "us": {}, "err": {}}
    kc, vc = caches[0]
    k = kc[:, :, :ctx, :d].double().repeat_interleave(h // kvh, 1)
    s = torch.einsum("bhd,bhmd->bhm", q[..., :d].double(), k) * d ** -0.5
    ref = torch.einsum("bhm,bhmd->bhd", torch.softmax(s, -1), vc[:, :, :ctx, :d].double().repeat_interleave(h // kvh, 1))
    outs = {}
    for name in variants[0]:
        outs[name] = variants[0][name]()
        res["err"][name] = float((outs[name][..., :d].double() - ref).abs().max() / ref.abs().max())
        res["us"][name] = round(bench_graph([v[name] for v in variants]), 2)
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            res["us"]["sdpa_flash"] = round(bench_graph([v["sdpa"] for v in variants]), 2)
    except Exception:  # noqa: BLE001 - flash refuses this shape or is absent
        res["us"]["sdpa_flash"] = None
    g, cap = graph_capture(variants[0]["split_last"])
    for _ in range(3):
        g.replay()
    torch.cuda.synchronize()
    res["checks"] = {"last_equals_kernel": bool(torch.equal(outs["split_last"], outs["split_kernel"])),
                     "graph_replay_equals_eager": bool(torch.equal(cap, outs["split_last"])),
                     "counters_zero": all(not v[3].any() for v in _SPLIT_SCRATCH.values())}
    return res


DENSE_CONTEXTS = (193, 1024, 4096)


def run_dense_attention(models, contexts, data, log, budget: Budget, seed: int) -> None:
    """Rows of ``data["dense_attention"]``: :func:`time_dense_attention` with the default split plan for each
    model's attention shape (:data:`DENSE_SHAPES`) and context, and its checks in ``data["checks"]`` (every
    variant within 1e-2 of float64, the one-launch combine equal to the two-launch one, CUDA-graph replay
    equal to the eager call, the group counters back at zero)."""
    rows, checks = data.setdefault("dense_attention", []), data["checks"]
    for model in models:
        h, kvh, d, dc = DENSE_SHAPES[model]
        for m in contexts:
            if not budget.ok(f"dense attention {model} M={m}"):
                continue
            r = time_dense_attention(h, kvh, d, dc, m, seed=seed + 2)
            rows.append({"model": model, **r})
            worst = max(r["err"].values())
            checks.append({"what": f"dense decode attention variants within 1e-2 of float64 {model} M={m}",
                           "ok": worst < 1e-2, "detail": f"worst {worst:.2e}"})
            checks += [{"what": f"split attention {name} {model} M={m}", "ok": ok, "detail": ""}
                       for name, ok in r["checks"].items()]
            log(f"dense attn {model} M={m} plan {r['splits']}: " + ", ".join(
                f"{k} {v:.1f}" for k, v in r["us"].items() if v is not None))
