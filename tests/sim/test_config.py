"""Hardware config: presets load with the documented numbers; every bad input gives one line + exit 2."""

from __future__ import annotations

import pytest

from lowbit.sim.config import from_dict, list_presets, load_config, to_dict
from lowbit.sim.errors import ConfigError
from tests.cli_util import assert_one_line_error, lowbit


def test_presets_load_and_match_the_paper_figures():
    assert {"vitallm", "vitallm-bs", "vitallm-fp4", "tiny"} <= set(list_presets())
    v = load_config("vitallm")
    # [C]: 1 GHz, 0.8 V, 16 nm, 120 KB on-chip memory.
    assert v.clock_hz == 1e9 and v.supply_v == 0.8 and v.node_nm == 16
    assert v.sram_bytes == 120 * 1024
    # design hypothesis §5.1: 256 ternary MAC/cycle aggregate (TINT 2x6x16 + BoothFlex 4x4x4).
    assert v.tint.macs_per_cycle + v.booth.ternary_macs_per_cycle == 256
    assert v.booth.int8_macs_per_cycle == 16
    # LPDDR5X-8533 x64: 4 ch * 16 bit / 8 * 8533e6 = 68.264 GB/s.
    assert v.dram.peak_bytes_per_s == pytest.approx(68.264e9)
    assert load_config("vitallm-bs").booth.bit_serial
    fp4 = load_config("vitallm-fp4")
    assert not fp4.has("tint") and fp4.has("fp4") and fp4.fp4.macs_per_cycle == 192 and fp4.fp4.block == 16


def test_round_trip_and_replace():
    v = load_config("vitallm")
    assert from_dict(to_dict(v), source=v.source) == v
    w = v.replace(**{"lop.k": 16, "tint.lanes": 8})
    assert w.lop.k == 16 and w.tint.lanes == 8 and v.lop.k == 32
    with pytest.raises(ConfigError, match="lop.k = -1"):
        v.replace(**{"lop.k": -1})


BASE = (load_config("tiny").source and open(load_config("tiny").source).read())

BAD_CONFIGS = [
    # (description, edit of the tiny preset's TOML, expected message regex)
    ("typo in a field name", lambda s: s.replace("tree_width = 4", "tree_widht = 4"),
     r"tint.tree_widht: unknown field \(did you mean 'tree_width'\?\)"),
    ("wrong type", lambda s: s.replace("lanes = 2\ntree_width", 'lanes = "two"\ntree_width'),
     r"tint.lanes = 'two': must be an integer"),
    ("negative size", lambda s: s.replace("bytes = 2048", "bytes = -2048", 1), r"sram\[0\].bytes = -2048: must be >= 1"),
    ("bad enum value", lambda s: s.replace('model = "simple"', 'model = "ddr9"'), r"dram.model = 'ddr9': must be one of"),
    ("unknown unit", lambda s: s.replace('"lop", "sfu"]', '"lopp", "sfu"]'), r"units contains 'lopp' \(did you mean 'lop'\?\)"),
    ("truncated TOML", lambda s: s[: s.index("[booth]") + 4], r"not valid TOML"),
    ("missing name", lambda s: s.replace('name = "tiny"\n', ""), r"missing required field 'name'"),
    ("duplicate buffer", lambda s: s.replace('name = "kv"', 'name = "act"'), r"duplicate buffer name"),
    ("refresh longer than interval", lambda s: s.replace("[dram]\n", "[dram]\ntRFC_ns = 5000.0\n"),
     r"tRFC_ns = 5000.0 must be smaller than tREFI_ns"),
    ("node outside scaling range", lambda s: s.replace("node_nm = 28", "node_nm = 1"), r"node_nm = 1.0: .*3..180 nm"),
    ("sfu op typo", lambda s: s.replace("[sfu]\nlanes = 4", "[sfu]\nlanes = 4\n[sfu.latency]\nsoftmx = 3"),
     r"sfu.latency.softmx: unknown op \(did you mean 'softmax'\?\)"),
    ("boolean as number", lambda s: s.replace("acc_bits = 20\n\n[booth]", "acc_bits = true\n\n[booth]"),
     r"tint.acc_bits = True: must be an integer"),
]


@pytest.mark.parametrize("desc,edit,pattern", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_config_one_line_error(tmp_path, desc, edit, pattern):
    bad = edit(BASE)
    assert bad != BASE, f"edit for '{desc}' did not apply"
    f = tmp_path / "bad.toml"
    f.write_text(bad)
    r = lowbit("config", "show", str(f))
    assert_one_line_error(r, pattern, desc)


def test_unknown_preset_and_missing_file(tmp_path):
    r = lowbit("config", "show", "vitalm")
    assert r.returncode == 2 and "did you mean 'vitallm'" in r.stderr
    r = lowbit("config", "show", str(tmp_path / "nope.toml"))
    assert r.returncode == 2 and "config file not found" in r.stderr


def test_binary_file_is_rejected(tmp_path):
    f = tmp_path / "x.toml"
    f.write_bytes(b"\xff\xfe\x00garbage")
    r = lowbit("config", "show", str(f))
    assert r.returncode == 2 and r.stderr.startswith("error: ")
