"""Report builder on the `tiny` preset (real simulator, synthetic netlists) and CLI error paths."""

from __future__ import annotations

import base64
import json

import pytest

import lowbit.cost.energy
from lowbit.cli import main
from lowbit.cost.energy import hw_cost, unit_cost
from lowbit.cost.report import evaluate, write_report
from lowbit.rtl.synth import SynthError
from lowbit.sim.config import load_config

CAPS = {"nand2_1": 4e-15, "dfxtp_1": 16e-15}


def _fake_hw(cfg):
    cells = {"nand2_1": 200, "dfxtp_1": 40}
    us = [unit_cost(cfg, u, cells, CAPS, cfg.tint.cores if u == "tint" else 1, 0.25, area_sky130_um2=1500.0)
          for u in ("tint", "booth", "lop", "sfu")]
    return hw_cost(cfg, us)


@pytest.fixture(scope="module")
def tiny_result():
    cfg = load_config("tiny")
    return evaluate(cfg, "bitnet-tiny", 8, 4, hw=_fake_hw(cfg))


def test_report_numbers_consistent(tiny_result):
    r = tiny_result
    j = r.to_json()
    d = r.decode
    assert j["area_mm2"] == pytest.approx(r.hw.area_mm2) and j["area_mm2"] > 0
    assert j["power_mw"] == pytest.approx(d.core_j / d.time_s * 1e3)
    assert j["energy_per_token_j"] == pytest.approx(d.core_j / 4)
    assert j["tokens_per_s"] == pytest.approx(4 / d.time_s)
    assert d.time_s == pytest.approx(r.sim["decode_cycles"] / r.cfg.clock_hz)
    assert j["fom_tops_per_mm2_w"] == pytest.approx(j["tops"] / (j["area_mm2"] * j["power_mw"] / 1e3))
    # decode activity = full run - prefill-only run: decode busy cycles cannot exceed decode cycles per unit
    assert 0 < d.busy_cycles["tint"] <= r.sim["decode_cycles"] * r.cfg.tint.cores
    assert r.prefill.tokens == 8 and r.prefill.core_j > 0


def test_write_report_outputs(tiny_result, tmp_path):
    out = tmp_path / "rep" / "tiny"
    files = write_report([tiny_result], out, json_path=tmp_path / "m.json")
    assert [p.parent for p in files[:-1]] == [out] * 6 and files[-1] == tmp_path / "m.json"
    assert sorted(p.name for p in out.iterdir()) == ["area.png", "energy.png", "perf.png", "power.png",
                                                      "report.html", "report.md"]
    md = (out / "report.md").read_text()
    assert "0.223" in md and "65.97" in md and "17.4" in md and "1 op = 1 MAC" in md and "Stillmaker" in md
    assert "![area](area.png)" in md  # figure links resolve inside the directory
    page = (out / "report.html").read_text()
    b64 = page.split("data:image/png;base64,")[1].split('"')[0]
    assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "area.png" not in page  # images are inlined, not linked
    assert (out / "area.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    m = json.loads((tmp_path / "m.json").read_text())["tiny"]
    for k in ("area_mm2", "power_mw", "energy_per_token_j", "tokens_per_s", "fom_tops_per_mm2_w"):
        assert m[k] > 0


def test_cli_node_out_of_range(tmp_path, capsys):
    toml = (load_config("tiny").source and open(load_config("tiny").source).read()).replace("node_nm = 28", "node_nm = 5")
    f = tmp_path / "n5.toml"
    f.write_text(toml)
    rc = main(["report", "--hw", str(f), "--model", "bitnet-tiny", "--out", str(tmp_path / "o" / "r")])
    assert rc == 2
    assert "7..180 nm" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_synthesis_failure_writes_nothing(tmp_path, capsys, monkeypatch):
    def fail(cfg, **kw):
        raise SynthError("synthesis failed at step 'ABC pass: ERROR: x'; yosys log: /x/yosys.log")

    monkeypatch.setattr(lowbit.cost.energy, "build_hw_cost", fail)
    rc = main(["report", "--hw", "tiny", "--model", "bitnet-tiny", "--prefill", "4", "--decode", "2",
               "--out", str(tmp_path / "o" / "r"), "--json", str(tmp_path / "o" / "m.json")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "ABC pass" in err and "yosys.log" in err
    assert not (tmp_path / "o").exists()


def test_cli_missing_sky130(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LOWBIT_SKY130_DIR", str(tmp_path / "none"))
    rc = main(["synth", "--hw", "tiny", "--unit", "tint"])
    assert rc == 2
    assert "make sky130" in capsys.readouterr().err


def test_cli_writes_into_the_out_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(lowbit.cost.energy, "build_hw_cost", lambda cfg, **kw: _fake_hw(cfg))
    out, js = tmp_path / "rep", tmp_path / "rep" / "metrics.json"
    rc = main(["report", "--hw", "tiny", "--model", "bitnet-tiny", "--prefill", "8", "--decode", "4",
               "--out", str(out), "--json", str(js)])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["area.png", "energy.png", "metrics.json", "perf.png",
                                                      "power.png", "report.html", "report.md"]
    m = json.loads(js.read_text())["tiny"]
    assert m["hw"] == "tiny" and m["model"] == "bitnet-tiny" and m["decode"]["tokens"] == 4
    assert f"wrote {out / 'report.md'}" in capsys.readouterr().out
    # `--json -`: the metrics alone on standard output, progress on stderr
    rc = main(["report", "--hw", "tiny", "--model", "bitnet-tiny", "--prefill", "8", "--decode", "4",
               "--out", str(tmp_path / "rep2"), "--json", "-"])
    cap = capsys.readouterr()
    assert rc == 0 and json.loads(cap.out) == json.loads(js.read_text()) and "wrote" in cap.err


def test_side_by_side_and_dram_energy(tiny_result, tmp_path):
    """Two designs: one column each with ratios to the first; energy per token with DRAM = (core + DRAM
    energy of decode) / decode tokens."""
    cfg2 = load_config("tiny").replace(**{"tint.cores": 2})
    r2 = evaluate(cfg2.replace(name="tiny-2core"), "bitnet-tiny", 8, 4, hw=_fake_hw(cfg2))
    d = tiny_result.decode
    assert tiny_result.to_json()["energy_per_token_with_dram_j"] == pytest.approx((d.core_j + d.dram_j) / 4)
    write_report([tiny_result, r2], tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "## Designs side by side" in md and "| metric | tiny | tiny-2core |" in md
    row = next(line for line in md.splitlines() if line.startswith("| decode tokens/s |"))
    a, b = tiny_result.to_json()["tokens_per_s"], r2.to_json()["tokens_per_s"]
    assert f"{b:.2f} ({b / a:.2f}x)" in row
    head = next(line for line in md.splitlines() if line.startswith("| tiny |"))
    assert head.endswith(f"| {tiny_result.to_json()['energy_per_token_with_dram_j'] * 1e3:.4g} |")
