"""Chip activity bookkeeping (rtl/activity_chip.py): toggles per module from a VCD with known toggles, counted
in the owner's busy cycles only; busy cycles per queue from instruction intervals; module owners."""

from __future__ import annotations

from lowbit.rtl.activity_chip import busy_cycles, busy_mask, module_toggles, owner

# Verilator-style scopes: TOP > lowbit_chip > eng > core, plus an array scope `words[0]` inside lowbit_chip.
# `p` is the port between lowbit_chip and eng (one identifier code, two aliases): it belongs to eng. clk is
# left out; `cycle` is the chip's run-cycle counter (0 while loading).
VCD = """$timescale 1ps $end
$scope module TOP $end
 $scope module lowbit_chip $end
  $var wire 1 ! clk $end
  $var wire 4 & cycle $end
  $var wire 4 " p $end
  $var wire 2 # top_reg $end
  $scope module words[0] $end
   $var wire 3 ' w $end
  $upscope $end
  $scope module eng $end
   $var wire 4 " p $end
   $var wire 1 $ busy $end
   $scope module core $end
    $var wire 8 % acc $end
   $upscope $end
  $upscope $end
 $upscope $end
$upscope $end
$enddefinitions $end
#0
$dumpvars
0!
b0000 &
b0000 "
b00 #
b000 '
0$
b00000000 %
$end
#5
b0101 "
#10
1!
b0001 &
b1111 "
b01 #
1$
#20
b0010 &
b1110 "
b10 #
b111 '
b11111111 %
#30
b0011 &
0$
b00000011 %
"""


def test_module_toggles_in_busy_cycles(tmp_path):
    v = tmp_path / "d.vcd"
    v.write_text(VCD)
    mods = {"lowbit_chip", "lowbit_chip.eng", "lowbit_chip.eng.core"}
    # every cycle: loading (#5, cycle 0) is not counted; cycle 1: p 0101->1111 (2), busy (1), top_reg (1);
    # cycle 2: p ->1110 (1), top_reg ->10 (2), words[0].w (3, lowbit_chip's), acc 0->ff (8); cycle 3: busy (1),
    # acc ->03 (6); the cycle counter itself is lowbit_chip's: 0->1->2->3 (1 + 2 + 1)
    m = module_toggles(v, mods, {})
    assert m == {"lowbit_chip": [3 + 3 + 4, 2 + 3 + 4], "lowbit_chip.eng": [2 + 1 + 1 + 1, 5],
                 "lowbit_chip.eng.core": [14, 8]}
    # eng (and its core) busy in cycles [2, 3) only
    busy = busy_mask([2], [3], 3)
    m = module_toggles(v, mods, {"lowbit_chip.eng": busy, "lowbit_chip.eng.core": busy})
    assert m["lowbit_chip.eng"] == [1, 5] and m["lowbit_chip.eng.core"] == [8, 8] and m["lowbit_chip"] == [10, 9]


def test_busy_cycles_union_of_intervals():
    # queue a: [0,10) and [5,12) overlap -> 12; [20,25) -> 5. queue b: back to back [0,3) [3,7) -> 7
    assert busy_cycles([[0, 5, 20], [0, 3]], [[10, 12, 25], [3, 7]], ["a", "b"]) == {"a": 17, "b": 7}
    assert busy_cycles([[]], [[]], ["idle"]) == {"idle": 0}
    assert list(busy_mask([1, 2], [3, 5], 6)) == [0, 1, 1, 1, 1, 0, 0]


def test_owner_of_chip_modules():
    q = ["tint0", "tint1", "booth", "lop", "sfu", "dma_w", "dma_kv", "sync"]
    assert owner("lowbit_chip", q) == ("control", "")
    assert owner("lowbit_chip.eng_tint1.core", q) == ("tint", "tint1")
    assert owner("lowbit_chip.rq_tint0", q) == ("tint", "tint0")
    assert owner("lowbit_chip.lop_engine.score.unit", q) == ("lop", "lop")
    assert owner("lowbit_chip.sfu_rms", q) == ("sfu", "sfu")
    assert owner("lowbit_chip.q_dma_kv", q) == ("dma", "")
    assert owner("lowbit_chip.ring_weight", q) == ("dma", "")
    assert owner("lowbit_chip.q_tint0", q) == ("control", "")
    assert owner("lowbit_chip.wbuf", q) == ("control", "")
