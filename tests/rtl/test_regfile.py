"""A chip memory built as a register file (rtl/synth_hier.regfile_verilog): real yosys synthesis, exact flops."""

from __future__ import annotations

import pytest

from lowbit.rtl.synth import SynthError
from lowbit.rtl.synth_hier import add_netlist, regfile_result, regfile_verilog

RF = {"name": "imem", "width": 8, "size": 4, "rd_ports": 1, "wr_ports": 1}


def test_registered_read_register_file_is_one_flop_per_bit_plus_the_read_register(sky130_root, synth_cache):
    """4 words x 8 bits, one write port, one registered read: 4 x 8 storage flops + 8 read-register flops;
    a combinational read has the 32 storage flops only."""
    r = regfile_result({**RF, "clocked": True})
    assert r.n_flops == 4 * 8 + 8
    assert r.memories == []  # memory_map: no memory left, only cells
    c = regfile_result({**RF, "clocked": False})
    assert c.n_flops == 4 * 8
    assert r.area_um2 > c.area_um2
    two = add_netlist(c, r, 2)
    assert two.n_flops == 32 + 2 * 40 and two.area_um2 == pytest.approx(c.area_um2 + 2 * r.area_um2)


def test_two_read_ports_two_write_ports_text():
    t = regfile_verilog("rf", {**RF, "rd_ports": 2, "wr_ports": 2, "clocked": False})
    assert "if (we1) mem[wa1] <= wd1;" in t and "always @* rd1 = mem[ra1];" in t and "reg [7:0] mem [0:3];" in t


def test_bad_shape_is_refused_in_one_line():
    with pytest.raises(SynthError, match="width 0, size 4, 1 read and 1 write ports: each must be >= 1"):
        regfile_verilog("rf", {**RF, "width": 0, "clocked": True})
