"""The FFN gating's stream engine with the sum-of-squares reduction of the SubLN that follows it: SiLU or ReLU^2
of the gate, times up (SwiGLU / ReLU^2-GLU), bit-exact with ``sim.numerics.sfu_elem.sfu_act`` (sigmoid table,
rounding and sources there) and cycle-exact with the program's activation word::

    cycles = rows * beats + latency.activation         (>= ACT_PIPE = 6)

The datapath is rtl/sfu_act.py's six stages with the read port's register as its input register: a beat read
in cycle c (gate word and up word on two read ports) is written at edge c + 5, and its row's S = sum y^2 (for
ffn_sub_norm, BitNet b1.58's SubLN before down_proj) at edge c + 6 with the row's last beat. Ports, timing and
addressing: rtl/sfu_stream.py's; ``fn`` 0 = silu, 1 = relu2; ``gated`` 0 ignores the up words.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import COUNT_BITS, delay
from lowbit.rtl.sfu_act import gating_lane
from lowbit.rtl.sfu_stream import STAT_BITS, pointer, q78_word, row_stat, stream_start, stream_validate
from lowbit.sim.units.sfu import SfuConfig

ACT_PIPE = 6


class SfuActStream(wiring.Component):
    def __init__(self, cfg: SfuConfig, *, a_bits: int, s_bits: int) -> None:
        stream_validate(cfg, "activation", ACT_PIPE)
        self.cfg = cfg
        w = q78_word(cfg.lanes)
        super().__init__({
            "start": In(1), "rows": In(COUNT_BITS), "beats": In(COUNT_BITS), "fn": In(1), "gated": In(1),
            "g_addr": In(a_bits), "u_addr": In(a_bits), "o_addr": In(a_bits), "st_addr": In(s_bits),
            "ready": Out(1), "done": Out(1), "done_next": Out(1),
            "g_raddr": Out(a_bits), "g_rdata": In(w), "u_raddr": Out(a_bits), "u_rdata": In(w),
            "o_wen": Out(1), "o_waddr": Out(a_bits), "o_wdata": Out(w),
            "st_wen": Out(1), "st_waddr": Out(s_bits), "st_wdata": Out(STAT_BITS),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        n = self.cfg.lanes
        go, wk = stream_start(m, self)
        fn_r, gated_r = Signal(), Signal()
        with m.If(go):
            m.d.sync += [fn_r.eq(self.fn), gated_r.eq(self.gated)]
        ga = pointer(m, go, self.g_addr, wk.valid, "ga")
        ua = pointer(m, go, self.u_addr, wk.valid, "ua")
        oa = pointer(m, go, self.o_addr, wk.valid, "oa")
        sa = pointer(m, go, self.st_addr, wk.last, "sa")
        m.d.comb += [self.g_raddr.eq(Mux(wk.valid, ga, 0)), self.u_raddr.eq(Mux(wk.valid, ua, 0))]

        def stage(v, name):
            r = Signal(v.shape(), name=name)
            m.d.sync += r.eq(v)
            return r

        # control travels with the data: ctl[k] is valid k cycles after the read
        ctl = [(wk.valid, wk.first, wk.last, Mux(go, self.fn, fn_r), Mux(go, self.gated, gated_r))]
        for s in range(5):
            ctl.append(tuple(stage(c, f"ctl{s}_{k}") for k, c in enumerate(ctl[-1])))
        for lane in range(n):  # 1: the read ports; then the standalone unit's lane datapath
            m.d.comb += self.o_wdata[lane].eq(gating_lane(
                m, lane, self.g_rdata[lane], self.u_rdata[lane], relu3=ctl[3][3], gated4=ctl[4][4], fn5=ctl[5][3],
                gated5=ctl[5][4]))
        v5, f5, l5 = ctl[5][0], ctl[5][1], ctl[5][2]
        m.d.comb += [self.o_wen.eq(v5), self.o_waddr.eq(delay(m, oa, 5, "oad"))]
        sq = [Signal(31, name=f"sq{i}") for i in range(n)]
        m.d.comb += [sq[i].eq(self.o_wdata[i] * self.o_wdata[i]) for i in range(n)]
        wen, val = row_stat(m, v5, f5, l5, sum(sq[1:], sq[0]), "sum", "ss")
        m.d.comb += [self.st_wen.eq(wen), self.st_waddr.eq(delay(m, sa, 6, "sad")), self.st_wdata.eq(val)]
        lat = self.cfg.op_latency("activation")
        m.d.comb += [self.done_next.eq(delay(m, wk.final, lat, "fin")), self.done.eq(delay(m, wk.final, lat + 1, "fin_d"))]
        return m


__all__ = ["ACT_PIPE", "SfuActStream"]
