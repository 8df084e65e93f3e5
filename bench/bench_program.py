"""Program size and speed (lowbit.sim.program): compile BitNet-3B 64 + 128 on vitallm into a program file, run
it, and simulate the same workload from its trace; every phase in a fresh process so that its peak resident
set (VmHWM) is its own. Writes bench/results-program.md.

    python bench/bench_program.py [--model M] [--hw H] [--prefill P] [--decode D] [--out bench/results-program.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from lowbit.sim.config import load_config
from lowbit.sim.workloads import standard_trace
kind, model, hw, P, D, path = sys.argv[1:7]
cfg = load_config(hw)
tr = standard_trace(model, int(P), int(D))
c0, t0 = time.process_time(), time.perf_counter()
if kind == "compile":
    from lowbit.sim.compile import compile_program
    st = compile_program(cfg, tr, path)
    out = {"bytes": st.bytes, "steps": st.steps, "chunks": st.chunks, "blocks": st.blocks,
           "instructions": st.instructions}
else:
    if kind == "run":
        from lowbit.sim.compile import run_program
        r = run_program(cfg, path)
    else:
        from lowbit.sim.engine import simulate
        r = simulate(cfg, tr)
    d = r.to_dict()
    d.pop("timing")
    out = {"result": d}
out["cpu_s"] = time.process_time() - c0
out["wall_s"] = time.perf_counter() - t0
out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def child(kind: str, args: argparse.Namespace, path: str) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, kind, args.model, args.hw, str(args.prefill), str(args.decode),
                        path], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bitnet-b1.58-3b")
    ap.add_argument("--hw", default="vitallm")
    ap.add_argument("--prefill", type=int, default=64)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--out", default="bench/results-program.md")
    a = ap.parse_args()
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "prog.bin")
        comp = child("compile", a, path)
        run = child("run", a, path)
        sim = child("simulate", a, path)
    load1 = os.getloadavg()
    same = run["result"] == sim["result"]
    res = sim["result"]
    lines = [
        "# Program size and speed (bench/bench_program.py)\n",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}. Load average "
        f"(1/5/15 min) before / after: {'/'.join(f'{x:.1f}' for x in load0)} / {'/'.join(f'{x:.1f}' for x in load1)} "
        "(wall times are inflated by the load; CPU seconds are the process's own). Each phase runs in a fresh "
        "process; peak RSS is its VmHWM.\n",
        f"Workload: {a.model}, {a.prefill}-token prefill + {a.decode} decode tokens on `{a.hw}` (shapes-only "
        "trace, K/M LOP).\n",
        "| quantity | value |", "|---|---|",
        f"| program file | {comp['bytes']:,} bytes ({comp['bytes'] / 2**20:.1f} MiB) |",
        f"| instructions | {comp['instructions']:,} in {comp['chunks']:,} chunks of {comp['steps']} steps |",
        f"| instruction blocks stored | {comp['blocks']:,} (a chunk equal to a held block up to its DRAM bases "
        "places it instead) |",
        f"| bytes per instruction | {comp['bytes'] / comp['instructions']:.2f} (64 per stored INSTR word) |",
        f"| compile (lower + assign + encode + write) | {comp['wall_s']:.1f} s wall, {comp['cpu_s']:.1f} s CPU, "
        f"peak RSS {comp['peak_rss_mib']:.0f} MiB |",
        f"| run the program (read + decode + schedule) | {run['wall_s']:.1f} s wall, {run['cpu_s']:.1f} s CPU, "
        f"peak RSS {run['peak_rss_mib']:.0f} MiB |",
        f"| simulate from the trace (lower + schedule) | {sim['wall_s']:.1f} s wall, {sim['cpu_s']:.1f} s CPU, "
        f"peak RSS {sim['peak_rss_mib']:.0f} MiB |",
        f"| program run = trace run (whole SimResult) | {'yes' if same else 'NO'}: {res['cycles']:,} cycles, "
        f"{res['decode_tokens_per_s']:.2f} tok/s, prefill {res['prefill_latency_s']:.4f} s |",
        "",
        "Memory stays bounded: the writer and the reader hold at most 4 instruction blocks and one chunk "
        "(lowbit.sim.program_io), whatever the number of steps.",
    ]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
