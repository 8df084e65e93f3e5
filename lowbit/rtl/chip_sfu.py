"""The SFU on the chip's data path (docs/rtl.md "Data path", "SFU streams"): the quantize stream engine
(lowbit.rtl.sfu_stream.SfuQuantStream) behind the SFU queue, with the SFU's Q7.8 buffer and its
row-statistics memory, writing the INT8 act buffer the projection engines read.

An SFU word with `eng` 1 (lowbit.rtl.chip_ctrl.SFU_FIELDS, resolved by the loader, lowbit.rtl.chip_golden)
starts the engine on `rows` rows of `beats` Q7.8 words from `x_addr`, each row's amax read from the
statistics memory at `st_addr` + r, and the row's INT8 words written to the act buffer from `o_addr`; the
engine's `done_next` ends the word, in the cycle the program's fused quantize word ends
(rows x (beats + D_recip) + latency.quantize, lowbit.rtl.sfu_stream.stream_cycles). Every other SFU word
keeps its `cyc` (a timer in the same in-order queue).

The Q7.8 buffer holds `a_depth` words of `sfu.lanes` int16 (the act buffer's depth; sfu.lanes =
tint.tree_width, sfu_data_ok), the statistics memory `STAT_DEPTH` words of STAT_BITS; both
are written through the chip's load port (`ld_q78`, `ld_stat`; load queues len(queues) + 1 and + 2).
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib.memory import Memory

from lowbit.rtl.chip_ctrl import STAT_DEPTH
from lowbit.rtl.sfu_stream import QUANT_PIPE, STAT_BITS, SfuQuantStream, q78_word
from lowbit.sim.config import HwConfig
from lowbit.sim.numerics.sfu import SFU_IN_BITS


def sfu_data_ok(cfg: HwConfig) -> str:
    """'' when the SFU's quantize stream engine (lowbit.rtl.sfu_stream.SfuQuantStream) can write the act
    buffer of the data path, else why not: its INT8 word must be the act buffer's word (sfu.lanes =
    tint.tree_width, DESIGN ASSUMPTION: one buffer word a beat, no width converter) and sfu.latency.quantize
    must cover the engine's pipeline."""
    if not cfg.has("sfu") or not cfg.has("tint"):
        return "the design has no SFU or no TINT core"
    if cfg.sfu.lanes != cfg.tint.tree_width:
        return f"sfu.lanes {cfg.sfu.lanes} is not the act buffer word's tint.tree_width {cfg.tint.tree_width}"
    if cfg.sfu.op_latency("quantize") < QUANT_PIPE:
        return f"sfu.latency.quantize {cfg.sfu.op_latency('quantize')} is below the engine's {QUANT_PIPE} cycles"
    return ""


def sfu_quant(m: Module, cfg, dims, ctrl, ld_q78, ld_stat, ld_addr, ld_word) -> SfuQuantStream:
    """Instantiate the quantize engine, the Q7.8 buffer and the statistics memory in `m` behind the SFU
    queue's controller `ctrl` (lowbit.rtl.chip_ctrl.ComputeQueue, kind 'sfu'); returns the engine, whose
    `o_*` port the caller connects to the act buffer's write port."""
    n = cfg.sfu.lanes
    sb = (STAT_DEPTH - 1).bit_length()
    m.submodules.sfu_quant = q = SfuQuantStream(cfg.sfu, a_bits=dims.a_bits, q_bits=dims.a_bits, s_bits=sb)
    m.submodules.sfu_x = xbuf = Memory(shape=q78_word(n), depth=dims.a_depth, init=[])
    m.submodules.sfu_stat = stat = Memory(shape=SFU_IN_BITS, depth=STAT_DEPTH, init=[])
    xw, xr = xbuf.write_port(), xbuf.read_port()
    sw, sr = stat.write_port(), stat.read_port()
    w = ctrl.word
    m.d.comb += [xw.en.eq(ld_q78), xw.addr.eq(ld_addr[:dims.a_bits]), xw.data.eq(ld_word[:16 * n]),
                 sw.en.eq(ld_stat), sw.addr.eq(ld_addr[:sb]), sw.data.eq(ld_word[:SFU_IN_BITS]),
                 xr.addr.eq(q.x_raddr), q.x_rdata.eq(xr.data), sr.addr.eq(q.a_raddr),
                 q.a_rdata.eq(sr.data),
                 q.start.eq(ctrl.go), q.rows.eq(w.rows), q.beats.eq(w.beats), q.x_addr.eq(w.x_addr),
                 q.o_addr.eq(w.o_addr), q.a_addr.eq(w.st_addr),
                 ctrl.unit_ready.eq(q.ready), ctrl.unit_done.eq(q.done_next)]
    return q


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
    if i == 0:
        return False
    prev, w = words[i - 1], words[i]
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
    if rows > STAT_DEPTH or rows * beats > plan.dims.a_depth or stream_cycles(cfg.sfu, "quantize", rows, beats) != w["cyc"]:
        return False
    pad = np.zeros((rows, beats * n), np.int64)
    pad[:, :x.shape[1]] = x
    xs = [sum((int(v) & 0xFFFF) << (16 * j) for j, v in enumerate(r)) for r in pad.reshape(-1, n)]
    writes = [(a, v, 1) for a, v in enumerate(xs)] + [(r, int(amax[r]), 2) for r in range(rows)]
    if len(plan.act_writes.get(i - 1, [])) + len(writes) > prev["cyc"] - 2:
        return False
    plan.act_writes.setdefault(i - 1, []).extend(writes)
    qp = np.zeros((rows, beats * n), np.int64)
    qp[:, :q.shape[1]] = q
    plan.sfu_expect += [(a, act_word(v)) for a, v in enumerate(qp.reshape(-1, n))]
    plan.sfu_fields[i] = {"eng": 1, "rows": rows, "beats": beats, "x_addr": 0, "o_addr": 0, "st_addr": 0}
    plan.sfu_ops.append(f"step {step} {op}")
    plan.sfu_elems += int(q.size)
    return True
