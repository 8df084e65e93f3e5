"""The chip top (lowbit.rtl.chip) on Verilator runs a compiled program with every instruction's start and end
cycle equal to `lowbit sim --program` (lowbit.rtl.chip_run); its loader and comparison on their own."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("amaranth")
pytest.importorskip("cocotb")

from lowbit.rtl.chip_image import QueueTimes, build_image, reference_schedule  # noqa: E402
from lowbit.rtl.chip_requant import RQ_LOAD  # noqa: E402
from lowbit.rtl.chip_run import compare, params_for, verify_chip  # noqa: E402
from lowbit.sim.config import load_hw  # noqa: E402
from lowbit.sim.modelspec import get_model  # noqa: E402
from lowbit.sim.program import ProgramError  # noqa: E402


@pytest.fixture(scope="module")
def tiny_program(tmp_path_factory):
    """bitnet-tiny (GQA: 4 query heads, 2 KV heads) on the tiny preset, LOP on, prefill 2 + decode 3."""
    from lowbit.sim.cli import build_trace
    from lowbit.sim.compile import compile_program

    cfg = load_hw("tiny", [])
    m = get_model("bitnet-tiny")
    assert m.n_kv_heads < m.n_heads
    path = tmp_path_factory.mktemp("chip") / "prog.bin"
    st = compile_program(cfg, build_trace("bitnet-tiny", None, 2, 3, cfg, None), path)
    assert st.steps == 4
    return cfg, path


def test_thresholds_reproduce_the_simulators_waits(tiny_program):
    """The loader's rule (start when every queue's completion count reaches the threshold and every DMA
    request of the word's ranges has completed): a join completes exactly when its waits are met, no other
    instruction starts before."""
    cfg, path = tiny_program
    img = build_image(path, cfg)
    ref, total = reference_schedule(path, cfg)
    assert [len(w) for w in img.words] == [len(r.start) for r in ref]
    assert img.queues[-1] == "sync" and len(img.words[-1]) > 0 and len(img.words[img.queues.index("lop")]) > 0
    assert img.hulls == 0

    def met(w):
        ends = [max(ref[q].end[:x]) for q, x in enumerate(w["thr"]) if x > 0]
        ends += [max(ref[q].end[lo:hi]) for q, lo, hi in zip(img.dma_queues, w["rlo"], w["rhi"], strict=True)
                 if hi > lo]
        return max(ends, default=0)

    ranges = 0
    for q, words in enumerate(img.words):
        for i, w in enumerate(words):
            ranges += any(w["rhi"])
            if q == len(img.queues) - 1:
                assert met(w) == ref[q].end[i] == ref[q].start[i]
            else:
                assert met(w) <= ref[q].start[i]
    assert ranges > 0
    assert total == max(max(r.end) for r in ref)
    # DMA tags are the program order of all DMA instructions; ring slots name allocations in order
    tags = sorted(w["tag"] for q in ("dma_w", "dma_kv") for w in img.words[img.queues.index(q)])
    assert tags == list(range(img.n_dma))
    assert img.ring_queue == {"weight": "dma_w", "kv": "dma_kv", "lop": "dma_kv"}
    allocs = [w for q in ("dma_w", "dma_kv") for w in img.words[img.queues.index(q)] if w["alloc_en"]]
    live = {b: img.caps[b] // min(w["alloc"] for w in allocs if w["buf"] == b) for b in {w["buf"] for w in allocs}}
    assert img.ring_live == max(live.values())
    e = params_for(img).ring_entries
    assert e >= img.ring_live and e & (e - 1) == 0 and e < 2 * img.ring_live


def test_compare_reports_every_difference():
    ref = [QueueTimes("a", [0, 5], [5, 9]), QueueTimes("b", [1], [1])]
    same = compare(ref, [[0, 5], [1]], [[5, 9], [1]])
    assert [(q.start_mismatches, q.end_mismatches) for q in same] == [(0, 0), (0, 0)]
    off = compare(ref, [[0, 6], [1]], [[5, 11], [-1]])
    assert (off[0].start_mismatches, off[0].end_mismatches, off[0].max_diff) == (1, 1, 2)
    assert off[0].first == "#1: sim 5->9, chip 6->11"
    assert off[1].end_mismatches == 1


def test_pack_word_refuses_a_value_too_wide():
    from lowbit.rtl.chip_ctrl import pack_word

    w = {"valid": 1, "thr": [0, 70000], "rlo": [], "rhi": [], "cyc": 3, "free": 0, "free_buf": 0, "free_slot": 0}
    with pytest.raises(ProgramError, match="does not fit 16 bits"):
        pack_word("compute", 2, 16, w)
    assert pack_word("compute", 2, 17, w) == 1 | 3 << 1 | 70000 << (1 + 32 + 1 + 3 + 8 + 17)


def test_chip_runs_the_program_cycle_exact(tiny_program):
    """prefill + 3 decode steps with LOP and GQA: 0 mismatches, 0 cycles difference, per queue; the TINT
    and BoothFlex projection tiles run on the data path (the deployed weights of bitnet-tiny from the DRAM
    image through the memory port's data beats, the INT8 activations written by the SFU's quantize engine,
    the engine's `done` ending each) and every psum word equals the whole-model golden's
    accumulator: every element of q/k/v/o/gate/up/down's `acc` in all 4 steps and 2 layers."""
    cfg, path = tiny_program
    r = verify_chip(cfg, path, "tiny", [])
    assert r.finished and r.late == 0 and r.lane_overflow == 0 and r.data_late == 0 and not r.data_note
    assert {q.name: q.start_mismatches + q.end_mismatches for q in r.queues} == {q.name: 0 for q in r.queues}
    assert r.chip_cycles == r.sim_cycles == 26_428
    assert all(q.instructions > 0 for q in r.queues)
    assert r.dram_requests == sum(q.instructions for q in r.queues if q.name.startswith("dma"))
    assert r.params.data_banks == 32
    data = {q.name: (q.instructions, q.data_words, q.data_mismatches) for q in r.queues if q.data_words >= 0}
    # TINT: 64 tiles of 16 x 64 / 16 x 128 / 32 x 64 weights (8, 8, 16 row groups of 2 lanes), 1 or 2 tokens
    # each; BoothFlex: its 96 ternary tiles (of 128 words, the others attention) on the same row groups
    # BoothFlex: 1,664 psum words of ternary tiles and 60 of its 16 Q K^T tiles (2 layers x 2 KV heads x 4 steps,
    # LOP keeping every key): 2 heads x (1 + 2, 3, 4, 5 keys) outputs, 2 a pass: (3 + 3 + 4 + 5) x 2 x 2 passes;
    # and 320 of its 16 P V tiles: (2 + 1 + 1 + 1 queries) x 2 heads x 16 dimensions x 2 KV heads x 2 layers / 2 lanes
    assert data == {"tint0": (64, 896, 0), "booth": (128, 1_664 + 60 + 320, 0)}
    assert r.qk == (16, 8, 8)  # every step's and layer's qk.acc checked in every attended element
    assert r.pv == (16, 8, 8)  # ... and every step's and layer's av.acc in every element
    # the probabilities it multiplies from the SFU's softmax engine (lowbit.rtl.chip_softmax): every softmax word,
    # 2 x 2 rows (queries x heads) a group in the prefill, 2 in each decode step, x 2 groups x 2 layers; INT8
    # words a row: 1 (2 keys), 1, 1, 2 (3, 4, 5 keys): 16 + 2 x 2 x 2 x 4 words, a scale a row; 0 from the bench;
    # every row's keys' amax_v from the V quantizer's scale memory (lowbit.rtl.chip_vquant: every chunk holds
    # the positions from 0 on)
    assert r.sm == (16, 16 + 24, 16 + 32, 16 + 24, 0, 0, 0, 16 + 24)
    # ... over the scores and row maxes the score requantizer behind BoothFlex's psum port writes
    # (lowbit.rtl.chip_scores): every Q K^T output, 2 heads x (1 + 2 keys) a group in the prefill, 2 heads x 3, 4, 5
    # keys in decode, x 2 groups x 2 layers; a max per row; against the golden's qk.scores
    assert r.sc == (16, 4 * 6 + 4 * 2 * (3 + 4 + 5), 16 + 24, 0, 0)
    # ... each key's k_amax from the key-scale memory (lowbit.rtl.chip_kscales): every K row's amax (2 + 1 + 1 + 1
    # tokens x 2 KV heads x 2 layers) written at its position, every tile's keys (2 + 3 + 4 + 5 x 4) read there by
    # position, none before its write, none from the bench
    assert r.ks == (16, 4 * (2 + 3 + 4 + 5), 20, 0, 0, 0)
    # ... requantized into attn_sub_norm's input X (lowbit.rtl.chip_av): (2 + 1 + 1 + 1 tokens) x 64 elements a
    # layer, the golden's attn.av.out, and each row's S from the chip, a decode step's one row too (attn_sub_norm
    # reads S rms_lag = 2 cycles into its word, after the last P V pass lands: the drain rule)
    assert r.av == [(f"step {s} layer {L}", (2 if s == 0 else 1) * 64, 0, 2 if s == 0 else 1, 0)
                    for s in range(4) for L in range(2)]
    # the SFU's quantize engine writes every act word the projections read: 4 quantize ops x 2 layers x 4 steps;
    # per layer (2 + 1 + 1 + 1 tokens) x (16 + 16 + 16 + 32) words of 4 INT8, equal to the golden's <op>.q
    assert r.sfu == (32, 5 * 80 * 2, 5 * 80 * 2 * 4, 0)
    # ... from the SFU's RMSNorm engine: every attn_norm, attn_sub_norm, ffn_norm, ffn_sub_norm (2 layers, 4
    # steps) and the decode steps' final norm (the prefill's normalises 2 rows, the golden only the last):
    # (2 + 1 + 1 + 1 tokens) x 2 layers x (16 + 16 + 16 + 32 words) + 3 x 16, equal to the golden's <norm>.out
    assert r.norm == (32 + 3, 5 * 2 * 80 + 48, (5 * 2 * 80 + 48) * 4, 0)
    # ... whose residual stream the SFU's residual engine adds: attn_residual and ffn_residual, 2 layers, 4 steps,
    # (2 + 1 + 1 + 1 tokens) x 16 words each, equal to the golden's <residual>.out
    assert r.res == (16, 5 * 2 * 2 * 16, 5 * 2 * 2 * 16 * 4, 0)
    # ... with y from the requantizers behind the TINT and BoothFlex psum ports: attn.o and ffn.down of every
    # step and layer, (2 + 1 + 1 + 1 tokens) x 64 outputs each, equal to the golden's <op>.out
    # and gate / up (128 outputs) for the SFU's gating engine, q (64) and k (32) into RoPE's input buffers, v (32)
    # into the V quantizer's row memory, equal to the golden's <op>.out
    assert sorted(r.rq) == sorted((f"step {s} layers.{L}.{op}", n * (2 if s == 0 else 1), 0) for s in range(4)
                                  for L in range(2) for op, n in (("attn.o", 64), ("ffn.down", 64), ("ffn.gate", 128),
                                                                  ("ffn.up", 128), ("attn.q", 64), ("attn.k", 32),
                                                                  ("attn.v", 32)))
    assert r.rq_drain == []
    # the gating engine: ffn.act of 2 layers x 4 steps, (2 + 1 + 1 + 1 tokens) x 32 words, the golden's ffn.act.out
    assert r.act == (8, 5 * 2 * 32, 5 * 2 * 32 * 4, 0)
    # the step's input rows: each step's embedding read brings the table's rows at its token ids over the memory
    # port into layer 0's attn_norm input X and their S (lowbit.rtl.chip_embed): (2 + 1 + 1 + 1 rows) x 16 words
    assert r.embed == (4, 5 * 16, 5 * 64, 0) and r.params.embed_beats == 2  # 128-byte rows in 64-byte beats
    assert r.data_ref.startswith("the whole-model golden") and r.act_late == 0
    assert r.acc_buffers == (56, 56, [f"step {i} lm_head" for i in range(4)])  # the lm_head runs on the host
    # K/V reads carry the golden's rows: 2 layers x 2 KV heads x (K, V) chunks in each step, 2 + 3 + 4 + 5 keys
    # of 16 bytes (8 two-byte units) each, read back from the kv buffer when their attention tile starts
    assert (r.kv_chunks, r.kv_units, r.kv_mismatches) == (32, 8 * 8 * (2 + 3 + 4 + 5), 0)
    # the LOP engine scores and selects every KV group of the decode steps (2 layers x 2 KV heads x 3 steps) on
    # its data: K = 8 above 3, 4, 5 keys keeps them all, the golden's lop.sel; its scorer and top-K end with the
    # lop_score and lop_topk words
    assert r.lop_engine[:4] == (12, 2 * 2 * (3 + 4 + 5), 0, 0) and r.lop_late == 0 and r.lop_note == ""
    assert r.lop_chip_q == 12 and r.params.lop_qrows == 4  # each group's query rows from the RoPE engine
    assert r.lop_fill == (12, 12)  # each group's LO codes from its LO-code read's one data beat (24 to 40 bytes)
    assert r.lop[:3] == (0, 0, 0) and r.kv_ind == (0, 0, 0)  # no step drops keys: every K/V fetch is direct
    # RoPE on the chip: every step's and layer's two RoPE words (one a KV head) rotate the requantized q and k and
    # quantize them per head, 2 x 2 x (2 + 1 + 1 + 1) tokens x (2 q + 1 k) head rows of 4 words: the queries
    # Q K^T reads (its psum words above) and the keys, each row's amax
    assert r.rope == (16, 2 * 2 * 5 * 2 * 4, 0, 2 * 2 * 5 * 4, 0, 2 * 2 * 5 * 3, 0) and r.rope_bench == []
    # the KV cache is the chip's (lowbit.rtl.chip_kv): every dma_kv write (2 layers x 2 KV heads x (K, V, LO codes)
    # x 4 steps) carries its bytes over the write channel into the DRAM image, which holds none of them before:
    # (2 + 1 + 1 + 1 tokens) x 16 K or V bytes or 8 LO-code bytes x 2 x 2, equal to the golden's kv_append; the K
    # rows are the RoPE engine's, the LO codes the writer's from them, the V rows the V quantizer's (their 20
    # amax the golden's kv_append.v_amax); the K/V reads above return them
    assert r.kvw == {"planes": {"k": (320, 0), "v": (320, 0), "lo": (160, 0)}, "writes": 48, "rope_rows": 20,
                     "lo_rows": 20, "bench_rows": {}, "preloaded": 0, "late": 0, "vq": (20, 0),
                     "vq_sidx": False}  # tiny keeps the scale memory (the softmax engine reads it): no index port


def test_chip_verilog_lints_clean(tiny_program):
    import dataclasses

    from lowbit.rtl.chip_run import chip_verilog_cached
    from lowbit.rtl.lint import lint
    from lowbit.sim.cache import cache_dir
    from lowbit.sim.golden import attn_multipliers

    cfg, path = tiny_program  # with the data path, its requantizers (multiplier memories of 256 words), the
    # LOP engine (bitnet-tiny's groups: 2 query heads of 16 dimensions, up to 16 keys, 4 query rows from the RoPE
    # engine), the embedding writer, the RoPE engine (a 32-word table, head rows of 4 words), the score stage, the
    # KV writes' source (512 units) and the V quantizer (4 rows of 16; 2 KV heads x 256 positions x 2 layers)
    p = params_for(build_image(path, cfg), reference_schedule(path, cfg)[0], 32)
    _, key = chip_verilog_cached(cfg, dataclasses.replace(p, mult_depth=256, lop_grp=2, lop_hd=16, lop_depth=16,
                                                          embed_beats=2, rope_depth=32, rope_beats=4, lop_qrows=4,
                                                          score_mult=attn_multipliers(16)["qk"], kvw_depth=512,
                                                          vquant=(4, 16, 2, 256, 2)))
    r = lint(cache_dir("verilog") / f"chip-{key}.v", "lowbit_chip")
    assert r.ok, r.errors[:5]


def test_data_plan_resolves_tiles_from_the_program(tiny_program):
    """The loader's data fields: a weight DMA fills its allocation's words, a TINT word reads them, its shape
    from macs / rbytes2 / wbytes agrees with its cycles, and the golden has one psum word per pass."""
    from lowbit.rtl.chip_data import data_dims
    from lowbit.rtl.chip_golden import compare_psum, data_plan, segments
    from lowbit.sim.units.tint import tint_tile_cycles

    cfg, path = tiny_program
    assert data_dims(cfg)[0].banks == 32  # 16 bit x 4266 MT/s / 200 MHz = 42.7 B a cycle, 2-byte units: 22 -> 32
    vd = data_dims(load_hw("vitallm", []))[0]  # 24-byte words in a 32 KiB ring: 8-byte units, 3 a word
    assert (vd.unit_bytes, vd.word_units, vd.w_depth, vd.banks) == (8, 3, 4096, 16)  # 68.3 GB/s at 1 GHz: 9 -> 16
    img = build_image(path, cfg)
    plan, why = data_plan(img, cfg)
    assert why == "" and (plan.dims.w_depth, plan.dims.a_depth, plan.dims.p_depth) == (1024, 512, 128)
    tq = img.queues.index("tint0")
    passes = 0
    for w in img.words[tq]:
        d = img.words[w["free_q"]][w["free_i"]]
        assert (d["dbase"], d["dwords"]) == (d["sbyte"] // 2, d["nbytes"] // 2) == (w["w_addr"], w["groups"] * w["beats"])
        assert w["cyc"] == tint_tile_cycles(cfg.tint, 4 * w["beats"], w["groups"] * w["tokens"])
        gb = 2 * w["beats"]  # a row group: beats words of 2 bytes, one DRAM entry each
        assert [len(plan.dram[d["addr"] + g * gb]) for g in range(w["groups"])] == [gb] * w["groups"]
        assert w["a_stride"] == w["beats"]
        assert w["p_addr"] == passes % 128
        passes += w["groups"] * w["tokens"]
    assert len(plan.expect["tint0"]) == passes == 896
    bq = img.queues.index("booth")
    eng = [w for w in img.words[bq] if w["eng"]]
    assert len(eng) == plan.tiles["booth"] == 96 and len(plan.expect["booth"]) == 1_664
    # Booth beats of 4 x 2 elements, latency 1 + clog2(8) + 1 = 5: the word's sim.units cycles
    assert all(w["cyc"] == w["beats"] * w["groups"] * w["tokens"] + 5 for w in eng)
    assert all(not w["eng"] and w["rbuf"] != 0 for w in img.words[bq] if w not in eng)  # attention: timers
    assert compare_psum(plan.expect["tint0"], plan.expect["tint0"]) == 0
    assert segments({0: b"ab", 2: b"cd", 6: b"ef"}) == {0: b"abcd", 6: b"ef"}
    wrong = [((x[0][0] + 1,) + x[0][1:], x[1]) for x in plan.expect["tint0"][:3]] + plan.expect["tint0"][3:-1]
    assert compare_psum(plan.expect["tint0"], wrong) == 4  # three values, one missing word


def test_model_plan_holds_the_deployed_model(tiny_program):
    """The loader with the whole-model golden: the DRAM row groups are bitnet-tiny's deployed ternary codes at
    the rows each tile's weight DMA names, each quantize word runs on the SFU's quantize engine from its
    norm's golden Q7.8 output and amax and must write the golden's INT8 rows, and each TINT tile's expected psum words are tint_dot of those codes and activations (computed
    here, regrouped by token and row group), equal to the golden's accumulators."""
    from lowbit.rtl.chip_data import pack_tile
    from lowbit.rtl.chip_golden import data_plan
    from lowbit.rtl.chip_model import input_of, model_contents
    from lowbit.sim.golden import linear_multipliers
    from lowbit.sim.numerics.tint import tint_dot
    from lowbit.sim.program_io import ProgramReader

    cfg, path = tiny_program
    img = build_image(path, cfg)
    model, why = model_contents(img, cfg, ProgramReader(path).header.meta, seed=3)
    assert why == "" and len(model.run.steps) == 4 and model.run.tokens[:2].tolist() != [0, 0]
    plan, why = data_plan(img, cfg, 3, model)
    assert why == "" and plan.act is None
    tq, sq = img.queues.index("tint0"), img.queues.index("sfu")
    words = iter(plan.expect["tint0"])
    base = {"attn.q": 0, "attn.k": 4096, "attn.v": 8192, "attn.o": 12288}  # sim.lower: one 4 KiB region an op
    checked = 0
    for w in img.words[tq]:
        d = img.words[w["free_q"]][w["free_i"]]
        rows, k = 2 * w["groups"], 4 * w["beats"]
        codes = model.dep.linears[w["op"]].codes
        r0 = (d["addr"] - model.base[w["op"]]) * 4 // k
        for g in range(w["groups"]):
            assert plan.dram[d["addr"] + 2 * w["beats"] * g] == pack_tile(codes[r0 + 2 * g:r0 + 2 * g + 2], 2, 4)
        x = model.run.steps[w["step"]].buffers[f"{input_of(w['op'])}.q"]
        acc, ovf = tint_dot(codes[None, r0:r0 + rows], x[:, None, :], 4, 20)
        assert not ovf.any()
        assert np.array_equal(acc, model.run.steps[w["step"]].buffers[f"{w['op']}.acc"][:, r0:r0 + rows])
        for t in range(w["tokens"]):
            for g in range(w["groups"]):
                assert next(words) == (tuple(int(v) for v in acc[t, 2 * g:2 * g + 2]), 0)
        op = w["op"].split(".", 2)[2]
        if w["op"].startswith("layers.0.") and op in base:
            assert model.base[w["op"]] == base[op]
        checked += 1
    assert checked == 64 and next(words, None) is None
    # every quantize word runs on the SFU's quantize engine, reading the Q7.8 rows and row amax the RMSNorm
    # engine (the word before it) writes; its INT8 words, the golden's <quant>.q from act address 0, are what
    # the engine must write
    quant = {i: img.words[sq][i] for i, f in plan.sfu_fields.items() if f["eng"] == 1}
    norms = {i: img.words[sq][i] for i, f in plan.sfu_fields.items() if f["eng"] == 2}
    assert sorted({w["op"].split(".")[-1] for w in quant.values()}) == ["attn_quant", "down_quant", "ffn_quant",
                                                                       "o_quant"]
    assert len(quant) == 4 * 2 * 4 and len(plan.sfu_ops) == 32 and len(norms) == 35 == len(plan.norm_ops)
    expect = []
    for i, w in quant.items():
        q = model.run.steps[w["step"]].buffers[f"{w['op']}.q"]
        assert i - 1 in norms and norms[i - 1]["op"].split(".")[-1] == {
            "attn_quant": "attn_norm", "o_quant": "attn_sub_norm", "ffn_quant": "ffn_norm",
            "down_quant": "ffn_sub_norm"}[w["op"].split(".")[-1]]
        rows, beats = q.shape[0], q.shape[1] // 4
        assert plan.sfu_fields[i] == {"eng": 1, "rows": rows, "beats": beats, "x_addr": 0, "o_addr": 0,
                                      "st_addr": plan.sfu_fields[i - 1]["st_addr"]}
        assert w["cyc"] == rows * (beats + 17) + cfg.sfu.op_latency("quantize")  # D_recip = 17 (sim.units.sfu)
        assert i - 1 not in plan.act_writes  # no bench writes: the norm engine produces its input
        expect += [(a, sum((int(v) & 0xFF) << (8 * e) for e, v in enumerate(row)))
                   for a, row in enumerate(q.reshape(-1, 4))]
    assert plan.sfu_expect == expect and plan.sfu_elems == sum(
        model.run.steps[w["step"]].buffers[f"{w['op']}.q"].size for w in quant.values())
    # the norms (SubLN and the decode steps' final norm included; the prefill's final norm normalises 2 rows, the
    # golden only the last: a timer): norm k reads input half k mod 2 and statistics rows 32 (k mod 2) ..; its
    # gain (the deployed Q5.10 norm) is loaded before start, its input (the golden's) and each row's S = sum x^2
    # through the load port before it starts, except where an engine writes it (layer 0's attn_norm: the embedding writer)
    gains = {a: v for a, v, sel in plan.sfu_preload if sel == 3}
    before = {j: ws for a, gs in plan.sfu_writes.items() for j, ws in gs if a < j}
    assert len(before) == sum(len(gs) for gs in plan.sfu_writes.values())
    first = [(a, v, sel) for a, v, sel in plan.sfu_preload if sel in (1, 2)]
    # the residual engine adds in place in the X half of the norm that read its x (attn_norm, ffn_norm) and
    # writes the next norm's input and S: those norms get no bench writes; its y (attn.o.out, ffn.down.out) is
    # what the requantizers behind the TINT and BoothFlex psum ports write into the R buffer: no bench writes
    res = {i: img.words[sq][i] for i, f in plan.sfu_fields.items() if f["eng"] == 3}
    assert sorted({w["op"].split(".")[-1] for w in res.values()}) == ["attn_residual", "ffn_residual"]
    assert len(res) == 2 * 2 * 4 == len(plan.res_ops)
    assert not [x for x in plan.sfu_preload if x[2] == 6] and not plan.rq_drain
    rq_queues = [img.queues.index("tint0"), img.queues.index("booth")]
    mult = {k: {a: v for a, v, sel in plan.sfu_preload if sel == RQ_LOAD + k} for k in range(2)}
    for i, w in res.items():
        assert i not in before
        L, kind = w["op"].split(".")[1], w["op"].split(".")[2].split("_")[0]
        proj = f"layers.{L}." + ("attn.o" if kind == "attn" else "ffn.down")
        y = model.run.steps[w["step"]].buffers[f"{proj}.out"]
        tiles = plan.rq_cover[(w["step"], proj)]
        assert sorted((plan.proj[t]["r0"], plan.proj[t]["r0"] + plan.proj[t]["rows"]) for t in tiles)[-1][1] == 64
        qi = next(j for j, x in quant.items() if x["step"] == w["step"] and x["op"] == input_of(proj))
        mm, sh = linear_multipliers(model.dep.linears[proj])
        for q, j in tiles:  # each tile's requantizer fields: its rows' Q7.8 place, multipliers and token amax
            t, f = plan.proj[(q, j)], img.words[q][j]
            assert (f["rq"], f["rq_off"], f["rq_o"], f["rq_stride"], f["rq_s"]) == (
                1, t["r0"] % 4, t["r0"] // 4, 16, plan.sfu_fields[qi]["st_addr"])
            for g in range(t["groups"]):
                word = mult[rq_queues.index(q)][f["rq_m"] + g]
                rows = range(t["r0"] + 2 * g, t["r0"] + 2 * g + 2)
                assert word == sum((int(mm[r]) | int(sh[r]) << 16) << (22 * e) for e, r in enumerate(rows))
        assert any(n == f"step {w['step']} {proj}" and np.array_equal(o, y) for n, _, o, *_ in plan.rq_expect)
        src = max(j for j in norms if j < i and img.words[sq][j]["op"] == f"layers.{L}.{kind}_norm")
        nxt = min(j for j in range(i + 1, len(img.words[sq])) if img.words[sq][j]["op"].endswith("_norm"))
        f = plan.sfu_fields[i]
        assert f["x_addr"] == f["o_addr"] == plan.sfu_fields[src]["x_addr"] and f["st_addr"] == plan.sfu_fields[src][
            "st_addr"] and f["y_addr"] == 0 and w["cyc"] == f["rows"] * f["beats"] + cfg.sfu.op_latency("elementwise")
        assert nxt not in before and (nxt not in norms or plan.sfu_fields[nxt]["x_addr"] == f["x_addr"])
    # the gating words run on the gating engine from the requantizers' gate and up buffers, writing the X half and
    # S rows of the ffn_sub_norm after them (ReLU^2 of bitnet-tiny's gate times up: fn 1, gated 2)
    acts = {i: img.words[sq][i] for i, f in plan.sfu_fields.items() if f["eng"] == 4}
    assert len(acts) == 2 * 4 == len(plan.act_ops) and {w["op"].split(".", 2)[2] for w in acts.values()} == {"ffn.act"}
    for i, w in acts.items():
        f, nxt = plan.sfu_fields[i], plan.sfu_fields[i + 1]
        assert img.words[sq][i + 1]["op"].endswith("ffn_sub_norm") and f["o_addr"] == nxt["x_addr"]
        assert f["st_addr"] == nxt["st_addr"] and f["fn"] == 3 and (w["step"], w["op"][:-3] + "gate") in plan.rq_cover
    every = [i for i, w in enumerate(img.words[sq]) if w["op"].endswith("_norm")]
    assert [img.words[sq][i]["op"] for i in every if i not in norms] == ["final_norm"]
    src = {"attn_norm": lambda b, L: b["embed.out"] if L == 0 else b[f"layers.{L - 1}.ffn_residual.out"],
           "attn_sub_norm": lambda b, L: b[f"layers.{L}.attn.av.out"],
           "ffn_norm": lambda b, L: b[f"layers.{L}.attn_residual.out"],
           "ffn_sub_norm": lambda b, L: b[f"layers.{L}.ffn.act.out"],
           "final_norm": lambda b, L: b["layers.1.ffn_residual.out"]}
    def words16(a):
        return [sum((int(v) & 0xFFFF) << (16 * e) for e, v in enumerate(r)) for r in a.reshape(-1, 4)]
    emb_x: list[tuple[int, int]] = []
    emb_s: list[tuple[int, int]] = []
    for k, i in enumerate(every):
        if i not in norms:
            continue
        w, f, r = norms[i], plan.sfu_fields[i], k % 2
        bufs = model.run.steps[w["step"]].buffers
        g = model.dep.norms[w["op"]]
        assert [gains[f["g_addr"] + b] for b in range(len(g) // 4)] == words16(np.asarray(g))
        name = w["op"].split(".")[-1]
        x = src[name](bufs, int(w["op"].split(".")[1]) if name != "final_norm" else 0)
        rows, beats = x.shape[0], x.shape[1] // 4
        assert (f["rows"], f["beats"], f["x_addr"], f["o_addr"], f["st_addr"]) == (rows, beats, r * 256, 0, r * 32)
        assert w["cyc"] == rows * beats + cfg.sfu.op_latency("rmsnorm")
        ws = [(r * 256 + a, v, 1) for a, v in enumerate(words16(x))] + \
            [(r * 32 + j, int((x[j] ** 2).sum()), 2) for j in range(rows)]
        if name in ("ffn_norm", "final_norm", "ffn_sub_norm") or (name == "attn_norm" and w["op"] != "layers.0.attn_norm"):
            assert i not in before  # the residual or the gating engine wrote it
            continue
        if name == "attn_sub_norm":  # X and S from the attention output's writer (lowbit.rtl.chip_av), decode too
            key = (w["step"], int(w["op"].split(".")[1]))
            assert plan.av_norm[key] == r and plan.av_cand[key]["s"] and i not in before
            continue
        assert name == "attn_norm" and i not in before  # layer 0's: the embedding writer's (lowbit.rtl.chip_embed)
        emb_x += [(a, v) for a, v, _ in ws[:rows * beats]]
        emb_s += [(a, v) for a, v, _ in ws[rows * beats:]]
    assert not first and emb_x == plan.emb_expect_x and emb_s == plan.emb_expect_s and len(emb_s) == 5
    assert plan.norm_expect[:16] == [(a, v) for a, v in enumerate(words16(model.run.steps[0].buffers[
        "layers.0.attn_norm.out"][:1]))]


def test_model_contents_say_why_the_golden_cannot_serve(tiny_program):
    """A workload the whole-model golden refuses (a prompt tiled with online softmax on tiny) gives no model
    contents and the reason; the projection input table follows sim.workloads' op names."""
    import dataclasses

    from lowbit.rtl.chip_model import input_of, model_contents
    from lowbit.sim.program_io import ProgramReader

    cfg, path = tiny_program
    meta = dataclasses.replace(ProgramReader(path).header.meta, prefill=80)
    model, why = model_contents(build_image(path, cfg), cfg, meta, 0)
    assert model is None and "online softmax" in why
    assert [input_of(o) for o in ("layers.1.attn.k", "layers.0.ffn.down", "layers.3.ffn.up", "lm_head",
                                  "layers.0.attn.qk")] == ["layers.1.attn_quant", "layers.0.down_quant",
                                                           "layers.3.ffn_quant", "lm_quant", ""]


def test_data_plan_serves_differently_tiled_steps(tmp_path):
    """An 8-token prefill tiles a projection into fewer rows per tile than decode does; both read the same row
    groups of one DRAM layout (a tile at a decode address starts at a prefill tile's row group)."""
    from lowbit.rtl.chip_golden import data_plan
    from lowbit.sim.cli import build_trace
    from lowbit.sim.compile import compile_program

    cfg = load_hw("tiny", [])
    path = tmp_path / "prog.bin"
    compile_program(cfg, build_trace("bitnet-tiny", None, 8, 3, cfg, None), path)
    img = build_image(path, cfg)
    plan, why = data_plan(img, cfg)
    assert why == "" and len(plan.expect["tint0"]) == 1_984
    tq = img.queues.index("tint0")
    shapes = {}
    for w in img.words[tq]:
        shapes.setdefault(img.words[w["free_q"]][w["free_i"]]["addr"], set()).add(w["groups"])
    assert any(len(g) > 1 for g in shapes.values())  # one DRAM address, tiles of two row counts


@pytest.mark.slow
def test_chip_bench_detects_wrong_data(tiny_program, monkeypatch):
    """The checks can fail: with one element of the first prompt token's embedding row changed in the DRAM
    image after the golden was computed, the embedding writer's X word and S, the chip's norm words, the
    quantize engine's act words, the tiles reading them and their requantized outputs differ from the
    whole-model golden, and with one K byte changed in the DRAM image, the kv buffer's read-back does
    (timing still exact)."""
    import lowbit.rtl.chip_run as cr
    from lowbit.sim.isa import EMBED_BASE, KV_BASE

    real = cr.data_plan

    def corrupt(img, cfg, seed=0, model=None):
        plan, why = real(img, cfg, seed, model)
        t = plan.dram[EMBED_BASE]  # the Q7.8 table: one element of the first prompt token's row
        a = 2 * model.spec.d_model * int(model.run.steps[0].ids[0])
        plan.dram[EMBED_BASE] = t[:a] + bytes([t[a] ^ 0x55, t[a + 1] ^ 0x01]) + t[a + 2:]
        k = min(a for a in plan.dram if a >= KV_BASE)  # and the first K row in the DRAM image
        plan.dram[k] = bytes([plan.dram[k][0] ^ 1]) + plan.dram[k][1:]
        return plan, why

    monkeypatch.setattr(cr, "data_plan", corrupt)
    cfg, path = tiny_program
    r = verify_chip(cfg, path, "tiny", [])
    assert r.mismatches == 0 and r.data_mismatches > 0 and r.norm[3] > 0 and r.sfu[3] > 0 and not r.ok
    assert r.embed[3] == 2  # the X word holding it and its row's S
    assert any(bad for _, _, bad in r.rq)  # the requantized outputs of the psum words that differ
    assert r.kv_mismatches == 4  # the first K row is in all 4 steps' chunks (M <= LOP's k): one unit each


@pytest.mark.slow
def test_chip_bench_detects_a_chip_that_differs(tiny_program):
    """The comparison can fail: a chip whose DMA engines issue at most 2 instructions per cycle starts the
    weight DMAs later than the simulator."""
    import dataclasses

    cfg, path = tiny_program
    p = dataclasses.replace(params_for(build_image(path, cfg), reference_schedule(path, cfg)[0]), dma_issue=2)
    r = verify_chip(cfg, path, "tiny", [], params=p)
    dma_w = next(q for q in r.queues if q.name == "dma_w")
    assert dma_w.start_mismatches > 0 and not r.ok


def test_dma_waits_resolve_to_a_threshold_and_one_range():
    """A wait on DMA requests is a wait on those requests: runs merge, a run continuing the threshold extends
    it, runs with a gap above it become their hull (counted)."""
    import numpy as np

    from lowbit.rtl.chip_image import _Wait

    dq = [1, 2]  # queues 1 and 2 are DMA queues, 0 a compute queue
    w = _Wait.on(3, dq, 1, 5, 3).join(_Wait.on(3, dq, 1, 8, 2)).join(_Wait.on(3, dq, 0, 4, 1))
    assert w.resolve(dq) == ([5, 0, 0], [5, 0], [10, 0], 0)
    fence = _Wait(np.array([0, 6, 2]), {})
    assert w.join(fence).resolve(dq) == ([5, 10, 2], [0, 0], [0, 0], 0)
    gap = w.join(_Wait.on(3, dq, 1, 12, 1)).join(_Wait.on(3, dq, 2, 0, 4))
    assert gap.resolve(dq) == ([5, 0, 4], [5, 0], [13, 0], 1)


def test_range_check_matches_the_completion_bits():
    """lowbit.rtl.chip_ctrl.range_met on the Amaranth simulator against the definition (every request
    lo .. hi - 1 complete: below the window base, or its bit set), over random windows of a 8-entry table."""
    import random

    from amaranth.hdl import Module, Signal, unsigned
    from amaranth.lib import data
    from amaranth.sim import Simulator

    from lowbit.rtl.chip_ctrl import range_met

    nt = 8
    m = Module()
    lo, hi, base = Signal(16), Signal(16), Signal(16)
    zeros = Signal(data.ArrayLayout(unsigned(nt.bit_length()), nt + 1))
    ok = Signal()
    m.d.comb += ok.eq(range_met(lo, hi, base, zeros))
    rng = random.Random(7)
    cases = []
    for _ in range(300):
        b = rng.randrange(0, 40)
        done = [rng.random() < 0.6 for _ in range(nt)]  # requests b .. b + nt - 1
        l_ = rng.randrange(0, b + nt + 2)
        h = rng.randrange(l_ + 1, b + nt + 4)
        want = all(done[s - b] if b <= s < b + nt else s < b for s in range(l_, h))
        cases.append((b, done, l_, h, want))
    cases.append((10, [True] * nt, 0, 0, True))  # the empty range
    got = []

    async def bench(ctx):
        for b, done, l_, h, _ in cases:
            z = [0]
            for d in done:
                z.append(z[-1] + (not d))
            ctx.set(base, b)
            ctx.set(lo, l_)
            ctx.set(hi, h)
            ctx.set(zeros, z)
            got.append(ctx.get(ok))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == [c[-1] for c in cases]
    assert 0 < sum(got) < len(got)


@pytest.mark.slow
@pytest.mark.parametrize("hw, cycles, lanes, ooo, psum", [("vitallm", 8_647, 15, 20, {"tint0": 440, "tint1": 468,
                                                                                       "booth": 460}),
                                                         ("vitallm-fp4", 7_581, 13, 17, {"fp4": 1_068,
                                                                                          "booth": 236})])
def test_vitallm_chip_runs_out_of_order_dma_exact(tmp_path, hw, cycles, lanes, ooo, psum):
    """The vitallm-sized chips, ternary and FP4 (LPDDR5X bank model: an engine's requests complete out of
    issue order), run bitnet-tiny prefill 4 + decode 2 with every instruction's start and end equal to
    `lowbit sim`, and on vitallm both TINT cores' and BoothFlex's psum words (its 4-lane ternary passes over
    the TINT cores' 6-row groups: lowbit.rtl.chip_booth_regroup; on vitallm-fp4 the FP4 core's, NVFP4 weights,
    and BoothFlex's Q K^T and P V tiles') equal the whole-model golden's accumulators, and on both the requantized projection outputs, the gating,
    RoPE, KV writes, K/V reads, the LOP engine, the score stage, the softmax and the attention output run on
    the chip's data (the results committed in reports/chip-vitallm*.md)."""
    from lowbit.rtl.chip_report import out_of_order
    from lowbit.sim.cli import build_trace
    from lowbit.sim.compile import compile_program

    cfg = load_hw(hw, [])
    path = tmp_path / "prog.bin"
    compile_program(cfg, build_trace("bitnet-tiny", None, 4, 2, cfg, None), path)
    ref, _ = reference_schedule(path, cfg)
    assert sum(out_of_order(q.end) for q in ref if q.name.startswith("dma")) == ooo
    r = verify_chip(cfg, path, hw, [])
    assert r.finished and r.late == 0 and r.lane_overflow == 0 and not r.notes
    assert {q.name: (q.data_words, q.data_mismatches) for q in r.queues if q.data_words >= 0} == \
        {n: (w, 0) for n, w in psum.items()}
    assert r.data_late == 0 and not r.data_note
    if psum:  # every projection accumulator whole (v and the prefill's down on BoothFlex); lm_head on the host
        assert r.data_ref.startswith("the whole-model golden") and r.act_late == 0
        if hw == "vitallm-fp4":  # every projection accumulator of every step on the FP4 core; lm_head on the host
            assert r.acc_buffers == (42, 42, [f"step {i} lm_head" for i in range(3)])
            # the SFU on data (two 16-lane SFU INT8 words an FP4 act word of 32): every quantize, residual and
            # RMSNorm word but the prefill's final norm, (4 + 1 + 1) rows of 4, 4, 4 and 8 words; the step's input
            # rows from the embedding table
            assert r.sfu == (24, 240, 3_840, 0) and r.res == (12, 96, 1_536, 0) and r.norm == (26, 248, 3_968, 0)
            assert r.embed == (3, 24, 384, 0)
            # the FP4 core's requantizer (FP4 multipliers): o, gate, up, down, q, k and v of 2 layers x 3 steps,
            # (4 + 1 + 1) tokens x (64, 128, 128, 64, 64, 32, 32) elements; the gating engine on gate and up
            assert len(r.rq) == 6 * 7 and not any(b for _, _, b in r.rq) and r.rq_drain == r.rq_refused == []
            per = {}
            for name, n, _ in r.rq:
                per[name.split(".", 2)[-1]] = per.get(name.split(".", 2)[-1], 0) + n
            assert per == {"attn.q": 768, "attn.k": 384, "attn.v": 384, "attn.o": 768, "ffn.gate": 1_536,
                           "ffn.up": 1_536, "ffn.down": 768}
            assert r.act == (6, 6 * 2 * 8, 6 * 2 * 128, 0)
            # RoPE: one word a step and layer, (4 + 1 + 1) tokens x (4 q + 2 k) one-word rows, on the engine
            assert r.rope == (6, 2 * 6 * 4, 0, 2 * 6 * 2, 0, 2 * 6 * 6, 0) and r.rope_bench == []
            # the kv buffer holds data: 8 K/V chunks a step of 4, 5, 6 keys x 16 bytes, in 4-byte units; the KV
            # writes carry the RoPE engine's K rows, the V quantizer's V rows (from the FP4 requantizer's v) and
            # the writer's LO codes, 2 layers x (4 + 1 + 1) rows a plane; the LOP engine selects from them
            assert (r.kv_chunks, r.kv_units, r.kv_mismatches) == (24, 8 * (4 + 5 + 6) * 16 // 4, 0)
            # the softmax engine reads the V quantizer's scales: the scale memory stays, no scale index observed
            assert r.kvw["planes"] == {"k": (384, 0), "v": (384, 0), "lo": (192, 0)} and r.kvw["vq"] == (24, 0)
            assert not r.kvw["vq_sidx"]
            assert (r.kvw["rope_rows"], r.kvw["lo_rows"], r.kvw["preloaded"], r.kvw["late"]) == (24, 24, 0, 0)
            assert r.lop_engine[:4] == (8, 44, 0, 0)
            # BoothFlex's attention tiles on data beside the FP4 core (no ternary tiles: lowbit.rtl.chip_booth
            # .booth_data): Q K^T and P V of every step and layer, 2 layers x (4 + 1 + 1) x 4 heads x their keys'
            # scores (10, 5, 6 a head) in 4-lane passes and as many queries x 16 dimensions
            assert r.qk == (12, 6, 6) and r.pv == (12, 6, 6) and not r.attn_note
            # the softmax on data as on vitallm (chip_softmax.sm_ok, its plan from the FP4 loader): every word
            # (2 layers x 3 steps x 2 KV groups), 2 layers x 2 groups x (4 + 1 + 1) tokens x 2 heads rows of one
            # 16-element SFU word (half an FP4 act word), their INT8 words and scales, none from the bench, every
            # row's amax_v from the V quantizer's scale memory
            assert r.sm == (12, 2 * 2 * 6 * 2, 48, 48, 0, 0, 0, 48)
            # over the score stage's scores and row maxes (chip_scores): every Q K^T output, 2 heads x
            # (1 + 2 + 3 + 4 keys) a group in the prefill, 2 heads x 5 and 6 in decode, x 2 groups x 2 layers
            assert r.sc == (12, 4 * 2 * (10 + 5 + 6), 48, 0, 0)
            # each key's k_amax from the key-scale memory (chip_kscales), as on vitallm
            assert r.ks == (12, 4 * (4 + 5 + 6), 24, 0, 0, 0)
            # the attention output into attn_sub_norm's X (chip_av): (4 + 1 + 1) tokens x 64 elements a layer,
            # the golden's attn.av.out, each row's S from the chip
            assert r.av == [(f"step {s} layer {L}", (4 if s == 0 else 1) * 64, 0, 4 if s == 0 else 1, 0)
                            for s in range(3) for L in range(2)]
        else:
            assert r.acc_buffers == (42, 42, [f"step {i} lm_head" for i in range(3)])
            assert r.qk == (12, 6, 6) and r.pv == (12, 6, 6)  # Q K^T and P V of every step and layer
            # 8 K/V chunks a step of 4, 5, 6 keys x 16 bytes, in 8-byte units
            assert (r.kv_chunks, r.kv_units, r.kv_mismatches) == (24, 8 * 2 * (4 + 5 + 6), 0)
            # requantized on the chip: o, gate, up, down, q, k and v of 2 layers x 3 steps (the prefill's down
            # behind BoothFlex; k after q in a token's row of the RoPE engine's buffer passes the drain rule);
            # the gating engine: ffn.act of 2 layers x 3 steps, (4 + 1 + 1) x 8 words
            assert len(r.rq) == 6 * 7 and not any(b for _, _, b in r.rq)
            assert r.rq_drain == []
            assert r.act == (6, 6 * 2 * 8, 6 * 2 * 128, 0)
            # RoPE: one word a step and layer for both KV heads, (4 + 1 + 1) tokens x (4 q + 2 k) one-word rows
            assert r.rope == (6, 2 * 6 * 4, 0, 2 * 6 * 2, 0, 2 * 6 * 6, 0) and r.rope_bench == []
            # softmax: every word (2 layers x 3 steps x 2 KV groups) on the 16-lane engine, 2 layers x 2 groups x
            # (4 + 1 + 1) tokens x 2 heads rows of one beat, their INT8 words and scales; no row from the bench;
            # every row's amax_v from the V quantizer's scale memory (LOP's K = 8 keeps every key)
            assert r.sm == (12, 2 * 2 * 6 * 2, 48, 48, 0, 0, 0, 48)
            # each key's k_amax from the key-scale memory (lowbit.rtl.chip_kscales): (4 + 1 + 1) tokens x 2 KV heads
            # x 2 layers K rows, every tile's keys (4 + 5 + 6 x 4) by position, none from the bench
            assert r.ks == (12, 4 * (4 + 5 + 6), 24, 0, 0, 0)
    assert {q.name: q.start_mismatches + q.end_mismatches for q in r.queues} == {q.name: 0 for q in r.queues}
    assert r.chip_cycles == r.sim_cycles == cycles
    assert r.params.dma_issue == lanes and r.dram_requests == 113


def test_out_of_order_counts_requests_overtaking_an_earlier_one():
    from lowbit.rtl.chip_report import out_of_order

    assert out_of_order([5, 3, 9, 4, 10]) == 2
    assert out_of_order([1, 2, 2, 3]) == 0


@pytest.mark.slow
def test_fp4_chip_runs_the_program_cycle_exact(tmp_path):
    """The chip built from an FP4 config (the tiny design with the FP4 core instead of the TINT core) runs
    bitnet-tiny's projections on its FP4 queue: 0 mismatches, 0 cycles difference, and every psum word of its FP4
    core equals the NVFP4 whole-model golden's accumulators (lowbit.rtl.chip_fp4)."""
    from lowbit.sim.cli import build_trace
    from lowbit.sim.compile import compile_program

    sets = ["units=fp4,booth,lop,sfu", "fp4.enabled=true"]
    cfg = load_hw("tiny", sets)
    path = tmp_path / "prog.bin"
    compile_program(cfg, build_trace("bitnet-tiny", None, 2, 3, cfg, None), path)
    r = verify_chip(cfg, path, "tiny", sets)
    assert r.finished and r.late == 0 and r.lane_overflow == 0
    counts = {q.name: q.instructions for q in r.queues}
    assert "tint0" not in counts and counts["fp4"] > counts["booth"] > 0
    assert {q.name: q.start_mismatches + q.end_mismatches for q in r.queues} == {q.name: 0 for q in r.queues}
    assert r.chip_cycles == r.sim_cycles > 10_000
    # BoothFlex has a data path beside the FP4 core (attention tiles only), but none of this program's Q K^T or
    # P V tiles map onto it (lowbit.rtl.chip_attn.qk_plan's checks): 0 of the 8 buffers each, they stay timers
    assert {q.name: (q.data_words, q.data_mismatches) for q in r.queues if q.data_words >= 0} == {
        "booth": (0, 0), "fp4": (640, 0)}
    assert r.qk == (0, 0, 8) and r.pv == (0, 0, 8)
    assert r.acc_buffers[:2] == (56, 56) and not r.data_note  # every step's projection accumulators, whole
    # the 8-lane FP4 core's psum word is wider than the 4-lane SFU's: no requantizer, and the loader says why;
    # the kv buffer holds data: 32 K/V chunks read back, the LOP engine's 12 groups (3, 4, 5 keys, all kept)
    assert r.rq == [] and r.rq_refused and "8-lane psum word" in r.rq_refused[0]
    assert (r.kv_chunks, r.kv_mismatches) == (32, 0) and r.lop_engine[:3] == (12, 48, 0)


def test_verify_chip_refuses_a_bad_seed(capsys):
    """The data path's contents are seeded by --seed: a negative one is a one-line error, exit 2, before any
    compile or build."""
    from lowbit.cli import main

    assert main(["verify", "--chip", "--hw", "tiny", "--seed", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seed -1" in err[0]


@pytest.mark.slow
def test_chip_fetches_the_lop_selection_from_its_index_fifo(tmp_path):
    """bitnet-tiny prefill 8 + decode 3 on tiny, compiled from the golden's LOP selections (K = 8 of 9..11 keys:
    every decode step drops keys): the chip's LOP engine selects each group's keys (the golden's lop.sel), its
    index FIFO gives every indirect K/V word its DRAM address and size (one run each), the kv buffer then holds
    the golden's selected K/V rows, and every instruction starts and ends as in `lowbit sim`."""
    from lowbit.rtl.chip_model import compile_from_golden

    cfg = load_hw("tiny", [])
    path = tmp_path / "prog.bin"
    compile_from_golden(cfg, "bitnet-tiny", 8, 3, path, seed=0)
    r = verify_chip(cfg, path, "tiny", [])
    assert r.ok and r.chip_cycles == r.sim_cycles == 53_611
    assert r.lop_engine[:4] == (12, 12 * 8, 0, 0) and r.lop_late == 0
    assert r.lop_fill == (12, 24)  # the codes from the LO-code reads' data beats: 9..11 keys, 72..88 bytes, 2 beats
    assert r.lop[:3] == (12, 192, 0)  # the program's gathers read the golden's selected rows, K and V
    n = r.kv_ind[0]
    assert n >= 2 * 12 and r.kv_ind == (n, n, 0)  # at least one K and one V word per group, all from the FIFO
    assert r.kv_chunks == 32 and r.kv_mismatches == 0
    assert r.qk == (16, 8, 8) and r.pv == (16, 8, 8)  # decode Q K^T and P V over the gathered rows on data too
