"""`lowbit bench-gpu`: the GPU baseline benchmark (models/gpu/bench.py). Heavy imports stay inside the command."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("bench-gpu")
    def bench_gpu(
        out_json: Path = typer.Option(Path("reports/gpu-baseline.json"), help="results JSON (schema in models/gpu/bench.py)"),
        out_md: Path = typer.Option(Path("reports/gpu-baseline.md"), help="markdown report"),
        quick: bool = typer.Option(False, help="one model, batches 1 and 64, 4k attention, two decode configs"),
        sections: str = typer.Option("linear,attention,decode", help="comma-separated subset to run"),
    ) -> None:
        """Benchmark the Triton ternary/FP4/LOP kernels against torch bf16 on this CUDA GPU."""
        from lowbit.sim.errors import LowbitError

        try:
            import torch
        except ImportError as e:
            raise LowbitError("bench-gpu needs torch and triton: pip install -e '.[gpu]'") from e
        if not torch.cuda.is_available():
            raise LowbitError("bench-gpu needs a CUDA GPU (torch.cuda.is_available() is False); run it on a GPU machine")
        from .bench import run_all

        run_all(out_json, out_md, quick, sections, log=lambda s: print(s, flush=True))
