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


def _plan(prefill: int, decode: int, hw: str = "tiny"):
    from lowbit.rtl.chip_golden import data_plan
    from lowbit.rtl.chip_image import build_image
    from lowbit.rtl.chip_model import compile_from_golden, model_contents
    from lowbit.sim.config import load_hw
    from lowbit.sim.program_io import ProgramReader

    cfg = load_hw(hw, [])
    path = Path(tempfile.mkdtemp()) / "prog.bin"
    compile_from_golden(cfg, "bitnet-tiny", prefill, decode, path, seed=0)
    img = build_image(path, cfg)
    model, note = model_contents(img, cfg, ProgramReader(path).header.meta, 0)
    assert model is not None, note
    plan, why = data_plan(img, cfg, 0, model)
    assert plan is not None, why
    return cfg, plan


def _k_amax_at(model, idx: int) -> int:
    """The golden's kv_append.k_amax at scale index (layer x KV + head) x max_positions + position."""
    s = model.spec
    (layer, g), pos = divmod(idx // s.max_positions, s.n_kv_heads), idx % s.max_positions
    return int(np.concatenate([st.buffers[f"layers.{layer}.attn.kv_append.k_amax"].reshape(-1, s.n_kv_heads)
                               for st in model.run.steps])[pos, g])


def _predicted(model, tiles, scale=None, index=None):
    """(scores, row maxes) in the stage's write order from the golden's accumulators and amaxes; `scale` (tile
    index, key index, factor) changes one key's k_amax; `index` (tile index, scale indices) reads that tile's
    keys' k_amax at those scale indices instead."""
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
        if index is not None and index[0] == k:
            ka = np.array([_k_amax_at(model, x) for x in index[1]], np.int64)
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
    golden's buffers, and the bench writes no score, row max, amax_v nor k_amax."""
    _cfg, plan = _plan(prefill, 3)
    assert plan.sc is not None and plan.sc.tiles == 16
    scores, maxes = _predicted(plan.model, plan.sc.tiles_info)
    assert plan.sc.scores == scores and plan.sc.maxes == maxes
    # prompt: 2 KV groups x 2 layers, 2 heads x (1 + .. + P keys) each; decode: 12 tiles, 2 heads x 3, 4, 5 keys
    # (prefill 2, LOP keeping all) or x the 8 LOP gathers (prefill 8); a row a (query, head)
    assert (len(scores), len(maxes)) == {2: (24 + 4 * 2 * (3 + 4 + 5), 16 + 24),
                                         8: (4 * 2 * 36 + 12 * 16, 64 + 24)}[prefill]
    assert plan.sm.writes == [] and plan.sc.writes == []  # no amax_v nor k_amax from the bench


@pytest.mark.parametrize(("hw", "prefill", "decode", "by_pos", "gathered"),
                         [("tiny", 8, 3, 5, 11), ("tiny", 2, 3, 16, 0), ("vitallm", 4, 2, 12, 0)])
def test_every_tile_reads_its_keys_k_amax_on_the_chip(hw, prefill, decode, by_pos, gathered):
    """Every Q K^T tile reads its keys' k_amax from the key-scale memory (lowbit.rtl.chip_kscales), and every
    softmax word its amax_v from the V quantizer's: no k_amax and no amax_v through the load port. A chunk of
    consecutive positions by `ks` (1 + its first key's scale index (layer x KV + head) x max_positions +
    position); on `tiny` prefill 8 + decode 3, the 11 decode chunks of keys LOP gathers (8 of 9 .. 11) by `kg` =
    1 + the recorder entry of their first key: the keys the indirect K words fetched before them (each decode
    step's 4 selections of 8 keys, one of them consecutive positions and read by `ks`) mod the recorder's
    32 entries, and their softmax words the same `kg`."""
    _cfg, plan = _plan(prefill, decode, hw)
    sc, sm, s = plan.sc, plan.sm, plan.model.spec
    assert sc.writes == [] and sm.writes == []
    assert sm.vs_rows == sm.rows and len(sc.ks) == sc.tiles == by_pos + gathered
    kinds = [sc.ks[tuple(k)][0] for k in sorted(sc.ks)]
    assert kinds.count("ks") == by_pos and kinds.count("kg") == gathered
    at = 0
    for (f, v, idx), (step, layer, g, _q0, pos, _nq, _pos0) in zip((sc.ks[k] for k in sorted(sc.ks)),
                                                                    sc.tiles_info, strict=True):
        assert idx == [(layer * s.n_kv_heads + g) * s.max_positions + x for x in pos]
        assert (f, v) == (("ks", idx[0] + 1) if f == "ks" else ("kg", at % 32 + 1))
        st = plan.model.run.steps[step]
        at += len(pos) if pos != list(range(st.start + len(st.ids))) else 0
    assert sc.kg_depth == (32 if gathered else 0)
    assert sorted(f["kg"] for f in sm.fields.values() if f.get("kg")) == sorted(
        v for f, v, _ in sc.ks.values() if f == "kg")


@pytest.mark.slow
@pytest.mark.parametrize(("prefill", "kind"), [(8, "kg"), (2, "ks")])
def test_chip_score_check_can_fail_in_exactly_the_predicted_scores(monkeypatch, tmp_path, prefill, kind):
    """The last decode tile reads wrong keys' k_amax from the key-scale memory, and exactly the scores and row
    maxes sim.numerics.requant predicts with those k_amax differ on the chip (every other tile's stay exact; no
    Q K^T tile comes after it), while the key-scale memory itself stays the golden's. `kg` (prefill 8 + decode
    3, a chunk of 8 keys LOP gathers): its `kg` one entry early, so key j reads the scale index the recorder
    holds for the key fetched before it; `ks` (prefill 2 + decode 3, every key cached): its `ks` one KV head
    back (max_positions entries), so it reads KV head 0's k_amax at the same positions."""
    import lowbit.rtl.chip_golden as cg
    from tests.rtl.chip_perturb import verify_perturbed

    real, hit = cg.ks_tiles, {}

    def wrong(plan, vquant, kwords):
        real(plan, vquant, kwords)
        sc, mp = plan.sc, plan.model.spec.max_positions
        keys = sorted(sc.ks)
        f, v, idx = sc.ks[keys[-1]]
        assert f == kind and sc.tiles_info[-1][2] == 1  # the last tile: KV head 1
        if kind == "kg":
            g, _, prev = sc.ks[keys[-2]]  # the tile before: its last key was fetched just before this one's first
            assert g == "kg" and v > 1
            sc.ks[keys[-1]] = (f, v - 1, idx)
            hit["index"] = (len(keys) - 1, [prev[-1], *idx[:-1]])
        else:
            sc.ks[keys[-1]] = (f, v - mp, idx)
            hit["index"] = (len(keys) - 1, [x - mp for x in idx])

    monkeypatch.setattr(cg, "ks_tiles", wrong)

    def keep(plan):
        hit["model"], hit["tiles"] = plan.model, plan.sc.tiles_info

    r, _plan_ = verify_perturbed(monkeypatch, tmp_path, keep, prefill=prefill)
    want_s, want_m = _predicted(hit["model"], hit["tiles"], index=hit["index"])
    base_s, base_m = _predicted(hit["model"], hit["tiles"])
    diff = sum(a != b for a, b in zip(want_s, base_s, strict=True)) + sum(
        a != b for a, b in zip(want_m, base_m, strict=True))
    assert diff > 0
    assert r.sc[:3] == (16, len(base_s), len(base_m)) and r.sc[3] == diff and r.sc[4] == 0
    assert r.ks[:2] == (16, {8: 128, 2: 56}[prefill]) and r.ks[3:] == (0, 0, 0)
