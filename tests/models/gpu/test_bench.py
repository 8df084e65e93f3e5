"""bench-gpu's flag parsing and its LOP exactness check (the benchmark itself needs a CUDA GPU)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from lowbit.models.gpu.bench import parse_gemm_batches
from lowbit.models.gpu.bench_attention import _exact_check
from lowbit.models.gpu.lop_attn import lo_cache_torch, lop_attention
from lowbit.sim.errors import LowbitError


def test_parse_gemm_batches():
    assert parse_gemm_batches("64,512") == (64, 512)
    assert parse_gemm_batches(" 16 ,64,") == (16, 64)
    for bad in ("8,64", "", "64,x", ","):
        with pytest.raises(LowbitError, match="--gemm-batches"):
            parse_gemm_batches(bad)


@pytest.mark.parametrize("flags, message", [
    (["--gemm-batches", "8,64"], "--gemm-batches"),
    (["--sections", "attention,attn"], "--sections attention,attn: unknown attn"),
    ([], "needs a CUDA GPU") if not torch.cuda.is_available() else (["--gemm-batches", "x"], "--gemm-batches"),
])
def test_module_entry_point_errors_in_one_line(tmp_path, flags, message):
    # `python -m lowbit.models.gpu.bench` (the command a GPU machine without the CLI runs): one line, status 2
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "lowbit.models.gpu.bench", "--out", str(out), *flags],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr and not list(out.glob("gpu-baseline.*"))


def test_lop_caches_pair_each_lo_cache_with_its_keys():
    # the attention section's (and the A/B probe's) inputs: the first copy's LO cache is that of the INT8 keys
    # returned for the exactness check; the copies differ; the same seed gives the same caches
    from lowbit.models.gpu.bench_attention import lop_caches

    caches, k8 = lop_caches(2, 37, 12, 3, torch.Generator().manual_seed(1))
    assert len(caches) == 3 and k8.shape == (1, 2, 37, 12) and k8.dtype == torch.int8
    kc, vc, lo = caches[0]
    assert kc.dtype == vc.dtype == torch.bfloat16 and kc.shape == vc.shape == (1, 2, 37, 12)
    assert torch.equal(lo, lo_cache_torch(k8)) and lo.shape == (1, 2, 2, 37)
    assert not torch.equal(caches[1][2], lo) and not torch.equal(caches[1][0], kc)
    again, k8b = lop_caches(2, 37, 12, 3, torch.Generator().manual_seed(1))
    assert torch.equal(k8b, k8) and all(torch.equal(a, b) for x, y in zip(caches, again, strict=True) for a, b in zip(x, y, strict=True))


def test_lop_exact_check_passes_and_catches_a_wrong_key(device):
    # GQA 6/2, 70 tokens, K = 9: the check recomputes sim.numerics.lop's group scores and top-K
    g = torch.Generator().manual_seed(4)
    h, kvh, d, m = 6, 2, 24, 70
    q = torch.randn(1, h, d, generator=g).to(torch.bfloat16).to(device)
    kc = torch.randn(1, kvh, m, d, generator=g).to(torch.bfloat16).to(device)
    k_i8 = torch.randint(-127, 128, (1, kvh, m, d), dtype=torch.int8, generator=g).to(device)
    lo = lo_cache_torch(k_i8)
    good = _exact_check("t", m, 9, q, kc, kc, lo, k_i8, lop_attention)
    assert good["ok"], good
    bad_keys = k_i8.clone()
    bad_keys[0, 1, 5] = -bad_keys[0, 1, 5]  # the check's keys no longer match the LO cache
    bad = _exact_check("t", m, 9, q, kc, kc, lo, bad_keys, lop_attention)
    assert not bad["ok"] and "scores differ" in bad["detail"]


def test_dense_attention_table_rows_and_best_ratio():
    # the report's dense-attention table: one row per measurement, best kernel vs the faster SDPA backend
    from lowbit.models.gpu.report import render_markdown

    data = {"device": "GPU", "created": "now", "torch": "t", "triton": "tr", "copy_gbps": 4000.0, "results": [],
            "dense_attention": [{"model": "m3", "shape": "B1/H32/KV32/d100/dc104", "context": 193,
                                 "splits": [5, 39, 64],
                                 "us": {"sdpa": 9.0, "dense": 13.5, "split_last": 4.5, "split_kernel": 6.0,
                                        "sdpa_flash": 8.0}},
                                {"model": "m2", "shape": "B1/H20/KV5/d128/dc128", "context": 1024,
                                 "splits": [26, 40, 64],
                                 "us": {"sdpa": 10.0, "dense": 20.0, "split_last": 12.5, "split_kernel": 13.0,
                                        "sdpa_flash": None}}]}
    md = render_markdown(data)
    assert "| m3 | B1/H32/KV32/d100/dc104 | 193 | 5 | 9.0 | 8.0 | 13.5 | 4.5 | 6.0 | 1.78× |" in md
    assert "| m2 | B1/H20/KV5/d128/dc128 | 1024 | 26 | 10.0 | — | 20.0 | 12.5 | 13.0 | 0.80× |" in md


def test_lop_table_counts_the_faster_sdpa_cache_width():
    # SDPA timed on rows of head_dim and on padded rows: the faster is the baseline, the other in brackets;
    # rows of an older run (no widths) still render
    from lowbit.models.gpu.report import goals, render_markdown

    def pair(model, shape, sdpa, lop, **extra):
        return [{"kernel": "torch_sdpa", "model": model, "shape": shape, "context": 8192, "k_sel": 512,
                 "median_us": sdpa, "backend": "flash", **extra},
                {"kernel": "lop", "model": model, "shape": shape, "context": 8192, "k_sel": 512, "median_us": lop,
                 "speedup_vs_torch": sdpa / lop, "stage_us": {"score": 20.0}}]

    att = (pair("bitnet-b1.58-3b", "H32/KV32/d100", 60.0, 40.0, cache_width=104,
                by_width_us={"100": 240.0, "104": 60.0}) + pair("bitnet-b1.58-2b4t", "H20/KV5/d128", 24.0, 12.0))
    att[1].update(chunk=512, by_chunk_us={"128": 51.25, "256": 44.0, "1024": 47.5})
    att[1]["stage_us"]["no_pdl"] = 41.5
    data = {"device": "GPU", "created": "now", "torch": "t", "triton": "tr", "copy_gbps": 4000.0, "results": [],
            "attention": att}
    md = render_markdown(data)
    assert ("| bitnet-b1.58-3b | H32/KV32/d100 | 8192 | 512 | flash, rows of 104 (rows of 100: 240.0) | 60.0 | 40.0 | "
            "1.50× | 41.5 | 20.0 | 512 (128: 51.2, 256: 44.0, 1024: 47.5) |") in md
    assert "| bitnet-b1.58-2b4t | H20/KV5/d128 | 8192 | 512 | flash | 24.0 | 12.0 | 2.00× | — | 20.0 | — |" in md
    lop_goals = {g: (m, ok) for g, m, ok in goals(data) if g.startswith("LOP")}
    assert lop_goals["LOP attention ≥ 3× SDPA at 8192 context, K/M = 1/16 (bitnet-b1.58-3b, H32/KV32/d100)"] == ("1.50×", "no")
    # a run without the linear sections did not measure the bitsandbytes peers (not "skipped" for no reason)
    peers = {g: (m, ok) for g, m, ok in goals(data)}["bitsandbytes NF4/FP4 peers in the same run"]
    assert peers == ("not measured", "not measured")
    data["skipped"] = [{"what": "bitsandbytes peers", "why": "bitsandbytes is not installed (pip install 'lowbit[gpu]')"}]
    peers = {g: (m, ok) for g, m, ok in goals(data)}["bitsandbytes NF4/FP4 peers in the same run"]
    assert peers == ("skipped: bitsandbytes is not installed (pip install 'lowbit[gpu]')", "no")


def test_sdpa_on_zero_padded_rows_is_the_same_attention():
    # the stronger SDPA baseline of the LOP table: rows of 100 padded to 104 with zeros, scale 1/sqrt(100)
    import torch
    import torch.nn.functional as F

    from lowbit.models.gpu.bench_attention import DENSE_SHAPES

    h, kvh, d, dc = DENSE_SHAPES["bitnet-b1.58-3b"]
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, n, m, d, generator=g) for n, m in ((h, 1), (kvh, 37), (kvh, 37)))
    ref = F.scaled_dot_product_attention(q, k, v)
    out = F.scaled_dot_product_attention(*(F.pad(t, (0, dc - d)) for t in (q, k, v)), scale=d ** -0.5)
    assert dc > d and torch.allclose(out[..., :d], ref, atol=1e-6) and not out[..., d:].any()


def test_decode_goals_take_the_fastest_configuration_and_name_it():
    from lowbit.models.gpu.report import goals

    def row(kernel, attn, us, model="bitnet-b1.58-3b", ctx=192):
        return {"kernel": kernel, "attn": attn, "step_us": us, "tokens_per_s": 1e6 / us, "model": model,
                "context": ctx, "floor_frac": 190.0 / us}

    dec = [row("bf16", "dense", 3000.0), row("bf16_compile", "dense", 2900.0), row("ternary", "dense", 1100.0),
           row("ternary_pdl", "split", 960.0), row("ternary", "lop", 900.0, ctx=4000),
           row("nvfp4", "dense", 1500.0), row("nvfp4_pdl", "split", 1600.0)]
    got = {g: (m, ok) for g, m, ok in goals({"results": [], "decode": dec, "copy_gbps": 4000.0})}
    m, ok = got["bitnet-b1.58-3b ternary decode ≥ 3× torch bf16 + torch.compile(max-autotune)"]
    assert m.startswith("3.02× (1042 vs 345 tok/s; ternary_pdl, split attention)") and ok == "yes"
    m, ok = got["bitnet-b1.58-3b nvfp4 decode ≥ 2× torch bf16"]
    assert m.startswith("2.00× (667 vs 333 tok/s; nvfp4, default attention)") and ok == "yes"
    m, ok = got["bitnet-b1.58-3b ternary decode ≥ 50 % of the weight-streaming floor"]
    assert m.startswith("20 % (ternary_pdl") and ok == "no"


def test_budget_runs_only_the_resumed_units_and_records_what_it_skips():
    from lowbit.models.gpu.bench_budget import BUDGET_WHY, Budget

    skipped: list = []
    b = Budget(60.0, skipped, only={"linear gemm 3200x3200", "decode m ternary ctx=192 dense", "linear gemm 9x9 M=512"})
    assert b.ok("linear gemm 3200x3200") and b.ok("linear gemm 3200x3200 M=64")  # the unit and those inside it
    assert b.ok("linear gemm 9x9") and b.ok("linear gemm 9x9 M=512")  # holds a pending unit
    assert not b.ok("linear gemm 9x9 M=64")  # done before
    assert not b.ok("linear gemm 3200x32000") and not b.ok("linear batch 4 3200x3200") and not b.ok("odd shapes")
    assert skipped == []  # passed over, not skipped
    spent = Budget(0.0, skipped)
    assert not spent.ok("odd shapes") and skipped == [{"what": "odd shapes", "why": BUDGET_WHY}]


def test_unit_seed_depends_on_the_seed_and_the_unit_only():
    from lowbit.models.gpu.bench_budget import unit_seed

    assert unit_seed(0, "linear gemm 3200x3200") == unit_seed(0, "linear gemm 3200x3200")
    assert len({unit_seed(s, u) for s in (0, 1) for u in ("linear gemm 3200x3200", "linear batch 1 3200x3200")}) == 4
    assert 0 <= unit_seed(2**40, "x") < 2**62


def test_resume_continues_a_finished_run_and_refuses_anything_else(tmp_path):
    import json

    from lowbit.models.gpu.bench_budget import BUDGET_WHY, resume

    head = {"schema": "lowbit.gpu-baseline/2", "device": "GPU A", "torch": "2.11", "triton": "3.6", "seed": 0}
    run = {**head, "created": "T0", "copy_gbps": 4000.0, "finished": True, "results": [{"kernel": "k"}],
           "skipped": [{"what": "linear gemm 9x9", "why": BUDGET_WHY}, {"what": "bitsandbytes peers", "why": "absent"}]}
    path = tmp_path / "gpu-baseline.json"
    with pytest.raises(LowbitError, match="no .* to continue"):
        resume(path, head)
    path.write_text("{not json")
    with pytest.raises(LowbitError, match="unreadable"):
        resume(path, head)
    for change, msg in (({"finished": False}, "did not finish"), ({"device": "GPU B"}, "device 'GPU B'"),
                        ({"seed": 1}, "seed 1"), ({"skipped": run["skipped"][1:]}, "skipped nothing")):
        path.write_text(json.dumps({**run, **change}))
        with pytest.raises(LowbitError, match=msg):
            resume(path, head)
    path.write_text(json.dumps(run))
    data, pending = resume(path, {**head, "created": "T1", "copy_gbps": 3990.0})
    assert pending == {"linear gemm 9x9"} and data["results"] == [{"kernel": "k"}]
    assert data["skipped"] == [{"what": "bitsandbytes peers", "why": "absent"}]
    assert data["parts"] == [{"created": "T1", "copy_gbps": 3990.0}] and data["finished"] is False


def test_report_header_names_the_resumed_parts():
    from lowbit.models.gpu.report import render_markdown

    data = {"device": "GPU A", "seed": 0, "created": "T0", "torch": "2.11", "triton": "3.6", "copy_gbps": 4000.0,
            "results": [], "decode": [], "attention": [], "checks": [], "skipped": [],
            "parts": [{"created": "T1", "copy_gbps": 3990.0}]}
    head = render_markdown(data).splitlines()[2]
    assert "(T0; continued by `--resume` T1, copy bandwidth then 3990 GB/s); torch 2.11" in head


def test_run_all_in_two_parts_runs_every_unit_once(tmp_path, monkeypatch):
    # run_all's bookkeeping with the sections replaced by fakes that only ask the budget: a first run whose
    # budget runs out inside the GEMM section, then --resume, together run each unit exactly once
    import json

    from lowbit.models.gpu import bench, bench_attention, bench_decode

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "GPU A")
    monkeypatch.setattr(bench, "copy_bandwidth", lambda: 4000.0)
    monkeypatch.setattr(bench, "l2_bytes", lambda: 50 << 20)
    monkeypatch.setattr(bench, "render_markdown", lambda data, keep="": "report\n")
    monkeypatch.setattr(bench, "roofline_png", lambda data: b"png")
    monkeypatch.setattr(bench, "_log_tuned", lambda say: None)
    ran: list = []

    def fake_linear(shapes, batches, data, log, budget, seed, save=lambda: None, tag="batch 1"):
        for _, _, n, k in shapes:
            if budget.ok(unit := f"linear {tag} {n}x{k}"):
                for m in batches:
                    if budget.ok(f"{unit} M={m}"):
                        ran.append(f"{unit} M={m}")
                        data["results"].append({"unit": f"{unit} M={m}"})
                if tag == "gemm" and budget.only is None:
                    budget.end = 0.0  # the first run's time is up after its first GEMM shape

    def fake_units(name):
        def run(models, *a):
            budget = next(x for x in a if isinstance(x, bench.Budget))
            for mo in models:
                if budget.ok(f"{name} {mo}"):
                    ran.append(f"{name} {mo}")
        return run

    monkeypatch.setattr(bench, "run_linear", fake_linear)
    monkeypatch.setattr(bench, "run_odd_shapes", lambda data, seed: ran.append("odd shapes"))
    monkeypatch.setattr(bench_attention, "run_attention", fake_units("attention"))
    monkeypatch.setattr(bench_attention, "run_dense_attention", fake_units("dense attention"))
    monkeypatch.setattr(bench_decode, "run_decode", lambda cfgs, data, log, budget, seed: [
        ran.append(w) for c in cfgs if budget.ok(w := "decode " + " ".join(map(str, c)))])
    first = bench.run_all(tmp_path, budget_s=600, log=lambda s: None, gemm_batches=(64, 512))
    assert first["finished"] and any(s["what"].startswith("linear batch 4") for s in first["skipped"])
    n_first = len(ran)
    second = bench.run_all(tmp_path, budget_s=600, log=lambda s: None, gemm_batches=(64, 512), resumed=True)
    assert len(ran) > n_first and len(ran) == len(set(ran))  # nothing ran twice
    assert second["finished"] and second["skipped"] == [] and len(second["parts"]) == 1
    saved = json.loads((tmp_path / "gpu-baseline.json").read_text())
    units = [r["unit"] for r in saved["results"]]
    shapes = [(n, k) for mo in bench.LAYER_SHAPES if mo != "other" for _, n, k in bench.LAYER_SHAPES[mo]]
    want = {f"linear {t} {n}x{k} M={m}" for t, ms in (("gemm", (64, 512)), ("batch 4", (4,))) for n, k in shapes
            for m in ms}
    assert want <= set(units) and len(units) == len(set(units))
    assert "resumed" in (tmp_path / "gpu-baseline.log").read_text()
    with pytest.raises(LowbitError, match="skipped nothing"):
        bench.run_all(tmp_path, budget_s=600, log=lambda s: None, resumed=True)
