"""The chip's instruction memories (lowbit.rtl.chip_ctrl.instr_memory): a queue that reads n consecutive words a
cycle gets them from n' single-read-port banks (word i in bank i mod n') in the same cycle as from one memory
with n read ports."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("amaranth")


@pytest.mark.parametrize("reads", [1, 5, 8])
def test_banked_instruction_memory_reads_consecutive_words(reads):
    from amaranth.hdl import Module, unsigned
    from amaranth.lib import data, wiring
    from amaranth.lib.wiring import In, Out
    from amaranth.sim import Simulator

    from lowbit.rtl.chip_ctrl import instr_memory

    depth = 64
    lay = data.StructLayout({"a": unsigned(5), "b": unsigned(6)})

    class Dut(wiring.Component):
        def __init__(self):
            super().__init__({"raddr": In(6), "la": In(6), "lw": In(11), "le": In(1),
                              "words": Out(data.ArrayLayout(lay, reads))})

        def elaborate(self, platform):
            m = Module()
            ws = instr_memory(m, "q", lay, depth, reads, self.raddr, self.la, self.lw, self.le)
            assert len(ws) == reads
            m.d.comb += [self.words[k].eq(w) for k, w in enumerate(ws)]
            banks = [m.submodules[f"imem_q_b{b}"] for b in range(8)] if reads > 1 else [m.submodules["imem_q"]]
            # n' = 8 single-read-port banks of 8 words (one memory for a single read)
            assert [(b.depth, len(b.read_ports)) for b in banks] == [(depth // len(banks), 1)] * len(banks)
            return m

    dut = Dut()
    rng = random.Random(7)
    mem = [rng.randrange(1 << 11) for _ in range(depth)]
    addrs = [0]
    for _ in range(200):  # in-order issue of 0 .. reads words a cycle, then a few random heads (wrapping)
        addrs.append((addrs[-1] + rng.randrange(reads + 1)) % depth if rng.random() < 0.9 else rng.randrange(depth))
    got = []

    async def bench(ctx):
        for i, w in enumerate(mem):
            ctx.set(dut.le, 1)
            ctx.set(dut.la, i)
            ctx.set(dut.lw, w)
            await ctx.tick()
        ctx.set(dut.le, 0)
        for a in addrs:
            ctx.set(dut.raddr, a)
            await ctx.tick()  # synchronous reads: the words of the address presented before the edge
            got.append([ctx.get(dut.words[k].as_value()) for k in range(reads)])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    want = [[mem[(a + k) % depth] for k in range(reads)] for a in addrs]
    assert got == want
