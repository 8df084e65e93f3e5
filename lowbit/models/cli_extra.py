"""CLI commands `lowbit fp4-sensitivity`, `lowbit train-tiny`, `lowbit eval-tiny` (torch imported lazily)."""

from __future__ import annotations

from pathlib import Path

import typer

from lowbit.sim.errors import LowbitError


def _need_torch() -> None:
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        raise LowbitError("this command needs PyTorch: pip install 'lowbit[torch]'") from None


def register(app: typer.Typer) -> None:
    @app.command("fp4-sensitivity")
    def fp4_sensitivity_cmd(
        model: str = typer.Option(..., "--model", help="'minilm', a train-tiny checkpoint dir, a HF model dir, or a preset"),
        fmt: str = typer.Option("nvfp4", "--format", help="nvfp4, mxfp4 or both"),
        out: Path | None = typer.Option(None, "--out", help="output dir (default reports/fp4-sensitivity-<model>)"),
        sentences: int = typer.Option(64, "--sentences", help="sentences for encoder models (<= 64)"),
        windows: int = typer.Option(16, "--windows", help="eval windows for causal LMs"),
        seed: int = typer.Option(0, "--seed"),
        threads: int = typer.Option(1, "--threads", help="torch CPU threads (1 is fastest on a shared machine)"),
    ) -> None:
        """FP4 weight sensitivity per component and per block (arXiv:2603.08747 style): table + heatmap."""
        formats = ["nvfp4", "mxfp4"] if fmt == "both" else [fmt]
        from lowbit.models.fp4ptq import check_format

        for f in formats:
            check_format(f)
        if sentences < 1 or windows < 1:
            raise LowbitError(f"--sentences {sentences} --windows {windows}: both must be >= 1")
        _need_torch()
        import torch

        from lowbit.models.sensitivity import fp4_sensitivity

        torch.set_num_threads(max(1, threads))

        name = Path(model).name if Path(model).is_dir() else model
        out = out or Path("reports") / f"fp4-sensitivity-{name}"
        for p in fp4_sensitivity(model, formats, out, n_sentences=sentences, windows=windows, seed=seed):
            print(f"wrote {p}")

    @app.command("train-tiny")
    def train_tiny_cmd(
        out: Path = typer.Option(Path("out/train-tiny"), "--out", help="checkpoint dir (ternary.pt, float.pt)"),
        minutes: float = typer.Option(14.0, "--minutes", help="wall-clock cap for both trainings together"),
        steps: int = typer.Option(700, "--steps", help="planned optimiser steps"),
        batch: int = typer.Option(8, "--batch"),
        seq: int = typer.Option(256, "--seq", help="training context (<= 256)"),
        no_float: bool = typer.Option(False, "--no-float", help="skip the float baseline"),
        evaluate: bool = typer.Option(True, "--eval/--no-eval", help="evaluate held-out perplexity afterwards"),
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        """Train a tiny ternary (BitNet b1.58 QAT) byte-level LM on the Python stdlib source (+ float baseline)."""
        if minutes <= 0 or steps < 1 or batch < 1 or not 2 <= seq <= 256:
            raise LowbitError(f"--minutes {minutes} --steps {steps} --batch {batch} --seq {seq}: need minutes > 0, "
                              "steps >= 1, batch >= 1, 2 <= seq <= 256")
        _need_torch()
        from lowbit.models.train_tiny import TrainConfig, evaluate_tiny, train_tiny

        cfg = TrainConfig(steps=steps, batch=batch, seq=seq, minutes=minutes, seed=seed,
                          warmup=min(40, max(1, steps // 10)))
        meta = train_tiny(out, cfg, float_baseline=not no_float)
        print(f"wrote {out}/ternary.pt ({meta['ternary']['steps_done']} steps, {meta['total_seconds']} s)")
        if evaluate:
            evaluate_tiny(out, windows=8 if steps < 50 else 32)
            print(f"wrote {out}/eval.json")

    @app.command("eval-tiny")
    def eval_tiny_cmd(
        ckpt: Path = typer.Argument(..., help="train-tiny checkpoint dir"),
        windows: int = typer.Option(32, "--windows", help="held-out windows of 256 bytes"),
        ks: str = typer.Option("8,16,32,64,128", "--k", help="LOP top-K values"),
    ) -> None:
        """Held-out perplexity: float, ternary, ternary + LOP top-K, float + NVFP4/MXFP4 weights."""
        try:
            kk = tuple(int(x) for x in ks.split(","))
        except ValueError:
            raise LowbitError(f"--k {ks!r}: need a comma list of integers") from None
        if not ckpt.is_dir():
            raise LowbitError(f"checkpoint dir {ckpt} does not exist; run `lowbit train-tiny --out {ckpt}`")
        _need_torch()
        import torch

        from lowbit.models.train_tiny import evaluate_tiny

        torch.set_num_threads(1)
        evaluate_tiny(ckpt, kk, windows)
        print(f"wrote {ckpt}/eval.json")
