"""FP4 (NVFP4, MXFP4) weight x bf16 activation kernels vs a float64 reference built from the sim's
dequantizers: element-wise within one bf16 ulp (2^-7 relative) plus float32 accumulation slack."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowbit.models.gpu.fp4 import fp4_dequant, fp4_gemm, fp4_gemv, pack_fp4_gpu
from lowbit.sim.numerics.mx import mxfp4_dequantize, mxfp4_quantize, nvfp4_dequantize, nvfp4_quantize

FMTS = {"nvfp4": (nvfp4_quantize, nvfp4_dequantize), "mxfp4": (mxfp4_quantize, mxfp4_dequantize)}


def _check(y, x, wd):
    ref = x @ wd.T
    slack = 2.0**-7 * np.abs(ref) + 1e-6 * (np.abs(x) @ np.abs(wd).T)
    assert np.all(np.abs(y - ref) <= slack), np.max(np.abs(y - ref) - slack)


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
@pytest.mark.parametrize("m", [1, 5, 40])
def test_fp4_linear_vs_float64(device, fmt, m):
    rng = np.random.default_rng(7 + m)
    n, k = 24, 200  # K not a multiple of 32: zero-padded blocks
    w = rng.standard_normal((n, k)).astype(np.float32) * rng.uniform(0.01, 3, (n, 1)).astype(np.float32)
    quant, deq = FMTS[fmt]
    t = quant(w)
    wg = pack_fp4_gpu(t, device)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).to(torch.bfloat16)
    xd = x.double().numpy()
    wd = deq(t).astype(np.float64)
    # block_m: this module's float32 GEMV also for one token (on a GPU that goes to fp4row's kernel otherwise,
    # tested with its fp16 tolerance in test_fp4row.py)
    fn = fp4_gemm if m >= 32 else (lambda a, b: fp4_gemv(a, b, block_m=min(8, 1 << (m - 1).bit_length())))
    _check(fn(x.to(device), wg).double().cpu().numpy(), xd, wd)
    if m < 32:  # also the dequantize + GEMM path on a small batch
        _check(fp4_gemm(x.to(device), wg).double().cpu().numpy(), xd, wd)


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
def test_fp4_dequant_and_cublas_gemm(device, fmt):
    # the bf16 scratch weight equals the sim's dequantized tensor (without the NVFP4 tensor scale), and the
    # dequantize + cuBLAS prefill path is within the GEMM tolerance of float64
    rng = np.random.default_rng(5)
    n, k = 19, 200
    w = rng.standard_normal((n, k)).astype(np.float32) * rng.uniform(0.01, 3, (n, 1)).astype(np.float32)
    quant, deq = FMTS[fmt]
    t = quant(w)
    wg = pack_fp4_gpu(t, device)
    wd = deq(t).astype(np.float64)
    got = fp4_dequant(wg).double().cpu().numpy() * wg.gscale
    assert got.shape == (n, k) and np.allclose(got, wd, rtol=1e-6, atol=0)
    x = torch.randn(33, k, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    _check(fp4_gemm(x.to(device), wg).double().cpu().numpy(), x.double().numpy(), wd)


def test_fp4_all_codes_and_scale_extremes(device):
    # every E2M1 code in every row, and MX scales far from 1 (2^-20 .. 2^20 blocks)
    n, k = 8, 64
    codes = np.tile(np.arange(16, dtype=np.uint8), (n, k // 16))
    w = np.where(codes >= 8, -1.0, 1.0) * np.array([0, .5, 1, 1.5, 2, 3, 4, 6] * 2)[codes]
    w = w * (2.0 ** np.repeat(np.array([-20, 0, 7, 20]), 16))[None, :] * np.linspace(0.5, 2, n)[:, None]
    x = torch.randn(3, k, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    for quant, deq in FMTS.values():
        t = quant(w.astype(np.float32))
        for xr in (x, x[:1]):
            for smax in (0, 4):  # tiled-token and single-token kernels
                y = fp4_gemv(xr.to(device), pack_fp4_gpu(t, device), single_max=smax, block_m=None if smax else 1)
                _check(y.double().cpu().numpy(), xr.double().numpy(), deq(t).astype(np.float64))


def test_fp4_errors(device):
    t = nvfp4_quantize(np.ones((4, 32), np.float32))
    with pytest.raises(ValueError):
        fp4_gemv(torch.ones(1, 16, dtype=torch.bfloat16, device=device), pack_fp4_gpu(t, device))
    with pytest.raises(ValueError):
        pack_fp4_gpu(nvfp4_quantize(np.ones((2, 2, 32), np.float32)))
