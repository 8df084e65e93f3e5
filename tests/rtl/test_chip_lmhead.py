"""The lm_head on the chip (docs/rtl.md "The lm_head on data"): with `lm_head = "ternary"` on `tiny`, the final
norm, the lm_head's quantize and its ternary tiles (TINT and BoothFlex) run on the data path, the requantizers
behind their psum ports turn the accumulators into Q7.8 logits, and `verify --chip` compares them with the
golden's `lm_head.logits`."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("amaranth")

from lowbit.rtl.chip_golden import data_plan  # noqa: E402
from lowbit.rtl.chip_image import build_image  # noqa: E402
from lowbit.rtl.chip_model import compile_from_golden, model_contents  # noqa: E402
from lowbit.rtl.chip_requant import DST_LOGITS  # noqa: E402
from lowbit.sim.config import load_hw  # noqa: E402
from lowbit.sim.program_io import ProgramReader  # noqa: E402

SETS = ["lm_head=ternary"]


@pytest.fixture(scope="module")
def lm_program(tmp_path_factory):
    cfg = load_hw("tiny", SETS)
    path = tmp_path_factory.mktemp("lm") / "prog.bin"
    compile_from_golden(cfg, "bitnet-tiny", 2, 3, path, 0)
    return cfg, path


def test_loader_places_the_lm_head_on_the_engines(lm_program):
    """Every lm_head tile of the 4 steps runs on TINT or BoothFlex with its requantizer writing logits (dst
    DST_LOGITS), reading the amax row of its step's lm_quant word, which runs on the SFU's quantize engine; the
    lm_head's accumulators join the checked buffers (56 + 4), and one [1, 256] logits row a step is expected."""
    cfg, path = lm_program
    img = build_image(path, cfg)
    mc, note = model_contents(img, cfg, ProgramReader(path).header.meta, 0)
    assert mc is not None, note
    plan, why = data_plan(img, cfg, 0, mc)
    assert why == "" and plan.acc_buffers() == (60, 60, [])
    logits = [(n, d, o.shape) for n, d, o, *_ in plan.rq_expect if n.endswith(" lm_head")]
    assert logits == [(f"step {s} lm_head", DST_LOGITS, (1, 256)) for s in range(4)]
    assert all(np.array_equal(o, mc.run.steps[int(n.split()[1])].buffers["lm_head.logits"])
               for n, _, o, *_ in plan.rq_expect if n.endswith(" lm_head"))
    sq = img.queues.index("sfu")
    quant = {w["step"]: plan.sfu_fields[i] for i, w in enumerate(img.words[sq]) if w.get("op") == "lm_quant"}
    assert sorted(quant) == [0, 1, 2, 3] and all(f["eng"] == 1 for f in quant.values())
    rows = {s: [] for s in range(4)}
    for q in (img.queues.index("tint0"), img.queues.index("booth")):
        for w in img.words[q]:
            if w.get("op") != "lm_head":
                continue
            assert w["rq"] == DST_LOGITS and w["rq_s"] == quant[w["step"]]["st_addr"] and w["rq_stride"] == 64
            rows[w["step"]].append((w["rq_o"] * 4 + w["rq_off"], w["groups"] * (2 if q == img.queues.index("tint0")
                                                                                 else cfg.booth.lanes)))
    for s in range(4):  # the tiles cover the 256 vocabulary rows once in every step
        spans = sorted(rows[s])
        assert spans[0][0] == 0 and all(a[0] + a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
        assert spans[-1][0] + spans[-1][1] == 256


@pytest.mark.slow
def test_chip_computes_the_logits(lm_program):
    """prefill 2 + decode 3 with the lm_head on the chip: 0 mismatches, 0 cycles difference, and every logit of
    the 4 steps equal to the golden's lm_head.logits."""
    from lowbit.rtl.chip_run import verify_chip

    cfg, path = lm_program
    r = verify_chip(cfg, path, "tiny", SETS)
    assert r.ok and r.mismatches == 0 and r.chip_cycles == r.sim_cycles
    lm = [x for x in r.rq if x[0].endswith(" lm_head")]
    assert lm == [(f"step {s} lm_head", 256, 0) for s in range(4)]
    assert r.acc_buffers == (60, 60, [])


@pytest.mark.slow
def test_one_lm_head_weight_changes_its_column_of_logits(lm_program, monkeypatch):
    """One ternary code of vocabulary row 77 changed in the DRAM image after the golden was computed: that
    row's logit (column 77) differs from the golden's in the steps whose lm_quant input is nonzero there, and
    every other logit of every step is still the golden's; timing unchanged."""
    import lowbit.rtl.chip_run as cr
    from lowbit.rtl.chip_data import pack_tile

    real, v, seen = cr.data_plan, 77, {}

    def perturb(img, cfg, seed=0, model=None):
        plan, why = real(img, cfg, seed, model)
        seen["run"] = model.run
        lanes = cfg.tint.lanes
        x = model.run.steps[0].buffers["lm_quant.q"][0]
        e = int(np.argmax(np.abs(x)))  # the input element with the largest step-0 activation
        g, base = v // lanes, model.base["lm_head"]
        rows = model.dep.linears["lm_head"].codes[g * lanes:(g + 1) * lanes].copy()
        rows[v % lanes, e] = 1 if rows[v % lanes, e] != 1 else -1
        a = base + g * len(plan.dram[base])  # the row groups follow each other in DRAM
        assert len(plan.dram[a]) == len(plan.dram[base])
        plan.dram[a] = pack_tile(rows, lanes, cfg.tint.tree_width)
        return plan, why

    monkeypatch.setattr(cr, "data_plan", perturb)
    cfg, path = lm_program
    r = cr.verify_chip(cfg, path, "tiny", SETS)
    assert r.mismatches == 0 and r.chip_cycles == r.sim_cycles and not r.ok
    diff = set()
    for name, got in r.logits.items():
        step = int(name.split()[1])
        want = seen["run"].steps[step].buffers["lm_head.logits"]
        diff |= {(step, int(c)) for c in np.flatnonzero((got != want).any(axis=0))}
    assert {c for _, c in diff} == {v} and (0, v) in diff
