"""The compiler driver and the program tools: `compile_program` lowers a workload (lowbit.sim.lower, with the
static unit assignment of lowbit.sim.tiling) into a program file (lowbit.sim.program), `run_program`
simulates exactly that file, `disassemble` prints it per queue with its tokens; `register` adds
`lowbit compile` to the command line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lowbit.sim.config import HwConfig
from lowbit.sim.isa import BUFFERS, C_DMAKV, C_DMAW, C_JOIN, EXT, class_name
from lowbit.sim.program import Block, ProgramError
from lowbit.sim.program_io import ProgramReader, ProgramWriter, RunMeta


@dataclass
class CompileStats:
    """What `compile_program` wrote."""

    path: str
    bytes: int
    steps: int
    chunks: int
    blocks: int
    instructions: int
    wall_s: float


def compile_program(cfg: HwConfig, trace: Any, path: str | Path, *, schedule: str = "dependency-aware",
                    lop_k: int | None = None, no_lop: bool = False, dual_core: bool = True,
                    progress: Any = None, lop_positions: dict | None = None) -> CompileStats:
    """Lower `trace` on `cfg` (as lowbit.sim.engine.simulate does, static unit assignment included) and
    stream the program to `path` atomically (nothing is left behind on an error). `lop_positions`: the LOP
    selections to compile ({(layer, step): per KV head the ascending selected positions}, e.g. a golden
    run's `lop.sel`, lowbit.rtl.chip_model.lop_positions) instead of the trace's (its tensors' data-driven
    ones, else fixed-ratio)."""
    import time

    from lowbit.sim.atomic import atomic_write_via
    from lowbit.sim.engine import LoweredSteps, _configure, _lop_counts, unit_list
    from lowbit.sim.lower import Lowering
    from lowbit.sim.sram import Buffers

    t0 = time.perf_counter()
    cfg_in = cfg  # the program names the config it was given; lop_k travels in the metadata
    cfg = _configure(cfg, schedule, lop_k)
    trace.model.validate()
    lop_on = cfg.has("lop") and cfg.lop.enabled and not no_lop
    counts = (lop_positions or _lop_counts(trace, cfg, [])) if lop_on else None
    lw = Lowering(cfg, trace.model, schedule, lop_on, cfg.lop.k, counts, dual_core=dual_core)
    src = LoweredSteps(lw, trace.steps(), trace.n_chunks())
    units = unit_list(cfg)
    meta = RunMeta(model=dataclasses.asdict(trace.model), prefill=trace.prefill, decode=trace.decode,
                   schedule=schedule, lop_on=lop_on, lop_k=cfg.lop.k, data_driven=counts is not None,
                   no_lop=no_lop, dual_core=dual_core, hw=cfg.name,
                   sequences=[dataclasses.asdict(q) for q in trace.sequences] if trace.sequences else None)
    caps = Buffers.from_config(cfg).capacity_array()
    box: dict[str, ProgramWriter] = {}

    def write(tmp: str) -> None:
        with open(tmp, "wb", buffering=1 << 20) as f:
            w = box["w"] = ProgramWriter(f, cfg_in, units, caps, meta)
            done = 0
            for stp in src:
                w.step(stp.phase, stp.trace_step)
                for ch, layer in stp.chunks:
                    w.chunk(ch, layer, stp.roles)
                    done += 1
                    if progress is not None:
                        progress(done, src.n_chunks)
            w.end()

    atomic_write_via(path, write)
    w = box["w"]
    return CompileStats(str(path), Path(path).stat().st_size, w.n_steps, w.n_chunks, w.n_blocks, w.n_instr,
                        time.perf_counter() - t0)


def run_program(cfg: HwConfig, path: str | Path, **kw: Any) -> Any:
    """Simulate exactly the program at `path` on `cfg` (the config it was compiled for): lowbit.sim.engine
    .simulate with the program as its chunk source. `kw`: progress, timeline, breakdown, observers."""
    from lowbit.sim.engine import simulate

    tr, rd = open_program(cfg, Path(path))
    m = rd.header.meta
    return simulate(cfg, tr, schedule=m.schedule, lop_k=m.lop_k, no_lop=m.no_lop, source=rd, **kw)


# ------------------------------------------------------------------------------------------------ disassembler


def _tok(names: tuple[str, ...], q: int, s: int) -> str:
    return f"{names[q]}#{s}"


def disassemble(path: str | Path, out: Any, steps: set[int] | None = None, max_chunks: int | None = None) -> int:
    """Print a program readably to `out` (a text stream): header, then per chunk its queues with their
    instructions and tokens (absolute sequence numbers). `steps`: only these steps (prefill = 0);
    `max_chunks`: stop after that many chunks. Returns the chunks printed."""
    from lowbit.sim.isa import ACTIVITY, DRAM_CLASSES

    rd = ProgramReader(path)
    hd = rd.header
    m = hd.meta
    qn = hd.queues.names
    p = out.write
    p(f"lowbit program {path}: ISA version {hd.isa_version}, hw {m.hw} (config sha256 {hd.cfg_hash.hex()[:16]}), "
      f"model {m.model['name']}, prefill {m.prefill} + decode {m.decode}, schedule {m.schedule}, "
      f"LOP {'K=' + str(m.lop_k) if m.lop_on else 'off'}{' (data-driven)' if m.data_driven else ''}\n")
    p("queues: " + ", ".join(f"{i}:{n}({class_name(c)})" for i, (n, c) in enumerate(zip(qn, hd.queues.classes,
                                                                                          strict=True))) + "\n")
    p("buffers: " + ", ".join(f"{b} {int(c)} B" for b, c in zip(BUFFERS, hd.caps, strict=True)) + "\n")
    shown = 0
    for si, (s, cr) in enumerate(rd.chunk_records()):
        del si
        if steps is not None and (0 if not s["phase"] else s["trace_step"]) not in steps:
            continue
        if max_chunks is not None and shown >= max_chunks:
            break
        shown += 1
        c, blk, ch = cr.fields, cr.block, cr.chunk
        qb = cr.qbase
        inp = _tok(qn, c["in_queue"], c["in_seq"]) if c["in_kind"] else "step start"
        outp = _tok(qn, c["out_queue"], int(qb[c["out_queue"]]) + c["out_seq"]) if c["out_kind"] else "-"
        p(f"\n{'decode' if s['phase'] else 'prefill'} step {s['trace_step']}, layer {c['layer']}, block slot "
          f"{c['slot']}: {len(ch.cols['main'])} instructions, ops {', '.join(ch.names)}; input {inp}, output {outp}; "
          f"DRAM bases " + " ".join(f"{k}={c['base_' + k]:#x}" for k in DRAM_CLASSES) + "; ring heads "
          + " ".join(f"{b}={c['ring_' + b]}" for b in BUFFERS if hd.caps[BUFFERS.index(b)]) + "\n")
        a = ch.cols
        for qi in range(len(qn)):
            idx = np.nonzero(blk.queue == qi)[0]
            if not len(idx):
                continue
            p(f"  queue {qn[qi]} ({len(idx)}):\n")
            for i in idx:
                p("    " + _instr_text(a, blk, i, qn, qb, c, hd.caps, ACTIVITY) + "\n")
    return shown


def _instr_text(a: dict[str, np.ndarray], blk: Block, i: int, qn: tuple[str, ...], qb: np.ndarray,
                c: dict[str, int], caps: np.ndarray, activity: tuple[str, ...]) -> str:
    from lowbit.sim.isa import DRAM_CLASSES, SUBS

    def tok(j: int) -> str:
        return _tok(qn, int(blk.queue[j]), int(qb[blk.queue[j]] + blk.seq[j]))

    op = int(a["main"][i])
    t = [f"{tok(i)}: {class_name(op)}.{SUBS[int(a['sub'][i])] if a['sub'][i] < len(SUBS) else a['sub'][i]}"]
    if op in (C_DMAW, C_DMAKV):
        d = int(a["dcls"][i])
        t.append(f"{'write' if a['wr'][i] else 'read'} {DRAM_CLASSES[d]} dram {int(a['addr'][i]):#x} +{int(a['nbytes'][i])} B")
        if a["alloc"][i] > 0 and a["buf"][i] >= 0:
            b = int(a["buf"][i])
            t.append(f"-> {BUFFERS[b]}@{(c['ring_' + BUFFERS[b]] + int(blk.saddr[i])) % int(caps[b])} alloc {int(a['alloc'][i])} B")
        if a["ind"][i]:  # the rows come from a LOP selection's index FIFO (sim.lop_fetch)
            t.append(f"indirect {int(a['nidx'][i])} rows from {tok(int(a['isel'][i]))}")
    elif op != C_JOIN:
        t.append(f"cyc {int(a['cyc'][i])}")
        if a["nidx"][i]:
            t.append(f"selects {int(a['nidx'][i])} -> index fifo")
        if a["mcls"][i] >= 0:
            t.append(f"{activity[int(a['mcls'][i])]} {int(a['macs'][i])}")
    w = []
    for k in range(3):
        d = int(a[f"dep{k}"][i])
        if d >= 0:
            w.append(tok(d))
        elif d == EXT:
            w.append("input")
    if a["barrier"][i]:
        w.append("step-fence")
    if a["main"][i] == C_JOIN and blk.range_start is not None:
        for r in blk.ranges[blk.range_start[i]:blk.range_start[i] + _nr(blk, i)]:
            s0 = int(qb[r[0]] + r[1])
            w.append(f"{qn[int(r[0])]}#{s0}" + (f"..#{s0 + int(r[2]) - 1}" if r[2] > 1 else ""))
    if w:
        t.append("waits " + ", ".join(w))
    if a["free_of"][i] >= 0:
        f = int(a["free_of"][i])
        t.append(f"frees {BUFFERS[int(a['buf'][f])]}({tok(f)})")
    return "  ".join(t)


def _nr(blk: Block, i: int) -> int:
    nxt = blk.range_start[i + 1] if i + 1 < len(blk.range_start) else len(blk.ranges)
    return int(nxt - blk.range_start[i])


# ------------------------------------------------------------------------------------------------ command line


def open_program(cfg: HwConfig, path: Path, workload: Any = None) -> tuple[Any, ProgramReader]:
    """For `lowbit sim --program FILE`: (the run's metadata as a Trace without ops: model, prefill, decode
    and a batch's sequences, the reader). The workload comes from the program, so the workload options
    (`workload`, lowbit.sim.cli.WorkloadArgs) that shape one are refused."""
    from lowbit.sim.engine import unit_list
    from lowbit.sim.modelspec import ModelSpec
    from lowbit.sim.trace import SeqSpec, Trace

    if workload is not None:
        given = [f for f, v in (("--model", workload.model), ("--trace", workload.trace)) if v is not None]
        given += workload.shape_flags()
        if given:
            raise ProgramError(f"--program runs the workload compiled into the program; drop {'/'.join(given)}")
    rd = ProgramReader(path, cfg, unit_list(cfg))
    m = rd.header.meta
    try:
        spec = ModelSpec(**m.model)
        seqs = [SeqSpec(**q) for q in m.sequences] if m.sequences else None
    except TypeError as e:
        raise ProgramError(f"{path}: the run metadata does not match this lowbit ({e}); recompile") from None
    return Trace(spec, m.prefill, m.decode, [], sequences=seqs), rd


def register(app: Any) -> None:
    """`lowbit compile` (compile a workload into a program file, or disassemble one)."""
    import typer

    from lowbit.sim.cli import WorkloadArgs, _Progress, hw_option, set_option, workload_options
    from lowbit.sim.lower import POLICIES
    from lowbit.sim.schema import Range, option_int, option_int_list

    @app.command("compile")
    @workload_options
    def compile_cmd(
        workload: WorkloadArgs,
        hw: str = hw_option(),
        sets: list[str] = set_option(),
        schedule: str = typer.Option("dependency-aware", "--schedule", help=" | ".join(POLICIES)),
        lop_k: int | None = typer.Option(None, "--lop-k", help="LOP top-K (default: lop.k of the config)"),
        no_lop: bool = typer.Option(False, "--no-lop", help="dense attention (LOP off)"),
        program: Path | None = typer.Option(None, "--program", metavar="PATH", help="program file to write (written atomically)"),
        disasm: Path | None = typer.Option(None, "--disasm", metavar="PATH", help="print this program per queue, with its tokens, instead of compiling"),
        steps: str = typer.Option("", "--steps", metavar="N,N", help="--disasm: only these steps (prefill = 0)"),
        max_chunks: int | None = typer.Option(None, "--max-chunks", help="--disasm: stop after N chunks"),
    ) -> None:
        """Compile a workload into a program (per-unit instruction queues with dependency tokens, SRAM and DRAM
        addresses; docs/isa.md) that `lowbit sim --program` runs, or disassemble one (--disasm)."""
        import sys

        from lowbit.sim.config import load_hw
        from lowbit.sim.workloads import check_workload

        if disasm is not None:
            if program is not None:
                raise ProgramError("--disasm reads a program; drop --program")
            if workload.model is not None or workload.trace is not None or workload.shape_flags():
                raise ProgramError("--disasm reads a compiled program, whose workload is its own; drop the "
                                   "workload options (--model, --trace, --prefill, --batch, ...)")
            if max_chunks is not None:
                option_int("--max-chunks", max_chunks, Range(1, 2**31, "chunks"))
            sel = set(option_int_list("--steps", steps, Range(0, 2**31, "steps"), 1 << 20)) if steps else None
            disassemble(disasm, sys.stdout, sel, max_chunks)
            return
        if program is None:
            raise ProgramError("lowbit compile: --program PATH names the file to write (or --disasm PATH to read one)")
        cfg = load_hw(hw, sets)
        if schedule not in POLICIES:
            raise ProgramError(f"--schedule {schedule}: must be one of {', '.join(POLICIES)}")
        if lop_k is not None:
            option_int("--lop-k", lop_k, Range(1, 2**16, "keys"))
        tr = workload.build(cfg)
        check_workload(cfg, tr, lop_k=lop_k, no_lop=no_lop, whole_chunks=True)
        prog = _Progress("compiling")
        try:
            st = compile_program(cfg, tr, program, schedule=schedule, lop_k=lop_k, no_lop=no_lop, progress=prog)
        finally:
            prog.close()
        print(f"wrote {st.path}: {st.bytes:,} bytes, {st.steps} steps, {st.chunks:,} chunks, {st.blocks:,} "
              f"instruction blocks, {st.instructions:,} instructions ({st.wall_s:.1f} s)")
