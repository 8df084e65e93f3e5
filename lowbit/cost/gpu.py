"""GPU baseline next to the simulated accelerator: renders `lowbit bench-gpu` results (schema
lowbit.gpu-baseline/2, documented in lowbit/models/gpu/bench.py; /1 files are read too) as Markdown tables
for `lowbit report`.

torch-free: reads the JSON only. Rows compare whole-model decode tokens/s and energy per token of the same
model on the GPU (per kernel / attention variant; GPU joules from NVML's board energy counter) with each
simulated design's decode tokens/s and energy per token including DRAM.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lowbit.sim.errors import LowbitError

SCHEMA = "lowbit.gpu-baseline/2"
SCHEMAS = ("lowbit.gpu-baseline/1", SCHEMA)


def load_gpu_results(path: Path) -> dict[str, Any]:
    """Read and check a bench-gpu JSON file; one-line LowbitError on anything unusable."""
    try:
        g = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LowbitError(f"--gpu-results {path}: cannot read JSON ({e})") from None
    if not isinstance(g, dict) or g.get("schema") not in SCHEMAS:
        found = g.get("schema") if isinstance(g, dict) else type(g).__name__
        raise LowbitError(f"--gpu-results {path}: schema {found!r} is not '{SCHEMA}'; produce it with `lowbit bench-gpu`")
    for key in ("device", "decode"):
        if key not in g:
            raise LowbitError(f"--gpu-results {path}: missing key '{key}'")
    return g


def _mj(j: float | None) -> str:
    if j is None:
        return "—"
    return f"{j * 1e3:.0f}" if j >= 0.1 else f"{j * 1e3:.3g}"


def gpu_markdown(g: dict[str, Any], designs: list[tuple]) -> str:
    """Markdown section. ``designs`` = [(design name, model, simulated decode tokens/s[, simulated decode
    J/token including DRAM])]; ratios are relative to the first simulated design of each model."""
    dev = g["device"]
    lines = [f"## GPU software baseline ({dev}, `lowbit bench-gpu`)", ""]
    rows = [tuple(d) + (None,) * (4 - len(d)) for d in designs]
    models = sorted({m for _n, m, _t, _j in rows})
    lines += ["Whole-model decode step (batch 1, CUDA graph, lm_head excluded) on the GPU vs the simulated "
              "accelerator on the same model shape. Energy per token: the GPU board's (NVML energy counter) and the "
              "simulated design's core + DRAM; ratios relative to the first simulated design:", "",
              "| model | runs on | weights | attention | context | tokens/s | vs simulated | mJ/token | energy vs simulated |",
              "|---|---|---|---|---|---|---|---|---|"]
    for m in models:
        sims = [(n, t, j) for n, mm, t, j in rows if mm == m and t]
        ref, ref_j = (sims[0][1], sims[0][2]) if sims else (None, None)
        for n, t, j in sims:
            ej = f"{j / ref_j:.2f}x" if j and ref_j else "—"
            lines.append(f"| {m} | {n} (simulated) | design | LOP | prefill+decode | {t:.2f} | {t / ref:.2f}x | {_mj(j)} | {ej} |")
        for r in g["decode"]:
            if r.get("model") != m or r.get("batch", 1) != 1:
                continue
            rel = f"{r['tokens_per_s'] / ref:.2f}x" if ref else "n/a"
            j = r.get("j_per_token")
            ej = f"{j / ref_j:.0f}x" if j and ref_j else "—"
            lines.append(f"| {m} | {dev} | {r['kernel']} | {r.get('attn', '')} | {r.get('context', '')} | "
                         f"{r['tokens_per_s']:.1f} | {rel} | {_mj(j)} | {ej} |")
    gemv = [r for r in g.get("results", []) if r.get("batch") == 1 and r.get("model") in models]
    if gemv:
        lines += ["", "Single-layer GEMV at batch 1 (median µs; speedup over torch bf16 `F.linear`):", "",
                  "| model | layer | shape | kernel | µs | GB/s | speedup |", "|---|---|---|---|---|---|---|"]
        for r in gemv:
            sp = f"{r['speedup_vs_torch']:.2f}x" if r.get("speedup_vs_torch") else "-"
            lines.append(f"| {r['model']} | {r.get('layer', '')} | {r.get('shape', '')} | {r['kernel']} | "
                         f"{r['median_us']:.2f} | {r.get('gbps', 0):.0f} | {sp} |")
    lines += ["", f"Measured device copy bandwidth: {g.get('copy_gbps', 'n/a')} GB/s. Full analysis: "
              "reports/gpu-baseline.md.", ""]
    return "\n".join(lines)
