"""The binary program format of the tile ISA (sim.isa): what `lowbit compile` writes, `lowbit sim --program`
runs, and a chip's queue controllers execute.

A program is the lowered run with every decision made: each instruction sits in the in-order queue of one
physical unit (the TINT cores, BoothFlex, the FP4 core, LOP, SFU, the weight and KV DMA engines; zero-time
joins in the `sync` queue), chosen by the compiler's static assignment (sim.tiling.UnitAssigner). Queues
synchronise only through dependency tokens: every instruction has a sequence number in its queue, and a
wait (queue q, sequence s) holds an instruction until instruction s of queue q has completed — a compute
queue keeps a completion counter (it completes in order), a DMA engine and the join table a completion
bit per outstanding sequence number. A join waits on per-queue sequence ranges. Sequence numbers in an
instruction are relative to the chunk (the controller adds the queue's count at the chunk's start), so one
instruction block serves every chunk that places it; a chunk gives the block's DRAM base per traffic class
and each SRAM ring's head.

File layout (little-endian; fields packed LSB first into 64-bit words, a field never straddles two words;
tables of every layout with bit widths: docs/isa.md, generated from LAYOUTS):
    FILE_HEADER, QUEUE x n_queues, BUFFER x n_buffers, metadata (UTF-8 JSON, meta_bytes)
    records, each a RECORD word (tag, payload bytes) then its payload:
      STEP   one forward step (phase, trace step); its chunks follow up to the next STEP or END
      BLOCK  an instruction block for block slot `slot`: BLOCK_HEADER, n_instr dispatch bytes (the queue of
             each instruction in program order, padded to 8 bytes), the per-queue counts (32 bit each,
             padded), the INSTR words queue by queue, then the join RANGE words in program order
      CHUNK  one chunk: CHUNK word, then op names / kinds / roles (UTF-8, '\\n'-joined, `names_bytes`)
      END    totals, so that a truncated file is detected
A program is streamed (lowbit.sim.program_io): the writer keeps the last BLOCK_SLOTS blocks to reuse them,
the reader holds at most BLOCK_SLOTS decoded blocks and one chunk. Values that do not fit their field are
refused (ProgramError). lowbit.sim.compile drives the compiler (`lowbit compile`), runs a program and
disassembles it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from lowbit.sim.config import HwConfig, to_dict
from lowbit.sim.isa import (
    BUFFERS,
    C_DMAKV,
    C_DMAW,
    C_JOIN,
    C_LOP,
    COLS,
    DEFAULT,
    EXT,
)
from lowbit.sim.lower import StepStats
from lowbit.sim.program_check import Context, ProgramError, check_block

MAGIC = b"LOWBITPG"
BLOCK_SLOTS = 4
W_NONE, W_TOKEN, W_INPUT = range(3)  # wait kinds
T_STEP, T_BLOCK, T_CHUNK, T_END = 1, 2, 3, 4
RECORDS = {T_STEP: "STEP", T_BLOCK: "BLOCK", T_CHUNK: "CHUNK", T_END: "END"}


# ------------------------------------------------------------------------------------------------ layouts


@dataclass(frozen=True)
class F:
    """One field: `bits` wide, stored as value - `lo` (so lo = -1 makes 0 mean "none")."""

    name: str
    bits: int
    meaning: str
    lo: int = 0


class Layout:
    """Fields packed LSB first into 64-bit words; a field that does not fit the current word starts the next."""

    def __init__(self, name: str, meaning: str, fields: tuple[F, ...]) -> None:
        self.name, self.meaning, self.fields = name, meaning, fields
        self.place: dict[str, tuple[int, int]] = {}
        w = s = 0
        for f in fields:
            if s + f.bits > 64:
                w, s = w + 1, 0
            self.place[f.name] = (w, s)
            s += f.bits
        self.words = w + 1
        self.nbytes = 8 * self.words

    def pack(self, vals: dict[str, Any], n: int, where: str) -> np.ndarray:
        """(n, words) uint64 from columns (arrays of n, or scalars); ProgramError if a value does not fit."""
        out = np.zeros((n, self.words), np.uint64)
        for f in self.fields:
            if f.bits == 64:  # whole words (magic, hashes, counters): unsigned, any 64-bit value fits
                w, _ = self.place[f.name]
                x = vals.get(f.name, 0)
                if np.ndim(x) == 0 and not 0 <= int(x) < 1 << 64:
                    raise ProgramError(f"{where}: {self.name}.{f.name} = {int(x)} does not fit its 64-bit field")
                out[:, w] = np.asarray(x, np.uint64)
                continue
            v = np.asarray(vals.get(f.name, 0), np.int64)
            v = np.broadcast_to(v, (n,)) if v.ndim == 0 else v
            bad = (v < f.lo) | (v - f.lo > (1 << f.bits) - 1)
            if bad.any():
                i = int(np.argmax(bad))
                raise ProgramError(f"{where}: {self.name}.{f.name} = {int(v[i])} (entry {i}) does not fit its "
                                   f"{f.bits}-bit field (range {f.lo}..{f.lo + (1 << f.bits) - 1})")
            w, s = self.place[f.name]
            out[:, w] |= (v - f.lo).astype(np.uint64) << np.uint64(s)
        return out

    def unpack(self, words: np.ndarray) -> dict[str, np.ndarray]:
        words = words.reshape(-1, self.words)
        out = {}
        for f in self.fields:
            w, s = self.place[f.name]
            if f.bits == 64:
                out[f.name] = words[:, w].copy()
                continue
            mask = np.uint64((1 << f.bits) - 1)
            out[f.name] = ((words[:, w] >> np.uint64(s)) & mask).astype(np.int64) + f.lo
        return out

    def one(self, data: bytes, where: str) -> dict[str, int]:
        if len(data) < self.nbytes:
            raise ProgramError(f"{where}: truncated {self.name} ({len(data)} of {self.nbytes} bytes)")
        return {k: int(v[0]) for k, v in self.unpack(np.frombuffer(data[:self.nbytes], "<u8")).items()}


def _wait_fields(k: int) -> tuple[F, ...]:
    return (F(f"w{k}_kind", 2, f"wait {k}: 0 none, 1 token (queue, seq), 2 the chunk's input token"),
            F(f"w{k}_queue", 4, f"wait {k}: queue of the awaited instruction"),
            F(f"w{k}_seq", 24, f"wait {k}: its sequence number in that queue, from the chunk's start"))


FILE_HEADER = Layout("FILE_HEADER", "start of the file", (
    F("magic", 64, "b'LOWBITPG' (little-endian)"),
    F("isa_version", 16, "sim.isa.ISA_VERSION the program was compiled for"),
    F("n_queues", 8, "queues (physical units in scheduler order, then sync)"),
    F("n_buffers", 8, "SRAM buffers (sim.isa.BUFFERS order)"),
    F("block_slots", 8, "block slots a reader must hold"),
    F("meta_bytes", 32, "bytes of the UTF-8 JSON metadata after the tables"),
    F("cfg_hash0", 64, "SHA-256 of the effective hardware config (canonical JSON), bytes 0-7"),
    F("cfg_hash1", 64, "bytes 8-15"), F("cfg_hash2", 64, "bytes 16-23"), F("cfg_hash3", 64, "bytes 24-31"),
))
QUEUE = Layout("QUEUE", "one per queue, after FILE_HEADER", (
    F("cls", 8, "instruction class it runs (sim.isa: 0 join (sync), 1 dma_w, 2 dma_kv, compute classes)"),
    F("replica", 8, "index among the units of that class (names: the metadata's `queues`)"),
))
BUFFER = Layout("BUFFER", "one per SRAM buffer", (
    F("capacity", 32, "bytes (0: the design has no such buffer)"),
))
RECORD = Layout("RECORD", "before every record", (
    F("tag", 16, "1 STEP, 2 BLOCK, 3 CHUNK, 4 END"),
    F("payload_bytes", 48, "bytes that follow"),
))
STEP = Layout("STEP", "a forward step; its chunks follow, up to the next STEP or END", (
    F("phase", 1, "0 prefill, 1 decode"),
    F("trace_step", 31, "the trace's step number (prefill 0, decode 1..D)"),
))
BLOCK_HEADER = Layout("BLOCK_HEADER", "an instruction block", (
    F("slot", 8, "block slot it is stored in (replaces the slot's previous block)"),
    F("n_instr", 32, "instructions"),
    F("n_ranges", 32, "join RANGE words"),
))
INSTR = Layout("INSTR", "one instruction, in its queue's section", (
    F("op", 6, "instruction class (sim.isa C_*): 0 join, 1 dma_w, 2 dma_kv, then compute classes in unit-catalogue order"),
    F("sub", 5, "sub-kind (sim.isa.SUBS)"),
    F("barrier", 1, "1: also waits for the step fence (every instruction of earlier steps completed)"),
    F("wr", 1, "DMA: 1 writes DRAM"),
    F("dcls", 2, "DMA: DRAM traffic class (weights, kv, activations, lop)"),
    F("buf", 3, "DMA: SRAM buffer it fills (sim.isa.BUFFERS), none", -1),
    F("mcls", 3, "work class of `macs` (sim.isa.ACTIVITY), none", -1),
    F("rbuf", 3, "SRAM buffer read, none", -1),
    F("rbuf2", 3, "second SRAM buffer read, none", -1),
    F("wbuf", 3, "SRAM buffer written, none", -1),
    F("n_ranges", 4, "join: RANGE words it waits on"),
    F("opi", 10, "op of the chunk's op list it belongs to"),
    F("free", 1, "1: when it completes, releases the SRAM allocation of DMA (free_queue, free_seq)"),
    F("free_queue", 4, "queue of that DMA"),
    F("ind", 1, "DMA: 1 indirect K/V fetch: rows at the plane's base + index x row bytes, `nidx` indices taken in "
                "order from the index FIFO of the lop_topk word `ind_seq` (docs/isa.md \"Indirect K/V fetches\")"),
    F("nidx", 14, "indirect DMA: indices (rows) it takes; lop_topk: keys it selects into its index FIFO, 0: none"),
    F("free_seq", 24, "its sequence number, from the chunk's start"),
    *_wait_fields(0), *_wait_fields(1), *_wait_fields(2),
    F("cyc", 32, "compute: cycles (sim.units formula, start -> done)"),
    F("nbytes", 32, "DMA: bytes transferred"),
    F("addr", 48, "DMA: DRAM byte address relative to the chunk's base of its traffic class (indirect: the "
                  "address its indices resolve to)"),
    F("ind_seq", 16, "indirect DMA: sequence number of its lop_topk word in the `lop` queue, from the chunk's start"),
    F("alloc", 24, "DMA: bytes taken from the `buf` ring when it issues"),
    F("wbytes", 32, "bytes written to wbuf"),
    F("macs", 40, "work done (MACs or elements)"),
    F("saddr", 24, "DMA with alloc: SRAM byte address in `buf`, relative to the ring head at the chunk's start (mod capacity)"),
    F("rbytes", 32, "bytes read from rbuf"),
    F("rbytes2", 32, "bytes read from rbuf2"),
))
RANGE = Layout("RANGE", "a join's wait on a run of one queue", (
    F("queue", 4, "queue"),
    F("seq", 24, "first sequence number, from the chunk's start"),
    F("count", 24, "instructions (all must have completed)"),
))
CHUNK = Layout("CHUNK", "one chunk: a placed block", (
    F("slot", 8, "block slot"),
    F("layer", 16, "decoder layer, -1: model-level ops", -1),
    F("n_ops", 16, "ops in the names table"),
    F("names_bytes", 32, "bytes of the names / kinds / roles table that follows"),
    F("out_kind", 2, "0: none (the input token passes on), 1: the chunk's output token"),
    F("out_queue", 4, "output token: queue"),
    F("out_seq", 24, "output token: sequence number from the chunk's start"),
    F("in_kind", 2, "0: the step's start, 1: the input token (queue, absolute seq) below"),
    F("in_queue", 4, "input token: queue"),
    F("in_seq", 40, "input token: absolute sequence number in the run"),
    F("base_weights", 48, "DRAM base added to the block's weight addresses"),
    F("base_kv", 48, "DRAM base, kv"),
    F("base_activations", 48, "DRAM base, activations"),
    F("base_lop", 48, "DRAM base, LO codes"),
    *(F(f"ring_{b}", 24, f"head of the '{b}' ring at the chunk's start") for b in BUFFERS),
    *(F(f.name, 64, f"lowering counter {f.name}") for f in dataclasses.fields(StepStats)),
))
END = Layout("END", "last record", (
    F("n_steps", 32, "STEP records"),
    F("n_chunks", 32, "CHUNK records"),
    F("n_instr", 48, "instructions of all chunks"),
))
LAYOUTS = (FILE_HEADER, QUEUE, BUFFER, RECORD, STEP, BLOCK_HEADER, INSTR, RANGE, CHUNK, END)


def config_hash(cfg: HwConfig) -> bytes:
    """SHA-256 of the config's canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).digest()


# ------------------------------------------------------------------------------------------------ queues


@dataclass(frozen=True)
class Queues:
    """The program's queues: the physical units (scheduler order) and `sync` (joins) last."""

    names: tuple[str, ...]
    classes: tuple[int, ...]

    @classmethod
    def of(cls, units: list[tuple[str, int]]) -> Queues:
        return cls(tuple(n for n, _ in units) + ("sync",), tuple(c for _, c in units) + (C_JOIN,))

    @property
    def sync(self) -> int:
        return len(self.names) - 1

    def queue_of(self, cols: dict[str, np.ndarray]) -> np.ndarray:
        """Queue of each instruction: its unit, joins the sync queue."""
        return np.where(cols["main"] == C_JOIN, self.sync, cols["unit"]).astype(np.int64)


def _seqs(q: np.ndarray, nq: int) -> tuple[np.ndarray, np.ndarray]:
    """(sequence number of each instruction in its queue, instructions per queue) in program order."""
    order = np.argsort(q, kind="stable")
    counts = np.bincount(q, minlength=nq)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    seq = np.empty(len(q), np.int64)
    seq[order] = np.arange(len(q)) - np.repeat(starts, counts)
    return seq, counts


# ------------------------------------------------------------------------------------------------ blocks


def _wait_cols(d: np.ndarray, q: np.ndarray, seq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tok = d >= 0
    kind = np.where(tok, W_TOKEN, np.where(d == EXT, W_INPUT, W_NONE))
    dd = np.where(tok, d, 0)
    return kind, np.where(tok, q[dd], 0), np.where(tok, seq[dd], 0)


def encode_block(cols: dict[str, np.ndarray], slot: int, ctx: Context) -> bytes:
    """BLOCK payload of a chunk's columns (addresses already relative to the chunk's bases)."""
    check_block(cols, ctx)
    n = len(cols["main"])
    nq = len(ctx.queues.names)
    q = ctx.queues.queue_of(cols)
    seq, counts = _seqs(q, nq)
    v: dict[str, Any] = {c: cols[c] for c in _PLAIN}
    v["op"] = cols["main"]
    for k in range(3):
        v[f"w{k}_kind"], v[f"w{k}_queue"], v[f"w{k}_seq"] = _wait_cols(cols[f"dep{k}"], q, seq)
    fo = cols["free_of"]
    has = fo >= 0
    ff = np.where(has, fo, 0)
    v["free"], v["free_queue"], v["free_seq"] = has.astype(np.int64), np.where(has, q[ff], 0), np.where(has, seq[ff], 0)
    v["saddr"] = _ring_offsets(cols, ctx.caps)
    v["ind_seq"] = np.where(cols["ind"] == 1, seq[np.maximum(cols["isel"], 0)], 0)  # the lop queue's (checked)
    # join ranges: per queue, the run of its instructions inside [jlo, jhi)
    join = np.nonzero(cols["main"] == C_JOIN)[0]
    rq: list[np.ndarray] = []
    nr = np.zeros(n, np.int64)
    for j in join:
        lo, hi = int(cols["jlo"][j]), int(cols["jhi"][j])
        if hi <= lo:
            continue
        qq = q[lo:hi]
        c = np.bincount(qq, minlength=nq)
        present = np.nonzero(c)[0]
        first = np.asarray([seq[lo + int(np.argmax(qq == x))] for x in present], np.int64)
        rq.append(np.stack([present, first, c[present]], 1))
        nr[j] = len(present)
    v["n_ranges"] = nr
    ranges = np.concatenate(rq) if rq else np.zeros((0, 3), np.int64)
    where = ctx.where
    order = np.argsort(q, kind="stable")
    words = INSTR.pack({k: (a[order] if np.ndim(a) else a) for k, a in v.items()}, n, where)
    rwords = RANGE.pack({"queue": ranges[:, 0], "seq": ranges[:, 1], "count": ranges[:, 2]}, len(ranges), where)
    hdr = BLOCK_HEADER.pack({"slot": slot, "n_instr": n, "n_ranges": len(ranges)}, 1, where)
    disp = q.astype(np.uint8).tobytes()
    return b"".join([hdr.tobytes(), _pad8(disp), _pad8(counts.astype("<u4").tobytes()), words.tobytes(),
                     rwords.tobytes()])


# INSTR fields that are a column's value as it is
_PLAIN = ("sub", "barrier", "wr", "dcls", "buf", "mcls", "rbuf", "rbuf2", "wbuf", "opi", "cyc", "nbytes", "addr",
          "alloc", "macs", "rbytes", "rbytes2", "wbytes", "ind", "nidx")


def _pad8(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 8)


def _ring_offsets(cols: dict[str, np.ndarray], caps: np.ndarray) -> np.ndarray:
    """SRAM address of each allocation relative to its ring's head at the block's start: the bytes the
    block allocated in that buffer before it, modulo the capacity (bytes return in allocation order)."""
    out = np.zeros(len(cols["main"]), np.int64)
    alloc = ((cols["main"] == C_DMAW) | (cols["main"] == C_DMAKV)) & (cols["alloc"] > 0) & (cols["buf"] >= 0)
    for b in range(len(BUFFERS)):
        ai = np.nonzero(alloc & (cols["buf"] == b))[0]
        if len(ai) and caps[b] > 0:
            out[ai] = (np.cumsum(cols["alloc"][ai]) - cols["alloc"][ai]) % caps[b]
    return out


def ring_advance(cols: dict[str, np.ndarray], caps: np.ndarray) -> np.ndarray:
    """Bytes each ring's head advances over a block (modulo the capacity)."""
    alloc = ((cols["main"] == C_DMAW) | (cols["main"] == C_DMAKV)) & (cols["alloc"] > 0) & (cols["buf"] >= 0)
    tot = np.bincount(cols["buf"][alloc], weights=cols["alloc"][alloc], minlength=len(BUFFERS)).astype(np.int64)
    return np.where(caps > 0, tot % np.maximum(caps, 1), 0)


@dataclass
class Block:
    """A decoded block: chunk columns (relative addresses), the queue and sequence number of each
    instruction, the per-queue counts, the ring offsets and the join ranges (for the disassembler)."""

    cols: dict[str, np.ndarray]
    queue: np.ndarray
    seq: np.ndarray
    counts: np.ndarray
    saddr: np.ndarray
    ranges: np.ndarray
    range_start: np.ndarray


def decode_block(data: bytes, ctx: Context) -> tuple[int, Block]:
    """(slot, Block) from a BLOCK payload; the block is checked like a compiled one."""
    w = ctx.where
    h = BLOCK_HEADER.one(data, w)
    n, nr, nq = h["n_instr"], h["n_ranges"], len(ctx.queues.names)
    if h["slot"] >= BLOCK_SLOTS:
        raise ProgramError(f"{w}: block slot {h['slot']} out of range (0..{BLOCK_SLOTS - 1})")
    o = BLOCK_HEADER.nbytes
    lq = -(-n // 8) * 8
    lc = -(-4 * nq // 8) * 8
    need = o + lq + lc + n * INSTR.nbytes + nr * RANGE.nbytes
    if len(data) != need:
        raise ProgramError(f"{w}: truncated or malformed BLOCK ({len(data)} bytes, {need} expected)")
    q = np.frombuffer(data, np.uint8, n, o).astype(np.int64)
    counts = np.frombuffer(data, "<u4", nq, o + lq).astype(np.int64)
    if np.any(q >= nq) or not np.array_equal(np.bincount(q, minlength=nq)[:nq], counts):
        raise ProgramError(f"{w}: BLOCK dispatch stream names a queue outside 0..{nq - 1} or disagrees with the "
                           f"queue counts")
    o += lq + lc
    v = INSTR.unpack(np.frombuffer(data, "<u8", n * INSTR.words, o))
    o += n * INSTR.nbytes
    r = RANGE.unpack(np.frombuffer(data, "<u8", nr * RANGE.words, o))
    order = np.argsort(q, kind="stable")
    inv = np.empty(n, np.int64)
    inv[order] = np.arange(n)
    v = {k: a[inv] for k, a in v.items()}  # program order
    seq, _ = _seqs(q, nq)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    def pos(qq: np.ndarray, ss: np.ndarray, what: str, use: np.ndarray | None = None) -> np.ndarray:
        bad = (qq >= nq) | (ss >= counts[np.minimum(qq, nq - 1)])
        if use is not None:
            bad &= use
            qq, ss = np.where(use, qq, 0), np.where(use, ss, 0)
            ok = counts[0] > 0
            if not ok:  # no instruction in queue 0: point unused entries at one that exists
                qq = np.where(use, qq, int(np.argmax(counts > 0)))
        if bad.any():
            i = int(np.argmax(bad))
            raise ProgramError(f"{w}: {what} of instruction {i} names token ({ctx.queues.names[min(int(qq[i]), nq - 1)]}, "
                               f"{int(ss[i])}), which the chunk never signals (deadlock)")
        return order[np.minimum(starts[qq] + ss, max(n - 1, 0))] if n else np.zeros(len(qq), np.int64)

    cols = {c: np.full(n, DEFAULT.get(c, 0), np.int64) for c in COLS}
    for c in _PLAIN:
        cols[c] = v[c]
    cols["main"] = v["op"]
    cols["unit"] = np.where(q == nq - 1, -1, q)
    for k in range(3):
        kind = v[f"w{k}_kind"]
        if np.any(kind > W_INPUT):
            raise ProgramError(f"{w}: wait {k} of instruction {int(np.argmax(kind > W_INPUT))} has unknown kind 3")
        tok = kind == W_TOKEN
        p = pos(v[f"w{k}_queue"], v[f"w{k}_seq"], f"wait {k}", tok)
        cols[f"dep{k}"] = np.where(tok, p, np.where(kind == W_INPUT, EXT, -1))
    has = v["free"] == 1
    p = pos(v["free_queue"], v["free_seq"], "the release", has)
    cols["free_of"] = np.where(has, p, -1)
    ind = (v["ind"] == 1) & (v["op"] == C_DMAKV)  # an indirect word of another class: check_indirect refuses it
    if ind.any():
        if C_LOP not in ctx.queues.classes:
            raise ProgramError(f"{w}: instruction {int(np.argmax(ind))} is an indirect K/V fetch, but the design has "
                               "no LOP unit")
        lq = np.full(n, ctx.queues.classes.index(C_LOP), np.int64)
        cols["isel"] = np.where(ind, pos(lq, v["ind_seq"], "the indirect fetch's selection", ind), -1)
    nrg = v["n_ranges"]
    rs = np.concatenate([[0], np.cumsum(nrg)[:-1]])
    if nrg.sum() != nr or np.any((nrg > 0) & (cols["main"] != C_JOIN)):
        raise ProgramError(f"{w}: join range counts disagree with the {nr} RANGE words")
    rr = np.stack([r["queue"], r["seq"], r["count"]], 1) if nr else np.zeros((0, 3), np.int64)
    for j in np.nonzero(nrg)[0]:
        sel = rr[rs[j]:rs[j] + nrg[j]]
        lo = pos(sel[:, 0], sel[:, 1], "a join range")
        hi = pos(sel[:, 0], sel[:, 1] + np.maximum(sel[:, 2], 1) - 1, "a join range")
        cols["jlo"][j], cols["jhi"][j] = int(lo.min()), int(hi.max()) + 1
    check_block(cols, ctx)
    want = _ring_offsets(cols, ctx.caps)
    if not np.array_equal(want, v["saddr"]):
        i = int(np.argmax(want != v["saddr"]))
        raise ProgramError(f"{w}: DMA {i}: SRAM address {int(v['saddr'][i])} out of range: the '{BUFFERS[cols['buf'][i]]}' "
                           f"ring's next free byte is {int(want[i])}")
    return h["slot"], Block(cols, q, seq, counts, v["saddr"], rr, rs)




def isa_version() -> int:
    """sim.isa.ISA_VERSION (read at call time)."""
    import lowbit.sim.isa as isa

    return isa.ISA_VERSION


def layout_tables() -> str:
    """Markdown tables of every layout (docs/isa.md embeds them; tests/sim/test_program.py checks they agree)."""
    out = []
    for lay in LAYOUTS:
        out.append(f"### {lay.name} ({lay.nbytes} bytes)\n\n{lay.meaning[0].upper() + lay.meaning[1:]}.\n\n"
                   "| field | bits | word.bit | stored as | meaning |\n|---|---|---|---|---|")
        for f in lay.fields:
            w, s = lay.place[f.name]
            st = "value" if f.lo == 0 else f"value - ({f.lo}), 0 = none"
            out.append(f"| {f.name} | {f.bits} | {w}.{s} | {st} | {f.meaning} |")
        out.append("")
    return "\n".join(out)
