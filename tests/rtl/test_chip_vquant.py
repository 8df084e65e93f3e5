"""The V quantizer (lowbit.rtl.chip_vquant) on the Amaranth simulator: its INT8 rows and amax against Python-integer
RNE(127 |x| / amax) and sim.numerics' absmax quantize, its timing, its row memory's mapping of the requantizers'
bank writes, and the loader's V sources on bitnet-tiny."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("amaranth")

from lowbit.rtl.chip_vquant import VQ_PIPE, VQuant, VRows  # noqa: E402
from lowbit.sim.numerics.sfu import sfu_absmax_quantize  # noqa: E402
from tests.rtl.test_chip_rope import _rows, rne127  # noqa: E402

HD, KV, UB, ROWS = 8, 2, 2, 16  # head_dim, KV heads, source unit bytes, row memory rows


def run_vquant(rows: np.ndarray, jobs: dict[int, list[tuple[int, int]]], n_cyc: int = 40):
    """The quantizer over a row memory holding `rows` [ROWS, HD] (read the cycle after its address); `jobs`: issue
    cycle -> [(source unit, units)] on its lanes (a job's first scale index 3 x its unit). Returns the source writes
    (cycle, unit, INT8 row, amax, scale index) and the cycles `done` steps in."""
    from amaranth.hdl import Module
    from amaranth.sim import Simulator

    m = Module()
    m.submodules.vq = vq = VQuant(lanes=2, table=4, hd=HD, rows=ROWS, kv=KV, addr_bits=8, row_units=HD // UB,
                                  s_bits=10)
    writes, done = [], []

    async def bench(ctx):
        prev = 0
        for c in range(n_cyc):
            batch = jobs.get(c, [])
            ctx.set(vq.i_valid, (1 << len(batch)) - 1)
            for k, (a, u) in enumerate(batch):
                ctx.set(vq.i_addr[k], a)
                ctx.set(vq.i_units[k], u)
                ctx.set(vq.i_sidx[k], 3 * a)  # the job's first scale index
            ctx.set(vq.r_data, [int(v) for v in rows[addr]] if (addr := rd.pop(c - 1, None)) is not None else [0] * HD)
            rd[c] = ctx.get(vq.r_addr)
            if ctx.get(vq.s_wen):
                writes.append((c, ctx.get(vq.s_addr), [int(v) for v in ctx.get(vq.s_data)], ctx.get(vq.s_amax),
                               ctx.get(vq.s_sidx)))
            if ctx.get(vq.done) != prev:
                done.append(c)
                prev = ctx.get(vq.done)
            await ctx.tick()

    rd: dict[int, int] = {}
    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return writes, done


def test_v_quantizer_matches_exact_arithmetic_and_numerics():
    """Two V writes issued in one cycle (KV heads 0 and 1 of a 3-token step) and a one-token write later: every
    head row t x KV + g of the job becomes sign(x) RNE(127 |x| / amax) (Python integers) and sim.numerics'
    absmax quantize of it, with its amax, a row a cycle into the job's source units, the first VQ_PIPE cycles
    after the issue; `done` steps the cycle after each job's last row (rows: random Q7.8, -2^15 (amax 2^15),
    an all-zero row, exact ties, one repeated value, tiny values)."""
    rng = np.random.default_rng(11)
    rows = _rows(rng, ROWS, HD)
    rows[6] = [-32768, 32767, -1, 1, 0, -32768, 5, -5]  # negative extremes with amax 2^15
    jobs = {0: [(128, 3 * HD // UB), (160, 3 * HD // UB)], 20: [(200, HD // UB)]}
    writes, done = run_vquant(rows, jobs)
    q8, amax = sfu_absmax_quantize(rows, 16)
    exact = np.vectorize(rne127)(rows, np.abs(rows).max(axis=1, keepdims=True))
    assert np.array_equal(q8, exact)
    order = [(128, [0, 2, 4]), (160, [1, 3, 5]), (200, [0])]  # job 2 is KV head 0 again (the 3rd job: 2 mod KV)
    want = [(a + t * HD // UB, exact[r].tolist(), int(amax[r, 0])) for a, rs in order for t, r in enumerate(rs)]
    assert [(a, q, x) for _, a, q, x, _ in writes] == want
    assert [x for *_, x in writes] == [3 * a + t for a, rs in order for t in range(len(rs))]  # row t's scale index
    cyc = [c for c, *_ in writes]
    assert cyc == [VQ_PIPE + k for k in range(6)] + [20 + VQ_PIPE]  # the second job right after the first, no gap
    assert done == [cyc[2] + 1, cyc[5] + 1, cyc[6] + 1]
    assert int(amax[6, 0]) == 1 << 15 and exact[6].tolist() == [-127, 127, 0, 0, 0, -127, 0, 0]


def test_row_memory_maps_the_requantizers_bank_words_to_head_rows():
    """A requantizer's bank-b word W (lanes elements, an element mask) lands in row W div (HD / lanes), elements
    (W mod (HD / lanes)) x lanes ..; writes with another dst do not."""
    from amaranth.hdl import Module, Signal
    from amaranth.lib import data
    from amaranth.sim import Simulator

    from lowbit.rtl.chip_requant import DST_V

    lanes = 4
    m = Module()

    class Rq:  # the requantizer's bank write ports (lowbit.rtl.sfu_stream_requant.PsumRequant)
        pass

    rq = Rq()
    rq.w_dst = Signal(3)
    for b in (0, 1):
        setattr(rq, f"w{b}_en", Signal(name=f"w{b}_en"))
        setattr(rq, f"w{b}_addr", Signal(6, name=f"w{b}_addr"))
        setattr(rq, f"w{b}_mask", Signal(lanes, name=f"w{b}_mask"))
        setattr(rq, f"w{b}_data", Signal(data.ArrayLayout(16, lanes), name=f"w{b}_data"))
    vr = VRows(m, hd=HD, lanes=lanes, rows=ROWS)
    vr.writer(rq, DST_V)
    raddr = Signal(4)
    rdata = vr.reader(raddr)
    # (dst, bank, bank address, mask, elements): words 2a + b
    ops = [(DST_V, 0, 0, 0b1111, [1, 2, 3, 4]), (DST_V, 1, 0, 0b0101, [5, 6, 7, 8]),
           (DST_V, 0, 3, 0b1111, [9, 10, 11, 12]), (2, 1, 3, 0b1111, [99, 99, 99, 99])]
    got = {}

    async def bench(ctx):
        for dst, b, a, mask, vals in ops:
            ctx.set(rq.w_dst, dst)
            for bb in (0, 1):
                ctx.set(getattr(rq, f"w{bb}_en"), int(bb == b))
            ctx.set(getattr(rq, f"w{b}_addr"), a)
            ctx.set(getattr(rq, f"w{b}_mask"), mask)
            ctx.set(getattr(rq, f"w{b}_data"), vals)
            await ctx.tick()
        for bb in (0, 1):
            ctx.set(getattr(rq, f"w{bb}_en"), 0)
        for r in range(4):
            ctx.set(raddr, r)
            await ctx.tick()
            got[r] = [int(v) for v in ctx.get(rdata)]

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got[0] == [1, 2, 3, 4, 5, 0, 7, 0]  # words 0 and 1 (mask 0101)
    assert got[3] == [9, 10, 11, 12, 0, 0, 0, 0]  # word 6; word 7 (dst 2) not written
    assert got[1] == got[2] == [0] * HD


def test_v_quantizer_lints_clean(tmp_path):
    """verilator --lint-only -Wall on the quantizer at tiny's sizes (rtl.lint's waivers only)."""
    from lowbit.rtl.lint import lint_component

    r, _ = lint_component(VQuant(lanes=12, table=32, hd=16, rows=16, kv=2, addr_bits=10, row_units=8),
                          "lowbit_vquant", tmp_path)
    assert r.ok, r.errors[:5]


def test_scale_index_of_a_v_writes_dram_address():
    """The scale index the chip takes from a V write's DRAM address (sim.kvcache.kv_addr) is (layer x KV + head)
    x max_positions + position for every layer, KV head and position of bitnet-tiny (2 layers, 2 KV heads, 256
    positions, head_dim 16), and distinct from every other row's."""
    from amaranth.hdl import Module, Signal
    from amaranth.sim import Simulator

    from lowbit.rtl.chip_vquant import scale_entries, scale_index
    from lowbit.sim.kvcache import kv_addr
    from lowbit.sim.modelspec import get_model

    s = get_model("bitnet-tiny")
    vq = (4, s.head_dim, s.n_kv_heads, s.max_positions, s.n_layers)
    m = Module()
    addr, idx = Signal(48), Signal(16)
    m.d.comb += idx.eq(scale_index(addr, vq))
    cases = [(layer, g, pos) for layer in range(s.n_layers) for g in range(s.n_kv_heads)
             for pos in (0, 1, 7, s.max_positions - 1)]
    got = []

    async def bench(ctx):
        for layer, g, pos in cases:
            ctx.set(addr, kv_addr(s, layer, g, True, pos))
            got.append(ctx.get(idx))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == [(layer * s.n_kv_heads + g) * s.max_positions + pos for layer, g, pos in cases]
    assert scale_entries(vq) == s.n_layers * s.n_kv_heads * s.max_positions == 1024
