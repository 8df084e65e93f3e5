"""The embedding writer (lowbit.rtl.chip_embed): an embedding read's data beats into X words and each row's
S = sum of squares, against numpy on rows of the deployed bitnet-tiny table; beats of other reads and
beats after the read's last one write nothing."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("amaranth")

from lowbit.rtl.chip_embed import EmbedWriter  # noqa: E402


def _run(rows: np.ndarray, banks: int, unit_bits: int, lanes: int, base: int, slot: int, a_bits: int):
    """Issue one embedding read of `rows` (int16 [t, d]) in slot `slot` at X word `base`, then feed its beats
    interleaved with beats of another slot and one extra beat of the same slot; returns (X writes, S writes)."""
    from amaranth.sim import Simulator

    bb = banks * unit_bits // 8
    raw = rows.astype("<i2").tobytes()
    beats = [int.from_bytes(raw[i:i + bb], "little") for i in range(0, len(raw), bb)]
    rb = 2 * rows.shape[1] // bb
    dut = EmbedWriter(n_issue=2, slot_bits=3, banks=banks, unit_bits=unit_bits, lanes=lanes, a_bits=a_bits,
                      row_beats=rb)
    xs: list[tuple[int, int]] = []
    ss: list[tuple[int, int]] = []

    async def bench(ctx):
        ctx.set(dut.issue, 0b10)  # lane 1 issues it
        ctx.set(dut.issue_slot[1], slot)
        ctx.set(dut.issue_base[1], base)
        ctx.set(dut.issue_beats[1], len(beats))
        await ctx.tick()
        ctx.set(dut.issue, 0)
        feed = [(slot ^ 1, (1 << (8 * bb)) - 1)]  # another read's beat: ignored
        for b in beats:
            feed += [(slot, b), (slot ^ 1, 12345)]
        feed.append((slot, (1 << (8 * bb)) - 1))  # past the read's beats: ignored
        for s, b in feed:
            ctx.set(dut.data_valid, 1)
            ctx.set(dut.data_slot, s)
            ctx.set(dut.data, b)
            if ctx.get(dut.x_en):
                for j in range(dut.k):
                    xs.append((ctx.get(dut.x_addr[j]), [int(v) for v in ctx.get(dut.x_data[j])]))
            if ctx.get(dut.s_en):
                ss.append((ctx.get(dut.s_addr), ctx.get(dut.s_data)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return xs, ss


@pytest.mark.parametrize("banks,unit_bits,lanes,base,t,a_bits", [(32, 16, 4, 0, 2, 9), (16, 64, 16, 1024, 3, 11)])
def test_embed_writer_writes_rows_and_their_sum_of_squares(banks, unit_bits, lanes, base, t, a_bits):
    """`tiny` (64-byte beats, 2 a row of 64 Q7.8, X words of 4) into X half 0, and `vitallm`'s geometry (128-byte
    beats, X words of 16, a row a beat) into half 1 (S rows from 32): every word at its address, S per row."""
    from lowbit.rtl.chip_model import golden_of
    from lowbit.sim.config import load_hw
    from lowbit.sim.modelspec import get_model

    dep, _ = golden_of(get_model("bitnet-tiny"), load_hw("tiny", []), 2, 0, False, 0)
    ids = np.array([7, 200, 31])[:t]
    rows = dep.embed[ids]  # Q7.8 rows of the deployed table
    xs, ss = _run(rows, banks, unit_bits, lanes, base, 5, a_bits)
    words = rows.reshape(-1, lanes)
    assert xs == [(base + a, [int(v) for v in w]) for a, w in enumerate(words)]
    s0 = 32 if base >> (a_bits - 1) else 0
    assert ss == [(s0 + r, int((rows[r].astype(np.int64) ** 2).sum())) for r in range(t)]
    assert all(s > 0 for _, s in ss)
