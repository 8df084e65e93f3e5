"""TINT lane: exact dot products in wide accumulators; wraparound + sticky overflow vs a big-int model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.sim.numerics.tint import tint_acc_bits_required, tint_cycles, tint_dot, tint_tree_sums


def ref_lane(w: list[int], a: list[int], tree_width: int, acc_bits: int) -> tuple[int, bool]:
    """Cycle-by-cycle Python big-int model of the register (wraps every cycle, sticky flag)."""
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    acc, flag = 0, False
    for c in range(0, len(w), tree_width):
        tree = sum(x * y for x, y in zip(w[c : c + tree_width], a[c : c + tree_width], strict=True))
        nxt = acc + tree
        if not lo <= nxt <= hi:
            flag = True
        acc = (nxt - lo) % (1 << acc_bits) + lo
    return acc, flag


lane = st.integers(1, 40).flatmap(
    lambda k: st.tuples(
        st.lists(st.integers(-1, 1), min_size=k, max_size=k),
        st.lists(st.integers(-128, 127), min_size=k, max_size=k),
    )
)


@settings(max_examples=200, deadline=None)
@given(lane, st.integers(1, 9), st.integers(2, 14))
def test_narrow_accumulator_matches_bigint(
    wa: tuple[list[int], list[int]], tree_width: int, acc_bits: int
) -> None:
    w, a = wa
    acc, ovf = tint_dot(np.array(w, np.int8), np.array(a, np.int8), tree_width, acc_bits)
    assert (int(acc), bool(ovf)) == ref_lane(w, a, tree_width, acc_bits)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 4), st.integers(1, 300), st.sampled_from([1, 4, 16, 64]), st.integers(0, 2**32 - 1))
def test_wide_accumulator_exact(rows: int, k: int, tree_width: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w = rng.integers(-1, 2, size=(rows, k)).astype(np.int8)
    a = rng.integers(-128, 128, size=(rows, k)).astype(np.int8)
    acc, ovf = tint_dot(w, a, tree_width, tint_acc_bits_required(k))
    assert acc.shape == (rows,) and not ovf.any()
    assert acc.tolist() == [
        sum(int(x) * int(y) for x, y in zip(w[r], a[r], strict=True)) for r in range(rows)
    ]


def test_sticky_overflow_after_wrap_back() -> None:
    # 4-bit: +7, +1 -> 8 overflows (wraps to -8), then -1 -> -9 wraps to 7: final in range, flag stays set
    acc, ovf = tint_dot(np.array([1, 1, -1]), np.array([7, 1, 1]), 1, 4)
    assert int(acc) == 7 and bool(ovf)
    # the same sum in one cycle never leaves the range
    acc, ovf = tint_dot(np.array([1, 1, -1]), np.array([7, 1, 1]), 3, 4)
    assert int(acc) == 7 and not bool(ovf)


@pytest.mark.parametrize("k", [1, 2, 7, 100, 6912, 8640])
def test_required_bits_is_tight(k: int) -> None:
    bits = tint_acc_bits_required(k)
    w = -np.ones(k, np.int8)
    a = np.full(k, -128, np.int8)  # the +128*k worst case
    acc, ovf = tint_dot(w, a, 16, bits)
    assert int(acc) == 128 * k and not ovf
    _, ovf = tint_dot(w, a, 16, bits - 1)
    assert ovf


def test_required_bits_reference_values() -> None:
    assert tint_acc_bits_required(8640) == 22  # docs/reference/vitallm.md §4.2
    assert tint_acc_bits_required(6912, 127) == 21  # docs/reference/numerics.md §9 item 1
    assert tint_acc_bits_required(0) == 1


def test_tree_sums_and_cycles() -> None:
    w = np.array([1, -1, 0, 1, 1])
    a = np.array([10, 20, 30, 40, 50])
    assert tint_tree_sums(w, a, 2).tolist() == [-10, 40, 50]
    assert tint_cycles(5, 2) == 3 and tint_cycles(8640, 16) == 540
    # broadcast: one activation vector against several weight rows
    ws = np.array([[1, 1, 1, 1, 1], [-1, -1, -1, -1, -1]])
    acc, ovf = tint_dot(ws, a, 4, 24)
    assert acc.tolist() == [150, -150] and not ovf.any()


def test_errors() -> None:
    with pytest.raises(ValueError):
        tint_dot(np.array([2]), np.array([1]), 1, 8)
    with pytest.raises(ValueError):
        tint_dot(np.array([1]), np.array([200]), 1, 8)
    with pytest.raises(ValueError):
        tint_dot(np.array([1, 0]), np.array([1]), 1, 8)
    with pytest.raises(ValueError):
        tint_dot(np.array([1]), np.array([1]), 0, 8)
    with pytest.raises(ValueError):
        tint_dot(np.array([1]), np.array([1]), 1, 64)
