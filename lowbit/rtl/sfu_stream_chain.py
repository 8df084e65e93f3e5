"""A decoder layer's norm chain on buffers: the residual add, RMSNorm and quantize stream engines of
rtl/sfu_stream.py and the FFN gating of rtl/sfu_stream_act.py (the producer of SubLN's ffn_sub_norm) sharing a Q7.8 buffer, a gain buffer, the row-statistics memory and an INT8 act buffer
(the way the chip instantiates them; docs/rtl.md "Data path", "SFU streams").

Ports shared by engines are combined as the chip's SFU queue runs them, one word after the other: read
addresses are ORed (an engine drives 0 when it does not read), writes go to the one engine writing that
cycle (an engine's writes land before its done cycle, and the next word starts no earlier). ``ld_*``
writes buffers before a run (`ld_sel`: 0 Q7.8, 1 gain, 2 statistics); ``rb_addr`` reads all three result
memories back (Q7.8, INT8, statistics) the cycle after.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from lowbit.rtl.sfu_stream import (
    STAT_BITS,
    SfuQuantStream,
    SfuResidualStream,
    SfuRmsNormStream,
    int8_word,
    q78_word,
)
from lowbit.rtl.sfu_stream_act import SfuActStream
from lowbit.sim.units.sfu import SfuConfig

ENGINE_FIELDS = {
    "act": ("g_addr", "u_addr", "o_addr", "st_addr", "fn", "gated"),
    "res": ("x_addr", "y_addr", "o_addr", "st_addr"),
    "rms": ("x_addr", "g_addr", "o_addr", "s_addr", "a_addr", "eps_q", "sd", "e_sd"),
    "q": ("x_addr", "o_addr", "a_addr"),
}


def _or(values):
    out = values[0]
    for v in values[1:]:
        out = out | v
    return out


class SfuNormChain(wiring.Component):
    def __init__(self, cfg: SfuConfig, *, depth: int = 256, g_depth: int = 64, s_depth: int = 64) -> None:
        self.cfg, self.depth, self.g_depth, self.s_depth = cfg, depth, g_depth, s_depth
        ab, gb, sb = ((d - 1).bit_length() for d in (depth, g_depth, s_depth))
        self.engines = {
            "act": SfuActStream(cfg, a_bits=ab, s_bits=sb),
            "res": SfuResidualStream(cfg, a_bits=ab, s_bits=sb),
            "rms": SfuRmsNormStream(cfg, a_bits=ab, g_bits=gb, s_bits=sb),
            "q": SfuQuantStream(cfg, a_bits=ab, q_bits=ab, s_bits=sb),
        }
        sig = {}
        for e, fields in ENGINE_FIELDS.items():
            eng = self.engines[e]
            for f in ("start", "rows", "beats", *fields):
                sig[f"{e}_{f}"] = In(len(getattr(eng, f)))
            sig[f"{e}_ready"], sig[f"{e}_done"] = Out(1), Out(1)
        n = cfg.lanes
        super().__init__({
            **sig, "ld_valid": In(1), "ld_sel": In(2), "ld_addr": In(ab), "ld_data": In(16 * n),
            "rb_addr": In(ab), "rb_q78": Out(q78_word(n)), "rb_int8": Out(int8_word(n)), "rb_stat": Out(STAT_BITS),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        n = self.cfg.lanes
        act, res, rms, q = (self.engines[k] for k in ("act", "res", "rms", "q"))
        m.submodules.act, m.submodules.res, m.submodules.rms, m.submodules.q = act, res, rms, q
        for e, fields in ENGINE_FIELDS.items():
            eng = self.engines[e]
            for f in ("start", "rows", "beats", *fields):
                m.d.comb += getattr(eng, f).eq(getattr(self, f"{e}_{f}"))
            m.d.comb += [getattr(self, f"{e}_ready").eq(eng.ready), getattr(self, f"{e}_done").eq(eng.done)]
        m.submodules.act16 = act16 = Memory(shape=q78_word(n), depth=self.depth, init=[])
        m.submodules.gain = gain = Memory(shape=q78_word(n), depth=self.g_depth, init=[])
        m.submodules.stats = stats = Memory(shape=STAT_BITS, depth=self.s_depth, init=[])
        m.submodules.act8 = act8 = Memory(shape=int8_word(n), depth=self.depth, init=[])
        ld = [self.ld_valid & (self.ld_sel == k) for k in range(3)]
        # Q7.8 buffer: read x (gate, x), y (up, y), readback; write gating / residual / rmsnorm / load
        px, py, prb = act16.read_port(), act16.read_port(), act16.read_port()
        m.d.comb += [px.addr.eq(_or([act.g_raddr, res.x_raddr, rms.x_raddr, q.x_raddr])),
                     py.addr.eq(act.u_raddr | res.y_raddr),
                     act.g_rdata.eq(px.data), res.x_rdata.eq(px.data), rms.x_rdata.eq(px.data), q.x_rdata.eq(px.data),
                     act.u_rdata.eq(py.data), res.y_rdata.eq(py.data),
                     prb.addr.eq(self.rb_addr), self.rb_q78.eq(prb.data)]
        w16 = act16.write_port()
        m.d.comb += [w16.en.eq(act.o_wen | res.o_wen | rms.o_wen | ld[0]),
                     w16.addr.eq(Mux(act.o_wen, act.o_waddr, Mux(res.o_wen, res.o_waddr,
                                                                 Mux(rms.o_wen, rms.o_waddr, self.ld_addr)))),
                     w16.data.eq(Mux(act.o_wen, act.o_wdata.as_value(), Mux(res.o_wen, res.o_wdata.as_value(),
                                     Mux(rms.o_wen, rms.o_wdata.as_value(), self.ld_data))))]
        wg, pg = gain.write_port(), gain.read_port()
        m.d.comb += [wg.en.eq(ld[1]), wg.addr.eq(self.ld_addr), wg.data.eq(self.ld_data),
                     pg.addr.eq(rms.g_raddr), rms.g_rdata.eq(pg.data)]
        ws, ps, psb = stats.write_port(), stats.read_port(), stats.read_port()
        m.d.comb += [ws.en.eq(act.st_wen | res.st_wen | rms.a_wen | ld[2]),
                     ws.addr.eq(Mux(act.st_wen, act.st_waddr, Mux(res.st_wen, res.st_waddr,
                                                                  Mux(rms.a_wen, rms.a_waddr, self.ld_addr)))),
                     ws.data.eq(Mux(act.st_wen, act.st_wdata, Mux(res.st_wen, res.st_wdata,
                                                                  Mux(rms.a_wen, rms.a_wdata, self.ld_data)))),
                     ps.addr.eq(rms.s_raddr | q.a_raddr), rms.s_rdata.eq(ps.data), q.a_rdata.eq(ps.data),
                     psb.addr.eq(self.rb_addr), self.rb_stat.eq(psb.data)]
        w8, p8 = act8.write_port(), act8.read_port()
        m.d.comb += [w8.en.eq(q.o_wen), w8.addr.eq(q.o_waddr), w8.data.eq(q.o_wdata),
                     p8.addr.eq(self.rb_addr), self.rb_int8.eq(p8.data)]
        return m


__all__ = ["SfuNormChain", "ENGINE_FIELDS"]
