"""Capture a lowbit trace (sim.trace format v1) from a running PyTorch model.

Generic over nn.Modules built of linear + attention blocks; nothing here matches one model class. While the
model runs, :class:`Recorder` listens to:

- forward hooks on nn.Linear (any subclass, plus transformers' packed ``BitLinear``) -> ``linear`` (or
  ``lm_head`` outside the layers), nn.Embedding -> ``embedding``, RMSNorm/LayerNorm modules -> ``rmsnorm``
  (LayerNorm gets role "layernorm": the trace schema has no layernorm kind yet), activation modules ->
  ``activation``;
- ``torch.nn.functional.scaled_dot_product_attention`` (patched for the duration) -> ``rope`` (models with
  rotary positions), ``kv_append``, ``attn_qk``, ``softmax``, ``attn_av``.

Ops that are not module calls are inferred from the block structure (design assumption, documented):
one ``quantize`` before each group of quantized linears that read the same input tensor (q,k,v / gate,up /
o / down; bf16 linears get none), the residual ``elementwise add`` right after the linear that closes the
attention (o) and the FFN (down), and ``gated`` = two linears read the FFN input (gate and up). The
layer index is the first numeric component of a module path (``model.layers.3.mlp`` -> 3), -1 outside.
Any other leaf module that runs is an error naming it. The result matches ``sim.workloads.standard_trace``
op for op for the BitNet presets (tests/models/test_capture.py).

Tensors (``tensors=True``), the contract the simulator's LOP selection reads: each ``kv_append`` carries
{"k", "v"}: float32 [kv_heads, tokens, head_dim] (post-RoPE; the keys of the tokens appended in that step, so
the cache at decode step s is the concatenation over steps 0..s), and each decode-step ``attn_qk`` carries
{"q"}: float32 [heads, head_dim] (post-RoPE). They are written one safetensors file per step under a temp dir
next to the output (memory stays bounded), then moved into place by ``sim.trace.write_trace``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lowbit.sim.atomic import output_error, temp_dir
from lowbit.sim.errors import LowbitError, OutputError, TraceError, did_you_mean
from lowbit.sim.modelspec import MODELS, ModelSpec
from lowbit.sim.trace import Op, Trace, write_trace

# Activation module class name -> trace fn (transformers.activations + torch.nn + models.bitnet).
ACTIVATIONS = {
    "SiLU": "silu", "SiLUActivation": "silu", "GELU": "gelu", "GELUActivation": "gelu",
    "NewGELUActivation": "gelu", "FastGELUActivation": "gelu", "QuickGELUActivation": "gelu",
    "PytorchGELUTanh": "gelu", "GELUTanh": "gelu", "AccurateGELUActivation": "gelu",
    "ReLUSquaredActivation": "relu2", "ReLU2": "relu2", "ReLU": "relu",
}
# Leaf modules that compute nothing the trace models (dropout, identity, rotary tables).
IGNORED = ("Dropout", "Identity", "RotaryEmbedding")
TERNARY_CLASSES = ("BitLinear", "AutoBitLinear")  # models.bitnet / transformers.integrations.bitnet
SUPPORTED_TEXT = ("nn.Linear, nn.Embedding, RMSNorm/LayerNorm, activations " + "/".join(sorted(set(ACTIVATIONS)))
                  + ", attention through torch.nn.functional.scaled_dot_product_attention")
_LAYER_RE = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")


def layer_of(name: str) -> tuple[int, str]:
    """(layer index, layer prefix) from a module path: 'model.layers.3.mlp' -> (3, 'model.layers.3')."""
    m = _LAYER_RE.search(name)
    return (int(m.group(1)), name[: m.end(1)]) if m else (-1, "")


def _is_norm(mod: nn.Module) -> str | None:
    cls = type(mod).__name__
    if isinstance(mod, nn.LayerNorm) or cls.endswith("LayerNorm"):
        return "layernorm"
    if isinstance(mod, nn.RMSNorm) or cls.endswith("RMSNorm"):
        return "rmsnorm"
    return None


def _is_linear(mod: nn.Module) -> bool:
    return isinstance(mod, nn.Linear) or type(mod).__name__ in TERNARY_CLASSES


@dataclass
class _LayerState:
    """Where we are inside one decoder layer of one step (drives quantize/residual/role inference)."""

    attn: bool = False  # attention seen
    o_done: bool = False
    act: Op | None = None  # activation op waiting for the end of the FFN input group
    act_done: bool = False
    down_done: bool = False
    group: str = ""  # current linear group: attn_in | o | ffn_in | down
    group_ops: list[Op] = field(default_factory=list)


class Recorder:
    """Hooks a module and records ops; use ``with rec.step(phase, step): model(...)`` for each step."""

    GROUPS = {"attn_in": ("attn_quant", ("q", "k", "v")), "o": ("o_quant", ("o",)),
              "ffn_in": ("ffn_quant", ("gate", "up")), "down": ("down_quant", ("down",))}

    def __init__(self, module: nn.Module, spec: ModelSpec, *, rope: bool, layer_format: str | None = None,
                 tensors: bool = False, tensor_dir: Path | None = None) -> None:
        self.module, self.spec, self.rope = module, spec, rope
        self.layer_format = layer_format
        self.tensors = tensors
        self.tensor_dir = tensor_dir
        self.ops: list[Op] = []
        self.tensor_files: list[str] = []
        self._names = {m: n for n, m in module.named_modules()}
        self._handles: list[Any] = []
        self._phase, self._step = "prefill", 0
        self._layers: dict[int, _LayerState] = {}
        self._cur_layer, self._cur_prefix = -1, ""
        self._last_x: torch.Tensor | None = None
        self._store: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ install / remove

    def __enter__(self) -> Recorder:
        for mod in self.module.modules():
            if _is_linear(mod):
                self._handles.append(mod.register_forward_pre_hook(self._linear_pre))
                self._handles.append(mod.register_forward_hook(self._linear_post))
            elif isinstance(mod, nn.Embedding):
                self._handles.append(mod.register_forward_pre_hook(self._embedding))
            elif _is_norm(mod):
                self._handles.append(mod.register_forward_pre_hook(self._norm))
            elif type(mod).__name__ in ACTIVATIONS:
                self._handles.append(mod.register_forward_pre_hook(self._activation))
            elif not any(True for _ in mod.children()) and not any(k in type(mod).__name__ for k in IGNORED):
                self._handles.append(mod.register_forward_pre_hook(self._unsupported))
        self._orig_sdpa = F.scaled_dot_product_attention
        rec = self

        def sdpa(q, k, v, *args, **kwargs):
            rec._attention(q, k, v)
            if q.is_meta:  # shapes only: the meta math path is slow (decomposed in Python) and adds nothing
                return q.new_empty((*q.shape[:-1], v.shape[-1]))
            return rec._orig_sdpa(q, k, v, *args, **kwargs)

        F.scaled_dot_product_attention = sdpa  # torch.nn.functional is the module transformers calls through
        return self

    def __exit__(self, *exc: Any) -> None:
        F.scaled_dot_product_attention = self._orig_sdpa
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @contextlib.contextmanager
    def step(self, phase: str, step: int) -> Iterator[None]:
        self._phase, self._step = phase, step
        self._layers, self._cur_layer, self._cur_prefix, self._last_x, self._store = {}, -1, "", None, {}
        n0 = len(self.ops)
        yield
        self._flush_act_all()
        layer_ops = [o for o in self.ops[n0:] if o.layer >= 0]
        if any(o.op == "linear" for o in layer_ops) and not any(o.op == "attn_qk" for o in layer_ops):
            raise LowbitError("no attention seen: the model's attention does not call "
                              "torch.nn.functional.scaled_dot_product_attention (eager/custom attention is not "
                              "supported; load transformers models with attn_implementation='sdpa')")
        if self._store:
            self._write_tensors(step)
        self._last_x = None

    # ------------------------------------------------------------------ emit helpers

    def _emit(self, kind: str, name: str, layer: int, role: str = "", **args: Any) -> Op:
        op = Op(kind, name, layer, self._phase, self._step, args, role)
        self.ops.append(op)
        return op

    def _state(self, layer: int) -> _LayerState:
        return self._layers.setdefault(layer, _LayerState())

    def _flush_act(self, layer: int) -> None:
        st = self._layers.get(layer)
        if st is None or st.act is None:
            return
        ffn = [o for o in st.group_ops if o.op == "linear"] if st.group == "ffn_in" else []
        if len(ffn) == 2:
            ffn[0].role, ffn[1].role = "gate", "up"
        elif len(ffn) == 1:
            ffn[0].role = "up"
        st.act.args["gated"] = len(ffn) == 2
        self.ops.append(st.act)
        st.act, st.act_done = None, True

    def _flush_act_all(self) -> None:
        for layer in list(self._layers):
            self._flush_act(layer)

    def _tokens(self, x: torch.Tensor) -> int:
        return max(1, x.numel() // max(1, x.shape[-1]))

    # ------------------------------------------------------------------ hooks

    def _unsupported(self, mod: nn.Module, args: tuple) -> None:
        raise LowbitError(f"unsupported op: module '{self._names.get(mod, '?')}' ({type(mod).__name__}) cannot "
                          f"be traced; supported: {SUPPORTED_TEXT}")

    def _embedding(self, mod: nn.Embedding, args: tuple) -> None:
        name = self._names[mod]
        layer, _ = layer_of(name)
        self._emit("embedding", name, layer, tokens=args[0].numel(), dim=mod.embedding_dim,
                   vocab=mod.num_embeddings)

    def _norm(self, mod: nn.Module, args: tuple) -> None:
        name = self._names[mod]
        layer, _ = layer_of(name)
        self._flush_act(layer)
        x = args[0]
        self._emit("rmsnorm", name, layer, "layernorm" if _is_norm(mod) == "layernorm" else "",
                   tokens=self._tokens(x), dim=x.shape[-1])
        self._last_x = None

    def _activation(self, mod: nn.Module, args: tuple) -> None:
        name = self._names[mod]
        layer, _ = layer_of(name)
        x = args[0]
        st = self._state(layer)
        self._flush_act(layer)
        # Emitted once the FFN input group is complete (transformers calls act(gate(x)) before up(x)).
        st.act = Op("activation", name, layer, self._phase, self._step,
                    dict(tokens=self._tokens(x), dim=x.shape[-1], fn=ACTIVATIONS[type(mod).__name__], gated=False))

    def _format(self, mod: nn.Module) -> str:
        fmt = getattr(mod, "weight_format", None)
        if isinstance(fmt, str):
            return self.layer_format or fmt
        if type(mod).__name__ in TERNARY_CLASSES:
            return self.layer_format or "ternary"
        return self.layer_format or "bf16"

    def _linear_pre(self, mod: nn.Module, args: tuple) -> None:
        name = self._names[mod]
        layer, prefix = layer_of(name)
        x = args[0]
        fin, fout = int(mod.in_features), int(mod.out_features)
        if layer < 0:  # model level: lm_head (or a head/pooler linear)
            self._flush_act_all()
            head = name.endswith("lm_head") or fout == self.spec.vocab
            fmt = self.spec.lm_head_format if head else "bf16"
            self._emit("lm_head" if head else "linear", name, layer, tokens=self._tokens(x), in_features=fin,
                       out_features=fout, weight_format=fmt)
            return
        st = self._state(layer)
        self._cur_layer, self._cur_prefix = layer, prefix
        fmt = self._format(mod)
        if not (x is self._last_x and st.group):
            self._flush_act(layer)
            if not st.attn:
                group = "attn_in"
            elif not st.o_done:
                group = "o"
            elif not st.act_done:
                group = "ffn_in"
            elif not st.down_done:
                group = "down"
            else:
                raise LowbitError(f"unsupported layer structure: linear '{name}' runs after the FFN of layer "
                                  f"{layer} closed; capture supports attention + FFN decoder/encoder blocks")
            st.group, st.group_ops = group, []
            if fmt != "bf16":
                self._emit("quantize", f"{prefix}.{self.GROUPS[group][0]}", layer, tokens=self._tokens(x), dim=fin)
        roles = self.GROUPS[st.group][1]
        i = len(st.group_ops)
        role = roles[i] if i < len(roles) else f"{st.group}{i}"
        if st.group == "ffn_in":
            role = "up"  # fixed to gate/up when the activation is flushed
        st.group_ops.append(self._emit("linear", name, layer, role, tokens=self._tokens(x), in_features=fin,
                                       out_features=fout, weight_format=fmt))
        self._last_x = x

    def _linear_post(self, mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
        name = self._names[mod]
        layer, prefix = layer_of(name)
        if layer < 0:
            return
        st = self._state(layer)
        if st.group == "o" and not st.o_done:
            st.o_done = True
            self._emit("elementwise", f"{prefix}.attn_residual", layer, tokens=self._tokens(out),
                       dim=out.shape[-1], fn="add")
        elif st.group == "down" and not st.down_done:
            st.down_done = True
            self._emit("elementwise", f"{prefix}.ffn_residual", layer, tokens=self._tokens(out),
                       dim=out.shape[-1], fn="add")

    def _attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        layer, prefix = self._cur_layer, self._cur_prefix
        st = self._state(layer)
        if st.attn:
            raise LowbitError(f"unsupported layer structure: a second attention call in layer {layer} "
                              "(cross-attention is not supported)")
        self._flush_act(layer)
        st.attn = True
        H, KV, hd = self.spec.n_heads, self.spec.n_kv_heads, self.spec.head_dim
        if q.shape[-1] != hd:
            raise LowbitError(f"attention head_dim {q.shape[-1]} != model head_dim {hd} in layer {layer}")
        B, S = q.shape[0], k.shape[-2]
        T = q.numel() // (B * H * hd)
        att = dict(tokens=T, heads=H, kv_heads=KV, head_dim=hd, context=S)
        if self.rope:
            self._emit("rope", f"{prefix}.attn.rope", layer, tokens=T, heads=H, kv_heads=KV, head_dim=hd)
        kv = self._emit("kv_append", f"{prefix}.attn.kv_append", layer, tokens=T, kv_heads=KV, head_dim=hd, context=S)
        qk = self._emit("attn_qk", f"{prefix}.attn.qk", layer, **att)
        self._emit("softmax", f"{prefix}.attn.softmax", layer, tokens=T, heads=H, context=S)
        self._emit("attn_av", f"{prefix}.attn.av", layer, **att)
        self._last_x = None
        if self.tensors and q.device.type != "meta":
            # Keys of the new tokens only (last T positions); undo a repeat_kv if the caller expanded heads.
            def new_kv(t: torch.Tensor) -> torch.Tensor:
                t = t[0, :, S - T:S]
                if t.shape[0] == H and KV < H:
                    t = t[:: H // KV]
                return t.detach().float().contiguous().clone()

            key = f"s{self._step}.l{layer}"
            self._store[f"{key}.k"], self._store[f"{key}.v"] = new_kv(k), new_kv(v)
            kv.tensors = {"k": f"{key}.k", "v": f"{key}.v"}
            if self._phase == "decode" and T == 1:
                self._store[f"{key}.q"] = q[0].detach().float().reshape(H, hd).contiguous().clone()
                qk.tensors = {"q": f"{key}.q"}

    # ------------------------------------------------------------------ tensors on disk

    def _write_tensors(self, step: int) -> None:
        from safetensors.torch import save_file

        assert self.tensor_dir is not None
        rel = f"step{step:05d}.safetensors"
        try:
            save_file(self._store, str(self.tensor_dir / rel))
        except OSError as e:
            raise output_error(self.tensor_dir / rel, e) from None
        except Exception as e:  # safetensors reports I/O failures (e.g. a full disk) as SafetensorError
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise OutputError(f"cannot write tensors to {self.tensor_dir}: {first}; free some space or capture "
                              "without --tensors; nothing was written") from None
        self.tensor_files.append(f"tensors/{rel}")
        self._store = {}


# ----------------------------------------------------------------------------- runners


@dataclass
class Target:
    """What to run: a module, its ModelSpec, and how to run prefill/decode steps on it."""

    module: nn.Module
    spec: ModelSpec
    encoder: bool
    rope: bool
    layer_format: str | None
    device: str
    run: Callable[[Recorder, torch.Tensor, int], None]
    meta: dict[str, Any] = field(default_factory=dict)


def _run_bitnet(model: nn.Module) -> Callable[[Recorder, torch.Tensor, int], None]:
    def run(rec: Recorder, prompt: torch.Tensor, decode: int) -> None:
        P = prompt.shape[1]
        cache = model.new_cache(1, P + decode)
        with rec.step("prefill", 0):
            logits = model(prompt, cache, 0)
        for s in range(1, decode + 1):
            nxt = logits[:, -1:].argmax(-1)
            with rec.step("decode", s):
                logits = model(nxt, cache, P + s - 1)

    return run


def _run_hf(model: nn.Module, encoder: bool) -> Callable[[Recorder, torch.Tensor, int], None]:
    def run(rec: Recorder, prompt: torch.Tensor, decode: int) -> None:
        if encoder:
            with rec.step("prefill", 0):
                model(input_ids=prompt)
            return
        from transformers import DynamicCache

        cache = DynamicCache(config=model.config)
        with rec.step("prefill", 0):
            logits = model(input_ids=prompt, past_key_values=cache, use_cache=True).logits
        for s in range(1, decode + 1):
            nxt = logits[:, -1:].argmax(-1)
            with rec.step("decode", s):
                logits = model(input_ids=nxt, past_key_values=cache, use_cache=True).logits

    return run


def resolve(model: str | Path, tensors: bool, seed: int, weight_format: str | None = None,
            random_init: bool = False) -> Target:
    """Preset name -> models.bitnet.BitNet (meta device unless tensors are wanted); else a local HF dir, a
    config.json file or a shipped config.json preset (lowbit.sim.hfconfig), whose checkpoint must hold every
    weight unless `random_init` (lowbit.models.hf.load_hf; shapes-only capture reads config.json only)."""
    from lowbit.models import hf

    name = str(model)
    if name in MODELS:
        from lowbit.models.bitnet import BitNet

        spec = MODELS[name].with_format(weight_format) if weight_format else MODELS[name]
        device = "cpu" if tensors else "meta"  # shapes-only capture needs no weights
        net = BitNet.build(spec, device, seed)
        net.eval()
        return Target(net, spec, False, True, None, device, _run_bitnet(net),
                      {"source": f"models.bitnet preset {name}", "init": f"random, seed {seed}" if tensors else "meta"})
    from lowbit.sim.hfconfig import find_preset, presets

    if not Path(name).expanduser().exists() and name not in hf.ALIASES and find_preset(name) is None:
        if "/" in name or name.startswith((".", "~")):
            raise LowbitError(f"model directory not found: {name} (give a preset name, an alias or a local "
                              "Hugging Face model directory)")
        hint = did_you_mean(name, [*MODELS, *hf.ALIASES, *presets()])
        raise LowbitError(f"unknown model '{name}'{hint}: not a preset ({', '.join(MODELS)}), a config.json "
                          f"preset (`lowbit models list`), an alias ({', '.join(hf.ALIASES)}) or an existing "
                          "Hugging Face model directory")
    # shapes-only capture reads config.json only
    m = hf.load_hf(name, weight_format, meta=not tensors, random_init=random_init, seed=seed)
    device = "cpu" if tensors else "meta"
    return Target(m.module, m.spec, m.encoder, m.rope, m.layer_format, device, _run_hf(m.module, m.encoder), m.meta)


def record(target: Target, prefill: int, decode: int, seed: int = 0, tensors: bool = False,
           tensor_dir: Path | None = None) -> Recorder:
    """Run prefill then `decode` greedy steps under a Recorder; returns it (ops, tensor_files)."""
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, target.spec.vocab, (1, prefill), generator=g).to(target.device)
    rec = Recorder(target.module, target.spec, rope=target.rope, layer_format=target.layer_format,
                   tensors=tensors, tensor_dir=tensor_dir)
    with torch.no_grad(), rec:
        target.run(rec, prompt, decode)
    return rec


def capture_trace(model: str | Path, prefill: int, decode: int, out: str | Path, tensors: bool = False,
                  seed: int = 0, weight_format: str | None = None, random_init: bool = False) -> Path:
    """Capture `model` (preset name, alias or local HF directory) into a trace directory `out` (atomic).

    Runs `prefill` prompt tokens (random ids from `seed`) then `decode` greedy decode steps with the KV cache.
    `decode` = 0 is allowed only for encoders (which have no decode phase). See the module docstring for the
    tensor contract.
    """
    out = Path(out)
    if out.exists():
        raise TraceError(f"output directory {out} already exists; choose another --out or remove it")
    if prefill <= 0 or decode < 0:
        raise LowbitError(f"prefill = {prefill}, decode = {decode}: need prefill > 0 and decode >= 0")
    target = resolve(model, tensors, seed, weight_format, random_init)
    if target.encoder and decode:
        raise LowbitError(f"{target.meta.get('architecture', 'model')} is an encoder: it has no decode phase; "
                          "use --decode 0")
    if not target.encoder and decode == 0:
        raise LowbitError(f"decode = 0: {target.spec.name} is a decoder; need --decode >= 1 "
                          "(decode 0 is only for encoders)")
    if prefill + decode > target.spec.max_positions:
        raise LowbitError(f"prefill + decode = {prefill + decode} exceeds {target.spec.name}'s max_positions "
                          f"{target.spec.max_positions}")
    # tensors go to a locked temp dir next to the output (lowbit.sim.atomic), moved into the trace at the end
    with temp_dir(out.parent, out.name) if tensors else contextlib.nullcontext() as tdir:
        rec = record(target, prefill, decode, seed, tensors, tdir)
        meta = {"generator": "lowbit.models.capture", "seed": seed, "encoder": target.encoder,
                "torch": torch.__version__, **target.meta}
        if target.encoder:
            meta["note"] = "encoder: prefill only; LayerNorm recorded as rmsnorm with role 'layernorm'"
        trace = Trace(target.spec, prefill, decode, rec.ops, rec.tensor_files if tensors else [], meta)
        return write_trace(trace, out, tensor_dir=tdir)
