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


# ----------------------------------------------------------------------------- --set, extends, complete files


def test_set_overrides_are_typed_and_validated():
    from lowbit.sim.config import load_hw

    v = load_hw("vitallm", ["tint.lanes=8", "sram.kv.bytes=32768", "clock_hz=8e8", "dram.type=LPDDR4X",
                            "booth.precisions=2,4", "sfu.latency.softmax=20", "lop.enabled=false"])
    assert v.tint.lanes == 8 and v.buffer("kv").bytes == 32768 and v.buffer("weight").bytes == 32768
    assert v.clock_hz == 8e8 and isinstance(v.clock_hz, float) and v.dram.type == "LPDDR4X"
    assert v.booth.precisions == (2, 4) and v.sfu.latency["softmax"] == 20 and v.sfu.latency["rope"] == 8
    assert v.lop.enabled is False and v.source == load_config("vitallm").source
    # every other field is the preset's own
    base = to_dict(load_config("vitallm"))
    got = to_dict(v)
    changed = {k for k in base if base[k] != got[k]}
    assert changed == {"tint", "sram", "clock_hz", "dram", "booth", "sfu", "lop"}
    assert load_hw("vitallm", ["units=[\"fp4\", \"booth\", \"lop\", \"sfu\"]", "fp4.enabled=true"]).has("fp4")


SET_ERRORS = [
    ("tint.lanez=4", r"--set tint.lanez=4: unknown field 'tint.lanez' \(did you mean 'lanes'\?\)"),
    ("tint.lanes=four", r"--set tint.lanes=four: must be an integer"),
    ("tint.lanes=4.5", r"--set tint.lanes=4.5: must be an integer"),
    ("booth.ternary_mode=yes", r"must be true or false"),
    ("sram.kvv.bytes=3", r"no SRAM buffer named 'kvv' \(did you mean 'kv'\?\); have: weight, act"),
    ("sram.kv=3", r"SRAM buffers are set by name: sram.<buffer>.<field>"),
    ("tint=3", r"'tint' is a table; set one of its fields \(cores, lanes"),
    ("nosuch.x=1", r"unknown section 'nosuch'"),
    ("foo", r"--set 'foo': expected SECTION.FIELD=VALUE"),
    ("lop.k=0", r"--set: lop.k = 0: must be >= 1"),  # validated after the override, like a file
    ("dram.type=DDR9", r"--set: dram.type = 'DDR9': must be one of 'LPDDR4X'"),
    ("units=tint,booth,lop,sfu,fp4", r"--set: fp4.enabled = false disagrees with units"),
]


@pytest.mark.parametrize("override,pattern", SET_ERRORS, ids=[s for s, _ in SET_ERRORS])
def test_bad_set_is_one_line(override, pattern):
    from lowbit.sim.config import load_hw

    with pytest.raises(ConfigError, match=pattern):
        load_hw("tiny", [override])


def test_set_on_the_command_line(tmp_path):
    """`config show` and `sim` take --set; the result equals the edited file's."""
    import json

    r = lowbit("config", "show", "tiny", "--set", "tint.lanes=4", "--set", "sram.act.bytes=4096", "--json", "-")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    edited = BASE.replace("lanes = 2\ntree_width", "lanes = 4\ntree_width").replace(
        'name = "act"\nbytes = 2048', 'name = "act"\nbytes = 4096')
    (tmp_path / "t.toml").write_text(edited)
    assert d == to_dict(load_config(tmp_path / "t.toml"))
    r = lowbit("sim", "--hw", "tiny", "--model", "bitnet-tiny", "--set", "tint.lanez=4")
    assert_one_line_error(r, r"--set tint.lanez=4: unknown field")


def test_extends_merges_tables_and_replaces_arrays(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "vitallm"\ndescription = "a"\n[lop]\nk = 16\n[sfu.latency]\nrope = 9\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.toml").write_text(  # a path relative to the extending file; a chain of two
        'extends = "../a.toml"\nname = "bee"\n[[sram]]\nname = "weight"\nbytes = 1024\n[[sram]]\nname = "act"\n'
        'bytes = 1024\n[[sram]]\nname = "kv"\nbytes = 1024\n[[sram]]\nname = "lop"\nbytes = 1024\n'
        '[[sram]]\nname = "psum"\nbytes = 1024\n[[sram]]\nname = "sfu"\nbytes = 1024\n')
    v, a, b = load_config("vitallm"), load_config(tmp_path / "a.toml"), load_config(tmp_path / "sub" / "b.toml")
    assert a.name == "a" and a.description == "a" and a.lop.k == 16 and a.lop.lanes == v.lop.lanes
    assert a.sfu.latency["rope"] == 9 and a.sfu.latency["softmax"] == v.sfu.latency["softmax"]
    assert a.sram == v.sram and a.dram == v.dram and a.tint == v.tint
    assert to_dict(a) == {**to_dict(v), "name": "a", "description": "a", "lop": to_dict(a.lop), "sfu": to_dict(a.sfu)}
    assert b.name == "bee" and b.lop.k == 16 and b.sram_bytes == 6 * 1024  # [[sram]] replaced whole
    assert all(x.banks == 1 for x in b.sram)  # the array's entries are new: their fields take defaults


def test_extends_errors(tmp_path):
    (tmp_path / "c1.toml").write_text('extends = "c2.toml"\n')
    (tmp_path / "c2.toml").write_text('extends = "c1.toml"\n')
    with pytest.raises(ConfigError, match=r"makes a cycle \(c1.toml -> c2.toml -> c1.toml\)"):
        load_config(tmp_path / "c1.toml")
    (tmp_path / "self.toml").write_text('extends = "self.toml"\n')
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "self.toml")
    (tmp_path / "n.toml").write_text('extends = "vitalm"\n')
    r = lowbit("config", "show", str(tmp_path / "n.toml"))
    assert_one_line_error(r, r"n.toml: extends = 'vitalm': unknown hardware preset 'vitalm' \(did you mean 'vitallm'\?\)")
    (tmp_path / "s.toml").write_text('extends = "vitallm"\n[[sram]]\nname = "weight"\nbytes = 4096\n')
    with pytest.raises(ConfigError, match=r"missing \[\[sram\]\] 'act', 'kv', 'lop', 'psum', 'sfu'"):
        load_config(tmp_path / "s.toml")


def test_partial_file_without_extends_is_an_error(tmp_path):
    """The failure this rule exists for: a file with only a [tint] table used to get 0 bytes of SRAM."""
    f = tmp_path / "part.toml"
    f.write_text("[tint]\nlanes = 4\n")
    r = lowbit("sim", "--hw", str(f), "--model", "bitnet-tiny")
    assert_one_line_error(r, r"part.toml: incomplete hardware config, missing name; clock_hz; node_nm; units; "
                             r"\[\[sram\]\] 'weight', 'act', 'kv', 'lop', 'psum', 'sfu'; \[dram\] model; .*extends")
    f.write_text(BASE.replace("[booth]\nlanes = 2\nwidth = 2\nacc_bits = 20\n", ""))
    with pytest.raises(ConfigError, match=r"missing \[booth\];"):
        load_config(f)
    f.write_text(BASE.replace('[[sram]]\nname = "sfu"\nbytes = 512\n', '[[sram]]\nname = "sfu"\n'))
    with pytest.raises(ConfigError, match=r"sram\[5\]: missing required field 'bytes'"):
        load_config(f)


def test_presets_are_complete_files():
    import tomllib

    from lowbit.sim.config import PRESET_DIR, _check_complete

    for p in sorted(PRESET_DIR.glob("*.toml")):
        data = tomllib.loads(p.read_text())
        assert "extends" not in data
        _check_complete(data, str(p))


@pytest.mark.parametrize("cmd", [["rtl", "--out", "OUT"], ["verify", "--unit", "tint"], ["synth", "--unit", "tint"],
                                 ["report", "--model", "bitnet-tiny", "--out", "OUT"], ["config", "show"]])
def test_every_hw_command_takes_set(tmp_path, cmd):
    args = [a.replace("OUT", str(tmp_path / "o")) for a in cmd]
    args = args[:2] + ["tiny"] + args[2:] if cmd[0] == "config" else [*args, "--hw", "tiny"]
    r = lowbit(*args, "--set", "tint.lanez=4")
    assert_one_line_error(r, r"--set tint.lanez=4: unknown field 'tint.lanez' \(did you mean 'lanes'\?\)", cmd[0])
    assert not (tmp_path / "o").exists()


def test_rtl_follows_set(tmp_path):
    """The generated Verilog is the overridden design's (tint lanes 2 -> 3)."""
    import json

    pytest.importorskip("amaranth")
    r = lowbit("rtl", "--hw", "tiny", "--unit", "tint", "--set", "tint.lanes=3", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["units"]["tint"]["parameters"]["lanes"] == 3, m
