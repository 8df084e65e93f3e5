"""The SFU engines in the chip top (docs/rtl.md "Chip", "Data path"): their observation ports, the act buffer
and its writers, and the psum requantizers' wiring, for lowbit.rtl.chip.Chip.

Where the SFU is on data (lowbit.rtl.chip_sfu.sfu_data_ok) the act buffer the projection engines read is
written by the SFU's quantize engine, the per-head quantize behind the RoPE engine (lowbit.rtl.chip_rope)
and the softmax engine (lowbit.rtl.chip_softmax), one at a time (the SFU runs one word at a time), and by
the load port in the cycles none of them writes (chip_sfu.act_writes). The SFU's Q7.8 buffers and
statistics memories come from chip_sfu.sfu_engines, with the attention output's writer (lowbit.rtl.chip_av)
and the embedding writer (lowbit.rtl.chip_embed) behind them.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal, signed
from amaranth.lib import data
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out

from lowbit.rtl.chip_av import av_ports, av_signature
from lowbit.rtl.chip_booth import booth_ternary
from lowbit.rtl.chip_ctrl import STAT_DEPTH
from lowbit.rtl.chip_embed import embed_signature, embed_writer
from lowbit.rtl.chip_requant import RQ_BUFS, RQ_LOAD, requantizer
from lowbit.rtl.chip_rope import rope_engine, rope_signature
from lowbit.rtl.chip_sfu import act_ratio, act_writes, sfu_engines
from lowbit.rtl.chip_softmax import sm_observe, sm_signature
from lowbit.rtl.sfu_stream import STAT_BITS
from lowbit.sim.isa import C_BOOTH, C_FP4


def sfu_signature(cfg, d) -> dict:
    """The SFU engines' write ports the bench records: quantize to the act buffer (`sv`, `sa`, `sw`), RMSNorm
    to the Q7.8 buffer (`n*`) and its rows' amax (`m*`), the residual (`r*`) and the gating (`f*`)."""
    sn = (STAT_DEPTH - 1).bit_length()
    return {"sv": Out(1), "sa": Out(d.a_bits), "sw": Out(8 * cfg.sfu.lanes),
            "nv": Out(1), "na": Out(d.a_bits), "nw": Out(16 * cfg.sfu.lanes),
            "mv": Out(1), "ma": Out(sn), "mw": Out(STAT_BITS),
            "rv": Out(1), "ra": Out(d.a_bits), "rw": Out(16 * cfg.sfu.lanes),
            "fv": Out(1), "fa": Out(d.a_bits), "fw": Out(16 * cfg.sfu.lanes)}


def rq_signature(cfg, d, names: list[str]) -> dict:
    """Each requantizer's bank writes (lowbit.rtl.chip_requant): per engine queue in `names` the banks written
    (`qv_`), the destination (`qd_`), and per bank the address, element mask and Q7.8 word."""
    sig = {}
    for n in names:
        sig.update({f"qv_{n}": Out(2), f"qd_{n}": Out(3), f"qa0_{n}": Out(d.a_bits - 1),
                    f"qa1_{n}": Out(d.a_bits - 1), f"qm0_{n}": Out(cfg.sfu.lanes), f"qm1_{n}": Out(cfg.sfu.lanes),
                    f"qw0_{n}": Out(16 * cfg.sfu.lanes), f"qw1_{n}": Out(16 * cfg.sfu.lanes)})
    return sig


def engine_signature(chip) -> dict:
    """The observation ports of the attention output's writer, the embedding writer, the softmax engine and
    the RoPE engine, those the chip `chip` (lowbit.rtl.chip.Chip) has."""
    cfg, d = chip.cfg, chip.dims
    return {**(av_signature(cfg, d) if chip.av else {}), **embed_signature(cfg, d, chip.p),
            **(sm_signature(cfg, d) if chip.sm else {}), **(rope_signature(cfg, d) if chip.rope else {})}


def act_buffer(chip, m: Module, sfuq, dma_w, tw: int) -> tuple[Memory, Signal, object, dict]:
    """The act buffer (`d.a_depth` words of `tw` INT8) in `m`, written by the load port (queue len(queues)) and,
    where the SFU queue's controller `sfuq` runs words on data, by the SFU's engines (chip_sfu.sfu_engines,
    with the embedding writer behind dma_w's lanes, the attention output's ports, the RoPE and softmax
    engines); returns (act buffer, 1 in cycles an engine writes, the attention output's ports or None, the
    SFU's buffers (chip_sfu.sfu_engines, `qk` the RoPE engine's q / k buffer) or {})."""
    cfg, d = chip.cfg, chip.dims
    abuf = Memory(shape=data.ArrayLayout(signed(8), tw), depth=d.a_depth, init=[])
    m.submodules.abuf = abuf
    ratio = act_ratio(cfg) if sfuq is not None else 1  # SFU INT8 words an act word (chip_sfu.act_writes)
    aw = abuf.write_port(granularity=tw // ratio) if ratio > 1 else abuf.write_port()
    ld = chip.load_en & (chip.load_queue == len(chip.names))
    if sfuq is None:
        m.d.comb += [aw.en.eq(ld), aw.addr.eq(chip.load_addr[:d.a_bits]), aw.data.eq(chip.load_word[:8 * tw])]
        return abuf, Const(0, 1), None, {}
    nq = len(chip.names)
    av, emb = av_ports(cfg, d) if chip.av else None, embed_writer(chip, m, dma_w)
    rope, hq, qkb = rope_engine(chip, m, sfuq) if chip.rope else (None, None, None)
    chip.hq = hq  # its query writes also feed the LOP engine (chip_lop.lop_queries) and the score stage (chip_scores)
    q, rms, res, act, bufs = sfu_engines(m, cfg, d, sfuq, [chip.load_en & (chip.load_queue == nq + k)
                                                      for k in range(1, 7)], chip.load_addr, chip.load_word, av, emb,
                                         chip.load_en & (chip.load_queue == chip.lop_load() + 2) if chip.sm else None,
                                         (rope,) if rope else ())
    bufs["qk"] = qkb
    m.d.comb += [chip.nv.eq(rms.o_wen), chip.na.eq(rms.o_waddr), chip.nw.eq(rms.o_wdata),
                 chip.mv.eq(rms.a_wen), chip.ma.eq(rms.a_waddr), chip.mw.eq(rms.a_wdata),
                 chip.rv.eq(res.o_wen), chip.ra.eq(res.o_waddr), chip.rw.eq(res.o_wdata),
                 chip.fv.eq(act.o_wen), chip.fa.eq(act.o_waddr), chip.fw.eq(act.o_wdata)]
    sm = bufs["sm"]  # the softmax engine's INT8 probabilities (chip_softmax), in cycles the others do not write
    ws = [(q.o_wen, q.o_waddr, q.o_wdata.as_value())] + ([(hq.q_wen, hq.q_waddr, hq.q_wdata.as_value())] if hq
                                                         else []) + ([(sm.a_en, sm.a_addr, sm.a_data)] if sm else [])
    m.d.comb += [*act_writes(aw, ws, ld, chip.load_addr, chip.load_word, d.a_bits, 8 * tw, ratio),
                 chip.sv.eq(q.o_wen), chip.sa.eq(q.o_waddr), chip.sw.eq(q.o_wdata)]
    wrote = q.o_wen | rms.o_wen | rms.a_wen | res.o_wen | act.o_wen | (emb.x[0][0] if emb else 0) \
        | (hq.q_wen | hq.k_wen if hq else 0)
    return abuf, wrote | sm_observe(chip, m, sm), av, bufs


def rq_lanes(cfg, cls: int) -> tuple[int, int]:
    """(lanes, accumulator bits) of the psum word a requantizer behind a queue of class `cls` takes: the FP4
    core's (lowbit.rtl.chip_fp4.fp4_psum_layout), BoothFlex's, else a TINT core's."""
    if cls == C_FP4:
        return cfg.fp4.lanes, cfg.fp4.acc_bits
    return (cfg.booth.lanes, cfg.booth.acc_bits) if cls == C_BOOTH else (cfg.tint.lanes, cfg.tint.acc_bits)


def rq_engines(cfg, p, names, classes, kinds) -> list[str]:
    """The queues whose engines have a requantizer (lowbit.rtl.chip_requant), given the SFU on the data path:
    TINT, FP4 and BoothFlex queues on the data path (BoothFlex's where its ternary tiles run, booth_ternary)
    whose psum word fits the SFU's (rq_lanes <= sfu.lanes, lowbit.rtl.chip_requant.rq_lanes_ok), where the
    chip has multiplier memories (`p.mult_depth`)."""
    return [n for n, c, k in zip(names, classes, kinds, strict=True) if p.mult_depth and rq_lanes(cfg, c)[0]
            <= cfg.sfu.lanes and (k == "tint" or k == "booth" and booth_ternary(cfg))]


def rq_wiring(chip, m: Module, name: str, c, eng, bufs: dict):
    """The psum requantizer behind engine `eng` of queue `name` (controller `c`; lowbit.rtl.chip_requant)
    writing the SFU's buffers `bufs` it targets (RQ_BUFS), its multiplier memory at load queue
    len(queues) + RQ_LOAD + k, and its bank writes on the chip's `q*_<name>` ports; returns the requantizer."""
    cfg, d, p = chip.cfg, chip.dims, chip.p
    k = chip.rq_names.index(name)
    lanes, acc = rq_lanes(cfg, chip.classes[chip.names.index(name)])  # the FP4 core's words are 'tint' words
    rq = requantizer(m, name, c, eng, lanes, acc, cfg.sfu.lanes, d.a_bits, p.mult_depth, bufs["a"],
                     chip.load_en & (chip.load_queue == len(chip.names) + RQ_LOAD + k), chip.load_addr,
                     chip.load_word, c.word.tail_lanes if c.kind == "tint" else None)
    for dst, buf in RQ_BUFS.items():
        if bufs.get(buf) is not None:  # "v": the V quantizer's rows, where the chip has it (chip_vquant)
            bufs[buf].writer(rq, dst)
    m.d.comb += [getattr(chip, f"qv_{name}").eq(Cat(rq.w0_en, rq.w1_en)), getattr(chip, f"qd_{name}").eq(rq.w_dst)]
    for b in (0, 1):
        m.d.comb += [getattr(chip, f"qa{b}_{name}").eq(getattr(rq, f"w{b}_addr")),
                     getattr(chip, f"qm{b}_{name}").eq(getattr(rq, f"w{b}_mask")),
                     getattr(chip, f"qw{b}_{name}").eq(getattr(rq, f"w{b}_data"))]
    return rq


__all__ = ["act_buffer", "engine_signature", "rq_signature", "rq_wiring", "sfu_signature"]
