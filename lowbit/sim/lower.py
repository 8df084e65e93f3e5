"""Lowering: trace ops -> tile instructions for the scheduler (sim.sched), one chunk per forward step.

Tiling rules (all derived from the config; DESIGN ASSUMPTIONS stated here, cited in the validation report):
- Projection (linear) tiles: R output rows x kc input features of the weight matrix, for tc tokens.
  R is a multiple of L = lcm(lanes of every unit class that may run the tile) so no class wastes lanes on
  full tiles. The weight buffer is split evenly among the units that consume weight tiles (TINT cores +
  BoothFlex), each share double-buffered: a tile holds at most weight.tile_bytes / n_consumers bytes. If L
  rows of the full input width do not fit, the input width is split into nk equal chunks (partial sums
  accumulate in psum). Weight bytes: 2bit 0.25 B/weight, 5trit ceil(k/5) B per row, nvfp4 4.5 bit, mxfp4
  4.25 bit, int8 1 B, bf16 2 B.
- Activations stay on chip when tokens x in_features fits act.tile_bytes (decode); otherwise (prefill) they
  spill: tokens are processed in chunks of tc = floor(act.tile_bytes / in_features), each chunk's input is
  read from DRAM (class activations) and its output written back; the weights are re-read per chunk.
- Attention per KV head (head-level): K and V are fetched in chunks of floor(kv.tile_bytes / head_dim) keys
  (INT8). QK^T and score.V run on BoothFlex (INT8 x INT8); softmax on the SFU. Scores of one query chunk must
  fit psum (4 B each).
- LOP (decode steps only; prefill is dense and compute-bound): per KV head the LO codes (lop_bits/elem) of
  all M cached keys are read (class lop, when lop.surrogate_storage = "dram"), scored on the LOP unit in
  chunks of floor(lop.tile_bytes / code_bytes_per_key) keys, top-K selected; only the K selected keys and
  values are fetched (class kv) and exact attention runs on those K. K per head: data-driven counts when
  available (sim.lop_select), else min(k, M).
- SFU ops: sfu_cycles(op, rows, dim). Under "dependency-aware" scheduling the first (reduction) pass of
  rmsnorm / quantize (absmax) / softmax (max) is fused with the producer's output stream (docs/reference/vitallm.md §3.4,
  §5.5: reductions accumulated on the fly), so only the remaining passes sit on the critical path.
- lm_head on "host": not lowered (reported separately).

Policies: "inorder" -- every instruction of op j (weight DMA included) waits for op j-1's join.
"dependency-aware" -- true dataflow: weight DMAs only wait for buffer room (prefetch across op and step
boundaries); q/k/v (and gate/up) read the same input in parallel; the attention block is pipelined per
group of hg KV heads (hg*head_dim rows a multiple of L, e.g. 3 heads of 100 rows for L = 12): Q/K/V
projection tiles of group g+1 are listed before attention of group g, so the projection cores work on g+1
while BoothFlex (and LOP, SFU) run g (docs/reference/vitallm.md §5.5).
Dual-core load balancing (docs/reference/vitallm.md §3.2): a ternary tile may run on a TINT core or on BoothFlex (ternary
mode), whichever finishes it first; `dual_core=False` restricts BoothFlex to attention (ablation).
Decoder layers with identical signatures share one cached instruction block per step (placed per layer with
its DRAM address offsets), which is what makes 3B-scale runs fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lowbit.sim.config import HwConfig
from lowbit.sim.errors import WorkloadError
from lowbit.sim.modelspec import ModelSpec
from lowbit.sim.sched import C_BOOTH, C_DMAKV, C_DMAW, C_FP4, C_JOIN, C_LOP, C_SFU, C_TINT
from lowbit.sim.sram import B_ACT, B_KV, B_LOP, B_PSUM, B_WEIGHT, Buffers
from lowbit.sim.trace import Op
from lowbit.sim.units.booth import booth_int8_tile_cycles, booth_ternary_tile_cycles
from lowbit.sim.units.fp4 import fp4_tile_cycles
from lowbit.sim.units.lop import lop_score_cycles, lop_topk_cycles
from lowbit.sim.units.sfu import SFU_PASSES, sfu_cycles
from lowbit.sim.units.tint import tint_tile_cycles

try:  # 4 bits/elem per the numerics golden model
    from lowbit.sim.numerics.lop import LOP_SURROGATE_BITS_PER_ELEM as LOP_BITS
except ImportError:  # pragma: no cover
    LOP_BITS = 4

POLICIES = ("inorder", "dependency-aware")
# DRAM classes (same order as sim.dram.CLASSES)
D_W, D_KV, D_ACT, D_LOP = 0, 1, 2, 3
# activity classes
M_TERN, M_INT8, M_FP4, M_LOP, M_SFU = range(5)
# sub-kinds (timeline names / per-op accounting)
SUBS = ("w_dma", "tile", "join", "act_rd", "act_wr", "kv_wr", "lop_dma", "lop_score", "lop_topk", "k_dma",
        "qk", "softmax", "v_dma", "av", "sfu", "embed")
S = {n: i for i, n in enumerate(SUBS)}
COLS = ("main", "alt", "cyc", "cyc_alt", "nbytes", "addr", "wr", "dcls", "buf", "alloc", "free_of",
        "dep0", "dep1", "dep2", "jlo", "jhi", "barrier", "opi", "sub", "macs", "mcls",
        "rbuf", "rbytes", "rbuf2", "rbytes2", "wbuf", "wbytes")
IDX_COLS = ("free_of", "dep0", "dep1", "dep2", "jlo", "jhi")
DEFAULT = dict(alt=-1, cyc=0, cyc_alt=0, nbytes=0, addr=0, wr=0, dcls=0, buf=-1, alloc=0, free_of=-1,
               dep0=-1, dep1=-1, dep2=-1, jlo=0, jhi=0, barrier=1, opi=0, sub=0, macs=0, mcls=-1,
               rbuf=-1, rbytes=0, rbuf2=-1, rbytes2=0, wbuf=-1, wbytes=0)
EXT = -2  # placeholder in cached blocks: "this op's input join"

KV_BASE = 1 << 38
LOP_BASE = 1 << 39
ACT_BASE = 1 << 40
ACC_BYTES = 4  # psum / score word (acc_bits <= 32)


def weight_bits(fmt: str, packing: str = "2bit") -> float:
    """Storage bits per weight (issue #3): 2bit 2, 5trit 1.6, nvfp4 4.5, mxfp4 4.25, int8 8, bf16 16."""
    if fmt == "ternary":
        return 1.6 if packing == "5trit" else 2.0
    return {"nvfp4": 4.5, "mxfp4": 4.25, "int8": 8.0, "bf16": 16.0}[fmt]


class Emitter:
    """Column-wise instruction builder: Python-level emits plus cached numpy blocks."""

    def __init__(self) -> None:
        self.segs: list[dict[str, np.ndarray]] = []
        self.cur: dict[str, list[int]] = {c: [] for c in COLS}
        self.n = 0

    def emit(self, main: int, **kw: int) -> int:
        for c in COLS:
            self.cur[c].append(kw.get(c, main if c == "main" else DEFAULT[c]))
        self.n += 1
        return self.n - 1

    def _flush(self) -> None:
        if self.cur["main"]:
            self.segs.append({c: np.asarray(v, np.int64) for c, v in self.cur.items()})
            self.cur = {c: [] for c in COLS}

    def add_block(self, blk: dict[str, np.ndarray], ext: int, opi: int, waddr: int) -> int:
        """Append a cached block (local indices) at the end; EXT deps -> `ext`; weight DMA addr += waddr."""
        self._flush()
        off = self.n
        b = {c: blk[c] for c in COLS}
        for c in IDX_COLS:
            v = blk[c]
            b[c] = np.where(v >= 0, v + off, np.where(v == EXT, ext, v)) if c.startswith("dep") else \
                np.where(v >= 0, v + off, v)
        b["opi"] = np.full(len(blk["main"]), opi, np.int64)
        b["addr"] = np.where((blk["main"] == C_DMAW) & (blk["dcls"] == D_W), blk["addr"] + waddr, blk["addr"])
        self.segs.append(b)
        self.n += len(blk["main"])
        return self.n - 1  # index of the block's final join

    def add_layer(self, blk: dict[str, np.ndarray], ext: int, opi_off: int, offs: tuple[int, int, int, int]) -> int:
        """Append a cached layer block: local indices shifted, EXT -> `ext`, opi shifted, DMA addresses
        shifted by the layer's offset of their DRAM class (weights, kv, act, lop)."""
        self._flush()
        off = self.n
        b = dict(blk)
        for c in IDX_COLS:
            v = blk[c]
            b[c] = np.where(v >= 0, v + off, np.where(v == EXT, ext, v)) if c.startswith("dep") else \
                np.where(v >= 0, v + off, v)
        b["opi"] = blk["opi"] + opi_off
        dma = (blk["main"] == C_DMAW) | (blk["main"] == C_DMAKV)
        b["addr"] = blk["addr"] + np.where(dma, np.asarray(offs, np.int64)[blk["dcls"]], 0)
        self.segs.append(b)
        self.n += len(blk["main"])
        return self.n - 1

    def add_arrays(self, cols: dict[str, np.ndarray]) -> None:
        """Append a numpy segment whose indices are already absolute in this emitter."""
        self._flush()
        self.segs.append(cols)
        self.n += len(cols["main"])

    def finish(self) -> dict[str, np.ndarray]:
        self._flush()
        if not self.segs:
            return {c: np.zeros(0, np.int64) for c in COLS}
        if len(self.segs) == 1:
            return {c: np.ascontiguousarray(self.segs[0][c], np.int64) for c in COLS}
        return {c: np.concatenate([s[c] for s in self.segs]) for c in COLS}


@dataclass
class LinearPlan:
    L: int
    main: int
    alt: int
    R: int
    nk: int
    kc: int
    tc: int
    spill: bool
    tile_cap: int


@dataclass
class Lowering:
    """Per-run lowering context: config, model, policy, LOP settings and block caches."""

    cfg: HwConfig
    model: ModelSpec
    policy: str
    lop_on: bool
    lop_k: int
    lop_counts: dict[tuple[int, int], Any] | None = None
    dual_core: bool = True  # False: BoothFlex runs attention only (ablation of dual-core load balancing)
    bufs: Buffers = field(init=False)
    cache: dict[tuple, dict[str, np.ndarray]] = field(default_factory=dict)  # projection tile blocks
    layer_cache: dict[tuple, Any] = field(default_factory=dict)  # whole-layer blocks of the current step
    wbase: dict[tuple[int, str], int] = field(default_factory=dict)
    wtop: int = 0
    layer_wbytes: int = 0

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise WorkloadError(f"unknown schedule '{self.policy}'; allowed: {', '.join(POLICIES)}")
        self.bufs = Buffers.from_config(self.cfg)
        self.dep_aware = self.policy == "dependency-aware"
        m = self.model
        self.hd = m.head_dim
        self.G = m.n_kv_heads
        self.grp = m.n_heads // m.n_kv_heads
        self.code_bytes = math.ceil(self.hd * LOP_BITS / 8)  # LO codes per key per head

    # ------------------------------------------------------------------ projections

    def plan_linear(self, op: Op, tokens: int, fin: int, fout: int, fmt: str) -> LinearPlan:
        cfg = self.cfg
        where = f"op {op.name} ({fmt} {fin}x{fout})"
        if fmt == "ternary":
            if cfg.has("tint"):
                main, alt = C_TINT, (C_BOOTH if cfg.has("booth") and cfg.booth.ternary_mode and self.dual_core
                                     else -1)
            elif cfg.has("booth") and cfg.booth.ternary_mode:
                main, alt = C_BOOTH, -1
            else:
                raise WorkloadError(f"{cfg.name}: {where}: ternary weights need a TINT core or a BoothFlex core "
                                    "with ternary_mode; use a preset with units tint/booth")
        elif fmt in ("nvfp4", "mxfp4"):
            if not cfg.has("fp4"):
                raise WorkloadError(f"{cfg.name}: {where}: {fmt} weights need an FP4 core but units = "
                                    f"{list(cfg.units)}; use --hw vitallm-fp4 or a ternary model")
            if cfg.fp4.format != fmt:
                raise WorkloadError(f"{cfg.name}: {where}: the FP4 core is configured for {cfg.fp4.format}, "
                                    f"not {fmt}; set fp4.format = \"{fmt}\"")
            if fin % cfg.fp4.block:
                raise WorkloadError(f"{cfg.name}: {where}: in_features {fin} is not a multiple of the {fmt} "
                                    f"block {cfg.fp4.block}; the tiling cannot cover it")
            main, alt = C_FP4, -1
        elif fmt == "int8":
            if not cfg.has("booth"):
                raise WorkloadError(f"{cfg.name}: {where}: int8 weights need the BoothFlex core")
            main, alt = C_BOOTH, -1
        else:
            raise WorkloadError(f"{cfg.name}: {where}: no unit runs {fmt} weights (supported: ternary, int8, "
                                "nvfp4/mxfp4 with an FP4 core); keep lm_head = \"host\" for bf16 heads")
        lanes = {C_TINT: cfg.tint.lanes, C_BOOTH: cfg.booth.lanes, C_FP4: cfg.fp4.lanes}
        L = lanes[main] if alt < 0 else math.lcm(lanes[main], lanes[alt])
        ncons = (cfg.tint.cores if main == C_TINT else 1) + (1 if alt >= 0 else 0)
        cap = self.bufs.tile[B_WEIGHT] // ncons
        align = cfg.fp4.block if main == C_FP4 else 1
        bits = weight_bits(fmt, cfg.tint.weight_packing)

        def row_bytes(k: int) -> int:
            if fmt == "ternary" and cfg.tint.weight_packing == "5trit":
                return math.ceil(k / 5)
            return math.ceil(k * bits / 8)

        nk = 1
        while True:
            kc = -(-fin // nk)
            kc = -(-kc // align) * align
            if L * row_bytes(kc) <= cap or kc <= align:
                break
            nk += 1
        self.bufs.check(B_WEIGHT, L * row_bytes(kc), f"{where}: weight tile of {L} rows x {kc}", cap)
        spill = tokens * fin > self.bufs.tile[B_ACT]
        tc = tokens
        if spill:
            tc = self.bufs.tile[B_ACT] // fin
            self.bufs.check(B_ACT, fin, f"{where}: input activations of 1 token x {fin}")
        pcap = self.bufs.tile[B_PSUM] // ncons
        if L * tc * ACC_BYTES > pcap:  # fewer tokens per chunk so that L rows of partial sums fit psum
            tc = max(1, pcap // (L * ACC_BYTES))
            spill = spill or tc < tokens
        self.bufs.check(B_PSUM, L * tc * ACC_BYTES, f"{where}: partial sums {L} rows x {tc} tokens", pcap)
        R = max(L, min(cap // row_bytes(kc), pcap // (tc * ACC_BYTES)) // L * L)
        R = min(R, -(-fout // L) * L)
        return LinearPlan(L, main, alt, R, nk, kc, tc, spill, row_bytes(kc))

    def _tile_cycles(self, cls: int, fmt: str, k: int, passes: int) -> int:
        c = self.cfg
        if cls == C_TINT:
            return tint_tile_cycles(c.tint, k, passes)
        if cls == C_FP4:
            return fp4_tile_cycles(c.fp4, k, passes)
        if fmt == "int8":
            return booth_int8_tile_cycles(c.booth, k, passes)
        return booth_ternary_tile_cycles(c.booth, k, passes)

    def linear_block(self, op: Op, tokens: int, fin: int, fout: int, fmt: str) -> dict[str, np.ndarray]:
        key = ("lin", tokens, fin, fout, fmt)
        if key in self.cache:
            return self.cache[key]
        p = self.plan_linear(op, tokens, fin, fout, fmt)
        cfg = self.cfg
        lanes = {C_TINT: cfg.tint.lanes, C_BOOTH: cfg.booth.lanes, C_FP4: cfg.fp4.lanes}
        bits = weight_bits(fmt, cfg.tint.weight_packing)
        e = Emitter()
        dep_w = EXT if not self.dep_aware else -1
        tchunks = [(t0, min(tokens, t0 + p.tc)) for t0 in range(0, tokens, p.tc)]
        rblocks = [(r0, min(fout, r0 + p.R)) for r0 in range(0, fout, p.R)]
        kchunks = [(k0, min(fin, k0 + p.kc)) for k0 in range(0, fin, p.kc)]
        # tile grid (row block major, k chunk minor), same for every token chunk
        r0s = np.repeat(np.arange(0, fout, p.R), len(kchunks))
        k0s = np.tile(np.arange(0, fin, p.kc), len(rblocks))
        rr = np.minimum(fout, r0s + p.R) - r0s
        kk = np.minimum(fin, k0s + p.kc) - k0s
        if fmt == "ternary" and cfg.tint.weight_packing == "5trit":
            wb = rr * -(-kk // 5)
        else:
            wb = -(-(rr * kk * int(bits * 4)) // 32)
        woff = np.concatenate([[0], np.cumsum(wb)[:-1]])
        T = len(rr)
        mcls = M_TERN if fmt == "ternary" else M_FP4 if p.main == C_FP4 else M_INT8
        for t0, t1 in tchunks:
            tk = t1 - t0
            first = e.n
            act = -1
            if p.spill:
                act = e.emit(C_DMAW, nbytes=tk * fin, addr=ACT_BASE + t0 * fin, dcls=D_ACT, buf=B_ACT,
                             alloc=tk * fin, dep0=EXT, sub=S["act_rd"], wbuf=B_ACT, wbytes=tk * fin)
            memo: dict[tuple[int, int], tuple[int, int]] = {}
            c1 = np.zeros(T, np.int64)
            c2 = np.zeros(T, np.int64)
            for r, k in set(zip(rr.tolist(), kk.tolist(), strict=True)):
                a1 = self._tile_cycles(p.main, fmt, k, tk * -(-r // lanes[p.main]))
                a2 = self._tile_cycles(p.alt, fmt, k, tk * -(-r // lanes[p.alt])) if p.alt >= 0 else 0
                memo[(r, k)] = (a1, a2)
            for (r, k), (a1, a2) in memo.items():
                sel = (rr == r) & (kk == k)
                c1[sel] = a1
                c2[sel] = a2
            base = e.n
            dma_idx = base + 2 * np.arange(T)
            col = {c: np.full(2 * T, DEFAULT.get(c, 0), np.int64) for c in COLS}
            D, Tl = slice(0, 2 * T, 2), slice(1, 2 * T, 2)
            col["main"][D] = C_DMAW
            col["nbytes"][D] = wb
            col["addr"][D] = woff
            col["dcls"][D] = D_W
            col["buf"][D] = B_WEIGHT
            col["alloc"][D] = wb
            col["dep0"][D] = dep_w
            col["barrier"][D] = 0 if self.dep_aware else 1
            col["sub"][D] = S["w_dma"]
            col["wbuf"][D] = B_WEIGHT
            col["wbytes"][D] = wb
            col["main"][Tl] = p.main
            col["alt"][Tl] = p.alt
            col["cyc"][Tl] = c1
            col["cyc_alt"][Tl] = c2
            col["dep0"][Tl] = dma_idx
            col["dep1"][Tl] = EXT
            col["dep2"][Tl] = act
            col["free_of"][Tl] = dma_idx
            col["sub"][Tl] = S["tile"]
            col["macs"][Tl] = rr * kk * tk
            col["mcls"][Tl] = mcls
            col["rbuf"][Tl] = B_WEIGHT
            col["rbytes"][Tl] = wb
            col["rbuf2"][Tl] = B_ACT
            col["rbytes2"][Tl] = kk * tk
            col["wbuf"][Tl] = B_PSUM
            col["wbytes"][Tl] = rr * tk * ACC_BYTES
            e.add_arrays(col)
            if p.spill:
                j = e.emit(C_JOIN, jlo=first, jhi=e.n, free_of=act, sub=S["join"])
                e.emit(C_DMAW, nbytes=tk * fout, addr=ACT_BASE + (1 << 30) + t0 * fout, wr=1, dcls=D_ACT,
                       dep0=j, sub=S["act_wr"], rbuf=B_ACT, rbytes=tk * fout)
        e.emit(C_JOIN, jlo=0, jhi=e.n, sub=S["join"])
        blk = e.finish()
        blk["wbytes_total"] = np.int64(sum(blk["nbytes"][(blk["main"] == C_DMAW) & (blk["dcls"] == D_W)]))
        self.cache[key] = blk
        return blk

    def weight_addr(self, layer: int, name: str, nbytes: int) -> int:
        k = (layer, name)
        if k not in self.wbase:
            self.wbase[k] = self.wtop
            self.wtop += -(-nbytes // 4096) * 4096
        return self.wbase[k]

    def add_linear(self, e: Emitter, op: Op, opi: int, ext: int, fout: int | None = None, row0: int = 0) -> int:
        """Place the (cached) tile block of `op` (or of its output rows [row0, row0 + fout))."""
        fo = op["out_features"] if fout is None else fout
        fin, fmt = op["in_features"], op["weight_format"]
        blk = self.linear_block(op, op["tokens"], fin, fo, fmt)
        full = math.ceil(op["out_features"] * fin * weight_bits(fmt, self.cfg.tint.weight_packing) / 8)
        name = op.name.split(".", 2)[-1] if op.layer >= 0 else op.name
        base = self.weight_addr(0, name, full)
        return e.add_block(blk, ext, opi, base + math.ceil(row0 * fin * weight_bits(fmt, self.cfg.tint.weight_packing) / 8))

    # ------------------------------------------------------------------ SFU

    def sfu(self, e: Emitter, kind: str, rows: int, dim: int, opi: int, deps: tuple[int, ...]) -> int:
        c = sfu_cycles(self.cfg.sfu, kind, rows, dim)
        if self.dep_aware and kind in ("rmsnorm", "quantize", "softmax") and SFU_PASSES[kind] > 1:
            c -= rows * -(-dim // self.cfg.sfu.lanes)  # reduction pass fused with the producer's stream
        d = list(deps) + [-1, -1, -1]
        return e.emit(C_SFU, cyc=c, dep0=d[0], dep1=d[1], dep2=d[2], opi=opi, sub=S["sfu"], macs=rows * dim,
                      mcls=M_SFU, rbuf=B_ACT, rbytes=rows * dim, wbuf=B_ACT, wbytes=rows * dim)

    # ------------------------------------------------------------------ attention parts (per KV head)

    def kv_chunk(self) -> int:
        c = self.bufs.tile[B_KV] // self.hd
        self.bufs.check(B_KV, self.hd, f"attention: one key of head_dim {self.hd} (INT8)")
        return c

    def kv_addr(self, layer: int, g: int, v: bool) -> int:
        mp = self.model.max_positions
        return KV_BASE + ((layer * self.G + g) * 2 + int(v)) * mp * self.hd

    def selected(self, layer: int, step: int, g: int, m: int) -> int:
        if self.lop_counts is not None and (layer, step) in self.lop_counts:
            return int(min(m, int(self.lop_counts[(layer, step)][g])))
        return min(self.lop_k, m)

    def emit_lop(self, e: Emitter, op: Op, opi: int, g: int, m: int, deps: tuple[int, int]) -> int:
        """LO-code reads + scoring in chunks, then comparison-free top-K; returns the top-K instruction."""
        cfg = self.cfg
        cb = self.code_bytes
        chunk = self.bufs.tile[B_LOP] // cb
        self.bufs.check(B_LOP, cb, f"LOP: LO codes of one key ({self.hd} x {LOP_BITS} bit)")
        first = e.n
        dram = cfg.lop.surrogate_storage == "dram"
        for j0 in range(0, m, chunk):
            n = min(m, j0 + chunk) - j0
            d = -1
            if dram:
                d = e.emit(C_DMAKV, nbytes=n * cb, addr=LOP_BASE + ((0 * self.G + g) *
                           self.model.max_positions + j0) * cb, dcls=D_LOP, buf=B_LOP, alloc=n * cb,
                           dep0=deps[0], opi=opi, sub=S["lop_dma"], wbuf=B_LOP, wbytes=n * cb)
            e.emit(C_LOP, cyc=self.grp * lop_score_cycles(cfg.lop, n, self.hd), dep0=d, dep1=deps[1],
                   free_of=d, opi=opi, sub=S["lop_score"], macs=n * self.hd * self.grp, mcls=M_LOP,
                   rbuf=B_LOP, rbytes=n * cb)
        j = e.emit(C_JOIN, jlo=first, jhi=e.n, opi=opi, sub=S["join"])
        return e.emit(C_LOP, cyc=lop_topk_cycles(cfg.lop, m), dep0=j, opi=opi, sub=S["lop_topk"])

    def emit_qk(self, e: Emitter, op: Op, opi: int, g: int, q0: int, q1: int, keys: int, ctx: int,
                dep_k: int, dep_q: int, causal: bool) -> int:
        """K chunks + QK^T tiles for queries [q0, q1) of KV head g over `keys` keys; returns their join."""
        cfg, hd = self.cfg, self.hd
        c = self.kv_chunk()
        first = e.n
        qpos0 = ctx - op["tokens"]  # absolute position of query 0
        for k0 in range(0, keys, c):
            k1 = min(keys, k0 + c)
            pairs = _pairs(q0, q1, qpos0, k0, k1) if causal else (q1 - q0) * (k1 - k0)
            if pairs == 0:
                continue
            d = e.emit(C_DMAKV, nbytes=(k1 - k0) * hd, addr=self.kv_addr(0, g, False) + k0 * hd,
                       dcls=D_KV, buf=B_KV, alloc=(k1 - k0) * hd, dep0=dep_k, opi=opi, sub=S["k_dma"],
                       wbuf=B_KV, wbytes=(k1 - k0) * hd)
            nd = pairs * self.grp
            e.emit(C_BOOTH, cyc=booth_int8_tile_cycles(cfg.booth, hd, -(-nd // cfg.booth.lanes)), dep0=d,
                   dep1=dep_q, free_of=d, opi=opi, sub=S["qk"], macs=nd * hd, mcls=M_INT8, rbuf=B_KV,
                   rbytes=(k1 - k0) * hd, wbuf=B_PSUM, wbytes=nd * ACC_BYTES)
        return e.emit(C_JOIN, jlo=first, jhi=e.n, opi=opi, sub=S["join"])

    def emit_av(self, e: Emitter, op: Op, opi: int, g: int, q0: int, q1: int, keys: int, ctx: int,
                dep_v: int, dep_p: int, causal: bool) -> int:
        cfg, hd = self.cfg, self.hd
        c = self.kv_chunk()
        first = e.n
        qpos0 = ctx - op["tokens"]
        for k0 in range(0, keys, c):
            k1 = min(keys, k0 + c)
            pairs = _pairs(q0, q1, qpos0, k0, k1) if causal else (q1 - q0) * (k1 - k0)
            if pairs == 0:
                continue
            d = e.emit(C_DMAKV, nbytes=(k1 - k0) * hd, addr=self.kv_addr(0, g, True) + k0 * hd,
                       dcls=D_KV, buf=B_KV, alloc=(k1 - k0) * hd, dep0=dep_v, opi=opi, sub=S["v_dma"],
                       wbuf=B_KV, wbytes=(k1 - k0) * hd)
            nq = q1 - q0
            kk = -(-pairs // nq)  # average keys per query in this chunk
            outs = nq * self.grp * hd
            e.emit(C_BOOTH, cyc=booth_int8_tile_cycles(cfg.booth, kk, -(-outs // cfg.booth.lanes)), dep0=d,
                   dep1=dep_p, free_of=d, opi=opi, sub=S["av"], macs=pairs * self.grp * hd, mcls=M_INT8,
                   rbuf=B_KV, rbytes=(k1 - k0) * hd, wbuf=B_PSUM, wbytes=outs * ACC_BYTES)
        return e.emit(C_JOIN, jlo=first, jhi=e.n, opi=opi, sub=S["join"])

    def qchunks(self, tokens: int, keys: int) -> list[tuple[int, int]]:
        per = self.bufs.tile[B_PSUM] // (self.grp * keys * ACC_BYTES) if keys else tokens
        self.bufs.check(B_PSUM, self.grp * keys * ACC_BYTES, f"attention scores of 1 query x {keys} keys")
        per = max(1, per)
        return [(q, min(tokens, q + per)) for q in range(0, tokens, per)]

    def use_lop(self, op: Op) -> bool:
        return self.lop_on and op.phase == "decode" and op["tokens"] == 1


def _pairs(q0: int, q1: int, qpos0: int, k0: int, k1: int) -> int:
    """Causal (query, key) pairs: query i (absolute position qpos0 + i) sees keys 0..qpos0+i."""
    tot = 0
    for i in range(q0, q1):
        hi = min(k1, qpos0 + i + 1)
        if hi > k0:
            tot += hi - k0
    return tot
