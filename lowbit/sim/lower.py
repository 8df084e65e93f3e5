"""Lowering: trace ops -> tile instructions (sim.isa) for the scheduler (sim.sched), one chunk per run of ops
of one layer in a forward step.

Tiling of projections, attention and LO codes: sim.tiling (the documented rules). On top of it:
- Attention (KV-cache writes, LOP, QK^T, softmax, score.V; dense or online softmax): sim.attention.
- SFU ops: sfu_cycles(op, rows, dim). Under "dependency-aware" scheduling the first (reduction) pass of
  rmsnorm / quantize (absmax) / softmax (max) is fused with the producer's output stream (docs/reference/vitallm.md §3.4,
  §5.5: reductions accumulated on the fly), so only the remaining passes sit on the critical path.
- lm_head on "host": not lowered (reported separately: MACs of the rows that get logits, the same rows as on
  the chip, and its weight bytes once per step that produces logits). On the chip (cfg.lm_head = its weight
  format): only last positions get logits (lowbit.sim.trace.logits_rows: one per sequence whose prompt ends or that decodes
  a token in the step, none in a step that only continues prompts; DESIGN CHOICE, as llama.cpp and vLLM do in
  prefill): the final-norm output is quantized to INT8 on the SFU (a row of d_model per
  position), the d_model x vocab projection is tiled through the projection cores like any linear
  (sim.tiling.plan_linear: its weights are read once per step), and the logits leave the chip for the host's
  sampler as bf16 (vocab x 2 bytes per position, class activations; DESIGN ASSUMPTION). Its weights sit after
  the decoder layers' weights or, with tied embeddings, in the embedding table's region: one table in the
  lm_head's format serves both, so embedding rows are then read in that format (ceil(d_model x bits / 8)
  bytes per token) instead of bf16.

Policies: "inorder" -- every instruction of op j (weight DMA included) waits for op j-1's join.
"dependency-aware" -- true dataflow: weight DMAs only wait for buffer room (prefetch across op and step
boundaries); q/k/v (and gate/up) read the same input in parallel; the attention block is pipelined per
group of hg KV heads (hg*head_dim rows a multiple of L, e.g. 3 heads of 100 rows for L = 12): Q/K/V
projection tiles of group g+1 are listed before attention of group g, so the projection cores work on g+1
while BoothFlex (and LOP, SFU) run g (docs/reference/vitallm.md §5.5).
Decoder layers with identical signatures share one cached instruction block per step (placed per layer with
its DRAM address offsets), which is what makes 3B-scale runs fast; under LOP each layer's selected positions
then expand the block's K/V fetches into their gathers (sim.kvcache.expand_gathers), so only the current
step's selections are held. A block over MAX_BLOCK_INSTRUCTIONS (a long prompt's layer) is not kept: each
layer is lowered again, and with a sink (the engine's sim.window.WindowRun) handed on in windows of WINDOW
instructions as it is emitted; a projection's tile block is cached per token chunk (and per run of chunks),
never per prompt, so nothing the lowering holds grows with the prompt.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lowbit.sim.attention import AttentionLowering
from lowbit.sim.config import HwConfig
from lowbit.sim.errors import WorkloadError
from lowbit.sim.isa import (
    ACT_BASE,
    ACT_OUT_BASE,
    B_ACT,
    B_PSUM,
    B_WEIGHT,
    C_DMAKV,
    C_DMAW,
    C_JOIN,
    C_SFU,
    COLS,
    D_ACT,
    D_W,
    DEFAULT,
    EMBED_BASE,
    EXT,
    IDX_COLS,
    M_SFU,
    SUB,
    WORK_OF_FORMAT,
    Emitter,
    WindowSink,
)
from lowbit.sim.kvcache import (
    layer_offsets,
)
from lowbit.sim.lop_fetch import mark_indirect
from lowbit.sim.modelspec import ModelSpec
from lowbit.sim.numerics.lop import LOP_SURROGATE_BITS_PER_ELEM as LOP_BITS
from lowbit.sim.sram import Buffers
from lowbit.sim.tiling import (
    ACC_BYTES,
    lanes_of,
    plan_linear,
    row_bytes,
    tile_cycles,
    tile_grid,
    weight_bits,
)
from lowbit.sim.trace import Op, logits_rows
from lowbit.sim.units.sfu import SFU_PASSES, sfu_cycles

POLICIES = ("inorder", "dependency-aware")
MAX_CACHED_INSTRUCTIONS = 1 << 18  # layer-block cache bound across steps (memory; ~64 MiB of instruction columns)
WINDOW = 1 << 15                   # instructions per window a decoder layer streams in (lowbit.sim.window)
MAX_BLOCK_INSTRUCTIONS = 3 << 17   # a streamed layer block is kept for the next layers only up to this size
#                                    (~88 MiB of columns: a 64-token chunk of a 3B prompt at 2k context fits)
# Op kinds of a decoder layer's attention section (lowered as one pipelined block under dependency-aware).
ATTN_SECTION = ("linear", "linear", "linear", "rope", "kv_append", "attn_qk", "softmax", "attn_av")


def _attn_section(ops: list[Op], i: int) -> int:
    """Length of the attention section starting at ops[i] (0: none): q, k, v, rope, then one (kv_append,
    attn_qk, softmax, attn_av) per sequence of the step (one in a batch-1 step)."""
    if tuple(o.op for o in ops[i:i + 8]) != ATTN_SECTION or ops[i].role != "q":
        return 0
    n = 8
    while tuple(o.op for o in ops[i + n:i + n + 4]) == ATTN_SECTION[4:]:
        n += 4
    return n


@dataclass
class StepStats:
    """Static per-chunk counters the engine aggregates (LOP and lm_head accounting: MACs and weight bytes)."""

    kv_dense_bytes: int = 0   # K+V bytes dense attention would read in LOP-eligible steps
    kv_read_bytes: int = 0    # K+V bytes actually read in those steps
    lop_bytes: int = 0        # LO-code bytes read in those steps
    lm_head_macs: int = 0
    lm_head_bytes: int = 0


@dataclass
class Chunk:
    """One lowered chunk: instruction columns, its ops (column `opi` indexes `names`/`kinds`), its counters,
    and `out`, the index of the instruction whose end is the next chunk's input time (-1: the chunk only
    passes its input on)."""

    cols: dict[str, np.ndarray]
    names: list[str]
    kinds: list[str]
    stats: StepStats
    out: int
    streamed: bool = False  # its instructions went to the lowering's sink window by window (cols empty)


@dataclass
class Lowering(AttentionLowering):
    """Per-run lowering: config, model, policy, LOP settings and the instruction block caches."""

    cfg: HwConfig
    model: ModelSpec
    policy: str
    lop_on: bool
    lop_k: int
    # (layer, decode step) -> per KV head the selected positions (ascending arrays), or only their counts
    lop_counts: dict[tuple[int, int], Any] | None = None
    dual_core: bool = True  # False: BoothFlex runs attention only (ablation of dual-core load balancing)
    bufs: Buffers = field(init=False)
    dep_aware: bool = field(init=False)
    hd: int = field(init=False)          # head_dim
    G: int = field(init=False)           # KV heads
    grp: int = field(init=False)         # query heads per KV head
    code_bytes: int = field(init=False)  # LO-code bytes per key of one head
    _tiles: dict[tuple, dict[str, np.ndarray]] = field(default_factory=dict, init=False, repr=False)
    _online_blocks: dict[tuple, dict[str, np.ndarray]] = field(default_factory=dict, init=False, repr=False)
    _layers: dict[tuple, tuple] = field(default_factory=dict, init=False, repr=False)  # layer blocks, recent steps
    _gathered: dict[tuple, dict] = field(default_factory=dict, init=False, repr=False)  # fixed-ratio expansions
    _rec: list | None = field(default=None, init=False, repr=False)  # K/V fetch rows of the block being lowered
    _big: set = field(default_factory=set, init=False, repr=False)  # layer signatures too big to keep
    _wbase: dict[str, int] = field(default_factory=dict, init=False, repr=False)  # weight address per op name
    _wtop: int = field(default=0, init=False, repr=False)
    _layer_wbytes: int = field(default=0, init=False, repr=False)  # weight bytes of one decoder layer

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise WorkloadError(f"unknown schedule '{self.policy}'; allowed: {', '.join(POLICIES)}")
        self.bufs = Buffers.from_config(self.cfg)
        self.dep_aware = self.policy == "dependency-aware"
        m = self.model
        self.hd = m.head_dim
        self.G = m.n_kv_heads
        self.grp = m.n_heads // m.n_kv_heads
        self.code_bytes = math.ceil(self.hd * LOP_BITS / 8)

    # ------------------------------------------------------------------------------------ one step

    def lower_step(self, ops: list[Op], sink: WindowSink | None = None) -> Iterator[Chunk]:
        """Lower the ops of one forward step, one chunk per run of ops with the same layer. In a chunk,
        dependency EXT means "the previous chunk's output".

        Decoder layers with the same op shapes (and LOP selections) lower to the same instruction block up
        to DRAM addresses, so one block per distinct layer signature is built and placed per layer (speed);
        blocks over MAX_BLOCK_INSTRUCTIONS are not kept but lowered again per layer.
        With a `sink` (sim.isa.WindowSink), a decoder layer's instructions are handed to it in windows while
        they are lowered (its chunk then has no rows, `streamed`), so memory does not grow with the chunk."""
        runs: list[list[Op]] = []
        for o in ops:
            if runs and runs[-1][0].layer == o.layer:
                runs[-1].append(o)
            else:
                runs.append([o])
        mp = self.model.max_positions
        for o in ops:
            if "context" in o.args and o["context"] > mp:
                raise WorkloadError(f"op {o.name}: context {o['context']} exceeds {self.model.name}'s max_positions "
                                    f"{mp} (the KV cache holds {mp} positions per layer and head); use a shorter "
                                    "context or a model with a longer position limit")
        # layer blocks of earlier steps (other contexts) are not reused: bound memory, by count and by size (a
        # long prompt's chunk lowers to ~10^5 instructions per layer block)
        if len(self._layers) > 4 or sum(len(b[0]["main"]) for b in self._layers.values()) > MAX_CACHED_INSTRUCTIONS:
            self._layers.clear()
            self._gathered.clear()
        kv_off, lo_off = layer_offsets(self.model)
        for run in runs:
            layer = run[0].layer
            if layer < 0:
                e = Emitter()
                names: list[str] = []
                kinds: list[str] = []
                st = StepStats()
                out = self._lower_ops(e, run, names, kinds, st)
                yield Chunk(e.finish(), names, kinds, st, out if out >= 0 else -1)
                continue
            names, kinds = [o.name for o in run], [o.op for o in run]
            key = self._signature(run)
            offs = (layer * self._layer_wbytes, layer * kv_off, 0, layer * lo_off)
            if key not in self._layers and sink is not None and not self._has_gathers(run):
                sink.ops(kinds)
                rec = _Recorder(sink, offs, key not in self._big)
                e = Emitter(rec, WINDOW)
                st = StepStats()
                out = self._lower_ops(e, run, [], [], st)
                cols = e.finish()
                if self._layer_wbytes == 0:
                    self._layer_wbytes = self._wtop
                if rec.kept is not None:
                    self._layers[key] = (_concat(rec.kept), st, [])
                else:
                    self._big.add(key)
                yield Chunk(cols, names, kinds, StepStats(**vars(st)), out, streamed=True)
                continue
            if key not in self._layers:
                e2 = Emitter()
                st2 = StepStats()
                self._rec = []
                self._lower_ops(e2, run, [], [], st2)
                self._layers[key] = (e2.finish(), st2, self._rec)
                self._rec = None
            blk, st2, rec = self._layers[key]
            if rec:  # LOP drops keys: gathered fetches, indirect through the LOP index FIFO (sim.lop_fetch)
                blk = mark_indirect(self._gather(key, blk, rec, layer), self.model, rec)
            if self._layer_wbytes == 0:
                self._layer_wbytes = self._wtop
            offs = (layer * self._layer_wbytes, layer * kv_off, 0, layer * lo_off)
            stream = sink is not None and len(blk["main"]) > WINDOW  # a block of one window is scheduled whole
            e = Emitter(sink if stream else None, WINDOW)
            if stream:
                sink.ops(kinds)
            out = e.add_block(blk, EXT, offs)
            yield Chunk(e.finish(), names, kinds, StepStats(**vars(st2)), out, streamed=stream)
            if sink is not None and len(blk["main"]) > MAX_BLOCK_INSTRUCTIONS:
                self._layers.pop(key, None)

    def _lower_ops(self, e: Emitter, ops: list[Op], names: list[str], kinds: list[str], st: StepStats) -> int:
        """Lower `ops` (in order) into `e`; the first op depends on EXT; returns the last op's join."""
        pending: list[int] = [EXT]   # joins the next op depends on
        shared: int | None = None    # input dep of the previous linear (q/k/v, gate/up share it)
        prev_lin: tuple | None = None
        att: dict[int, int] = {}     # kv head -> keys attended (set by attn_qk, used by softmax/attn_av)

        def dep1() -> int:
            if not pending:
                return -1
            if len(pending) == 1:
                return pending[0]
            d = (pending + [-1, -1])[:3]
            return e.emit(C_JOIN, dep0=d[0], dep1=d[1], dep2=d[2], opi=len(names) - 1, sub=SUB["join"])

        def reg(op: Op) -> int:
            names.append(op.name)
            kinds.append(op.op)
            return len(names) - 1

        i = 0
        while i < len(ops):
            op = ops[i]
            n_sec = _attn_section(ops, i) if self.dep_aware else 0
            if n_sec:
                j = self._fused_attention(e, ops[i:i + n_sec], dep1(), reg, st)
                pending, shared, prev_lin = [j], None, None
                i += n_sec
                continue
            opi = reg(op)
            k = op.op
            if k == "linear":
                sig = (op["tokens"], op["in_features"])
                if self.dep_aware and prev_lin == sig and shared is not None:
                    ext = shared
                    pending = pending + [self._add_linear(e, op, opi, ext)]
                else:
                    ext = dep1()
                    pending = [self._add_linear(e, op, opi, ext)]
                shared, prev_lin = ext, sig
                i += 1
                continue
            prev_lin, shared = None, None
            d = dep1()
            t = op["tokens"] if "tokens" in op.args else 1
            first = e.mark()
            if k == "lm_head" and self.cfg.lm_head != "host":
                j = self._lm_head(e, op, opi, d, st)
            elif k == "lm_head":  # on the host: excluded from accelerator time (module docstring: its rows)
                rows = logits_rows(op)
                st.lm_head_macs += rows * op["in_features"] * op["out_features"]
                st.lm_head_bytes += math.ceil(op["in_features"] * op["out_features"]
                                              * weight_bits(op["weight_format"]) / 8) if rows else 0
                j = d
            elif k == "embedding":
                nb = t * self._embed_row_bytes(op)
                j = e.emit(C_DMAW, nbytes=nb, addr=EMBED_BASE, dcls=D_ACT, dep0=d, opi=opi,
                           sub=SUB["embed"], wbuf=B_ACT, wbytes=nb)
            elif k in ("rmsnorm", "quantize", "elementwise", "activation"):
                j = self._sfu(e, k, t, op["dim"], opi, (d,))
            elif k == "rope":
                j = self._sfu(e, "rope", t * (op["heads"] + op["kv_heads"]), op["head_dim"], opi, (d,))
            elif k == "kv_append":
                for g in range(self.G):
                    self._kv_write(e, op, opi, g, d)
                j = self._join(e, first, opi)
            elif k in ("attn_qk", "softmax", "attn_av"):
                j, n_ops = self._attention_op(e, ops, i, opi, first, d, reg, att, st)
                pending = [j]
                i += n_ops
                continue
            else:  # pragma: no cover - trace validation rejects unknown kinds
                raise WorkloadError(f"op {op.name}: kind '{k}' is not supported by the simulator")
            pending = [j] if j != -1 else []
            i += 1
        return dep1()

    # ------------------------------------------------------------------------------------ projections

    def _linear_block(self, op: Op, tokens: int, fin: int, fout: int, fmt: str, tk: int) -> dict[str, np.ndarray]:
        """Tile block of one token chunk of `tk` tokens of a projection of `tokens` tokens (cached per shape;
        the chunk at token 0: placement adds t0 * fin / t0 * fout to its activation addresses): the [weight
        DMA, tile] pairs over the tile grid, with activation read/write DMAs when activations spill."""
        key = ("lin", tokens, fin, fout, fmt, tk)
        if key in self._tiles:
            return self._tiles[key]
        cfg = self.cfg
        p = plan_linear(cfg, self.bufs, op.name, tokens, fin, fout, fmt, self.dual_core)
        rr, kk, wb, woff = tile_grid(p, fin, fout, fmt, cfg.tint.weight_packing)
        T = len(rr)
        mcls = WORK_OF_FORMAT[fmt]
        e = Emitter()
        act = -1
        if p.spill:
            act = e.emit(C_DMAW, nbytes=tk * fin, addr=ACT_BASE, dcls=D_ACT, buf=B_ACT, alloc=tk * fin, dep0=EXT,
                         sub=SUB["act_rd"], wbuf=B_ACT, wbytes=tk * fin)
        c1 = np.zeros(T, np.int64)
        c2 = np.zeros(T, np.int64)
        for r, k in set(zip(rr.tolist(), kk.tolist(), strict=True)):
            sel = (rr == r) & (kk == k)
            c1[sel] = tile_cycles(cfg, p.main, fmt, k, tk * -(-r // lanes_of(cfg, p.main)))
            if p.alt >= 0:
                c2[sel] = tile_cycles(cfg, p.alt, fmt, k, tk * -(-r // lanes_of(cfg, p.alt)))
        dma_idx = e.n + 2 * np.arange(T)
        col = {c: np.full(2 * T, DEFAULT.get(c, 0), np.int64) for c in COLS}
        D, Tl = slice(0, 2 * T, 2), slice(1, 2 * T, 2)
        for c, v in (("main", C_DMAW), ("nbytes", wb), ("addr", woff), ("dcls", D_W), ("buf", B_WEIGHT),
                     ("alloc", wb), ("dep0", -1 if self.dep_aware else EXT),
                     ("barrier", 0 if self.dep_aware else 1), ("sub", SUB["w_dma"]), ("wbuf", B_WEIGHT),
                     ("wbytes", wb)):
            col[c][D] = v
        for c, v in (("main", p.main), ("alt", p.alt), ("cyc", c1), ("cyc_alt", c2), ("dep0", dma_idx),
                     ("dep1", EXT), ("dep2", act), ("free_of", dma_idx), ("sub", SUB["tile"]),
                     ("macs", rr * kk * tk), ("mcls", mcls), ("rbuf", B_WEIGHT), ("rbytes", wb),
                     ("rbuf2", B_ACT), ("rbytes2", kk * tk), ("wbuf", B_PSUM),
                     ("wbytes", rr * tk * ACC_BYTES)):
            col[c][Tl] = v
        e.add_arrays(col)
        if p.spill:
            j = e.emit(C_JOIN, jlo=0, jhi=e.n, free_of=act, sub=SUB["join"])
            e.emit(C_DMAW, nbytes=tk * fout, addr=ACT_OUT_BASE, wr=1, dcls=D_ACT, dep0=j, sub=SUB["act_wr"],
                   rbuf=B_ACT, rbytes=tk * fout)
        blk = e.finish()
        self._tiles[key] = blk
        return blk

    def _linear_chunks(self, op: Op, tokens: int, fin: int, fout: int, fmt: str) -> Iterator[tuple[int, dict]]:
        """(t0, block) per run of token chunks of a projection (sim.tiling.plan_linear: chunks of tc tokens):
        full chunks in runs of up to ~WINDOW instructions (one cached block, speed), then the last chunk."""
        tc = plan_linear(self.cfg, self.bufs, op.name, tokens, fin, fout, fmt, self.dual_core).tc
        full = tokens // tc
        if full:
            one = self._linear_block(op, tokens, fin, fout, fmt, tc)
            g = max(1, min(full, WINDOW // len(one["main"])))
            rep = self._repeat(("rep", tokens, fin, fout, fmt, g), one, g, tc * fin, tc * fout)
            for t0 in range(0, (full // g) * g * tc, g * tc):
                yield t0, rep
            for t0 in range((full // g) * g * tc, full * tc, tc):
                yield t0, one
        if tokens % tc:
            yield full * tc, self._linear_block(op, tokens, fin, fout, fmt, tokens % tc)

    def _repeat(self, key: tuple, blk: dict[str, np.ndarray], g: int, din: int, dout: int) -> dict[str, np.ndarray]:
        """`blk` (one token chunk) repeated g times as one block: indices shifted per copy, activation
        addresses advanced by din (reads) / dout (writes) per copy (cached)."""
        if g == 1:
            return blk
        if key not in self._tiles:
            m = len(blk["main"])
            k = np.repeat(np.arange(g, dtype=np.int64), m)
            out = {c: np.tile(blk[c], g) for c in COLS}
            for c in IDX_COLS:
                out[c] = np.where(out[c] >= 0, out[c] + k * m, out[c])
            out["addr"] = out["addr"] + k * np.where(out["sub"] == SUB["act_rd"], din,
                                                     np.where(out["sub"] == SUB["act_wr"], dout, 0))
            self._tiles[key] = out
        return self._tiles[key]

    def _add_linear(self, e: Emitter, op: Op, opi: int, ext: int, fout: int | None = None, row0: int = 0) -> int:
        """Place the (cached) token-chunk tile blocks of `op` (or of its output rows [row0, row0 + fout)) and a
        join over them; its weights sit at the op's DRAM address (one per op name, 4 KiB aligned) + the bytes
        of the rows before row0; returns the join."""
        fo = op["out_features"] if fout is None else fout
        fin, fmt = op["in_features"], op["weight_format"]
        bits = weight_bits(fmt, self.cfg.tint.weight_packing)
        name = op.name.split(".", 2)[-1] if op.layer >= 0 else op.name
        if name not in self._wbase:
            self._wbase[name] = self._wtop
            self._wtop += -(-math.ceil(op["out_features"] * fin * bits / 8) // 4096) * 4096
        waddr = self._wbase[name] + math.ceil(row0 * fin * bits / 8)
        first = e.mark()
        for t0, blk in self._linear_chunks(op, op["tokens"], fin, fo, fmt):
            add = None
            if t0:  # spilled: this chunk's activation rows
                sub = blk["sub"]
                add = np.where(sub == SUB["act_rd"], t0 * fin, np.where(sub == SUB["act_wr"], t0 * fo, 0))
            e.add_block(blk, ext, (waddr, 0, 0, 0), opi=opi, addr_add=add)
        return e.emit(C_JOIN, jlo=first, jhi=e.n, opi=opi, sub=SUB["join"])

    # ------------------------------------------------------------------------------------ lm_head on the chip

    def _shared_table(self) -> bool:
        """Tied embeddings with the lm_head on the chip: one table in the lm_head's format serves both."""
        return self.cfg.lm_head != "host" and self.model.tied_embeddings

    def _embed_row_bytes(self, op: Op) -> int:
        """Bytes of one embedding row: bf16, or the shared table's format (module docstring)."""
        if self._shared_table() and op["vocab"] == self.model.vocab:
            return row_bytes(self.cfg.lm_head, self.cfg.tint.weight_packing, op["dim"])
        return op["dim"] * 2

    def _lm_head(self, e: Emitter, op: Op, opi: int, dep: int, st: StepStats) -> int:
        """The lm_head on the chip (module docstring): quantize the rows that get logits, the tiled projection,
        the logits' write; returns the write (nothing at all in a step that produces no logits: `dep`)."""
        fmt, fin, vocab = self.cfg.lm_head, op["in_features"], op["out_features"]
        rows = logits_rows(op)
        if rows == 0:
            return dep
        q = self._sfu(e, "quantize", rows, fin, opi, (dep,))
        head = Op("lm_head", op.name, op.layer, op.phase, op.step,
                  dict(tokens=rows, in_features=fin, out_features=vocab, weight_format=fmt), op.role)
        if op.name not in self._wbase:  # after every decoder layer's weights, or the embedding table's region
            top = max(self.model.n_layers * self._layer_wbytes, self._wtop)
            self._wbase[op.name] = EMBED_BASE if self._shared_table() else -(-top // 4096) * 4096
        j = self._add_linear(e, head, opi, q)
        st.lm_head_macs += rows * fin * vocab
        st.lm_head_bytes += sum(int(b["nbytes"][(b["dcls"] == D_W) & (b["main"] == C_DMAW)].sum())
                                for _, b in self._linear_chunks(head, rows, fin, vocab, fmt))
        return e.emit(C_DMAW, nbytes=rows * vocab * 2, addr=ACT_OUT_BASE, wr=1, dcls=D_ACT, dep0=j, opi=opi,
                      sub=SUB["act_wr"], rbuf=B_PSUM, rbytes=rows * vocab * ACC_BYTES)

    # ------------------------------------------------------------------------------------ SFU

    def _sfu(self, e: Emitter, kind: str, rows: int, dim: int, opi: int, deps: tuple[int, ...]) -> int:
        c = sfu_cycles(self.cfg.sfu, kind, rows, dim)
        if self.dep_aware and kind in ("rmsnorm", "quantize", "softmax") and SFU_PASSES[kind] > 1:
            c -= rows * -(-dim // self.cfg.sfu.lanes)  # reduction pass fused with the producer's stream
        d = list(deps) + [-1, -1, -1]
        return e.emit(C_SFU, cyc=c, dep0=d[0], dep1=d[1], dep2=d[2], opi=opi, sub=SUB["sfu"], macs=rows * dim,
                      mcls=M_SFU, rbuf=B_ACT, rbytes=rows * dim, wbuf=B_ACT, wbytes=rows * dim)


class _Recorder:
    """Sink wrapper for a layer lowered while it streams: adds the layer's DRAM offsets (sim.isa.Emitter
    .add_block's rule) and keeps the unplaced windows while the block stays within MAX_BLOCK_INSTRUCTIONS."""

    def __init__(self, sink: WindowSink, offs: tuple[int, int, int, int], keep: bool) -> None:
        self.sink, self.offs = sink, np.asarray(offs, np.int64)
        self.kept: list[dict[str, np.ndarray]] | None = [] if keep else None
        self.n = 0

    def ops(self, kinds: list[str]) -> None:
        self.sink.ops(kinds)

    def mark(self, i: int, uses: int) -> None:
        self.sink.mark(i, uses)

    def window(self, cols: dict[str, np.ndarray], w0: int) -> None:
        self.n += len(cols["main"])
        if self.kept is not None:
            self.kept = self.kept + [{c: v.copy() for c, v in cols.items()}] if self.n <= MAX_BLOCK_INSTRUCTIONS \
                else None
        if self.offs.any():
            dma = (cols["main"] == C_DMAW) | (cols["main"] == C_DMAKV)
            cols = {**cols, "addr": cols["addr"] + np.where(dma, self.offs[cols["dcls"]], 0)}
        self.sink.window(cols, w0)


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The windows as one block, column by column, dropping each column of the parts once copied (peak: the
    block plus one column, not two blocks)."""
    out = {}
    for c in COLS:
        out[c] = np.concatenate([p.pop(c) for p in parts]) if parts else np.zeros(0, np.int64)
    return out
