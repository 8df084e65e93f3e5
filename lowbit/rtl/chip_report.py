"""The chip report: compile a workload, run it on the chip RTL (lowbit.rtl.chip_run.verify_chip) and write
the per-queue comparison with `lowbit sim --program` as Markdown, with the chip's sizes and the measured
build and run times.

    python -m lowbit.rtl.chip_report --hw vitallm --model bitnet-tiny --prefill 4 --decode 2 --out reports

writes `reports/chip-<hw>.md` (atomically; the Verilator build is cached, its time is the cached build's).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

from lowbit.sim.errors import LowbitError


def build_seconds(vfile: Path) -> float:
    """Wall time of the Verilator build that made `vfile`'s directory: from the Verilog written at its
    start (lowbit.rtl.cocotb_runner.build_verilog_text) to the `.built` stamp written at its end."""
    stamp = vfile.parent / ".built"
    return stamp.stat().st_mtime - vfile.stat().st_mtime


def out_of_order(end: list[int]) -> int:
    """Requests of one queue that complete before an earlier-issued one (their end is below the latest end
    of the requests before them)."""
    n, hi = 0, -1
    for e in end:
        n += e < hi
        hi = max(hi, e)
    return n


def chip_report(hw: str, sets: list[str], model: str, prefill: int, decode: int) -> str:
    """Markdown: the workload, the chip, per-queue start/end mismatches, cycles, times."""
    from lowbit.rtl.chip_image import build_image, reference_schedule
    from lowbit.rtl.chip_kv import kv_line, kv_ok, kv_why
    from lowbit.rtl.chip_model import compile_from_golden
    from lowbit.rtl.chip_run import verify_chip
    from lowbit.sim.config import load_hw

    cfg = load_hw(hw, sets)
    with tempfile.TemporaryDirectory(prefix="lowbit-chip-report-") as tmp:
        prog = Path(tmp) / "prog.bin"
        st, _ = compile_from_golden(cfg, model, prefill, decode, prog)  # LOP: the golden's selections
        img = build_image(prog, cfg)
        ref, _ = reference_schedule(prog, cfg)
        t_wall = time.time()
        t0 = time.perf_counter()
        r = verify_chip(cfg, prog, hw, sets)
        wall = time.perf_counter() - t0
    build = build_seconds(r.verilog)
    built_now = (r.verilog.parent / ".built").stat().st_mtime >= t_wall
    run_s = wall - build if built_now else wall
    p = r.params
    sets_txt = "".join(f" --set {s}" for s in sets)
    cmd = (f"python -m lowbit.rtl.chip_report --hw {hw}{sets_txt} --model {model} --prefill {prefill} "
           f"--decode {decode} --out reports")
    ooo = {q.name: out_of_order(q.end) for q in ref if q.name.startswith("dma")}
    lines = [
        f"# Chip RTL vs `lowbit sim` on `{cfg.name}`",
        "",
        f"Regenerate: `{cmd}` (equivalently `lowbit verify --chip --hw {hw}{sets_txt} --model {model} "
        f"--prefill {prefill} --decode {decode}` for the table alone).",
        "",
        f"Workload: {model}, prefill {prefill} + decode {decode} ({st.steps} steps, {st.instructions:,} "
        f"instructions, {r.dram_requests:,} DRAM requests), compiled for `{cfg.name}` "
        f"({cfg.description}); DRAM model `{cfg.dram.model}` ({cfg.dram.type}).",
        "",
        f"Chip: queues {', '.join(img.queues)}; ChipParams ifetch_depth {p.ifetch_depth}, ifetch_bits {p.ifetch_bits}, "
        f"ifetch_latency {p.ifetch_latency}, seq_bits {p.seq_bits}, "
        f"dma_issue {p.dma_issue}, dma_table {p.dma_table}, ring_entries {p.ring_entries}, resp_lanes "
        f"{p.resp_lanes}, join_window {p.join_window}, mult_depth {p.mult_depth}; Verilog "
        f"{r.verilog.stat().st_size / 1e6:.1f} MB.",
        "",
        "| queue | instructions | start mismatches | end mismatches | max abs diff (cycles) | completed out of issue "
        "order | psum words | data mismatches |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for q in r.queues:
        dw = q.data_words >= 0
        lines.append(f"| {q.name} | {q.instructions:,} | {q.start_mismatches} | {q.end_mismatches} | {q.max_diff} | "
                     f"{ooo.get(q.name, '-')} | {f'{q.data_words:,}' if dw else '-'} | "
                     f"{q.data_mismatches if dw else '-'} |")
    verdict = ("0 mismatches, 0 cycles difference" if r.ok else
               f"{r.mismatches} mismatches, {r.chip_cycles - r.sim_cycles} cycles difference")
    if r.data_note:
        data_line = (f"Data path: none on this chip ({r.data_note}); the compute units are timers of the sim.units "
                     "formulas and nothing is compared bit-exact.")
    else:
        eq = ", ".join(q.name for q in r.queues if q.data_words >= 0)
        data_line = (f"Data path: the projection tiles of {eq} run on the chip's data path ({p.data_banks} weight "
                     f"banks, one memory-port data beat a cycle): {r.data_words:,} psum words against {r.data_ref}, "
                     f"**{r.data_mismatches} data mismatches** (weight reads whose data came after their response: "
                     f"{r.data_late}; act words written after their quantize word: {r.act_late}); the other "
                     "compute units and instructions are timers of their sim.units cycle counts.")
        full, n, absent = r.acc_buffers
        if n:
            gone = {}
            for a in absent:
                gone[a.split()[-1]] = gone.get(a.split()[-1], 0) + 1
            codes = (f"{cfg.fp4.format.upper()} codes and block scales" if cfg.has("fp4") and not cfg.has("tint")
                     else "ternary codes")
            data_line += (
                f"\n\nWhole-model golden: the DRAM image holds {model}'s deployed {codes} (seeded weights) by "
                "row group. " + (
                    f"The act buffer the projections read is written by the chip's SFU quantize engine: {r.sfu[0]} "
                    f"quantize words, {r.sfu[1]:,} INT8 words ({r.sfu[2]:,} elements) against the golden's "
                    f"`<quant>.q`, **{r.sfu[3]} mismatches**"
                    + (f"; their input comes from the chip's RMSNorm engine: {r.norm[0]} norm words (SubLN and final "
                       f"norms included), {r.norm[1]:,} Q7.8 words ({r.norm[2]:,} elements) and their rows' amax "
                       f"against the golden's `<norm>.out`, **{r.norm[3]} mismatches**"
                       + (f"; the residual stream feeding them from the chip's residual engine: {r.res[0]} residual "
                          f"adds, {r.res[1]:,} Q7.8 words ({r.res[2]:,} elements) against the golden's "
                          f"`<residual>.out`, **{r.res[3]} mismatches**" if r.res[0] else "")
                       + (f"; the gating output feeding SubLN from the chip's gating engine: {r.act[0]} gating "
                          f"words, {r.act[1]:,} Q7.8 words ({r.act[2]:,} elements) against the golden's "
                          f"`ffn.act.out`, **{r.act[3]} mismatches**" if r.act[0] else "")
                       + " (the bench writes through the load port, before the word they feed starts: "
                       + ("" if r.embed[0] else "the step's embedding rows, ") + "the attention output before SubLN with its rows' sum of squares where the "
                       "chip does not write it, and the y of a residual whose projection is not requantized on the chip; the gains, the deployed "
                       "Q5.10 norms, and the requantizers' multipliers before `start`). " if r.norm[0] else
                       "; their input (the norm's Q7.8 output and each row's amax, the golden's) is written by the "
                       "bench through the load port in the norm word's cycles. ")
                    if r.sfu[0] else
                    "The bench writes the golden's INT8 activations into the act buffer in the cycles of the SFU "
                    "quantize word that produces them (through the load port). ")
                + f"{n} projection accumulator buffers (`layers.L.<op>.acc`, per step) have tiles on the "
                f"data path, {full} of them compared in every element; without tiles on it (their unit a timer, or "
                "the host's lm_head): " + (", ".join(f"{o} ({c} step{'s' if c > 1 else ''})" for o, c in sorted(gone.items())) or "none")
                + ".")
        if r.rq_refused and not r.rq:
            data_line += f"\n\nPsum requantizers: no projection requantized on the chip ({'; '.join(r.rq_refused)})."
        elif r.rq or r.rq_drain or r.rq_refused:
            per: dict[str, list[int]] = {}
            for name, n_, bad in r.rq:
                v = per.setdefault(name.split()[-1].split(".", 2)[-1], [0, 0, 0])
                v[0], v[1], v[2] = v[0] + 1, v[1] + n_, v[2] + bad
            vq = r.params.kvw_depth and r.params.vquant[0]
            data_line += ("\n\nPsum requantizers behind the projection engines' psum ports (lowbit.rtl.chip_requant) "
                          "write the Q7.8 projection outputs the residual engine (y) and the gating engine (gate, up) "
                          "read, the RoPE engine's inputs (q, k) and " + ("the V quantizer's rows (v)" if vq else
                                                                          "v, checked at their write ports (no V "
                                                                          "quantizer on this chip reads it)")
                          + ", each projection's elements against the golden's `<op>.out`: "
                          + "; ".join(f"`{o}` {c} projections, {e:,} elements, **{b} mismatches**"
                                      for o, (c, e, b) in sorted(per.items()))
                          + (f"; kept off by the drain rule: {', '.join(r.rq_drain)}" if r.rq_drain else "")
                          + (f"; not requantized on the chip: {'; '.join(r.rq_refused)}" if r.rq_refused else "")
                          + ". Where some tile of a projection runs on a timer, the bench writes its output.")
        if r.qk[0]:
            qsrc = ("the chip's RoPE engine's quantized queries" + (f" (the bench's for {len(r.rope_bench)} RoPE words)"
                                                                     if r.rope_bench else "")
                    if r.rope[0] else "the golden's quantized queries (`qk.q8`, written in their RoPE words' cycles)")
            data_line += (f"\n\nQ K^T on data: {r.qk[0]} BoothFlex INT8 tiles read {qsrc} and the K rows of the kv "
                          "buffer; their psum "
                          f"words are in the table, against `layers.L.attn.qk.acc`: {r.qk[1]} of the {r.qk[2]} score "
                          "accumulator buffers checked in every attended element (a decode step whose LOP drops "
                          "keys over the K rows gathered from the index FIFO: lowbit.rtl.chip_attn)."
                          + (" On this FP4 design BoothFlex has a data path for its attention tiles only (no TINT "
                             "core: lowbit.rtl.chip_booth.booth_data) and reads its 16-element act words as halves of "
                             "the FP4 act word, in the cycle a 16-element buffer would deliver them "
                             "(chip_booth.half_word_reads)." if any(q.name == "fp4" for q in r.queues) else ""))
        if r.pv[0]:
            data_line += (f"\n\nP V on data (lowbit.rtl.chip_pv): {r.pv[0]} BoothFlex INT8 tiles read the probabilities "
                          "(`softmax.w8`) from the act buffer and the V rows of the kv buffer, against "
                          f"`layers.L.attn.av.acc`: {r.pv[1]} of the {r.pv[2]} P V accumulator buffers checked in "
                          "every element.")
        if r.embed[0]:
            data_line += (f"\n\nInput rows on data (lowbit.rtl.chip_embed): {r.embed[0]} embedding reads bring the DRAM "
                          "image's Q7.8 embedding rows over the memory port into layer 0's attn_norm input X, each "
                          f"row's sum of squares computed on the chip: {r.embed[1]:,} Q7.8 words ({r.embed[2]:,} "
                          f"elements) against the golden's `embed.out`, **{r.embed[3]} mismatches**.")
        if r.rope[0] or r.rope_bench:
            data_line += (f"\n\nRoPE on data (lowbit.rtl.chip_rope): {r.rope[0]} RoPE words on the chip's RoPE engine "
                          "(q and k from the requantizers, rotated with the compiler's table, quantized per head into "
                          "the act buffer's queries " + ("Q K^T reads" if r.qk[0] else "(Q K^T a timer here)")
                          + f"): {r.rope[1]:,} query words against `qk.q8`, "
                          f"**{r.rope[2]} mismatches**; {r.rope[3]:,} key words against `kv_append.k8`, **{r.rope[4]} "
                          f"mismatches**; {r.rope[5]:,} head rows' amax, **{r.rope[6]} mismatches**"
                          + (f"; {len(r.rope_bench)} RoPE words left timers, their queries the bench's." if r.rope_bench
                             else f"; the LOP engine's query memory too ({r.lop_chip_q} groups)." if r.lop_chip_q
                             else "; the LOP engine's query memory is still written by the bench." if r.params.lop_grp
                             else "."))
        if r.attn_note:
            vq = r.params.kvw_depth and r.params.vquant[0]
            data_line += ("\n\nAttention off data: BoothFlex's Q K^T and P V tiles, the score stage"
                          + (" and the softmax words" if vq else ", the softmax words and the V quantizer")
                          + f" are timers of their sim.units cycles, their data the bench's ({r.attn_note}).")
        if r.sm[0] or r.sm[6]:
            data_line += (f"\n\nSoftmax on data (lowbit.rtl.chip_softmax): {r.sm[0]} softmax words on the SFU's "
                          f"softmax engine, then the p x amax_v quantize: {r.sm[1]} probability rows, {r.sm[2]:,} INT8 "
                          f"words and {r.sm[3]} row scales against `softmax.w8` / `w_amax`, **{r.sm[4]} mismatches**; "
                          f"{r.sm[6]} rows still written by the bench. "
                          + (f"The scores and each row's max come from the score requantizer behind BoothFlex's psum "
                             f"port (lowbit.rtl.chip_scores): {r.sc[1]:,} scores and {r.sc[2]} row maxes of {r.sc[0]} "
                             f"Q K^T tiles against `qk.scores`, **{r.sc[3]} mismatches**; each key's k_amax from the "
                             "RoPE engine into the key-scale memory at its K write's position (lowbit.rtl.chip_kscales): "
                             f"{r.ks[2]} keys against `kv_append.k_amax`, **{r.ks[3]} mismatches**, {r.ks[0]} Q K^T tiles "
                             f"reading their {r.ks[1]} keys' there by position (the keys LOP gathers by the positions "
                             f"their fetches recorded), {r.ks[4]} before the write, {r.ks[5]} k_amax still written by "
                             f"the bench; each key's amax_v from the V quantizer's scale memory in {r.sm[7]} rows, from "
                             f"the bench in {r.sm[1] - r.sm[7]}" if r.sc[0] else "The scores, row max and amax_v the "
                             "engine reads are written by the bench in the Q K^T tile's cycles")
                          + f"; {r.sm[5]} batches late.")
        elif r.pv[0]:
            data_line += ("\n\nSoftmax: no softmax engine and score stage on this chip (lowbit.rtl.chip_softmax.sm_ok); "
                          "the bench writes every probability row and its scale in the softmax words' cycles"
                          + ("" if r.av else ", and the attention output with its rows' S before attn_sub_norm (no "
                             "writer: lowbit.rtl.chip_av.av_ok)") + ".")
        if r.av:
            son = [x for x in r.av if x[3]]
            data_line += (f"\n\nAttention output on data (lowbit.rtl.chip_av): BoothFlex's P V psum words of {len(r.av)} "
                          "steps x layers requantized into attn_sub_norm's input, "
                          f"{sum(x[1] for x in r.av):,} elements against the golden's `attn.av.out`, "
                          f"**{sum(x[2] for x in r.av)} mismatches**; each row's sum of squares from the chip in "
                          f"{len(son)} of them ({sum(x[3] for x in son)} rows, **{sum(x[4] for x in son)} "
                          "mismatches**), the bench's where the drain rule keeps it off.")
        if r.lop_engine[0]:
            g, n, bad, cb, _ = r.lop_engine
            data_line += (f"\n\nLOP on data: the chip's LOP engine (lowbit.rtl.chip_lop.LopGroupSelect) scores and "
                          f"selects {g} KV groups from their LO codes ({r.lop_fill[0]} groups' from their LO-code "
                          f"read's data beats, the others' written by the bench in the read's cycles) and INT8 queries; "
                          f"{n:,} index FIFO writes against the golden's "
                          f"`layers.L.attn.lop.sel`, **{bad} mismatches**; done strobes off the LOP words' ends: {cb}; "
                          f"late writes: {r.lop_late}."
                          + (f" {r.kv_ind[1]} of dma_kv's {r.kv_ind[0]} indirect words took their DRAM address and "
                             f"size from the index FIFO, {r.kv_ind[2]} not one run." if r.kv_ind[0] else
                             " No step drops keys here (K at least every context): every K/V fetch is direct."))
        if r.lop_note:
            data_line += f"\n\nLOP engine: {r.lop_note}."
        if r.lop[0]:
            data_line += (f"\n\nLOP selections: the program is compiled from the golden's data-driven selections "
                          f"(`layers.L.attn.lop.sel`, lowbit.rtl.chip_model.compile_from_golden); {r.lop[0]} of them "
                          f"drop keys (decode step, layer, KV head), their indirect K/V fetches read {r.lop[1]:,} rows, "
                          f"**{r.lop[2]} differing from the selection**.")
        if r.kvw:
            verdict_kv = "0 differing" if kv_ok(r.kvw) else kv_why(r.kvw)
            data_line += f"\n\nKV writes on data (lowbit.rtl.chip_kv): {kv_line(r.kvw)}: **{verdict_kv}**."
        if r.kv_chunks:
            data_line += (f"\n\nKV reads carry data: dma_kv's K/V chunk reads land in the kv buffer by the memory port's "
                          f"data beats (the K/V rows the program's writes put into the DRAM image, or the golden's "
                          f"`kv_append.k8` / `v8` rows where the chip has no KV writer); "
                          f"{r.kv_chunks} chunks read back when their attention tile starts, {r.kv_units:,} buffer "
                          f"units, **{r.kv_mismatches} mismatches**. "
                          + ("" if r.pv[0] else "The P V tiles stay timers." if r.qk[0] else
                             "The attention tiles stay timers."))
    lines += [
        "",
        f"Total cycles: `lowbit sim --program` {r.sim_cycles:,}, chip RTL {r.chip_cycles:,}: **{verdict}**"
        f" (late responses {r.late}, response-lane overflows {r.lane_overflow}).",
        "",
        f"Instruction port (lowbit.rtl.chip_fetch; docs/rtl.md \"Instruction fetch\"): {r.feed[0]:,} words fetched "
        f"into the queues' rings over {r.feed[1]:,} port cycles of {r.sim_cycles:,} ({p.ifetch_bits}-bit beats, "
        f"{p.ifetch_latency}-cycle latency); {r.feed[2]} words late by the fetch rule, least slack {r.feed[3]} "
        f"cycles; the chip's requests against the rule's: **{r.feed[4]} differing**.",
        "",
        "\"Completed out of issue order\" counts DMA requests that the DRAM model completes before an "
        "earlier-issued request of the same engine; the chip's scoreboard sees each request's own completion "
        "(docs/rtl.md \"Chip\").",
        "",
        data_line,
        "",
        f"Times on this host ({platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, under `nice -n 19` on a shared 2-core machine): Verilator build "
        f"{build / 60:.1f} min (cached by Verilog content, reused by later runs), run {run_s:.0f} s wall "
        f"(Verilog conversion, loader, reference schedule and the cocotb bench; the build excluded).",
        "",
    ]
    lines += [f"Note: {n}." for n in r.notes]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    from lowbit.sim.atomic import atomic_write

    ap = argparse.ArgumentParser(prog="python -m lowbit.rtl.chip_report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--hw", required=True)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--model", default="bitnet-tiny")
    ap.add_argument("--prefill", type=int, default=4)
    ap.add_argument("--decode", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("reports"), help="directory for chip-<hw>.md")
    a = ap.parse_args(argv)
    try:
        text = chip_report(a.hw, a.sets, a.model, a.prefill, a.decode)
    except LowbitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write(a.out / f"chip-{Path(a.hw).stem}.md", text)
    print(a.out / f"chip-{Path(a.hw).stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
