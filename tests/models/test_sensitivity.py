"""FP4 sensitivity sweep (models/sensitivity.py, `lowbit fp4-sensitivity`): tables, heatmaps, MiniLM, errors."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lowbit.cli import main  # noqa: E402
from lowbit.models.fp4ptq import fp4_weights  # noqa: E402
from lowbit.models.sensitivity import (  # noqa: E402
    encode_mean_pooled,
    load_results,
    load_sentences,
    load_target,
    run_sensitivity,
    write_outputs,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("llama")
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=40,
                                   architectures=["LlamaForCausalLM"])
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(d)
    return d


def test_cli_random_llama_table_and_heatmap(llama_dir, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["fp4-sensitivity", "--model", str(llama_dir), "--format", "both", "--out", str(out)]) == 0
    for f in ("sensitivity.md", "sensitivity.json", "heatmap-nvfp4.png", "heatmap-mxfp4.png"):
        assert (out / f).stat().st_size > 100, f
    assert (out / "heatmap-nvfp4.png").read_bytes()[:4] == b"\x89PNG"
    res = json.loads((out / "sensitivity.json").read_text())
    assert [r["fmt"] for r in res] == ["nvfp4", "mxfp4"]
    for r in res:
        assert r["kind"] == "causal" and r["blocks"] == [0, 1]
        assert r["components"] == ["q", "k", "v", "o", "gate", "up", "down"]
        assert len(r["grid"]) == 2 * 7 + 7 + 2 + 1
        assert all(math.isfinite(v) for m in r["grid"].values() for v in m.values())
        assert r["grid"]["all,all"]["n_linears"] == 14 and r["grid"]["1,all"]["n_linears"] == 7
        assert r["grid"]["all,up"]["n_linears"] == 2 and r["grid"]["0,q"]["n_linears"] == 1
        assert r["grid"]["all,all"]["kl"] > 0  # FP4 does change a random model's outputs
    assert [r.grid for r in load_results(out / "sensitivity.json")] == [r["grid"] for r in res]
    md = (out / "sensitivity.md").read_text()
    assert "| block | q | k | v | o | gate | up | down | all |" in md and "| all |" in md
    assert list(tmp_path.glob("rep/.*tmp")) == []  # atomic writes leave no temp files


def test_minilm_fp4_embeddings():
    """MiniLM fp32 embeddings == sentence-transformers; FP4 (everything) stays close but not identical."""
    st = pytest.importorskip("sentence_transformers")
    t = load_target("minilm", n_sentences=4)
    assert t.kind == "encoder"
    ref = t.forward()
    from lowbit.models.hf import minilm_dir

    st_emb = st.SentenceTransformer(str(minilm_dir()), device="cpu").encode(load_sentences(4), convert_to_tensor=True)
    torch.testing.assert_close(ref, st_emb.float(), atol=1e-5, rtol=1e-4)
    for fmt in ("nvfp4", "mxfp4"):
        with fp4_weights(t.model, fmt):
            emb = encode_mean_pooled(t.model, t.inputs)
        cos = (emb * ref).sum(-1)
        assert (cos > 0.9).all() and (cos < 0.99999).all(), (fmt, cos)
    assert torch.equal(t.forward(), ref)  # weights restored


def test_sweep_on_bitnet_preset(tmp_path):
    t = load_target("bitnet-tiny", windows=2, seq=16)
    r = run_sensitivity(t, "mxfp4")
    assert r.blocks == [0, 1] and len(r.grid) == 2 * 7 + 7 + 2 + 1
    paths = write_outputs([r], tmp_path / "o")
    assert {p.name for p in paths} == {"heatmap-mxfp4.png", "sensitivity.md", "sensitivity.json"}


@pytest.mark.parametrize("args,msg", [
    (["--model", "/nonexistent/dir", "--format", "nvfp4"], "does not exist"),
    (["--model", "minilm", "--format", "fp8"], "unknown FP4 format"),
    (["--model", "no-such-model"], "unknown model"),
])
def test_cli_errors(args, msg, capsys, tmp_path):
    assert main(["fp4-sensitivity", *args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and msg in err and "\n" not in err


def test_cli_unsupported_arch(tmp_path, capsys):
    transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=30,
                            architectures=["GPT2LMHeadModel"]).save_pretrained(tmp_path)
    assert main(["fp4-sensitivity", "--model", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unsupported architecture" in err and "\n" not in err
