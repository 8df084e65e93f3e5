"""LOP scoring and selection for a KV group on the chip's buffers (docs/rtl.md "LOP on data"): the LOP unit's
scorer (lowbit.rtl.lop.LopScore) driven from a memory of the cache's 4-bit LO codes and the group's INT8 query
rows, one query head after the other, as the program's `lop_score` word times it (grp x sim.units.lop
lop_score_cycles), bit-exact with the golden's `layers.L.attn.lop.scores` (sim.golden `_lop`); and
`LopGroupSelect`, which sums those scores per key over the group's query heads, runs the unit's
comparison-free top-K (lowbit.rtl.lop.LopTopK) ONCE on the sums (the group rule of
sim.numerics.lop.lop_group_topk) and streams the selected keys, ascending, as key indices (the index FIFO's
writes), bit-exact with the golden's `lop.group_scores` and `lop.sel`, in the program's `lop_score` +
`lop_topk` cycles.

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

from dataclasses import dataclass, field

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import COUNT_BITS, count_mismatches
from lowbit.rtl.lop import LopScore, LopTopK, validate
from lowbit.sim.config import LopConfig
from lowbit.sim.units.lop import lop_score_cycles


class LopGroupScore(wiring.Component):
    """Score `m` keys against each of `grp` query heads (module docstring). `c_*` / `q_*` write the code and
    query memories (`depth` and `grp` x beats words). With `fill_keys` the code memory is written from the
    LO-code read's data beats instead (`f_*`, lop_fill: `fill_keys` keys' DRAM bytes a beat, beat `f_row`
    holding keys f_row x fill_keys ..; `f_data` the first min(fill_keys, depth) keys' bytes of the beat)."""

    def __init__(self, cfg: LopConfig, *, grp: int, head_dim: int, depth: int, q_rows: int = 0,
                 fill_keys: int = 0) -> None:
        self.cfg, self.grp, self.hd, self.depth, self.fill_keys = cfg, grp, head_dim, depth, fill_keys
        assert cfg.lanes & (cfg.lanes - 1) == 0, "LopGroupScore: LOP lanes must be a power of two"
        self.beats = -(-head_dim // cfg.width)
        self.q_rows = q_rows or grp  # query rows the memory holds; a group's are q_base .. q_base + grp - 1
        ab = (depth * self.beats - 1).bit_length()
        qb = max(1, (self.q_rows * self.beats - 1).bit_length())
        n, w = cfg.lanes, cfg.width
        codes = ({"f_wen": In(1), "f_row": In(COUNT_BITS), "f_data": In(min(fill_keys, depth) * 8 * -(-head_dim // 2))}
                 if fill_keys else {"c_wen": In(1), "c_addr": In(ab), "c_data": In(data.ArrayLayout(4, w))})
        super().__init__({
            **codes,
            "q_wen": In(1), "q_addr": In(qb), "q_data": In(data.ArrayLayout(signed(8), w)), "q_base": In(qb),
            "q_hwen": In(1), "q_haddr": In(qb), "q_hmask": In(w), "q_hdata": In(data.ArrayLayout(signed(8), w)),
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
        m.submodules.qmem = qmem = Memory(shape=data.ArrayLayout(signed(8), w), depth=self.q_rows * beats, init=[])
        qw, hw = qmem.write_port(), qmem.write_port(granularity=1)
        if self.fill_keys:
            lop_fill(m, self, codes)
        else:
            cw = codes.write_port()
            m.d.comb += [cw.en.eq(self.c_wen), cw.addr.eq(self.c_addr), cw.data.eq(self.c_data)]
        m.d.comb += [qw.en.eq(self.q_wen), qw.addr.eq(self.q_addr), qw.data.eq(self.q_data),
                     hw.en.eq(Mux(self.q_hwen, self.q_hmask, 0)), hw.addr.eq(self.q_haddr), hw.data.eq(self.q_hdata)]
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
        qbase = Signal(len(self.q_base))  # the group's first query row, a tile field
        with m.If(go):
            m.d.sync += [nbeats.eq(beats), qbase.eq(self.q_base)]
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
        m.d.comb += [qr.addr.eq((qbase + head) * beats + beat), unit.q.eq(qr.data)]
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



def lop_fill(m: Module, e: LopGroupScore, codes: Memory) -> None:
    """The code memory's writes from an LO-code read's data beats (docs/rtl.md "The LOP engine in the chip top"):
    the read covers keys 0 .. M - 1 of its KV head (sim.kvcache.lo_addr of position 0), each key
    code_bytes = ceil(hd / 2) bytes, element i in nibble i (chip_kv.lo_bytes), so beat `f_row` holds keys
    f_row x fill_keys .. + fill_keys - 1 whole; one write port a key of the beat and scorer beat writes its
    word (elements past head_dim zero), keys past the memory's depth none."""
    w, beats, span = e.cfg.width, e.beats, 2 * -(-e.hd // 2)  # a key's nibbles in DRAM
    for kk in range(min(e.fill_keys, e.depth)):
        key = Signal(COUNT_BITS + 8, name=f"fill_key{kk}")
        m.d.comb += key.eq(e.f_row * e.fill_keys + kk)
        for b in range(beats):
            wp = codes.write_port()
            m.d.comb += [wp.en.eq(e.f_wen & (key < e.depth)), wp.addr.eq((key * beats + b)[:len(wp.addr)])]
            for i in range(w):
                x = kk * span + b * w + i
                m.d.comb += wp.data[i].eq(e.f_data[4 * x:4 * x + 4] if b * w + i < e.hd else 0)


class LopGroupSelect(wiring.Component):
    """LopGroupScore (its per-head scores on `s_*`), each head's scores added into the group score of its keys
    (one word of `lanes` sums per key group; head 0 writes, later heads add), then ONE top-K of the `m` group
    scores (lowbit.rtl.lop.LopTopK: `t_*` its selection bits, `lanes` keys a beat from key `t_base`, and its
    threshold bucket) and the selected keys' indices, ascending, up to `lanes` a cycle (`o_valid` with `o_n`
    indices in `o_idx[0..o_n)`: the index FIFO's writes); `s_done` is the scorer's done. The top-K starts with the scorer's `done` and
    takes lop_topk_cycles(M): `done` rises in cycle start + grp x lop_score_cycles(M, hd) +
    lop_topk_cycles(M), the program's `lop_score` and `lop_topk` words. Ports `c_*`, `q_*`, `m` as
    LopGroupScore's. The sums are exact: `lop.score_bits` must hold grp x head_dim terms (lop.validate)."""

    def __init__(self, cfg: LopConfig, *, grp: int, head_dim: int, depth: int, q_rows: int = 0,
                 fill_keys: int = 0) -> None:
        validate(cfg, grp * head_dim)
        self.cfg, self.grp, self.hd, self.depth = cfg, grp, head_dim, depth
        self.score = LopGroupScore(cfg, grp=grp, head_dim=head_dim, depth=depth, q_rows=q_rows, fill_keys=fill_keys)
        n = cfg.lanes
        sig = {k: v for k, v in self.score.signature.members.items()
               if k.startswith(("c_", "q_", "f_")) or k in ("start", "m")}
        super().__init__({
            **sig, "k": In(COUNT_BITS), "ready": Out(1),
            "s_valid": Out(1), "s_head": Out(COUNT_BITS), "s_key": Out(COUNT_BITS),
            "s_score": Out(data.ArrayLayout(signed(cfg.score_bits), n)),
            "t_valid": Out(1), "t_base": Out(COUNT_BITS), "t_sel": Out(n),
            "t_thresh": Out(range(cfg.buckets + 1)),
            "o_valid": Out(1), "o_n": Out(range(n + 1)), "o_idx": Out(data.ArrayLayout(COUNT_BITS, n)),
            "s_done": Out(1), "done": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg, n, cb = self.cfg, self.cfg.lanes, COUNT_BITS
        lg = (n - 1).bit_length()
        pmax = -(-self.depth // n)
        m.submodules.score = sc = self.score
        m.submodules.topk = tk = LopTopK(cfg)
        for name in sc.signature.members:
            if name.startswith(("c_", "q_", "f_")):
                m.d.comb += getattr(sc, name).eq(getattr(self, name))
        # group scores: one word per key group; head 0's scores replace it, later heads' are added to it
        # (at least 2 words: a 1-word memory's address would be 0 bits wide, which Verilog cannot declare)
        gmem = Memory(shape=data.ArrayLayout(signed(cfg.score_bits), n), depth=max(pmax, 2), init=[])
        m.submodules.gmem = gmem
        gw, acc = gmem.write_port(), gmem.read_port(domain="comb")
        m.d.comb += [acc.addr.eq(sc.out_key >> lg), gw.en.eq(sc.out_valid), gw.addr.eq(sc.out_key >> lg)]
        for lane in range(n):
            m.d.comb += gw.data[lane].eq(Mux(sc.out_head == 0, sc.out_score[lane],
                                             acc.data[lane] + sc.out_score[lane]))
        busy = Signal()  # the top-K runs (from the scorer's done to its own)
        mr, kr, tc = (Signal(cb, name=x) for x in ("sel_m", "sel_k", "sel_tc"))
        passes = ((mr + n - 1) >> lg)[:cb]
        go = self.start & sc.ready & tk.ready & ~busy & (self.m != 0)
        m.d.comb += [sc.start.eq(go), sc.m.eq(self.m), self.ready.eq(sc.ready & ~busy)]
        with m.If(go):
            m.d.sync += [mr.eq(self.m), kr.eq(self.k)]
        m.d.comb += [tk.start.eq(sc.done), tk.m.eq(mr), tk.k.eq(kr)]
        with m.If(sc.done):
            m.d.sync += [busy.eq(1), tc.eq(0)]
        with m.Elif(busy):
            m.d.sync += tc.eq(tc + 1)
            with m.If(tk.done):
                m.d.sync += busy.eq(0)
        # group scores of beat i: pass 1 in cycle 1 + i after the start (tc = i), pass 2 in cycle P + buckets + 1 + i
        beat = Mux(tc < passes, tc, tc - passes - cfg.buckets)[:cb]
        gr = gmem.read_port(domain="comb")
        m.d.comb += [gr.addr.eq(beat), tk.scores.eq(gr.data)]
        # the index FIFO's writes: the beat's selected keys compacted to the low slots, ascending
        ovalid = busy & tk.out_valid
        pre = Const(0, range(n + 1))
        for lane in range(n):
            bit = tk.out_sel[lane]
            for slot in range(lane + 1):
                with m.If(bit & (pre == slot)):
                    m.d.comb += self.o_idx[slot].eq(tk.out_base + lane)
            pre = pre + bit
        m.d.comb += [self.o_valid.eq(ovalid & (pre != 0)), self.o_n.eq(Mux(ovalid, pre, 0)),
                     self.t_valid.eq(ovalid), self.t_base.eq(tk.out_base), self.t_sel.eq(tk.out_sel),
                     self.t_thresh.eq(tk.out_thresh), self.done.eq(busy & tk.done),
                     self.s_done.eq(sc.done), self.s_valid.eq(sc.out_valid), self.s_head.eq(sc.out_head), self.s_key.eq(sc.out_key),
                     self.s_score.eq(sc.out_score)]
        return m


def lop_engine(chip, m: Module, c, dkv) -> Signal:
    """The chip's LOP engine (LopGroupSelect) in `chip` (lowbit.rtl.chip.Chip), started by the LOP queue's
    (`c`) `eng` words, its code and query memories written through the load port (`Chip.lop_load`), its index
    writes into dma_kv's (`dkv`) index FIFO; returns 1 in cycles it reports."""
    p, hq = chip.p, getattr(chip, "hq", None)
    rows = p.lop_qrows if hq is not None else 0
    fk = fill_keys(chip.dims, p.lop_hd)
    m.submodules.lop_engine = e = LopGroupSelect(chip.cfg.lop, grp=p.lop_grp, head_dim=p.lop_hd, depth=p.lop_depth,
                                                 q_rows=rows, fill_keys=fk)
    if rows:
        lop_queries(chip, m, e, hq)
    if fk:
        lop_read_beats(chip, m, e, dkv)
    lq = chip.lop_load()
    assert lq + 1 < 1 << len(chip.load_queue), "the load port's queue number is too narrow for the LOP engine"
    for x, sel in ((("c", lq),) if not fk else ()) + (("q", lq + 1),):
        a, dw = getattr(e, f"{x}_addr"), getattr(e, f"{x}_data")
        assert len(a) <= len(chip.load_addr) and data.ArrayLayout.cast(dw.shape()).size <= len(chip.load_word)
        m.d.comb += [getattr(e, f"{x}_wen").eq(chip.load_en & (chip.load_queue == sel)),
                     a.eq(chip.load_addr[:len(a)]), dw.eq(chip.load_word[:data.ArrayLayout.cast(dw.shape()).size])]
    w = c.word
    m.d.comb += [e.start.eq(c.go), e.m.eq(w.m), e.k.eq(w.k), e.q_base.eq(w.qrow), c.unit_ready.eq(e.ready | (w.eng == 0)),
                 chip.lop_ov.eq(e.o_valid), chip.lop_on.eq(e.o_n), chip.lop_oi.eq(e.o_idx),
                 chip.lop_sdone.eq(e.s_done), chip.lop_done.eq(e.done)]
    # the index FIFO takes a group's selection when LOP drops keys (M > K: the compiler's rule for
    # indirect fetches, lowbit.sim.lop_fetch), from the lop_score word that starts it
    drops = Signal()
    with m.If(c.go):
        m.d.sync += drops.eq(w.m > w.k)
    m.d.comb += [dkv.x_valid.eq(e.o_valid & drops), dkv.x_n.eq(e.o_n), dkv.x_idx.eq(e.o_idx),
                 chip.kv_ind.eq(dkv.x_ind), chip.kv_ind_bad.eq(dkv.x_bad)]
    return e.t_valid | e.s_done | e.done | dkv.x_ind.any()  # t_valid: a top-K beat, the FIFO writes among them


def fill_keys(dims, hd: int) -> int:
    """Keys' LO codes a memory-port data beat carries whole (beat bytes / code bytes a key); 0 where a key's codes
    would straddle beats: the code memory is then written through the load port."""
    if dims is None or not dims.k_depth:
        return 0
    cb, bb = -(-hd // 2), dims.banks * dims.unit_bytes
    return bb // cb if bb % cb == 0 else 0


def lo_image(plan, img, kq: int) -> None:
    """The LO codes dma_kv's LO-code reads (reads allocating in the lop ring) fetch, in the DRAM image
    (`plan.dram`) as zeros: the program's own LO-code writes put them there (`plan.kv_written`, chip_kv: the
    bench stores the chip's bytes), so the reads' data beats carry the chip's codes (lop_read_beats). A key no
    write covers stays out of the image: its read gets no data beats, which the bench counts (lop_late)."""
    from lowbit.sim.isa import B_LOP
    from lowbit.sim.kvcache import code_bytes

    cb = code_bytes(plan.model.spec)
    for w in img.words[kq]:
        if not w["wr"] and w["alloc_en"] and w["buf"] == B_LOP:
            plan.dram.update({a: bytes(cb) for a in range(w["addr"], w["addr"] + w["nbytes"], cb)
                              if a in plan.kv_written})


def lop_read_beats(chip, m: Module, e, dkv) -> None:
    """Route dma_kv's LO-code reads' data beats into the engine's code memory (`e.f_*`): a read allocating in the
    lop ring (the loader's LO-code read, lop_plan) marks its completion-table slot at issue; a data beat of
    engine 1 (dma_kv) whose slot is marked goes to the code memory as beat `row` of the read, `row` counting
    from 0 at the read's issue (one LO-code read's beats at a time: the loader pairs the k-th read with the k-th
    lop_score word; the bench counts a beat that lands while the previous group's scorer may still read)."""
    from lowbit.sim.isa import B_LOP

    p = chip.p
    lt = (p.dma_table - 1).bit_length()
    marked = Signal(p.dma_table, name="lop_fill_slots")
    row = Signal(COUNT_BITS, name="lop_fill_row")
    new = Signal(name="lop_fill_issue")
    hits = []
    for k in range(p.dma_issue):
        rq = dkv.req[k]
        hit = dkv.a_valid[k] & (dkv.a_buf[k] == B_LOP) & ~rq.wr
        hits.append(hit)
        with m.If(dkv.req_valid[k]):
            m.d.sync += marked.bit_select(rq.id[:lt], 1).eq(hit)
    m.d.comb += new.eq(Cat(*hits).any())
    rid = chip.mem.rdata_id
    beat = Signal(name="lop_fill_beat")
    m.d.comb += beat.eq(chip.mem.rdata_valid & (rid[lt:] == 1) & marked.bit_select(rid[:lt], 1))
    with m.If(new):
        m.d.sync += row.eq(0)
    with m.Elif(beat):
        m.d.sync += row.eq(row + 1)
    m.d.comb += [e.f_wen.eq(beat), e.f_row.eq(row), e.f_data.eq(chip.mem.rdata.as_value()[:len(e.f_data)])]


def lop_q_ok(cfg, rb: int, hd: int) -> bool:
    """Whether the RoPE engine's per-head quantize (lowbit.rtl.sfu_stream_headq) can write the LOP engine's query
    memory: a RoPE head row is `rb` (the chip's rope_beats, a power of two; 0: no RoPE engine) SFU words of
    `sfu.lanes` elements making the head dimension `hd`, each inside one LOP query word of `lop.width`
    elements (module docstring's layout)."""
    n, w = cfg.sfu.lanes, cfg.lop.width
    return bool(rb and rb & (rb - 1) == 0 and rb * n == hd and all(j * n % w + n <= w for j in range(rb)))


def lop_queries(chip, m: Module, e, hq) -> None:
    """The RoPE engine's query writes (`hq.q_*`: act word a_depth / 2 + row x rope_beats + j, `sfu.lanes` INT8)
    into the LOP engine's query memory: row x beats + (j lanes) div width, elements from (j lanes) mod width,
    rows below ChipParams.lop_qrows (a decode step's: its one token's heads)."""
    n, w, rb = chip.cfg.sfu.lanes, chip.cfg.lop.width, chip.p.rope_beats
    lb = (rb - 1).bit_length()
    off = (hq.q_waddr - chip.dims.a_depth // 2)[:len(hq.q_waddr)]
    row, j = off >> lb, off[:lb] if lb else Const(0, 1)
    beats = -(-chip.p.lop_hd // w)
    m.d.comb += e.q_hwen.eq(hq.q_wen & (row < chip.p.lop_qrows))
    for jj in range(rb):  # all `width` elements driven (lint: none undriven), the mask writes the n of word jj
        o = jj * n % w
        with m.If(j == jj):  # the mask follows q_wen: a constant one would leave the signal unused (lint)
            m.d.comb += [e.q_haddr.eq(row * beats + jj * n // w), e.q_hmask.eq(Mux(hq.q_wen, ((1 << n) - 1) << o, 0))]
            m.d.comb += [e.q_hdata[i].eq(hq.q_wdata[(i - o) % n]) for i in range(w)]


@dataclass
class LopPlan:
    """The chip's LOP engine on a program (`lop_plan`): its generation sizes, the LOP words it runs, the bench's
    load-port writes and the golden's index streams."""

    grp: int
    hd: int
    depth: int
    fields: dict[int, dict] = field(default_factory=dict)   # LOP word -> {"eng": 1, "m": M, "k": K}
    writes: list[dict] = field(default_factory=list)        # {"after": [[q, i], ..], "before": LOP word,
    # "w": [[load queue past the act buffer's, address, word], ..]}
    expect: dict[int, tuple[int, list[int], str]] = field(default_factory=dict)  # lop_score word -> (its
    # lop_topk word, the golden's lop.sel indices, 'step S layer L KV head g')
    note: str = ""                                          # LOP words left timers and why
    chip_q: int = 0  # groups whose query rows the RoPE engine writes (lop_queries), not the bench
    fills: list[tuple[int, int, int]] = field(default_factory=list)  # groups whose codes come from their LO-code
    # read's data beats (lop_read_beats): (the read's dma_kv word, its lop_score word, the previous one or -1)
    q_rows: int = 0  # the query memory's rows then (ChipParams.lop_qrows, a power of two; 0: a group's grp rows)


def lop_plan(img, cfg: LopConfig, model, load_sel: int, q_rows: bool = False, rope_words: frozenset = frozenset(),
             fill: bool = False) -> LopPlan | None:
    """Map a program's LOP words onto the chip's LOP engine (docs/rtl.md "LOP on data"). The k-th LO-code read
    of dma_kv (a read allocating in the lop ring) feeds the k-th lop_score word (a LOP word with work; the
    lop_topk word follows it): its DRAM address names the layer and KV head (sim.kvcache.lo_addr), its bytes
    the keys M; the word's step and op name the step and layer (checked). The group's INT8 query rows (the
    golden's `qk.q8`) and its keys' LO codes (the golden's `kv_append.lo`, steps concatenated) are written
    through the load port (`load_sel`, + 1; past the act buffer's queue) once the LO-code read and the previous
    group's lop_topk word have started (the scorer no longer reads its memories then), the query rows already
    once the layer's last RoPE word (SFU) has started: the bench stands in for the read's data beats and
    the queries' path from the SFU. With `q_rows` (lop_q_ok: the RoPE engine writes the query memory, row by
    row as the act buffer's query rows) a group's rows start at row g x grp of its decode step (`qrow`), and
    the bench writes none where its step's and layer's RoPE words all run on the engine (`rope_words`: SFU
    word indices). With `fill` (fill_keys: the chip routes the LO-code reads' data beats into the code memory,
    lop_read_beats) the bench writes no codes. None when the program has no LOP word the golden selects for."""
    import numpy as np

    from lowbit.sim.isa import B_LOP, LOP_BASE
    from lowbit.sim.kvcache import code_bytes

    s = model.spec
    if "lop" not in img.queues or "dma_kv" not in img.queues:
        return None
    lq, kq = img.queues.index("lop"), img.queues.index("dma_kv")
    grp, hd, w = s.n_heads // s.n_kv_heads, s.head_dim, cfg.width
    beats, cb = -(-hd // w), code_bytes(s)
    reads = [i for i, x in enumerate(img.words[kq]) if x["alloc_en"] and x["buf"] == B_LOP and not x["wr"]]
    scores = [i for i, x in enumerate(img.words[lq]) if x.get("macs", 0) > 0]
    if not scores:
        return None
    plan = LopPlan(grp, hd, 0)
    sq = img.queues.index("sfu") if "sfu" in img.queues else -1
    ropes: dict[tuple[int, int], int] = {}  # (step, layer) -> its last RoPE word (the queries' INT8 rows exist)
    timers: set[tuple[int, int]] = set()  # ... those with a RoPE word off the engine
    for j, y in enumerate(img.words[sq] if sq >= 0 else []):
        parts = y.get("op", "").split(".")
        if len(parts) == 4 and parts[0] == "layers" and parts[2:] == ["attn", "rope"]:
            ropes[(y["step"], int(parts[1]))] = j
            if j not in rope_words:
                timers.add((y["step"], int(parts[1])))
    if len(reads) != len(scores):
        plan.note = f"{len(scores)} lop_score words, {len(reads)} LO-code reads: the words stay timers"
        return plan
    prev_top = None
    skipped = []
    for r, i in zip(reads, scores, strict=True):
        d, x = img.words[kq][r], img.words[lq][i]
        lg, pos = divmod((d["addr"] - LOP_BASE) // cb, s.max_positions)
        layer, g = divmod(lg, s.n_kv_heads)
        mk = d["nbytes"] // cb
        st = model.run.steps[x["step"]].buffers if x["step"] < len(model.run.steps) else {}
        sel = st.get(f"layers.{layer}.attn.lop.sel")
        what = f"step {x['step']} layer {layer} KV head {g}"
        if (sel is None or pos != 0 or x["op"] != f"layers.{layer}.attn.qk" or sel.shape[1] != mk
                or x["macs"] != mk * hd * grp or i + 1 >= len(img.words[lq])):
            skipped.append(what)
            continue
        lo = np.concatenate([model.run.steps[t].buffers[f"layers.{layer}.attn.kv_append.lo"]
                             for t in range(x["step"] + 1)])[:mk, g]
        q8 = st[f"layers.{layer}.attn.qk.q8"][0, g * grp:(g + 1) * grp]
        cp = np.zeros((mk, beats * w), np.int64)
        cp[:, :hd] = lo
        qp = np.zeros((grp, beats * w), np.int64)
        qp[:, :hd] = q8
        q0 = g * grp if q_rows else 0  # the decode step's one token: group g's rows g x grp ..
        qw = [[load_sel + 1, (q0 + h) * beats + b, sum((int(v) & 0xFF) << (8 * e) for e, v in enumerate(qp[h, b * w:(b + 1) * w]))]
              for h in range(grp) for b in range(beats)]
        if q_rows and (x["step"], layer) in ropes and (x["step"], layer) not in timers:
            qw = []  # the RoPE engine writes them (lop_queries)
            plan.chip_q += 1
        cw = [] if fill else [[load_sel, j * beats + b, sum((int(v) & 0xF) << (4 * e)
                                                          for e, v in enumerate(cp[j, b * w:(b + 1) * w]))]
                              for j in range(mk) for b in range(beats)]
        if fill:
            plan.fills.append((r, i, prev_top - 1 if prev_top is not None else -1))
        free = [[lq, prev_top]] if prev_top is not None else []
        rope = ropes.get((x["step"], layer))
        if rope is None:
            plan.writes += [{"after": [[kq, r], *free], "before": i, "w": qw + cw}] if qw or cw else []
        else:  # the queries once RoPE has made them, the codes in the LO-code read's cycles
            plan.writes += [{"after": [[sq, rope], *free], "before": i, "w": qw}] if qw else []
            plan.writes += [{"after": [[kq, r], *free], "before": i, "w": cw}] if cw else []
        plan.fields[i] = {"eng": 1, "m": mk, "k": cfg.k, "qrow": q0}
        plan.expect[i] = (i + 1, np.flatnonzero(sel[g]).tolist(), what)
        plan.depth = max(plan.depth, mk)
        plan.q_rows = max(plan.q_rows, q0 + grp if q_rows else 0)
        prev_top = i + 1
    if skipped:
        plan.note = f"{len(skipped)} LOP groups stay timers (no golden selection of their shape: {skipped[0]})"
    if plan.depth:
        plan.depth = 1 << (plan.depth - 1).bit_length()
    if plan.q_rows:
        plan.q_rows = 1 << (plan.q_rows - 1).bit_length()
    return plan


def lop_compare(plan: LopPlan, ref, r: dict) -> tuple[int, int, int, int, str]:
    """The chip's LOP engine against the golden and `lowbit sim` (`ref`: its schedule of the LOP queue; `r` the
    bench's result): (groups run, indices, index mismatches (missing, extra or misplaced), done cycles differing
    from the lop_score / lop_topk words' ends, the first difference). A group's indices are the FIFO writes
    after its lop_score word starts, up to its lop_topk word's end."""
    got = r.get("lop_idx", [])
    sd, dn = set(r.get("lop_sdone", [])), set(r.get("lop_done", []))
    n = bad = cyc_bad = 0
    first = ""
    for i, (t, want, what) in sorted(plan.expect.items()):
        s0, e0 = ref.start[i], ref.end[t]
        idx = [v for c, vs in got if s0 < c <= e0 for v in vs]
        n += len(want)
        diff = count_mismatches(idx, want)
        bad += diff
        cb = (ref.end[i] not in sd) + (e0 not in dn)
        cyc_bad += cb
        if (diff or cb) and not first:
            first = f"{what}: indices {idx}, golden {want}; scorer done {sorted(c for c in sd if s0 <= c <= e0)} " \
                    f"(lop_score ends {ref.end[i]}), top-K done {sorted(c for c in dn if s0 <= c <= e0)} (lop_topk ends {e0})"
    return len(plan.expect), n, bad, cyc_bad, first
