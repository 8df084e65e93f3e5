"""BoothFlex's ternary tiles on TINT row groups of another lane count (docs/rtl.md "Data path"; `vitallm`:
4-lane BoothFlex beside 6-lane TINT cores). Weights are in DRAM, and so in the weight buffer, in the TINT
core's tile order (lowbit.rtl.chip_data.tile_codes: row group of `tlanes` rows, beat, lane, element), one
layout per projection whatever engine runs a tile of it. A BoothFlex pass takes `lanes` rows: pass g of a
token holds rows lanes x g .. lanes x g + lanes - 1, the first of them lane o = lanes g mod tlanes of TINT
row group G = lanes g div tlanes, so with lanes <= tlanes its rows are in row groups G and G + 1.

DESIGN ASSUMPTION: a Booth beat is one TINT word (4 width = tree_width elements a lane), and BoothFlex has a
second weight read port (the weight buffer is a `BankedBuffer` whose banks give every read port its own
read): beat b of pass g reads word b of row group G (`a`) and of row group G + 1 (`b`), and lane l takes
TINT lane o + l of the first word, or o + l - tlanes of the second. Word b of row group G is at w_addr + G
beats w_step + b step(G), step the word's units (`w_step`, or `tail_step` in the tile's last row group,
`tgroups` - 1, whose words hold only its rows). Lanes of the second word past the tile's last row are never
taken (the tile's rows are whole passes), so the second read may fall past the tile.
"""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal

from lowbit.rtl.booth import ROWS
from lowbit.rtl.common import COUNT_BITS
from lowbit.sim.config import BoothConfig, TintConfig


def booth_regroup_ok(booth: BoothConfig, tint: TintConfig) -> str:
    """'' when ternary BoothFlex tiles can run on TINT row groups of another lane count (module docstring),
    else why not."""
    if booth.bit_serial or not booth.ternary_mode:
        return "BoothFlex is bit-serial or has no ternary mode"
    if ROWS * booth.width != tint.tree_width or booth.lanes > tint.lanes:
        return (f"a Booth beat's {ROWS * booth.width} elements are not one TINT word's {tint.tree_width}, or "
                f"BoothFlex's {booth.lanes} lanes exceed a TINT row group's {tint.lanes}")
    return ""


class RegroupWalk:
    """The two weight read addresses of a ternary tile's beats (module docstring), one beat a cycle from the
    start cycle `go` while `run`: `a`, `b` this cycle's addresses, `off` the lane offset o of the pass they
    belong to. `e` holds the tile fields beats, groups (passes a token), w_addr, tgroups and tail_step."""

    def __init__(self, m: Module, e, go, run, *, lanes: int, tlanes: int, w_step: int) -> None:
        wb, cb = len(e.w_addr), COUNT_BITS
        gs0 = (e.beats * w_step)[:wb]  # a full row group's units
        regs = {"b": Signal(cb), "g": Signal(cb), "G": Signal(cb), "o": Signal(range(tlanes)),
                "ga": Signal(wb), "ra": Signal(wb), "rb": Signal(wb)}
        start = {"b": 0, "g": 0, "G": 0, "o": 0, "ga": e.w_addr, "ra": e.w_addr, "rb": (e.w_addr + gs0)[:wb]}
        par = {"nb": Signal(cb), "ng": Signal(cb), "last": Signal(cb), "ts": Signal.like(e.tail_step),
               "w0": Signal(wb), "gs": Signal(wb)}
        pstart = {"nb": e.beats, "ng": e.groups, "last": e.tgroups - 1, "ts": e.tail_step, "w0": e.w_addr, "gs": gs0}
        for k, r in (*regs.items(), *par.items()):
            r.name = f"rg_{k}"
        cur = {k: Mux(go, v, regs[k]) for k, v in start.items()}
        cp = {k: Mux(go, v, par[k]) for k, v in pstart.items()}
        with m.If(go):
            m.d.sync += [par[k].eq(v) for k, v in pstart.items()]
        sa = Mux(cur["G"] == cp["last"], cp["ts"], w_step)
        sb = Mux(cur["G"] + 1 == cp["last"], cp["ts"], w_step)
        self.a, self.b, self.off = cur["ra"], cur["rb"], cur["o"]
        o2 = cur["o"] + lanes
        adv = o2 >= tlanes  # the next pass starts in the next row group
        ga2 = Mux(adv, cur["ga"] + cp["gs"], cur["ga"])[:wb]

        def put(**v):
            m.d.sync += [regs[k].eq(v.get(k, cur[k])) for k in regs]

        with m.If(run):
            with m.If(cur["b"] != cp["nb"] - 1):  # the next beat of the pass
                put(b=cur["b"] + 1, ra=(cur["ra"] + sa)[:wb], rb=(cur["rb"] + sb)[:wb])
            with m.Elif(cur["g"] != cp["ng"] - 1):  # the next pass, lanes rows on
                put(b=0, g=cur["g"] + 1, G=cur["G"] + adv, o=Mux(adv, o2 - tlanes, o2), ga=ga2, ra=ga2,
                    rb=(ga2 + cp["gs"])[:wb])
            with m.Else():  # the next token: the tile's first row group again
                put(b=0, g=0, G=0, o=0, ga=cp["w0"], ra=cp["w0"], rb=(cp["w0"] + cp["gs"])[:wb])


def regroup_lanes(m: Module, wa, wb, off, *, lanes: int, tlanes: int, tree_width: int) -> list:
    """Each Booth lane's `tree_width` 2-bit codes of a beat from the two TINT words read for it (`wa`, `wb`,
    lane after lane) and the pass's lane offset `off` (read with them: registered here)."""
    osel = Signal.like(off, name="rg_osel")
    m.d.sync += osel.eq(off)
    lb = 2 * tree_width
    src = [wa[lb * s:lb * (s + 1)] for s in range(tlanes)] + [wb[lb * s:lb * (s + 1)] for s in range(tlanes)]
    out = [Signal(lb, name=f"rg_lane{lane}") for lane in range(lanes)]
    for lane, x in enumerate(out):
        idx = osel + lane
        # every index the sum's width can hold (a whole case), those past the two words never taken
        m.d.comb += x.eq(Array(src + [Const(0, lb)] * ((1 << len(idx)) - len(src)))[idx])
    return out
