"""Whole-row single-token ternary GEMV (persistent grid, several row blocks per program): INT32 accumulators
bit-exact with ``sim.numerics`` (quantizer fused and pre-quantized), bf16 outputs and the residual epilogue
equal to the tiled kernel's, RMSNorm and GLU (+ SubLN) prologues against the unfused kernels, badly
padded rows as a main tile plus a tail tile, and the RoPE + KV-append epilogue against ``fused.rope_append``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import triton

from lowbit.models.gpu.fused import gate_quant, rmsnorm_quant, rope_append
from lowbit.models.gpu.rowgemv import (
    Rope,
    gate_gemv,
    norm_gemv,
    row_kernel_fits,
    row_tiles,
    ternary_gemv_row,
)
from lowbit.models.gpu.ternary import act_quant, pack_ternary_gpu, ternary_gemv
from lowbit.sim.numerics.int8 import int8_absmax_quantize, int_matmul_exact
from lowbit.sim.numerics.ternary import ternary_quantize


def test_row_kernel_fits_rule():
    # words per row vs the power-of-two tile: K = 3200 (200 of 256) fits, K = 8640 (540 of 1024) does not
    assert [row_kernel_fits(kw) for kw in (1, 7, 33, 36, 160, 200, 432, 540, 640, 896)] == [
        True, True, False, True, True, True, True, False, True, True]


@pytest.mark.parametrize("n,k,cfg", [(37, 100, {"BLOCK_N": 2, "PER_SM": 1}), (19, 1000, {"BLOCK_N": 4, "PER_SM": 2}),
                                     (5, 48, {"BLOCK_N": 8, "PER_SM": 1}),
                                     (23, 300, {"BLOCK_N": 2, "PER_SM": 1, "PIPE": 1, "num_stages": 3})])
def test_row_gemv_bit_exact(device, n, k, cfg):
    rng = np.random.default_rng(n + k)
    x = (rng.standard_normal((1, k)) * rng.uniform(0.1, 30)).astype(np.float32)
    codes, scale = ternary_quantize(rng.standard_normal((n, k)))
    w = pack_ternary_gpu(codes, scale, device)
    xt = torch.from_numpy(x).to(device)
    q, _ = int8_absmax_quantize(x)
    ref = int_matmul_exact(q, codes)
    for a in (xt, act_quant(xt)):  # quantizer fused / pre-quantized
        assert np.array_equal(ternary_gemv_row(a, w, out_acc=True, config=dict(cfg)).cpu().numpy(), ref)
    # bf16 output and residual epilogue: the same values as the tiled kernel (same integers, same formula)
    r = torch.randn(1, n, generator=torch.Generator().manual_seed(n)).to(torch.bfloat16).to(device)
    assert torch.equal(ternary_gemv_row(xt, w, config=dict(cfg)), ternary_gemv(xt, w, block_m=1))
    assert torch.equal(ternary_gemv_row(xt, w, config=dict(cfg), residual=r), ternary_gemv(xt, w, block_m=1, residual=r))


def test_row_gemv_worst_case_carries(device):
    # all +1 / all -1 weights against +-127 activations: each word's chained dp4a at its extreme
    k = 160
    x = np.full((1, k), 3.0, np.float32)
    x[0, 1::2] = -3.0
    for rows in (x, np.abs(x)):
        q, _ = int8_absmax_quantize(rows)
        for wv in (1, -1):
            codes = np.full((6, k), wv, np.int8)
            w = pack_ternary_gpu(codes, 1.0, device)
            got = ternary_gemv_row(torch.from_numpy(rows).to(device), w, out_acc=True, config={"BLOCK_N": 4, "PER_SM": 1})
            assert np.array_equal(got.cpu().numpy(), int_matmul_exact(q, codes))


def test_row_gemv_with_rmsnorm(device):
    # RMSNorm in the prologue: the INT8 codes of rmsnorm_quant's bf16 output, the same accumulators
    rng = np.random.default_rng(21)
    n, k = 29, 200
    x = torch.from_numpy((rng.standard_normal((1, k)) * 4).astype(np.float32)).to(torch.bfloat16).to(device)
    g = torch.from_numpy(1 + 0.2 * rng.standard_normal(k).astype(np.float32)).to(torch.bfloat16).to(device)
    codes, scale = ternary_quantize(rng.standard_normal((n, k)))
    w = pack_ternary_gpu(codes, scale, device)
    a, xn = rmsnorm_quant(x, g, 1e-6, write_x=True)
    q, _ = int8_absmax_quantize(xn.float().cpu().numpy())
    assert np.array_equal(a.q[:, :k].cpu().numpy(), q)
    ref = int_matmul_exact(q, codes)
    got = ternary_gemv_row(x, w, out_acc=True, norm=g, norm_eps=1e-6, config={"BLOCK_N": 4, "PER_SM": 1})
    assert np.array_equal(got.cpu().numpy(), ref)
    r = torch.randn(1, n, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16).to(device)
    assert torch.equal(norm_gemv(x, g, 1e-6, w, residual=r), ternary_gemv(a, w, residual=r))
    with pytest.raises(ValueError):
        ternary_gemv_row(a, w, norm=g)


def _bf16_values() -> np.ndarray:
    # every finite bf16 value, as float32
    v = (np.arange(2**16, dtype=np.uint32) << 16).view(np.float32)
    return v[np.isfinite(v)]


@pytest.mark.parametrize("mx", [127.0, 3.140625, 0.0390625, 100.5, 1e-6])
def test_fused_quantizer_at_rounding_ties(device, mx):
    # a row whose products x*s lie on (s = 1 at max 127: x = k + 1/2) or next to a half-integer: the fused
    # quantizers must still give the codes of int8_absmax_quantize (round half to even in float64)
    vals = _bf16_values()
    cand = vals[np.abs(vals) <= np.float32(mx)]
    s = 127.0 * (1.0 / max(float(np.float32(mx)), 1e-5))
    v = cand.astype(np.float64) * s
    dist = np.abs(v - (np.floor(v) + 0.5))
    order = np.argsort(dist, kind="stable")
    row = np.concatenate([[np.float32(mx)], cand[order[:199]]]).astype(np.float32)[None, :]
    if mx >= 1e-5:
        assert dist[order[0]] < 2.0**-26  # products within 2^-26 of a tie are in the row
    xt = torch.from_numpy(row).to(torch.bfloat16).to(device)
    q, _ = int8_absmax_quantize(xt.float().cpu().numpy())
    assert np.array_equal(rmsnorm_quant(xt, None).q[:, :200].cpu().numpy(), q)
    codes, scale = ternary_quantize(np.random.default_rng(5).standard_normal((9, 200)))
    w = pack_ternary_gpu(codes, scale, device)
    got = ternary_gemv_row(xt, w, out_acc=True, config={"BLOCK_N": 4, "PER_SM": 1})
    assert np.array_equal(got.cpu().numpy(), int_matmul_exact(q, codes))


def test_fused_quantizer_random_bf16_rows(device):
    # bf16 rows (ties at |x| = max/2 are common there): the fused codes equal the reference on many rows
    rng = np.random.default_rng(8)
    x = rng.standard_normal((24, 1000)) * rng.uniform(1e-3, 1e3, (24, 1))
    xt = torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16).to(device)
    q, _ = int8_absmax_quantize(xt.float().cpu().numpy())
    assert np.array_equal(rmsnorm_quant(xt, None).q[:, :1000].cpu().numpy(), q)
    codes, scale = ternary_quantize(rng.standard_normal((7, 1000)))
    w = pack_ternary_gpu(codes, scale, device)
    for i in (0, 5, 23):
        got = ternary_gemv_row(xt[i:i + 1], w, out_acc=True, config={"BLOCK_N": 4, "PER_SM": 1})
        assert np.array_equal(got.cpu().numpy(), int_matmul_exact(q[i:i + 1], codes))


@pytest.mark.parametrize("act,subln", [("relu2", True), ("swiglu", False)])
def test_row_gemv_with_glu(device, act, subln):
    # GLU [+ SubLN] in the prologue: the INT8 codes of gate_quant's bf16 output, the same accumulators
    rng = np.random.default_rng(22)
    n, f = 31, 184
    h = torch.from_numpy((rng.standard_normal((1, 2 * f)) * 3).astype(np.float32)).to(torch.bfloat16).to(device)
    g = torch.from_numpy(1 + 0.2 * rng.standard_normal(f).astype(np.float32)).to(torch.bfloat16).to(device)
    g = g if subln else None
    codes, scale = ternary_quantize(rng.standard_normal((n, f)))
    w = pack_ternary_gpu(codes, scale, device)
    a, hn = gate_quant(h, act, g, 1e-6, write_x=True)
    q, _ = int8_absmax_quantize(hn.float().cpu().numpy())
    assert np.array_equal(a.q[:, :f].cpu().numpy(), q)
    got = ternary_gemv_row(h, w, out_acc=True, norm=g, norm_eps=1e-6, gate=act, config={"BLOCK_N": 4, "PER_SM": 1})
    assert np.array_equal(got.cpu().numpy(), int_matmul_exact(q, codes))
    r = torch.randn(1, n, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16).to(device)
    assert torch.equal(gate_gemv(h, act, g, 1e-6, w, residual=r), ternary_gemv(a, w, residual=r))
    other = "swiglu" if act == "relu2" else "relu2"  # the other activation gives other codes
    assert not np.array_equal(ternary_gemv_row(h, w, out_acc=True, norm=g, norm_eps=1e-6, gate=other,
                                               config={"BLOCK_N": 4, "PER_SM": 1}).cpu().numpy(), got.cpu().numpy())
    with pytest.raises(ValueError, match="gate"):
        ternary_gemv_row(h[:, :f], w, gate=act)


@pytest.mark.parametrize("n,k,act", [(13, 560, None), (11, 8640, "swiglu"), (9, 1060, "relu2")])
def test_row_gemv_main_and_tail_tiles(device, n, k, act):
    # rows the power-of-two tile pads by > 45 % run as a main tile plus a tail tile: the same accumulators
    kw = -(-k // 16)
    kwp, kwt = row_tiles(kw)
    assert not row_kernel_fits(kw) and kwp < kw <= kwp + kwt < triton.next_power_of_2(kw)
    rng = np.random.default_rng(k)
    x = (rng.standard_normal((1, 2 * k if act else k)) * 2).astype(np.float32)
    xt = torch.from_numpy(x).to(torch.bfloat16).to(device)
    codes, scale = ternary_quantize(rng.standard_normal((n, k)))
    w = pack_ternary_gpu(codes, scale, device)
    a = gate_quant(xt, act) if act else act_quant(xt)
    ref = int_matmul_exact(a.q[:, :k].cpu().numpy().astype(np.int8), codes)
    assert np.array_equal(ternary_gemv(a, w, out_acc=True).cpu().numpy(), ref)  # the tiled kernel agrees
    cfg = {"BLOCK_N": 4, "PER_SM": 1}
    for inp, gate in ((xt, act), (a, None)):  # quantizer (and GLU) fused / pre-quantized
        assert np.array_equal(ternary_gemv_row(inp, w, out_acc=True, config=dict(cfg), gate=gate).cpu().numpy(), ref)
    assert torch.equal(ternary_gemv_row(a, w, config=dict(cfg)), ternary_gemv(a, w))


@pytest.mark.parametrize("hd,dc,k,cfg", [(10, 16, 100, None), (8, 8, 100, {"BLOCK_N": 8, "PER_SM": 2}),
                                         (10, 16, 560, {"BLOCK_N": 2, "PER_SM": 1, "PIPE": 1, "num_stages": 3})])
def test_rope_epilogue_matches_rope_append(device, hd, dc, k, cfg):
    # the Wqkv GEMV's RoPE + KV-append epilogue against its bf16 output through fused.rope_append: the same
    # queries and cache rows bit for bit, no other cache row written (row blocks that span heads, a partial
    # last block, several blocks per program, a main + tail tile with K = 560)
    H, KVH, mmax, pos = 3, 1, 7, 5
    n = (H + 2 * KVH) * hd
    rng = np.random.default_rng(hd + k)
    codes, scale = ternary_quantize(rng.standard_normal((n, k)))
    w = pack_ternary_gpu(codes, scale, device)
    gen = torch.Generator().manual_seed(hd)
    x = (2 * torch.randn(1, k, generator=gen)).to(torch.bfloat16).to(device)
    g = (1 + 0.2 * torch.randn(k, generator=gen)).to(torch.bfloat16).to(device)
    ang = 3.0 * torch.linspace(0.1, 1, hd // 2)
    cos, sin = torch.cos(ang).to(device), torch.sin(ang).to(device)
    before = [torch.nn.functional.pad(torch.randn(1, KVH, mmax, hd, generator=gen), (0, dc - hd)).to(torch.bfloat16)
              .to(device) for _ in range(2)]
    kc, vc = (c.clone() for c in before)
    q_ref = rope_append(norm_gemv(x, g, 1e-6, w), cos, sin, H, KVH, kc, vc, pos, head_dim=hd)

    def epilogue(p, c=cfg):
        caches = [t.clone() for t in before]
        qb = torch.zeros(1, H, dc, dtype=torch.bfloat16, device=device)
        rope = Rope(cos, sin, caches[0], caches[1], qb, H, KVH, hd, p)
        q = ternary_gemv_row(x, w, norm=g, norm_eps=1e-6, rope=rope, config=dict(c) if c else None)
        assert q is qb
        return q, caches

    q, (kq, vq) = epilogue(pos)
    assert torch.equal(q, q_ref) and torch.equal(kq, kc) and torch.equal(vq, vc)
    others = torch.arange(mmax) != pos
    assert torch.equal(kq[:, :, others], before[0][:, :, others]) and torch.equal(vq[:, :, others], before[1][:, :, others])
    assert not torch.equal(kq[:, :, pos], before[0][:, :, pos]) and not torch.equal(vq[:, :, pos], before[1][:, :, pos])
    _, (kw_, vw_) = epilogue(pos + 1)  # another row written: the check above can fail
    assert not torch.equal(kw_, kc) and not torch.equal(vw_, vc)
    if cfg is None:  # norm_gemv passes it through; the rules
        assert torch.equal(norm_gemv(x, g, 1e-6, w, rope=Rope(cos, sin, kq, vq, torch.zeros_like(q), H, KVH, hd, pos)),
                           q_ref)
        rope = Rope(cos, sin, kq, vq, torch.zeros_like(q), H, KVH, hd, pos)
        with pytest.raises(ValueError, match="even BLOCK_N"):
            ternary_gemv_row(x, w, rope=rope, config={"BLOCK_N": 3, "PER_SM": 1})
        with pytest.raises(ValueError, match="residual"):
            ternary_gemv_row(x, w, rope=rope, residual=torch.zeros(1, n, dtype=torch.bfloat16, device=device))
        with pytest.raises(ValueError, match="one token"):
            norm_gemv(x.expand(2, k).contiguous(), g, 1e-6, w, rope=rope)
        with pytest.raises(ValueError, match="RoPE epilogue"):
            ternary_gemv_row(x, w, rope=Rope(cos, sin, kq, vq, torch.zeros_like(q), H, KVH + 1, hd, pos))
