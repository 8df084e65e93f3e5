"""Torch-free generator of standard-shape traces (the same op sequence `models` captures).

Per decoder layer and step, in order (BitNet b1.58 block, docs/reference/numerics.md §1.4):
    rmsnorm -> quantize -> linear q,k,v -> rope -> kv_append -> attn_qk -> softmax -> attn_av
    -> [rmsnorm attn_sub_norm if SubLN] -> quantize -> linear o -> elementwise add
    -> rmsnorm -> quantize -> linear gate,up (up only if not gated) -> activation
    -> [rmsnorm ffn_sub_norm if SubLN] -> quantize -> linear down -> elementwise add
Model level: embedding first (layer -1); final rmsnorm and lm_head last (layer -1).
Prefill is one step (step 0, tokens = P, context = P, causal); decode step s has tokens = 1 and
context = P + s (the new token's key is appended before attention).
"""

from __future__ import annotations

from lowbit.sim.errors import WorkloadError
from lowbit.sim.modelspec import ModelSpec, get_model
from lowbit.sim.trace import Op, Trace

ACT_FN = {"swiglu": ("silu", True), "relu2_glu": ("relu2", True), "gelu": ("gelu", False),
          "relu2": ("relu2", False), "silu": ("silu", False)}


def layer_ops(m: ModelSpec, layer: int, phase: str, step: int, tokens: int, context: int) -> list[Op]:
    """The ops of one decoder layer for one step."""
    d, hd, H, KV, F = m.d_model, m.head_dim, m.n_heads, m.n_kv_heads, m.d_ffn
    fmt = m.weight_format
    p = f"layers.{layer}"

    def op(kind: str, name: str, role: str = "", **args) -> Op:
        return Op(kind, f"{p}.{name}", layer, phase, step, args, role)

    def lin(name: str, role: str, fin: int, fout: int) -> Op:
        return op("linear", name, role, tokens=tokens, in_features=fin, out_features=fout, weight_format=fmt)

    fn, gated = ACT_FN[m.ffn_act]
    att = dict(tokens=tokens, heads=H, kv_heads=KV, head_dim=hd, context=context)
    ops = [
        op("rmsnorm", "attn_norm", tokens=tokens, dim=d),
        op("quantize", "attn_quant", tokens=tokens, dim=d),
        lin("attn.q", "q", d, H * hd),
        lin("attn.k", "k", d, KV * hd),
        lin("attn.v", "v", d, KV * hd),
        op("rope", "attn.rope", tokens=tokens, heads=H, kv_heads=KV, head_dim=hd),
        op("kv_append", "attn.kv_append", tokens=tokens, kv_heads=KV, head_dim=hd, context=context),
        op("attn_qk", "attn.qk", **att),
        op("softmax", "attn.softmax", tokens=tokens, heads=H, context=context),
        op("attn_av", "attn.av", **att),
    ]
    if m.subln:
        ops.append(op("rmsnorm", "attn_sub_norm", tokens=tokens, dim=d))
    ops += [
        op("quantize", "o_quant", tokens=tokens, dim=d),
        lin("attn.o", "o", d, d),
        op("elementwise", "attn_residual", tokens=tokens, dim=d, fn="add"),
        op("rmsnorm", "ffn_norm", tokens=tokens, dim=d),
        op("quantize", "ffn_quant", tokens=tokens, dim=d),
    ]
    if gated:
        ops.append(lin("ffn.gate", "gate", d, F))
    ops += [lin("ffn.up", "up", d, F), op("activation", "ffn.act", tokens=tokens, dim=F, fn=fn, gated=gated)]
    if m.subln:
        ops.append(op("rmsnorm", "ffn_sub_norm", tokens=tokens, dim=F))
    ops += [
        op("quantize", "down_quant", tokens=tokens, dim=F),
        lin("ffn.down", "down", F, d),
        op("elementwise", "ffn_residual", tokens=tokens, dim=d, fn="add"),
    ]
    return ops


def step_ops(m: ModelSpec, phase: str, step: int, tokens: int, context: int) -> list[Op]:
    """One whole forward step: embedding, all layers, final norm, lm_head."""
    ops = [Op("embedding", "embed", -1, phase, step, dict(tokens=tokens, dim=m.d_model, vocab=m.vocab))]
    for layer in range(m.n_layers):
        ops += layer_ops(m, layer, phase, step, tokens, context)
    ops.append(Op("rmsnorm", "final_norm", -1, phase, step, dict(tokens=tokens, dim=m.d_model)))
    ops.append(Op("lm_head", "lm_head", -1, phase, step,
                  dict(tokens=tokens, in_features=m.d_model, out_features=m.vocab, weight_format=m.lm_head_format)))
    return ops


def standard_trace(model: str | ModelSpec, prefill: int, decode: int, weight_format: str | None = None) -> Trace:
    """Shapes-only trace of `prefill` prompt tokens then `decode` generated tokens."""
    m = get_model(model) if isinstance(model, str) else model
    if weight_format:
        m = m.with_format(weight_format)
    m.validate()
    if prefill < 0 or decode < 0 or prefill + decode == 0:
        raise WorkloadError(f"prefill = {prefill}, decode = {decode}: need prefill >= 0, decode >= 0 and at least one token")
    if prefill + decode > m.max_positions:
        raise WorkloadError(f"prefill + decode = {prefill + decode} exceeds {m.name}'s max_positions {m.max_positions}")
    ops: list[Op] = []
    if prefill:
        ops += step_ops(m, "prefill", 0, prefill, prefill)
    for s in range(1, decode + 1):
        ops += step_ops(m, "decode", s, 1, prefill + s)
    return Trace(m, prefill, decode, ops, meta={"generator": "lowbit.sim.workloads.standard_trace"})


def weight_format_for(cfg) -> str | None:
    """Default deployed weight format of a design: its FP4 format when it has an FP4 core and no TINT core
    (DESIGN ASSUMPTION: same model shapes, weights re-quantised to FP4), else the model's own (None)."""
    return cfg.fp4.format if cfg.has("fp4") and not cfg.has("tint") else None
