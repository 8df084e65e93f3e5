"""Model shapes from a Hugging Face `config.json`, torch-free: any LLaMA / Mistral / Qwen2 / BitNet /
Falcon3 (LLaMA architecture) / StarCoder2-style decoder, and the shipped model presets.

The reader knows, per `model_type` (FAMILIES), how the transformers implementation of that architecture
builds its layers (transformers `modeling_<type>.py`): gated or plain FFN, SubLN (BitNet), RMSNorm or
LayerNorm, which projections carry a bias and which config field switches it, and the defaults transformers
takes for an optional field that the file leaves out (checked against the transformers config classes by
tests/models/test_hfconfig_transformers.py). From that it builds a ModelSpec, i.e. the op sequence of
lowbit.sim.workloads.layer_ops.

Every top-level field is one of three kinds:
- read (`FIELDS` and the family's own fields): it sets a shape, the op sequence or the default weight format;
- ignored (`IGNORED`, the one list, each with the reason it does not change shapes or ops);
- anything else is refused with an error naming it: lowbit does not guess what an unknown field does.

Design assumptions (docs/models.md): RoPE scaling (`rope_scaling`: linear, dynamic, YaRN, LongRoPE,
llama3) only rescales the rotary frequencies, so the RoPE op keeps its shape; an active sliding window
(Mistral v0.1, Qwen2 with `use_sliding_window`, StarCoder2) limits the simulated context to the window
(`max_positions` = the window), within which attention is exact.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from lowbit.sim.errors import ModelImportError, did_you_mean
from lowbit.sim.modelspec import HEAD_DIM, MODEL_RANGES, ModelSpec
from lowbit.sim.schema import Range, as_bool, as_float, as_int, as_str, clip, short

PRESET_DIR = Path(__file__).parent / "presets" / "models"
MAX_CONFIG_BYTES = 4 << 20

# hidden_act -> ModelSpec.ffn_act, for gated FFNs (act(gate) * up) and plain ones (act(up)).
GATED_ACT = {"silu": "swiglu", "swish": "swiglu", "relu2": "relu2_glu", "relu": "relu_glu", "gelu": "gelu_glu",
             "gelu_new": "gelu_glu", "gelu_pytorch_tanh": "gelu_glu", "gelu_fast": "gelu_glu"}
PLAIN_ACT = {"silu": "silu", "swish": "silu", "relu2": "relu2", "relu": "relu", "gelu": "gelu",
             "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu_fast": "gelu"}

# RoPE variants that change only the rotary frequencies (and, for YaRN/LongRoPE, a logit scale folded into
# the softmax scale): the RoPE op keeps its shape and cost.
ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")


@dataclass(frozen=True, kw_only=True)
class Family:
    """How transformers builds one `model_type` (its modeling_<type>.py)."""

    model_type: str
    architectures: tuple[str, ...]
    gated: bool                              # FFN act(gate) * up (3 matrices) or act(up) (2)
    subln: bool = False                      # BitNet: attn_sub_norm before o, ffn_sub_norm before down
    norm: str = "rmsnorm"
    eps_field: str = "rms_norm_eps"
    qkv_bias: bool | str = False             # fixed, or the config field that sets it
    o_bias: bool | str = False
    mlp_bias: bool | str = False
    sliding: tuple[str, ...] = ()            # sliding-window fields the family reads
    ternary: bool = False                    # trained ternary (BitNet b1.58): default weight format
    defaults: dict[str, Any] = field(default_factory=dict)  # transformers' value of an absent optional field

    @property
    def fields(self) -> set[str]:
        own = {self.eps_field, *self.sliding}
        own |= {f for f in (self.qkv_bias, self.o_bias, self.mlp_bias) if isinstance(f, str)}
        return own


FAMILIES = {f.model_type: f for f in (
    Family(model_type="llama", architectures=("LlamaForCausalLM",), gated=True, qkv_bias="attention_bias",
           o_bias="attention_bias", mlp_bias="mlp_bias",
           defaults={"hidden_act": "silu", "tie_word_embeddings": False, "rms_norm_eps": 1e-6, "rope_theta": 1e4,
                     "attention_bias": False, "mlp_bias": False}),
    Family(model_type="mistral", architectures=("MistralForCausalLM",), gated=True, sliding=("sliding_window",),
           defaults={"hidden_act": "silu", "tie_word_embeddings": False, "rms_norm_eps": 1e-6, "rope_theta": 1e4,
                     "sliding_window": 4096}),
    Family(model_type="qwen2", architectures=("Qwen2ForCausalLM",), gated=True, qkv_bias=True,
           sliding=("sliding_window", "use_sliding_window", "max_window_layers", "layer_types", "use_mrope"),
           defaults={"hidden_act": "silu", "tie_word_embeddings": False, "rms_norm_eps": 1e-6, "rope_theta": 1e4,
                     "use_sliding_window": False, "max_window_layers": 28}),
    Family(model_type="bitnet", architectures=("BitNetForCausalLM",), gated=True, subln=True, ternary=True,
           qkv_bias="attention_bias", o_bias="attention_bias",
           defaults={"hidden_act": "relu2", "tie_word_embeddings": False, "rms_norm_eps": 1e-5,
                     "rope_theta": 5e5, "attention_bias": False}),
    Family(model_type="starcoder2", architectures=("Starcoder2ForCausalLM",), gated=False, norm="layernorm",
           eps_field="norm_epsilon", qkv_bias="use_bias", o_bias="use_bias", mlp_bias="use_bias",
           sliding=("sliding_window",),
           defaults={"hidden_act": "gelu_pytorch_tanh", "tie_word_embeddings": True, "norm_epsilon": 1e-5,
                     "rope_theta": 1e4, "use_bias": True, "sliding_window": None}),
)}
ARCHITECTURES = {a: f for f in FAMILIES.values() for a in f.architectures}

# Fields every family reads. Required ones set the model's shape and are never guessed.
REQUIRED = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size",
            "max_position_embeddings")
FIELDS = {*REQUIRED, "architectures", "model_type", "num_key_value_heads", "head_dim", "hidden_act",
          "rope_theta", "rope_scaling", "rope_parameters", "tie_word_embeddings", "quantization_config"}

# The one list of fields read and ignored, with why they do not change the shapes or the op sequence.
IGNORED = {
    "_name_or_path": "provenance", "name_or_path": "provenance", "transformers_version": "provenance",
    "torch_dtype": "checkpoint storage type; the deployed format is --weights",
    "dtype": "checkpoint storage type; the deployed format is --weights",
    "bos_token_id": "tokenizer", "eos_token_id": "tokenizer", "pad_token_id": "tokenizer",
    "tokenizer_class": "tokenizer",
    "initializer_range": "training (weight initialisation)",
    "attention_dropout": "training (dropout)", "hidden_dropout": "training (dropout)",
    "embedding_dropout": "training (dropout)", "residual_dropout": "training (dropout)",
    "use_cache": "generation flag; lowbit always caches K/V",
    "pretraining_tp": "tensor-parallel slicing of the same matmuls during pretraining",
    "auto_map": "remote-code pointers", "attn_implementation": "attention kernel choice",
    "_attn_implementation": "attention kernel choice",
    "output_attentions": "debug output", "output_hidden_states": "debug output", "return_dict": "output format",
    "id2label": "classification heads (not in a causal LM)", "label2id": "classification heads (not in a causal LM)",
    "num_labels": "classification heads (not in a causal LM)",
}

# quantization_config: only BitNet b1.58 ternary checkpoints are understood (they set the default format).
QUANT_FIELDS = {"quant_method", "linear_class", "quantization_mode", "modules_to_not_convert", "use_rms_norm",
                "rms_norm_eps"}


@dataclass(frozen=True)
class ModelConfig:
    """A config.json read into a ModelSpec, with what was ignored and the modelling notes (sliding window)."""

    spec: ModelSpec
    path: Path
    ignored: tuple[str, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Preset:
    """A shipped config.json (lowbit/sim/presets/models/<org>--<name>/) and its source (source.toml)."""

    name: str          # the short name: the Hugging Face repository's name, lower case
    repo: str          # the Hugging Face repository it was transcribed from
    path: Path         # the config.json
    url: str
    revision: str
    license: str


def _fail(where: str, msg: str) -> ModelImportError:
    return ModelImportError(f"{where}: {msg}")


def read_json(path: Path) -> dict[str, Any]:
    """config.json as a dict; ModelImportError for an unreadable, oversized or non-object file."""
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise _fail(str(path), f"larger than {MAX_CONFIG_BYTES} bytes; not a model config")
        cfg = json.loads(path.read_bytes(), parse_constant=_reject_constant)
    except OSError as e:
        raise _fail(str(path), f"cannot read ({e.strerror or e})") from None
    except (ValueError, RecursionError) as e:  # invalid JSON or UTF-8, NaN/Infinity, nesting too deep
        msg = str(e).splitlines()[0] if isinstance(e, ValueError) else "nested too deeply"
        raise _fail(str(path), f"invalid JSON ({clip(msg, 120)})") from None
    if not isinstance(cfg, dict):
        raise _fail(str(path), "must be a JSON object")
    return cfg


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def family_of(cfg: dict[str, Any], where: str) -> Family:
    """The family from `model_type` (or `architectures[0]`); both, when given, must agree."""
    mt = cfg.get("model_type")
    archs = cfg.get("architectures")
    if archs is not None and (not isinstance(archs, list) or not archs or not all(isinstance(a, str) for a in archs)):
        raise _fail(where, f"architectures = {short(archs)}: must be a non-empty list of class names")
    if mt is not None:
        as_str(mt, where, "model_type", ModelImportError, max_len=200)
        if mt not in FAMILIES:
            raise _fail(where, f"model_type = {short(mt)}: not understood{did_you_mean(mt, FAMILIES)}; lowbit reads "
                               f"{', '.join(FAMILIES)} decoders")
        fam = FAMILIES[mt]
        if archs and archs[0] not in fam.architectures:
            raise _fail(where, f"architectures[0] = {short(archs[0])} contradicts model_type {mt!r} "
                               f"({', '.join(fam.architectures)})")
        return fam
    if not archs:
        raise _fail(where, "missing field 'model_type' (and 'architectures'): the architecture is never guessed")
    if archs[0] not in ARCHITECTURES:
        raise _fail(where, f"architectures[0] = {short(archs[0])}: not understood; lowbit reads "
                           f"{', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[archs[0]]


def _get(cfg: dict[str, Any], fam: Family, key: str) -> Any:
    """The field's value; transformers' default when absent (a present null stays null: no sliding window)."""
    return cfg[key] if key in cfg else fam.defaults.get(key)


def _rope(cfg: dict[str, Any], fam: Family, where: str) -> float:
    """rope_theta (top level or in rope_parameters); the RoPE variant must keep the op's shape."""
    theta = _get(cfg, fam, "rope_theta")
    for key in ("rope_scaling", "rope_parameters"):
        rp = cfg.get(key)
        if rp is None:
            continue
        if not isinstance(rp, dict):
            raise _fail(where, f"{key} = {short(rp)}: must be an object or null")
        kind = rp.get("rope_type", rp.get("type", "default"))
        if kind not in ROPE_TYPES:
            raise _fail(where, f"{key}.rope_type = {short(kind)}: not understood (it may change the RoPE op); "
                               f"understood: {', '.join(ROPE_TYPES)}")
        prf = rp.get("partial_rotary_factor")
        if prf is not None and prf != 1:
            raise _fail(where, f"{key}.partial_rotary_factor = {short(prf)}: partial rotary embeddings are not "
                               "modelled (the RoPE op covers the whole head)")
        if rp.get("rope_theta") is not None:
            theta = rp["rope_theta"]
    return as_float(theta, where, "rope_theta", MODEL_RANGES["rope_theta"], ModelImportError)


def _quant(cfg: dict[str, Any], where: str) -> bool:
    """True for a BitNet b1.58 (ternary) quantization_config; anything else is refused."""
    q = cfg.get("quantization_config")
    if q is None:
        return False
    if not isinstance(q, dict):
        raise _fail(where, f"quantization_config = {short(q)}: must be an object")
    if q.get("quant_method") != "bitnet":
        raise _fail(where, f"quantization_config.quant_method = {short(q.get('quant_method'))}: only 'bitnet' "
                           "(ternary b1.58) is understood; drop quantization_config and choose the deployed "
                           "format with --weights")
    for k in q:
        if k not in QUANT_FIELDS:
            raise _fail(where, f"quantization_config.{k}: not understood (it may change the op sequence)")
    if q.get("use_rms_norm"):
        raise _fail(where, "quantization_config.use_rms_norm = true: an RMSNorm inside every BitLinear is not "
                           "in lowbit's op sequence")
    keep = q.get("modules_to_not_convert")
    if keep is not None and (not isinstance(keep, list) or any(m != "lm_head" for m in keep)):
        raise _fail(where, f"quantization_config.modules_to_not_convert = {short(keep)}: only ['lm_head'] "
                           "(or null) is understood: every decoder projection is ternary")
    return True


def _window(cfg: dict[str, Any], fam: Family, where: str, layers: int) -> int | None:
    """The sliding-window length when some layer attends over a window, else None."""
    if not fam.sliding:
        return None
    w = _get(cfg, fam, "sliding_window")
    if fam.model_type == "qwen2":
        if cfg.get("use_mrope"):
            raise _fail(where, "use_mrope = true: multimodal RoPE is not modelled")
        lt = cfg.get("layer_types")
        if lt is not None:
            if not isinstance(lt, list) or len(lt) != layers or any(t not in ("full_attention", "sliding_attention")
                                                                     for t in lt):
                raise _fail(where, f"layer_types = {short(lt)}: must list 'full_attention' or 'sliding_attention' "
                                   f"for each of the {layers} layers")
            active = "sliding_attention" in lt
        else:
            use = as_bool(_get(cfg, fam, "use_sliding_window"), where, "use_sliding_window", ModelImportError)
            mwl = as_int(_get(cfg, fam, "max_window_layers"), where, "max_window_layers",
                         Range(0, 4096, "layers", integer=True), ModelImportError)
            active = use and mwl < layers
        if not active:
            return None
    if w is None:
        return None
    return as_int(w, where, "sliding_window", MODEL_RANGES["max_positions"], ModelImportError)


def spec_from_dict(cfg: dict[str, Any], name: str, where: str = "config.json") -> ModelConfig:
    """ModelSpec of a config.json dict (ModelImportError naming the field on anything not understood)."""
    fam = family_of(cfg, where)
    unknown = [k for k in cfg if k not in FIELDS and k not in fam.fields and k not in IGNORED]
    if unknown:
        k = unknown[0]
        raise _fail(where, f"field '{clip(k)}' is not understood for model_type {fam.model_type!r} (it may change "
                           "the shapes or the op sequence); understood fields: lowbit.sim.hfconfig.FIELDS and "
                           "Family.fields, ignored ones: lowbit.sim.hfconfig.IGNORED")
    for key in REQUIRED:
        if cfg.get(key) is None:
            raise _fail(where, f"missing required field '{key}' (the model shape is never guessed)")
    ints = {"num_hidden_layers": "n_layers", "hidden_size": "d_model", "num_attention_heads": "n_heads",
            "intermediate_size": "d_ffn", "vocab_size": "vocab", "max_position_embeddings": "max_positions"}
    v = {f: as_int(cfg[k], where, k, MODEL_RANGES[f], ModelImportError) for k, f in ints.items()}
    kv = cfg.get("num_key_value_heads")
    if kv is None:
        if fam.model_type != "llama":  # transformers' defaults differ by family (Mistral 8, Qwen2 32)
            raise _fail(where, "missing field 'num_key_value_heads' (required for this model_type)")
        kv = v["n_heads"]  # LlamaConfig: absent = multi-head attention
    v["n_kv_heads"] = as_int(kv, where, "num_key_value_heads", MODEL_RANGES["n_kv_heads"], ModelImportError)
    hd = cfg.get("head_dim")
    if hd is not None:
        v["head_dim"] = as_int(hd, where, "head_dim", HEAD_DIM, ModelImportError)
    elif v["d_model"] % v["n_heads"]:
        raise _fail(where, f"hidden_size {v['d_model']} not divisible by num_attention_heads {v['n_heads']} and "
                           "no head_dim")
    act = as_str(_get(cfg, fam, "hidden_act"), where, "hidden_act", ModelImportError, max_len=200)
    acts = GATED_ACT if fam.gated else PLAIN_ACT
    if act not in acts:
        raise _fail(where, f"hidden_act = {act!r}: not understood for {'a gated' if fam.gated else 'a plain'} FFN; "
                           f"understood: {', '.join(acts)}")
    eps = as_float(_get(cfg, fam, fam.eps_field), where, fam.eps_field, MODEL_RANGES["norm_eps"], ModelImportError)
    tied = as_bool(_get(cfg, fam, "tie_word_embeddings"), where, "tie_word_embeddings", ModelImportError)

    def flag(f: bool | str) -> bool:
        return f if isinstance(f, bool) else as_bool(_get(cfg, fam, f), where, f, ModelImportError)

    ternary = fam.ternary or _quant(cfg, where)
    notes = []
    window = _window(cfg, fam, where, v["n_layers"])
    if window is not None and window < v["max_positions"]:
        notes.append(f"sliding window of {window} tokens: contexts up to the window are simulated "
                     f"(max_positions {v['max_positions']} -> {window})")
        v["max_positions"] = window
    spec = ModelSpec(name=name, **v, ffn_act=acts[act], subln=fam.subln, rope_theta=_rope(cfg, fam, where),
                     norm_eps=eps, weight_format="ternary" if ternary else "bf16", lm_head_format="bf16",
                     tied_embeddings=tied, qkv_bias=flag(fam.qkv_bias), o_bias=flag(fam.o_bias),
                     mlp_bias=flag(fam.mlp_bias), norm=fam.norm)  # type: ignore[arg-type]
    try:
        spec.validate()
    except Exception as e:
        raise _fail(where, str(e)) from None
    return ModelConfig(spec, Path(where), tuple(k for k in cfg if k in IGNORED), tuple(notes))


def config_path(path: str | Path) -> Path:
    """A config.json file, or a directory holding one."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise ModelImportError(f"{path}: no such config.json (give a file or a directory holding one)")
    return p


def read_model_config(path: str | Path, name: str | None = None) -> ModelConfig:
    """Read a config.json file (or a directory holding one) into a ModelSpec named `name` (default: the
    directory's name)."""
    p = config_path(path)
    return spec_from_dict(read_json(p), name or p.resolve().parent.name, str(p))


# ----------------------------------------------------------------------------- shipped presets


@cache
def presets() -> dict[str, Preset]:
    """The shipped config.json presets by short name (lowbit/sim/presets/models/*/source.toml)."""
    out = {}
    for src in sorted(PRESET_DIR.glob("*/source.toml"), key=lambda p: p.parent.name.lower()):
        meta = tomllib.loads(src.read_text())
        repo = meta["repo"]
        name = repo.split("/")[-1].lower()
        out[name] = Preset(name, repo, src.parent / "config.json", meta["url"], meta["revision"], meta["license"])
    return out


def find_preset(name: str) -> Preset | None:
    """A preset by short name or Hugging Face repository id, case-insensitive."""
    key = name.lower()
    for p in presets().values():
        if key in (p.name, p.repo.lower()):
            return p
    return None


def preset_spec(name: str) -> ModelSpec:
    p = find_preset(name)
    if p is None:
        raise ModelImportError(f"unknown model preset '{name}'{did_you_mean(name, presets())}")
    return read_model_config(p.path, p.name).spec


def looks_like_path(name: str) -> bool:
    """A --model value that names a config.json file or a directory holding one (it takes precedence)."""
    p = Path(name).expanduser()
    return p.is_file() or (p / "config.json").is_file()
