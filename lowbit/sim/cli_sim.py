"""`lowbit sim` and `lowbit validate`: run the cycle-level simulator from the command line.

Registered through sim.cli.REGISTRARS; imports nothing heavy at module level (numba loads inside commands).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from lowbit.sim.atomic import atomic_write
from lowbit.sim.errors import LowbitError, WorkloadError


def weight_format_for(cfg) -> str | None:
    """Default weight format of a design: its FP4 format when it has an FP4 core and no TINT core."""
    if cfg.has("fp4") and not cfg.has("tint"):
        return cfg.fp4.format
    return None


def build_trace(model: str | None, trace_dir: Path | None, prefill: int, decode: int, cfg,
                weights: str | None):
    """The workload: a trace directory, or the standard shapes-only trace of `model`."""
    from lowbit.sim.workloads import standard_trace

    if trace_dir is not None:
        from lowbit.sim.trace import load_trace

        tr = load_trace(trace_dir)
        if model is not None and model != tr.model.name:
            raise WorkloadError(f"--model {model} disagrees with the trace's model '{tr.model.name}'; drop --model")
        return tr
    if prefill < 0 or decode < 0:
        raise WorkloadError(f"--prefill {prefill} --decode {decode}: must be >= 0")
    return standard_trace(model or "bitnet-b1.58-3b", prefill, decode, weights or weight_format_for(cfg))


class _Progress:
    """A rich progress bar that appears only once a run has taken longer than one second."""

    def __init__(self, label: str):
        self.t0 = time.perf_counter()
        self.bar: Any = None
        self.task = None
        self.label = label

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            if time.perf_counter() - self.t0 < 1.0:
                return
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TextColumn("layer-steps"),
                                TimeElapsedColumn(), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total)
        self.bar.update(self.task, completed=done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def print_summary(r, timeline_note: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    c = Console()
    t = Table(title=f"lowbit sim: {r.model} on {r.hw} ({r.schedule}), prefill {r.prefill_tokens} + decode {r.decode_tokens}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("decode tokens/s", f"{r.decode_tokens_per_s:.2f}" if r.decode_tokens_per_s else "-")
    t.add_row("prefill latency", f"{r.prefill_latency_s:.4f} s" if r.prefill_latency_s is not None else "-")
    t.add_row("total cycles", f"{r.cycles:,}")
    t.add_row("prefill / decode cycles", f"{r.prefill_cycles:,} / {r.decode_cycles:,}")
    for k, v in r.utilization.items():
        t.add_row(f"utilization {k}", f"{100 * v:.1f} %")
    for k, v in r.dram_bytes.items():
        t.add_row(f"DRAM bytes {k}", f"{v:,}")
    t.add_row("DRAM row-hit rate", f"{100 * r.dram.get('row_hit_rate', 0):.1f} %")
    if r.lop["enabled"]:
        red = r.lop["kv_reduction_x"]
        t.add_row("LOP K / data-driven", f"{r.lop['k']} / {r.lop['data_driven']}")
        t.add_row("KV bytes saved by LOP", f"{r.lop['kv_bytes_saved']:,}" + (f" ({red:.2f}x less KV)" if red else ""))
        t.add_row("LO-code bytes read", f"{r.lop['lop_bytes']:,}")
    else:
        t.add_row("LOP", "off")
    for unit, d in r.stalls.items():
        if d:
            t.add_row(f"stalls {unit}", ", ".join(f"{k} {v:,}" for k, v in d.items()))
    t.add_row("lm_head", f"{r.lm_head['placement']} ({r.lm_head['macs']:,} MACs excluded)"
              if r.lm_head["placement"] == "host" else "accelerator")
    t.add_row("instructions / wall", f"{r.instructions:,} / {r.wall_s:.1f} s")
    c.print(t)
    for n in r.notes + ([timeline_note] if timeline_note else []):
        c.print(f"[dim]note: {n}[/dim]")


def register(app: typer.Typer) -> None:
    @app.command("sim")
    def sim_cmd(
        model: str | None = typer.Option(None, "--model", help="model name (default bitnet-b1.58-3b)"),
        hw: str = typer.Option("vitallm", "--hw", help="hardware preset or a .toml file"),
        prefill: int = typer.Option(64, "--prefill", help="prompt tokens"),
        decode: int = typer.Option(128, "--decode", help="generated tokens"),
        trace: Path | None = typer.Option(None, "--trace", help="trace directory (instead of --model)"),
        schedule: str = typer.Option("dependency-aware", "--schedule", help="inorder | dependency-aware"),
        lop_k: int | None = typer.Option(None, "--lop-k", help="LOP top-K (default: lop.k of the config)"),
        no_lop: bool = typer.Option(False, "--no-lop", help="dense attention (LOP off)"),
        weights: str | None = typer.Option(None, "--weights", help="weight format override for --model"),
        json_out: Path | None = typer.Option(None, "--json", help="write the result as JSON"),
        timeline: Path | None = typer.Option(None, "--timeline", help="write a Chrome/Perfetto trace"),
        timeline_events: int = typer.Option(200_000, "--timeline-events", help="cap on timeline events"),
        quiet: bool = typer.Option(False, "--quiet", help="no summary table"),
    ) -> None:
        """Simulate a workload cycle by cycle and print throughput, utilisation, stalls and DRAM traffic."""
        from lowbit.sim.config import load_config
        from lowbit.sim.engine import Timeline, simulate, unit_list

        cfg = load_config(hw)
        if schedule not in ("inorder", "dependency-aware"):
            raise LowbitError(f"--schedule {schedule}: must be 'inorder' or 'dependency-aware'")
        if timeline_events <= 0:
            raise LowbitError(f"--timeline-events {timeline_events}: must be > 0")
        tr = build_trace(model, trace, prefill, decode, cfg, weights)
        tl = Timeline([n for n, _ in unit_list(cfg)], cfg.clock_hz, timeline_events) if timeline else None
        prog = _Progress("simulating")
        try:
            r = simulate(cfg, tr, schedule=schedule, lop_k=lop_k, no_lop=no_lop, progress=prog, timeline=tl)
        finally:
            prog.close()
        note = ""
        if tl is not None:
            data = tl.to_json()
            note = f"timeline: {len(tl.events):,} events, {data['otherData']['lowbit']}"
            atomic_write(timeline, json.dumps(data))
        if json_out is not None:
            atomic_write(json_out, r.to_json())
        if not quiet:
            print_summary(r, note)

    @app.command("validate")
    def validate_cmd(
        design: str = typer.Argument(..., help="design family to validate (vitallm)"),
        out: Path = typer.Option(Path("reports/validation-vitallm.md"), "--out", help="report file"),
        decode: int = typer.Option(128, "--decode", help="decode tokens of the headline run"),
        contexts: str = typer.Option("128,512,1024,2048", "--contexts", help="LOP ablation context lengths"),
    ) -> None:
        """Simulate the paper's workloads and write a validation report (parameters, results, ablations)."""
        if design != "vitallm":
            raise LowbitError(f"unknown design '{design}' to validate; available: vitallm")
        try:
            ctx = [int(x) for x in contexts.split(",") if x.strip()]
        except ValueError:
            raise LowbitError(f"--contexts {contexts!r}: must be comma-separated integers") from None
        if decode <= 0 or not ctx or min(ctx) <= 1:
            raise LowbitError("--decode must be > 0 and --contexts must list lengths > 1")
        from lowbit.sim.validation import build_report

        prog = _Progress("validating")
        try:
            text = build_report(decode=decode, contexts=ctx, progress=prog)
        finally:
            prog.close()
        atomic_write(out, text)
        print(f"wrote {out}")
