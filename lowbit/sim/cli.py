"""`lowbit config`, `lowbit trace info`, `lowbit sim`, `lowbit validate`.

The flags every command shares live in lowbit.sim.cli_options (re-exported here for the other packages' CLIs).
Imports nothing heavy at module level (numba loads inside the commands): `lowbit --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lowbit.sim.atomic import atomic_write
from lowbit.sim.cli_options import (  # noqa: F401  (re-exported: the package CLIs import the shared flags from here)
    DEFAULT_MODEL,
    TOKENS,
    WorkloadArgs,
    _Progress,
    build_trace,
    check_out_dir,
    console,
    hw_help,
    hw_option,
    json_option,
    out_option,
    seed_option,
    set_option,
    workload_options,
    write_json,
)
from lowbit.sim.config import list_presets
from lowbit.sim.errors import LowbitError
from lowbit.sim.lower import POLICIES
from lowbit.sim.modelspec import MODELS
from lowbit.sim.schema import Range, option_int, option_int_list
from lowbit.sim.workloads import check_workload

SIMPLE_DRAM_ONLY = ("efficiency", "latency_ns")  # DramConfig fields only the simple DRAM model reads


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
