"""FP4 projections of the hardware-exact golden (lowbit.sim.golden_fp4): the FP4 core's accumulators against exact
rational arithmetic of the preset's datapath (E2M1 / E4M3 / E8M0 decoded here from the formats' definitions), the
requantized outputs against the float product of the dequantized weights within the stated rounding bound, the
record keys, and what is refused."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest

from lowbit.sim.config import apply_sets, load_config
from lowbit.sim.errors import WorkloadError
from lowbit.sim.golden import GoldenSettings, golden_run
from lowbit.sim.golden_fp4 import fp4_accumulate, fp4_multiplier
from lowbit.sim.golden_weights import deploy, seeded_weights
from lowbit.sim.modelspec import get_model
from lowbit.sim.numerics.mx import mxfp4_quantize, nvfp4_quantize

SPEC = get_model("bitnet-tiny")
PROMPT = [3, 141, 59, 26]
E2M1 = [Fraction(v) for v in ("0", "1/2", "1", "3/2", "2", "3", "4", "6")]  # OCP MX v1.0 table 5


def _e2m1(code: int) -> Fraction:
    return (-1 if code & 8 else 1) * E2M1[code & 7]


def _scale(code: int, fmt: str) -> Fraction:
    """E8M0: 2^(code - 127). E4M3 (OCP FP8): bias 7, 3 mantissa bits, subnormals 0.mmm * 2^-6."""
    if fmt == "mxfp4":
        return Fraction(2) ** (code - 127)
    e, m = (code >> 3) & 15, code & 7
    v = Fraction(m, 8) * Fraction(2) ** -6 if e == 0 else (1 + Fraction(m, 8)) * Fraction(2) ** (e - 7)
    return -v if code & 0x80 else v


def _reference_acc(t, xq: np.ndarray, frac: int, fmt: str) -> np.ndarray:
    """Per output: sum over blocks of floor(S_b * scale_b * 2^frac), S_b the exact block dot product (ints)."""
    n, kp = t.codes.shape
    B = t.block
    x = np.zeros((xq.shape[0], kp), np.int64)
    x[:, :xq.shape[1]] = xq
    out = np.zeros((xq.shape[0], n), np.int64)
    for r in range(xq.shape[0]):
        for c in range(n):
            acc = 0
            for b in range(kp // B):
                s = sum(_e2m1(int(t.codes[c, b * B + j])) * int(x[r, b * B + j]) for j in range(B))
                acc += math.floor(s * _scale(int(t.scales[c, b]), fmt) * 2**frac)
            out[r, c] = acc
    return out


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
def test_fp4_accumulators_equal_exact_block_arithmetic(fmt):
    rng = np.random.default_rng(11)
    w = rng.standard_normal((12, 96)) * rng.uniform(0.01, 3.0, (12, 1))  # rows over a range of magnitudes
    w[0, :16] = 0.0  # an all-zero block
    t = nvfp4_quantize(w) if fmt == "nvfp4" else mxfp4_quantize(w)
    xq = rng.integers(-127, 128, (5, 96))
    xq[0] = 127
    for frac in (8, 14):
        acc = fp4_accumulate(t, xq, block_sum_bits=17, acc_bits=40, frac_bits=frac, what="t")
        assert np.array_equal(acc, _reference_acc(t, xq, frac, fmt))


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
def test_fp4_outputs_within_the_rounding_bound_of_the_float_product(fmt):
    """y = requant(acc, amax) against W_dq . xq * amax / 127 (Q7.8 units, W_dq the dequantized FP4 weights, float64):
    |y - real| <= nb * 2^-frac * s_global * amax / 127 (each block's floor) + 1/2 + |real| * 2^-15 (requantizer)."""
    cfg = apply_sets(load_config("vitallm-fp4"), [f"fp4.format={fmt}"])
    dep = deploy(SPEC, seeded_weights(SPEC, 0), proj=fmt)
    run = golden_run(dep, cfg, PROMPT, 1)
    b = run.steps[0].buffers
    frac = cfg.fp4.frac_bits
    checked = 0
    inputs = {"layers.0.attn.q": "layers.0.attn_quant", "layers.1.ffn.down": "layers.1.down_quant",
              "layers.1.attn.o": "layers.1.o_quant"}
    for name, inp in inputs.items():
        t = dep.linears[name].fp4
        xq, amax = b[f"{inp}.q"], b[f"{inp}.amax"]
        sg = float(t.tensor_scale) if fmt == "nvfp4" else 1.0
        wdq = np.array([[float(_e2m1(int(c)) * _scale(int(t.scales[r, j // t.block]), fmt)) for j, c in
                         enumerate(row)] for r, row in enumerate(t.codes)]) * sg
        real = (xq @ wdq[:, :xq.shape[1]].T) * amax[:, None] / 127.0
        nb = t.codes.shape[1] // t.block
        bound = nb * 2.0**-frac * sg * amax[:, None] / 127.0 + 0.5 + np.abs(real) * 2.0**-15
        y = b[f"{name}.out"]
        assert np.all(np.abs(y - real) <= bound + 1e-9), name
        assert np.abs(y - real).max() > 0.05  # the rounding is real, not an identity
        checked += y.size
    assert checked == 4 * (64 + 64 + 64)


def test_fp4_run_records_the_ternary_keys_and_differs_from_it():
    cfg = load_config("vitallm-fp4")
    fp4 = golden_run(deploy(SPEC, seeded_weights(SPEC, 0), proj="nvfp4"), cfg, PROMPT, 2)
    st = dataclasses.replace(GoldenSettings.from_hw(cfg), proj="ternary")
    ter = golden_run(deploy(SPEC, seeded_weights(SPEC, 0)), cfg, PROMPT, 2, settings=st)
    for a, c in zip(fp4.steps, ter.steps, strict=True):
        assert set(a.buffers) == set(c.buffers) and "layers.1.ffn.down.acc" in a.buffers
    assert not np.array_equal(fp4.steps[0].buffers["layers.0.attn.q.acc"], ter.steps[0].buffers["layers.0.attn.q.acc"])
    m, sh = fp4_multiplier(deploy(SPEC, seeded_weights(SPEC, 0), proj="nvfp4").linears["layers.0.attn.q"].fp4, 8)
    s_global = float(nvfp4_quantize(seeded_weights(SPEC, 0)["layers.0.attn.q.weight"]).tensor_scale)
    assert abs(m / 2.0**sh / (s_global / 256 / 127) - 1) < 2.0**-16


def test_fp4_overflow_and_format_mismatch_are_refused():
    dep = deploy(SPEC, seeded_weights(SPEC, 0), proj="nvfp4")
    with pytest.raises(WorkloadError, match="overflows"):
        golden_run(dep, apply_sets(load_config("vitallm-fp4"), ["fp4.acc_bits=24"]), PROMPT, 0)
    with pytest.raises(WorkloadError, match="deploy with proj='ternary'"):
        golden_run(dep, load_config("tiny"), PROMPT, 0)
    with pytest.raises(WorkloadError, match="deploy with proj='nvfp4'"):
        golden_run(deploy(SPEC, seeded_weights(SPEC, 0)), load_config("vitallm-fp4"), PROMPT, 0)
    with pytest.raises(WorkloadError, match="projection format"):
        deploy(SPEC, seeded_weights(SPEC, 0), proj="fp8")
    nv = SPEC.with_format("nvfp4")  # the FP4 variant's spec (a program compiled for vitallm-fp4 carries it)
    assert deploy(nv, seeded_weights(nv, 0), proj="nvfp4").linears["layers.0.attn.q"].fmt == "nvfp4"
    with pytest.raises(WorkloadError, match="deploy with proj='nvfp4'"):
        deploy(nv, seeded_weights(nv, 0), proj="mxfp4")
