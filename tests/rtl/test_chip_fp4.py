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


def test_fp4_word_layout_is_pass_beat_lane_codes_then_scales():
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
    assert len(b) == 4 * 36
    w0 = int.from_bytes(b[:36], "little")
    assert [(w0 >> (4 * i)) & 15 for i in range(64)] == codes[0].tolist()
    assert [(w0 >> (256 + 8 * j)) & 255 for j in range(4)] == scales[0].tolist()
    mx = apply_sets(load_config("vitallm-fp4"), ["fp4.format=mxfp4", "fp4.elems_per_cycle=16", "fp4.lanes=1"]).fp4
    tm = mxfp4_quantize(rng.standard_normal((1, 40)))
    c, s = fp4_tile_words(tm, mx)  # a 32-element block spans two 16-element beats: its scale on both
    assert s[:, 0].tolist() == [tm.scales[0, 0], tm.scales[0, 0], tm.scales[0, 1]]
    assert c[2].tolist() == [*tm.codes[0, 32:40], *[0] * 8]


def _run_tile(cfg, t, a: np.ndarray, *, w_addr: int = 5, a_addr: int = 40, p_addr: int = 17):
    """Weight words -> fill port -> tile -> psum (module docstring); a: INT8 rows [tokens, k]. Rows past the
    tensor in the last group hold non-zero codes and scales: the engine's tail mask must drop them."""
    from amaranth.sim import Simulator

    lanes, e = cfg.lanes, cfg.elems_per_cycle
    rows, k = t.shape
    tokens = a.shape[0]
    groups, beats = -(-rows // lanes), -(-k // e)
    stride = beats + 1
    codes, scales = fp4_tile_words(t, cfg)
    tail = rows - (groups - 1) * lanes
    s = scales.shape[1] // lanes
    for w in range((groups - 1) * beats, groups * beats):
        codes[w, tail * e:] = 7    # +6
        scales[w, tail * s:] = 0x38  # 1.0 (E4M3) / 2^-71 (E8M0)
    wb = fp4_word_bits(cfg) // 8
    image = pack_fp4_words(codes, scales, cfg)
    dut = Fp4TileDatapath(cfg, depth=128)
    ap = np.zeros((tokens, beats * e), np.int64)
    ap[:, :k] = a
    out: dict = {}

    async def bench(ctx):
        for i in range(groups * beats):
            ctx.set(dut.fill_valid, 1)
            ctx.set(dut.fill_count, 1)
            ctx.set(dut.fill_addr, w_addr + i)
            ctx.set(dut.fill_data, int.from_bytes(image[i * wb:(i + 1) * wb], "little"))
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
                        ("tail_lanes", tail), ("w_addr", w_addr), ("a_addr", a_addr), ("p_addr", p_addr)):
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
