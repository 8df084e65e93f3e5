"""Each key's k_amax on the chip (lowbit.rtl.chip_kscales): the copy from the RoPE engine's row amax into the
key-scale memory at the K write's scale index on the Amaranth simulator, the scale memory's entry reads, and the
loader's tiles reading k_amax by position on bitnet-tiny (`tiny`) and `vitallm`."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("amaranth")

from lowbit.rtl.chip_kscales import KScaleCopy  # noqa: E402


def run_copy(amax: list[int], jobs: dict[int, list[tuple[int, int, int]]], n_cyc: int = 40):
    """The copy over a row amax memory holding `amax` (read the cycle after its address); `jobs`: issue cycle ->
    [(first source row, rows, first scale index)] on its lanes. Returns the key-scale writes (cycle, index, amax)."""
    from amaranth.hdl import Module
    from amaranth.sim import Simulator

    m = Module()
    m.submodules.cp = cp = KScaleCopy(lanes=2, table=4, row_bits=5, s_bits=10)
    writes = []
    rd: dict[int, int] = {}

    async def bench(ctx):
        for c in range(n_cyc):
            batch = jobs.get(c, [])
            ctx.set(cp.i_valid, (1 << len(batch)) - 1)
            for k, (r, n, s) in enumerate(batch):
                ctx.set(cp.i_row[k], r)
                ctx.set(cp.i_rows[k], n)
                ctx.set(cp.i_sidx[k], s)
            ctx.set(cp.r_data, amax[rd.pop(c - 1)] if c - 1 in rd else 0)
            rd[c] = ctx.get(cp.r_addr)
            if ctx.get(cp.w_en):
                writes.append((c, ctx.get(cp.w_sidx), ctx.get(cp.w_amax)))
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return writes


def test_copy_writes_each_rows_amax_at_its_scale_index():
    """Two K writes issued in one cycle (3 rows from source row 4, 2 rows from row 10) and a one-row write later:
    row t of a job lands at its first scale index + t with the row memory's amax, in issue order, a row a cycle,
    the first 3 cycles after its issue; a later job waits behind the busy one."""
    rng = np.random.default_rng(3)
    amax = [int(x) for x in rng.integers(1, 1 << 15, 32)]
    got = run_copy(amax, {2: [(4, 3, 100), (10, 2, 300)], 20: [(31, 1, 7)]})
    want = [(5 + t, 100 + t, amax[4 + t]) for t in range(3)] + [(8 + t, 300 + t, amax[10 + t]) for t in range(2)] \
        + [(23, 7, amax[31])]
    assert got == want


def test_copy_lints_clean(tmp_path):
    """verilator --lint-only -Wall on the copy at tiny's sizes (rtl.lint's waivers only)."""
    from lowbit.rtl.lint import lint_component

    r, _ = lint_component(KScaleCopy(lanes=12, table=32, row_bits=7, s_bits=10), "lowbit_kscopy", tmp_path)
    assert r.ok, r.errors[:5]


def test_scale_memory_reads_an_entry_the_cycle_after():
    """chip_vquant.Scales (4 entries a word): entries written by index read back by index, the cycle after the
    address, whatever their lane."""
    from amaranth.hdl import Module, Signal
    from amaranth.sim import Simulator

    from lowbit.rtl.chip_vquant import Scales

    m = Module()
    sc = Scales(m, lanes=4, entries=64, name="t_scales")
    en, idx, a, ridx = Signal(), Signal(6), Signal(16), Signal(8)
    sc.write(en, idx, a)
    out = sc.read_entry(ridx, "t")
    vals = {i: (i * 977 + 13) % (1 << 15) for i in range(64)}
    got = {}

    async def bench(ctx):
        for i, v in vals.items():
            ctx.set(en, 1)
            ctx.set(idx, i)
            ctx.set(a, v)
            await ctx.tick()
        ctx.set(en, 0)
        order = [5, 0, 63, 6, 7, 4, 33]
        for k, i in enumerate(order + [0]):
            ctx.set(ridx, i)
            await ctx.tick()
            if k < len(order):
                got[order[k]] = ctx.get(out)

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == {i: vals[i] for i in got} and len(got) == 7


def test_recorder_keeps_each_gathered_keys_scale_index_in_fetch_order():
    """Indirect K words of dma_kv (two issuing in one cycle, then one wrapping the 16 entries; a V word and a
    direct K read ignored) leave each fetched key's scale index (layer x KV + head) x max_positions + position,
    from the request's address (sim.kvcache.kv_addr of the run's first key), at consecutive entries mod the
    depth, in issue order."""
    from types import SimpleNamespace

    from amaranth.hdl import Module, Signal
    from amaranth.sim import Simulator

    from lowbit.rtl.chip_kscales import gather_record
    from lowbit.sim.kvcache import kv_addr
    from lowbit.sim.modelspec import get_model

    s = get_model("bitnet-tiny")
    vq = (4, s.head_dim, s.n_kv_heads, s.max_positions, s.n_layers)
    words = [SimpleNamespace(ind=Signal(name=f"ind{k}"), plane=Signal(name=f"pl{k}"), nidx=Signal(8, name=f"n{k}"))
             for k in range(2)]
    dkv = SimpleNamespace(words=words, req_valid=Signal(2), req=[SimpleNamespace(addr=Signal(48, name=f"a{k}"))
                                                              for k in range(2)])
    m = Module()
    regs = gather_record(m, dkv, 16, 2, vq, 10)
    # cycle -> per lane (ind, plane, layer, KV head, first position, keys)
    issue = {1: [(1, 0, 1, 1, 3, 2), (1, 0, 0, 1, 10, 5)], 3: [(1, 1, 0, 0, 0, 4), (0, 0, 1, 0, 2, 6)],
             5: [(1, 0, 1, 0, 20, 12)]}
    want: list[int] = []
    for c in sorted(issue):
        for ind, plane, layer, g, p0, n in issue[c]:
            if ind and not plane:
                want += [(layer * s.n_kv_heads + g) * s.max_positions + p0 + i for i in range(n)]
    got = []

    async def bench(ctx):
        for c in range(8):
            batch = issue.get(c, [])
            ctx.set(dkv.req_valid, (1 << len(batch)) - 1)
            for k, (ind, plane, layer, g, p0, n) in enumerate(batch):
                ctx.set(words[k].ind, ind)
                ctx.set(words[k].plane, plane)
                ctx.set(words[k].nidx, n)
                ctx.set(dkv.req[k].addr, kv_addr(s, layer, g, bool(plane), p0))
            await ctx.tick()
        got.extend(ctx.get(r) for r in regs)

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(want) == 19
    exp = [None] * 16
    for e, x in enumerate(want):  # later keys overwrite the wrapped entries
        exp[e % 16] = x
    assert got == exp
