"""Attention lowering (per KV head): KV-cache writes, LOP scoring and selection, QK^T, softmax and score.V,
dense or with online softmax (sim.tiling.attention_plan), for sim.lower.Lowering (a mixin: it uses the
lowering's config, buffers, SFU and projection helpers).

LOP (decode steps only; a prefill attends to every key and is compute-bound): per KV head the LO codes (lop_bits/elem) of
all M cached keys are read (class lop, when lop.surrogate_storage = "dram"), scored on the LOP unit in
chunks of floor(lop.tile_bytes / code_bytes_per_key) keys, top-K selected; only the K selected keys and
values are fetched (class kv) at their own addresses and exact attention runs on those K. Selected
positions per head: data-driven when available (sim.lop_select), else min(k, M) evenly spread keys; the
fetches follow the KV-cache layout and gather rule of sim.kvcache (docs/kv-cache.md).
Under LOP a cached layer block's K/V fetches are expanded into each layer's gathers (_gather).

Dense tiling: per query chunk, every K chunk and its QK^T tile, the softmax of the chunk's score rows on the
SFU (sim.units.sfu.sfu_cycles "softmax": max, exp+sum, normalise), then every V chunk and its score.V tile.

Tile timing on the INT8 unit (outputs `lanes` a pass): a QK^T output is a dot over head_dim, so a tile is
ceil(outputs / lanes) passes of head_dim inputs. A score.V output (query t, head, dimension) is a dot over
the keys its query attends to, and a pass takes as many beats as its longest row needs (the controller
knows every query's position from the instruction, so it can count them; lowbit.rtl.chip_booth's walker
does): causal tiles have ragged passes (pv_pass_keys, sim.units.booth.booth_int8_pass_cycles), the same
rule in the dense and the online tiling.

Online softmax (FlashAttention-style: Milakov & Gimelshein 2018, "Online normalizer calculation for softmax",
arXiv:1805.02867; Dao 2023, FlashAttention-2, arXiv:2307.08691), per query block of nq queries (rows = nq x
group score rows) and per key block j of n keys (skipped when causally empty), in program order:
  K DMA (n x head_dim B, KV buffer) -> QK^T tile (pairs x group scores into the psum score tile) ->
  SFU block -> V DMA -> score.V tile (O += P V into the output accumulator in psum),
and after the last key block one SFU pass O /= l. Per row, the SFU block keeps the running max m and sum l
(in psum next to the row's output accumulator, DESIGN ASSUMPTION): m' = max(m, max_j S), P = exp(S - m'),
l' = exp(m - m') l + sum P, O *= exp(m - m') (FlashAttention-2 defers the 1/l scaling to the end). SFU cycles
(sim.units.sfu's streaming model, `lanes` elements per cycle per pass, the "softmax" pipeline latency once per
instruction):
  block j: rows x (ceil(n / lanes) [max pass; fused with the QK^T output stream under dependency-aware, as the
           dense softmax's max pass, so not counted there] + ceil((n + [j > 0]) / lanes) [exp + sum; from the
           second block on, the row's correction factor exp(m - m') goes through the exp pipeline with its
           scores] + [j > 0] ceil(head_dim / lanes) [rescale of O]) + latency["softmax"]
  final:   rows x ceil(head_dim / lanes) + latency["softmax"] (O x 1/l; the reciprocal is pipelined as in the
           dense normalise pass).
DESIGN ASSUMPTIONS: P is written as INT8 in place of its scores (the probabilities lie in (0, 1], so the
score.V tile takes them with a fixed scale and no absmax pass); one score tile per query block, so the next
block's QK^T waits for this block's score.V, and the SFU block waits for the previous score.V (O is rescaled
between two accumulations). SRAM accounting: the SFU block reads the scores (4 B each), m, l (8 B per row)
and, from j > 0, O (head_dim x 4 B per row) from psum and writes P (1 B each), m, l and O back; score.V reads
V from the KV buffer and P (and O from j > 0) from psum and writes O (head_dim x 4 B per row) to psum.
Its SFU passes have the sub-kind "softmax": only the query block's next instructions use them, so the windowed
scheduler (sim.window) keeps no end for them. A query block's instructions are built as one block (numpy, cached per shape up to ONLINE_CACHE
instructions) and placed per KV head with the head's K/V address offset; its one input (EXT) is the head's
last KV-cache write (prefill), the LOP top-K (decode with LOP), or the later of rope and the V projection
(decode without LOP: the K fetches then have no input and are prefetched, as in the dense tiling).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from lowbit.sim.errors import WorkloadError
from lowbit.sim.isa import (
    B_ACT,
    B_KV,
    B_LOP,
    B_PSUM,
    C_DMAKV,
    C_JOIN,
    C_LOP,
    C_SFU,
    COLS,
    D_KV,
    D_LOP,
    DEFAULT,
    EXT,
    M_INT8,
    M_LOP,
    M_SFU,
    NO_DEP,
    SUB,
    Emitter,
    class_unit,
)
from lowbit.sim.kvcache import expand_gathers, fixed_positions, gather_segments, kv_addr, lo_addr
from lowbit.sim.numerics.lop import LOP_SURROGATE_BITS_PER_ELEM as LOP_BITS
from lowbit.sim.tiling import (
    ACC_BYTES,
    AttentionPlan,
    attention_plan,
    causal_pairs,
    causal_pairs_blocks,
    head_group,
    int8_class,
    kv_chunk,
    lanes_of,
    lop_chunk,
    plan_linear,
    tile_cycles,
)
from lowbit.sim.trace import Op
from lowbit.sim.units.lop import lop_score_cycles, lop_topk_cycles

if TYPE_CHECKING:
    from lowbit.sim.lower import StepStats

ONLINE_CACHE = 1 << 16  # instructions of online query blocks kept for the next KV heads and layers (memory)


@lru_cache(maxsize=1 << 14)
def pv_pass_keys(a: int, n: int, nq: int, row: int, lanes: int) -> tuple[tuple[int, int], ...]:
    """(keys, passes) runs of a score.V tile over a chunk of n keys: outputs (query t of nq, head, dimension),
    `row` = group x head_dim a query, `lanes` a pass; query t attends to min(n, max(0, a + t + 1)) of the
    chunk's keys (a: the tile's first query's position minus the chunk's first key; a >= n - 1: all). A
    pass takes its last (longest) row's keys; pass p ends at output min(outs, (p + 1) lanes) - 1, so the
    passes ending in query t's rows number e((t + 1) row) - e(t row), e(x) = x // lanes below outs, P at outs."""
    outs = nq * row
    P = -(-outs // lanes)
    runs = []
    for t in range(nq):
        c = (P if (t + 1) * row >= outs else (t + 1) * row // lanes) - t * row // lanes
        if c:
            runs.append((min(n, max(0, a + t + 1)), c))
    return tuple(runs)


def pv_tile_cycles(cfg: Any, cls: int, runs: tuple[tuple[int, int], ...]) -> int:
    """Cycles of a score.V tile of ragged passes (pv_pass_keys) on unit class `cls`: the unit's pass_cycles
    formula, else every pass at the longest run's keys."""
    u = class_unit(cls)
    if u.pass_cycles is not None:
        return u.pass_cycles(cfg.section(u.name), list(runs))
    return tile_cycles(cfg, cls, "int8", max(k for k, _ in runs), sum(c for _, c in runs))


def online_block_cycles(lanes: int, latency: int, rows: int, n: int, head_dim: int, first: bool,
                        fused_max: bool) -> int:
    """SFU cycles of one online-softmax block of `rows` score rows over `n` keys (module docstring)."""
    later = 0 if first else 1
    per_row = (0 if fused_max else -(-n // lanes)) + -(-(n + later) // lanes) + later * -(-head_dim // lanes)
    return rows * per_row + latency


def online_final_cycles(lanes: int, latency: int, rows: int, head_dim: int) -> int:
    """SFU cycles of an online-softmax query block's final O /= l pass (module docstring)."""
    return rows * -(-head_dim // lanes) + latency


class AttentionLowering:
    """The attention part of sim.lower.Lowering (mixin: module docstring)."""

    cfg: Any
    model: Any
    bufs: Any
    dep_aware: bool
    lop_on: bool
    lop_k: int
    lop_counts: Any
    hd: int
    G: int
    grp: int
    code_bytes: int
    dual_core: bool
    _rec: list | None
    _online_blocks: dict
    _gathered: dict

    # ------------------------------------------------------------------------------------ non-pipelined ops

    def _attention_op(self, e: Emitter, ops: list[Op], i: int, opi: int, first: int, d: int,
                      reg: Callable[[Op], int], att: dict[int, int], st: StepStats) -> tuple[int, int]:
        """Lower the attention op ops[i] (attn_qk, softmax or attn_av, registered as `opi`, its instructions
        from `first` on) after `d`; an attn_qk whose heads need the online tiling takes its softmax and
        attn_av with it (one loop over key blocks). Returns (its join, ops consumed)."""
        op, t = ops[i], ops[i]["tokens"]
        if op.op == "attn_qk":
            ctx = op["context"]
            lop = self._use_lop(op)
            for g in range(self.G):
                att[g] = self._selected(op.layer, op.step, g, ctx) if lop else ctx
            plans = [attention_plan(self.bufs, self.grp, self.hd, t, att[g]) for g in range(self.G)]
            opis = self._online_opis(ops, i, opi, reg) if any(p.online for p in plans) else None
            for g in range(self.G):
                dep_k = d
                if lop:
                    dep_k = self._emit_lop(e, opi, g, ctx, (d, d), op.seq)
                    self._lop_stats(st, ctx, att[g])
                if opis is not None:
                    self._head_section(e, ops[i:i + 3], opis, g, plans[g], att[g], dep_k, d)
                    continue
                for q0, q1 in plans[g].queries:
                    self._emit_attn(e, op, opi, g, q0, q1, att[g], ctx, dep_k, d, t > 1, v=False)
            if opis is not None:
                return self._join(e, first, opis[2]), 3
        elif op.op == "softmax":
            for g in range(self.G):
                keys = att.get(g, op["context"])
                for q0, q1 in attention_plan(self.bufs, self.grp, self.hd, t, keys).queries:
                    self._sfu(e, "softmax", (q1 - q0) * self.grp, keys, opi, (d,))
        else:
            for g in range(self.G):
                keys = att.get(g, op["context"])
                for q0, q1 in attention_plan(self.bufs, self.grp, self.hd, t, keys).queries:
                    self._emit_attn(e, op, opi, g, q0, q1, keys, op["context"], d, d, t > 1, v=True)
        return self._join(e, first, opi), 1

    @staticmethod
    def _online_opis(ops: list[Op], i: int, opi: int, reg: Callable[[Op], int]) -> tuple[int, int, int]:
        """Op indices of an attn_qk at ops[i] (`opi`) and of the softmax and attn_av it takes with it."""
        if tuple(o.op for o in ops[i + 1:i + 3]) != ("softmax", "attn_av"):
            raise WorkloadError(f"op {ops[i].name}: online-softmax attention needs its softmax and attn_av to "
                                "follow it in the trace")
        return opi, reg(ops[i + 1]), reg(ops[i + 2])

    def _head_section(self, e: Emitter, ops: list[Op], opis: tuple[int, int, int], g: int, plan: AttentionPlan,
                      keys: int, dep_k: int, d: int) -> None:
        """attn_qk, softmax and attn_av (`ops`) of KV head g lowered together after `d` (non-pipelined
        lowering): as one online loop over key blocks, or dense chunk by chunk."""
        qk, _sm, av = ops
        t, ctx = qk["tokens"], qk["context"]
        if plan.online:
            self._online(e, qk, opis, g, plan, keys, dep_k, d, d, t > 1)
            return
        for q0, q1 in plan.queries:
            j = self._emit_attn(e, qk, opis[0], g, q0, q1, keys, ctx, dep_k, d, t > 1, v=False)
            s_ = self._sfu(e, "softmax", (q1 - q0) * self.grp, keys, opis[1], (j,))
            self._emit_attn(e, av, opis[2], g, q0, q1, keys, ctx, d, s_, t > 1, v=True)

    # ------------------------------------------------------------------------------------ pipelined section

    def _fused_attention(self, e: Emitter, ops: list[Op], d_in: int, reg: Callable[[Op], int],
                         st: StepStats) -> int:
        """Dependency-aware attention block with head-level pipelining: Q/K/V tiles of KV head group g+1 are
        listed before the attention of group g, so the projection cores work on g+1 while BoothFlex runs g.
        A batched step's section has one (kv_append, attn_qk, softmax, attn_av) per sequence after q, k, v,
        rope (which run over all its tokens); each sequence attends to its own KV cache, in sequence order."""
        q, k, v = ops[:3]
        seqs = [tuple(ops[j:j + 4]) for j in range(4, len(ops), 4)]
        opis = [reg(o) for o in ops]
        sopi = [opis[j:j + 4] for j in range(4, len(ops), 4)]
        G, grp, hd = self.G, self.grp, self.hd
        t = q["tokens"]
        first = e.mark()
        L = plan_linear(self.cfg, self.bufs, q.name, t, q["in_features"], q["out_features"], q["weight_format"],
                        self.dual_core).L
        hg = head_group(L, hd, G)
        groups = [(g0, min(G, g0 + hg)) for g0 in range(0, G, hg)]

        def proj(g0: int, g1: int) -> tuple[int, int, int, int, int]:
            nh = g1 - g0
            jq = self._add_linear(e, q, opis[0], d_in, fout=nh * grp * hd, row0=g0 * grp * hd)
            jk = self._add_linear(e, k, opis[1], d_in, fout=nh * hd, row0=g0 * hd)
            jv = self._add_linear(e, v, opis[2], d_in, fout=nh * hd, row0=g0 * hd)
            r = self._sfu(e, "rope", t * (grp + 1) * nh, hd, opis[3], (jq, jk))
            w = [-1] * len(seqs)
            for g in range(g0, g1):
                for b, (kva, *_) in enumerate(seqs):
                    w[b] = self._kv_write(e, kva, sopi[b][0], g, r, jv)
            return g0, g1, r, jv, w

        def attn(g0: int, g1: int, r: int, jv: int, w: list[int]) -> None:
            for g in range(g0, g1):
                for b, (_kva, qk, _sm, av) in enumerate(seqs):
                    ctx, tb, o = qk["context"], qk["tokens"], sopi[b]
                    keys = ctx
                    dep_k = w[b] if tb > 1 else -1  # decode: cached K/V are already in DRAM -> prefetch early
                    if self._use_lop(qk):
                        dep_k = self._emit_lop(e, o[1], g, ctx, (-1, r), qk.seq)
                        keys = self._selected(qk.layer, qk.step, g, ctx)
                        self._lop_stats(st, ctx, keys)
                    plan = attention_plan(self.bufs, grp, hd, tb, keys)
                    if plan.online:
                        self._online(e, qk, o[1:], g, plan, keys, dep_k, r, dep_k if dep_k >= 0 else jv, tb > 1)
                        continue
                    for q0, q1 in plan.queries:
                        jqk = self._emit_attn(e, qk, o[1], g, q0, q1, keys, ctx, dep_k, r, tb > 1, v=False)
                        s_ = self._sfu(e, "softmax", (q1 - q0) * grp, keys, o[2], (jqk,))
                        self._emit_attn(e, av, o[3], g, q0, q1, keys, ctx, dep_k if dep_k >= 0 else jv, s_,
                                        tb > 1, v=True)

        prev = proj(*groups[0])
        for gr in groups[1:]:
            cur = proj(*gr)
            attn(*prev)
            prev = cur
        attn(*prev)
        return self._join(e, first, opis[-1])

    @staticmethod
    def _join(e: Emitter, first: int, opi: int) -> int:
        """Join over the instructions emitted since `first`."""
        return e.emit(C_JOIN, jlo=first, jhi=e.n, opi=opi, sub=SUB["join"])

    # ------------------------------------------------------------------------------------ LOP gathers

    def _has_gathers(self, run: list[Op]) -> bool:
        """LOP-selected K/V fetches (expanded into gathers per layer once the block is built: not streamed)."""
        return any(o.op == "attn_qk" and self._use_lop(o) for o in run)

    def _gather(self, key: tuple, blk: dict[str, np.ndarray], rec: list, layer: int) -> dict[str, np.ndarray]:
        """The block with its LOP K/V fetch rows expanded into the gathers of `layer`'s selected positions
        (sim.kvcache); fixed-ratio selections are equal in every layer, so their expansion is cached."""
        data = self.lop_counts is not None and any((layer, r[5]) in self.lop_counts for r in rec)
        if not data and key in self._gathered:
            return self._gathered[key]
        pos: dict[tuple[int, int], np.ndarray] = {}
        rows, base, parts, bounds = [], [], [], [0]
        for row, g, v, k0, k1, step, ctx, seq in rec:
            if (g, seq) not in pos:
                pos[g, seq] = self._positions(layer, step, g, ctx)
            rows.append(row)
            base.append(self._kv_addr(g, v, seq))
            parts.append(pos[g, seq][k0:k1])
            bounds.append(bounds[-1] + k1 - k0)
        seg_row, first, length = gather_segments(np.concatenate(parts), np.asarray(bounds, np.int64))
        seg_a = np.asarray(base, np.int64).take(seg_row) + first * self.hd
        out = expand_gathers(blk, np.asarray(rows, np.int64), seg_row, seg_a, length * self.hd)
        if not data:
            self._gathered[key] = out
        return out

    def _signature(self, run: list[Op]) -> tuple:
        keys = []
        for o in run:
            if o.op == "attn_qk" and self._use_lop(o):
                keys.append(tuple(self._selected(o.layer, o.step, g, o["context"]) for g in range(self.G)))
        return (tuple((o.op, o.role, o.phase, o.seq, tuple(sorted(o.args.items()))) for o in run), tuple(keys))

    # ------------------------------------------------------------------------------------ per KV head

    def _kv_addr(self, g: int, v: bool, seq: int = 0) -> int:
        """K (or V) plane of KV head g of layer 0 (sim.kvcache layout; placement adds the layer's offset)."""
        return kv_addr(self.model, 0, g, v, 0, seq)

    def _lop_addr(self, g: int, pos: int, seq: int = 0) -> int:
        """LO-code address of key `pos` of KV head g of layer 0 of sequence `seq` (sim.kvcache layout)."""
        return lo_addr(self.model, 0, g, pos, seq)

    def _use_lop(self, op: Op) -> bool:
        return self.lop_on and op.phase == "decode" and op["tokens"] == 1

    def _selected(self, layer: int, step: int, g: int, m: int) -> int:
        """Keys LOP selects for KV head g: the data-driven count when known, else min(k, M)."""
        if self.lop_counts is not None and (layer, step) in self.lop_counts:
            sel = self.lop_counts[(layer, step)][g]
            return int(min(m, len(sel) if np.ndim(sel) else int(sel)))
        return min(self.lop_k, m)

    def _positions(self, layer: int, step: int, g: int, m: int) -> np.ndarray:
        """Ascending positions LOP selects for KV head g: data-driven when known (a count alone is spread
        like a fixed-ratio selection), else fixed-ratio (sim.kvcache.fixed_positions)."""
        if self.lop_counts is not None and (layer, step) in self.lop_counts:
            sel = self.lop_counts[(layer, step)][g]
            if np.ndim(sel):
                return np.asarray(sel, np.int64)
            return fixed_positions(m, int(sel))
        return fixed_positions(m, self.lop_k)

    def _lop_stats(self, st: StepStats, ctx: int, keys: int) -> None:
        st.kv_dense_bytes += 2 * ctx * self.hd
        st.kv_read_bytes += 2 * keys * self.hd
        if self.cfg.lop.surrogate_storage == "dram":
            st.lop_bytes += ctx * self.code_bytes

    def _kv_write(self, e: Emitter, op: Op, opi: int, g: int, dep: int, dep2: int = -1) -> int:
        """Write the new tokens' K and V (INT8, each to its plane) and, with LOP in DRAM, their LO codes."""
        t, hd = op["tokens"], self.hd
        pos = op["context"] - t
        for v in (False, True):
            j = e.emit(C_DMAKV, nbytes=t * hd, addr=self._kv_addr(g, v, op.seq) + pos * hd, wr=1, dcls=D_KV,
                       dep0=dep, dep1=dep2, opi=opi, sub=SUB["kv_wr"], rbuf=B_ACT, rbytes=t * hd)
        if self.lop_on and self.cfg.lop.surrogate_storage == "dram":
            cb = self.code_bytes
            j = e.emit(C_DMAKV, nbytes=t * cb, addr=self._lop_addr(g, pos, op.seq), wr=1, dcls=D_LOP, dep0=dep,
                       dep1=dep2, opi=opi, sub=SUB["kv_wr"], rbuf=B_ACT, rbytes=t * cb)
        return j

    def _emit_lop(self, e: Emitter, opi: int, g: int, m: int, deps: tuple[int, int], seq: int = 0) -> int:
        """LO-code reads + scoring in chunks, then comparison-free top-K; returns the top-K instruction."""
        cfg, cb = self.cfg, self.code_bytes
        chunk = lop_chunk(self.bufs, cb, f"LOP: LO codes of one key ({self.hd} x {LOP_BITS} bit)")
        first = e.mark()
        dram = cfg.lop.surrogate_storage == "dram"
        for j0 in range(0, m, chunk):
            n = min(m, j0 + chunk) - j0
            d = -1
            if dram:
                d = e.emit(C_DMAKV, nbytes=n * cb, addr=self._lop_addr(g, j0, seq), dcls=D_LOP, buf=B_LOP,
                           alloc=n * cb, dep0=deps[0], opi=opi, sub=SUB["lop_dma"], wbuf=B_LOP, wbytes=n * cb)
            e.emit(C_LOP, cyc=self.grp * lop_score_cycles(cfg.lop, n, self.hd), dep0=d, dep1=deps[1],
                   free_of=d, opi=opi, sub=SUB["lop_score"], macs=n * self.hd * self.grp, mcls=M_LOP,
                   rbuf=B_LOP, rbytes=n * cb)
        j = self._join(e, first, opi)
        return e.emit(C_LOP, cyc=lop_topk_cycles(cfg.lop, m), dep0=j, opi=opi, sub=SUB["lop_topk"])

    def _emit_attn(self, e: Emitter, op: Op, opi: int, g: int, q0: int, q1: int, keys: int, ctx: int,
                   dep_kv: int, dep_in: int, causal: bool, *, v: bool) -> int:
        """K chunks + QK^T tiles (v=False), or V chunks + score.V tiles (v=True), for queries [q0, q1) of KV
        head g over `keys` keys at context `ctx`, on BoothFlex (INT8); returns their join."""
        hd, grp = self.hd, self.grp
        cls = int8_class(self.cfg, f"op {op.name} (INT8 attention)")
        lanes = lanes_of(self.cfg, cls)
        c = kv_chunk(self.bufs, hd)
        first = e.mark()
        qpos0 = ctx - op["tokens"]  # absolute position of query 0
        nq = q1 - q0
        for k0 in range(0, keys, c):
            k1 = min(keys, k0 + c)
            pairs = causal_pairs(q0, q1, qpos0, k0, k1) if causal else nq * (k1 - k0)
            if pairs == 0:
                continue
            d = e.emit(C_DMAKV, nbytes=(k1 - k0) * hd, addr=self._kv_addr(g, v, op.seq) + k0 * hd, dcls=D_KV, buf=B_KV,
                       alloc=(k1 - k0) * hd, dep0=dep_kv, opi=opi, sub=SUB["v_dma" if v else "k_dma"],
                       wbuf=B_KV, wbytes=(k1 - k0) * hd)
            if keys < ctx and self._rec is not None:  # LOP: selected keys, gathered per layer (sim.kvcache)
                self._rec.append((d, g, v, k0, k1, op.step, ctx, op.seq))
            if v:  # score.V: nq*grp*hd outputs, each a dot over the chunk's keys its query attends to
                outs = nq * grp * hd
                a = qpos0 + q0 - k0 if causal else k1 - k0
                cyc = pv_tile_cycles(self.cfg, cls, pv_pass_keys(a, k1 - k0, nq, grp * hd, lanes))
                macs, sub = pairs * grp * hd, SUB["av"]
            else:  # QK^T: pairs*grp scores, each a dot over head_dim
                outs = pairs * grp
                cyc = tile_cycles(self.cfg, cls, "int8", hd, -(-outs // lanes))
                macs, sub = outs * hd, SUB["qk"]
            e.emit(cls, cyc=cyc, dep0=d, dep1=dep_in, free_of=d, opi=opi, sub=sub, macs=macs, mcls=M_INT8,
                   rbuf=B_KV, rbytes=(k1 - k0) * hd, wbuf=B_PSUM, wbytes=outs * ACC_BYTES)
        return self._join(e, first, opi)

    # ------------------------------------------------------------------------------------ online softmax

    def _online(self, e: Emitter, qk: Op, opis: tuple[int, int, int] | list[int], g: int, plan: AttentionPlan,
                keys: int, dep_k: int, dep_in: int, dep_v: int, causal: bool) -> int:
        """Online-softmax attention of KV head g (module docstring): one block per query block of `plan`,
        placed with the head's K/V address offset. `dep_k` (K and V fetches) follows `dep_in` (the queries)
        and `dep_v` when it is set; otherwise K fetches have no input and the rest waits for a join of
        `dep_in` and `dep_v`. Returns the last block's final SFU pass."""
        ctx, tb = qk["context"], qk["tokens"]
        kdep = dep_k != NO_DEP
        ext = dep_k if kdep else e.emit(C_JOIN, dep0=dep_in, dep1=dep_v, opi=opis[0], sub=SUB["join"])
        kvoff = self._kv_addr(g, False, qk.seq) - self._kv_addr(0, False)
        out = ext
        for q0, q1 in plan.queries:
            key = (tuple(opis), q1 - q0, ctx - tb + q0, keys, plan.key_block, causal, kdep)
            blk = self._online_blocks.get(key)
            if blk is None:
                blk = self._online_block(opis, q0, q1, ctx - tb, keys, plan.key_block, causal, kdep)
                if sum(len(b["main"]) for b in self._online_blocks.values()) + len(blk["main"]) <= ONLINE_CACHE:
                    self._online_blocks[key] = blk
            off = e.n
            out = e.add_block(blk, ext, (0, kvoff, 0, 0))
            if keys < ctx and self._rec is not None:  # LOP: selected keys, gathered per layer (sim.kvcache)
                k0s = blk["addr"][blk["sub"] == SUB["k_dma"]] - self._kv_addr(0, False)
                for j, k0 in enumerate((k0s // self.hd).tolist()):
                    k1 = min(keys, k0 + plan.key_block)
                    self._rec.append((off + 5 * j, g, False, k0, k1, qk.step, ctx, qk.seq))
                    self._rec.append((off + 5 * j + 3, g, True, k0, k1, qk.step, ctx, qk.seq))
        return out

    def _online_block(self, opis: tuple[int, int, int] | list[int], q0: int, q1: int, qpos0: int, keys: int,
                      kb: int, causal: bool, kdep: bool) -> dict[str, np.ndarray]:
        """Columns of one query block [q0, q1) (query 0 at absolute position qpos0) over key blocks of kb of
        `keys` keys, for KV head 0 (local indices; EXT: the block's input): per non-empty key block K DMA,
        QK^T, SFU block, V DMA, score.V (5 rows), then the final SFU pass (module docstring)."""
        cfg, hd, grp = self.cfg, self.hd, self.grp
        cls = int8_class(cfg, f"attention of {self.model.name} (INT8)")
        lanes = lanes_of(cfg, cls)
        nq = q1 - q0
        rows = nq * grp
        k0s = np.arange(0, keys, kb, dtype=np.int64)
        n = np.minimum(keys, k0s + kb) - k0s
        pairs = causal_pairs_blocks(q0, q1, qpos0, k0s, kb, keys) if causal else nq * n
        keep = pairs > 0
        k0s, n, pairs = k0s[keep], n[keep], pairs[keep]
        J = len(k0s)
        col = {c: np.full(5 * J + 1, DEFAULT.get(c, 0), np.int64) for c in COLS}
        base = 5 * np.arange(J, dtype=np.int64)
        later = (np.arange(J) > 0).astype(np.int64)
        prev_av = np.where(later > 0, base - 1, NO_DEP)  # score.V of the previous key block
        nb = n * hd

        def put(sl: slice, **kw: Any) -> None:
            for c, v in kw.items():
                col[c][sl] = v

        def cycles(f: Callable[..., int], *args: np.ndarray) -> np.ndarray:
            """A unit formula over arrays (evaluated once per distinct argument tuple)."""
            a = np.stack(args)
            u, inv = np.unique(a, axis=1, return_inverse=True)
            return np.asarray([f(*map(int, x)) for x in u.T], np.int64)[inv.reshape(-1)]

        sfu = cfg.sfu
        lat = sfu.op_latency("softmax")
        outs = pairs * grp
        qk_cyc = cycles(lambda o: tile_cycles(cfg, cls, "int8", hd, -(-o // lanes)), outs)
        first_q = qpos0 + q0 if causal else keys  # position of the block's first query (all keys: non-causal)
        av_cyc = cycles(lambda k0, nn: pv_tile_cycles(cfg, cls, pv_pass_keys(first_q - k0, nn, nq, grp * hd, lanes)),
                        k0s, n)
        sm_cyc = cycles(lambda k, f: online_block_cycles(sfu.lanes, lat, rows, k, hd, f == 0, self.dep_aware),
                        n, later)
        kv0, vv0 = self._kv_addr(0, False), self._kv_addr(0, True)
        S = [slice(r, 5 * J, 5) for r in range(5)]
        put(S[0], main=C_DMAKV, nbytes=nb, addr=kv0 + k0s * hd, dcls=D_KV, buf=B_KV, alloc=nb,
            dep0=EXT if kdep else NO_DEP, opi=opis[0], sub=SUB["k_dma"], wbuf=B_KV, wbytes=nb)
        put(S[1], main=cls, cyc=qk_cyc, dep0=base, dep1=EXT, dep2=prev_av, free_of=base, opi=opis[0],
            sub=SUB["qk"], macs=outs * hd, mcls=M_INT8, rbuf=B_KV, rbytes=nb, wbuf=B_PSUM,
            wbytes=outs * ACC_BYTES)
        put(S[2], main=C_SFU, cyc=sm_cyc, dep0=base + 1, dep1=prev_av, opi=opis[1], sub=SUB["softmax"],
            macs=rows * (n + later * hd), mcls=M_SFU, rbuf=B_PSUM,
            rbytes=rows * ((n + 2 + later * hd) * ACC_BYTES), wbuf=B_PSUM,
            wbytes=rows * (n + (2 + later * hd) * ACC_BYTES))
        put(S[3], main=C_DMAKV, nbytes=nb, addr=vv0 + k0s * hd, dcls=D_KV, buf=B_KV, alloc=nb, dep0=EXT,
            opi=opis[2], sub=SUB["v_dma"], wbuf=B_KV, wbytes=nb)
        put(S[4], main=cls, cyc=av_cyc, dep0=base + 3, dep1=base + 2, free_of=base + 3, opi=opis[2],
            sub=SUB["av"], macs=pairs * grp * hd, mcls=M_INT8, rbuf=B_KV, rbytes=nb, rbuf2=B_PSUM,
            rbytes2=rows * (n + later * hd * ACC_BYTES), wbuf=B_PSUM, wbytes=rows * hd * ACC_BYTES)
        put(slice(5 * J, 5 * J + 1), main=C_SFU, cyc=online_final_cycles(sfu.lanes, lat, rows, hd),
            dep0=5 * J - 1, opi=opis[1], sub=SUB["softmax"], macs=rows * hd, mcls=M_SFU, rbuf=B_PSUM,
            rbytes=rows * (hd + 1) * ACC_BYTES, wbuf=B_PSUM, wbytes=rows * hd * ACC_BYTES)
        return col
