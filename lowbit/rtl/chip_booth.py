"""The chip's BoothFlex engine (docs/rtl.md "Data path"): ternary projection tiles (word `eng` 1: BoothFlex,
lowbit.rtl.booth, in ternary mode, from the same weight row groups and act words as a TINT core) and INT8
Q K^T and P V tiles (`eng` 2 and 3: BoothFlex's INT8 mode, queries or probabilities from the act buffer and
K or V rows from the kv buffer, addressed by `QkWalk`; lowbit.rtl.chip_attn and lowbit.rtl.chip_pv map them
onto the whole-model golden).

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

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.booth import ROWS, BoothFlex
from lowbit.rtl.chip_booth_regroup import RegroupWalk, regroup_lanes
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


def qk_data_ok(booth: BoothConfig, act_elems: int, unit_bytes: int) -> str:
    """'' when BoothFlex's INT8 Q K^T tiles can read the act and kv buffers (QkWalk) from act words of
    `act_elems` INT8 (booth_act), else why not."""
    if booth.bit_serial:
        return "BoothFlex is bit-serial"
    if act_elems % booth.width or (booth.width % unit_bytes and unit_bytes % booth.width):
        return (f"a Booth lane's {booth.width} INT8 elements a beat are not a whole part of a {act_elems}-element "
                f"act word and whole {unit_bytes}-byte kv units or a whole part of one")
    return ""


def booth_ternary(cfg) -> bool:
    """Whether BoothFlex's ternary projection tiles run on the data path: beside a TINT core, on its row
    groups or regrouped from TINT row groups of another lane count (lowbit.rtl.chip_booth_regroup)."""
    from lowbit.rtl.chip_booth_regroup import booth_regroup_ok

    return cfg.has("booth") and cfg.has("tint") and (not booth_data_ok(cfg.booth, cfg.tint)
                                                     or not booth_regroup_ok(cfg.booth, cfg.tint))


def booth_act(cfg) -> tuple[int, int]:
    """(elements, ratio): the INT8 act word BoothFlex reads and how many of them an act buffer word holds.
    Beside a TINT core a TINT beat (tree_width), ratio 1; on an FP4 design without one (the act word the FP4
    core's elems_per_cycle) the SFU's INT8 word (sfu.lanes), the words its quantize, RoPE and softmax
    engines write, lowbit.rtl.chip_sfu.act_ratio of them an act word (ratio 0: no whole number, no data path
    for BoothFlex). DESIGN ASSUMPTION: BoothFlex addresses the act buffer in its own words (address a: part
    a mod ratio of act word a div ratio, `half_word_reads`), as the SFU's engines write it."""
    from lowbit.rtl.chip_sfu import act_ratio

    if cfg.has("tint"):
        return cfg.tint.tree_width, 1
    return (cfg.sfu.lanes, act_ratio(cfg)) if cfg.has("fp4") and cfg.has("sfu") else (0, 0)


def booth_data(cfg) -> bool:
    """Whether the chip's data path includes BoothFlex: its ternary tiles beside a TINT core (booth_ternary),
    or, on an FP4 design without TINT cores, its attention tiles only (no weight read port) where its act
    words are whole parts of the act buffer's (booth_act)."""
    return booth_ternary(cfg) or (cfg.has("booth") and not cfg.has("tint") and booth_act(cfg)[1] > 0)


def half_word_reads(m: Module, port, addr, rdata, elems: int, ratio: int) -> list:
    """The statements of an act read port `port` (synchronous: data the cycle after the address) serving
    BoothFlex's word address `addr` with its `elems`-element word `rdata` (booth_act): act word addr div
    ratio, part addr mod ratio of it selected by that part registered with the read, so the word arrives in
    the same cycle a read port of BoothFlex's own words would deliver it."""
    if ratio == 1:
        return [port.addr.eq(addr), rdata.eq(port.data)]
    lb = (ratio - 1).bit_length()
    part = Signal(lb)
    m.d.sync += part.eq(addr[:lb])
    return [port.addr.eq(addr >> lb), rdata.eq(port.data.as_value().word_select(part, 8 * elems))]


class QkWalk:
    """Addresses of an attention tile's beats (modes 2 and 3, module docstring of BoothEngine). Q K^T (mode
    2): outputs (t, h, j), query t of the tile's `nq`, head h of the group's `grp`, key j of the pos0 + t + 1
    it attends to (chunk rows 0 .. pos0 + t: causal prefill, or a decode step's gathered keys), in that
    order, `lanes` consecutive outputs a pass, `beats` beats of `width` elements a pass. Lane l reads act
    word a_addr + (t grp + h) a_stride + b div per_word (element (b mod per_word) width) and kv units k_addr
    + j k_stride + (b div kdiv) kstep (`kdiv` beats a unit where a lane's `width` elements are part of one:
    beat b's at byte (b mod kdiv) width, `ksel`). Lane states are signals, each the one before stepped once,
    so the chain stays linear in the lanes. P V (mode 3, `pv`): outputs (t, h, d), d of the head's k_stride x unit bytes dimensions; lane l reads the probability row (t, h) as Q K^T
    reads a query row, and for element u of beat b the V unit k_addr + (b width + u) k_stride + d div unit
    bytes (`vaddr`, byte `vsel`). A P V pass takes ceil((pos0 + t + 1) / width) beats, t its last valid
    lane's query (`pass_beats`: the keys of its longest row, query t attending to chunk rows 0 .. pos0 + t,
    sim.attention.pv_pass_keys); `pass_end` marks a pass's last beat. A lane past the tile's
    last output is not `valid` (zero operands)."""

    def __init__(self, m: Module, e, go, pv, *, lanes: int, per_word: int, kstep: int, width: int = 1,
                 lub: int = 0, kdiv: int = 1) -> None:
        cb = COUNT_BITS
        ab, kb = len(e.a_addr), len(e.k_addr)
        prm = {n: Signal(len(getattr(e, n)), name=f"qk_{n}") for n in ("nq", "grp", "pos0", "beats", "a_stride",
                                                                        "k_addr", "k_stride")}
        pv_reg = Signal(name="qk_pv")
        cur = {n: Mux(go, getattr(e, n), r) for n, r in prm.items()}
        pvc = Mux(go, pv, pv_reg)
        with m.If(go):
            m.d.sync += [r.eq(getattr(e, n)) for n, r in prm.items()]
            m.d.sync += pv_reg.eq(pv)
        dlast = ((cur["k_stride"] << lub) - 1)[:cb]

        def nxt(st):
            v, t, h, j, q, k = st
            last_j, last_h = Mux(pvc, j == dlast, j == cur["pos0"] + t), h == cur["grp"] - 1
            return (v & ~(last_j & last_h & (t + 1 == cur["nq"])),
                    Mux(last_j & last_h, t + 1, t)[:cb], Mux(last_j, Mux(last_h, 0, h + 1), h)[:cb],
                    Mux(last_j, 0, j + 1)[:cb], Mux(last_j, q + cur["a_stride"], q)[:ab],
                    Mux(last_j, cur["k_addr"], k + cur["k_stride"])[:kb])

        shapes = (1, cb, cb, cb, ab, kb)

        def named(st, what):
            """A lane state as signals: each lane's state is the previous lane's stepped once, so the chain
            over the lanes stays linear (a stepped expression uses its input's fields several times)."""
            out = [Signal(w, name=f"qk{what}_{f}") for w, f in zip(shapes, "vthjqk", strict=True)]
            m.d.comb += [o.eq(x) for o, x in zip(out, st, strict=True)]
            return out

        regs = [[Signal(w, name=f"qk{lane}_{f}") for w, f in zip(shapes, "vthjqk", strict=True)]
                for lane in range(lanes)]
        init, st = [], (Const(1, 1), Const(0, cb), Const(0, cb), Const(0, cb), e.a_addr, e.k_addr)
        for lane in range(lanes):
            init.append(st)
            if lane + 1 < lanes:
                st = named(nxt(st), f"i{lane + 1}")
        lanes_cur = [named([Mux(go, a, r) for a, r in zip(i, rg, strict=True)], f"c{lane}")
                     for lane, (i, rg) in enumerate(zip(init, regs, strict=True))]
        b_reg = Signal(cb, name="qk_b")
        b = Mux(go, 0, b_reg)
        self.b, self.lanes = b, lanes_cur
        lg = (per_word - 1).bit_length()
        self.qaddr = [(ln[4] + (b >> lg))[:ab] for ln in lanes_cur]
        self.qsel = [b[:lg] if lg else Const(0, 1) for _ in lanes_cur]
        lkd = (kdiv - 1).bit_length()
        self.kaddr = [(ln[5] + (b >> lkd) * kstep)[:kb] for ln in lanes_cur]
        self.ksel = b[:lkd] if lkd else Const(0, 1)
        # P V: element u of beat b is key b width + u; d div unit bytes its unit in the key's V row
        self.vaddr = [[(cur["k_addr"] + (b * width + u) * cur["k_stride"] + (ln[3] >> lub))[:kb]
                       for u in range(width)] for ln in lanes_cur]
        self.vsel = [ln[3][:lub] if lub else Const(0, 1) for ln in lanes_cur]
        self.valid = [ln[0] for ln in lanes_cur]
        # P V: the pass's beats from its last valid lane's query (lanes' queries rise; a lane past the tile's
        # outputs has t >= nq)
        t_last = lanes_cur[-1][1]
        t_max = Mux(t_last >= cur["nq"], cur["nq"] - 1, t_last)[:cb]
        keys = (cur["pos0"] + t_max + 1)[:cb + 1]
        lw = (width - 1).bit_length()
        self.pass_beats = Signal(cb, name="qk_pass_beats")
        m.d.comb += self.pass_beats.eq((keys + width - 1) >> lw if width == 1 << lw else (keys + width - 1) // width)
        lim = Mux(pvc, self.pass_beats, cur["beats"])
        self.run = Signal(name="qk_run")
        self.pass_end = Signal(name="qk_pass_end")
        m.d.comb += self.pass_end.eq(self.run & (b == lim - 1))
        nexts, st = [], tuple(lanes_cur[-1])  # the next pass's lane states: each lane `lanes` outputs on
        for lane in range(lanes):
            st = named(nxt(st), f"n{lane}")
            nexts.append(st)
        with m.If(self.run):
            with m.If(b != lim - 1):
                m.d.sync += b_reg.eq(b + 1)
                for ln, rg in zip(lanes_cur, regs, strict=True):
                    m.d.sync += [r.eq(x) for r, x in zip(rg, ln, strict=True)]
            with m.Else():  # the next pass: each lane `lanes` outputs on
                m.d.sync += b_reg.eq(0)
                for rg, st in zip(regs, nexts, strict=True):
                    m.d.sync += [r.eq(x) for r, x in zip(rg, st, strict=True)]


class BoothEngine(wiring.Component):
    """BoothFlex with its address generators for ternary tiles (module docstring); ports as
    lowbit.rtl.chip_data.TintEngine's, with `per` act read ports. With `qk` (kv buffer address bits, kv
    units a lane reads a beat, their bits): mode 2 runs INT8 Q K^T tiles (QkWalk: Q from the act buffer,
    K rows from the kv buffer, one kv read port a lane), with max(per, lanes) act read ports, and mode 3 P V
    tiles (V units through a read port a lane and element), whose `beats` are the tile's in all (its ragged
    passes' beats summed: the program's cycles less the latency), `groups` its passes, `tokens` 1 and
    `pos0` its first query's keys in the chunk less one. Without `tint` (an FP4 design, booth_data) the
    engine runs attention tiles only, from act words of `act_elems` INT8 (booth_act): no weight read port,
    one act read port a lane."""

    def __init__(self, cfg: BoothConfig, tint: TintConfig | None, *, w_bits: int, a_bits: int, p_bits: int,
                 w_step: int = 1, qk: tuple[int, int, int] | None = None, regroup: bool = False,
                 act_elems: int = 0) -> None:
        self.cfg, self.tint, self.w_step, self.qk, self.regroup = cfg, tint, w_step, qk, regroup
        self.aw = tint.tree_width if tint is not None else act_elems
        self.per = ROWS * cfg.width // tint.tree_width if tint is not None else 1
        self.n_act = max(self.per, cfg.lanes) if qk else self.per
        word = 2 * tint.lanes * tint.tree_width if tint is not None else 0
        assert tint is not None or (qk and not regroup), "an engine without ternary tiles runs attention tiles"
        qks = {}
        if qk:
            k_bits, kstep, unit_bits = qk
            nv = cfg.lanes * cfg.width  # P V: a kv read port per lane and element of a beat (one key each)
            qks = {"nq": In(COUNT_BITS), "grp": In(COUNT_BITS), "pos0": In(COUNT_BITS), "k_addr": In(k_bits),
                   "k_stride": In(COUNT_BITS), "k_raddr": Out(data.ArrayLayout(k_bits, cfg.lanes)),
                   "k_rdata": In(data.ArrayLayout(kstep * unit_bits, cfg.lanes)),
                   "v_raddr": Out(data.ArrayLayout(k_bits, nv)), "v_rdata": In(data.ArrayLayout(unit_bits, nv))}
        if regroup:  # ternary passes over TINT row groups of another lane count (chip_booth_regroup)
            qks.update({"w_raddr2": Out(w_bits), "w_rdata2": In(word), "tgroups": In(COUNT_BITS),
                        "tail_step": In(range(w_step + 1))})
        super().__init__({
            **qks,
            "start": In(1),
            "mode": In(2),  # 1: a ternary tile, 2: an INT8 Q K^T tile, 3: an INT8 P V tile (with `qk`)
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
            **({"w_raddr": Out(w_bits), "w_rdata": In(self.per * word)} if tint is not None else {}),
            "a_raddr": Out(data.ArrayLayout(a_bits, self.n_act)),
            "a_rdata": In(data.ArrayLayout(data.ArrayLayout(signed(8), self.aw), self.n_act)),
            "p_valid": Out(1),
            "p_addr_o": Out(p_bits),
            "p_acc": Out(data.ArrayLayout(signed(cfg.acc_bits), cfg.lanes)),
            "p_ovf": Out(cfg.lanes),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg, tw, per, tern_on = self.cfg, self.aw, self.per, self.tint is not None
        word = 2 * self.tint.lanes * tw if tern_on else 0
        m.submodules.core = core = BoothFlex(cfg)
        go = Signal()
        m.d.comb += go.eq(self.start & core.ready & (self.beats != 0) & (self.groups != 0) & (self.tokens != 0))
        # a P V tile (mode 3) is `beats` beats in all, its `groups` passes ragged (QkWalk.pass_beats): the core
        # runs one-beat passes and the engine adds a pass's beats (below); the walk counts the tile's beats
        pv_go = self.mode == 3
        one = Const(1, COUNT_BITS)
        walk = TileWalk(m, SimpleNamespace(w_addr=self.w_addr, a_addr=self.a_addr, a_stride=self.a_stride,
                                           beats=self.beats, groups=Mux(pv_go, one, self.groups),
                                           tokens=Mux(pv_go, one, self.tokens)),
                        go, w_step=per * self.w_step, a_step=per)
        m.d.comb += self.done_next.eq(delay(m, walk.last_rd, booth_latency(cfg), "fin"))
        if tern_on:
            rd = Signal()  # a beat's words arrive this cycle (read in the previous one); idle cycles feed zeros
            m.d.sync += rd.eq(go | walk.busy)
        if self.regroup:
            tl = self.tint.lanes
            rw = RegroupWalk(m, self, go, go | walk.busy, lanes=cfg.lanes, tlanes=tl, w_step=self.w_step)
            m.d.comb += [self.w_raddr.eq(rw.a), self.w_raddr2.eq(rw.b)]
            lane_codes = regroup_lanes(m, self.w_rdata, self.w_rdata2, rw.off, lanes=cfg.lanes, tlanes=tl,
                                       tree_width=tw)
        elif tern_on:
            m.d.comb += self.w_raddr.eq(walk.wa)
        qk = Signal()  # the running tile is an attention tile (Q K^T or P V, latched at its start)
        pvm = Signal()  # ... a P V tile
        with m.If(go):
            m.d.sync += [qk.eq(self.mode[1]), pvm.eq(self.mode == 3)]
        m.d.comb += [core.start.eq(go), core.beats.eq(Mux(pv_go, one, self.beats)),
                     core.passes.eq(Mux(pv_go, self.beats, self.groups * self.tokens)),
                     core.mode.eq(self.mode == 1), self.ready.eq(core.ready & ~walk.busy)]
        out = SimpleNamespace(out_valid=core.out_valid, out_acc=core.out_acc, out_ovf=core.out_ovf, done=core.done)
        if self.qk:
            k_bits, kstep, unit_bits = self.qk
            lub = (unit_bits // 8 - 1).bit_length()
            kdiv = max(1, unit_bits // 8 // cfg.width)  # beats a kv unit (a lane's elements part of one)
            qw = QkWalk(m, self, go & self.mode[1], self.mode == 3, lanes=cfg.lanes, per_word=tw // cfg.width,
                        kstep=kstep, width=cfg.width, lub=lub, kdiv=kdiv)
            if kdiv > 1:  # the beat's bytes in the kv units read in the cycle before
                ksel = Signal(len(qw.ksel), name="ksel")
                m.d.sync += ksel.eq(qw.ksel)
            m.d.comb += qw.run.eq((go & self.mode[1]) | (walk.busy & qk))
            vsel = [Signal(len(qw.vsel[0]), name=f"vsel{lane}") for lane in range(cfg.lanes)]
            m.d.sync += [x.eq(y) for x, y in zip(vsel, qw.vsel, strict=True)]
            m.d.comb += [self.v_raddr[lane * cfg.width + u].eq(qw.vaddr[lane][u]) for lane in range(cfg.lanes)
                         for u in range(cfg.width)]
            sel = [Signal(len(qw.qsel[0]), name=f"qsel{lane}") for lane in range(cfg.lanes)]
            val = [Signal(name=f"qval{lane}") for lane in range(cfg.lanes)]
            m.d.sync += [x.eq(y) for x, y in zip(sel, qw.qsel, strict=True)]
            m.d.sync += [x.eq(y & (go | walk.busy)) for x, y in zip(val, qw.valid, strict=True)]
            m.d.comb += [self.k_raddr[lane].eq(qw.kaddr[lane]) for lane in range(cfg.lanes)]
            out = pv_passes(m, cfg, core, pvm, delay(m, qw.pass_end, booth_latency(cfg) + 1, "pv_end"))
        use_qk = Mux(go, self.mode[1], qk)
        for i in range(self.n_act):
            a_t = walk.aa + i if i < per else 0
            m.d.comb += self.a_raddr[i].eq(Mux(use_qk, qw.qaddr[i], a_t) if self.qk and i < cfg.lanes else a_t)
        for lane in range(cfg.lanes):
            for u in range(cfg.width):
                codes = []
                for r in range(ROWS):
                    e = u * ROWS + r
                    lo = (e // tw) * word + 2 * (lane * tw + e % tw)
                    # storage code w + 1 -> {sign, nz} = {~c1 & ~c0, ~c0}
                    if tern_on:
                        c = lane_codes[lane][2 * e:2 * e + 2] if self.regroup else self.w_rdata[lo:lo + 2]
                        codes.append(Cat(~c[0] & rd, ~c[1] & ~c[0] & rd))
                    else:  # no ternary tiles: weight 0
                        codes.append(Const(0, 2))
                    tern = self.a_rdata[e // tw][e % tw] if tern_on else Const(0, signed(8))
                    if self.qk and r == 0:  # INT8 mode: row 0 is the multiplicand, Q (or P) element u of the lane
                        wd = self.a_rdata[lane]
                        q = Mux(val[lane], wd.as_value().word_select(sel[lane] * cfg.width + u, 8), 0)
                        tern = Mux(qk, q.as_signed(), tern)
                    m.d.comb += core.act[(lane * cfg.width + u) * ROWS + r].eq(tern)
                wb = Cat(*codes)
                if self.qk:  # INT8 mode: the multiplier is K element u of the lane's key row, or V element d
                    kw = Mux(val[lane], self.k_rdata[lane].word_select(ksel * cfg.width + u, 8) if kdiv > 1
                             else self.k_rdata[lane][8 * u:8 * u + 8], 0)  # of key u of the beat
                    vw = Mux(val[lane], self.v_rdata[lane * cfg.width + u].word_select(vsel[lane], 8), 0)
                    wb = Mux(qk, Mux(pvm, vw, kw), wb)
                m.d.comb += core.wb[lane * cfg.width + u].eq(wb)
        psum_writes(m, self, go, out)
        return m


def pv_passes(m: Module, cfg: BoothConfig, core: BoothFlex, pvm, end) -> SimpleNamespace:
    """The engine's pass results: the core's, or in a P V tile (`pvm`) the wrapping sum of a pass's one-beat
    core results (sim.numerics' accumulator: wrap to acc_bits, sticky overflow), out when `end` (the pass's
    last beat, delayed to the core's result) -- in the cycle of the last beat's core result, so a ragged tile
    ends when the core does."""
    lay = data.ArrayLayout(signed(cfg.acc_bits), cfg.lanes)
    acc, ovf = Signal(lay, name="pv_acc"), Signal(cfg.lanes, name="pv_ovf")
    tot, tovf = Signal(lay, name="pv_tot"), Signal(cfg.lanes, name="pv_tovf")
    bits = cfg.acc_bits
    for lane in range(cfg.lanes):
        s = Signal(signed(bits + 1), name=f"pv_sum{lane}")
        m.d.comb += [s.eq(acc[lane] + core.out_acc[lane]), tot[lane].eq(s[:bits].as_signed()),
                     tovf[lane].eq(ovf[lane] | core.out_ovf[lane] | (s < -(1 << (bits - 1))) | (s > (1 << (bits - 1)) - 1))]
    with m.If(core.out_valid & pvm):
        m.d.sync += [acc.eq(Mux(end, 0, tot.as_value())), ovf.eq(Mux(end, 0, tovf))]
    return SimpleNamespace(out_valid=core.out_valid & (~pvm | end), out_acc=Mux(pvm, tot.as_value(), core.out_acc.as_value()),
                           out_ovf=Mux(pvm, tovf, core.out_ovf), done=core.done)
