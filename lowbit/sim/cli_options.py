"""The flags every lowbit command shares, and the workload they build.

Flag conventions (every package's commands use the helpers below):
    --hw NAME|FILE   a hardware preset or a .toml file
    --set K=V        a config override after --hw (repeatable), wherever --hw is taken
    --json PATH      a JSON file to write (`-`: standard output)
    --out DIR        an output directory; the command chooses the file names inside it
    --seed N         the random seed of a command that draws random data
Imports nothing heavy at module level: `lowbit --help` stays fast.
"""

from __future__ import annotations

import inspect
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from lowbit.sim.atomic import atomic_write
from lowbit.sim.config import list_presets
from lowbit.sim.errors import LowbitError, WorkloadError
from lowbit.sim.modelspec import MODELS
from lowbit.sim.schema import Range, option_int, option_int_list

TOKENS = Range(0, 2**20, "tokens", why="at most a 1,048,576-token context")

DEFAULT_MODEL = "bitnet-b1.58-3b"


def hw_help() -> str:
    return f"hardware preset ({', '.join(list_presets())}; see `lowbit config list`) or a .toml file"


def hw_option(default: Any = "vitallm", *, repeat: bool = False) -> Any:
    """`--hw NAME|FILE`, the same help text on every command."""
    return typer.Option(default, "--hw", metavar="NAME|FILE",
                        help=hw_help() + ("; repeat for several designs" if repeat else ""))


def set_option() -> Any:
    """`--set SECTION.FIELD=VALUE`, repeatable: config overrides applied after --hw (lowbit.sim.config.apply_sets)."""
    return typer.Option([], "--set", metavar="SECTION.FIELD=VALUE",
                        help="override a config field, typed as the field and validated like the file "
                             "(e.g. --set tint.lanes=8 --set sram.kv.bytes=32768); repeatable")


def json_option(what: str) -> Any:
    """`--json PATH`: always a file to write; `-` writes to standard output."""
    return typer.Option(None, "--json", metavar="PATH", help=f"write {what} as JSON to PATH (`-`: standard output)")


def out_option(default: Any, what: str) -> Any:
    """`--out DIR`: always an output directory."""
    return typer.Option(default, "--out", metavar="DIR", help=f"output directory ({what})")


def seed_option(default: int = 0) -> Any:
    return typer.Option(default, "--seed", help="random seed")


def check_out_dir(out: Path) -> Path:
    """An --out value must name a directory (existing or not), never an existing file."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LowbitError(f"--out {out}: is a file; --out takes a directory")
    return out


def write_json(path: Path, text: str) -> None:
    """Write JSON text to a file (temp file + rename) or, for `-`, to standard output."""
    if str(path) == "-":
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        atomic_write(path, text)


def console():
    from rich.console import Console

    return Console()


def build_trace(model: str | None, trace_dir: Path | None, prefill: int, decode: int, cfg,
                weights: str | None):
    """The workload: a trace directory, or the standard shapes-only trace of `model` (a built-in shape, a
    config.json preset or a config.json path); `weights` (--weights) is the deployed format of either."""
    from lowbit.sim.modelspec import WEIGHT_FORMATS, get_model
    from lowbit.sim.workloads import deployed_format, standard_trace, with_weights

    if weights is not None and weights not in WEIGHT_FORMATS:
        raise WorkloadError(f"--weights {weights}: unknown weight format; allowed: {', '.join(WEIGHT_FORMATS)}")
    if trace_dir is not None:
        from lowbit.sim.trace_load import load_trace

        tr = load_trace(trace_dir)
        if model is not None and model != tr.model.name:
            raise WorkloadError(f"--model {model} disagrees with the trace's model '{tr.model.name}'; drop --model")
        return with_weights(tr, weights) if weights else tr
    if prefill < 0 or decode < 0:
        raise WorkloadError(f"--prefill {prefill} --decode {decode}: must be >= 0")
    for name, v in (("--prefill", prefill), ("--decode", decode)):
        option_int(name, v, TOKENS)
    m = get_model(model or DEFAULT_MODEL)
    return standard_trace(m, prefill, decode, deployed_format(cfg, m, weights))


@dataclass(frozen=True)
class WorkloadArgs:
    """The workload options every command that simulates or compiles a workload takes (`workload_options`):
    a model or a trace directory, prompt and decode lengths, a batch of sequences, chunked prefill and the
    deployed weight format. `prefill`/`decode` are None when not given (defaults 64 / 128)."""

    model: str | None = None
    trace: Path | None = None
    prefill: int | None = None
    decode: int | None = None
    batch: int = 1
    prefill_chunk: int | None = None
    cached: str = ""
    weights: str | None = None

    def build(self, cfg):
        """The Trace: build_trace, then the batch (--batch/--cached) and chunked prefill (--prefill-chunk),
        each refused with one line where it does not apply."""
        tr = build_trace(self.model, self.trace, 64 if self.prefill is None else self.prefill,
                         128 if self.decode is None else self.decode, cfg, self.weights)
        if self.batch != 1 or self.cached:
            from lowbit.sim.workloads import batch_from_options

            tr = batch_from_options(tr, self.trace is not None, self.batch,
                                    option_int_list("--cached", self.cached, TOKENS, 4096) if self.cached else None)
        if self.prefill_chunk is not None:
            from lowbit.sim.workloads import chunked_prefill

            option_int("--prefill-chunk", self.prefill_chunk, Range(1, 2**20, "tokens"))
            tr = chunked_prefill(tr, self.trace is not None, self.prefill_chunk)
        return tr

    def shape_flags(self) -> list[str]:
        """The options given that shape a --model/--trace workload (a compiled program carries its own)."""
        given = {"--prefill": self.prefill is not None, "--decode": self.decode is not None,
                 "--batch": self.batch != 1, "--cached": bool(self.cached),
                 "--prefill-chunk": self.prefill_chunk is not None, "--weights": self.weights is not None}
        return [k for k, v in given.items() if v]


def _workload_params() -> list[inspect.Parameter]:
    """The typer options of WorkloadArgs, declared once for every command that takes a workload."""
    models = ", ".join(MODELS)
    opts: list[tuple[str, Any, Any]] = [
        ("model", str | None, typer.Option(None, "--model", metavar="NAME|CONFIG", help=f"model: a built-in shape ({models}; default {DEFAULT_MODEL}), a config.json preset (`lowbit models list`) or a Hugging Face config.json file or directory")),
        ("trace", Path | None, typer.Option(None, "--trace", metavar="DIR", help="trace directory (instead of --model)")),
        ("prefill", int | None, typer.Option(None, "--prefill", show_default=False, help="prompt tokens (default 64)")),
        ("decode", int | None, typer.Option(None, "--decode", show_default=False, help="generated tokens (default 128)")),
        ("batch", int, typer.Option(1, "--batch", help="sequences decoded together, each with --prefill and --decode (weights fetched once per step for all)")),
        ("prefill_chunk", int | None, typer.Option(None, "--prefill-chunk", help="prefill the prompt in steps of this many tokens (chunked prefill: bounds memory for long prompts; default: one step)")),
        ("cached", str, typer.Option("", "--cached", metavar="N,N,...", help="tokens already in each sequence's KV cache, one per sequence (sets --batch), e.g. '512,2048' with --prefill 0")),
        ("weights", str | None, typer.Option(None, "--weights", help="deployed weight format of the projections (ternary, int8, nvfp4, mxfp4; bf16 where a unit runs it), for --model and --trace; default: the design's FP4 format on an FP4-only design, else the model's own")),
    ]
    return [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=o, annotation=t) for n, t, o in opts]


def workload_options(fn: Any) -> Any:
    """Decorator for a typer command with a `workload: WorkloadArgs` parameter: the command line gets the
    workload options (`_workload_params`) in its place and the command one WorkloadArgs of their values."""
    import typing

    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn, localns={"WorkloadArgs": WorkloadArgs})  # postponed annotations resolved
    extra = _workload_params()
    names = [p.name for p in extra]
    params: list[inspect.Parameter] = []
    for p in sig.parameters.values():
        if p.name == "workload":
            params += extra
            continue
        params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation)))

    def command(**kw: Any) -> Any:
        return fn(workload=WorkloadArgs(**{n: kw.pop(n) for n in names}), **kw)

    command.__name__, command.__doc__, command.__module__ = fn.__name__, fn.__doc__, fn.__module__
    command.__signature__ = sig.replace(parameters=params, return_annotation=None)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


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
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            # on stderr: standard output may be the JSON result (`--json -`)
            self.bar = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TextColumn("layer-steps"),
                                TimeElapsedColumn(), transient=True, console=Console(stderr=True))
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total)
        self.bar.update(self.task, completed=done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
