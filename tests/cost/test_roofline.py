"""Roofline: compute roofs from the unit catalogue (hand-summed from the presets), GPU points from a
bench-gpu result (hand-computed), and the written report/figure."""

from __future__ import annotations

import json

import pytest

from lowbit.cost.roofline import design_points, design_roofs, gpu_points, gpu_roofs, write_roofline
from lowbit.sim.breakdown import Breakdown
from lowbit.sim.config import load_config
from lowbit.sim.engine import simulate, unit_list
from lowbit.sim.workloads import standard_trace


def test_design_roofs():
    # vitallm: TINT 2 cores x 6 lanes x 16 = 192 + BoothFlex ternary 4 x 4 units x 4 = 64; INT8 4 x 4 = 16
    assert design_roofs(load_config("vitallm")) == {"ternary": 256.0, "INT8": 16.0}
    # BoothFlex-BS: one radix-4 digit per cycle: INT8 = 4 x 4 / 4 = 4, ternary 4 x 4 = 16 (+ TINT 192)
    assert design_roofs(load_config("vitallm-bs")) == {"ternary": 208.0, "INT8": 4.0}
    c = load_config("vitallm-fp4")
    assert design_roofs(c) == {"FP4": float(c.fp4.lanes * c.fp4.elems_per_cycle), "ternary": 64.0, "INT8": 16.0}


G = {"schema": "lowbit.gpu-baseline/1", "device": "NVIDIA H100 80GB HBM3", "copy_gbps": 3000.0,
     "results": [{"kernel": "ternary", "model": "bitnet-b1.58-3b", "layer": "qkvo", "n": 3200, "k": 3200,
                  "batch": 1, "median_us": 8.0, "gbps": 320.0},
                 {"kernel": "ternary", "n": 3200, "k": 3200, "batch": 4, "median_us": 9.0, "gbps": 300.0}],
     "decode": [{"kernel": "bf16", "model": "bitnet-b1.58-3b", "batch": 1, "tokens_per_s": 250.0,
                 "weight_bytes": 6_000_000_000}]}


def test_gpu_points_and_roofs():
    pts = gpu_points(G)
    assert len(pts) == 2  # the batch-4 kernel is left out
    k, dec = pts
    # 3200 x 3200 MACs in 8 us; bytes = 320 GB/s x 8 us = 2,560,000
    assert k.macs == 3200 * 3200 and k.achieved == pytest.approx(3200 * 3200 / 8e-6)
    assert k.intensity == pytest.approx(3200 * 3200 / 2_560_000)
    from lowbit.sim.modelspec import get_model

    macs = get_model("bitnet-b1.58-3b").projection_params
    assert dec.achieved == pytest.approx(macs * 250.0) and dec.intensity == pytest.approx(macs / 6e9)
    r = gpu_roofs(G)
    assert r["bf16"] == pytest.approx(989.5e12 / 2) and r["copy_bytes_per_s"] == 3e12
    assert "bf16" not in gpu_roofs({**G, "device": "Some GPU"})


def test_write_roofline(tmp_path):
    cfg = load_config("tiny")
    tr = standard_trace("bitnet-tiny", 8, 3)
    sim = simulate(cfg, tr, breakdown=Breakdown(tr.model.n_layers, unit_list(cfg), (2,))).to_dict()
    pts = design_points(sim)
    assert {p.label for p in pts} >= {"q", "k", "v", "o", "gate", "up", "down", "attention"}
    for p in pts:  # achieved never above the op's compute roof
        assert p.achieved <= design_roofs(cfg)[p.fmt] + 1e-9
    gpath = tmp_path / "g.json"
    gpath.write_text(json.dumps(G))
    files = write_roofline(cfg, sim, tmp_path / "rl", gpath, "lowbit roofline ...")
    assert [f.name for f in files] == ["roofline.png", "roofline.md", "roofline.json"]
    assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = files[1].read_text()
    assert "## Breakdown, decode step 2, per op" in md and "| q |" in md and "![roofline](roofline.png)" in md
    data = json.loads(files[2].read_text())
    assert data["roofs_macs_per_cycle"] == design_roofs(cfg) and len(data["gpu"]["points"]) == 2
