"""The tile instruction set: what the lowering (sim.lower) emits and the scheduler (sim.sched) executes.

A *chunk* of instructions (one forward step, or one decoder layer of it) is a set of parallel int64 columns
(`COLS`), one row per instruction, in priority order. Every instruction has a class (`main`):
- join (C_JOIN): zero-time synchronisation; ends at the latest end of instructions [jlo, jhi) and of its
  dependencies;
- DMA (C_DMAW: weights/activations queue, C_DMAKV: KV/LOP queue): a DRAM transfer of `nbytes` at `addr`,
  traffic class `dcls`, direction `wr`, issued by that queue in list order with many in flight (its end
  comes from sim.dram); it may allocate `alloc` bytes of SRAM buffer `buf` when it starts;
- compute (class >= UNIT_CLASS_BASE): runs on physical unit `unit` (of class `main`) for `cyc` cycles;
  cycles are the sim.units formula "cycles(start -> done)". The lowering may leave the choice open
  (`unit` = -1, `alt` = an alternative class with `cyc_alt` cycles, e.g. a ternary projection tile on a
  TINT core or on BoothFlex); the compiler's static assignment (sim.tiling.UnitAssigner) then fixes
  `unit`, `main` and `cyc` before scheduling, so the scheduler never chooses a unit.
Dependencies: up to three earlier instructions (dep0..dep2; NO_DEP = none, EXT = the chunk's input, i.e. the
previous chunk's output); `barrier = 1` also waits for the end of the previous step (autoregressive decode).
`free_of = j` releases, when this instruction ends, the buffer bytes that DMA j allocated. Every buffer is a
ring: allocations take its bytes in allocation order and return them in that order (sim.sched), so an
allocation's SRAM address is the running byte count modulo the capacity (lowbit.sim.program).
The binary program format that carries these chunks, with per-unit queues and dependency tokens, is
lowbit.sim.program (docs/isa.md).
The accounting columns (the scheduler does not read them) say which trace op and sub-kind an instruction
belongs to, its work (activity class and count) and its SRAM read/write traffic. The indirect columns mark
the K/V fetches of a decode step whose LOP drops keys: they take their rows from the index FIFO of the KV
head's lop_topk instruction (sim.lop_fetch); the scheduler does not read them either.

Compute classes are numbered from UNIT_CLASS_BASE upward in unit-catalogue order (lowbit.sim.units.catalog);
code that must treat "a compute unit" generically tests `cls >= UNIT_CLASS_BASE` and never relies on a
particular compute class number. The DMA queues and SRAM buffers are the catalogue's resources too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from lowbit.sim.nbcache import njit_cached
from lowbit.sim.units import catalog

ISA_VERSION = 4  # 2: instructions name their unit (static assignment), rings, the program format (sim.program);
#                 3: the program's run metadata names a batch's sequences;
#                 4: indirect K/V fetches from the LOP index FIFO (ind, nidx, isel), one top-K per KV head

# ------------------------------------------------------------------------------------ instruction classes

C_JOIN, C_DMAW, C_DMAKV = range(3)
FIXED_CLASSES = ("join",) + tuple(q.name for q in catalog.DMA_QUEUES)
UNIT_CLASS_BASE = len(FIXED_CLASSES)


def unit_class(name: str) -> int:
    """Class of a catalogued compute unit: UNIT_CLASS_BASE + its position in the catalogue (units registered
    later are appended, so the classes of the built-in units never change)."""
    return UNIT_CLASS_BASE + list(catalog.UNITS).index(catalog.get(name).name)


def class_unit(cls: int) -> catalog.Unit:
    """The catalogued unit of a compute class."""
    return list(catalog.UNITS.values())[cls - UNIT_CLASS_BASE]


def class_name(cls: int) -> str:
    return FIXED_CLASSES[cls] if cls < UNIT_CLASS_BASE else class_unit(cls).name


C_TINT, C_BOOTH, C_FP4, C_LOP, C_SFU = (unit_class(n) for n in ("tint", "booth", "fp4", "lop", "sfu"))

# ------------------------------------------------------------------------------------------- fields


@dataclass(frozen=True)
class Field:
    """One instruction column: `default` is the value when an emit does not set it (None: required)."""

    name: str
    default: int | None
    meaning: str


NO_DEP = -1  # dep*/free_of/alt/buf/...: none
EXT = -2     # dep*: the chunk's input (the previous chunk's output), ready at the scheduler's t_ext

# Read by the scheduler (in the order of its kernel's arguments).
SCHED_FIELDS = (
    Field("main", None, "instruction class (C_*)"),
    Field("unit", -1, "physical unit (scheduler order, lowbit.sim.tiling.physical_units) that runs it; -1: "
                      "not yet assigned (the compiler's static assignment sets it) or none (join)"),
    Field("cyc", 0, "cycles on a unit of class `main` (start -> done)"),
    Field("nbytes", 0, "DMA: bytes transferred"),
    Field("addr", 0, "DMA: DRAM byte address (regions *_BASE below)"),
    Field("wr", 0, "DMA: 1 writes DRAM, 0 reads it"),
    Field("dcls", 0, "DMA: DRAM traffic class (D_*)"),
    Field("buf", -1, "DMA: SRAM buffer (B_*) it allocates in, -1: none"),
    Field("alloc", 0, "DMA: bytes allocated in `buf` from its start until released by `free_of`"),
    Field("free_of", -1, "index of the DMA whose allocation this instruction frees when it ends, -1: none"),
    Field("dep0", -1, "dependency: index of an earlier instruction, NO_DEP or EXT"),
    Field("dep1", -1, "dependency, as dep0"),
    Field("dep2", -1, "dependency, as dep0"),
    Field("jlo", 0, "join: first instruction of the joined range"),
    Field("jhi", 0, "join: end (exclusive) of the joined range"),
    Field("barrier", 1, "1: waits for the end of the previous step"),
)
# Read by the compiler's static unit assignment only (sim.tiling.UnitAssigner).
CHOICE_FIELDS = (
    Field("alt", -1, "alternative compute class the compiler may assign it to, -1: none"),
    Field("cyc_alt", 0, "cycles on a unit of class `alt`"),
)
# Accounting only.
ACCOUNT_FIELDS = (
    Field("opi", 0, "index of the trace op (in the chunk's op list) it belongs to"),
    Field("sub", 0, "sub-kind (SUBS): timeline name and per-op accounting"),
    Field("macs", 0, "work in activity class `mcls` (MACs or elements)"),
    Field("mcls", -1, "activity class (M_*), -1: none"),
    Field("rbuf", -1, "SRAM buffer read, -1: none"),
    Field("rbytes", 0, "bytes read from `rbuf`"),
    Field("rbuf2", -1, "second SRAM buffer read, -1: none"),
    Field("rbytes2", 0, "bytes read from `rbuf2`"),
    Field("wbuf", -1, "SRAM buffer written, -1: none"),
    Field("wbytes", 0, "bytes written to `wbuf`"),
)
# The LOP index FIFO (module docstring of sim.lop_fetch): read by the program checks and the chip, not by the
# scheduler (an indirect fetch keeps the address and size its indices resolve to, so its timing is unchanged).
INDIRECT_FIELDS = (
    Field("ind", 0, "DMA: 1 indirect K/V fetch: DRAM address = the plane's base + index x row bytes, its `nidx` "
                    "indices taken in order from the index FIFO of LOP selection `isel`"),
    Field("nidx", 0, "indirect DMA: rows (indices) it fetches; lop_topk: keys it selects into its index FIFO "
                     "(0: LOP keeps every key, the fetches are direct)"),
    Field("isel", -1, "indirect DMA: index of the lop_topk instruction whose selection it fetches, -1: none"),
)
FIELDS = SCHED_FIELDS + CHOICE_FIELDS + ACCOUNT_FIELDS + INDIRECT_FIELDS
COLS = tuple(f.name for f in FIELDS)
SCHED_COLS = tuple(f.name for f in SCHED_FIELDS)
DEFAULT = {f.name: f.default for f in FIELDS if f.default is not None}
_COL_AT = {c: j for j, c in enumerate(COLS)}
_DEFAULT_ROW = [DEFAULT.get(c, 0) for c in COLS]  # an emitted row before its fields are set (COLS[0]: main)
# Columns that hold instruction indices (shifted when a cached block is placed).
IDX_COLS = ("free_of", "dep0", "dep1", "dep2", "jlo", "jhi")
# How placing a cached block (Emitter.add_block) treats each column of COLS: copied, an index (shifted), a
# dependency (shifted; EXT becomes the block's input), the op index (replaced when given), the DRAM address.
_P_COPY, _P_IDX, _P_DEP, _P_OPI, _P_ADDR = range(5)
COL_INDEX_MAIN, COL_INDEX_DCLS = COLS.index("main"), COLS.index("dcls")
PLACE_IDX_COLS = IDX_COLS + ("isel",)  # every column holding an instruction index (isel: not the scheduler's)
_PLACE = np.array([_P_DEP if c.startswith("dep") else _P_IDX if c in PLACE_IDX_COLS else _P_OPI if c == "opi" else
                   _P_ADDR if c == "addr" else _P_COPY for c in COLS], np.int64)

# ------------------------------------------------------------------------------------- enumerations

# Stall reasons: the binding constraint when a unit starts later than it became free.
R_DATA, R_MEM, R_STEP, R_BUFFER = range(4)
REASONS = ("data_dependency", "memory_wait", "step_barrier", "buffer_full")

# SRAM buffers (catalogue order; a config without one has capacity 0).
BUFFERS = tuple(b.name for b in catalog.SRAM_BUFFERS)
B_WEIGHT, B_ACT, B_KV, B_LOP, B_PSUM, B_SFU = (BUFFERS.index(n) for n in ("weight", "act", "kv", "lop", "psum", "sfu"))

# DRAM traffic classes (same order as sim.dram.CLASSES).
DRAM_CLASSES = ("weights", "kv", "activations", "lop")
D_W, D_KV, D_ACT, D_LOP = range(4)

# Activity (work) classes, reported as SimResult.activity[<name>].
ACTIVITY = catalog.WORK
M_TERN, M_INT8, M_FP4, M_LOP, M_SFU = (ACTIVITY.index(n) for n in
                                       ("ternary_macs", "int8_macs", "fp4_macs", "lop_elems", "sfu_elems"))
# The work a projection tile of each weight format does.
WORK_OF_FORMAT = {"ternary": M_TERN, "int8": M_INT8, "nvfp4": M_FP4, "mxfp4": M_FP4}

# Sub-kinds of an op's instructions.
SUBS = ("w_dma", "tile", "join", "act_rd", "act_wr", "kv_wr", "lop_dma", "lop_score", "lop_topk", "k_dma",
        "qk", "softmax", "v_dma", "av", "sfu", "embed")
SUB = {n: i for i, n in enumerate(SUBS)}

# DRAM address regions. Weights start at 0 (4 KiB-aligned per op, one layer's block repeated per layer).
KV_BASE = 1 << 38                     # K/V cache per sequence, layer, KV head, K|V plane, position (sim.kvcache)
LOP_BASE = 1 << 39                    # LO codes per sequence, layer, KV head, position (docs/kv-cache.md)
ACT_BASE = 1 << 40                    # spilled input activations
ACT_OUT_BASE = ACT_BASE + (1 << 30)   # spilled output activations
EMBED_BASE = ACT_BASE + (2 << 30)     # embedding rows


# ------------------------------------------------------------------------------------------- builder


class Emitter:
    """Column-wise chunk builder: single emits (rows of Python ints, turned into columns once) plus numpy
    segments, concatenated by `finish`."""

    def __init__(self, sink: WindowSink | None = None, window: int = 1 << 15) -> None:
        self.segs: list[dict[str, np.ndarray]] = []
        self.rows: list[list[int]] = []  # emitted, not yet in a segment / the window buffer (one list per row)
        self.n = 0
        # streaming (sink given): every `window` instructions are handed to the sink as soon as they are
        # emitted, so a chunk is never held whole; `base` is the index of the first instruction still held
        self.sink = sink
        self.window = window
        self.base = 0
        self.wb: dict[str, np.ndarray] | None = None  # streaming: the window buffer (_held)

    def mark(self) -> int:
        """The next instruction's index, as the start of a range a later join waits on (a streaming sink keeps
        the range's running maximum once its instructions have left the window)."""
        if self.sink is not None:
            self.sink.mark(self.n, 1)
        return self.n

    def emit(self, main: int, **kw: int) -> int:
        """Append one instruction (unset fields take DEFAULT; a keyword that is no field is ignored); returns its
        index."""
        row = _DEFAULT_ROW.copy()
        row[0] = main
        for k, v in kw.items():
            j = _COL_AT.get(k)
            if j is not None:
                row[j] = v
        self.rows.append(row)
        self.n += 1
        if self.sink is not None and self.n - self.base >= 2 * self.window - 1:
            self._stream()
        return self.n - 1

    def add_arrays(self, cols: dict[str, np.ndarray]) -> None:
        """Append a numpy segment whose indices are already absolute in this emitter."""
        self._flush()
        self.segs.append(cols)
        self.n += len(cols["main"])

    def add_block(self, blk: dict[str, np.ndarray], ext: int, dram_offs: tuple[int, int, int, int], *,
                  opi: int | None = None, addr_add: np.ndarray | None = None) -> int:
        """Append a cached block built with local indices: indices shift to this emitter, EXT dependencies
        become `ext`, DMA addresses shift by `dram_offs[dcls]` (plus `addr_add` per row, if given), and `opi`
        (if given) replaces the op index. Returns the index of the block's last instruction."""
        if self.sink is not None:
            return self._put_block(blk, ext, dram_offs, opi, addr_add)
        self._flush()
        n = len(blk["main"])
        which = _CHANGED_OPI if opi is not None else _CHANGED
        out = np.empty((len(which), n), np.int64)
        _place(tuple(blk[c] for c in COLS), out, which, 0, 0, n, self.n, ext, -1 if opi is None else opi,
               np.asarray(dram_offs, np.int64), _NO_ADD if addr_add is None else addr_add, addr_add is not None)
        b = {c: blk[c] for c in COLS}  # columns add_block does not change are shared with the cached block
        b.update(zip((COLS[j] for j in which), out, strict=True))
        self.segs.append(b)
        self.n += n
        return self.n - 1

    def finish(self) -> dict[str, np.ndarray]:
        """The chunk's columns (int64 arrays of equal length); streaming: hands the rest to the sink and
        returns no rows."""
        if self.sink is not None:
            self._stream(final=True)
            return {c: np.zeros(0, np.int64) for c in COLS}
        self._flush()
        if not self.segs:
            return {c: np.zeros(0, np.int64) for c in COLS}
        if len(self.segs) == 1:
            return {c: np.ascontiguousarray(self.segs[0][c], np.int64) for c in COLS}
        return {c: np.concatenate([s[c] for s in self.segs]) for c in COLS}

    def _flush(self) -> None:
        if self.sink is not None:
            self._flush_stream()
            return
        if self.rows:
            self.segs.append(dict(zip(COLS, np.ascontiguousarray(np.array(self.rows, np.int64).T), strict=True)))
            self.rows = []

    # ---------------------------------------------------------------------------- streaming (a sink)

    def _held(self) -> dict[str, np.ndarray]:
        """The window buffer: rows base.. of the chunk not yet handed on (2 windows of room, reused), one row of
        `wb2` per column."""
        if self.wb is None:
            self.wb2 = np.empty((len(COLS), 2 * self.window), np.int64)
            self.wb = dict(zip(COLS, self.wb2, strict=True))
        return self.wb

    def _put_block(self, blk: dict[str, np.ndarray], ext: int, dram_offs: tuple[int, int, int, int],
                   opi: int | None, addr_add: np.ndarray | None) -> int:
        """add_block's rule, written straight into the window buffer in pieces of at most one window."""
        self._stream()
        self._held()
        offs = np.asarray(dram_offs, np.int64)
        n_blk = len(blk["main"])
        off0 = self.n
        rng = (blk["main"] == C_JOIN) & (blk["jhi"] > blk["jlo"])  # joins over a range: marked before any row goes
        if rng.any():
            for mk, k in zip(*np.unique(blk["jlo"][rng], return_counts=True), strict=True):
                self.sink.mark(off0 + int(mk), int(k))
        src = tuple(blk[c] for c in COLS)
        add = _NO_ADD if addr_add is None else addr_add
        i0 = 0
        while i0 < n_blk:  # pieces that fill the held rows up to one window (handed on without moving rows)
            h = self.n - self.base
            i1 = min(n_blk, i0 + self.window - h)
            _place(src, self.wb2, _ALL_COLS, h, i0, i1, off0, ext, -1 if opi is None else opi, offs, add,
                   addr_add is not None)
            self.n += i1 - i0
            self._stream()
            i0 = i1
        return self.n - 1

    def _flush_stream(self) -> None:
        """Emitted rows (Python lists) into the window buffer."""
        if self.rows:
            self._held()
            k = len(self.rows)
            h = self.n - k - self.base
            self.wb2[:, h:h + k] = np.array(self.rows, np.int64).T
            self.rows = []

    def _stream(self, final: bool = False) -> None:
        """Hand held rows to the sink in windows of `window` (the last, with `final`, may be shorter), keeping
        fewer than `window` back otherwise. The sink gets views of the buffer: it copies what it keeps."""
        self._flush_stream()
        wb = self._held()
        h = self.n - self.base
        w0 = 0
        while h - w0 >= self.window or (final and w0 < h):
            w1 = min(h, w0 + self.window)
            self.sink.window({c: wb[c][w0:w1] for c in COLS}, self.base)
            self.base += w1 - w0
            w0 = w1
        if w0 and w0 < h:
            self.wb2[:, :h - w0] = self.wb2[:, w0:h]


_NO_ADD = np.zeros(0, np.int64)
_ALL_COLS = np.arange(len(COLS), dtype=np.int64)
_CHANGED = np.array([j for j, c in enumerate(COLS) if c in PLACE_IDX_COLS or c == "addr"], np.int64)
_CHANGED_OPI = np.array([j for j, c in enumerate(COLS) if c in PLACE_IDX_COLS or c in ("addr", "opi")], np.int64)


@njit_cached()
def _place(src, dst, which, h, i0, i1, off0, ext, opi, offs, add, has_add):
    """Rows i0..i1 of columns `which` of a cached block (`src`: its COLS) into dst[k, h:] (k: the position in
    `which`) by add_block's rule (_PLACE per column): an index >= 0 shifts by off0, a dependency EXT becomes `ext`,
    opi >= 0 replaces the op index, a DMA's address shifts by offs[dcls] (plus add[row] when has_add)."""
    jm, jd = COL_INDEX_MAIN, COL_INDEX_DCLS
    for k in range(len(which)):
        j = which[k]
        s = src[j]
        d = dst[k]
        how = _PLACE[j]
        if how == _P_IDX:
            for r in range(i0, i1):
                v = s[r]
                d[h + r - i0] = v + off0 if v >= 0 else v
        elif how == _P_DEP:
            for r in range(i0, i1):
                v = s[r]
                d[h + r - i0] = v + off0 if v >= 0 else ext if v == EXT else v
        elif how == _P_OPI and opi >= 0:
            for r in range(i0, i1):
                d[h + r - i0] = opi
        elif how == _P_ADDR:
            main, dcls = src[jm], src[jd]
            for r in range(i0, i1):
                v = s[r]
                if main[r] == C_DMAW or main[r] == C_DMAKV:
                    v += offs[dcls[r]]
                if has_add:
                    v += add[r]
                d[h + r - i0] = v
        else:
            for r in range(i0, i1):
                d[h + r - i0] = s[r]


class WindowSink(Protocol):
    """Receives a streamed chunk (Emitter with a sink): `ops(kinds)` first, with the kind of every op the
    chunk's `opi` indexes; `mark(i, uses)` before instruction i is emitted when
    `uses` later joins wait on a range starting at i; `window(cols, w0)` with instructions w0.. (indices in
    the columns are chunk-wide)."""

    def ops(self, kinds: list[str]) -> None: ...

    def mark(self, i: int, uses: int) -> None: ...

    def window(self, cols: dict[str, np.ndarray], w0: int) -> None: ...
