"""Switching-activity calibration: toggle rate on random inputs, counted by lowbit.rtl.waves, cached."""

from __future__ import annotations

import json
import random

import pytest

pytest.importorskip("amaranth")

from amaranth.hdl import Module  # noqa: E402
from amaranth.lib import wiring  # noqa: E402
from amaranth.lib.wiring import In, Out  # noqa: E402

import lowbit.rtl.activity as activity  # noqa: E402
from lowbit.sim import cache  # noqa: E402
from lowbit.sim.config import load_config  # noqa: E402


class Delay(wiring.Component):
    """q <= d: the register replays its input one cycle later."""

    def __init__(self):
        super().__init__({"d": In(4), "q": Out(4)})

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.q.eq(self.d)
        return m


def popcount(x: int) -> int:
    return bin(x).count("1")


@pytest.mark.parametrize("cycles", [10, 40])
def test_register_activity_hand_count(cycles):
    # The bench draws d_c = getrandbits(4) before each edge c. d_0 is set before the first dump, so it is
    # d's baseline; q starts at its reset value 0 and takes d_0 .. d_{cycles-1}. clk and rst are left out.
    rng = random.Random(1)
    d = [rng.getrandbits(4) for _ in range(cycles)]
    t_d = sum(popcount(a ^ b) for a, b in zip(d[:-1], d[1:], strict=True))
    t_q = popcount(d[0]) + t_d
    assert activity.measure_component(Delay(), cycles=cycles, seed=1) == (t_d + t_q) / (8 * cycles)


def test_unit_activity_is_cached_under_the_cache_root(synth_cache, monkeypatch):
    cfg = load_config("tiny")
    a = activity.unit_activity(cfg, "tint", cycles=50)
    (entry,) = cache.cache_dir("activity").glob("tint-*.json")
    assert json.loads(entry.read_text()) == {"unit": "tint", "activity": a, "cycles": 50, "seed": 1}
    assert 0.0 < a < 1.0

    def no_measuring(*args, **kwargs):
        raise AssertionError("cache miss: measured again")

    monkeypatch.setattr(activity, "measure_component", no_measuring)
    assert activity.unit_activity(cfg, "tint", cycles=50) == a
