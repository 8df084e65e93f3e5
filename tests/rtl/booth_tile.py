"""A BoothFlex engine tile on the Amaranth simulator (lowbit.rtl.chip_booth.BoothEngine), shared by the engine
tests: the tile's fields, then one read-data answer a cycle to the addresses of the cycle before."""

from __future__ import annotations


def run_booth_tile(dut, fields: dict[str, int], serve) -> tuple[list[tuple[int, list[int], int]], int]:
    """Set `fields` with `start` high for one cycle; in every later cycle put on the read-data ports what
    `serve(ctx)` returned for the previous cycle's addresses (a list of (port, value)). Returns the psum
    writes in order as (address, lane accumulators, overflow mask) and the cycles start -> done."""
    from amaranth.sim import Simulator

    got: list[tuple[int, list[int], int]] = []
    res: dict[str, int] = {}

    async def bench(ctx):
        for name, x in fields.items():
            ctx.set(getattr(dut, name), x)
        ctx.set(dut.start, 1)
        data = serve(ctx)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cyc = 1
        while True:
            for port, x in data:
                ctx.set(port, x)
            if ctx.get(dut.p_valid):
                got.append((ctx.get(dut.p_addr_o), [ctx.get(dut.p_acc[lane]) for lane in range(len(dut.p_ovf))],
                            ctx.get(dut.p_ovf)))
            if ctx.get(dut.done):
                break
            data = serve(ctx)
            await ctx.tick()
            cyc += 1
            assert cyc < 10_000
        res["cyc"] = cyc

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got, res["cyc"]
