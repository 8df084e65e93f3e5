"""`lowbit roofline` takes the same --model values and --weights as `lowbit sim`."""

from __future__ import annotations

import json

from tests.cli_util import assert_one_line_error, lowbit


def test_roofline_of_a_config_json_with_weights(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128, "max_position_embeddings": 64}))
    r = lowbit("roofline", "--hw", "tiny", "--model", str(d), "--weights", "int8", "--prefill", "4", "--decode", "1",
               "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "out" / "roofline.md").read_text()
    assert f"--model {d} --prefill 4 --decode 1 --out {tmp_path / 'out'} --weights int8" in md
    r = lowbit("roofline", "--hw", "tiny", "--model", str(d), "--prefill", "4", "--decode", "1",
               "--out", str(tmp_path / "out2"))
    assert_one_line_error(r, r"model m has bf16 weights, which no unit of tiny runs; choose the deployed format")
    assert not (tmp_path / "out2").exists()
