"""SRAM macro model (cost/sram.py) against the published OpenRAM sky130 macro files, by hand."""

from __future__ import annotations

import pytest

from lowbit.cost import sram
from lowbit.cost.area import area_factor, energy_factor
from lowbit.sim.config import load_config
from lowbit.sim.errors import LowbitError


def test_table_values_are_the_published_files():
    m = {x.name: x for x in sram.MACROS}
    # sky130_sram_8kbyte_1rw_64x1024_8.lef @ a600dd8: SIZE 830.66 BY 541.66
    assert m["8kbyte_1rw_64x1024_8"].area_um2 == pytest.approx(830.66 * 541.66)
    # ..._TT_1p8V_25C.lib @ b32280e: internal_power "!csb0 & web0" 2.562699e+01 mW, minimum_period 2.252 ns
    assert m["8kbyte_1rw_64x1024_8"].access_pj == pytest.approx(57.712, abs=1e-3)
    assert m["1kbyte_1rw1r_32x256_8"].access_pj == pytest.approx(9.589466 * 1.791)
    # SPICE cross-check, 2023 lib @ 261a97b: (2.391613 + 2.208443) / 2 mW x 6.875 ns
    assert sram.SPICE_ENERGY["1kbyte_1rw1r_32x256_8"] == pytest.approx(15.8128, abs=1e-3)


def test_fits_reproduce_the_table_within_ten_percent():
    for m in sram.MACROS:
        assert sram.macro_area_um2_sky130(m.words, m.bits, m.ports) == pytest.approx(m.area_um2, rel=0.10)
        assert sram.macro_access_pj_sky130(m.words, m.bits, m.ports) == pytest.approx(m.access_pj, rel=0.06)
    for name, w, b, _c, leak_mw, _t, _p in sram.SPICE:  # the two 1 KB macros differ by 26 % between themselves
        assert sram.macro_leak_w_sky130(w, b) == pytest.approx(leak_mw * 1e-3, rel=0.2), name


def test_dual_port_costs_more_than_single_port():
    assert sram.macro_area_um2_sky130(1024, 64, 2) > 1.5 * sram.macro_area_um2_sky130(1024, 64, 1)
    assert sram.macro_access_pj_sky130(1024, 64, 2) > sram.macro_access_pj_sky130(1024, 64, 1)
    # three ports: the 1rw1r - 1rw step once more (assumption)
    one, two = sram.macro_area_um2_sky130(512, 64, 1), sram.macro_area_um2_sky130(512, 64, 2)
    assert sram.macro_area_um2_sky130(512, 64, 3) == pytest.approx(2 * two - one)


def test_wide_words_are_macros_side_by_side():
    """A 256-bit word is four 64-bit macros sharing the address (the fits are not extrapolated in width, where
    the 1rw1r fit's width term is negative); an 8 x 256-bit memory with one read and six write ports (six
    macro ports by the chip's rule), which the width extrapolation put at a negative area, is positive and
    costs more with every port."""
    af = sram.area_factor(sram.SKY130_NODE_NM, 16)
    s = sram.sram_estimate("vq_rows", 8 * 256 // 8, 1, 6, 16, 0.8, word_bits=256)
    assert s.area_um2 == pytest.approx(4 * sram.macro_area_um2_sky130(8, 64, 6) * af)
    assert sram.macro_area_um2_sky130(8, 256, 6) < 0 < s.area_um2  # the old extrapolation, and the tiling
    areas = [sram.sram_estimate("m", 256, 1, p, 16, 0.8, word_bits=256).area_um2 for p in (1, 2, 3, 6)]
    assert areas == sorted(areas) and areas[0] > 0
    # 564 bits: nine macros of 63 bits; the note says so
    w = sram.sram_estimate("imem", 8 * 564 // 8, 1, 1, 16, 0.8, word_bits=564)
    assert w.area_um2 == pytest.approx(9 * sram.macro_area_um2_sky130(8, 63, 1) * af) and "9 x" in w.note


def test_buffer_estimate_hand_numbers():
    # one 8 KB bank of 1024 x 64-bit words, single port: the published 8kbyte_1rw_64x1024_8 point (fit value)
    s = sram.sram_estimate("w", 8192, 1, 1, 16, 0.8)
    a0, a1, a2 = sram.AREA_FIT[1]
    e0, e1, e2 = sram.ENERGY_FIT[1]
    assert s.words_per_bank == 1024 and not s.note
    assert s.area_um2 == pytest.approx((a0 + a1 * 65536 + a2 * 64) * area_factor(130, 16))
    e = (e0 + e1 * 65536 + e2 * 64) * energy_factor(130, 1.8, 16, 0.8)
    assert s.read_pj_per_byte == pytest.approx(e / 8) and s.write_pj_per_byte == s.read_pj_per_byte
    # close to the published macro itself: 449,935 µm² x 0.03 and 57.71 pJ x the energy factor
    assert s.area_um2 == pytest.approx(830.66 * 541.66 * 0.03, rel=0.05)
    assert s.read_pj_per_byte * 8 == pytest.approx(57.712 * energy_factor(130, 1.8, 16, 0.8), rel=0.01)
    # two banks = two macros of half the words
    d = sram.sram_estimate("a", 16384, 2, 1, 16, 0.8)
    assert d.area_um2 == pytest.approx(2 * s.area_um2) and d.read_pj_per_byte == pytest.approx(s.read_pj_per_byte)


def test_outside_the_published_range_is_flagged():
    assert "extrapolated" in sram.sram_estimate("p", 24576, 2, 2, 16, 0.8).note  # 12 KB banks
    assert not sram.sram_estimate("k", 16384, 2, 1, 16, 0.8).note
    assert sram.sram_estimate("x", 1000, 3, 1, 16, 0.8).words_per_bank == 42  # ceil(8000 / 192): whole words
    with pytest.raises(LowbitError, match="banks = 0"):
        sram.sram_estimate("x", 1000, 0, 1, 16, 0.8)


def test_vitallm_buffers():
    ests = sram.sram_for_config(load_config("vitallm"))
    assert [e.name for e in ests] == ["weight", "act", "kv", "lop", "psum", "sfu"]
    assert sum(e.bytes for e in ests) == 120 * 1024
    by = {e.name: e for e in ests}
    assert by["act"].area_um2 > by["weight"].area_um2  # dual-port banks
