"""Transformer model shapes shared by the simulator (torch-free) and the PyTorch models.

Shapes of the public BitNet b1.58 checkpoints (docs/reference/numerics.md §1.5, §1.6):
- 700M/1.3B/3B: 1bitLLM reproductions (LLaMA-style, SwiGLU, MHA, vocab 32002, RoPE theta 1e4, eps 1e-6).
- 2B4T: microsoft/bitnet-b1.58-2B-4T (GQA 20/5, ReLU^2 GLU, SubLN, vocab 128256, theta 5e5, eps 1e-5).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from lowbit.sim.errors import WorkloadError, did_you_mean
from lowbit.sim.schema import Range, as_bool, as_choice, as_float, as_int, as_str

WEIGHT_FORMATS = ("ternary", "int8", "nvfp4", "mxfp4", "bf16")
# FFN activations: the *_glu / swiglu ones are gated (act(gate(x)) * up(x), three matrices), the rest plain
# (act(up(x)), two matrices). GATED_ACTS is the one list of the gated ones.
FFN_ACTS = ("swiglu", "relu2_glu", "gelu", "relu2", "silu", "gelu_glu", "relu_glu", "relu")
GATED_ACTS = ("swiglu", "relu2_glu", "gelu_glu", "relu_glu")
NORMS = ("rmsnorm", "layernorm")


@dataclass(frozen=True)
class ModelSpec:
    """Shape of a decoder-only transformer. `ffn_act` names the FFN: *_glu/swiglu are gated (3 matrices).

    `head_dim` 0 means d_model / n_heads (resolved on construction); a model whose attention width
    n_heads * head_dim differs from d_model (e.g. Mistral-NeMo: 32 x 128 on d_model 5120) gives it explicitly.
    The bias flags and `norm` change parameter counts only: a bias is added in the projection's epilogue
    and a LayerNorm runs on the SFU like an RMSNorm (two passes over the row), so neither adds an op.
    """

    name: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_ffn: int
    vocab: int
    ffn_act: Literal["swiglu", "relu2_glu", "gelu", "relu2", "silu"] = "swiglu"
    subln: bool = False
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    max_positions: int = 2048
    weight_format: Literal["ternary", "int8", "nvfp4", "mxfp4", "bf16"] = "ternary"
    lm_head_format: Literal["ternary", "int8", "nvfp4", "mxfp4", "bf16"] = "bf16"
    tied_embeddings: bool = False
    head_dim: int = 0
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"

    def __post_init__(self) -> None:
        # head_dim 0 -> d_model / n_heads when that divides (validate() reports the rest, naming the fields)
        d, h = self.d_model, self.n_heads
        if self.head_dim == 0 and type(d) is int and type(h) is int and h > 0 and d % h == 0:
            object.__setattr__(self, "head_dim", d // h)

    @property
    def attn_dim(self) -> int:
        """Width of the attention output (q projection out, o projection in): n_heads * head_dim."""
        return self.n_heads * self.head_dim

    @property
    def gated(self) -> bool:
        return self.ffn_act in GATED_ACTS

    @property
    def projection_params(self) -> int:
        """Weights of all quantized projections (attention q,k,v,o + FFN), lm_head/embedding excluded."""
        kv = self.n_kv_heads * self.head_dim
        attn = self.d_model * (2 * self.attn_dim + 2 * kv)
        ffn = (3 if self.gated else 2) * self.d_model * self.d_ffn
        return self.n_layers * (attn + ffn)

    @property
    def parameters(self) -> dict[str, int]:
        """Parameter counts by part, as a checkpoint stores them: embedding (vocab x d_model), projections
        (+ biases), norms (a weight per feature, + a bias for LayerNorm; SubLN adds attn_sub_norm over the
        attention width and ffn_sub_norm over d_ffn), lm_head (0 when tied to the embedding: one tensor,
        counted once) and their total."""
        d, F, L, A = self.d_model, self.d_ffn, self.n_layers, self.attn_dim
        kv = self.n_kv_heads * self.head_dim
        bias = L * ((A + 2 * kv) * self.qkv_bias + d * self.o_bias
                    + ((2 * F if self.gated else F) + d) * self.mlp_bias)
        per_norm = 2 if self.norm == "layernorm" else 1
        norms = per_norm * (L * (2 * d + (A + F if self.subln else 0)) + d)
        p = {"embedding": self.vocab * d, "projections": self.projection_params + bias, "norms": norms,
             "lm_head": 0 if self.tied_embeddings else self.vocab * d}
        p["total"] = sum(p.values())
        return p

    def to_dict(self) -> dict:
        """The fields as a trace manifest stores them: head_dim, the bias flags and norm only where they
        differ from a LLaMA-style model's (d_model / n_heads, no bias, RMSNorm), so that the manifest of such
        a model reads as it always has."""
        d = dataclasses.asdict(self)
        plain = {"head_dim": self.d_model // self.n_heads, "qkv_bias": False, "o_bias": False, "mlp_bias": False,
                 "norm": "rmsnorm"}
        for k, v in plain.items():
            if d[k] == v and (k != "head_dim" or self.d_model % self.n_heads == 0):
                del d[k]
        return d

    def with_format(self, weight_format: str) -> ModelSpec:
        if weight_format not in WEIGHT_FORMATS:
            raise WorkloadError(f"unknown weight format '{weight_format}'; allowed: {', '.join(WEIGHT_FORMATS)}")
        return dataclasses.replace(self, weight_format=weight_format)  # type: ignore[arg-type]

    def validate(self) -> None:
        """Types, ranges (MODEL_RANGES) and shape consistency; WorkloadError naming the field otherwise."""
        at = f"model {self.name}"
        as_str(self.name, "model", "name", WorkloadError, max_len=200)
        for f, rng in MODEL_RANGES.items():
            v = getattr(self, f)
            (as_float if f in ("rope_theta", "norm_eps") else as_int)(v, at, f, rng, WorkloadError)
        as_choice(self.ffn_act, FFN_ACTS, at, "ffn_act", WorkloadError)
        as_choice(self.weight_format, WEIGHT_FORMATS, at, "weight_format", WorkloadError)
        as_choice(self.lm_head_format, WEIGHT_FORMATS, at, "lm_head_format", WorkloadError)
        as_bool(self.subln, at, "subln", WorkloadError)
        as_bool(self.tied_embeddings, at, "tied_embeddings", WorkloadError)
        for f in ("qkv_bias", "o_bias", "mlp_bias"):
            as_bool(getattr(self, f), at, f, WorkloadError)
        as_choice(self.norm, NORMS, at, "norm", WorkloadError)
        if self.head_dim == 0:
            raise WorkloadError(f"model {self.name}: d_model {self.d_model} not divisible by n_heads {self.n_heads}; "
                                "give head_dim")
        as_int(self.head_dim, at, "head_dim", HEAD_DIM, WorkloadError)
        if self.n_heads % self.n_kv_heads:
            raise WorkloadError(f"model {self.name}: n_heads {self.n_heads} not divisible by n_kv_heads {self.n_kv_heads}")


# Ranges of a model shape. Generous for any published transformer (the largest have d_model ~ 2^14-2^15,
# vocab ~ 2^18, 1M-token contexts) and small enough that every size the simulator derives from them
# (weights, KV cache, tile counts) stays far inside int64.
MODEL_RANGES = {
    "n_layers": Range(1, 4096, "layers", integer=True),
    "d_model": Range(1, 2**17, "features", integer=True),
    "n_heads": Range(1, 4096, "heads", integer=True),
    "n_kv_heads": Range(1, 4096, "heads", integer=True),
    "d_ffn": Range(1, 2**19, "features", integer=True),
    "vocab": Range(1, 2**22, "tokens", integer=True),
    "max_positions": Range(1, 2**20, "tokens", integer=True, why="context window of up to 1,048,576 tokens"),
    "rope_theta": Range(0, 1e12, lo_open=True),
    "norm_eps": Range(0, 1, lo_open=True, hi_open=True),
}
HEAD_DIM = Range(1, 2**12, "features", integer=True)


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec("bitnet-b1.58-700m", 24, 1536, 16, 16, 4096, 32002),
        ModelSpec("bitnet-b1.58-1.3b", 24, 2048, 32, 32, 5460, 32002),
        ModelSpec("bitnet-b1.58-3b", 26, 3200, 32, 32, 8640, 32002),
        ModelSpec("bitnet-b1.58-2b4t", 30, 2560, 20, 5, 6912, 128256, ffn_act="relu2_glu", subln=True,
                  rope_theta=500000.0, norm_eps=1e-5, max_positions=4096, tied_embeddings=True),
        # A tiny model for tests and examples (not a published checkpoint).
        ModelSpec("bitnet-tiny", 2, 64, 4, 2, 128, 256, ffn_act="relu2_glu", subln=True, max_positions=256),
    )
}


def get_model(name: str) -> ModelSpec:
    """A model by --model value: a config.json file or a directory holding one (lowbit.sim.hfconfig), a
    built-in shape (MODELS) or a shipped config.json preset (by short name or Hugging Face repository id)."""
    from lowbit.sim import hfconfig  # the config reader builds on this module

    if hfconfig.looks_like_path(name):
        return hfconfig.read_model_config(name).spec
    if name in MODELS:
        return MODELS[name]
    if hfconfig.find_preset(name) is not None:
        return hfconfig.preset_spec(name)
    known = [*MODELS, *hfconfig.presets()]
    raise WorkloadError(f"unknown model '{name}'{did_you_mean(name, known)}; available: {', '.join(known)} "
                        "(`lowbit models list`), or a config.json file or directory")
