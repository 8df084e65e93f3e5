"""The FP4 tensor-core GEMM with in-register decode (:mod:`lowbit.models.gpu.fp4mma`) against float64 built
from the sim's dequantizers, on odd shapes, both operand orders, every E2M1 code and far MX scales."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowbit.models.gpu.fp4 import pack_fp4_gpu
from lowbit.models.gpu.fp4mma import fp4_mma
from lowbit.sim.numerics.mx import mxfp4_dequantize, mxfp4_quantize, nvfp4_dequantize, nvfp4_quantize

FMTS = {"nvfp4": (nvfp4_quantize, nvfp4_dequantize), "mxfp4": (mxfp4_quantize, mxfp4_dequantize)}


def _cfg(swap: bool, bm: int = 16) -> dict | None:
    return {"BLOCK_M": bm, "BLOCK_N": 32, "BLOCK_KW": 4, "GROUP_M": 4, "SWAP": swap}


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
@pytest.mark.parametrize("m,swap", [(1, True), (3, True), (4, False), (17, True), (33, False)])
def test_fp4_mma_vs_float64(device, fmt, m, swap):
    rng = np.random.default_rng(11 + m)
    n, k = 37, 200  # N not a multiple of a tile, K not a multiple of a block: padding on both axes
    w = rng.standard_normal((n, k)).astype(np.float32) * rng.uniform(0.01, 3, (n, 1)).astype(np.float32)
    quant, deq = FMTS[fmt]
    t = quant(w)
    wg = pack_fp4_gpu(t, device)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).to(torch.bfloat16)
    y = fp4_mma(x.to(device), wg, config=_cfg(swap, 16 if m < 32 else 32)).double().cpu().numpy()
    ref = x.double().numpy() @ deq(t).astype(np.float64).T
    # one bf16 rounding of the output plus float32 accumulation slack
    slack = 2.0**-7 * np.abs(ref) + 1e-6 * (np.abs(x.double().numpy()) @ np.abs(deq(t)).T)
    assert y.shape == (m, n) and np.all(np.abs(y - ref) <= slack), np.max(np.abs(y - ref) - slack)


def test_fp4_mma_all_codes_and_far_scales(device):
    n, k = 8, 64
    codes = np.tile(np.arange(16, dtype=np.uint8), (n, k // 16))
    w = np.where(codes >= 8, -1.0, 1.0) * np.array([0, .5, 1, 1.5, 2, 3, 4, 6] * 2)[codes]
    w = w * (2.0 ** np.repeat(np.array([-20, 0, 7, 20]), 16))[None, :] * np.linspace(0.5, 2, n)[:, None]
    x = torch.randn(5, k, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    for quant, deq in FMTS.values():
        t = quant(w.astype(np.float32))
        wg = pack_fp4_gpu(t, device)
        ref = x.double().numpy() @ deq(t).astype(np.float64).T
        for swap in (True, False):
            y = fp4_mma(x.to(device), wg, config=_cfg(swap)).double().cpu().numpy()
            assert np.all(np.abs(y - ref) <= 2.0**-7 * np.abs(ref) + 1e-6 * (np.abs(x.double().numpy()) @
                                                                          np.abs(deq(t)).T))


def test_fp4_mma_refuses_wrong_k(device):
    wg = pack_fp4_gpu(nvfp4_quantize(np.ones((4, 32), np.float32)), device)
    with pytest.raises(ValueError, match=r"x must be \[M, 32\]"):
        fp4_mma(torch.ones(2, 16, dtype=torch.bfloat16, device=device), wg)


@pytest.mark.parametrize("m", [1, 6])
def test_fp4_linear_dispatch(device, m):
    # one token: the whole-row GEMV; more: the tensor-core paths; every path within the GEMM tolerance
    from lowbit.models.gpu.fp4mma import fp4_linear

    rng = np.random.default_rng(2 + m)
    t = nvfp4_quantize(rng.standard_normal((21, 96)).astype(np.float32))
    wg = pack_fp4_gpu(t, device)
    x = torch.randn(m, 96, generator=torch.Generator().manual_seed(m)).to(torch.bfloat16)
    ref = x.double().numpy() @ nvfp4_dequantize(t).astype(np.float64).T
    y = fp4_linear(x.to(device), wg).double().cpu().numpy()
    # the one-token kernel's fp16 partial sums (test_fp4row.py) bound the tolerance at 2^-8 of sum |w x|
    assert np.all(np.abs(y - ref) <= 2.0**-7 * np.abs(ref) + 2.0**-8 * (np.abs(x.double().numpy()) @
                                                                     np.abs(nvfp4_dequantize(t)).T))
    with pytest.raises(ValueError, match=r"x must be \[M, 96\]"):
        fp4_linear(x[:, :32].to(device), wg)


def test_a_path_that_does_not_build_is_left_out_of_the_choice():
    # Triton 3.6's MLIR pipeline raises RuntimeError("PassManager::run failed") for the unswapped decode tile:
    # fp4_linear must then time and take the other paths, and say why one was left out
    import triton

    from lowbit.models.gpu.ternary_gemm import choose_path

    def broken():
        raise RuntimeError("PassManager::run failed")

    def front():
        raise triton.CompilationError("src", None, "unsupported")

    times = {"slow": 5.0, "fast": 2.0}
    calls = []
    paths = {"mma": broken, "slow": lambda: calls.append("slow"), "fast": lambda: calls.append("fast")}
    name, why = choose_path(paths, lambda fn: fn(), timer=lambda f: (f(), times[calls[-1]])[1])
    assert name == "fast" and why == " (mma does not compile: PassManager::run failed)"
    name, why = choose_path({"gemv": front, "dequant": lambda: calls.append("slow")}, lambda fn: fn(),
                            timer=lambda f: (f(), 1.0)[1])
    assert name == "dequant" and why.startswith(" (gemv does not compile:")
    with pytest.raises(RuntimeError, match="PassManager"):  # nothing builds: the error, not an empty choice
        choose_path({"mma": broken}, lambda fn: fn(), timer=lambda f: 1.0)
