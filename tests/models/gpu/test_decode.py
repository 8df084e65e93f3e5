"""Whole-model decode step (bitnet-tiny shapes) on the Triton kernels: runs with ternary and NVFP4 weights, and
with K >= context the LOP attention path gives the dense-attention result (bf16 weights, so the
INT8 requantisation of a ternary model does not amplify the float differences)."""

from __future__ import annotations

import pytest
import torch

from lowbit.models.gpu.decode import DecodeModel
from lowbit.sim.modelspec import get_model


@pytest.mark.parametrize("fmt", ["ternary", "nvfp4"])
def test_decode_step_runs(device, fmt):
    m = DecodeModel(get_model("bitnet-tiny"), fmt, batch=2, max_ctx=24, device=device, seed=3)
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16).to(device)
    y = m.step(x, 20)
    assert y.shape == (2, 64) and torch.isfinite(y.float()).all()
    assert m.weight_bytes() > 0


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
