"""The validation report's lm_head / multi-chip section (lowbit.sim.scaling), on a small study."""

from __future__ import annotations

import re

from lowbit.sim.config import load_config
from lowbit.sim.multichip import simulate_multichip
from lowbit.sim.scaling import JOBS, Study, section
from lowbit.sim.workloads import standard_trace


def test_section_reports_the_runs_and_the_answer():
    st = Study(hw="tiny", lm_models=("bitnet-tiny",), scale_model="bitnet-tiny", big_model="bitnet-tiny",
               chips=(1, 2), target=50_000.0, prefill=8, decode=2)
    ticks = []
    text = section(st, tick=lambda: ticks.append(1))
    assert len(ticks) == st.jobs and JOBS == 3 * (2 + 3) + 3 * 2
    # the tp row of the scaling table is the multi-chip simulation's result
    tr = standard_trace("bitnet-tiny", 8, 2)
    r = simulate_multichip(load_config("tiny"), tr, 2, "tp")
    assert f"| tp | 2 | {r.decode_tokens_per_s:.2f} |" in text
    # the answer is the fewest chips whose decode rate reaches the target
    rows = dict(re.findall(r"^\| (host|ternary|int8) \| [\d.]+ \| [\d.]+ \| ([^|]+?) \|$", text, re.M))
    for lm, need in rows.items():
        cfg = load_config("tiny").replace(lm_head=lm)
        tps = [simulate_multichip(cfg, standard_trace("bitnet-tiny", 8, 2), n, "tp").decode_tokens_per_s
               for n in (1, 2)]
        want = next((str(n) for n, v in zip((1, 2), tps, strict=True) if v >= 50_000.0), "> 2")
        assert need == want, (lm, tps)
    assert len(rows) == 3 and "**Answer:**" in text
