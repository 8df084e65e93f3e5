"""The KV cache on data (docs/rtl.md "The KV cache on data"): the program's KV writes (sim.attention
`_kv_write`: per KV head a dma_kv write of the step's t x head_dim INT8 K bytes to the K plane, one of the V
bytes to the V plane and, with LO codes in DRAM, one of their LO codes) carry their bytes over the memory
port's write-data channel (lowbit.rtl.chip_dma.mem_port_signature), so the chip's later K/V reads return the
chip's own rows.

- **The write source** (`kvsrc`): a buffer of `ChipParams.kvw_depth` units (the weight buffer's unit, a
  power of two), banked like the kv buffer (lowbit.rtl.chip_data.BankedBuffer: `data_banks` banks, one
  beat of units read a cycle from any unit address). It is written a word of `sfu.lanes` bytes a cycle
  (`upw` = lanes / unit bytes units): by the RoPE engine's per-head quantize, each key word of a RoPE word's
  block of `nh` KV heads (lowbit.rtl.chip_rope: token t's key head kk, word x) at word address
  `x_addr` + kk x gstride x beats + t x beats + x (`key_addr`: gstride = T grp, the word's query-group
  stride, so the block's keys stay inside its q / k rows' region), so each KV head of the block lays its K
  rows out position after position (`tiny`'s blocks of one KV head and `vitallm`'s of two alike): the K
  write's bytes; a head row a cycle by the V quantizer (lowbit.rtl.chip_vquant: every V row, in the upper
  half); and through the load port (`kv_load`) before `start`, the rows no unit on the chip produces yet
  (DESIGN ASSUMPTION, a stand-in: V rows where the quantizer does not cover the program), after the RoPE
  region.
- **The writer** (`KvWriter`): a write word of dma_kv names its source units (`dbase`, `dwords`, the loader's);
  at issue its request lane pushes (completion-table slot, dbase, dwords) into a FIFO of `dma_table` entries
  (the writes outstanding), and the writer streams the head's units a beat a cycle: address in cycle c, the
  beat (`wdata_valid`, `wdata_id` = the request's id, `wdata`) in cycle c + 1, so a write's first beat
  crosses the port 2 cycles after its request (the FIFO's register, the source's read), the writes in issue
  order, back to back. An LO-code write (class D_LOP) names its key's K rows in the source: the writer reads
  two beats of K bytes a beat (a second read port) and sends their leading-one codes (`lo_code`,
  sim.numerics.lop.lo_code4), two a byte, so the LO codes the program writes are the chip's K rows'.
- **The bench** stores every write's bytes into its DRAM image (lowbit.rtl.bench.chip_bench; timing
  sim.dram's as before) and serves a later read from the image, a read overlapping an earlier write whose
  beats have not all arrived waiting for them; the image holds no K/V row or LO code the program writes
  (`ChipResult.kv_write`: rows preloaded, 0 on every program measured, from context 0).
- **Check** (`kv_compare`): every written byte against the golden's cache: `layers.L.attn.kv_append.k8` /
  `v8` at the write's positions, and `kv_append.lo` packed two 4-bit codes a byte, element 2i in the low
  nibble (DESIGN ASSUMPTION, the LO-code plane's layout).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.hdl import Array, Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import count_mismatches

KV_LOAD = 4  # the write source's load queue past the LOP engine's (lowbit.rtl.chip.Chip.lop_load): LOP code,
# query, softmax, RoPE table (lowbit.rtl.chip_rope.rope_load), then this


@dataclass
class KvWritePlan:
    """The KV writes' sources, the stand-in rows and the bytes expected (module docstring)."""

    fields: dict[tuple[int, int], dict] = field(default_factory=dict)  # dma_kv write -> {dwords, dbase}
    preload: list[tuple[int, int]] = field(default_factory=list)     # (source word, word) through the load port
    expect: dict[int, tuple[str, bytes]] = field(default_factory=dict)  # write's DRAM address -> (plane, bytes)
    rope_rows: int = 0     # K rows the RoPE engine writes into the source
    lo_rows: int = 0       # keys whose LO codes the writer makes from their K rows in the source
    bench_rows: dict[str, int] = field(default_factory=dict)  # plane -> rows written through the load port
    depth: int = 0         # the source's units (ChipParams.kvw_depth)
    vquant: tuple[int, ...] = (0, 0, 0, 0, 0)  # the V quantizer's sizes (ChipParams.vquant)
    v_amax: list[int] = field(default_factory=list)  # the V quantizer's rows' amax in its order (the golden's)
    v_sidx: list[int] = field(default_factory=list)  # ... and their scale indices (chip_vquant.scale_index)


def lo_bytes(codes: np.ndarray) -> bytes:
    """LO codes (4 bits each, one key's row) as DRAM bytes: element 2i in the low nibble of byte i."""
    c = np.asarray(codes, np.int64) & 0xF
    if len(c) % 2:
        c = np.concatenate([c, [0]])
    return bytes(int(c[i] | c[i + 1] << 4) for i in range(0, len(c), 2))


def _rope_block(plan, step: int, layer: int, g: int):
    rp = plan.rope
    if rp is None:
        return None
    for b in rp.blocks.get((step, layer), []):
        if b.g0 <= g < b.g0 + b.nh and plan.sfu_fields.get(b.word, {}).get("eng") == 6:
            return b
    return None


def kv_write_plan(plan, img, cfg, kq: int, written: dict[int, tuple[str, bytes]]) -> KvWritePlan:
    """Sources of dma_kv's writes (module docstring): a K write of a step and KV head whose RoPE word runs on
    the engine over that head alone reads its block's keys; every other write reads stand-in words the load
    port writes before `start`. `written`: the rows the program writes (DRAM address -> (plane, the golden's
    bytes)), from kv_written."""
    from lowbit.rtl.chip_vquant import vq_writes, vs_softmax
    from lowbit.sim.isa import KV_BASE, LOP_BASE
    from lowbit.sim.kvcache import code_bytes, kv_addr

    kp = KvWritePlan()
    s, d, n = plan.model.spec, plan.dims, cfg.sfu.lanes
    hd, ub, grp = s.head_dim, d.unit_bytes, s.n_heads // s.n_kv_heads
    if n % ub or hd % n:
        return kp
    upw = n // ub
    writes = [(i, w) for i, w in enumerate(img.words[kq]) if w["wr"] and w["addr"] >= KV_BASE]
    rope_words = 0  # the RoPE engine's key region: every block's keys from its x_addr
    for blocks in (plan.rope.blocks.values() if plan.rope is not None else ()):
        for b in blocks:
            rope_words = max(rope_words, b.base + ((b.nh - 1) * b.tokens * grp + b.tokens) * hd // n)
    nxt = rope_words
    cb = code_bytes(s)
    ksrc: dict[int, tuple[int, int]] = {}  # a K write's DRAM address -> (its source unit, bytes)
    vq = vq_writes(plan, writes, written, n, ub, d.banks)  # V writes whose rows the V quantizer makes
    vsrc: list[tuple[tuple[int, int], int]] = []  # ... their words, placed in the upper half below
    for i, w in writes:
        lo = w["addr"] >= LOP_BASE
        rows = [written.get(a) for a in range(w["addr"], w["addr"] + w["nbytes"], cb if lo else hd)]
        if None in rows or "step" not in w:
            continue
        plane = rows[0][0]
        body = b"".join(r[1] for r in rows)
        if lo:  # its codes from the K write's source rows (two K bytes a code byte)
            lg, pos = divmod((w["addr"] - LOP_BASE) // cb, s.max_positions)
            src = ksrc.get(kv_addr(s, *divmod(lg, s.n_kv_heads), False, pos))
            if src is None or 2 * cb != hd or src[1] != 2 * w["nbytes"] or w["nbytes"] % ub:
                continue
            kp.expect[w["addr"]] = (plane, body)
            kp.fields[(kq, i)] = {"dbase": src[0], "dwords": w["nbytes"] // ub}
            kp.lo_rows += len(rows)
            continue
        if w["nbytes"] % n:
            continue
        kp.expect[w["addr"]] = (plane, body)
        lg, pos = divmod((w["addr"] - KV_BASE) // hd, s.max_positions)
        layer, g = divmod(lg // 2, s.n_kv_heads)
        blk = _rope_block(plan, w["step"], layer, g) if plane == "k" else None
        if i in vq:
            vsrc.append(((kq, i), w["nbytes"] // n))
            continue
        if blk is not None and blk.tokens * hd == w["nbytes"] and pos == plan.model.run.steps[w["step"]].start:
            base = plan.sfu_fields[blk.word]["x_addr"] + (g - blk.g0) * blk.tokens * grp * hd // n  # key_addr
            kp.rope_rows += blk.tokens
        else:
            base = nxt
            kp.preload += [(base + j, int.from_bytes(body[j * n:(j + 1) * n], "little")) for j in range(len(body) // n)]
            kp.bench_rows[plane] = kp.bench_rows.get(plane, 0) + len(rows)
            nxt += len(body) // n
        kp.fields[(kq, i)] = {"dbase": base * upw, "dwords": w["nbytes"] // ub}
        if plane == "k":
            ksrc[w["addr"]] = (base * upw, w["nbytes"])
    units = max(nxt * upw, d.banks)
    kp.depth = 1 << (units - 1).bit_length()
    if vq:  # the V quantizer's rows in the upper half (lowbit.rtl.chip_vquant): a V write's top source bit
        half = 1 << (max(units, sum(x for _, x in vsrc) * upw) - 1).bit_length()
        kp.depth, base = 2 * half, half
        for k, words in vsrc:
            kp.fields[k] = {"dbase": base, "dwords": words * n // ub}
            base += words * upw
        kp.v_amax = [a for i in sorted(vq) for a in vq[i]]
        kp.vquant = (1 << (max(len(vq[i]) for i in vq) * s.n_kv_heads - 1).bit_length(), hd, s.n_kv_heads,
                     s.max_positions, s.n_layers)
        kp.v_sidx = [scale_of(img.words[kq][i]["addr"], kp.vquant) + r for i in sorted(vq) for r in range(len(vq[i]))]
        vs_softmax(plan, kp.vquant, n)
    if kp.depth > 1 << d.w_bits:  # the DMA word's dbase field
        return KvWritePlan()
    return kp


def kv_written(plan, img, kq: int) -> dict[int, tuple[str, bytes]]:
    """The rows dma_kv's writes put in DRAM (address -> (plane 'k' / 'v' / 'lo', the golden's bytes)):
    sim.kvcache.kv_addr / lo_addr of the step's positions."""
    from lowbit.sim.isa import KV_BASE, LOP_BASE
    from lowbit.sim.kvcache import code_bytes, kv_addr, lo_addr

    s, run = plan.model.spec, plan.model.run
    rows: dict[int, tuple[str, bytes]] = {}
    for layer in range(s.n_layers):
        p = f"layers.{layer}.attn.kv_append"
        k8, v8, lo = (np.concatenate([st.buffers[f"{p}.{x}"] for st in run.steps]) for x in ("k8", "v8", "lo"))
        for pos in range(k8.shape[0]):
            for g in range(s.n_kv_heads):
                rows[kv_addr(s, layer, g, False, pos)] = ("k", k8[pos, g].astype(np.int8).tobytes())
                rows[kv_addr(s, layer, g, True, pos)] = ("v", v8[pos, g].astype(np.int8).tobytes())
                rows[lo_addr(s, layer, g, pos)] = ("lo", lo_bytes(lo[pos, g]))
    out: dict[int, tuple[str, bytes]] = {}
    cb = code_bytes(s)
    for w in img.words[kq]:
        if w["wr"] and w["addr"] >= KV_BASE:
            step = s.head_dim if w["addr"] < LOP_BASE else cb
            out.update({a: rows[a] for a in range(w["addr"], w["addr"] + w["nbytes"], step) if a in rows})
    return out


def kv_compare(kp: KvWritePlan, got: list) -> dict[str, tuple[int, int]]:
    """Per plane ('k', 'v', 'lo'): (bytes the program writes, bytes written that differ from the golden's,
    a write not made counting all its bytes, common.count_mismatches); `got` the bench's [DRAM address, bytes hex] per write."""
    have: dict[int, bytes] = {}
    for a, hx in got:
        have[int(a)] = bytes.fromhex(hx)
    out: dict[str, list[int]] = {}
    for a, (plane, want) in kp.expect.items():
        o = out.setdefault(plane, [0, 0])
        o[0] += len(want)
        o[1] += count_mismatches(list(have.get(a, b"")), list(want))
    return {k: (v[0], v[1]) for k, v in out.items()}


def lo_code(x):
    """sim.numerics.lop.lo_code4 of INT8 `x` (an 8-bit value): 0 for zero, else sign << 3 | (min(e, 6) + 1), e the
    leading one of |x| (-128: e = 7, saturated to 6)."""
    neg = x[7]
    mag = Mux(neg, -x, x)[:8]
    e = 0
    for b in range(1, 7):  # the highest set bit wins (bit 7 only for -128: saturated to 6)
        e = Mux(mag[b:].any(), b, e)
    return Mux(x == 0, 0, (neg << 3) | (e + 1))[:4]


def issue_fifo(m: Module, valid, table: int, cols: list, name: str):
    """A FIFO of `table` entries pushed at a DMA engine's issue, lane k's entry after the earlier lanes pushing
    in the same cycle: `cols` (per-lane ArrayLayout value, width) per column; returns (per column the entry
    registers, the read pointer to advance, whether an entry waits)."""
    lt = max(1, (table - 1).bit_length())
    regs = [[Signal(w, name=f"{name}_c{c}_{e}") for e in range(table)] for c, (_, w) in enumerate(cols)]
    wp, rp = Signal(lt + 1, name=f"{name}_wp"), Signal(lt + 1, name=f"{name}_rp")
    pos = wp
    for k in range(len(valid)):
        p = Signal(lt + 1, name=f"{name}_pos{k}")
        m.d.comb += p.eq(pos)
        for e in range(table):
            with m.If(valid[k] & (p[:lt] == e)):
                m.d.sync += [r[e].eq(v[k]) for r, (v, _) in zip(regs, cols, strict=True)]
        pos = (p + valid[k])[:lt + 1]
    m.d.sync += wp.eq(pos)
    return regs, rp, wp != rp


class KvWriter(wiring.Component):
    """dma_kv's write data (module docstring): per issue lane `i_valid`, `i_slot`, `i_addr` (source unit),
    `i_units`, `i_lo` (an LO-code write: its source the K rows, two source beats a beat), `i_v` (a V write
    whose rows the V quantizer makes: its beats wait until `v_done`, the quantizer's jobs complete, passes the
    V writes sent, lowbit.rtl.chip_vquant); the source's read ports `raddr` / `rdata` and `raddr1` / `rdata1`
    (a beat each, the cycle after its address); the port's `wvalid`, `wid`, `wdata`."""

    def __init__(self, *, engine: int, lanes: int, table: int, addr_bits: int, banks: int, unit_bits: int,
                 id_bits: int) -> None:
        assert table & (table - 1) == 0
        self.engine, self.lanes, self.table, self.banks = engine, lanes, table, banks
        lt = max(1, (table - 1).bit_length())
        self.lt = lt
        super().__init__({
            "i_valid": In(lanes), "i_slot": In(data.ArrayLayout(unsigned(lt), lanes)),
            "i_addr": In(data.ArrayLayout(unsigned(addr_bits), lanes)),
            "i_units": In(data.ArrayLayout(unsigned(16), lanes)), "i_lo": In(lanes), "i_v": In(lanes),
            "v_done": In(lt + 1),
            "raddr": Out(addr_bits), "rdata": In(data.ArrayLayout(unsigned(unit_bits), banks)),
            "raddr1": Out(addr_bits), "rdata1": In(data.ArrayLayout(unsigned(unit_bits), banks)),
            "wvalid": Out(1), "wid": Out(id_bits), "wdata": Out(data.ArrayLayout(unsigned(unit_bits), banks)),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        lt = self.lt
        ab = len(self.raddr)
        (slots, addrs, units, los, vs), rp, has = issue_fifo(
            m, self.i_valid, self.table, [(self.i_slot, lt), (self.i_addr, ab), (self.i_units, 16), (self.i_lo, 1),
                                          (self.i_v, 1)], "w")
        off = Signal(16)
        live = Signal()
        h_addr, h_units, h_slot = Array(addrs)[rp[:lt]], Array(units)[rp[:lt]], Array(slots)[rp[:lt]]
        h_lo, h_v = Array(los)[rp[:lt]], Array(vs)[rp[:lt]]
        v_sent = Signal(lt + 1)  # V writes sent whole: the head V write waits for the quantizer's next job
        last = Signal()
        m.d.comb += [live.eq(has & ~(h_v & (self.v_done == v_sent))),
                     self.raddr.eq(h_addr + Mux(h_lo, off << 1, off)),
                     self.raddr1.eq(self.raddr + self.banks), last.eq(off + self.banks >= h_units)]
        with m.If(live):
            m.d.sync += off.eq(Mux(last, 0, off + self.banks))
            with m.If(last):
                m.d.sync += [rp.eq(rp + 1), v_sent.eq(v_sent + h_v)]
        v1, id1, lo1 = Signal(), Signal.like(self.wid), Signal()
        m.d.sync += [v1.eq(live), id1.eq((self.engine << lt) | h_slot), lo1.eq(h_lo)]
        kb = Cat(self.rdata.as_value(), self.rdata1.as_value())  # an LO write's two beats of K bytes
        codes = Cat(*(lo_code(kb[8 * i:8 * i + 8]) for i in range(len(kb) // 8)))
        m.d.comb += [self.wvalid.eq(v1), self.wid.eq(id1),
                     self.wdata.eq(Mux(lo1, codes, self.rdata.as_value()))]
        return m


def kv_writer(chip, m: Module, dkv, sfuq, bufs: dict) -> Signal:
    """The write source (its load port at `chip.lop_load() + KV_LOAD`, the RoPE engine's keys where the chip has
    it: its per-head quantize's key words, `hkv` / `hka` / `hkw`; the V quantizer's rows where the chip has it,
    `ChipParams.vquant`, its row memory in `bufs["v"]` for the requantizers), the keys' amax by position where
    the chip has the score stage (lowbit.rtl.chip_kscales, `bufs["ks"]`) and the writer on dma_kv (`dkv`)
    driving the memory port's write channel; returns the strobe of its beats, the quantizer's rows and the
    key-scale writes."""
    from lowbit.rtl.chip_data import BankedBuffer
    from lowbit.rtl.chip_vquant import scale_index, vquant
    from lowbit.sim.isa import D_LOP

    d, p, cfg = chip.dims, chip.p, chip.cfg
    n = cfg.sfu.lanes
    upw = max(1, n // d.unit_bytes)
    ab = max(1, (p.kvw_depth - 1).bit_length())
    m.submodules.kvsrc = src = BankedBuffer(depth=p.kvw_depth, banks=d.banks, unit_bits=d.unit_bits,
                                            word_units=(d.banks, d.banks))
    m.submodules.kvwr = w = KvWriter(engine=1, lanes=p.dma_issue, table=p.dma_table, addr_bits=ab, banks=d.banks,
                                     unit_bits=d.unit_bits, id_bits=p.id_bits)
    vq = vquant(chip, m, bufs, ab) if p.vquant[0] else None
    for k in range(p.dma_issue):
        lo = dkv.req[k].dcls == D_LOP
        m.d.comb += [w.i_valid[k].eq(dkv.w_valid[k]), w.i_slot[k].eq(dkv.f_slot[k]),
                     w.i_addr[k].eq(dkv.f_addr[k][:ab]), w.i_units[k].eq(dkv.f_words[k]), w.i_lo[k].eq(lo)]
        if vq is not None:  # a V write: its source in the upper half (lowbit.rtl.chip_vquant)
            isv = Signal(name=f"kv_isv{k}")
            m.d.comb += [isv.eq(dkv.w_valid[k] & ~lo & dkv.f_addr[k][ab - 1]), w.i_v[k].eq(isv),
                         vq.i_valid[k].eq(isv), vq.i_addr[k].eq(dkv.f_addr[k][:ab]), vq.i_units[k].eq(dkv.f_words[k]),
                         vq.i_sidx[k].eq(scale_index(dkv.req[k].addr, p.vquant))]
    if vq is not None:
        m.d.comb += w.v_done.eq(vq.done)
    m.d.comb += [src.raddr[0].eq(w.raddr), w.rdata.eq(src.rdata0), src.raddr[1].eq(w.raddr1), w.rdata1.eq(src.rdata1), chip.mem.wdata_valid.eq(w.wvalid),
                 chip.mem.wdata_id.eq(w.wid), chip.mem.wdata.eq(w.wdata)]
    ld = chip.load_en & (chip.load_queue == chip.lop_load() + KV_LOAD)
    waddr, wword, wen = chip.load_addr, chip.load_word[:8 * n], ld
    ksw = 0  # the key-scale memory's writes (chip_kscales), recorded by the bench
    if chip.rope:  # a key word of the RoPE word running: at its KV head's position (key_addr)
        ka = key_addr(m, sfuq, chip.hkv)
        waddr, wword, wen = Mux(chip.hkv, ka, waddr), Mux(chip.hkv, chip.hkw, wword), chip.hkv | ld
        if chip.kscale:  # each key's amax by position (chip_kscales)
            from lowbit.rtl.chip_kscales import kscales

            ksw = kscales(chip, m, dkv, bufs, ab, ka)
    cnt = Signal(range(d.banks + 1), init=upw, name="kvsrc_count")  # a write's units (a word): held in a
    m.d.sync += cnt.eq(cnt)  # register, a net of its own (constant count bits would be unused aliases: lint)
    uaddr, ucnt, units = (waddr * upw)[:ab], cnt, [wword[u * d.unit_bits:(u + 1) * d.unit_bits] for u in range(upw)]
    if vq is not None:  # a head row of the V quantizer (its cycles: no RoPE word nor load-port write then)
        ru = len(vq.s_data.as_value()) // d.unit_bits
        vcnt = Signal(range(d.banks + 1), init=ru, name="kvsrc_vcount")
        m.d.sync += vcnt.eq(vcnt)
        vd = vq.s_data.as_value()
        units = [Mux(vq.s_wen, vd[u * d.unit_bits:(u + 1) * d.unit_bits], units[u] if u < upw else 0)
                 for u in range(max(upw, ru))]
        uaddr, ucnt, wen = Mux(vq.s_wen, vq.s_addr, uaddr), Mux(vq.s_wen, vcnt, cnt), wen | vq.s_wen
        m.d.comb += [chip.vqv.eq(vq.s_wen), chip.vqa.eq(vq.s_amax)]
        if not chip.sm:  # no scale memory (no softmax engine reads it): the row's scale index observed instead
            m.d.comb += chip.vqs.eq(vq.s_sidx)
    m.d.comb += [src.wr_valid.eq(wen), src.wr_addr.eq(uaddr), src.wr_count.eq(ucnt)]
    for u, x in enumerate(units):
        m.d.comb += src.wr_data[u].eq(x)
    return w.wvalid | (vq.s_wen if vq is not None else 0) | ksw


def key_addr(m: Module, sfuq, kv) -> Signal:
    """The write source's word address of the RoPE word's key word written this cycle (`kv`), module docstring:
    x_addr + kk x gstride x beats + t x beats + x for token t's key head kk, word x. The per-head quantize
    writes a block's key words in that order (t, then kk < nh = hpp - nq, then x < beats), so three counters
    walk it from the word's start, the fields latched then."""
    from lowbit.rtl.chip_rope import ROPE_ENG

    w = sfuq.word
    ab = len(w.x_addr) + 1
    go = sfuq.go & (w.eng == ROPE_ENG)
    x, kk = Signal(len(w.beats), name="kvk_x"), Signal(len(w.hpp), name="kvk_h")
    hoff, toff = Signal(ab + len(w.gstride), name="kvk_hoff"), Signal(ab + len(w.gstride), name="kvk_toff")
    base, beats, nh, hstep = (Signal(len(w.x_addr), name="kvk_base"), Signal(len(w.beats), name="kvk_beats"),
                              Signal(len(w.hpp), name="kvk_nh"), Signal(len(hoff), name="kvk_hstep"))
    with m.If(go):
        m.d.sync += [base.eq(w.x_addr), beats.eq(w.beats), nh.eq(w.hpp - w.nq), hstep.eq(w.gstride * w.beats),
                     x.eq(0), kk.eq(0), hoff.eq(0), toff.eq(0)]
    with m.Elif(kv):
        with m.If(x + 1 < beats):
            m.d.sync += x.eq(x + 1)
        with m.Elif(kk + 1 < nh):
            m.d.sync += [x.eq(0), kk.eq(kk + 1), hoff.eq(hoff + hstep)]
        with m.Else():
            m.d.sync += [x.eq(0), kk.eq(0), hoff.eq(0), toff.eq(toff + beats)]
    a = Signal(len(hoff), name="kvk_addr")
    m.d.comb += a.eq(base + hoff + toff + x)
    return a


def kv_params(plan, p, given: bool):
    """ChipParams with the write source the plan needs (`kvw_depth`); where the chip is `given` without one
    large enough, its writes carry no data and the DRAM image holds the golden's rows instead."""
    import dataclasses

    kw = plan.kvw if plan is not None else None
    if kw is not None and kw.fields and not given:
        return dataclasses.replace(p, kvw_depth=kw.depth, vquant=kw.vquant)
    if plan is not None and not (kw is not None and kw.fields and p.kvw_depth >= kw.depth
                                 and (not kw.vquant[0] or p.vquant == kw.vquant)):
        for a in plan.dram:  # no write data: the image holds the golden's rows, as the writes would leave them
            if a in plan.kv_written:
                plan.dram[a] = plan.kv_written[a][1]
        plan.kvw = None
    return p


def kv_preload(plan, nrq: int) -> list[tuple[int, int, int]]:
    """The write source's stand-in words through the load port before `start`: (word address, word, load
    queue past the act buffer's: the requantizers' `nrq` multiplier memories, then KV_LOAD past the LOP
    engine's)."""
    from lowbit.rtl.chip_requant import RQ_LOAD

    kw = plan.kvw if plan is not None else None
    return [(a, w, RQ_LOAD + nrq + KV_LOAD) for a, w in kw.preload] if kw is not None and kw.fields else []


def kv_result(plan, r: dict) -> dict:
    """The KV cache's writes on data for ChipResult.kvw: per plane (bytes, differing), the writes carrying data,
    the K rows from the RoPE engine and the rows from the load port per plane, the rows the DRAM image still
    holds, beats after their write's response (`late`)."""
    from lowbit.sim.isa import KV_BASE, LOP_BASE

    kw = plan.kvw if plan is not None else None
    if kw is None or not kw.fields:
        return {}
    pre = sum(KV_BASE <= a < LOP_BASE and a not in plan.kv_written for a in plan.dram)
    rec = r.get("vq", [])
    sidx = bool(rec) and len(rec[0]) > 1  # the scale index observed too (a chip without the scale memory)
    got = [tuple(int(v) for v in x[:1 + sidx]) for x in rec]
    want = list(zip(kw.v_amax, kw.v_sidx, strict=True)) if sidx else [(a,) for a in kw.v_amax]
    return {"planes": kv_compare(kw, r.get("kv_writes", [])), "writes": len(kw.fields), "rope_rows": kw.rope_rows, "lo_rows": kw.lo_rows,
            "bench_rows": kw.bench_rows, "preloaded": pre, "late": int(r.get("wdata_late", 0)),
            "vq": (len(kw.v_amax), count_mismatches(got, want)), "vq_sidx": sidx}


def scale_of(addr: int, vquant: tuple[int, ...]) -> int:
    """lowbit.rtl.chip_vquant.scale_index of a V write's DRAM address, as an integer: (layer x KV + head) x
    max_positions + position (sim.kvcache.kv_addr's fields, the plane bit dropped)."""
    _, hd, kv, maxpos, layers = vquant
    lh, lm, lk = (hd - 1).bit_length(), (maxpos - 1).bit_length(), max(1, (layers * kv - 1).bit_length())
    return (addr >> lh) & ((1 << lm) - 1) | ((addr >> (lh + lm + 1)) & ((1 << lk) - 1)) << lm


def kv_line(kvw: dict) -> str:
    """verify --chip's line on the KV writes."""
    pl = kvw["planes"]
    names = {"k": "K", "v": "V", "lo": "LO-code"}
    per = "; ".join(f"{names[k]} {n:,} bytes, {b} differing" for k, (n, b) in sorted(pl.items()))
    bench = ", ".join(f"{n} {names[k]}" for k, n in sorted(kvw["bench_rows"].items())) or "none"
    return (f"KV cache: {kvw['writes']} dma_kv writes carry their bytes over the memory port's write channel into "
            f"the DRAM image, against the golden's kv_append.k8 / v8 / lo: {per}; K rows from the RoPE engine: "
            f"{kvw['rope_rows']}, keys' LO codes made from their K rows by the writer: {kvw['lo_rows']}, V rows from "
            f"the V quantizer: {kvw['vq'][0]} (their amax against kv_append.v_amax" + (
                " and scale index against their position" if kvw.get("vq_sidx") else "") + f": {kvw['vq'][1]} differing), rows "
            f"from the load port (stand-ins): {bench}; K/V rows the image still holds: "
            f"{kvw['preloaded']}; beats after their write's response: {kvw['late']}")


def kv_why(kvw: dict) -> str:
    vq = kvw.get("vq", (0, 0))[1]
    return (f"{sum(b for _, b in kvw['planes'].values())} written bytes differ from the golden's, "
            f"{kvw['late']} beats after their write's response" + (f", {vq} V rows' amax differ" if vq else ""))


def kv_ok(kvw: dict) -> bool:
    """Every written byte the golden's, every beat before its response."""
    return not kvw or (kvw["late"] == 0 and kvw.get("vq", (0, 0))[1] == 0
                       and all(b == 0 for _, b in kvw["planes"].values()))


__all__ = ["KV_LOAD", "KvWritePlan", "KvWriter", "issue_fifo", "kv_compare", "kv_line", "kv_ok", "kv_params", "kv_preload",
           "kv_result", "kv_why", "kv_write_plan", "kv_writer", "kv_written", "lo_bytes"]
