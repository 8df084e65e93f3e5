"""`lowbit` command line. Starts without torch, amaranth or triton: heavy imports happen inside commands.

Each area adds its commands through a `register(app)` function in its own module (REGISTRARS); such a
module must import nothing heavy at module level.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import typer

from lowbit.sim.errors import LowbitError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="lowbit: co-design toolkit for low-bit (ternary, FP4) LLM accelerators.")
config_app = typer.Typer(no_args_is_help=True, help="Hardware configs and presets.")
trace_app = typer.Typer(help="Capture a trace from PyTorch (`lowbit trace --model ...`) or inspect one (`info`).")
app.add_typer(config_app, name="config")
app.add_typer(trace_app, name="trace", invoke_without_command=True)

REGISTRARS = ("lowbit.sim.cli_sim", "lowbit.rtl.cli", "lowbit.rtl.cli_synth", "lowbit.models.cli", "lowbit.models.gpu.cli", "lowbit.models.cli_extra")


def console():
    from rich.console import Console

    return Console()


@config_app.command("show")
def config_show(name: str = typer.Argument(..., help="preset name (see `lowbit config list`) or a .toml file"),
                as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table")) -> None:
    """Print a hardware config with its derived throughput figures."""
    from lowbit.sim.config import load_config, to_dict

    cfg = load_config(name)
    data = to_dict(cfg)
    if as_json:
        print(json.dumps(data, indent=1))
        return
    from rich.table import Table

    t = Table(title=f"{cfg.name}: {cfg.description}", show_lines=False)
    t.add_column("field")
    t.add_column("value")

    def walk(prefix: str, v) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else k, x)
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for i, x in enumerate(v):
                walk(f"{prefix}[{i}]", x)
        else:
            t.add_row(prefix, str(v))

    walk("", {k: v for k, v in data.items() if k not in ("name", "description")})
    t.add_row("[b]derived[/b] ternary MAC/cycle (TINT + BoothFlex)",
              str((cfg.tint.macs_per_cycle if cfg.has("tint") else 0) + (cfg.booth.ternary_macs_per_cycle if cfg.has("booth") else 0)))
    t.add_row("[b]derived[/b] FP4 MAC/cycle", str(cfg.fp4.macs_per_cycle))
    t.add_row("[b]derived[/b] on-chip SRAM", f"{cfg.sram_bytes / 1024:.1f} KiB")
    t.add_row("[b]derived[/b] DRAM peak bandwidth", f"{cfg.dram.peak_bytes_per_s / 1e9:.2f} GB/s")
    console().print(t)


@config_app.command("list")
def config_list() -> None:
    """List the built-in hardware presets."""
    from lowbit.sim.config import list_presets, load_config

    for p in list_presets():
        print(f"{p:14s} {load_config(p).description}")


@trace_app.callback()
def trace_main(
    ctx: typer.Context,
    model: str | None = typer.Option(None, "--model", help="model preset name or a Hugging Face model directory"),
    prefill: int = typer.Option(64, "--prefill", help="prompt tokens"),
    decode: int = typer.Option(16, "--decode", help="generated tokens (0 for encoder models, which have no decode)"),
    out: Path | None = typer.Option(None, "--out", help="output trace directory (must not exist)"),
    tensors: bool = typer.Option(False, "--tensors", help="also store post-RoPE k/v of every step and q of decode steps (per layer, per head; for LOP selection)"),
    seed: int = typer.Option(0, "--seed", help="random seed for randomly initialised presets"),
    weights: str | None = typer.Option(None, "--weights", help="weight format of the layer linears (ternary, int8, nvfp4, mxfp4, bf16); default: ternary for BitNet, bf16 for plain nn.Linear"),
) -> None:
    """Capture a trace from a PyTorch model (needs the [torch] extra)."""
    if ctx.invoked_subcommand is not None:
        return
    if model is None or out is None:
        raise LowbitError("`lowbit trace` needs --model NAME|DIR and --out DIR (or use `lowbit trace info DIR`)")
    if prefill <= 0 or decode < 0:
        raise LowbitError(f"--prefill {prefill} --decode {decode}: need --prefill > 0 and --decode >= 0 (0 for encoders only)")
    try:
        from lowbit.models.capture import capture_trace
    except ModuleNotFoundError as e:
        raise LowbitError(f"trace capture needs PyTorch ({e.name} is not installed): pip install 'lowbit[torch]'") from None
    path = capture_trace(model, prefill=prefill, decode=decode, out=out, tensors=tensors, seed=seed, weight_format=weights)
    print(f"wrote trace {path}")


@trace_app.command("info")
def trace_info(path: Path = typer.Argument(..., help="trace directory"),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Validate a trace directory and print a summary."""
    from lowbit.sim.trace import load_trace

    s = load_trace(path).summary()
    if as_json:
        print(json.dumps(s, indent=1))
        return
    from rich.table import Table

    t = Table(title=f"trace {path}")
    t.add_column("field")
    t.add_column("value")
    for k, v in s.items():
        t.add_row(k, ", ".join(f"{a}={b:,}" for a, b in v.items()) if isinstance(v, dict) else f"{v:,}" if isinstance(v, int) else str(v))
    console().print(t)


def _register_all() -> None:
    for mod in REGISTRARS:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and (mod == e.name or mod.startswith(e.name + ".")):
                continue  # that area is not built (yet)
            raise
        m.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors and non-zero exits, never a traceback for user errors."""
    _register_all()
    cmd = typer.main.get_command(app)
    try:
        # standalone mode: click prints usage errors itself and raises SystemExit with its code.
        cmd.main(args=argv, prog_name="lowbit", standalone_mode=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except LowbitError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
