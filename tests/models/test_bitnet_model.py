"""models.bitnet against independent references: sim.numerics integer recomputation and HF transformers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from lowbit.models.bitnet import BitLinear, BitNet, act_quant, sdpa_attention, weight_quant  # noqa: E402
from lowbit.sim.modelspec import ModelSpec, get_model  # noqa: E402
from lowbit.sim.numerics.int8 import dequantize_accumulator, int8_absmax_quantize, int_matmul_exact  # noqa: E402
from lowbit.sim.numerics.ternary import ternary_absmean_scale, ternary_quantize  # noqa: E402


def _integer_reference(x: np.ndarray, w: np.ndarray, w_scale: float) -> np.ndarray:
    """sim.numerics golden BitLinear: int64 codes x int8 activations, then (acc * w_scale) / x_scale."""
    codes, scale = ternary_quantize(w, scale=w_scale)
    q, s = int8_absmax_quantize(x)
    return dequantize_accumulator(int_matmul_exact(q, codes), scale, s)


@pytest.mark.parametrize("shape", [(2, 5, 64, 48), (1, 3, 300, 7), (1, 1, 131072, 3)])
def test_bitlinear_equals_integer_recomputation(shape):
    B, T, K, N = shape  # K = 131072: 128*K >= 2^24, the float64 accumulation path
    g = torch.Generator().manual_seed(K)
    lin = BitLinear(K, N)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(N, K, generator=g) * 0.05)
    x = torch.randn(B, T, K, generator=g) * 3
    x[0, 0] = 0.0  # max|x| = 0 -> the eps clamp
    y = lin(x)
    codes, scale = weight_quant(lin.weight)
    w = lin.weight.detach().double().numpy()
    # torch's float64 mean vs math.fsum: equal or within an ulp; the codes use the scale we pass.
    assert abs(scale.item() - ternary_absmean_scale(w)) <= 2 * np.spacing(scale.item())
    ref = _integer_reference(x.double().numpy(), w, scale.item())
    assert y.dtype == torch.float32
    assert torch.equal(y, torch.from_numpy(ref).float())
    # float64 input: bit-identical float64 output
    y64 = BitLinear.forward(lin, x.double())
    assert torch.equal(y64, torch.from_numpy(ref))
    assert np.array_equal(codes.numpy().astype(np.int8), ternary_quantize(w, scale=scale.item())[0])


def test_quantizers_match_sim_numerics_exactly():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 33, generator=g, dtype=torch.float64) * torch.logspace(-6, 3, 7, dtype=torch.float64)[:, None]
    q, s = act_quant(x)
    qr, sr = int8_absmax_quantize(x.numpy())
    assert np.array_equal(q.numpy().astype(np.int8), qr) and np.array_equal(s.numpy(), sr)
    # weights on exact .5 boundaries after scaling exercise round-half-even
    w = torch.tensor([[0.5, -0.5, 1.5, -1.5], [2.5, 0.0, 0.25, -0.75]], dtype=torch.float64)
    codes, scale = weight_quant(w)
    cr, sr2 = ternary_quantize(w.numpy())
    assert scale.item() == sr2 and np.array_equal(codes.numpy().astype(np.int8), cr)


def test_ste_gradients_match_fake_quant_reference():
    g = torch.Generator().manual_seed(2)
    lin = BitLinear(32, 16)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(16, 32, generator=g) * 0.1)
    x = torch.randn(3, 32, generator=g, requires_grad=True)
    gy = torch.randn(3, 16, generator=g)
    (lin(x) * gy).sum().backward()
    # reference: fake quantization with the .detach() straight-through trick (docs/reference/numerics.md §1.4 FAQ code)
    w = lin.weight.detach().clone().requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    codes, scale = weight_quant(w)
    q, s = act_quant(x2)
    w_ste = w + ((codes * scale).float() - w).detach()
    x_ste = x2 + ((q / s).float() - x2).detach()
    (F.linear(x_ste, w_ste) * gy).sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-6) and torch.allclose(lin.weight.grad, w.grad, atol=1e-6)


def test_kv_cache_decode_matches_full_forward_and_switches():
    torch.manual_seed(0)
    m = BitNet(get_model("bitnet-tiny")).eval()
    idx = torch.randint(0, 256, (1, 9))
    with torch.no_grad():
        full = m(idx)
        cache = m.new_cache(1, 16)
        a = m(idx[:, :5], cache, 0)
        b = m(idx[:, 5:6], cache, 5)
        c = m(idx[:, 6:9], cache, 6)  # a chunk after the prompt: explicit causal mask path
    assert torch.allclose(full[:, :5], a, atol=1e-5)
    assert torch.allclose(full[:, 5:6], b, atol=1e-5)
    assert torch.allclose(full[:, 6:9], c, atol=1e-5)
    assert m.quantized
    m.quantized = False
    assert not m.quantized
    lin = m.layers[0].attn.q
    x = torch.randn(2, 64)
    assert torch.equal(lin(x), F.linear(x, lin.weight))
    with torch.no_grad():
        assert not torch.allclose(m(idx), full, atol=1e-3)  # the switch really changes the computation


def test_attention_hook_point():
    calls = []

    def attn(q, k, v, layer, offset):
        calls.append((layer, tuple(q.shape), tuple(k.shape), offset))
        return sdpa_attention(q, k, v, layer, offset)

    spec = get_model("bitnet-tiny")
    torch.manual_seed(0)
    m = BitNet(spec, attn_fn=attn)
    with torch.no_grad():
        cache = m.new_cache(1, 8)
        m(torch.zeros(1, 4, dtype=torch.long), cache, 0)
        m(torch.zeros(1, 1, dtype=torch.long), cache, 4)
    assert calls == [(0, (1, 4, 4, 16), (1, 2, 4, 16), 0), (1, (1, 4, 4, 16), (1, 2, 4, 16), 0),
                     (0, (1, 4, 1, 16), (1, 2, 5, 16), 4), (1, (1, 4, 1, 16), (1, 2, 5, 16), 4)]


def _hf_state(m: BitNet) -> dict:
    """Our parameter names -> transformers Llama/BitNet names."""
    ren = {"embed": "model.embed_tokens", "final_norm": "model.norm", "attn_norm": "input_layernorm",
           "ffn_norm": "post_attention_layernorm", "attn.q": "self_attn.q_proj", "attn.k": "self_attn.k_proj",
           "attn.v": "self_attn.v_proj", "attn.o": "self_attn.o_proj", "attn_sub_norm": "self_attn.attn_sub_norm",
           "ffn.gate": "mlp.gate_proj", "ffn.up": "mlp.up_proj", "ffn.down": "mlp.down_proj",
           "ffn_sub_norm": "mlp.ffn_sub_norm"}
    out = {}
    for k, v in m.state_dict().items():
        parts = k.split(".")
        if parts[0] == "layers":
            rest = ".".join(parts[2:-1])
            out[f"model.layers.{parts[1]}.{ren[rest]}.{parts[-1]}"] = v
        else:
            out[f"{ren.get(parts[0], parts[0])}.{parts[-1]}"] = v
    return out


@pytest.mark.parametrize("kind", ["bitnet", "llama"])
def test_float_model_matches_transformers(kind):
    """With quantized=False our model is transformers' BitNet (SubLN, ReLU^2 GLU, GQA, RoPE) / Llama (SwiGLU)."""
    transformers = pytest.importorskip("transformers")
    if kind == "bitnet":
        spec = get_model("bitnet-tiny")
        cfg = transformers.BitNetConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, hidden_act="relu2",
                                        rms_norm_eps=spec.norm_eps, rope_theta=spec.rope_theta,
                                        max_position_embeddings=256, tie_word_embeddings=False)
        hf = transformers.BitNetForCausalLM(cfg)
    else:
        spec = ModelSpec("llama-tiny", 2, 64, 4, 4, 96, 128, ffn_act="swiglu", rope_theta=10000.0, norm_eps=1e-6,
                         max_positions=64)
        cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-6,
                                       rope_theta=10000.0, max_position_embeddings=64, tie_word_embeddings=False)
        hf = transformers.LlamaForCausalLM(cfg)
    torch.manual_seed(3)
    m = BitNet(spec).eval()
    with torch.no_grad():  # non-trivial norm gains so a swapped norm would show
        for n, p in m.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
    m.quantized = False
    missing, unexpected = hf.load_state_dict(_hf_state(m), strict=False)
    assert not unexpected and all("rotary" in k for k in missing)
    hf.eval()
    idx = torch.randint(0, spec.vocab, (1, 12))
    with torch.no_grad():
        ours, theirs = m(idx), hf(input_ids=idx).logits
    assert torch.allclose(ours, theirs, atol=2e-5), (ours - theirs).abs().max()


def test_meta_build_is_shapes_only():
    spec = dataclasses.replace(get_model("bitnet-b1.58-2b4t"))
    with torch.device("meta"):
        m = BitNet(spec)
    assert all(p.is_meta for p in m.parameters())
    assert sum(p.numel() for n, p in m.named_parameters() if ".attn." in n or ".ffn." in n) == spec.projection_params


def test_build_materializes_like_constructor_and_weight_cache_invalidates():
    spec = dataclasses.replace(get_model("bitnet-tiny"), tied_embeddings=True)
    m = BitNet.build(spec, "cpu", seed=0)
    ref = BitNet(spec)
    assert m.lm_head.weight is m.embed.weight
    assert torch.equal(m.rope_cos, ref.rope_cos) and torch.equal(m.rope_sin, ref.rope_sin)
    assert all(torch.equal(p, torch.ones_like(p)) for n, p in m.named_parameters() if "norm" in n)
    assert abs(m.layers[0].ffn.up.weight.std().item() - 0.02) < 0.002
    lin, x = m.layers[0].attn.q, torch.randn(3, 64)
    with torch.no_grad():
        y1 = lin(x)
        assert lin._wq_cache is not None and lin._wq_cache[1].dtype == torch.int8
        lin.weight.mul_(-1)  # in-place change: the cached codes must not be reused
        y2 = lin(x)
    assert torch.equal(y2, -y1)
