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
    """DRAM image -> fill port -> tile -> psum; a: activations [tokens, k]; returns (psum acc per token and
    row, ovf per token and row, cycles start -> done, passes)."""
    from amaranth.sim import Simulator

    lanes, tw = tcfg.lanes, tcfg.tree_width
    rows, k = w.shape
    a = np.atleast_2d(a)
    tokens = a.shape[0]
    groups, beats = -(-rows // lanes), -(-k // tw)
    stride = beats + 1  # tokens one word apart more than needed: the stride is the word's, not k's
    # the rows past the matrix in the last group hold non-zero codes: the engine's tail mask must drop them
    wfull = np.ones((groups * lanes, k), np.int8)
    wfull[:rows] = w
    dram = bytearray(dram_addr) + bytearray(pack_tile(wfull, lanes, tw)) + bytearray(64)
    wb = lanes * tw // 4
    dut = TintTileDatapath(tcfg, depth=128)
    ap = np.zeros((tokens, beats * tw), np.int64)
    ap[:, :k] = a
    out: dict = {}

    async def bench(ctx):
        for i in range(groups * beats):  # the DMA's data beats: one buffer word per cycle, in DRAM order
            word = int.from_bytes(dram[dram_addr + i * wb:dram_addr + (i + 1) * wb], "little")
            ctx.set(dut.fill_valid, 1)
            ctx.set(dut.fill_count, 1)
            ctx.set(dut.fill_addr, w_addr + i)
            ctx.set(dut.fill_data, word)
            await ctx.tick()
        ctx.set(dut.fill_valid, 0)
        for t in range(tokens):
            for b in range(beats):
                ctx.set(dut.act_valid, 1)
                ctx.set(dut.act_addr, a_addr + t * stride + b)
                ctx.set(dut.act_data, [int(x) for x in ap[t, b * tw:(b + 1) * tw]])
                await ctx.tick()
        ctx.set(dut.act_valid, 0)
        assert ctx.get(dut.ready)
        ctx.set(dut.start, 1)
        for name, v in (("beats", beats), ("passes", groups), ("tokens", tokens), ("a_stride", stride),
                        ("tail_lanes", rows - (groups - 1) * lanes), ("tail_step", 1),
                        ("w_addr", w_addr), ("a_addr", a_addr), ("p_addr", p_addr)):
            ctx.set(getattr(dut, name), v)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cyc = 1
        nxt = []
        while not ctx.get(dut.done):
            nxt.append(ctx.get(dut.done_next))
            await ctx.tick()
            cyc += 1
        assert nxt == [0] * (cyc - 2) + [1]  # done_next: only in the cycle before done
        out["cycles"] = cyc  # done seen in cycle start + cyc - 1: the core's contract, cycles start -> done
        await ctx.tick()  # the last pass's psum word is written at the edge ending the done cycle
        acc, ovf = [], []
        for p in range(groups * tokens):
            ctx.set(dut.psum_addr, p_addr + p)
            await ctx.tick()
            acc += list(ctx.get(dut.psum_data))
            ovf += [(ctx.get(dut.psum_ovf) >> lane) & 1 for lane in range(lanes)]
        acc = np.array(acc).reshape(tokens, groups * lanes)[:, :rows]
        ovf = np.array(ovf).reshape(tokens, groups * lanes)[:, :rows]
        out["acc"], out["ovf"] = acc.tolist(), ovf.tolist()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out["acc"], out["ovf"], out["cycles"], groups * tokens


@pytest.mark.parametrize("hw, rows, k, tokens", [("tiny", 5, 13, 1), ("vitallm", 12, 40, 1), ("tiny", 6, 9, 3)])
def test_tint_tile_from_the_buffers_is_bit_exact(hw, rows, k, tokens):
    """Row groups within a token, tokens a stride apart: every pass's results are tint_dot's."""
    tcfg = load_hw(hw, []).tint
    rng = np.random.default_rng(3)
    w = rng.integers(-1, 2, size=(rows, k)).astype(np.int8)
    a = rng.integers(-128, 128, size=(tokens, k)).astype(np.int64)
    a[0, :3] = -128  # the extreme activation
    acc, ovf, cycles, passes = _run_tile(tcfg, w, a)
    want, wovf = tint_dot(w[None, :, :], a[:, None, :], tcfg.tree_width, tcfg.acc_bits)
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
    assert ovf == [[1, 1]] == [wovf.astype(int).tolist()] and acc == [want.tolist()]


def test_datapath_verilog_lints_clean(tmp_path):
    from amaranth.back import verilog

    from lowbit.rtl.lint import lint

    v = tmp_path / "lowbit_chip_tint_data.v"
    v.write_text(verilog.convert(TintTileDatapath(load_hw("tiny", []).tint, depth=64),
                                 name="lowbit_chip_tint_data", emit_src=False))
    r = lint(v, "lowbit_chip_tint_data")
    assert r.ok, r.errors[:5]


def test_dma_fill_places_interleaved_beats_at_any_alignment():
    """Two weight tiles read from a DRAM image by two requests issued on two lanes in one cycle, whose data
    beats (4 words each, the last one partial) arrive interleaved: every word lands at its request's buffer
    address in a 4-bank buffer (allocations not beat-aligned, one wrapping the buffer's end), and nothing
    else is written."""
    from amaranth.hdl import Module
    from amaranth.sim import Simulator

    from lowbit.rtl.chip_data import BankedBuffer, DmaFill

    tcfg = load_hw("tiny", []).tint
    lanes, tw = tcfg.lanes, tcfg.tree_width
    nb, depth = 4, 32
    rng = np.random.default_rng(5)
    w0 = rng.integers(-1, 2, size=(2, 20)).astype(np.int8)   # 5 words
    w1 = rng.integers(-1, 2, size=(6, 8)).astype(np.int8)    # 6 words
    img = [pack_tile(w, lanes, tw) for w in (w0, w1)]
    wb = lanes * tw // 4
    reqs = [(3, 5), (29, 6)]  # (buffer word, slot): request 1 wraps from word 29 to word 2
    words = [[int.from_bytes(b[i * wb:(i + 1) * wb], "little") for i in range(len(b) // wb)] for b in img]
    m = Module()
    m.submodules.fill = fill = DmaFill(table=8, n_issue=2, addr_bits=5, banks=nb, unit_bits=2 * lanes * tw)
    m.submodules.buf = buf = BankedBuffer(depth=depth, banks=nb, unit_bits=2 * lanes * tw)
    m.d.comb += [buf.wr_valid.eq(fill.wr_valid), buf.wr_addr.eq(fill.wr_addr), buf.wr_count.eq(fill.wr_count),
                 buf.wr_data.eq(fill.wr_data)]
    order = [1, 0, 1, 0]  # which request each data beat belongs to
    got = {}

    async def bench(ctx):
        for k, ((word, slot), ws) in enumerate(zip(reqs, words, strict=True)):
            ctx.set(fill.issue_valid, 0b11)
            ctx.set(fill.issue_slot[k], slot)
            ctx.set(fill.issue_addr[k], word)
            ctx.set(fill.issue_words[k], len(ws))
        await ctx.tick()
        ctx.set(fill.issue_valid, 0)
        sent = [0, 0]
        for r in order:
            i = sent[r]
            sent[r] += nb
            ctx.set(fill.data_valid, 1)
            ctx.set(fill.data_slot, reqs[r][1])
            ctx.set(fill.data, (words[r][i:i + nb] + [0xFFFF] * nb)[:nb])  # beyond the request: not written
            await ctx.tick()
        ctx.set(fill.data_valid, 0)
        for a in range(depth):
            ctx.set(buf.raddr[0], a)
            await ctx.tick()
            got[a] = ctx.get(buf.rdata0)

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    want = dict.fromkeys(range(depth), 0)
    for (word, _), ws in zip(reqs, words, strict=True):
        for i, x in enumerate(ws):
            want[(word + i) % depth] = x
    assert got == want and sum(x != 0 for x in got.values()) > 6


def test_banked_buffer_reads_multi_unit_words_at_any_address():
    """A word of 3 units (vitallm: a 24-byte TINT word in 8-byte units) read from every unit address of a
    4-bank buffer, wrapping at its end, is the 3 units written there; a second port reads single units."""
    from amaranth.sim import Simulator

    from lowbit.rtl.chip_data import BankedBuffer

    depth, nb, n = 16, 4, 3
    dut = BankedBuffer(depth=depth, banks=nb, unit_bits=8, word_units=(n, 1))
    mem = [(37 * i + 11) % 256 for i in range(depth)]
    got = {}

    async def bench(ctx):
        for a in range(0, depth, nb):  # beats at unaligned addresses: start at 1, the last one wraps
            base = (a + 1) % depth
            ctx.set(dut.wr_valid, 1)
            ctx.set(dut.wr_addr, base)
            ctx.set(dut.wr_count, nb)
            ctx.set(dut.wr_data, [mem[(base + o) % depth] for o in range(nb)])
            await ctx.tick()
        ctx.set(dut.wr_valid, 0)
        for a in range(depth):
            ctx.set(dut.raddr[0], a)
            ctx.set(dut.raddr[1], (a + 5) % depth)
            await ctx.tick()
            got[a] = (ctx.get(dut.rdata0), ctx.get(dut.rdata1))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()

    def word(a):
        return sum(mem[(a + j) % depth] << (8 * j) for j in range(n))

    assert got == {a: (word(a), mem[(a + 5) % depth]) for a in range(depth)}
