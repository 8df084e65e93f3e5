"""The chip's softmax engine (lowbit.rtl.chip_softmax) on the Amaranth simulator: score rows of different
lengths through SfuSoftmaxStream and the p x amax_v absmax quantize, against sim.numerics (sfu_softmax,
sfu_absmax_quantize at the golden's 32-bit width), every write inside the word's cycles; its division
against the exact quantizer, ties included; one changed amax_v changes exactly the rows the rule says."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("amaranth")

from lowbit.rtl.chip_softmax import SEL, SM_ENG, rne_div127, sm_fits, softmax_engine  # noqa: E402
from lowbit.sim.config import load_hw  # noqa: E402
from lowbit.sim.numerics.sfu import sfu_absmax_quantize  # noqa: E402
from lowbit.sim.numerics.sfu_reduce import sfu_softmax  # noqa: E402

PW_BITS = 32  # sim.golden PW_IN_BITS


def expected(scores: list[np.ndarray], va: np.ndarray) -> tuple[list[np.ndarray], list[int]]:
    """The golden's rule per row: p = sfu_softmax(row), (w8, w_amax) = absmax INT8 of p x amax_v."""
    w8, wa = [], []
    for s in scores:
        p = sfu_softmax(s[None].astype(np.int64))[0].astype(np.int64)
        q, a = sfu_absmax_quantize((p * va[:len(s)])[None], PW_BITS)
        w8.append(q[0].astype(np.int64))
        wa.append(int(a[0, 0]))
    return w8, wa


def run_engine(cfg, scores: list[np.ndarray], va: np.ndarray, grp: int, o_addr: int = 7, st_addr: int = 3,
               vs: int = 0, gathered: tuple | None = None):
    """One `eng` 5 word over `scores` (rows t x grp + h, row r len0 + r // grp keys when grp > 0) with amax_v
    `va` per key, memories written through the load port first; returns ({act word: INT8 lanes}, [(row, scale)],
    cycles from the start to the last write, to done_next). `vs` > 0: the amax_v come from the V quantizer's
    scale memory (lowbit.rtl.chip_vquant) from word vs on (the word's t_addr vs + 1; a model of the memory
    answers each `vs_addr` the cycle after) and the load port's amax_v memory holds zeros. `gathered` (kg,
    recorder, scale entries): the word's `kg` set, a model of lowbit.rtl.chip_kscales answers lane i of each
    (`vs_kg`, `vs_key`) the cycle after with the scale entry at recorder[kg - 1 + vs_key x lanes + i], `va`
    unused (the load port's amax_v memory holds zeros)."""
    from amaranth.hdl import Module, Signal
    from amaranth.lib import data, wiring
    from amaranth.sim import Simulator

    from lowbit.rtl.common import COUNT_BITS

    n = cfg.sfu.lanes
    lens = [len(s) for s in scores]
    beats = -(-max(lens) // n)
    rows = len(scores)

    class Dims:
        a_bits = 9

    class Ctrl:
        go = Signal()
        word = Signal(data.StructLayout({"eng": 3, "rows": COUNT_BITS, "beats": COUNT_BITS, "x_addr": 9, "o_addr": 9,
                                         "st_addr": 6, "y_addr": 9, "g_addr": 9, "t_addr": 12, "kg": 8}))

    class Top(wiring.Component):
        def __init__(self):
            super().__init__({"ld": wiring.In(1), "ld_addr": wiring.In(9), "ld_word": wiring.In(16 * n)})
            self.ctrl = Ctrl()

        def elaborate(self, platform):
            m = Module()
            self.p = softmax_engine(m, cfg, Dims, self.ctrl, self.ld, self.ld_addr, self.ld_word)
            return m

    top = Top()
    writes = []
    for r, s in enumerate(scores):
        for b in range(beats):
            lane = np.zeros(n, np.int64)
            seg = s[b * n:(b + 1) * n]
            lane[:len(seg)] = seg
            writes.append((r * beats + b, lane))
    loads = [(a, sum((int(v) & 0xFFFF) << (16 * k) for k, v in enumerate(w))) for a, w in writes]
    loads += [(1 << SEL | r, int(s.max()) & 0xFFFF) for r, s in enumerate(scores)]
    vpad = np.zeros(beats * n, np.int64)
    vpad[:len(va)] = va
    vwords = [sum(int(v) << (16 * k) for k, v in enumerate(vpad[b * n:(b + 1) * n])) for b in range(beats)]
    scale_mem = {vs + b: w for b, w in enumerate(vwords)}  # the scale memory's words (others: junk)
    loads += [(2 << SEL | b, 0 if vs or gathered else w) for b, w in enumerate(vwords)]
    out: dict[int, list[int]] = {}
    wa: list[tuple[int, int]] = []
    res = {}

    m = Module()
    m.submodules.top = top
    sim = Simulator(m)
    sim.add_clock(1e-6)

    async def bench(ctx):
        for a, w in loads:
            ctx.set(top.ld, 1)
            ctx.set(top.ld_addr, a)
            ctx.set(top.ld_word, w)
            await ctx.tick()
        ctx.set(top.ld, 0)
        c = top.ctrl
        ctx.set(c.word, {"eng": SM_ENG, "rows": rows, "beats": beats, "x_addr": 0, "o_addr": o_addr, "st_addr": st_addr,
                         "y_addr": lens[0], "g_addr": grp, "t_addr": vs + 1 if vs else 0,
                         "kg": gathered[0] if gathered else 0})
        ctx.set(c.go, 1)
        last = cyc = 0
        vs_prev = kg_prev = key_prev = 0
        for cyc in range(2 * rows * beats + 64):
            if cyc == 1:
                ctx.set(c.go, 0)
            p = top.p
            if gathered:
                kg, rec, ent = gathered
                ctx.set(p.vs_data, [ent.get(rec[(kg_prev - 1 + key_prev * n + k) % len(rec)], 0xBEEF) if kg_prev
                                    else 0xBEEF for k in range(n)])
                kg_prev, key_prev = ctx.get(p.vs_kg), ctx.get(p.vs_key)
            else:
                ctx.set(p.vs_data, [(scale_mem.get(vs_prev, 0xBEEF * 0x10001000100010001) >> (16 * k)) & 0xFFFF
                                    for k in range(n)])
            vs_prev = ctx.get(p.vs_addr)
            if ctx.get(p.a_en):
                x = ctx.get(p.a_data)
                out[ctx.get(p.a_addr)] = [((x >> (8 * k)) & 0xFF) - (256 if (x >> (8 * k + 7)) & 1 else 0)
                                          for k in range(n)]
                last = cyc
            if ctx.get(p.wa_en):
                wa.append((ctx.get(p.wa_addr), ctx.get(p.wa_data)))
                last = cyc
            if ctx.get(p.done_next):
                res["done"] = cyc
                break
            await ctx.tick()
        res["last"] = last

    sim.add_testbench(bench)
    sim.run()
    return out, wa, res["last"], res.get("done", -1)


def check(cfg, scores, va, grp, o_addr=7, st_addr=3, vs=0, gathered=None):
    n = cfg.sfu.lanes
    beats = -(-max(len(s) for s in scores) // n)
    out, wa, last, done = run_engine(cfg, scores, va, grp, o_addr, st_addr, vs, gathered)
    w8, want_wa = expected(scores, va)
    got = [[v for b in range(beats) for v in out.get(o_addr + r * beats + b, [None] * n)] for r in range(len(scores))]
    want = [list(q) + [0] * (beats * n - len(q)) for q in w8]
    assert done == 2 * len(scores) * beats + cfg.sfu.op_latency("softmax") - 1  # the word's cycles
    assert last <= done  # every write lands before the done cycle
    return got, want, wa, [(st_addr + r, a) for r, a in enumerate(want_wa)]


def test_softmax_engine_matches_the_golden_rule_on_causal_and_equal_rows():
    cfg = load_hw("tiny")
    rng = np.random.default_rng(7)
    grp = 2
    # a causal prompt of 4 queries over keys 2.. (row r: 2 + r // grp keys, up to 2 beats), and a decode row set
    scores = [rng.integers(-3000, 3000, 2 + r // grp) for r in range(8)]
    va = rng.integers(1, 1 << 14, 5)
    got, want, wa, want_wa = check(cfg, scores, va, grp)
    assert got == want and wa == want_wa
    for keys in (7, 11):  # decode rows (equal lengths), 2 and 3 beats
        scores = [rng.integers(-6000, 200, keys) for _ in range(2)]
        got, want, wa, want_wa = check(cfg, scores, rng.integers(1, 1 << 15, keys), 0)
        assert got == want and wa == want_wa


def test_softmax_engine_reads_amax_v_from_the_v_quantizers_scale_memory():
    """With the word's t_addr set, the keys' amax_v come from the scale memory from word t_addr - 1 on (the load
    port's amax_v memory holds zeros, every other scale word junk): the rows equal the golden rule's, causal and
    equal rows, 1 to 3 beats."""
    cfg = load_hw("tiny")
    rng = np.random.default_rng(5)
    scores = [rng.integers(-3000, 3000, 2 + r // 2) for r in range(8)]
    got, want, wa, want_wa = check(cfg, scores, rng.integers(1, 1 << 14, 5), 2, vs=9)
    assert got == want and wa == want_wa
    for keys in (3, 11):
        scores = [rng.integers(-6000, 200, keys) for _ in range(2)]
        got, want, wa, want_wa = check(cfg, scores, rng.integers(1, 1 << 15, keys), 0, vs=200)
        assert got == want and wa == want_wa


def test_softmax_engine_reads_a_gathered_chunks_amax_v_by_recorded_position():
    """With the word's `kg` set, key j's amax_v is the scale entry at the recorder's entry kg - 1 + j (mod its
    depth; lowbit.rtl.chip_kscales): the decode rows over 8 gathered keys (2 beats) equal the golden rule's with
    those keys' amax_v; recording key 5 at another position's index changes exactly the rows' words that key 5's
    amax_v reaches, as the rule predicts."""
    cfg = load_hw("tiny")
    rng = np.random.default_rng(17)
    ent = {i: int(v) for i, v in enumerate(rng.integers(1, 1 << 15, 512))}
    pos = [0, 1, 3, 4, 6, 7, 9, 10]  # the gathered keys' positions, layer 1 KV head 1's (scale base 3 x 128)
    rec = [0] * 32
    kg = 29  # the chunk's first key at entry 28: its keys wrap the recorder
    for j, x in enumerate(pos):
        rec[(kg - 1 + j) % 32] = 3 * 128 + x
    scores = [rng.integers(-200, 200, 8) for _ in range(2)]  # a spread every key's probability survives
    va = np.array([ent[3 * 128 + x] for x in pos])
    got, want, wa, want_wa = check(cfg, scores, va, 0, gathered=(kg, rec, ent))
    assert got == want and wa == want_wa
    rec2 = list(rec)
    rec2[(kg - 1 + 5) % 32] = 3 * 128 + 2  # key 5 recorded at position 2
    va2 = va.copy()
    va2[5] = ent[3 * 128 + 2]
    got2, want2, wa2, want_wa2 = check(cfg, scores, va2, 0, gathered=(kg, rec2, ent))
    assert got2 == want2 and wa2 == want_wa2 and va2[5] != va[5]
    differ = [r for r in range(len(got)) if list(got2[r]) != list(got[r])]
    assert differ and differ == [r for r in range(len(want)) if list(want2[r]) != list(want[r])]


def test_one_changed_amax_v_changes_exactly_the_rows_that_use_it():
    cfg = load_hw("tiny")
    rng = np.random.default_rng(11)
    scores = [rng.integers(-2000, 2000, 1 + r // 2) for r in range(6)]  # rows of 1, 1, 2, 2, 3, 3 keys
    va = rng.integers(1000, 1 << 14, 3)
    base, want, _, _ = check(cfg, scores, va, 2)
    assert base == want
    va2 = va.copy()
    va2[2] = va[2] // 3  # key 2: only rows 4 and 5 attend to it
    got, want2, wa2, want_wa2 = check(cfg, scores, va2, 2)
    assert got == want2 and wa2 == want_wa2
    differ = [r for r in range(6) if got[r] != base[r]]
    assert differ == [r for r in range(6) if want2[r] != want[r]] and set(differ) <= {4, 5} and differ


def test_division_is_the_exact_quantizer_ties_included():
    from amaranth.hdl import Module, Signal
    from amaranth.sim import Simulator

    rng = np.random.default_rng(3)
    cases = []
    for _ in range(300):
        amax = int(rng.integers(1, 1 << 30))
        cases.append((int(rng.integers(0, amax + 1)), amax))
    for c in (1, 3, 1000, 12345):  # exact ties: 254 x = (2k + 1) amax
        for k in (0, 1, 2, 62, 63, 126):
            cases.append(((2 * k + 1) * c, 254 * c))
    cases += [(0, 0), (5, 5), (0, 7)]
    x, a = Signal(31), Signal(31)
    m = Module()
    q = Signal(8)
    m.d.comb += q.eq(rne_div127(x, a, "d", m))
    sim = Simulator(m)
    got = []

    async def bench(ctx):
        for xv, av in cases:
            ctx.set(x, xv)
            ctx.set(a, av)
            got.append(ctx.get(q))

    sim.add_testbench(bench)
    sim.run()
    for (xv, av), g in zip(cases, got, strict=True):
        want = int(sfu_absmax_quantize(np.array([[xv, av]]), PW_BITS)[0][0, 0]) if av else 0
        assert g == want, (xv, av)


def test_the_last_rows_quantize_must_fit_the_word():
    cfg = load_hw("tiny")  # latency.softmax 16: 12 stream + 2 quantize cycles + beats - 1 inside it
    assert sm_fits(cfg, 3) and not sm_fits(cfg, 4)


def _sfu_at(lanes: int):
    """vitallm's SFU (latency.softmax 16) at `lanes` lanes, as the engine's config."""
    import dataclasses
    from types import SimpleNamespace

    return SimpleNamespace(sfu=dataclasses.replace(load_hw("vitallm").sfu, lanes=lanes))


@pytest.mark.parametrize("lanes", [8, 16])
def test_softmax_engine_at_8_and_16_lanes(lanes):
    """A causal prompt's rows over 3 beats of keys (2 x lanes - 2 .. 2 x lanes + 1 keys) and full decode rows
    against the golden rule, in the word's cycles."""
    cfg = _sfu_at(lanes)
    rng = np.random.default_rng(lanes)
    scores = [rng.integers(-3000, 3000, 2 * lanes - 2 + r // 2) for r in range(8)]
    got, want, wa, want_wa = check(cfg, scores, rng.integers(1, 1 << 14, 2 * lanes + 1), 2)
    assert got == want and wa == want_wa
    scores = [rng.integers(-6000, 200, 3 * lanes) for _ in range(3)]
    got, want, wa, want_wa = check(cfg, scores, rng.integers(1, 1 << 15, 3 * lanes), 0)
    assert got == want and wa == want_wa


def test_the_engine_converts_in_size_linear_in_lanes():
    """The 16-lane engine's RTLIL is under 2.5 x the 8-lane one's (measured 1.8 x). Its running row max
    written as one expression over the lanes was lowered as a tree of 2^(lanes + 1) comparators: 1.36 MB at
    8 lanes, 10.3 MB at 12, and the 16-lane chip's conversion ran out of memory."""
    from amaranth.back import rtlil
    from amaranth.hdl import Module
    from amaranth.lib import data, wiring

    from lowbit.rtl.common import COUNT_BITS

    def size(lanes: int) -> int:
        cfg = _sfu_at(lanes)

        class Dims:
            a_bits = 9

        class Top(wiring.Component):
            def __init__(self):
                word = data.StructLayout({"eng": 3, "rows": COUNT_BITS, "beats": COUNT_BITS, "x_addr": 9,
                                          "o_addr": 9, "st_addr": 6, "y_addr": 9, "g_addr": 9,
                                          "t_addr": 12, "kg": 8})
                super().__init__({"go": wiring.In(1), "word": wiring.In(word), "ld": wiring.In(1),
                                  "ld_addr": wiring.In(9), "ld_word": wiring.In(16 * lanes),
                                  "q": wiring.Out(8 * lanes), "wa": wiring.Out(32)})

            def elaborate(self, platform):
                m = Module()
                p = softmax_engine(m, cfg, Dims, self, self.ld, self.ld_addr, self.ld_word)
                m.d.comb += [self.q.eq(p.a_data), self.wa.eq(p.wa_data)]
                return m

        return len(rtlil.convert(Top(), name="t"))

    s8, s16 = size(8), size(16)
    assert s16 < 2.5 * s8, (s8, s16)


def run_scores(lanes: int, acc_bits: int, mult: tuple[int, int], rows: list[tuple[list, list, list]]) -> list[list]:
    """rows of (acc, qa, ka) per lane through ScoreRequantStage, one a cycle; returns its outputs in order."""
    from amaranth.sim import Simulator

    from lowbit.rtl.score_requant import ScoreRequantStage

    dut = ScoreRequantStage(lanes=lanes, acc_bits=acc_bits, mult=mult)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    got: list[list] = []

    async def bench(ctx):
        for k in range(len(rows) + 8):
            if k < len(rows):
                acc, qa, ka = rows[k]
                ctx.set(dut.in_valid, 1)
                ctx.set(dut.acc, [int(a) for a in acc])
                ctx.set(dut.qa, [int(a) for a in qa])
                ctx.set(dut.ka, [int(a) for a in ka])
            else:
                ctx.set(dut.in_valid, 0)
            await ctx.tick()
            if ctx.get(dut.out_valid):
                w = ctx.get(dut.out)
                got.append([int(w[i]) for i in range(lanes)])

    sim.add_testbench(bench)
    sim.run()
    return got


def test_score_requant_is_the_golden_per_key_scale():
    """Each lane's own scale q_amax x k_amax: the golden's Q K^T scores of bitnet-tiny (prefill 4 on tiny: every
    (query, head, key) it attends) and random accumulators and amaxes, against sim.numerics.requant."""
    from lowbit.rtl.chip_model import golden_of
    from lowbit.sim.golden import attn_multipliers
    from lowbit.sim.modelspec import get_model
    from lowbit.sim.numerics.requant import requant

    spec, cfg = get_model("bitnet-tiny"), load_hw("tiny", [])
    lanes, acc_bits = cfg.booth.lanes, cfg.booth.acc_bits
    mult = attn_multipliers(spec.head_dim)["qk"]
    _, run = golden_of(spec, cfg, 4, 0, False, 0)
    b = run.steps[0].buffers
    grp = spec.n_heads // spec.n_kv_heads
    outs = []  # (acc, qa, ka, the golden's score) of every attended output, (query, head, key) order
    for L in range(spec.n_layers):
        p = f"layers.{L}.attn"
        keys, acc, sc = b[f"{p}.qk.keys"], b[f"{p}.qk.acc"], b[f"{p}.qk.scores"]
        qa, ka = b[f"{p}.qk.q_amax"], b[f"{p}.kv_append.k_amax"]
        for t, h, j in zip(*np.nonzero(keys.transpose(1, 0, 2)), strict=True):
            outs.append((acc[h, t, j], qa[t, h], ka[j, h // grp], sc[h, t, j]))
    rng = np.random.default_rng(5)
    for _ in range(64):
        a = int(rng.integers(-(1 << (acc_bits - 1)), 1 << (acc_bits - 1)))
        qa_, ka_ = (int(rng.integers(0, (1 << 15) + 1)) for _ in range(2))
        outs.append((a, qa_, ka_, int(requant(np.array([a]), np.array([qa_ * ka_]), mult[0], mult[1])[0])))
    outs += [(0, 0, 0, 0)] * (-len(outs) % lanes)
    rows = [tuple(list(c) for c in zip(*outs[k:k + lanes], strict=True))[:3] for k in range(0, len(outs), lanes)]
    got = run_scores(lanes, acc_bits, mult, rows)
    want = [[int(o[3]) for o in outs[k:k + lanes]] for k in range(0, len(outs), lanes)]
    assert len(outs) > 100 and got == want


def test_score_requant_lints_clean(tmp_path):
    from lowbit.rtl.lint import lint_component
    from lowbit.rtl.score_requant import ScoreRequantStage
    from lowbit.sim.golden import attn_multipliers

    cfg = load_hw("vitallm", [])
    r, _ = lint_component(ScoreRequantStage(lanes=cfg.booth.lanes, acc_bits=cfg.booth.acc_bits,
                                            mult=attn_multipliers(16)["qk"]), "score_requant", tmp_path)
    assert r.ok, r.errors[:5]
