"""Fuzz the Hugging Face importer: config.json files (through load_hf on the meta device, 1,000 cases) and
weight files (through a real weight load): accepted with a valid ModelSpec, or refused with one line."""

from __future__ import annotations

import copy
import json
import math
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.util import CASES, FUZZ, HOSTILE_NUMBERS, hostile_value, run_case

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lowbit.models.hf import load_hf  # noqa: E402

SMALL = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)
BASES = {
    "llama": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu", "head_dim": 16,
              "rms_norm_eps": 1e-6, "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
              "tie_word_embeddings": False, **SMALL},
    "bitnet": {"architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "hidden_act": "relu2",
               "rms_norm_eps": 1e-5, "rope_theta": 500000.0, **SMALL},
    "bert": {"architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu", "layer_norm_eps": 1e-12,
             "type_vocab_size": 2, **{k: v for k, v in SMALL.items() if k != "num_key_value_heads"}},
}
KEYS = sorted({k for b in BASES.values() for k in b} | {"rope_scaling", "torch_dtype", "num_labels"})
NEAR = st.sampled_from(HOSTILE_NUMBERS + [1, 2, 3, 4, 5, 16, 63, 64, 65, 96, 128, 2**17 + 1, 10**9, 1e-5, "silu",
                                          "gelu", "tanh", "llama", "bert", ["GPT2LMHeadModel"], [], None])


@st.composite
def config_json(draw) -> bytes:
    cfg = copy.deepcopy(BASES[draw(st.sampled_from(sorted(BASES)))])
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(KEYS))
        op = draw(st.sampled_from(["set", "set", "delete", "hostile"]))
        if op == "delete":
            cfg.pop(key, None)
        else:
            cfg[key] = draw(NEAR if op == "set" else hostile_value)
    text = json.dumps(cfg)  # NaN/Infinity appear as the JSON extensions Python writes
    if draw(st.integers(0, 19)) == 0:  # and some files that are not JSON objects at all
        text = draw(st.sampled_from(["", "[]", "null", "{", '{"architectures": ["LlamaForCausalLM"]',
                                     "[" * 10000, "\udcff"])) if draw(st.booleans()) else text[: len(text) // 2]
    return text.encode("utf-8", "surrogatepass")


def test_hf_config_fuzz(tmp_path: Path):
    seen: Counter[str] = Counter()
    d = tmp_path / "hf"
    d.mkdir()

    @FUZZ
    @given(config_json())
    def case(raw):
        (d / "config.json").write_bytes(raw)
        m, err = run_case(load_hf, d, meta=True, what=f"config.json {raw[:300]!r}", timeout=15)
        seen["cases"] += 1
        seen["refused" if err else "accepted"] += 1
        if m is not None:
            s = m.spec
            s.validate()  # whatever was accepted is a valid model shape, with finite numbers
            assert math.isfinite(s.rope_theta) and math.isfinite(s.norm_eps)

    case()
    assert seen["cases"] >= CASES, seen
    assert seen["accepted"] > 50 and seen["refused"] > CASES // 4, seen


@pytest.fixture(scope="module")
def llama_files(tmp_path_factory) -> dict[str, bytes]:
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("hfw") / "llama"
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMALL)).save_pretrained(d)
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


def test_hf_weights_fuzz(tmp_path: Path, llama_files):
    """Weight files: dropped, renamed, reshaped, retyped tensors and garbage bytes -- a real load (not meta)."""
    from safetensors.torch import load, save

    sd = load(llama_files["model.safetensors"])
    names = sorted(sd)
    seen: Counter[str] = Counter()
    d = tmp_path / "llama"
    d.mkdir()

    @settings(FUZZ, max_examples=100)
    @given(st.sampled_from(["drop", "rename", "reshape", "dtype", "garbage", "truncate", "none"]),
           st.sampled_from(names), st.binary(max_size=64), st.integers(0, 1000))
    def case(kind, name, junk, cut):
        for f, b in llama_files.items():
            (d / f).write_bytes(b)
        w = dict(sd)
        if kind == "drop":
            w.pop(name)
        elif kind == "rename":
            w[name + ".x"] = w.pop(name)
        elif kind == "reshape":
            w[name] = w[name].reshape(-1)[:-1] if w[name].numel() > 1 else w[name].repeat(2)
        elif kind == "dtype":
            w[name] = w[name].to(torch.int8)
        data = save(w, metadata={"format": "pt"})
        if kind == "garbage":
            data = junk
        elif kind == "truncate":
            data = data[: cut * len(data) // 1000]
        (d / "model.safetensors").write_bytes(data)
        m, err = run_case(load_hf, d, what=f"{kind} {name}", timeout=30)
        seen["cases"] += 1
        seen[f"{kind}:{'refused' if err else 'accepted'}"] += 1
        if kind in ("drop", "rename"):
            assert err is not None and name in str(err), (kind, name, err)  # never invented, always named
        if kind == "none":
            assert m is not None and err is None

    case()
    assert seen["cases"] >= 100, seen
