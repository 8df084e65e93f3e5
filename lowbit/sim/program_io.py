"""Streaming a program (lowbit.sim.program's format) to and from disk: ProgramWriter appends steps and chunks
as the compiler lowers them, ProgramReader is a chunk source for the engine (lowbit.sim.engine.ChunkSource)
that reads them back with bounded memory (at most BLOCK_SLOTS decoded blocks and one chunk)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from lowbit.sim.config import HwConfig
from lowbit.sim.isa import BUFFERS, C_DMAKV, C_DMAW, C_JOIN, COLS
from lowbit.sim.lower import Chunk, StepStats
from lowbit.sim.program import (
    BLOCK_SLOTS,
    BUFFER,
    CHUNK,
    END,
    FILE_HEADER,
    MAGIC,
    QUEUE,
    RECORD,
    RECORDS,
    STEP,
    T_BLOCK,
    T_CHUNK,
    T_END,
    T_STEP,
    Block,
    Context,
    ProgramError,
    Queues,
    _pad8,
    _seqs,
    check_block,
    config_hash,
    decode_block,
    encode_block,
    isa_version,
    ring_advance,
)
from lowbit.sim.program_check import REGIONS

# ------------------------------------------------------------------------------------------------ writer


@dataclass
class RunMeta:
    """The run a program encodes (the metadata JSON)."""

    model: dict[str, Any]
    prefill: int
    decode: int
    schedule: str
    lop_on: bool
    lop_k: int
    data_driven: bool
    no_lop: bool
    dual_core: bool
    hw: str
    # a batched run's sequences ({"context", "prefill", "decode"} each, lowbit.sim.trace.SeqSpec); None (no key
    # in the file): one sequence
    sequences: list[dict[str, int]] | None = None


class ProgramWriter:
    """Streams a program to an open binary file: header, then steps and chunks as they are lowered; blocks
    are reused when a chunk equals one of the last BLOCK_SLOTS blocks up to its DRAM bases."""

    def __init__(self, f: BinaryIO, cfg: HwConfig, units: list[tuple[str, int]], caps: np.ndarray,
                 meta: RunMeta) -> None:
        self.f, self.queues, self.caps = f, Queues.of(units), np.asarray(caps, np.int64)
        self.slots: list[tuple[dict[str, np.ndarray], np.ndarray] | None] = [None] * BLOCK_SLOTS
        self.next_slot = 0
        self.ring = np.zeros(len(BUFFERS), np.int64)
        self.qcount = np.zeros(len(self.queues.names), np.int64)
        self.input: tuple[int, int] | None = None
        self.n_steps = self.n_chunks = self.n_instr = self.n_blocks = 0
        d = dataclasses.asdict(meta)
        if d["sequences"] is None:  # one sequence: no key (its metadata is that of version 2)
            del d["sequences"]
        m = json.dumps({**d, "queues": list(self.queues.names)}, sort_keys=True).encode()
        h = config_hash(cfg)
        hw = {f"cfg_hash{k}": int.from_bytes(h[8 * k:8 * k + 8], "little") for k in range(4)}
        f.write(FILE_HEADER.pack({"magic": int.from_bytes(MAGIC, "little"), "isa_version": isa_version(),
                                  "n_queues": len(self.queues.names), "n_buffers": len(BUFFERS),
                                  "block_slots": BLOCK_SLOTS, "meta_bytes": len(m), **hw}, 1, "header").tobytes())
        f.write(QUEUE.pack({"cls": np.asarray(self.queues.classes), "replica": _replicas(self.queues.classes)},
                           len(self.queues.names), "queues").tobytes())
        f.write(BUFFER.pack({"capacity": self.caps}, len(BUFFERS), "buffers").tobytes())
        f.write(_pad8(m))

    def _record(self, tag: int, payload: bytes) -> None:
        self.f.write(RECORD.pack({"tag": tag, "payload_bytes": len(payload)}, 1, "record").tobytes())
        self.f.write(payload)

    def step(self, phase: str, trace_step: int) -> None:
        self.n_steps += 1
        self.input = None
        self._record(T_STEP, STEP.pack({"phase": int(phase == "decode"), "trace_step": trace_step}, 1,
                                       f"step {trace_step}").tobytes())

    def chunk(self, ch: Chunk, layer: int, roles: dict[str, str]) -> None:
        """Append one (assigned) chunk: a BLOCK record unless a held block matches, then its CHUNK record."""
        where = f"chunk {self.n_chunks} (layer {layer})"
        cols = ch.cols
        dma = (cols["main"] == C_DMAW) | (cols["main"] == C_DMAKV)
        slot, bases = self._match(cols, dma)
        if slot < 0:
            bases = np.zeros(4, np.int64)
            for d in range(4):  # a block's addresses are relative to the lowest of its class in the region
                sel = dma & (cols["dcls"] == d)
                bases[d] = int(cols["addr"][sel].min()) - REGIONS[d][0] if sel.any() else 0
                bases[d] = bases[d] // 4096 * 4096
            rel = dict(cols)
            rel["addr"] = np.where(dma, cols["addr"] - bases[np.clip(cols["dcls"], 0, 3)], cols["addr"])
            slot = self.next_slot
            self.next_slot = (slot + 1) % BLOCK_SLOTS
            ctx = Context(self.queues, self.caps, where)
            self._record(T_BLOCK, encode_block(rel, slot, ctx))
            self.slots[slot] = (rel, ring_advance(rel, self.caps))
            self.n_blocks += 1
        rel, adv = self.slots[slot]
        q = self.queues.queue_of(rel)
        seq, counts = _seqs(q, len(self.queues.names))
        out_kind = int(ch.out >= 0)
        o = max(ch.out, 0)
        names = "\n".join(ch.names) + "\0" + "\n".join(ch.kinds) + "\0" + "\n".join(roles.get(x, "") for x in ch.names)
        nb = names.encode()
        vals: dict[str, Any] = {
            "slot": slot, "layer": layer, "n_ops": len(ch.names), "names_bytes": len(nb),
            "out_kind": out_kind, "out_queue": int(q[o]) if out_kind else 0, "out_seq": int(seq[o]) if out_kind else 0,
            "in_kind": int(self.input is not None), "in_queue": self.input[0] if self.input else 0,
            "in_seq": self.input[1] if self.input else 0,
            **{f"base_{c}": int(b) for c, b in zip(("weights", "kv", "activations", "lop"), bases, strict=True)},
            **{f"ring_{b}": int(self.ring[i]) for i, b in enumerate(BUFFERS)},
            **{f.name: getattr(ch.stats, f.name) for f in dataclasses.fields(StepStats)}}
        self._record(T_CHUNK, CHUNK.pack(vals, 1, where).tobytes() + _pad8(nb))
        if out_kind:
            self.input = (int(q[o]), int(self.qcount[q[o]] + seq[o]))
        self.qcount += counts
        self.ring = np.where(self.caps > 0, (self.ring + adv) % np.maximum(self.caps, 1), 0)
        self.n_chunks += 1
        self.n_instr += len(cols["main"])

    def _match(self, cols: dict[str, np.ndarray], dma: np.ndarray) -> tuple[int, np.ndarray]:
        """A held block equal to `cols` except for constant DRAM offsets per traffic class: (slot, bases)."""
        for k in range(BLOCK_SLOTS):
            s = (self.next_slot - 1 - k) % BLOCK_SLOTS
            held = self.slots[s]
            if held is None or len(held[0]["main"]) != len(cols["main"]):
                continue
            rel = held[0]
            if not all(np.array_equal(rel[c], cols[c]) for c in COLS if c != "addr"):
                continue
            diff = cols["addr"] - rel["addr"]
            bases = np.zeros(4, np.int64)
            ok = np.array_equal(diff[~dma], np.zeros(int((~dma).sum()), np.int64))
            for d in range(4):
                sel = dma & (cols["dcls"] == d)
                if sel.any():
                    ok = ok and bool(np.all(diff[sel] == diff[sel][0])) and diff[sel][0] >= 0
                    bases[d] = diff[sel][0] if sel.any() else 0
            if ok:
                return s, bases
        return -1, np.zeros(4, np.int64)

    def end(self) -> None:
        self._record(T_END, END.pack({"n_steps": self.n_steps, "n_chunks": self.n_chunks, "n_instr": self.n_instr},
                                     1, "end").tobytes())


def _replicas(classes: tuple[int, ...]) -> np.ndarray:
    seen: dict[int, int] = {}
    out = []
    for c in classes:
        out.append(seen.get(c, 0))
        seen[c] = seen.get(c, 0) + 1
    return np.asarray(out, np.int64)


# ------------------------------------------------------------------------------------------------ reader


@dataclass
class Header:
    isa_version: int
    cfg_hash: bytes
    queues: Queues
    caps: np.ndarray
    meta: RunMeta


def read_header(f: BinaryIO, path: str) -> Header:
    """Read and check the file header (magic, ISA version, tables, metadata)."""
    raw = f.read(FILE_HEADER.nbytes)
    if len(raw) < 8 or raw[:8] != MAGIC:
        raise ProgramError(f"{path}: not a lowbit program (magic {raw[:8]!r}, expected {MAGIC!r}); "
                           f"write one with `lowbit compile`")
    h = FILE_HEADER.one(raw, path)
    if h["isa_version"] != isa_version():
        raise ProgramError(f"{path}: ISA version {h['isa_version']}, this lowbit runs version {isa_version()}; "
                           f"recompile it with `lowbit compile`")
    nq, nb = h["n_queues"], h["n_buffers"]
    if nb != len(BUFFERS) or not 2 <= nq <= 16 or h["block_slots"] != BLOCK_SLOTS:
        raise ProgramError(f"{path}: header names {nq} queues, {nb} buffers, {h['block_slots']} block slots; this "
                           f"lowbit has {len(BUFFERS)} buffers and {BLOCK_SLOTS} slots (recompile)")
    tq = _read_exact(f, nq * QUEUE.nbytes, path, "queue table")
    tb = _read_exact(f, nb * BUFFER.nbytes, path, "buffer table")
    m = _read_exact(f, -(-h["meta_bytes"] // 8) * 8, path, "metadata")[:h["meta_bytes"]]
    try:
        meta = json.loads(m.decode())
        names = tuple(meta.pop("queues"))
        rm = RunMeta(**meta)
    except (ValueError, TypeError, KeyError) as e:
        raise ProgramError(f"{path}: unreadable metadata ({e})") from None
    cls = tuple(int(x) for x in QUEUE.unpack(np.frombuffer(tq, "<u8"))["cls"])
    if len(names) != nq or cls[-1] != C_JOIN:
        raise ProgramError(f"{path}: queue table disagrees with the metadata")
    caps = BUFFER.unpack(np.frombuffer(tb, "<u8"))["capacity"]
    hb = b"".join(int(h[f"cfg_hash{k}"]).to_bytes(8, "little") for k in range(4))
    return Header(h["isa_version"], hb, Queues(names, cls), caps, rm)


def _read_exact(f: BinaryIO, n: int, path: str, what: str) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise ProgramError(f"{path}: truncated file ({what}: {len(b)} of {n} bytes); recompile it")
    return b


def records(f: BinaryIO, path: str) -> Iterator[tuple[int, bytes]]:
    """(tag, payload) of every record up to END (included); ProgramError if the file ends before END."""
    while True:
        raw = f.read(RECORD.nbytes)
        if len(raw) < RECORD.nbytes:
            raise ProgramError(f"{path}: truncated file (no END record); recompile it")
        r = RECORD.one(raw, path)
        if r["tag"] not in RECORDS:
            raise ProgramError(f"{path}: unknown record tag {r['tag']} (known {sorted(RECORDS)})")
        payload = _read_exact(f, r["payload_bytes"], path, RECORDS[r["tag"]])
        yield r["tag"], payload
        if r["tag"] == T_END:
            return


@dataclass
class ChunkRec:
    """A decoded CHUNK record (`fields`) with its block, the chunk the engine runs and the op roles."""

    fields: dict[str, int]
    block: Block
    chunk: Chunk
    layer: int
    roles: dict[str, str]
    qbase: np.ndarray  # each queue's instruction count before the chunk (absolute sequence numbers)


class _Stream:
    """The records of an open program with one record of look-ahead, and the reader's running state."""

    def __init__(self, f: BinaryIO, path: str, hd: Header) -> None:
        self.it, self.path, self.hd = records(f, path), path, hd
        self.peeked: tuple[int, bytes] | None = None
        self.slots: list[Block | None] = [None] * BLOCK_SLOTS
        self.ring = np.zeros(len(BUFFERS), np.int64)
        self.qcount = np.zeros(len(hd.queues.names), np.int64)
        self.totals = [0, 0, 0]

    def peek(self) -> tuple[int, bytes]:
        if self.peeked is None:
            self.peeked = next(self.it)
        return self.peeked

    def take(self) -> tuple[int, bytes]:
        r = self.peek()
        self.peeked = None
        return r

    def steps(self) -> Iterator[tuple[dict[str, int], Iterator[ChunkRec]]]:
        """(STEP fields, its chunks) per step; checks the END totals."""
        while True:
            tag, payload = self.take()
            if tag == T_END:
                e = END.one(payload, self.path)
                if (e["n_steps"], e["n_chunks"], e["n_instr"]) != tuple(self.totals):
                    raise ProgramError(f"{self.path}: END totals ({e['n_steps']} steps, {e['n_chunks']} chunks, "
                                       f"{e['n_instr']} instructions) disagree with the records {self.totals}")
                return
            if tag != T_STEP:
                raise ProgramError(f"{self.path}: {RECORDS[tag]} record outside a step")
            self.totals[0] += 1
            it = self._chunks()
            yield STEP.one(payload, self.path), it
            for _ in it:  # a consumer that stopped early: skip the rest of the step
                pass

    def _chunks(self) -> Iterator[ChunkRec]:
        while self.peek()[0] in (T_BLOCK, T_CHUNK):
            yield self._chunk()

    def _chunk(self) -> ChunkRec:
        hd = self.hd
        where = f"{self.path}: chunk {self.totals[1]}"
        ctx = Context(hd.queues, hd.caps, where)
        tag, payload = self.take()
        if tag == T_BLOCK:
            slot, blk = decode_block(payload, ctx)
            self.slots[slot] = blk
            tag, payload = self.take()
        if tag != T_CHUNK:
            raise ProgramError(f"{where}: a BLOCK record not followed by its CHUNK record")
        c = CHUNK.one(payload, where)
        blk = self.slots[c["slot"]] if c["slot"] < BLOCK_SLOTS else None
        if blk is None:
            raise ProgramError(f"{where}: refers to block slot {c['slot']}, which holds no block")
        heads = np.asarray([c[f"ring_{b}"] for b in BUFFERS], np.int64)
        if not np.array_equal(heads, self.ring):
            b = int(np.argmax(heads != self.ring))
            raise ProgramError(f"{where}: SRAM address out of range: ring '{BUFFERS[b]}' head {int(heads[b])}, "
                               f"expected {int(self.ring[b])}")
        text = payload[CHUNK.nbytes:CHUNK.nbytes + c["names_bytes"]].decode("utf-8", "replace").split("\0")
        if len(text) != 3:
            raise ProgramError(f"{where}: malformed op names table")
        names, kinds, roles = ([x for x in t.split("\n")] if c["n_ops"] else [] for t in text)
        if not (len(names) == len(kinds) == len(roles) == c["n_ops"]):
            raise ProgramError(f"{where}: op names table has {len(names)} entries, n_ops {c['n_ops']}")
        cols = dict(blk.cols)
        dma = (cols["main"] == C_DMAW) | (cols["main"] == C_DMAKV)
        bases = np.asarray([c["base_weights"], c["base_kv"], c["base_activations"], c["base_lop"]], np.int64)
        cols["addr"] = np.where(dma, blk.cols["addr"] + bases[np.clip(cols["dcls"], 0, 3)], blk.cols["addr"])
        if len(cols["opi"]) and int(cols["opi"].max()) >= max(1, len(names)):
            raise ProgramError(f"{where}: an instruction names op {int(cols['opi'].max())} of {len(names)}")
        check_block(cols, ctx)  # DRAM regions with this chunk's bases
        out = -1
        if c["out_kind"]:
            qq, ss = c["out_queue"], c["out_seq"]
            if qq >= len(hd.queues.names) or ss >= blk.counts[qq]:
                raise ProgramError(f"{where}: output token ({qq}, {ss}) is never signalled")
            out = int(np.nonzero((blk.queue == qq) & (blk.seq == ss))[0][0])
        st = StepStats(**{f.name: c[f.name] for f in dataclasses.fields(StepStats)})
        rec = ChunkRec(c, blk, Chunk(cols, names, kinds, st, out), c["layer"], dict(zip(names, roles, strict=True)),
                       self.qcount.copy())
        self.ring = np.where(hd.caps > 0, (self.ring + ring_advance(blk.cols, hd.caps)) % np.maximum(hd.caps, 1), 0)
        self.qcount += blk.counts
        self.totals[1] += 1
        self.totals[2] += len(cols["main"])
        return rec


class ProgramReader:
    """A program file as a chunk source for lowbit.sim.engine: steps and chunks streamed from disk, at most
    BLOCK_SLOTS decoded blocks held."""

    def __init__(self, path: str | Path, cfg: HwConfig | None = None,
                 units: list[tuple[str, int]] | None = None) -> None:
        self.path = str(path)
        try:
            with open(self.path, "rb") as f:
                self.header = read_header(f, self.path)
                self.offset = f.tell()
        except OSError as e:
            raise ProgramError(f"{self.path}: cannot read the program ({e.strerror or e})") from None
        hd = self.header
        if cfg is not None and config_hash(cfg) != hd.cfg_hash:
            raise ProgramError(f"{self.path}: compiled for another hardware config ('{hd.meta.hw}', config hash "
                               f"{hd.cfg_hash.hex()[:12]}), not --hw {cfg.name} ({config_hash(cfg).hex()[:12]}); "
                               f"pass the --hw/--set it was compiled with, or recompile")
        if units is not None and Queues.of(units) != hd.queues:
            raise ProgramError(f"{self.path}: queues {list(hd.queues.names)} differ from the design's units")
        self.data_driven = hd.meta.data_driven
        self.n_chunks = self._totals()["n_chunks"]

    def _totals(self) -> dict[str, int]:
        """The END record's totals, read from the file's tail (a file without it is truncated)."""
        n = RECORD.nbytes + END.nbytes
        with open(self.path, "rb") as f:
            f.seek(0, 2)
            if f.tell() - self.offset < n:
                raise ProgramError(f"{self.path}: truncated file (no END record); recompile it")
            f.seek(-n, 2)
            tail = f.read(n)
        r = RECORD.one(tail, self.path)
        if r["tag"] != T_END or r["payload_bytes"] != END.nbytes:
            raise ProgramError(f"{self.path}: truncated file (no END record); recompile it")
        return END.one(tail[RECORD.nbytes:], self.path)

    def _open(self) -> Iterator[_Stream]:
        try:
            f = open(self.path, "rb", buffering=1 << 20)
        except OSError as e:
            raise ProgramError(f"{self.path}: cannot read the program ({e.strerror or e})") from None
        with f:
            f.seek(self.offset)
            yield _Stream(f, self.path, self.header)

    def __iter__(self) -> Iterator[Any]:
        from lowbit.sim.engine import StepChunks

        for st in self._open():
            for s, chunks in st.steps():
                roles: dict[str, str] = {}  # filled as the step's chunks are read (the engine looks up per chunk)

                def gen(chunks=chunks, roles=roles) -> Iterator[tuple[Chunk, int]]:
                    for cr in chunks:
                        roles.update(cr.roles)
                        yield cr.chunk, cr.layer

                yield StepChunks("decode" if s["phase"] else "prefill", s["trace_step"], roles, gen())

    def chunk_records(self) -> Iterator[tuple[dict[str, int], ChunkRec]]:
        """(STEP fields, ChunkRec) of every chunk in order (the disassembler's view)."""
        for st in self._open():
            for s, chunks in st.steps():
                for cr in chunks:
                    yield s, cr


