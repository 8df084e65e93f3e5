"""Hardware-exact golden (lowbit.sim.golden) and its new numerics (sim.numerics.requant): the requantizer
against exact rational arithmetic, the golden's stages against their real-valued meaning, the buffers it
records, and the shapes and hardware it refuses."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from lowbit.sim.config import apply_sets, load_config
from lowbit.sim.errors import WorkloadError
from lowbit.sim.golden import attn_multipliers, diff_runs, golden_run
from lowbit.sim.golden_weights import deploy, seeded_weights
from lowbit.sim.modelspec import get_model
from lowbit.sim.numerics.requant import fixed_multiplier, requant, residual_add

SPEC = get_model("bitnet-tiny")
PROMPT = [3, 141, 59, 26, 5, 35, 89, 79]


@pytest.fixture(scope="module")
def run():
    cfg = apply_sets(load_config("tiny"), ["lop.k=4"])
    return golden_run(deploy(SPEC, seeded_weights(SPEC, 0)), cfg, PROMPT, 3, lop=True)


def test_fixed_multiplier_is_the_nearest_normalised_value():
    rng = np.random.default_rng(1)
    for real in [1.0, 0.5, 1 / 3, 2.0**-30, 0.999999999, 12345.678, *rng.uniform(1e-9, 1.0, 200)]:
        m, sh = fixed_multiplier(float(real))
        assert 1 << 15 <= m < 1 << 16
        err = abs(Fraction(real) - Fraction(m, 2**sh))
        assert err <= Fraction(1, 2 ** (sh + 1))  # RNE: within half an LSB
    assert fixed_multiplier(1.0) == (1 << 15, 15)
    assert fixed_multiplier(0.99999999999) == (1 << 15, 15)  # rounds up to 1.0: renormalised
    with pytest.raises(ValueError):
        fixed_multiplier(0.0)


def test_requant_equals_exact_rounding_of_the_normalised_multiplier():
    """y = floor(acc * g / 2^s + 1/2) with g the top 16 bits of scale * m, checked with Fractions."""
    rng = np.random.default_rng(2)
    acc = rng.integers(-(1 << 22), 1 << 22, 500)
    scale = rng.integers(0, 1 << 30, 500)
    m, sh = fixed_multiplier(1.0 / (127 * 127 * 256 * 4))
    y = requant(acc, scale, m, sh)
    for a, s, v in zip(acc.tolist(), scale.tolist(), y.tolist(), strict=True):
        G = s * m
        e = max(G.bit_length() - 16, 0)
        exact = math.floor(Fraction(a * (G >> e), 2 ** (sh - e)) + Fraction(1, 2))
        assert v == max(-32768, min(32767, exact))
        # and it is the real product acc x scale x M within half an LSB plus the 2^-15 truncation of g
        real = Fraction(a * s * m, 2**sh)
        assert abs(v - real) <= Fraction(1, 2) + abs(real) / 2**15 or v in (32767, -32768)
    assert requant(np.array([1000]), np.array([0]), m, sh)[0] == 0
    assert requant(np.array([1 << 30]), np.array([1 << 20]), 1 << 15, 40)[0] == 32767  # saturates
    with pytest.raises(ValueError):
        requant(np.array([1 << 31]), np.array([1]), m, sh)


def test_residual_add_saturates():
    assert residual_add(np.array([32000, -32000, 5]), np.array([1000, -1000, -7])).tolist() == [32767, -32768, -2]


def test_records_every_stage_of_every_step(run):
    assert len(run.steps) == 4 and [s.phase for s in run.steps] == ["prefill", "decode", "decode", "decode"]
    keys = set(run.steps[1].buffers)
    for layer in range(SPEC.n_layers):
        p = f"layers.{layer}"
        for op in ("attn_norm.out", "attn_quant.q", "attn_quant.amax", "attn.q.acc", "attn.q.out", "attn.rope.q",
                   "attn.kv_append.k8", "attn.kv_append.lo", "attn.lop.sel", "attn.qk.acc", "attn.qk.scores",
                   "attn.softmax.p", "attn.av.acc", "attn.av.out", "attn_sub_norm.out", "attn.o.out",
                   "attn_residual.out", "ffn.gate.acc", "ffn.act.out", "ffn_sub_norm.out", "ffn.down.acc",
                   "ffn_residual.out"):
            assert f"{p}.{op}" in keys
    assert "layers.0.attn.lop.sel" not in run.steps[0].buffers  # LOP only in decode steps
    assert run.steps[0].logits.shape == (1, SPEC.vocab)  # the prompt's last position only
    assert run.steps[3].buffers["layers.1.attn.qk.acc"].shape == (SPEC.n_heads, 1, 11)
    assert list(run.tokens[:8]) == PROMPT
    assert all(int(np.argmax(run.steps[i].logits[-1])) == run.tokens[8 + i] for i in range(3))  # greedy


def test_lop_keeps_one_top_k_of_each_kv_groups_summed_scores(run):
    """Independent of sim.numerics.lop: the group scores are the per-head scores summed with plain loops and the
    selection is the sort-based top-K (signed leading-one bucket descending, then lowest index)."""
    b = run.steps[3].buffers
    sc, gs, sel = b["layers.0.attn.lop.scores"], b["layers.0.attn.lop.group_scores"], b["layers.0.attn.lop.sel"]
    assert sc.shape == (4, 11) and gs.shape == sel.shape == (2, 11)
    assert gs.tolist() == [[int(sc[2 * g, j]) + int(sc[2 * g + 1, j]) for j in range(11)] for g in range(2)]

    def bucket(v: int) -> int:
        return 15 + (1 if v > 0 else -1) * min(abs(v).bit_length(), 15)  # tiny: 31 buckets

    for g in range(2):
        want = sorted(sorted(range(11), key=lambda j: (-bucket(int(gs[g, j])), j))[:4])
        assert np.flatnonzero(sel[g]).tolist() == want  # k = 4 of M = 11 per KV head
    keys = run.steps[3].buffers["layers.0.attn.qk.keys"]
    assert (keys[:, 0] == np.repeat(sel, 2, axis=0)).all()
    p = run.steps[3].buffers["layers.0.attn.softmax.p"]
    assert (p[~keys] == 0).all() and (np.abs(p.sum(-1) - 32768) <= 64).all()  # a distribution over the kept keys


def test_stages_mean_their_real_values(run):
    """Independent of the golden's code: each requantized buffer is the real value its integers stand for."""
    dep = deploy(SPEC, seeded_weights(SPEC, 0))
    b = run.steps[0].buffers
    lin = dep.linears["layers.1.attn.v"]
    real = b["layers.1.attn.v.acc"] * b["layers.1.attn_quant.amax"][:, None] * lin.wscale[None] / 127
    assert np.abs(b["layers.1.attn.v.out"] - real).max() <= 0.5 + np.abs(real).max() * 2**-15
    hd = SPEC.head_dim
    q = b["layers.1.attn.qk.q8"] * b["layers.1.attn.qk.q_amax"][..., None] / 127.0
    k = b["layers.1.attn.kv_append.k8"] * b["layers.1.attn.kv_append.k_amax"][..., None] / 127.0
    s = np.einsum("thd,shd->hts", q, np.repeat(k, 2, axis=1)) / 256 / math.sqrt(hd)  # Q7.8 score
    keys = b["layers.1.attn.qk.keys"]
    err = np.abs(b["layers.1.attn.qk.scores"] - s)[keys]
    assert err.max() <= 0.5 + np.abs(s).max() * 2**-14
    assert np.abs(s[keys]).max() > 256  # scores of several units: the softmax is not flat
    p = b["layers.1.attn.softmax.p"] / 32768
    ref = np.where(keys, np.exp((s - np.where(keys, s, -1e9).max(-1, keepdims=True)) / 256), 0)
    ref /= ref.sum(-1, keepdims=True)
    assert np.abs(p - ref).max() < 2e-3


def test_diff_runs_names_the_first_differing_element(run):
    other = [dict(s.buffers) for s in run.steps]
    assert diff_runs(run, other) == []
    other[2]["layers.1.attn.qk.acc"] = other[2]["layers.1.attn.qk.acc"].copy()
    other[2]["layers.1.attn.qk.acc"][1, 0, 3] += 1
    del other[1]["lm_head.logits"]
    assert diff_runs(run, other) == ["step 1 lm_head.logits: missing on the other side",
                                     f"step 2 layers.1.attn.qk.acc: 1 of 40 differ, first at (1, 0, 3) "
                                     f"({run.steps[2].buffers['layers.1.attn.qk.acc'][1, 0, 3]} vs "
                                     f"{run.steps[2].buffers['layers.1.attn.qk.acc'][1, 0, 3] + 1})"]


def test_attention_constants():
    (m, sh), (m2, sh2) = attn_multipliers(16).values()
    assert Fraction(m, 2**sh) == pytest.approx(1 / (127**2 * 256 * 4), rel=2**-16)
    assert Fraction(m2, 2**sh2) == pytest.approx(1 / (127**2 * 2**15), rel=2**-16)


def test_refusals():
    dep = deploy(SPEC, seeded_weights(SPEC, 0))
    tiny = load_config("tiny")
    with pytest.raises(WorkloadError, match="accumulator .* overflows"):
        golden_run(dep, apply_sets(tiny, ["tint.acc_bits=10"]), PROMPT, 0)
    with pytest.raises(WorkloadError, match="online softmax"):  # 80 keys: the lowering tiles it online on tiny
        golden_run(dep, tiny, list(range(80)), 0)
    with pytest.raises(WorkloadError, match="token ids"):
        golden_run(dep, tiny, [256], 0)
    with pytest.raises(WorkloadError, match="ternary"):
        deploy(SPEC.with_format("nvfp4"), seeded_weights(SPEC, 0))
    w = seeded_weights(SPEC, 0)
    del w["layers.1.ffn.up.weight"]
    with pytest.raises(WorkloadError, match="missing tensor 'layers.1.ffn.up.weight'"):
        deploy(SPEC, w)
