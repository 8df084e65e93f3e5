"""`lowbit validate vitallm`: simulate the papers' workloads and write reports/validation-vitallm.md.

Nothing is fitted: every number comes from the preset (lowbit/sim/presets/vitallm*.toml, each line cites its
source) and the simulator's structural rules (lowbit/sim/lower.py docstring). The report lists the parameters
with their sources, the headline comparison against [J] 70.70 tok/s and [C] 72.46 tok/s / 0.88 s, the LOP
ablation at several context lengths, the scheduling ablation and the BoothFlex-BS / FP4 variants.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from lowbit.sim import kvlop, scaling, serve
from lowbit.sim.config import PRESET_DIR, load_config
from lowbit.sim.engine import SimResult, simulate
from lowbit.sim.modelspec import get_model
from lowbit.sim.trace import Trace
from lowbit.sim.workloads import standard_trace, step_ops

MODEL = "bitnet-b1.58-3b"
PAPER = {"J_decode": 70.70, "C_decode": 72.46, "C_prefill": 0.88}
ATTN_OPS = ("rope", "kv_append", "attn_qk", "softmax", "attn_av")


def classify(comment: str) -> str:
    c = comment.lower()
    if "design" in c or "assumption" in c or "choice" in c:
        return "design assumption"
    if "inferred" in c or "§4" in c:
        return "inferred"
    if re.search(r"\[(j|c|both)\]", c):
        return "paper"
    if "jedec" in c or "datasheet" in c or "brief" in c:
        return "datasheet (design assumption)"
    return "design assumption"


def parameter_table(preset: str) -> list[tuple[str, str, str, str]]:
    """(parameter, value, source class, comment) for every key of a preset file, from its comments.

    A key without its own comment inherits the comment block above its section (the preset convention)."""
    rows = []
    section = ""
    sram_name = ""
    sec_comment = ""
    block: list[str] = []
    for line in (PRESET_DIR / f"{preset}.toml").read_text().splitlines():
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            block.append(s.lstrip("# "))
            continue
        if s.startswith("["):
            new_sec = s.strip("[]")
            block = [b for b in block if b]
            if block or new_sec != section:  # repeated [[sram]] tables share the comment above the first
                sec_comment = " ".join(block)
            section = new_sec
            block = []
            continue
        if "=" not in s:
            continue
        if block and section:  # comments between a header and its keys describe the keys below them
            sec_comment = " ".join(b for b in block if b)
            block = []
        key, rest = s.split("=", 1)
        val, _, com = rest.partition("#")
        if section == "sram" and key.strip() == "name":
            sram_name = val.strip().strip('"')
            continue
        own = com.strip()
        ctx = own or sec_comment if section else own
        if not section and not own:
            ctx = " ".join(block)
        sec = f"sram[{sram_name}]" if section == "sram" else section
        name = f"{sec}.{key.strip()}" if section else key.strip()
        rows.append((name, val.strip(), classify(ctx) if ctx else "design assumption", ctx))
    return rows


def decode_step_trace(model: str, context: int, attention_only: bool = False) -> Trace:
    """One decode step at `context` (the new token is key number `context`), optionally attention ops only."""
    m = get_model(model)
    ops = step_ops(m, "decode", 1, 1, context)
    if attention_only:
        ops = [o for o in ops if o.op in ATTN_OPS]
    return Trace(m, context - 1, 1, ops, meta={"generator": "lowbit.sim.validation.decode_step_trace"})


# The headline run (64 + 128) under the previous scheduler, which no controller can execute: a ternary tile
# went to whichever of TINT0/TINT1/BoothFlex would finish it first, and buffers were byte pools (an
# out-of-order release made room at once). Measured on commit f3697b2 (the last one with that scheduler), so
# the report can show what the causal schedule (static unit assignment, ring buffers) changed.
BEFORE_CAUSAL = {"commit": "f3697b2", "decode_tokens_per_s": 69.48, "prefill_latency_s": 0.8592}


def causal_section(main: SimResult, decode: int) -> str:
    """Old vs new headline under the causal schedule (docs/isa.md, "Causality")."""
    b = BEFORE_CAUSAL
    rows = [("decode tokens/s", b["decode_tokens_per_s"], main.decode_tokens_per_s, 70.70, "70.70 [J]", "{:.2f}"),
            ("64-token prefill latency, s", b["prefill_latency_s"], main.prefill_latency_s, 0.88, "0.88 [C]", "{:.4f}")]
    out = ["## A schedule a controller can execute (old vs new)\n",
           "The scheduler now does only what per-unit in-order queue controllers can do with what they know at "
           "that cycle: each instruction runs on the unit the compiler assigned it to (a ternary tile goes, in "
           "program order, to the unit with the least compile-time load plus its cycles on it; "
           "lowbit.sim.tiling.UnitAssigner) instead of whichever unit would finish it first, and every SRAM buffer "
           "is a ring whose bytes return in allocation order instead of a byte pool. The same schedule is what "
           "`lowbit compile` writes as a program and `lowbit sim --program` runs (docs/isa.md).\n",
           f"| BitNet-3B 64 + {decode} | before (earliest-finish unit choice, byte pools; commit {b['commit']}) | "
           "now (static assignment, rings) | change | paper | now vs paper |",
           "|---|---|---|---|---|---|"]
    for name, old, new, ref, src, fmt in rows:
        out.append(f"| {name} | {fmt.format(old)} | {fmt.format(new)} | {_pct(new, old)} | {src} | "
                   f"{_pct(new, ref)} |")
    return "\n".join(out) + "\n"


def _pct(x: float, ref: float) -> str:
    return f"{100 * (x / ref - 1):+.1f} %"


def _step_s(r: SimResult) -> float:
    return r.cycles / r.clock_hz


def build_report(decode: int = 128, contexts: list[int] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> str:
    contexts = contexts or [128, 512, 1024, 2048]
    t0 = time.perf_counter()
    cfg = load_config("vitallm")
    jobs = 6 + 4 * len(contexts) + 2 + scaling.JOBS + serve.JOBS
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress:
            progress(done[0], jobs)

    tr = standard_trace(MODEL, 64, decode)
    main = simulate(cfg, tr, "dependency-aware")
    tick()
    ino = simulate(cfg, tr, "inorder")
    tick()
    bs = simulate(load_config("vitallm-bs"), tr, "dependency-aware")
    tick()
    single = simulate(cfg, tr, "dependency-aware", dual_core=False)
    tick()
    fcfg = load_config("vitallm-fp4")
    fp4 = simulate(fcfg, standard_trace(MODEL, 64, decode, fcfg.fp4.format), "dependency-aware")
    tick()
    lop_rows = []
    for L in contexts:
        full = decode_step_trace(MODEL, L)
        att = decode_step_trace(MODEL, L, attention_only=True)
        a = simulate(cfg, full, "dependency-aware")
        b = simulate(cfg, full, "dependency-aware", no_lop=True)
        c = simulate(cfg, att, "dependency-aware")
        d = simulate(cfg, att, "dependency-aware", no_lop=True)
        for _ in range(4):
            tick()
        lop_rows.append((L, a, b, c, d))
    Lmax = max(contexts)
    kv = kvlop.measure(cfg, get_model(MODEL), kvlop.PAPER["keys"])  # long context at the paper's point
    tick()
    sch_rows = []
    for name, lop in (("LOP on", False), ("LOP off", True)):
        x = simulate(cfg, decode_step_trace(MODEL, Lmax), "inorder", no_lop=lop)
        y = simulate(cfg, decode_step_trace(MODEL, Lmax), "dependency-aware", no_lop=lop)
        sch_rows.append((name, x, y))
        tick()
    scale = scaling.section(tick=tick)  # lm_head on the chip, multi-chip scaling (lowbit.sim.scaling)
    batching = serve.section(MODEL, tick=tick)  # batched decode throughput curve, one served load (lowbit.sim.serve)
    wall = time.perf_counter() - t0
    return render(cfg, decode, main, ino, bs, fp4, lop_rows, sch_rows, Lmax, wall, single, scale, kv=kv,
                  batching=batching)


def kv_section(cfg, kv: kvlop.Point) -> str:
    """The long-context KV section: one 3B decode step at the paper's 54.86x point, fixed-ratio vs data-driven."""
    f, d = kv.fixed, kv.data
    rows = [(f"K+V bytes read (dense: {kv.dense_kv_bytes:,})", f"{f['kv_read_bytes']:,}",
             f"{d['kv_read_bytes']:,}"),
            ("LO-code bytes read", f"{f['lop_bytes']:,}", f"{d['lop_bytes']:,}"),
            ("net reduction (dense / (K+V + LO codes))", f"{f['kv_reduction_x']:.2f}x", f"{d['kv_reduction_x']:.2f}x"),
            ("K+V-only reduction", f"{f['kv_only_reduction_x']:.2f}x", f"{d['kv_only_reduction_x']:.2f}x"),
            (f"attention cycles (same keys adjacent: {f['contiguous_attn_cycles']:,})",
             f"{f['attn_cycles']:,}", f"{d['attn_cycles']:,}"),
            (f"attention DRAM row-hit rate (adjacent: {100 * f['contiguous_row_hit_rate']:.1f} %)",
             f"{100 * f['row_hit_rate']:.1f} %", f"{100 * d['row_hit_rate']:.1f} %"),
            ("whole decode step, tok/s", f"{f['step_tokens_per_s']:.2f}", f"{d['step_tokens_per_s']:.2f}")]
    out = ["## Long context: KV traffic at the paper's point\n",
           f"One decode step of BitNet-3B at M = {kv.context:,} cached keys, where K+V alone is M/K = 54.84x "
           f"(K = {cfg.lop.k}), the paper's 54.86x. Every selected key and value is fetched at its own DRAM "
           "address, adjacent positions coalesced (docs/kv-cache.md). Fixed ratio: K keys spread evenly over the "
           "context (design assumption); data-driven: lowbit.sim.lop_select's rule on synthetic q/k (no captured "
           "3B q/k is available here). The curve from 512 to 32k keys, with a 32k-position GQA model: "
           "[reports/kv-lop/README.md](kv-lop/README.md) (`python -m lowbit.sim.kvlop --out reports/kv-lop`).\n",
           f"| one decode step, M = {kv.context:,} | fixed ratio | data-driven |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(out) + "\n"


def _util(r: SimResult) -> str:
    return ", ".join(f"{k} {100 * v:.1f} %" for k, v in r.utilization.items())


def render(cfg, decode, main, ino, bs, fp4, lop_rows, sch_rows, Lmax, wall, single, scale: str = "", kv: kvlop.Point | None = None,
           batching: str = "") -> str:
    m = get_model(MODEL)
    macs = m.projection_params
    d = cfg.dram
    bw = d.peak_bytes_per_s
    wbytes = macs * 2 / 8
    tern = (cfg.tint.macs_per_cycle if cfg.has("tint") else 0) + cfg.booth.ternary_macs_per_cycle
    out: list[str] = []
    w = out.append
    w("# VitaLLM validation: lowbit simulator vs the papers\n")
    w("Generated by `lowbit validate vitallm` (lowbit/sim/validation.py); do not edit by hand. "
      f"Simulator wall time for this report: {wall:.0f} s.\n")
    w("**Method.** BitNet b1.58 3B (26 layers, d 3200, 32 heads, FFN 8640, vocab 32002; "
      "`1bitLLM/bitnet_b1_58-3B` shapes) is lowered to tile instructions and scheduled cycle by cycle on the "
      "`vitallm` preset (lowbit/sim/presets/vitallm.toml). Every number below follows from architecture parameters "
      "(tables at the end) and the simulator's structural rules (lowbit/sim/lower.py, lowbit/sim/sched.py, lowbit/sim/dram.py). "
      "**No factor was fitted to the papers' numbers.** Workload: 64-token prefill (the [C] setting) then "
      f"{decode} decode tokens, batch 1; decode tokens/s = {decode} / decode time; the lm_head (bf16, 102 M "
      "MACs/token) runs on the host and is excluded, as in the papers' reported rates (design assumption).\n")
    w("## Headline\n")
    w("| metric | simulated | paper | difference |")
    w("|---|---|---|---|")
    w(f"| decode tokens/s | {main.decode_tokens_per_s:.2f} | 70.70 [J] | {_pct(main.decode_tokens_per_s, 70.70)} |")
    w(f"| decode tokens/s | {main.decode_tokens_per_s:.2f} | 72.46 [C] | {_pct(main.decode_tokens_per_s, 72.46)} |")
    w(f"| prefill latency, 64 tokens | {main.prefill_latency_s:.3f} s | 0.88 s [C] | {_pct(main.prefill_latency_s, 0.88)} |")
    ok = all(abs(x) <= 0.10 for x in (main.decode_tokens_per_s / 70.70 - 1, main.decode_tokens_per_s / 72.46 - 1,
                                      main.prefill_latency_s / 0.88 - 1))
    w(f"\nGoal (within ±10 % from architecture parameters alone): **{'met' if ok else 'NOT met'}**.\n")
    w(causal_section(main, decode))
    dec_cyc = main.decode_cycles / decode
    w("### Why these numbers (first-order checks)\n")
    w(f"- Ternary projection work: {macs / 1e9:.4f} G MAC/token. Peak ternary rate {tern} MAC/cycle "
      f"(2 TINT cores x {cfg.tint.lanes} lanes x {cfg.tint.tree_width} + BoothFlex {cfg.booth.ternary_macs_per_cycle}) "
      f"-> compute floor {macs / tern / 1e6:.2f} M cycles/token = {cfg.clock_hz * tern / macs:.1f} tok/s.")
    w(f"- Weight streaming: {wbytes / 1e9:.3f} GB/token at 2 bit/weight; LPDDR5X-8533 x64 peak "
      f"{bw / 1e9:.1f} GB/s -> floor {wbytes / bw * 1e3:.2f} ms/token = {bw / wbytes:.1f} tok/s at 100 % bus "
      "efficiency (the bank/refresh model sustains ~91 % on a long sequential stream).")
    w(f"- Simulated decode: {dec_cyc / 1e6:.2f} M cycles/token; utilisation {_util(main)}. Both the "
      "projection cores and the DRAM bus are close to saturation: decode is co-limited by compute and weight "
      "bandwidth, which is why it lands near the compute floor minus tile/queueing losses.")
    w(f"- Prefill: 64 tokens x {macs / 1e9:.3f} G MAC = {64 * macs / 1e9:.0f} G MAC -> "
      f"{64 * macs / tern / 1e9:.3f} s at 100 % of {tern} MAC/cycle; simulated {main.prefill_latency_s:.3f} s "
      f"(activations spill to DRAM because 64 x 3200 B exceeds the 16 KB usable act tile, so weights are "
      "re-read per token chunk; prefill stays compute-bound). The paper's 0.88 s is the same per-token rate as "
      "its decode (docs/reference/vitallm.md §4.3), consistent with a compute-bound machine of ~256 MAC/cycle.")
    w("- Differences: the simulated design is a reconstruction (the papers publish no array sizes, SRAM split "
      "or DRAM); tile-granularity losses (adder-tree latency per tile, BoothFlex rows), DMA queueing and "
      "refresh are modelled, while the papers' exact scheduling and any clock/DRAM details are unknown.\n")
    w("## Per-unit view of the headline run\n")
    w("| | dependency-aware | in-order |")
    w("|---|---|---|")
    w(f"| decode tokens/s | {main.decode_tokens_per_s:.2f} | {ino.decode_tokens_per_s:.2f} |")
    w(f"| prefill latency s | {main.prefill_latency_s:.4f} | {ino.prefill_latency_s:.4f} |")
    for k in main.utilization:
        w(f"| utilisation {k} | {100 * main.utilization[k]:.1f} % | {100 * ino.utilization[k]:.1f} % |")
    for k in main.dram_bytes:
        w(f"| DRAM {k} bytes | {main.dram_bytes[k]:,} | {ino.dram_bytes[k]:,} |")
    w(f"| DRAM row-hit rate | {100 * main.dram['row_hit_rate']:.1f} % | {100 * ino.dram['row_hit_rate']:.1f} % |")
    tbu = main.activity["ternary_macs_by_unit"]
    tot = sum(tbu.values()) or 1
    w(f"| ternary MACs on BoothFlex (dual-core load balancing) | {100 * tbu.get('booth', 0) / tot:.1f} % | "
      f"{100 * ino.activity['ternary_macs_by_unit'].get('booth', 0) / (sum(ino.activity['ternary_macs_by_unit'].values()) or 1):.1f} % |")
    w("")
    w("## LOP ablation (one decode step of BitNet-3B at context M)\n")
    w(f"K = {cfg.lop.k} keys per KV head (`lop.k`, design assumption), LO codes {4} bit/element stored in DRAM "
      "(`lop.surrogate_storage = \"dram\"`) and read for every cached key each step (counted separately as "
      "class `lop`). KV = K+V bytes read by exact attention. 'net reduction' = dense K+V bytes / (K+V bytes "
      "read + LO-code bytes read): the saving net of the surrogate reads LOP needs; 'K+V only' leaves the LO "
      "codes out. 'MHA' = the attention ops alone (RoPE, KV append, LOP, QK^T, softmax, score.V; projections "
      "excluded); 'step' = the whole decode step.\n")
    w("| M | KV bytes dense | KV bytes LOP | LO-code bytes | net reduction | K+V only | MHA cycles dense | MHA cycles LOP | MHA throughput gain | step tok/s dense | step tok/s LOP |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for L, a, b, c, d_ in lop_rows:
        kv_lop = a.lop["kv_read_bytes"]
        kv_dense = a.lop["kv_dense_bytes"]
        kv_lopc = kv_lop + a.lop["lop_bytes"]
        gain = d_.cycles / c.cycles - 1
        w(f"| {L} | {kv_dense:,} | {kv_lop:,} | {a.lop['lop_bytes']:,} | {kv_dense / kv_lopc:.2f}x | {kv_dense / kv_lop:.2f}x | "
          f"{d_.cycles:,} | {c.cycles:,} | {100 * gain:+.1f} % | {1 / _step_s(b):.2f} | {1 / _step_s(a):.2f} |")
    w("\nPaper (secondary sources, docs/reference/vitallm.md §3.6): KV traffic ≈54.86x lower and MHA throughput ≈+26.31 %. "
      "With K fixed, the KV-only reduction is M/K, so 54.86x corresponds to M ≈ 55 K "
      f"(≈ {int(54.86 * cfg.lop.k)} keys at K = {cfg.lop.k}); it cannot be reached at short contexts. Counting "
      "the LO codes (half the size of the K cache) caps the total reduction below 4x: the 54.86x figure "
      "therefore counts KV fetches only, as [C]'s '1 - K/M' wording suggests. The MHA gain in our model grows "
      "with M because dense attention work (MACs and KV bytes) grows with M while LOP's exact attention stays "
      "at K keys (only the cheap LO scoring grows); the paper's single +26 % figure suggests a short-context "
      "measurement or a faster INT8 attention core; the papers do not state the context length. In the "
      "headline run (M = 65..192) the LO-code reads are about as large as the KV reads they save, so at short "
      "context LOP mainly saves BoothFlex attention cycles, not DRAM bytes.")
    b8 = cfg.booth.int8_macs_per_cycle
    w(f"Why the MHA gain is large here: INT8 attention runs on BoothFlex at {b8} MAC/cycle "
      f"(booth.lanes x booth.width, design assumption); dense attention needs 2 x d x M x layers = "
      f"{2 * m.d_model * m.n_layers:,} x M MACs per token, i.e. {2 * m.d_model * m.n_layers / b8 / 1e3:.1f} k "
      "cycles per cached token, so without LOP attention is compute-bound on BoothFlex long before KV "
      "bandwidth binds; LOP cuts both the MACs and the KV bytes by M/K. A larger INT8 array would shrink "
      "the dense baseline and hence the gain.\n")
    if kv is not None:
        w(kv_section(cfg, kv))
    w("## Scheduling ablation (in-order vs dependency-aware)\n")
    w("In-order: every op waits for the previous op to finish (weight DMA included; double buffering only "
      "inside an op). Dependency-aware: true data dependencies, weight prefetch across op/step boundaries, "
      "head-level pipelining (Q/K/V tiles of head group g+1 overlap attention of group g), reduction passes "
      "fused into the producer's stream.\n")
    w("| workload | in-order | dependency-aware | gain |")
    w("|---|---|---|---|")
    w(f"| 64 + {decode}, decode tok/s | {ino.decode_tokens_per_s:.2f} | {main.decode_tokens_per_s:.2f} | "
      f"{_pct(main.decode_tokens_per_s, ino.decode_tokens_per_s)} |")
    w(f"| 64-token prefill, s | {ino.prefill_latency_s:.4f} | {main.prefill_latency_s:.4f} | "
      f"{_pct(ino.prefill_latency_s, main.prefill_latency_s)} faster |")
    for name, x, y in sch_rows:
        w(f"| one decode step at M = {Lmax}, {name}, tok/s | {1 / _step_s(x):.2f} | {1 / _step_s(y):.2f} | "
          f"{_pct(x.cycles, y.cycles)} |")
    w(f"| dual-core load balancing off (BoothFlex: attention only), 64 + {decode} decode tok/s | "
      f"{single.decode_tokens_per_s:.2f} | {main.decode_tokens_per_s:.2f} (on) | "
      f"{_pct(main.decode_tokens_per_s, single.decode_tokens_per_s)} |")
    w(f"| dual-core load balancing off, prefill s | {single.prefill_latency_s:.4f} | {main.prefill_latency_s:.4f} (on) | "
      f"{_pct(single.prefill_latency_s, main.prefill_latency_s)} faster |")
    w("\nAt short context decode is ~99 % projection work that streams weights at the bus limit in both "
      "policies (double buffering already overlaps DMA and compute inside each op), so the policy matters "
      "little; it matters when attention and nonlinear ops are a larger share (long context without LOP).\n")
    w("## Variants\n")
    w("| design | weights | decode tok/s | prefill s | notes |")
    w("|---|---|---|---|---|")
    w(f"| vitallm | ternary 2 bit | {main.decode_tokens_per_s:.2f} | {main.prefill_latency_s:.3f} | headline |")
    w(f"| vitallm-bs (BoothFlex-BS) | ternary 2 bit | {bs.decode_tokens_per_s:.2f} | {bs.prefill_latency_s:.3f} | "
      "bit-serial Booth: 1 digit/cycle, ternary = 1 digit; BoothFlex adds 16 instead of 64 ternary MAC/cycle |")
    w(f"| vitallm-fp4 | {fp4.model} {load_config('vitallm-fp4').fp4.format} (4.5 bit) | {fp4.decode_tokens_per_s:.2f} | "
      f"{fp4.prefill_latency_s:.3f} | FP4 core replaces TINT; BoothFlex cannot run FP4 tiles; 2.25x the weight bytes |")
    w("")
    if scale:
        w(scale)
    if batching:
        w(batching)
    w("## Parameters and their sources\n")
    w("Source classes: *paper* = stated in [J]/[C] abstracts; *inferred* = arithmetic on stated numbers "
      "(docs/reference/vitallm.md §4); *design assumption* = our choice (docs/reference/vitallm.md §5/§7); *datasheet* = JEDEC/vendor "
      "values for the assumed DRAM. Taken verbatim from the preset's comments.\n")
    w("| parameter | value | source | comment |")
    w("|---|---|---|---|")
    for name, val, src, com in parameter_table("vitallm"):
        w(f"| `{name}` | {val} | {src} | {com.replace('|', '/')} |")
    w("\nSimulator structural rules (design assumptions, lowbit/sim/lower.py): weight buffer split evenly between the "
      "units that consume weight tiles (2 TINT + BoothFlex), each share double-buffered (tiles ≤ 5461 B: 12 rows "
      "x 1600 or 1728 inputs); a unit is busy for the full start->done cycles of the lowbit.sim.units formula; a "
      "ternary tile goes to the unit the compiler's static assignment names (lowbit/sim/tiling.py) and each unit "
      "runs its instructions in program order; every SRAM buffer is a ring (bytes return in allocation order); one DMA queue for "
      "weights/activations and one for KV/LOP, many requests in flight, LPDDR5X bank/row/refresh model "
      "(lowbit/sim/dram.py); KV chunks of 81 keys (8 KB usable kv tile / head_dim 100); LO-code chunks of 81 keys; "
      "prefill attention is dense and causal; reductions fused into producers under dependency-aware "
      "scheduling. lm_head on the host.")
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover
    Path("reports/validation-vitallm.md").write_text(build_report())
