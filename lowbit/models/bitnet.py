"""BitNet b1.58 in PyTorch, nanoGPT style: one file, read top to bottom.

Block (docs/reference/numerics.md §1.4; BitNet ``gpu/model.py``, transformers ``modeling_bitnet.py``)::

    h   = x + Wo( [attn_sub_norm]( Attn( RoPE(Wq n), RoPE(Wk n), Wv n ) ) ),   n = attn_norm(x)
    out = h + Wdown( [ffn_sub_norm]( act(Wgate m) * (Wup m) ) ),                m = ffn_norm(h)

`act` is ReLU^2 (2B4T, "relu2_glu") or SiLU (1bitLLM 700M/1.3B/3B, "swiglu"); the sub-norms exist only
with ``spec.subln`` (2B4T). Every projection is a :class:`BitLinear` (ternary absmean weights per tensor,
per-token absmax INT8 activations); the lm_head and embedding stay in full precision (docs/reference/numerics.md §1.1).

The module names are the op names of ``sim.workloads`` (``layers.0.attn.q``, ``layers.0.attn_sub_norm``,
``layers.0.ffn.down``, ``final_norm``, ...) so a captured trace matches ``standard_trace`` name for name.

Build big presets on the meta device for shapes-only work (no memory)::

    with torch.device("meta"):
        model = BitNet(get_model("bitnet-b1.58-3b"))
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lowbit.sim.modelspec import ModelSpec
from lowbit.sim.numerics.int8 import INT8_ABSMAX_EPS
from lowbit.sim.numerics.ternary import TERNARY_EPS

# An attention function: (q [B,H,T,hd], k [B,KV,S,hd], v [B,KV,S,hd], layer, causal_offset) -> [B,H,T,hd].
# `causal_offset` is the absolute position of q's first token (key j is visible to query i iff
# j <= causal_offset + i). Plug LOP top-K attention in here (BitNet.attn_fn).
AttnFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, int], torch.Tensor]


# ----------------------------------------------------------------------------- quantizers (sim.numerics semantics)


def weight_quant(w: torch.Tensor, eps: float = TERNARY_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Ternary absmean quantizer: ``scale = max(mean|W|, eps)``, ``codes = clip(round(W * (1/scale)), -1, 1)``.

    float64, round-half-even, the reference code's ``W * (1/scale)`` (sim/numerics/ternary.py,
    transformers ``WeightQuant``). The mean is torch's float64 mean; sim.numerics uses ``math.fsum``, which can
    differ by an ulp, so pass our ``scale`` to ``ternary_quantize(scale=...)`` to compare codes bit for bit.
    Returns (codes float64 in {-1,0,1}, scale float64 scalar tensor).
    """
    w64 = w.detach().to(torch.float64)
    scale = w64.abs().mean().clamp(min=eps)
    codes = (w64 * torch.reciprocal(scale)).round().clamp(-1, 1)
    return codes, scale


def act_quant(x: torch.Tensor, eps: float = INT8_ABSMAX_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token absmax INT8: ``s = 127 * (1 / max(max|x|, eps))``, ``q = clip(round(x * s), -128, 127)``.

    float64, round-half-even, exactly sim/numerics/int8.py ``int8_absmax_quantize`` (docs/reference/numerics.md §1.2).
    Returns (q float64 integer-valued, s float64 [..., 1]).
    """
    x64 = x.detach().to(torch.float64)
    s = torch.reciprocal(x64.abs().amax(dim=-1, keepdim=True).clamp(min=eps)) * 127.0
    q = (x64 * s).round().clamp(-128, 127)
    return q, s


class _BitLinearFn(torch.autograd.Function):
    """Forward: exact integer BitLinear. Backward: straight-through estimator (docs/reference/numerics.md §1.3).

    Forward ``y = (acc * w_scale) / x_scale`` with ``acc = xq @ codes^T`` (sim.numerics.int8
    ``dequantize_accumulator`` order). ``acc`` is computed in float32 when ``128*K < 2^24`` (every partial sum
    is an integer below 2^24, so float32 is exact in any summation order), else in float64 (exact below 2^53).
    Backward is that of fake quantization ``y = F.linear(xq/s, codes*scale)`` with identity gradients through
    the quantizers (the reference ``x + (q(x) - x).detach()`` trick).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, codes: torch.Tensor,  # type: ignore[override]
                w_scale: torch.Tensor) -> torch.Tensor:
        xq, x_scale = act_quant(x)
        acc_dtype = torch.float32 if 128 * x.shape[-1] < 2**24 else torch.float64
        acc = F.linear(xq.to(acc_dtype), codes.to(acc_dtype)).to(torch.float64)
        y = (acc * w_scale) / x_scale
        ctx.save_for_backward(xq, x_scale, codes, w_scale)
        ctx.dtype = x.dtype
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, gy: torch.Tensor):  # type: ignore[override]
        xq, x_scale, codes, w_scale = ctx.saved_tensors
        x_deq = (xq / x_scale).to(gy.dtype)
        w_deq = (codes * w_scale).to(gy.dtype)
        gx = gy @ w_deq
        gw = gy.reshape(-1, gy.shape[-1]).t() @ x_deq.reshape(-1, x_deq.shape[-1])
        return gx.to(ctx.dtype), gw, None, None


class BitLinear(nn.Linear):
    """nn.Linear with BitNet b1.58 quantization when ``quantized`` (ternary W, INT8 per-token x); no bias.

    ``quantized = False`` is the plain float layer (for float pre-training / PTQ baselines).
    ``weight_format`` is what a captured trace reports for this layer.
    """

    def __init__(self, in_features: int, out_features: int, weight_format: str = "ternary") -> None:
        super().__init__(in_features, out_features, bias=False)
        self.quantized = True
        self.weight_format = weight_format
        self._wq_cache: tuple[tuple, torch.Tensor, torch.Tensor] | None = None

    def quantized_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes, scale) of :func:`weight_quant`; cached under no_grad (inference) until the weight changes."""
        if torch.is_grad_enabled():
            self._wq_cache = None
            return weight_quant(self.weight)
        key = (self.weight.data_ptr(), self.weight._version, self.weight.dtype, self.weight.shape)
        if self._wq_cache is None or self._wq_cache[0] != key:
            codes, scale = weight_quant(self.weight)
            self._wq_cache = (key, codes.to(torch.int8), scale)  # int8: 1 byte per weight while cached
        return self._wq_cache[1], self._wq_cache[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.quantized or x.is_meta:  # meta: shapes only, skip the (slow on meta) quantizer math
            return F.linear(x, self.weight)
        return _BitLinearFn.apply(x, self.weight, *self.quantized_weight())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, quantized={self.quantized}"


# ----------------------------------------------------------------------------- building blocks


class RMSNorm(nn.Module):
    """``y = x / sqrt(mean(x^2) + eps) * g`` in float32 (transformers ``BitNetRMSNorm``/``LlamaRMSNorm``)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_meta:  # shapes only (meta ops run as slow Python decompositions)
            return torch.empty_like(x)
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * y).to(x.dtype)


class ReLU2(nn.Module):
    """Squared ReLU, ``relu(x)^2`` (2B4T ``squared_relu``; transformers ``ReLUSquaredActivation``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


def rope_tables(head_dim: int, n_pos: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [n_pos, head_dim] for the rotate-half RoPE convention of transformers (Llama/BitNet)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = torch.outer(torch.arange(n_pos, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, T, hd]; cos/sin [T, hd]. ``x*cos + rotate_half(x)*sin`` (transformers ``apply_rotary_pos_emb``)."""
    x1, x2 = x.chunk(2, dim=-1)
    rot = torch.cat((-x2, x1), dim=-1)
    return (x * cos + rot * sin).to(x.dtype)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int, offset: int) -> torch.Tensor:
    """Default attention: causal softmax(q k^T / sqrt(hd)) v with GQA, via F.scaled_dot_product_attention."""
    T, S = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if T == 1:  # one new token sees the whole cache
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
    if offset == 0 and S == T:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    mask = torch.arange(S, device=q.device)[None, :] <= (offset + torch.arange(T, device=q.device))[:, None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


class KVCache:
    """Preallocated per-layer K/V [B, kv_heads, max_len, hd] (post-RoPE keys), filled in position order."""

    def __init__(self, spec: ModelSpec, batch: int = 1, max_len: int | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        n = max_len or spec.max_positions
        shape = (batch, spec.n_kv_heads, n, spec.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(spec.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(spec.n_layers)]
        self.max_len = n

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        end = start + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: position {end} > max_len {self.max_len}")
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class Attention(nn.Module):
    """q/k/v/o BitLinear projections + RoPE + GQA attention; the Block applies attn_sub_norm and o."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        d, hd, fmt = spec.d_model, spec.head_dim, spec.weight_format
        self.n_heads, self.n_kv_heads, self.head_dim = spec.n_heads, spec.n_kv_heads, hd
        self.q = BitLinear(d, spec.n_heads * hd, fmt)
        self.k = BitLinear(d, spec.n_kv_heads * hd, fmt)
        self.v = BitLinear(d, spec.n_kv_heads * hd, fmt)
        self.o = BitLinear(spec.n_heads * hd, d, fmt)

    def core(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layer: int, start_pos: int,
             kv_cache: KVCache | None, attn_fn: AttnFn) -> torch.Tensor:
        """Everything between the input norm and Wo: returns the concatenated heads [B, T, H*hd]."""
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v, start_pos)
        y = attn_fn(q, k, v, layer, start_pos)
        return y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)


class FeedForward(nn.Module):
    """Gated FFN ``act(gate(x)) * up(x)`` (SwiGLU / ReLU^2 GLU) or plain ``act(up(x))``; down in the Block."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        d, f, fmt = spec.d_model, spec.d_ffn, spec.weight_format
        self.gate = BitLinear(d, f, fmt) if spec.gated else None
        self.up = BitLinear(d, f, fmt)
        self.down = BitLinear(f, d, fmt)
        self.act = {"swiglu": nn.SiLU, "silu": nn.SiLU, "relu2_glu": ReLU2, "relu2": ReLU2,
                    "gelu": nn.GELU}[spec.ffn_act]()

    def inner(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is None:
            return self.act(self.up(x))
        g, u = self.gate(x), self.up(x)
        return self.act(g) * u


class Block(nn.Module):
    """One decoder layer (pre-norm; SubLN adds attn_sub_norm before Wo and ffn_sub_norm before Wdown)."""

    def __init__(self, spec: ModelSpec, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.attn_norm = RMSNorm(spec.d_model, spec.norm_eps)
        self.attn = Attention(spec)
        self.attn_sub_norm = RMSNorm(spec.d_model, spec.norm_eps) if spec.subln else nn.Identity()
        self.ffn_norm = RMSNorm(spec.d_model, spec.norm_eps)
        self.ffn = FeedForward(spec)
        self.ffn_sub_norm = RMSNorm(spec.d_ffn, spec.norm_eps) if spec.subln else nn.Identity()

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start_pos: int,
                kv_cache: KVCache | None, attn_fn: AttnFn) -> torch.Tensor:
        a = self.attn.core(self.attn_norm(x), cos, sin, self.layer, start_pos, kv_cache, attn_fn)
        h = x + self.attn.o(self.attn_sub_norm(a))
        f = self.ffn.inner(self.ffn_norm(h))
        return h + self.ffn.down(self.ffn_sub_norm(f))


class BitNet(nn.Module):
    """BitNet b1.58 decoder built from a ModelSpec: ``forward(idx, kv_cache=None, start_pos=0) -> logits``.

    ``quantized`` switches every BitLinear between ternary QAT (True, default) and float (False).
    ``attn_fn`` is the attention hook point (default :func:`sdpa_attention`; see :data:`AttnFn`).
    """

    def __init__(self, spec: ModelSpec, attn_fn: AttnFn | None = None) -> None:
        super().__init__()
        spec.validate()
        self.spec = spec
        self.attn_fn: AttnFn = attn_fn or sdpa_attention
        self.embed = nn.Embedding(spec.vocab, spec.d_model)
        self.layers = nn.ModuleList(Block(spec, i) for i in range(spec.n_layers))
        self.final_norm = RMSNorm(spec.d_model, spec.norm_eps)
        self.lm_head = nn.Linear(spec.d_model, spec.vocab, bias=False)
        self.lm_head.weight_format = spec.lm_head_format  # full precision by default (docs/reference/numerics.md §1.1)
        if spec.tied_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = rope_tables(spec.head_dim, spec.max_positions, spec.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        # GPT-2/nanoGPT init (std 0.02); an assumption, the BitNet papers do not state theirs.
        if isinstance(m, (nn.Linear, nn.Embedding)) and not m.weight.is_meta:
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        elif isinstance(m, RMSNorm) and not m.weight.is_meta:
            nn.init.ones_(m.weight)

    @classmethod
    def build(cls, spec: ModelSpec, device: str | torch.device = "cpu", seed: int | None = None) -> BitNet:
        """Construct on the meta device (no memory), then materialize on `device` and initialize once.

        Faster and leaner than ``BitNet(spec)`` for big presets (no default init pass, no double allocation).
        ``device="meta"`` returns the shapes-only model. Same init as the constructor, in a different RNG order.
        """
        with torch.device("meta"):
            model = cls(spec)
        if torch.device(device).type == "meta":
            return model
        model.to_empty(device=device)
        if spec.tied_embeddings:
            model.lm_head.weight = model.embed.weight
        if seed is not None:
            torch.manual_seed(seed)
        with torch.no_grad():
            model.apply(cls._init)
            cos, sin = rope_tables(spec.head_dim, spec.max_positions, spec.rope_theta)
            model.rope_cos.copy_(cos)
            model.rope_sin.copy_(sin)
        return model

    @property
    def quantized(self) -> bool:
        return all(m.quantized for m in self.modules() if isinstance(m, BitLinear))

    @quantized.setter
    def quantized(self, on: bool) -> None:
        for m in self.modules():
            if isinstance(m, BitLinear):
                m.quantized = bool(on)

    def new_cache(self, batch: int = 1, max_len: int | None = None) -> KVCache:
        return KVCache(self.spec, batch, max_len, self.embed.weight.device, self.embed.weight.dtype)

    def forward(self, idx: torch.Tensor, kv_cache: KVCache | None = None, start_pos: int = 0) -> torch.Tensor:
        """idx [B, T] token ids at positions start_pos..start_pos+T-1 -> logits [B, T, vocab]."""
        T = idx.shape[1]
        if start_pos + T > self.spec.max_positions:
            raise ValueError(f"positions up to {start_pos + T} exceed max_positions {self.spec.max_positions}")
        cos = self.rope_cos[start_pos:start_pos + T]
        sin = self.rope_sin[start_pos:start_pos + T]
        x = self.embed(idx)
        for block in self.layers:
            x = block(x, cos, sin, start_pos, kv_cache, self.attn_fn)
        return self.lm_head(self.final_norm(x))

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, n_new: int) -> torch.Tensor:
        """Greedy decoding with the KV cache: prefill idx, then n_new single-token steps."""
        cache = self.new_cache(idx.shape[0], idx.shape[1] + n_new)
        logits = self(idx, cache, 0)
        out = [idx]
        pos = idx.shape[1]
        for i in range(n_new):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            out.append(nxt)
            if i + 1 < n_new:
                logits = self(nxt, cache, pos)
                pos += 1
        return torch.cat(out, dim=1)
