"""Whole-model decode step (bitnet-tiny shapes) on the Triton kernels: runs with ternary and NVFP4 weights; the
fused ternary step (norm/gating + quantizer, RoPE + KV append, residual epilogues) matches the unfused torch
sequence on the same weights and writes the same KV-cache row; with K >= context the LOP attention path gives
the dense-attention result (bf16 weights, so the INT8 requantisation of a ternary model does not amplify
the float differences)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lowbit.models.gpu.decode import DecodeModel
from lowbit.sim.modelspec import get_model


@pytest.mark.parametrize("fmt", ["nvfp4"])  # ternary: test_fused_ternary_step_matches_unfused
def test_decode_step_runs(device, fmt):
    m = DecodeModel(get_model("bitnet-tiny"), fmt, batch=2, max_ctx=24, device=device, seed=3)
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16).to(device)
    y = m.step(x, 20)
    assert y.shape == (2, 64) and torch.isfinite(y.float()).all()
    assert m.weight_bytes() > 0


@pytest.mark.parametrize("name,attn", [("bitnet-tiny", "lop"), ("tiny-swiglu", "dense"), ("tiny-hd12", "dense"),
                                       ("bitnet-tiny-1", "dense")])
def test_fused_ternary_step_matches_unfused(device, name, attn):
    spec = dataclasses.replace(get_model("bitnet-tiny"), n_layers=1)
    if name == "tiny-swiglu":  # no SubLN, SwiGLU: the quantizer fused into the Wo GEMV, SiLU gating
        spec = dataclasses.replace(spec, ffn_act="swiglu", subln=False)
    if name == "tiny-hd12":  # head_dim 12: cache rows padded to 16 for flash attention
        spec = dataclasses.replace(spec, head_dim=12, subln=False)
    b = 1 if name == "bitnet-tiny-1" else 2  # one token: RMSNorm inside the whole-row GEMV (norm_gemv)
    x = torch.randn(b, 64, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16).to(device)
    # K = all 11 tokens: a one-code change of a surrogate score must not change the selection here
    kw = dict(batch=b, max_ctx=12, attn=attn, k_sel=16, device=device)
    fused = DecodeModel(spec, "ternary", seed=4, **kw)
    plain = DecodeModel(spec, "ternary", seed=4, fused=False, **kw)
    yf, yp = fused.step(x, 10).float(), plain.step(x, 10).float()
    # float roundings may move an INT8 code by one (the interpreter's bf16 cast truncates), which random
    # ternary layers amplify: close, not equal; a model with other weights is far off
    other = DecodeModel(spec, "ternary", seed=5, **kw)
    rel = lambda a, b: (torch.linalg.norm(a - b) / torch.linalg.norm(b)).item()  # noqa: E731
    assert rel(yf, yp) < 0.12 and rel(other.step(x, 10).float(), yp) > 0.5
    assert rel(fused.k_cache[0, :, :, 10].float(), plain.k_cache[0, :, :, 10].float()) < 2e-2  # first layer's row
    assert torch.equal(fused.k_cache[:, :, :, :10], plain.k_cache[:, :, :, :10])


def test_decode_lop_full_k_equals_dense(device):
    spec = get_model("bitnet-tiny")
    x = torch.randn(1, 64, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16).to(device)
    dense = DecodeModel(spec, "bf16", batch=1, max_ctx=40, attn="dense", device=device, seed=5)
    lop = DecodeModel(spec, "bf16", batch=1, max_ctx=40, attn="lop", k_sel=64, device=device, seed=5)
    yd, yl = dense.step(x, 30).float(), lop.step(x, 30).float()
    # bf16 SDPA vs the float32 LOP path through two bf16 layers: ~1e-2 apart (seen 1.2e-2 on an H100)
    assert (torch.linalg.norm(yd - yl) / torch.linalg.norm(yd)).item() < 3e-2
    few = DecodeModel(spec, "bf16", batch=1, max_ctx=40, attn="lop", k_sel=3, device=device, seed=5)
    yf = few.step(x, 30).float()  # K = 3 of 31 tokens: must differ clearly (the check above can fail)
    assert (torch.linalg.norm(yd - yf) / torch.linalg.norm(yd)).item() > 6e-2


def test_padded_cache_attention_equals_unpadded(device):
    # head_dim 12 -> cache rows of 16 with zeros: same softmax(q.k/sqrt(12)) v as SDPA on the 12 columns
    spec = dataclasses.replace(get_model("bitnet-tiny"), head_dim=12, subln=False)
    m = DecodeModel(spec, "bf16", batch=1, max_ctx=20, device=device, seed=6)
    assert m.k_cache.shape[-1] == 16 and not m.k_cache[..., 12:].any() and not m.v_cache[..., 12:].any()
    q = torch.randn(1, spec.n_heads, 12, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16).to(device)
    kc, vc = m.k_cache[0], m.v_cache[0]
    got = m._attend(q, kc, vc, None, 15).float()
    want = torch.nn.functional.scaled_dot_product_attention(
        q.unsqueeze(2).float(), kc[:, :, :15, :12].float(), vc[:, :, :15, :12].float(),
        enable_gqa=spec.n_heads != spec.n_kv_heads).squeeze(2)
    assert got.shape == want.shape and torch.allclose(got, want, atol=2e-2, rtol=2e-2)
    m.step(torch.randn(1, 64, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16).to(device), 15)
    assert not m.k_cache[..., 12:].any() and m.k_cache[:, :, :, 15, :12].any()


@pytest.mark.parametrize("name", ["bitnet-tiny", "tiny-hd12"])
def test_ternary_rope_epilogue_step_equals_separate_launch(device, monkeypatch, name):
    # one token: RoPE + KV append in the Wqkv GEMV's epilogue gives the step output and caches of the
    # separate fused.rope_append launch bit for bit (head_dim 12: cache rows and queries padded to 16)
    import lowbit.models.gpu.decode as dec

    spec = dataclasses.replace(get_model("bitnet-tiny"), n_layers=2)
    if name == "tiny-hd12":
        spec = dataclasses.replace(spec, head_dim=12, subln=False, ffn_act="swiglu")
    x = torch.randn(1, 64, generator=torch.Generator().manual_seed(7)).to(torch.bfloat16).to(device)
    kw = dict(batch=1, max_ctx=12, device=device, seed=4)
    sep = DecodeModel(spec, "ternary", **kw)
    sep.rope_epilogue = False
    y_sep = sep.step(x, 10)
    epi = DecodeModel(spec, "ternary", **kw)
    before = epi.k_cache.clone()
    monkeypatch.setattr(dec, "rope_append", None)  # the epilogue path must not launch it
    y_epi = epi.step(x, 10)
    assert torch.equal(y_epi, y_sep)
    assert torch.equal(epi.k_cache, sep.k_cache) and torch.equal(epi.v_cache, sep.v_cache)
    assert not torch.equal(epi.k_cache[:, :, :, 10], before[:, :, :, 10])
    assert torch.equal(epi.k_cache[:, :, :, :10], before[:, :, :, :10])


@pytest.mark.parametrize("mode,calls", [("auto", {"split": 1}), ("auto-long", {}), ("split", {"split": 1}),
                                        ("dense", {"dense": 1}), ("sdpa", {})])
def test_attention_mode_switch(device, monkeypatch, mode, calls):
    # LOWBIT_GPU_ATTN (decode.ATTN_MODE) picks the dense decode attention of a low-bit model; same result.
    # "auto" takes the split kernel up to SPLIT_MAX_CTX tokens, SDPA past it ("auto-long": a limit of 14)
    from lowbit.models.gpu import decode, decode_attn

    if mode == "auto-long":
        monkeypatch.setattr(decode_attn, "SPLIT_MAX_CTX", 14)
        mode = "auto"

    seen: dict = {}
    for name in ("dense", "split"):
        fn = getattr(decode, f"{name}_decode_attention")
        monkeypatch.setattr(decode, f"{name}_decode_attention",
                            lambda *a, _f=fn, _n=name, **k: seen.__setitem__(_n, seen.get(_n, 0) + 1) or _f(*a, **k))
    monkeypatch.setattr(decode, "ATTN_MODE", mode)
    spec = dataclasses.replace(get_model("bitnet-tiny"), head_dim=12, subln=False)
    assert spec.n_heads // spec.n_kv_heads >= 2  # GQA
    m = DecodeModel(spec, "ternary", batch=1, max_ctx=20, device=device, seed=6)
    q = torch.randn(1, spec.n_heads, 12, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16).to(device)
    kc = torch.randn(m.k_cache[0].shape, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16).to(device)
    kc[..., 12:] = 0
    vc = torch.randn(kc.shape, generator=torch.Generator().manual_seed(5)).to(torch.bfloat16).to(device)
    vc[..., 12:] = 0
    got = m._attend(q, kc, vc, None, 15).float()
    want = torch.nn.functional.scaled_dot_product_attention(
        q.unsqueeze(2).float(), kc[:, :, :15, :12].float(), vc[:, :, :15, :12].float(),
        enable_gqa=spec.n_heads != spec.n_kv_heads).squeeze(2)
    assert seen == calls
    assert got.shape == want.shape and torch.allclose(got, want, atol=2e-2, rtol=2e-2)
    monkeypatch.setattr(decode, "ATTN_MODE", "flash")
    with pytest.raises(ValueError, match="LOWBIT_GPU_ATTN"):
        m._attend(q, kc, vc, None, 15)
