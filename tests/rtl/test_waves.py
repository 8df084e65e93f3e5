"""The VCD toggle counter against toggles counted by hand on a small hand-written dump."""

from __future__ import annotations

import pytest

from lowbit.rtl.waves import count_toggles

# Hand count (VCD id codes: ! clk, " a and its alias sub.a_alias, x b -- an id code that looks like a value,
# as Amaranth writes them -- and % a real):
#   clk: 0->1 @5, 1->0 @10, 0->1 @15, 1->0 @20, 0->1 @25; the $dumpall re-dump @30 is unchanged  -> 5
#   a:   0000->1111 @5 (4), 1111->1010 @10 (2), ->x @15 (0), x->0011 @20 (0), 0011->0110 @25 (2) -> 8
#   b:   0->1 @5, 1->0 @15                                                                      -> 2
#   r:   real, never a toggle, no bits
VCD = """$timescale 1 ns $end
$scope module top $end
$var wire 1 ! clk $end
$var wire 4 " a [3:0] $end
$scope module sub $end
$var wire 4 " a_alias $end
$var wire 1 x b $end
$upscope $end
$var real 64 % r $end
$upscope $end
$enddefinitions $end
#0
$dumpvars
0!
b0 "
0x
r0.5 %
$end
#5
1!
b1111 "
1x
#10
0!
b1010 "
r1.25 %
#15
1!
bx "
0x
#20
0!
b11 "
#25
1!
b110 "
#30
$dumpall
1!
b110 "
0x
$end
"""


@pytest.fixture()
def vcd(tmp_path):
    p = tmp_path / "hand.vcd"
    p.write_text(VCD)
    return p


def test_hand_counted_toggles(vcd):
    t = count_toggles(vcd)
    assert t.per_signal == {"top.clk": 5, "top.a": 8, "top.sub.a_alias": 8, "top.sub.b": 2, "top.r": 0}
    assert t.widths["top.sub.a_alias"] == 4 and t.end_time == 30
    assert t.total == 15  # the aliased net once
    assert t.matching("sub") == 10 and t.matching("a") == 8


def test_time_window(vcd):
    t = count_toggles(vcd, t_start=10, t_end=20)  # clk @10,15,20; a: 2 @10, x @15, from x @20; b @15
    assert t.per_signal == {"top.clk": 3, "top.a": 2, "top.sub.a_alias": 2, "top.sub.b": 1, "top.r": 0}


def test_rate_leaves_out_clock_and_non_bit_variables(vcd):
    t = count_toggles(vcd)
    assert t.rate(cycles=3) == pytest.approx((8 + 2) / ((4 + 1) * 3))  # clk excluded, real has no bits
    assert t.rate(cycles=3, exclude=()) == pytest.approx((5 + 8 + 2) / ((1 + 4 + 1) * 3))
