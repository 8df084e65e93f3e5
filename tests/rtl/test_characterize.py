"""Cell characterisation with ngspice + lctime on two cells (the full library is a build step, not a test):
physics sanity (delay monotone in load and slew, supply energy grows by C·V², leakage tiny and positive),
lctime's delays against lowbit's own ngspice measurement, and a Liberty yosys/abc accept for timing-driven
mapping with hand-checkable loads and critical path."""

from __future__ import annotations

import json
import shutil

import pytest

from lowbit.rtl import characterize as ch
from lowbit.rtl.liberty import COX_F_PER_UM2
from lowbit.rtl.synth import DRIVING_CELL, OUTPUT_LOAD_PF, SynthError, synthesize

pytestmark = pytest.mark.skipif(shutil.which("ngspice") is None, reason="ngspice missing: `make ngspice`")

V = ch.VDD


@pytest.fixture(scope="module")
def inv(sky130_root):
    energy, delays = ch.measure_energy("inv_1", sky130_root)
    return energy["A"], delays


@pytest.fixture(scope="module")
def small_lib(sky130_root):
    """inv_1, buf_1 and nand2_1 fully characterised (lctime + own decks), no cache involved."""
    out = {}
    for c in ("inv_1", "buf_1", "nand2_1"):  # abc needs a buffer cell
        caps, timing, seq = ch.run_lctime(c, sky130_root)
        energy, delays = ch.measure_energy(c, sky130_root)
        inputs, o, fn = ch.cell_pins(c, sky130_root)
        out[c] = ch.CellChar(c, ch.load_cell(c, sky130_root).area_um2, o, fn, caps, timing, energy,
                             ch.measure_leakage(c, sky130_root), 0.0, seq, delay_check_ns=delays)
    return out


def test_inverter_delay_monotone_in_load_and_slew(inv):
    _e, d = inv
    n_l, n_s = len(ch.LOADS_PF), len(ch.SLEWS_NS)
    grid = [[d[f"A:{i}:{j}"] for j in range(n_s)] for i in range(n_l)]
    for i in range(n_l):
        assert all(a < b for a, b in zip(grid[i], grid[i][1:], strict=False)), grid
    for j in range(n_s):
        assert all(grid[i][j] < grid[i + 1][j] for i in range(n_l - 1)), grid
    # an inv_1 (W_n = 0.65 µm) into 32 fF: tens to a few hundred ps at 1.8 V
    assert 0.02 < grid[-1][0] < 0.4


def test_supply_energy_grows_by_cv2(inv):
    """E_rise table = supply energy of the output-rising half minus C_L·V²: what is left is the cell's own
    (internal + short-circuit) energy, which must hardly depend on the load. Equivalently, the supply
    energy rises by ΔC·V² between the smallest and largest load, within 5 %."""
    e, _d = inv
    dcv2 = (ch.LOADS_PF[-1] - ch.LOADS_PF[0]) * V * V  # pJ
    for j in range(len(ch.SLEWS_NS)):
        supply_small = e["rise"][0][j] + ch.LOADS_PF[0] * V * V
        supply_large = e["rise"][-1][j] + ch.LOADS_PF[-1] * V * V
        assert supply_large - supply_small == pytest.approx(dcv2, rel=0.05)
        # the internal energy of a minimum inverter: a few fJ (self capacitance ~2 fF x V²), not the load's
        assert 0.0 < e["rise"][0][j] + e["fall"][0][j] < 0.02


def test_leakage_positive_and_tiny(sky130_root):
    leak = ch.measure_leakage("inv_1", sky130_root)
    assert 1e-4 < leak < 1.0  # nW: pA-scale subthreshold current at 1.8 V


def test_lctime_delays_match_own_ngspice(small_lib):
    """lctime and lowbit's deck simulate the same netlist and cards: 50 %-50 % delays agree within 3 %."""
    for c in small_lib.values():
        for g in c.timing:
            pin = g["related_pin"]
            env = ch.sensitising_vector(list(c.pin_cap_pf), c.function, pin)
            rises_first = ch._eval(c.function, {**env, pin: 1})  # output direction when the input rises
            table = g["cell_rise" if rises_first else "cell_fall"]
            for i in range(len(ch.LOADS_PF)):
                for j in range(len(ch.SLEWS_NS)):
                    assert table[i][j] == pytest.approx(c.delay_check_ns[f"{pin}:{i}:{j}"], rel=0.03, abs=2e-3)


def test_pin_capacitance_near_gate_area_estimate(small_lib):
    """lctime's input capacitance vs Cox·W·L of the inverter's two gates (W 0.65 + 1.0 µm, L 0.15 µm, from its
    netlist): same order, the model's overlap and fringe capacitances make it larger."""
    gate_pf = COX_F_PER_UM2 * (0.65 + 1.0) * 0.15 * 1e12
    assert gate_pf < small_lib["inv_1"].pin_cap_pf["A"] < 3 * gate_pf


def test_liberty_maps_with_abc_timing_driven(small_lib, sky130_root, synth_cache, tmp_path, monkeypatch):
    """y = !(a & b) with the characterised Liberty: one nand2_1; its only net is the block output (fanout 1,
    no sink pins); critical path = the nand2 arc at the output load with the driving inverter's slew."""
    lib = ch.liberty_from_chars(small_lib)
    monkeypatch.setattr(ch, "characterised_liberty", lambda root=None, build=True, log=None: (lib, small_lib))
    monkeypatch.setattr("lowbit.rtl.synth.library_cells",
                        lambda root=None: {c: ch.load_cell(c, root) for c in small_lib})
    v = tmp_path / "n.v"
    v.write_text("module n(input a, input b, output y); assign y = ~(a & b); endmodule\n")
    r = synthesize(v, "n", liberty="characterised", target_ps=1000.0)
    assert r.cells == {"nand2_1": 1}
    assert r.net_loads == {"nand2_1": [[0.0, 1, 1]]} and r.outputs == 1
    nand = small_lib["nand2_1"]
    drv = small_lib[DRIVING_CELL]
    expect = 0.0
    for g in nand.timing:
        ramp = drv.transition_ns(nand.pin_cap_pf[g["related_pin"]], 0.1) / 0.6
        for k in ("cell_rise", "cell_fall"):
            expect = max(expect, ch._bilinear(g[k], ch.LOADS_PF, ch.SLEWS_NS, OUTPUT_LOAD_PF, ramp))
    assert r.delay_ps == pytest.approx(expect * 1e3, rel=1e-9)
    assert json.loads((synth_cache / r.rtl_hash / "result.json").read_text())["liberty"] == "characterised"
    keys = {r.rtl_hash}
    for mapping in ("area", "quick"):  # the fallbacks map the same gate, each its own cache entry
        m = synthesize(v, "n", liberty="characterised", target_ps=1000.0, mapping=mapping)
        assert m.cells == {"nand2_1": 1} and m.mapping == mapping and m.delay_ps == pytest.approx(r.delay_ps)
        keys.add(m.rtl_hash)
    assert len(keys) == 3
    with pytest.raises(SynthError, match="mapping = 'fast': one of delay, area, quick"):
        synthesize(v, "n", liberty="characterised", target_ps=1000.0, mapping="fast")


def test_missing_library_names_the_build_command(sky130_root, monkeypatch, tmp_path):
    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(tmp_path))
    with pytest.raises(ch.CharacterisationError, match="python -m lowbit.rtl.characterize"):
        ch.characterised_liberty(build=False)
