"""LOP scoring and selection for a KV group on the chip's buffers (docs/rtl.md "LOP on data"): the LOP unit's
scorer (lowbit.rtl.lop.LopScore) driven from a memory of the cache's 4-bit LO codes and the group's INT8 query
rows, one query head after the other, as the program's `lop_score` word times it (grp x sim.units.lop
lop_score_cycles), bit-exact with the golden's `layers.L.attn.lop.scores` (sim.golden `_lop`); and
`LopGroupSelect`, which keeps those scores, runs the unit's comparison-free top-K (lowbit.rtl.lop.LopTopK)
per query head and streams the union of the group's selections, ascending, as key indices (the index
FIFO's writes), bit-exact with the golden's `lop.topk` and `lop.sel`.

Layouts (DESIGN ASSUMPTION, one word per beat of the scorer, like the chip's other buffers): code word
key j x beats + b holds elements b width .. b width + width - 1 of key j's LO codes (lo_code4 of the INT8 K
row: the kv_append.lo the KV cache stores), 4 bits each; query word h x beats + b holds the same elements of
query head h's INT8 row (the golden's qk.q8, which Q K^T reads too). The scorer takes the INT8 query and
finds each element's leading one itself; that equals the golden's lo_decode4(lo_code4(q)) for q in
[-127, 127], which absmax quantization guarantees (it never yields -128).

Timing: head h's tile starts in cycle start + h C, C = lop_score_cycles(M, hd), and its scores leave the
scorer `lanes` keys a cycle (`out_*`, with the head and first key); `done` rises in cycle start + grp C.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import COUNT_BITS
from lowbit.rtl.lop import LopScore, LopTopK
from lowbit.sim.config import LopConfig
from lowbit.sim.units.lop import lop_score_cycles


class LopGroupScore(wiring.Component):
    """Score `m` keys against each of `grp` query heads (module docstring). `c_*` / `q_*` write the code and
    query memories (`depth` and `grp` x beats words)."""

    def __init__(self, cfg: LopConfig, *, grp: int, head_dim: int, depth: int) -> None:
        self.cfg, self.grp, self.hd, self.depth = cfg, grp, head_dim, depth
        assert cfg.lanes & (cfg.lanes - 1) == 0, "LopGroupScore: LOP lanes must be a power of two"
        self.beats = -(-head_dim // cfg.width)
        ab = (depth * self.beats - 1).bit_length()
        qb = max(1, (grp * self.beats - 1).bit_length())
        n, w = cfg.lanes, cfg.width
        super().__init__({
            "c_wen": In(1), "c_addr": In(ab), "c_data": In(data.ArrayLayout(4, w)),
            "q_wen": In(1), "q_addr": In(qb), "q_data": In(data.ArrayLayout(signed(8), w)),
            "start": In(1), "m": In(COUNT_BITS), "ready": Out(1),
            "out_valid": Out(1), "out_head": Out(COUNT_BITS), "out_key": Out(COUNT_BITS),
            "out_score": Out(data.ArrayLayout(signed(cfg.score_bits), n)), "out_ovf": Out(n),
            "done": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg, n, w, beats = self.cfg, self.cfg.lanes, self.cfg.width, self.beats
        m.submodules.unit = unit = LopScore(cfg)
        m.submodules.codes = codes = Memory(shape=data.ArrayLayout(4, w), depth=self.depth * beats, init=[])
        m.submodules.qmem = qmem = Memory(shape=data.ArrayLayout(signed(8), w), depth=self.grp * beats, init=[])
        cw, qw = codes.write_port(), qmem.write_port()
        m.d.comb += [cw.en.eq(self.c_wen), cw.addr.eq(self.c_addr), cw.data.eq(self.c_data),
                     qw.en.eq(self.q_wen), qw.addr.eq(self.q_addr), qw.data.eq(self.q_data)]
        cb = COUNT_BITS
        busy, mr = Signal(), Signal(cb)
        head, cyc, pas, beat = Signal(cb), Signal(2 * cb), Signal(cb), Signal(cb)
        feeding = Signal()  # the scorer is at beat (pas, beat) of head `head` this cycle
        lg = (n - 1).bit_length()  # DESIGN ASSUMPTION: a power-of-two lane count (a key group is a shift)
        passes = ((mr + n - 1) >> lg)[:cb]
        c_len = passes * beats + (lop_score_cycles(cfg, 1, w) - 1)  # lop_score_cycles(M, hd), M = mr
        go = self.start & ~busy & unit.ready & (self.m != 0)
        kick = Signal()  # start the scorer on the next head (go, or the previous head's last cycle)
        m.d.comb += [self.ready.eq(~busy), kick.eq(go | (busy & (cyc == c_len - 1) & (head + 1 < self.grp)))]
        nbeats = Signal(cb)  # the scorer's beats, a register loaded at the start (a tile field)
        with m.If(go):
            m.d.sync += nbeats.eq(beats)
        m.d.comb += [unit.start.eq(kick), unit.beats.eq(Mux(go, beats, nbeats)), unit.passes.eq(Mux(go, (self.m + n - 1) >> lg, passes))]
        with m.If(go):
            m.d.sync += [busy.eq(1), mr.eq(self.m), head.eq(0), cyc.eq(0), feeding.eq(1), pas.eq(0), beat.eq(0)]
        with m.Elif(busy):
            m.d.sync += cyc.eq(cyc + 1)
            with m.If(feeding):
                with m.If(beat == beats - 1):
                    m.d.sync += beat.eq(0)
                    with m.If(pas == passes - 1):
                        m.d.sync += feeding.eq(0)
                    with m.Else():
                        m.d.sync += pas.eq(pas + 1)
                with m.Else():
                    m.d.sync += beat.eq(beat + 1)
            with m.If(cyc == c_len - 1):
                with m.If(head + 1 < self.grp):
                    m.d.sync += [head.eq(head + 1), cyc.eq(0), feeding.eq(1), pas.eq(0), beat.eq(0)]
                with m.Else():
                    m.d.sync += busy.eq(0)
        # the scorer samples beat (pas, beat) one cycle after its start: `feeding` is registered from kick
        qr = qmem.read_port(domain="comb")
        m.d.comb += [qr.addr.eq(head * beats + beat), unit.q.eq(qr.data)]
        for lane in range(n):
            r = codes.read_port(domain="comb")
            key = pas * n + lane
            m.d.comb += r.addr.eq(key * beats + beat)
            for i in range(w):
                m.d.comb += unit.kcode[lane * w + i].eq(
                    Mux(feeding & (key < mr), r.data[i], 0))
        key0 = Signal(cb)
        with m.If(kick):
            m.d.sync += key0.eq(0)
        with m.Elif(unit.out_valid):
            m.d.sync += key0.eq(key0 + n)
        m.d.comb += [self.out_valid.eq(unit.out_valid), self.out_head.eq(head), self.out_key.eq(key0),
                     self.out_score.eq(unit.out_score), self.out_ovf.eq(unit.out_ovf),
                     self.done.eq(busy & (cyc == c_len - 1) & (head + 1 == self.grp))]
        return m



class LopGroupSelect(wiring.Component):
    """LopGroupScore (its scores on `s_*`), then per query head h the top-K of its `m` scores (`t_*`: the
    head's selection bits, `lanes` keys a beat from key `t_base`, and its threshold bucket), then the union over the group, ascending, one key index a
    cycle (`o_valid`, `o_idx`: the index FIFO's writes). Head h's top-K starts when head h - 1's is done
    (lop_topk_cycles(M) each); the union takes M cycles. Ports `c_*`, `q_*`, `m` as LopGroupScore's."""

    def __init__(self, cfg: LopConfig, *, grp: int, head_dim: int, depth: int) -> None:
        self.cfg, self.grp, self.hd, self.depth = cfg, grp, head_dim, depth
        self.score = LopGroupScore(cfg, grp=grp, head_dim=head_dim, depth=depth)
        n = cfg.lanes
        sig = {k: v for k, v in self.score.signature.members.items()
               if k.startswith(("c_", "q_")) or k in ("start", "m")}
        super().__init__({
            **sig, "k": In(COUNT_BITS), "ready": Out(1),
            "s_valid": Out(1), "s_head": Out(COUNT_BITS), "s_key": Out(COUNT_BITS),
            "s_score": Out(data.ArrayLayout(signed(cfg.score_bits), n)),
            "t_valid": Out(1), "t_head": Out(COUNT_BITS), "t_base": Out(COUNT_BITS), "t_sel": Out(n),
            "t_thresh": Out(range(cfg.buckets + 1)),
            "o_valid": Out(1), "o_idx": Out(COUNT_BITS), "done": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg, n, cb = self.cfg, self.cfg.lanes, COUNT_BITS
        lg = (n - 1).bit_length()
        pmax = -(-self.depth // n)
        m.submodules.score = sc = self.score
        m.submodules.topk = tk = LopTopK(cfg)
        for name in sc.signature.members:
            if name.startswith(("c_", "q_")):
                m.d.comb += getattr(sc, name).eq(getattr(self, name))
        smem = Memory(shape=data.ArrayLayout(signed(cfg.score_bits), n), depth=self.grp * pmax, init=[])
        sel = Memory(shape=n, depth=pmax, init=[])
        m.submodules.smem, m.submodules.sel = smem, sel
        sw, selw = smem.write_port(), sel.write_port()
        m.d.comb += [sw.en.eq(sc.out_valid), sw.addr.eq(sc.out_head * pmax + (sc.out_key >> lg)),
                     sw.data.eq(sc.out_score)]
        phase = Signal(2)  # 0 idle or scoring, 1 top-K, 2 union
        mr, kr, head, tc, j = (Signal(cb, name=x) for x in ("sel_m", "sel_k", "sel_head", "sel_tc", "sel_j"))
        passes = ((mr + n - 1) >> lg)[:cb]
        go = self.start & sc.ready & tk.ready & (phase == 0) & (self.m != 0)
        m.d.comb += [sc.start.eq(go), sc.m.eq(self.m), self.ready.eq(sc.ready & (phase == 0))]
        with m.If(go):
            m.d.sync += [mr.eq(self.m), kr.eq(self.k)]
        kick = Signal()  # start head `head`'s top-K: after the scores, or with the previous head's done
        m.d.comb += kick.eq(sc.done | ((phase == 1) & tk.done & (head + 1 < self.grp)))
        m.d.comb += [tk.start.eq(kick), tk.m.eq(mr), tk.k.eq(kr)]
        nb = cfg.buckets
        with m.If(sc.done):
            m.d.sync += [phase.eq(1), head.eq(0), tc.eq(0)]
        with m.Elif(phase == 1):
            m.d.sync += tc.eq(tc + 1)
            with m.If(tk.done):
                with m.If(head + 1 < self.grp):
                    m.d.sync += [head.eq(head + 1), tc.eq(0)]
                with m.Else():
                    m.d.sync += [phase.eq(2), j.eq(0)]
        # scores of beat i: pass 1 in cycle 1 + i after the start (tc = i), pass 2 in cycle P + buckets + 1 + i
        beat = Mux(tc < passes, tc, tc - passes - nb)[:cb]
        sr = smem.read_port(domain="comb")
        m.d.comb += [sr.addr.eq(head * pmax + beat), tk.scores.eq(sr.data)]
        # the union: head 0's selection bits replace a word, later heads' are OR-ed into it
        sr2 = sel.read_port(domain="comb")
        wa = tk.out_base >> lg
        m.d.comb += [sr2.addr.eq(Mux(phase == 2, j >> lg, wa)),
                     selw.en.eq((phase == 1) & tk.out_valid), selw.addr.eq(wa),
                     selw.data.eq(Mux(head == 0, tk.out_sel, tk.out_sel | sr2.data))]
        m.d.comb += [self.t_valid.eq((phase == 1) & tk.out_valid), self.t_head.eq(head),
                     self.t_base.eq(tk.out_base), self.t_sel.eq(tk.out_sel), self.t_thresh.eq(tk.out_thresh),
                     self.s_valid.eq(sc.out_valid), self.s_head.eq(sc.out_head), self.s_key.eq(sc.out_key),
                     self.s_score.eq(sc.out_score)]
        bit = sr2.data.bit_select(j[:lg], 1) if lg else sr2.data[0]
        with m.If(phase == 2):
            m.d.sync += j.eq(j + 1)
            with m.If(j == mr - 1):
                m.d.sync += phase.eq(0)
        m.d.comb += [self.o_valid.eq((phase == 2) & bit), self.o_idx.eq(j),
                     self.done.eq((phase == 2) & (j == mr - 1))]
        return m
