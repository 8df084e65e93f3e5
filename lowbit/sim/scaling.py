"""The validation report's section on the lm_head on the chip and on multi-chip systems (`lowbit validate`).

Three studies (`Study`: by default on the vitallm preset, a 64-token prefill then 16 decode tokens):
- lm_head placement: host (the papers' setting) vs ternary or INT8 weights on the chip, for an untied
  (BitNet-3B, vocab 32002) and a tied model (BitNet-2B4T, vocab 128256, one shared table);
- 1 -> 2 -> 4 chips on BitNet-3B: tensor parallel, pipeline parallel, and pipeline parallel with one
  sequence per stage in flight (micro-batches = chips);
- how many chips serve an 8B model at 30 tok/s: the LLaMA-3-8B shape (config.json preset) with ternary
  projections (DESIGN ASSUMPTION: a BitNet-b1.58-style 8B), tensor parallel, per lm_head placement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lowbit.sim.config import HwConfig, load_config
from lowbit.sim.engine import simulate
from lowbit.sim.modelspec import get_model
from lowbit.sim.multichip import MultiChipResult, simulate_multichip
from lowbit.sim.workloads import standard_trace

PLACEMENTS = ("host", "ternary", "int8")


@dataclass(frozen=True, kw_only=True)
class Study:
    """What the section simulates (defaults: the report's; a test runs a small one)."""

    hw: str = "vitallm"
    lm_models: tuple[str, ...] = ("bitnet-b1.58-3b", "bitnet-b1.58-2b4t")
    scale_model: str = "bitnet-b1.58-3b"
    big_model: str = "meta-llama-3-8b"
    chips: tuple[int, ...] = (1, 2, 4)
    target: float = 30.0  # decode tok/s the big model must reach
    prefill: int = 64
    decode: int = 16

    @property
    def jobs(self) -> int:
        """Simulations the section runs."""
        return len(PLACEMENTS) * (len(self.lm_models) + len(self.chips)) + 3 * (len(self.chips) - 1)


JOBS = Study().jobs


def section(study: Study = Study(), tick: Callable[[], None] | None = None) -> str:
    """The report section (markdown)."""
    st = study
    base = load_config(st.hw)
    done = tick or (lambda: None)

    def hw(lm: str) -> HwConfig:
        return base.replace(lm_head=lm)

    lm_rows = []
    for name in st.lm_models:
        tr = standard_trace(name, st.prefill, st.decode)
        runs = {}
        for lm in PLACEMENTS:
            runs[lm] = simulate(hw(lm), tr)
            done()
        lm_rows.append((name, runs))
    tr = standard_trace(st.scale_model, st.prefill, st.decode)
    one = dict(lm_rows).get(st.scale_model, {}).get("host") or simulate(base, tr)
    scale: list[tuple[str, int, MultiChipResult]] = []
    for label, par, mb in (("tp", "tp", False), ("pp", "pp", False), ("pp, micro-batches = chips", "pp", True)):
        for n in st.chips[1:]:
            scale.append((label, n, simulate_multichip(base, tr, n, par, micro_batches=n if mb else 1)))
            done()
    big = get_model(st.big_model).with_format("ternary")
    btr = standard_trace(big, st.prefill, st.decode)
    big_rows = {}
    for lm in PLACEMENTS:
        for n in st.chips:
            big_rows[(lm, n)] = simulate_multichip(hw(lm), btr, n, "tp")
            done()
    return _render(st, base, lm_rows, one, scale, big, big_rows)


def _render(st: Study, cfg: HwConfig, lm_rows, one, scale, big, big_rows) -> str:
    out: list[str] = []
    w = out.append
    lk = cfg.link
    w("## lm_head on the chip and multi-chip systems\n")
    w(f"Workload: {st.prefill}-token prefill, then {st.decode} decode tokens, batch 1, `{cfg.name}` "
      "(lowbit/sim/scaling.py). "
      "On the chip, the lm_head quantizes the last position's final-norm output on the SFU, streams the d_model "
      "x vocab weights through the projection cores once per step and writes the logits out as bf16 "
      "(lowbit/sim/lower.py); with tied embeddings the embedding rows come from the same table.\n")
    w("### lm_head placement\n")
    w("| model | lm_head | decode tok/s | lm_head weight bytes / step | lm_head unit-busy cycles / step | "
      "share of the decode step |")
    w("|---|---|---|---|---|---|")
    for name, runs in lm_rows:
        h = runs["host"].decode_tokens_per_s
        m = get_model(name)
        for lm, r in runs.items():
            steps = len(r.step_cycles)
            tied = ", tied" if m.tied_embeddings and lm != "host" else ""
            busy = f"{r.op_cycles.get('lm_head', 0) // steps:,}" if lm != "host" else "-"
            share = f"{100 * (1 - r.decode_tokens_per_s / h):.1f} %" if lm != "host" else "(excluded)"
            wb = f"{r.lm_head['weight_bytes_per_step']:,}" if lm != "host" else "-"
            w(f"| {name} (vocab {m.vocab:,}{tied}) | {lm} | {r.decode_tokens_per_s:.2f} | {wb} | {busy} | {share} |")
    w("\nThe ternary lm_head runs on the TINT cores and BoothFlex like any projection; the INT8 one only on "
      f"BoothFlex ({cfg.booth.int8_macs_per_cycle} INT8 MAC/cycle), which is why it costs several times more.\n")
    w(f"### 1 -> 2 -> 4 chips, {st.scale_model}\n")
    w(f"Link (`[link]`): {lk.bandwidth_gbps:g} GB/s per direction, {lk.latency_ns:g} ns per message, "
      f"{lk.energy_pj_per_bit:g} pJ/bit (UCIe 2D standard package; latency a design assumption); ring "
      "all-reduce after o and down and for the per-token statistics of split norms/quantizers (tp), one send "
      "per stage boundary (pp); lowbit/sim/multichip.py. tok/s counts every sequence's tokens.\n")
    w("| partitioning | chips | decode tok/s | speedup | prefill s | link bytes / token (prefill + decode) | "
      "link share of time | TINT0 busy per chip | link energy / token |")
    w("|---|---|---|---|---|---|---|---|---|")
    one_tps = one.decode_tokens_per_s
    w(f"| one chip | 1 | {one_tps:.2f} | 1.00x | {one.prefill_latency_s:.3f} | 0 | - | "
      f"{100 * one.utilization.get('tint0', 0.0):.1f} % | - |")
    for label, n, r in scale:
        tps = r.decode_tokens_per_s
        per_tok = r.link["bytes"] / max(1, r.prefill_tokens + r.decode_tokens)
        tint = sorted(c["utilization"].get("tint0", 0.0) for c in r.per_chip)
        lo, hi = f"{100 * tint[0]:.1f}", f"{100 * tint[-1]:.1f}"
        util = f"{lo} %" if lo == hi else f"{lo}-{hi} %"
        share = r.link["critical_path_cycles"] / r.cycles
        w(f"| {label} | {n} | {tps:.2f} | {tps / one_tps:.2f}x | {r.prefill_latency_s:.3f} | {per_tok:,.0f} | "
          f"{100 * share:.2f} % | {util} | {1e6 * r.link['energy_j'] / max(1, r.prefill_tokens + r.decode_tokens):.3f} µJ |")
    w("\nTensor parallelism divides every projection's weights and MACs by the chip count, so decode speeds up "
      "almost linearly: the per-token all-reduces are small (d_model x 2 B) and latency-bound. Pipeline "
      "parallelism at batch 1 only adds capacity (each stage waits for the previous one); with as many "
      "sequences in flight as stages (micro-batches), every stage stays busy and throughput scales instead of "
      "latency; their prefill column is the time to prefill all of their prompts.\n")
    w(f"### How many {cfg.name}-class chips serve {st.big_model} at {st.target:g} tok/s?\n")
    w(f"{st.big_model} shape ({big.n_layers} layers, d {big.d_model}, {big.n_heads}/{big.n_kv_heads} heads, FFN "
      f"{big.d_ffn}, vocab {big.vocab:,}) with ternary projections (DESIGN ASSUMPTION: a BitNet-b1.58-style model "
      f"of that shape, {big.projection_params * 2 / 8 / 1e9:.2f} GB of 2-bit weights per token), tensor "
      "parallel, batch 1, decode tok/s:\n")
    w("| lm_head | " + " | ".join(f"{n} chip{'s' if n > 1 else ''}" for n in st.chips) + " | chips for "
      f"{st.target:.0f} tok/s |")
    w("|---|" + "---|" * (len(st.chips) + 1))
    answers = {}
    for lm in PLACEMENTS:
        vals = [big_rows[(lm, n)].decode_tokens_per_s for n in st.chips]
        need = next((n for n, v in zip(st.chips, vals, strict=True) if v >= st.target), None)
        answers[lm] = need
        w(f"| {lm} | " + " | ".join(f"{v:.2f}" for v in vals) + f" | {need if need else f'> {st.chips[-1]}'} |")

    def chips(lm: str) -> str:
        return f"{answers[lm]}" if answers[lm] else f"more than {st.chips[-1]}"

    tern = (cfg.tint.macs_per_cycle if cfg.has("tint") else 0) + cfg.booth.ternary_macs_per_cycle
    macs, gb = big.projection_params, big.projection_params * 2 / 8 / 1e9
    w(f"\n**Answer:** {chips('host')} with the lm_head on the host, {chips('ternary')} with a ternary lm_head on "
      f"the chip, {chips('int8')} with an INT8 one. One chip's {tern} ternary MAC/cycle give a compute floor of "
      f"{cfg.clock_hz * tern / macs:.1f} tok/s for {macs / 1e9:.2f} G MAC/token, and {st.target:.0f} tok/s needs "
      f"{gb * st.target:.0f} GB/s of weight stream from its {cfg.dram.peak_bytes_per_s / 1e9:.1f} GB/s DRAM "
      f"(DRAM capacity is not modelled: {gb:.2f} GB of weights in all, split over the chips).\n")
    return "\n".join(out) + "\n"
