"""Hand-computed cycle counts of every unit's tile formula (sim.units), on the vitallm / vitallm-bs presets."""

from __future__ import annotations

from lowbit.sim.config import load_config
from lowbit.sim.units.booth import booth_int8_pass_cycles, booth_int8_tile_cycles, booth_ternary_tile_cycles
from lowbit.sim.units.fp4 import fp4_tile_cycles
from lowbit.sim.units.lop import lop_score_cycles, lop_topk_cycles
from lowbit.sim.units.sfu import sfu_cycles
from lowbit.sim.units.tint import tint_tile_cycles

V = load_config("vitallm")
BS = load_config("vitallm-bs")
F = load_config("vitallm-fp4")


def test_tint_tile():
    # 12-row x 1600 tile on one core (6 lanes): 2 passes x ceil(1600/16)=100 beats + latency 1+log2(16)+1 = 6
    assert tint_tile_cycles(V.tint, 1600, 2) == 206
    # down-projection chunk k = 1728: 2 x 108 + 6
    assert tint_tile_cycles(V.tint, 1728, 2) == 222


def test_booth_tiles():
    # ternary mode: 4 rows of 4 pairs per lane -> ceil(1600/16) = 100 beats per pass, 3 passes (12 rows / 4 lanes)
    # latency = 1 + clog2(4*4) + 1 = 6
    assert booth_ternary_tile_cycles(V.booth, 1600, 3) == 306
    # INT8 QK^T of 32 keys, head_dim 100: passes ceil(32/4) = 8, beats 8 x ceil(100/4) = 200
    assert booth_int8_tile_cycles(V.booth, 100, 8) == 206
    # BoothFlex-BS: one digit per cycle, INT8 = 4 digits: 1 pass x 25 x 4; ternary = 1 digit: 25.
    # BS latency = 1 + clog2(width = 4) + 1 = 4 (sim/units/booth.py, matched to rtl/booth_bs.py)
    assert booth_int8_tile_cycles(BS.booth, 100, 1) == 104
    assert booth_ternary_tile_cycles(BS.booth, 100, 1) == 29


def test_booth_ragged_passes():
    # 2 passes of 5 keys + 1 of 8 (a causal score.V tile), width 4: 2 x ceil(5/4) + ceil(8/4) = 6 beats + 6
    assert booth_int8_pass_cycles(V.booth, [(5, 2), (8, 1)]) == 12
    # a pass over no key (rows before the chunk's first key) takes no beat
    assert booth_int8_pass_cycles(V.booth, [(0, 3), (1, 1)]) == 1 + 6
    # BoothFlex-BS: 6 beats x 4 digits + latency 4
    assert booth_int8_pass_cycles(BS.booth, [(5, 2), (8, 1)]) == 28
    # uniform passes are booth_int8_tile_cycles: 8 passes of 100 inputs
    assert booth_int8_pass_cycles(V.booth, [(100, 8)]) == booth_int8_tile_cycles(V.booth, 100, 8) == 206


def test_fp4_tile():
    # 32 elements/cycle: ceil(3200/32) = 100 beats + latency clog2(32)+3 = 8
    assert fp4_tile_cycles(F.fp4, 3200, 1) == 108


def test_lop_cycles():
    # 100 keys, head_dim 100: ceil(100/8)=13 key groups x ceil(100/25)=4 + latency clog2(25)+2 = 7
    assert lop_score_cycles(V.lop, 100, 100) == 59
    # top-K: 2 x ceil(100/8) + 63 buckets + 2
    assert lop_topk_cycles(V.lop, 100) == 2 * 13 + V.lop.buckets + 2


def test_sfu_cycles():
    assert sfu_cycles(V.sfu, "rmsnorm", 1, 3200) == 2 * 200 + 12
    assert sfu_cycles(V.sfu, "softmax", 2, 33) == 2 * 3 * 3 + 16
    assert sfu_cycles(V.sfu, "activation", 1, 8640) == 540 + 6
    # quantize stalls D_recip = ceil((R + 7) / 2) = ceil((24 + 2 + 7) / 2) = 17 cycles per row for the reciprocal
    assert sfu_cycles(V.sfu, "quantize", 4, 16) == 4 * (2 * 1 + 17) + 6
    assert sfu_cycles(V.sfu, "quantize", 1, 3200) == 2 * 200 + 17 + 6
