"""RoPE's stream engine (lowbit.rtl.sfu_stream_rope) on the Amaranth simulator: the q and k head rows of a KV
group, as the program's rope word holds them, bit-exact with the golden's attn.rope buffers of bitnet-tiny on
`tiny` (partner words) and with vitallm's 16 lanes (the pair inside a word), in the rope word's cycles."""

from __future__ import annotations

import gc

import numpy as np
import pytest

pytest.importorskip("amaranth")

from lowbit.rtl.sfu_stream import q78_word  # noqa: E402
from lowbit.rtl.sfu_stream_rope import (  # noqa: E402
    ROPE_PIPE,
    SfuRopeStream,
    rope_layout_ok,
    rope_table_words,
    trig_word,
)
from lowbit.sim.config import load_hw  # noqa: E402
from lowbit.sim.errors import LowbitError  # noqa: E402
from lowbit.sim.numerics.sfu_elem import rope_table  # noqa: E402
from lowbit.sim.units.sfu import SfuConfig, sfu_cycles  # noqa: E402


def run_rope(sfu: SfuConfig, rows: np.ndarray, hpp: int, table: list, *, x_addr: int = 6, o_addr: int = 200,
             a_addr: int = 9):
    """Head rows [rows, head_dim] (hpp a position) through the engine; returns (rows out, each row's amax
    statistic, cycles)."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.memory import Memory
    from amaranth.sim import Simulator

    lanes = sfu.lanes
    n_rows, hd = rows.shape
    beats = -(-hd // lanes)
    words = np.zeros((n_rows, beats * lanes), np.int64)
    words[:, :hd] = rows
    words = words.reshape(-1, lanes)
    init = [[0] * lanes for _ in range(512)]
    for i, w in enumerate(words):
        init[x_addr + i] = [int(v) for v in w]

    class Top(wiring.Component):
        def __init__(self):
            self.e = SfuRopeStream(sfu, a_bits=9, t_bits=6)
            self.buf = Memory(shape=q78_word(lanes), depth=512, init=init)
            self.st = Memory(shape=48, depth=64, init=[])
            super().__init__({"go": wiring.In(1)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.e = e = self.e
            m.submodules.buf = buf = self.buf
            m.submodules.tab = tab = Memory(shape=trig_word(lanes), depth=64, init=table)
            m.submodules.st = self.st
            ws = self.st.write_port()
            m.d.comb += [ws.en.eq(e.a_wen), ws.addr.eq(e.a_waddr), ws.data.eq(e.a_wdata)]
            rx, ry, rt, wo = buf.read_port(), buf.read_port(), tab.read_port(), buf.write_port()
            m.d.comb += [rx.addr.eq(e.x_raddr), e.x_rdata.eq(rx.data), ry.addr.eq(e.y_raddr), e.y_rdata.eq(ry.data),
                         rt.addr.eq(e.t_raddr), e.t_rdata.eq(rt.data),
                         wo.en.eq(e.o_wen), wo.addr.eq(e.o_waddr), wo.data.eq(e.o_wdata)]
            return m

    top = Top()
    e = top.e
    res: dict = {}

    async def bench(ctx):
        ctx.set(e.start, 1)
        for k, v in dict(rows=n_rows, beats=beats, hpp=hpp, half=hd // 2, x_addr=x_addr, o_addr=o_addr,
                         t_addr=0, a_addr=a_addr).items():
            ctx.set(getattr(e, k), v)
        await ctx.tick()
        ctx.set(e.start, 0)
        c = 1
        while not ctx.get(e.done):
            await ctx.tick()
            c += 1
        res["cycles"] = c
        got = np.array([list(ctx.get(top.buf.data[o_addr + i])) for i in range(len(words))])
        res["out"] = got.reshape(n_rows, -1)
        res["amax"] = np.array([ctx.get(top.st.data[a_addr + r]) for r in range(n_rows)])

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return res["out"], res["amax"], res["cycles"]


@pytest.mark.parametrize("hw", ["tiny", "vitallm"])
@pytest.mark.parametrize("step", [0, 1])
def test_rope_stream_matches_the_golden(hw, step):
    """A KV group's rows as the program's rope word holds them: per token its query heads, then its key head."""
    from lowbit.sim.golden import golden_run
    from lowbit.sim.golden_weights import deploy, seeded_weights
    from lowbit.sim.modelspec import get_model

    spec, sfu = get_model("bitnet-tiny"), load_hw(hw, []).sfu
    run = golden_run(deploy(spec, seeded_weights(spec, seed=0)), load_hw("tiny", []), [3, 141, 59, 26], 1)
    st = run.steps[step]
    b = st.buffers
    T, H, KV, hd = len(st.ids), spec.n_heads, spec.n_kv_heads, spec.head_dim
    grp = H // KV
    q = b["layers.0.attn.q.out"].reshape(T, H, hd)
    k = b["layers.0.attn.k.out"].reshape(T, KV, hd)
    cos, sin = rope_table(np.arange(st.start, st.start + T), hd, spec.rope_theta)
    table = rope_table_words(cos, sin, hd, sfu.lanes)
    assert rope_layout_ok(hd, sfu.lanes)
    for g in range(KV):
        rows = np.concatenate([np.concatenate([q[t, g * grp:(g + 1) * grp], k[t, g:g + 1]]) for t in range(T)])
        want = np.concatenate([np.concatenate([b["layers.0.attn.rope.q"][t, g * grp:(g + 1) * grp],
                                               b["layers.0.attn.rope.k"][t, g:g + 1]]) for t in range(T)])
        out, amax, cycles = run_rope(sfu, rows, grp + 1, table)
        assert np.array_equal(out[:, :hd], want) and not out[:, hd:].any()
        # each head row's amax: the reduction of the per-head INT8 quantize of q and k that follows
        want_amax = np.concatenate([np.concatenate([b["layers.0.attn.qk.q_amax"][t, g * grp:(g + 1) * grp],
                                                    b["layers.0.attn.kv_append.k_amax"][t, g:g + 1]])
                                    for t in range(T)])
        assert amax.tolist() == want_amax.tolist()
        beats = -(-hd // sfu.lanes)
        assert cycles == sfu_cycles(sfu, "rope", len(rows), hd) == len(rows) * beats + 8
    if hw == "tiny" and step == 0:
        assert cycles == 56   # the rope words of bitnet-tiny's prefill 4 on tiny (lowbit compile --disasm)


def test_rope_saturates_like_numerics():
    from lowbit.sim.numerics.sfu_elem import sfu_rope

    sfu = load_hw("tiny", []).sfu
    hd = 16
    x = np.full((2, hd), 32767, np.int64)
    x[1, : hd // 2] = -32768
    cos = np.full((1, hd // 2), 11585)   # cos = sin = 1/sqrt(2): |x cos + x sin| > 2^15 - 1
    sin = np.array([[11585] * (hd // 4) + [-11585] * (hd // 4)])
    out, amax, _ = run_rope(sfu, x, 2, rope_table_words(cos, sin, hd, sfu.lanes))
    want = sfu_rope(x, cos, sin)
    assert np.array_equal(out, want) and (want == 32767).any() and (want == -32768).any()
    assert amax.tolist() == np.abs(want.astype(np.int64)).max(-1).tolist() and 32768 in amax.tolist()   # |-2^15| in 16 bits


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")  # built to be checked, not elaborated
def test_rope_stream_refuses_a_short_latency_and_knows_its_layouts():
    lat = SfuConfig().latency
    SfuRopeStream(SfuConfig(lanes=4, latency={**lat, "rope": ROPE_PIPE}), a_bits=8, t_bits=4)
    with pytest.raises(LowbitError, match=f"sfu.latency.rope = {ROPE_PIPE - 1}"):
        SfuRopeStream(SfuConfig(lanes=4, latency={**lat, "rope": ROPE_PIPE - 1}), a_bits=8, t_bits=4)
    gc.collect()
    assert rope_layout_ok(128, 16) and rope_layout_ok(16, 16) and rope_layout_ok(16, 4)
    assert not rope_layout_ok(100, 16) and not rope_layout_ok(24, 16)


def test_rope_stream_lints_clean(tmp_path):
    from lowbit.rtl.lint import lint_component

    r, _ = lint_component(SfuRopeStream(load_hw("vitallm", []).sfu, a_bits=10, t_bits=8), "lowbit_sfu_stream_rope",
                          tmp_path)
    assert r.ok, r.errors[:5]
