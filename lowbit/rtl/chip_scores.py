"""The Q K^T scores on the chip (docs/rtl.md "The softmax on data"): the per-key score requantizer behind
BoothFlex's psum port writes each Q K^T output, requantized, into the softmax engine's score memory, and each
score row's max into its row-max memory (lowbit.rtl.chip_softmax), in the Q K^T tile's own psum-write cycles.

Rule (sim.golden `_attention`; the arithmetic of lowbit.rtl.score_requant, sim.numerics.requant.requant):

    score[t, h, j] = sat16((acc x g + 2^(s - 1)) >> s),   (g, s) = normalise(q_amax[t, h] x k_amax[j] x m_qk, sh_qk)
    max[t, h]      = max_j score[t, h, j]

A Q K^T pass's `lanes` outputs are (query t, head h, key j), in the walker's order (lowbit.rtl.chip_booth
QkWalk): an output walker here keeps each lane's (t, h, j) and row r = t x grp + h of the tile's next psum
word, stepping every lane `lanes` outputs on at each psum write. Between writes (a pass's `beats` cycles) it
prefetches each lane's scales (q_amax of row (t, h), k_amax of key j, read from the write's own cycle on,
addressed by the lane's next output) and forms (g, s) (score_requant's E0 .. E2, SC_PREFETCH cycles); at the
psum write itself E3 and E4 are combinational, and the score goes into the score memory (row r, word j div
lanes_sfu, lane j mod lanes_sfu: one element-enabled write port per Booth lane) and the row's running max into
the row-max memory when j is the row's last key, in the write's own cycle. So the tile's last score and max are
in their memories in the cycle after its last psum write, which is the tile's end: the drain rule holds with no
cycle moved (a softmax word starting then reads them).

Scales: q_amax from the RoPE engine's per-head quantize (lowbit.rtl.sfu_stream_headq: a query row's amax comes
with its first INT8 word, whose act address names the row) into a q-scale memory of a_depth / 2 /
rope_beats rows, the act buffer's query rows;
k_amax from the key-scale memory of the context (lowbit.rtl.chip_kscales: each key's amax from the RoPE engine at
its scale index), key j of the tile at index `ks` - 1 + j (keys of consecutive positions) or at the index the
gathered-key recorder holds at entry `kg` - 1 + j (the keys LOP gathers), read in the cycles the scales are; where
a word sets neither (a chip without the key-scale memory, a K row the load port's stand-in) from a memory of two
halves, the tile's parity among Q K^T tiles picking one, written through the load port (the golden's
kv_append.k_amax of the chunk's keys in chunk order) after the previous Q K^T tile starts.
The multiplier (m_qk, sh_qk) of the model's head_dim is a generation parameter (ChipParams.score_mult /
score_sh, like the LOP engine's head dimension).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import data
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out

from lowbit.rtl.chip_av import SB
from lowbit.rtl.chip_ctrl import KS_BITS
from lowbit.rtl.chip_kscales import kg_entry
from lowbit.rtl.chip_softmax import SEL, XB
from lowbit.rtl.common import COUNT_BITS, count_mismatches, delay
from lowbit.rtl.score_requant import AMAX_BITS
from lowbit.rtl.sfu_stream import q78_word
from lowbit.rtl.sfu_stream_requant import coefficients, mult_word, round_sat

SC_MODE = 2        # BoothFlex's Q K^T tiles (lowbit.rtl.chip_booth)
SC_PREFETCH = 4    # cycles from a psum write until the next word's (g, s): scale read (addressed by the walker's
# next state in the write's own cycle), E0, E1, E2
SC_KEYS = 32       # keys a Q K^T tile's key-scale half holds (DESIGN ASSUMPTION)
SC_SEL = 3         # the key-scale memory's load-port select (lowbit.rtl.chip_softmax SEL bits)
KB = (SC_KEYS - 1).bit_length()


def sc_signature(cfg) -> dict:
    """Observation ports: per Booth lane, a score written (`scv` bit), its row (`scr`), key (`scj`) and value
    (`scy`), and whether it ends its row (`sce`, the max `scm` written)."""
    L = cfg.booth.lanes
    return {"scv": Out(L), "scr": Out(data.ArrayLayout(SB, L)), "scj": Out(data.ArrayLayout(COUNT_BITS, L)),
            "scy": Out(data.ArrayLayout(16, L)), "sce": Out(L), "scm": Out(data.ArrayLayout(16, L))}


def score_stage(chip, m: Module, c, eng, sm, hq, bufs: dict) -> Signal:
    """The stage behind BoothFlex engine `eng` (queue controller `c`) writing the softmax engine `sm`'s score
    and row-max memories (module docstring); `hq`: the RoPE engine's per-head quantize; `bufs["ks"]`: the
    key-scale memory by position and `bufs["kg"]` the gathered keys' scale indices (lowbit.rtl.chip_kscales;
    absent: the halves alone). Returns its write strobe."""
    ksm, kgr = bufs.get("ks"), bufs.get("kg")
    cfg, d, p = chip.cfg, chip.dims, chip.p
    L, n = cfg.booth.lanes, cfg.sfu.lanes
    ln = (n - 1).bit_length()
    w = c.word
    go = Signal(name="sc_go")
    m.d.comb += go.eq(c.go & (w.eng == SC_MODE))
    on = Signal(name="sc_on")  # the running tile is a Q K^T tile
    par = Signal(name="sc_par", init=1)  # its key-scale half: the k-th Q K^T tile's is k mod 2
    with m.If(go):
        m.d.sync += [on.eq(1), par.eq(~par)]
    with m.Elif(c.go):
        m.d.sync += on.eq(0)
    prm = {}
    for k in ("nq", "grp", "pos0", "a_addr", *(("ks",) if ksm is not None else ()), *(("kg",) if kgr else ())):
        r = Signal(len(getattr(w, k)), name=f"sc_{k}")
        with m.If(go):
            m.d.sync += r.eq(getattr(w, k))
        prm[k] = Mux(go, getattr(w, k), r)
    # the softmax rows' words: ceil((pos0 + nq) / lanes_sfu), the keys of the tile's last query
    bsm = ((prm["pos0"] + prm["nq"] + n - 1) >> ln)[:COUNT_BITS]
    lq = (p.rope_beats - 1).bit_length()
    nrow = d.a_depth // 2 >> lq  # query rows of the act buffer's upper half
    qrow0 = ((prm["a_addr"] - d.a_depth // 2) >> lq)[:(nrow - 1).bit_length()]
    # ---- the output walker: each lane's (valid, t, h, j, r) of the next psum word
    cb = COUNT_BITS
    shapes = (1, cb, cb, cb, SB)

    def nxt(st):
        v, t, h, j, r = st
        lj, lh = j == prm["pos0"] + t, h == prm["grp"] - 1
        return (v & ~(lj & lh & (t + 1 == prm["nq"])), Mux(lj & lh, t + 1, t)[:cb],
                Mux(lj, Mux(lh, 0, h + 1), h)[:cb], Mux(lj, 0, j + 1)[:cb], Mux(lj, r + 1, r)[:SB])

    def named(st, what):
        """A lane state as signals, each the one before stepped once (a chain linear in the lanes)."""
        out = [Signal(wd, name=f"sc{what}_{f}") for wd, f in zip(shapes, "vthjr", strict=True)]
        m.d.comb += [o.eq(x) for o, x in zip(out, st, strict=True)]
        return out

    lanes = [[Signal(wd, name=f"sc{lane}_{f}") for wd, f in zip(shapes, "vthjr", strict=True)] for lane in range(L)]
    init, st = [], (Const(1, 1), Const(0, cb), Const(0, cb), Const(0, cb), Const(0, SB))
    chain, nx = [], lanes[-1]
    for lane in range(L):  # at the tile's start lane l is output l; after a word, `L` outputs on
        init.append(st)
        nx = named(nxt(nx), f"n{lane}")
        chain.append(nx)
        if lane + 1 < L:
            st = named(nxt(st), f"i{lane + 1}")
    ends = [ln_[3] == prm["pos0"] + ln_[1] for ln_ in lanes]  # j is its row's last key
    wr = Signal(name="sc_wr")  # a Q K^T psum word this cycle
    m.d.comb += wr.eq(eng.p_valid & on)
    for lane in range(L):
        with m.If(go):
            m.d.sync += [r.eq(x) for r, x in zip(lanes[lane], init[lane], strict=True)]
        with m.Elif(wr):
            m.d.sync += [r.eq(x) for r, x in zip(lanes[lane], chain[lane], strict=True)]
    # ---- scales: q_amax from the RoPE engine's per-head quantize, k_amax from the key-scale memory
    qs = Memory(shape=AMAX_BITS, depth=nrow, init=[])
    ks = Memory(shape=AMAX_BITS, depth=2 * SC_KEYS, init=[])
    m.submodules.sc_qs, m.submodules.sc_ks = qs, ks
    qw, kw = qs.write_port(), ks.write_port()
    ld = chip.load_en & (chip.load_queue == chip.lop_load() + 2)
    # a query row's amax comes with its first INT8 word, whose act address names the row
    off = (hq.q_waddr - d.a_depth // 2)[:len(hq.q_waddr)]
    m.d.comb += [qw.en.eq(hq.s_wen & ~hq.s_k), qw.addr.eq((off >> lq)[:len(qrow0)]),
                 qw.data.eq(hq.s_amax[:AMAX_BITS]),
                 kw.en.eq(ld & (chip.load_addr[SEL:SEL + 2] == SC_SEL)), kw.addr.eq(chip.load_addr[:KB + 1]),
                 kw.data.eq(chip.load_word[:AMAX_BITS])]
    if ksm is not None:  # the tile's k_amax by position where its word's `ks` is set (chip_kscales)
        kpos = Signal(name="sc_kpos")  # registered: it picks the data of the cycle's reads
        m.d.sync += kpos.eq((prm["ks"] != 0) | ((prm["kg"] != 0) if kgr else 0))
    mult = Signal(mult_word(1), name="sc_mult")
    m.d.comb += [mult[0].m.eq(p.score_mult[0]), mult[0].sh.eq(p.score_mult[1])]
    wrote = wr
    mx_prev = Signal(signed(16), name="sc_rmax")  # the running max of the row the last word ended in
    run = mx_prev
    xw = [sm.x_mem.write_port(granularity=1) for _ in range(L)]
    mw = [sm.mx_mem.write_port() for _ in range(L)]
    for lane in range(L):
        v, t, h, j, r = lanes[lane]
        qr, kr = qs.read_port(), ks.read_port()
        # in a psum write's cycle the ports read the lane's next output's scales (the walker's step), so its
        # (g, s) is ready SC_PREFETCH cycles on, the next write of `vitallm`'s 4-beat passes
        nr, nj = Mux(wr, chain[lane][4], r), Mux(wr, chain[lane][3], j)
        m.d.comb += [qr.addr.eq(qrow0 + nr), kr.addr.eq(nj[:KB] + Mux(par, SC_KEYS, 0))]  # (an adder: a bare
        # concatenation leaves the port's address wire unused in the Verilog, which lint flags)
        kd = kr.data
        if ksm is not None:  # key j at scale index ks - 1 + j, read in the cycles the halves are
            idx = (prm["ks"] - 1 + nj)[:KS_BITS]
            if kgr:  # a gathered chunk: key j's scale index recorded at entry kg - 1 + j
                idx = Mux(prm["kg"] != 0, kg_entry(kgr, prm["kg"] - 1 + nj), idx)
            kd = Mux(kpos, ksm.read_entry(idx, f"sc_ks{lane}"), kr.data)
        sc = delay(m, qr.data * kd, 1, f"sc_scale{lane}")                                     # E0
        (g,), (s,) = coefficients(m, sc, mult, f"sc_c{lane}")                                  # E1, E2
        y = Signal(signed(16), name=f"sc_y{lane}")
        m.d.comb += y.eq(round_sat(eng.p_acc[lane] * g, s))                                    # E3, E4
        live = wr & v
        run_n = Signal(signed(16), name=f"sc_run{lane}")
        m.d.comb += run_n.eq(Mux((j == 0) | (y > run), y, run))
        xd = Signal(q78_word(n), name=f"sc_xd{lane}")  # y in every lane; the write enables pick one
        m.d.comb += [xd[e].eq(y) for e in range(n)]
        m.d.comb += [xw[lane].en.eq(Mux(live, 1 << j[:ln], 0)) if ln else xw[lane].en.eq(live),
                     xw[lane].addr.eq((r * bsm + (j >> ln))[:XB]), xw[lane].data.eq(xd),
                     mw[lane].en.eq(live & ends[lane]), mw[lane].addr.eq(r), mw[lane].data.eq(run_n)]
        m.d.comb += [chip.scv[lane].eq(live), chip.scr[lane].eq(r), chip.scj[lane].eq(j), chip.scy[lane].eq(y),
                     chip.sce[lane].eq(live & ends[lane]), chip.scm[lane].eq(run_n)]
        run = Mux(v, run_n, run)
    with m.If(wr):
        m.d.sync += mx_prev.eq(run)
    return wrote


# ---- the loader (on the host)


@dataclass
class ScorePlan:
    """The Q K^T tiles the stage requantizes: key-scale load-port writes per tile (`writes`: after the previous
    Q K^T tile's start, before this one's), the expected (row, key, score) writes and (row, max) row ends in
    order, and the tiles counted."""

    writes: list[dict] = field(default_factory=list)
    scores: list[tuple[int, int, int]] = field(default_factory=list)
    maxes: list[tuple[int, int]] = field(default_factory=list)
    tiles: int = 0
    note: str = ""
    tiles_info: list[tuple] = field(default_factory=list)  # per tile: (step, layer, group, first query, key
    # positions, queries, pos0)
    ks: dict[tuple[int, int], tuple[str, int, list[int]]] = field(default_factory=dict)  # a tile reading k_amax
    # by position (lowbit.rtl.chip_kscales): (queue, word) -> (its field `ks` or `kg`, the value, its keys' scale
    # indices)
    kg_depth: int = 0  # the gathered keys' recorder entries (ChipParams.kgather)


def _k_amax(run, layer: int, kvh: int) -> np.ndarray:
    """k_amax of every cached position of `layer` ([positions, KV heads]), the steps' kv_append rows in order."""
    return np.concatenate([st.buffers[f"layers.{layer}.attn.kv_append.k_amax"].reshape(-1, kvh) for st in run.steps])


def score_plan(plan, img, cfg, bq: int, qmap: dict) -> ScorePlan:
    """The stage's expectations and key-scale writes for every Q K^T tile of `qmap` (chip_attn.qk_plan: word ->
    (fields, psum words, (step, layer, group), (first query, the chunk's key positions))), in queue order; a
    note (and no tiles) where a tile does not fit the stage (its passes shorter than SC_PREFETCH, more keys than
    SC_KEYS, a query row stride other than the RoPE rows')."""
    out = ScorePlan()
    model = plan.model
    s = model.spec
    kvh, grp = s.n_kv_heads, s.n_heads // s.n_kv_heads
    tiles = sorted(i for i, v in qmap.items() if v[0].get("eng") == SC_MODE)
    pv = {v[2]: i for i, v in qmap.items() if v[0].get("eng") == 3}
    prev = None
    for k, i in enumerate(tiles):
        f, _words, (step, layer, g), (q0, pos) = qmap[i]
        if k + 1 < len(tiles) and pv.get((step, layer, g), -1) > tiles[k + 1]:
            return ScorePlan(note=f"BoothFlex word {tiles[k + 1]}: a Q K^T tile before the P V tile of the one "
                                  f"before it (word {i}) would overwrite the scores its softmax word reads")
        if f["beats"] < SC_PREFETCH or len(pos) > SC_KEYS:
            return ScorePlan(note=f"BoothFlex word {i}: {f['beats']}-beat passes or {len(pos)} keys do not fit the "
                                  f"score stage (>= {SC_PREFETCH} beats, <= {SC_KEYS} keys)")
        bufs = model.run.steps[step].buffers
        sc = bufs[f"layers.{layer}.attn.qk.scores"]
        ka = _k_amax(model.run, layer, kvh)[pos, g]
        half = k % 2
        out.writes.append({"after": [bq, prev if prev is not None else max(i - 1, 0)], "before": [bq, i],
                           "w": [[(half * SC_KEYS + j) | SC_SEL << SEL, int(a)] for j, a in enumerate(ka)]})
        prev = i
        for t in range(f["nq"]):
            for h in range(grp):
                r = t * grp + h
                row = [int(sc[g * grp + h, q0 + t, pos[j]]) for j in range(f["pos0"] + t + 1)]
                out.scores += [(r, j, y) for j, y in enumerate(row)]
                out.maxes.append((r, max(row)))
        out.tiles += 1
        out.tiles_info.append((step, layer, g, q0, list(pos), f["nq"], f["pos0"]))
    return out


def scores_on_chip(plan) -> None:
    """Take the scores and row maxes off the bench where the stage feeds every softmax word on the engine:
    the RoPE engine runs every RoPE word (the queries' amax) and every Q K^T tile fits (`plan.sc`); otherwise
    the bench keeps writing them (`plan.sc` None, its note kept on the softmax plan)."""
    sc, sm, rp = plan.sc, plan.sm, plan.rope
    if sc is None or sm is None or not sm.fields:
        plan.sc = None
        return
    if not sc.tiles or rp is None or not rp.fields or rp.bench:
        sm.sc_note = sc.note or "the RoPE engine does not run every RoPE word (the queries' amax)"
        plan.sc = None
        return
    from lowbit.rtl.chip_softmax import SEL

    for e in sm.writes:  # the bench keeps the amax_v writes (memory 2) alone
        e["w"] = [x for x in e["w"] if x[0] >> SEL & 3 == 2]


def sc_compare(sp: ScorePlan | None, r: dict, lanes: int) -> tuple[int, int, int, int, int]:
    """(Q K^T tiles on the stage, scores checked, row maxes checked, those differing (missing and extra
    counted), key-scale write batches not ended before their tile)."""
    if sp is None or not sp.tiles:
        return 0, 0, 0, 0, 0
    sc, mx = [], []
    for v, rows, keys, ys, ends, ms in r.get("sc", []):
        for lane in range(lanes):
            if v >> lane & 1:
                rr = rows >> (lane * SB) & ((1 << SB) - 1)
                jj = keys >> (lane * COUNT_BITS) & ((1 << COUNT_BITS) - 1)
                sc.append((rr, jj, _s16(ys >> (16 * lane))))
                if ends >> lane & 1:
                    mx.append((rr, _s16(ms >> (16 * lane))))
    bad = count_mismatches(sc, sp.scores) + count_mismatches(mx, sp.maxes)
    return sp.tiles, len(sp.scores), len(sp.maxes), bad, int(r.get("sc_late", 0))


def _s16(x: int) -> int:
    x &= 0xFFFF
    return x - (1 << 16) if x >> 15 else x


__all__ = ["SC_KEYS", "SC_MODE", "SC_PREFETCH", "ScorePlan", "sc_compare", "sc_signature", "score_plan",
           "score_stage"]
