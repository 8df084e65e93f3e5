"""Instruction fetch: every queue's instructions stream into a small ring through the instruction port.

The chip holds no program. Each queue has a ring of `ring_depth(p, reads)` instruction words (`reads`: the
words its controller sees at once, 1 for an in-order compute queue, the issue window of a DMA engine and of
the join monitor; the ring holds at least that many). Before `start`
the loader writes the first words of every queue into its ring; from run cycle 0 the fetch unit refills them:

- **Space.** Word n of queue q may be requested once n < pc_q + F_q (pc_q the queue's registered head, the
  words it has issued or retired before this cycle; F_q its ring depth): no read of the ring can still want
  the slot's old word n - F_q.
- **Arbitration.** One request at a time, round robin over the queues with space, starting after the queue
  granted last; a granted word holds the port for its `beats` cycles (its width over `ifetch_bits`, LSB
  first), so the next grant comes `beats` cycles later.
- **The port** (DESIGN ASSUMPTION: a host command interface beside the memory port, the way accelerators such
  as Gemmini and NVDLA take commands from their host; its width `ifetch_bits` and latency `ifetch_latency`
  are ChipParams) answers a request granted in cycle t with the word's beats in cycles t + L .. t + L +
  beats - 1, each beat carrying its queue. The ring takes the word with its last beat.
- **Visibility.** A word whose last beat arrives in cycle d is counted in the ring from cycle d + 1, and the
  controller's synchronous read shows it from cycle d + 2. A word not yet in the ring is not `avail` to its
  controller, which waits for it.

`lowbit sim` assumes every instruction is at hand, so the chip matches it exactly when no word arrives late:
d + 2 <= the cycle it issues (a join: completes). `feed_schedule` plays the same rule against the
simulator's schedule and names the late words, if any; the bench would show them as later starts.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate

from amaranth.hdl import Array, Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data
from amaranth.lib.memory import Memory

from lowbit.rtl.chip_params import _pow2, ring_depth


def word_beats(bits: int, port_bits: int) -> int:
    """Port beats of a `bits`-wide instruction word."""
    return -(-bits // port_bits)


@dataclass
class Feed:
    """`feed_schedule`'s answer: per queue, the cycle each word becomes visible to its controller (-1: loaded
    before start) and the words that arrive after the cycle the simulator issues them."""

    visible: list[list[int]]
    late: list[tuple[int, int]]     # (queue, word)
    grants: list[tuple[int, int]]   # (cycle, queue) of every request up to `end`
    end: int                        # the last cycle a head moves
    busy: int                       # port cycles they took
    min_slack: int                  # least (issue cycle - visible cycle) over the fetched words; -1 without any

    @property
    def fetched(self) -> int:
        """Words the port carried up to the program's last cycle."""
        return len(self.grants)


def feed_schedule(starts: list[list[int]], depths: list[int], beats: list[int], latency: int,
                  join_queue: int) -> Feed:
    """Play the fetch rule (module docstring) against the simulator's schedule: `starts[q]` the cycles queue
    q's words issue (the join queue's: complete; its head retires a word once it and every earlier one have),
    `depths` the ring depths, `beats` each queue's words' port beats."""
    nq = len(starts)
    # sorted cycles at which each queue's head moves past word i (pc counts those < t)
    heads = [list(accumulate(st, max)) if q == join_queue else sorted(st) for q, st in enumerate(starts)]
    end = max((h[-1] for h in heads if h), default=0)
    nxt = list(depths)
    visible = [[-1] * min(len(st), d) for st, d in zip(starts, depths, strict=True)]
    last, t, busy = nq - 1, 0, 0
    grants: list[tuple[int, int]] = []
    while t <= end:
        pc = [bisect_left(h, t) for h in heads]
        order = [(last + 1 + s) % nq for s in range(nq)]
        q = next((q for q in order if nxt[q] < pc[q] + depths[q]), None)
        if q is None:  # nothing has space until some head moves: the next cycle after a word issues
            t = min((h[pc_] + 1 for h, pc_ in zip(heads, pc, strict=True) if pc_ < len(h)), default=end + 1)
            continue
        if nxt[q] < len(starts[q]):
            visible[q].append(t + latency + beats[q] - 1 + 2)
        nxt[q] += 1
        grants.append((t, q))
        busy += beats[q]
        last = q
        t += beats[q]
    late, slack = [], []
    for q, (st, vis) in enumerate(zip(starts, visible, strict=True)):
        late += [(q, i) for i in range(len(vis), len(st))]  # not even requested by the last cycle
        for i, v in enumerate(vis):
            if v >= 0:
                slack.append(st[i] - v)
                if v > st[i]:
                    late.append((q, i))
    return Feed(visible, late, grants, end, busy, min(slack, default=-1))


class InstrFetch:
    """The fetch unit and the rings, built into the chip's module `m` (module docstring): `ring` makes one
    queue's ring and returns the words its controller reads, `finish` the arbiter and the port. `load`:
    the loader's (queue, address, word, enable) for the words written before start; `port`: the chip's
    instruction-port signals (if_req, if_q, if_rv, if_rq, if_rw)."""

    def __init__(self, m: Module, p, run: Value, load: tuple[Value, Value, Value, Value], port: dict,
                 word_bits: int) -> None:
        self.m, self.p, self.run, self.load, self.port = m, p, run, load, port
        self.queues: list[tuple[int, Signal, Signal, Value, int]] = []  # (queue, next, loaded, pc, depth)
        self.beats: list[int] = []
        bits = len(port["if_rw"])
        self.bidx = Signal(8)  # the beat of the word now arriving
        self.full = Signal(word_beats(word_bits, bits) * bits)  # the arriving word with this beat in place
        self.asm = Signal(len(self.full))
        self.last_beat = Signal()
        self.bits = bits

    def ring(self, q: int, name: str, lay, reads: int, raddr: Value, pc: Value) -> tuple[list[Value], Signal]:
        """Queue q's ring: the `reads` words at raddr, raddr + 1, ... as the next cycle's data (synchronous
        reads) and, bit k, whether word raddr + k is in the ring (the controller's `avail`). Word i lives in
        bank i mod n (n = `reads` rounded up to a power of two) at row (i div n) mod (F / n), so `reads`
        consecutive words sit in distinct banks (a bank of one word is a register); bank b reads row
        (raddr div n) + (b < raddr mod n) and a barrel rotator by the registered raddr mod n puts word
        raddr + k at position k."""
        m, p = self.m, self.p
        f = ring_depth(p, reads)
        n = _pow2(reads)
        lg, lf = (n - 1).bit_length(), (f - 1).bit_length()
        size = data.StructLayout.cast(lay).size
        nxt = Signal(len(pc), init=f, name=f"if_next_{name}")
        loaded = Signal(len(pc), init=f, name=f"if_loaded_{name}")
        assert q == len(self.queues), "rings are made in queue order"
        self.queues.append((q, nxt, loaded, pc, f))
        self.beats.append(word_beats(size, self.bits))
        lq, la, lw, le = self.load
        take = Signal(name=f"if_take_{name}")  # the last beat of this queue's word arrives this cycle
        m.d.comb += take.eq(self.last_beat & (self.port["if_rq"] == q))
        with m.If(take):
            m.d.sync += loaded.eq(loaded + 1)
        waddr = Signal(lf, name=f"if_waddr_{name}")
        m.d.comb += waddr.eq(Value.cast(loaded)[:lf] if lf else 0)
        with m.If(le & (lq == q)):
            m.d.comb += waddr.eq(la[:lf] if lf else 0)
        wen = take | (le & (lq == q))
        wdata = Signal(size, name=f"if_wdata_{name}")
        m.d.comb += wdata.eq(Mux(take, self.full[:size], lw[:size]))
        lo = raddr[:lg] if lg else Const(0, 1)
        row = raddr[lg:lf] if lf > lg else Const(0, 1)
        sel = Signal(lg, name=f"imem_{name}_sel")  # raddr mod n of the cycle the data were read
        if lg:
            m.d.sync += sel.eq(lo)
        outs = []
        for b in range(n):
            hit = wen & ((waddr[:lg] == b) if lg else 1)
            if f == n:  # one word a bank: a register, read as it is (a word written in the cycle it would be
                # read, which a memory's read port would show a cycle later, is not yet counted in `loaded`)
                reg = Signal(size, name=f"imem_{name}_r{b}")
                with m.If(hit):
                    m.d.sync += reg.eq(wdata)
                outs.append(reg)
                continue
            mem = Memory(shape=unsigned(size), depth=f // n, init=[])
            m.submodules[f"imem_{name}" if n == 1 else f"imem_{name}_b{b}"] = mem
            wp, rp = mem.write_port(), mem.read_port()
            r = row + (lo > b) if b < n - 1 else row
            m.d.comb += [wp.addr.eq(waddr[lg:] if lf > lg else 0), wp.data.eq(wdata), wp.en.eq(hit),
                         rp.addr.eq(r[:lf - lg] if lf > lg else 0)]
            outs.append(rp.data)
        for s in range(lg):  # rotate left by sel: position k takes bank (sel + k) mod n
            outs = [Mux(sel[s], outs[(k + (1 << s)) % n], outs[k]) for k in range(n)]
        oks = Signal(reads, name=f"if_ok_{name}")  # word raddr + k is in the ring as it is read
        for k in range(reads):
            m.d.sync += oks[k].eq(raddr + k < loaded)
        return [data.View(lay, w) for w in outs[:reads]], oks

    def finish(self) -> None:
        """The arbiter (round robin over the queues with space, a grant per word's beats) and the response's
        beat assembly."""
        m, port, nq = self.m, self.port, len(self.queues)
        beats = Array(Const(b, 8) for b in self.beats + [1] * (32 - nq))
        # the response: beat bidx of queue if_rq's word; its last beat completes the word
        m.d.comb += self.full.eq(self.asm)
        with m.If(port["if_rv"]):
            for j in range(len(self.full) // self.bits):  # (a variable word_select leaves its case incomplete)
                with m.If(self.bidx == j):
                    m.d.comb += self.full[j * self.bits:(j + 1) * self.bits].eq(port["if_rw"])
            m.d.sync += self.asm.eq(self.full)
            m.d.comb += self.last_beat.eq(self.bidx == beats[port["if_rq"]] - 1)
            m.d.sync += self.bidx.eq(Mux(self.last_beat, 0, self.bidx + 1))
        # the requests
        wait = Signal(8)  # cycles the port stays busy with the last grant's beats
        last = Signal(range(max(nq, 2)), init=nq - 1)
        space = [Signal(name=f"if_space{k}") for k in range(nq)]
        for k, (_q, nxt, _ld, pc, f) in enumerate(self.queues):
            m.d.comb += space[k].eq((nxt - pc)[:len(nxt)] < f)
        grant = Signal(range(max(nq, 2)))
        anyq = Signal()
        with m.Switch(last):
            for lst in range(nq):
                with m.Case(lst) if lst < nq - 1 else m.Default():
                    order = [(lst + 1 + s) % nq for s in range(nq)]
                    for j, k in enumerate(order):
                        with (m.If if j == 0 else m.Elif)(space[k]):
                            m.d.comb += [grant.eq(k), anyq.eq(1)]
        req = Signal()
        m.d.comb += req.eq(self.run & anyq & (wait == 0))
        m.d.comb += [port["if_req"].eq(req), port["if_q"].eq(grant)]
        with m.If(req):
            m.d.sync += [last.eq(grant), wait.eq(beats[grant] - 1)]
            for k, (_q, nxt, *_r) in enumerate(self.queues):
                with m.If(grant == k):
                    m.d.sync += nxt.eq(nxt + 1)
        with m.Elif(wait != 0):
            m.d.sync += wait.eq(wait - 1)
