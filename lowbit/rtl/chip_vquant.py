"""The V quantizer (docs/rtl.md "The KV cache on data"): the KV cache's V rows made on the chip, from the v
projection's Q7.8 outputs, in the cycles between a V write's issue and its data beats.

Rule (sim.golden `_attention`, per token t and KV head g over head_dim)::

    v8[t, g], v_amax[t, g] = sfu_absmax_quantize(v[t, g * hd:(g + 1) * hd], ACT_IN_BITS)

i.e. amax = max |x| and q = sign(x) RNE(127 |x| / amax) (0 where amax = 0), computed by the same per-lane
restoring divider as the RoPE engine's per-head quantize (lowbit.rtl.sfu_stream_headq.rne_quant, exact with the
golden's reciprocal form), a whole head row a cycle (head_dim dividers).

- **The row memory** (`VRows`): the v projection's requantizer outputs (dst DST_V, lowbit.rtl.chip_requant), a
  memory of `rows` head rows of head_dim Q7.8 elements with a write enable per element; the requantizers'
  bank word W (sfu.lanes elements) is row W div (head_dim / lanes), slot W mod (head_dim / lanes), so the
  projection's token-major layout (token t's row `KV x head_dim / lanes` words further) puts token t's head g
  in row t x KV + g.
- **Jobs**: a V write of dma_kv whose source lies in the write source's upper half (lowbit.rtl.chip_kv: the
  loader's layout, DESIGN ASSUMPTION) pushes (source unit, units) into a FIFO of `table` entries at its
  issue. The quantizer takes the jobs in issue order, the k-th one KV head k mod KV (sim.attention writes a
  step and layer's KV heads in order; the loader maps only programs where that holds), its T = units / (head_dim
  / unit bytes) rows t x KV + g one a cycle: the job is taken the cycle after its issue, row t is read 1 + t
  cycles later (no earlier than 2 cycles after the issue, so after the v tile's last requantized word landed:
  the write is issued no earlier than the tile's end), its amax formed the cycle after the read (a max
  tree), its INT8 row written into the source the cycle after that (`s_*`, head_dim bytes), VQ_PIPE cycles
  from the job's issue to its first row. `done` counts the jobs whose rows are all in the source; the KV
  writer holds a V write's beats until then (its request's issue cycle stays the program's).
- **The scale memory** (`Scales`, one class with the keys' k_amax memory, lowbit.rtl.chip_kscales): each row's amax at (layer x KV + head) x max_positions + position, taken
  from the V write's DRAM address (`scale_index`), `sfu.lanes` a word: the context's amax_v, which the softmax
  engine reads where a word's keys are consecutive positions (lowbit.rtl.chip_softmax, `t_addr`). DESIGN
  ASSUMPTION: `lowbit sim` moves no scale bytes over DMA, so the per-key scales of the whole context stay on
  the chip (sized by max_positions); a real chip would keep them with the cache's rows and pay their bytes in
  the K/V DMAs.
- **The loader** (`vq_writes`, `vs_softmax`): every V write of the program on the quantizer or none; the
  softmax words whose chunk is consecutive positions read the scale memory, the others (a decode chunk of
  the keys LOP gathers) keep the load port's amax_v.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from lowbit.rtl.chip_kv import issue_fifo
from lowbit.rtl.chip_softmax import max_tree
from lowbit.rtl.sfu_stream import magnitude
from lowbit.rtl.sfu_stream_headq import i8_word, rne_quant

VQ_PIPE = 5  # a job's issue -> its first row written into the source (module docstring)


def _lg(n: int) -> int:
    return max(1, (n - 1).bit_length())


class VRows:
    """The row memory (module docstring): `rows` rows of `hd` Q7.8 elements, written by the requantizers' bank
    writes with dst DST_V (`writer`), read a row a cycle (`reader`)."""

    def __init__(self, m: Module, *, hd: int, lanes: int, rows: int) -> None:
        assert hd % lanes == 0 and (hd // lanes) & (hd // lanes - 1) == 0 and rows & (rows - 1) == 0
        self.m, self.hd, self.lanes, self.rows = m, hd, lanes, rows
        self.mem = Memory(shape=data.ArrayLayout(signed(16), hd), depth=rows, init=[])
        m.submodules.vq_rows = self.mem

    def writer(self, rq, dst: int) -> None:
        """The requantizer `rq`'s bank writes with `dst` go here (a write port per bank)."""
        spr = self.hd // self.lanes  # words a row
        sh = (spr - 1).bit_length()
        for b in range(2):
            wp = self.mem.write_port(granularity=1)
            word = Cat(b, getattr(rq, f"w{b}_addr"))  # bank b holds the odd / even words
            mask = getattr(rq, f"w{b}_mask")
            slot = word[:sh] if sh else 0
            en = Cat(*(Mux(slot == s, mask, 0) for s in range(spr))) if sh else mask
            hit = getattr(rq, f"w{b}_en") & (rq.w_dst == dst)
            # the address and data through multiplexers: a bare concatenation (the bank bit, the copies of a
            # word) leaves the port's own wires unused in the Verilog, which lint flags
            self.m.d.comb += [wp.en.eq(Mux(hit, en, 0)), wp.addr.eq(Mux(hit, word[sh:sh + _lg(self.rows)], 0)),
                              wp.data.eq(Mux(hit, Cat(*([getattr(rq, f"w{b}_data")] * spr)), 0))]

    def reader(self, addr):
        rp = self.mem.read_port()
        self.m.d.comb += rp.addr.eq(addr)
        return rp.data


class Scales:
    """A per-key scale memory of the context (module docstring; the V quantizer's amax_v and the RoPE engine's
    key amax, lowbit.rtl.chip_kscales): a row's amax at its scale index (layer x KV + head) x max_positions +
    position, `lanes` a word (the softmax engine's amax_v words), a write enable per lane; `name` names the
    memory."""

    def __init__(self, m: Module, *, lanes: int, entries: int, name: str = "vq_scales") -> None:
        assert entries % lanes == 0 and entries & (entries - 1) == 0
        self.m, self.lanes, self.words, self.name = m, lanes, entries // lanes, name
        self.mem = Memory(shape=data.ArrayLayout(unsigned(16), lanes), depth=self.words, init=[])
        m.submodules[name] = self.mem

    def write(self, en, idx, amax) -> None:
        wp = self.mem.write_port(granularity=1)
        lb = (self.lanes - 1).bit_length()
        lane = idx[:lb] if lb else 0
        # the data through a multiplexer: a bare concatenation of the copies leaves the port's wire unused (lint)
        self.m.d.comb += [wp.en.eq(Mux(en, Cat(*(lane == j for j in range(self.lanes))) if lb else 1, 0)),
                          wp.addr.eq(idx[lb:lb + _lg(self.words)]),
                          wp.data.eq(Mux(en, Cat(*([amax[:16]] * self.lanes)), 0))]

    def read(self, addr, data_) -> None:
        """`data_` the word at `addr` the cycle after (an address past the memory reads word 0)."""
        rp = self.mem.read_port()
        ab = _lg(self.words)
        self.m.d.comb += [rp.addr.eq(Mux(addr[ab:].any(), 0, addr[:ab]) if len(addr) > ab else addr), data_.eq(rp.data)]

    def read_entry(self, idx, name: str) -> Signal:
        """The entry at scale index `idx` the cycle after (its word read, its lane picked by the registered low
        bits of `idx`; bits past the memory ignored)."""
        rp = self.mem.read_port()
        lb, ab = (self.lanes - 1).bit_length(), _lg(self.words)
        sel, out = Signal(max(1, lb), name=f"{name}_lane"), Signal(16, name=f"{name}_d")
        self.m.d.comb += rp.addr.eq(idx[lb:lb + ab])
        self.m.d.sync += sel.eq(idx[:lb] if lb else 0)
        self.m.d.comb += out.eq(Array(rp.data[i] for i in range(self.lanes))[sel] if lb else rp.data[0])
        return out


class VQuant(wiring.Component):
    """The V quantizer's sequencer and datapath (module docstring): per issue lane `i_valid`, `i_addr` (the V
    write's source unit), `i_units`; the row memory's read port `r_addr` / `r_data` (the cycle after); the
    source's write `s_wen`, `s_addr` (unit), `s_data` (a head row of INT8) with the row's amax `s_amax`;
    `done`, the jobs complete (mod 2 x `table`)."""

    def __init__(self, *, lanes: int, table: int, hd: int, rows: int, kv: int, addr_bits: int,
                 row_units: int, s_bits: int = 1) -> None:
        assert table & (table - 1) == 0 and row_units & (row_units - 1) == 0
        self.lanes, self.table, self.hd, self.rows, self.kv, self.row_units = lanes, table, hd, rows, kv, row_units
        self.lt = max(1, (table - 1).bit_length())
        super().__init__({
            "i_valid": In(lanes), "i_addr": In(data.ArrayLayout(unsigned(addr_bits), lanes)),
            "i_units": In(data.ArrayLayout(unsigned(16), lanes)),
            "i_sidx": In(data.ArrayLayout(unsigned(s_bits), lanes)),
            "r_addr": Out(_lg(rows)), "r_data": In(data.ArrayLayout(signed(16), hd)),
            "s_wen": Out(1), "s_addr": Out(addr_bits), "s_data": Out(i8_word(hd)), "s_amax": Out(17),
            "s_sidx": Out(s_bits), "done": Out(self.lt + 1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        lt, rb, ab = self.lt, _lg(self.rows), len(self.s_addr)
        sb = len(self.s_sidx)
        (addrs, units, sidx), rp, has = issue_fifo(
            m, self.i_valid, self.table, [(self.i_addr, ab), (self.i_units, 16), (self.i_sidx, sb)], "vq")
        busy, left, dst, vaddr, si = Signal(), Signal(16), Signal(ab), Signal(rb), Signal(sb)
        g = Signal(range(max(2, self.kv)))
        last = Signal()
        m.d.comb += [last.eq(left == 1), self.r_addr.eq(vaddr)]
        with m.If(busy):
            m.d.sync += [vaddr.eq(vaddr + self.kv), left.eq(left - 1), dst.eq(dst + self.row_units), si.eq(si + 1)]
            with m.If(last):
                m.d.sync += busy.eq(0)
        with m.If(has & (~busy | last)):  # the head job (after the busy one's last read): KV head g's rows g, g + KV, ..
            m.d.sync += [busy.eq(1), left.eq(Array(units)[rp[:lt]] >> (self.row_units.bit_length() - 1)),
                         dst.eq(Array(addrs)[rp[:lt]]), si.eq(Array(sidx)[rp[:lt]]), vaddr.eq(g), rp.eq(rp + 1),
                         g.eq(Mux(g == self.kv - 1, 0, g + 1))]
        v1, d1, l1, s1 = Signal(), Signal(ab), Signal(), Signal(sb)  # the read's cycle: its row on r_data
        m.d.sync += [v1.eq(busy), d1.eq(dst), l1.eq(busy & last), s1.eq(si)]
        mags = [Signal(17, name=f"vq_mag{i}") for i in range(self.hd)]
        m.d.comb += [mg.eq(magnitude(self.r_data[i])) for i, mg in enumerate(mags)]
        amax = max_tree(m, mags, "vq_max")
        v2, d2, l2, a2, s2 = Signal(), Signal(ab), Signal(), Signal(17), Signal(sb)  # the row, its amax, registered
        x2 = Signal(data.ArrayLayout(signed(16), self.hd))
        m.d.sync += [v2.eq(v1), d2.eq(d1), l2.eq(v1 & l1), a2.eq(amax), x2.eq(self.r_data), s2.eq(s1),
                     self.s_sidx.eq(s2)]
        q = Signal(i8_word(self.hd))
        m.d.comb += [q[i].eq(rne_quant(m, x2[i], a2, f"vq{i}")) for i in range(self.hd)]
        done, l3 = Signal(lt + 1), Signal()  # a job counts the cycle after its last row's write
        m.d.sync += [self.s_wen.eq(v2), self.s_addr.eq(d2), self.s_data.eq(q), self.s_amax.eq(a2), l3.eq(v2 & l2),
                     done.eq(done + (self.s_wen & l3))]
        m.d.comb += self.done.eq(done)
        return m


def scale_entries(vquant: tuple[int, ...]) -> int:
    """The scale memory's entries of ChipParams.vquant (rows, head_dim, KV heads, max_positions, layers):
    max_positions for each (layer, KV head), their count a power of two."""
    _, _, kv, maxpos, layers = vquant
    return (1 << (layers * kv - 1).bit_length()) * maxpos


def scale_index(addr, vquant: tuple[int, ...]):
    """A V write's first row's scale index from its DRAM address (sim.kvcache.kv_addr: KV_BASE + (((layer x KV +
    head) x 2 + 1) x max_positions + position) x head_dim, KV_BASE a multiple of the plane's rows): the plane
    bit dropped."""
    _, hd, kv, maxpos, layers = vquant
    lh, lm, lk = (hd - 1).bit_length(), (maxpos - 1).bit_length(), max(1, (layers * kv - 1).bit_length())
    return Cat(addr[lh:lh + lm], addr[lh + lm + 1:lh + lm + 1 + lk])


def vs_softmax(plan, vquant: tuple[int, ...], lanes: int) -> None:
    """The loader: a softmax word on the engine (lowbit.rtl.chip_softmax) whose chunk's keys are consecutive
    positions from a multiple of `lanes` reads their amax_v from the scale memory (`t_addr` = 1 + the first
    key's word), and the bench's amax_v writes for it go; the others (a decode chunk of the keys LOP gathers)
    keep the load port's."""
    from lowbit.rtl.chip_ctrl import ROPE_T_BITS
    from lowbit.rtl.chip_softmax import SEL

    sm = plan.sm
    if sm is None:
        return
    _, _, kv, maxpos, _ = vquant
    for i, (layer, g, pos) in sm.keys.items():
        base = ((layer * kv + g) * maxpos + pos[0]) // lanes + 1
        if pos != list(range(pos[0], pos[0] + len(pos))) or pos[0] % lanes or base >= 1 << ROPE_T_BITS:
            continue
        sm.fields[i]["t_addr"] = base
        sm.vs_rows += sm.fields[i]["rows"]
        for e in sm.writes:
            if e["before"] == i:
                e["w"] = [x for x in e["w"] if x[0] >> SEL & 3 != 2]
    sm.writes = [e for e in sm.writes if e["w"]]


def vquant(chip, m: Module, bufs: dict, ab: int):
    """The V quantizer of the chip `chip` (its source's unit address `ab` bits), its row memory (`bufs["v"]`, for
    the requantizers) and, where the chip has the softmax engine `bufs["sm"]`, its scale memory, which that
    engine reads (without a reader, vitallm-fp4's, no memory: each row's amax and scale index leave on the
    observation ports, vq_signature)."""
    d, p, n = chip.dims, chip.p, chip.cfg.sfu.lanes
    rows, hd, kv, _, _ = p.vquant
    vr = VRows(m, hd=hd, lanes=n, rows=rows)
    bufs["v"] = vr
    ent = scale_entries(p.vquant)
    sm = bufs.get("sm")
    m.submodules.vquant = vq = VQuant(lanes=p.dma_issue, table=p.dma_table, hd=hd, rows=rows, kv=kv, addr_bits=ab,
                                      row_units=hd // d.unit_bytes, s_bits=(ent - 1).bit_length())
    m.d.comb += vq.r_data.eq(vr.reader(vq.r_addr))
    if sm is not None:
        vs = Scales(m, lanes=n, entries=ent)  # each row's amax by position, the softmax engine's amax_v
        vs.write(vq.s_wen, vq.s_sidx, vq.s_amax)
        bufs["vs"] = vs
        if not p.kgather:  # (with gathered keys: lowbit.rtl.chip_kscales reads it)
            vs.read(sm.vs_addr, sm.vs_data)
    return vq


def vq_writes(plan, writes: list, written: dict, n: int, ub: int, banks: int) -> dict[int, list[int]]:
    """The V writes whose rows the V quantizer makes (dma_kv word -> its rows' amax, the
    golden's kv_append.v_amax): all of the program's or none, each a step's rows of one KV head whose v
    projection the requantizers cover, the k-th the KV head k mod KV; a head row a whole number of SFU words
    (a power of two) and of source units (at most a beat)."""
    import numpy as np

    from lowbit.sim.isa import KV_BASE, LOP_BASE

    s, run = plan.model.spec, plan.model.run
    hd, kv = s.head_dim, s.n_kv_heads
    mp = s.max_positions
    if hd % n or (hd // n) & (hd // n - 1) or hd % ub or (hd // ub) & (hd // ub - 1) or hd // ub > banks \
            or hd & (hd - 1) or mp & (mp - 1) or mp % n:  # a scale index from the DRAM address (chip_vquant)
        return {}
    out: dict[int, list[int]] = {}
    for i, w in writes:
        if w["addr"] >= LOP_BASE or written.get(w["addr"], ("",))[0] != "v":
            continue
        lg, pos = divmod((w["addr"] - KV_BASE) // hd, s.max_positions)
        layer, g = divmod(lg // 2, kv)
        st = run.steps[w.get("step", -1)] if 0 <= w.get("step", -1) < len(run.steps) else None
        if st is None or (w["step"], f"layers.{layer}.attn.v") not in plan.rq_cover or g != len(out) % kv \
                or pos != st.start or w["nbytes"] != len(st.ids) * hd:
            return {}
        out[i] = [int(a) for a in np.asarray(st.buffers[f"layers.{layer}.attn.kv_append.v_amax"])[:, g]]
    return out


def vq_signature(vquant: tuple[int, ...], sm: bool) -> dict:
    """The observation ports: a row written into the source (`vqv`), its amax (`vqa`) and, on a chip without the
    softmax engine (`sm` False: no scale memory), its scale index (`vqs`, scale_index's bits of ChipParams.vquant),
    which the bench then checks in the memory's place."""
    return {"vqv": Out(1), "vqa": Out(17), **({} if sm else {"vqs": Out((scale_entries(vquant) - 1).bit_length())})}


__all__ = ["VQ_PIPE", "VQuant", "Scales", "VRows", "scale_entries", "scale_index", "vq_signature", "vq_writes", "vquant",
           "vs_softmax"]
