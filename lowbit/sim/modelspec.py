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
FFN_ACTS = ("swiglu", "relu2_glu", "gelu", "relu2", "silu")


@dataclass(frozen=True)
class ModelSpec:
    """Shape of a decoder-only transformer. `ffn_act` names the FFN: *_glu/swiglu are gated (3 matrices)."""

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

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def gated(self) -> bool:
        return self.ffn_act in ("swiglu", "relu2_glu")

    @property
    def projection_params(self) -> int:
        """Weights of all quantized projections (attention q,k,v,o + FFN), lm_head/embedding excluded."""
        kv = self.n_kv_heads * self.head_dim
        attn = self.d_model * (2 * self.d_model + 2 * kv)
        ffn = (3 if self.gated else 2) * self.d_model * self.d_ffn
        return self.n_layers * (attn + ffn)

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
        if self.d_model % self.n_heads:
            raise WorkloadError(f"model {self.name}: d_model {self.d_model} not divisible by n_heads {self.n_heads}")
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
    if name not in MODELS:
        raise WorkloadError(f"unknown model '{name}'{did_you_mean(name, MODELS)}; available: {', '.join(MODELS)}")
    return MODELS[name]
