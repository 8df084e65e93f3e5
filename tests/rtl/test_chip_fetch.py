"""Instruction fetch (lowbit.rtl.chip_fetch): the fetch rule played by `feed_schedule` against hand-worked
schedules, and the rings and arbiter in RTL against that rule: a word is available exactly from the cycle
the rule says, with its program content, and the port's requests are the rule's, cycle for cycle."""

from __future__ import annotations

import random

import pytest

from lowbit.rtl.chip_fetch import feed_schedule, ring_depth, word_beats

pytest.importorskip("amaranth")


def test_rule_by_hand():
    """Two queues, rings of 2, latency 3, queue 0's words 2 beats, queue 1's 1. Queue 0 issues at 0, 1, 10, 11;
    queue 1 (the join queue here) completes at 5, 4, 20. Cycle 1: queue 0's head has moved past word 0 (issued
    in 0), so word 2 is requested (round robin starts after the last queue, 1, so at 0); it holds the port 2
    cycles, its last beat comes at 1 + 3 + 1 = 5, visible at 7 <= 10. Cycle 3: word 3 (queue 0's head is 2 from
    cycle 2). Queue 1 retires word 0 at 5 (its own completion) and word 1 at 5 too (completed at 4, but behind
    word 0): at 6 it requests word 2 (one beat: last beat 9, visible 11 <= 20) and word 3 at 7 (past the end)."""
    f = feed_schedule([[0, 1, 10, 11], [5, 4, 20]], [2, 2], [2, 1], 3, join_queue=1)
    assert f.grants[:4] == [(1, 0), (3, 0), (6, 1), (7, 1)]
    assert f.visible == [[-1, -1, 7, 9], [-1, -1, 11]]
    assert f.late == [] and f.min_slack == 2 and f.end == 20  # word 3 of queue 0: visible 9, issued 11
    # latency 10: queue 0's words 2 and 3 become visible at 1 + 10 + 1 + 2 = 14 > 10 and 16 > 11: late; queue
    # 1's word 2 at 6 + 10 + 2 = 18 <= 20
    g = feed_schedule([[0, 1, 10, 11], [5, 4, 20]], [2, 2], [2, 1], 10, join_queue=1)
    assert g.late == [(0, 2), (0, 3)] and g.min_slack == -5


def test_ring_depth_and_beats():
    from lowbit.rtl.chip import ChipParams

    p = ChipParams(ifetch_depth=8)
    assert [ring_depth(p, r) for r in (1, 3, 4, 8, 12, 16)] == [8, 8, 8, 8, 16, 16]
    assert word_beats(564, 64) == 9 and word_beats(64, 64) == 1


def _run_rtl(reads: list[int], starts: list[list[int]], size: int, p) -> tuple[list, list, list]:
    """The rings of `reads`-wide queues and the arbiter in an Amaranth simulation, with a stand-in controller per
    queue that issues, in order and at most `reads` a cycle, word i of queue q from cycle starts[q][i] on once
    its ring shows it available; the test bench answers the port after its latency. Returns every word's
    (issue cycle, content as read), the programs and the port's requests."""
    from amaranth.hdl import Cat, Module, Signal, unsigned
    from amaranth.lib import data, wiring
    from amaranth.lib.wiring import In, Out
    from amaranth.sim import Simulator

    from lowbit.rtl.chip_fetch import InstrFetch

    lay = data.StructLayout({"valid": unsigned(1), "x": unsigned(size - 1)})
    nq = len(reads)
    progs = [[1 | (random.Random(q * 97 + i).randrange(1 << (size - 1)) << 1) for i in range(len(s))]
             for q, s in enumerate(starts)]
    depths = [ring_depth(p, r) for r in reads]

    class Dut(wiring.Component):
        def __init__(self):
            sig = {"if_req": Out(1), "if_q": Out(5), "if_rv": In(1), "if_rq": In(5), "if_rw": In(p.ifetch_bits),
                   "run": In(1), "lq": In(5), "la": In(8), "lw": In(size), "le": In(1)}
            for q, r in enumerate(reads):
                sig[f"issue{q}"] = In(range(r + 1))
                sig[f"w{q}"] = Out(data.ArrayLayout(unsigned(size), r))  # bit 0: valid and available
            super().__init__(sig)

        def elaborate(self, platform):
            m = Module()
            fetch = InstrFetch(m, p, self.run, (self.lq, self.la, self.lw, self.le),
                               {k: getattr(self, k) for k in ("if_req", "if_q", "if_rv", "if_rq", "if_rw")}, size)
            for q, r in enumerate(reads):
                pc = Signal(16, name=f"pc{q}")
                issue = getattr(self, f"issue{q}")
                ws, ok = fetch.ring(q, f"q{q}", lay, r, pc + issue, pc)
                m.d.comb += [getattr(self, f"w{q}")[k].eq(Cat(w.as_value()[0] & ok[k], w.as_value()[1:]))
                             for k, w in enumerate(ws)]
                m.d.sync += pc.eq(pc + issue)
            fetch.finish()
            return m

    dut = Dut()
    got: list[list] = [[None] * len(s) for s in starts]
    grants: list[tuple[int, int]] = []
    beats = [word_beats(size, p.ifetch_bits) for _ in reads]

    async def bench(ctx):
        for q in range(nq):
            for i, w in enumerate(progs[q][:depths[q]]):
                ctx.set(dut.le, 1)
                ctx.set(dut.lq, q)
                ctx.set(dut.la, i)
                ctx.set(dut.lw, w)
                await ctx.tick()
        ctx.set(dut.le, 0)
        ctx.set(dut.run, 1)
        nxt, slots, pc, c = list(depths), {}, [0] * nq, 0
        while any(pc[q] < len(starts[q]) for q in range(nq)):
            b = slots.pop(c, None)
            ctx.set(dut.if_rv, int(b is not None))
            if b is not None:
                ctx.set(dut.if_rq, b[0])
                ctx.set(dut.if_rw, b[1])
            if ctx.get(dut.if_req):
                q = ctx.get(dut.if_q)
                grants.append((c, q))
                w = progs[q][nxt[q]] if nxt[q] < len(progs[q]) else 0
                for j in range(beats[q]):
                    slots[c + p.ifetch_latency + j] = (q, (w >> (j * p.ifetch_bits)) & ((1 << p.ifetch_bits) - 1))
                nxt[q] += 1
            for q in range(nq):
                n = 0
                while (n < reads[q] and pc[q] + n < len(starts[q]) and starts[q][pc[q] + n] <= c
                       and ctx.get(getattr(dut, f"w{q}")[n]) & 1):
                    got[q][pc[q] + n] = (c, ctx.get(getattr(dut, f"w{q}")[n]))
                    n += 1
                ctx.set(getattr(dut, f"issue{q}"), n)
                pc[q] += n
            await ctx.tick()
            c += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got, progs, grants


@pytest.mark.parametrize("latency,late", [(4, False), (60, True)])
def test_rings_and_arbiter_follow_the_rule(latency, late):
    """A one-word queue and a 3-word window queue (rings of 4) with 20-bit words over an 8-bit port (3 beats).
    Every word is issued with its program content; the port's requests are the rule's played on the schedule
    the stand-ins actually ran; where the rule finds no word late on the intended schedule every word issues
    on time, and at latency 60, where it does, the first word issued late is the first the rule names."""
    from lowbit.rtl.chip import ChipParams

    p = ChipParams(ifetch_depth=4, ifetch_bits=8, ifetch_latency=latency)
    rng = random.Random(3)
    s0 = sorted(rng.sample(range(2, 900), 40))
    s1 = sorted(rng.choice(range(2, 900)) for _ in range(60))
    s1 = [c for k, c in enumerate(s1) if s1[max(0, k - 3):k].count(c) < 3][:50]  # at most 3 a cycle
    got, progs, grants = _run_rtl([1, 3], [s0, s1], 20, p)
    depths, beats = [ring_depth(p, 1), ring_depth(p, 3)], [3, 3]
    assert [[w for _, w in g] for g in got] == progs
    ran = [[c for c, _ in g] for g in got]
    own = feed_schedule(ran, depths, beats, latency, join_queue=-1)
    assert grants[:len(own.grants)] == own.grants and own.late == []
    plan = feed_schedule([s0, s1], depths, beats, latency, join_queue=-1)
    delayed = sorted((ran[q][i], q, i) for q, st in enumerate([s0, s1]) for i in range(len(st)) if ran[q][i] > st[i])
    assert bool(plan.late) == bool(delayed) == late
    if late:  # the earliest word the stand-ins waited for is among the rule's late words, at the earliest start
        first = min(c for c, *_ in delayed)
        assert {(q, i) for c, q, i in delayed if [s0, s1][q][i] == min([s0, s1][q_][i_] for _, q_, i_ in delayed)} \
            <= set(plan.late)
        assert first > min([s0, s1][q][i] for q, i in plan.late)


def test_counts_too_narrow_for_the_program_are_refused(tmp_path):
    """The rings hold any program, but the instruction counts must count its longest queue (and a ring
    ahead): a chip generated with 8-bit counts refuses bitnet-tiny's program with one line naming the width."""
    from lowbit.rtl.chip import ChipParams
    from lowbit.rtl.chip_image import build_image
    from lowbit.rtl.chip_model import compile_from_golden
    from lowbit.rtl.chip_run import _check_image, params_for
    from lowbit.sim.config import load_hw
    from lowbit.sim.program import ProgramError

    cfg = load_hw("tiny", [])
    prog = tmp_path / "prog.bin"
    compile_from_golden(cfg, "bitnet-tiny", 2, 3, prog, seed=0)
    img = build_image(prog, cfg)
    _check_image(img, params_for(img))  # the sizes params_for picks pass
    with pytest.raises(ProgramError, match=r"the chip's 8-bit instruction counts need 9: generate it with a larger "
                                           r"ChipParams.seq_bits") as e:
        _check_image(img, ChipParams(seq_bits=8))
    assert f"a queue holds {img.longest()} instructions" in str(e.value) and "\n" not in str(e.value)
