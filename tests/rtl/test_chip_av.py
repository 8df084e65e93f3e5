"""The attention output's requantizer (lowbit.rtl.chip_av: PsumRequant with a constant multiplier, a scale per
(query, head) and per-pass tags) on the Amaranth simulator: the golden's P V accumulators of bitnet-tiny,
written as BoothFlex's P V passes of `tiny`, give the golden's `attn.av.out` bit-exact, and the tags name each
pass's token and its first group; the loader's drain rule puts S on the chip in prefill and decode."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("amaranth")

from lowbit.sim.config import load_hw  # noqa: E402


@pytest.fixture(scope="module")
def golden():
    from lowbit.sim.golden import golden_run
    from lowbit.sim.golden_weights import deploy, seeded_weights
    from lowbit.sim.modelspec import get_model

    spec = get_model("bitnet-tiny")
    dep = deploy(spec, seeded_weights(spec, seed=0))
    return spec, golden_run(dep, load_hw("tiny", []), [3, 141, 59, 26], 1)


def run_pv(cfg, spec, bufs, layer: int):
    """Every KV group's P V passes of one step and layer (outputs (t, h, d), booth.lanes a pass, random gaps)
    through the requantizer into an X buffer; returns (X rows [T, H x hd], per pass (token, first group, x))."""
    from amaranth.hdl import Cat, Module, Mux
    from amaranth.lib import wiring
    from amaranth.lib.memory import Memory
    from amaranth.sim import Simulator

    from lowbit.rtl.chip_av import WA_BITS
    from lowbit.rtl.sfu_stream_requant import PREFETCH, PsumRequant
    from lowbit.sim.golden import attn_multipliers

    b, n = cfg.booth, cfg.sfu.lanes
    hd, grp, H, KV = spec.head_dim, spec.n_heads // spec.n_kv_heads, spec.n_heads, spec.n_kv_heads
    acc = bufs[f"layers.{layer}.attn.av.acc"]  # [H, T, hd]
    wa = bufs[f"layers.{layer}.attn.softmax.w_amax"]  # [H, T]
    T = acc.shape[1]
    nb = H * hd // n
    depth = 1 << (T * nb).bit_length()
    scales = [int(wa[g * grp + h, t]) for g in range(KV) for t in range(T) for h in range(grp)]

    class Top(wiring.Component):
        def __init__(self):
            self.rq = PsumRequant(lanes=b.lanes, acc_bits=b.acc_bits, sfu_lanes=n, a_bits=depth.bit_length(), m_bits=1,
                                  s_bits=6, scale_bits=WA_BITS, tail=False, const_mult=attn_multipliers(hd)["av"],
                                  s_every=True, x_bits=8)
            self.x = Memory(shape=16 * n, depth=depth, init=[])
            super().__init__({"go": wiring.In(1)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.rq = rq = self.rq
            m.submodules.x = self.x
            m.submodules.wa = wam = Memory(shape=WA_BITS, depth=64, init=scales)
            rs, wp = wam.read_port(), self.x.write_port(granularity=16)
            odd = rq.w1_en
            m.d.comb += [rs.addr.eq(rq.s_raddr), rq.s_rdata.eq(rs.data), wp.en.eq(Mux(odd, rq.w1_mask, rq.w0_mask)
                                                                                  & Mux(rq.w0_en | odd, 0xF, 0)),
                         wp.addr.eq(Mux(odd, Cat(1, rq.w1_addr), Cat(0, rq.w0_addr))),
                         wp.data.eq(Mux(odd, rq.w1_data.as_value(), rq.w0_data.as_value()))]
            return m

    top = Top()
    rq = top.rq
    res: dict = {"tags": []}

    async def bench(ctx):
        rng = np.random.default_rng(3)

        async def tick():
            if ctx.get(rq.w0_en) or ctx.get(rq.w1_en):
                res["writes"].append((ctx.get(rq.w_tok), ctx.get(rq.w_g0), ctx.get(rq.w_x)))
            await ctx.tick()

        res["writes"] = []
        for g in range(KV):
            ctx.set(rq.start, 1)
            for k, v in dict(groups=grp * hd // b.lanes, tokens=T, off=0, o_addr=g * grp * hd // n, o_stride=nb,
                             s_addr=g * T * grp, s_groups=hd // b.lanes, dst=1, x=0x80 | g).items():
                ctx.set(getattr(rq, k), v)
            await tick()
            ctx.set(rq.start, 0)
            for _ in range(PREFETCH - 1):
                await tick()
            for t in range(T):
                for h in range(grp):
                    for d0 in range(0, hd, b.lanes):
                        ctx.set(rq.p_valid, 1)
                        ctx.set(rq.p_acc, [int(acc[g * grp + h, t, d0 + j]) for j in range(b.lanes)])
                        res["tags"].append((ctx.get(rq.p_tok), ctx.get(rq.p_x)))
                        await tick()
                        ctx.set(rq.p_valid, 0)
                        for _ in range(int(rng.integers(0, 3))):
                            await tick()
            for _ in range(4):
                await tick()
        got = np.zeros((T, nb * n), np.int64)
        for t in range(T):
            for w in range(nb):
                v = ctx.get(top.x.data[t * nb + w])
                got[t, w * n:(w + 1) * n] = [(v >> (16 * i)) & 0xFFFF for i in range(n)]
        res["got"] = np.where(got >= 1 << 15, got - (1 << 16), got)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return res["got"], res["tags"], res["writes"]


@pytest.mark.parametrize("step", [0, 1])
def test_pv_outputs_through_the_requantizer_match_the_golden(step, golden):
    """Prefill (4 queries) and a decode step of layer 1, both KV groups one after the other: the X rows equal the
    golden's attn.av.out (the requant of av.acc with each (query, head)'s w_amax and the constant multiplier),
    and each pass pops with its token and the tile's x."""
    cfg = load_hw("tiny", [])
    spec, run = golden
    bufs = run.steps[step].buffers
    got, tags, writes = run_pv(cfg, spec, bufs, 1)
    want = bufs["layers.1.attn.av.out"]
    assert np.array_equal(got, want)
    assert np.count_nonzero(want) > want.size // 2
    T, per = want.shape[0], spec.n_heads // spec.n_kv_heads * spec.head_dim // cfg.booth.lanes
    assert tags == [(t, 0x80 | g) for g in range(2) for t in range(T) for _ in range(per)]
    assert writes == [(t, int(k == 0), 0x80 | g) for g in range(2) for t in range(T) for k in range(per)]


@pytest.mark.parametrize("lag", [2, 0])
def test_drain_rule_puts_s_on_the_chip(monkeypatch, lag):
    """bitnet-tiny prefill 2 + decode 3 on tiny: every step's and layer's P V tiles run on data, so the attention
    output goes to X in all 8; a prefill row's S is written 16 beats or more before attn_sub_norm reads it; a
    decode step's single row's last P V pass is written in the norm's cycle 1, so its S is the chip's where the
    norm reads it rms_lag = 2 cycles into its word (tiny's latency.rmsnorm 12) and stays the bench's where it
    would read it in cycle 0 (lag 0)."""
    import lowbit.rtl.sfu_stream as ss

    monkeypatch.setattr(ss, "RMS_LAG", lag)
    import tempfile
    from pathlib import Path

    from lowbit.rtl.chip_golden import data_plan
    from lowbit.rtl.chip_image import build_image
    from lowbit.rtl.chip_model import compile_from_golden, model_contents
    from lowbit.sim.program_io import ProgramReader

    cfg = load_hw("tiny", [])
    with tempfile.TemporaryDirectory() as t:
        prog = Path(t) / "p.bin"
        compile_from_golden(cfg, "bitnet-tiny", 2, 3, prog, 0)
        img = build_image(prog, cfg)
        model, _ = model_contents(img, cfg, ProgramReader(prog).header.meta, 0)
        plan, why = data_plan(img, cfg, 0, model)
    assert why == ""
    assert sorted(plan.av_norm) == [(s, ly) for s in range(4) for ly in range(2)]
    assert {k: v["s"] for k, v in plan.av_cand.items()} == {(s, ly): s == 0 or lag == 2 for s in range(4)
                                                            for ly in range(2)}
    bq = img.queues.index("booth")
    av = [w["av"] for w in img.words[bq] if w.get("op", "").endswith(".attn.av")]
    assert av == [7, 3] * 2 + ([7, 3] if lag else [5, 1]) * 6  # X always; S where it lands; group 0 starts it


@pytest.mark.slow
def test_chip_attention_output_check_can_fail(monkeypatch, tmp_path):
    """With the amax_v of every key of the program's last softmax word (the last decode step's last layer and
    KV group) doubled in the softmax engine's load-port writes after the golden was computed
    (lowbit.rtl.chip_softmax; that word is kept off the V quantizer's scale memory), the engine's INT8
    probabilities stay the golden's (RNE(127 2x / 2 amax) = RNE(127 x / amax)) and exactly that word's row
    scales double: the chip's attention output of that step and layer differs from the golden's attn.av.out in
    that group's heads (and its row's S); no softmax word comes after it, so every other step and layer stays
    exact, and the timing is unchanged."""
    pytest.importorskip("cocotb")
    import lowbit.rtl.chip_vquant as cv
    from lowbit.rtl.chip_softmax import SEL
    from tests.rtl.chip_perturb import verify_perturbed

    real = cv.vs_softmax

    def last_on_the_load_port(plan, vquant, lanes):
        last = max(plan.sm.keys)
        keep = plan.sm.keys.pop(last)
        real(plan, vquant, lanes)
        plan.sm.keys[last] = keep

    monkeypatch.setattr(cv, "vs_softmax", last_on_the_load_port)

    def double_amax_v(plan):
        last = max(plan.sm.keys)
        e = next(e for e in plan.sm.writes if e["before"] == last)  # its amax_v words (memory 2)
        e["w"] = [[a, 2 * w if a >> SEL == 2 else w] for a, w in e["w"]]

    r, _ = verify_perturbed(monkeypatch, tmp_path, double_amax_v)
    assert r.mismatches == 0 and not r.ok  # (the projections after the attention output differ too)
    assert r.sm[4] == 2  # the decode row's 2 heads' row scales, no INT8 word
    name, n, bad, rows, sbad = r.av[-1]
    assert name.endswith("layer 1") and n == 64 and 0 < bad <= 2 * 16 and rows == 1 and sbad == 1
    assert all(x[2] == 0 and x[4] == 0 for x in r.av[:-1])
