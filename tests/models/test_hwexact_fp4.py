"""The PyTorch hardware-exact mode's FP4 core (lowbit.models.hwexact.fp4_dot, torch ops written independently of
sim.numerics.fp4dot) against the numpy golden: every recorded buffer of bitnet-tiny with NVFP4 and MXFP4
projections on vitallm-fp4, prefill 8 + decode 3 with LOP dropping keys; and the same overflow refusal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowbit.models import hwexact as hx
from lowbit.models.bitnet import BitNet
from lowbit.sim.config import apply_sets, load_config
from lowbit.sim.errors import WorkloadError
from lowbit.sim.golden import GoldenSettings, diff_runs, golden_run
from lowbit.sim.golden_weights import deploy, seeded_weights
from lowbit.sim.modelspec import get_model
from lowbit.sim.numerics.fp4dot import fp4_block_dot
from lowbit.sim.numerics.mx import mxfp4_quantize, nvfp4_quantize

SPEC = get_model("bitnet-tiny")
PROMPT = [3, 141, 59, 26, 5, 35, 89, 79]


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
def test_torch_fp4_mode_is_bit_exact_with_the_golden(fmt):
    cfg = apply_sets(load_config("vitallm-fp4"), ["lop.k=4", f"fp4.format={fmt}"])  # k = 4 of 9..11 keys
    dep = deploy(SPEC, seeded_weights(SPEC, 0), proj=fmt)
    ref = golden_run(dep, cfg, PROMPT, 3)
    hw = hx.HwExactBitNet(dep, GoldenSettings.from_hw(cfg), cfg).run(PROMPT, 3)
    assert diff_runs(ref, hw) == []
    assert all(set(s.buffers) == set(h) for s, h in zip(ref.steps, hw, strict=True))
    assert sum(len(s.buffers) for s in ref.steps) == 414
    assert not ref.steps[-1].buffers["layers.1.attn.lop.sel"].all()
    assert np.abs(ref.steps[0].buffers["layers.0.ffn.up.acc"]).max() > 1 << 12  # real FP4 accumulators


def test_torch_fp4_follows_the_model_weights():
    cfg = load_config("vitallm-fp4")
    model = BitNet(SPEC)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in seeded_weights(SPEC, 5).items()}, strict=False)
    hw = hx.HwExactBitNet.from_model(model, cfg).run(PROMPT, 2)
    ref = golden_run(deploy(SPEC, seeded_weights(SPEC, 5), proj="nvfp4"), cfg, PROMPT, 2)
    assert diff_runs(ref, hw) == []


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
def test_torch_fp4_dot_equals_fp4dot_on_random_blocks(fmt):
    """Random weights over 6 decades of magnitude (subnormal E4M3 scales, right shifts that drop bits)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((40, 128)) * 10.0 ** rng.uniform(-4, 2, (40, 1))
    t = nvfp4_quantize(w) if fmt == "nvfp4" else mxfp4_quantize(w)
    xq = rng.integers(-128, 128, (7, 128))
    ref = fp4_block_dot(t, xq, block_sum_bits=17, acc_bits=48, frac_bits=6)
    assert not ref.overflow.any() and ref.inexact.sum() > 0
    got = hx.fp4_dot(torch.from_numpy(t.codes.astype(np.int64)), torch.from_numpy(t.scales.astype(np.int64)), fmt,
                     torch.from_numpy(xq), block_sum_bits=17, acc_bits=48, frac_bits=6, what="t")
    assert np.array_equal(got.numpy(), ref.acc)
    with pytest.raises(WorkloadError, match="overflows"):
        hx.fp4_dot(torch.from_numpy(t.codes.astype(np.int64)), torch.from_numpy(t.scales.astype(np.int64)), fmt,
                   torch.from_numpy(xq), block_sum_bits=17, acc_bits=20, frac_bits=6, what="t")


def test_fp4_overflow_is_refused_in_both():
    cfg = apply_sets(load_config("vitallm-fp4"), ["fp4.acc_bits=24"])
    dep = deploy(SPEC, seeded_weights(SPEC, 0), proj="nvfp4")
    with pytest.raises(WorkloadError, match="overflows"):
        golden_run(dep, cfg, PROMPT, 0)
    with pytest.raises(WorkloadError, match="overflows"):
        hx.HwExactBitNet(dep, GoldenSettings.from_hw(cfg), cfg).run(PROMPT, 0)
