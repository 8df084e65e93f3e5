"""Whole-row single-token FP4 GEMV (fp16 pair words, persistent grid): against a float64 reference built from
the sim's dequantizers, with the RMSNorm / GLU (+ SubLN) prologues and the residual epilogue against the torch
ops they replace, main + tail tiles, every E2M1 code and extreme MX block scales; the fused FP4 decode step
against the unfused torch step on the same weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lowbit.models.gpu.decode import DecodeModel
from lowbit.models.gpu.fp4 import pack_fp4_gpu
from lowbit.models.gpu.fp4row import TILE8_MIN_KWP, fp4_gate_gemv, fp4_gemv_row, fp4_norm_gemv
from lowbit.models.gpu.rowgemv import row_tiles
from lowbit.sim.modelspec import get_model
from lowbit.sim.numerics.mx import mxfp4_dequantize, mxfp4_quantize, nvfp4_dequantize, nvfp4_quantize

FMTS = {"nvfp4": (nvfp4_quantize, nvfp4_dequantize), "mxfp4": (mxfp4_quantize, mxfp4_dequantize)}


def _weight(fmt, n, k, seed, device):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32) * rng.uniform(0.01, 3, (n, 1)).astype(np.float32)
    quant, deq = FMTS[fmt]
    t = quant(w)
    return pack_fp4_gpu(t, device), deq(t).astype(np.float64)


def _check(y, xd, wd, resid=None):
    # fp16 products and word sums on the GPU: within 2^-8 of sum |x w| besides the bf16 output rounding
    ref = xd @ wd.T + (0 if resid is None else resid)
    slack = 2.0**-7 * np.abs(ref) + 2.0**-8 * (np.abs(xd) @ np.abs(wd).T) + 1e-30
    assert np.all(np.abs(y - ref) <= slack), np.max(np.abs(y - ref) - slack)
    return ref


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
@pytest.mark.parametrize("n,k,cfg", [(37, 200, {"BLOCK_N": 2, "PER_SM": 1}), (19, 260, {"BLOCK_N": 4, "PER_SM": 2}),
                                     (5, 48, {"BLOCK_N": 8, "PER_SM": 1}), (6, 8640, {"BLOCK_N": 4, "PER_SM": 1})])
def test_row_gemv_vs_float64(device, fmt, n, k, cfg):
    wg, wd = _weight(fmt, n, k, n + k, device)
    x = (torch.randn(1, k, generator=torch.Generator().manual_seed(k)) * 7).to(torch.bfloat16)
    y = fp4_gemv_row(x.to(device), wg, config=dict(cfg))
    ref = _check(y.double().cpu().numpy(), x.double().numpy(), wd)
    # another weight is far off: the check can fail
    w2, _ = _weight(fmt, n, k, n + k + 1, device)
    y2 = fp4_gemv_row(x.to(device), w2, config=dict(cfg)).double().cpu().numpy()
    assert np.linalg.norm(y2 - ref) > 0.5 * np.linalg.norm(ref)
    if k == 260:  # 34 NVFP4 / 36 MXFP4 words: the NVFP4 row is a main tile plus a tail tile
        assert row_tiles(wg.words.shape[1])[1] == (2 if fmt == "nvfp4" else 0)
    if k == 8640:  # 1080 words: a long row, read as [words, 8] tiles, main tile plus tail tile
        assert row_tiles(wg.words.shape[1]) == (1024, 64) and 1024 >= TILE8_MIN_KWP


def test_row_gemv_all_codes_and_scale_extremes(device):
    # every E2M1 code in every row, MX blocks scaled 2^-20 .. 2^20, activations far from 1 (row scale r)
    n, k = 8, 64
    codes = np.tile(np.arange(16, dtype=np.uint8), (n, k // 16))
    w = np.where(codes >= 8, -1.0, 1.0) * np.array([0, .5, 1, 1.5, 2, 3, 4, 6] * 2)[codes]
    w = w * (2.0 ** np.repeat(np.array([-20, 0, 7, 20]), 16))[None, :] * np.linspace(0.5, 2, n)[:, None]
    for scale in (1e-3, 1.0, 3e4):
        x = (torch.randn(1, k, generator=torch.Generator().manual_seed(3)) * scale).to(torch.bfloat16)
        for quant, deq in FMTS.values():
            t = quant(w.astype(np.float32))
            y = fp4_gemv_row(x.to(device), pack_fp4_gpu(t, device), config={"BLOCK_N": 4, "PER_SM": 1})
            _check(y.double().cpu().numpy(), x.double().numpy(), deq(t).astype(np.float64))


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
@pytest.mark.parametrize("n,k", [(21, 264), (3, 8640)])  # NVFP4: 34 words, MXFP4: 36 (Kp 288); a long row
def test_norm_prologue_and_residual(device, fmt, n, k):
    wg, wd = _weight(fmt, n, k, 11, device)
    gen = torch.Generator().manual_seed(5)
    x = (torch.randn(1, k, generator=gen) * 3).to(torch.bfloat16)
    g = (1 + 0.2 * torch.randn(k, generator=gen)).to(torch.bfloat16)
    res = torch.randn(1, n, generator=gen).to(torch.bfloat16)
    y = fp4_norm_gemv(x.to(device), g.to(device), 1e-6, wg, residual=res.to(device))
    xn = F.rms_norm(x.float(), (k,), g.float(), 1e-6).to(torch.bfloat16)
    _check(y.double().cpu().numpy(), xn.double().numpy(), wd, res.double().numpy())


@pytest.mark.parametrize("act,subln,k", [("swiglu", False, 200), ("relu2", True, 200), ("relu2", True, 6912),
                                         ("swiglu", True, 8640)])
def test_glu_prologue(device, act, subln, k):
    n = 13 if k < 1000 else 3  # 6912 and 8640: long rows (864 words in one tile; 1080 in a main and a tail tile)
    wg, wd = _weight("nvfp4", n, k, 17, device)
    gen = torch.Generator().manual_seed(9)
    h = (torch.randn(1, 2 * k, generator=gen) * 2).to(torch.bfloat16)
    g = (1 + 0.2 * torch.randn(k, generator=gen)).to(torch.bfloat16) if subln else None
    y = fp4_gate_gemv(h.to(device), act, None if g is None else g.to(device), 1e-6, wg)
    a, u = h[:, :k].float(), h[:, k:].float()
    a = (F.silu(a) if act == "swiglu" else torch.relu(a).square()).to(torch.bfloat16)
    xg = (a.float() * u).to(torch.bfloat16)
    if subln:
        xg = F.rms_norm(xg.float(), (k,), g.float(), 1e-6).to(torch.bfloat16)
    _check(y.double().cpu().numpy(), xg.double().numpy(), wd)


def test_row_gemv_rejects_bad_shapes(device):
    wg, _ = _weight("nvfp4", 4, 32, 1, device)
    with pytest.raises(ValueError):
        fp4_gemv_row(torch.ones(2, 32, dtype=torch.bfloat16, device=device), wg)
    with pytest.raises(ValueError):
        fp4_gemv_row(torch.ones(1, 32, dtype=torch.bfloat16, device=device), wg, gate="gelu")


def test_fused_fp4_step_matches_unfused(device):
    spec = dataclasses.replace(get_model("bitnet-tiny"), n_layers=1)
    x = torch.randn(1, 64, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16).to(device)
    kw = dict(batch=1, max_ctx=12, device=device)
    fused = DecodeModel(spec, "nvfp4", seed=4, **kw)
    plain = DecodeModel(spec, "nvfp4", seed=4, fused=False, **kw)
    yf, yp = fused.step(x, 10).float(), plain.step(x, 10).float()
    rel = lambda a, b: (torch.linalg.norm(a - b) / torch.linalg.norm(b)).item()  # noqa: E731
    other = DecodeModel(spec, "nvfp4", seed=5, **kw)
    assert rel(yf, yp) < 2e-2 and rel(other.step(x, 10).float(), yp) > 0.5
    assert rel(fused.k_cache[0, :, :, 10].float(), plain.k_cache[0, :, :, 10].float()) < 2e-2


def test_fp4_wo_over_padded_heads(device):
    # head_dim 12 in 16-wide cache rows: the FP4 Wo has zero codes on each head's 4 pad columns
    spec = dataclasses.replace(get_model("bitnet-tiny"), n_layers=1, head_dim=12, subln=False, ffn_act="swiglu")
    m = DecodeModel(spec, "nvfp4", batch=1, max_ctx=12, device=device, seed=4)
    wo = m.layers[0].wo
    nib = (wo.words.to(torch.int64)[..., None] >> (4 * torch.arange(8, device=wo.words.device))) & 15
    nib = nib.view(wo.n, spec.n_heads, 16)
    assert wo.k == spec.n_heads * 16 and not nib[..., 12:].any() and nib[..., :12].any()
    y = m.step(torch.randn(1, 64, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16).to(device), 10)
    assert torch.isfinite(y.float()).all()


@pytest.mark.parametrize("hd,dc", [(12, 16), (16, 16)])
def test_rope_epilogue_matches_rope_append(device, hd, dc):
    # the Wqkv GEMV's RoPE + KV-append epilogue against its output through fused.rope_append
    from lowbit.models.gpu.fp4row import Rope
    from lowbit.models.gpu.fused import rope_append

    H, KVH, mmax, pos = 4, 2, 9, 7
    n, k = (H + 2 * KVH) * hd, 80
    wg, _ = _weight("nvfp4", n, k, 23, device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, k, generator=gen).to(torch.bfloat16).to(device)
    g = (1 + 0.2 * torch.randn(k, generator=gen)).to(torch.bfloat16).to(device)
    ang = 3.0 * torch.linspace(0.1, 1, hd // 2)
    cos, sin = torch.cos(ang).to(device), torch.sin(ang).to(device)
    caches = [F.pad(torch.randn(1, KVH, mmax, hd, generator=gen), (0, dc - hd)).to(torch.bfloat16).to(device)
              for _ in range(2)]
    caches += [c.clone() for c in caches]
    before = caches[0].clone()
    q_ref = rope_append(fp4_norm_gemv(x, g, 1e-6, wg), cos, sin, H, KVH, caches[0], caches[1], pos, head_dim=hd)
    q = fp4_norm_gemv(x, g, 1e-6, wg, rope=Rope(cos, sin, caches[2], caches[3],
                                                torch.zeros(1, H, dc, dtype=torch.bfloat16, device=device),
                                                H, KVH, hd, pos))
    assert torch.equal(q, q_ref)
    assert torch.equal(caches[2], caches[0]) and torch.equal(caches[3], caches[1])
    assert not torch.equal(caches[0][:, :, pos], before[:, :, pos]) and torch.equal(caches[0][:, :, :pos], before[:, :, :pos])
    with pytest.raises(ValueError, match="one token"):  # never the unrotated output for two tokens
        fp4_norm_gemv(x.expand(2, k), g, 1e-6, wg, rope=Rope(cos, sin, caches[2], caches[3], q, H, KVH, hd, pos))
