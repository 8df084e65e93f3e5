"""The chip's TINT data path (lowbit.rtl.chip_data) on the Amaranth simulator: packed ternary weights go from a
DRAM byte image through the DMA fill port into the weight buffer, a linear-layer tile runs on the TINT core
from the weight and activation buffers into psum, bit-exact with sim.numerics.tint.tint_dot and in
sim.units.tint.tint_tile_cycles cycles."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("amaranth")

from lowbit.rtl.chip_data import TintTileDatapath, pack_tile, tile_codes  # noqa: E402
from lowbit.sim.config import load_hw  # noqa: E402
from lowbit.sim.numerics.packing import unpack_ternary_2bit  # noqa: E402
from lowbit.sim.numerics.tint import tint_dot  # noqa: E402
from lowbit.sim.units.tint import tint_tile_cycles  # noqa: E402


def test_tile_layout_packs_pass_beat_lane_element():
    w = np.arange(-1, 2, dtype=np.int8)[np.arange(3 * 5) % 3].reshape(3, 5)  # 3 rows, k = 5
    t = tile_codes(w, lanes=2, tree_width=4)  # 2 passes x 2 beats, 8 codes a word
    assert t.shape == (4, 8)
    assert t[0].tolist() == [*w[0, :4], *w[1, :4]]          # pass 0, beat 0: lane 0 then lane 1
    assert t[1].tolist() == [w[0, 4], 0, 0, 0, w[1, 4], 0, 0, 0]  # tail beat zero-padded
    assert t[2].tolist() == [*w[2, :4], 0, 0, 0, 0]          # pass 1: the padded row is zero
    b = pack_tile(w, 2, 4)
    assert len(b) == 8 and unpack_ternary_2bit(np.frombuffer(b, np.uint8), 32).reshape(4, 8).tolist() == t.tolist()


def _run_tile(tcfg, w: np.ndarray, a: np.ndarray, *, dram_addr: int = 96, w_addr: int = 5, a_addr: int = 40,
              p_addr: int = 17):
    """DRAM image -> fill port -> tile -> psum; returns (psum acc per row, ovf per row, cycles start -> done)."""
    from amaranth.sim import Simulator

    lanes, tw = tcfg.lanes, tcfg.tree_width
    rows, k = w.shape
    passes, beats = -(-rows // lanes), -(-k // tw)
    dram = bytearray(dram_addr) + bytearray(pack_tile(w, lanes, tw)) + bytearray(64)
    wb = lanes * tw // 4
    dut = TintTileDatapath(tcfg, depth=128)
    ap = np.zeros(beats * tw, np.int64)
    ap[:k] = a
    out: dict = {}

    async def bench(ctx):
        for i in range(passes * beats):  # the DMA's data beats: one buffer word per cycle, in DRAM order
            word = int.from_bytes(dram[dram_addr + i * wb:dram_addr + (i + 1) * wb], "little")
            ctx.set(dut.fill_valid, 1)
            ctx.set(dut.fill_addr, w_addr + i)
            ctx.set(dut.fill_data, word)
            await ctx.tick()
        ctx.set(dut.fill_valid, 0)
        for b in range(beats):
            ctx.set(dut.act_valid, 1)
            ctx.set(dut.act_addr, a_addr + b)
            ctx.set(dut.act_data, [int(x) for x in ap[b * tw:(b + 1) * tw]])
            await ctx.tick()
        ctx.set(dut.act_valid, 0)
        assert ctx.get(dut.ready)
        ctx.set(dut.start, 1)
        for name, v in (("beats", beats), ("passes", passes), ("w_addr", w_addr), ("a_addr", a_addr),
                        ("p_addr", p_addr)):
            ctx.set(getattr(dut, name), v)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cyc = 1
        while not ctx.get(dut.done):
            await ctx.tick()
            cyc += 1
        out["cycles"] = cyc  # done seen in cycle start + cyc - 1: the core's contract, cycles start -> done
        await ctx.tick()  # the last pass's psum word is written at the edge ending the done cycle
        acc, ovf = [], []
        for p in range(passes):
            ctx.set(dut.psum_addr, p_addr + p)
            await ctx.tick()
            acc += list(ctx.get(dut.psum_data))
            ovf += [(ctx.get(dut.psum_ovf) >> lane) & 1 for lane in range(lanes)]
        out["acc"], out["ovf"] = acc[:rows], ovf[:rows]

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out["acc"], out["ovf"], out["cycles"], passes


@pytest.mark.parametrize("hw, rows, k", [("tiny", 5, 13), ("vitallm", 12, 40)])
def test_tint_tile_from_the_buffers_is_bit_exact(hw, rows, k):
    tcfg = load_hw(hw, []).tint
    rng = np.random.default_rng(3)
    w = rng.integers(-1, 2, size=(rows, k)).astype(np.int8)
    a = rng.integers(-128, 128, size=k).astype(np.int64)
    a[:3] = -128  # the extreme activation
    acc, ovf, cycles, passes = _run_tile(tcfg, w, a)
    want, wovf = tint_dot(w, a[None, :], tcfg.tree_width, tcfg.acc_bits)
    assert acc == want.tolist() and ovf == wovf.astype(int).tolist()
    assert cycles == tint_tile_cycles(tcfg, k, passes)
    assert any(x != 0 for x in acc)


def test_tint_tile_wraps_like_the_golden_model():
    """A narrow accumulator overflows: the buffers carry the wrapped value and the sticky flag."""
    import dataclasses

    tcfg = dataclasses.replace(load_hw("tiny", []).tint, acc_bits=11)
    w = np.ones((2, 24), np.int8)
    w[1] = -1
    a = np.full(24, 127, np.int64)
    acc, ovf, _, _ = _run_tile(tcfg, w, a)
    want, wovf = tint_dot(w, a[None, :], tcfg.tree_width, tcfg.acc_bits)
    assert ovf == [1, 1] == wovf.astype(int).tolist() and acc == want.tolist()


def test_datapath_verilog_lints_clean(tmp_path):
    from amaranth.back import verilog

    from lowbit.rtl.lint import lint

    v = tmp_path / "lowbit_chip_tint_data.v"
    v.write_text(verilog.convert(TintTileDatapath(load_hw("tiny", []).tint, depth=64),
                                 name="lowbit_chip_tint_data", emit_src=False))
    r = lint(v, "lowbit_chip_tint_data")
    assert r.ok, r.errors[:5]


def test_dma_fill_places_interleaved_read_beats_and_completes_at_the_last():
    """Two weight tiles read from a DRAM image by two requests whose data beats arrive interleaved (the
    second request's first): every word lands at its request's buffer address, each request completes
    with its last beat, and the tile computed from the filled buffer is tint_dot's."""
    from amaranth.hdl import Module
    from amaranth.sim import Simulator

    from lowbit.rtl.chip_data import DmaFill

    tcfg = load_hw("tiny", []).tint
    lanes, tw = tcfg.lanes, tcfg.tree_width
    rng = np.random.default_rng(5)
    w0 = rng.integers(-1, 2, size=(2, 12)).astype(np.int8)   # 3 words
    w1 = rng.integers(-1, 2, size=(4, 8)).astype(np.int8)    # 4 words
    img = [pack_tile(w, lanes, tw) for w in (w0, w1)]
    wb = lanes * tw // 4
    dram = bytearray(64) + img[0] + bytearray(16) + img[1]
    reqs = [(64, 3, 10, 2), (64 + len(img[0]) + 16, 4, 30, 5)]  # (DRAM address, words, buffer word, id)
    m = Module()
    m.submodules.fill = fill = DmaFill(table=8, addr_bits=7, word_bits=2 * lanes * tw)
    m.submodules.dp = dp = TintTileDatapath(tcfg, depth=128)
    m.d.comb += [dp.fill_valid.eq(fill.fill_valid), dp.fill_addr.eq(fill.fill_addr),
                 dp.fill_data.eq(fill.fill_data)]
    order = [1, 1, 0, 1, 0, 0, 1]  # which request each data beat belongs to
    out: dict = {"done": []}

    async def bench(ctx):
        for _, n, word, rid in reqs:
            ctx.set(fill.issue_valid, 1)
            ctx.set(fill.issue_id, rid)
            ctx.set(fill.issue_addr, word)
            ctx.set(fill.issue_words, n)
            await ctx.tick()
        ctx.set(fill.issue_valid, 0)
        sent = [0, 0]
        for r in order:
            addr, n, word, rid = reqs[r]
            i = sent[r]
            sent[r] += 1
            ctx.set(fill.data_valid, 1)
            ctx.set(fill.data_id, rid)
            ctx.set(fill.data, int.from_bytes(dram[addr + i * wb:addr + (i + 1) * wb], "little"))
            if ctx.get(fill.done):
                out["done"].append(ctx.get(fill.done_id))
            await ctx.tick()
        ctx.set(fill.data_valid, 0)
        for (_, _, word, _), w in zip(reqs, (w0, w1), strict=True):
            for b in range(3):
                ctx.set(dp.act_valid, 1)
                ctx.set(dp.act_addr, b)
                ctx.set(dp.act_data, [int(x) for x in acts[b * tw:(b + 1) * tw]])
                await ctx.tick()
            ctx.set(dp.act_valid, 0)
            beats, passes = -(-w.shape[1] // tw), -(-w.shape[0] // lanes)
            ctx.set(dp.start, 1)
            for name, v in (("beats", beats), ("passes", passes), ("w_addr", word), ("a_addr", 0), ("p_addr", 0)):
                ctx.set(getattr(dp, name), v)
            await ctx.tick()
            ctx.set(dp.start, 0)
            while not ctx.get(dp.done):
                await ctx.tick()
            await ctx.tick()
            res = []
            for p in range(passes):
                ctx.set(dp.psum_addr, p)
                await ctx.tick()
                res += list(ctx.get(dp.psum_data))
            out.setdefault("acc", []).append(res[:w.shape[0]])

    acts = rng.integers(-128, 128, size=12).astype(np.int64)
    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert out["done"] == [2, 5]  # request 0's last beat (the 6th of 7) comes before request 1's (the 7th)
    for w, got in zip((w0, w1), out["acc"], strict=True):
        a = acts[:w.shape[1]]
        assert got == tint_dot(w, a[None, :], tw, tcfg.acc_bits)[0].tolist()
