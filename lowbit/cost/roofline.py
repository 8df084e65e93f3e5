"""`lowbit roofline`: every op of a simulated run against the design's roofline, and a GPU's points on its own.

Roofline model (S. Williams, A. Waterman, D. Patterson, "Roofline: an insightful visual performance model
for multicore architectures", CACM 52(4), 2009): attainable throughput = min(compute roof, operational
intensity x memory bandwidth). Here work is counted in MACs (1 op = 1 MAC, the report's FOM rule), so:
- operational intensity = MACs / DRAM bytes of the op (weights, K/V, LO codes, spilled activations);
- compute roofs, MAC/cycle, one per weight format, summed over the design's units from the unit catalogue's
  cost hook (lowbit.sim.units.catalog: RtlBlock.rates, work per busy cycle of all instances; the largest of
  a unit's selected RTL blocks): ternary (TINT + BoothFlex in ternary mode), INT8 (BoothFlex), FP4;
- DRAM roof: peak bytes/cycle = dram.peak_bytes_per_s / clock_hz, and the sustained roof measured on the
  DRAM model (lowbit.sim.dram.stream_efficiency, a long sequential read);
- achieved throughput of an op = its MACs / its span cycles (lowbit.sim.breakdown: first to last compute
  instruction of each op, summed), prefill and decode apart.
GPU panel (a `lowbit bench-gpu` result file, lowbit.cost.gpu): kernels at batch 1 and whole-model decode
steps, MACs / measured time against the GPU's datasheet roofs (`GPU_PEAKS`) and its measured copy bandwidth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowbit.sim.atomic import atomic_write
from lowbit.sim.units import catalog

WORK_FORMAT = {"ternary_macs": "ternary", "int8_macs": "INT8", "fp4_macs": "FP4"}
# Datasheet peaks (dense, i.e. half the with-sparsity figures), MAC/s (2 ops per MAC) and bytes/s:
# NVIDIA H100 Tensor Core GPU datasheet (2023), H100 SXM: BF16 989.5 TFLOPS, INT8 1,979 TOPS, HBM3 3.35 TB/s;
# NVIDIA H200 Tensor Core GPU datasheet (2024), H200 SXM: BF16 989.5 TFLOPS, INT8 1,979 TOPS, HBM3e 4.8 TB/s.
GPU_PEAKS = {"H100": {"bf16": 989.5e12 / 2, "int8": 1979e12 / 2, "bytes_per_s": 3.35e12,
                      "source": "NVIDIA H100 Tensor Core GPU datasheet, H100 SXM (dense)"},
             "H200": {"bf16": 989.5e12 / 2, "int8": 1979e12 / 2, "bytes_per_s": 4.8e12,
                      "source": "NVIDIA H200 Tensor Core GPU datasheet, H200 SXM (dense)"}}


def design_roofs(cfg) -> dict[str, float]:
    """Compute roofs in MAC/cycle per format (ternary, INT8, FP4) from the unit catalogue's rates."""
    roofs: dict[str, float] = {}
    for unit in catalog.UNITS.values():
        if not cfg.has(unit.name):
            continue
        sec = cfg.section(unit.name)
        best: dict[str, float] = {}
        for blk in unit.rtl:
            if blk.selected(sec):
                for w, v in blk.rates(sec).items():
                    best[w] = max(best.get(w, 0.0), float(v))
        for w, v in best.items():
            if w in WORK_FORMAT:
                roofs[WORK_FORMAT[w]] = roofs.get(WORK_FORMAT[w], 0.0) + v
    return roofs


@dataclass
class Point:
    label: str
    phase: str
    fmt: str
    intensity: float | None   # MAC/byte (None: no DRAM traffic)
    achieved: float           # MAC/cycle (design) or MAC/s (GPU)
    macs: int


def design_points(sim: dict[str, Any]) -> list[Point]:
    """Ops with MACs, per phase, from a SimResult dict run with a breakdown."""
    pts = []
    for phase in ("prefill", "decode"):
        tab = sim["breakdown"]["phases"].get(phase)
        for x in tab["by_op"] if tab else []:
            if not x["macs"] or not x["span_cycles"]:
                continue
            w = max((k for k in x["work"] if k in WORK_FORMAT), key=lambda k: x["work"][k])
            pts.append(Point(x["op"], phase, WORK_FORMAT[w], x["operational_intensity"], x["achieved_macs_per_cycle"],
                             x["macs"]))
    return pts


def gpu_roofs(g: dict[str, Any]) -> dict[str, Any]:
    """The GPU's roofs: datasheet peaks when the device is in GPU_PEAKS, and the measured copy bandwidth."""
    peak = next((v for k, v in GPU_PEAKS.items() if k in g.get("device", "")), None)
    out: dict[str, Any] = {"device": g.get("device", "GPU"), "copy_bytes_per_s": float(g.get("copy_gbps") or 0) * 1e9}
    if peak:
        out.update(peak)
    return out


def gpu_points(g: dict[str, Any]) -> list[Point]:
    """Batch-1 kernels (MACs = n x k; bytes = GB/s x time as the bench counts them) and whole-model decode
    steps (MACs = the model's projection MACs per token; bytes = the weights read per step)."""
    from lowbit.sim.modelspec import MODELS

    pts = []
    for r in g.get("results", []):
        if r.get("batch") != 1 or not r.get("median_us") or not r.get("gbps"):
            continue
        t = r["median_us"] * 1e-6
        macs = int(r["n"]) * int(r["k"])
        pts.append(Point(f"{r['kernel']} {r.get('layer', '')}".strip(), "kernel", _gpu_fmt(r["kernel"]),
                         macs / (r["gbps"] * 1e9 * t), macs / t, macs))
    for r in g.get("decode", []):
        m = MODELS.get(r.get("model", ""))
        if m is None or r.get("batch", 1) != 1 or not r.get("weight_bytes") or not r.get("tokens_per_s"):
            continue
        macs = m.projection_params
        pts.append(Point(f"{r['kernel']} decode step", "decode", _gpu_fmt(r["kernel"]), macs / r["weight_bytes"],
                         macs * r["tokens_per_s"], macs))
    return pts


def _clusters(pts: list[tuple[float, float, str]], tol: float = 0.12) -> list[tuple[tuple[float, float], list[str]]]:
    """Points closer than `tol` decades in both axes share one label (overlapping labels are unreadable)."""
    import math

    out: list[tuple[tuple[float, float], list[str]]] = []
    for x, y, lab in pts:
        for (cx, cy), labs in out:
            if abs(math.log10(x / cx)) < tol and abs(math.log10(y / cy)) < tol:
                labs.append(lab)
                break
        else:
            out.append(((x, y), [lab]))
    return out


def _gpu_fmt(kernel: str) -> str:
    k = kernel.lower()
    return "bf16" if "bf16" in k or "torch" in k else "ternary (int8)" if "ternary" in k or "int8" in k else \
        "FP4" if "fp4" in k else k


# ------------------------------------------------------------------------------------ figure

COLORS = {"ternary": "tab:blue", "INT8": "tab:orange", "FP4": "tab:green", "bf16": "tab:red", "int8": "tab:blue",
          "ternary (int8)": "tab:blue"}


def figure(cfg, sim: dict[str, Any], g: dict[str, Any] | None, sustained: float) -> bytes:
    """PNG: the design's roofline with its ops (and, with `g`, the GPU's beside it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2 if g else 1, figsize=(13 if g else 7.5, 5.2), squeeze=False)
    ax = axes[0][0]
    roofs = design_roofs(cfg)
    bpc = cfg.dram.peak_bytes_per_s / cfg.clock_hz
    pts = design_points(sim)
    xs = [p.intensity for p in pts if p.intensity]
    x = np.logspace(-2, np.log10(max(xs + [1.0]) * 30), 200)
    top = max(roofs.values())
    ax.plot(x, np.minimum(x * bpc, top), "k-", lw=1.2, label=f"DRAM peak {bpc:.1f} B/cycle")
    ax.plot(x, np.minimum(x * bpc * sustained, top), "k:", lw=1, label=f"DRAM sustained ({100 * sustained:.1f} %)")
    for f, r in sorted(roofs.items(), key=lambda kv: -kv[1]):
        ax.plot(x, np.minimum(r, x * bpc), "-", color=COLORS.get(f, "gray"), lw=1.6, alpha=0.6,
                label=f"{f} roof {r:g} MAC/cycle")
    xmax = x[-1]
    for p in pts:
        ax.scatter([p.intensity or xmax / 2], [p.achieved], marker="o" if p.phase == "decode" else "s", s=30,
                   color=COLORS.get(p.fmt, "gray"), edgecolor="k", linewidth=0.4, zorder=3)
    for (xi, yi), labels in _clusters([((p.intensity or xmax / 2), p.achieved, f"{p.phase} {p.label}") for p in pts]):
        ax.annotate(", ".join(labels), (xi, yi), fontsize=7, xytext=(5, -3), textcoords="offset points")
    ax.scatter([], [], marker="s", color="w", edgecolor="k", label="prefill op")
    ax.scatter([], [], marker="o", color="w", edgecolor="k", label="decode op")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("operational intensity (MAC / DRAM byte)")
    ax.set_ylabel("MAC / cycle (achieved = MACs / op span)")
    ax.set_title(f"{cfg.name}: {sim['model']}, prefill {sim['prefill_tokens']} + decode {sim['decode_tokens']}",
                 fontsize=10)
    ax.set_ylim(bottom=0.1, top=max(roofs.values()) * 3)
    ax.legend(fontsize=7, loc="upper left", framealpha=0.9)
    ax.grid(True, which="major", alpha=0.3)
    if g:
        _gpu_axes(axes[0][1], g)
    fig.tight_layout()
    from lowbit.cost.report_figures import fig_png

    return fig_png(fig)


def _gpu_axes(ax, g: dict[str, Any]) -> None:
    import numpy as np

    r = gpu_roofs(g)
    pts = gpu_points(g)
    xs = [p.intensity for p in pts if p.intensity] or [1.0]
    x = np.logspace(np.log10(min(xs)) - 1, np.log10(max(xs)) + 2, 200)
    if r.get("bytes_per_s"):
        ax.plot(x, x * r["bytes_per_s"] / 1e12, "k-", lw=1.2, label=f"HBM peak {r['bytes_per_s'] / 1e12:.2f} TB/s")
    if r["copy_bytes_per_s"]:
        ax.plot(x, x * r["copy_bytes_per_s"] / 1e12, "k:", lw=1, label=f"measured copy {r['copy_bytes_per_s'] / 1e12:.2f} TB/s")
    bw = r.get("bytes_per_s") or r["copy_bytes_per_s"]
    for f in ("int8", "bf16"):
        if f in r:
            ax.plot(x, np.minimum(r[f], x * bw) / 1e12, "-", color=COLORS[f], lw=1.6, alpha=0.6,
                    label=f"{f.upper()} tensor roof {r[f] / 1e12:.0f} TMAC/s")
    for p in pts:
        ax.scatter([p.intensity], [p.achieved / 1e12], marker="o" if p.phase == "decode" else "^", s=24,
                   color=COLORS.get(p.fmt, "gray"), edgecolor="k", linewidth=0.4, zorder=3)
    dec = [(p.intensity, p.achieved / 1e12, f"{p.label}") for p in pts if p.phase == "decode"]
    for (xi, yi), labels in _clusters(dec):
        ax.annotate(", ".join(sorted(set(labels))), (xi, yi), fontsize=6.5, xytext=(5, -3), textcoords="offset points")
    for f in sorted({p.fmt for p in pts}):
        ax.scatter([], [], marker="s", color=COLORS.get(f, "gray"), label=f"{f} kernels")
    ax.scatter([], [], marker="^", color="w", edgecolor="k", label="batch-1 kernel (bench-gpu)")
    ax.scatter([], [], marker="o", color="w", edgecolor="k", label="whole-model decode step")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("operational intensity (MAC / byte)")
    ax.set_ylabel("TMAC / s")
    ax.set_title(f"GPU: {r['device']} ({r.get('source', 'datasheet peaks unknown: measured bandwidth only')})",
                 fontsize=8)
    ax.legend(fontsize=7, loc="upper left", framealpha=0.9)
    ax.grid(True, which="major", alpha=0.3)


# ------------------------------------------------------------------------------------ report


def roofline_markdown(cfg, sim: dict[str, Any], g: dict[str, Any] | None, sustained: float, command: str) -> str:
    from lowbit.sim.breakdown import markdown as bd_markdown

    roofs = design_roofs(cfg)
    bpc = cfg.dram.peak_bytes_per_s / cfg.clock_hz
    L = [f"# Roofline and breakdown: {sim['model']} on {cfg.name}", "",
         f"Generated by `{command}` (lowbit/cost/roofline.py, lowbit/sim/breakdown.py). Prefill "
         f"{sim['prefill_tokens']} tokens + decode {sim['decode_tokens']} tokens, schedule `{sim['schedule']}`: "
         f"{sim['cycles']:,} cycles, {sim['decode_tokens_per_s']:.2f} decode tokens/s.", "",
         "## Roofs", "", "| roof | value | source |", "|---|---|---|"]
    for f, r in roofs.items():
        L.append(f"| {f} compute | {r:g} MAC/cycle | unit catalogue rates (lowbit/sim/units/catalog.py) |")
    L += [f"| DRAM peak | {bpc:.2f} B/cycle ({cfg.dram.peak_bytes_per_s / 1e9:.2f} GB/s) | dram.peak_bytes_per_s |",
          f"| DRAM sustained | {bpc * sustained:.2f} B/cycle ({100 * sustained:.1f} % of peak) | "
          "lowbit.sim.dram.stream_efficiency |", "", "![roofline](roofline.png)", "",
          "## Ops against the roofs", "",
          "Achieved = MACs / span cycles (first to last compute instruction of each op, summed); the bound is "
          "min(compute roof of the op's format, intensity x DRAM peak).", "",
          "| phase | op | format | MACs | MAC/byte | achieved MAC/cycle | roofline bound MAC/cycle | % of bound |",
          "|---|---|---|---|---|---|---|---|"]
    for p in design_points(sim):
        bound = min(roofs.get(p.fmt, float("inf")), (p.intensity or float("inf")) * bpc)
        oi = f"{p.intensity:.2f}" if p.intensity else "- (no DRAM traffic)"
        L.append(f"| {p.phase} | {p.label} | {p.fmt} | {p.macs:,} | {oi} | {p.achieved:.1f} | {bound:.1f} | "
                 f"{100 * p.achieved / bound:.0f} % |")
    if g:
        r = gpu_roofs(g)
        L += ["", f"GPU panel: `{r['device']}` from the bench-gpu result file; roofs: "
              + (f"{r['source']} (BF16 {r['bf16'] / 1e12:.0f} TMAC/s, INT8 {r['int8'] / 1e12:.0f} TMAC/s, "
                 f"{r['bytes_per_s'] / 1e12:.2f} TB/s)" if "source" in r else "device not in GPU_PEAKS")
              + f" and the measured copy bandwidth {r['copy_bytes_per_s'] / 1e12:.2f} TB/s."]
    for phase in sim["breakdown"]["phases"]:
        L += ["", f"## Breakdown, {phase}, per op", "", bd_markdown(sim["breakdown"], phase, "by_op")]
    if "decode" in sim["breakdown"]["phases"]:
        L += ["", "## Breakdown, decode, per layer (-1: embedding, final norm, lm_head)", "",
              bd_markdown(sim["breakdown"], "decode", "by_layer")]
    L += ["", "**Definitions.** " + sim["breakdown"]["definition"].replace("\n", " "), ""]
    return "\n".join(L)


def write_roofline(cfg, sim: dict[str, Any], out_dir: Path, gpu_results: Path | None, command: str) -> list[Path]:
    """OUT/roofline.png, OUT/roofline.md, OUT/roofline.json (the simulation with its breakdown)."""
    from lowbit.sim.dram import stream_efficiency

    g = None
    if gpu_results:
        from lowbit.cost.gpu import load_gpu_results

        g = load_gpu_results(Path(gpu_results))
    sustained = stream_efficiency(cfg)
    png = figure(cfg, sim, g, sustained)
    md = roofline_markdown(cfg, sim, g, sustained, command)
    data = {"hw": cfg.name, "roofs_macs_per_cycle": design_roofs(cfg),
            "dram_bytes_per_cycle": cfg.dram.peak_bytes_per_s / cfg.clock_hz, "dram_sustained_fraction": sustained,
            "points": [vars(p) for p in design_points(sim)],
            "gpu": {"roofs": gpu_roofs(g), "points": [vars(p) for p in gpu_points(g)]} if g else None,
            "sim": {**{k: v for k, v in sim.items() if k not in ("wall_s", "timing", "breakdown")},
                    "breakdown": {**sim["breakdown"], "phases": {ph: {k: v for k, v in t.items() if k != "rows"}
                                                                for ph, t in sim["breakdown"]["phases"].items()}}}}
    out = Path(out_dir)
    paths = [out / "roofline.png", out / "roofline.md", out / "roofline.json"]
    atomic_write(paths[0], png)
    atomic_write(paths[1], md)
    atomic_write(paths[2], json.dumps(data, indent=1) + "\n")
    return paths
