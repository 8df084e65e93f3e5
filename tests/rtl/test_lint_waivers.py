"""Verilator -Wall waivers (lowbit.rtl.lint) on the Amaranth idioms they name, and not beyond them."""

from __future__ import annotations

import pytest

from lowbit.rtl.lint import WAIVERS

TEXT = """  wire [24:0] q_hmask;
  assign q_hmask = { 9'h000, \\$1237  };
  assign \\q_hmask$19  = { 9'h000, \\port$1380$0  };
  assign m2 = { 9'h001, \\$12  };
  assign m3 = { 9'h000, a, b };
  assign m4 = \\$77 [3:0];
"""


@pytest.mark.parametrize(("name", "waived"), [
    ("q_hmask", True),      # a zero-padded alias of a temporary
    ("q_hmask$19", True),   # of a port net
    ("m2", False),          # padding that is not zero: logic
    ("m3", False),          # a concatenation of two nets: logic
    ("m4", True),           # an alias of a temporary's slice
    ("other", False),       # a named signal with no alias assignment
])
def test_unused_signal_waiver(name, waived):
    _why, rule = WAIVERS["UNUSEDSIGNAL"]
    assert rule(f"%Warning-UNUSEDSIGNAL: x.v:1:1: Signal is not used: '{name}'", TEXT) is waived
