"""Fused decode-step kernels vs the unfused sequence: the bf16 intermediate (normalized / gated / rotated
rows) within one bf16 ulp of a float64 reference, and the integer outputs (INT8 codes, their sum, LO codes)
bit-exact with ``sim.numerics`` applied to that intermediate; the scale exactly the sim's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowbit.models.gpu.fused import gate_quant, rmsnorm_quant, rope_append
from lowbit.models.gpu.lop_attn import lo_pack_keys_torch
from lowbit.sim.numerics.int8 import int8_absmax_quantize

ULP = 2.0**-7  # bf16 relative spacing (the interpreter's bf16 cast truncates: at most one ulp)


def _bf16(rng, *shape, scale=1.0):
    return torch.from_numpy((rng.standard_normal(shape) * scale).astype(np.float32)).to(torch.bfloat16)


def _close(got, ref):
    got, ref = got.double().cpu().numpy(), np.asarray(ref, np.float64)
    assert np.all(np.abs(got - ref) <= ULP * np.abs(ref) + 1e-30), np.max(np.abs(got - ref))


def _check_quant(a, xo):
    x = xo.float().cpu().numpy()
    q, s = int8_absmax_quantize(x)
    k = x.shape[1]
    assert np.array_equal(a.q[:, :k].cpu().numpy(), q) and np.all(a.q[:, k:].cpu().numpy() == 0)
    assert np.array_equal(a.qsum.cpu().numpy(), q.astype(np.int64).sum(1))
    assert np.array_equal(a.s.cpu().numpy(), s[:, 0].astype(np.float32))


@pytest.mark.parametrize("m,k,norm", [(1, 100, True), (3, 70, True), (2, 33, False)])
def test_rmsnorm_quant(device, m, k, norm):
    rng = np.random.default_rng(k)
    x = _bf16(rng, m, k, scale=3.0)
    g = _bf16(rng, k) if norm else None
    a, xo = rmsnorm_quant(x.to(device), g.to(device) if norm else None, eps=1e-6, write_x=True)
    xd = x.double().numpy()
    ref = xd / np.sqrt((xd**2).mean(1, keepdims=True) + 1e-6) * g.double().numpy() if norm else xd
    _close(xo, ref)
    _check_quant(a, xo)
    assert torch.equal(rmsnorm_quant(x.to(device), g.to(device) if norm else None, eps=1e-6).q, a.q)


@pytest.mark.parametrize("act,norm", [("swiglu", True), ("relu2", True), ("swiglu", False)])
def test_gate_quant(device, act, norm):
    rng = np.random.default_rng(5)
    m, f = 2, 72
    h = _bf16(rng, m, 2 * f, scale=2.0)
    g = _bf16(rng, f) if norm else None
    a, xo = gate_quant(h.to(device), act, g.to(device) if norm else None, eps=1e-5, write_x=True)
    gt, up = h[:, :f].double().numpy(), h[:, f:].double().numpy()
    hv = (gt / (1 + np.exp(-gt)) if act == "swiglu" else np.maximum(gt, 0) ** 2) * up
    ref = hv / np.sqrt((hv**2).mean(1, keepdims=True) + 1e-5) * g.double().numpy() if norm else hv
    # two bf16 roundings before the norm: two ulps
    got = xo.double().cpu().numpy()
    assert np.all(np.abs(got - ref) <= 3 * ULP * np.abs(ref) + 1e-6)
    _check_quant(a, xo)
    with pytest.raises(ValueError):
        gate_quant(h.to(device), "gelu")


@pytest.mark.parametrize("lop", [False, True])
def test_rope_append(device, lop):
    rng = np.random.default_rng(9)
    b, hh, kvh, d, mmax, pos = 2, 4, 2, 20, 12, 7
    qkv = _bf16(rng, b, (hh + 2 * kvh) * d)
    inv = 1.0 / (10000.0 ** (np.arange(0, d, 2) / d))
    cos, sin = (torch.from_numpy(f(pos * inv).astype(np.float32)) for f in (np.cos, np.sin))
    kc = torch.zeros(b, kvh, mmax, d, dtype=torch.bfloat16)
    vc = torch.zeros_like(kc)
    lo = torch.zeros(b, kvh, 3, mmax, dtype=torch.int32, device=device) if lop else None  # word-major
    kc, vc = kc.to(device), vc.to(device)
    q = rope_append(qkv.to(device), cos.to(device), sin.to(device), hh, kvh, kc, vc, pos, lo)
    x = qkv.double().numpy().reshape(b, hh + 2 * kvh, d // 2, 2)
    c, s = np.cos(pos * inv), np.sin(pos * inv)
    rot = np.stack([x[..., 0] * c - x[..., 1] * s, x[..., 0] * s + x[..., 1] * c], -1).reshape(b, hh + 2 * kvh, d)
    _close(q, rot[:, :hh])
    _close(kc[:, :, pos], rot[:, hh:hh + kvh])
    assert torch.equal(vc[:, :, pos].cpu(), qkv.view(b, hh + 2 * kvh, d)[:, hh + kvh:])
    others = [i for i in range(mmax) if i != pos]
    assert not kc[:, :, others].any() and not vc[:, :, others].any()
    if lop:  # INT8 key of the appended row -> its packed LO codes; other rows untouched
        ki8, _ = int8_absmax_quantize(kc[:, :, pos].float().cpu().numpy())
        assert torch.equal(lo[:, :, :, pos].cpu(), lo_pack_keys_torch(torch.from_numpy(ki8)))
        assert not lo[:, :, :, others].any()
