"""Timeline PNG: the binned busy time read back from the trace file equals the simulator's busy cycles."""

from __future__ import annotations

import numpy as np
import pytest

from lowbit.cli import main
from lowbit.cost.timeline_plot import read_timeline
from lowbit.sim.config import load_config
from lowbit.sim.engine import simulate
from lowbit.sim.timeline import open_timeline
from lowbit.sim.workloads import standard_trace


def test_busy_read_back_equals_simulator(tmp_path):
    cfg = load_config("tiny")  # 200 MHz: 5 ns per cycle, so every slice edge is a whole ns
    path = tmp_path / "t.pftrace"
    tl = open_timeline(path, cfg, "t")
    r = simulate(cfg, standard_trace("bitnet-tiny", 8, 3), timeline=tl)
    tl.close()
    d = read_timeline(path, bins=97)
    assert d["t_max"] == r.cycles * 5 and len(d["steps"]) == 4
    for i, n in enumerate(d["units"]):
        total_ns = d["busy"][i].sum() * d["bin_ns"]
        if n in r.activity["busy_cycles"]:
            assert total_ns == pytest.approx(r.activity["busy_cycles"][n] * 5)
    assert np.all(d["busy"][[d["units"].index(n) for n in r.activity["busy_cycles"]]] <= 1 + 1e-9)
    assert "DRAM bandwidth (GB/s)" in d["counters"]


def test_cli(tmp_path, capsys):
    path = tmp_path / "t.pftrace"
    assert main(["sim", "--model", "bitnet-tiny", "--hw", "tiny", "--prefill", "4", "--decode", "2", "--quiet",
                 "--timeline", str(path)]) == 0
    assert main(["plot-timeline", str(path), "--out", str(tmp_path / "png")]) == 0
    assert (tmp_path / "png" / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["plot-timeline", str(tmp_path / "missing.pftrace"), "--out", str(tmp_path / "x")]) == 2
    assert "no such timeline file" in capsys.readouterr().err
    (tmp_path / "bad.pftrace").write_bytes(b"\x01\x02\x03")
    assert main(["plot-timeline", str(tmp_path / "bad.pftrace"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and not (tmp_path / "x").exists()
