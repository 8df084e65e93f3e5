"""models.capture: traces equal sim.workloads.standard_trace, tensor contract, generic modules, bad input."""

from __future__ import annotations

import errno
import json
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from lowbit.models.bitnet import BitNet, sdpa_attention  # noqa: E402
from lowbit.models.capture import Recorder, Target, capture_trace, layer_of, record  # noqa: E402
from lowbit.sim.errors import LowbitError  # noqa: E402
from lowbit.sim.modelspec import ModelSpec, get_model  # noqa: E402
from lowbit.sim.trace_load import load_trace  # noqa: E402
from lowbit.sim.workloads import standard_trace  # noqa: E402


def _ops(trace):
    return [o.to_json() for o in trace.ops]


@pytest.mark.parametrize("prefill,decode", [(8, 3), (1, 1), (33, 0)])
def test_tiny_trace_equals_standard_trace(tmp_path, prefill, decode):
    if decode == 0:  # a decoder needs decode >= 1; compare the prefill step of a decode-1 capture instead
        tr = load_trace(capture_trace("bitnet-tiny", prefill, 1, tmp_path / "t"))
        got = [o for o in _ops(tr) if o["phase"] == "prefill"]
        assert got == _ops(standard_trace("bitnet-tiny", prefill, 0))
        return
    tr = load_trace(capture_trace("bitnet-tiny", prefill, decode, tmp_path / "t"))
    assert _ops(tr) == _ops(standard_trace("bitnet-tiny", prefill, decode))
    assert tr.model == get_model("bitnet-tiny") and (tr.prefill, tr.decode) == (prefill, decode)
    assert tr.meta["generator"] == "lowbit.models.capture" and tr.tensor_files == []


def test_3b_meta_capture_is_fast_and_standard(tmp_path):
    t0 = time.perf_counter()
    tr = load_trace(capture_trace("bitnet-b1.58-3b", 64, 4, tmp_path / "t"))
    assert time.perf_counter() - t0 < 30
    assert _ops(tr) == _ops(standard_trace("bitnet-b1.58-3b", 64, 4))
    assert tr.meta["init"] == "meta"


def test_tensor_contract_matches_model_state(tmp_path):
    """kv_append k/v concatenated over steps == the model's KV cache; decode attn_qk q == the query it used."""
    spec, P, D, seed = get_model("bitnet-tiny"), 6, 3, 5
    tr = load_trace(capture_trace("bitnet-tiny", P, D, tmp_path / "t", tensors=True, seed=seed))
    assert tr.tensor_files == [f"tensors/step{s:05d}.safetensors" for s in range(D + 1)]
    assert _ops(standard_trace("bitnet-tiny", P, D)) == [
        {k: v for k, v in o.items() if k != "tensors"} for o in _ops(tr)]
    # independent re-run of the same seeded model and prompt
    queries = {}

    def attn(q, k, v, layer, offset):
        queries[(offset, layer)] = q[0, :, -1].clone()
        return sdpa_attention(q, k, v, layer, offset)

    net = BitNet.build(spec, "cpu", seed).eval()
    net.attn_fn = attn
    prompt = torch.randint(0, spec.vocab, (1, P), generator=torch.Generator().manual_seed(seed))
    cache = net.new_cache(1, P + D)
    with torch.no_grad():
        logits = net(prompt, cache, 0)
        for s in range(1, D + 1):
            logits = net(logits[:, -1:].argmax(-1), cache, P + s - 1)
    for layer in range(spec.n_layers):
        kv = [o for o in tr.ops if o.op == "kv_append" and o.layer == layer]
        assert [o.step for o in kv] == list(range(D + 1))
        for part, store in (("k", cache.k), ("v", cache.v)):
            got = np.concatenate([tr.load_tensor(o.tensors[part]) for o in kv], axis=1)
            assert got.dtype == np.float32 and got.shape == (spec.n_kv_heads, P + D, spec.head_dim)
            assert np.array_equal(got, store[layer][0, :, : P + D].numpy())
        qk = [o for o in tr.ops if o.op == "attn_qk" and o.layer == layer]
        assert "q" not in qk[0].tensors  # prefill: no q
        for o in qk[1:]:
            q = tr.load_tensor(o.tensors["q"])
            assert q.shape == (spec.n_heads, spec.head_dim)
            assert np.array_equal(q, queries[(P + o.step - 1, layer)].numpy())


class _TinyLM(nn.Module):
    """A hand-written LLaMA-like module (not models.bitnet): plain nn.Linear + SDPA, no RoPE, GELU MLP."""

    def __init__(self, extra: nn.Module | None = None, act: type[nn.Module] = nn.GELU):
        super().__init__()
        self.tok = nn.Embedding(50, 32)
        self.blocks = nn.ModuleList(nn.ModuleDict(dict(
            ln1=nn.LayerNorm(32), wq=nn.Linear(32, 32), wk=nn.Linear(32, 32), wv=nn.Linear(32, 32),
            wo=nn.Linear(32, 32), ln2=nn.LayerNorm(32), fc=nn.Linear(32, 64), act=act(), proj=nn.Linear(64, 32)))
            for _ in range(2))
        self.extra = extra
        self.head = nn.Linear(32, 50)

    def forward(self, idx):
        x = self.tok(idx)
        if self.extra is not None:
            x = self.extra(x.transpose(1, 2)).transpose(1, 2)
        for b in self.blocks:
            h = b["ln1"](x)
            q, k, v = (t.view(1, -1, 4, 8).transpose(1, 2) for t in (b["wq"](h), b["wk"](h), b["wv"](h)))
            a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + b["wo"](a.transpose(1, 2).reshape(1, -1, 32))
            x = x + b["proj"](b["act"](b["fc"](b["ln2"](x))))
        return self.head(x)


def _run_module(net):
    def run(rec, prompt, decode):
        with rec.step("prefill", 0):
            net(prompt)
    return run


def test_generic_module_capture_and_unsupported_op():
    spec = ModelSpec("custom", 2, 32, 4, 4, 64, 50, ffn_act="gelu", max_positions=64, weight_format="bf16")
    net = _TinyLM().eval()
    rec = record(Target(net, spec, False, False, None, "cpu", _run_module(net)), 5, 0)
    std = [o for o in standard_trace(spec, 5, 0).ops if o.op not in ("quantize", "rope")]
    got = rec.ops
    # same kinds/shapes as the standard block; names are the module paths; LayerNorm marked by role
    assert [(o.op, o.args, o.layer) for o in got if o.op != "rmsnorm"] == \
        [(o.op, o.args, o.layer) for o in std if o.op != "rmsnorm" and o.name != "final_norm"]
    assert [o.role for o in got if o.op == "rmsnorm"] == ["layernorm"] * 4
    assert [o.role for o in got if o.op == "linear"][:7] == ["q", "k", "v", "o", "up", "down", "q"]
    assert got[-1].op == "lm_head" and got[-1].name == "head"
    bad = _TinyLM(extra=nn.Conv1d(32, 32, 1)).eval()
    with pytest.raises(LowbitError, match=r"unsupported op: module 'extra' \(Conv1d\)"):
        record(Target(bad, spec, False, False, None, "cpu", _run_module(bad)), 5, 0)
    assert torch.nn.functional.scaled_dot_product_attention.__name__ == "scaled_dot_product_attention"


def test_plain_relu_is_an_activation_op():
    spec = ModelSpec("custom-relu", 2, 32, 4, 4, 64, 50, ffn_act="relu2", max_positions=64, weight_format="bf16")
    net = _TinyLM(act=nn.ReLU).eval()
    rec = record(Target(net, spec, False, False, None, "cpu", _run_module(net)), 5, 0)
    acts = [o for o in rec.ops if o.op == "activation"]
    assert [(o["fn"], o["gated"], o["dim"], o["tokens"]) for o in acts] == [("relu", False, 64, 5)] * 2


def test_layer_of():
    assert layer_of("model.layers.12.mlp.up_proj") == (12, "model.layers.12")
    assert layer_of("layers.0") == (0, "layers.0")
    assert layer_of("lm_head") == (-1, "")


def test_bad_input(tmp_path):
    out = tmp_path / "t"
    with pytest.raises(LowbitError, match="decode = 0.*decoder"):
        capture_trace("bitnet-tiny", 4, 0, out)
    with pytest.raises(LowbitError, match="prefill = 0"):
        capture_trace("bitnet-tiny", 0, 2, out)
    with pytest.raises(LowbitError, match="decode = -1"):
        capture_trace("bitnet-tiny", 4, -1, out)
    with pytest.raises(LowbitError, match="exceeds bitnet-tiny's max_positions 256"):
        capture_trace("bitnet-tiny", 250, 10, out)
    with pytest.raises(LowbitError, match="unknown model 'bitnet-tinny' \\(did you mean 'bitnet-tiny'\\?\\)"):
        capture_trace("bitnet-tinny", 4, 2, out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LowbitError, match="no config.json"):
        capture_trace(tmp_path / "empty", 4, 2, out)
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    with pytest.raises(LowbitError, match="unsupported architecture GPT2LMHeadModel; supported: LlamaForCausalLM"):
        capture_trace(gpt2, 4, 2, out)
    out.mkdir()
    with pytest.raises(LowbitError, match="already exists"):
        capture_trace("bitnet-tiny", 4, 2, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "gpt2", "t"]


def test_no_space_left_removes_everything(tmp_path, monkeypatch):
    import safetensors.torch

    calls = []

    def full_disk(tensors, path, *a, **k):
        calls.append(path)
        if len(calls) == 2:  # the prefill file fits, the first decode step hits ENOSPC
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, *a, **k)

    real = safetensors.torch.save_file
    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(LowbitError, match="no space left on device"):
        capture_trace("bitnet-tiny", 4, 2, tmp_path / "t", tensors=True)
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []  # no half-written trace, temp tensor dir removed


def test_recorder_restores_sdpa_on_error():
    orig = torch.nn.functional.scaled_dot_product_attention
    spec = get_model("bitnet-tiny")
    net = BitNet(spec)

    def run(rec, prompt, decode):
        with rec.step("prefill", 0):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        record(Target(net, spec, False, True, None, "cpu", run), 2, 0)
    assert torch.nn.functional.scaled_dot_product_attention is orig
    assert not any(m._forward_pre_hooks for m in net.modules())
    assert Recorder  # public
