"""The Q K^T scores on the chip (lowbit.rtl.chip_scores): the loader's expected scores and row maxes are the
requantization of the golden's accumulators with q_amax x k_amax (sim.numerics.requant, computed here
independently), and a changed key scale makes exactly the predicted scores and row maxes differ on the chip."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from lowbit.sim.golden import attn_multipliers
from lowbit.sim.numerics.requant import requant


def _plan(prefill: int, decode: int):
    from lowbit.rtl.chip_golden import data_plan
    from lowbit.rtl.chip_image import build_image
    from lowbit.rtl.chip_model import compile_from_golden, model_contents
    from lowbit.sim.config import load_hw
    from lowbit.sim.program_io import ProgramReader

    cfg = load_hw("tiny", [])
    path = Path(tempfile.mkdtemp()) / "prog.bin"
    compile_from_golden(cfg, "bitnet-tiny", prefill, decode, path, seed=0)
    img = build_image(path, cfg)
    model, note = model_contents(img, cfg, ProgramReader(path).header.meta, 0)
    assert model is not None, note
    plan, why = data_plan(img, cfg, 0, model)
    assert plan is not None, why
    return cfg, plan


def _predicted(model, tiles, scale=None):
    """(scores, row maxes) in the stage's write order from the golden's accumulators and amaxes; `scale` (tile
    index, key index, factor) changes one key's k_amax."""
    s = model.spec
    grp, kvh = s.n_heads // s.n_kv_heads, s.n_kv_heads
    m_qk, sh_qk = attn_multipliers(s.head_dim)["qk"]
    scores, maxes = [], []
    for k, (step, layer, g, q0, pos, nq, pos0) in enumerate(tiles):
        b = model.run.steps[step].buffers
        ka = np.concatenate([st.buffers[f"layers.{layer}.attn.kv_append.k_amax"].reshape(-1, kvh)
                             for st in model.run.steps])[pos, g].astype(np.int64)
        if scale is not None and scale[0] == k:
            ka[scale[1]] *= scale[2]
        acc, qa = b[f"layers.{layer}.attn.qk.acc"], b[f"layers.{layer}.attn.qk.q_amax"]
        for t in range(nq):
            for h in range(grp):
                js = range(pos0 + t + 1)
                row = [int(requant(np.array([acc[g * grp + h, q0 + t, pos[j]]]),
                                   np.array([int(qa[q0 + t, g * grp + h]) * int(ka[j])]), m_qk, sh_qk)[0]) for j in js]
                scores += [(t * grp + h, j, y) for j, y in zip(js, row, strict=True)]
                maxes.append((t * grp + h, max(row)))
    return scores, maxes


@pytest.mark.parametrize("prefill", [2, 8])
def test_expected_scores_are_the_requantized_accumulators(prefill):
    """Every Q K^T tile of bitnet-tiny on `tiny` (prompt, decode over all keys or LOP's gathered keys): the
    loader's expected (row, key, score) writes and row maxes equal requant(acc, q_amax x k_amax) of the
    golden's buffers, and the bench writes no score or row max (the softmax engine's memories 0 and 1)."""
    from lowbit.rtl.chip_softmax import SEL

    _cfg, plan = _plan(prefill, 3)
    assert plan.sc is not None and plan.sc.tiles == 16
    scores, maxes = _predicted(plan.model, plan.sc.tiles_info)
    assert plan.sc.scores == scores and plan.sc.maxes == maxes
    # prompt: 2 KV groups x 2 layers, 2 heads x (1 + .. + P keys) each; decode: 12 tiles, 2 heads x 3, 4, 5 keys
    # (prefill 2, LOP keeping all) or x the 8 LOP gathers (prefill 8); a row a (query, head)
    assert (len(scores), len(maxes)) == {2: (24 + 4 * 2 * (3 + 4 + 5), 16 + 24),
                                         8: (4 * 2 * 36 + 12 * 16, 64 + 24)}[prefill]
    assert all(x[0] >> SEL & 3 == 2 for e in plan.sm.writes for x in e["w"])


@pytest.mark.slow
def test_chip_score_check_can_fail_in_exactly_the_predicted_scores(monkeypatch, tmp_path):
    """Doubling one key's k_amax in the bench's key-scale writes of the last decode tile changes exactly the
    scores and row maxes sim.numerics.requant predicts for it on the chip (every other tile's stay exact; an
    earlier tile's change would reach the later layers' scores through the attention output)."""
    from tests.rtl.chip_perturb import verify_perturbed

    hit = {}

    def edit(plan):
        k = len(plan.sc.tiles_info) - 1  # the last decode step's last tile: no Q K^T tile after it sees the change
        assert plan.sc.tiles_info[k][0] > 0
        plan.sc.writes[k]["w"][1][1] *= 2
        hit["k"], hit["model"], hit["tiles"] = k, plan.model, plan.sc.tiles_info

    r, plan = verify_perturbed(monkeypatch, tmp_path, edit)
    want_s, want_m = _predicted(hit["model"], hit["tiles"], (hit["k"], 1, 2))
    base_s, base_m = _predicted(hit["model"], hit["tiles"])
    diff = sum(a != b for a, b in zip(want_s, base_s, strict=True)) + sum(
        a != b for a, b in zip(want_m, base_m, strict=True))
    assert diff > 0
    assert r.sc[:3] == (16, len(base_s), len(base_m)) and r.sc[3] == diff and r.sc[4] == 0
