"""`python -m lowbit.sim.kvlop --out reports/kv-lop`: LOP's KV-traffic reduction against context length.

For each model and context M (one decode step, M cached keys, on the `vitallm` preset) the report simulates
the step three ways: dense attention, LOP with fixed-ratio selections (min(k, M) keys spread evenly,
lowbit.sim.kvcache) and LOP with data-driven selections (lowbit.sim.lop_select's rule on synthetic q/k,
lop_select.synthetic_step_positions: no q/k captured from these models is available here). Reported:

- dense K+V bytes, K+V bytes read, LO-code bytes read (the surrogate every cached key needs each step);
- net reduction = dense K+V / (K+V read + LO codes), the saving LOP really gives, and the K+V-only figure
  dense / read, which is M/K for fixed-ratio selections and the form of the paper's 54.86x
  (docs/reference/vitallm.md §3.3, §4.6: M/K = 54.86 at K = 32 means M ≈ 1,755 keys);
- attention cycles (the ops rope, kv_append, attn_qk, softmax, attn_av) and the DRAM row-hit rate of the
  attention-only step, where the selected keys' scattered fetches show (against "contiguous": the same
  number of keys as the fixed-ratio selection but adjacent, positions 0..K-1, one DMA per KV head, as the
  simulator fetched them before keys had their own addresses), and whole-step decode tokens/s.

A context beyond a model's max_positions is refused by the simulator; the report lists it as such.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lowbit.sim.atomic import atomic_dir
from lowbit.sim.config import HwConfig, load_config
from lowbit.sim.engine import SimResult, simulate
from lowbit.sim.errors import LowbitError, WorkloadError
from lowbit.sim.lop_select import synthetic_step_positions
from lowbit.sim.modelspec import ModelSpec, get_model
from lowbit.sim.trace import Trace
from lowbit.sim.workloads import step_ops

HW = "vitallm"
# BitNet b1.58 3B (the papers' model, 2,048 positions) and a GQA model whose position limit passes 32k
# (LLaMA-3.2-1B, 131,072 positions, deployed with ternary weights; its FFN input of 8,192 fits vitallm's
# activation tile, where Falcon3-7B-1.58bit's 23,040 does not).
MODELS = ("bitnet-b1.58-3b", "llama-3.2-1b")
CONTEXTS = (512, 1024, 1755, 2048, 4096, 8192, 16384, 32768)
PAPER = {"kv_reduction_x": 54.86, "keys": 1755}
ATTN_OPS = ("rope", "kv_append", "attn_qk", "softmax", "attn_av")
SEED = 0


def resolve_model(name: str) -> ModelSpec:
    """A built-in model or a shipped HF-config preset (lowbit.sim.hfconfig); bf16 checkpoints deployed with
    ternary weights."""
    try:
        m = get_model(name)
    except WorkloadError:
        from lowbit.sim.hfconfig import preset_spec

        m = preset_spec(name)
    return m.with_format("ternary") if m.weight_format == "bf16" else m


def step_trace(m: ModelSpec, context: int, attention_only: bool) -> Trace:
    """One decode step with `context` cached keys (the new token's key is the last), optionally attention only."""
    ops = [o for o in step_ops(m, "decode", 1, 1, context) if not attention_only or o.op in ATTN_OPS]
    return Trace(m, context - 1, 1, ops, meta={"generator": "lowbit.sim.kvlop.step_trace"})


@dataclass
class Point:
    """One (model, context) of the curve; None where the simulator refused the run (`refused` says why)."""

    model: str
    context: int
    refused: str | None = None
    dense_kv_bytes: int = 0
    fixed: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    dense: dict[str, Any] | None = None


def _summary(attn: SimResult, step: SimResult | None) -> dict[str, Any]:
    lop = attn.lop
    return {"kv_read_bytes": lop["kv_read_bytes"], "lop_bytes": lop["lop_bytes"],
            "kv_reduction_x": lop["kv_reduction_x"], "kv_only_reduction_x": lop["kv_only_reduction_x"],
            "attn_cycles": attn.cycles, "row_hit_rate": attn.dram["row_hit_rate"],
            "row_misses": attn.dram["row_misses"],
            "step_tokens_per_s": step.clock_hz / step.cycles if step is not None else None}


def measure(cfg: HwConfig, m: ModelSpec, context: int) -> Point:
    """Simulate one (model, context) point: fixed-ratio and data-driven LOP (attention-only and whole step)
    and dense attention over all M keys (attention only; online softmax where one query's scores over M keys
    exceed the psum tile, lowbit.sim.tiling.attention_plan)."""
    if context > m.max_positions:
        return Point(m.name, context, refused=f"context {context} > max_positions {m.max_positions}")
    attn_tr, step_tr = step_trace(m, context, True), step_trace(m, context, False)
    sel = synthetic_step_positions(m, context, cfg.lop, seed=SEED)
    fixed = _summary(simulate(cfg, attn_tr), simulate(cfg, step_tr))
    block = [np.arange(min(cfg.lop.k, context))] * m.n_kv_heads
    contiguous = _summary(simulate(cfg, attn_tr, lop_positions={(layer, 1): block for layer in range(m.n_layers)}),
                          None)
    fixed["contiguous_attn_cycles"] = contiguous["attn_cycles"]
    fixed["contiguous_row_hit_rate"] = contiguous["row_hit_rate"]
    data = _summary(simulate(cfg, attn_tr, lop_positions=sel), simulate(cfg, step_tr, lop_positions=sel))
    dense_kv = 2 * context * m.head_dim * m.n_kv_heads * m.n_layers
    try:
        d = simulate(cfg, attn_tr, no_lop=True)
        dense = {"attn_cycles": d.cycles, "row_hit_rate": d.dram["row_hit_rate"]}
    except WorkloadError as e:  # a design whose buffers hold no attention tile
        dense = {"refused": str(e)}
    return Point(m.name, context, None, dense_kv, fixed, data, dense)


def _x(v: float | None) -> str:
    return f"{v:.2f}x" if v else "-"


def _tps(s: dict[str, Any]) -> str:
    return f"{s['step_tokens_per_s']:.2f}" if s.get("step_tokens_per_s") else "-"


def reading(points: list[Point]) -> list[str]:
    """What the measured points say (numbers taken from them)."""
    ok = [p for p in points if not p.refused]
    out = []
    nets = [p.fixed["kv_reduction_x"] for p in ok]
    out.append(f"- Net of the LO codes, the saving stays between {min(nets):.2f}x and {max(nets):.2f}x over "
               f"{min(p.context for p in ok):,}..{max(p.context for p in ok):,} keys (fixed ratio): it approaches "
               "but never reaches 2 x 8 / 4 = 4x, since the LO codes of every cached key are read each step.")
    at = [p for p in ok if p.context == PAPER["keys"]]
    for p in at:
        out.append(f"- {p.model} at M = {p.context:,}: K+V only {p.fixed['kv_only_reduction_x']:.2f}x (the paper's "
                   f"{PAPER['kv_reduction_x']}x), net of the LO codes {p.fixed['kv_reduction_x']:.2f}x fixed, "
                   f"{p.data['kv_reduction_x']:.2f}x data-driven.")
    for name in dict.fromkeys(p.model for p in ok):
        rows = [p for p in ok if p.model == name]
        more = [p.data["kv_read_bytes"] / p.fixed["kv_read_bytes"] for p in rows]
        slow = [p.fixed["attn_cycles"] / p.fixed["contiguous_attn_cycles"] - 1 for p in rows]
        dd = [p.data["attn_cycles"] / p.fixed["attn_cycles"] - 1 for p in rows]
        out.append(f"- {name}: data-driven selections read {min(more):.2f}x..{max(more):.2f}x the fixed-ratio K+V "
                   "bytes (both min(K, M) keys per KV head; only their positions differ); scattered fixed-ratio keys "
                   "take "
                   f"{100 * min(slow):+.1f} %..{100 * max(slow):+.1f} % attention cycles against the same number "
                   f"of adjacent keys; data-driven against fixed-ratio {100 * min(dd):+.1f} %..{100 * max(dd):+.1f} %.")
    return out


def render(points: list[Point], cfg: HwConfig, wall_s: float) -> str:
    out: list[str] = []
    w = out.append
    k = cfg.lop.k
    w("# KV traffic with leading-one prediction (LOP) against context length\n")
    w(f"Regenerate: `python -m lowbit.sim.kvlop --out reports/kv-lop` (hardware `{cfg.name}`, K = {k} keys per KV "
      f"head, {cfg.lop.buckets} buckets; {wall_s:.0f} s). One decode step with M cached keys. KV cache layout and "
      "gather rule: docs/kv-cache.md.\n")
    w("- **net** = dense K+V bytes / (K+V bytes read + LO-code bytes read): every cached key's 4-bit LO codes "
      "are read each step to score it, so the saving is capped below dense / LO codes = 2 x 8 / 4 = 4x.")
    w("- **K+V only** = dense K+V bytes / K+V bytes read (M/K for fixed-ratio selections): the paper's form. "
      f"The paper's ≈{PAPER['kv_reduction_x']}x (docs/reference/vitallm.md §3.3) is M/K at "
      f"M ≈ {PAPER['keys']:,} keys for K = 32 (the 1,755 row).")
    w("- **fixed** = fixed-ratio LOP: min(K, M) keys per KV head spread evenly over the context (design "
      "assumption, lowbit/sim/kvcache.py). **data** = data-driven LOP: lowbit.sim.lop_select's rule (INT8 "
      "absmax, LO scores summed over the query heads sharing a KV head, one comparison-free top-K per KV head) "
      f"on synthetic q/k (lop_select.synthetic_step_positions, seed {SEED}; no captured q/k of these models is "
      "available here). Both fetch min(K, M) keys per KV head; they differ in which positions, so in DRAM "
      "row hits and cycles.")
    w("- cycles and row hits are of the attention-only step (rope, kv_append, LOP, QK^T, softmax, score.V); "
      "tok/s is the whole decode step (projections included, lm_head on the host). Dense attention reads all M "
      "keys; where one query's scores over M keys exceed the psum tile it runs with online softmax over key "
      "blocks (lowbit.sim.tiling.attention_plan).\n")
    for name in dict.fromkeys(p.model for p in points):
        rows = [p for p in points if p.model == name]
        w(f"## {name}\n")
        w("| M | dense K+V bytes | K+V read fixed / data | LO-code bytes | net fixed | net data | K+V only fixed "
          "| K+V only data | attn cycles dense / contiguous / fixed / data | row-hit rate contiguous / fixed / data "
          "| step tok/s fixed / data |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        for p in rows:
            if p.refused:
                w(f"| {p.context:,} | refused: {p.refused} |||||||||| ")
                continue
            f, d, dn = p.fixed, p.data, p.dense
            dense_c = f"{dn['attn_cycles']:,}" if "attn_cycles" in dn else "psum"
            w(f"| {p.context:,} | {p.dense_kv_bytes:,} | {f['kv_read_bytes']:,} / {d['kv_read_bytes']:,} | "
              f"{f['lop_bytes']:,} | {_x(f['kv_reduction_x'])} | {_x(d['kv_reduction_x'])} | "
              f"{_x(f['kv_only_reduction_x'])} | {_x(d['kv_only_reduction_x'])} | {dense_c} / "
              f"{f['contiguous_attn_cycles']:,} / {f['attn_cycles']:,} / {d['attn_cycles']:,} | "
              f"{100 * f['contiguous_row_hit_rate']:.1f} % / {100 * f['row_hit_rate']:.1f} % / "
              f"{100 * d['row_hit_rate']:.1f} % | {_tps(f)} / {_tps(d)} |")
        w("")
    w("## Reading\n")
    out.extend(reading(points))
    w("")
    return "\n".join(out)


def plot(points: list[Point], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    # the first model's points are drawn large and hollow: where two models coincide both stay visible
    for i, name in enumerate(dict.fromkeys(p.model for p in points)):
        ok = [p for p in points if p.model == name and not p.refused]
        ms = [p.context for p in ok]
        st = dict(marker="os"[i % 2], ms=10 if i == 0 else 5, mfc="none" if i == 0 else None)
        ax.plot(ms, [p.fixed["kv_only_reduction_x"] for p in ok], "--", label=f"{name}: K+V only, fixed", **st)
        ax.plot(ms, [p.data["kv_only_reduction_x"] for p in ok], ":", label=f"{name}: K+V only, data", **st)
        ax.plot(ms, [p.fixed["kv_reduction_x"] for p in ok], "-", label=f"{name}: net of LO codes, fixed", **st)
        ax.plot(ms, [p.data["kv_reduction_x"] for p in ok], "-.", label=f"{name}: net of LO codes, data", **st)
    ax.plot([PAPER["keys"]], [PAPER["kv_reduction_x"]], "k*", ms=12, label="paper: 54.86x (K+V), M ≈ 1,755")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("cached keys M (context)")
    ax.set_ylabel("KV traffic reduction vs dense (x)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build(out: Path, models: tuple[str, ...] = MODELS, contexts: tuple[int, ...] = CONTEXTS,
          hw: str = HW) -> list[Point]:
    """Simulate every point and write README.md, kv-lop.json and kv-lop.png into `out` (atomically)."""
    t0 = time.perf_counter()
    cfg = load_config(hw)
    specs = [resolve_model(n) for n in models]
    with atomic_dir(out, overwrite=True) as tmp:  # an unwritable `out` fails here, before the simulations
        points = [measure(cfg, m, c) for m in specs for c in contexts]
        wall = time.perf_counter() - t0
        (tmp / "README.md").write_text(render(points, cfg, wall))
        (tmp / "kv-lop.json").write_text(json.dumps([vars(p) for p in points], indent=1) + "\n")
        plot(points, tmp / "kv-lop.png")
    return points


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lowbit.sim.kvlop", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reports/kv-lop", help="output directory (default reports/kv-lop)")
    args = ap.parse_args(argv)
    try:
        build(Path(args.out))
    except LowbitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}/README.md, kv-lop.json, kv-lop.png")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
