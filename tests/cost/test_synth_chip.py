"""`lowbit synth --chip` plumbing: a chip top's memories stay macros (costed by cost/sram.py), its logic is
synthesised (hierarchically); without the chip-top RTL the command refuses in one line."""

from __future__ import annotations

import json
import sys
import types

import pytest

from lowbit.cli import main
from lowbit.cost.area import PLACEMENT_UTILISATION
from lowbit.rtl import synth

pytest.importorskip("amaranth")


def _fake_chip(cfg):
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.memory import Memory
    from amaranth.lib.wiring import In, Out

    class Top(wiring.Component):  # a 256 x 32 buffer (1 read + 1 write port) and a 32-bit accumulator
        def __init__(self):
            super().__init__({"addr": In(8), "wdata": In(32), "we": In(1), "acc": Out(32)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.buf = mem = Memory(shape=32, depth=256, init=[])
            wr, rd = mem.write_port(), mem.read_port()
            m.d.comb += [wr.addr.eq(self.addr), wr.data.eq(self.wdata), wr.en.eq(self.we), rd.addr.eq(self.addr)]
            m.d.sync += self.acc.eq(self.acc + rd.data)
            return m

    return Top()


@pytest.fixture
def fake_chip(monkeypatch):
    mod = types.ModuleType(synth.CHIP_MODULE)
    mod.chip_top = _fake_chip
    monkeypatch.setitem(sys.modules, synth.CHIP_MODULE, mod)
    monkeypatch.setattr(synth, "chip_available", lambda: True)


def test_synth_chip_keeps_memories_as_macros(fake_chip, tmp_path, capsys):
    from lowbit.sim.config import load_config

    r = synth.synth_chip(load_config("tiny"), cache_dir=tmp_path)
    assert r.top == synth.CHIP_TOP
    assert r.memories == [{"name": "buf", "width": 32, "size": 256, "rd_ports": 1, "wr_ports": 1,
                           "module": synth.CHIP_TOP}]
    assert r.n_flops == 32  # the accumulator only: the 8,192 memory bits are not mapped to flops
    assert not any(c.startswith("$") for c in r.cells)
    v = tmp_path / "chip.v"
    v.write_text(synth.chip_verilog(load_config("tiny")))
    assert main(["synth", "--chip", "--hw", "tiny", "--verilog", str(v), "--json", str(tmp_path / "c.json")]) == 0
    d = json.loads((tmp_path / "c.json").read_text())
    assert d["memories"][0]["bytes"] == 1024 and d["memories"][0]["ports"] == 1 and d["sram_area_at_node_um2"] > 0
    m = d["memories"][0]  # not a config buffer: its 256 x 32 flops alone outgrow the macro, so it stays one
    assert m["regfile_bound"] and m["regfile_flops"] == 256 * 32 and m["clocked"] and m["built"] == "sram"
    assert m["regfile_area_um2"] == pytest.approx(256 * 32 * 20.0192 * d["area_factor"] / PLACEMENT_UTILISATION)
    assert d["n_flops"] == 32 and [m["part"] for m in d["modules"]] == ["control"]


def test_synth_chip_without_chip_rtl_refuses(monkeypatch, capsys):
    monkeypatch.setattr(synth, "chip_available", lambda: False)
    assert main(["synth", "--chip", "--hw", "vitallm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no chip-top RTL" in err[0]


def test_synth_needs_unit_or_chip(capsys):
    assert main(["synth", "--hw", "vitallm"]) == 2
    assert "exactly one of --unit NAME or --chip" in capsys.readouterr().err
