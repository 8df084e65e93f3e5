"""The SFU on the chip's data path (docs/rtl.md "Data path", "SFU streams"): the residual, RMSNorm, quantize
and gating stream engines (lowbit.rtl.sfu_stream, sfu_stream_act) behind the SFU queue, with the SFU's Q7.8
buffers and row-statistics memories, the quantize engine writing the INT8 act buffer the projection engines
read.

An SFU word with `eng` set (lowbit.rtl.chip_ctrl.SFU_FIELDS, resolved by the loader here and in
lowbit.rtl.chip_golden) starts its engine: 1 quantize (`rows` rows of `beats` Q7.8 words from `x_addr`, each
row's amax read from the statistics memory at `st_addr` + r, INT8 words to the act buffer from `o_addr`),
2 RMSNorm, 3 residual add, 4 gating (gate and up from the buffers the psum requantizers write,
lowbit.rtl.chip_requant); the engine's `done_next` ends the word, in the cycle the program's word ends
(lowbit.rtl.sfu_stream.stream_cycles). Every other SFU word keeps its `cyc` (a timer in the same in-order
queue).

The Q7.8 buffers hold `a_depth` words of `sfu.lanes` int16 (the act buffer's depth; sfu.lanes =
tint.tree_width, sfu_data_ok), the statistics memories `STAT_DEPTH` words; the load port writes them at load
queues len(queues) + 1 .. + 6 (sfu_engines).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib.memory import Memory

from lowbit.rtl.chip_ctrl import STAT_DEPTH
from lowbit.rtl.chip_requant import Q78Banks
from lowbit.rtl.chip_softmax import softmax_engine
from lowbit.rtl.sfu_stream import (
    QUANT_PIPE,
    RESIDUAL_PIPE,
    RMSNORM_PIPE,
    STAT_BITS,
    SfuQuantStream,
    SfuResidualStream,
    SfuRmsNormStream,
    q78_word,
)
from lowbit.rtl.sfu_stream_act import ACT_PIPE, SfuActStream
from lowbit.sim.config import HwConfig
from lowbit.sim.numerics.sfu import SFU_IN_BITS


def act_ratio(cfg: HwConfig) -> int:
    """SFU INT8 words (sfu.lanes) in an act buffer word: 1 where the act word is a TINT beat (tint.tree_width =
    sfu.lanes), elems_per_cycle / sfu.lanes on an FP4 design without TINT core; 0 where it is no whole number."""
    tw = cfg.tint.tree_width if cfg.has("tint") else cfg.fp4.elems_per_cycle if cfg.has("fp4") else 0
    return tw // cfg.sfu.lanes if cfg.has("sfu") and tw and tw % cfg.sfu.lanes == 0 else 0


def sfu_data_ok(cfg: HwConfig) -> str:
    """'' when the SFU's quantize stream engine (lowbit.rtl.sfu_stream.SfuQuantStream) can write the act
    buffer of the data path, else why not: its INT8 word must be the act buffer's word (sfu.lanes =
    tint.tree_width, DESIGN ASSUMPTION: one buffer word a beat, no width converter) or, on an FP4 design
    without TINT core, a whole part of it (`act_ratio`: the FP4 core's elems_per_cycle a multiple of
    sfu.lanes, the quantize engine writing that part of the act word with a write enable per part), and
    sfu.latency.quantize must cover the engines' pipelines."""
    if not cfg.has("sfu") or not (cfg.has("tint") or cfg.has("fp4")):
        return "the design has no SFU or no TINT or FP4 core"
    if cfg.has("tint") and cfg.sfu.lanes != cfg.tint.tree_width:
        return f"sfu.lanes {cfg.sfu.lanes} is not the act buffer word's tint.tree_width {cfg.tint.tree_width}"
    if not act_ratio(cfg):
        return f"sfu.lanes {cfg.sfu.lanes} does not divide the FP4 act word's fp4.elems_per_cycle {cfg.fp4.elems_per_cycle}"
    for op, pipe in (("quantize", QUANT_PIPE), ("rmsnorm", RMSNORM_PIPE), ("elementwise", RESIDUAL_PIPE),
                     ("activation", ACT_PIPE)):
        if cfg.sfu.op_latency(op) < pipe:
            return f"sfu.latency.{op} {cfg.sfu.op_latency(op)} is below its stream engine's {pipe} cycles"
    return ""


def _halves(m: Module, name: str, shape, depth: int, wr: list, rd, ld, ld_addr, ld_word, bits: int,
            elems: int = 0, rd2=None, wide=()):
    """A memory of `depth` words as two half memories (the address's top bit picks one), so that one
    writer can write one half while the load port writes the other. `wr`: (enable, address, data) of the
    engine writers (at most one active a cycle), which win over the load port in their half, or (enable,
    address, data, element mask) where the words are `elems` elements with a write enable each (`elems` > 0);
    `rd`: the read address (engines OR theirs). Returns the read data (the half the address named, a cycle
    later); with `rd2`, a second read port's address, (that data, the second port's). `wide`: (enable, address,
    data) writers with a write port each (the embedding writer's beat, lowbit.rtl.chip_embed)."""
    hb = (depth // 2 - 1).bit_length()
    ones = (1 << elems) - 1 if elems else 1
    reads = [rd] if rd2 is None else [rd, rd2]
    tops = [Signal(name=f"{name}_top{k}") for k in range(len(reads))]
    m.d.sync += [t.eq(a[hb]) for t, a in zip(tops, reads, strict=True)]
    data_ = [[] for _ in reads]
    for h in range(2):
        mem = Memory(shape=shape, depth=depth // 2, init=[])
        m.submodules[f"sfu_{name}{h}"] = mem
        w_ = mem.write_port(granularity=1) if elems else mem.write_port()
        en, addr, dat = Mux(ld & (ld_addr[hb] == h), ones, 0), ld_addr[:hb], ld_word[:bits]
        for e, a, d, *mask in wr:
            hit = e & (a[hb] == h)
            en, addr, dat = Mux(hit, mask[0] if mask else ones, en), Mux(hit, a[:hb], addr), Mux(hit, d, dat)
        m.d.comb += [w_.en.eq(en), w_.addr.eq(addr), w_.data.eq(dat)]
        for e, a, d in wide:
            wp = mem.write_port(granularity=1) if elems else mem.write_port()
            m.d.comb += [wp.en.eq(Mux(e & (a[hb] == h), ones, 0)), wp.addr.eq(a[:hb]), wp.data.eq(d)]
        for k, a in enumerate(reads):
            r_ = mem.read_port()
            m.d.comb += r_.addr.eq(a[:hb])
            data_[k].append(r_.data)
    out = [Mux(t, d[1], d[0]) for t, d in zip(tops, data_, strict=True)]
    return out[0] if rd2 is None else tuple(out)


def sfu_engines(m: Module, cfg, dims, ctrl, ld, ld_addr, ld_word, av=None, emb=None, sm_ld=None, more=()):
    """Instantiate the residual, RMSNorm and quantize engines and their memories in `m` behind the SFU
    queue's controller `ctrl` (lowbit.rtl.chip_ctrl.ComputeQueue, kind 'sfu'): the norm's input buffer X (two
    halves; the residual adds in place there), the S memory (two halves), the gain buffer, the norm output
    buffer Y (the quantize engine's input), the amax memory and the residual's y buffer R; `ld[k]` writes
    load word `ld_word` at `ld_addr` into X, S, the gains, Y, amax or R (k = 0 .. 5). Every memory (half)
    has one engine writer at most, and the load port writes a half, memory or buffer no engine writes while
    it does (the loader's regions), so each has one write port (DESIGN ASSUMPTION). Returns (quantize,
    RMSNorm, residual, gating, buffers): the buffers the requantizers use (lowbit.rtl.chip_requant: `a` the amax
    memory, the two-bank Q7.8 buffers `r` (the residual's y), `gate` and `up` (the gating engine's inputs)); the
    caller connects the quantize engine's `o_*` port to the act buffer's write
    port. `av` (lowbit.rtl.chip_av.AvPorts): the attention output's writes into X (element-enabled) and S
    (read-modify-write: a second S read port). `emb` (lowbit.rtl.chip_embed.EmbedPorts): the step's input rows
    into X and their S. `sm_ld`: the load-port strobe of the softmax engine's memories, which it then
    holds (lowbit.rtl.chip_softmax; `buffers["sm"]`: its ends). `more`: further engines behind the queue
    (their `ready` and `done_next`: lowbit.rtl.chip_rope's)."""
    n = cfg.sfu.lanes
    sb, ab = (STAT_DEPTH - 1).bit_length(), dims.a_bits
    m.submodules.sfu_quant = q = SfuQuantStream(cfg.sfu, a_bits=ab, q_bits=ab, s_bits=sb)
    m.submodules.sfu_rms = r = SfuRmsNormStream(cfg.sfu, a_bits=ab, g_bits=ab, s_bits=sb)
    m.submodules.sfu_res = e = SfuResidualStream(cfg.sfu, a_bits=ab, s_bits=sb)
    m.submodules.sfu_act = f = SfuActStream(cfg.sfu, a_bits=ab, s_bits=sb)
    xw = [(e.o_wen, e.o_waddr, e.o_wdata.as_value()), (f.o_wen, f.o_waddr, f.o_wdata.as_value())]
    sw = [(e.st_wen, e.st_waddr, e.st_wdata), (f.st_wen, f.st_waddr, f.st_wdata)] + ([emb.s] if emb else [])
    wide = emb.x if emb else ()
    if av is None:
        xd = _halves(m, "x", q78_word(n), dims.a_depth, xw, r.x_raddr | e.x_raddr, ld[0], ld_addr, ld_word, 16 * n,
                     wide=wide)
        sd = _halves(m, "s", STAT_BITS, STAT_DEPTH, sw, r.s_raddr, ld[1], ld_addr, ld_word, STAT_BITS)
    else:
        xw = [*xw, (av.x_en, av.x_addr, av.x_data, av.x_mask)]
        xd = _halves(m, "x", q78_word(n), dims.a_depth, xw, r.x_raddr | e.x_raddr, ld[0], ld_addr, ld_word, 16 * n,
                     elems=n, wide=wide)
        sd, av_sd = _halves(m, "s", STAT_BITS, STAT_DEPTH, sw + [(av.s_en, av.s_addr, av.s_data)], r.s_raddr, ld[1],
                            ld_addr, ld_word, STAT_BITS, rd2=av.s_raddr)
        m.d.comb += av.s_rdata.eq(av_sd)
    sm = softmax_engine(m, cfg, dims, ctrl, sm_ld, ld_addr, ld_word) if sm_ld is not None else None
    mems = {k: Memory(shape=shape, depth=depth, init=[]) for k, shape, depth in (
        ("g", q78_word(n), dims.a_depth), ("y", q78_word(n), dims.a_depth), ("a", SFU_IN_BITS, STAT_DEPTH))}
    ybuf = Q78Banks(m, "r", n, dims.a_depth, ld[5], ld_addr, ld_word)  # the requantizers write it too
    gbuf, ubuf = (Q78Banks(m, k, n, dims.a_depth, None, ld_addr, ld_word) for k in ("gate", "up"))  # theirs alone
    ports = {}
    for k, mem in mems.items():
        m.submodules[f"sfu_{k}"] = mem
        ports[k] = mem.write_port(), mem.read_port()
    w_, _ = ports["g"]  # the load port's alone
    m.d.comb += [w_.en.eq(ld[2]), w_.addr.eq(ld_addr[:ab]), w_.data.eq(ld_word[:16 * n])]
    (yw, yr), (aw, ar) = ports["y"], ports["a"]
    m.d.comb += [yw.en.eq(r.o_wen | ld[3]), yw.addr.eq(Mux(r.o_wen, r.o_waddr, ld_addr[:ab])),
                 yw.data.eq(Mux(r.o_wen, r.o_wdata.as_value(), ld_word[:16 * n])),
                 aw.en.eq(r.a_wen | ld[4]), aw.addr.eq(Mux(r.a_wen, r.a_waddr, ld_addr[:sb])),
                 aw.data.eq(Mux(r.a_wen, r.a_wdata[:SFU_IN_BITS], ld_word[:SFU_IN_BITS])),
                 r.x_rdata.eq(xd), e.x_rdata.eq(xd), r.s_rdata.eq(sd),
                 ports["g"][1].addr.eq(r.g_raddr), r.g_rdata.eq(ports["g"][1].data),
                 e.y_rdata.eq(ybuf.reader(e.y_raddr)), f.g_rdata.eq(gbuf.reader(f.g_raddr)),
                 f.u_rdata.eq(ubuf.reader(f.u_raddr)),
                 yr.addr.eq(q.x_raddr), q.x_rdata.eq(yr.data), ar.addr.eq(q.a_raddr), q.a_rdata.eq(ar.data),
                 ctrl.unit_ready.eq(q.ready & r.ready & e.ready & f.ready & (sm.ready if sm else 1)
                                    & Cat(*(x.ready for x in more), 1).all()),
                 ctrl.unit_done.eq(q.done_next | r.done_next | e.done_next | f.done_next | (sm.done_next if sm else 0)
                                   | Cat(*(x.done_next for x in more), 0).any())]
    w = ctrl.word
    for eng, k in ((q, 1), (r, 2), (e, 3), (f, 4)):
        m.d.comb += [eng.start.eq(ctrl.go & (w.eng == k)), eng.rows.eq(w.rows), eng.beats.eq(w.beats),
                     eng.o_addr.eq(w.o_addr)]
        if eng is not f:
            m.d.comb += eng.x_addr.eq(w.x_addr)
    m.d.comb += [f.g_addr.eq(w.x_addr), f.u_addr.eq(w.y_addr), f.st_addr.eq(w.st_addr), f.fn.eq(w.fn[0]), f.gated.eq(w.fn[1])]
    m.d.comb += [q.a_addr.eq(w.st_addr), r.g_addr.eq(w.g_addr), r.s_addr.eq(w.st_addr), r.a_addr.eq(w.st_addr),
                 r.eps_q.eq(w.eps_q), r.sd.eq(w.sd), r.e_sd.eq(w.e_sd), e.y_addr.eq(w.y_addr),
                 e.st_addr.eq(w.st_addr)]
    return q, r, e, f, {"a": mems["a"], "r": ybuf, "gate": gbuf, "up": ubuf, "sm": sm}


def sfu_plan(plan, img, cfg, i: int, key: tuple[int, str], beats: int) -> bool:
    """Resolve SFU word `i` of `img` (quantize op key = (step, op), its rows `beats` act words each) onto the
    quantize engine, if it can run there: its input is the Q7.8 output of the SFU word before it (the norm
    that produces it, the golden's `<op>.out`), written with each row's amax (the golden's `<quant>.amax`,
    the statistic the norm reduces) through the load port in that word's cycles; its `cyc` must be the
    engine's (stream_cycles). Sets the word's data fields in `plan.sfu_fields`, the writes in
    `plan.act_writes` (load queue offsets 1: Q7.8, 2: statistics) and the expected INT8 words in
    `plan.sfu_expect`; False (nothing set) when it cannot."""
    import numpy as np

    from lowbit.rtl.chip_golden import act_word
    from lowbit.rtl.sfu_stream import stream_cycles
    from lowbit.sim.numerics.sfu import sfu_absmax_quantize

    words = img.words[plan.sfu_queue]
    if i == 0 or (i - 1) not in plan.sfu_norm:
        return False
    prev, w = words[i - 1], words[i]
    region, on_engine = plan.sfu_norm[i - 1]
    step, op = key
    bufs = plan.model.run.steps[step].buffers
    x, q, amax = bufs.get(f"{prev.get('op', '')}.out"), bufs.get(f"{op}.q"), bufs.get(f"{op}.amax")
    n = cfg.sfu.lanes
    if x is None or q is None or amax is None or prev.get("step") != step or x.shape != q.shape:
        return False
    rows = x.shape[0]
    want, wamax = sfu_absmax_quantize(x, 16)
    if not np.array_equal(want, q) or not np.array_equal(wamax[..., 0], amax):
        return False  # the word before is not this quantize's producer
    d, st = plan.dims, region * STAT_HALF
    if rows > STAT_HALF or rows * beats > d.a_depth or stream_cycles(cfg.sfu, "quantize", rows, beats) != w["cyc"]:
        return False
    if not on_engine:  # the norm's output and amax from the bench, in the norm word's cycles
        writes = [(a, v, 4) for a, v in enumerate(_words16(x, n, beats))]
        writes += [(st + r, int(amax[r]), 5) for r in range(rows)]
        if len(plan.act_writes.get(i - 1, [])) + len(writes) > prev["cyc"] - 2:
            return False
        plan.act_writes.setdefault(i - 1, []).extend(writes)
    qp = np.zeros((rows, beats * n), np.int64)
    qp[:, :q.shape[1]] = q
    plan.sfu_expect += [(a, act_word(v)) for a, v in enumerate(qp.reshape(-1, n))]
    plan.sfu_fields[i] = {"eng": 1, "rows": rows, "beats": beats, "x_addr": 0, "o_addr": 0, "st_addr": st}
    plan.sfu_ops.append(f"step {step} {op}")
    plan.sfu_elems += int(q.size)
    return True


STAT_HALF = STAT_DEPTH // 2  # the statistics memory's two regions (norms alternate between them)


def norm_input(spec, bufs: dict, op: str):
    """The golden's input of RMSNorm op `op` (sim.golden's step: the residual stream, the attention output
    before SubLN, the gating output before SubLN), or None."""
    parts = op.split(".")
    if op == "final_norm":
        return bufs.get(f"layers.{spec.n_layers - 1}.ffn_residual.out")
    if len(parts) != 3 or parts[0] != "layers":
        return None
    layer, name = int(parts[1]), parts[2]
    src = {"attn_norm": "embed.out" if layer == 0 else f"layers.{layer - 1}.ffn_residual.out",
           "attn_sub_norm": f"layers.{layer}.attn.av.out", "ffn_norm": f"layers.{layer}.attn_residual.out",
           "ffn_sub_norm": f"layers.{layer}.ffn.act.out"}.get(name)
    return bufs.get(src) if src else None


def _words16(a, n: int, beats: int) -> list[int]:
    """Rows of int16 values as Q7.8 buffer words (`beats` a row, element 0 in the low bits, tail lanes 0)."""
    import numpy as np

    pad = np.zeros((a.shape[0], beats * n), np.int64)
    pad[:, :a.shape[1]] = a
    return [sum((int(v) & 0xFFFF) << (16 * j) for j, v in enumerate(r)) for r in pad.reshape(-1, n)]


def sfu_norms(plan, img, cfg) -> None:
    """Put the SFU queue's RMSNorm words (SubLN and the final norm included) on the RMSNorm engine where they
    can run there (module docstring of sfu_plan for the quantize words after them). Norm k (in queue order)
    reads its input from X region k mod 2 of the Q7.8 buffer (words k mod 2 x a_depth / 2 ..) and its rows'
    S from statistics region k mod 2 (rows k mod 2 x STAT_HALF ..), writes its Q7.8 output to region O (from
    word a_depth) and each row's amax over its S. Its input, the golden's (norm_input), and the S of each
    row are written by the bench through the load port from the word after the last one using that region
    (its norm and the quantize reading the amax) until the norm starts (`plan.sfu_writes`: anchor word ->
    [(the norm word, writes)]), or before `start` (`plan.sfu_preload`) for a region's first norm. The gains,
    the deployed model's Q5.10 norms, are in the gain buffer, loaded before `start` too."""
    import numpy as np

    from lowbit.rtl.chip_embed import embed_plan
    from lowbit.rtl.sfu_stream import stream_cycles
    from lowbit.sim.numerics.sfu_reduce import rmsnorm_consts, sfu_rmsnorm

    words = img.words[plan.sfu_queue]
    d, n, spec = plan.dims, cfg.sfu.lanes, plan.model.spec
    last: list[int | None] = [None, None]
    gains: dict[str, int] = {}
    gnext = k = 0
    produced: set[int] = set()  # norm words whose input and S the residual engine writes
    last_y: list[int | None] = [None]  # the last residual word on the engine (it reads the R buffer)
    half = d.a_depth // 2

    def window(anchor: int | None, i: int, writes: list) -> bool:
        """Schedule `writes` from word `anchor` until word i starts (before `start` for anchor None)."""
        if anchor is None:
            plan.sfu_preload.extend(writes)
            return True
        room = sum(words[j]["cyc"] for j in range(anchor, i)) - 2 - sum(
            len(plan.act_writes.get(j, [])) + len(plan.av_writes.get(j, [])) + sum(len(g[1]) for g in plan.sfu_writes.get(j, []))
            for j in range(anchor, i))
        if anchor >= i or len(writes) > room:
            return False
        plan.sfu_writes.setdefault(anchor, []).append((i, writes))
        return True

    def residual(i: int, w: dict, op: str) -> None:
        """A residual word on the engine, adding in place in the X half of the norm that read its x, where
        the next norm (its output's reader) uses that half."""
        from lowbit.sim.numerics.requant import residual_add

        layer, kind = op.split(".")[1], op.split(".")[2].split("_")[0]
        src = next((j for j in range(i - 1, -1, -1) if words[j].get("op") == f"layers.{layer}.{kind}_norm"
                    and words[j].get("step") == w.get("step")), None)
        nxt = next((j for j in range(i + 1, len(words)) if words[j].get("op", "").endswith("_norm")), None)
        if src is None or nxt is None or not plan.sfu_norm.get(src, (0, False))[1]:
            return
        r = plan.sfu_norm[src][0]
        bufs = plan.model.run.steps[w.get("step", 0)].buffers
        x, out = norm_input(spec, bufs, f"layers.{layer}.{kind}_norm"), bufs.get(f"{op}.out")
        y = bufs.get(f"layers.{layer}." + ("attn.o.out" if kind == "attn" else "ffn.down.out"))
        if x is None or out is None or y is None or x.shape != out.shape or y.shape != out.shape or k % 2 != r:
            return
        rows, beats = out.shape[0], -(-out.shape[1] // n)
        if rows > STAT_HALF or rows * beats > half or not np.array_equal(residual_add(x, y), out) or \
                stream_cycles(cfg.sfu, "elementwise", rows, beats) != w["cyc"]:
            return
        proj = f"layers.{layer}." + ("attn.o" if kind == "attn" else "ffn.down")
        if (w.get("step", 0), proj) not in plan.rq_cover and not window(
                None if last_y[0] is None else last_y[0] + 1, i, [(a, v, 6) for a, v in enumerate(_words16(y, n, beats))]):
            return  # y from the bench (where the requantizers do not write it, lowbit.rtl.chip_requant)
        last_y[0] = last[r] = i
        produced.add(nxt)
        plan.sfu_fields[i] = {"eng": 3, "rows": rows, "beats": beats, "x_addr": r * half, "y_addr": 0,
                              "o_addr": r * half, "st_addr": r * STAT_HALF}
        plan.res_expect += [(r * half + a, v) for a, v in enumerate(_words16(out, n, beats))]
        plan.res_ops.append(f"step {w.get('step', 0)} {op}")
        plan.res_elems += int(out.size)

    def gating(i: int, w: dict, op: str) -> None:
        """A gating word on the engine (lowbit.rtl.sfu_stream_act): gate and up from the requantizers' buffers
        (lowbit.rtl.chip_requant), its output and rows' S into the X and S halves of the next norm (SubLN's
        ffn_sub_norm), which then gets no bench writes."""
        from lowbit.sim.numerics.sfu_elem import sfu_act

        layer, step = op.split(".")[1], w.get("step", 0)
        nxt = next((j for j in range(i + 1, len(words)) if words[j].get("op", "").endswith("_norm")), None)
        keys = [(step, f"layers.{layer}.ffn.{x}") for x in ("gate", "up")]
        if nxt is None or words[nxt].get("op") != f"layers.{layer}.ffn_sub_norm" or not all(
                k in plan.rq_cover for k in keys) or spec.ffn_act not in ("relu2_glu", "swiglu"):
            return
        bufs = plan.model.run.steps[step].buffers
        gate, up, out = (bufs.get(f"layers.{layer}.ffn.{x}") for x in ("gate.out", "up.out", "act.out"))
        fn = "relu2" if spec.ffn_act == "relu2_glu" else "silu"
        if gate is None or up is None or out is None or not np.array_equal(sfu_act(gate, up, fn), out):
            return
        rows, beats, r = out.shape[0], -(-out.shape[1] // n), k % 2
        if rows > STAT_HALF or rows * beats > half or stream_cycles(cfg.sfu, "activation", rows, beats) != w["cyc"]:
            return
        last[r] = i
        produced.add(nxt)
        plan.sfu_fields[i] = {"eng": 4, "rows": rows, "beats": beats, "x_addr": 0, "y_addr": 0, "o_addr": r * half,
                              "st_addr": r * STAT_HALF, "fn": int(fn == "relu2") | 2}
        plan.act_expect += [(r * half + a, v) for a, v in enumerate(_words16(out, n, beats))]
        plan.act_ops.append(f"step {step} {op}")
        plan.act_elems += int(out.size)

    for i, w in enumerate(words):
        op = w.get("op", "")
        if op.startswith("layers.") and op.endswith(".ffn.act"):
            gating(i, w, op)
        if op.endswith("_quant") and i > 0 and (i - 1) in plan.sfu_norm:
            last[plan.sfu_norm[i - 1][0]] = i  # the quantize reads its norm's statistics region
        if op.endswith(("attn_residual", "ffn_residual")) and op.startswith("layers."):
            residual(i, w, op)
        if not op.endswith("_norm"):
            continue
        r = k % 2
        k += 1
        plan.sfu_norm[i] = (r, False)
        first, anchor = last[r] is None, 0 if last[r] is None else last[r] + 1
        last[r] = i
        bufs = plan.model.run.steps[w.get("step", 0)].buffers
        x, y, g = norm_input(spec, bufs, op), bufs.get(f"{op}.out"), plan.model.dep.norms.get(op)
        if x is None or y is None or g is None or x.shape != y.shape:
            continue
        rows, dim = x.shape
        beats = -(-dim // n)
        if rows > STAT_HALF or rows * beats > d.a_depth // 2 or \
                stream_cycles(cfg.sfu, "rmsnorm", rows, beats) != w["cyc"] or \
                not np.array_equal(sfu_rmsnorm(x, g, spec.norm_eps), y):
            continue
        if op not in gains:
            gw = _words16(np.asarray(g)[None, :], n, beats)
            if gnext + len(gw) > d.a_depth:
                continue
            gains[op] = gnext
            plan.sfu_preload += [(gnext + j, v, 3) for j, v in enumerate(gw)]
            gnext += len(gw)
        writes = [(r * half + j, v, 1) for j, v in enumerate(_words16(x, n, beats))]
        writes += [(r * STAT_HALF + j, int((x[j].astype(np.int64) ** 2).sum()), 2) for j in range(rows)]
        if op == "layers.0.attn_norm" and embed_plan(plan, img, cfg, w, r, half, None if first else anchor - 1):
            writes = []  # X and S from the step's embedding read (lowbit.rtl.chip_embed)
        av = plan.av_cand.get((w.get("step", 0), int(op.split(".")[1]))) if op.endswith(".attn_sub_norm") else None
        if av is not None:  # X (and S) from the attention output's writer (lowbit.rtl.chip_av)
            writes = [] if av["s"] else [x_ for x_ in writes if x_[2] == 2]
        if i not in produced and writes and not window(None if first else anchor, i, writes):
            continue  # the region's first norm: its input before `start`
        eps_q, sd, e_sd = rmsnorm_consts(dim, spec.norm_eps)
        plan.sfu_fields[i] = {"eng": 2, "rows": rows, "beats": beats, "x_addr": r * (d.a_depth // 2),
                              "o_addr": 0, "st_addr": r * STAT_HALF, "g_addr": gains[op], "eps_q": eps_q,
                              "sd": sd, "e_sd": e_sd}
        plan.sfu_norm[i] = (r, True)
        if av is not None:
            plan.av_norm[(w.get("step", 0), int(op.split(".")[1]))] = r
        plan.norm_expect += [(j, v) for j, v in enumerate(_words16(y, n, beats))]
        plan.amax_expect += [(r * STAT_HALF + j, int(np.abs(y[j]).max())) for j in range(rows)]
        plan.norm_ops.append(f"step {w.get('step', 0)} {op}")
        plan.norm_elems += int(y.size)


def act_writes(aw, writers: list, ld, ld_addr, ld_word, a_bits: int, bits: int, ratio: int) -> list:
    """The statements of the act buffer's write port `aw` (`bits` wide; with `ratio` > 1 a write enable per
    SFU INT8 word): the SFU engines' `writers` ((enable, SFU word address, INT8 word): the quantize engine, the
    per-head quantize, the softmax engine; the SFU runs one word at a time, so at most one writes in a cycle),
    each word at SFU word address a being part a mod `ratio` of act word a div `ratio`, or, in the cycles none
    writes, the load port (`ld`: whole act words)."""
    lb = (ratio - 1).bit_length()
    en, addr, dat = Mux(ld, (1 << ratio) - 1, 0) if ratio > 1 else ld, ld_addr[:a_bits], ld_word[:bits]
    for e, a, d in reversed(writers):
        part = (1 << a[:lb]) if ratio > 1 else 1
        en, addr, dat = Mux(e, part, en), Mux(e, a >> lb if lb else a, addr), Mux(e, Cat(*[d] * ratio), dat)
    return [aw.en.eq(en), aw.addr.eq(addr), aw.data.eq(dat)]
