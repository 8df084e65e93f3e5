"""Hierarchical synthesis (rtl/synth_hier.py): each unique module once, cells x instances equal to a
flattened synthesis of a design with nothing to optimise across module boundaries."""

from __future__ import annotations

import pytest

import lowbit.rtl.synth as synth
from lowbit.rtl.synth_hier import children_of, module_key, split_modules, synth_hier

# Amaranth-style: one module per instance, escaped hierarchical names, numbered internal names.
# Each child registers a ^ b (8 flops + 8 xor2); the top adds the two children's outputs into a register.
DESIGN = r"""(* top =  1  *)
module top(clk, a, b, c, q);
  input clk; input [7:0] a; input [7:0] b; input [7:0] c; output reg [7:0] q;
  wire [7:0] \x$12 ; wire [7:0] \y$13 ;
  \top.u0  u0 (
    .clk(clk), .a(a), .b(b), .q(\x$12 )
  );
  \top.u1  u1 (
    .clk(clk), .a(b), .b(c), .q(\y$13 )
  );
  always @(posedge clk) q <= \x$12 + \y$13 ;
endmodule

(* generator = "Amaranth" *)
module \top.u0 (clk, a, b, q);
  input clk; input [7:0] a; input [7:0] b; output reg [7:0] q;
  wire [7:0] \$5 ;
  assign \$5 = a ^ b;
  always @(posedge clk) q <= \$5 ;
endmodule

(* generator = "Amaranth" *)
module \top.u1 (clk, a, b, q);
  input clk; input [7:0] a; input [7:0] b; output reg [7:0] q;
  wire [7:0] \$9 ;
  assign \$9 = a ^ b;
  always @(posedge clk) q <= \$9 ;
endmodule
"""


def test_split_and_keys():
    mods = split_modules(DESIGN)
    assert list(mods) == ["top", "top.u0", "top.u1"]
    assert mods["top.u0"].startswith("(* generator")
    assert children_of(mods["top"], set(mods)) == ["top.u0", "top.u1"]
    # u0 and u1 differ only in their names and Amaranth's numbering: one key
    k0 = module_key("top.u0", mods["top.u0"], {})
    assert k0 == module_key("top.u1", mods["top.u1"], {})
    assert k0 != module_key("top.u0", mods["top.u0"].replace("a ^ b", "a & b"), {})


def test_hierarchical_equals_flattened(sky130_root, synth_cache, tmp_path, monkeypatch):
    v = tmp_path / "d.v"
    v.write_text(DESIGN)
    flat = synth.synthesize(v, "top")
    calls = []
    h = synth_hier(DESIGN, "top", progress=lambda m, i, n: calls.append(m))
    assert calls == ["top", "top.u0"]  # u1 is u0's synthesis
    assert h.instances == {"top": 1, "top.u0": 1, "top.u1": 1}
    assert h.modules["top.u0"].cells == {"dfxtp_1": 8, "xor2_1": 8}  # hand count
    assert h.modules["top"].children == {"top.u0": 1, "top.u1": 1}
    assert h.cells == flat.cells
    assert h.area_um2 == pytest.approx(flat.area_um2, rel=1e-9)
    assert h.n_flops == 24

    def boom():
        raise AssertionError("cache miss: yosys ran again")

    monkeypatch.setattr(synth, "yosys_exe", boom)
    assert synth_hier(DESIGN, "top").cells == flat.cells


def test_keep_going_lists_a_failed_module(sky130_root, synth_cache, monkeypatch):
    real = synth.synthesize

    def flaky(paths, top, **kw):
        if top == "top.u0":
            raise synth.SynthError("yosys timed out after 1 s in step 'ABC'")
        return real(paths, top, **kw)

    monkeypatch.setattr("lowbit.rtl.synth_hier.synthesize", flaky)
    with pytest.raises(synth.SynthError):
        synth_hier(DESIGN, "top")
    h = synth_hier(DESIGN, "top", keep_going=True)
    assert set(h.modules) == {"top"} and set(h.missing) == {"top.u0", "top.u1"}  # u1 is u0's synthesis
    assert "timed out" in h.missing["top.u0"] and h.n_flops == 8


# A child holding a registered 16 x 4 lookup table (d = a * a mod 16 + 1, a case over constants that yosys keeps
# as a ROM) beside a register of the top.
ROM_DESIGN = r"""(* top =  1  *)
module top(clk, a, q);
  input clk; input [3:0] a; output [3:0] q;
  \top.t  t (
    .clk(clk), .a(a), .d(q)
  );
endmodule

(* generator = "Amaranth" *)
module \top.t (clk, a, d);
  input clk; input [3:0] a; output reg [3:0] d;
  reg [3:0] v;
  always @* begin
    case (a)
""" + "".join(f"      4'd{i}: v = 4'd{(i * i + 1) % 16};\n" for i in range(16)) + r"""    endcase
  end
  always @(posedge clk) d <= v;
endmodule
"""


def test_read_only_tables_are_mapped_to_logic(sky130_root, synth_cache, tmp_path):
    """With memories kept as macros, a lookup table yosys keeps as a ROM is mapped to cells from its contents
    and counted in its module: the same cells as yosys mapping the table in place (keep_memories off)."""
    v = tmp_path / "rom.v"
    v.write_text(ROM_DESIGN)
    flat = synth.synthesize(v, "top")
    h = synth_hier(ROM_DESIGN, "top", keep_memories=True)
    assert h.roms == {"top.t": [{"name": h.roms["top.t"][0]["name"], "width": 4, "size": 16,
                                 "cells": h.modules["top.t"].n_cells, "area_um2": h.modules["top.t"].area_um2}]}
    assert h.modules["top.t"].memories == [] and h.memories == []
    assert h.n_flops == 4  # the table's registered read
    assert h.cells == flat.cells


def test_a_timed_out_delay_mapping_falls_back_to_area_then_quick_mapping(tmp_path, monkeypatch):
    """The characterised flow maps a module for delay; past the time limit, area-oriented on the same cells;
    past it again, the quick mapping (allowed at least the default limit); a rerun under the same limit goes
    to the next mapping at once (the cache's markers); a longer limit tries again."""
    from lowbit.rtl import synth_hier as sh

    calls = []
    slow = {"delay"}

    def fake(paths, top, *, mapping="delay", timeout_s=None, **kw):
        calls.append(mapping)
        if mapping in slow:
            raise synth.SynthError("yosys timed out after 120 s in step 'ABC'")
        if mapping == "quick":
            assert timeout_s == synth.YOSYS_TIMEOUT_S
        return synth.SynthResult(top, {"inv_1": 1}, 3.75, 0.0, "k", mapping=mapping, target_ps=5000.0)

    monkeypatch.setattr(sh, "synthesize", fake)
    monkeypatch.setenv("LOWBIT_SYNTH_TIMEOUT_S", "120")
    kw = {"key_text": "hier-module abc 5000 True"}
    assert sh._map_with_fallbacks(tmp_path / "m.v", "m", kw, tmp_path).mapping == "area"
    assert calls == ["delay", "area"]
    sh._map_with_fallbacks(tmp_path / "m.v", "m", kw, tmp_path)
    assert calls == ["delay", "area", "area"]
    slow.add("area")
    assert sh._map_with_fallbacks(tmp_path / "m.v", "m", kw, tmp_path).mapping == "quick"
    assert calls[3:] == ["area", "quick"]
    sh._map_with_fallbacks(tmp_path / "m.v", "m", kw, tmp_path)
    assert calls[5:] == ["quick"]
    monkeypatch.setenv("LOWBIT_SYNTH_TIMEOUT_S", "900")
    sh._map_with_fallbacks(tmp_path / "m.v", "m", kw, tmp_path)
    assert calls[6:] == ["delay", "area", "quick"]

    def broken(paths, top, *, mapping="delay", **kw):
        raise synth.SynthError("synthesis failed at step 'read/parse'")

    monkeypatch.setattr(sh, "synthesize", broken)
    with pytest.raises(synth.SynthError, match="read/parse"):  # only a timeout falls back
        sh._map_with_fallbacks(tmp_path / "m.v", "n", {"key_text": "other"}, tmp_path)
