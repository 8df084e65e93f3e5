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
from tests.rtl.booth_tile import run_booth_tile  # noqa: E402


def _run_pv(p: np.ndarray, v: np.ndarray, pos0: int, lanes: int, *, a_addr: int = 9, k_addr: int = 5,
            p_addr: int = 3):
    """P [nq, grp, keys] (INT8) x V [keys, hd] (INT8) on the engine (tiny's BoothFlex, `lanes` lanes x 2, with a TINT
    core of as many lanes for its ternary layout; 4-element act words, 2-byte kv units), query t at position pos0 + t (its row's keys past pos0 + t are zero); returns
    (psum words in order, cycles start -> done, passes, sim.units.booth cycles of the tile's ragged passes)."""
    import dataclasses

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
    def serve(ctx):
        return ([(dut.a_rdata[i], [int(x) for x in act[ctx.get(dut.a_raddr[i])]]) for i in range(dut.n_act)]
                + [(dut.v_rdata[j], int.from_bytes(units[ctx.get(dut.v_raddr[j])].tobytes(), "little"))
                   for j in range(b.lanes * b.width)])

    got, cyc = run_booth_tile(dut, {"mode": 3, "beats": beats, "groups": passes, "tokens": 1, "nq": nq, "grp": grp,
                                    "pos0": pos0, "k_addr": k_addr, "k_stride": hd // ub, "a_addr": a_addr,
                                    "a_stride": ps, "p_addr": p_addr}, serve)
    return got, cyc, passes, booth_int8_pass_cycles(b, list(runs))


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
    assert got == [(3 + i, vals[lanes * i:lanes * (i + 1)], 0) for i in range(passes)]
    assert got_cyc == want_cyc == cyc and any(vals)


def test_pv_pass_across_two_queries_takes_the_later_ones_beats():
    """3 lanes, 4 outputs a query (1 head x 4 dimensions), queries at 1, 2 (2 and 3 keys): pass 0 holds
    outputs 0-2 (query 0: 1 beat), pass 1 outputs 3-5 (queries 0 and 1: query 1's 2 beats), pass 2 outputs
    6, 7 and an empty lane (2 beats): 5 beats + latency clog2(8) + 2 = 10 cycles."""
    test_pv_tile_is_the_exact_dot_of_probabilities_and_v_rows(2, 1, 3, 4, 1, 10, 3)


def _run_qk(hw: str, q: np.ndarray, k: np.ndarray, pos0: int, *, a_addr: int = 9, k_addr: int = 5, p_addr: int = 3):
    """Q [nq, grp, hd] x K [keys, hd] (INT8) on `hw`'s BoothFlex engine in Q K^T mode (its act words, kv units of
    the chip's data path: tiny 2-byte units, two a lane's beat; vitallm 8-byte units, a lane's 4 elements half
    of one), query t attending to keys 0 .. pos0 + t; returns (psum words, cycles start -> done, passes)."""
    from lowbit.rtl.chip_data import data_dims

    cfg = load_hw(hw, [])
    b, tw, ub = cfg.booth, cfg.tint.tree_width, data_dims(cfg)[0].unit_bytes
    nq, grp, hd = q.shape
    qs = hd // tw
    act = np.zeros((64, tw), np.int64)
    for t in range(nq):
        for h in range(grp):
            act[a_addr + (t * grp + h) * qs:a_addr + (t * grp + h + 1) * qs] = q[t, h].reshape(qs, tw)
    kv = np.full(128 * ub, 0x55, np.uint8)
    kv[k_addr * ub:k_addr * ub + k.size] = k.astype(np.int8).view(np.uint8).reshape(-1)
    units = kv.reshape(-1, ub)
    kstep = max(1, b.width // ub)
    dut = BoothEngine(b, cfg.tint, w_bits=6, a_bits=6, p_bits=7, qk=(7, kstep, 8 * ub))
    outs = sum(grp * (pos0 + t + 1) for t in range(nq))
    passes = -(-outs // b.lanes)

    def serve(ctx):
        return ([(dut.a_rdata[i], [int(x) for x in act[ctx.get(dut.a_raddr[i])]]) for i in range(dut.n_act)]
                + [(dut.k_rdata[lane], int.from_bytes(units[[(ctx.get(dut.k_raddr[lane]) + j) % 128
                                                             for j in range(kstep)]].tobytes(), "little"))
                   for lane in range(b.lanes)])

    got, cyc = run_booth_tile(dut, {"mode": 2, "beats": hd // b.width, "groups": passes, "tokens": 1, "nq": nq,
                                    "grp": grp, "pos0": pos0, "k_addr": k_addr, "k_stride": hd // ub,
                                    "a_addr": a_addr, "a_stride": qs, "p_addr": p_addr}, serve)
    return got, cyc, passes


@pytest.mark.parametrize("hw, nq, grp, keys, pos0", [("tiny", 2, 2, 4, 2), ("tiny", 1, 2, 9, 8),
                                                       ("vitallm", 2, 2, 5, 3), ("vitallm", 1, 2, 6, 5)])
def test_qk_tile_is_the_exact_dot_of_queries_and_key_rows(hw, nq, grp, keys, pos0):
    """Each output (query t, head h, key j <= pos0 + t) is q[t, h] . k[j], exact, `lanes` a pass at p_addr +
    pass, in booth_int8_tile_cycles(hd, passes): on tiny a lane's 2 elements a beat are one 2-byte kv unit, on
    vitallm its 4 elements are half of an 8-byte unit (two beats a unit)."""
    from lowbit.sim.units.booth import booth_int8_tile_cycles

    b = load_hw(hw, []).booth
    rng = np.random.default_rng(keys * 10 + nq)
    q = rng.integers(-127, 128, (nq, grp, 16))
    k = rng.integers(-128, 128, (keys, 16))
    got, cyc, passes = _run_qk(hw, q, k, pos0)
    vals = [int(q[t, h] @ k[j]) for t in range(nq) for h in range(grp) for j in range(pos0 + t + 1)]
    vals += [0] * (passes * b.lanes - len(vals))
    assert got == [(3 + i, vals[b.lanes * i:b.lanes * (i + 1)], 0) for i in range(passes)] and any(vals)
    assert cyc == booth_int8_tile_cycles(b, 16, passes)


def _tiny_plan(tmp, prefill: int, golden: bool):
    """(image, model contents, data plan) of bitnet-tiny on tiny, prefill + decode 3, LOP on, compiled from the
    golden's LOP selections (`golden`, as verify --chip does) or from the trace's fixed-ratio positions."""
    from lowbit.rtl.chip_golden import data_plan
    from lowbit.rtl.chip_image import build_image
    from lowbit.rtl.chip_model import compile_from_golden, model_contents
    from lowbit.sim.cli import build_trace
    from lowbit.sim.compile import compile_program
    from lowbit.sim.program_io import ProgramReader

    cfg = load_hw("tiny", [])
    path = tmp / "prog.bin"
    if golden:
        assert compile_from_golden(cfg, "bitnet-tiny", prefill, 3, path, seed=1)[1] == ""
    else:
        compile_program(cfg, build_trace("bitnet-tiny", None, prefill, 3, cfg, None), path)
    img = build_image(path, cfg)
    model, _ = model_contents(img, cfg, ProgramReader(path).header.meta, seed=1)
    plan, why = data_plan(img, cfg, 1, model)
    assert why == ""
    return img, model, plan


@pytest.fixture(scope="module", params=[2, 8])
def tiny_plan(request, tmp_path_factory):
    """The loader's data plan of bitnet-tiny on tiny, prefill 2 or 8 + decode 3, LOP on (keeping every key after
    prefill 2, selecting 8 of 9 .. 11 keys per KV head after prefill 8), compiled from the golden's selections."""
    return (*_tiny_plan(tmp_path_factory.mktemp("attn"), request.param, True), request.param)


def _chunk_keys(img, model, plan, bq: int, i: int) -> list[int]:
    """The key positions of the K/V chunk BoothFlex word i releases, in chunk order (from its DRAM rows)."""
    from lowbit.sim.isa import KV_BASE

    w, s = img.words[bq][i], model.spec
    return [(a - KV_BASE) // s.head_dim % s.max_positions for a in plan.kv_chunks[(w["free_q"], w["free_i"])][1]]


def _chunk_head(img, model, plan, bq: int, i: int) -> int:
    """The KV head whose rows the chunk BoothFlex word i releases holds (sim.kvcache.kv_addr: planes (layer,
    KV head, K / V) of max_positions rows)."""
    from lowbit.sim.isa import KV_BASE

    w, s = img.words[bq][i], model.spec
    return (plan.kv_chunks[(w["free_q"], w["free_i"])][1][0] - KV_BASE) // s.head_dim // s.max_positions // 2 % s.n_kv_heads


def test_qk_tiles_score_the_golden_queries_against_the_chunks_keys(tiny_plan):
    """Every Q K^T tile maps (4 steps x 2 layers x 2 KV heads), decode steps whose LOP drops keys included: its
    psum words are the dot products of the golden's INT8 queries (qk.q8) and the K rows (kv_append.k8) of its
    chunk's keys, computed here in the engine's order (query, head, chunk row up to pos0 + t, 2 lanes a
    pass); a decode step's chunk holds the golden's lop.sel keys, ascending, and pos0 is their count less
    one; a prefill query attends to keys 0 .. its position."""
    img, model, plan, prefill = tiny_plan
    assert plan.qk == (16, 8, 8)
    bq = img.queues.index("booth")
    words = iter(plan.expect["booth"])
    n, gathered = 0, 0
    for i, w in enumerate(img.words[bq]):
        if not w["eng"]:
            continue
        got = [next(words) for _ in range(w["groups"] * w["tokens"])]
        if w["eng"] != 2:
            continue
        st = model.run.steps[w["step"]]
        layer = int(w["op"].split(".")[1])
        k8 = np.concatenate([s.buffers[f"layers.{layer}.attn.kv_append.k8"] for s in model.run.steps[:w["step"] + 1]])
        q8 = st.buffers[f"layers.{layer}.attn.qk.q8"]
        T = len(st.ids)
        g = (w["a_addr"] - 256) // (T * 2 * 4)  # the group's query rows: 2 heads x 4 words each
        keys = _chunk_keys(img, model, plan, bq, i)
        assert w["nq"] == T  # one tile a KV head and step: its queries from 0
        if st.phase == "decode" and prefill == 8:
            sel = np.flatnonzero(st.buffers[f"layers.{layer}.attn.lop.sel"][g]).tolist()
            assert keys == sel and len(sel) == 8 < st.start + 1 and w["pos0"] == 7
            gathered += 1
        else:
            assert keys == list(range(st.start + T)) and w["pos0"] == st.start
        vals = [int(q8[t, 2 * g + h] @ k8[keys[j], g]) for t in range(w["nq"]) for h in range(2)
                for j in range(w["pos0"] + t + 1)]
        vals += [0] * (len(vals) % 2)
        assert got == [((vals[p], vals[p + 1]), 0) for p in range(0, len(vals), 2)] and any(vals)
        assert w["k_addr"] == plan.kv_checks[(bq, i)][0] and w["k_stride"] == 8
        n += 1
    assert n == 16 and next(words, None) is None and gathered == (12 if prefill == 8 else 0)
    sq = img.queues.index("sfu")  # the RoPE engine writes the queries' act words, in the upper half (chip_rope)
    rope = [i for i, w in enumerate(img.words[sq]) if w["op"].endswith("attn.rope")]
    assert len(rope) == 16 and not any(i in plan.act_writes for i in rope)
    assert all(plan.rope.fields[i]["eng"] == 6 and plan.rope.fields[i]["o_addr"] >= 256 for i in rope)


def test_decode_tiles_over_other_keys_than_the_goldens_stay_timers(tmp_path):
    """Compiled from the trace's fixed-ratio positions (not the golden's selection), prefill 8's decode K/V
    chunks mostly hold other keys than the golden's LOP attends to: a decode tile maps exactly where its
    chunk's keys are its KV head's lop.sel (here one group: step 2, layer 1, KV head 0, Q K^T and P V),
    beside the prefill's 4 Q K^T and 4 P V tiles."""
    img, model, plan = _tiny_plan(tmp_path, 8, False)
    bq = img.queues.index("booth")
    same, mapped = set(), set()
    for i, w in enumerate(img.words[bq]):
        if not w["op"].endswith(("attn.qk", "attn.av")) or w["step"] == 0:
            continue
        layer = int(w["op"].split(".")[1])
        sel = model.run.steps[w["step"]].buffers[f"layers.{layer}.attn.lop.sel"]
        keys, g = _chunk_keys(img, model, plan, bq, i), _chunk_head(img, model, plan, bq, i)
        if np.flatnonzero(sel[g]).tolist() == keys:
            same.add(i)
        if w["eng"]:
            mapped.add(i)
    assert mapped == same and len(same) == 2
    assert plan.qk == (5, 2, 8) and plan.pv == (5, 2, 8)


def test_pv_tiles_read_the_golden_probabilities_and_v_rows(tiny_plan):
    """Every P V tile maps (2 layers x 2 KV heads x 4 steps), decode steps whose LOP drops keys included. A
    tile's psum words are the dot products of the golden's INT8 probabilities (softmax.w8) and V rows
    (kv_append.v8) computed here, in the engine's order (query, head, dimension, 2 lanes a pass), its `beats`
    the sum of its passes' (16 a query, ceil(keys / 2) beats each: 4 over 8 gathered keys); the softmax
    words write the probability rows over the chunk's keys (element r: chunk row r's key), zero-padded to
    whole beats, into the act buffer's upper half at the tile's a_addr (the softmax engine's words, or the
    bench's where a word is not on it)."""
    img, model, plan, prefill = tiny_plan
    assert plan.pv == (16, 8, 8)
    bq, sq = img.queues.index("booth"), img.queues.index("sfu")
    act: dict[tuple[int, str], dict[int, int]] = {}  # (step, softmax op) -> act words written
    for i, ws in {**plan.act_writes, **plan.sm.probs}.items():
        if img.words[sq][i]["op"].endswith("softmax"):
            act.setdefault((img.words[sq][i]["step"], img.words[sq][i]["op"]), {}).update(ws)
    words = iter(plan.expect["booth"])
    n = 0
    for i, w in enumerate(img.words[bq]):
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
        keys = _chunk_keys(img, model, plan, bq, i)
        for t in range(w["nq"]):
            for h in range(2):
                row = [act[(w["step"], f"layers.{layer}.attn.softmax")][w["a_addr"] + (t * 2 + h) * w["a_stride"] + j] for j in range(w["a_stride"])]
                elems = [((x >> (8 * e)) & 0xFF) for x in row for e in range(4)]
                want = [int(w8[2 * g + h, t, k]) & 0xFF for k in keys]
                assert elems == want + [0] * (len(elems) - len(want))
        gathered = st.phase == "decode" and prefill == 8
        assert w["pos0"] == (7 if gathered else st.start) and w["nq"] == T and w["groups"] == T * 16
        assert w["k_stride"] == 8 and (len(keys) == 8 if gathered else keys == list(range(st.start + T)))
        # prefill 8: 16 x 20 beats; a decode step over 8 gathered keys 16 x 4
        assert w["beats"] == 16 * sum(-(-(w["pos0"] + t + 1) // 2) for t in range(T))
        n += 1
    assert n == plan.pv[0] and next(words, None) is None
