"""The chip's BoothFlex engine for ternary projection tiles (docs/rtl.md "Data path"): BoothFlex
(lowbit.rtl.booth, ternary mode) computing a tile from the same weight row groups and act words as a TINT
core.

A Booth beat takes 4 x width ternary x INT8 products per lane, `per` = 4 width / tree_width TINT words of
the row group and as many act words (DESIGN ASSUMPTION, checked by `booth_data_ok`: BoothFlex has as
many lanes as a TINT core and 4 width is a multiple of tree_width, so a TINT row group is a Booth row
group and a Booth beat is `per` consecutive TINT beats). Beat j of a pass reads weight units
w_addr + (g beats + j) per w_step .. (`per` words in one read) and act words a_addr + t a_stride + j per
.. (`per` read ports); element e = 4 u + r of the beat (Booth unit u, row r) is element e mod tree_width
of the beat's word e div tree_width, its storage code decoded to the {nz, sign} code BoothFlex's ternary
mode takes (code r in wb[2r+1:2r], rtl/booth.py). Cycles start -> done are sim.units.booth
booth_ternary_tile_cycles; results are the ternary BoothFlex golden (4 width products a beat, the
wrapping accumulator of sim.numerics, as lowbit/rtl/bench/booth_bench.py checks).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.booth import ROWS, BoothFlex
from lowbit.rtl.chip_data import TileWalk, psum_writes
from lowbit.rtl.common import COUNT_BITS, delay
from lowbit.sim.config import BoothConfig, TintConfig
from lowbit.sim.units.booth import booth_latency


def booth_data_ok(booth: BoothConfig, tint: TintConfig) -> str:
    """'' when ternary BoothFlex tiles can run on the TINT layout, else why not."""
    if booth.bit_serial or not booth.ternary_mode:
        return "BoothFlex is bit-serial or has no ternary mode"
    if booth.lanes != tint.lanes or (ROWS * booth.width) % tint.tree_width:
        return (f"BoothFlex's {booth.lanes} lanes x {ROWS * booth.width} elements a beat are not whole TINT "
                f"words of {tint.lanes} lanes x {tint.tree_width}")
    return ""


def booth_psum_layout(cfg: BoothConfig) -> data.StructLayout:
    return data.StructLayout({"acc": data.ArrayLayout(signed(cfg.acc_bits), cfg.lanes), "ovf": cfg.lanes})


class BoothEngine(wiring.Component):
    """BoothFlex with its address generators for ternary tiles (module docstring); ports as
    lowbit.rtl.chip_data.TintEngine's, with `per` act read ports."""

    def __init__(self, cfg: BoothConfig, tint: TintConfig, *, w_bits: int, a_bits: int, p_bits: int,
                 w_step: int = 1) -> None:
        self.cfg, self.tint, self.w_step = cfg, tint, w_step
        self.per = ROWS * cfg.width // tint.tree_width
        word = 2 * tint.lanes * tint.tree_width
        super().__init__({
            "start": In(1),
            "mode": In(1),  # 1: ternary (the engine's words are ternary tiles)
            "beats": In(COUNT_BITS),
            "groups": In(COUNT_BITS),
            "tokens": In(COUNT_BITS),
            "w_addr": In(w_bits),
            "a_addr": In(a_bits),
            "a_stride": In(COUNT_BITS),
            "p_addr": In(p_bits),
            "ready": Out(1),
            "done": Out(1),
            "done_next": Out(1),
            "w_raddr": Out(w_bits),
            "w_rdata": In(self.per * word),
            "a_raddr": Out(data.ArrayLayout(a_bits, self.per)),
            "a_rdata": In(data.ArrayLayout(data.ArrayLayout(signed(8), tint.tree_width), self.per)),
            "p_valid": Out(1),
            "p_addr_o": Out(p_bits),
            "p_acc": Out(data.ArrayLayout(signed(cfg.acc_bits), cfg.lanes)),
            "p_ovf": Out(cfg.lanes),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg, tw, per = self.cfg, self.tint.tree_width, self.per
        word = 2 * self.tint.lanes * tw
        m.submodules.core = core = BoothFlex(cfg)
        go = Signal()
        m.d.comb += go.eq(self.start & core.ready & (self.beats != 0) & (self.groups != 0) & (self.tokens != 0))
        walk = TileWalk(m, self, go, w_step=per * self.w_step, a_step=per)
        m.d.comb += self.done_next.eq(delay(m, walk.last_rd, booth_latency(cfg), "fin"))
        m.d.comb += self.w_raddr.eq(walk.wa)
        rd = Signal()  # a beat's words arrive this cycle (read in the previous one); idle cycles feed zeros
        m.d.sync += rd.eq(go | walk.busy)
        m.d.comb += [self.a_raddr[i].eq(walk.aa + i) for i in range(per)]
        m.d.comb += [core.start.eq(go), core.beats.eq(self.beats), core.passes.eq(self.groups * self.tokens),
                     core.mode.eq(self.mode), self.ready.eq(core.ready & ~walk.busy)]
        for lane in range(cfg.lanes):
            for u in range(cfg.width):
                codes = []
                for r in range(ROWS):
                    e = u * ROWS + r
                    lo = (e // tw) * word + 2 * (lane * tw + e % tw)
                    c = self.w_rdata[lo:lo + 2]  # storage code w + 1 -> {sign, nz} = {~c1 & ~c0, ~c0}
                    codes.append(Cat(~c[0] & rd, ~c[1] & ~c[0] & rd))
                    m.d.comb += core.act[(lane * cfg.width + u) * ROWS + r].eq(self.a_rdata[e // tw][e % tw])
                m.d.comb += core.wb[lane * cfg.width + u].eq(Cat(*codes))
        psum_writes(m, self, go, core)
        return m
