"""DMA engines and their share of the chip's one memory port (docs/rtl.md "Memory port").

A DMA engine runs its queue in order and may issue several instructions in one cycle (the simulator's
DMA queue issues with no per-request cost: `issue` instructions per cycle at most, DESIGN ASSUMPTION): the
head and the words after it issue together while each one's thresholds are met, its ring has room (after
the allocations of the words before it in the same cycle) and its completion table has space. Each issued
instruction allocates its ring bytes and puts its request {tag, id, addr, nbytes, wr, dcls} on one of the
engine's request lanes in the issue cycle, so a request reaches the memory in the cycle the simulator
issues it. `tag` is the program-order number among all DMA instructions (the order in which the
simulator's DRAM model sees them; a memory controller may use it to order requests).

Completion: the memory port returns the request's `id` (engine, completion-table slot); a response in cycle
E - 1 sets the request's bit in the table at edge E - 1, so the request is complete from cycle E on,
whatever the order in which the memory completes requests (a bank model completes them out of issue
order). The engine puts its completion window on the scoreboard (lowbit.rtl.chip_ctrl.scoreboard_layout):
`count`, the in-order prefix of completed requests (its low-water mark, combinational over the table);
`base`, the oldest request not yet retired; `zeros[k]`, how many of the requests base .. base + k - 1 are
incomplete. A consumer waiting on the requests lo .. hi - 1 checks zeros at both ends of its range
(lowbit.rtl.chip_ctrl.range_met): one comparison per range, whatever its length, as long as the range ends
within the window, which holds for every issued request (the table holds every outstanding one).
`fin` flags, per table slot, the requests completing in this cycle (for the bench)."""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.chip_ctrl import thresholds_met, word_layout
from lowbit.rtl.chip_image import WORD_FIELDS
from lowbit.rtl.chip_ring import BUF_BITS, SIZE_BITS
from lowbit.rtl.common import COUNT_BITS

_W = {n: w for n, w, _ in WORD_FIELDS}
N_BUFFERS = 6


def request_layout(id_bits: int) -> data.StructLayout:
    """One memory-port request: program-order tag, completion id, DRAM address, bytes, direction, class."""
    return data.StructLayout({"tag": unsigned(_W["tag"]), "id": unsigned(id_bits), "addr": unsigned(_W["addr"]),
                              "nbytes": unsigned(_W["nbytes"]), "wr": unsigned(1), "dcls": unsigned(_W["dcls"])})


def mem_port_signature(id_bits: int, lanes: int, resp_lanes: int, dims=None) -> wiring.Signature:
    """The memory port (chip side): up to `lanes` requests per cycle (`req_valid` bit per lane, one `ready`
    for all: a cycle without ready issues no DMA instruction), up to `resp_lanes` responses per cycle, each
    the id of a completed request (always accepted). With the data path (`dims`): one read-data beat per
    cycle (`rdata_valid`, the request's `rdata_id`, `dims.banks` weight-buffer units in `rdata`), every beat
    of a read before its response; where the kv buffer holds data (`dims.k_depth`), one write-data beat per
    cycle the other way (`wdata_valid`, the write's `wdata_id`, `dims.banks` units in `wdata`: an AXI4 W
    channel without a ready, the memory taking every beat), a write's beats in order after its request,
    every beat before or with its response (lowbit.rtl.chip_kv)."""
    rdata = {}
    if dims is not None:
        rdata = {"rdata_valid": In(1), "rdata_id": In(id_bits),
                 "rdata": In(data.ArrayLayout(unsigned(dims.unit_bits), dims.banks))}
        if dims.k_depth:
            rdata.update({"wdata_valid": Out(1), "wdata_id": Out(id_bits),
                          "wdata": Out(data.ArrayLayout(unsigned(dims.unit_bits), dims.banks))})
    return wiring.Signature({
        **rdata,
        "req_valid": Out(lanes),
        "req_ready": In(1),
        "req": Out(data.ArrayLayout(request_layout(id_bits), lanes)),
        "resp_valid": In(resp_lanes),
        "resp_id": In(data.ArrayLayout(unsigned(id_bits), resp_lanes)),
    })


class DmaEngine(wiring.Component):
    """One DMA queue's controller and completion table (`table` entries); its `issue` request lanes are its
    share of the memory port."""

    def __init__(self, engine: int, sb: data.StructLayout, seq_bits: int, addr_bits: int, *, issue: int,
                 table: int, entry_bits: int, resp_lanes: int, id_bits: int, dims=None,
                 lop: tuple[int, int, int] | None = None, writes: bool = False) -> None:
        assert table & (table - 1) == 0
        self.engine, self.issue, self.table = engine, issue, table
        # the LOP index FIFO (lanes written a cycle, entries, K/V row bytes): `ind` words take their request's
        # address and size from it (_fifo)
        self.lop = lop
        # the weight engine's reads carry buffer data, and the KV engine's where the kv buffer holds data
        self.data = dims is not None and (engine == 0 or (engine == 1 and dims.k_depth > 0))
        self.writes = self.data and writes  # its writes carry data (lowbit.rtl.chip_kv.KvWriter)
        fill = {}
        if self.data:  # per request lane: the issuing request's buffer words (lowbit.rtl.chip_data.DmaFill; with
            # `writes`, a write's, `w_valid`, its source units: lowbit.rtl.chip_kv.KvWriter)
            lt = max(1, (table - 1).bit_length())
            fill = {"f_valid": Out(issue), **({"w_valid": Out(issue)} if writes else {}),
                    "f_slot": Out(data.ArrayLayout(unsigned(lt), issue)),
                    "f_addr": Out(data.ArrayLayout(unsigned(dims.w_bits), issue)),
                    "f_words": Out(data.ArrayLayout(unsigned(16), issue))}
        self.resp_lanes, self.id_bits = resp_lanes, id_bits
        cb = (1 << SIZE_BITS).bit_length() + 1
        n_thr, n_dq = sb["count"].shape.length, sb["base"].shape.length
        fifo = {}
        if lop is not None:
            fifo = {"x_valid": In(1), "x_n": In(range(lop[0] + 1)), "x_idx": In(data.ArrayLayout(COUNT_BITS, lop[0])),
                    "x_ind": Out(issue), "x_bad": Out(1)}
        super().__init__({
            **fill, **fifo,
            "run": In(1),
            "sb": In(sb),
            "words": In(data.ArrayLayout(word_layout("dma_lop" if lop else "dma", n_thr, n_dq, seq_bits,
                                                     dims if self.data else None), issue)),
            "avail": In(issue),  # which of them are in the ring (lowbit.rtl.chip_fetch)
            "raddr": Out(addr_bits),  # the next cycle's head: its words are raddr, raddr + 1, ...
            "pc": Out(seq_bits),
            "count": Out(seq_bits),
            "base": Out(seq_bits),
            "zeros": Out(data.ArrayLayout(unsigned(table.bit_length()), table + 1)),
            "fin": Out(table),
            "room": In(data.ArrayLayout(unsigned(cb), N_BUFFERS)),
            "entries_free": In(data.ArrayLayout(unsigned(entry_bits), N_BUFFERS)),
            "a_valid": Out(issue),
            "a_buf": Out(data.ArrayLayout(unsigned(BUF_BITS), issue)),
            "a_size": Out(data.ArrayLayout(unsigned(SIZE_BITS), issue)),
            "req_valid": Out(issue),
            "req": Out(data.ArrayLayout(request_layout(id_bits), issue)),
            "req_ready": In(1),
            "resp_valid": In(resp_lanes),
            "resp_id": In(data.ArrayLayout(unsigned(id_bits), resp_lanes)),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        nt, ni = self.table, self.issue
        lt = (nt - 1).bit_length()
        retired = Signal.like(self.pc)
        bits = Signal(nt)
        # --- issue chain: word k issues this cycle iff every word before it does and it can
        pad = (1 << BUF_BITS) - N_BUFFERS  # every `buf` code selects something (no incomplete case)
        room = Array([self.room[b] for b in range(N_BUFFERS)] + [Const(0, len(self.room[0]))] * pad)
        efree = Array([self.entries_free[b] for b in range(N_BUFFERS)] + [Const(0, len(self.entries_free[0]))] * pad)
        cb = len(self.room[0])
        eb = len(self.entries_free[0])
        used = [Const(0, cb)] * N_BUFFERS   # bytes / entries taken by the words issuing before k, per buffer
        taken = [Const(0, eb)] * N_BUFFERS
        prev = self.run & self.req_ready
        iss = []
        fifo = _Fifo(self, m) if self.lop else None
        ind_addr, ind_bytes = [], []
        for k in range(ni):
            w = self.words[k]
            avail = Const(1, 1)
            if fifo is not None:  # an indirect word: its indices' address and size, once they are in the FIFO
                a_, n_, av = fifo.lane(k, w, iss)
                ind_addr.append(a_)
                ind_bytes.append(n_)
                avail = ~w.ind | av
            u, t = Array(used + [Const(0, cb)] * pad), Array(taken + [Const(0, eb)] * pad)
            fits = ~w.alloc_en | ((room[w.buf] >= u[w.buf] + w.alloc) & (efree[w.buf] > t[w.buf]))
            ok = Signal(name=f"issue{k}")
            m.d.comb += ok.eq(prev & self.avail[k] & thresholds_met(w, self.sb) & fits
                              & (self.pc - retired + k < nt) & avail)
            iss.append(ok)
            prev = ok
            m.d.comb += [self.a_valid[k].eq(ok & w.alloc_en), self.a_buf[k].eq(w.buf), self.a_size[k].eq(w.alloc)]
            if k + 1 < ni:
                nu = [Signal(cb, name=f"used{k + 1}_{b}") for b in range(N_BUFFERS)]
                nt_ = [Signal(eb, name=f"taken{k + 1}_{b}") for b in range(N_BUFFERS)]
                for b in range(N_BUFFERS):
                    hit = Signal(name=f"hit{k}_{b}")
                    m.d.comb += hit.eq(ok & w.alloc_en & (w.buf == b))
                    m.d.comb += [nu[b].eq(used[b] + Mux(hit, w.alloc, 0)), nt_[b].eq(taken[b] + hit)]
                used, taken = nu, nt_
        n_iss = Signal(range(ni + 1))
        m.d.comb += n_iss.eq(sum(iss))
        pc_next = Signal.like(self.pc)
        m.d.comb += pc_next.eq(self.pc + n_iss)
        m.d.comb += self.raddr.eq(pc_next)
        m.d.sync += self.pc.eq(pc_next)
        # --- requests: every issuing word's request crosses the port in its issue cycle
        for k in range(ni):
            w, rq = self.words[k], self.req[k]
            addr, nbytes = (w.addr, w.nbytes) if fifo is None else (Mux(w.ind, ind_addr[k], w.addr),
                                                                    Mux(w.ind, ind_bytes[k], w.nbytes))
            m.d.comb += [self.req_valid[k].eq(iss[k]), rq.tag.eq(w.tag), rq.addr.eq(addr), rq.nbytes.eq(nbytes),
                         rq.wr.eq(w.wr), rq.dcls.eq(w.dcls), rq.id.eq((self.engine << lt) | (self.pc + k)[:lt])]
            if self.data:
                if self.writes:  # dma_kv's writes: their source units (lowbit.rtl.chip_kv)
                    m.d.comb += self.w_valid[k].eq(iss[k] & (w.dwords != 0) & w.wr)
                m.d.comb += [self.f_valid[k].eq(iss[k] & (w.dwords != 0) & ~w.wr), self.f_slot[k].eq((self.pc + k)[:lt]),
                             self.f_addr[k].eq(w.dbase), self.f_words[k].eq(w.dwords)]
        if fifo is not None:
            fifo.advance(iss)
        # --- completion table: responses set bits, the in-order completed prefix retires
        ret = []
        prev = None
        zero = Const(0, len(self.zeros[0]))
        m.d.comb += self.zeros[0].eq(0)
        for k in range(nt):
            got = Signal(name=f"got{k}")  # request base + k has completed
            m.d.comb += got.eq(bits.bit_select((retired + k)[:lt], 1))
            r = Signal(name=f"done{k}")
            m.d.comb += r.eq(got & (1 if prev is None else prev))
            ret.append(r)
            prev = r
            m.d.comb += self.zeros[k + 1].eq((self.zeros[k] if k else zero) + ~got)
        n_ret = sum(ret)
        m.d.comb += [self.count.eq(retired + n_ret), self.base.eq(retired)]
        m.d.sync += retired.eq(retired + n_ret)
        ra = Array(ret)
        for i in range(nt):
            k = (i - retired)[:lt]
            hit = Const(0, 1)
            for r in range(self.resp_lanes):
                rid = self.resp_id[r]
                hit = hit | (self.resp_valid[r] & (rid[lt:] == self.engine) & (rid[:lt] == i))
            m.d.sync += [bits[i].eq((bits[i] & ~ra[k]) | hit), self.fin[i].eq(hit)]
        return m



class _Fifo:
    """DmaEngine's LOP index FIFO (`lop` = (lanes, entries, row bytes)): the LOP engine's index writes (`x_*`,
    ascending, up to `lanes` a cycle) at the write pointer; a read pointer per plane (K, V: each reads every
    selection once). Lane k's indirect word reads its `nidx` indices after those of the earlier lanes issuing
    in the same cycle on its plane: address = its `addr` (the plane's row 0) + first index x row bytes,
    size = nidx x row bytes, available once written (a write of the same cycle forwarded); `x_bad` flags an issuing word whose indices are not
    adjacent keys (the run the compiler cut it from, LopIndexBuffer's `run`)."""

    def __init__(self, e: DmaEngine, m: Module) -> None:
        self.e, self.m = e, m
        ln, dep, self.rb = e.lop
        assert dep & (dep - 1) == 0, "the LOP index FIFO's entries must be a power of two"
        self.lg = lg = max(1, (dep - 1).bit_length())
        self.regs = [Signal(COUNT_BITS, name=f"fifo{i}") for i in range(dep)]
        self.wp = Signal(lg + 1)
        self.rps = [Signal(lg + 1, name=f"fifo_rp{q}") for q in range(2)]
        self.taken = [Const(0, lg + 1), Const(0, lg + 1)]  # indices the earlier lanes take, per plane
        self.bad = Const(0, 1)
        with m.If(e.x_valid):
            m.d.sync += self.wp.eq(self.wp + e.x_n)
        for i in range(dep):  # entry i takes the slot that lands on it
            for s in range(ln):
                with m.If(e.x_valid & (s < e.x_n) & ((self.wp + s)[:lg] == i)):
                    m.d.sync += self.regs[i].eq(e.x_idx[s])

    def lane(self, k: int, w, iss: list) -> tuple:
        m, lg = self.m, self.lg
        if k:  # the previous lane's word took its indices if it issued
            pw = self.e.words[k - 1]
            took = iss[k - 1] & pw.ind
            taken = [Signal(lg + 1, name=f"fifo_taken{k}_{q}") for q in range(2)]  # a signal per lane: the
            # chain stays linear in the lanes (an expression would be copied into every later lane's)
            m.d.comb += [taken[q].eq(Mux(took & (pw.plane == q), self.taken[q] + pw.nidx, self.taken[q]))
                         for q in range(2)]
            self.taken = taken
        p = Signal(lg + 1, name=f"fifo_p{k}")
        m.d.comb += p.eq(Mux(w.plane, self.rps[1] + self.taken[1], self.rps[0] + self.taken[0]))
        first, last = self._at(p), self._at(p + w.nidx - 1)
        self.runs = getattr(self, "runs", []) + [last == first + w.nidx - 1]
        e = self.e
        wp = (self.wp + Mux(e.x_valid, e.x_n, 0))[:lg + 1]  # this cycle's writes count (forwarded)
        avail = (w.nidx != 0) & ((wp - p)[:lg + 1] >= w.nidx)
        return w.addr + first * self.rb, w.nidx * self.rb, avail

    def _at(self, pos):
        """The index at FIFO position `pos`, a write of this cycle forwarded (the top-K's last indices leave it
        in the cycle its lop_topk word ends, when the fetches that wait on it may issue)."""
        e, lg = self.e, self.lg
        v = Array(self.regs)[pos[:lg]]
        for s in range(len(e.x_idx)):
            v = Mux(e.x_valid & (s < e.x_n) & ((self.wp + s)[:lg] == pos[:lg]), e.x_idx[s], v)
        return v

    def advance(self, iss: list) -> None:
        m, e, lg = self.m, self.e, self.lg
        k = len(iss) - 1
        w = e.words[k]
        took = iss[k] & w.ind
        taken = [Mux(took & (w.plane == q), self.taken[q] + w.nidx, self.taken[q])[:lg + 1] for q in range(2)]
        m.d.sync += [self.rps[q].eq(self.rps[q] + taken[q]) for q in range(2)]
        bad = Const(0, 1)
        for j in range(len(iss)):
            ind = iss[j] & e.words[j].ind
            m.d.comb += e.x_ind[j].eq(ind)
            bad = bad | (ind & ~self.runs[j])
        m.d.comb += e.x_bad.eq(bad)


class LopIndexBuffer(wiring.Component):
    """The LOP index FIFO of one KV head and the address of an indirect K/V fetch (docs/isa.md "Indirect K/V
    fetches"), one word at a time: the rule the chip's DMA engine applies across its issue lanes (_Fifo). `clear` starts a selection; the selection's key indices arrive
    ascending, up to `lanes` a cycle (`w_valid`, `w_n`, `w_idx`: lowbit.rtl.chip_lop.LopGroupSelect's `o_*`).
    An indirect word of plane `plane` (0 K, 1 V: each plane reads the selection once, through its own
    pointer) presents its `base` (the plane's row 0) and `nidx`; combinationally `addr` = base + idx[p] x
    `row_bytes` and `nbytes` = nidx x row_bytes (the request the word issues in its issue cycle), `avail`
    (nidx indices written past the pointer) and `run` (they are nidx adjacent keys: idx[p + nidx - 1] =
    idx[p] + nidx - 1, the ascending indices being distinct, so the one request fetches exactly them: the
    gather rule of sim.kvcache, by which the compiler cut the words). `take` (the word issues) advances the
    plane's pointer by nidx."""

    def __init__(self, *, lanes: int, depth: int, row_bytes: int, addr_bits: int) -> None:
        assert depth & (depth - 1) == 0, "LopIndexBuffer: depth must be a power of two"
        self.lanes, self.depth, self.row_bytes, self.addr_bits = lanes, depth, row_bytes, addr_bits
        cb = COUNT_BITS
        super().__init__({
            "clear": In(1), "w_valid": In(1), "w_n": In(range(lanes + 1)), "w_idx": In(data.ArrayLayout(cb, lanes)),
            "plane": In(1), "base": In(addr_bits), "nidx": In(cb), "take": In(1),
            "addr": Out(addr_bits), "nbytes": Out(_W["nbytes"]), "avail": Out(1), "run": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        n, d, cb = self.lanes, self.depth, COUNT_BITS
        lg = max(1, (d - 1).bit_length())
        regs = [Signal(cb, name=f"idx{e}") for e in range(d)]
        mem = Array(regs)
        wp = Signal(lg + 1)
        rps = [Signal(lg + 1, name=f"rp{q}") for q in range(2)]
        p = Signal(lg + 1)
        m.d.comb += p.eq(Mux(self.plane, rps[1], rps[0]))
        with m.If(self.clear):
            m.d.sync += [wp.eq(0), rps[0].eq(0), rps[1].eq(0)]
        with m.Else():
            with m.If(self.w_valid):
                m.d.sync += wp.eq(wp + self.w_n)
            for e in range(d):  # entry e takes the slot that lands on it (explicit: no partial case in Verilog)
                for s in range(n):
                    with m.If(self.w_valid & (s < self.w_n) & ((wp + s)[:lg] == e)):
                        m.d.sync += regs[e].eq(self.w_idx[s])
            for q in range(2):
                with m.If(self.take & (self.plane == q)):
                    m.d.sync += rps[q].eq(rps[q] + self.nidx)
        first, last = mem[p[:lg]], mem[(p + self.nidx - 1)[:lg]]
        m.d.comb += [self.addr.eq(self.base + first * self.row_bytes), self.nbytes.eq(self.nidx * self.row_bytes),
                     self.avail.eq((self.nidx != 0) & (wp - p >= self.nidx)),
                     self.run.eq(last == first + self.nidx - 1)]
        return m
