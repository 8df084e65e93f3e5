"""Softmax's stream engine (lowbit.rtl.sfu_stream_softmax) on the Amaranth simulator: score rows whose max the
producer reduced, bit-exact with sim.numerics.sfu_reduce.sfu_softmax and with the golden's probabilities of
bitnet-tiny's attention, in the program's fused softmax word's cycles."""

from __future__ import annotations

import gc

import numpy as np
import pytest

pytest.importorskip("amaranth")

from lowbit.rtl.sfu_stream_softmax import SOFTMAX_PIPE, SfuSoftmaxStream, prob_word  # noqa: E402
from lowbit.sim.config import load_hw  # noqa: E402
from lowbit.sim.errors import LowbitError  # noqa: E402
from lowbit.sim.numerics.sfu_reduce import sfu_softmax  # noqa: E402
from lowbit.sim.units.sfu import SfuConfig, sfu_cycles  # noqa: E402


def run_softmax(sfu: SfuConfig, x: np.ndarray, *, x_addr: int = 3, o_addr: int = 5, m_addr: int = 2):
    """Rows [rows, dim] of Q7.8 scores in a buffer (tail lanes holding junk the engine must ignore), their
    maxima in the statistics memory; returns (probabilities [rows, dim], the tail lanes written, cycles)."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.memory import Memory
    from amaranth.sim import Simulator

    lanes = sfu.lanes
    rows, dim = x.shape
    beats = -(-dim // lanes)
    words = np.full((rows, beats * lanes), 32767, np.int64)  # junk in the tail: it would dominate the sum
    words[:, :dim] = x
    words = words.reshape(-1, lanes)
    depth = 1 << (x_addr + o_addr + len(words)).bit_length()
    init_x = [0] * depth
    for i, w in enumerate(words):
        init_x[x_addr + i] = [int(v) for v in w]

    class Top(wiring.Component):
        def __init__(self):
            self.e = SfuSoftmaxStream(sfu, a_bits=depth.bit_length() - 1, s_bits=6)
            self.xm = Memory(shape=prob_word(lanes), depth=depth, init=[])
            super().__init__({"go": wiring.In(1)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.e = e = self.e
            m.submodules.x = xm = Memory(shape=prob_word(lanes), depth=depth,
                                         init=[[v & 0xFFFF for v in w] if w else [0] * lanes for w in init_x])
            m.submodules.st = st = Memory(shape=16, depth=64, init=[0] * m_addr + [int(v) & 0xFFFF for v in x.max(-1)])
            m.submodules.o = om = self.xm
            rx, rs, wo = xm.read_port(), st.read_port(), om.write_port()
            m.d.comb += [rx.addr.eq(e.x_raddr), e.x_rdata.eq(rx.data), rs.addr.eq(e.m_raddr), e.m_rdata.eq(rs.data),
                         wo.en.eq(e.o_wen), wo.addr.eq(e.o_waddr), wo.data.eq(e.o_wdata)]
            return m

    top = Top()
    e = top.e
    res: dict = {}

    async def bench(ctx):
        ctx.set(e.start, 1)
        for k, v in dict(rows=rows, beats=beats, tail=dim - (beats - 1) * lanes, x_addr=x_addr, o_addr=o_addr,
                         m_addr=m_addr).items():
            ctx.set(getattr(e, k), v)
        await ctx.tick()
        ctx.set(e.start, 0)
        c = 1
        while not ctx.get(e.done):
            await ctx.tick()
            c += 1
        res["cycles"] = c
        got = np.array([list(ctx.get(top.xm.data[o_addr + i])) for i in range(len(words))]).reshape(rows, -1)
        res["p"], res["tail"] = got[:, :dim], got[:, dim:]

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return res["p"], res["tail"], res["cycles"]


@pytest.mark.parametrize("hw, lanes, rows, dim", [("tiny", 4, 3, 10), ("vitallm", 8, 2, 21), ("vitallm", 16, 2, 37)])
def test_softmax_stream_matches_numerics_and_the_fused_word(hw, lanes, rows, dim):
    """Random rows, a constant row, a row with one dominant score and the extremes; a tail of valid lanes."""
    import dataclasses

    sfu = dataclasses.replace(load_hw(hw, []).sfu, lanes=lanes)
    rng = np.random.default_rng(9)
    x = rng.integers(-2000, 2000, size=(rows + 2, dim))
    x[0] = 77
    x[1, :] = -32768
    x[1, dim // 2] = 32767
    p, tail, cycles = run_softmax(sfu, x)
    assert np.array_equal(p, sfu_softmax(x)) and not tail.any()
    assert p[1, dim // 2] == 1 << 15 and len(set(p[0].tolist())) == 1
    beats = -(-dim // sfu.lanes)
    assert cycles == sfu_cycles(sfu, "softmax", rows + 2, dim) - (rows + 2) * beats == (rows + 2) * 2 * beats + 16


def test_softmax_stream_matches_the_golden_attention():
    """bitnet-tiny's decode step on `tiny` (LOP on): each query head's scores over its kept keys (the
    golden's attn.qk.scores) -> its attn.softmax.p."""
    from lowbit.sim.golden import golden_run
    from lowbit.sim.golden_weights import deploy, seeded_weights
    from lowbit.sim.modelspec import get_model

    spec, cfg = get_model("bitnet-tiny"), load_hw("tiny", [])
    run = golden_run(deploy(spec, seeded_weights(spec, seed=0)), cfg, [3, 141, 59, 26, 5, 35, 89, 79, 2], 1, lop=True)
    b = run.steps[1].buffers
    keys = b["layers.1.attn.qk.keys"][:, 0]                  # [heads, M]: each head's kept keys
    grp = spec.n_heads // spec.n_kv_heads
    assert keys.sum(-1).min() < keys.shape[1]                 # LOP dropped keys
    for g in range(spec.n_kv_heads):                           # a KV group's heads share their keys (the union)
        hs = range(g * grp, (g + 1) * grp)
        scores = np.stack([b["layers.1.attn.qk.scores"][h, 0, keys[h]] for h in hs])
        want = np.stack([b["layers.1.attn.softmax.p"][h, 0, keys[h]] for h in hs])
        p, _, cycles = run_softmax(cfg.sfu, scores)
        assert np.array_equal(p, want)
        rows, dim = scores.shape
        assert cycles == sfu_cycles(cfg.sfu, "softmax", rows, dim) - rows * -(-dim // cfg.sfu.lanes)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")  # built to be checked, not elaborated
def test_softmax_stream_refuses_a_short_latency():
    lat = SfuConfig().latency
    SfuSoftmaxStream(SfuConfig(lanes=4, latency={**lat, "softmax": SOFTMAX_PIPE}), a_bits=8, s_bits=4)
    with pytest.raises(LowbitError, match=f"sfu.latency.softmax = {SOFTMAX_PIPE - 1}"):
        SfuSoftmaxStream(SfuConfig(lanes=4, latency={**lat, "softmax": SOFTMAX_PIPE - 1}), a_bits=8, s_bits=4)
    gc.collect()


def test_softmax_stream_lints_clean(tmp_path):
    from lowbit.rtl.lint import lint_component

    r, _ = lint_component(SfuSoftmaxStream(load_hw("vitallm", []).sfu, a_bits=10, s_bits=6),
                          "lowbit_sfu_stream_softmax", tmp_path)
    assert r.ok, r.errors[:5]
