"""Torch-free generator of standard-shape traces (the same op sequence `models` captures).

Per decoder layer and step, in order (BitNet b1.58 block, docs/reference/numerics.md §1.4):
    rmsnorm -> quantize -> linear q,k,v -> rope -> kv_append -> attn_qk -> softmax -> attn_av
    -> [rmsnorm attn_sub_norm if SubLN] -> quantize -> linear o -> elementwise add
    -> rmsnorm -> quantize -> linear gate,up (up only if not gated) -> activation
    -> [rmsnorm ffn_sub_norm if SubLN] -> quantize -> linear down -> elementwise add
Model level: embedding first (layer -1); final rmsnorm and lm_head last (layer -1).
Prefill is one step (step 0, tokens = P, context = P, causal); decode step s has tokens = 1 and
context = P + s (the new token's key is appended before attention).

Batched steps (`batch_trace`, `batched_step_ops`): every op runs once over the step's tokens of all sequences
(weights fetched once per step for the whole batch), except the per-sequence attention ops (kv_append, attn_qk,
softmax, attn_av; lowbit.sim.trace.PER_SEQUENCE), one set per sequence with its own tokens and context, in
sequence order. Traces are generated step by step as the simulator consumes them (lowbit.sim.trace.GeneratedOps),
so memory does not grow with the number of steps.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from lowbit.sim.errors import WorkloadError
from lowbit.sim.modelspec import ModelSpec, get_model
from lowbit.sim.trace import PER_SEQUENCE, GeneratedOps, Op, SeqSpec, Trace, chunk_count, logits_rows

ACT_FN = {"swiglu": ("silu", True), "relu2_glu": ("relu2", True), "gelu_glu": ("gelu", True),
          "relu_glu": ("relu", True), "gelu": ("gelu", False), "relu2": ("relu2", False),
          "silu": ("silu", False), "relu": ("relu", False)}


def layer_ops(m: ModelSpec, layer: int, phase: str, step: int, tokens: int, context: int) -> list[Op]:
    """The ops of one decoder layer for one step. The attention width is n_heads * head_dim (q out, o in),
    which may differ from d_model; a LayerNorm model's norms are rmsnorm ops with role "layernorm"."""
    d, hd, H, KV, F, A = m.d_model, m.head_dim, m.n_heads, m.n_kv_heads, m.d_ffn, m.attn_dim
    nrole = "layernorm" if m.norm == "layernorm" else ""
    fmt = m.weight_format
    p = f"layers.{layer}"

    def op(kind: str, name: str, role: str = "", **args) -> Op:
        return Op(kind, f"{p}.{name}", layer, phase, step, args, role)

    def lin(name: str, role: str, fin: int, fout: int) -> Op:
        return op("linear", name, role, tokens=tokens, in_features=fin, out_features=fout, weight_format=fmt)

    fn, gated = ACT_FN[m.ffn_act]
    att = dict(tokens=tokens, heads=H, kv_heads=KV, head_dim=hd, context=context)
    ops = [
        op("rmsnorm", "attn_norm", nrole, tokens=tokens, dim=d),
        op("quantize", "attn_quant", tokens=tokens, dim=d),
        lin("attn.q", "q", d, A),
        lin("attn.k", "k", d, KV * hd),
        lin("attn.v", "v", d, KV * hd),
        op("rope", "attn.rope", tokens=tokens, heads=H, kv_heads=KV, head_dim=hd),
        op("kv_append", "attn.kv_append", tokens=tokens, kv_heads=KV, head_dim=hd, context=context),
        op("attn_qk", "attn.qk", **att),
        op("softmax", "attn.softmax", tokens=tokens, heads=H, context=context),
        op("attn_av", "attn.av", **att),
    ]
    if m.subln:
        ops.append(op("rmsnorm", "attn_sub_norm", nrole, tokens=tokens, dim=A))
    ops += [
        op("quantize", "o_quant", tokens=tokens, dim=A),
        lin("attn.o", "o", A, d),
        op("elementwise", "attn_residual", tokens=tokens, dim=d, fn="add"),
        op("rmsnorm", "ffn_norm", nrole, tokens=tokens, dim=d),
        op("quantize", "ffn_quant", tokens=tokens, dim=d),
    ]
    if gated:
        ops.append(lin("ffn.gate", "gate", d, F))
    ops += [lin("ffn.up", "up", d, F), op("activation", "ffn.act", tokens=tokens, dim=F, fn=fn, gated=gated)]
    if m.subln:
        ops.append(op("rmsnorm", "ffn_sub_norm", nrole, tokens=tokens, dim=F))
    ops += [
        op("quantize", "down_quant", tokens=tokens, dim=F),
        lin("ffn.down", "down", F, d),
        op("elementwise", "ffn_residual", tokens=tokens, dim=d, fn="add"),
    ]
    return ops


def step_ops(m: ModelSpec, phase: str, step: int, tokens: int, context: int, logits: int | None = None) -> list[Op]:
    """One whole forward step: embedding, all layers, final norm, lm_head; `logits`, if given, is the
    lm_head's "logits" field (lowbit.sim.trace.logits_rows: positions whose logits the step produces)."""
    ops = [Op("embedding", "embed", -1, phase, step, dict(tokens=tokens, dim=m.d_model, vocab=m.vocab))]
    for layer in range(m.n_layers):
        ops += layer_ops(m, layer, phase, step, tokens, context)
    ops.append(Op("rmsnorm", "final_norm", -1, phase, step, dict(tokens=tokens, dim=m.d_model),
                  "layernorm" if m.norm == "layernorm" else ""))
    head = dict(tokens=tokens, in_features=m.d_model, out_features=m.vocab, weight_format=m.lm_head_format)
    if logits is not None:
        head["logits"] = logits
    ops.append(Op("lm_head", "lm_head", -1, phase, step, head))
    return ops


def batched_step_ops(m: ModelSpec, phase: str, step: int, parts: list[tuple[int, int, int, str]],
                     logits: int | None = None) -> list[Op]:
    """One forward step of several sequences: `parts` = (seq, tokens, context, phase) per sequence (its phase
    names its attention ops; a sequence's context includes its tokens of this step). Shared ops run over the
    sum of the tokens; the per-sequence attention ops repeat per sequence with its own tokens and context.
    The lm_head produces `logits` rows: one per sequence whose last position is in the step (default: every
    part, each a decode token or a whole prompt; a served step passes the count without its prompt chunks
    that do not end their prompt)."""
    T = sum(t for _, t, _, _ in parts)
    ops = step_ops(m, phase, step, T, parts[0][2], len(parts) if logits is None else logits)
    out: list[Op] = []
    i = 0
    while i < len(ops):
        o = ops[i]
        if o.op != PER_SEQUENCE[0]:
            out.append(o)
            i += 1
            continue
        block = ops[i:i + len(PER_SEQUENCE)]
        for seq, t, ctx, ph in parts:
            for b in block:
                args = dict(b.args, tokens=t, context=ctx)
                out.append(Op(b.op, b.name, b.layer, ph, step, args, b.role, seq=seq))
        i += len(PER_SEQUENCE)
    return out


def _check_lengths(m: ModelSpec, seqs: list[SeqSpec]) -> None:
    for b, q in enumerate(seqs):
        if min(q.context, q.prefill, q.decode) < 0 or q.prefill + q.decode == 0:
            raise WorkloadError(f"sequence {b}: context = {q.context}, prefill = {q.prefill}, decode = {q.decode}: "
                                "need values >= 0 and at least one prefill or decode token")
        if q.context + q.prefill + q.decode > m.max_positions:
            raise WorkloadError(f"context + prefill + decode = {q.context + q.prefill + q.decode} exceeds {m.name}'s "
                                f"max_positions {m.max_positions}")


def _model(model: str | ModelSpec, weight_format: str | None) -> ModelSpec:
    m = get_model(model) if isinstance(model, str) else model
    if weight_format:
        m = m.with_format(weight_format)
    m.validate()
    return m


def standard_trace(model: str | ModelSpec, prefill: int, decode: int, weight_format: str | None = None,
                   prefill_chunk: int | None = None) -> Trace:
    """Shapes-only trace of `prefill` prompt tokens then `decode` generated tokens, generated step by step as it
    is consumed (lowbit.sim.trace.GeneratedOps). `prefill_chunk` = C prefills the prompt in steps of C tokens
    (chunked prefill, Sarathi-Serve, OSDI'24: chunk i attends causally to all earlier positions; weights are
    read once per chunk; final norm and lm_head run in the last chunk only, whose lm_head then carries logits = 1:
    the prompt's last position), which bounds the instructions held
    at once to one chunk's; None: the whole prompt in one step."""
    m = _model(model, weight_format)
    if prefill < 0 or decode < 0 or prefill + decode == 0:
        raise WorkloadError(f"prefill = {prefill}, decode = {decode}: need prefill >= 0, decode >= 0 and at least one token")
    if prefill + decode > m.max_positions:
        raise WorkloadError(f"prefill + decode = {prefill + decode} exceeds {m.name}'s max_positions {m.max_positions}")
    if prefill_chunk is not None and prefill_chunk < 1:
        raise WorkloadError(f"prefill chunk {prefill_chunk}: must be >= 1 token")
    C = prefill_chunk or max(prefill, 1)
    chunks = [(c0, min(prefill, c0 + C)) for c0 in range(0, prefill, C)]

    def step(i: int, mm: ModelSpec = m) -> list[Op]:
        if i < len(chunks):
            c0, c1 = chunks[i]
            ops = step_ops(mm, "prefill", 0, c1 - c0, c1, 1 if len(chunks) > 1 else None)
            return ops if c1 == prefill else [o for o in ops if not (o.layer < 0 and o.name != "embed")]
        s = i - len(chunks) + 1
        return step_ops(mm, "decode", s, 1, prefill + s)

    n = len(chunks) + decode
    pre = [step(i) for i in range(len(chunks))] if len(chunks) <= 64 else [step(0)] * (len(chunks) - 1) + [step(len(chunks) - 1)]
    dec = step(n - 1) if decode else []
    n_ops = sum(map(len, pre)) + decode * len(dec)
    n_chunks = sum(map(chunk_count, pre)) + decode * (chunk_count(dec) if dec else 0)
    m1 = dataclasses.replace(m, n_layers=1)
    ops = GeneratedOps(n, step, n_ops, n_chunks, lambda i: step(i, m1))
    return Trace(m, prefill, decode, ops, meta={"generator": "lowbit.sim.workloads.standard_trace"})  # type: ignore[arg-type]


def batch_trace(model: str | ModelSpec, seqs: list[SeqSpec], weight_format: str | None = None) -> Trace:
    """Shapes-only trace of B sequences decoded together: sequence b has `context` tokens already cached,
    prefills `prefill` tokens in step 0 (all sequences with a prompt in one step) and takes part in decode
    steps 1..`decode` (lowbit.sim.trace module docstring: the batched format)."""
    m = _model(model, weight_format)
    if not seqs:
        raise WorkloadError("a batched trace needs at least one sequence")
    _check_lengths(m, seqs)
    P, D = sum(q.prefill for q in seqs), max(q.decode for q in seqs)
    first = 0 if P else 1

    def step(i: int, mm: ModelSpec = m) -> list[Op]:
        s = i + first
        if s == 0:
            parts = [(b, q.prefill, q.context + q.prefill, "prefill") for b, q in enumerate(seqs) if q.prefill]
            return batched_step_ops(mm, "prefill", 0, parts)
        parts = [(b, 1, q.context + q.prefill + s, "decode") for b, q in enumerate(seqs) if q.decode >= s]
        return batched_step_ops(mm, "decode", s, parts)

    n = bool(P) + D
    live = (P > 0) * sum(q.prefill > 0 for q in seqs) + sum(q.decode for q in seqs)  # sequences over all steps
    n_ops = n * len(step_ops(m, "decode", 1, 1, 1)) + m.n_layers * len(PER_SEQUENCE) * (live - n)
    m1 = dataclasses.replace(m, n_layers=1)
    ops = GeneratedOps(n, step, n_ops, n * chunk_count(step(0)), lambda i: step(i, m1))
    return Trace(m, P, D, ops, meta={"generator": "lowbit.sim.workloads.batch_trace"},  # type: ignore[arg-type]
                 sequences=list(seqs))


def batch_from_options(trace: Trace, loaded: bool, batch: int, cached: list[int] | None) -> Trace:
    """`lowbit sim --batch B [--cached N,...]`: the standard trace `trace` (prefill P, decode D) as B sequences
    of prefill P and decode D each, sequence b with cached[b] tokens already in its KV cache."""
    if loaded:
        raise WorkloadError("--batch/--cached apply to --model workloads; a --trace directory carries its own "
                            "sequences (manifest 'sequences')")
    if cached is not None:
        if batch not in (1, len(cached)):
            raise WorkloadError(f"--batch {batch} disagrees with --cached ({len(cached)} sequences); drop --batch")
        batch = len(cached)
    if not 1 <= batch <= MAX_BATCH:
        raise WorkloadError(f"--batch {batch}: must be in 1..{MAX_BATCH}")
    fmt = trace.model.weight_format
    seqs = [SeqSpec(c, trace.prefill, trace.decode) for c in (cached or [0] * batch)]
    return batch_trace(trace.model, seqs, fmt)


MAX_BATCH = 4096


def chunked_prefill(trace: Trace, loaded: bool, chunk: int) -> Trace:
    """`lowbit sim --prefill-chunk C`: the standard trace `trace` with its prompt prefilled in steps of C tokens."""
    if loaded or trace.sequences is not None:
        raise WorkloadError("--prefill-chunk applies to a one-sequence --model workload (not --trace, --batch, --cached)")
    return standard_trace(trace.model, trace.prefill, trace.decode, prefill_chunk=chunk)


def weight_format_for(cfg) -> str | None:
    """Default deployed weight format of a design: its FP4 format when it has an FP4 core and no TINT core
    (DESIGN ASSUMPTION: same model shapes, weights re-quantised to FP4), else the model's own (None)."""
    return cfg.fp4.format if cfg.has("fp4") and not cfg.has("tint") else None


def deployed_format(cfg, m: ModelSpec, weights: str | None) -> str | None:
    """The weight format `m` runs in on design `cfg`: `weights` (--weights) if given, else the design's
    default (weight_format_for), else the model's own. A model stored in bf16 (a Hugging Face checkpoint
    that is not BitNet b1.58) on a design with no bf16 unit is a WorkloadError asking for --weights."""
    from lowbit.sim.units import catalog

    fmt = weights or weight_format_for(cfg)
    if fmt is None and m.weight_format == "bf16":
        if not any(cfg.has(u.name) and u.can_run(cfg.section(u.name), "bf16") for u in catalog.UNITS.values()):
            raise WorkloadError(f"model {m.name} has bf16 weights, which no unit of {cfg.name} runs; choose the "
                                "deployed format with --weights ternary|int8|nvfp4|mxfp4")
    return fmt


def with_weights(trace: Trace, fmt: str) -> Trace:
    """A loaded trace with its projections (`linear` ops) deployed in `fmt` (--weights on --trace); the
    lm_head keeps its own format, as with --model."""
    import dataclasses

    m = trace.model.with_format(fmt)
    ops = [dataclasses.replace(o, args={**o.args, "weight_format": fmt}) if o.op == "linear" else o
           for o in trace.ops]
    return dataclasses.replace(trace, model=m, ops=ops, meta={**trace.meta, "weights": fmt})


# ----------------------------------------------------------------------------- workload size bounds

# Time: the simulator schedules ~5 million tile instructions per second (BitNet-3B, bench/results-sim.md);
# a run is refused when its estimate exceeds MAX_INSTRUCTIONS (about an hour). Memory: a program, a timeline
# or a breakdown holds one chunk (one decoder layer of one step) at once, ~0.25 KiB per instruction.
MAX_INSTRUCTIONS = 2**34
MAX_CHUNK_INSTRUCTIONS = 2**22
INSTRUCTIONS_PER_S = 5e6


@dataclass(frozen=True)
class WorkloadSize:
    """Estimated simulator work of a (config, trace) pair (upper-side estimate, counting joins and DMAs)."""

    instructions: int
    max_chunk_instructions: int

    @property
    def seconds(self) -> float:
        return self.instructions / INSTRUCTIONS_PER_S


def check_workload(cfg, trace: Trace, lop_k: int | None = None, no_lop: bool = False,
                   whole_chunks: bool = False) -> WorkloadSize:
    """Refuse, before any simulation, a workload that would not fit the simulator's bounds (WorkloadError
    naming the bound): its DRAM footprint against the address map (lowbit.sim.isa: weights, KV cache, LO
    codes, spilled activations per region), with `whole_chunks` (a program, a timeline or a breakdown: every
    chunk is held at once; a plain simulation streams it, lowbit.sim.window) one chunk's instructions against
    MAX_CHUNK_INSTRUCTIONS (memory), and all instructions against MAX_INSTRUCTIONS (time). Also raises the tiling's WorkloadError for a tile
    that does not fit its SRAM buffer, so that comes before any work too."""
    from lowbit.sim import isa
    from lowbit.sim.numerics.lop import LOP_SURROGATE_BITS_PER_ELEM
    from lowbit.sim.sram import Buffers
    from lowbit.sim.tiling import kv_chunk, lop_chunk, plan_linear, weight_bits

    m = trace.model
    m.validate()
    hd, G = m.head_dim, m.n_kv_heads
    grp = m.n_heads // G
    bits = weight_bits(m.weight_format, cfg.tint.weight_packing)
    code = math.ceil(hd * LOP_SURROGATE_BITS_PER_ELEM / 8)
    regions = (
        ("weights", m.projection_params * bits / 8 + 4096 * 7 * m.n_layers, isa.KV_BASE),
        ("KV cache", trace.batch * m.n_layers * G * 2 * m.max_positions * hd, isa.LOP_BASE - isa.KV_BASE),
        ("LO codes", trace.batch * m.n_layers * G * m.max_positions * code, isa.ACT_BASE - isa.LOP_BASE),
    )
    for what, need, room in regions:
        if need > room:
            raise WorkloadError(f"model {m.name}: {what} of {need / 2**30:,.1f} GiB do not fit the simulator's DRAM "
                                f"address map ({room / 2**30:,.0f} GiB for {what}, lowbit.sim.isa); use a smaller "
                                "model or max_positions")
    bufs = Buffers.from_config(cfg)
    lop_on = cfg.has("lop") and cfg.lop.enabled and not no_lop
    k = cfg.lop.k if lop_k is None else lop_k
    memo: dict[tuple, int] = {}

    def cost(o: Op) -> int:
        key = (o.op, o.phase == "decode", tuple(o.args.values()))
        if key not in memo:
            memo[key] = _op_instructions(cfg, bufs, o, hd, G, grp, code, lop_on, k, plan_linear, kv_chunk, lop_chunk)
        return memo[key]

    total = biggest = 0
    gen = trace.ops if isinstance(trace.ops, GeneratedOps) and trace.ops.probe_fn is not None else None
    steps = (gen.probe_fn(i) for i in range(gen.n_steps)) if gen is not None else trace.steps()
    for ops in steps:  # generated traces: one decoder layer stands for all n_layers identical ones
        chunk, prev = 0, None
        for o in ops:
            if o.layer != prev:
                biggest, chunk, prev = max(biggest, chunk), 0, o.layer
            n = cost(o)
            chunk += n
            total += n * (m.n_layers if gen is not None and o.layer >= 0 else 1)
        biggest = max(biggest, chunk)
    if whole_chunks and biggest > MAX_CHUNK_INSTRUCTIONS:
        raise WorkloadError(f"{cfg.name} / {m.name}: one decoder layer of one step lowers to ~{biggest:,} tile "
                            f"instructions, more than the bound of {MAX_CHUNK_INSTRUCTIONS:,} held in memory at once "
                            "(lowbit.sim.workloads.MAX_CHUNK_INSTRUCTIONS); use fewer prefill tokens or larger SRAM "
                            "buffers")
    if total > MAX_INSTRUCTIONS:
        raise WorkloadError(f"{cfg.name} / {m.name}: ~{total:,} tile instructions (~{total / INSTRUCTIONS_PER_S / 3600:,.1f} h "
                            f"of simulation), more than the bound of {MAX_INSTRUCTIONS:,} (about an hour, "
                            "lowbit.sim.workloads.MAX_INSTRUCTIONS); simulate fewer tokens")
    return WorkloadSize(total, biggest)


def _op_instructions(cfg, bufs, o: Op, hd: int, G: int, grp: int, code: int, lop_on: bool, k: int,
                     plan_linear, kv_chunk, lop_chunk) -> int:
    """Upper-side instruction count of one op as sim.lower emits it (tiles, DMAs and joins)."""
    from lowbit.sim.tiling import attention_plan

    t = o.args.get("tokens", 1)
    if o.op in ("linear", "lm_head"):
        if o.op == "lm_head" and cfg.lm_head == "host":
            return 1
        fin, fout, fmt = o["in_features"], o["out_features"], o["weight_format"]
        if o.op == "lm_head":  # on the chip: last positions only, quantized, in cfg.lm_head's format (sim.lower)
            t, fmt = logits_rows(o), cfg.lm_head
            if t == 0:
                return 1
        if t * max(fin, fout) > 2**30:  # spilled activations region of the address map (lowbit.sim.isa)
            raise WorkloadError(f"op {o.name}: {t} tokens x {max(fin, fout)} features of activations exceed the "
                                "1 GiB spill region of the simulator's DRAM address map; use fewer prefill tokens")
        p = plan_linear(cfg, bufs, o.name, t, fin, fout, fmt)
        tiles = -(-fout // p.R) * -(-fin // p.kc)
        return -(-t // p.tc) * (2 * tiles + (3 if p.spill else 0)) + 1 + 2 * (o.op == "lm_head")
    if o.op in ("attn_qk", "attn_av", "softmax"):
        ctx = o["context"]
        keys = min(k, ctx) if lop_on and o.phase == "decode" and t == 1 else ctx
        plan = attention_plan(bufs, grp, hd, t, keys)
        nq = len(plan.queries)
        if plan.online:  # per query block and key block: K, QK^T, SFU, V, score.V; a final SFU pass
            nk = -(-keys // plan.key_block)
            n = G * nq * ({"attn_qk": 2 * nk, "softmax": nk + 1, "attn_av": 2 * nk}[o.op]) + 1 + G
        elif o.op == "softmax":
            return G * nq + 1
        else:
            n = G * nq * (2 * -(-keys // kv_chunk(bufs, hd)) + 1) + 1
        if keys < ctx:  # LOP gathers (sim.kvcache): up to one DMA per selected key and a join per chunk
            n += G * nq * (keys + -(-keys // kv_chunk(bufs, hd)))
        if o.op == "attn_qk" and keys < ctx:
            n += G * (2 * -(-ctx // lop_chunk(bufs, code, "LOP: LO codes of one key")) + 2)
        return n
    if o.op == "kv_append":
        return 3 * G + 1  # K, V and LO codes per KV head, one join
    if o.op == "embedding" and t * o["dim"] * 2 > 2**30:
        raise WorkloadError(f"op {o.name}: {t} x {o['dim']} embedding rows exceed the simulator's 1 GiB "
                            "activation region; use fewer prefill tokens")
    return 1
