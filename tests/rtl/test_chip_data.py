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
