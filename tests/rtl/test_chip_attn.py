"""BoothFlex's attention tiles on the chip's data path: the P V walk (lowbit.rtl.chip_booth, mode 3) on the
Amaranth simulator against exact integer dot products, and the loader's P V tiles (lowbit.rtl.chip_pv)
against the golden's probabilities and V rows."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("amaranth")

from lowbit.rtl.chip_booth import BoothEngine  # noqa: E402
from lowbit.sim.attention import pv_pass_keys  # noqa: E402
from lowbit.sim.config import load_hw  # noqa: E402
from lowbit.sim.units.booth import booth_int8_pass_cycles  # noqa: E402


def _run_pv(p: np.ndarray, v: np.ndarray, pos0: int, lanes: int, *, a_addr: int = 9, k_addr: int = 5,
            p_addr: int = 3):
    """P [nq, grp, keys] (INT8) x V [keys, hd] (INT8) on the engine (tiny's BoothFlex, `lanes` lanes x 2, with a TINT
    core of as many lanes for its ternary layout; 4-element act words, 2-byte kv units), query t at position pos0 + t (its row's keys past pos0 + t are zero); returns
    (psum words in order, cycles start -> done, passes, sim.units.booth cycles of the tile's ragged passes)."""
    import dataclasses

    from amaranth.sim import Simulator

    cfg = load_hw("tiny", [])
    b, tw, ub = dataclasses.replace(cfg.booth, lanes=lanes), cfg.tint.tree_width, 2
    nq, grp, keys = p.shape
    hd = v.shape[1]
    runs = pv_pass_keys(pos0, keys, nq, grp * hd, b.lanes)
    beats = sum(c * -(-k // b.width) for k, c in runs)  # the tile's beats, its passes' summed
    ps = -(-keys // tw) + 1  # a row stride past the row's words: the stride is the field's
    act = np.zeros((64, tw), np.int64)
    for t in range(nq):
        for h in range(grp):
            row = np.zeros(ps * tw, np.int64)
            row[:keys] = p[t, h]
            act[a_addr + (t * grp + h) * ps:a_addr + (t * grp + h + 1) * ps] = row.reshape(ps, tw)
    kv = np.full(128 * ub, 0x55, np.uint8)  # units past the chunk hold non-zero bytes: P = 0 must drop them
    kv[k_addr * ub:k_addr * ub + keys * hd] = v.astype(np.int8).view(np.uint8).reshape(-1)
    units = kv.reshape(-1, ub)
    dut = BoothEngine(b, dataclasses.replace(cfg.tint, lanes=lanes), w_bits=6, a_bits=6, p_bits=7, qk=(7, b.width // ub, 8 * ub))
    outs = nq * grp * hd
    passes = -(-outs // b.lanes)
    got: list = []
    res: dict = {}

    async def bench(ctx):
        def serve():
            return ([[int(x) for x in act[ctx.get(dut.a_raddr[i])]] for i in range(dut.n_act)],
                    [int.from_bytes(units[ctx.get(dut.v_raddr[j])].tobytes(), "little")
                     for j in range(b.lanes * b.width)])

        for n, x in (("mode", 3), ("beats", beats), ("groups", passes), ("tokens", 1), ("nq", nq), ("grp", grp),
                     ("pos0", pos0), ("k_addr", k_addr), ("k_stride", hd // ub), ("a_addr", a_addr), ("a_stride", ps),
                     ("p_addr", p_addr)):
            ctx.set(getattr(dut, n), x)
        ctx.set(dut.start, 1)
        a, vv = serve()
        await ctx.tick()
        ctx.set(dut.start, 0)
        cyc = 1
        while True:
            for i, x in enumerate(a):
                ctx.set(dut.a_rdata[i], x)
            for j, x in enumerate(vv):
                ctx.set(dut.v_rdata[j], x)
            if ctx.get(dut.p_valid):
                got.append((ctx.get(dut.p_addr_o), [ctx.get(dut.p_acc[lane]) for lane in range(b.lanes)]))
            if ctx.get(dut.done):
                break
            a, vv = serve()
            await ctx.tick()
            cyc += 1
            assert cyc < 10_000
        res["cyc"] = cyc

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got, res["cyc"], passes, booth_int8_pass_cycles(b, list(runs))


@pytest.mark.parametrize("nq, grp, keys, hd, pos0, cyc",
                         # one query over 5 keys: 16 passes x ceil(5 / 2) beats + latency 5
                         [(1, 2, 5, 16, 4, 16 * 3 + 5),
                          # causal: queries at 1, 2 see 2, 3 keys: 8 passes x 1 beat + 8 x 2 + 5 (the average
                          # keys, ceil(5 / 2) = 3, would take 16 x 2 + 5)
                          (2, 2, 3, 8, 1, 8 + 16 + 5),
                          # queries at 0 .. 3 over 4 keys, 6 outputs (3 passes) a query: 1, 1, 2, 2 beats
                          (4, 1, 4, 6, 0, 3 * (1 + 1 + 2 + 2) + 5),
                          (1, 1, 4, 6, 3, 3 * 2 + 5)])
@pytest.mark.parametrize("lanes", [2])
def test_pv_tile_is_the_exact_dot_of_probabilities_and_v_rows(nq, grp, keys, hd, pos0, cyc, lanes):
    """Each output (query, head, dimension) is sum_j P[t, h, j] V[j, d] over the keys its query attends to,
    exact, `lanes` outputs a pass at p_addr + pass; a pass takes its longest row's beats, and the tile ends
    sim.units.booth.booth_int8_pass_cycles after its start (hand-computed here)."""
    rng = np.random.default_rng(keys * 7 + hd)
    p = rng.integers(-128, 128, (nq, grp, keys))
    for t in range(nq):
        p[t, :, pos0 + t + 1:] = 0  # causal: keys past the query's own have zero probability
    v = rng.integers(-128, 128, (keys, hd))
    got, got_cyc, passes, want_cyc = _run_pv(p, v, pos0, lanes)
    vals = [int(p[t, h] @ v[:, d]) for t in range(nq) for h in range(grp) for d in range(hd)]
    vals += [0] * (passes * lanes - len(vals))
    assert got == [(3 + i, vals[lanes * i:lanes * (i + 1)]) for i in range(passes)]
    assert got_cyc == want_cyc == cyc and any(vals)


def test_pv_pass_across_two_queries_takes_the_later_ones_beats():
    """3 lanes, 4 outputs a query (1 head x 4 dimensions), queries at 1, 2 (2 and 3 keys): pass 0 holds
    outputs 0-2 (query 0: 1 beat), pass 1 outputs 3-5 (queries 0 and 1: query 1's 2 beats), pass 2 outputs
    6, 7 and an empty lane (2 beats): 5 beats + latency clog2(8) + 2 = 10 cycles."""
    test_pv_tile_is_the_exact_dot_of_probabilities_and_v_rows(2, 1, 3, 4, 1, 10, 3)


@pytest.fixture(scope="module", params=[2, 8])
def tiny_plan(request, tmp_path_factory):
    """The loader's data plan of bitnet-tiny on tiny, prefill 2 or 8 + decode 3, LOP on (keeping every key after
    prefill 2, dropping keys after prefill 8)."""
    from lowbit.rtl.chip_golden import data_plan
    from lowbit.rtl.chip_image import build_image
    from lowbit.rtl.chip_model import model_contents
    from lowbit.sim.cli import build_trace
    from lowbit.sim.compile import compile_program
    from lowbit.sim.program_io import ProgramReader

    cfg = load_hw("tiny", [])
    path = tmp_path_factory.mktemp("attn") / "prog.bin"
    compile_program(cfg, build_trace("bitnet-tiny", None, request.param, 3, cfg, None), path)
    img = build_image(path, cfg)
    model, _ = model_contents(img, cfg, ProgramReader(path).header.meta, seed=1)
    plan, why = data_plan(img, cfg, 1, model)
    assert why == ""
    return img, model, plan, request.param


def test_pv_tiles_read_the_golden_probabilities_and_v_rows(tiny_plan):
    """Prefill 2: every P V tile maps (2 layers x 2 KV heads x 4 steps); prefill 8: the prefill's 4 causal
    tiles (8 queries over keys 1 .. 8; the decode steps' LOP drops keys). A tile's psum words are the dot
    products of the golden's INT8 probabilities (softmax.w8) and V rows (kv_append.v8) computed here, in the
    engine's order (query, head, dimension, 2 lanes a pass), its `beats` the sum of its passes' (16 a query,
    ceil(keys / 2) beats each); the softmax words write the probability rows, zero-padded to whole beats,
    into the act buffer's upper half at the tile's a_addr."""
    img, model, plan, prefill = tiny_plan
    assert plan.pv == ((16, 8, 8) if prefill == 2 else (4, 2, 8))
    bq, sq = img.queues.index("booth"), img.queues.index("sfu")
    act: dict[tuple[int, str], dict[int, int]] = {}  # (step, softmax op) -> act words written
    for i, ws in plan.act_writes.items():
        if img.words[sq][i]["op"].endswith("softmax"):
            act.setdefault((img.words[sq][i]["step"], img.words[sq][i]["op"]), {}).update(ws)
    words = iter(plan.expect["booth"])
    n = 0
    for w in img.words[bq]:
        if not w["eng"]:
            continue
        got = [next(words) for _ in range(w["groups"] * w["tokens"])]
        if w["eng"] != 3:
            continue
        st = model.run.steps[w["step"]]
        layer = int(w["op"].split(".")[1])
        v8 = np.concatenate([s.buffers[f"layers.{layer}.attn.kv_append.v8"] for s in model.run.steps[:w["step"] + 1]])
        w8 = st.buffers[f"layers.{layer}.attn.softmax.w8"]
        T = len(st.ids)
        g = (w["a_addr"] - 256 - T * 4 * 4) // (T * 2 * w["a_stride"])  # rows after the queries (4 words a head)
        vals = [int(w8[2 * g + h, t] @ v8[:, g, d]) for t in range(w["nq"]) for h in range(2) for d in range(16)]
        assert got == [((vals[p], vals[p + 1]), 0) for p in range(0, len(vals), 2)] and any(vals)
        for t in range(w["nq"]):
            for h in range(2):
                row = [act[(w["step"], f"layers.{layer}.attn.softmax")][w["a_addr"] + (t * 2 + h) * w["a_stride"] + j] for j in range(w["a_stride"])]
                elems = [((x >> (8 * e)) & 0xFF) for x in row for e in range(4)]
                want = [int(x) & 0xFF for x in w8[2 * g + h, t]]
                assert elems == want + [0] * (len(elems) - len(want))
        assert w["k_stride"] == 8 and w["pos0"] == st.start and w["nq"] == T and w["groups"] == T * 16
        assert w["beats"] == 16 * sum(-(-(st.start + t + 1) // 2) for t in range(T))  # prefill 8: 16 x 20
        n += 1
    assert n == plan.pv[0] and next(words, None) is None
