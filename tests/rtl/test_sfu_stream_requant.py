"""The projections' output stage (lowbit.rtl.sfu_stream_requant) on the Amaranth simulator: psum writes of a
projection tile -> Q7.8 words, bit-exact with the golden's requantized projection outputs of bitnet-tiny and
with sim.numerics.requant, REQUANT_DELAY cycles after each psum write, never writing outside its rows."""

from __future__ import annotations

import gc

import numpy as np
import pytest

pytest.importorskip("amaranth")

from lowbit.rtl.sfu_stream_requant import (  # noqa: E402
    PREFETCH,
    REQUANT_DELAY,
    PsumRequant,
    SfuRequantStage,
    mult_word,
)
from lowbit.sim.config import load_hw  # noqa: E402
from lowbit.sim.errors import LowbitError  # noqa: E402
from lowbit.sim.numerics.requant import fixed_multiplier, requant  # noqa: E402

SENTINEL = 0x1234


def run_requant(lanes: int, acc_bits: int, sfu_lanes: int, acc: np.ndarray, amax: np.ndarray, mm: np.ndarray,
                sh: np.ndarray, tiles: list[tuple[int, int]], gaps: bool = True):
    """Each row range of `tiles` as one projection tile: its psum passes (token, row group) written in order,
    back to back or with random gaps; returns (the Q7.8 rows [tokens, words * sfu_lanes] of a buffer
    preset to SENTINEL, the cycles from each psum write to its first Q7.8 write)."""
    from amaranth.hdl import Module, Mux
    from amaranth.lib import wiring
    from amaranth.lib.memory import Memory
    from amaranth.sim import Simulator

    tokens, out = acc.shape
    stride = -(-out // sfu_lanes)
    groups_all = -(-out // lanes)
    mwords = [[{"m": int(mm[min(g * lanes + j, out - 1)]), "sh": int(sh[min(g * lanes + j, out - 1)])}
               for j in range(lanes)] for g in range(groups_all)]
    depth = 1 << max(1, (tokens * stride).bit_length())

    class Top(wiring.Component):
        def __init__(self):
            self.rq = PsumRequant(lanes=lanes, acc_bits=acc_bits, sfu_lanes=sfu_lanes, a_bits=depth.bit_length(),
                                  m_bits=max(1, (groups_all - 1).bit_length()), s_bits=max(1, (tokens - 1).bit_length()))
            self.banks = [Memory(shape=16 * sfu_lanes, depth=depth // 2,
                                 init=[sum(SENTINEL << (16 * i) for i in range(sfu_lanes))] * (depth // 2))
                          for _ in range(2)]
            super().__init__({"go": wiring.In(1)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.rq = rq = self.rq
            m.submodules.mult = mem_m = Memory(shape=mult_word(lanes), depth=groups_all, init=mwords)
            m.submodules.stats = st = Memory(shape=16, depth=max(2, tokens), init=[int(a) for a in amax])
            rm, rs = mem_m.read_port(), st.read_port()
            m.d.comb += [rm.addr.eq(rq.m_raddr), rq.m_rdata.eq(rm.data), rs.addr.eq(rq.s_raddr), rq.s_rdata.eq(rs.data)]
            for k, bk in enumerate(self.banks):
                m.submodules[f"bank{k}"] = bk
                wp = bk.write_port(granularity=16)
                m.d.comb += [wp.addr.eq(getattr(rq, f"w{k}_addr")), wp.data.eq(getattr(rq, f"w{k}_data")),
                             wp.en.eq(Mux(getattr(rq, f"w{k}_en"), getattr(rq, f"w{k}_mask"), 0))]
            return m

    top = Top()
    rq = top.rq
    res: dict = {"delays": []}

    async def bench(ctx):
        rng = np.random.default_rng(1)
        cyc, issued, writes = 0, [], []

        async def tick():
            nonlocal cyc
            if ctx.get(rq.w0_en) or ctx.get(rq.w1_en):
                writes.append(cyc)
            await ctx.tick()
            cyc += 1

        for r0, r1 in tiles:
            groups = -(-(r1 - r0) // lanes)
            assert r0 % lanes == 0
            ctx.set(rq.start, 1)
            for k, v in dict(groups=groups, tail_lanes=(r1 - r0) - (groups - 1) * lanes,
                             off=r0 % sfu_lanes, o_addr=r0 // sfu_lanes, o_stride=stride, m_addr=r0 // lanes,
                             s_addr=0, tokens=tokens, dst=1).items():
                ctx.set(getattr(rq, k), v)
            await tick()
            ctx.set(rq.start, 0)
            for _ in range(PREFETCH - 1):  # the engine's first psum write comes PREFETCH cycles after its start
                await tick()
            for t in range(tokens):
                for g in range(groups):
                    rows = range(r0 + g * lanes, r0 + (g + 1) * lanes)
                    ctx.set(rq.p_valid, 1)  # rows past the tile carry junk the stage must not write
                    ctx.set(rq.p_acc, [int(acc[t, r]) if r < r1 else (1 << (acc_bits - 1)) - 1 for r in rows])
                    issued.append(cyc)
                    await tick()
                    ctx.set(rq.p_valid, 0)
                    for _ in range(int(rng.integers(0, 3)) if gaps else 0):
                        await tick()
            for _ in range(REQUANT_DELAY + 2):
                await tick()
        got = np.zeros((tokens, stride * sfu_lanes), np.int64)
        for t in range(tokens):
            for w in range(stride):
                a = t * stride + w
                v = ctx.get(top.banks[a & 1].data[a >> 1])
                got[t, w * sfu_lanes:(w + 1) * sfu_lanes] = [(v >> (16 * i)) & 0xFFFF for i in range(sfu_lanes)]
        res["got"] = np.where(got >= 1 << 15, got - (1 << 16), got)
        res["delays"] = sorted({w - i for i, w in zip(issued, sorted(set(writes)), strict=False)})

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return res["got"], res["delays"]


@pytest.fixture(scope="module")
def golden():
    from lowbit.sim.golden import golden_run, linear_multipliers
    from lowbit.sim.golden_weights import deploy, seeded_weights
    from lowbit.sim.modelspec import get_model

    spec = get_model("bitnet-tiny")
    dep = deploy(spec, seeded_weights(spec, seed=0))
    run = golden_run(dep, load_hw("tiny", []), [3, 141, 59, 26], 1)
    return run, {n: linear_multipliers(lin) for n, lin in dep.linears.items()}


@pytest.mark.parametrize("hw, step, proj, quant", [
    ("tiny", 0, "layers.0.attn.o", "layers.0.o_quant"),
    ("vitallm", 0, "layers.1.ffn.down", "layers.1.down_quant"),
    ("vitallm", 1, "layers.0.attn.q", "layers.0.attn_quant"),
])
def test_projection_outputs_match_the_golden(hw, step, proj, quant, golden):
    """The golden's accumulators through the stage on each design's psum and SFU words, in two row tiles
    (the second starting inside a Q7.8 word): the golden's requantized outputs, bit-exact."""
    cfg = load_hw(hw, [])
    run, mult = golden
    b = run.steps[step].buffers
    acc, want = b[f"{proj}.acc"], b[f"{proj}.out"]
    mm, sh = mult[proj]
    split = 5 * cfg.tint.lanes  # 10 rows on tiny, 30 on vitallm: not a multiple of the SFU's 4 or 16 lanes
    got, delays = run_requant(cfg.tint.lanes, cfg.tint.acc_bits, cfg.sfu.lanes, acc, b[f"{quant}.amax"], mm, sh,
                              [(0, split), (split, acc.shape[1])])
    assert np.array_equal(got[:, :acc.shape[1]], want)
    assert np.count_nonzero(want) > want.size // 2
    assert delays == [REQUANT_DELAY]


def test_tail_rows_saturation_and_zero_scale_match_numerics():
    """45 output rows (vitallm: 7 groups of 6 and a tail of 3; words of 16 with 3 spare elements), accumulators
    at the extremes, a zero amax and amax = 2^15, back-to-back psum writes: sim.numerics.requant's values, and
    the elements past the rows keep what the buffer held."""
    cfg = load_hw("vitallm", [])
    rng = np.random.default_rng(11)
    lanes, accb, big_l = cfg.tint.lanes, cfg.tint.acc_bits, cfg.sfu.lanes
    out, tokens = 45, 4
    acc = rng.integers(-(1 << 14), 1 << 14, size=(tokens, out))
    acc[0, :6] = [-(1 << (accb - 1)), (1 << (accb - 1)) - 1, 1, -1, 0, 12345]
    amax = np.array([32768, 0, 300, 7])
    ms = [fixed_multiplier(float(r)) for r in np.exp(rng.uniform(np.log(1e-6), np.log(1e-3), size=out))]
    mm, sh = np.array([m for m, _ in ms]), np.array([s for _, s in ms])
    want = requant(acc, amax[:, None], mm[None, :], sh[None, :])
    assert (np.abs(want) == 32767).any() or (want == -32768).any()   # saturation reached
    got, delays = run_requant(lanes, accb, big_l, acc, amax, mm, sh, [(0, 18), (18, out)], gaps=False)
    assert np.array_equal(got[:, :out], want) and not want[1].any()
    assert (got[:, out:] == SENTINEL).all()
    assert delays == [REQUANT_DELAY]


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")  # refused before it could be used
def test_psum_wider_than_the_sfu_word_is_refused():
    with pytest.raises(LowbitError, match="psum word of 6 lanes wider than the SFU's 4"):
        PsumRequant(lanes=6, acc_bits=24, sfu_lanes=4, a_bits=8, m_bits=4, s_bits=4)
    gc.collect()  # the refused object's unused-elaboratable warning, under this test's filter


def test_requant_verilog_lints_clean(tmp_path):
    from lowbit.rtl.lint import lint_component

    cfg = load_hw("vitallm", [])
    for name, comp in (("stage", SfuRequantStage(lanes=cfg.tint.lanes, acc_bits=cfg.tint.acc_bits, tag_bits=8)),
                       ("psum", PsumRequant(lanes=cfg.tint.lanes, acc_bits=cfg.tint.acc_bits, sfu_lanes=cfg.sfu.lanes,
                                            a_bits=10, m_bits=6, s_bits=6))):
        r, _ = lint_component(comp, f"lowbit_sfu_requant_{name}", tmp_path)
        assert r.ok, (name, r.errors[:5])
