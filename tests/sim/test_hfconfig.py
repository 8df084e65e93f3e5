"""Models from a Hugging Face config.json, torch-free (lowbit.sim.hfconfig): shapes against hand-computed and
published parameter counts, the trace against the built-in BitNet shapes, and the refusals."""

from __future__ import annotations

import dataclasses
import json

import pytest

from lowbit.sim.errors import LowbitError, ModelImportError
from lowbit.sim.hfconfig import IGNORED, find_preset, presets, read_model_config, spec_from_dict
from lowbit.sim.modelspec import get_model
from lowbit.sim.workloads import standard_trace
from tests.cli_util import assert_one_line_error, lowbit, lowbit_without, python_without

# Parameter counts the model cards state (Hugging Face repository pages; Qwen2.5 cards also give the
# non-embedding count): (total, digits after the point in billions). Cards round or truncate, so a count
# must lie within one unit of the last stated digit.
PUBLISHED = {
    "meta-llama-3-8b": (8.03e9, 2), "llama-3.2-1b": (1.24e9, 2), "llama-3.2-3b": (3.21e9, 2),
    "qwen2.5-0.5b": (0.49e9, 2), "qwen2.5-7b": (7.61e9, 2), "mistral-7b-v0.3": (7.25e9, 2),
    "mistral-nemo-base-2407": (12.2e9, 1), "falcon3-7b-instruct-1.58bit": (7.46e9, 2),
    "bitnet-b1.58-2b-4t": (2.41e9, 2),
}
NON_EMBEDDING = {"qwen2.5-0.5b": 0.36e9, "qwen2.5-7b": 6.53e9}


def tiny_llama(**over) -> dict:
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
           "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
           "max_position_embeddings": 64, "torch_dtype": "bfloat16"}
    cfg.update(over)
    return cfg


def write_cfg(tmp_path, cfg: dict, name: str = "m"):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_llama3_8b_parameters_hand_computed():
    m = get_model("meta-llama/Meta-Llama-3-8B")
    d, F, V, L, kv = 4096, 14336, 128256, 32, 8 * 128
    per_layer = d * d + 2 * d * kv + d * d + 3 * d * F + 2 * d  # q, k, v, o, gate/up/down, two RMSNorms
    assert per_layer == 218_112_000
    total = V * d + L * per_layer + d + V * d  # embedding, layers, final norm, untied lm_head
    assert m.parameters["total"] == total == 8_030_261_248  # the model card's 8.03 B
    assert (m.n_kv_heads, m.head_dim, m.tied_embeddings, m.gated) == (8, 128, False, True)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_presets_match_published_parameter_counts(name):
    m = get_model(name)
    total, digits = PUBLISHED[name]
    assert abs(m.parameters["total"] - total) < 10**-digits * 1e9
    if name in NON_EMBEDDING:
        p = m.parameters
        assert abs(p["total"] - p["embedding"] - p["lm_head"] - NON_EMBEDDING[name]) < 0.01e9
    # the shapes and their op sequence make a valid trace
    tr = standard_trace(m.with_format("ternary"), 4, 1)
    assert tr.model.weight_format == "ternary"


def test_presets_listed_with_sources():
    ps = presets()
    assert len(ps) == 9
    for p in ps.values():
        assert p.url == f"https://huggingface.co/{p.repo}/blob/main/config.json"
        assert p.path.is_file() and p.license
    assert find_preset("Qwen/Qwen2.5-7B") is find_preset("qwen2.5-7b")
    r = lowbit("models", "list")
    assert r.returncode == 0, r.stderr
    assert "meta-llama-3-8b" in r.stdout and "8.03 B params" in r.stdout
    assert "https://huggingface.co/tiiuae/Falcon3-7B-Instruct-1.58bit/blob/main/config.json" in r.stdout


def test_config_trace_equals_builtin_2b4t():
    builtin = get_model("bitnet-b1.58-2b4t")
    cfg = get_model("microsoft/bitnet-b1.58-2B-4T")
    assert dataclasses.replace(cfg, name=builtin.name) == builtin
    assert list(standard_trace(cfg, 8, 3).ops) == list(standard_trace(builtin, 8, 3).ops)


def test_llama_config_of_the_3b_shape_equals_builtin_3b(tmp_path):
    # the 1bitLLM 3B shape written as a LLaMA config.json, deployed ternary (docs/reference/numerics.md §1.5)
    cfg = tiny_llama(hidden_size=3200, intermediate_size=8640, num_hidden_layers=26, num_attention_heads=32,
                     num_key_value_heads=32, vocab_size=32002, max_position_embeddings=2048, rms_norm_eps=1e-6)
    m = read_model_config(write_cfg(tmp_path, cfg), "bitnet-b1.58-3b").spec.with_format("ternary")
    assert m == get_model("bitnet-b1.58-3b")
    assert list(standard_trace(m, 4, 2).ops) == list(standard_trace("bitnet-b1.58-3b", 4, 2).ops)


def test_tied_embeddings_counted_once():
    m = get_model("llama-3.2-1b")
    p = m.parameters
    assert m.tied_embeddings and p["lm_head"] == 0
    untied = dataclasses.replace(m, tied_embeddings=False).parameters
    assert untied["total"] - p["total"] == 128256 * 2048
    assert p["total"] == 1_235_814_400


def test_head_dim_differs_from_d_model_over_heads():
    m = get_model("mistral-nemo-base-2407")
    assert (m.d_model, m.n_heads, m.head_dim, m.attn_dim) == (5120, 32, 128, 4096)
    lin = {o.role: (o["in_features"], o["out_features"]) for o in standard_trace(m.with_format("int8"), 0, 1).ops
           if o.op == "linear" and o.layer == 0}
    assert lin == {"q": (5120, 4096), "k": (5120, 1024), "v": (5120, 1024), "o": (4096, 5120),
                   "gate": (5120, 14336), "up": (5120, 14336), "down": (14336, 5120)}


def test_biases_norms_and_plain_ffn_counted(tmp_path):
    # Qwen2: q, k, v carry a bias (not o, not the MLP)
    q = get_model("qwen2.5-0.5b")
    assert (q.qkv_bias, q.o_bias, q.mlp_bias) == (True, False, False)
    # LLaMA with attention_bias and mlp_bias: every projection has one
    base = spec_from_dict(tiny_llama(), "a").spec.parameters["total"]
    both = spec_from_dict(tiny_llama(attention_bias=True, mlp_bias=True), "b").spec.parameters["total"]
    assert both - base == 2 * ((64 + 2 * 32 + 64) + (2 * 96 + 64))
    # StarCoder2: plain gelu FFN (2 matrices), LayerNorm with bias, biases everywhere, tied embeddings
    sc = spec_from_dict({"model_type": "starcoder2", "hidden_size": 64, "intermediate_size": 256,
                         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                         "vocab_size": 100, "max_position_embeddings": 64}, "sc").spec
    assert (sc.ffn_act, sc.gated, sc.norm, sc.tied_embeddings) == ("gelu", False, "layernorm", True)
    layer = 64 * 64 + 2 * 64 * 32 + 64 * 64 + 2 * 64 * 256 + (64 + 2 * 32 + 64) + (256 + 64) + 2 * 2 * 64
    assert sc.parameters["total"] == 100 * 64 + 2 * layer + 2 * 64
    ops = [o for o in standard_trace(sc.with_format("int8"), 0, 1).ops if o.layer == 0]
    assert [o.role for o in ops if o.op == "linear"] == ["q", "k", "v", "o", "up", "down"]
    assert {o.role for o in ops if o.op == "rmsnorm"} == {"layernorm"}


def test_sliding_window_limits_the_context():
    on = spec_from_dict(tiny_llama(model_type="mistral", architectures=["MistralForCausalLM"],
                                   max_position_embeddings=4096, sliding_window=1024), "w")
    assert on.spec.max_positions == 1024 and "sliding window of 1024 tokens" in on.notes[0]
    off = spec_from_dict(tiny_llama(model_type="mistral", architectures=["MistralForCausalLM"],
                                    max_position_embeddings=4096, sliding_window=None), "w")
    assert off.spec.max_positions == 4096 and not off.notes
    # Qwen2 slides only with use_sliding_window (and a layer at or above max_window_layers)
    qw = dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], max_position_embeddings=4096,
              sliding_window=512, max_window_layers=1)
    assert spec_from_dict(tiny_llama(**qw, use_sliding_window=False), "q").spec.max_positions == 4096
    assert spec_from_dict(tiny_llama(**qw, use_sliding_window=True), "q").spec.max_positions == 512


@pytest.mark.parametrize("over, pattern", [
    ({"foo_bar": 1}, r"field 'foo_bar' is not understood for model_type 'llama'"),
    ({"sliding_window": 4096}, r"field 'sliding_window' is not understood for model_type 'llama'"),
    ({"hidden_size": None}, r"missing required field 'hidden_size'"),
    ({"model_type": "gemma"}, r"model_type = 'gemma': not understood"),
    ({"hidden_act": "tanh"}, r"hidden_act = 'tanh': not understood for a gated FFN"),
    ({"rope_scaling": {"rope_type": "mrope"}}, r"rope_scaling.rope_type = 'mrope': not understood"),
    ({"quantization_config": {"quant_method": "gptq"}}, r"quant_method = 'gptq': only 'bitnet'"),
    ({"quantization_config": {"quant_method": "bitnet", "use_rms_norm": True}}, r"use_rms_norm = true"),
    ({"num_attention_heads": 5}, r"hidden_size 64 not divisible by num_attention_heads 5 and no head_dim"),
    ({"architectures": ["MistralForCausalLM"]}, r"contradicts model_type 'llama'"),
])
def test_not_understood_is_refused_naming_it(tmp_path, over, pattern):
    d = write_cfg(tmp_path, {k: v for k, v in tiny_llama(**over).items() if v is not None})
    with pytest.raises(ModelImportError, match=pattern) as e:
        read_model_config(d)
    assert "\n" not in str(e.value)


def test_unknown_field_is_a_one_line_error_on_the_command_line(tmp_path):
    d = write_cfg(tmp_path, tiny_llama(qk_layernorm=True))
    r = lowbit("sim", "--model", str(d / "config.json"), "--hw", "tiny", "--weights", "int8", "--decode", "1",
               "--prefill", "4", "--quiet")
    assert_one_line_error(r, r"config.json: field 'qk_layernorm' is not understood for model_type 'llama' \(it may "
                             r"change the shapes or the op sequence\)")


def test_ignored_fields_are_listed_with_a_reason():
    m = read_model_config(find_preset("llama-3.2-1b").path)
    assert set(m.ignored) == {"attention_dropout", "bos_token_id", "eos_token_id", "initializer_range",
                              "pretraining_tp", "torch_dtype", "transformers_version", "use_cache"}
    assert all(IGNORED[k] for k in m.ignored)


def test_bf16_model_needs_weights_and_trace_takes_weights(tmp_path):
    d = write_cfg(tmp_path, tiny_llama())
    r = lowbit("sim", "--model", str(d), "--hw", "tiny", "--prefill", "4", "--decode", "1")
    assert_one_line_error(r, r"model m has bf16 weights, which no unit of tiny runs; choose the deployed format "
                             r"with --weights")
    from lowbit.sim.cli import build_trace
    from lowbit.sim.config import load_config
    from lowbit.sim.trace import write_trace

    cfg = load_config("tiny")
    tr = build_trace(str(d), None, 4, 2, cfg, "int8")
    assert {o["weight_format"] for o in tr.ops if o.op == "linear"} == {"int8"}
    write_trace(tr, tmp_path / "tr")
    t2 = build_trace(None, tmp_path / "tr", 0, 0, cfg, "ternary")
    assert t2.model.weight_format == "ternary"
    assert {o["weight_format"] for o in t2.ops if o.op == "linear"} == {"ternary"}
    assert {o["weight_format"] for o in t2.ops if o.op == "lm_head"} == {"bf16"}
    assert [o.name for o in t2.ops] == [o.name for o in tr.ops]
    with pytest.raises(LowbitError, match="--weights fp8: unknown weight format"):
        build_trace(str(d), None, 4, 2, cfg, "fp8")


def test_sim_from_config_without_torch(tmp_path):
    d = write_cfg(tmp_path, tiny_llama(num_key_value_heads=4))
    code = """
from lowbit.cli import main
rc = main(["sim", "--model", sys.argv[2], "--hw", "tiny", "--weights", "ternary", "--prefill", "8",
           "--decode", "2", "--json", "-"])
assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED], "heavy import"
sys.exit(rc)
"""
    r = python_without(("torch", "transformers", "safetensors"), code, str(d))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == "m" and out["decode_tokens"] == 2 and out["cycles"] > 0
    r = lowbit_without(("torch", "transformers", "safetensors"), "models", "list")
    assert r.returncode == 0, r.stderr
    assert "falcon3-7b-instruct-1.58bit" in r.stdout


def test_readme_models_list_excerpt_is_real_output():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("### Any model from its config.json", 1)[1].split("```\n", 3)[2]
    r = lowbit("models", "list")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in block.splitlines() if ln.strip()]
    assert len(lines) == 4 and all(ln in r.stdout.splitlines() for ln in lines), lines


def test_mutated_configs_are_read_or_refused_in_one_line():
    """Any value in any field (or a missing one): a valid ModelSpec or a one-line ModelImportError, nothing else."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    bases = [json.loads(p.path.read_text()) for p in presets().values()]
    values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                          lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                          max_leaves=6)
    keys = sorted({k for b in bases for k in b} | {"quantization_config", "rope_scaling", "head_dim", "x"})
    seen = {"ok": 0, "refused": 0}

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.sampled_from(bases), st.sampled_from(keys), values, st.booleans())
    def case(base, key, value, drop):
        cfg = dict(base)
        if drop:
            cfg.pop(key, None)
        else:
            cfg[key] = value
        try:
            spec = spec_from_dict(cfg, "fuzz").spec
        except ModelImportError as e:
            assert "\n" not in str(e)
            seen["refused"] += 1
            return
        spec.validate()
        seen["ok"] += 1

    case()
    assert seen["ok"] > 20 and seen["refused"] > 50, seen


def test_readme_models_report_figures_come_from_the_report():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    rep = (root / "reports" / "models-vitallm.md").read_text()
    m = re.search(r"LLaMA-3.2-1B decodes ([\d.]+) tok/s, LLaMA-3-8B ([\d.]+) tok/s, Mistral-NeMo-12B ([\d.]+) tok/s, "
                  r"each\s+streaming its weights at ([\d.]+)–([\d.]+) GB/s of the ([\d.]+) GB/s DRAM peak", readme)
    assert m, "README models-report sentence"
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rep.splitlines() if r.startswith("| ")]
    rows = {c[0]: c for c in cells[1:]}  # after the header: model, source, params, format, weights, tok/s, ...
    for name, tok in (("llama-3.2-1b", m[1]), ("meta-llama-3-8b", m[2]), ("mistral-nemo-base-2407", m[3])):
        assert rows[name][5] == tok, name
    bw = [float(c[7]) for c in rows.values() if c[7]]
    assert (round(min(bw)), round(max(bw))) == (int(m[4]), int(m[5]))
    assert f"DRAM peak of {m[6]} GB/s" in rep
    assert "qwen2.5-7b | Qwen/Qwen2.5-7B | 7.62 B | ternary | 1,631.3 MB | does not run" in rep
    assert "tile of 23040 B does not fit SRAM buffer 'act'" in rep and "tile of 18944 B" in rep
