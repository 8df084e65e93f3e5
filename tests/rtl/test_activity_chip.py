"""Chip activity bookkeeping (rtl/activity_chip.py): toggles per module scope from a VCD with known toggles,
busy cycles per queue from instruction intervals."""

from __future__ import annotations

from lowbit.rtl.activity_chip import busy_cycles, module_toggles
from lowbit.rtl.waves import count_toggles

# Verilator-style scopes: TOP > lowbit_chip > eng > core. `p` is the port between lowbit_chip and eng (one
# identifier code, two aliases): it belongs to eng. clk is left out.
VCD = """$timescale 1ps $end
$scope module TOP $end
 $scope module lowbit_chip $end
  $var wire 1 ! clk $end
  $var wire 4 " p $end
  $var wire 2 # top_reg $end
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
b0000 "
b00 #
0$
b00000000 %
$end
#1
1!
b1111 "
b01 #
1$
#2
0!
b1110 "
b10 #
b11111111 %
#3
1!
0$
b00000011 %
"""


def test_module_toggles_by_deepest_scope(tmp_path):
    v = tmp_path / "d.vcd"
    v.write_text(VCD)
    m = module_toggles(count_toggles(v))
    # p: 0000->1111 (4) ->1110 (1) = 5, busy 0->1->0 = 2: eng owns both (4 + 1 bits)
    # top_reg: 00->01 (1) ->10 (2) = 3 on 2 bits; core.acc: 0->ff (8) ->03 (6) = 14 on 8 bits
    assert m == {"lowbit_chip": [3, 2], "lowbit_chip.eng": [7, 5], "lowbit_chip.eng.core": [14, 8]}


def test_busy_cycles_union_of_intervals():
    # queue a: [0,10) and [5,12) overlap -> 12; [20,25) -> 5. queue b: back to back [0,3) [3,7) -> 7
    assert busy_cycles([[0, 5, 20], [0, 3]], [[10, 12, 25], [3, 7]], ["a", "b"]) == {"a": 17, "b": 7}
    assert busy_cycles([[]], [[]], ["idle"]) == {"idle": 0}
