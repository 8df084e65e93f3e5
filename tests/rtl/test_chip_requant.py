"""The loader's rules for the chip's psum requantizers (lowbit.rtl.chip_requant): the drain rule on hand-computed
tile shapes, and the replay of recorded bank writes against the golden's outputs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("amaranth")

from lowbit.rtl.chip_requant import drain_safe, replay  # noqa: E402


def tile(r0: int, rows: int, lanes: int, tokens: int, bt: int) -> dict:
    groups = -(-rows // lanes)
    return {"r0": r0, "rows": rows, "lanes": lanes, "groups": groups, "tokens": tokens, "bt": bt,
            "tail": rows - (groups - 1) * lanes}


def test_drain_rule_on_hand_computed_shapes():
    """vitallm's decode attn.o (64 rows of 6 lanes, k = 64: 4 beats a pass; a 16-lane SFU word, 4 words a row): the
    last pass (rows 60..63, word 3) lands 1 cycle after the tile's end and the residual reads word 3 in its 4th
    cycle, 3 >= 2: safe. A 16-wide output (one word a row) read in the consumer's first cycle is not, nor is a
    tile whose last pass holds rows of word 1 (offset 1 < 2); two tokens put the last pass in the second row
    (offset 4 + w), safe again; a pass 2 beats before the end is safe at any word."""
    assert drain_safe([tile(0, 64, 6, 1, 4)], 4, 16)
    assert not drain_safe([tile(0, 16, 6, 1, 4)], 1, 16)
    assert not drain_safe([tile(16, 12, 6, 1, 4), tile(0, 16, 6, 1, 4), tile(28, 36, 6, 1, 4)], 4, 16)
    assert drain_safe([tile(16, 12, 6, 2, 4)], 4, 16)
    # 1-beat passes: rows 26..31 (word 1) written 1 cycle before the end, 1 + 1 >= 2; rows 32..37 at word 2
    assert drain_safe([tile(26, 12, 6, 1, 1)], 3, 16)
    assert not drain_safe([tile(10, 12, 6, 1, 1)], 2, 16)  # its last pass (rows 16..21) at word 1

def test_replay_checks_every_element_of_each_projection():
    """Two projections on one buffer (3 outputs, 4-lane words: one word a token), written by masked bank writes
    in time order; one wrong element and one missing write are each counted."""
    a = np.array([[1, -2, 3], [4, 5, -6]])
    b = np.array([[7, 8, 9], [10, 11, 12]])

    def word(vals):
        return sum((v & 0xFFFF) << (16 * j) for j, v in enumerate(vals))

    def writes(x, t0):  # token t in word t (bank t mod 2, address t // 2): rows 0..1 then row 2
        out = []
        for t in range(2):
            addrs = [t // 2, t // 2]
            out.append([t0 + 2 * t, 1, 1 << (t % 2), addrs, [0b0011 << 0] * 2, [word(x[t, :2])] * 2])
            out.append([t0 + 2 * t + 1, 1, 1 << (t % 2), addrs, [0b0100] * 2, [word([0, 0, x[t, 2]])] * 2])
        return out

    expect = [("A", 1, a), ("B", 1, b)]
    assert replay(writes(a, 0) + writes(b, 10), 4, expect) == [("A", 6, 0), ("B", 6, 0)]
    bad = writes(b, 10)
    bad[1][5] = [word([0, 0, 99])] * 2
    assert replay(writes(a, 0) + bad, 4, expect) == [("A", 6, 0), ("B", 6, 1)]
    assert replay(writes(a, 0)[:-1], 4, expect) == [("A", 5, 6), ("B", 0, 6)]
