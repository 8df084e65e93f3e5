"""The committed sweep (reports/sweep-vitallm) costs its designs as `lowbit report` does: its vitallm point has the
committed vitallm report's area, its cost options are the ones `make reports` gives `lowbit report`, and (slow:
a 3B simulation plus the Liberty cost model) `lowbit report` on that design and workload gives the point's
numbers exactly."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from lowbit.explore.spec import load_spec
from tests.cli_util import lowbit

ROOT = Path(__file__).resolve().parents[2]
DIR = ROOT / "reports" / "sweep-vitallm"
VITALLM = {"tint.cores": 2, "dram.channels": 4, "sram.weight.bytes": 32768, "lop.k": 32, "booth.lanes": 4}


@pytest.fixture(scope="module")
def rows():
    pq = pytest.importorskip("pyarrow.parquet")
    return pq.read_table(DIR / "results.parquet").to_pylist()


@pytest.fixture(scope="module")
def base(rows):
    (b,) = [r for r in rows if all(r[k] == v for k, v in VITALLM.items())]
    return b


def test_spec_is_256_points_over_5_parameters_around_vitallm(rows):
    spec = load_spec(DIR / "spec.toml")
    assert spec.grid_size() == len(rows) == 256 and len(spec.params) == 5
    assert all(len(p.grid()) >= 2 for p in spec.params)
    w = spec.workloads[0]
    assert (spec.base, w.model, w.prefill, w.decode) == ("vitallm", "bitnet-b1.58-3b", 64, 128)
    cfg = spec.base_config()  # the base design's own values are a point of the grid
    assert VITALLM == {"tint.cores": cfg.tint.cores, "dram.channels": cfg.dram.channels,
                       "sram.weight.bytes": cfg.buffer("weight").bytes, "lop.k": cfg.lop.k,
                       "booth.lanes": cfg.booth.lanes}


def test_cost_options_are_those_of_make_reports():
    """The vitallm report's `lowbit report` line in the Makefile and the spec exclude the same units with the same
    (default) power model; the report costs vitallm alone from its chip netlist (`--control chip:vitallm`), which
    needs a chip bench run a sweep point does not have, so the sweep keeps the default unit sum + control estimate."""
    make = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    line = next(m for m in make.splitlines() if "lowbit report" in m and "reports/vitallm" in m)
    args = shlex.split(line.split("#")[0])
    excluded = tuple(args[i + 1] for i, a in enumerate(args) if a == "--exclude-unit")
    controls = [args[i + 1] for i, a in enumerate(args) if a == "--control"]
    assert "--power-model" not in args and controls == ["chip:vitallm"]
    spec = load_spec(DIR / "spec.toml")
    assert spec.cost.control == "estimate" and spec.cost.power_model == "liberty"
    assert spec.cost.exclude_units == excluded == ("sfu_rmsnorm",)


def test_vitallm_point_has_the_unit_sum_area(base):
    """Area does not depend on the workload: the point's full-chip area under the unit sum + control estimate is the
    one the README quotes for that model (the slow test below reruns `lowbit report` for it to the last bit)."""
    readme = re.sub(r"\s+", " ", (ROOT / "README.md").read_text())
    (quoted,) = re.findall(r"the unit sum and a control estimate give ([\d.]+) mm²", readme)
    assert base["status"] == "ok" and round(base["area_mm2"], 3) == float(quoted) == 0.440


@pytest.mark.slow
def test_vitallm_point_equals_lowbit_report(base, tmp_path):
    """`lowbit report` on the point's design and workload, with the spec's cost options: the same area, decode power,
    energy/token incl. DRAM, FOM and tokens/s (the point's rerun line names the design)."""
    spec = load_spec(DIR / "spec.toml")
    assert re.fullmatch(r"lowbit sim --model bitnet-b1\.58-3b --hw vitallm --prefill 64 --decode 128( --set \S+)*",
                        base["rerun"])
    sets = [a for s in re.findall(r"--set (\S+)", base["rerun"]) for a in ("--set", s)]
    r = lowbit("report", "--hw", "vitallm", *sets, "--model", "bitnet-b1.58-3b", "--prefill", "64", "--decode", "128",
               *spec.cost.report_flags(), "--out", str(tmp_path / "out"), "--json", "-", timeout=3600)
    assert r.returncode == 0, r.stderr
    ref = json.loads(r.stdout)["vitallm"]
    assert base["area_mm2"] == ref["area_mm2"] and base["decode_power_mw"] == ref["power_mw"]
    assert base["energy_per_token_mj"] == ref["energy_per_token_with_dram_j"] * 1e3
    assert base["tops_per_mm2_w"] == ref["fom_tops_per_mm2_w"] and base["decode_tok_s"] == ref["tokens_per_s"]
