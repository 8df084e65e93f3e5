"""Adding a unit takes one file per layer plus one catalogue entry (docs/adding-a-unit.md): MAC8, a unit that
exists only in the test suite, goes through config, simulator, RTL generation and verification, and cost
without any lowbit source file naming it."""

from __future__ import annotations

import dataclasses
import re

import pytest

from lowbit.cost.energy import unit_rates
from lowbit.rtl.registry import UNITS as RTL_UNITS
from lowbit.rtl.registry import units_for
from lowbit.rtl.synth import instances
from lowbit.sim.attention import pv_tile_cycles
from lowbit.sim.config import PRESET_DIR, from_dict, load_config, to_dict
from lowbit.sim.engine import simulate, unit_list
from lowbit.sim.errors import ConfigError, WorkloadError
from lowbit.sim.tiling import int8_class
from lowbit.sim.units import catalog
from lowbit.sim.units.booth import BoothConfig, booth_int8_pass_cycles, booth_int8_tile_cycles
from lowbit.sim.workloads import standard_trace
from tests.units.mac8 import MAC8, Mac8Config, mac8_dot, mac8_tile_cycles

# The same unit with BoothFlex's INT8 timing: a design using it must simulate exactly like one using BoothFlex.
MAC8_AS_BOOTH = dataclasses.replace(
    MAC8, name="mac8b", rtl=(),
    tile_cycles=lambda c, fmt, k, passes: booth_int8_tile_cycles(BoothConfig(lanes=c.lanes, width=c.width), k, passes),
    pass_cycles=lambda c, runs: booth_int8_pass_cycles(BoothConfig(lanes=c.lanes, width=c.width), runs))


@pytest.fixture
def registered():
    for u in (MAC8, MAC8_AS_BOOTH):
        catalog.register(u)
    yield
    for u in (MAC8, MAC8_AS_BOOTH):
        del catalog.UNITS[u.name]


def tiny_with(units: list[str], **sections) -> object:
    import tomllib

    data = tomllib.loads((PRESET_DIR / "tiny.toml").read_text())
    data.update(units=units, **sections)
    return from_dict(data, source="test")


def test_unknown_until_registered():
    with pytest.raises(ConfigError, match=r"units contains 'mac8'"):
        tiny_with(["tint", "mac8", "lop", "sfu"])


def test_config_section(registered):
    cfg = tiny_with(["tint", "mac8", "lop", "sfu"], mac8={"lanes": 2, "width": 4})
    assert cfg.mac8 == Mac8Config(lanes=2, width=4, acc_bits=24)
    assert to_dict(cfg)["mac8"] == {"lanes": 2, "width": 4, "acc_bits": 24}
    assert from_dict(to_dict(cfg)) == dataclasses.replace(cfg, source="<dict>")
    with pytest.raises(ConfigError, match=r"mac8.widht: unknown field \(did you mean 'width'\?\)"):
        tiny_with(["mac8", "sfu"], mac8={"widht": 4})
    with pytest.raises(ConfigError, match=r"mac8.acc_bits = 4: must be in 8..64"):
        tiny_with(["mac8", "sfu"], mac8={"acc_bits": 4})
    with pytest.raises(ConfigError, match=r"mac8.lanes = 0: must be >= 1"):
        tiny_with(["mac8", "sfu"], mac8={"lanes": 0})
    with pytest.raises(ConfigError, match="already in the catalogue"):
        catalog.register(MAC8)


def test_simulates_exactly_like_booth_with_the_same_timing(registered):
    """int8 weights and INT8 attention go to the design's first unit that runs int8 tiles, whatever it is."""
    booth = load_config("tiny")
    twin = tiny_with(["tint", "mac8b", "lop", "sfu"], mac8b={"lanes": booth.booth.lanes, "width": booth.booth.width})
    tr = standard_trace("bitnet-tiny", 12, 4, "int8")
    a, b = simulate(booth, tr), simulate(twin, tr)
    assert a.cycles == b.cycles and a.step_cycles == b.step_cycles and a.dram_bytes == b.dram_bytes
    assert a.activity["busy_cycles"]["booth"] == b.activity["busy_cycles"]["mac8b"] > 0
    assert a.activity["int8_macs"] == b.activity["int8_macs"] > 0
    # registered units come after the built-in ones (catalogue order), the DMA queues last
    assert [n for n, _ in unit_list(twin)] == ["tint0", "lop", "sfu", "mac8b", "dma_w", "dma_kv"]


def test_own_timing_and_work(registered):
    cfg = tiny_with(["mac8", "lop", "sfu"], mac8={"lanes": 4, "width": 8})
    narrow = cfg.replace(**{"mac8.width": 4})
    tr = standard_trace("bitnet-tiny", 12, 4, "int8")
    r, rn = simulate(cfg, tr), simulate(narrow, tr)
    assert set(r.activity["busy_cycles"]) == {"mac8", "lop", "sfu"}
    assert r.activity["int8_macs"] == rn.activity["int8_macs"] == simulate(load_config("tiny"), tr).activity["int8_macs"]
    assert rn.activity["busy_cycles"]["mac8"] > r.activity["busy_cycles"]["mac8"]  # half the products per cycle
    with pytest.raises(WorkloadError, match=r"no unit runs ternary weights .* units built for ternary: tint"):
        simulate(cfg, standard_trace("bitnet-tiny", 4, 1))
    assert mac8_tile_cycles(cfg.mac8, 17, 3) == 3 * 3 + 3 + 2  # ceil(17/8) beats per pass, clog2(8) + 2
    # no ragged-pass formula (`pass_cycles`): a causal score.V tile runs every pass at its longest row's keys,
    # 16 passes over 3 keys and 16 over 17: 32 x ceil(17 / 8) + 5
    assert pv_tile_cycles(cfg, int8_class(cfg, "test"), ((3, 16), (17, 16))) == 32 * 3 + 5


def test_golden_model_is_exact():
    import numpy as np

    w = np.array([[-128, 127, 5], [-128, -128, -128]])
    a = np.array([[-128, 127, -3], [-128, -128, -128]])
    acc, ovf = mac8_dot(w, a, 16)
    # row 0: 16384, 32513, 32498 stay in [-32768, 32767]; row 1: 16384, 32768 overflows, 49152 wraps to -16384
    assert acc.tolist() == [32498, -16384]
    assert ovf.tolist() == [False, True]
    acc, ovf = mac8_dot(w, a, 24)
    assert acc.tolist() == [32498, 49152] and ovf.tolist() == [False, False]


def test_cost_hooks_and_rtl_registry(registered):
    cfg = tiny_with(["tint", "mac8", "lop", "sfu"], mac8={"lanes": 2, "width": 4})
    assert "mac8" in RTL_UNITS and "mac8b" not in RTL_UNITS
    assert units_for(cfg) == ["tint", "lop_score", "lop_topk", "sfu", "mac8"]  # catalogue order
    assert unit_rates(cfg, "mac8") == {"int8_macs": 8} and instances(cfg, "mac8") == 1
    assert RTL_UNITS["mac8"].cycle_functions == ("tests.units.mac8:mac8_tile_cycles",)


def test_rtl_generates_and_verifies(registered, tmp_path):
    pytest.importorskip("amaranth")
    pytest.importorskip("cocotb")
    import json

    from lowbit.rtl.cocotb_runner import run_bench
    from lowbit.rtl.generate import generate

    cfg = tiny_with(["tint", "mac8", "lop", "sfu"], mac8={"lanes": 2, "width": 4, "acc_bits": 20})
    files = generate(cfg, "mac8", tmp_path)
    assert re.search(r"module lowbit_mac8\b", files[0].read_text())
    m = json.loads((tmp_path / "manifest.json").read_text())["units"]["mac8"]
    assert m["parameters"] == {"lanes": 2, "width": 4, "acc_bits": 20}
    r = run_bench("mac8", cfg.mac8, vectors=60, seed=3)
    assert r.vectors >= 60 and r.mismatches == 0, r.examples
    assert r.cycle_checks >= 10 and r.cycle_mismatches == 0, r.cycles[:3]
    assert any(c["kind"] == "overflow" for c in r.cycles)  # the accumulator-overflow corner ran
