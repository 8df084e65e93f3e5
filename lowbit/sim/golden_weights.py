"""Deployed weights of the hardware-exact golden (lowbit.sim.golden): what the compiler puts in DRAM for a
ternary model, derived from its real-valued weights, plus a seeded generator of such weights.

Real-valued weights are named as the PyTorch model's state dict (lowbit.models.bitnet): ``embed.weight``
[vocab, d_model], ``layers.{i}.attn_norm.weight``, ``layers.{i}.attn.{q,k,v,o}.weight`` [out, in],
``layers.{i}.attn_sub_norm.weight`` (SubLN), ``layers.{i}.ffn_norm.weight``, ``layers.{i}.ffn.{gate,up,down}.weight``,
``layers.{i}.ffn_sub_norm.weight`` (SubLN), ``final_norm.weight``, ``lm_head.weight`` [vocab, d_model].

Deployment (each format's rule and source in docs/golden.md):
- projections: ternary codes + one per-tensor scale ``mean|W|`` (sim.numerics.ternary.ternary_quantize, BitNet
  b1.58's absmean rule), the requantization multiplier ``mean|W| / 127`` (sim.numerics.requant); or, for an FP4
  core, NVFP4 / MXFP4 codes, block scales and tensor scale (lowbit.sim.golden_fp4);
- lm_head in the chip's format: "int8" (per-row absmax INT8, sim.numerics.int8.int8_absmax_quantize; BoothFlex
  INT8 tiles; multiplier ``max|W_n| / 127^2`` per row) or "ternary" (as a projection);
- embedding rows: signed 16-bit Q7.8 (sim.numerics.sfu_elem.to_fixed, RNE, saturating), the residual stream's
  format; norm gains: Q5.10 (sim.numerics.sfu_reduce.GAIN_FRAC).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowbit.sim.errors import WorkloadError
from lowbit.sim.golden_fp4 import FP4_FORMATS, fp4_weights
from lowbit.sim.modelspec import ModelSpec
from lowbit.sim.numerics.int8 import int8_absmax_quantize
from lowbit.sim.numerics.mx import MXFP4Tensor, NVFP4Tensor
from lowbit.sim.numerics.sfu_elem import to_fixed
from lowbit.sim.numerics.sfu_reduce import GAIN_FRAC
from lowbit.sim.numerics.ternary import ternary_quantize

__all__ = ["LM_HEAD_FORMATS", "PROJ_FORMATS", "DeployedLinear", "Deployed", "linear_names", "norm_names", "seeded_weights", "deploy"]

LM_HEAD_FORMATS = ("int8", "ternary")
PROJ_FORMATS = ("ternary", *FP4_FORMATS)


@dataclass(frozen=True)
class DeployedLinear:
    """One projection as the chip holds it: integer codes [out, in] and the real dequantization factor of each
    output row (``wscale[n]``: ``W[n] ~ codes[n] * wscale[n]``). An FP4 projection keeps its quantized tensor in
    ``fp4`` (E2M1 codes [out, in] in ``codes``, block scales, tensor scale) and ``wscale`` 1."""

    codes: np.ndarray   # int8 [out, in]: ternary {-1, 0, 1} or INT8; uint8 E2M1 codes for FP4
    wscale: np.ndarray  # float64 [out]
    fmt: str            # "ternary" | "int8" | "nvfp4" | "mxfp4"
    fp4: NVFP4Tensor | MXFP4Tensor | None = None


@dataclass(frozen=True)
class Deployed:
    """A model's deployed weights: Q7.8 embedding rows, Q5.10 norm gains and the projections by op name
    (``layers.0.attn.q``, ..., ``lm_head``; sim.workloads' names)."""

    spec: ModelSpec
    embed: np.ndarray                    # int64 [vocab, d_model], Q7.8 values
    norms: dict[str, np.ndarray]         # op name -> int64 gains, Q5.10 values
    linears: dict[str, DeployedLinear]   # op name -> projection


def linear_names(spec: ModelSpec, layer: int) -> list[str]:
    """Op names of one decoder layer's projections, in program order."""
    p = f"layers.{layer}"
    ffn = ["ffn.gate", "ffn.up"] if spec.gated else ["ffn.up"]
    return [f"{p}.{n}" for n in ("attn.q", "attn.k", "attn.v", "attn.o", *ffn, "ffn.down")]


def norm_names(spec: ModelSpec, layer: int) -> list[str]:
    """Op names of one decoder layer's norms (SubLN adds attn_sub_norm and ffn_sub_norm)."""
    p = f"layers.{layer}"
    sub = [f"{p}.attn_sub_norm", f"{p}.ffn_sub_norm"] if spec.subln else []
    return [f"{p}.attn_norm", f"{p}.ffn_norm", *sub]


def _shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    d, A, F, kv = spec.d_model, spec.attn_dim, spec.d_ffn, spec.n_kv_heads * spec.head_dim
    lin = {"attn.q": (A, d), "attn.k": (kv, d), "attn.v": (kv, d), "attn.o": (d, A), "ffn.gate": (F, d),
           "ffn.up": (F, d), "ffn.down": (d, F)}
    norm = {"attn_norm": (d,), "ffn_norm": (d,), "attn_sub_norm": (A,), "ffn_sub_norm": (F,)}
    out: dict[str, tuple[int, ...]] = {"embed.weight": (spec.vocab, d), "final_norm.weight": (d,),
                                       "lm_head.weight": (spec.vocab, d)}
    for i in range(spec.n_layers):
        for n in linear_names(spec, i):
            out[f"{n}.weight"] = lin[n.split(".", 2)[2]]
        for n in norm_names(spec, i):
            out[f"{n}.weight"] = norm[n.split(".", 2)[2]]
    return out


def _check(spec: ModelSpec) -> None:
    spec.validate()
    if spec.weight_format not in PROJ_FORMATS:  # an FP4 variant of a ternary model: deploy(..., proj=) decides
        raise WorkloadError(f"model {spec.name}: weight_format '{spec.weight_format}': the hardware-exact golden "
                            f"covers {', '.join(PROJ_FORMATS)} models; use one of those")
    if spec.norm != "rmsnorm" or spec.qkv_bias or spec.o_bias or spec.mlp_bias:
        raise WorkloadError(f"model {spec.name}: LayerNorm and biases are not in the hardware-exact golden; "
                            "use an RMSNorm model without biases")
    if spec.ffn_act not in ("relu2_glu", "swiglu"):
        raise WorkloadError(f"model {spec.name}: ffn_act '{spec.ffn_act}': the SFU gates relu2_glu and swiglu; "
                            "use one of those")


def seeded_weights(spec: ModelSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """Real-valued float32 weights for `spec` from numpy's PCG64 with `seed`: embedding N(0, 1) (the residual
    stream then uses the Q7.8 range: a DESIGN CHOICE of this generator, see docs/golden.md), projections
    N(0, 0.25) (attention scores of a few units, so attention is peaked and RoPE matters), lm_head N(0, 0.5), norm gains 1 + N(0, 0.1)."""
    _check(spec)
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in _shapes(spec).items():
        if name.endswith("norm.weight"):
            w = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name == "embed.weight":
            w = rng.standard_normal(shape)
        elif name == "lm_head.weight":
            w = 0.5 * rng.standard_normal(shape)
        else:
            w = 0.25 * rng.standard_normal(shape)
        out[name] = w.astype(np.float32)
    return out


def _lm_head(w: np.ndarray, fmt: str) -> DeployedLinear:
    if fmt == "int8":
        q, s = int8_absmax_quantize(w)  # per row: q = RNE(W * 127 / max|W_n|), W ~ q / s
        return DeployedLinear(q, (1.0 / s[:, 0]).astype(np.float64), "int8")
    if fmt == "ternary":
        codes, scale = ternary_quantize(w)
        return DeployedLinear(codes, np.full(w.shape[0], scale), "ternary")
    raise WorkloadError(f"lm_head format '{fmt}': the golden runs it on chip as one of {', '.join(LM_HEAD_FORMATS)}")


def _projection(w: np.ndarray, fmt: str) -> DeployedLinear:
    if fmt == "ternary":
        codes, scale = ternary_quantize(w)
        return DeployedLinear(codes, np.full(codes.shape[0], scale), "ternary")
    if fmt in FP4_FORMATS:
        t = fp4_weights(w, fmt)
        return DeployedLinear(t.codes[:, :w.shape[1]], np.ones(w.shape[0]), fmt, t)
    raise WorkloadError(f"projection format '{fmt}': the golden deploys one of {', '.join(PROJ_FORMATS)}")


def deploy(spec: ModelSpec, weights: dict[str, np.ndarray], lm_head: str = "int8",
           proj: str = "ternary") -> Deployed:
    """The chip's weights for real-valued `weights` (names and shapes: module docstring); `proj` is the
    projections' format (the chip's core: "ternary" on TINT / BoothFlex, "nvfp4" / "mxfp4" on the FP4 core)."""
    _check(spec)
    if proj not in PROJ_FORMATS:
        raise WorkloadError(f"projection format '{proj}': the golden deploys one of {', '.join(PROJ_FORMATS)}")
    if spec.weight_format != "ternary" and proj != spec.weight_format:
        raise WorkloadError(f"model {spec.name}: weight_format '{spec.weight_format}' deployed as {proj} projections; "
                            f"deploy with proj='{spec.weight_format}' (a ternary model may take any format)")
    shapes = _shapes(spec)
    for name, shape in shapes.items():
        if name not in weights:
            raise WorkloadError(f"weights: missing tensor '{name}' {shape} for model {spec.name}")
        if tuple(np.shape(weights[name])) != shape:
            raise WorkloadError(f"weights: '{name}' has shape {tuple(np.shape(weights[name]))}, model {spec.name} "
                                f"needs {shape}")
    w = {k: np.asarray(weights[k], np.float64) for k in shapes}
    linears = {}
    for i in range(spec.n_layers):
        for n in linear_names(spec, i):
            linears[n] = _projection(w[f"{n}.weight"], proj)
    linears["lm_head"] = _lm_head(w["lm_head.weight"], lm_head)
    norms = {n[:-len(".weight")]: to_fixed(v, GAIN_FRAC) for n, v in w.items() if n.endswith("norm.weight")}
    return Deployed(spec, to_fixed(w["embed.weight"]), norms, linears)
