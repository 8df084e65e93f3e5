"""Fixed-point SFU ops (sim.numerics.sfu_reduce, sfu_elem) against float64 and against the float ops users run
(transformers' LlamaRMSNorm, LlamaRotaryEmbedding + apply_rotary_pos_emb, torch.softmax, torch silu/relu).

Measured (asserted below; LSB = one unit of the output format: 2^-8 for Q7.8, 2^-15 for UQ1.15):
RMSNorm <= 0.501 LSB from float64 and from HF float32 (dims 64 / 2560, heavy-tailed rows); softmax <= 0.60,
0.70, 1.67 LSB at dims 16, 128, 1024; RoPE <= 0.59 LSB from float64 and <= 0.80 LSB from HF (positions
0..4095, whose float32 angles HF rounds); SiLU <= 0.517 LSB and ReLU^2 <= 0.5 LSB over every int16 input;
gated: ReLU^2-GLU <= 0.5 LSB, SwiGLU <= 2.4 LSB (the sigmoid's 2^-14.4 interpolation error times |g u|).
Reciprocal square root and reciprocal: <= 2^-21.6 and 2^-22.0 relative.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from lowbit.sim.numerics.sfu_elem import (
    SIGMOID_TABLE,
    from_fixed,
    rope_table,
    sfu_act,
    sfu_rope,
    sfu_sigmoid,
    to_fixed,
)
from lowbit.sim.numerics.sfu_reduce import (
    EXP2_TABLE,
    L2E,
    rmsnorm_consts,
    sfu_exp2,
    sfu_recip,
    sfu_rmsnorm,
    sfu_rsqrt,
    sfu_softmax,
)

LSB = 256.0  # Q7.8 units per 1.0


def rms_ref(x: np.ndarray, g: np.ndarray, eps: float) -> np.ndarray:
    xx = from_fixed(x)
    return xx / np.sqrt((xx * xx).mean(-1, keepdims=True) + eps) * from_fixed(g, 10)


def softmax_ref(x: np.ndarray) -> np.ndarray:
    e = np.exp(from_fixed(x) - from_fixed(x).max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_rsqrt_relative_error():
    rng = np.random.default_rng(0)
    vs = np.concatenate([rng.integers(1, 1 << 48, 20000), np.arange(1, 3000), 1 << np.arange(48),
                         (1 << np.arange(1, 48)) - 1])
    worst = 0.0
    for v in vs:
        y1, k = sfu_rsqrt(int(v))
        worst = max(worst, abs(y1 / 2**23 * 2.0 ** -(11 + k) * math.sqrt(int(v)) - 1))
    assert worst < 2**-21.5
    assert sfu_rsqrt(1 << 22) == (1 << 23, 0)  # mu = 1: the table end point, exact


def test_recip_relative_error():
    rng = np.random.default_rng(1)
    worst = 0.0
    for z in np.concatenate([rng.integers(1 << 20, 1 << 37, 20000), 1 << np.arange(20, 47)]):
        r1, b = sfu_recip(int(z))
        worst = max(worst, abs(r1 / 2**23 * int(z) / 2.0 ** (b - 1) - 1))
    assert worst < 2**-22


def test_exp2_table_and_shift():
    assert EXP2_TABLE[0] == 1 << 20 and EXP2_TABLE[-1] == 1 << 21 and L2E == 47274
    z = -np.arange(0, 22 << 16)
    e = sfu_exp2(z)
    assert e[0] == 1 << 20 and e[16 << 16] == 16 and sfu_exp2([-(22 << 16)])[0] == 0
    assert np.abs(e - 2.0 ** (z / 65536) * 2**20).max() < 5  # Q1.20 units, table rounding + chord
    assert np.all(np.diff(e) <= 0)  # monotone


@pytest.mark.parametrize("dim", [64, 2560])
def test_rmsnorm_within_half_lsb_of_float64_and_hf(dim):
    torch = pytest.importorskip("torch")
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    rng = np.random.default_rng(dim)
    x = to_fixed(rng.standard_t(3, (256, dim)) * rng.uniform(0.05, 8, (256, 1)))  # heavy-tailed rows
    g = to_fixed(rng.uniform(0.2, 3, dim), 10)
    y = sfu_rmsnorm(x, g, 1e-6)
    ref = rms_ref(x, g, 1e-6)
    assert np.abs(ref).max() < 127  # no saturation in this data
    assert np.abs(from_fixed(y) - ref).max() * LSB < 0.501
    norm = llama.LlamaRMSNorm(dim, eps=1e-6)
    norm.weight.data = torch.tensor(from_fixed(g, 10), dtype=torch.float32)
    hf = norm(torch.tensor(from_fixed(x), dtype=torch.float32)).detach().double().numpy()
    assert np.abs(from_fixed(y) - hf).max() * LSB < 0.501


def test_rmsnorm_edges():
    eps_q, sd, e_sd = rmsnorm_consts(2560, 1e-5)
    assert (eps_q, e_sd) == (round(1e-5 * 2560 * 65536), 5) and abs(sd / 2**18 - math.sqrt(2560)) < 2**-18
    assert not sfu_rmsnorm(np.zeros((2, 8), np.int64), np.full(8, 1024), 0.0).any()  # zero row, eps 0
    one = np.zeros((1, 16), np.int64)
    one[0, 3] = -(1 << 15)
    y = sfu_rmsnorm(one, np.full(16, 1024), 0.0)  # x / rms = -sqrt(16) = -4.0 exactly
    assert y[0, 3] == -4 * 256 and not np.delete(y, 3).any()
    one64 = np.zeros((1, 64), np.int64)
    one64[0, 0] = 77
    big = sfu_rmsnorm(-one64, np.full(64, (1 << 15) - 1), 0.0)  # -8 * 32 = -256: saturates to -2^15
    assert big[0, 0] == -(1 << 15)
    tiny = sfu_rmsnorm(np.array([[1, -1, 1, -1]]), np.full(4, 1024), 0.0)  # v = 4: left-shift normalisation
    assert tiny.tolist() == [[256, -256, 256, -256]]


def test_rmsnorm_scale_invariance_and_subln_gain():
    """RMSNorm(c x) == RMSNorm(x) for power-of-two c (eps 0); SubLN is the same op with its own gain."""
    rng = np.random.default_rng(3)
    x = rng.integers(-2000, 2000, (8, 40))
    g1, g2 = to_fixed(rng.uniform(0.5, 2, 40), 10), to_fixed(rng.uniform(0.5, 2, 40), 10)
    assert np.array_equal(sfu_rmsnorm(x, g1, 0.0), sfu_rmsnorm(x * 8, g1, 0.0))
    assert not np.array_equal(sfu_rmsnorm(x, g1, 0.0), sfu_rmsnorm(x, g2, 0.0))


@pytest.mark.parametrize("dim,bound", [(1, 0.0), (16, 0.60), (128, 0.70), (1024, 1.67)])
def test_softmax_vs_float64_and_torch(dim, bound):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(dim)
    x = to_fixed(rng.standard_normal((256, dim)) * rng.uniform(0.1, 6, (256, 1)))
    p = sfu_softmax(x).astype(np.float64) / 2**15
    assert np.abs(p - softmax_ref(x)).max() * 2**15 <= bound
    t = torch.softmax(torch.tensor(from_fixed(x), dtype=torch.float32), -1).double().numpy()
    assert np.abs(p - t).max() * 2**15 <= bound + 0.01


def test_softmax_edges():
    x = np.array([[(1 << 15) - 1] + [-(1 << 15)] * 7, [-1234] * 8, [5] * 8])
    p = sfu_softmax(x)
    assert p[0].tolist() == [1 << 15] + [0] * 7  # one dominant score: exactly 1.0
    assert p[1].tolist() == [1 << 12] * 8 and p[2].tolist() == [1 << 12] * 8  # uniform: exactly 1/8
    assert sfu_softmax(np.array([[-(1 << 15)]])).tolist() == [[1 << 15]]
    assert abs(int(sfu_softmax(np.arange(-500, 500).reshape(1, -1)).astype(np.int64).sum()) - (1 << 15)) < 16


def test_rope_vs_float64_and_hf():
    torch = pytest.importorskip("torch")
    tr = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    hd, npos = 64, 4096
    rng = np.random.default_rng(5)
    x = to_fixed(rng.standard_normal((npos, hd)) * 3)
    c, s = rope_table(np.arange(npos), hd)
    y = sfu_rope(x, c, s)
    ang = np.outer(np.arange(npos), 10000.0 ** (-np.arange(0, hd, 2) / hd))
    xx = from_fixed(x)
    ref = np.concatenate([xx[:, :32] * np.cos(ang) - xx[:, 32:] * np.sin(ang),
                          xx[:, 32:] * np.cos(ang) + xx[:, :32] * np.sin(ang)], -1)
    assert np.abs(from_fixed(y) - ref).max() * LSB < 0.59
    cfg = tr.LlamaConfig(hidden_size=2048, num_attention_heads=32, max_position_embeddings=npos, rope_theta=10000.0)
    xt = torch.tensor(xx, dtype=torch.float32)[None, None]
    cos, sin = LlamaRotaryEmbedding(cfg)(xt, torch.arange(npos)[None])
    hf, _ = apply_rotary_pos_emb(xt, xt, cos, sin)
    assert np.abs(from_fixed(y) - hf[0, 0].double().numpy()).max() * LSB < 0.80


def test_rope_edges():
    c, s = rope_table([0], 4)
    assert c.tolist() == [[1 << 14, 1 << 14]] and s.tolist() == [[0, 0]]
    x = np.array([[1, 2, 3, 4]])
    assert sfu_rope(x, c, s).tolist() == x.tolist()  # position 0: identity
    one = np.full((1, 1), 1 << 14)
    # rotation by 90 degrees (cos 0, sin 1): (x1, x2) -> (-x2, x1); -(-2^15) saturates to 2^15 - 1
    assert sfu_rope(np.array([[7, -(1 << 15)]]), 0 * one, one).tolist() == [[(1 << 15) - 1, 7]]
    with pytest.raises(ValueError, match="even"):
        sfu_rope(np.array([[1, 2, 3]]), c, s)


def test_activations_exhaustive_vs_float64_and_torch():
    torch = pytest.importorskip("torch")
    g = np.arange(-(1 << 15), 1 << 15)
    gf = from_fixed(g)
    silu = from_fixed(sfu_act(g, fn="silu"))
    assert np.abs(silu - gf / (1 + np.exp(-gf))).max() * LSB < 0.517
    t = torch.nn.functional.silu(torch.tensor(gf, dtype=torch.float32)).double().numpy()
    assert np.abs(silu - t).max() * LSB < 0.517
    relu2 = from_fixed(sfu_act(g, fn="relu2"))
    ref = np.maximum(gf, 0) ** 2
    ok = ref < 127.99
    assert np.abs(relu2 - ref)[ok].max() * LSB <= 0.5 and np.all(relu2[~ok] == 32767 / LSB)  # saturation


@pytest.mark.parametrize("fn,bound", [("silu", 2.4), ("relu2", 0.5)])
def test_gated_activations_vs_float64(fn, bound):
    rng = np.random.default_rng(7)
    g = np.arange(-(1 << 15), 1 << 15)
    u = rng.integers(-(1 << 15), 1 << 15, g.size) >> rng.integers(0, 15, g.size)
    y = from_fixed(sfu_act(g, u, fn))
    gf = from_fixed(g)
    a = gf / (1 + np.exp(-gf)) if fn == "silu" else np.maximum(gf, 0) ** 2
    ref = a * from_fixed(u)
    ok = np.abs(ref) < 127.99
    assert np.abs(y - ref)[ok].max() * LSB <= bound


def test_sigmoid_table_and_symmetry():
    assert SIGMOID_TABLE[0] == 1 << 19 and SIGMOID_TABLE[-1] == 1 << 20 and np.all(np.diff(SIGMOID_TABLE) >= 0)
    g = np.arange(1, 1 << 15)
    assert np.array_equal(sfu_sigmoid(-g), (1 << 20) - sfu_sigmoid(g))
    assert sfu_sigmoid([0, 16 << 8, -(16 << 8)]).tolist() == [1 << 19, 1 << 20, 0]


def test_bad_inputs():
    with pytest.raises(TypeError):
        sfu_softmax(np.array([[0.5]]))
    with pytest.raises(ValueError, match="16-bit"):
        sfu_rmsnorm(np.array([[1 << 15]]), np.array([1]))
    with pytest.raises(ValueError, match="fn"):
        sfu_act(np.array([1]), fn="gelu")
    with pytest.raises(ValueError, match="one shape"):
        sfu_act(np.array([1, 2]), np.array([1]))
    with pytest.raises(ValueError, match="dim"):
        rmsnorm_consts(1 << 16)
