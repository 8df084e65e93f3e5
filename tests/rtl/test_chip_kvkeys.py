"""The RoPE engine's key words in the KV writes' source (lowbit.rtl.chip_kv.key_addr): each KV head of a RoPE
word's block lays its K rows out position after position at x_addr + kk x gstride x beats, on the Amaranth
simulator, and the loader's K writes of `vitallm` (blocks of both KV heads) read exactly the golden's rows
there."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("amaranth")

from lowbit.rtl.chip_kv import key_addr  # noqa: E402


def _walk(x_addr: int, beats: int, nh: int, grp: int, tokens: int, gaps: int) -> list[int]:
    """key_addr's address for every key word of one RoPE word (tokens x nh heads x beats words, in the per-head
    quantize's order), `gaps` idle cycles between words, then the same word again (the counters restart)."""
    from amaranth.hdl import Module, Signal
    from amaranth.lib import data
    from amaranth.sim import Simulator

    from lowbit.rtl.chip_rope import ROPE_ENG

    lay = data.StructLayout({"eng": 4, "x_addr": 10, "beats": 16, "hpp": 16, "nq": 16, "gstride": 10})
    word, go, kv = Signal(lay), Signal(), Signal()
    m = Module()
    a = key_addr(m, SimpleNamespace(go=go, word=word), kv)
    got: list[int] = []

    async def bench(ctx):
        for _ in range(2):
            ctx.set(word, {"eng": ROPE_ENG, "x_addr": x_addr, "beats": beats, "hpp": (grp + 1) * nh, "nq": grp * nh,
                           "gstride": tokens * grp})
            ctx.set(go, 1)
            await ctx.tick()
            ctx.set(go, 0)
            ctx.set(word, {"eng": 0, "x_addr": 0, "beats": 0, "hpp": 0, "nq": 0, "gstride": 0})  # latched
            for _ in range(tokens * nh * beats):
                ctx.set(kv, 1)
                got.append(ctx.get(a))
                await ctx.tick()
                ctx.set(kv, 0)
                for _ in range(gaps):
                    await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("x_addr,beats,nh,grp,tokens", [(0, 1, 2, 2, 4), (6, 4, 1, 2, 3), (3, 2, 2, 2, 3),
                                                        (0, 1, 2, 2, 1)])
def test_each_kv_heads_key_rows_lie_position_after_position(x_addr, beats, nh, grp, tokens):
    """`vitallm`'s blocks of 2 KV heads (1 word a head row; 4 prompt tokens, 1 decode token), `tiny`'s of one (4
    words a row), a 2-word two-head block: token t's key head kk, word x at x_addr + kk x T grp x beats + t x
    beats + x, back to back or with idle cycles between the words, twice."""
    want = [x_addr + kk * tokens * grp * beats + t * beats + x
            for t in range(tokens) for kk in range(nh) for x in range(beats)]
    assert len(set(want)) == len(want)
    assert _walk(x_addr, beats, nh, grp, tokens, 0) == want * 2
    assert _walk(x_addr, beats, nh, grp, tokens, 2) == want * 2


def test_vitallm_k_writes_read_their_kv_heads_golden_rows_from_the_rope_engine(tmp_path):
    """bitnet-tiny prefill 4 + decode 2 on `vitallm` (one RoPE word for both KV heads): every K write's source
    is the RoPE engine's, and its units, filled with the golden's key words (chip_rope's rp.k8, word
    (t nh + kk) beats + x) at key_addr's positions, are the write's bytes (the golden's kv_append.k8 rows);
    no row comes from the load port (the V rows are the V quantizer's, lowbit.rtl.chip_vquant)."""
    from lowbit.rtl.chip_golden import data_plan
    from lowbit.rtl.chip_image import build_image
    from lowbit.rtl.chip_model import compile_from_golden, model_contents
    from lowbit.sim.config import load_hw
    from lowbit.sim.isa import KV_BASE, LOP_BASE
    from lowbit.sim.program_io import ProgramReader

    cfg = load_hw("vitallm", [])
    path = tmp_path / "prog.bin"
    compile_from_golden(cfg, "bitnet-tiny", 4, 2, path, 0)
    img = build_image(path, cfg)
    model, _ = model_contents(img, cfg, ProgramReader(path).header.meta, 0)
    plan, why = data_plan(img, cfg, 0, model)
    assert why == ""
    kw, rp, n = plan.kvw, plan.rope, cfg.sfu.lanes
    upw, beats = n // plan.dims.unit_bytes, rp.beats
    assert kw.rope_rows == kw.lo_rows == 24 and kw.bench_rows == {} and len(kw.v_amax) == 24
    checked = 0
    for (step, layer), blocks in rp.blocks.items():
        (b,) = blocks
        assert b.nh == 2
        f = plan.sfu_fields[b.word]
        words = [w for x, w in _k8_of(rp, b)]
        src = {f["x_addr"] + kk * f["gstride"] * beats + t * beats + x: words[(t * b.nh + kk) * beats + x]
               for t in range(b.tokens) for kk in range(b.nh) for x in range(beats)}
        for (q, i), fl in kw.fields.items():
            w = img.words[q][i]
            if w.get("step") != step or not KV_BASE <= w["addr"] < LOP_BASE:
                continue
            plane, body = kw.expect[w["addr"]]
            spec = plan.model.spec
            lgv = (w["addr"] - KV_BASE) // spec.head_dim // spec.max_positions  # (layer, KV head) x 2 + plane
            if plane != "k" or lgv // 2 // spec.n_kv_heads != layer:
                continue
            a0 = fl["dbase"] // upw
            got = b"".join(src[a0 + j].to_bytes(n, "little") for j in range(w["nbytes"] // n))
            assert got == body
            checked += 1
    assert checked == 2 * 2 * 3  # K writes: 3 steps x 2 layers x 2 KV heads


def _k8_of(rp, blk) -> list[tuple[int, int]]:
    """The golden key words of RoPE block `blk` (rp.k8 is every block's in order, indices restarting at 0)."""
    per = blk.tokens * blk.nh * rp.beats
    start = 0
    for (_step, _layer), blocks in sorted(rp.blocks.items()):
        for b in blocks:
            if b is blk:
                return rp.k8[start:start + per]
            start += b.tokens * b.nh * rp.beats
    raise AssertionError("block not in the plan")
