"""MXFP4 against independent oracles on thousands of random and adversarial blocks.

* ``ocp_mx_block``: the OCP MX v1.0 §6.3 conversion re-implemented from its text in scalar Python
  (shared_exp = floor(log2 max|V_i|) - emax_elem, X = 2^shared_exp, P_i = quantize(V_i / X) with
  normals clamped), plus the RCEIL rule from the cuBLAS "1D block quantization" text
  (X = amax / 6 in float32, rounded up to a power of two) and microxcaling's special values.
  Exact: Python floats hold float32 data and power-of-two quotients exactly.
* torchao 0.18.0 ``to_mx`` / ``to_dtype`` (emulated path, CPU), FLOOR and RCEIL. Every block where
  torchao's bits differ from lowbit's must fall in a row of docs/numerics.md's difference table,
  and every such row must actually occur here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from lowbit.sim.numerics.fp import e2m1_encode
from lowbit.sim.numerics.mx import mxfp4_dequantize, mxfp4_quantize
from tests.sim.numerics.blocks import E2M1_GRID, adversarial_blocks

F32 = np.float32
N_BLOCKS = 4096


def _floor_log2(v: float) -> int:
    e = math.floor(math.log2(v))
    while 2.0**e > v:
        e -= 1
    while 2.0 ** (e + 1) <= v:
        e += 1
    return e


def _e2m1(r: float) -> int:
    """OCP E2M1 code of an exact real: nearest grid value, ties to the even code, normals clamped to 6."""
    a = min(abs(r), 6.0)
    i = min(range(8), key=lambda j: (abs(E2M1_GRID[j] - a), j % 2))
    return i | (8 if math.copysign(1.0, r) < 0 else 0)


def ocp_mx_block(block: list[float], mode: str) -> tuple[int, list[int]]:
    """(E8M0 code, E2M1 codes) of one block, from the spec text; scalar, no numpy."""
    if any(math.isnan(v) or math.isinf(v) for v in block):
        return 0xFF, [0] * len(block)  # microxcaling: Inf/NaN max -> NaN shared exponent
    amax = max(abs(v) for v in block)
    if amax == 0:
        e = -127
    elif mode == "floor":
        e = _floor_log2(amax) - 2  # emax_elem(E2M1) = 2
    else:
        d = float(F32(amax / 6.0))  # float64 quotient rounded once to float32 (exact double rounding)
        e = -127 if d == 0 else _floor_log2(d) + (0 if 2.0 ** _floor_log2(d) == d else 1)
    e = max(e, -127)
    return e + 127, [_e2m1(v / 2.0**e) for v in block]


@pytest.fixture(scope="module")
def blocks() -> np.ndarray:
    return adversarial_blocks(np.random.default_rng(2024), N_BLOCKS, 32)


@pytest.mark.parametrize("mode", ["floor", "rceil"])
def test_mxfp4_matches_ocp_text_oracle(blocks, mode):
    x = blocks.copy()
    x[::97, 5] = np.nan  # a few poisoned blocks
    x[1::97, 7] = -np.inf
    t = mxfp4_quantize(x, scale_mode=mode)
    mism = 0
    for i, row in enumerate(x.tolist()):
        code, codes = ocp_mx_block(row, mode)
        mism += (int(t.scales[i, 0]) != code) + (t.codes[i].tolist() != codes)
    assert mism == 0


# ----------------------------------------------------------------------------- torchao

try:  # torchao imports torch; both come with the dev extra
    import torch
    from torchao.prototype.mx_formats import mx_tensor
    from torchao.prototype.mx_formats.config import ScaleCalculationMode
    from torchao.prototype.mx_formats.kernels import unpack_uint4

    NO_TORCHAO = ""
except ImportError as exc:  # pragma: no cover - depends on the environment
    NO_TORCHAO = f"torchao does not import here ({exc}); install the dev extra for this oracle"
needs_torchao = pytest.mark.skipif(bool(NO_TORCHAO), reason=NO_TORCHAO)


def torchao_mx(x: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(E8M0 codes [n], E2M1 codes [n, 32], dequantized [n, 32]) from torchao's emulated to_mx."""
    tx = torch.from_numpy(x)
    smode = ScaleCalculationMode.FLOOR if mode == "floor" else ScaleCalculationMode.RCEIL
    scale, data = mx_tensor.to_mx(tx, torch.float4_e2m1fn_x2, 32, smode)
    deq = mx_tensor.to_dtype(data, scale, torch.float4_e2m1fn_x2, 32, torch.float32)
    codes = unpack_uint4(data).numpy().reshape(x.shape)
    return scale.view(torch.uint8).numpy().reshape(-1).astype(int), codes, deq.numpy()


def _classify(x, t, ta_scale, ta_codes, mode):
    """Per block: 'same' or the docs/numerics.md difference row that explains the mismatch."""
    amax = np.max(np.abs(x), axis=-1)
    has_nan = np.isnan(x).any(-1)
    has_inf = np.isinf(x).any(-1) & ~has_nan
    lb_scale = t.scales[:, 0].astype(int)
    same = (lb_scale == ta_scale) & (t.codes == ta_codes).all(-1)
    rows = np.full(len(x), "unexplained", dtype=object)
    rows[same] = "same"
    nan_row = has_nan & (lb_scale == 0xFF) & (ta_scale == 0xFF)  # both poison; element codes unspecified
    rows[~same & nan_row] = "nan-block elements"
    inf_code = 253 if mode == "floor" else 254  # FLOOR: exponent bits of Inf (128) - 2; RCEIL: 0xFE
    rows[~same & has_inf & (lb_scale == 0xFF) & (ta_scale == inf_code)] = "inf block scale"
    code0 = ~has_nan & ~has_inf & (lb_scale == 0) & (ta_scale == 0) & (amax > 0)
    # torchao's element scaling of code-0 blocks: FLOOR divides by 2^-126, RCEIL multiplies by 1.0.
    denom = 2.0**-126 if mode == "floor" else 1.0
    with np.errstate(under="ignore"):
        predicted = e2m1_encode(x.astype(np.float64) / denom, nan="zero")
    rows[~same & code0 & (predicted == ta_codes).all(-1)] = "code-0 block elements"
    if mode == "rceil":
        # torchao's eager RCEIL takes ceil(torch.log2(d)) in float32, which rounds log2 of a d just
        # above 2^k down to k: one exponent lower than the exact ceil, so the block may saturate.
        d = (amax.astype(F32) / F32(6)).astype(np.float64)
        e_lb = lb_scale - 127
        near = (e_lb - (ta_scale - 127) == 1) & (d / np.exp2(e_lb - 1.0) - 1 < 2.0**-16)
        rows[~same & ~has_nan & ~has_inf & near & (rows == "unexplained")] = "float32 log2"
    return rows


@needs_torchao
@pytest.mark.parametrize("mode", ["floor", "rceil"])
def test_mxfp4_vs_torchao(blocks, mode):
    x = blocks.copy()
    x[::97, 5] = np.nan
    x[1::97, 7] = np.inf
    if mode == "rceil":  # d = amax/6 one float32 ulp above 2^k for large |k|: float32 log2 rounds
        k = np.arange(64, 124)
        x[2 : 2 + 2 * len(k) : 2, 0] = (6 * np.exp2(k) * (1 + 2.0**-23)).astype(F32)
    t = mxfp4_quantize(x, scale_mode=mode)
    ta_scale, ta_codes, ta_deq = torchao_mx(x, mode)
    rows = _classify(x, t, ta_scale, ta_codes, mode)
    kinds, counts = np.unique(rows.astype(str), return_counts=True)
    summary = dict(zip(kinds.tolist(), counts.tolist(), strict=True))
    assert "unexplained" not in summary, summary
    expected = {"same", "nan-block elements", "inf block scale", "code-0 block elements"}
    if mode == "rceil":
        expected.add("float32 log2")
    assert set(summary) == expected, summary  # every documented difference occurs here
    assert summary["same"] > 0.9 * len(x)
    same = rows == "same"
    np.testing.assert_array_equal(mxfp4_dequantize(t)[same], ta_deq[same])


@needs_torchao
def test_torchao_rceil_matches_lowbit_on_underflowing_blocks():
    # amax/6 underflows float32: torchao's ceil(log2 0) = -inf clamps to code 0, as lowbit now does.
    x = np.zeros((3, 32), F32)
    x[0, 0], x[1, 0], x[2, 3] = 2.0**-149, 3 * 2.0**-149, -(2.0**-149)
    ta_scale, _, _ = torchao_mx(x, "rceil")
    assert ta_scale.tolist() == [0, 0, 0]
    assert mxfp4_quantize(x, scale_mode="rceil").scales[:, 0].tolist() == [0, 0, 0]
