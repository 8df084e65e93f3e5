"""models.hf + capture on real transformers models: random Llama/BitNet saved to a dir, and real MiniLM weights."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lowbit.models.capture import capture_trace  # noqa: E402
from lowbit.models.hf import minilm_dir, spec_from_config  # noqa: E402
from lowbit.sim.errors import LowbitError  # noqa: E402
from lowbit.sim.trace_load import load_trace  # noqa: E402
from lowbit.sim.workloads import standard_trace  # noqa: E402

SMALL = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2)


def _shape_ops(trace, drop=()):
    return [(o.op, o.layer, o.phase, o.step, o.args, o.role) for o in trace.ops if o.op not in drop]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("hf") / "llama-tiny"
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMALL)).save_pretrained(d)
    return d


def test_llama_dir_traces_like_standard_bf16(llama_dir, tmp_path):
    tr = load_trace(capture_trace(llama_dir, 5, 2, tmp_path / "t"))
    spec = tr.model
    assert (spec.name, spec.n_layers, spec.d_model, spec.n_heads, spec.n_kv_heads, spec.d_ffn, spec.vocab,
            spec.ffn_act, spec.weight_format) == ("hf:llama-tiny", 2, 64, 4, 2, 96, 128, "swiglu", "bf16")
    # bf16 linears are not preceded by activation quantization; everything else as the standard block
    assert _shape_ops(tr) == _shape_ops(standard_trace(spec, 5, 2), drop=("quantize",))
    assert tr.ops[2].name == "model.layers.0.self_attn.q_proj" and tr.meta["architecture"] == "LlamaForCausalLM"


def test_llama_tensors_equal_transformers_cache(llama_dir, tmp_path):
    tr = load_trace(capture_trace(llama_dir, 5, 2, tmp_path / "t", tensors=True, seed=3))
    assert tr.meta["init"] == "weights"
    shapes = load_trace(capture_trace(llama_dir, 5, 2, tmp_path / "s"))  # meta device, config.json only
    assert shapes.meta["init"].startswith("meta")
    assert [o.to_json() for o in shapes.ops] == [{k: v for k, v in o.to_json().items() if k != "tensors"}
                                                   for o in tr.ops]
    model = transformers.AutoModelForCausalLM.from_pretrained(llama_dir, local_files_only=True)
    prompt = torch.randint(0, 128, (1, 5), generator=torch.Generator().manual_seed(3))
    cache = transformers.DynamicCache(config=model.config)
    with torch.no_grad():
        logits = model(input_ids=prompt, past_key_values=cache, use_cache=True).logits
        for _ in range(2):
            logits = model(input_ids=logits[:, -1:].argmax(-1), past_key_values=cache, use_cache=True).logits
    for layer in range(2):
        kv = [o for o in tr.ops if o.op == "kv_append" and o.layer == layer]
        k = np.concatenate([tr.load_tensor(o.tensors["k"]) for o in kv], axis=1)
        v = np.concatenate([tr.load_tensor(o.tensors["v"]) for o in kv], axis=1)
        assert k.shape == (2, 7, 16)
        np.testing.assert_allclose(k, cache.layers[layer].keys[0].numpy(), rtol=0, atol=1e-6)
        np.testing.assert_allclose(v, cache.layers[layer].values[0].numpy(), rtol=0, atol=1e-6)
        qs = [o for o in tr.ops if o.op == "attn_qk" and o.layer == layer and o.phase == "decode"]
        assert [tr.load_tensor(o.tensors["q"]).shape for o in qs] == [(4, 16), (4, 16)]


def test_bitnet_dir_traces_like_standard_ternary(tmp_path):
    torch.manual_seed(0)
    d = tmp_path / "bitnet-tiny-hf"
    transformers.BitNetForCausalLM(transformers.BitNetConfig(**SMALL)).save_pretrained(d)
    tr = load_trace(capture_trace(d, 4, 2, tmp_path / "t"))
    assert tr.model.subln and tr.model.ffn_act == "relu2_glu" and tr.model.weight_format == "ternary"
    assert _shape_ops(tr) == _shape_ops(standard_trace(tr.model, 4, 2))


def test_minilm_real_weights_prefill_only(tmp_path):
    d = minilm_dir()
    assert (d / "model.safetensors").stat().st_size > 80e6  # the real all-MiniLM-L6-v2 weights
    tr = load_trace(capture_trace("all-minilm-l6-v2", 16, 0, tmp_path / "t", tensors=True))
    m = tr.model
    assert (m.n_layers, m.d_model, m.n_heads, m.d_ffn, m.vocab, m.ffn_act) == (6, 384, 12, 1536, 30522, "gelu")
    assert tr.decode == 0 and {o.phase for o in tr.ops} == {"prefill"} and tr.meta["encoder"] is True
    emb = [o for o in tr.ops if o.op == "embedding"]
    assert [o.args["vocab"] for o in emb] == [30522, 2, 512]  # word, token type, position
    norms = [o for o in tr.ops if o.op == "rmsnorm"]
    assert len(norms) == 1 + 2 * 6 and all(o.role == "layernorm" for o in norms)
    kinds = [o.op for o in tr.ops if o.layer == 0]
    assert kinds == ["linear"] * 3 + ["kv_append", "attn_qk", "softmax", "attn_av", "linear", "elementwise",
                                      "rmsnorm", "linear", "activation", "linear", "elementwise", "rmsnorm"]
    assert not any(o.op in ("rope", "lm_head", "quantize") for o in tr.ops)
    act = next(o for o in tr.ops if o.op == "activation")
    assert act.args == dict(tokens=16, dim=1536, fn="gelu", gated=False)
    k = tr.load_tensor(next(o for o in tr.ops if o.op == "kv_append").tensors["k"])
    assert k.shape == (12, 16, 32) and np.abs(k).max() > 0.1  # real weights, not zeros
    # independent recomputation: layer-0 key projection of the embedding output, split into heads
    bert = transformers.AutoModel.from_pretrained(d, local_files_only=True, add_pooling_layer=False).eval()
    prompt = torch.randint(0, 30522, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h0 = bert(input_ids=prompt, output_hidden_states=True).hidden_states[0]
        ref = bert.encoder.layer[0].attention.self.key(h0)[0].view(16, 12, 32).transpose(0, 1)
    np.testing.assert_allclose(k, ref.numpy(), rtol=0, atol=1e-5)
    with pytest.raises(LowbitError, match="BertModel is an encoder.*--decode 0"):
        capture_trace("all-minilm-l6-v2", 16, 4, tmp_path / "t2")


def test_unsupported_activation_is_named():
    cfg = transformers.LlamaConfig(**SMALL, hidden_act="tanh")
    with pytest.raises(LowbitError, match="hidden_act 'tanh' is not supported"):
        spec_from_config(cfg, "LlamaForCausalLM", "x")


def test_weight_format_override(llama_dir, tmp_path):
    tr = load_trace(capture_trace(llama_dir, 3, 1, tmp_path / "t", weight_format="nvfp4"))
    assert tr.model.weight_format == "nvfp4"
    # now quantized linears: exactly the standard op list incl. quantize ops (lm_head stays bf16)
    assert _shape_ops(tr) == _shape_ops(standard_trace(tr.model, 3, 1))
    with pytest.raises(LowbitError, match="unknown weight format 'fp3'"):
        capture_trace(llama_dir, 3, 1, tmp_path / "u", weight_format="fp3")


def test_config_only_dir(tmp_path):
    """config.json without weights: shapes-only capture works (meta), a tensor capture is a clear error."""
    d = tmp_path / "cfg-only"
    transformers.LlamaConfig(**SMALL).save_pretrained(d)
    assert load_trace(capture_trace(d, 4, 1, tmp_path / "t")).model.d_model == 64
    with pytest.raises(LowbitError, match="cannot load LlamaForCausalLM weights"):
        capture_trace(d, 4, 1, tmp_path / "u", tensors=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg-only", "t"]


def test_2b4t_config_matches_preset(tmp_path):
    """A BitNet b1.58 2B4T config.json (docs/reference/numerics.md §1.5) traces shape-for-shape like the bitnet-b1.58-2b4t preset."""
    d = tmp_path / "bitnet-2b4t"
    transformers.BitNetConfig(vocab_size=128256, hidden_size=2560, intermediate_size=6912, num_hidden_layers=30,
                              num_attention_heads=20, num_key_value_heads=5, hidden_act="relu2", rms_norm_eps=1e-5,
                              rope_theta=500000.0, max_position_embeddings=4096,
                              tie_word_embeddings=True).save_pretrained(d)
    tr = load_trace(capture_trace(d, 16, 2, tmp_path / "t"))
    ref = standard_trace("bitnet-b1.58-2b4t", 16, 2)
    assert _shape_ops(tr) == _shape_ops(ref)
    assert {f: getattr(tr.model, f) for f in ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_ffn", "vocab", "ffn_act",
                                              "subln", "rope_theta", "norm_eps", "max_positions", "tied_embeddings")} == \
        {f: getattr(ref.model, f) for f in ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_ffn", "vocab", "ffn_act",
                                            "subln", "rope_theta", "norm_eps", "max_positions", "tied_embeddings")}


@pytest.mark.parametrize("arch", ["MistralForCausalLM", "Qwen2ForCausalLM"])
def test_other_llama_style_decoders(tmp_path, arch):
    cfg_cls = {"MistralForCausalLM": transformers.MistralConfig, "Qwen2ForCausalLM": transformers.Qwen2Config}[arch]
    d = tmp_path / arch
    cfg = cfg_cls(**SMALL)
    cfg.architectures = [arch]
    cfg.save_pretrained(d)  # config only: shapes-only capture builds it on the meta device
    tr = load_trace(capture_trace(d, 5, 2, tmp_path / "t"))
    assert tr.meta["architecture"] == arch
    assert _shape_ops(tr) == _shape_ops(standard_trace(tr.model, 5, 2), drop=("quantize",))
