"""lowbit.sim.hfconfig (torch-free) against Hugging Face transformers: the parameter count of each shipped
config.json equals that of the transformers model built from it on the meta device; each family's defaults
are transformers' defaults; config.json files that transformers writes are read."""

from __future__ import annotations

import json

import pytest

from lowbit.sim.hfconfig import FAMILIES, presets, read_model_config, spec_from_dict

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")


def hf_parameter_count(cfg: dict) -> int:
    """Parameters of the transformers causal LM built from `cfg` on the meta device (no memory, no weights);
    shared tensors (tied embeddings) counted once, as module.parameters() yields them."""
    d = {k: v for k, v in cfg.items() if k != "quantization_config"}  # a quantizer applies only when loading
    config = transformers.AutoConfig.for_model(**d)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(presets()))
def test_preset_parameter_count_equals_transformers(name):
    p = presets()[name]
    cfg = json.loads(p.path.read_text())
    assert read_model_config(p.path, name).spec.parameters["total"] == hf_parameter_count(cfg)


SMALL = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 128, "max_position_embeddings": 64}


@pytest.mark.parametrize("model_type, extra", [
    ("llama", {}), ("llama", {"attention_bias": True, "mlp_bias": True, "tie_word_embeddings": True}),
    ("llama", {"head_dim": 24}), ("mistral", {"head_dim": 8}), ("qwen2", {}), ("bitnet", {}),
    ("starcoder2", {}), ("starcoder2", {"use_bias": False, "hidden_act": "relu"}),
])
def test_small_configs_count_as_transformers(model_type, extra):
    cfg = {"model_type": model_type, **SMALL, **extra}
    assert spec_from_dict(cfg, "t").spec.parameters["total"] == hf_parameter_count(cfg)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_family_defaults_are_transformers_defaults(model_type):
    config = transformers.AutoConfig.for_model(model_type, **SMALL)
    for key, want in FAMILIES[model_type].defaults.items():
        got = getattr(config, key, None)
        if key == "rope_theta":  # transformers 5 keeps it in rope_parameters
            got = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", got)
        assert got == want, key


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_config_written_by_transformers_is_read(tmp_path, model_type):
    config = transformers.AutoConfig.for_model(model_type, **SMALL)
    config.save_pretrained(tmp_path)
    spec = read_model_config(tmp_path, "t").spec
    assert (spec.n_layers, spec.d_model, spec.n_heads, spec.n_kv_heads, spec.d_ffn, spec.vocab) == \
        (2, 64, 4, 2, 96, 128)


def _shape_key(o) -> tuple:
    return o.op, o.layer, o.phase, o.step, tuple(sorted(o.args.items()))


@pytest.mark.parametrize("model, fmt", [
    ("qwen2.5-0.5b", "ternary"),  # GQA 14/2, q/k/v bias, tied embeddings
    ({"model_type": "mistral", **SMALL, "head_dim": 24, "sliding_window": None}, "int8"),  # 4 x 24 heads on d 64
    ({"model_type": "llama", **SMALL, "attention_bias": True, "mlp_bias": True}, "nvfp4"),
    ({"model_type": "bitnet", **SMALL}, None),  # SubLN, ReLU^2 GLU, ternary by default
])
def test_trace_from_config_equals_trace_captured_from_transformers(tmp_path, model, fmt):
    """Every op (kind, layer, phase, step and every shape field) of the torch-free trace equals the op that
    capture records while transformers runs the model (meta device, config.json only)."""
    from lowbit.models.capture import capture_trace
    from lowbit.sim.modelspec import get_model
    from lowbit.sim.trace_load import load_trace
    from lowbit.sim.workloads import standard_trace

    if isinstance(model, dict):
        (tmp_path / "m").mkdir()
        (tmp_path / "m" / "config.json").write_text(json.dumps(model))
        model = str(tmp_path / "m")
    captured = load_trace(capture_trace(model, 6, 2, tmp_path / "t", weight_format=fmt))
    m = get_model(model)
    ours = standard_trace(m.with_format(fmt) if fmt else m, 6, 2)
    assert [_shape_key(o) for o in captured.ops] == [_shape_key(o) for o in ours.ops]
    assert captured.model.to_dict() == {**(m.with_format(fmt) if fmt else m).to_dict(), "name": captured.model.name}
