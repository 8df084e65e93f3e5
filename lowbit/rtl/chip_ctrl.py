"""Queue controllers of the chip: the instruction word layouts, the threshold scoreboard check, the
controller of an in-order compute queue and the join monitor.

Cycle convention (the simulator's: an instruction *starts* in cycle S and *ends* in cycle E when a consumer
may start in cycle E). Completion counters are registers: a compute instruction issued in cycle S with
`cyc` cycles raises its queue's count at edge S + cyc - 1, so the count shows it in cycle E = S + cyc, and
its unit accepts the next instruction in that cycle (the sim.units contract, rtl/common.py). An
instruction issues in the first cycle in which its waits are met on the scoreboard (`thresholds_met`:
every completion count has reached its threshold and every DMA range it names has completed;
lowbit.rtl.chip_image resolves waits and joins to thresholds and ranges) and its unit is free.

Instruction memories are synchronous: the controller presents the address of its next head (pc + issued)
in the cycle it issues, so the head word is always the one at pc.
"""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.chip_image import WORD_FIELDS
from lowbit.rtl.common import COUNT_BITS

_W = {n: w for n, w, _ in WORD_FIELDS}
COMPUTE_FIELDS = ("valid", "cyc", "free", "free_buf", "free_slot")
DMA_FIELDS = ("valid", "tag", "addr", "nbytes", "wr", "dcls", "alloc_en", "buf", "alloc")
JOIN_FIELDS = ("valid",)
# with the data path (lowbit.rtl.chip_data): a TINT word names its tile's shape and buffer addresses instead
# of a cycle count (its engine's `done` ends it), a BoothFlex word may (`eng`: a ternary tile on the
# data path, else a timer of `cyc`), a DMA word the buffer units its read data fills
# a projection tile's requantizer fields (lowbit.rtl.chip_requant): `rq` the Q7.8 buffer its outputs go to (0:
# none), `rq_off` / `rq_o` / `rq_stride` its first row's element and word and the output row's words, `rq_m` its
# first row group's multiplier word, `rq_s` its first token's amax in the row-statistics memory
RQ_FIELDS = ("rq", "rq_off", "rq_o", "rq_stride", "rq_m", "rq_s")
RQ_M_BITS = 12  # multiplier words per engine, at most (DESIGN ASSUMPTION)
TINT_FIELDS = ("valid", "free", "free_buf", "free_slot", "beats", "groups", "tokens", "tail_lanes", "tail_step",
               "w_addr", "a_addr", "a_stride", "p_addr", *RQ_FIELDS)
# a P V tile's attention-output fields (lowbit.rtl.chip_av): `av` (bit 0 X, bit 1 S, bit 2 the tile starts its
# rows' S), passes a query, its first output's X word and the words a row, its first query's S row, its first
# (query, head)'s scale row, passes a head
AV_FIELDS = ("av_s", "av", "av_n", "av_o", "av_stride", "av_w", "av_g")  # av_s then av: one slice of the word
BOOTH_FIELDS = (*COMPUTE_FIELDS, "eng", "beats", "groups", "tokens", "w_addr", "a_addr", "a_stride", "p_addr",
                "nq", "grp", "pos0", "k_addr", "k_stride", "tgroups", "tail_step", *RQ_FIELDS, *AV_FIELDS, "ks", "kg")
# `ks`: a Q K^T tile's first key's scale index + 1 where its keys' k_amax are read by position; `kg`: 1 + the
# gathered-key recorder entry of its first key where LOP gathered them (both 0: from the score stage's key-scale
# halves; lowbit.rtl.chip_kscales)
DMA_DATA_FIELDS = (*DMA_FIELDS, "dwords", "dbase")
# an SFU word with `eng` set runs on a stream engine of the chip (lowbit.rtl.chip_sfu): 1 quantize (rows of
# `beats` Q7.8 words at x_addr -> INT8 act words at o_addr, row r's amax at st_addr + r), 2 RMSNorm (Q7.8
# words at x_addr -> Q7.8 words at o_addr, the gain at g_addr, row r's S read and its amax written at
# st_addr + r, eps_q / sd / e_sd: sim.numerics.sfu_reduce.rmsnorm_consts); 0 keeps its `cyc`
# 3 residual add (x words at x_addr + y words at y_addr -> sat16 sum at o_addr, row r's S at st_addr + r)
# 4 gating (gate words at x_addr, up words at y_addr -> ReLU^2 / SiLU (fn bit 0: 1 / 0) of gate, times up where
# fn bit 1 (gated), at o_addr, row r's S at st_addr + r)
SFU_FIELDS = (*COMPUTE_FIELDS, "eng", "rows", "beats", "x_addr", "o_addr", "st_addr", "g_addr", "eps_q", "sd", "e_sd",
              "y_addr", "fn", "hpp", "nq", "grp", "gstride", "half", "t_addr", "kg")  # "hpp" .. "t_addr": RoPE
# (chip_rope; `t_addr` also a softmax word's amax_v words, chip_vquant), `kg` a softmax word's gathered keys (chip_kscales)
# a LOP word with `eng` set (the group's lop_score word) starts the chip's LOP engine (lowbit.rtl.chip_lop
# LopGroupSelect: `m` keys scored against the group's query heads, then the top `k` of their group scores);
# LOP words keep their `cyc` (the engine meets it: the bench checks its done cycles against the words' ends)
LOP_FIELDS = (*COMPUTE_FIELDS, "eng", "m", "k", "qrow")  # qrow: the group's first query row (lowbit.rtl.chip_lop)
# dma_kv's words where the chip has the LOP index FIFO (lowbit.rtl.chip_dma.DmaEngine `lop`): `ind` 1 takes the
# request's address and size from the FIFO (`addr` then the plane's row 0, `plane` 0 K / 1 V, `nidx` indices)
DMA_LOP_FIELDS = (*DMA_DATA_FIELDS, "ind", "nidx", "plane")
KG_BITS = 8  # a word's `kg` (lowbit.rtl.chip_kscales; DESIGN ASSUMPTION: at most 255 recorder entries)
KS_BITS = 16  # a Q K^T word's `ks` (lowbit.rtl.chip_kscales; DESIGN ASSUMPTION: at most 65,535 scale entries)
ROPE_T_BITS = 12  # a RoPE word's table address (lowbit.rtl.chip_rope; DESIGN ASSUMPTION: at most 4,096 table words)
STAT_DEPTH = 64  # row-statistics memory rows (DESIGN ASSUMPTION: a word's rows, at most its tokens)


def _fields(kind: str, dims) -> dict[str, int]:
    """Field name -> width of a word kind ('compute', 'tint', 'dma', 'join'); `dims` (chip_data.DataDims,
    or None without the data path) sizes the buffer word addresses."""
    if dims is None:
        names = {"compute": COMPUTE_FIELDS, "dma": DMA_FIELDS, "join": JOIN_FIELDS}[kind]
        return {n: _W[n] for n in names}
    names = {"compute": COMPUTE_FIELDS, "tint": TINT_FIELDS, "booth": BOOTH_FIELDS, "sfu": SFU_FIELDS,
             "lop": LOP_FIELDS, "dma": DMA_DATA_FIELDS, "dma_lop": DMA_LOP_FIELDS, "join": JOIN_FIELDS}[kind]
    w = {**_W, "eng": 2, "nq": COUNT_BITS, "grp": COUNT_BITS, "pos0": COUNT_BITS, "k_addr": dims.k_bits,
         "k_stride": COUNT_BITS, "tgroups": COUNT_BITS, "beats": COUNT_BITS, "groups": COUNT_BITS, "tokens": COUNT_BITS, "a_stride": COUNT_BITS,
         "dwords": COUNT_BITS, "tail_lanes": dims.lanes.bit_length(), "tail_step": dims.word_units.bit_length(),
         "w_addr": dims.w_bits, "dbase": dims.w_bits, "a_addr": dims.a_bits,
         "p_addr": dims.p_bits, "rows": COUNT_BITS, "x_addr": dims.a_bits, "o_addr": dims.a_bits,
         "g_addr": dims.a_bits, "eps_q": 32, "sd": 25, "e_sd": 3, "y_addr": dims.a_bits,
         "st_addr": (STAT_DEPTH - 1).bit_length(), "rq": 3, "rq_off": 6, "rq_o": dims.a_bits, "rq_stride": COUNT_BITS,
         "rq_m": RQ_M_BITS, "rq_s": (STAT_DEPTH - 1).bit_length(), "fn": 2, "m": COUNT_BITS, "k": COUNT_BITS, "ind": 1, "nidx": COUNT_BITS,
         "plane": 1, "av": 3, "av_n": COUNT_BITS, "av_o": dims.a_bits, "av_stride": COUNT_BITS,
         "av_s": (STAT_DEPTH - 1).bit_length(), "av_w": (STAT_DEPTH - 1).bit_length(), "av_g": COUNT_BITS,
         "hpp": COUNT_BITS, "gstride": dims.a_bits, "half": COUNT_BITS, "t_addr": ROPE_T_BITS, "qrow": dims.a_bits,
         "ks": KS_BITS, "kg": KG_BITS}
    if kind == "sfu":  # its engines 1 .. 4
        w["eng"] = 3
    return {n: w[n] for n in names}


def word_layout(kind: str, n_thr: int, n_dq: int, seq_bits: int, dims=None) -> data.StructLayout:
    """The instruction word of a queue kind ('compute', 'tint', 'dma', 'join'): its fields (WORD_FIELDS
    widths; with the data path `dims`, TINT_FIELDS / DMA_DATA_FIELDS), then one `seq_bits` threshold per
    non-sync queue, then the DMA ranges [rlo, rhi), one per DMA queue (rlo for every DMA queue, then rhi).
    Packed LSB first in this order."""
    return data.StructLayout({**{n: unsigned(b) for n, b in _fields(kind, dims).items()},
                              "thr": data.ArrayLayout(unsigned(seq_bits), n_thr),
                              "rlo": data.ArrayLayout(unsigned(seq_bits), n_dq),
                              "rhi": data.ArrayLayout(unsigned(seq_bits), n_dq)})


def scoreboard_layout(n_thr: int, n_dq: int, seq_bits: int, table: int) -> data.StructLayout:
    """What every controller reads: `count` per non-sync queue (in-order completions: a compute queue's
    count, a DMA engine's low-water mark), and per DMA engine its completion window: `base` (its oldest
    unretired request) and `zeros[k]`, the requests among base .. base + k - 1 not yet complete
    (k = 0 .. table), lowbit.rtl.chip_dma.DmaEngine."""
    return data.StructLayout({"count": data.ArrayLayout(unsigned(seq_bits), n_thr),
                              "base": data.ArrayLayout(unsigned(seq_bits), n_dq),
                              "zeros": data.ArrayLayout(data.ArrayLayout(unsigned(table.bit_length()), table + 1),
                                                        n_dq)})


def pack_word(kind: str, n_thr: int, seq_bits: int, w: dict, dims=None) -> int:
    """The integer a loader writes for word `w` (a lowbit.rtl.chip_image word dict: `thr` per non-sync
    queue, `rlo`/`rhi` per DMA queue; the data fields with `dims`); refuses a value that does not fit its
    field."""
    from lowbit.sim.program import ProgramError

    out, pos = 0, 0
    for n, b in _fields(kind, dims).items():
        v = int(w[n]) if n != "free_slot" else int(w[n]) % (1 << b)
        if not 0 <= v < 1 << b:
            raise ProgramError(f"chip word field {n} = {v} does not fit {b} bits")
        out |= v << pos
        pos += b
    for t in [*w["thr"], *w["rlo"], *w["rhi"]]:
        if not 0 <= t < 1 << seq_bits:
            raise ProgramError(f"chip threshold {t} does not fit {seq_bits} bits; generate the chip with more seq_bits")
        out |= int(t) << pos
        pos += seq_bits
    return out


def range_met(lo, hi, base, zeros):
    """1 when every request lo .. hi - 1 of a DMA engine has completed: all of them are below its window
    (`hi <= base`, retired), or the window's incomplete-request counts agree at both ends
    (zeros[hi - base] == zeros[max(lo - base, 0)]) with hi inside the window. An empty range is (0, 0)."""
    nt = len(zeros) - 1
    zb = len(zeros[0])
    pad = (1 << nt.bit_length()) - (nt + 1)
    z = Array([zeros[k] for k in range(nt + 1)] + [Const(0, zb)] * pad)
    b = (hi - base)[:len(hi)]
    a = Mux(lo > base, lo - base, 0)[:len(hi)]
    return (hi <= base) | ((b <= nt) & (z[b[:nt.bit_length()]] == z[a[:nt.bit_length()]]))


def thresholds_met(word, sb) -> Signal:
    """1 when the word's waits are met on scoreboard `sb` (scoreboard_layout): every completion count has
    reached the word's threshold and every DMA range [rlo, rhi) it names has completed."""
    ok = word.valid.bool()
    for q in range(len(sb.count)):
        ok = ok & (sb.count[q] >= word.thr[q])
    for j in range(len(sb.base)):
        ok = ok & range_met(word.rlo[j], word.rhi[j], sb.base[j], sb.zeros[j])
    return ok


class ComputeQueue(wiring.Component):
    """Controller of one compute unit's in-order queue: issues the head when its thresholds are met and the
    unit is free, holds the unit busy for the word's `cyc` cycles, counts completions in order and, at a
    completion, releases the ring allocation the word names (`free`).

    With the data path (`dims`), `kind` 'tint' (a TINT queue: every word a tile), 'booth' (BoothFlex: a
    word with `eng` set is a ternary tile, the others keep their `cyc`) or 'sfu' (a word with `eng` set runs
    on one of the SFU's stream engines, the others keep their `cyc`): the queue starts its unit's engine
    (`go`, the word on `word`) when the engine is also `unit_ready`, and the engine's `unit_done` (high the
    cycle before its `done`) ends the instruction, in the cycle the timer would, since the engine meets the
    sim.units formula."""

    def __init__(self, sb: data.StructLayout, seq_bits: int, addr_bits: int, dims=None,
                 kind: str = "compute") -> None:
        n_thr, n_dq = sb["count"].shape.length, sb["base"].shape.length
        self.kind = kind if dims is not None else "compute"
        extra = {"go": Out(1), "unit_ready": In(1), "unit_done": In(1)} if self.kind != "compute" else {}
        if self.kind == "lop":  # its engine runs beside timer words: nothing ends them
            del extra["unit_done"]
        super().__init__({
            **extra,
            "run": In(1),
            "sb": In(sb),
            "word": In(word_layout(self.kind, n_thr, n_dq, seq_bits, dims)),
            "avail": In(1),  # the word is in the queue's instruction ring (lowbit.rtl.chip_fetch)
            "raddr": Out(addr_bits),
            "pc": Out(seq_bits),
            "count": Out(seq_bits),
            "rel_valid": Out(1),
            "rel_buf": Out(_W["free_buf"]),
            "rel_slot": Out(_W["free_slot"]),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        w = self.word
        busy = Signal()
        hold = Signal(1 + _W["free_buf"] + _W["free_slot"])  # free, free_buf, free_slot of the running word
        issue = Signal()
        free = ~busy & self.unit_ready if self.kind != "compute" else ~busy
        m.d.comb += issue.eq(self.run & free & self.avail & thresholds_met(w, self.sb))
        m.d.comb += self.raddr.eq(self.pc + issue)
        if self.kind == "compute":
            return self._timer_only(m, w, busy, hold, issue)
        timer = self.kind != "tint"   # words that hold the unit for `cyc` cycles
        eng = Signal()                # the head word runs on the engine
        on_eng = Signal()             # the running word does
        if self.kind == "tint":
            eng = Const(1, 1)
        else:
            m.d.comb += eng.eq(w.eng != 0)
        m.d.comb += self.go.eq(issue & eng)
        if self.kind == "lop":  # the engine runs beside the word, which keeps its `cyc` (LOP_FIELDS)
            eng = Const(0, 1)
        done = Signal()
        one = Signal() if timer else Const(0, 1)  # a one-cycle timer instruction completes in its issue cycle
        if timer:
            remain = Signal(_W["cyc"])
            m.d.comb += one.eq(issue & ~eng & (w.cyc == 1))
            tdone = busy & ~on_eng & (remain == 1)
        else:
            tdone = 0
        edone = busy & on_eng & self.unit_done if self.kind != "lop" else 0
        m.d.comb += done.eq(tdone | edone | one)
        self._release(m, w, one, done, hold)
        with m.If(issue):
            m.d.sync += [self.pc.eq(self.pc + 1), on_eng.eq(eng),
                         hold.eq(w.free | (w.free_buf << 1) | (w.free_slot << (1 + _W["free_buf"])))]
            if timer:
                m.d.sync += [busy.eq(eng | (w.cyc > 1)), remain.eq(w.cyc - 1)]
            else:
                m.d.sync += busy.eq(1)
        with m.Elif(busy):
            if timer:
                m.d.sync += remain.eq(remain - 1)
            with m.If(done):
                m.d.sync += busy.eq(0)
        with m.If(done):
            m.d.sync += self.count.eq(self.count + 1)
        return m

    def _release(self, m: Module, w, one: Value, done: Value, hold: Value) -> None:
        """The buffer release of a completing word: the head word's own in a one-cycle completion, else the
        running word's (`hold`) when it is done."""
        with m.If(one):
            m.d.comb += [self.rel_valid.eq(w.free), self.rel_buf.eq(w.free_buf), self.rel_slot.eq(w.free_slot)]
        with m.Else():
            m.d.comb += [self.rel_valid.eq(done & hold[0]), self.rel_buf.eq(hold[1:1 + _W["free_buf"]]),
                         self.rel_slot.eq(hold[1 + _W["free_buf"]:])]

    def _timer_only(self, m: Module, w, busy, hold, issue) -> Module:
        """Every word a timer of `cyc` cycles (no data path)."""
        remain = Signal(_W["cyc"])
        one = Signal()  # a one-cycle instruction completes in its issue cycle
        m.d.comb += one.eq(issue & (w.cyc == 1))
        done = Signal()
        m.d.comb += done.eq((busy & (remain == 1)) | one)
        self._release(m, w, one, done, hold)
        with m.If(issue):
            m.d.sync += [self.pc.eq(self.pc + 1), hold.eq(w.free | (w.free_buf << 1) | (w.free_slot << (1 + _W["free_buf"])))]
            m.d.sync += [busy.eq(w.cyc > 1), remain.eq(w.cyc - 1)]
        with m.Elif(busy):
            m.d.sync += remain.eq(remain - 1)
            with m.If(remain == 1):
                m.d.sync += busy.eq(0)
        with m.If(done):
            m.d.sync += self.count.eq(self.count + 1)
        return m


class JoinMonitor(wiring.Component):
    """The join table: the `window` joins from the sync queue's head on are checked every cycle (they
    complete out of order, in zero time, when their folded thresholds are met); `done_now` flags, relative
    to `head`, those completing this cycle; the head retires completed joins in order."""

    def __init__(self, sb: data.StructLayout, seq_bits: int, addr_bits: int, window: int) -> None:
        assert window & (window - 1) == 0, "join window must be a power of two"
        n_thr, n_dq = sb["count"].shape.length, sb["base"].shape.length
        self.window = window
        super().__init__({
            "run": In(1),
            "sb": In(sb),
            "words": In(data.ArrayLayout(word_layout("join", n_thr, n_dq, seq_bits), window)),
            "avail": In(window),  # which of them are in the ring (lowbit.rtl.chip_fetch)
            "raddr": Out(addr_bits),  # the next cycle's head: the window's words are raddr, raddr + 1, ...
            "head": Out(seq_bits),
            "done_now": Out(window),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        nw = self.window
        lg = max(1, (nw - 1).bit_length())
        bits = Signal(nw)  # completed, not yet retired, indexed by sequence number modulo the window
        fin = [Signal(name=f"fin{k}") for k in range(nw)]
        run_ = [Signal(name=f"ret{k}") for k in range(nw)]
        prev = None
        for k in range(nw):
            idx = (self.head + k)[:lg] if nw > 1 else 0
            met = self.run & self.avail[k] & thresholds_met(self.words[k], self.sb)
            was = bits.bit_select(idx, 1)
            m.d.comb += [self.done_now[k].eq(met & ~was), fin[k].eq(met | was)]
            m.d.comb += run_[k].eq(fin[k] if prev is None else prev & fin[k])
            prev = run_[k]
        n_ret = sum(r for r in run_)
        head_next = Signal.like(self.head)
        m.d.comb += head_next.eq(self.head + n_ret)
        m.d.comb += self.raddr.eq(head_next)
        fa, ra = Array(fin), Array(run_)
        for i in range(nw):
            k = (i - self.head)[:lg] if nw > 1 else 0
            m.d.sync += bits[i].eq(fa[k] & ~ra[k])
        m.d.sync += self.head.eq(head_next)
        return m
