"""SRAM macros from a memory compiler's published sky130 macros, scaled to the design's node.

Source: the OpenRAM sky130 macros (M. R. Guthaus et al., "OpenRAM: An Open-Source Memory Compiler", ICCAD
2016; macros published at github.com/VLSIDA/sky130_sram_macros), every number transcribed from the files
named below (commit hashes in full in MACROS / SPICE_LEAK):
- **area**: the macro outline, LEF `SIZE W BY H` (µm) of the ten macros at commit a600dd8 (2021-10-20, "Fix
  DATABASE units from 2000 to 1000 in LEF files"): single-port `1rw` and dual-port `1rw1r` (one read-write
  plus one read-only port), 1-8 KB, 8-64-bit words.
- **access energy**: the same macros' TT/1.8 V/25 C Liberty files at commit b32280e (2021-07-28), written
  by OpenRAM's analytical power model: the clock pin's `internal_power` under `when : "!csb0 & web0"`
  (read; the model gives writes the same value) is the mean power in mW over one access cycle at the
  macro's `minimum_period` (OpenRAM characterizer: power of one cycle, scaled to mW), so
  E_access = P x T_min. Cross-check (SPICE_ENERGY, not used by the model): the SPICE characterisation of
  the 2023 tapeout macros (ngspice, same files at later commits) gives 15.8 pJ for the 1 KB 32-bit 1rw1r
  macro against the analytical 17.2 pJ; its netlist is trimmed to one bitline column (OpenRAM
  characterizer/trim_spice.py), so it does not grow with the array as the analytical model does.
- **leakage**: `cell_leakage_power` of the 2023 SPICE-characterised 1rw1r macros (measured on the untrimmed
  netlist), 1-4 KB.

FITS (least squares over the table rows, per port kind; marked as fits wherever reported):
    area_sky130(words, bits)  = a0 + a1 * words*bits + a2 * bits        (LEF outline, µm²)
    E_sky130(words, bits)     = e0 + e1 * words*bits + e2 * bits        (pJ per access of one word)
    leak_sky130(words, bits)  = l0 + l1 * words*bits                    (W; 1rw uses the 1rw1r fit)
Inside the table's range (1-8 KB, 8-64-bit words) this interpolates; a bank outside it is an extrapolation
and is flagged (`SramEstimate.note`). More than two ports: ASSUMPTION, every port beyond the second adds
the 1rw1r - 1rw difference again.

A buffer of `bytes` in `banks` banks is `banks` macros of ceil(bytes/banks) bytes each (whole words), `WORD_BITS` wide (DESIGN
ASSUMPTION: 64-bit words, the widest published sky130 macro). A memory of wider words is built, as memory
compilers tile wide words, from ceil(bits / 64) macros side by side sharing the address, each of an equal
share of the bits (ASSUMPTION; the fits are not extrapolated in word width, where the 1rw1r fit's negative
width term would give wide multi-port memories a negative area). Energy per byte = E_access / (WORD_BITS / 8);
idle macros are clock-gated (the characterised deselected-but-clocked cycle is not charged).
Scaling to the node (cost/area.py, Stillmaker & Baas 2017): area x area_factor(130 nm -> node), energy x
energy_factor(130 nm, 1.8 V -> node, Vdd); leakage: ASSUMPTION leakage current per unit area is node
independent, so leak x area_factor x Vdd / 1.8 V.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowbit.cost.area import SKY130_NODE_NM, SKY130_VDD, area_factor, energy_factor
from lowbit.sim.errors import LowbitError

REPO = "github.com/VLSIDA/sky130_sram_macros"
LEF_COMMIT = "a600dd8005ad958995e13a98dfd2f92787373d20"   # 2021-10-20, LEF SIZE of every macro
LIB_COMMIT = "b32280e1ae2226a26c18fb035aaeda6fa17cff29"   # 2021-07-28, analytical TT_1p8V_25C .lib files
WORD_BITS = 64


@dataclass(frozen=True)
class Macro:
    """One published macro: sky130_sram_<name>; LEF outline (µm), analytical read power (mW) at T_min (ns)."""

    name: str
    words: int
    bits: int
    ports: int          # 1 = 1rw, 2 = 1rw1r
    lef_w_um: float
    lef_h_um: float
    read_mw: float
    t_min_ns: float

    @property
    def area_um2(self) -> float:
        return self.lef_w_um * self.lef_h_um

    @property
    def access_pj(self) -> float:
        return self.read_mw * self.t_min_ns


MACROS = (
    Macro("1kbyte_1rw1r_32x256_8", 256, 32, 2, 479.78, 397.5, 9.589466, 1.791),
    Macro("1kbyte_1rw1r_8x1024_8", 1024, 8, 2, 455.3, 446.46, 9.389093, 1.881),
    Macro("2kbyte_1rw1r_32x512_8", 512, 32, 2, 683.1, 416.54, 13.80840, 1.956),
    Macro("4kbyte_1rw1r_32x1024_8", 1024, 32, 2, 693.98, 668.82, 25.76215, 1.971),
    Macro("8kbyte_1rw1r_32x2048_8", 2048, 32, 2, 1093.82, 720.5, 42.27788, 2.301),
    Macro("1kbyte_1rw_32x256_8", 256, 32, 1, 478.42, 223.42, 4.630562, 1.847),
    Macro("2kbyte_1rw_32x512_8", 512, 32, 1, 481.14, 322.7, 8.137514, 1.91),
    Macro("4kbyte_1rw_32x1024_8", 1024, 32, 1, 806.86, 351.26, 13.32529, 2.177),
    Macro("4kbyte_1rw_64x512_8", 512, 64, 1, 828.62, 339.02, 13.64218, 2.237),
    Macro("8kbyte_1rw_64x1024_8", 1024, 64, 1, 830.66, 541.66, 25.62699, 2.252),
)

# SPICE-characterised 1rw1r macros (2023 tapeout set): (name, words, bits, commit, cell_leakage_power mW,
# minimum_period ns, read power mW = mean of rise/fall under "!csb0 & web0").
SPICE = (
    ("1kbyte_1rw1r_32x256_8", 256, 32, "261a97b2e9fc96803faab85378bb322680c6fa5d", 0.0009117994, 6.875,
     (2.391613 + 2.208443) / 2),
    ("1kbyte_1rw1r_8x1024_8", 1024, 8, "22ab13409564ec5876692a2668ad898acdc8cbdc", 0.0006787435, 6.045,
     (1.771855 + 1.745994) / 2),
    ("2kbyte_1rw1r_32x512_8", 512, 32, "0178860d21d6a73e56d3c1a5e0d4932197d68255", 0.001379771, 5.156,
     (2.707046 + 2.420102) / 2),
    ("4kbyte_1rw1r_32x1024_8", 1024, 32, "6625c40f3dc9eb55c71c0269714263200f20e69c", 0.002411139, 6.191,
     (3.663975 + 3.421873) / 2),
)
SPICE_ENERGY = {name: mw * t for name, _w, _b, _c, _l, t, mw in SPICE}  # pJ per read, cross-check only
CAPACITY_RANGE_BITS = (min(m.words * m.bits for m in MACROS), max(m.words * m.bits for m in MACROS))
WORD_RANGE_BITS = (min(m.bits for m in MACROS), max(m.bits for m in MACROS))


def _fit(rows: list[tuple[float, ...]], ys: list[float]) -> tuple[float, ...]:
    coef, *_ = np.linalg.lstsq(np.array(rows, float), np.array(ys, float), rcond=None)
    return tuple(float(c) for c in coef)


def _fits(ports: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    ms = [m for m in MACROS if m.ports == ports]
    x = [(1.0, m.words * m.bits, m.bits) for m in ms]
    return _fit(x, [m.area_um2 for m in ms]), _fit(x, [m.access_pj for m in ms])


AREA_FIT = {p: _fits(p)[0] for p in (1, 2)}     # FIT: (a0 µm², a1 µm²/bit, a2 µm²/word bit)
ENERGY_FIT = {p: _fits(p)[1] for p in (1, 2)}   # FIT: (e0 pJ, e1 pJ/bit, e2 pJ/word bit)
LEAK_FIT = _fit([(1.0, w * b) for _n, w, b, *_ in SPICE], [mw * 1e-3 for _n, _w, _b, _c, mw, _t, _p in SPICE])  # FIT: W, W/bit


def _by_ports(fit: dict[int, tuple[float, ...]], ports: int, x: tuple[float, ...]) -> float:
    one = sum(c * v for c, v in zip(fit[1], x, strict=True))
    two = sum(c * v for c, v in zip(fit[2], x, strict=True))
    return one if ports == 1 else two + (ports - 2) * (two - one)  # > 2 ports: ASSUMPTION (module docstring)


def macro_area_um2_sky130(words: int, bits: int, ports: int) -> float:
    """Outline area of one sky130 macro (FIT over the published LEF sizes)."""
    return _by_ports(AREA_FIT, ports, (1.0, words * bits, bits))


def macro_access_pj_sky130(words: int, bits: int, ports: int) -> float:
    """Energy of one access of one `bits`-wide word at sky130 TT 1.8 V (FIT over the analytical .lib powers)."""
    return _by_ports(ENERGY_FIT, ports, (1.0, words * bits, bits))


def macro_leak_w_sky130(words: int, bits: int) -> float:
    """Leakage of one macro at sky130 TT 1.8 V 25 C (FIT over the SPICE-characterised macros)."""
    return LEAK_FIT[0] + LEAK_FIT[1] * words * bits


@dataclass(frozen=True)
class SramEstimate:
    """One buffer at the design's node: all banks together."""

    name: str
    bytes: int
    banks: int
    ports: int
    area_um2: float
    read_pj_per_byte: float
    write_pj_per_byte: float
    leak_w: float
    word_bits: int = WORD_BITS
    words_per_bank: int = 0
    access_pj: float = 0.0          # one word, at the node
    note: str = ""                  # "extrapolated ..." when a bank lies outside the published macros


def sram_estimate(name: str, nbytes: int, banks: int, ports: int, node_nm: float, vdd: float,
                  word_bits: int = WORD_BITS) -> SramEstimate:
    """Area, per-byte access energy and leakage of one buffer of `banks` equal macros (module docstring)."""
    if banks < 1 or word_bits < 1:
        raise LowbitError(f"SRAM buffer '{name}': banks = {banks}, word_bits = {word_bits}: both must be >= 1")
    words = -(-nbytes * 8 // (banks * word_bits))  # a bank holds whole words: rounded up
    af = area_factor(SKY130_NODE_NM, node_nm)
    ef = energy_factor(SKY130_NODE_NM, SKY130_VDD, node_nm, vdd)
    # a word wider than the widest published macro: `side` macros side by side, sharing the address
    side = -(-word_bits // WORD_RANGE_BITS[1])
    w = -(-word_bits // side)
    area = banks * side * macro_area_um2_sky130(words, w, ports) * af
    e = side * macro_access_pj_sky130(words, w, ports) * ef
    leak = banks * side * macro_leak_w_sky130(words, w) * af * vdd / SKY130_VDD
    cap = words * w
    lo, hi = CAPACITY_RANGE_BITS
    note = ""
    if not lo <= cap <= hi or not WORD_RANGE_BITS[0] <= w <= WORD_RANGE_BITS[1] or ports > 2:
        note = (f"extrapolated: bank of {side} x {cap / 8192:.3g} KB x {w} bit, {ports} ports; published macros "
                f"span {lo // 8192}-{hi // 8192} KB, {WORD_RANGE_BITS[0]}-{WORD_RANGE_BITS[1]} bit, 1-2 ports")
    return SramEstimate(name, nbytes, banks, ports, area, e / (word_bits / 8), e / (word_bits / 8), leak,
                        word_bits, words, e, note)


def sram_for_config(cfg) -> list[SramEstimate]:
    return [sram_estimate(b.name, b.bytes, b.banks, b.ports, cfg.node_nm, cfg.supply_v) for b in cfg.sram]


SRAM_MD = f"""- **SRAM** (cost/sram.py): banks are OpenRAM sky130 macros ({REPO}): area = LEF outline of the ten
  published 1rw / 1rw1r macros (1-8 KB, 8-64-bit words, commit {LEF_COMMIT[:7]}), access energy = the macros'
  analytical Liberty power x minimum period (commit {LIB_COMMIT[:7]}), leakage = the SPICE-characterised 1rw1r
  macros (2023); each a least-squares **fit** in capacity and word width per port kind, banks outside the
  published range flagged as extrapolated. 64-bit words (assumption), idle macros clock-gated, scaled
  130 nm / 1.8 V -> node with Stillmaker-Baas (leakage: current per area held constant, assumption).
- **SRAM cross-checks** (not used): at 16 nm the fitted 1rw area per added bit is
  {AREA_FIT[1][1] * area_factor(SKY130_NODE_NM, 16):.3f} µm² against the 0.07 µm² TSMC 16 nm 6T bitcell (Y.-H. Chen et al., JSSC 50(1) 2015), i.e.
  OpenRAM's sky130 macros are less dense than a foundry compiler; one 64-bit access of an 8 KB 1rw macro is
  {macro_access_pj_sky130(1024, 64, 1) * energy_factor(SKY130_NODE_NM, SKY130_VDD, 16, 0.8):.2f} pJ at 16 nm / 0.8 V against {10 * energy_factor(45, 0.9, 16, 0.8):.2f} pJ from M. Horowitz, ISSCC 2014 (8 KB, 10 pJ at 45 nm / 0.9 V)
  scaled the same way; the SPICE-characterised 2023 macros (trimmed to one bitline column) give
  {SPICE_ENERGY["1kbyte_1rw1r_32x256_8"]:.1f} pJ for the 1 KB 32-bit 1rw1r macro at sky130 against the analytical {MACROS[0].access_pj:.1f} pJ.
"""
