"""The FP4 core on the chip's data path (lowbit.rtl.chip_fp4): the FP4 weight word layout, and Fp4Engine running
FP4 tiles from the weight and act buffers (Amaranth simulator) with every psum word equal to the FP4 golden's
accumulators (bitnet-tiny NVFP4 on vitallm-fp4's core) or to sim.numerics.fp4dot (MXFP4, a block over several
beats), in sim.units' FP4 tile cycles."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("amaranth")

from lowbit.rtl.chip_fp4 import (  # noqa: E402
    Fp4TileDatapath,
    fp4_program_tiles,
    fp4_rows,
    fp4_tile_words,
    fp4_word_bits,
    pack_fp4_tile,
    pack_fp4_words,
)
from lowbit.sim.config import apply_sets, load_config  # noqa: E402
from lowbit.sim.golden import golden_run  # noqa: E402
from lowbit.sim.golden_weights import deploy, seeded_weights  # noqa: E402
from lowbit.sim.modelspec import get_model  # noqa: E402
from lowbit.sim.numerics.fp4dot import fp4_block_dot  # noqa: E402
from lowbit.sim.numerics.mx import mxfp4_quantize, nvfp4_quantize  # noqa: E402
from lowbit.sim.units.fp4 import fp4_tile_cycles  # noqa: E402


def test_fp4_word_layout_is_pass_beat_lane_then_codes_and_scales():
    cfg = apply_sets(load_config("vitallm-fp4"), ["fp4.lanes=2"]).fp4  # NVFP4, 32 elements a beat, 2 scales
    rng = np.random.default_rng(1)
    t = nvfp4_quantize(rng.standard_normal((3, 40)))  # 3 rows, k = 40: 3 blocks (the last padded), 2 beats
    codes, scales = fp4_tile_words(t, cfg)
    assert codes.shape == (4, 64) and scales.shape == (4, 4) and fp4_word_bits(cfg) == 2 * (4 * 32 + 16)
    assert codes[0].tolist() == [*t.codes[0, :32], *t.codes[1, :32]]              # pass 0, beat 0
    assert codes[1].tolist() == [*t.codes[0, 32:40], *[0] * 24, *t.codes[1, 32:40], *[0] * 24]
    assert codes[2].tolist() == [*t.codes[2, :32], *[0] * 32]                      # pass 1: padded row
    assert scales[0].tolist() == [*t.scales[0, :2], *t.scales[1, :2]]
    assert scales[1].tolist() == [t.scales[0, 2], 0, t.scales[1, 2], 0]
    b = pack_fp4_tile(t, cfg)
    assert len(b) == 2 * 36 + 2 * 18 == 3 * 64 * 4.5 / 8  # k padded to whole beats; the last group: its row
    w0 = int.from_bytes(b[:36], "little")
    for lane in range(2):
        v = w0 >> (144 * lane)
        assert [(v >> (4 * i)) & 15 for i in range(32)] == codes[0, 32 * lane:32 * lane + 32].tolist()
        assert [(v >> (128 + 8 * j)) & 255 for j in range(2)] == scales[0, 2 * lane:2 * lane + 2].tolist()
    w2 = int.from_bytes(b[72:90], "little")
    assert [(w2 >> (4 * i)) & 15 for i in range(32)] == codes[2, :32].tolist()
    assert w2 >> 128 == int(scales[2, 0]) | int(scales[2, 1]) << 8
    mx = apply_sets(load_config("vitallm-fp4"), ["fp4.format=mxfp4", "fp4.elems_per_cycle=16", "fp4.lanes=1"]).fp4
    tm = mxfp4_quantize(rng.standard_normal((1, 40)))
    c, s = fp4_tile_words(tm, mx)  # a 32-element block spans two 16-element beats: its scale on both
    assert s[:, 0].tolist() == [tm.scales[0, 0], tm.scales[0, 0], tm.scales[0, 1]]
    assert c[2].tolist() == [*tm.codes[0, 32:40], *[0] * 8]


def _run_tile(cfg, t, a: np.ndarray, *, w_addr: int = 5, a_addr: int = 40, p_addr: int = 17, image: bytes = b"",
              unit_bytes: int | None = None, banks: int = 2, depth: int = 128):
    """Weight bytes -> fill port -> tile -> psum; a: INT8 rows [tokens, k]. Without `image` the tile's words are
    packed whole, the rows past the tensor in the last group holding non-zero codes and scales (the engine's
    tail mask must drop them), a word a unit; with `image` (the program's DRAM bytes: the last group's words
    its rows' lanes only) they land as memory-port beats of `banks` units of `unit_bytes` from unit `w_addr`."""
    from amaranth.sim import Simulator

    lanes, e = cfg.lanes, cfg.elems_per_cycle
    rows, k = t.shape
    tokens = a.shape[0]
    groups, beats = -(-rows // lanes), -(-k // e)
    stride = beats + 1
    tail = rows - (groups - 1) * lanes
    wb = fp4_word_bits(cfg) // 8
    ub = unit_bytes or wb
    if not image:
        codes, scales = fp4_tile_words(t, cfg)
        s = scales.shape[1] // lanes
        for w in range((groups - 1) * beats, groups * beats):
            codes[w, tail * e:] = 7    # +6
            scales[w, tail * s:] = 0x38  # 1.0 (E4M3) / 2^-71 (E8M0)
        image, tail_step = pack_fp4_words(codes, scales, cfg), 1
    elif unit_bytes is None:  # a word a unit: the last group's words padded to whole words
        lb, cut = wb // lanes, (groups - 1) * beats * wb
        image = image[:cut] + b"".join(image[cut + i * tail * lb:cut + (i + 1) * tail * lb] + bytes(wb - tail * lb)
                                       for i in range(beats))
        tail_step = 1
    else:
        tail_step = tail * (wb // lanes) // ub
    units = [int.from_bytes(image[i:i + ub], "little") for i in range(0, len(image), ub)]
    dut = Fp4TileDatapath(cfg, depth=depth, banks=banks, unit_bytes=unit_bytes)
    ap = np.zeros((tokens, beats * e), np.int64)
    ap[:, :k] = a
    out: dict = {}

    async def bench(ctx):
        for i in range(0, len(units), banks):  # memory-port beats in DRAM order, at any unit alignment
            beat = units[i:i + banks]
            ctx.set(dut.fill_valid, 1)
            ctx.set(dut.fill_count, len(beat))
            ctx.set(dut.fill_addr, w_addr + i)
            ctx.set(dut.fill_data, beat + [0] * (banks - len(beat)))
            await ctx.tick()
        ctx.set(dut.fill_valid, 0)
        for tok in range(tokens):
            for b in range(beats):
                ctx.set(dut.act_valid, 1)
                ctx.set(dut.act_addr, a_addr + tok * stride + b)
                ctx.set(dut.act_data, [int(x) for x in ap[tok, b * e:(b + 1) * e]])
                await ctx.tick()
        ctx.set(dut.act_valid, 0)
        assert ctx.get(dut.ready)
        ctx.set(dut.start, 1)
        for name, v in (("beats", beats), ("passes", groups), ("tokens", tokens), ("a_stride", stride),
                        ("tail_step", tail_step), ("tail_lanes", tail), ("w_addr", w_addr), ("a_addr", a_addr),
                        ("p_addr", p_addr)):
            ctx.set(getattr(dut, name), v)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cyc, nxt = 1, []
        while not ctx.get(dut.done):
            nxt.append(ctx.get(dut.done_next))
            await ctx.tick()
            cyc += 1
        assert nxt == [0] * (cyc - 2) + [1]
        out["cycles"] = cyc
        await ctx.tick()
        acc, ovf = [], []
        for p in range(groups * tokens):
            ctx.set(dut.psum_addr, p_addr + p)
            await ctx.tick()
            acc += list(ctx.get(dut.psum_data))
            ovf += [(ctx.get(dut.psum_ovf) >> lane) & 1 for lane in range(lanes)]
        out["acc"] = np.array(acc).reshape(tokens, groups * lanes)[:, :rows]
        out["ovf"] = np.array(ovf).reshape(tokens, groups * lanes)[:, :rows]

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out["acc"], out["ovf"], out["cycles"], groups * tokens


def test_fp4_tile_on_the_chip_weight_buffer_geometry(fp4_program):
    """vitallm-fp4's weight buffer geometry (lowbit.rtl.chip_data.data_dims' rule: 4-byte units, gcd of the
    108-byte word and the 32 KiB ring; 32 banks for the DRAM's 68.3 B a cycle): the program's first tile
    (layers.0.attn.q, 2,304 bytes) lands as 32-unit beats at an unaligned unit address, words of 27 units and
    the last row group's of 18, and its psum words equal the golden's accumulators."""
    from lowbit.rtl.chip_model import input_of

    cfg, img, tiles, _, dep, run = fp4_program
    t = tiles[0]
    sub = fp4_rows(dep.linears[t.op].fp4, t.row0, t.rows)
    b = run.steps[t.step].buffers
    acc, ovf, cycles, _ = _run_tile(cfg.fp4, sub, b[f"{input_of(t.op)}.q"], image=pack_fp4_tile(sub, cfg.fp4),
                                    unit_bytes=4, banks=32, depth=1024, w_addr=37)
    assert (t.op, t.nbytes, t.tail_lanes) == ("layers.0.attn.q", 2304, 4)
    assert np.array_equal(acc, b[f"{t.op}.acc"]) and not ovf.any()
    assert cycles == img.words[img.queues.index("fp4")][t.word]["cyc"]


def test_fp4_engine_psum_equals_the_fp4_golden_accumulators():
    """bitnet-tiny with NVFP4 projections on vitallm-fp4 (6 lanes x 32 elements, two E4M3 blocks a beat): the
    prefill's 4 tokens through layers.0.attn.k (32 rows: 6 row groups, the last with 2 lanes), every psum word
    equal to the golden's layers.0.attn.k.acc, in fp4_tile_cycles(k, tokens * groups)."""
    cfg = load_config("vitallm-fp4")
    spec = get_model("bitnet-tiny")
    dep = deploy(spec, seeded_weights(spec, 0), proj="nvfp4")
    run = golden_run(dep, cfg, [3, 141, 59, 26], 0)
    b = run.steps[0].buffers
    acc, ovf, cycles, passes = _run_tile(cfg.fp4, dep.linears["layers.0.attn.k"].fp4, b["layers.0.attn_quant.q"])
    assert np.array_equal(acc, b["layers.0.attn.k.acc"]) and not ovf.any()
    assert passes == 4 * 6 and cycles == fp4_tile_cycles(cfg.fp4, 64, passes) == 24 * 2 + 8
    assert np.abs(acc).max() > 1 << 20


def test_fp4_engine_mxfp4_block_over_beats_and_saturation_match_fp4dot():
    """MXFP4 on 16-element beats (a 32-element block spans two; k = 40 ends a block early), 2 tokens; then a
    16-bit accumulator that saturates: psum words and sticky overflow flags equal fp4_block_dot's."""
    cfg = apply_sets(load_config("vitallm-fp4"), ["fp4.format=mxfp4", "fp4.elems_per_cycle=16",
                                                  "fp4.lanes=4"]).fp4
    rng = np.random.default_rng(5)
    t = mxfp4_quantize(rng.standard_normal((7, 40)) * 4.0)
    a = rng.integers(-128, 128, (2, 40))
    a[0, :5] = -128
    acc, ovf, cycles, passes = _run_tile(cfg, t, a)
    ref = fp4_block_dot(t, a, block_sum_bits=cfg.block_sum_bits, acc_bits=cfg.acc_bits, frac_bits=cfg.frac_bits)
    assert np.array_equal(acc, ref.acc) and np.array_equal(ovf, ref.overflow) and not ovf.any()
    assert cycles == fp4_tile_cycles(cfg, 40, passes) and passes == 2 * 2
    small = apply_sets(load_config("vitallm-fp4"), ["fp4.format=mxfp4", "fp4.elems_per_cycle=16", "fp4.lanes=4",
                                                    "fp4.acc_bits=16", "fp4.frac_bits=4"]).fp4
    acc, ovf, _, _ = _run_tile(small, t, a)
    ref = fp4_block_dot(t, a, block_sum_bits=small.block_sum_bits, acc_bits=16, frac_bits=4)
    assert np.array_equal(acc, ref.acc) and np.array_equal(ovf, ref.overflow) and ovf.any() and not ovf.all()


def test_fp4_datapath_verilog_lints_clean(tmp_path):
    from amaranth.back import verilog

    from lowbit.rtl.lint import lint

    cfg = apply_sets(load_config("vitallm-fp4"), ["fp4.lanes=2"]).fp4
    v = tmp_path / "lowbit_chip_fp4_data.v"
    v.write_text(verilog.convert(Fp4TileDatapath(cfg, depth=64), name="lowbit_chip_fp4_data", emit_src=False))
    r = lint(v, "lowbit_chip_fp4_data")
    assert r.ok, r.errors[:5]


@pytest.fixture(scope="module")
def fp4_program(tmp_path_factory):
    """bitnet-tiny prefill 4 + decode 2 compiled for vitallm-fp4 (the chip report's program), its FP4 tiles and
    the NVFP4 golden run of the same seeded weights and prompt."""
    from lowbit.rtl.chip_image import build_image
    from lowbit.rtl.chip_model import prompt_ids
    from lowbit.sim.cli import build_trace
    from lowbit.sim.compile import compile_program
    from lowbit.sim.config import load_hw

    cfg = load_hw("vitallm-fp4", [])
    path = tmp_path_factory.mktemp("fp4") / "prog.bin"
    compile_program(cfg, build_trace("bitnet-tiny", None, 4, 2, cfg, None), path)
    img = build_image(path, cfg)
    tiles, why = fp4_program_tiles(img, cfg)
    spec = get_model("bitnet-tiny")
    dep = deploy(spec, seeded_weights(spec, 0), proj="nvfp4")
    run = golden_run(dep, cfg, prompt_ids(spec, 4, 0), 2)
    return cfg, img, tiles, why, dep, run


def test_program_fp4_tiles_map_onto_the_golden_projections(fp4_program):
    """Every FP4 word of the program is a projection tile whose cycles are fp4_tile_cycles of its shape and whose
    weight DMA carries exactly its packed FP4 rows; together they cover every projection accumulator of the
    golden run (the lm_head is on the host) once."""
    cfg, img, tiles, why, dep, run = fp4_program
    assert why == "" and len(tiles) == 42
    cover = {}
    for t in tiles:
        lin = dep.linears[t.op].fp4
        assert len(pack_fp4_tile(fp4_rows(lin, t.row0, t.rows), cfg.fp4)) == t.nbytes
        acc = run.steps[t.step].buffers[f"{t.op}.acc"]
        assert acc.shape[0] == t.tokens and t.k == lin.shape[1]
        c = cover.setdefault((t.step, t.op), np.zeros(acc.shape[1], int))
        c[t.row0:t.row0 + t.rows] += 1
    want = {(i, k[:-4]) for i, st in enumerate(run.steps) for k in st.buffers
            if k.endswith(".acc") and k[:-4] in dep.linears and k[:-4] != "lm_head"}
    assert set(cover) == want and all((c == 1).all() for c in cover.values())


@pytest.mark.parametrize("which", [0, 6, 41])  # prefill attn.q, prefill ffn.down (k 128), the last decode tile
def test_program_fp4_tile_from_its_dma_bytes_equals_the_golden(fp4_program, which):
    """A program tile's weight DMA bytes (the loader's DRAM image) through the engine: psum = the golden's
    accumulators of its op and step, in the word's own cycle count."""
    cfg, img, tiles, _, dep, run = fp4_program
    t = tiles[which]
    sub = fp4_rows(dep.linears[t.op].fp4, t.row0, t.rows)
    b = run.steps[t.step].buffers
    from lowbit.rtl.chip_model import input_of

    acc, ovf, cycles, passes = _run_tile(cfg.fp4, sub, b[f"{input_of(t.op)}.q"], image=pack_fp4_tile(sub, cfg.fp4))
    assert np.array_equal(acc, b[f"{t.op}.acc"][:, t.row0:t.row0 + t.rows]) and not ovf.any()
    assert cycles == img.words[img.queues.index("fp4")][t.word]["cyc"] and passes == t.tokens * t.groups


@pytest.mark.slow
def test_every_program_fp4_tile_equals_the_golden(fp4_program):
    """All 42 FP4 tiles of the program (prefill 4 + decode 2: 14 + 2 x 14 tiles), each from its DMA bytes through
    the engine: every psum word equals the golden's accumulator, every tile in its word's cycles."""
    from lowbit.rtl.chip_model import input_of

    cfg, img, tiles, _, dep, run = fp4_program
    words = 0
    for t in tiles:
        sub = fp4_rows(dep.linears[t.op].fp4, t.row0, t.rows)
        b = run.steps[t.step].buffers
        acc, ovf, cycles, passes = _run_tile(cfg.fp4, sub, b[f"{input_of(t.op)}.q"],
                                             image=pack_fp4_tile(sub, cfg.fp4))
        assert np.array_equal(acc, b[f"{t.op}.acc"][:, t.row0:t.row0 + t.rows]) and not ovf.any(), (t.step, t.op)
        assert cycles == img.words[img.queues.index("fp4")][t.word]["cyc"]
        words += passes
    assert words == sum(t.tokens * t.groups for t in tiles) > 0
    print(f"{len(tiles)} tiles, {words} psum words")


@pytest.mark.slow
def test_chip_fp4_data_check_can_fail(tmp_path, monkeypatch):
    """The chip bench's FP4 comparison can fail (tiny with the FP4 core, prefill 2 + decode 3): one byte of the
    first FP4 tile's weights changed in the DRAM image after the golden was computed makes its psum words differ,
    timing still exact."""
    pytest.importorskip("cocotb")
    import lowbit.rtl.chip_run as cr
    from lowbit.sim.cli import build_trace
    from lowbit.sim.compile import compile_program
    from lowbit.sim.config import load_hw

    real = cr.data_plan

    def corrupt(img, cfg, seed=0, model=None):
        plan, why = real(img, cfg, seed, model)
        a = min(plan.dram)  # the first weight tile: its first lane's first two E2M1 codes
        plan.dram[a] = bytes([plan.dram[a][0] ^ 0x11]) + plan.dram[a][1:]
        return plan, why

    monkeypatch.setattr(cr, "data_plan", corrupt)
    sets = ["units=fp4,booth,lop,sfu", "fp4.enabled=true"]
    cfg = load_hw("tiny", sets)
    path = tmp_path / "prog.bin"
    compile_program(cfg, build_trace("bitnet-tiny", None, 2, 3, cfg, None), path)
    r = cr.verify_chip(cfg, path, "tiny", sets)
    fp4 = next(q for q in r.queues if q.name == "fp4")
    assert r.mismatches == 0 and fp4.data_words == 640 and 0 < fp4.data_mismatches < 640 and not r.ok


@pytest.fixture(scope="module")
def fp4_plan(tmp_path_factory):
    """bitnet-tiny prefill 4 + decode 2 compiled from the NVFP4 golden for vitallm-fp4, with the loader's data
    plan over its whole-model contents."""
    from lowbit.rtl.chip_golden import data_plan
    from lowbit.rtl.chip_image import build_image
    from lowbit.rtl.chip_model import compile_from_golden, model_contents
    from lowbit.sim.program_io import ProgramReader

    cfg = load_config("vitallm-fp4")
    path = tmp_path_factory.mktemp("fp4plan") / "prog.bin"
    compile_from_golden(cfg, "bitnet-tiny", 4, 2, path, 0)
    img = build_image(path, cfg)
    mc, note = model_contents(img, cfg, ProgramReader(path).header.meta, 0)
    assert mc is not None, note
    plan, why = data_plan(img, cfg, 0, mc)
    assert why == ""
    return cfg, img, mc, plan


def test_fp4_design_puts_its_sfu_words_on_the_engines(fp4_plan):
    """vitallm-fp4 (no TINT core): the SFU's quantize engine writes half an FP4 act word (32 INT8) per word of
    sfu.lanes 16 (chip_sfu.act_ratio 2), so the loader puts bitnet-tiny prefill 4 + decode 2's quantize,
    residual and RMSNorm words on the engines (24, 12 and 26: all but the prefill's final norm), each step's
    embedding read on the embedding writer, and, gate and up coming from the FP4 core's requantizer, the 6
    gating words (2 layers x 3 steps); the kv buffer holds data (4,096 four-byte units), so the 24 K/V chunk
    reads land there and the 36 KV writes (2 layers x 2 KV heads x K, V, LO codes x 3 steps) carry the chip's
    rows, V from the V quantizer; the softmax words run on the softmax engine with the score stage
    (lowbit.rtl.chip_softmax.sm_ok, lowbit.rtl.chip_scores.scores_on_chip)."""
    from lowbit.rtl.chip_sfu import act_ratio, sfu_data_ok

    cfg, img, _, plan = fp4_plan
    assert sfu_data_ok(cfg) == "" and act_ratio(cfg) == 2
    assert "does not divide" in sfu_data_ok(apply_sets(cfg, ["sfu.lanes=24"]))
    assert (len(plan.sfu_ops), len(plan.res_ops), len(plan.norm_ops), len(plan.act_ops)) == (24, 12, 26, 6)
    assert plan.emb_ops == [f"step {s}" for s in range(3)] and plan.emb_beats == 1  # 128-byte rows and beats
    assert plan.dims.k_depth == 4096 and len(plan.kv_checks) == 24
    assert len(plan.kvw.fields) == 36 and plan.kvw.vquant[0] > 0
    sq = img.queues.index("sfu")
    # 5: the softmax words (chip_softmax), 6: the RoPE words (chip_rope)
    assert sorted({w["eng"] for w in img.words[sq]}) == [0, 1, 2, 3, 4, 5, 6]
    # the softmax words (2 layers x 3 steps x 2 KV groups) on the engine, the score stage feeding them
    assert len(plan.sm.fields) == 12 and plan.sc is not None and plan.sc.tiles == 12 and plan.av_norm
    # the quantize words write 4 SFU words a 64-element row: 2 act words of 32 a token, what the FP4 tiles read
    q = [w for w in img.words[sq] if w["eng"] == 1 and w["op"].endswith(("attn_quant", "ffn_quant", "o_quant"))]
    assert q and all(w["beats"] == 4 for w in q)


def test_fp4_requantizer_plan_covers_every_projection_with_fp4_multipliers(fp4_plan):
    """The FP4 core's requantizer (lowbit.rtl.chip_requant behind lowbit.rtl.chip_fp4.Fp4Engine): every one of the
    42 FP4 tiles is requantized, each projection's expected Q7.8 outputs are the golden's `<op>.out` (T x out
    elements: 2 layers x (4 + 1 + 1) tokens of q 64, k 32, v 32, o 64, gate 128, up 128, down 64), and each
    multiplier word the loader preloads holds, in every lane, the golden's FP4 multiplier of its projection
    (sim.golden_fp4.fp4_multiplier: the NVFP4 tensor scale x 2^-frac_bits / 127), not the ternary rule's."""
    from lowbit.rtl.chip_requant import RQ_LOAD, pack_mult
    from lowbit.sim.golden import linear_multipliers
    from lowbit.sim.golden_fp4 import fp4_multiplier

    cfg, img, mc, plan = fp4_plan
    fq = img.queues.index("fp4")
    assert len(plan.rq_cover) == 42 and plan.rq_drain == [] and plan.rq_refused == []
    per: dict[str, int] = {}
    for name, _dst, out, *_ in plan.rq_expect:
        step, op = int(name.split()[1]), name.split()[2]
        assert np.array_equal(out, mc.run.steps[step].buffers[f"{op}.out"])
        per[op.split(".", 2)[-1]] = per.get(op.split(".", 2)[-1], 0) + out.size
    T = 4 + 1 + 1
    assert per == {"attn.q": 2 * T * 64, "attn.k": 2 * T * 32, "attn.v": 2 * T * 32, "attn.o": 2 * T * 64,
                   "ffn.gate": 2 * T * 128, "ffn.up": 2 * T * 128, "ffn.down": 2 * T * 64}
    words = {a: v for a, v, q in plan.sfu_preload if q == RQ_LOAD}  # the FP4 core's multiplier memory
    lanes = cfg.fp4.lanes
    seen = 0
    for (_step, op), ws in plan.rq_cover.items():
        lin = mc.dep.linears[op]
        m, sh = fp4_multiplier(lin.fp4, cfg.fp4.frac_bits)
        assert (m, sh) != (int(linear_multipliers(lin)[0][0]), int(linear_multipliers(lin)[1][0]))
        for q, i in ws:
            w = img.words[q][i]
            assert q == fq and w["rq_m"] in words
            for g in range(w["groups"]):
                assert words[w["rq_m"] + g] == pack_mult([m] * lanes, [sh] * lanes)
                seen += 1
    assert seen == sum(img.words[fq][i]["groups"] for ws in plan.rq_cover.values() for _, i in ws)
    assert plan.mult_depth == 256 and len(words) == 2 * (11 + 6 + 6 + 11 + 22 + 22 + 11)


def test_fp4_requantizer_refuses_a_psum_word_wider_than_the_sfu(tmp_path):
    """tiny with the FP4 core (8 lanes) and its 4-lane SFU: a row group would span three Q7.8 words, so the loader
    gives the FP4 core no requantizer and says why (lowbit.rtl.chip_requant.rq_queues_of); the SFU's engines still
    run, the projections' outputs stay the bench's."""
    from lowbit.rtl.chip_golden import data_plan
    from lowbit.rtl.chip_image import build_image
    from lowbit.rtl.chip_model import compile_from_golden, model_contents
    from lowbit.sim.config import load_hw
    from lowbit.sim.program_io import ProgramReader

    cfg = load_hw("tiny", ["units=fp4,booth,lop,sfu", "fp4.enabled=true"])
    path = tmp_path / "prog.bin"
    compile_from_golden(cfg, "bitnet-tiny", 2, 1, path, 0)
    img = build_image(path, cfg)
    mc, note = model_contents(img, cfg, ProgramReader(path).header.meta, 0)
    plan, why = data_plan(img, cfg, 0, mc)
    assert why == "" and mc is not None, note
    assert plan.rq_refused == ["fp4: its 8-lane psum word is wider than the SFU's 4-lane Q7.8 word (a row group "
                               "would span three words)"]
    assert plan.rq_cover == {} and plan.mult_depth == 0 and plan.sfu_ops


def test_half_word_reads_deliver_booth_words_in_the_cycle_a_booth_word_buffer_would():
    """BoothFlex's act words on an FP4 act buffer (lowbit.rtl.chip_booth.half_word_reads): a memory of 32-element
    words read at BoothFlex word address a (act word a div 2, half a mod 2) gives, every cycle, the same data as
    a memory holding the same bytes as 16-element words read at a, both one cycle after the address (addresses
    changing every cycle, so a half chosen from the current address instead of the registered one differs)."""
    from amaranth.hdl import Module, Signal, signed
    from amaranth.lib import data
    from amaranth.lib.memory import Memory
    from amaranth.sim import Simulator

    from lowbit.rtl.chip_booth import half_word_reads

    rng = np.random.default_rng(3)
    words = rng.integers(-128, 128, (64, 32))
    m = Module()
    wide = Memory(shape=data.ArrayLayout(signed(8), 32), depth=64, init=[list(map(int, w)) for w in words])
    narrow = Memory(shape=data.ArrayLayout(signed(8), 16), depth=128,
                    init=[list(map(int, w)) for w in words.reshape(128, 16)])
    m.submodules.wide, m.submodules.narrow = wide, narrow
    addr = Signal(7)
    got = Signal(data.ArrayLayout(signed(8), 16))
    rw, rn = wide.read_port(), narrow.read_port()
    m.d.comb += [*half_word_reads(m, rw, addr, got, 16, 2), rn.addr.eq(addr)]
    seq = [int(x) for x in rng.integers(0, 128, 200)]
    pairs = []

    async def bench(ctx):
        for a in seq:
            ctx.set(addr, a)
            await ctx.tick()
            pairs.append((a, [ctx.get(got[e]) for e in range(16)], [ctx.get(rn.data[e]) for e in range(16)]))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert all(g == n == list(map(int, words.reshape(128, 16)[a])) for a, g, n in pairs)
    assert len({a % 2 for a in seq}) == 2


def test_fp4_design_maps_every_booth_attention_tile_onto_the_golden(fp4_plan):
    """vitallm-fp4: BoothFlex has a data path without a TINT core (attention tiles only: lowbit.rtl.chip_booth
    .booth_data), reading the FP4 act buffer's 32-element words as two 16-element BoothFlex words (booth_act).
    All 24 BoothFlex words (2 layers x 2 KV heads x Q K^T and P V x 3 steps) run on data: 12 Q K^T tiles covering
    the 6 qk.acc buffers (steps x layers), 12 P V tiles the 6 av.acc buffers. Each Q K^T tile's queries are the
    ones the RoPE engine writes (its expected q8 word at the tile's a_addr is qk.q8 of the tile's first query and
    head), and its psum words equal the golden's q8 . k8 products recomputed here from the INT8 operands (the keys
    at their positions, k8 of the step that appended each); the score stage, softmax words and attention
    output run on data too (the softmax engine and the attention-output writer: chip_softmax.sm_ok,
    chip_av.av_ok, their plans made from the FP4 loader, lowbit.rtl.chip_fp4.fp4_data_plan)."""
    from lowbit.rtl.chip_av import av_ok
    from lowbit.rtl.chip_booth import booth_act, booth_data, booth_ternary
    from lowbit.rtl.chip_softmax import sm_ok

    cfg, img, mc, plan = fp4_plan
    assert booth_data(cfg) and not booth_ternary(cfg) and booth_act(cfg) == (16, 2)
    assert plan.qk == (12, 6, 6) and plan.pv == (12, 6, 6) and plan.tiles["booth"] == 24
    assert sm_ok(cfg, plan.dims) and av_ok(cfg, plan.dims) and plan.sm is not None and plan.sc is not None
    bq = img.queues.index("booth")
    ws = img.words[bq]
    assert [w["eng"] for w in ws] == [2, 3] * 12
    s = mc.spec
    grp = s.n_heads // s.n_kv_heads
    q8_at, it = {}, iter(plan.rope.q8)  # the RoPE engine's query words by step, layer and SFU (= BoothFlex) address
    for step, layer in sorted(plan.rope.blocks):
        n = len(mc.run.steps[step].ids) * s.n_heads * plan.rope.beats
        q8_at[(step, layer)] = dict(next(it) for _ in range(n))
    k8 = {}  # (layer, kv head, position) -> the INT8 key the step that appended it wrote
    for st in mc.run.steps:
        for layer in range(s.n_layers):
            kk = st.buffers[f"layers.{layer}.attn.kv_append.k8"]
            for t in range(kk.shape[0]):
                for g in range(s.n_kv_heads):
                    k8[(layer, g, st.start + t)] = kk[t, g].astype(np.int64)
    words = iter(plan.expect["booth"])
    checked = 0
    for w in ws:
        passes = [next(words)[0] for _ in range(w["groups"])]
        if w["eng"] != 2:
            continue
        step, layer = w["step"], int(w["op"].split(".")[1])
        st = mc.run.steps[step]
        q8 = st.buffers[f"layers.{layer}.attn.qk.q8"]
        g = (w["a_addr"] - plan.dims.a_depth // 2) // (len(st.ids) * grp)
        q0 = (w["a_addr"] - plan.dims.a_depth // 2) % (len(st.ids) * grp) // grp
        assert q8_at[(step, layer)][w["a_addr"]] == sum((int(v) & 0xFF) << 8 * e for e, v in enumerate(q8[q0, g * grp]))
        want = [int(q8[q0 + t, g * grp + h].astype(np.int64) @ k8[(layer, g, j)])
                for t in range(w["nq"]) for h in range(grp) for j in range(w["pos0"] + t + 1)]
        got = [x for p in passes for x in p][:len(want)]
        assert got == want
        checked += len(want)
    assert checked == s.n_layers * s.n_heads * sum(range(1, 4 + 1 + 1 + 1))  # a query's keys: its position + 1


@pytest.mark.slow
def test_chip_fp4_v_requantizer_and_booth_pv_checks_can_fail(tmp_path, monkeypatch):
    """The FP4 requantizer's multiplier memory and BoothFlex's P V tiles (which read the probabilities as half
    words of the FP4 act word, lowbit.rtl.chip_booth.half_word_reads) are on the chip's data path: vitallm-fp4
    with one preloaded multiplier word changed after the golden was computed (the last layer's v projection,
    layers.1.attn.v, row group 5: rows 30 and 31, KV head 1's dimensions 14 and 15; m with bit 13 flipped in
    every lane, which leaves every row's amax_v the golden's, asserted, so the softmax's w8 and the attention
    output's scale stay the golden's) fails visibly and exactly. Predicted from the golden's buffers and
    sim.numerics alone: the v outputs differ in exactly the elements sim.numerics.requant gives with that
    multiplier (every step reads the same word: 8, 2, 2), every layer-0 projection and layer 1's q and k exact
    (the decode steps' inputs are the embedding rows of the program's token ids, not the chip's logits); the
    KV writes' V plane differs in exactly the bytes where the per-head INT8 quantization of the changed v
    (sfu_absmax_quantize, the golden's rule) differs from the golden's kv_append.v8 (12), the K and LO planes
    not at all; BoothFlex's P V psum words (4-lane passes over d) differ exactly where sum over the attended
    keys of w8[h, t, r] v8[r, d] with the changed v8 (every cached position, decode steps over the keys LOP
    selected) differs from the golden's av.acc (12), the Q K^T tiles' words exact; timing exact. What the
    changed attention output does downstream (layer 1's o, up, gate and down, the FP4 core's psum words, the
    K/V units read back) is predicted by the golden run again with the same multiplier rows changed and fed
    the program's token ids, mapped by the loader (chip_golden.data_plan) over it: 396 of the FP4 core's
    1,068 psum words and 15 kv buffer units differ, each requantized projection's outputs as that run's."""
    pytest.importorskip("cocotb")
    import dataclasses

    import lowbit.sim.golden as golden
    from lowbit.rtl.chip_golden import data_plan
    from lowbit.rtl.chip_model import input_of
    from lowbit.rtl.chip_requant import RQ_LOAD, pack_mult
    from lowbit.sim.golden_fp4 import fp4_multiplier
    from lowbit.sim.numerics.requant import requant
    from lowbit.sim.numerics.sfu import sfu_absmax_quantize
    from tests.rtl.chip_perturb import verify_perturbed

    layer, g, bit = 1, 5, 13
    op = f"layers.{layer}.attn.v"
    cfg, seen = load_config("vitallm-fp4"), {}
    rows = slice(g * cfg.fp4.lanes, (g + 1) * cfg.fp4.lanes)

    def flip(plan, img):
        (q, i), = [k for k in plan.rq_cover[(0, op)]]
        a = img.words[q][i]["rq_m"] + g
        m, sh = fp4_multiplier(plan.model.dep.linears[op].fp4, cfg.fp4.frac_bits)
        k = next(j for j, x in enumerate(plan.sfu_preload) if x[0] == a and x[2] == RQ_LOAD)
        plan.sfu_preload[k] = (a, pack_mult([m ^ 1 << bit] * cfg.fp4.lanes, [sh] * cfg.fp4.lanes), RQ_LOAD)
        seen.update(m=m ^ 1 << bit, sh=sh, img=img)

    r, plan = verify_perturbed(monkeypatch, tmp_path, flip, hw="vitallm-fp4", prefill=4, decode=2, image=True)
    mc = plan.model
    s = mc.spec
    assert s.n_layers == layer + 1  # the last layer: nothing after it reads its K or V
    grp, hd, lanes = s.n_heads // s.n_kv_heads, s.head_dim, cfg.booth.lanes
    want_rq, v8s, gold, v_bytes, pv_words = {}, [], [], 0, 0
    for n, st in enumerate(mc.run.steps):
        b = st.buffers
        y = np.array(b[f"{op}.out"])
        amax = np.asarray(b[f"{input_of(op)}.amax"]).reshape(-1, 1)
        y[:, rows] = requant(b[f"{op}.acc"][:, rows], amax, np.int64(seen["m"]), np.int64(seen["sh"]))
        want_rq[f"step {n} {op}"] = int((y != b[f"{op}.out"]).sum())
        p = f"layers.{layer}.attn"
        v8, va = sfu_absmax_quantize(y.reshape(len(st.ids), s.n_kv_heads, hd), golden.ACT_IN_BITS)
        assert np.array_equal(va[..., 0], b[f"{p}.kv_append.v_amax"])
        v_bytes += int((v8 != b[f"{p}.kv_append.v8"]).sum())
        v8s.append(v8.astype(np.int64))
        gold.append(b[f"{p}.kv_append.v8"])
        w8 = np.where(b[f"{p}.qk.keys"], b[f"{p}.softmax.w8"], 0)  # [H, T, M]: the attended keys' probabilities
        kv = np.arange(s.n_heads) // grp
        ok, now = (np.einsum("htm,mhd->htd", w8, np.concatenate(c)[:, kv]) for c in (gold, v8s))  # [H, T, hd]
        acc = b[f"{p}.av.acc"]
        assert np.array_equal(ok, acc)
        pv_words += int((now != acc).reshape(*acc.shape[:2], hd // lanes, lanes).any(axis=-1).sum())
    assert want_rq == {"step 0 layers.1.attn.v": 8, "step 1 layers.1.attn.v": 2, "step 2 layers.1.attn.v": 2}
    assert v_bytes == pv_words == 12
    # downstream: the golden again with the same multiplier rows, the program's token ids fed
    real = golden.fp4_row_multipliers

    def changed(t, frac_bits):
        m, sh = real(t, frac_bits)
        if t is mc.dep.linears[op].fp4:
            m = np.array(m)
            m[rows] = seen["m"]
        return m, sh

    with monkeypatch.context() as mp:
        mp.setattr(golden, "fp4_row_multipliers", changed)
        run = golden.golden_run(mc.dep, cfg, mc.run.steps[0].ids, mc.run.tokens[len(mc.run.steps[0].ids):],
                                lop="layers.0.attn.lop.sel" in mc.run.steps[-1].buffers)
    assert all(np.array_equal(v, a.buffers[k]) for a, c in zip(mc.run.steps, run.steps, strict=True)
               for k, v in c.buffers.items() if k.startswith("layers.0."))
    plan2, why = data_plan(seen["img"], cfg, 0, dataclasses.replace(mc, run=run))
    assert why == ""

    def words(q):
        return sum(x[0] != y[0] for x, y in zip(plan.expect[q], plan2.expect[q], strict=True))

    ub = plan.dims.unit_bytes
    kv_units = sum(u[2][i * ub:(i + 1) * ub] != plan2.kv_checks[k][2][i * ub:(i + 1) * ub]
                   for k, u in plan.kv_checks.items() for i in range(u[1]))
    assert (words("booth"), words("fp4"), kv_units) == (pv_words, 396, 15)
    got_rq = {name: bad for name, _, bad in r.rq}
    assert len(got_rq) == 42 and {k: got_rq[k] for k in want_rq} == want_rq
    assert all(bad == 0 for name, bad in got_rq.items() if name.split()[2].startswith("layers.0.")
               or name.split()[2] in (f"layers.{layer}.attn.q", f"layers.{layer}.attn.k"))
    assert got_rq == {f"step {n} {o}": int((run.steps[n].buffers[f"{o}.out"] != a.buffers[f"{o}.out"]).sum())
                      for n, a in enumerate(mc.run.steps) for o in (name.split()[2] for name in got_rq)}
    pl = r.kvw["planes"]
    assert pl["v"][1] == v_bytes and pl["k"][1] == pl["lo"][1] == 0 and r.kv_mismatches == kv_units
    got = {q.name: (q.data_words, q.data_mismatches) for q in r.queues if q.data_words >= 0}
    assert got == {"booth": (236, pv_words), "fp4": (1_068, 396)}
    assert r.mismatches == 0 and r.chip_cycles == r.sim_cycles == 7_581 and not r.ok
