"""`lowbit rtl` (Verilog + manifest) and `lowbit verify` (cocotb benches vs golden numerics and cycle formulas).
Both need the [rtl] extra. (`lowbit synth` reports area at the design's node, so it lives in lowbit.cost.cli.)

Imports nothing heavy at module level: amaranth / cocotb / yosys load inside the command bodies
(lowbit.rtl.registry is plain data).
"""

from __future__ import annotations

from pathlib import Path

import typer

from lowbit.rtl.registry import UNITS, get_unit, units_for
from lowbit.sim.cli import check_out_dir, hw_option, json_option, out_option, seed_option, set_option
from lowbit.sim.errors import LowbitError
from lowbit.sim.extras import require_extra
from lowbit.sim.schema import SEED, Range, option_int


def unit_names() -> str:
    """The RTL unit names for help texts: the keys of lowbit.rtl.registry.UNITS."""
    return ", ".join(UNITS)


def _units(cfg, unit: str | None) -> list[str]:
    if unit in (None, "all"):
        names = units_for(cfg) if unit is None else list(UNITS)
        if not names:
            raise LowbitError(f"hardware '{cfg.name}' has no unit with RTL; available: {', '.join(UNITS)}")
        return names
    return [get_unit(unit).name]


def register(app: typer.Typer) -> None:
    @app.command("rtl")
    def rtl_cmd(
        hw: str = hw_option(),
        sets: list[str] = set_option(),
        out: Path = out_option(..., "Verilog per unit + manifest.json"),
        unit: str | None = typer.Option(None, "--unit", help=f"one RTL unit ({unit_names()}) or 'all'; "
                                        "default: the units the preset instantiates"),
        lint: bool = typer.Option(False, "--lint", help="also run `verilator --lint-only -Wall` (with waivers)"),
    ) -> None:
        """Generate Amaranth RTL as Verilog for a hardware config."""
        check_out_dir(out)
        require_extra("rtl", "rtl", "amaranth")
        from lowbit.rtl.generate import generate
        from lowbit.sim.config import load_hw

        cfg = load_hw(hw, sets)
        names = _units(cfg, unit)
        for name in names:
            get_unit(name).validate(get_unit(name).section_cfg(cfg))  # all errors before any output
        for name in names:
            files = generate(cfg, name, out)
            print(f"{name}: wrote {files[0]}")
            if lint:
                from lowbit.rtl.lint import lint as run_lint

                r = run_lint(files[0])
                waived = ", ".join(f"{k} x{v}" for k, v in sorted(r.waived.items()))
                if not r.ok:
                    raise LowbitError(f"lint of {files[0]} failed: {r.errors[0] if r.errors else r.output[-300:]}")
                print(f"{name}: lint clean (waived: {waived or 'none'})")
        print(f"manifest: {Path(out) / 'manifest.json'}")

    @app.command("verify")
    def verify_cmd(
        unit: str = typer.Option("all", "--unit", help=f"one RTL unit ({unit_names()}) or 'all' "
                                 "(the preset's units, both Booth variants)"),
        vectors: int = typer.Option(200, "--vectors", help="dot products per unit (corner cases included)"),
        seed: int = seed_option(),
        waves: bool = typer.Option(False, "--waves", help="keep a VCD of the run and print its path"),
        hw: str = hw_option(),
        sets: list[str] = set_option(),
        simulator: str | None = typer.Option(None, "--sim", help="verilator (default) or icarus"),
        chip: bool = typer.Option(False, "--chip", help="run a compiled program on the whole chip and compare every "
                                  "instruction's start/end cycle with `lowbit sim --program`"),
        model: str | None = typer.Option(None, "--model", metavar="NAME|CONFIG", help="--chip: model to compile "
                                         "(default bitnet-tiny)"),
        prefill: int = typer.Option(8, "--prefill", help="--chip: prompt tokens"),
        decode: int = typer.Option(3, "--decode", help="--chip: generated tokens"),
        program: Path | None = typer.Option(None, "--program", metavar="PATH", help="--chip: run this program "
                                            "(from `lowbit compile`) instead of compiling --model"),
        json_out: Path | None = json_option("--chip: the per-queue comparison"),
    ) -> None:
        """Run the cocotb benches: RTL vs sim.numerics (bit-exact) and cycles vs sim.units (exact); with --chip,
        the chip top on a compiled program against `lowbit sim --program` (cycles per instruction) and, where
        the chip has the data path, every psum word of its TINT / BoothFlex tiles against the whole-model
        golden (lowbit.sim.golden: the model's deployed weights, its INT8 activations and accumulators, weights
        and prompt seeded by --seed; seeded random contents against sim.numerics where the golden does not
        cover the program)."""
        if chip:
            option_int("--seed", seed, SEED)
            _verify_chip(hw, sets, model, prefill, decode, program, json_out, seed)
            return
        if vectors < 1:
            raise LowbitError(f"--vectors {vectors}: must be >= 1")
        option_int("--vectors", vectors, Range(1, 10**7, "vectors"))
        option_int("--seed", seed, SEED)
        require_extra("verify", "rtl", "amaranth", "cocotb")
        from rich.console import Console
        from rich.table import Table

        from lowbit.rtl.cocotb_runner import run_bench
        from lowbit.sim.config import load_hw

        cfg = load_hw(hw, sets)
        names = list(_units(cfg, None if unit == "all" else unit))
        if unit == "all" and cfg.has("booth"):  # verify both Booth variants on this preset's parameters
            names += [n for n in ("booth", "booth_bs") if n not in names]
        t = Table(title=f"lowbit verify --hw {cfg.name} --seed {seed}")
        for c in ("unit", "params", "vectors", "mismatches", "cycles sim vs RTL (tiles)", "status", "time"):
            t.add_column(c)
        failed = []
        for name in names:
            spec = get_unit(name)
            r = run_bench(name, spec.section_cfg(cfg), vectors=vectors, seed=seed, waves=waves, simulator=simulator)
            ok_cyc = r.cycle_checks - r.cycle_mismatches
            sample = [c for c in r.cycles if c.get("kind") == "random"][:1] or r.cycles[:1]
            cyc = ", ".join(f"{c['sim']} vs {c['rtl']}" for c in sample)
            t.add_row(name, " ".join(f"{k}={v}" for k, v in r.parameters.items()), str(r.vectors),
                      str(r.mismatches), f"{ok_cyc}/{r.cycle_checks} equal (e.g. {cyc})",
                      "[green]match[/green]" if r.ok else "[red]MISMATCH[/red]", f"{r.seconds:.1f}s")
            if not r.ok:
                failed.append(f"{name}: {r.examples[:2]}")
            if r.waves:
                print(f"{name}: waves {r.waves}")
        Console().print(t)
        if failed:
            raise LowbitError("RTL mismatches: " + "; ".join(failed))


def _verify_chip(hw: str, sets: list[str], model: str | None, prefill: int, decode: int,
                 program: Path | None, json_out: Path | None, seed: int = 0) -> None:
    """`lowbit verify --chip`: compile (unless --program), run on the chip RTL, print the per-queue table."""
    require_extra("verify", "rtl", "amaranth", "cocotb")
    import tempfile

    from rich.console import Console
    from rich.table import Table

    from lowbit.rtl.chip_kv import kv_line, kv_ok, kv_why
    from lowbit.rtl.chip_run import verify_chip
    from lowbit.sim.config import load_hw

    cfg = load_hw(hw, sets)
    if program is not None and model is not None:
        raise LowbitError("--program runs the workload compiled into the program; drop --model")
    label = str(program) if program is not None else f"{model or 'bitnet-tiny'} prefill {prefill} + decode {decode}"
    with tempfile.TemporaryDirectory(prefix="lowbit-chip-") as tmp:
        if program is None:  # compiled from the golden's LOP selections: the ones the chip's data make
            from lowbit.rtl.chip_model import compile_from_golden

            program = Path(tmp) / "prog.bin"
            compile_from_golden(cfg, model or "bitnet-tiny", prefill, decode, program, seed)
        r = verify_chip(cfg, program, hw, sets, seed=seed)
    t = Table(title=f"lowbit verify --chip --hw {cfg.name}: {label}, chip RTL vs lowbit sim --program")
    for c in ("queue", "instructions", "start mismatches", "end mismatches", "max |diff| (cycles)", "psum words",
              "data mismatches", "first"):
        t.add_column(c)
    for q in r.queues:
        dw = q.data_words >= 0
        t.add_row(q.name, str(q.instructions), str(q.start_mismatches), str(q.end_mismatches), str(q.max_diff),
                  f"{q.data_words:,}" if dw else "-", str(q.data_mismatches) if dw else "-", q.first or "-")
    Console().print(t)
    print(f"total cycles: sim {r.sim_cycles:,}, chip {r.chip_cycles:,} (difference {r.chip_cycles - r.sim_cycles}); "
          f"{r.dram_requests} DRAM requests; {r.seconds:.1f} s")
    fw, fb, fl, fs, fx = r.feed
    print(f"instruction port: {fw:,} words fetched into the queues' rings over {fb:,} port cycles "
          f"({r.params.ifetch_bits}-bit beats, {r.params.ifetch_latency}-cycle latency); {fl} words late by the fetch "
          f"rule, least slack {fs} cycles; requests differing from the rule's: {fx}")
    if r.data_note:
        print(f"data path: none ({r.data_note}); timing only")
    else:
        print(f"data path: {r.data_words:,} psum words against {r.data_ref}, {r.data_mismatches} mismatches; "
              f"weight reads with data beats after their response: {r.data_late}; act words written after "
              f"their SFU word: {r.act_late}")
        full, n, absent = r.acc_buffers
        if n:
            from collections import Counter

            gone = ", ".join(f"{op} ({c} step{'s' if c > 1 else ''})" for op, c in sorted(Counter(a.split()[-1] for a in absent).items()))
            print(f"whole-model golden: {n} projection accumulator buffers (layers.L.<op>.acc, per step) on the data "
                  f"path, {full} of them checked in every element; without tiles on it: {gone or 'none'}")
        if r.qk[0]:
            print(f"Q K^T: {r.qk[0]} BoothFlex INT8 tiles on the data path (their psum words above, against "
                  f"layers.L.attn.qk.acc), {r.qk[1]} of the {r.qk[2]} score accumulator buffers (per step and layer) "
                  "checked in every attended element (a decode step's over the keys its LOP gathered)")
        if r.pv[2]:
            print(f"P V: {r.pv[0]} BoothFlex INT8 tiles on the data path (against layers.L.attn.av.acc; the "
                  f"probabilities softmax.w8 from the softmax engine, or the bench's in their softmax words' cycles), "
                  f"{r.pv[1]} of the {r.pv[2]} P V accumulator buffers checked in every element")
        if r.pv[0] and not (r.sm[0] or r.sm[6]):
            print("softmax: no softmax engine and score stage on this chip (lowbit.rtl.chip_softmax.sm_ok); the bench "
                  "writes every probability row and its scale")
        if r.pv[0] and not r.av:
            print("attention output: no writer on this chip (lowbit.rtl.chip_av.av_ok); the bench writes it with its "
                  "rows' S before attn_sub_norm")
        if r.sm[0] or r.sm[6]:
            print(f"softmax: {r.sm[0]} softmax words on the SFU's softmax engine (then p x amax_v quantized to INT8), "
                  f"{r.sm[1]} probability rows from the chip: {r.sm[2]:,} INT8 words and {r.sm[3]} row scales against "
                  f"the golden's softmax.w8 and w_amax, {r.sm[4]} mismatches; {r.sm[6]} rows still written by the "
                  "bench; " + ("the scores and each row's max it reads from the score requantizer (below)" if r.sc[0]
                               else "the scores and row max it reads are written by the bench in the Q K^T tile's "
                               "cycles") + "; each key's amax_v from the V quantizer's scale memory (by position; "
                  f"the keys LOP gathers by the positions their fetches recorded) in {r.sm[7]} rows, from the bench in "
                  f"the Q K^T tile's cycles in the other {r.sm[1] - r.sm[7]}, {r.sm[5]} batches late")
        if r.sc[0]:
            print(f"scores: {r.sc[0]} Q K^T tiles through the score requantizer behind BoothFlex's psum port (each "
                  f"query row's amax from the RoPE engine): {r.sc[1]:,} scores and "
                  f"{r.sc[2]} row maxes into the softmax engine's memories against the golden's qk.scores, "
                  f"{r.sc[3]} mismatches; key-scale batches ending after their tile's start: {r.sc[4]}")
            print(f"k_amax: each key's amax from the RoPE engine into the key-scale memory at its K write's position: "
                  f"{r.ks[2]} writes against the golden's kv_append.k_amax, {r.ks[3]} mismatches; {r.ks[0]} Q K^T "
                  f"tiles read their {r.ks[1]} keys' k_amax there by position (the keys LOP gathers by the positions "
                  f"their fetches recorded), {r.ks[4]} before the write; {r.ks[5]} keys' k_amax still written by the "
                  "bench")
        if r.av:
            xs, xb = sum(x[1] for x in r.av), sum(x[2] for x in r.av)
            son = [x for x in r.av if x[3]]
            rest = r.pv[2] - len(r.av)
            print(f"attention output: {len(r.av)} of the {r.pv[2]} steps x layers requantized on the chip (BoothFlex's "
                  f"P V psum words into attn_sub_norm's input X), {xs:,} elements against the golden's attn.av.out, "
                  f"{xb} mismatches; each row's S (sum of squares) from the chip in {len(son)} of them "
                  f"({sum(x[3] for x in son)} rows, {sum(x[4] for x in son)} mismatches)"
                  + (f", from the bench in the other {len(r.av) - len(son)}, whose attn_sub_norm reads it before the "
                     f"last write lands (the drain rule)" if len(son) < len(r.av) else "")
                  + (f"; the bench writes attn.av.out in the other {rest}" if rest else ""))
        if r.embed[0]:
            print(f"input rows: {r.embed[0]} embedding reads through the memory port into layer 0's attn_norm input "
                  f"X and each row's S (sum of squares) on the chip: {r.embed[1]:,} Q7.8 words ({r.embed[2]:,} "
                  f"elements) against the golden's embed.out, {r.embed[3]} mismatches")
        if r.sfu[0]:
            print(f"SFU: {r.sfu[0]} quantize words on the SFU's stream engine, writing the act buffer the projections "
                  f"read: {r.sfu[1]:,} INT8 words ({r.sfu[2]:,} elements) against the golden's <op>.q, "
                  f"{r.sfu[3]} mismatches")
        if r.res[0]:
            print(f"SFU: {r.res[0]} residual adds on the SFU's residual engine, writing the norms' input and each "
                  f"row's sum of squares: {r.res[1]:,} Q7.8 words ({r.res[2]:,} elements) against the golden's "
                  f"<residual>.out, {r.res[3]} mismatches")
        if r.rope[0] or r.rope_bench:
            rb = r.rope_bench
            print(f"RoPE: {r.rope[0]} RoPE words on the chip's RoPE engine (q and k from the requantizers, rotated, "
                  "then quantized per head into the act buffer's queries " + ("Q K^T reads" if r.qk[0] else
                                                                               "(Q K^T a timer here)")
                  + f"): {r.rope[1]:,} query words "
                  f"against the golden's qk.q8, {r.rope[2]} mismatches; {r.rope[3]:,} key words against "
                  f"kv_append.k8, {r.rope[4]} mismatches; {r.rope[5]:,} head rows' amax against qk.q_amax / "
                  f"kv_append.k_amax, {r.rope[6]} mismatches; "
                  + (f"{len(rb)} RoPE words left timers, their queries from the bench: {'; '.join(rb)}" if rb else
                     "no query row from the bench") + (f" (nor in the LOP engine's query memory: {r.lop_chip_q} "
                                                        "groups' rows from the RoPE engine)" if r.lop_chip_q else ""))
        if r.kvw:
            print(kv_line(r.kvw))
        if r.act[0]:
            print(f"SFU: {r.act[0]} gating words on the SFU's gating engine (gate and up from the requantizers), "
                  f"writing SubLN's input and each row's sum of squares: {r.act[1]:,} Q7.8 words ({r.act[2]:,} "
                  f"elements) against the golden's ffn.act.out, {r.act[3]} mismatches")
        if r.norm[0]:
            print(f"SFU: {r.norm[0]} RMSNorm words (SubLN and the final norm included) on the SFU's RMSNorm engine, "
                  f"feeding the quantize engine: {r.norm[1]:,} Q7.8 words ({r.norm[2]:,} elements) and each row's "
                  f"amax against the golden's <norm>.out, {r.norm[3]} mismatches")
        if r.rq_refused and not r.rq:
            print(f"requantizer: no projection requantized on the chip ({'; '.join(r.rq_refused)})")
        elif r.rq or r.rq_drain or r.rq_refused:
            from collections import defaultdict

            per: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
            for name, n, bad in r.rq:
                op = name.split()[-1].split(".", 2)[-1]
                per[op][0] += 1
                per[op][1] += n
                per[op][2] += bad
            ops = "; ".join(f"{op}: {c} ({n:,} elements, {bad} mismatches)" for op, (c, n, bad) in sorted(per.items()))
            vq = r.params.kvw_depth and r.params.vquant[0]
            print(f"requantizer: {len(r.rq)} projections requantized on the chip behind the engines' psum ports, "
                  "their Q7.8 outputs against the golden's <op>.out (the residual's y, the gating's inputs, the RoPE "
                  "engine's q and k inputs, " + ("the V quantizer's v" if vq else "v at the requantizer's write ports "
                                                 "(no V quantizer on this chip reads it)") + f"): {ops or 'none'}"
                  + (f"; kept off by the drain rule: {', '.join(r.rq_drain)}" if r.rq_drain else "")
                  + (f"; not requantized on the chip: {'; '.join(r.rq_refused)}" if r.rq_refused else ""))
        logits = [x for x in r.rq if x[0].endswith(" lm_head")]
        if logits:
            print(f"logits: the lm_head of {len(logits)} steps on the chip (its tiles' psum words above, requantized "
                  f"behind the engines' psum ports), {sum(x[1] for x in logits):,} Q7.8 logits against the golden's "
                  f"lm_head.logits, {sum(x[2] for x in logits)} mismatches")
        if r.attn_note:
            vq = r.params.kvw_depth and r.params.vquant[0]
            print("attention: Q K^T, the score stage, the softmax" + (" and P V" if vq else ", P V and the V quantizer")
                  + f" stay timers, their data the bench's ({r.attn_note})")
        if r.lop_engine[0]:
            g, n, bad, cb, first = r.lop_engine
            qs = f"{r.lop_chip_q} groups' INT8 queries from the RoPE engine, the others' from the bench after RoPE"
            fl = (f"{r.lop_fill[0]} groups' LO codes from their LO-code read's data beats ({r.lop_fill[1]} beats), the "
                  f"others' from the bench in the read's cycles")
            print(f"LOP engine: {g} KV groups scored and selected on the chip's LOP engine ({fl}; {qs}), {n:,} index "
                  f"FIFO writes against the golden's layers.L.attn.lop.sel, {bad} mismatches; scorer and top-K done "
                  f"cycles off the lop_score / lop_topk words' ends: {cb}; write batches or LO-code beats outside their "
                  f"group's window: {r.lop_late}" + (f" ({first})" if first else ""))
        if r.kv_ind[0]:
            print(f"indirect K/V fetches: {r.kv_ind[1]} of dma_kv's {r.kv_ind[0]} indirect words issued with the DRAM "
                  f"address and size from the LOP index FIFO (the engine's selections), {r.kv_ind[2]} not one run of "
                  "adjacent keys; their rows are among the KV reads checked below")
        if r.lop_note:
            print(f"LOP engine: {r.lop_note}")
        if r.lop[0]:
            print(f"LOP: {r.lop[0]} selections of the golden that drop keys (decode step, layer, KV head: "
                  f"layers.L.attn.lop.sel); the program's indirect K/V fetches read {r.lop[1]:,} rows for them, "
                  f"{r.lop[2]} differing from the selection" + (f" ({r.lop[3]})" if r.lop[3] else ""))
        if r.kv_chunks:
            print(f"KV reads: {r.kv_chunks} K/V chunks read back from the kv buffer at their consumer's start, "
                  f"{r.kv_units:,} units against the golden's kv_append.k8 / v8 rows, {r.kv_mismatches} mismatches")
    if json_out is not None:
        import dataclasses
        import json

        from lowbit.sim.cli import write_json

        d = {"hw": cfg.name, "workload": label, "ok": r.ok, "sim_cycles": r.sim_cycles, "chip_cycles": r.chip_cycles,
             "finished": r.finished, "late": r.late, "lane_overflow": r.lane_overflow,
             "dram_requests": r.dram_requests, "data_path": not r.data_note, "data_note": r.data_note,
             "data_words": r.data_words, "data_mismatches": r.data_mismatches, "data_late": r.data_late,
             "data_ref": r.data_ref, "act_late": r.act_late, "kv_chunks": r.kv_chunks, "kv_units": r.kv_units,
             "kv_mismatches": r.kv_mismatches, "qk_tiles": r.qk[0], "qk_buffers_complete": r.qk[1],
             "qk_buffers": r.qk[2], "pv_tiles": r.pv[0], "pv_buffers_complete": r.pv[1], "pv_buffers": r.pv[2],
             "sfu_quant_words": r.sfu[0], "sfu_int8_words": r.sfu[1],
             "sfu_elements": r.sfu[2], "sfu_mismatches": r.sfu[3], "norm_words": r.norm[0],
             "norm_q78_words": r.norm[1], "norm_elements": r.norm[2], "norm_mismatches": r.norm[3],
             "residual_words": r.res[0], "residual_q78_words": r.res[1], "residual_elements": r.res[2],
             "residual_mismatches": r.res[3],
             "gating_words": r.act[0], "gating_q78_words": r.act[1], "gating_elements": r.act[2],
             "gating_mismatches": r.act[3], "lop_selections": r.lop[0], "lop_rows": r.lop[1],
             "lop_mismatches": r.lop[2],
             "lop_engine": {"groups": r.lop_engine[0], "indices": r.lop_engine[1], "mismatches": r.lop_engine[2],
                            "done_cycles_off": r.lop_engine[3], "late": r.lop_late, "note": r.lop_note,
                            "queries_from_rope": r.lop_chip_q, "codes_from_reads": r.lop_fill[0],
                            "code_beats": r.lop_fill[1]},
             "scores": dict(zip(("tiles", "scores", "row_maxes", "mismatches", "late"), r.sc, strict=True)), "requant": [{"op": n, "elements": c, "mismatches": b} for n, c, b in r.rq], "requant_drain": r.rq_drain, "requant_refused": r.rq_refused, "attention_note": r.attn_note,
             "rope": dict(zip(("words", "q8_words", "q8_mismatches", "k8_words", "k8_mismatches", "amax_rows",
                               "amax_mismatches"), r.rope, strict=True)) | {"bench": r.rope_bench},
             "kv_write": r.kvw, "attn_out": [{"step_layer": n, "elements": e, "mismatches": b, "s_rows": s, "s_mismatches": sb}
                          for n, e, b, s, sb in r.av],
             "acc_buffers": {"on_data_path": r.acc_buffers[1], "complete": r.acc_buffers[0],
                             "without_tiles": r.acc_buffers[2]},
             "queues": [dataclasses.asdict(q) for q in r.queues]}
        write_json(json_out, json.dumps(d, indent=1))
    if not r.ok:
        why = [f"{r.mismatches} mismatches"] if r.mismatches else []
        why += ["the chip did not finish"] if not r.finished else []
        why += [f"{r.late} late DRAM responses"] if r.late else []
        why += [f"{r.lane_overflow} cycles with more responses than lanes"] if r.lane_overflow else []
        why += [f"total cycles differ by {r.chip_cycles - r.sim_cycles}"] if r.chip_cycles != r.sim_cycles else []
        why += [f"{r.feed[2]} instruction words reach their ring late"] if r.feed[2] else []
        why += [f"{r.feed[4]} instruction requests differ from the fetch rule's"] if r.feed[4] else []
        why += [f"{r.data_mismatches} psum words differ from {r.data_ref}"] if r.data_mismatches else []
        why += [f"{r.act_late} SFU words' act writes came after the instruction"] if r.act_late else []
        why += [f"{r.sfu[3]} SFU quantize words differ from the golden's"] if r.sfu[3] else []
        why += [f"{r.norm[3]} SFU RMSNorm words differ from the golden's"] if r.norm[3] else []
        why += [f"{r.res[3]} SFU residual words differ from the golden's"] if r.res[3] else []
        why += [f"{r.act[3]} SFU gating words differ from the golden's"] if r.act[3] else []
        rqb = sum(b for _, _, b in r.rq)
        why += [f"{rqb} requantized elements differ from the golden's"] if rqb else []
        ropeb = r.rope[2] + r.rope[4] + r.rope[6]
        why += [f"{ropeb} RoPE query / key words or row amax differ from the golden's"] if ropeb else []
        avb = sum(x[2] + x[4] for x in r.av)
        why += [f"{avb} attention output elements or S rows differ from the golden's"] if avb else []
        why += [f"KV writes: {kv_why(r.kvw)}"] if not kv_ok(r.kvw) else []
        why += [f"{r.kv_mismatches} kv buffer units differ from the golden's K/V rows"] if r.kv_mismatches else []
        why += [f"{r.data_late} weight reads' data came after their response"] if r.data_late else []
        why += [f"{r.lop_engine[2]} LOP index FIFO writes differ from the golden's lop.sel"] if r.lop_engine[2] else []
        why += [f"{r.lop_engine[3]} LOP engine done cycles differ from the LOP words' ends"] if r.lop_engine[3] else []
        why += [f"{r.kv_ind[0] - r.kv_ind[1]} indirect K/V words did not issue from the index FIFO"] \
            if r.kv_ind[0] != r.kv_ind[1] else []
        why += [f"{r.kv_ind[2]} indirect K/V words' indices were not one run"] if r.kv_ind[2] else []
        why += [f"{r.lop_late} LOP groups' query or code writes came outside their group's window"] if r.lop_late else []
        why += [f"{r.sc[3]} Q K^T scores or row maxes differ from the golden's"] if r.sc[3] else []
        why += [f"{r.sc[4]} key-scale batches came after their Q K^T tile's start"] if r.sc[4] else []
        why += [f"{r.ks[3]} keys' k_amax in the key-scale memory differ from the golden's"] if r.ks[3] else []
        why += [f"{r.ks[4]} Q K^T tiles read a key's k_amax before the chip wrote it"] if r.ks[4] else []
        why += [f"{r.lop[2]} K/V rows fetched differ from the golden's LOP selection (a program compiled from "
                "another selection; `verify --chip --model` compiles from the golden's)"] if r.lop[2] else []
        raise LowbitError("chip RTL differs from lowbit sim: " + ", ".join(why))
    data = f", {r.data_words:,} psum words bit-exact" if not r.data_note else ""
    print(f"chip RTL matches lowbit sim: 0 mismatches, 0 cycles difference{data}")
