"""An SRAM buffer's ring allocator (docs/isa.md "SRAM rings"): allocations take bytes at the head in
allocation order, releases mark an allocation free, and bytes return to the ring in allocation order (an
allocation's bytes are free once it and every earlier allocation are released), so head/tail pointers and
an entry table of the live allocations are all it holds.

Each entry holds the running allocated byte total after it, so the bytes returned are the total of the last
entry of the released run from the oldest entry (a find-first-zero over the release bits), with no adder
over the entries. Timing (the simulator's rule, sim.sched): a release made by an instruction ending in
cycle E is in the entry table from cycle E on, and the room an allocation sees in cycle E already counts
those bytes (`room` and `entries_free` are combinational over the registered table). DESIGN ASSUMPTION: `entries`
live allocations per buffer (a DMA waits for a free entry otherwise; the bench reports any cycle that
this costs against the simulator).
"""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

SIZE_BITS = 24  # allocation size field (lowbit.rtl.chip_image.WORD_FIELDS 'alloc')
SLOT_BITS = 8   # release slot field ('free_slot')
BUF_BITS = 3


class Ring(wiring.Component):
    """Ring of buffer `index` with `capacity` bytes and `entries` live allocations (a power of two); takes up
    to `n_alloc` allocations per cycle (lanes in order) and releases from `n_rel` sources."""

    def __init__(self, index: int, capacity: int, entries: int, n_alloc: int, n_rel: int) -> None:
        assert entries & (entries - 1) == 0 and entries >= 2
        self.index, self.capacity, self.entries = index, capacity, entries
        self.n_alloc, self.n_rel = n_alloc, n_rel
        cb = capacity.bit_length() + 1
        eb = entries.bit_length()
        super().__init__({
            "alloc_valid": In(n_alloc),
            "alloc_size": In(data.ArrayLayout(unsigned(SIZE_BITS), n_alloc)),
            "rel_valid": In(n_rel),
            "rel_buf": In(data.ArrayLayout(unsigned(BUF_BITS), n_rel)),
            "rel_slot": In(data.ArrayLayout(unsigned(SLOT_BITS), n_rel)),
            "room": Out(cb),
            "entries_free": Out(eb),
            "head": Out(cb),  # SRAM byte address of the next allocation
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        ne = self.entries
        lg = (ne - 1).bit_length()
        cb = len(self.room)
        ob = cb + 1  # running byte totals, modulo 2^ob (the difference of two is at most the capacity)
        end = Array(Signal(ob, name=f"end{i}") for i in range(ne))  # allocated total after entry i
        rel = Signal(ne)
        aptr = Signal(lg)   # next entry to allocate
        rptr = Signal(lg)   # oldest live entry
        live = Signal(lg + 1)
        total = Signal(ob)  # bytes allocated so far
        back = Signal(ob)   # bytes returned so far (registered)
        # entries returning now: the released run from rptr, up to the first unreleased one. Entries that are
        # not live are never marked released, so the run stops at aptr; find-first-zero over rel rotated by rptr
        # (the vector doubled, positions below rptr masked), one priority chain of 2 * entries.
        nrel = Signal(2 * ne)
        lo = Signal(ne)
        for i in range(ne):
            m.d.comb += lo[i].eq(~rel[i] & ((i >= rptr) if i < ne - 1 else 1))
        m.d.comb += nrel.eq(lo | (~rel << ne))
        first = Const(2 * ne, range(2 * ne + 1))
        for i in reversed(range(2 * ne)):
            first = Mux(nrel[i], i, first)
            if i % 32 == 0:  # a named stage every 32 positions keeps the expression shallow
                st = Signal(range(2 * ne + 1), name=f"first{i}")
                m.d.comb += st.eq(first)
                first = st
        n_ret = Signal(lg + 1)
        m.d.comb += n_ret.eq(Mux(first - rptr > live, live, first - rptr))
        back_now = Signal(ob)
        m.d.comb += back_now.eq(Mux(n_ret != 0, end[(rptr + n_ret - 1)[:lg]], back))
        m.d.comb += [self.room.eq(self.capacity - (total - back_now)[:ob]),
                     self.entries_free.eq(ne - (live - n_ret))]
        # allocations this cycle, in lane order: lane k takes entry aptr + (allocating lanes before k)
        rank = Const(0, range(self.n_alloc + 1))
        add = Const(0, ob)
        writes = []
        for k in range(self.n_alloc):
            nr = Signal(range(self.n_alloc + 1), name=f"rank{k + 1}")
            na = Signal(ob, name=f"add{k + 1}")
            m.d.comb += [nr.eq(rank + self.alloc_valid[k]), na.eq(add + Mux(self.alloc_valid[k], self.alloc_size[k], 0))]
            slot = Signal(lg, name=f"slot{k}")
            m.d.comb += slot.eq(aptr + rank)
            writes.append((self.alloc_valid[k], slot, (total + na)[:ob]))
            rank, add = nr, na
        for i in range(ne):
            v = end[i]
            for valid, slot, e in writes:  # entry i takes the lane that allocates it (at most one does)
                v = Mux(valid & (slot == i), e, v)
            m.d.sync += end[i].eq(v)
            hit = 0
            for s in range(self.n_rel):
                hit = hit | (self.rel_valid[s] & (self.rel_buf[s] == self.index) & (self.rel_slot[s][:lg] == i))
            gone = (i - rptr)[:lg] < n_ret  # retiring this cycle
            # retired entries clear, new allocations start unreleased, releases set
            m.d.sync += rel[i].eq((rel[i] & ~gone) | hit)
        m.d.sync += [aptr.eq(aptr + rank), rptr.eq(rptr + n_ret), live.eq(live - n_ret + rank),
                     total.eq(total + add), back.eq(back_now)]
        m.d.sync += self.head.eq((self.head + add) % self.capacity)
        return m
