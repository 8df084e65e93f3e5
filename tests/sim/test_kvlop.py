"""The KV-reduction-vs-context report (lowbit.sim.kvlop) and the one-step data-driven selection it uses."""

from __future__ import annotations

import json

import numpy as np

from lowbit.sim.config import load_config
from lowbit.sim.kvlop import build, main
from lowbit.sim.lop_select import lop_selection, select_positions, write_qk_trace
from lowbit.sim.modelspec import get_model
from lowbit.sim.trace_load import load_trace


def test_select_positions_equals_trace_selection(tmp_path):
    """The group rule on raw tensors equals lop_selection over a trace holding the same tensors."""
    m = get_model("bitnet-tiny")  # 4 heads on 2 KV heads, head_dim 16
    rng = np.random.default_rng(7)
    keys = rng.standard_normal((m.n_layers, m.n_kv_heads, 40, m.head_dim)).astype(np.float32)
    qs = rng.standard_normal((m.n_layers, m.n_heads, m.head_dim)).astype(np.float32)

    def make(layer, phase, step):
        if phase == "prefill":
            k = keys[layer, :, :39]
            return {"k": k, "v": k}
        return {"k": keys[layer, :, 39:], "v": keys[layer, :, 39:], "q": qs[layer]}

    tr = load_trace(write_qk_trace(m, 39, 1, tmp_path / "t", make))
    cfg = load_config("tiny").lop  # k = 8, 31 buckets
    sel = lop_selection(tr, cfg, keep_indices=True)
    for layer in range(m.n_layers):
        for g in range(m.n_kv_heads):
            got = select_positions(qs[layer, 2 * g:2 * g + 2], keys[layer, g], cfg.k, cfg.buckets)
            assert got.tolist() == sel.indices[(layer, 1)][g].tolist()
            assert len(got) == 8  # one top-8 per KV head


def test_curve_points_by_hand(tmp_path):
    """bitnet-tiny (2 layers, 2 KV heads, head_dim 16, LO codes 8 B/key) on vitallm (K = 32) at M = 64:
    dense K+V = 2*64*16*2*2 = 8,192 B; fixed ratio reads 2*32*16*2*2 = 4,096 B plus LO codes 64*8*2*2 =
    2,048 B: net 8192 / 6144 = 1.33x, K+V only 2x. M = 300 is beyond its 256 positions: refused."""
    pts = build(tmp_path / "kv", models=("bitnet-tiny",), contexts=(64, 300))
    p, refused = pts
    assert p.dense_kv_bytes == 8192
    assert (p.fixed["kv_read_bytes"], p.fixed["lop_bytes"]) == (4096, 2048)
    assert abs(p.fixed["kv_reduction_x"] - 8192 / 6144) < 1e-12 and p.fixed["kv_only_reduction_x"] == 2.0
    assert p.data["lop_bytes"] == 2048 and p.data["kv_read_bytes"] == 4096  # K keys per KV head, as fixed
    assert refused.refused == "context 300 > max_positions 256" and refused.fixed is None
    data = json.loads((tmp_path / "kv" / "kv-lop.json").read_text())
    assert data[0]["fixed"]["kv_read_bytes"] == 4096
    text = (tmp_path / "kv" / "README.md").read_text()
    assert "| 64 | 8,192 | 4,096 / " in text and "refused: context 300 > max_positions 256" in text
    assert (tmp_path / "kv" / "kv-lop.png").stat().st_size > 1000


def test_cli_bad_out_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert main(["--out", str(tmp_path / "f" / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_validation_section_quotes_the_point(tmp_path):
    from lowbit.sim.validation import kv_section

    cfg = load_config("vitallm")
    p = build(tmp_path / "kv", models=("bitnet-tiny",), contexts=(64,))[0]
    text = kv_section(cfg, p)
    assert "| K+V bytes read (dense: 8,192) | 4,096 | " in text
    assert "| net reduction (dense / (K+V + LO codes)) | 1.33x | " in text and "[reports/kv-lop/README.md]" in text
