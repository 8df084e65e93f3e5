"""Sweep specs: every mistake is one line naming the key; grids, random samples and --set values are exact."""

from __future__ import annotations

import pytest

from lowbit.explore.evaluate import Point, rerun_command
from lowbit.explore.execute import points_of
from lowbit.explore.spec import SpecError, Workload, format_value, load_spec
from lowbit.sim.config import load_config, load_hw
from tests.cli_util import assert_one_line_error, lowbit

SPEC = """
[sweep]
base = "tiny"
objectives = ["decode_tok_s", "prefill_latency_s"]

[workload]
model = "bitnet-tiny"
prefill = 8
decode = 4

[params]
"tint.cores" = [1, 2]
"sram.kv.bytes" = { range = [1024, 4096], step = 1024 }
clock_hz = [1e8, 2e8]
schedule = ["inorder", "dependency-aware"]
"""


def write(tmp_path, text: str):
    p = tmp_path / "spec.toml"
    p.write_text(text)
    return p


def test_grid_points_and_rerun_lines(tmp_path):
    spec = load_spec(write(tmp_path, SPEC))
    assert spec.level == "sim" and spec.grid_size() == 2 * 4 * 2 * 2
    pts = points_of(spec)
    assert len(pts) == 32 and [p.index for p in pts] == list(range(32))
    assert pts[0].values == {"tint.cores": 1, "sram.kv.bytes": 1024, "clock_hz": 1e8, "schedule": "inorder"}
    assert pts[-1].values == {"tint.cores": 2, "sram.kv.bytes": 4096, "clock_hz": 2e8, "schedule": "dependency-aware"}
    assert pts[5].values == {"tint.cores": 1, "sram.kv.bytes": 2048, "clock_hz": 1e8, "schedule": "dependency-aware"}
    assert pts[5].sets() == ["tint.cores=1", "sram.kv.bytes=2048", "clock_hz=100000000.0"]
    assert rerun_command(spec, pts[5]) == ("lowbit sim --model bitnet-tiny --hw tiny --prefill 8 --decode 4 "
                                          "--schedule dependency-aware --set tint.cores=1 --set sram.kv.bytes=2048 "
                                          "--set clock_hz=100000000.0")
    cfg = load_hw("tiny", pts[5].sets())
    assert cfg.buffer("kv").bytes == 2048 and cfg.clock_hz == 1e8 and cfg.tint.cores == 1


def test_random_is_seeded_and_within_bounds(tmp_path):
    text = SPEC.replace('base = "tiny"', 'base = "tiny"\nstrategy = "random"\nsamples = 50\nseed = 7').replace(
        "clock_hz = [1e8, 2e8]", "clock_hz = { range = [1e8, 4e8], log = true }")
    a, b = points_of(load_spec(write(tmp_path, text))), points_of(load_spec(write(tmp_path, text)))
    assert [p.values for p in a] == [p.values for p in b] and len(a) == 50
    c = points_of(load_spec(write(tmp_path, text.replace("seed = 7", "seed = 8"))))
    assert [p.values for p in a] != [p.values for p in c]
    assert all(1e8 <= p.values["clock_hz"] <= 4e8 and p.values["sram.kv.bytes"] in (1024, 2048, 3072, 4096) for p in a)
    assert {p.values["schedule"] for p in a} == {"inorder", "dependency-aware"}


@pytest.mark.parametrize("value", [3, 2.5e8, True, "LPDDR4X", ("tint", "booth", "lop", "sfu"), 1e-3])
def test_format_value_round_trips_through_set(value):
    path = {int: "tint.cores", float: "clock_hz", bool: "lop.enabled", str: "dram.type", tuple: "units"}[type(value)]
    if value == 1e-3:
        path = "dram.efficiency"
    cfg = load_hw("tiny", [f"{path}={format_value(value)}"])
    got = {"tint.cores": cfg.tint.cores, "clock_hz": cfg.clock_hz, "lop.enabled": cfg.lop.enabled,
           "dram.type": cfg.dram.type, "units": cfg.units, "dram.efficiency": cfg.dram.efficiency}[path]
    assert got == value and type(got) is type(value)


BAD = [
    ("unknown table", lambda s: s + "\n[sweeep]\n", r"\[sweeep\]: unknown table \(did you mean 'sweep'\?\)"),
    ("missing base", lambda s: s.replace('base = "tiny"\n', ""), r"sweep.base: required"),
    ("bad base", lambda s: s.replace('base = "tiny"', 'base = "tinyy"'),
     r"sweep.base = 'tinyy': unknown hardware preset 'tinyy' \(did you mean 'tiny'\?\)"),
    ("bad objective", lambda s: s.replace('"prefill_latency_s"]', '"area"]'),
     r"unknown objective 'area' \(did you mean 'area_mm2'\?\)"),
    ("bad constraint", lambda s: s.replace("[workload]", 'constraints = ["area_mm2 < small"]\n[workload]'),
     r"sweep.constraints: 'area_mm2 < small': write 'METRIC OP NUMBER'"),
    ("bad power model", lambda s: s.replace('base = "tiny"', 'base = "tiny"\npower_model = "spice"'),
     r"sweep.power_model = 'spice': one of liberty, netlist"),
    ("bad control", lambda s: s.replace('base = "tiny"', 'base = "tiny"\ncontrol = "rtl"'),
     r"sweep.control = 'rtl': one of estimate, chip"),
    ("unknown excluded unit", lambda s: s.replace('base = "tiny"', 'base = "tiny"\nexclude_units = ["sfu_rmsnrom"]'),
     r"sweep.exclude_units: unknown RTL unit 'sfu_rmsnrom' \(did you mean 'sfu_rmsnorm'\?\)"),
    ("excluded units not a list", lambda s: s.replace('base = "tiny"', 'base = "tiny"\nexclude_units = "sfu_rmsnorm"'),
     r"sweep.exclude_units = 'sfu_rmsnorm': a list of RTL unit names"),
    ("bad strategy", lambda s: s.replace('base = "tiny"', 'base = "tiny"\nstrategy = "gird"'),
     r"sweep.strategy = 'gird': must be one of grid, random, nsga2 \(did you mean 'grid'\?\)"),
    ("unknown field", lambda s: s.replace('"tint.cores"', '"tint.corse"'),
     r"params.tint.corse: --set tint.corse=1: unknown field 'tint.corse' \(did you mean 'cores'\?\)"),
    ("wrong type", lambda s: s.replace('"tint.cores" = [1, 2]', '"tint.cores" = [1, 2.5]'),
     r"params.tint.cores: --set tint.cores=2.5: must be an integer"),
    ("unknown buffer", lambda s: s.replace('"sram.kv.bytes"', '"sram.kvv.bytes"'), r"no SRAM buffer named 'kvv'"),
    ("bad schedule", lambda s: s.replace('"inorder", ', '"in-order", '),
     r"params.schedule: 'in-order' is not one of"),
    ("grid of a continuous range", lambda s: s.replace("range = [1024, 4096], step = 1024", "range = [1024, 4096]"),
     r"params.sram.kv.bytes: a grid needs values or a range with a step"),
    ("bad range", lambda s: s.replace("range = [1024, 4096]", "range = [4096, 1024]"),
     r"params.sram.kv.bytes.range = \[4096, 1024\]: must be \[low, high\]"),
    ("batch", lambda s: s.replace("decode = 4", "decode = 4\nbatch = 0"), r"workload: batch = 0: must be >= 1 sequences"),
    ("context", lambda s: s.replace("decode = 4", "decode = 4\ncontext = 250"),
     r"workload: context \+ prefill \+ decode = 262: must be in 1..256"),
    ("bad workload key", lambda s: s.replace("decode = 4", "decode = 4\nbatches = 2"), r"workload.batches: unknown key"),
    ("unknown model", lambda s: s.replace('"bitnet-tiny"', '"bitnet-tiyn"'), r"workload.model: unknown model 'bitnet-tiyn'"),
    ("too long", lambda s: s.replace("decode = 4", "decode = 400"),
     r"workload: decode = 400: must be <= 256 tokens \(max_positions of bitnet-tiny\)"),
    ("too long together", lambda s: s.replace("decode = 4", "decode = 250"), r"context \+ prefill \+ decode = 258: must be in 1..256"),
    ("nan range", lambda s: s.replace("range = [1024, 4096]", "range = [1024, nan]"),
     r"params.sram.kv.bytes.range\[1\] = nan: must be a finite number"),
    ("zero step", lambda s: s.replace("step = 1024", "step = 0"), r"params.sram.kv.bytes.step = 0(\.0)?: must be > 0"),
    ("huge seed", lambda s: s.replace('base = "tiny"', 'base = "tiny"\nseed = 4294967296'),
     r"sweep.seed = 4294967296: must be <= 4294967295"),
    ("bool samples", lambda s: s.replace('base = "tiny"', 'base = "tiny"\nstrategy = "random"\nsamples = true'),
     r"sweep.samples = True: must be an integer in 1..1000000 points"),
    ("empty params", lambda s: s[: s.index("[params]")] + "[params]\n", r"\[params\] missing or empty"),
]


@pytest.mark.parametrize("desc,edit,pattern", BAD, ids=[b[0] for b in BAD])
def test_bad_spec_is_one_line(tmp_path, desc, edit, pattern):
    text = edit(SPEC)
    assert text != SPEC
    with pytest.raises(SpecError, match=pattern):
        load_spec(write(tmp_path, text))


def test_bad_spec_on_the_command_line(tmp_path):
    r = lowbit("sweep", "run", str(write(tmp_path, SPEC.replace('"tint.cores"', '"tint.corse"'))), "--out", str(tmp_path / "o"))
    assert_one_line_error(r, r"params.tint.corse: --set tint.corse=1: unknown field")
    assert not (tmp_path / "o").exists()
    r = lowbit("sweep", "show", str(tmp_path / "nothing"))
    assert_one_line_error(r, r"nothing: no sweep.json here; run `lowbit sweep run SPEC --out")


def test_base_path_is_relative_to_the_spec(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "mine.toml").write_text('extends = "tiny"\n[lop]\nk = 4\n')
    spec = load_spec(write(tmp_path, SPEC.replace('base = "tiny"', 'base = "d/mine.toml"')))
    assert spec.base_config().lop.k == 4 and spec.base_config().tint == load_config("tiny").tint
    p = Point(0, {"tint.cores": 2}, Workload("bitnet-tiny", 8, 4))
    assert f"--hw {tmp_path / 'd' / 'mine.toml'}" in rerun_command(spec, p)
