"""The engine's activity snapshot at the end of prefill equals a prefill-only run's activity (so decode energy
needs no second simulation), and its MAC count equals the hand count P x projection parameters."""

from __future__ import annotations

import pytest

from lowbit.sim.config import load_config
from lowbit.sim.engine import simulate
from lowbit.sim.workloads import standard_trace, weight_format_for


@pytest.mark.parametrize(("hw", "model", "p", "d"), [("tiny", "bitnet-tiny", 16, 8),
                                                     ("vitallm", "bitnet-b1.58-3b", 8, 3),
                                                     ("vitallm-fp4", "bitnet-b1.58-3b", 8, 2)])
def test_prefill_snapshot_equals_prefill_only_run(hw, model, p, d):
    cfg = load_config(hw)
    fmt = weight_format_for(cfg)
    full = simulate(cfg, standard_trace(model, p, d, fmt))
    alone = simulate(cfg, standard_trace(model, p, 0, fmt))
    assert full.prefill_activity == alone.activity
    assert full.prefill_activity != full.activity  # decode did add work
    macs = sum(full.prefill_activity[k] for k in ("ternary_macs", "int8_macs", "fp4_macs"))
    proj = standard_trace(model, p, d, fmt).model.projection_params
    assert macs >= proj * p  # projections; attention's INT8 MACs come on top
    if fmt != "nvfp4" and fmt != "mxfp4":
        assert full.prefill_activity["ternary_macs"] == proj * p


def test_no_prefill_no_snapshot():
    cfg = load_config("tiny")
    assert simulate(cfg, standard_trace("bitnet-tiny", 0, 2)).prefill_activity is None
