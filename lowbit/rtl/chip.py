"""The chip top, generated from a HwConfig: one controller per program queue (lowbit.sim.program), the
completion-count scoreboard, the SRAM rings and the DMA engines behind one memory port.

Structure (docs/rtl.md "Chip"):
- an instruction ring per queue (lowbit.rtl.chip_fetch: words of the queue kind's layout, lowbit.rtl.chip_ctrl),
  its first words written through the load port before `start`, the rest fetched through the instruction
  port `if_*` as the queue frees slots;
- compute queues (one per physical unit, in unit order): lowbit.rtl.chip_ctrl.ComputeQueue, busy for each
  tile's `cyc` cycles (the sim.units formula the unit RTL realises) unless the tile runs on the data path;
- DMA queues `dma_w` (engine 0) and `dma_kv` (engine 1): lowbit.rtl.chip_dma.DmaEngine, each with
  `dma_issue` request lanes of the memory port `mem`;
- the sync queue: lowbit.rtl.chip_ctrl.JoinMonitor;
- a ring per buffer the config has (lowbit.rtl.chip_ring.Ring, the config's capacity);
- with the data path (`ChipParams.data_banks` > 0, where lowbit.rtl.chip_data.data_dims allows it): the
  banked weight buffer filled by dma_w's read-data beats (chip_data.DmaFill), the kv buffer filled by
  dma_kv's K/V chunk reads the same way (where DataDims.k_depth allows), the act buffer (written
  through the load port at `load_queue` = the number of queues), and per TINT queue (and BoothFlex, where
  lowbit.rtl.chip_booth allows it: without TINT cores its attention tiles only, no weight read port, its
  act words half-word reads of the FP4 act word) an engine computing its tiles from them into a psum bank;
  those queues'
  words name their tiles and the engine ends them (chip_ctrl.ComputeQueue);
- with the LOP engine (`ChipParams.lop_grp` > 0, sized to the program's model): lowbit.rtl.chip_lop
  LopGroupSelect, started by the LOP queue's lop_score words (`eng`, `m`, `k`), its code memory written by
  dma_kv's LO-code reads' data beats (chip_lop.lop_read_beats; else the load port, `Chip.lop_load`), its
  query memory by the RoPE engine or the load port; the LOP words keep their `cyc`, which the engine meets
  (the bench checks its done strobes `lop_sdone` / `lop_done` against the words' ends), and its index FIFO
  writes leave on `lop_ov` / `lop_on` / `lop_oi`;
- the act buffer and, where the SFU is on data, its engines and their writers (lowbit.rtl.chip_engines).
The scoreboard (lowbit.rtl.chip_ctrl.scoreboard_layout) is the vector of completion counts, one per
non-sync queue (compute counts are registers, a DMA engine's count the in-order prefix of its completion
table), plus each DMA engine's completion window (requests complete out of order; a wait names a range
of them). Every controller reads all of it.

Observation ports for the bench: `pc_<q>` (instructions issued) and `count_<q>` (completed in order) per
queue, `dbase_<q>` / `dfin_<q>` per DMA queue (requests completing this cycle, per completion-table slot,
and the oldest unretired request), `join_head` / `join_done` (joins completing this cycle, relative to the
head) and `cycle` (cycles since `start`); with the data path `pv_<q>` / `pw_<q>` (the psum word an engine
writes this cycle), `psum_<q>` (its psum bank at `psum_raddr`) and `kv_rdata` (a beat of kv buffer units at
`kv_raddr`).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from lowbit.rtl.chip_av import av_engine, av_ok
from lowbit.rtl.chip_booth import (
    BoothEngine,
    booth_act,
    booth_data,
    booth_data_ok,
    booth_psum_layout,
    booth_ternary,
    half_word_reads,
    qk_data_ok,
)
from lowbit.rtl.chip_ctrl import (
    ComputeQueue,
    JoinMonitor,
    scoreboard_layout,
    word_layout,
)
from lowbit.rtl.chip_data import BankedBuffer, DmaFill, TintEngine, data_dims, psum_layout
from lowbit.rtl.chip_dma import N_BUFFERS, DmaEngine, mem_port_signature
from lowbit.rtl.chip_engines import (  # noqa: F401  (rq_engines, rq_lanes: the chip's, imported from here)
    act_buffer,
    engine_signature,
    rq_engines,
    rq_lanes,
    rq_signature,
    rq_wiring,
    sfu_signature,
)
from lowbit.rtl.chip_fetch import InstrFetch
from lowbit.rtl.chip_fp4 import Fp4Engine, fp4_psum_layout
from lowbit.rtl.chip_kscales import ks_signature
from lowbit.rtl.chip_kv import kv_writer
from lowbit.rtl.chip_params import ChipParams  # noqa: F401  (the chip's sizes, imported from here)
from lowbit.rtl.chip_requant import RQ_LOAD
from lowbit.rtl.chip_ring import Ring
from lowbit.rtl.chip_scores import sc_signature, score_stage
from lowbit.rtl.chip_sfu import sfu_data_ok
from lowbit.rtl.chip_softmax import sm_ok
from lowbit.rtl.chip_vquant import scale_entries, vq_signature
from lowbit.rtl.common import COUNT_BITS
from lowbit.rtl.sfu_stream import STAT_BITS
from lowbit.rtl.sfu_stream_requant import mult_word
from lowbit.rtl.sfu_stream_rope import trig_word
from lowbit.sim.config import HwConfig
from lowbit.sim.errors import LowbitError
from lowbit.sim.isa import BUFFERS, C_BOOTH, C_DMAKV, C_DMAW, C_FP4, C_JOIN, C_LOP, C_SFU, C_TINT

# The buffers DMA instructions allocate in, as rings, and the DMA queue that fills each (DESIGN ASSUMPTION,
# the lowering's rule: weight tiles through dma_w, K/V chunks and LO codes through dma_kv; the act, psum and
# sfu buffers are placed by the compiler, no DMA allocates in them). The loader refuses a program that differs.
RING_OWNER = {"weight": "dma_w", "kv": "dma_kv", "lop": "dma_kv"}


def queues_of(cfg: HwConfig) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The program's queues for this config: (names, classes), physical units then sync."""
    from lowbit.sim.engine import unit_list
    from lowbit.sim.program import Queues

    q = Queues.of(unit_list(cfg))
    return tuple(q.names), tuple(int(c) for c in q.classes)


def queue_kind(cls: int) -> str:
    return "join" if cls == C_JOIN else "dma" if cls in (C_DMAW, C_DMAKV) else "compute"


def word_kind(name: str, cls: int, data_path: bool, booth_data: bool = False, sfu_data: bool = False,
              lop_data: bool = False) -> str:
    """The instruction word layout of a queue (lowbit.rtl.chip_ctrl.word_layout): with the data path a
    TINT queue's words are 'tint' words, BoothFlex's 'booth' words where it has a data path (`booth_data`,
    lowbit.rtl.chip_booth.booth_data: its ternary tiles on the TINT layout, or its attention tiles), the SFU's 'sfu' words where its
    quantize engine writes the act buffer (`sfu_data`, sfu_data_ok), the LOP queue's 'lop' words where the
    chip has the LOP engine (`lop_data`: ChipParams.lop_grp), and dma_kv's 'dma_lop' words then (its index
    FIFO; the LOP engine needs the kv buffer's data path: lowbit.rtl.chip_run)."""
    if data_path and lop_data and cls == C_LOP:
        return "lop"
    if data_path and lop_data and cls == C_DMAKV:  # its indirect words read the LOP index FIFO
        return "dma_lop"
    if data_path and cls in (C_TINT, C_FP4):  # the FP4 core's tiles take the TINT word's fields (chip_fp4)
        return "tint"
    if data_path and sfu_data and cls == C_SFU:
        return "sfu"
    return "booth" if data_path and booth_data and cls == C_BOOTH else queue_kind(cls)


def word_dims(name: str, dims):
    """The data-path geometry a queue's words carry fields for: every queue's with the data path, except
    dma_kv's where the kv buffer holds no data (DataDims.k_depth 0)."""
    return None if dims is None or (name == "dma_kv" and not dims.k_depth) else dims


def act_elems(cfg: HwConfig) -> int:
    """INT8 elements of an act buffer word: a TINT beat (tree_width), or an FP4 beat on a design without TINT."""
    return cfg.tint.tree_width if cfg.has("tint") or not cfg.has("fp4") else cfg.fp4.elems_per_cycle


def qk_data(cfg: HwConfig, dims) -> bool:
    """Whether BoothFlex runs Q K^T and P V tiles on the data path: it has one (lowbit.rtl.chip_booth.booth_data),
    the kv buffer holds data and lowbit.rtl.chip_booth.qk_data_ok for its act words (booth_act)."""
    return (dims is not None and dims.k_depth > 0 and booth_data(cfg)
            and not qk_data_ok(cfg.booth, booth_act(cfg)[0], dims.unit_bytes))


class Chip(wiring.Component):
    """The chip top for `cfg` (module docstring)."""

    def __init__(self, cfg: HwConfig, p: ChipParams = ChipParams()) -> None:
        from lowbit.sim.sram import Buffers

        self.cfg, self.p = cfg, p
        self.names, self.classes = queues_of(cfg)
        self.caps = Buffers.from_config(cfg).capacity
        self.n_thr = len(self.names) - 1
        self.n_dma = sum(queue_kind(c) == "dma" for c in self.classes)
        self.dims = None
        if p.data_banks:
            self.dims, why = data_dims(cfg, p.data_banks)
            if self.dims is None:
                raise LowbitError(f"{cfg.name}: no chip data path: {why}; generate the chip with data_banks = 0")
        d = self.dims
        bd = d is not None and booth_data(cfg)
        sd = d is not None and not sfu_data_ok(cfg)
        self.kinds = [word_kind(n, c, d is not None, bd, sd, p.lop_grp > 0)
                      for n, c in zip(self.names, self.classes, strict=True)]
        self.layouts = [word_layout(k, self.n_thr, self.n_dma, p.seq_bits, word_dims(n, d))
                        for k, n in zip(self.kinds, self.names, strict=True)]
        self.load_bits = max(data.StructLayout.cast(lay).size for lay in self.layouts)
        if d is not None:  # the load port also writes act words
            self.load_bits = max(self.load_bits, 8 * act_elems(cfg))
        if sd:  # the load port also writes the SFU's Q7.8 buffer and row-statistics memory
            self.load_bits = max(self.load_bits, 16 * cfg.sfu.lanes, STAT_BITS)
        self.rq_names = rq_engines(cfg, p, self.names, self.classes, self.kinds) if sd else []
        self.av = sd and av_ok(cfg, d)  # the attention output's writer (chip_av)
        self.sm = sd and sm_ok(cfg, d)  # the softmax engine (chip_softmax)
        if self.rq_names:
            lanes = max(cfg.tint.lanes, cfg.booth.lanes, *(rq_lanes(cfg, self.classes[self.names.index(n)])[0]
                                                           for n in self.rq_names))
            self.load_bits = max(self.load_bits, mult_word(lanes).size)
        self.rope = bool(self.rq_names) and p.rope_depth > 0  # the RoPE engine (chip_rope), its table's words
        self.load_bits = max(self.load_bits, trig_word(cfg.sfu.lanes).size if self.rope else 0)
        self.scores = self.sm and self.rope and p.score_mult[0] > 0  # the Q K^T score stage (chip_scores)
        self.kscale = bool(self.scores and d.k_depth and p.kvw_depth and p.vquant[0])  # k_amax on chip (chip_kscales)
        self.load_addr_bits = p.addr_bits if d is None else max(p.addr_bits, d.a_bits, (p.mult_depth - 1).bit_length(),
                                                                (p.kvw_depth - 1).bit_length())
        sig = {
            "start": In(1),
            "load_en": In(1),
            "load_queue": In(5),  # a queue's instruction ring (its first words); with the data path, len(queues): the act buffer,
            # + 1 .. + 6 the SFU's norm input, S, gain, norm output, amax and residual y memories (chip_sfu),
            # + 7 the attention output's scale memory (chip_av), + RQ_LOAD + k the multiplier memory of the
            # k-th engine with a requantizer (chip_requant)
            "load_addr": In(self.load_addr_bits),
            "load_word": In(self.load_bits),
            "cycle": Out(32),
            "mem": Out(mem_port_signature(p.id_bits, p.dma_issue * self.n_dma, p.resp_lanes, d)),
            "join_head": Out(p.seq_bits),
            "join_done": Out(p.join_window),
            "event": Out(1),
            # the instruction port (lowbit.rtl.chip_fetch): a request for queue if_q's next word, its beats
            "if_req": Out(1), "if_q": Out(5), "if_rv": In(1), "if_rq": In(5), "if_rw": In(p.ifetch_bits),
        }
        for n, c in zip(self.names[:-1], self.classes[:-1], strict=True):
            sig[f"pc_{n}"] = Out(p.seq_bits)
            sig[f"count_{n}"] = Out(p.seq_bits)
            if queue_kind(c) == "dma":
                sig[f"dbase_{n}"] = Out(p.seq_bits)
                sig[f"dfin_{n}"] = Out(p.dma_table)
        if d is not None:  # per TINT core: each psum word as it is written, and a read port of its psum bank
            sig["psum_raddr"] = In(d.p_bits)
            if d.k_depth:  # a read port of the kv buffer (a beat of units at any unit address)
                sig["kv_raddr"] = In(d.k_bits)
                sig["kv_rdata"] = Out(d.unit_bits * d.banks)
            sig.update(sfu_signature(cfg, d) if sd else {})  # the SFU engines' writes (chip_engines)
            for n, k in zip(self.names, self.kinds, strict=True):
                if k in ("tint", "booth"):
                    lay = self._tint_psum(n) if k == "tint" else booth_psum_layout(cfg.booth)
                    sig[f"pv_{n}"] = Out(1)
                    sig[f"pw_{n}"] = Out(lay)
                    sig[f"psum_{n}"] = Out(lay)
            sig.update(rq_signature(cfg, d, self.rq_names))
        sig.update(engine_signature(self))
        sig.update(sc_signature(cfg) if self.scores else {})
        sig.update(vq_signature(p.vquant, self.sm) if d is not None and d.k_depth and p.kvw_depth and p.vquant[0] else {})
        sig.update(ks_signature((scale_entries(p.vquant) - 1).bit_length()) if self.kscale else {})
        if "lop" in self.kinds:  # the LOP engine's index FIFO writes and its two done strobes (chip_lop)
            sig.update({"lop_ov": Out(1), "lop_on": Out(range(cfg.lop.lanes + 1)),
                        "lop_oi": Out(data.ArrayLayout(COUNT_BITS, cfg.lop.lanes)), "lop_sdone": Out(1),
                        "lop_done": Out(1), "kv_ind": Out(p.dma_issue), "kv_ind_bad": Out(1)})
        super().__init__(sig)

    def lop_load(self) -> int:
        """The load port's queue number of the LOP engine's code memory (+ 1: its query memory): past the act
        buffer's, the SFU's six, the attention output's scale memory and the requantizers' multiplier memories."""
        return len(self.names) + RQ_LOAD + len(self.rq_names)

    def elaborate(self, platform) -> Module:
        m = Module()
        p = self.p
        run = Signal()
        with m.If(self.start):
            m.d.sync += run.eq(1)
        with m.If(run):
            m.d.sync += self.cycle.eq(self.cycle + 1)
        sb = Signal(scoreboard_layout(self.n_thr, self.n_dma, p.seq_bits, p.dma_table))
        counts = sb.count
        rel = []  # release sources (compute queues)
        engines = []
        eb = p.ring_entries.bit_length()
        dims = self.dims
        tints = []  # (queue name, controller) of the queues with engines (TINT, BoothFlex), with the data path
        sfuq = None  # the SFU queue's controller where its quantize runs on the data path
        lopq = None  # the LOP queue's controller where the chip has the LOP engine
        fetch = InstrFetch(m, p, run, (self.load_queue, self.load_addr, self.load_word, self.load_en),
                           {k: getattr(self, k) for k in ("if_req", "if_q", "if_rv", "if_rq", "if_rw")},
                           max(data.StructLayout.cast(lay).size for lay in self.layouts))
        for q, name in enumerate(self.names):
            kind = self.kinds[q]
            lay = self.layouts[q]
            if kind in ("compute", "tint", "booth", "sfu", "lop"):
                c = ComputeQueue(sb.shape(), p.seq_bits, p.seq_bits, dims if kind != "compute" else None, kind)
                m.submodules[f"q_{name}"] = c
                (word,), ok = fetch.ring(q, name, lay, 1, c.raddr, c.pc)
                m.d.comb += [c.word.eq(word), c.avail.eq(ok), c.run.eq(run), c.sb.eq(sb),
                             counts[q].eq(c.count), getattr(self, f"pc_{name}").eq(c.pc),
                             getattr(self, f"count_{name}").eq(c.count)]
                rel.append(c)
                if kind in ("tint", "booth"):
                    tints.append((name, c))
                elif kind == "sfu":
                    sfuq = c
                elif kind == "lop":
                    lopq = c
            elif kind in ("dma", "dma_lop"):
                e = DmaEngine(len(engines), sb.shape(), p.seq_bits, p.seq_bits, issue=p.dma_issue,
                              table=p.dma_table, entry_bits=eb, resp_lanes=p.resp_lanes,
                              id_bits=p.id_bits, dims=dims, lop=(self.cfg.lop.lanes, 2 * p.lop_depth, p.lop_hd)
                              if kind == "dma_lop" else None, writes=name == "dma_kv" and p.kvw_depth > 0)
                m.submodules[f"q_{name}"] = e
                words, ok = fetch.ring(q, name, lay, p.dma_issue, e.raddr, e.pc)
                m.d.comb += [e.words[k].eq(w) for k, w in enumerate(words)] + [e.avail.eq(ok)]
                d = len(engines)
                m.d.comb += [e.run.eq(run), e.sb.eq(sb), counts[q].eq(e.count), sb.base[d].eq(e.base),
                             sb.zeros[d].eq(e.zeros), getattr(self, f"dbase_{name}").eq(e.base),
                             getattr(self, f"dfin_{name}").eq(e.fin),
                             getattr(self, f"pc_{name}").eq(e.pc), getattr(self, f"count_{name}").eq(e.count),
                             e.resp_valid.eq(self.mem.resp_valid), e.resp_id.eq(self.mem.resp_id)]
                engines.append(e)
            else:
                j = JoinMonitor(sb.shape(), p.seq_bits, p.seq_bits, p.join_window)
                m.submodules["q_sync"] = j
                words, ok = fetch.ring(q, name, lay, p.join_window, j.raddr, j.head)
                m.d.comb += [j.words[k].eq(w) for k, w in enumerate(words)] + [j.avail.eq(ok)]
                m.d.comb += [j.run.eq(run), j.sb.eq(sb), self.join_head.eq(j.head),
                             self.join_done.eq(j.done_now)]
        # rings: the buffers the config has, each allocated by its owner engine (RING_OWNER)
        dma_names = [n for n, c in zip(self.names, self.classes, strict=True) if queue_kind(c) == "dma"]
        for b, cap in enumerate(self.caps):
            if not cap or BUFFERS[b] not in RING_OWNER:
                continue
            r = Ring(b, cap, p.ring_entries, p.dma_issue, len(rel))
            m.submodules[f"ring_{BUFFERS[b]}"] = r
            for x, c in enumerate(rel):
                m.d.comb += [r.rel_valid[x].eq(c.rel_valid), r.rel_buf[x].eq(c.rel_buf), r.rel_slot[x].eq(c.rel_slot)]
            e = engines[dma_names.index(RING_OWNER[BUFFERS[b]])]
            for k in range(p.dma_issue):
                m.d.comb += [r.alloc_valid[k].eq(e.a_valid[k] & (e.a_buf[k] == b)), r.alloc_size[k].eq(e.a_size[k])]
            m.d.comb += [e.room[b].eq(r.room), e.entries_free[b].eq(r.entries_free)]
        assert len(self.caps) == N_BUFFERS
        for ei, e in enumerate(engines):  # engine ei owns request lanes ei*issue .. (ei+1)*issue-1
            for k in range(p.dma_issue):
                lane = ei * p.dma_issue + k
                m.d.comb += [self.mem.req_valid[lane].eq(e.req_valid[k]), self.mem.req[lane].eq(e.req[k])]
            m.d.comb += e.req_ready.eq(self.mem.req_ready)
        # observation: something to record this cycle (an issue count or completion count moved, a join
        # or a DMA request completed, a request on the port), so a bench reads the trace ports only then
        fetch.finish()
        ev = self.join_done.any() | self.mem.req_valid.any() | self.if_req
        for e in engines:
            ev = ev | e.fin.any()
        for n in self.names[:-1]:
            for port in (getattr(self, f"pc_{n}"), getattr(self, f"count_{n}")):
                last = Signal.like(port, name=f"last_{port.name}")
                m.d.sync += last.eq(port)
                ev = ev | (port != last)
        if dims is not None:
            ev = ev | self._data_path(m, engines, tints, sfuq)
        if lopq is not None:
            from lowbit.rtl.chip_lop import lop_engine

            ev = ev | lop_engine(self, m, lopq, engines[1])
        m.d.comb += self.event.eq(ev)
        return m

    def _qk(self) -> bool:
        return qk_data(self.cfg, self.dims)

    def _per(self, c: ComputeQueue) -> int:
        """TINT words (and act words) an engine reads a beat: 1 for a TINT core, 4 width / tree_width for
        BoothFlex (lowbit.rtl.chip_booth)."""
        return 1 if c.kind == "tint" else 4 * self.cfg.booth.width // self.cfg.tint.tree_width

    def _fp4(self, name: str) -> bool:
        return self.classes[self.names.index(name)] == C_FP4

    def _tint_psum(self, name: str) -> data.StructLayout:
        """The psum word of a 'tint'-kind queue: the FP4 core's or a TINT core's."""
        return fp4_psum_layout(self.cfg.fp4) if self._fp4(name) else psum_layout(self.cfg.tint)

    def _data_path(self, m: Module, engines: list[DmaEngine], tints: list, sfuq: ComputeQueue | None) -> Signal:
        """The weight buffer filled by dma_w's read data (and the kv buffer by dma_kv's), the act buffer
        written through the load port, one engine (TintEngine, BoothEngine) and psum bank per engine queue;
        returns 1 in cycles that write a psum word."""
        d, p, cfg = self.dims, self.p, self.cfg
        dma_w = engines[0]
        lt = (p.dma_table - 1).bit_length()
        tern = booth_ternary(cfg)
        rg = tern and booth_data_ok(cfg.booth, cfg.tint) != ""  # regrouped: a second read port
        wq = [(n, c) for n, c in tints if c.kind == "tint" or tern]  # engines reading weights: a port each
        rg_ports = {name: len(wq) + j for j, name in enumerate(n for n, c in tints if c.kind == "booth")} if rg else {}
        m.submodules.wbuf = wbuf = BankedBuffer(depth=d.w_depth, banks=d.banks, unit_bits=d.unit_bits,
                                                word_units=tuple(d.word_units * self._per(c) for _, c in wq)
                                                + (d.word_units,) * len(rg_ports))
        m.submodules.fill = fill = DmaFill(table=p.dma_table, n_issue=p.dma_issue, addr_bits=d.w_bits,
                                           banks=d.banks, unit_bits=d.unit_bits)
        for k in range(p.dma_issue):
            m.d.comb += [fill.issue_valid[k].eq(dma_w.f_valid[k]), fill.issue_slot[k].eq(dma_w.f_slot[k]),
                         fill.issue_addr[k].eq(dma_w.f_addr[k]), fill.issue_words[k].eq(dma_w.f_words[k])]
        rid = self.mem.rdata_id
        m.d.comb += [fill.data_valid.eq(self.mem.rdata_valid & (rid[lt:] == 0)), fill.data_slot.eq(rid[:lt]),
                     fill.data.eq(self.mem.rdata), wbuf.wr_valid.eq(fill.wr_valid), wbuf.wr_addr.eq(fill.wr_addr),
                     wbuf.wr_count.eq(fill.wr_count), wbuf.wr_data.eq(fill.wr_data)]
        qk = self._qk()
        kstep = max(1, cfg.booth.width // d.unit_bytes) if qk else 0  # kv units a Q K^T lane reads a beat
        kports = [c for _, c in tints if c.kind == "booth"] if qk else []
        if d.k_depth:  # K/V rows: dma_kv's read data (engine 1's request ids) into the kv buffer
            dkv = engines[1]
            m.submodules.kvbuf = kvbuf = BankedBuffer(depth=d.k_depth, banks=d.banks, unit_bits=d.unit_bits,
                                                      word_units=(d.banks,) + (kstep,) * (cfg.booth.lanes
                                                                                         * len(kports))
                                                      + (1,) * (cfg.booth.lanes * cfg.booth.width * len(kports)))
            m.submodules.kvfill = kfill = DmaFill(table=p.dma_table, n_issue=p.dma_issue, addr_bits=d.k_bits,
                                                  banks=d.banks, unit_bits=d.unit_bits)
            for k in range(p.dma_issue):
                m.d.comb += [kfill.issue_valid[k].eq(dkv.f_valid[k]), kfill.issue_slot[k].eq(dkv.f_slot[k]),
                             kfill.issue_addr[k].eq(dkv.f_addr[k][:d.k_bits]),
                             kfill.issue_words[k].eq(dkv.f_words[k])]
            m.d.comb += [kfill.data_valid.eq(self.mem.rdata_valid & (rid[lt:] == 1)), kfill.data_slot.eq(rid[:lt]),
                         kfill.data.eq(self.mem.rdata), kvbuf.wr_valid.eq(kfill.wr_valid),
                         kvbuf.wr_addr.eq(kfill.wr_addr), kvbuf.wr_count.eq(kfill.wr_count),
                         kvbuf.wr_data.eq(kfill.wr_data), kvbuf.raddr[0].eq(self.kv_raddr),
                         self.kv_rdata.eq(kvbuf.rdata0)]
        tw = act_elems(cfg)  # the act buffer and the SFU engines writing it (chip_engines)
        abuf, wrote, av, bufs = act_buffer(self, m, sfuq, dma_w, tw)
        if d.k_depth and p.kvw_depth:  # dma_kv's write data (chip_kv)
            wrote = wrote | kv_writer(self, m, engines[1], sfuq, bufs)
        aw, ratio = booth_act(cfg)
        for name, c in tints:
            kw = dict(w_bits=d.w_bits, a_bits=d.a_bits, p_bits=d.p_bits, w_step=d.word_units)
            if c.kind == "tint":
                eng = Fp4Engine(cfg.fp4, **kw) if self._fp4(name) else TintEngine(cfg.tint, **kw)
                fields = ("tail_lanes", "tail_step")
                lay = self._tint_psum(name)
            else:
                eng = BoothEngine(cfg.booth, cfg.tint if tern else None, **kw, qk=(d.k_bits, kstep, d.unit_bits)
                                  if qk else None, regroup=name in rg_ports, act_elems=aw)
                fields = (("nq", "grp", "pos0", "k_addr", "k_stride") if qk else ()) + (
                    ("tgroups", "tail_step") if name in rg_ports else ())
                if name in rg_ports:
                    m.d.comb += [wbuf.raddr[rg_ports[name]].eq(eng.w_raddr2),
                                 eng.w_rdata2.eq(getattr(wbuf, f"rdata{rg_ports[name]}"))]
                lay = booth_psum_layout(cfg.booth)
                if qk:  # Q K^T tiles: a kv read port per lane
                    for lane in range(cfg.booth.lanes):
                        port = 1 + kports.index(c) * cfg.booth.lanes + lane
                        m.d.comb += [kvbuf.raddr[port].eq(eng.k_raddr[lane]),
                                     eng.k_rdata[lane].eq(getattr(kvbuf, f"rdata{port}"))]
                    nv = cfg.booth.lanes * cfg.booth.width  # P V tiles: a one-unit port a lane and element
                    for v in range(nv):
                        port = 1 + len(kports) * cfg.booth.lanes + kports.index(c) * nv + v
                        m.d.comb += [kvbuf.raddr[port].eq(eng.v_raddr[v]),
                                     eng.v_rdata[v].eq(getattr(kvbuf, f"rdata{port}"))]
            m.submodules[f"eng_{name}"] = eng
            w = c.word
            if name in self.rq_names:  # its requantizer writing the residual's y buffer (chip_engines.rq_wiring)
                rq = rq_wiring(self, m, name, c, eng, bufs)
                wrote = wrote | rq.w0_en | rq.w1_en
            if c.kind == "booth" and self.scores:  # Q K^T outputs into the softmax engine's scores (chip_scores)
                wrote = wrote | score_stage(self, m, c, eng, bufs["sm"], self.hq, bufs)
            if c.kind == "booth" and self.av:  # P V outputs into the SFU's X and S (chip_av)
                wrote = wrote | av_engine(self, m, c, eng, av, bufs["sm"])
            m.d.comb += [eng.start.eq(c.go), c.unit_ready.eq(eng.ready), c.unit_done.eq(eng.done_next)]
            if c.kind == "booth":
                m.d.comb += eng.mode.eq(w.eng)
            m.d.comb += [getattr(eng, f).eq(getattr(w, f)) for f in
                         ("beats", "groups", "tokens", *fields, "w_addr", "a_addr", "a_stride", "p_addr")]
            if (name, c) in wq:
                r = wq.index((name, c))
                m.d.comb += [wbuf.raddr[r].eq(eng.w_raddr), eng.w_rdata.eq(getattr(wbuf, f"rdata{r}"))]
            for i in range(1 if c.kind == "tint" else eng.n_act):  # BoothFlex's act words: booth_act
                ar = abuf.read_port()
                m.d.comb += half_word_reads(m, ar, *((eng.a_raddr, eng.a_rdata) if c.kind == "tint"
                                                     else (eng.a_raddr[i], eng.a_rdata[i])),
                                            aw, 1 if c.kind == "tint" else ratio)
            pbank = Memory(shape=lay, depth=d.p_depth, init=[])
            m.submodules[f"psum_{name}"] = pbank
            pw, pr = pbank.write_port(), pbank.read_port()
            pv, pwo = getattr(self, f"pv_{name}"), getattr(self, f"pw_{name}")
            m.d.comb += [pw.en.eq(eng.p_valid), pw.addr.eq(eng.p_addr_o), pw.data.acc.eq(eng.p_acc),
                         pw.data.ovf.eq(eng.p_ovf), pv.eq(eng.p_valid), pwo.acc.eq(eng.p_acc), pwo.ovf.eq(eng.p_ovf),
                         pr.addr.eq(self.psum_raddr), getattr(self, f"psum_{name}").eq(pr.data)]
            wrote = wrote | eng.p_valid
        return wrote


def chip_verilog(cfg: HwConfig, p: ChipParams = ChipParams()) -> str:
    """The chip's Verilog (module `lowbit_chip`)."""
    from amaranth.back import verilog

    top = Chip(cfg, p)
    return verilog.convert(top, name="lowbit_chip", emit_src=False)
