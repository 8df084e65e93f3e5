"""`lowbit models report` (lowbit.sim.modelzoo): each row equals a direct simulation of the same trace; weight
traffic per step from the shapes; a model that does not fit the design is a row with its reason."""

from __future__ import annotations

import json

from lowbit.sim.config import load_config
from lowbit.sim.engine import simulate
from lowbit.sim.modelspec import get_model
from lowbit.sim.modelzoo import render, run_zoo
from lowbit.sim.workloads import standard_trace
from tests.cli_util import assert_one_line_error, lowbit


def test_rows_equal_direct_simulation(tmp_path):
    d = tmp_path / "tiny-llama"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128, "max_position_embeddings": 64}))
    cfg = load_config("tiny")
    rows = run_zoo(cfg, 6, 3, names=["bitnet-tiny", str(d), "bitnet-b1.58-3b"])
    tiny, llama, big = rows
    assert (tiny.source, tiny.fmt, llama.fmt) == ("built-in", "ternary", "ternary")  # bf16 -> ternary on tiny
    want = simulate(cfg, standard_trace("bitnet-tiny", 6, 3))
    assert (tiny.decode_tok_s, tiny.prefill_s) == (want.decode_tokens_per_s, want.prefill_latency_s)
    m = get_model(str(d))
    assert llama.decode_tok_s == simulate(cfg, standard_trace(m, 6, 3, "ternary")).decode_tokens_per_s
    # q, o 64x64; k, v 64x32; gate, up, down 64x96; 2 layers; 2 bits per ternary weight
    assert llama.weight_mb == 2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 96) * 2 / 8 / 1e6
    assert llama.weight_gb_s == llama.weight_mb * llama.decode_tok_s / 1e3
    assert big.decode_tok_s is None and "does not fit SRAM buffer 'act'" in big.error
    md = render(cfg, rows, 6, 3, "lowbit models report --hw tiny")
    assert f"| bitnet-tiny | built-in | {tiny.params_b:.2f} B | ternary |" in md
    assert "| bitnet-b1.58-3b | built-in | 3.43 B | ternary | 805.4 MB | does not run: tiny: op" in md
    # --weights deploys every model in one format
    assert {r.fmt for r in run_zoo(cfg, 2, 1, weights="int8", names=["bitnet-tiny", str(d)])} == {"int8"}


def test_cli_refuses_a_bad_format(tmp_path):
    r = lowbit("models", "report", "--hw", "tiny", "--weights", "fp3", "--out", str(tmp_path))
    assert_one_line_error(r, r"--weights fp3: unknown weight format")
    assert not list(tmp_path.iterdir())
