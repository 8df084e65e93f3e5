"""Ternary weights, INT8 activations and 2-bit packing against Hugging Face transformers' BitNet code.

Oracle: ``transformers.integrations.bitnet`` (``WeightQuant``, ``ActQuant``, ``pack_weights``,
``unpack_weights``), run eagerly on CPU (``torch.compiler.set_stance("force_eager")``: the functions
are decorated with ``torch.compile``). transformers works in float32, lowbit in float64 with an
exactly rounded mean (docs/numerics.md), so codes may differ only where the scaled value lies within
float32 rounding of a rounding boundary; on dyadic data (exact in both precisions) they must agree
everywhere, ties included.
"""

from __future__ import annotations

import numpy as np
import pytest

from lowbit.sim.numerics.int8 import int8_absmax_quantize
from lowbit.sim.numerics.packing import pack_ternary_2bit, unpack_ternary_2bit
from lowbit.sim.numerics.ternary import ternary_quantize

torch = pytest.importorskip("torch", reason="torch (dev extra) not installed: no transformers oracle")
bitnet = pytest.importorskip(
    "transformers.integrations.bitnet", reason="transformers (dev extra) not installed"
)

F32 = np.float32


@pytest.fixture(autouse=True)
def _eager():
    with torch.compiler.set_stance("force_eager"):
        yield


def random_weights(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Gaussian, heavy-tailed, sparse and tiny (mean|W| below eps) float32 weight tensors."""
    out = []
    for i in range(n):
        shape = (int(rng.integers(1, 40)), int(rng.integers(1, 70)))
        w = rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 3)
        if i % 4 == 1:
            w = rng.standard_t(2, shape)
        if i % 4 == 2:
            w = w * (rng.random(shape) < 0.3)
        if i % 8 == 3:
            w = w * 1e-7
        out.append(w.astype(F32))
    return out


def dyadic_weights(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """mean|W| = 2^k exactly: pairs (a, 2 - a) of magnitudes, a on a quarter grid, random signs.

    Every product W·(1/mean) is then exact in float32 and float64, and 0.5 / 1.5 ties occur."""
    out = []
    for _ in range(n):
        a = rng.choice(np.arange(9) / 4.0, 32)
        mags = np.concatenate([a, 2.0 - a])
        w = mags * np.where(rng.random(64) < 0.5, -1, 1) * 2.0 ** rng.integers(-10, 10)
        out.append(w[rng.permutation(64)].reshape(8, 8).astype(F32))
    return out


def hf_weight_codes(w: np.ndarray) -> tuple[np.ndarray, float]:
    """(codes, float32 mean|W|) of transformers' WeightQuant: its output is code / s, s = 1/mean."""
    out = bitnet.WeightQuant.apply(torch.from_numpy(w)).numpy()
    return np.sign(out).astype(np.int8), float(torch.from_numpy(w).abs().mean())


def test_weight_quant_matches_transformers():
    rng = np.random.default_rng(11)
    explained = mism = total = 0
    for w in random_weights(rng, 200):
        codes, scale = ternary_quantize(w)
        ref, ref_mean = hf_weight_codes(w)
        # scale: lowbit's exactly rounded mean vs torch's float32 reduction (eps clamp in both).
        assert abs(max(ref_mean, 1e-5) - scale) <= 8 * np.spacing(F32(scale))
        diff = codes != ref
        near_tie = np.abs(np.abs(w.astype(np.float64) * (1.0 / scale)) - 0.5) < 2.0**-18
        assert np.all(near_tie[diff]), "codes differ away from a float32-rounded 0.5 boundary"
        mism += int(diff.sum())
        explained += int(near_tie.sum())
        total += w.size
    assert total > 100_000 and mism <= explained


def test_weight_quant_exact_on_dyadic_weights_with_ties():
    rng = np.random.default_rng(12)
    ties = 0
    for w in dyadic_weights(rng, 300):
        codes, scale = ternary_quantize(w)
        ref, ref_mean = hf_weight_codes(w)
        assert scale == ref_mean and np.array_equal(codes, ref)
        ties += int(np.sum(np.abs(w) == F32(0.5 * scale)))
    assert ties > 500  # |w| = mean/2 -> RNE -> 0 in both


def test_act_quant_matches_transformers():
    rng = np.random.default_rng(13)
    x = (rng.standard_normal((2000, 64)) * 10.0 ** rng.integers(-7, 4, (2000, 1))).astype(F32)
    x[::50] *= 1e-3  # rows with max|x| below eps = 1e-5
    out = bitnet.ActQuant.apply(torch.from_numpy(x))
    tx = torch.from_numpy(x)
    s32 = 127 / tx.abs().max(dim=-1, keepdim=True).values.clamp(min=1e-5)  # ActQuant's own scale
    ref = torch.round(out * s32).to(torch.int8).numpy()
    q, s = int8_absmax_quantize(x)
    diff = q != ref
    p = np.abs(x.astype(np.float64) * s)
    near_half = np.abs(p - np.floor(p) - 0.5) < 2.0**-14
    assert np.all(near_half[diff]), "INT8 codes differ away from a float32-rounded half-integer"
    assert diff.sum() <= near_half.sum() and (q == ref).mean() > 0.999
    assert q.min() >= -127 and ref.min() >= -127  # -128 is never produced by either


def test_pack_weights_both_ways():
    rng = np.random.default_rng(14)
    shapes = [(n,) for n in range(1, 30)] + [(n, k) for n in range(1, 30) for k in (1, 5, 16)]
    shapes += [(n, 3, 4) for n in (1, 6, 9, 12)]
    for shape in shapes:
        c = rng.integers(-1, 2, shape).astype(np.int8)
        packed, n = pack_ternary_2bit(c, layout="transformers")
        ref = bitnet.pack_weights(torch.from_numpy(c.copy())).numpy()  # pack_weights adds 1 in place
        assert np.array_equal(packed, ref)  # export: bit-identical to transformers
        assert np.array_equal(unpack_ternary_2bit(ref, n, layout="transformers"), c)  # import
        hf = bitnet.unpack_weights(torch.from_numpy(packed), torch.int8).numpy()
        assert np.array_equal(hf[:n], c) and np.all(hf[n:] == -1)  # transformers decodes padding as -1
