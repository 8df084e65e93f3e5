"""Simulator speed benchmark -> bench/results-sim.md.

Headline: BitNet b1.58 3B on `vitallm`, 64-token prefill + 128 decode steps, dependency-aware schedule,
data-driven LOP selection from q/k tensors. No captured 3B trace with tensors is assumed to exist, so the
trace carries synthetic q/k/v written with sim.trace.write_trace (sim.lop_select.synthetic_qk_trace:
structured random keys with "topics" and attention sinks, deterministic seed 0).
Also: wall time vs decode length (shapes-only traces, prefill 0) and vs context length (one decode step at
context M, LOP on and off), with the peak Python/numpy heap (tracemalloc) of each run.

Usage: .venv/bin/python bench/bench_sim.py [--quick] [--out bench/results-sim.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import tracemalloc
from pathlib import Path

from sim.config import load_config
from sim.engine import simulate
from sim.lop_select import synthetic_qk_trace
from sim.report_validation import decode_step_trace
from sim.trace import load_trace
from sim.workloads import standard_trace

MODEL = "bitnet-b1.58-3b"
TRACE_MEM = False  # set per series: tracemalloc slows allocation-heavy Python, so the headline runs without it


def timed(fn):
    tracemalloc.start() if TRACE_MEM else None
    t = time.perf_counter()
    r = fn()
    dt = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1] if TRACE_MEM else 0
    if TRACE_MEM:
        tracemalloc.stop()
    return r, dt, peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="decode 16 instead of 128 (smoke run)")
    ap.add_argument("--out", default="bench/results-sim.md")
    a = ap.parse_args()
    decode = 16 if a.quick else 128
    cfg = load_config("vitallm")
    lines: list[str] = []
    w = lines.append

    t = time.perf_counter()
    simulate(load_config("tiny"), standard_trace("bitnet-tiny", 2, 1))  # numba compile / cache load
    warm = time.perf_counter() - t

    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        path = synthetic_qk_trace(MODEL, 64, decode, Path(d) / "tr", seed=0)
        gen = time.perf_counter() - t
        t = time.perf_counter()
        tr = load_trace(path)
        load = time.perf_counter() - t
        r, wall, peak = timed(lambda: simulate(cfg, tr, "dependency-aware"))
    global TRACE_MEM
    TRACE_MEM = True
    print(f"headline: {wall:.1f} s, {r.cycles / wall / 1e6:.1f} M cycles/s, {r.decode_tokens_per_s:.2f} tok/s")

    w("# Simulator speed (bench/bench_sim.py)\n")
    w(f"Load average at the end of the headline run: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
      "(1/5/15 min).\n")
    w(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared with other jobs; "
      "timings vary with load), Python " + platform.python_version() + ".\n")
    w(f"## Headline: BitNet-3B, 64-token prefill + {decode} decode, data-driven LOP\n")
    w("Trace: synthetic q/k/v tensors (sim.lop_select.synthetic_qk_trace, seed 0) written with "
      "sim.trace.write_trace, so LOP selects keys from real top-K over LO scores (sim.lop_select). "
      "Schedule: dependency-aware; DRAM: LPDDR5X bank/row/refresh model.\n")
    w("| quantity | value |")
    w("|---|---|")
    w(f"| simulate() wall time (includes LOP selection, lowering, scheduling) | **{wall:.1f} s** |")
    tm = r.timing
    core = tm["lower_s"] + tm["schedule_s"]
    w(f"| of which data-driven LOP selection (sim.lop_select) | {tm['lop_select_s']:.1f} s |")
    w(f"| of which simulator core: lowering + scheduling | {core:.1f} s ({tm['lower_s']:.1f} + {tm['schedule_s']:.1f}) |")
    w(f"| simulated cycles | {r.cycles:,} |")
    w(f"| simulated cycles per wall second of the simulator core | **{r.cycles / core / 1e6:.1f} M/s** |")
    w(f"| simulated cycles per wall second | **{r.cycles / wall / 1e6:.1f} M/s** |")
    w(f"| tile instructions scheduled | {r.instructions:,} ({r.instructions / wall / 1e6:.2f} M/s) |")
    w(f"| decode tokens/s (simulated) | {r.decode_tokens_per_s:.2f} |")
    w(f"| prefill latency (simulated) | {r.prefill_latency_s:.3f} s |")
    w(f"| LOP data-driven | {r.lop['data_driven']} (KV reduction {r.lop['kv_reduction_x']:.2f}x over the run) |")
    w(f"| numba compile/cache load (first call, excluded) | {warm:.1f} s |")
    w(f"| synthetic trace generation / load_trace (excluded) | {gen:.1f} s / {load:.1f} s |")
    w(f"\nGoals: <= 30 s wall and >= 1e7 simulated cycles/s: "
      f"{'met' if wall <= 30 else 'NOT met'} / {'met' if r.cycles / wall >= 1e7 else 'NOT met'} on this run "
      f"(simulator core alone: {core:.1f} s). The data-driven selection (sim.lop_select, another area) "
      "calls lop_topk once per (layer, step, KV head); batching it over KV heads is the remaining lever.\n")

    w("## Wall time vs decode length (shapes-only trace, prefill 0, K/M LOP)\n")
    w("| decode steps | wall s | s/step | simulated cycles | M cycles/s | peak heap MiB |")
    w("|---|---|---|---|---|---|")
    for n in ((4, 8, 16) if a.quick else (16, 32, 64, 128)):
        trn = standard_trace(MODEL, 0, n)  # built outside the timed region: the heap figure is the simulator's
        rr, dt, pk = timed(lambda trn=trn: simulate(cfg, trn))
        w(f"| {n} | {dt:.2f} | {dt / n:.3f} | {rr.cycles:,} | {rr.cycles / dt / 1e6:.1f} | {pk / 2**20:.0f} |")
        print("decode", n, dt)
    w("\n## Wall time vs context length (one decode step at context M)\n")
    w("| M | LOP | wall s | instructions | simulated cycles | peak heap MiB |")
    w("|---|---|---|---|---|---|")
    for m in (256, 512, 1024, 2048):
        for lop in (True, False):
            tr1 = decode_step_trace(MODEL, m)
            rr, dt, pk = timed(lambda tr1=tr1, lop=lop: simulate(cfg, tr1, no_lop=not lop))
            w(f"| {m} | {'on' if lop else 'off'} | {dt:.2f} | {rr.instructions:,} | {rr.cycles:,} | {pk / 2**20:.0f} |")
            print("context", m, lop, dt)
    w("\nReading: wall time is linear in the number of decode steps (constant s/step: every step is lowered "
      "and scheduled in per-layer chunks, so the heap does not grow with the number of steps) and grows "
      "mildly with context (LO-code chunks with LOP; K/V chunks without), i.e. linearly in M through the KV "
      "metadata of the current step only. Speed levers used: per-layer instruction blocks cached by "
      "signature (identical layers lowered once per step), vectorised projection tiling, a numba list "
      "scheduler and numba counter folding; most scheduler time is spent in the LPDDR model per DMA.")
    text = "\n".join(lines) + "\n"
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
