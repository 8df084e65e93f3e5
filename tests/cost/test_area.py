"""Stillmaker & Baas 2017 scaling at the paper's published points."""

from __future__ import annotations

import math

import pytest

from lowbit.cost.area import (
    area_factor,
    check_node,
    energy_factor,
    energy_fit,
    sky130_to,
)
from lowbit.sim.errors import LowbitError


def test_energy_fit_erratum_points():
    # Authors' erratum to §4.2.1: EnergyFactor(32 nm HP, 0.9 V) = 0.4571, (65 nm, 1.3 V) = 2.604,
    # so 1 pJ/op at 65 nm / 1.3 V becomes 0.1755 pJ/op at 32 nm / 0.9 V.
    assert energy_fit(32, 0.9) == pytest.approx(0.4571, abs=5e-5)
    assert energy_fit(65, 1.3) == pytest.approx(2.604, abs=5e-4)
    assert energy_factor(65, 1.3, 32, 0.9) == pytest.approx(0.1755, abs=5e-4)


def test_area_table_points():
    assert area_factor(130, 16) == pytest.approx(0.03)
    assert area_factor(180, 7) == pytest.approx(0.0032)
    assert area_factor(16, 130) == pytest.approx(34)
    assert area_factor(45, 45) == 1


def test_interpolation_between_table_nodes():
    a20, a32, a28 = area_factor(130, 20), area_factor(130, 32), area_factor(130, 28)
    assert a20 < a28 < a32
    t = (math.log(32) - math.log(28)) / (math.log(32) - math.log(20))
    assert a28 == pytest.approx(math.exp((1 - t) * math.log(a32) + t * math.log(a20)))


@pytest.mark.parametrize("node", [5, 6.9, 181, 250])
def test_node_outside_range_is_an_error(node):
    with pytest.raises(LowbitError, match=r"7\.\.180 nm"):
        check_node(node)
    with pytest.raises(LowbitError, match=r"7\.\.180"):
        sky130_to(node, 0.8)
