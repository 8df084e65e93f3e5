"""`lowbit config`, `lowbit trace info`, `lowbit sim`, `lowbit validate`, and the flags every command shares.

Flag conventions (every package's commands use the helpers below):
    --hw NAME|FILE   a hardware preset or a .toml file
    --set K=V        a config override after --hw (repeatable), wherever --hw is taken
    --json PATH      a JSON file to write (`-`: standard output)
    --out DIR        an output directory; the command chooses the file names inside it
    --seed N         the random seed of a command that draws random data
Imports nothing heavy at module level (numba loads inside the commands): `lowbit --help` stays fast.
"""

from __future__ import annotations

import inspect
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from lowbit.sim.atomic import atomic_write
from lowbit.sim.config import list_presets
from lowbit.sim.errors import LowbitError, WorkloadError
from lowbit.sim.lower import POLICIES
from lowbit.sim.modelspec import MODELS
from lowbit.sim.schema import Range, option_int, option_int_list
from lowbit.sim.workloads import check_workload

TOKENS = Range(0, 2**20, "tokens", why="at most a 1,048,576-token context")

DEFAULT_MODEL = "bitnet-b1.58-3b"
SIMPLE_DRAM_ONLY = ("efficiency", "latency_ns")  # DramConfig fields only the simple DRAM model reads


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


def print_summary(r, timeline_note: str = "") -> None:
    from rich.table import Table

    c = console()
    t = Table(title=f"lowbit sim: {r.model} on {r.hw} ({r.schedule}), prefill {r.prefill_tokens} + decode {r.decode_tokens}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("decode tokens/s" + (" (per sequence)" if r.batch > 1 else ""),
              f"{r.decode_tokens_per_s:.2f}" if r.decode_tokens_per_s else "-")
    if r.requests is not None:
        t.add_row("batch / decode throughput, all sequences", f"{r.batch} / {r.throughput_tokens_per_s or 0:.2f} tokens/s")
        for q in r.requests[:16]:
            t.add_row(f"sequence {q['seq']} (cached {q['context']}, prefill {q['prefill']}, decode {q['decode']})",
                      f"first token {q['first_token_s'] or 0:.4f} s, last {q['last_token_s'] or 0:.4f} s")
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
        t.add_row("KV bytes saved by LOP, net of LO-code reads", f"{r.lop['kv_bytes_saved']:,}"
                  + (f" ({red:.2f}x less KV + LO-code traffic)" if red else ""))
        t.add_row("LO-code bytes read", f"{r.lop['lop_bytes']:,}")
    else:
        t.add_row("LOP", "off")
    for unit, d in r.stalls.items():
        if d or r.idle.get(unit):
            t.add_row(f"stalls / idle {unit}", ", ".join(f"{k} {v:,}" for k, v in d.items())
                      + f"; idle {r.idle.get(unit, 0):,}")
    lm = r.lm_head
    t.add_row("lm_head", f"host ({lm['macs']:,} MACs excluded)" if lm["placement"] == "host" else
              f"on chip, {lm['placement']} weights: {lm['macs']:,} MACs, {lm['weight_bytes_per_step']:,} weight "
              f"bytes/step, {r.op_cycles.get('lm_head', 0):,} unit-busy cycles")
    t.add_row("instructions / wall", f"{r.instructions:,} / {r.wall_s:.1f} s")
    c.print(t)
    for n in r.notes + ([timeline_note] if timeline_note else []):
        c.print(f"[dim]note: {n}[/dim]")


def _sim_multichip(cfg, tr, chips: int, parallel: str, micro_batches: int, schedule: str, lop_k: int | None,
                   no_lop: bool, json_out: Path | None, quiet: bool, per_chip_views: bool) -> None:
    """`lowbit sim --chips N [--parallel tp|pp] [--micro-batches M]` (lowbit.sim.multichip)."""
    from lowbit.sim.multichip import MAX_CHIPS, PARALLEL, simulate_multichip

    option_int("--chips", chips, Range(1, MAX_CHIPS, "chips"))
    option_int("--micro-batches", micro_batches, Range(1, 4096, "sequences"))
    if parallel not in PARALLEL:
        raise LowbitError(f"--parallel {parallel}: must be one of {', '.join(PARALLEL)}")
    if per_chip_views:
        raise LowbitError("--timeline and --breakdown show one chip; drop them with --chips/--micro-batches "
                          "(or simulate one chip's share)")
    prog = _Progress("simulating")
    try:
        r = simulate_multichip(cfg, tr, chips, parallel, schedule=schedule, lop_k=lop_k, no_lop=no_lop,
                               micro_batches=micro_batches, progress=prog)
    finally:
        prog.close()
    if json_out is not None:
        write_json(json_out, r.to_json())
    if not quiet and str(json_out) != "-":
        print_multichip(r)


def print_multichip(r) -> None:
    from rich.table import Table

    c = console()
    t = Table(title=f"lowbit sim: {r.model} on {r.chips} x {r.hw} ({r.parallel}"
                    + (f", {r.micro_batches} micro-batches" if r.micro_batches > 1 else "")
                    + f"), prefill {r.prefill_tokens} + decode {r.decode_tokens}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("decode tokens/s", f"{r.decode_tokens_per_s:.2f}" if r.decode_tokens_per_s else "-")
    t.add_row("prefill latency", f"{r.prefill_latency_s:.4f} s" if r.prefill_latency_s is not None else "-")
    t.add_row("total cycles", f"{r.cycles:,}")
    t.add_row("prefill / decode cycles", f"{r.prefill_cycles:,} / {r.decode_cycles:,}")
    lk = r.link
    t.add_row("link", f"{lk['links']} x {lk['bandwidth_gbps']:g} GB/s, {lk['latency_ns']:g} ns, "
                      f"{lk['energy_pj_per_bit']:g} pJ/bit")
    t.add_row("link bytes (all links) / transfers", f"{lk['bytes']:,} / {lk['transfers']:,}")
    t.add_row("link cycles on the critical path", f"{lk['critical_path_cycles']:,} "
                                                   f"({100 * lk['critical_path_cycles'] / max(1, r.cycles):.1f} %)")
    t.add_row("link utilization (busiest link)", f"{100 * lk['utilization']:.2f} %")
    t.add_row("link energy", f"{1e6 * lk['energy_j']:.1f} µJ")
    lm = r.chip_results[-1]["lm_head"]
    where = ("" if r.chips == 1 else f", vocabulary split over {r.chips} chips" if r.parallel == "tp"
             else f", on chip {r.chips - 1}")
    t.add_row("lm_head", "host (excluded)" if lm["placement"] == "host" else f"on chip, {lm['placement']} weights{where}")
    rows: list[list] = []  # runs of chips with the same share and utilisation (tp: all of them)
    for ch in r.per_chip:
        if rows and (rows[-1][1]["share"], rows[-1][1]["utilization"]) == (ch["share"], ch["utilization"]):
            rows[-1][0].append(ch["chip"])
        else:
            rows.append([[ch["chip"]], ch])
    for ids, ch in rows:
        who = f"chip {ids[0]}" if len(ids) == 1 else f"chips {ids[0]}-{ids[-1]}, each"
        t.add_row(f"{who} ({ch['share']})", ", ".join(f"{u} {100 * v:.1f} %" for u, v in ch["utilization"].items()))
    c.print(t)
    for n in r.notes:
        c.print(f"[dim]note: {n}[/dim]")


def register(app: typer.Typer) -> None:
    """`lowbit config list|show`, `lowbit sim`, `lowbit validate`."""
    config_app = typer.Typer(no_args_is_help=True, help="Hardware configs and presets.")
    app.add_typer(config_app, name="config")

    @config_app.command("list")
    def config_list() -> None:
        """List the built-in hardware presets."""
        from lowbit.sim.config import load_config

        for p in list_presets():
            print(f"{p:14s} {load_config(p).description}")

    @config_app.command("show")
    def config_show(name: str = typer.Argument(..., metavar="NAME|FILE", help=hw_help()),
                    sets: list[str] = set_option(),
                    json_out: Path | None = json_option("the config")) -> None:
        """Print a hardware config with its derived throughput figures."""
        from lowbit.sim.config import load_hw, to_dict

        cfg = load_hw(name, sets)
        data = to_dict(cfg)
        if json_out is not None:
            write_json(json_out, json.dumps(data, indent=1) + "\n")
            if str(json_out) == "-":
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

        shown = {k: v for k, v in data.items() if k not in ("name", "description")}
        if cfg.dram.model == "lpddr":  # these two drive the simple DRAM model only (lowbit.sim.dram)
            shown["dram"] = {k: v for k, v in shown["dram"].items() if k not in SIMPLE_DRAM_ONLY}
        walk("", shown)
        if cfg.dram.model == "lpddr":
            t.add_row("dram." + " / dram.".join(SIMPLE_DRAM_ONLY), "not shown: simple DRAM model only, no effect "
                      "with model = \"lpddr\" (its bandwidth comes from the bank/refresh timing)")
        t.add_row("[b]derived[/b] ternary MAC/cycle (TINT + BoothFlex)",
                  str((cfg.tint.macs_per_cycle if cfg.has("tint") else 0) + (cfg.booth.ternary_macs_per_cycle if cfg.has("booth") else 0)))
        t.add_row("[b]derived[/b] FP4 MAC/cycle", str(cfg.fp4.macs_per_cycle))
        t.add_row("[b]derived[/b] on-chip SRAM", f"{cfg.sram_bytes / 1024:.1f} KiB")
        t.add_row("[b]derived[/b] DRAM peak bandwidth", f"{cfg.dram.peak_bytes_per_s / 1e9:.2f} GB/s")
        console().print(t)

    @app.command("sim")
    @workload_options
    def sim_cmd(
        workload: WorkloadArgs,
        hw: str = hw_option(),
        sets: list[str] = set_option(),
        schedule: str = typer.Option("dependency-aware", "--schedule", help=" | ".join(POLICIES)),
        lop_k: int | None = typer.Option(None, "--lop-k", help="LOP top-K (default: lop.k of the config)"),
        no_lop: bool = typer.Option(False, "--no-lop", help="dense attention (LOP off)"),
        json_out: Path | None = json_option("the result"),
        timeline: Path | None = typer.Option(None, "--timeline", metavar="PATH", help="write a timeline: PATH.pftrace = Perfetto protobuf of the whole run (streamed), PATH.json = Chrome trace events (capped)"),
        timeline_events: int = typer.Option(200_000, "--timeline-events", help="cap on events of a .json timeline"),
        timeline_window: str | None = typer.Option(None, "--timeline-window", metavar="SPEC", help="keep only some steps and/or layers, e.g. 'steps=1-4', 'layers=0-1' or 'steps=0,layers=3' (prefill = step 0)"),
        breakdown: bool = typer.Option(False, "--breakdown", help="per-layer / per-op breakdown: critical-path cycles, busy cycles, DRAM bytes, intensity, binding constraint (also in --json)"),
        breakdown_steps: str = typer.Option("", "--breakdown-steps", metavar="N,N", help="decode steps to break down on their own, e.g. '1,128'"),
        quiet: bool = typer.Option(False, "--quiet", help="no summary table"),
        chips: int = typer.Option(1, "--chips", help="identical accelerators joined by chip-to-chip links ([link] of the config)"),
        parallel: str = typer.Option("tp", "--parallel", help="partitioning over --chips: tp (tensor) | pp (pipeline)"),
        micro_batches: int = typer.Option(1, "--micro-batches", help="pp: independent sequences in flight through the stages"),
        program: Path | None = typer.Option(None, "--program", metavar="PATH", help="run this compiled program (`lowbit compile`) instead of lowering --model/--trace; workload, schedule and LOP come from it"),
    ) -> None:
        """Simulate a workload cycle by cycle and print throughput, utilisation, stalls and DRAM traffic."""
        from lowbit.sim.config import load_hw
        from lowbit.sim.engine import simulate, unit_list

        cfg = load_hw(hw, sets)
        if schedule not in POLICIES:
            raise LowbitError(f"--schedule {schedule}: must be one of {', '.join(POLICIES)}")
        option_int("--timeline-events", timeline_events, Range(1, 10**8, "events"))
        if lop_k is not None:
            option_int("--lop-k", lop_k, Range(1, 2**16, "keys"))
        src = None
        if program is not None:  # the workload, schedule and LOP settings are the program's
            from lowbit.sim.compile import open_program

            tr, src = open_program(cfg, program, workload)
            m = src.header.meta
            schedule, lop_k, no_lop = m.schedule, m.lop_k, m.no_lop
        else:
            tr = workload.build(cfg)
        if chips != 1 or micro_batches != 1:
            if src is not None:
                raise LowbitError("--program holds one chip's compiled instructions; simulate --chips/--micro-batches "
                                  "from --model or --trace")
            return _sim_multichip(cfg, tr, chips, parallel, micro_batches, schedule, lop_k, no_lop, json_out, quiet,
                                  timeline is not None or breakdown or bool(breakdown_steps))
        if src is None:
            check_workload(cfg, tr, lop_k=lop_k, no_lop=no_lop,  # size bounds and tile fits, before any work
                           whole_chunks=timeline is not None or bool(breakdown or breakdown_steps))
        bd = None
        if breakdown or breakdown_steps:
            from lowbit.sim.breakdown import Breakdown, decode_steps

            bd = Breakdown(tr.model.n_layers, unit_list(cfg), steps=decode_steps(breakdown_steps, tr.decode))
        from lowbit.sim.timeline import finish_timeline, open_timeline

        tl = open_timeline(timeline, cfg, f"lowbit sim: {tr.model.name} on {cfg.name}", timeline_window,
                           timeline_events) if timeline else None
        prog = _Progress("simulating")
        try:
            r = simulate(cfg, tr, schedule=schedule, lop_k=lop_k, no_lop=no_lop, progress=prog, timeline=tl,
                         breakdown=bd, source=src)
        except BaseException:
            if hasattr(tl, "abort"):
                tl.abort()
            raise
        finally:
            prog.close()
        note = finish_timeline(tl, timeline) if tl is not None else ""
        if json_out is not None:
            write_json(json_out, r.to_json())
        if not quiet and str(json_out) != "-":
            print_summary(r, note)
            if r.breakdown is not None:
                from lowbit.sim.breakdown import print_breakdown

                print_breakdown(r.breakdown, console())

    from lowbit.sim.serve_cli import register_serve

    register_serve(app)

    @app.command("validate")
    def validate_cmd(
        design: str = typer.Argument(..., help="design family to validate (vitallm)"),
        out: Path = out_option(Path("reports"), "writes validation-<design>.md"),
        decode: int = typer.Option(128, "--decode", help="decode tokens of the headline run"),
        contexts: str = typer.Option("128,512,1024,2048", "--contexts", help="LOP ablation context lengths"),
    ) -> None:
        """Simulate the paper's workloads and write a validation report (parameters, results, ablations)."""
        if design != "vitallm":
            raise LowbitError(f"unknown design '{design}' to validate; available: vitallm")
        check_out_dir(out)
        from lowbit.sim.validation import MODEL

        mp = MODELS[MODEL].max_positions  # the headline run is 64 prompt tokens + decode on this model
        option_int("--decode", decode, Range(1, mp - 64, "tokens", why=f"64 + decode <= {MODEL}'s max_positions {mp}"))
        ctx = option_int_list("--contexts", contexts, Range(2, mp, "tokens", why=f"{MODEL}'s max_positions"), 16)
        from lowbit.sim.validation import build_report

        prog = _Progress("validating")
        try:
            text = build_report(decode=decode, contexts=ctx, progress=prog)
        finally:
            prog.close()
        path = Path(out) / f"validation-{design}.md"
        atomic_write(path, text)
        print(f"wrote {path}")


def register_trace(trace_app: typer.Typer) -> None:
    """`lowbit trace info DIR` (capture, `lowbit trace --model ...`, belongs to lowbit.models.cli)."""

    @trace_app.command("info")
    def trace_info(path: Path = typer.Argument(..., metavar="DIR", help="trace directory"),
                   json_out: Path | None = json_option("the summary")) -> None:
        """Validate a trace directory and print a summary."""
        from lowbit.sim.trace_load import load_trace

        s = load_trace(path).summary()
        if json_out is not None:
            write_json(json_out, json.dumps(s, indent=1) + "\n")
            if str(json_out) == "-":
                return
        from rich.table import Table

        t = Table(title=f"trace {path}")
        t.add_column("field")
        t.add_column("value")
        for k, v in s.items():
            t.add_row(k, ", ".join(f"{a}={b:,}" for a, b in v.items()) if isinstance(v, dict) else f"{v:,}" if isinstance(v, int) else str(v))
        console().print(t)
