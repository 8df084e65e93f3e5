"""GPU baseline section of `lowbit report`: rows and ratios from a hand-built bench-gpu JSON."""

from __future__ import annotations

import json

import pytest

from lowbit.cost.gpu import SCHEMA, gpu_markdown, load_gpu_results
from lowbit.sim.errors import LowbitError

G = {
    "schema": SCHEMA, "device": "Test GPU", "copy_gbps": 1000.0,
    "decode": [
        {"kernel": "bf16", "model": "m3b", "batch": 1, "context": 192, "attn": "dense", "tokens_per_s": 200.0},
        {"kernel": "ternary", "model": "m3b", "batch": 1, "context": 192, "attn": "dense", "tokens_per_s": 350.0,
         "j_per_token": 0.5},
        {"kernel": "ternary", "model": "other", "batch": 1, "context": 192, "attn": "dense", "tokens_per_s": 9.0},
        {"kernel": "ternary", "model": "m3b", "batch": 4, "context": 192, "attn": "dense", "tokens_per_s": 999.0},
    ],
    "results": [
        {"kernel": "ternary", "model": "m3b", "layer": "up", "shape": "8640x3200", "batch": 1, "median_us": 7.0,
         "gbps": 987.6, "speedup_vs_torch": 3.5},
    ],
}


def test_rows_and_ratios(tmp_path):
    p = tmp_path / "g.json"
    p.write_text(json.dumps(G))
    md = gpu_markdown(load_gpu_results(p), [("vitallm", "m3b", 70.0), ("vitallm-bs", "m3b", 35.0)])
    rows = [line for line in md.splitlines() if line.startswith("| m3b")]
    # simulated row first, then the GPU batch-1 rows of the same model: 200/70 = 2.86x, 350/70 = 5.00x
    assert rows[0] == "| m3b | vitallm (simulated) | design | LOP | prefill+decode | 70.00 | 1.00x | — | — |"
    assert rows[1] == "| m3b | vitallm-bs (simulated) | design | LOP | prefill+decode | 35.00 | 0.50x | — | — |"
    assert rows[2].endswith("| 200.0 | 2.86x | — | — |") and rows[3].endswith("| 350.0 | 5.00x | 500 | — |")
    assert "999.0" not in md and "| other" not in md  # batch 4 and other models are not compared
    assert "| m3b | up | 8640x3200 | ternary | 7.00 | 988 | 3.50x |" in md


def test_energy_beside_simulated(tmp_path):
    # simulated J/token incl. DRAM as the 4th element: 2 mJ; the GPU's 0.5 J is 250x that
    p = tmp_path / "g.json"
    p.write_text(json.dumps({**G, "schema": "lowbit.gpu-baseline/1"}))  # /1 files still load
    md = gpu_markdown(load_gpu_results(p), [("vitallm", "m3b", 70.0, 0.002)])
    rows = [line for line in md.splitlines() if line.startswith("| m3b")]
    assert rows[0].endswith("| 70.00 | 1.00x | 2 | 1.00x |")
    assert rows[2].endswith("| 350.0 | 5.00x | 500 | 250x |")


@pytest.mark.parametrize("content,msg", [
    ("{not json", "cannot read JSON"),
    (json.dumps({"schema": "other/2", "device": "x", "decode": []}), "schema 'other/2' is not"),
    (json.dumps({"schema": SCHEMA, "decode": []}), "missing key 'device'"),
])
def test_bad_gpu_results(tmp_path, content, msg):
    p = tmp_path / "g.json"
    p.write_text(content)
    with pytest.raises(LowbitError, match=msg):
        load_gpu_results(p)
