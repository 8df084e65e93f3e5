"""FP4 PTQ (models/fp4ptq.py): bit-exact sim.numerics fake-quant, exact module selection, restore."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ml_dtypes = pytest.importorskip("ml_dtypes")

from lowbit.models.fp4ptq import (  # noqa: E402
    classify,
    fakequant_weight,
    find_linears,
    fp4_weights,
    parse_blocks,
    parse_components,
    quantize_model_,
    select,
)
from lowbit.sim.errors import LowbitError  # noqa: E402
from lowbit.sim.numerics.mx import fp4_fakequant  # noqa: E402

torch.set_num_threads(1)


def tiny_llama(n_layers: int = 3):
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=n_layers,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=50)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
def test_fakequant_equals_sim_numerics(fmt):
    w = torch.randn(40, 72, generator=torch.Generator().manual_seed(1)) * 0.05
    got = fakequant_weight(w, fmt)
    np.testing.assert_array_equal(got.numpy(), fp4_fakequant(w.numpy(), fmt))
    assert got.dtype == w.dtype and got.shape == w.shape


def test_mxfp4_against_ml_dtypes_reference():
    """Independent MXFP4 check: X = 2^(floor(log2 amax)-2) per 32-block of the input dim, RNE E2M1, saturate."""
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(2)) * 0.1
    got = fakequant_weight(w, "mxfp4").numpy()
    wb = w.numpy().astype(np.float64).reshape(8, 2, 32)
    x = 2.0 ** (np.floor(np.log2(np.abs(wb).max(-1, keepdims=True))) - 2)
    q = np.clip(wb / x, -6, 6).astype(np.float32).astype(ml_dtypes.float4_e2m1fn).astype(np.float64)
    np.testing.assert_array_equal(got, (q * x).reshape(8, 64).astype(np.float32))


def test_classify_names():
    assert classify("model.layers.3.self_attn.q_proj") == (3, "q")
    assert classify("model.layers.0.mlp.gate_proj") == (0, "gate")
    assert classify("layers.1.ffn.down") == (1, "down")
    assert classify("encoder.layer.5.attention.output.dense") == (5, "o")
    assert classify("encoder.layer.5.output.dense") == (5, "down")
    assert classify("encoder.layer.2.intermediate.dense") == (2, "up")
    assert classify("lm_head") is None and classify("pooler.dense") is None


def test_llama_selection_counts_and_restore():
    model = tiny_llama(3)
    sites = find_linears(model)
    assert len(sites) == 21
    for c in ("q", "k", "v", "o", "gate", "up", "down"):
        assert [s.block for s in sites if s.component == c] == [0, 1, 2]
    chosen = select(sites, ["q", "up"], [1])
    assert [s.name for s in chosen] == ["model.layers.1.self_attn.q_proj", "model.layers.1.mlp.up_proj"]
    assert len(select(sites, ["down"])) == 3 and len(select(sites, blocks=[2])) == 7
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(3))
    ref = model(ids).logits
    with fp4_weights(model, "nvfp4", ["q", "up"], [1]) as ch:
        assert len(ch) == 2
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert changed == {"model.layers.1.self_attn.q_proj.weight", "model.layers.1.mlp.up_proj.weight"}
        w = model.model.layers[1].self_attn.q_proj.weight
        np.testing.assert_array_equal(w.detach().numpy(), fp4_fakequant(before[
            "model.layers.1.self_attn.q_proj.weight"].numpy(), "nvfp4"))
        q_out = model(ids).logits
    assert not torch.equal(q_out, ref)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert torch.equal(model(ids).logits, ref)
    names = quantize_model_(model, "mxfp4", ["down"])
    assert names == [f"model.layers.{i}.mlp.down_proj" for i in range(3)]
    assert torch.equal(model.lm_head.weight, before["lm_head.weight"])


def test_minilm_and_bitnet_selection():
    from lowbit.models.hf import minilm_dir

    bert = transformers.AutoModel.from_pretrained(minilm_dir())
    sites = find_linears(bert)
    assert len(sites) == 36  # 6 layers x (q, k, v, o, up, down); pooler.dense excluded
    assert {s.component for s in sites} == {"q", "k", "v", "o", "up", "down"}
    assert [s.name for s in select(sites, ["down"], [4])] == ["encoder.layer.4.output.dense"]
    assert [s.name for s in select(sites, ["o"], [4])] == ["encoder.layer.4.attention.output.dense"]

    from lowbit.models.bitnet import BitNet
    from lowbit.sim.modelspec import get_model

    bn = BitNet(get_model("bitnet-tiny"))
    assert len(find_linears(bn)) == 14
    with pytest.raises(LowbitError, match="quantized = False"):
        quantize_model_(bn, "nvfp4")
    bn.quantized = False
    assert len(quantize_model_(bn, "nvfp4", ["gate"])) == 2


def test_errors():
    with pytest.raises(LowbitError, match="no q/k/v/o"):
        find_linears(torch.nn.Sequential(torch.nn.Linear(4, 4)))
    with pytest.raises(LowbitError, match="unknown FP4 format"):
        fakequant_weight(torch.zeros(2, 16), "fp8")
    with pytest.raises(LowbitError, match="unknown component"):
        parse_components("q,ffn")
    with pytest.raises(LowbitError, match="bad block list"):
        parse_blocks("1-x")
    assert parse_blocks("0,2-4") == (0, 2, 3, 4) and parse_components("all") is None
    with pytest.raises(LowbitError, match="do not exist"):
        select(find_linears(tiny_llama(2)), blocks=[5])
