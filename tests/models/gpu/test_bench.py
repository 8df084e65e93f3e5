"""bench-gpu's flag parsing and its LOP exactness check (the benchmark itself needs a CUDA GPU)."""

from __future__ import annotations

import pytest
import torch

from lowbit.models.gpu.bench import parse_gemm_batches
from lowbit.models.gpu.bench_attention import _exact_check
from lowbit.models.gpu.lop_attn import lo_pack_keys_torch, lop_attention
from lowbit.sim.errors import LowbitError


def test_parse_gemm_batches():
    assert parse_gemm_batches("64,512") == (64, 512)
    assert parse_gemm_batches(" 16 ,64,") == (16, 64)
    for bad in ("8,64", "", "64,x", ","):
        with pytest.raises(LowbitError, match="--gemm-batches"):
            parse_gemm_batches(bad)


def test_lop_exact_check_passes_and_catches_a_wrong_key(device):
    # GQA 6/2, 70 tokens, K = 9: the check recomputes sim.numerics.lop's group scores and top-K
    g = torch.Generator().manual_seed(4)
    h, kvh, d, m = 6, 2, 24, 70
    q = torch.randn(1, h, d, generator=g).to(torch.bfloat16).to(device)
    kc = torch.randn(1, kvh, m, d, generator=g).to(torch.bfloat16).to(device)
    k_i8 = torch.randint(-127, 128, (1, kvh, m, d), dtype=torch.int8, generator=g).to(device)
    lo = lo_pack_keys_torch(k_i8)
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
