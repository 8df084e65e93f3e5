"""The KV cache's writes on data (lowbit.rtl.chip_kv): the writer's beats against a Python model of the
source buffer, the LO-code bytes, and the loader's sources on bitnet-tiny."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("amaranth")

from lowbit.rtl.chip_kv import KvWriter, lo_bytes  # noqa: E402


def test_lo_bytes_pack_two_codes_a_byte_low_nibble_first():
    assert lo_bytes(np.array([1, 2, 15, 0, 7])) == bytes([0x21, 0x0F, 0x07])


def test_lo_code_is_the_goldens_for_every_int8():
    """The writer's leading-one code of each K byte against sim.numerics.lop.lo_code4 over all 256 values."""
    from amaranth.hdl import Module, Signal
    from amaranth.sim import Simulator

    from lowbit.rtl.chip_kv import lo_code
    from lowbit.sim.numerics.lop import lo_code4

    m = Module()
    x, c = Signal(8), Signal(4)
    m.d.comb += c.eq(lo_code(x))
    got = []

    async def bench(ctx):
        for v in range(256):
            ctx.set(x, v)
            got.append(ctx.get(c))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    want = lo_code4(np.arange(256).astype(np.uint8).view(np.int8)).tolist()
    assert got == want and 8 not in got


def test_writer_streams_each_write_as_beats_of_its_source_units_in_issue_order():
    """Two writes issued on two lanes in one cycle and two the next (one wrapping the buffer's end, one an
    LO-code write): a beat a cycle from 2 cycles after the first requests, the writes in issue order, the id of
    the request's slot on engine 1, the beat's units those at the write's source, an LO write's the
    leading-one codes of twice its units' bytes from its source (sim.numerics.lop.lo_code4)."""
    from amaranth.hdl import Module
    from amaranth.sim import Simulator

    from lowbit.rtl.chip_data import BankedBuffer

    depth, nb, ub, table = 32, 4, 8, 8
    rng = np.random.default_rng(3)
    mem = [int(x) for x in rng.integers(0, 256, size=depth)]
    m = Module()
    m.submodules.src = src = BankedBuffer(depth=depth, banks=nb, unit_bits=ub, word_units=(nb, nb))
    m.submodules.wr = w = KvWriter(engine=1, lanes=2, table=table, addr_bits=5, banks=nb, unit_bits=ub, id_bits=4)
    m.d.comb += [src.raddr[0].eq(w.raddr), w.rdata.eq(src.rdata0), src.raddr[1].eq(w.raddr1),
                 w.rdata1.eq(src.rdata1)]
    writes = [[(5, 3, 6, 0), (2, 29, 7, 0)], [(7, 10, 2, 0), (4, 12, 3, 1)]]  # per issue cycle: (slot, source
    # unit, units, an LO write: its units codes of twice as many source bytes)
    beats: list[tuple[int, int, list[int]]] = []

    async def bench(ctx):
        for a in range(depth):  # the source's contents
            ctx.set(src.wr_valid, 1)
            ctx.set(src.wr_addr, a)
            ctx.set(src.wr_count, 1)
            ctx.set(src.wr_data[0], mem[a])
            await ctx.tick()
        ctx.set(src.wr_valid, 0)
        for cyc in range(16):
            batch = writes[0] if cyc == 0 else writes[1] if cyc == 1 else []
            ctx.set(w.i_valid, (1 << len(batch)) - 1)
            ctx.set(w.i_lo, sum(x[3] << k for k, x in enumerate(batch)))
            for k, (slot, a, n, _) in enumerate(batch):
                ctx.set(w.i_slot[k], slot)
                ctx.set(w.i_addr[k], a)
                ctx.set(w.i_units[k], n)
            if ctx.get(w.wvalid):
                beats.append((cyc, ctx.get(w.wid), [int(x) for x in ctx.get(w.wdata)]))
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    from lowbit.sim.numerics.lop import lo_code4

    code = lo_code4(np.arange(256).astype(np.uint8).view(np.int8)).tolist()
    want = []
    for slot, a, n, lo in [x for b in writes for x in b]:
        for o in range(0, n, nb):
            if lo:  # byte j: the codes of source bytes 2j (low nibble) and 2j + 1
                ks = [mem[(a + 2 * o + i) % depth] for i in range(2 * nb)]
                want.append((2 + len(want), 1 << 3 | slot, [code[ks[2 * j]] | code[ks[2 * j + 1]] << 4
                                                            for j in range(nb)]))
            else:
                want.append((2 + len(want), 1 << 3 | slot, [mem[(a + o + j) % depth] for j in range(nb)]))
    assert beats == want  # 2 + 2 + 1 + 1 beats, back to back from 2 cycles after the first requests


@pytest.fixture(scope="module")
def tiny_plan(tmp_path_factory):
    """The data plan of bitnet-tiny prefill 2 + decode 3 on `tiny` (compiled from the golden's selections)."""
    from lowbit.rtl.chip_golden import data_plan
    from lowbit.rtl.chip_image import build_image
    from lowbit.rtl.chip_model import compile_from_golden, model_contents
    from lowbit.sim.config import load_hw
    from lowbit.sim.program_io import ProgramReader

    cfg = load_hw("tiny", [])
    path = tmp_path_factory.mktemp("kv") / "prog.bin"
    compile_from_golden(cfg, "bitnet-tiny", 2, 3, path, 0)
    img = build_image(path, cfg)
    model, _ = model_contents(img, cfg, ProgramReader(path).header.meta, 0)
    plan, why = data_plan(img, cfg, 0, model)
    assert why == ""
    return cfg, img, plan


def test_k_writes_read_the_rope_engines_keys_and_the_image_holds_no_written_row(tiny_plan):
    """Each step's K write of a KV head reads the source from its RoPE word's x_addr (that block's keys, position
    after position), its LO-code write the same K rows (the writer makes the codes), V writes the V quantizer's
    rows in the source's upper half (lowbit.rtl.chip_vquant), one after the other in program order, the k-th KV
    head k mod KV; the DRAM image holds zeros at every K/V row the program writes and the golden's bytes at none."""
    from lowbit.sim.isa import KV_BASE, LOP_BASE
    from lowbit.sim.kvcache import kv_addr, lo_addr

    cfg, img, plan = tiny_plan
    kq = img.queues.index("dma_kv")
    kw, s = plan.kvw, plan.model.spec
    upw = cfg.sfu.lanes // plan.dims.unit_bytes
    ropes = {(b.step, b.layer, b.g0): plan.sfu_fields[b.word]["x_addr"] for v in plan.rope.blocks.values() for b in v}
    k_writes = lo_writes = 0
    v_next, v_amax, jobs = kw.depth // 2, [], 0
    for (q, i), f in sorted(kw.fields.items()):
        w = img.words[q][i]
        assert q == kq and w["wr"] and f["dwords"] == w["nbytes"] // plan.dims.unit_bytes
        for layer in range(s.n_layers):
            for g in range(s.n_kv_heads):
                st = plan.model.run.steps[w["step"]]
                if w["addr"] == kv_addr(s, layer, g, False, st.start):
                    assert f["dbase"] == ropes[(w["step"], layer, g)] * upw
                    k_writes += 1
                if w["addr"] == kv_addr(s, layer, g, True, st.start):  # the quantizer's k-th job: head k mod KV
                    assert f["dbase"] == v_next and jobs % s.n_kv_heads == g
                    v_next, jobs = v_next + w["nbytes"] // plan.dims.unit_bytes, jobs + 1
                    v_amax += st.buffers[f"layers.{layer}.attn.kv_append.v_amax"][:, g].tolist()
                if w["addr"] == lo_addr(s, layer, g, st.start):
                    assert f["dbase"] == ropes[(w["step"], layer, g)] * upw and w["nbytes"] == len(st.ids) * 8
                    lo_writes += 1
    assert k_writes == lo_writes == 2 * 2 * 4 == len(kw.fields) // 3
    kv_rows = [a for a in plan.dram if KV_BASE <= a < LOP_BASE]
    assert kv_rows and all(plan.dram[a] == bytes(s.head_dim) and a in plan.kv_written for a in kv_rows)
    # every V row of the 5 positions x 2 layers x 2 KV heads from the quantizer, none through the load port
    assert kw.bench_rows == {} and kw.preload == [] and kw.rope_rows == kw.lo_rows == 20
    assert kw.v_amax == v_amax and len(v_amax) == 20 and v_next == kw.depth // 2 + 20 * 16 // 2
    assert kw.vquant == (4, 16, 2, 256, 2)  # the prompt's 2 tokens x 2 KV heads, head_dim, KV heads, positions, layers


def test_kv_compare_counts_each_differing_byte_and_a_missing_write(tiny_plan):
    from lowbit.rtl.chip_kv import kv_compare

    _, _, plan = tiny_plan
    kw = plan.kvw
    got = [[a, b.hex()] for a, (_, b) in kw.expect.items()]
    assert kv_compare(kw, got) == {"k": (320, 0), "v": (320, 0), "lo": (160, 0)}
    a0, (plane, b0) = next(iter(kw.expect.items()))
    bad = [[a0, (bytes([b0[0] ^ 1]) + b0[1:3] + bytes([b0[3] ^ 0x80]) + b0[4:]).hex()]] + got[1:]
    assert kv_compare(kw, bad)[plane][1] == 2
    assert kv_compare(kw, got[1:])[plane][1] == len(b0)



def test_softmax_words_read_their_amax_v_from_the_v_quantizers_scale_memory(tiny_plan):
    """Every softmax word on the engine reads its chunk's amax_v from the scale memory (lowbit.rtl.chip_vquant):
    its keys are positions 0 .. M - 1 of its layer and KV head (LOP keeps every key at K = 8), so its t_addr is 1 +
    the word (layer x KV + head) x 256 / 4 of 4-lane words, and the bench writes none of them."""
    cfg, _, plan = tiny_plan
    s, sm = plan.model.spec, plan.sm
    assert len(sm.fields) == 16 and sm.vs_rows == sm.rows == 40 and sm.writes == []
    for i, f in sm.fields.items():
        layer, g, pos = sm.keys[i]
        assert pos == list(range(len(pos))) and 2 <= len(pos) <= 5
        assert f["t_addr"] == 1 + (layer * s.n_kv_heads + g) * s.max_positions // cfg.sfu.lanes


def test_scale_of_is_the_v_rows_position_in_the_scale_memory():
    """chip_kv.scale_of (the bench's expected scale index where no softmax engine reads the V quantizer's scale
    memory; the chip's own, chip_vquant.scale_index, is compared with it on every V row by verify --chip) of every
    V row's DRAM address (sim.kvcache.kv_addr) of bitnet-tiny is (layer x KV + head) x max_positions + position."""
    from lowbit.rtl.chip_kv import scale_of
    from lowbit.sim.kvcache import kv_addr
    from lowbit.sim.modelspec import get_model

    s = get_model("bitnet-tiny")
    vq = (8, s.head_dim, s.n_kv_heads, s.max_positions, s.n_layers)
    got = {scale_of(kv_addr(s, layer, g, True, pos), vq) for layer in range(s.n_layers)
           for g in range(s.n_kv_heads) for pos in range(s.max_positions)}
    assert got == set(range(s.n_layers * s.n_kv_heads * s.max_positions))
    assert scale_of(kv_addr(s, 1, 1, True, 5), vq) == (s.n_kv_heads + 1) * s.max_positions + 5
