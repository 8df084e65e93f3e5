"""BoothFlex's ternary tiles over TINT row groups of another lane count (lowbit.rtl.chip_booth_regroup:
`vitallm`'s 4-lane BoothFlex beside 6-lane TINT cores) on the Amaranth simulator: weights in the TINT core's
DRAM layout (row groups of 6, the last one only its rows), each pass's 4 rows read from one or two row
groups, bit-exact with the ternary BoothFlex golden (sim.numerics.tint.tint_dot, 4 width products a beat)
in sim.units.booth.booth_ternary_tile_cycles."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("amaranth")

from lowbit.rtl.chip_booth import BoothEngine  # noqa: E402
from lowbit.rtl.chip_booth_regroup import booth_regroup_ok  # noqa: E402
from lowbit.rtl.chip_data import pack_tile  # noqa: E402
from lowbit.sim.config import load_hw  # noqa: E402
from lowbit.sim.numerics.tint import tint_dot  # noqa: E402
from lowbit.sim.units.booth import booth_ternary_tile_cycles  # noqa: E402
from tests.rtl.booth_tile import run_booth_tile  # noqa: E402

UB = 8  # vitallm's weight buffer unit bytes: a 6-lane TINT word is 3 units, a 4-lane last row group's 2


def _run(w: np.ndarray, a: np.ndarray, *, w_addr: int = 5, a_addr: int = 3, p_addr: int = 2):
    """W [rows, k] ternary, a [tokens, k] INT8 on vitallm's BoothFlex with regroup; returns (psum words as
    (address, accumulators, overflow mask), cycles start -> done, passes, tail_step)."""
    cfg = load_hw("vitallm", [])
    b, t = cfg.booth, cfg.tint
    tl, tw = t.lanes, t.tree_width
    rows, k = w.shape
    tokens, beats, groups = a.shape[0], k // tw, rows // b.lanes
    tg = -(-rows // tl)
    tail = rows - (tg - 1) * tl
    dram = b"".join(pack_tile(w[g * tl:(g + 1) * tl], min(tl, rows - g * tl), tw) for g in range(tg))
    wu, ts = 2 * tl * tw // 8 // UB, 2 * tail * tw // 8 // UB
    assert len(dram) == ((tg - 1) * wu + ts) * beats * UB
    units = np.full((128, UB), 0xA5, np.uint8)  # past the tile: non-zero codes a lane must never take
    units[w_addr:w_addr + len(dram) // UB] = np.frombuffer(dram, np.uint8).reshape(-1, UB)
    act = np.zeros((64, tw), np.int64)
    for tok in range(tokens):
        act[a_addr + tok * (beats + 1):a_addr + tok * (beats + 1) + beats] = a[tok].reshape(beats, tw)
    dut = BoothEngine(b, t, w_bits=7, a_bits=6, p_bits=6, w_step=wu, regroup=True)

    def word(addr: int) -> int:
        return int.from_bytes(units[[(addr + j) % 128 for j in range(wu)]].tobytes(), "little")

    def serve(ctx):
        return [(dut.w_rdata, word(ctx.get(dut.w_raddr))), (dut.w_rdata2, word(ctx.get(dut.w_raddr2))),
                (dut.a_rdata[0], [int(x) for x in act[ctx.get(dut.a_raddr[0])]])]

    got, cyc = run_booth_tile(dut, {"mode": 1, "beats": beats, "groups": groups, "tokens": tokens, "tgroups": tg,
                                    "tail_step": ts, "w_addr": w_addr, "a_addr": a_addr, "a_stride": beats + 1,
                                    "p_addr": p_addr}, serve)
    return got, cyc, tokens * groups, ts


@pytest.mark.parametrize("rows, k, tokens, ts", [
    # row groups 6, 6, 4: passes at lanes 0, 4 (+ the next group's 0, 1), 2, and the last group's 0
    (16, 48, 2, 2),
    # row groups 6, 2: the second pass takes lanes 4, 5 and the 2-row last group (1-unit words)
    (8, 32, 1, 1),
    # row groups 6, 6: the passes at lane offsets 0, 4, 2, with full words throughout
    (12, 16, 3, 3)])
def test_ternary_tile_over_tint_row_groups_is_bit_exact(rows, k, tokens, ts):
    """Every pass's 4 lanes are rows 4 g .. 4 g + 3 of the matrix, from one or two TINT row groups (the last
    one's words `tail_step` units): its accumulators are tint_dot's at 16 products a beat, written at p_addr
    + pass (token, pass), and the tile ends booth_ternary_tile_cycles after its start."""
    cfg = load_hw("vitallm", [])
    assert booth_regroup_ok(cfg.booth, cfg.tint) == ""
    rng = np.random.default_rng(rows * 100 + k)
    w = rng.integers(-1, 2, (rows, k)).astype(np.int8)
    a = rng.integers(-128, 128, (tokens, k)).astype(np.int64)
    a[0, :2] = -128
    got, cyc, passes, got_ts = _run(w, a)
    acc, ovf = tint_dot(w[None, :, :], a[:, None, :], 16, cfg.booth.acc_bits)
    want = [(2 + p, acc[p // (rows // 4), 4 * (p % (rows // 4)):4 * (p % (rows // 4)) + 4].tolist(),
             sum(int(v) << i for i, v in enumerate(ovf[p // (rows // 4), 4 * (p % (rows // 4)):][:4])))
            for p in range(passes)]
    assert got == want and got_ts == ts and np.any(acc)
    assert cyc == booth_ternary_tile_cycles(cfg.booth, k, passes)


def test_regroup_needs_one_tint_word_a_beat():
    """tiny's BoothFlex (2 lanes x 8 elements a beat over 4-element TINT words) has no regrouped layout."""
    cfg = load_hw("tiny", [])
    assert "not one TINT word" in booth_regroup_ok(cfg.booth, cfg.tint)


def test_regrouping_engine_lints_clean(tmp_path):
    """vitallm's BoothFlex engine with the regrouped weight reads: Verilator -Wall clean (lowbit.rtl.lint)."""
    from lowbit.rtl.lint import lint_component

    cfg = load_hw("vitallm", [])
    r, _ = lint_component(BoothEngine(cfg.booth, cfg.tint, w_bits=11, a_bits=8, p_bits=8, w_step=3, regroup=True),
                          "lowbit_booth_regroup", tmp_path)
    assert r.ok, r.errors[:5]
