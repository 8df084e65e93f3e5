"""Ternary W1.58A8 kernels vs the sim golden model: INT8 codes and INT32 accumulators bit-exact (int64
reference), bf16 outputs within one bf16 ulp (rel 2^-7: the interpreter's f32->bf16 cast truncates)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowbit.models.gpu.ternary import act_quant, pack_ternary_gpu, pack_ternary_gpu_torch, ternary_gemv
from lowbit.models.gpu.ternary_gemm import auto_split_k, ternary_gemm, ternary_gemm_unpacked, ternary_linear
from lowbit.sim.numerics.int8 import dequantize_accumulator, int8_absmax_quantize, int_matmul_exact
from lowbit.sim.numerics.ternary import ternary_quantize

BF16_REL = 2.0**-7


def _rand_x(rng, m, k):
    # random magnitudes per token (never zeros)
    return (rng.standard_normal((m, k)) * rng.uniform(0.05, 20, (m, 1))).astype(np.float32)


def test_act_quant_bit_exact_with_ties(device):
    rng = np.random.default_rng(11)
    x = _rand_x(rng, 4, 100)
    x[0, :6] = [127.0, 0.5, 1.5, 2.5, -2.5, -0.5]  # amax 127 -> s = 1: exact RNE ties
    x[0, 6:] = rng.uniform(-100, 100, 94)
    a = act_quant(torch.from_numpy(x).to(device))
    q, s = int8_absmax_quantize(x)
    assert np.array_equal(a.q[:, :100].cpu().numpy(), q)
    assert np.all(a.q[:, 100:].cpu().numpy() == 0)
    assert list(a.q[0, 1:5].cpu().numpy()) == [0, 2, 2, -2]
    assert np.array_equal(a.qsum.cpu().numpy(), q.astype(np.int64).sum(1))
    assert np.array_equal(a.s.cpu().numpy(), s[:, 0].astype(np.float32))


def test_pack_matches_sim_layout(device):
    rng = np.random.default_rng(12)
    codes = rng.integers(-1, 2, (9, 70)).astype(np.int8)
    w = pack_ternary_gpu(codes, 0.3)
    wt = pack_ternary_gpu_torch(torch.from_numpy(codes), 0.3)
    assert torch.equal(w.words, wt.words)
    assert w.kp == 80 and w.words.shape == (9, 5)
    words = w.words.numpy().astype(np.int64) & 0xFFFFFFFF
    # element 16j + 4t + b at bits 8b + 2t (module docstring), padding decodes to zero weights
    e = np.arange(16)
    dec = ((words[:, :, None] >> (8 * (e % 4) + 2 * (e // 4))) & 3).reshape(9, 80) - 1
    assert np.array_equal(dec[:, :70], codes) and np.all(dec[:, 70:] == 0)


@pytest.mark.parametrize("m,n,k", [(1, 37, 100), (3, 24, 200), (8, 19, 48), (6, 21, 70)])
def test_gemv_bit_exact(device, m, n, k):
    rng = np.random.default_rng(100 + m)
    x = _rand_x(rng, m, k)
    codes, scale = ternary_quantize(rng.standard_normal((n, k)))
    w = pack_ternary_gpu(codes, scale, device)
    xt = torch.from_numpy(x).to(device)
    a = act_quant(xt)
    q, s = int8_absmax_quantize(x)
    acc_ref = int_matmul_exact(q, codes)
    # pre-quantized and quantizer-fused kernels: the same exact integers
    assert np.array_equal(ternary_gemv(a, w, out_acc=True).cpu().numpy(), acc_ref)
    assert np.array_equal(ternary_gemv(xt, w, out_acc=True).cpu().numpy(), acc_ref)
    y_ref = dequantize_accumulator(acc_ref, scale, s)
    for y in (ternary_gemv(a, w), ternary_gemv(xt, w, config={"BLOCK_N": 8, "BLOCK_KW": 4})):
        y = y.float().cpu().numpy()
        assert np.all(np.abs(y - y_ref) <= BF16_REL * np.abs(y_ref) + 1e-30)
    # residual epilogue = the unfused bf16 add (the interpreter's bf16 cast truncates: one ulp apart there)
    r = torch.randn(m, n, generator=torch.Generator().manual_seed(m)).to(torch.bfloat16).to(device)
    got, want = ternary_gemv(xt, w, residual=r).float(), (r + ternary_gemv(xt, w)).float()
    assert torch.all((got - want).abs() <= (BF16_REL * want.abs() if device == "cpu" else 0))


def test_gemv_worst_case_carries(device):
    # all weights +1 (code 2: the top slot's byte is 0x80) and all activations at +-127: every dp4a slot
    # at its extreme; also all -1 weights against alternating +-127
    k = 160
    x = np.full((2, k), 3.0, np.float32)
    x[1, 1::2] = -3.0
    for wv in (1, -1):
        codes = np.full((5, k), wv, np.int8)
        w = pack_ternary_gpu(codes, 1.0, device)
        for rows in (x, x[1:]):
            q, _ = int8_absmax_quantize(rows)
            xt = torch.from_numpy(rows).to(device)
            for a in (act_quant(xt), xt):  # pre-quantized and fused
                assert np.array_equal(ternary_gemv(a, w, out_acc=True).cpu().numpy(), int_matmul_exact(q, codes))


def test_gemm_bit_exact(device):
    rng = np.random.default_rng(13)
    m, n, k = 40, 72, 120
    x = _rand_x(rng, m, k)
    codes, scale = ternary_quantize(rng.standard_normal((n, k)))
    w = pack_ternary_gpu(codes, scale, device)
    a = act_quant(torch.from_numpy(x).to(device))
    q, s = int8_absmax_quantize(x)
    acc_ref = int_matmul_exact(q, codes)
    assert np.array_equal(ternary_gemm(a, w, out_acc=True).cpu().numpy(), acc_ref)
    assert np.array_equal(ternary_gemm(a, w, out_acc=True, split_k=3).cpu().numpy(), acc_ref)
    assert torch.equal(ternary_gemm(a, w, split_k=2), ternary_gemm(a, w))
    assert np.array_equal(ternary_gemm_unpacked(a, w, out_acc=True).cpu().numpy(), acc_ref)
    y2 = ternary_gemm_unpacked(a, w).float().cpu().numpy()
    assert torch.equal(ternary_gemm_unpacked(a, w), ternary_gemm(a, w))  # ternary_linear's paths: the same output
    assert np.all(np.abs(y2 - dequantize_accumulator(acc_ref, scale, s)) <= BF16_REL * np.abs(acc_ref * scale / s) + 1e-30)
    y = ternary_linear(torch.from_numpy(x).to(device), w).float().cpu().numpy()
    y_ref = dequantize_accumulator(acc_ref, scale, s)
    assert np.all(np.abs(y - y_ref) <= BF16_REL * np.abs(y_ref) + 1e-30)


@pytest.mark.parametrize("m,n,k,cfg,split_k,codes", [
    (17, 45, 300, {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_KW": 2, "GROUP_M": 2}, 1, torch.int8),
    (17, 45, 300, {"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_KW": 4, "GROUP_M": 1}, 7, torch.int8),
    (5, 70, 37, {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_KW": 1, "GROUP_M": 4}, 2, torch.int8),
    (19, 50, 200, {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_KW": 2, "GROUP_M": 2, "SWAP": True}, 1, torch.int8),
    (19, 50, 200, {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_KW": 4, "GROUP_M": 1, "SWAP": True}, 3, torch.int8),
    # bf16 tensor-core form (swapped only)
    (19, 50, 200, {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_KW": 2, "GROUP_M": 2, "SWAP": True}, 1, torch.bfloat16),
    (33, 45, 300, {"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_KW": 4, "GROUP_M": 1, "SWAP": True}, 5, torch.bfloat16),
    (3, 70, 37, {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_KW": 1, "GROUP_M": 4, "SWAP": True}, 2, torch.bfloat16),
])
def test_gemm_odd_shapes_tiles_and_splits(device, m, n, k, cfg, split_k, codes):
    # shapes that are multiples of no tile; a K tile of 1-4 words (16-64 weights) with a partial last tile;
    # K split into more parts than there are K tiles (empty splits add nothing); all-ones and all-minus-ones
    # weight rows give the largest sums
    rng = np.random.default_rng(15 + m + k)
    x = _rand_x(rng, m, k)
    w_codes = rng.integers(-1, 2, (n, k)).astype(np.int8)
    w_codes[:2] = [[1], [-1]]
    w = pack_ternary_gpu(w_codes, 0.7, device)
    a = act_quant(torch.from_numpy(x).to(device), codes=codes)
    q, _ = int8_absmax_quantize(x)
    got = ternary_gemm(a, w, out_acc=True, config=cfg, split_k=split_k).cpu().numpy()
    assert np.array_equal(got, int_matmul_exact(q, w_codes))
    if codes == torch.bfloat16:  # the bf16 codes are the int8 codes; the output equals the INT8 path's
        a8 = act_quant(torch.from_numpy(x).to(device))
        assert torch.equal(a.q.float(), a8.q.float()) and torch.equal(a.qsum, a8.qsum) and torch.equal(a.s, a8.s)
        assert torch.equal(ternary_gemm(a, w, config=cfg), ternary_gemm(a8, w, config=cfg))


def test_bf16_codes_refusals(device):
    rng = np.random.default_rng(5)
    x = torch.from_numpy(_rand_x(rng, 2, 32)).to(device)
    w = pack_ternary_gpu(rng.integers(-1, 2, (6, 32)).astype(np.int8), 1.0, device)
    a16 = act_quant(x, codes=torch.bfloat16)
    with pytest.raises(ValueError, match="int8 codes"):
        ternary_gemv(a16, w)
    with pytest.raises(ValueError, match="codes must be"):
        act_quant(x, codes=torch.float16)
    big = pack_ternary_gpu(np.ones((1, 32768), np.int8), 1.0, device)  # 512 * Kp reaches 2^24
    with pytest.raises(ValueError, match="not exact in float32"):
        ternary_gemm(act_quant(torch.ones(1, 32768, device=device), codes=torch.bfloat16), big)


def test_auto_split_k():
    # four splits only for long rows (>= 6144 weights) at <= 64 tokens
    assert [auto_split_k(m, kp) for m, kp in ((64, 8640), (64, 6912), (65, 8640), (64, 3200), (16, 6144))] == [4, 4, 1, 1, 4]


def test_per_row_scales_and_errors(device):
    rng = np.random.default_rng(14)
    codes = rng.integers(-1, 2, (6, 32)).astype(np.int8)
    sc = rng.uniform(0.1, 2.0, 6)
    w = pack_ternary_gpu(codes, sc, device)
    x = _rand_x(rng, 2, 32)
    q, s = int8_absmax_quantize(x)
    y = ternary_linear(torch.from_numpy(x).to(device), w).float().cpu().numpy()
    y_ref = dequantize_accumulator(int_matmul_exact(q, codes), sc, s)
    assert np.all(np.abs(y - y_ref) <= BF16_REL * np.abs(y_ref) + 1e-30)
    with pytest.raises(ValueError):
        ternary_linear(torch.from_numpy(x[:, :16]).to(device), w)
    with pytest.raises(ValueError):
        pack_ternary_gpu(codes, np.ones(5), device)
    with pytest.raises(ValueError):
        pack_ternary_gpu(codes * 2, 1.0, device)


def test_gc_paused_collects_first_and_restores():
    # a CUDA-graph capture must not run Python's cyclic collector (it can free a Triton kernel mid-capture)
    import gc
    import weakref

    from lowbit.models.gpu.ternary import gc_paused

    class Cycle:
        pass

    gc.enable()
    a = Cycle()
    a.me = a
    ref = weakref.ref(a)
    gc.disable()
    del a  # now only the collector can free it
    assert ref() is not None
    gc.enable()
    with gc_paused():
        assert ref() is None  # collected on entry
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with pytest.raises(RuntimeError), gc_paused():
            raise RuntimeError("capture failed")
        assert not gc.isenabled()  # a disabled collector stays disabled
    finally:
        gc.enable()
