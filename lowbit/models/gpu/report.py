"""Markdown report and roofline-style plot of a ``bench-gpu`` run (data: the JSON of :mod:`.bench`).

torch-free: renders the result dictionary only. The goals table states each target, the measured figure
and whether it is met; a miss is a miss.
"""

from __future__ import annotations

import io

MARKER = "<!-- analysis -->"
BATCHES_GEMV = (1, 4)
BATCHES_GEMM = (16, 64, 512)
BIG_BF16_BYTES = 16e6  # GEMV floor goals apply to shapes with >= 16 MB of bf16 weights
# one device copy moving the bytes of the ternary / FP4 GEMV (batch 1): kernel name -> column title
COPY_KERNELS = {"copy_ternary_bytes": "copy, ternary bytes", "copy_fp4_bytes": "copy, FP4 bytes"}


def _row(rows, **kv):
    return next((r for r in rows if all(r.get(k) == v for k, v in kv.items())), None)


def _chunks(r: dict) -> str:
    """The LOP row's default chunk and, in brackets, its time with each other chunk size ("—" before sweeps)."""
    if "chunk" not in r:
        return "—"
    other = ", ".join(f"{c}: {t:.1f}" for c, t in r.get("by_chunk_us", {}).items())
    return f"{r['chunk']}" + (f" ({other})" if other else "")


def _sdpa_how(r: dict) -> str:
    """The LOP table's SDPA cell: backend, the cache row width timed fastest and the other width's µs."""
    how = r.get("backend", "")
    if "cache_width" in r:
        how += f", rows of {r['cache_width']}"
        how += "".join(f" (rows of {w}: {t:.1f})" for w, t in r.get("by_width_us", {}).items()
                       if w != str(r["cache_width"]))
    return how


def _best_step(dec, model: str, fmt: str):
    """The fastest 192-token decode row of ``fmt`` (its PDL variant and attention kernels included), or None."""
    rs = [r for r in dec if r["model"] == model and r["context"] == 192 and r["attn"] in ("dense", "split", "sdpa")
          and r["kernel"] in (fmt, f"{fmt}_pdl")]
    return min(rs, key=lambda r: r["step_us"]) if rs else None


def _config(r) -> str:
    return f"{r['kernel']}, {r['attn'] if r['attn'] in ('split', 'sdpa') else 'default'} attention"


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.0f} %"


def goals(data: dict) -> list[tuple[str, str, str]]:
    """(goal, measured, met) rows; met is 'yes', 'no', 'partly', 'not measured' or 'yes at the batches
    measured' (a batch goal whose run did not reach both batch 1 and 512)."""
    res, out = data["results"], []
    copies = data.get("copies", [])
    big = sorted({(r["n"], r["k"]) for r in res if r["batch"] == 1 and r["n"] * r["k"] * 2 >= BIG_BF16_BYTES})

    def floor_goal(kernel, target, label, copy_kernel):
        fr = [(n, k, _row(res, kernel=kernel, n=n, k=k, batch=1)) for n, k in big]
        fr = [(n, k, r["floor_frac"]) for n, k, r in fr if r]
        if not fr:
            return out.append((label, "not measured", "not measured"))
        worst = min(fr, key=lambda t: t[2])
        best = max(fr, key=lambda t: t[2])
        hit = sum(f >= target for *_, f in fr)
        txt = f"{_pct(worst[2])} ({worst[0]}×{worst[1]}) to {_pct(best[2])} ({best[0]}×{best[1]}); {hit}/{len(fr)} shapes at target"
        cp = [r["floor_frac"] for n, k in big if (r := _row(copies, kernel=copy_kernel, n=n, k=k, batch=1))]
        if cp:  # what one kernel moving the same bytes reaches: the physical ceiling at these sizes
            txt += (f"; one copy kernel of the same bytes: {_pct(min(cp))} to {_pct(max(cp))}, "
                    f"≥ {_pct(target)} on {sum(c >= target for c in cp)}/{len(cp)}")
        out.append((label, txt, "yes" if hit == len(fr) else ("partly" if hit else "no")))

    floor_goal("ternary", 0.70, "ternary GEMV, quantizer fused, batch 1: ≥ 70 % of copy bandwidth (≥ 16 MB bf16 shapes)",
               "copy_ternary_bytes")
    floor_goal("nvfp4", 0.60, "NVFP4 GEMV batch 1: ≥ 60 % of copy bandwidth (≥ 16 MB bf16 shapes)", "copy_fp4_bytes")
    floor_goal("mxfp4", 0.60, "MXFP4 GEMV batch 1: ≥ 60 % of copy bandwidth (≥ 16 MB bf16 shapes)", "copy_fp4_bytes")
    refs = [(r["shape"], r["median_us"]) for r in data.get("references", [])]
    cmp = [(s, us, _row(res, kernel="ternary", shape=s, batch=1)) for s, us in refs]
    cmp = [(s, us, r["median_us"]) for s, us, r in cmp if r]
    if cmp:
        won = sum(t < us for _, us, t in cmp)
        txt = "; ".join(f"{s}: {t:.1f} vs {us:.1f}" for s, us, t in cmp)
        out.append(("ternary GEMV incl. quantizer faster than the BitNet W2A8 CUDA kernel without it (µs, reference "
                    "values)", f"{won}/{len(cmp)} faster — {txt}", "yes" if won == len(cmp) else ("partly" if won else "no")))
    # batched GEMM >= bf16 at every batch
    for fmt in ("ternary", "nvfp4"):
        rs = [r for r in res if r["kernel"] == fmt and r["speedup_vs_torch"] is not None]
        if rs:
            lo = min(rs, key=lambda r: r["speedup_vs_torch"])
            ok = sum(r["speedup_vs_torch"] >= 1 for r in rs)
            bs = ", ".join(str(b) for b in sorted({r["batch"] for r in rs}))
            full = {1, 512} <= {r["batch"] for r in rs}  # the goal spans batch 1 to 512
            met = ("yes" if full else "yes at the batches measured") if ok == len(rs) else ("partly" if ok else "no")
            out.append((f"{fmt} ≥ torch bf16 at every batch 1–512 (whole op from bf16 input; batches in this run: {bs})",
                        f"{ok}/{len(rs)} (shape, batch) points; worst {lo['speedup_vs_torch']:.2f}× ({lo['shape']}, "
                        f"batch {lo['batch']})", met))
    dec = data.get("decode", [])
    for model, fmt, target, base in (("bitnet-b1.58-3b", "ternary", 3.0, "bf16"), ("bitnet-b1.58-3b", "ternary", 3.0, "bf16_compile"),
                                     ("bitnet-b1.58-3b", "nvfp4", 2.0, "bf16"), ("bitnet-b1.58-3b", "nvfp4", 2.0, "bf16_compile")):
        r = _best_step(dec, model, fmt)
        b = _row(dec, model=model, kernel=base, context=192, attn="dense")
        label = f"{model} {fmt} decode ≥ {target:.0f}× torch {base.replace('_compile', ' + torch.compile(max-autotune)')}"
        if r and b:
            sp = b["step_us"] / r["step_us"]
            out.append((label, f"{sp:.2f}× ({r['tokens_per_s']:.0f} vs {b['tokens_per_s']:.0f} tok/s; {_config(r)})",
                        "yes" if sp >= target else "no"))
        else:
            out.append((label, "not measured", "not measured"))
    r = _best_step(dec, "bitnet-b1.58-3b", "ternary")
    out.append(("bitnet-b1.58-3b ternary decode ≥ 50 % of the weight-streaming floor",
                f"{_pct(r['floor_frac'])} ({_config(r)})" if r else "not measured",
                ("yes" if r["floor_frac"] >= 0.5 else "no") if r else "not measured"))
    att = data.get("attention", [])
    for model in sorted({a["model"] for a in att}):
        ctx = max((a["context"] for a in att if a["model"] == model), default=0)
        r = _row(att, model=model, kernel="lop", context=ctx)
        if r:
            out.append((f"LOP attention ≥ 3× SDPA at {ctx} context, K/M = 1/16 ({model}, {r['shape']})",
                        f"{r['speedup_vs_torch']:.2f}×", "yes" if r["speedup_vs_torch"] >= 3 else "no"))
    peers = {r["kernel"] for r in res if r["kernel"].startswith("bnb_")}
    why = next((s["why"] for s in data.get("skipped", []) if s["what"] == "bitsandbytes peers"), "")
    lin = [r for r in res if r["kernel"] == "torch_bf16" and r["batch"] == 1]
    if peers or why:
        out.append(("bitsandbytes NF4/FP4 peers in the same run", ", ".join(sorted(peers)) if peers else f"skipped: {why}",
                    "yes" if peers else "no"))
    else:  # no linear rows, or bitsandbytes ran nowhere without saying why
        out.append(("bitsandbytes NF4/FP4 peers in the same run", "not measured" if not lin else "no rows",
                    "not measured" if not lin else "no"))
    ej = [r for r in dec if r.get("j_per_token") is not None]
    out.append(("GPU energy per token (NVML) for whole-model decode", f"{len(ej)}/{len(dec)} decode rows",
                "yes" if ej else "no"))
    return out


def _linear_table(data, batches, title) -> list[str]:
    res = [r for r in data["results"] + data.get("copies", []) if r["batch"] in batches]
    if not res:
        return []
    order = ("torch_bf16", "ternary", "ternary_kernel", "ternary_tc16", "ternary_splitk", "ternary_unpack", "nvfp4", "nvfp4_dequant",
             "mxfp4", "bnb_nf4", "bnb_fp4", *COPY_KERNELS)
    kernels = [k for k in order if any(r["kernel"] == k for r in res)]
    pct_of = ["ternary", "nvfp4", "mxfp4"] + [k for k in COPY_KERNELS if k in kernels]
    refs = {r["shape"]: r["median_us"] for r in data.get("references", [])}
    show_ref = 1 in batches and refs
    out = ["", title, "",
           "| model | layer | N×K | batch | " + " | ".join(COPY_KERNELS.get(k, k) for k in kernels)
           + (" | W2A8 ref |" if show_ref else " |") + "".join(f" {COPY_KERNELS.get(k, k)} % floor |" for k in pct_of),
           "|---|---|---|---|" + "---|" * (len(kernels) + (1 if show_ref else 0) + len(pct_of))]
    keys = []
    for r in res:
        kk = (r["model"], r["layer"], r["shape"], r["batch"])
        if kk not in keys:
            keys.append(kk)
    for kk in keys:
        cells, fl = [], {}
        for k in kernels:
            r = next((r for r in res if (r["model"], r["layer"], r["shape"], r["batch"]) == kk and r["kernel"] == k), None)
            if r is None:
                cells.append("")
                continue
            sp = f" ({r['speedup_vs_torch']:.2f}×)" if r["speedup_vs_torch"] and k not in COPY_KERNELS else ""
            cells.append(f"{r['median_us']:.1f}{sp}")
            fl[k] = r.get("floor_frac")
        if show_ref:
            cells.append(f"{refs[kk[2]]:.1f}" if kk[2] in refs and kk[3] == 1 else "")
        cells += [_pct(fl.get(k)) for k in pct_of]
        layer = kk[1].replace("|", "\\|")  # 2B4T's fused "gate|up" inside a table cell
        out.append(f"| {kk[0]} | {layer} | {kk[2]} | {kk[3]} | " + " | ".join(cells) + " |")
    return out


def render_markdown(data: dict, keep: str = "") -> str:
    dev = data["device"]
    out = [f"# GPU baseline: {dev}", "",
           f"Generated by `lowbit bench-gpu --seed {data.get('seed', 0)}` ({data['created']}"
           + "".join(f"; continued by `--resume` {p['created']}, copy bandwidth then {p['copy_gbps']:.0f} GB/s"
                     for p in data.get("parts", [])) + f"); torch {data['torch']}, "
           f"triton {data['triton']}. Measured device-to-device copy bandwidth: **{data['copy_gbps']:.0f} GB/s** "
           "(read + write), the floor every GB/s figure is compared with. Times are medians of "
           "`triton.testing.do_bench` over a CUDA graph of back-to-back calls on distinct weight copies (weights "
           "never L2-resident); GB/s counts the essential bytes (weights as stored, bf16 activations in, bf16 out). "
           "Raw data: `gpu-baseline.json`; log: `gpu-baseline.log`; plot: `gpu-baseline.png`.", "",
           "## Goals", "", "| goal | measured | met |", "|---|---|---|"]
    out += [f"| {g} | {m} | {ok} |" for g, m, ok in goals(data)]
    out += _linear_table(data, (1,), "## Batch-1 GEMV (µs; speedup over torch bf16 `F.linear` in brackets)"
                         + ("\n\n`copy, ternary bytes` / `copy, FP4 bytes`: one device-to-device copy kernel moving "
                            "as many bytes (read + write) as the ternary / NVFP4 GEMV, launch and HBM ramp-up "
                            "included, timed the same way: what one kernel of that size can reach."
                            if data.get("copies") else ""))
    out += _linear_table(data, (4,), "## Batch-4 GEMV (µs)")
    out += _linear_table(data, BATCHES_GEMM, "## Batched / prefill GEMM (µs)")
    if data.get("attention"):
        out += ["", "## Decode attention: LOP (one top-K per KV group, K/M = 1/16) vs dense torch SDPA", "",
                "`without PDL µs`: the default call without programmatic dependent launch; "
                "`scoring launch µs`: the scoring phase alone. SDPA is timed on cache rows of head_dim and on rows "
                "zero-padded to the decode step's width (a multiple of 8, as the flash kernel needs); the faster counts, "
                "the other in brackets. `chunk`: tokens per program of the default call (`lop_attn.lop_chunk`), in "
                "brackets the LOP µs with the other chunk sizes.", "",
                "| model | heads | context M | K | SDPA backend | SDPA µs | LOP µs | speedup | "
                "without PDL µs | scoring launch µs | chunk (others: µs) |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        att = data["attention"]
        for r in att:
            if r["kernel"] != "lop":
                continue
            d = _row(att, kernel="torch_sdpa", model=r["model"], context=r["context"])
            st = r.get("stage_us", {})
            out.append(f"| {r['model']} | {r['shape']} | {r['context']} | {r['k_sel']} | {_sdpa_how(d)} | "
                       f"{d['median_us']:.1f} | {r['median_us']:.1f} | {r['speedup_vs_torch']:.2f}× | "
                       f"{'—' if 'no_pdl' not in st else format(st['no_pdl'], '.1f')} | {st.get('score', 0):.1f} | "
                       f"{_chunks(r)} |")
    if data.get("dense_attention"):
        out += ["", "## Dense decode attention (one query token, bf16 KV cache; µs)", "",
                "`split, 1 launch`: the context split over `splits` programs per KV group, the partial softmax states "
                "combined by the group's last program (`decode_attn.split_decode_attention`); `split, 2 launches`: combined "
                "by a second kernel; `one program per group`: the looped kernel; SDPA: torch's default backend and "
                "flash forced.", "",
                "| model | heads | context | splits | SDPA | SDPA flash | one program per group | split, 1 launch | "
                "split, 2 launches | best vs SDPA |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in data["dense_attention"]:
            us = r["us"]
            sd = min(v for k, v in us.items() if k.startswith("sdpa") and v is not None)
            best = min(v for k, v in us.items() if not k.startswith("sdpa") and v is not None)
            fl = f"{us['sdpa_flash']:.1f}" if us.get("sdpa_flash") is not None else "—"
            out.append(f"| {r['model']} | {r['shape']} | {r['context']} | {r['splits'][0]} | {us['sdpa']:.1f} | {fl} | "
                       f"{us['dense']:.1f} | {us['split_last']:.1f} | {us['split_kernel']:.1f} | {sd / best:.2f}× |")
    if data.get("decode"):
        out += ["", "## Whole-model decode step (batch 1, CUDA graph, random weights, lm_head excluded)", "",
                "`bf16` = torch eager ops; `bf16_compile` = the layer under `torch.compile(mode=\"max-autotune-no-cudagraphs\")`, "
                "both replayed as one CUDA graph (= max-autotune); `ternary_pdl` / `nvfp4_pdl` = the step with "
                "programmatic dependent launch on every ternary and decode-attention kernel (`LOWBIT_GPU_PDL=1`; the "
                "FP4 GEMVs have it by default); attention `dense` = the default choice (torch SDPA for bf16; for the "
                "low-bit formats the split-context kernel up to 384 tokens, SDPA beyond), `split` / `sdpa` = the "
                "split-context kernel / torch SDPA for every dense attention (`LOWBIT_GPU_ATTN=split` / `sdpa`). The goals take each format's fastest 192-token row. Floor = weight bytes / copy bandwidth. Energy: "
                "NVML total-energy counter over ~1 s of back-to-back replays (whole board).", "",
                "| model | weights | context | attention | µs/token | tokens/s | weight MB | % of floor | vs bf16 | "
                "vs bf16 compile | J/token | avg W |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in data["decode"]:
            sp = f"{r['speedup_vs_torch']:.2f}×" if r.get("speedup_vs_torch") else "—"
            spc = f"{r['speedup_vs_compile']:.2f}×" if r.get("speedup_vs_compile") else "—"
            j = f"{r['j_per_token']:.3f}" if r.get("j_per_token") is not None else "—"
            w = f"{r['avg_w']:.0f}" if r.get("avg_w") is not None else "—"
            out.append(f"| {r['model']} | {r['kernel']} | {r['context']} | {r['attn']} | {r['step_us']:.1f} | "
                       f"{r['tokens_per_s']:.0f} | {r['weight_bytes'] / 1e6:.0f} | {_pct(r.get('floor_frac'))} | {sp} | "
                       f"{spc} | {j} | {w} |")
    if data.get("checks"):
        bad = [c for c in data["checks"] if not c["ok"]]
        out += ["", f"## On-device correctness checks: {len(data['checks']) - len(bad)}/{len(data['checks'])} passed", ""]
        out += [f"- FAILED: {c['what']} {c['detail']}" for c in bad]
    if data.get("skipped"):
        out += ["", "## Skipped", ""] + [f"- {s['what']}: {s['why']}" for s in data["skipped"]]
    out += ["", MARKER, keep.strip(), ""]
    return "\n".join(out)


def roofline_png(data: dict) -> bytes:
    """Achieved GB/s per batch-1 shape and kernel against the copy-bandwidth floor (PNG bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = [r for r in data["results"] + data.get("copies", []) if r["batch"] == 1]
    shapes = []
    for r in res:
        if r["shape"] not in shapes:
            shapes.append(r["shape"])
    kernels = [k for k in ("torch_bf16", "ternary", "ternary_kernel", "nvfp4", "mxfp4", "bnb_nf4", "copy_ternary_bytes")
               if any(r["kernel"] == k for r in res)]
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(shapes) + 3), 4.5))
    wdt = 0.8 / max(len(kernels), 1)
    for i, k in enumerate(kernels):
        ys = [(_row(res, kernel=k, shape=s) or {}).get("gbps", 0) for s in shapes]
        ax.bar([j + i * wdt for j in range(len(shapes))], ys, wdt, label=k)
    cb = data["copy_gbps"]
    ax.axhline(cb, color="k", lw=1.2, label=f"copy bandwidth {cb:.0f} GB/s (floor)")
    ax.axhline(0.7 * cb, color="k", lw=0.8, ls="--", label="70 % of floor")
    ax.set_xticks([j + 0.4 - wdt / 2 for j in range(len(shapes))], shapes, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("achieved GB/s (essential bytes)")
    ax.set_title(f"Batch-1 GEMV on {data['device']}: achieved bandwidth vs floor")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
