"""`lowbit serve`: replay a request arrival list with continuous batching (lowbit.sim.serve)."""

from __future__ import annotations

from pathlib import Path

import typer

from lowbit.sim.errors import OptionError
from lowbit.sim.lower import POLICIES
from lowbit.sim.schema import Range, option_float, option_int


def _range(name: str, text: str) -> tuple[int, int]:
    """'64' or '32-128' (inclusive) -> (low, high)."""
    lo, _, hi = str(text).partition("-")
    try:
        a, b = int(lo), int(hi or lo)
    except ValueError:
        raise OptionError(f"{name} {text!r}: give a token count (64) or an inclusive range (32-128)") from None
    for v in (a, b):
        option_int(name, v, Range(1, 2**20, "tokens"))
    if a > b:
        raise OptionError(f"{name} {text!r}: the low end is above the high end")
    return a, b


def register_serve(app: typer.Typer) -> None:
    from lowbit.sim.cli import (
        DEFAULT_MODEL,
        _Progress,
        console,
        hw_option,
        json_option,
        seed_option,
        set_option,
        write_json,
    )

    @app.command("serve")
    def serve_cmd(
        model: str = typer.Option(DEFAULT_MODEL, "--model", help="model shape (lowbit sim --help lists them)"),
        hw: str = hw_option(),
        sets: list[str] = set_option(),
        requests: Path | None = typer.Option(None, "--requests", metavar="FILE", help='request list, JSON lines {"arrival_s": S, "prompt": N, "output": N} (docs/batching.md); without it a Poisson load (--rate, --n)'),
        rate: float = typer.Option(2.0, "--rate", help="Poisson load: requests per second"),
        n: int = typer.Option(32, "--n", help="Poisson load: number of requests"),
        prompt: str = typer.Option("64", "--prompt", metavar="N|LO-HI", help="Poisson load: prompt tokens (uniform in LO-HI)"),
        output: str = typer.Option("32", "--output", metavar="N|LO-HI", help="Poisson load: output tokens (uniform in LO-HI)"),
        seed: int = seed_option(),
        save_requests: Path | None = typer.Option(None, "--save-requests", metavar="FILE", help="write the replayed request list (JSON lines)"),
        max_batch: int = typer.Option(8, "--max-batch", help="most requests running at once (KV-cache slots)"),
        max_step_tokens: int | None = typer.Option(None, "--max-step-tokens", help="token budget of one step: longer prompts are prefilled in chunks (default: whole prompts)"),
        schedule: str = typer.Option("dependency-aware", "--schedule", help=" | ".join(POLICIES)),
        lop_k: int | None = typer.Option(None, "--lop-k", help="LOP top-K (default: lop.k of the config)"),
        no_lop: bool = typer.Option(False, "--no-lop", help="dense attention (LOP off)"),
        json_out: Path | None = json_option("the result"),
        quiet: bool = typer.Option(False, "--quiet", help="no summary table"),
    ) -> None:
        """Serve a request arrival list with continuous batching; print time to first token, inter-token
        latency percentiles and throughput (every step simulated cycle by cycle)."""
        from lowbit.sim.config import load_hw
        from lowbit.sim.modelspec import get_model
        from lowbit.sim.serve import load_requests, poisson_requests, serve, write_requests
        from lowbit.sim.workloads import weight_format_for

        cfg = load_hw(hw, sets)
        if schedule not in POLICIES:
            raise OptionError(f"--schedule {schedule}: must be one of {', '.join(POLICIES)}")
        if lop_k is not None:
            option_int("--lop-k", lop_k, Range(1, 2**16, "keys"))
        m = get_model(model)
        fmt = weight_format_for(cfg)
        m = m.with_format(fmt) if fmt else m
        if requests is not None:
            reqs = load_requests(requests)
        else:
            option_float("--rate", rate, Range(0, 1e6, "requests/s", lo_open=True))
            option_int("--n", n, Range(1, 100_000, "requests"))
            reqs = poisson_requests(n, rate, _range("--prompt", prompt), _range("--output", output), seed)
        prog = _Progress("serving")
        try:
            r = serve(cfg, m, reqs, max_batch=max_batch, max_step_tokens=max_step_tokens, schedule=schedule,
                      lop_k=lop_k, no_lop=no_lop, progress=prog)
        finally:
            prog.close()
        if save_requests is not None:
            write_requests(reqs, save_requests)
        if json_out is not None:
            write_json(json_out, r.to_json())
        if quiet or str(json_out) == "-":
            return
        from rich.table import Table

        t = Table(title=f"lowbit serve: {r.model} on {r.hw}, {r.requests} requests, max batch {r.max_batch}"
                        + (f", {r.max_step_tokens} tokens/step" if r.max_step_tokens else ""))
        t.add_column("metric")
        t.add_column("value", justify="right")
        t.add_row("throughput", f"{r.throughput_tokens_per_s:.2f} output tokens/s, {r.requests_per_s:.3f} requests/s")
        for what, d in (("time to first token", r.ttft_s), ("inter-token latency", r.itl_s),
                        ("end-to-end latency", r.e2e_s)):
            if d:
                t.add_row(what, " / ".join(f"{d[f'p{p}'] * 1e3:.1f}" for p in (50, 90, 99)) + " ms (p50 / p90 / p99)")
        t.add_row("steps / mean batch", f"{r.steps:,} / {r.mean_batch:.2f}")
        t.add_row("served time / accelerator busy", f"{r.duration_s:.3f} s / {100 * r.busy_fraction:.1f} %")
        t.add_row("simulated cycles / wall", f"{r.sim['cycles']:,} / {r.timing.get('wall_s', 0):.1f} s")
        console().print(t)
