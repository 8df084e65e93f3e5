"""Each key's k_amax made on the chip (docs/rtl.md "The KV cache on data", "The softmax on data"): the RoPE engine's
per-head quantize forms every key row's amax (sim.golden `_attention`: k8, k_amax = sfu_absmax_quantize of the
RoPE'd key head row, the golden's kv_append.k_amax), and the K write that carries the row to DRAM names its
position, so the chip keeps each key's amax at its scale index, where the Q K^T score stage reads it.

- **The row amax memory**: the RoPE engine's key amax (`s_wen` with `s_k`, sfu_stream_headq) comes with the row's
  first INT8 word, which the write source takes at word `key_addr` (lowbit.rtl.chip_kv); the amax goes to
  row key_addr / (head_dim / sfu.lanes) of a memory of the source's head rows (kvw_depth / (head_dim / unit
  bytes) rows).
- **The copy** (`KScaleCopy`): a K write of dma_kv (not an LO-code write, its source in the lower half: the
  loader's layout, lowbit.rtl.chip_vquant) pushes (first source row, rows, scale index) at its issue, the
  scale index from its DRAM address as the V quantizer's (chip_vquant.scale_index: sim.kvcache.kv_addr with the
  plane bit dropped). The jobs are taken in issue order, a row a cycle: row t of a job read from the row amax
  memory 1 + t cycles after the job is taken and written into the **key-scale memory** (chip_vquant.Scales, the
  class of the V quantizer's) at scale index + t the cycle after.
- **Ordering**: the K write waits on the RoPE word that quantizes its rows (sim.attention `_kv_write`), so each
  row's amax is in the row memory before the write issues; the Q K^T tile over those keys waits on the K
  chunk's read, whose data the DRAM model returns only after the write's beats (a read after a write returns
  the written bytes), and a write's T rows are in the key-scale memory 3 + T cycles after its issue where the
  copy is idle (the job taken the cycle after the issue, row t written 3 + t cycles after it; later behind the
  jobs queued before it). The bench records every key-scale write with its cycle and `verify --chip` counts a
  Q K^T tile that reads a key before its write as late (measured: none).
- **The score stage reads by position** (lowbit.rtl.chip_scores): a Q K^T word's `ks` field (chip_ctrl
  KS_BITS), 1 + the scale index of the chunk's first key where the chunk's keys are consecutive positions
  (`ks_tiles`: a prompt's chunk, a decode chunk of every cached key); key j's k_amax is then entry ks - 1 + j.
- **Gathered keys** (a decode chunk of the keys LOP selects, fetched by dma_kv's indirect K words from the LOP
  index FIFO, lowbit.rtl.chip_dma): the **recorder** (`gather_record`, ChipParams.kgather registers) keeps each
  fetched key's scale index, an indirect K word issuing with the request address row 0 + first x head_dim of
  its (layer, KV head) writing scale_index(address) + i for its i-th key at entry c + i mod the depth, c the
  keys the K gathers fetched before it. The Q K^T word's `kg` field is 1 + its chunk's first entry: key j's
  k_amax is the key-scale memory's entry at the index recorded at kg - 1 + j (a multiplexer of the registers,
  then the memory's read: the same cycle as a read by `ks`, so SC_PREFETCH stays). The chunk's softmax word
  (lowbit.rtl.chip_softmax, `kg`) reads each lane's amax_v from the V quantizer's scale memory the same way
  (`sfu.lanes` entry reads of it, lane i of amax_v word b at the index recorded at kg - 1 + b x lanes + i).
  Ordering: the K gather issues before its Q K^T tile starts (the tile waits on its data); a later gather
  overwrites the entries depth keys on (the loader's depth: 4 chunks of the largest), which the score and
  probability checks would see.
  DESIGN ASSUMPTION (as the V quantizer's scale memory): `lowbit sim` moves no scale bytes, so the per-key
  scales of the whole context stay on the chip.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from lowbit.rtl.chip_ctrl import KS_BITS
from lowbit.rtl.chip_kv import issue_fifo


def _lg(n: int) -> int:
    return max(1, (n - 1).bit_length())


class KScaleCopy(wiring.Component):
    """The copy's sequencer (module docstring): per issue lane `i_valid`, `i_row` (the K write's first source
    row), `i_rows`, `i_sidx` (its first row's scale index); the row amax memory's read `r_addr` / `r_data` (the
    cycle after); the key-scale write `w_en`, `w_sidx`, `w_amax`."""

    def __init__(self, *, lanes: int, table: int, row_bits: int, s_bits: int) -> None:
        assert table & (table - 1) == 0
        self.table = table
        super().__init__({
            "i_valid": In(lanes), "i_row": In(data.ArrayLayout(unsigned(row_bits), lanes)),
            "i_rows": In(data.ArrayLayout(unsigned(16), lanes)), "i_sidx": In(data.ArrayLayout(unsigned(s_bits), lanes)),
            "r_addr": Out(row_bits), "r_data": In(16), "w_en": Out(1), "w_sidx": Out(s_bits), "w_amax": Out(16),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        lt = max(1, (self.table - 1).bit_length())
        rb, sb = len(self.r_addr), len(self.w_sidx)
        (rows, cnts, sidx), rp, has = issue_fifo(
            m, self.i_valid, self.table, [(self.i_row, rb), (self.i_rows, 16), (self.i_sidx, sb)], "ksc")
        busy, left, row, si = Signal(), Signal(16), Signal(rb), Signal(sb)
        last = Signal()
        m.d.comb += [last.eq(left == 1), self.r_addr.eq(row)]
        with m.If(busy):
            m.d.sync += [row.eq(row + 1), left.eq(left - 1), si.eq(si + 1)]
            with m.If(last):
                m.d.sync += busy.eq(0)
        with m.If(has & (~busy | last)):  # the head job, after the busy one's last read
            n = Array(cnts)[rp[:lt]]
            m.d.sync += [busy.eq(n != 0), left.eq(n), row.eq(Array(rows)[rp[:lt]]), si.eq(Array(sidx)[rp[:lt]]),
                         rp.eq(rp + 1)]
        v1, s1 = Signal(), Signal(sb)  # the read's cycle: the row's amax on r_data
        m.d.sync += [v1.eq(busy), s1.eq(si)]
        m.d.comb += [self.w_en.eq(v1), self.w_sidx.eq(s1), self.w_amax.eq(self.r_data)]
        return m


def ks_signature(s_bits: int) -> dict:
    """The observation ports: a key-scale write (`ksv`), its scale index (`ksi`) and amax (`ksa`)."""
    return {"ksv": Out(1), "ksi": Out(s_bits), "ksa": Out(16)}


def kscales(chip, m: Module, dkv, bufs: dict, ab: int, kaddr) -> Signal:
    """The row amax memory, the copy on dma_kv's K writes (`dkv`, its write source's unit address `ab` bits) and
    the key-scale memory (`bufs["ks"]`, for the score stage); `kaddr`: the source word the RoPE engine's key
    word goes to this cycle (chip_kv.key_addr). Returns the key-scale write strobe."""
    from lowbit.rtl.chip_vquant import Scales, scale_entries, scale_index
    from lowbit.sim.isa import D_LOP

    d, p, n, hq = chip.dims, chip.p, chip.cfg.sfu.lanes, chip.hq
    hd = p.vquant[1]
    ru = hd // d.unit_bytes  # source units a head row
    lr, lw = (ru - 1).bit_length(), (hd // n - 1).bit_length()
    nrows = p.kvw_depth // ru
    rb = _lg(nrows)
    amem = Memory(shape=unsigned(16), depth=nrows, init=[])
    m.submodules.ks_rows = amem
    wp, rp = amem.write_port(), amem.read_port()
    m.d.comb += [wp.en.eq(hq.s_wen & hq.s_k), wp.addr.eq((kaddr >> lw)[:rb]), wp.data.eq(hq.s_amax[:16])]
    ent = scale_entries(p.vquant)
    sb = (ent - 1).bit_length()
    m.submodules.kscopy = cp = KScaleCopy(lanes=p.dma_issue, table=p.dma_table, row_bits=rb, s_bits=sb)
    for k in range(p.dma_issue):
        isk = Signal(name=f"kv_isk{k}")  # a K write: not an LO-code write, its source in the lower half
        m.d.comb += [isk.eq(dkv.w_valid[k] & (dkv.req[k].dcls != D_LOP) & ~dkv.f_addr[k][ab - 1]),
                     cp.i_valid[k].eq(isk), cp.i_row[k].eq((dkv.f_addr[k][:ab] >> lr)[:rb]),
                     cp.i_rows[k].eq(dkv.f_words[k] >> lr), cp.i_sidx[k].eq(scale_index(dkv.req[k].addr, p.vquant))]
    m.d.comb += [rp.addr.eq(cp.r_addr), cp.r_data.eq(rp.data)]
    ks = Scales(m, lanes=n, entries=ent, name="ks_scales")
    ks.write(cp.w_en, cp.w_sidx, cp.w_amax)
    bufs["ks"] = ks
    if p.kgather and dkv.lop:  # the keys LOP gathers: their scale indices, and the softmax engine's amax_v of them
        bufs["kg"] = kg = gather_record(m, dkv, p.kgather, p.dma_issue, p.vquant, sb)
        sm, vs = bufs["sm"], bufs["vs"]
        plain = Signal(data.ArrayLayout(16, n), name="sm_vsplain")
        vs.read(sm.vs_addr, plain)
        on = Signal(name="sm_kgon")  # registered: it picks the data of the cycle's reads
        m.d.sync += on.eq(sm.vs_kg != 0)
        got = [vs.read_entry(kg_entry(kg, sm.vs_kg - 1 + sm.vs_key * n + i), f"sm_kg{i}") for i in range(n)]
        m.d.comb += sm.vs_data.eq(Mux(on, Cat(*got), plain))
    m.d.comb += [chip.ksv.eq(cp.w_en), chip.ksi.eq(cp.w_sidx), chip.ksa.eq(cp.w_amax)]
    return cp.w_en


def gather_record(m: Module, dkv, depth: int, lanes: int, vquant: tuple[int, ...], s_bits: int) -> list[Signal]:
    """The gathered keys' scale indices (module docstring), `depth` registers: an indirect K word of dma_kv
    (`dkv`, the LOP index FIFO's: `ind` 1, `plane` 0) issuing on lane k fetches its `nidx` keys from the
    request's address, row 0 + first x head_dim of its (layer, KV head), so key i's scale index is
    scale_index(address) + i; it goes to entry (c + i) mod depth, c the keys the earlier K gathers fetched
    (the issue lanes in order)."""
    from lowbit.rtl.chip_vquant import scale_index

    lg = (depth - 1).bit_length()
    regs = [Signal(s_bits, name=f"kg_idx{e}") for e in range(depth)]
    pos = Signal(lg, name="kg_count")
    nxt = pos
    for k in range(lanes):
        w = dkv.words[k]
        hit, pk, s0 = Signal(name=f"kg_hit{k}"), Signal(lg, name=f"kg_pos{k}"), Signal(s_bits, name=f"kg_first{k}")
        m.d.comb += [hit.eq(dkv.req_valid[k] & w.ind & ~w.plane), pk.eq(nxt), s0.eq(scale_index(dkv.req[k].addr, vquant))]
        for e in range(depth):
            off = (e - pk)[:lg]  # entry e's key of the word, mod depth
            with m.If(hit & (off < w.nidx)):
                m.d.sync += regs[e].eq(s0 + off)
        nxt = (pk + Mux(hit, w.nidx, 0))[:lg]
    m.d.sync += pos.eq(nxt)
    return regs


def kg_entry(regs: list[Signal], at) -> Signal:
    """The scale index recorded at entry `at` mod len(regs) (a multiplexer)."""
    lg = (len(regs) - 1).bit_length()
    return Array(regs)[at[:lg]]


# ---- the loader and the check (on the host)


def ks_tiles(plan, vquant: tuple[int, ...], kwords: list[dict]) -> None:
    """The Q K^T tiles on the score stage (`plan.sc`, lowbit.rtl.chip_scores.ScorePlan) read their k_amax from the
    key-scale memory and the bench's key-scale writes for them go: a chunk of consecutive positions by `ks` = 1
    + the first key's scale index ((layer x KV + head) x max_positions + position); the decode chunks of the
    keys LOP gathers by `kg` = 1 + the recorder entry of their first key, the keys dma_kv's indirect K words
    (`kwords`, in queue order) fetched before them mod the recorder's depth (4 x the largest chunk, a power of
    two) where those words fetch exactly the gathered chunks' keys, and their softmax words' amax_v
    (lowbit.rtl.chip_softmax, `kg`) likewise. None where a K row is not the RoPE engine's (the load port's
    stand-in)."""
    sc, kw, sm = plan.sc, plan.kvw, plan.sm
    if sc is None or not sc.tiles or kw is None or kw.bench_rows.get("k", 0) or not kw.rope_rows:
        return
    from lowbit.rtl.chip_ctrl import KG_BITS
    from lowbit.rtl.chip_softmax import SEL

    _, _, kv, maxpos, _ = vquant
    steps = plan.model.run.steps
    gathered, at = [], 0  # at: the keys the indirect K words fetch before a tile's (a chunk of fewer keys than
    for e, (step, layer, g, _q0, pos, _nq, _pos0) in zip(sc.writes, sc.tiles_info, strict=True):  # its context)
        idx = [(layer * kv + g) * maxpos + x for x in pos]
        if pos != list(range(pos[0], pos[0] + len(pos))):
            gathered.append((e, layer, g, pos, idx, at))
        elif idx[-1] + 1 < 1 << KS_BITS:
            sc.ks[tuple(e["before"])] = ("ks", idx[0] + 1, idx)
            e["w"] = []
        at += len(pos) if pos != list(range(steps[step].start + len(steps[step].ids))) else 0
    from lowbit.sim.isa import KV_BASE

    plane = maxpos * vquant[1]  # an indirect word's plane from its address (sim.kvcache.kv_addr)
    fetched = sum(w["nidx"] for w in kwords if w.get("ind") and not (w["addr"] - KV_BASE) // plane % 2)
    depth = 1 << (4 * max((len(x[3]) for x in gathered), default=1) - 1).bit_length()
    if gathered and fetched == at and depth < 1 << KG_BITS:
        sc.kg_depth = depth
        words = [i for i in sorted(sm.fields) if not sm.fields[i].get("t_addr")] if sm is not None else []
        for e, layer, g, pos, idx, at in gathered:
            sc.ks[tuple(e["before"])] = ("kg", at % depth + 1, idx)
            e["w"] = []
            i = next((j for j in words if sm.keys[j] == (layer, g, pos)), None)  # its softmax word, the first of
            if i is not None:  # its keys not yet taken: its amax_v by position too
                words.remove(i)
                sm.fields[i]["kg"] = at % depth + 1
                sm.vs_rows += sm.fields[i]["rows"]
                for x in sm.writes:
                    if x["before"] == i:
                        x["w"] = [y for y in x["w"] if y[0] >> SEL & 3 != 2]
        sm.writes = [x for x in sm.writes if x["w"]] if sm is not None else []
    sc.writes = [e for e in sc.writes if e["w"]]


def ks_compare(plan, r: dict) -> tuple[int, int, int, int, int, int]:
    """(Q K^T tiles reading k_amax by position, their keys, key-scale writes recorded, those differing from the
    golden's kv_append.k_amax at their index (and cached keys never written), tiles reading a key before its
    write, k_amax still written by the bench)."""
    sc = plan.sc
    if sc is None:
        return 0, 0, 0, 0, 0, 0
    from lowbit.rtl.chip_scores import _k_amax

    bench = sum(len(e["w"]) for e in sc.writes)
    got = r.get("ks", [])
    if not sc.ks:
        return 0, 0, len(got), 0, 0, bench
    s, run = plan.model.spec, plan.model.run
    kv, mp = s.n_kv_heads, s.max_positions
    exp = {}
    for layer in range(s.n_layers):
        ka = _k_amax(run, layer, kv)
        for pos in range(ka.shape[0]):
            for g in range(kv):
                exp[(layer * kv + g) * mp + pos] = int(ka[pos, g])
    first: dict[int, int] = {}
    bad = 0
    for cyc, idx, a in got:
        bad += exp.get(idx) != a
        first.setdefault(idx, cyc)
    bad += len(set(exp) - set(first))
    late = 0
    for (q, i), (_f, _v, idx) in sc.ks.items():
        st = r["start"][q][i]
        late += st < 0 or any(first.get(x, 1 << 62) >= st for x in idx)
    return len(sc.ks), sum(len(x[2]) for x in sc.ks.values()), len(got), bad, late, bench


__all__ = ["KScaleCopy", "gather_record", "kg_entry", "ks_compare", "ks_signature", "ks_tiles", "kscales"]
