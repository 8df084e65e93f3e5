"""LOP scoring and selection of a KV group from the cache's LO codes and the group's INT8 queries
(lowbit.rtl.chip_lop) on the Amaranth simulator, against the whole-model golden's `layers.L.attn.lop.scores`
and `lop.sel` of bitnet-tiny's decode steps on the tiny preset (prefill 8 + decode 3, LOP on: the steps where
LOP drops keys)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("amaranth")

from lowbit.rtl.chip_lop import LopGroupScore  # noqa: E402
from lowbit.sim.config import load_hw  # noqa: E402
from lowbit.sim.units.lop import lop_score_cycles  # noqa: E402


async def _load(ctx, dut, codes: np.ndarray, q: np.ndarray, hd: int, width: int) -> None:
    """Write the keys' LO codes and the group's query rows into the component's memories, each row zero-padded
    to whole beats of `width` elements, one word a cycle."""
    beats = -(-hd // width)
    for mem, rows in (("c", codes), ("q", q)):
        if not len(rows):
            continue
        padded = np.zeros((len(rows), beats * width), np.int64)
        padded[:, :hd] = rows
        wen, addr, data = (getattr(dut, f"{mem}_{f}") for f in ("wen", "addr", "data"))
        for r in range(len(rows)):
            for b in range(beats):
                ctx.set(wen, 1)
                ctx.set(addr, r * beats + b)
                ctx.set(data, [int(x) for x in padded[r, b * width:(b + 1) * width]])
                await ctx.tick()
        ctx.set(wen, 0)


async def _fill(ctx, dut, codes: np.ndarray, beat_bytes: int) -> None:
    """Write the keys' LO codes as the LO-code read's data beats would (chip_lop.lop_read_beats): the keys' DRAM
    bytes (chip_kv.lo_bytes, key after key) `beat_bytes` a beat, beat r on `f_row` r, a cycle with no beat
    between two beats."""
    from lowbit.rtl.chip_kv import lo_bytes

    b = b"".join(lo_bytes(row) for row in codes)
    for r in range(-(-len(b) // beat_bytes)):
        ctx.set(dut.f_wen, 1)
        ctx.set(dut.f_row, r)
        ctx.set(dut.f_data, int.from_bytes(b[r * beat_bytes:(r + 1) * beat_bytes], "little") % (1 << len(dut.f_data)))
        await ctx.tick()
        ctx.set(dut.f_wen, 0)
        await ctx.tick()


def _score(cfg, codes: np.ndarray, q: np.ndarray, fill: int = 0, depth: int = 16) -> tuple[np.ndarray, int]:
    """codes [M, hd] (4-bit LO codes), q [grp, hd] INT8 -> (scores [grp, M] from the engine, cycles start -> done);
    `fill`: the codes come as data beats of `fill` keys (LopGroupScore's fill_keys) instead of code words."""
    from amaranth.sim import Simulator

    lop = cfg.lop
    M, hd = codes.shape
    grp = q.shape[0]
    dut = LopGroupScore(lop, grp=grp, head_dim=hd, depth=depth, fill_keys=fill)
    got = np.full((grp, M), -1 << 40, np.int64)
    res: dict = {}

    async def bench(ctx):
        if fill:
            await _fill(ctx, dut, codes, fill * -(-hd // 2))
        await _load(ctx, dut, codes[:0] if fill else codes, q, hd, lop.width)
        ctx.set(dut.m, M)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cyc = 1
        while True:
            if ctx.get(dut.out_valid):
                h, k0 = ctx.get(dut.out_head), ctx.get(dut.out_key)
                assert not any(ctx.get(dut.out_ovf[lane]) for lane in range(lop.lanes))
                for lane in range(lop.lanes):
                    if k0 + lane < M:
                        got[h, k0 + lane] = ctx.get(dut.out_score[lane])
            if ctx.get(dut.done):
                break
            await ctx.tick()
            cyc += 1
            assert cyc < 10_000
        res["cyc"] = cyc

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got, res["cyc"]


@pytest.fixture(scope="module")
def golden():
    from lowbit.sim.golden import golden_run
    from lowbit.sim.golden_weights import deploy, seeded_weights
    from lowbit.sim.modelspec import get_model

    cfg = load_hw("tiny", [])
    spec = get_model("bitnet-tiny")
    dep = deploy(spec, seeded_weights(spec, 3))
    prompt = np.random.default_rng(3).integers(0, spec.vocab, 8)
    return cfg, spec, golden_run(dep, cfg, prompt, 3)


def test_group_scores_equal_the_golden_lop_scores(golden):
    """Every decode step, layer and KV head: the engine's LO scores of the cache's M keys against each query
    head of the group equal the golden's lop.scores, in grp x lop_score_cycles(M, head_dim) cycles."""
    cfg, spec, run = golden
    grp = spec.n_heads // spec.n_kv_heads
    checked = 0
    for i, st in enumerate(run.steps[1:], 1):
        for layer in range(spec.n_layers):
            lo = np.concatenate([s.buffers[f"layers.{layer}.attn.kv_append.lo"] for s in run.steps[:i + 1]])
            q8 = st.buffers[f"layers.{layer}.attn.qk.q8"][0]  # [H, hd]
            want = st.buffers[f"layers.{layer}.attn.lop.scores"]  # [H, M]
            for g in range(spec.n_kv_heads):
                got, cyc = _score(cfg, lo[:, g], q8[g * grp:(g + 1) * grp])
                assert np.array_equal(got, want[g * grp:(g + 1) * grp]) and want[g * grp:(g + 1) * grp].any()
                assert cyc == grp * lop_score_cycles(cfg.lop, lo.shape[0], spec.head_dim)
                checked += 1
    assert checked == 3 * spec.n_layers * spec.n_kv_heads


def test_group_scores_of_random_codes_and_an_odd_key_count():
    """11 keys (the last pass's second lane past M reads no key) and the scorer's own leading-one detector on
    raw INT8 queries equal sim.numerics' decoded-code dot products; one flipped code bit changes them."""
    from lowbit.sim.numerics.lop import lo_code4, lo_decode4

    cfg = load_hw("tiny", [])
    rng = np.random.default_rng(0)
    k8, q = rng.integers(-127, 128, (11, 16)), rng.integers(-127, 128, (2, 16))
    codes = lo_code4(k8).astype(np.int64)
    want = np.stack([lo_decode4(codes) @ lo_decode4(lo_code4(q[h])) for h in range(2)])
    got, cyc = _score(cfg, codes, q)
    assert np.array_equal(got, want) and cyc == 2 * (6 * 2 + 5)  # 6 passes x 2 beats + the scorer's 5
    codes[3, 2] ^= 1
    assert not np.array_equal(_score(cfg, codes, q)[0], want)


@pytest.mark.parametrize("hw,m,fill,depth", [("tiny", 11, 8, 16), ("vitallm", 6, 16, 8)])
def test_codes_from_the_lo_code_reads_data_beats_score_the_same(hw, m, fill, depth):
    """The code memory written from an LO-code read's data beats (chip_lop.lop_fill: `tiny`'s 64-byte beats of
    8 keys, two scorer words a key; `vitallm`'s 128-byte beats of 16 keys into an 8-key memory, one 25-element
    word a key, elements 16 .. 24 zero) scores exactly as sim.numerics' decoded-code dot products; one flipped
    code bit in the beats changes them."""
    from lowbit.sim.numerics.lop import lo_code4, lo_decode4

    cfg = load_hw(hw, [])
    rng = np.random.default_rng(1)
    k8, q = rng.integers(-127, 128, (m, 16)), rng.integers(-127, 128, (2, 16))
    codes = lo_code4(k8).astype(np.int64)
    want = np.stack([lo_decode4(codes) @ lo_decode4(lo_code4(q[h])) for h in range(2)])
    got, cyc = _score(cfg, codes, q, fill=fill, depth=depth)
    assert np.array_equal(got, want) and want.any()
    assert cyc == 2 * lop_score_cycles(cfg.lop, m, 16)
    codes[m - 1, 15] ^= 1  # the last key's last element: the last beat's last bytes used
    assert not np.array_equal(_score(cfg, codes, q, fill=fill, depth=depth)[0], want)


def test_query_rows_written_in_sfu_words_at_a_row_base_score_the_same():
    """The RoPE engine's path into the query memory (chip_lop.lop_queries): each query row written as 4-element
    SFU words into the element-enabled port at rows 5 and 6 of an 8-row memory, the group's rows from `q_base`
    5, scores exactly as rows 0 and 1 written whole (the random codes and queries above)."""
    from amaranth.sim import Simulator

    from lowbit.sim.numerics.lop import lo_code4, lo_decode4

    lop = load_hw("tiny", []).lop
    rng = np.random.default_rng(0)
    k8, q = rng.integers(-127, 128, (11, 16)), rng.integers(-127, 128, (2, 16))
    codes = lo_code4(k8).astype(np.int64)
    want = np.stack([lo_decode4(codes) @ lo_decode4(lo_code4(q[h])) for h in range(2)])
    dut = LopGroupScore(lop, grp=2, head_dim=16, depth=16, q_rows=8)
    got = np.full((2, 11), -1 << 40, np.int64)

    async def bench(ctx):
        await _load(ctx, dut, codes, np.zeros((0, 16), np.int64), 16, lop.width)
        beats, n = 16 // lop.width, 4
        for h in range(2):
            for j in range(16 // n):
                off = j * n % lop.width
                ctx.set(dut.q_hwen, 1)
                ctx.set(dut.q_haddr, (5 + h) * beats + j * n // lop.width)
                ctx.set(dut.q_hmask, ((1 << n) - 1) << off)
                ctx.set(dut.q_hdata, [int(q[h, j * n + e - off]) if off <= e < off + n else 0
                                      for e in range(lop.width)])
                await ctx.tick()
        ctx.set(dut.q_hwen, 0)
        ctx.set(dut.q_base, 5)
        ctx.set(dut.m, 11)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(200):
            if ctx.get(dut.out_valid):
                h, k0 = ctx.get(dut.out_head), ctx.get(dut.out_key)
                for lane in range(lop.lanes):
                    if k0 + lane < 11:
                        got[h, k0 + lane] = ctx.get(dut.out_score[lane])
            if ctx.get(dut.done):
                break
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert np.array_equal(got, want)


@pytest.mark.parametrize("what", ["score", "select", "index"])
def test_group_score_select_and_index_verilog_lints_clean(tmp_path, what):
    pytest.importorskip("cocotb")
    from lowbit.rtl.chip_dma import LopIndexBuffer
    from lowbit.rtl.chip_lop import LopGroupSelect
    from lowbit.rtl.lint import lint_component

    lop = load_hw("tiny", []).lop
    c = (LopIndexBuffer(lanes=lop.lanes, depth=16, row_bytes=16, addr_bits=48) if what == "index" else
         (LopGroupSelect if what == "select" else LopGroupScore)(lop, grp=2, head_dim=16, depth=16))
    r, _ = lint_component(c, "lop_group", tmp_path)
    assert r.ok, r.errors[:5]


def test_group_select_of_one_key_group_lints_clean(tmp_path):
    """vitallm's LOP (8 lanes) on bitnet-tiny prefill 4 + decode 2 (at most 6 keys): the group scores are one
    word, the memory still 2 words deep (a 1-word memory's address would be 0 bits wide)."""
    pytest.importorskip("cocotb")
    from lowbit.rtl.chip_lop import LopGroupSelect
    from lowbit.rtl.lint import lint_component

    lop = load_hw("vitallm", []).lop
    assert lop.lanes >= 6
    r, _ = lint_component(LopGroupSelect(lop, grp=2, head_dim=16, depth=6), "lop_group1", tmp_path)
    assert r.ok, r.errors[:5]


def _select(cfg, codes: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, list[int], int]:
    """-> (the top-K's selection bits [M], the index FIFO's writes in order, cycles start -> done)."""
    from amaranth.sim import Simulator

    from lowbit.rtl.chip_lop import LopGroupSelect

    lop = cfg.lop
    M, hd = codes.shape
    grp = q.shape[0]
    dut = LopGroupSelect(lop, grp=grp, head_dim=hd, depth=16)
    top = np.zeros(M, bool)
    idx: list[int] = []
    res: dict = {}

    async def bench(ctx):
        await _load(ctx, dut, codes, q, hd, lop.width)
        ctx.set(dut.m, M)
        ctx.set(dut.k, k)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cyc = 1
        while True:
            if ctx.get(dut.t_valid):
                b0, bits = ctx.get(dut.t_base), ctx.get(dut.t_sel)
                for lane in range(lop.lanes):
                    if b0 + lane < M:
                        top[b0 + lane] = bool(bits >> lane & 1)
            if ctx.get(dut.o_valid):
                idx.extend(ctx.get(dut.o_idx[s]) for s in range(ctx.get(dut.o_n)))
            if ctx.get(dut.done):
                break
            await ctx.tick()
            cyc += 1
            assert cyc < 10_000
        res["cyc"] = cyc

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return top, idx, res["cyc"]


def test_group_selection_equals_the_golden_group_top_k(golden):
    """Every decode step, layer and KV head: the selection bits and the index FIFO's writes (ascending, up to
    `lanes` a cycle) are the golden's lop.sel of the KV head, exactly min(K, M) keys, and the group takes the
    program's words: grp x lop_score_cycles(M, hd) + lop_topk_cycles(M) cycles."""
    from lowbit.sim.units.lop import lop_topk_cycles

    cfg, spec, run = golden
    grp = spec.n_heads // spec.n_kv_heads
    n = 0
    for i, st in enumerate(run.steps[1:], 1):
        for layer in range(spec.n_layers):
            lo = np.concatenate([s.buffers[f"layers.{layer}.attn.kv_append.lo"] for s in run.steps[:i + 1]])
            q8 = st.buffers[f"layers.{layer}.attn.qk.q8"][0]
            sel = st.buffers[f"layers.{layer}.attn.lop.sel"]
            M = lo.shape[0]
            for g in range(spec.n_kv_heads):
                top, idx, cyc = _select(cfg, lo[:, g], q8[g * grp:(g + 1) * grp], cfg.lop.k)
                assert np.array_equal(top, sel[g])
                assert idx == np.flatnonzero(sel[g]).tolist() and len(idx) == min(cfg.lop.k, M) < M
                assert cyc == grp * lop_score_cycles(cfg.lop, M, spec.head_dim) + lop_topk_cycles(cfg.lop, M)
                n += 1
    assert n == 3 * spec.n_layers * spec.n_kv_heads


def test_group_selection_sums_the_heads_and_differs_from_a_union():
    """Random codes, 2 query heads: the selection is lop_topk of the summed scores (plain-loop sums of
    sim.numerics' per-head scores), not the union of the heads' own top-K; K >= M keeps every key."""
    from lowbit.sim.numerics.lop import lo_code4, lo_decode4, lop_topk

    cfg = load_hw("tiny", [])
    rng = np.random.default_rng(4)
    found = False
    for _ in range(6):
        k8, q = rng.integers(-127, 128, (11, 16)), rng.integers(-127, 128, (2, 16))
        codes = lo_code4(k8).astype(np.int64)
        per = [lo_decode4(codes) @ lo_decode4(lo_code4(q[h])) for h in range(2)]
        want = lop_topk([int(a) + int(b) for a, b in zip(*per, strict=True)], 4, cfg.lop.buckets).tolist()
        top, idx, _ = _select(cfg, codes, q, 4)
        assert idx == want == np.flatnonzero(top).tolist()
        found |= set(want) != {int(j) for h in range(2) for j in lop_topk(per[h], 4, cfg.lop.buckets)}
    assert found
    assert _select(cfg, codes, q, 16)[1] == list(range(11))


def _index_words(cfg, idx: list[int], words: list[tuple[int, int, int]]) -> list[tuple[int, int, int, int]]:
    """LopIndexBuffer: the selection `idx` written `lanes` a cycle, then indirect words (plane, base, nidx) issued
    in order -> per word (addr, nbytes, avail, run) as presented in its issue cycle."""
    from amaranth.sim import Simulator

    from lowbit.rtl.chip_dma import LopIndexBuffer

    lanes, hd = cfg.lop.lanes, 16
    dut = LopIndexBuffer(lanes=lanes, depth=16, row_bytes=hd, addr_bits=48)
    got: list[tuple[int, int, int, int]] = []

    async def bench(ctx):
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        for i in range(0, len(idx), lanes):
            part = idx[i:i + lanes]
            ctx.set(dut.w_valid, 1)
            ctx.set(dut.w_n, len(part))
            ctx.set(dut.w_idx, part + [0] * (lanes - len(part)))
            await ctx.tick()
        ctx.set(dut.w_valid, 0)
        for plane, base, n in words:
            ctx.set(dut.plane, plane)
            ctx.set(dut.base, base)
            ctx.set(dut.nidx, n)
            got.append((ctx.get(dut.addr), ctx.get(dut.nbytes), ctx.get(dut.avail), ctx.get(dut.run)))
            ctx.set(dut.take, 1)
            await ctx.tick()
            ctx.set(dut.take, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


def test_index_buffer_addresses_are_the_compilers_gathers(golden):
    """Every decode step, layer and KV head: the golden's selection (lop.sel) written into the index FIFO; the
    indirect K words, then the V words, that the compiler cuts from it (sim.kvcache.gather_segments over the KV
    tile's chunks: one word per run of adjacent keys) each present the address and size of its run, from the
    FIFO alone; a word that claims two runs is flagged."""
    from lowbit.sim.kvcache import gather_segments, kv_addr
    from lowbit.sim.sram import Buffers
    from lowbit.sim.tiling import kv_chunk

    cfg, spec, run = golden
    hd = spec.head_dim
    c = kv_chunk(Buffers.from_config(cfg), hd)
    multi = 0
    for st in run.steps[1:]:
        for layer in range(spec.n_layers):
            sel = st.buffers[f"layers.{layer}.attn.lop.sel"]
            for g in range(spec.n_kv_heads):
                pos = np.flatnonzero(sel[g])
                _, first, length = gather_segments(pos, np.append(np.arange(0, len(pos), c), len(pos)))
                words = [(v, kv_addr(spec, layer, g, bool(v), 0), int(n)) for v in (0, 1) for n in length]
                want = [(kv_addr(spec, layer, g, bool(v), int(f)), int(n) * hd, 1, 1)
                        for v in (0, 1) for f, n in zip(first, length, strict=True)]
                assert _index_words(cfg, pos.tolist(), words) == want
                multi += len(length) > 1
    assert multi > 0  # selections of scattered keys: several words per plane
    pos = [0, 1, 2, 5, 6, 9, 10, 11]
    got = _index_words(cfg, pos, [(0, 0, 3), (0, 0, 4), (1, 0, 8), (0, 0, 2)])
    assert [g[3] for g in got] == [1, 0, 0, 0]  # 0..2 a run; 5, 6, 9, 10 two runs; the V plane's 8 keys many
    assert got[1][:2] == (5 * 16, 4 * 16) and got[2][0] == 0 and got[3][2] == 0  # K has 1 of its 8 left, not 2


def test_program_compiled_from_the_golden_fetches_its_selection(tmp_path):
    """`verify --chip` compiles with the golden's LOP selections (chip_model.compile_from_golden): every
    indirect K/V fetch of a decode step whose LOP drops keys reads exactly the golden's `lop.sel` rows of its
    step, layer and KV head (told apart by DRAM address, sim.kvcache.kv_addr), K and V; the trace's
    fixed-ratio positions (the plain compile) read others, which the check counts."""
    from lowbit.rtl.chip_image import build_image
    from lowbit.rtl.chip_model import compile_from_golden, lop_fetch_check, lop_positions, model_contents
    from lowbit.sim.cli import build_trace
    from lowbit.sim.compile import compile_program
    from lowbit.sim.program_io import ProgramReader

    cfg = load_hw("tiny", [])
    gold, plain = tmp_path / "gold.bin", tmp_path / "plain.bin"
    _, why = compile_from_golden(cfg, "bitnet-tiny", 8, 3, gold, seed=0)
    assert why == ""
    compile_program(cfg, build_trace("bitnet-tiny", None, 8, 3, cfg, None), plain)
    img = build_image(gold, cfg)
    mc, note = model_contents(img, cfg, ProgramReader(gold).header.meta, 0)
    assert note == ""
    pos = lop_positions(mc.run, mc.spec)
    assert sorted(pos) == [(layer, s) for layer in range(2) for s in (1, 2, 3)]
    sel = mc.run.steps[1].buffers["layers.0.attn.lop.sel"]  # M = 9 keys, K = 8: one dropped per KV head
    assert [p.tolist() for p in pos[(0, 1)]] == [np.flatnonzero(r).tolist() for r in sel]
    assert all(len(p) == 8 for p in pos[(0, 1)])
    # 3 decode steps x 2 layers x 2 KV heads drop keys; K and V planes read 8 rows each
    assert lop_fetch_check(img, mc)[:3] == (12, 12 * 2 * 8, 0)
    sels, rows, bad, first = lop_fetch_check(build_image(plain, cfg), mc)
    assert (sels, rows) == (12, 192) and bad > 0 and first.startswith("step ")


def test_lop_plan_writes_the_golden_codes_and_queries(tmp_path):
    """The loader's LOP plan (chip_lop.lop_plan) on bitnet-tiny prefill 8 + decode 3: every lop_score word of
    the 3 decode steps x 2 layers x 2 KV heads starts the engine with M = 9, 10, 11 keys and K = 8; its
    load-port writes decode back to the golden's query rows (qk.q8 of the group's heads) and LO codes
    (kv_append.lo of the KV head), the queries after the layer's RoPE word, the codes after the LO-code read
    and, past the first group, the previous group's lop_topk word; its index stream is the golden's lop.sel."""
    from lowbit.rtl.chip_image import build_image
    from lowbit.rtl.chip_lop import lop_plan
    from lowbit.rtl.chip_model import compile_from_golden, model_contents
    from lowbit.sim.program_io import ProgramReader

    cfg = load_hw("tiny", [])
    path = tmp_path / "p.bin"
    compile_from_golden(cfg, "bitnet-tiny", 8, 3, path, seed=0)
    img = build_image(path, cfg)
    mc, _ = model_contents(img, cfg, ProgramReader(path).header.meta, 0)
    plan = lop_plan(img, cfg.lop, mc, 9)
    assert (plan.grp, plan.hd, plan.depth, plan.note) == (2, 16, 16, "")
    assert sorted(f["m"] for f in plan.fields.values()) == [9] * 4 + [10] * 4 + [11] * 4
    assert all(f["k"] == 8 and f["eng"] == 1 for f in plan.fields.values())
    lq, kq, sq = (img.queues.index(n) for n in ("lop", "dma_kv", "sfu"))
    assert len(plan.writes) == 2 * 12
    for n, (i, (t, idx, what)) in enumerate(sorted(plan.expect.items())):
        step, layer, g = (int(what.split()[k]) for k in (1, 3, 6))
        st = mc.run.steps[step].buffers
        assert t == i + 1 and idx == np.flatnonzero(st[f"layers.{layer}.attn.lop.sel"][g]).tolist()
        qw, cw = plan.writes[2 * n], plan.writes[2 * n + 1]
        assert qw["before"] == cw["before"] == i
        assert img.words[sq][qw["after"][0][1]]["op"] == f"layers.{layer}.attn.rope" and qw["after"][0][0] == sq
        assert cw["after"][0][0] == kq and (n == 0) == (len(cw["after"]) == 1)
        q = np.zeros((2, 16), np.int64)
        for sel, a, word in qw["w"]:
            assert sel == 10
            q[a // 2, (a % 2) * 8:(a % 2) * 8 + 8] = [((word >> (8 * e)) & 0xFF) - (((word >> (8 * e)) & 0x80) << 1)
                                                      for e in range(8)]
        assert (q == st[f"layers.{layer}.attn.qk.q8"][0, 2 * g:2 * g + 2]).all()
        m = plan.fields[i]["m"]
        lo = np.zeros((m, 16), np.int64)
        for sel, a, word in cw["w"]:
            assert sel == 9
            lo[a // 2, (a % 2) * 8:(a % 2) * 8 + 8] = [(word >> (4 * e)) & 0xF for e in range(8)]
        want = np.concatenate([mc.run.steps[s].buffers[f"layers.{layer}.attn.kv_append.lo"] for s in range(step + 1)])
        assert (lo == want[:m, g]).all()


def test_lop_plan_with_the_read_beats_writes_no_codes(tmp_path):
    """With the chip routing the LO-code reads' data beats into the code memory (chip_lop.fill_keys: 8 keys a
    64-byte beat on `tiny`), the plan of bitnet-tiny prefill 8 + decode 3 keeps the query writes and none of the
    codes, and pairs the k-th LO-code read (a dma_kv read allocating in the lop ring) with the k-th lop_score
    word and the one before it (whose scorer the read's beats must not overwrite)."""
    from lowbit.rtl.chip_data import data_dims
    from lowbit.rtl.chip_image import build_image
    from lowbit.rtl.chip_lop import fill_keys, lop_plan
    from lowbit.rtl.chip_model import compile_from_golden, model_contents
    from lowbit.sim.isa import B_LOP
    from lowbit.sim.program_io import ProgramReader

    cfg = load_hw("tiny", [])
    assert fill_keys(data_dims(cfg)[0], 16) == 8 and fill_keys(data_dims(load_hw("vitallm", []))[0], 16) == 16
    assert fill_keys(data_dims(cfg)[0], 48) == 0  # 24-byte keys straddle 64-byte beats: the load port's
    path = tmp_path / "p.bin"
    compile_from_golden(cfg, "bitnet-tiny", 8, 3, path, seed=0)
    img = build_image(path, cfg)
    mc, _ = model_contents(img, cfg, ProgramReader(path).header.meta, 0)
    base, plan = lop_plan(img, cfg.lop, mc, 9), lop_plan(img, cfg.lop, mc, 9, fill=True)
    assert plan.fields == base.fields and plan.expect == base.expect
    assert [e["w"] for e in plan.writes] == [e["w"] for e in base.writes if e["w"][0][0] == 10]
    assert all(sel == 10 for e in plan.writes for sel, _, _ in e["w"]) and len(plan.writes) == 12
    kq = img.queues.index("dma_kv")
    reads = [i for i, x in enumerate(img.words[kq]) if x["alloc_en"] and x["buf"] == B_LOP and not x["wr"]]
    scores = sorted(plan.fields)
    assert plan.fills == [(r, i, scores[k - 1] if k else -1) for k, (r, i) in enumerate(zip(reads, scores, strict=True))]
    assert base.fills == [] and len(reads) == 12
