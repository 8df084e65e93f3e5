"""RoPE and the per-head query / key quantize in the chip top (lowbit.rtl.chip_rope): the quantize behind the
RoPE stream (lowbit.rtl.sfu_stream_headq) against exact integer arithmetic and sim.numerics' absmax quantize on
the Amaranth simulator, in the cycles the RoPE word leaves it; the loader's q / k buffer layout; and, on the chip
bench, one perturbed RoPE table entry changing exactly the query and key words the golden says it does."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("amaranth")

from lowbit.rtl.sfu_stream_headq import HEADQ_PIPE, SfuHeadQuant  # noqa: E402
from lowbit.sim.numerics.sfu import sfu_absmax_quantize  # noqa: E402


def rne127(x: int, amax: int) -> int:
    """sign(x) x round-half-to-even(127 |x| / amax), in Python integers (0 for amax 0)."""
    if amax == 0:
        return 0
    n, r = divmod(127 * abs(x), amax)
    n += 2 * r > amax or (2 * r == amax and n % 2 == 1)
    return -n if x < 0 else n


def run_headq(rows: np.ndarray, beats: int, lanes: int, *, hpp: int, nq: int, grp: int, gstride: int,
              o_addr: int = 40):
    """Rows [R, beats x lanes] int16 streamed as the RoPE engine writes them (a row's words in consecutive cycles,
    the rows back to back, its amax the cycle after its last word); returns the q, k and amax writes as
    (cycle, address or row, ...) and the cycle of each row's amax."""
    from amaranth.sim import Simulator

    dut = SfuHeadQuant(lanes, max_beats=beats, a_bits=10)
    q, k, s, acyc = [], [], [], []

    async def bench(ctx):
        ctx.set(dut.start, 1)
        for f, v in dict(beats=beats, hpp=hpp, nq=nq, grp=grp, gstride=gstride, o_addr=o_addr).items():
            ctx.set(getattr(dut, f), v)
        await ctx.tick()
        ctx.set(dut.start, 0)
        words = rows.reshape(len(rows), beats, lanes)
        n_cyc = len(rows) * beats + beats + HEADQ_PIPE + 2
        for c in range(n_cyc):
            r, b = divmod(c, beats)
            ctx.set(dut.i_wen, int(r < len(rows)))
            if r < len(rows):
                ctx.set(dut.i_wdata, [int(v) for v in words[r, b]])
            ra = (c - 1) // beats  # a row's amax comes the cycle after its last word
            am = (c - 1) % beats == beats - 1 and 0 <= ra < len(rows)
            ctx.set(dut.a_wen, int(am))
            if am:
                ctx.set(dut.a_wdata, int(np.abs(rows[ra]).max()))
                acyc.append(c)
            if ctx.get(dut.q_wen):
                q.append((c, ctx.get(dut.q_waddr), [int(v) for v in ctx.get(dut.q_wdata)]))
            if ctx.get(dut.k_wen):
                k.append((c, ctx.get(dut.k_waddr), [int(v) for v in ctx.get(dut.k_wdata)]))
            if ctx.get(dut.s_wen):
                s.append((ctx.get(dut.s_k), ctx.get(dut.s_row), ctx.get(dut.s_amax)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return q, k, s, acyc


def _rows(rng, n_rows: int, width: int) -> np.ndarray:
    """Random Q7.8 rows with the edges: -2^15, an all-zero row, exact ties of 127 x / amax (amax 254: odd x
    lands on .5), a row of one value."""
    rows = rng.integers(-32768, 32768, (n_rows, width))
    rows[1] = 0
    rows[2, 0], rows[2, 1:] = -32768, rng.integers(-300, 300, width - 1)
    rows[3] = np.arange(width) % 255 - 127
    rows[3, 0] = 254
    rows[4] = 7
    rows[5, :] = rng.integers(-3, 4, width)
    return rows


@pytest.mark.parametrize(("lanes", "beats", "grp", "heads"), [(4, 4, 2, 1), (16, 1, 2, 2), (4, 2, 4, 1)])
def test_head_quant_matches_exact_arithmetic_and_numerics(lanes, beats, grp, heads):
    """Every INT8 word equals sign(x) RNE(127 |x| / amax) (Python integers) and sim.numerics' absmax quantize of
    its head row; q rows go to Q K^T's query layout (group after group, token after token), k rows after each
    other; a row's last word is written beats cycles after its amax (the RoPE word's latency >= beats + 3)."""
    rng = np.random.default_rng(7)
    T, hpp, nq = 3, (grp + 1) * heads, grp * heads
    rows = _rows(rng, T * hpp, beats * lanes)
    q, k, s, acyc = run_headq(rows, beats, lanes, hpp=hpp, nq=nq, grp=grp, gstride=T * grp)
    want_q8, want_amax = sfu_absmax_quantize(rows, 16)
    exact = np.vectorize(rne127)(rows, np.abs(rows).max(axis=1, keepdims=True))
    assert np.array_equal(want_q8, exact)  # the golden's rule is exactly RNE(127 x / amax)
    wq, wk, ws = [], [], []
    for r in range(len(rows)):
        t, j = divmod(r, hpp)
        if j < nq:
            row = (j // grp) * T * grp + t * grp + j % grp
            wq += [(40 + row * beats + b, exact[r, b * lanes:(b + 1) * lanes].tolist()) for b in range(beats)]
            ws.append((0, row, int(want_amax[r, 0])))
        else:
            kk = t * heads + j - nq
            wk += [(kk * beats + b, exact[r, b * lanes:(b + 1) * lanes].tolist()) for b in range(beats)]
            ws.append((1, kk, int(want_amax[r, 0])))
    assert [(a, w) for _, a, w in q] == wq
    assert [(a, w) for _, a, w in k] == wk
    assert s == ws
    ends = sorted(c for c, *_ in q + k)
    assert ends[-1] == acyc[-1] + beats  # the last row's last word: its amax cycle + beats


def test_head_quant_lints_clean(tmp_path):
    """verilator --lint-only -Wall on the per-head quantize at vitallm's 16 lanes (rtl.lint's waivers only)."""
    from lowbit.rtl.lint import lint_component

    r, _ = lint_component(SfuHeadQuant(16, max_beats=2, a_bits=11), "lowbit_sfu_headq", tmp_path)
    assert r.ok, r.errors[:5]


@pytest.mark.slow
def test_chip_rope_check_can_fail_in_exactly_the_expected_words(monkeypatch, tmp_path):
    """With one RoPE table entry negated after the golden was computed (position 1's cos of pair 0, in the
    table word of a row's first beat: it rotates element 0 of every head row at position 1; element h keeps
    its own copy in the second half's word), the chip's query and key words differ from the golden's exactly
    where sim.numerics (sfu_rope on that table, then the per-head absmax quantize) says they do: the prefill's
    token 1 in both layers; every other word, the timing and the projections exact."""
    pytest.importorskip("cocotb")
    from lowbit.sim.config import load_hw
    from lowbit.sim.numerics.sfu_elem import rope_table, sfu_rope
    from tests.rtl.chip_perturb import verify_perturbed

    def negate_cos(plan):
        if plan.rope is not None and plan.rope.fields:
            rp = plan.rope
            w = rp.table[1 * rp.beats]  # position 1, beat 0: lane 0 holds pair 0's (cos, sin), cos in bits 0..15
            c = (w & 0xFFFF) - ((w & 0x8000) << 1)
            rp.table[1 * rp.beats] = (w & ~0xFFFF) | (-c & 0xFFFF)

    r, plan = verify_perturbed(monkeypatch, tmp_path, negate_cos)
    cfg = load_hw("tiny", [])
    spec, lanes = plan.model.spec, cfg.sfu.lanes
    hd = spec.head_dim
    cos, sin = rope_table(np.arange(2), hd, spec.rope_theta)
    cos_p = cos.copy()
    cos_p[1, 0] = -cos_p[1, 0]
    bad = {"q": 0, "k": 0, "amax": 0}
    st = plan.model.run.steps[0]
    for layer in range(spec.n_layers):
        b = st.buffers
        for kind, src, q8k, ak in (("q", "attn.q.out", "attn.qk.q8", "attn.qk.q_amax"),
                                   ("k", "attn.k.out", "attn.kv_append.k8", "attn.kv_append.k_amax")):
            x = b[f"layers.{layer}.{src}"].reshape(2, -1, hd)
            rot = sfu_rope(x, cos[:, None, :], sin[:, None, :]).astype(np.int64)
            assert np.array_equal(rot, b[f"layers.{layer}.attn.rope.{kind}"])
            rot[1, :, 0] = sfu_rope(x, cos_p[:, None, :], sin[:, None, :])[1, :, 0]
            q8, am = sfu_absmax_quantize(rot, 16)
            want, wam = b[f"layers.{layer}.{q8k}"], b[f"layers.{layer}.{ak}"]
            diff = (q8 != want).reshape(2, want.shape[1], -1, lanes).any(axis=-1)
            assert not diff[0].any()
            bad[kind] += int(diff.sum())
            bad["amax"] += int((am[..., 0] != wam).sum())
    assert bad["q"] > 0 and bad["k"] > 0
    assert r.mismatches == 0 and r.chip_cycles == r.sim_cycles and not r.ok
    assert (r.rope[2], r.rope[4], r.rope[6]) == (bad["q"], bad["k"], bad["amax"])
    assert all(b_ == 0 for _, _, b_ in r.rq) and r.sfu[3] == 0 and r.norm[3] == 0
