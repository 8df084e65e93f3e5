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


@pytest.mark.parametrize("beats,groups,tokens,tail", [(2, 11, 1, 4), (4, 11, 1, 4), (2, 6, 4, 2)])
def test_fp4_engine_writes_pass_p_where_the_drain_rule_assumes(beats, groups, tokens, tail):
    """The drain rule's premise on the FP4 core (lowbit.rtl.chip_fp4.Fp4Engine, vitallm-fp4's 6 lanes x 32): in a
    tile of P = tokens x groups passes of `beats` beats started in cycle 0, `done` rises in cycle
    fp4_tile_cycles (the simulator's end E) and pass p's psum write is in cycle E - (P - 1 - p) x beats (the
    decode attn.o / ffn.down shapes and the prefill's attn.k)."""
    from amaranth.sim import Simulator

    from lowbit.rtl.chip_fp4 import Fp4Engine
    from lowbit.sim.config import load_config
    from lowbit.sim.units.fp4 import fp4_tile_cycles

    cfg = load_config("vitallm-fp4").fp4
    eng = Fp4Engine(cfg, w_bits=8, a_bits=8, p_bits=8)
    seen: dict = {"writes": []}

    async def bench(ctx):
        for f, v in (("beats", beats), ("groups", groups), ("tokens", tokens), ("tail_lanes", tail),
                     ("a_stride", beats), ("start", 1)):
            ctx.set(getattr(eng, f), v)
        for cyc in range(400):
            if ctx.get(eng.p_valid):
                seen["writes"].append(cyc)
            if ctx.get(eng.done) and cyc:
                seen["done"] = cyc
                return
            await ctx.tick()
            ctx.set(eng.start, 0)

    sim = Simulator(eng)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    passes = tokens * groups
    end = fp4_tile_cycles(cfg, 32 * beats, passes)
    assert seen["done"] == end
    assert seen["writes"] == [end - (passes - 1 - p) * beats for p in range(passes)]


def test_drain_rule_on_fp4_tile_shapes():
    """vitallm-fp4's FP4 tiles (6 lanes, 32 elements a beat, a 16-lane SFU word): the decode attn.o (64 rows, k 64:
    2 beats a pass; 4 words a row) and ffn.down (k 128: 4 beats) feed the residual safely (their last pass, rows
    60..63, is word 3); ffn.gate / ffn.up (128 rows: 8 words a row) too. A 32-row output read row-major (2 words
    a row, attn.k's shape) is not: its last pass (rows 30..31, word 1) is written in the end cycle, 0 + 1 < 2 (the
    k rows go by the RoPE engine's own layout rule, lowbit.rtl.chip_rope.rope_drain_safe)."""
    assert drain_safe([tile(0, 64, 6, 1, 2)], 4, 16) and drain_safe([tile(0, 64, 6, 1, 4)], 4, 16)
    assert drain_safe([tile(0, 128, 6, 1, 2)], 8, 16)
    assert not drain_safe([tile(0, 32, 6, 1, 2)], 2, 16)
    assert drain_safe([tile(0, 32, 6, 4, 2)], 2, 16)  # the prefill's 4 tokens: the last pass is in token 3's row
