"""Tiling rules: how a projection or an attention head is cut into tiles that fit the on-chip buffers.

Rules (all derived from the config; DESIGN ASSUMPTIONS stated here, cited in the validation report):
- Projection (linear) tiles: R output rows x kc input features of the weight matrix, for tc tokens.
  The units that run a weight format are the design's units that can run it, in unit-catalogue order
  (lowbit.sim.units.catalog): the first runs the tiles, the second (if any) is the dual-core alternative.
  R is a multiple of L = lcm(lanes of every unit class that may run the tile) so no class wastes lanes on
  full tiles. The weight buffer is split evenly among the physical units that consume weight tiles (e.g.
  two TINT cores + BoothFlex), each share double-buffered: a tile holds at most weight.tile_bytes / n_consumers bytes. If L
  rows of the full input width do not fit, the input width is split into nk equal chunks (partial sums
  accumulate in psum). Weight bytes: 2bit 0.25 B/weight, 5trit ceil(k/5) B per row, nvfp4 4.5 bit, mxfp4
  4.25 bit, int8 1 B, bf16 2 B.
- Activations stay on chip when tokens x in_features fits act.tile_bytes (decode); otherwise (prefill) they
  spill: tokens are processed in chunks of tc = floor(act.tile_bytes / in_features), each chunk's input is
  read from DRAM (class activations) and its output written back; the weights are re-read per chunk.
- Attention per KV head (head-level): K and V are fetched in chunks of floor(kv.tile_bytes / head_dim) keys
  (INT8). QK^T and score.V run on the design's first unit that runs int8 tiles (BoothFlex in the VitaLLM
  presets); softmax on the SFU. Two tilings (attention_plan):
  dense: a query chunk holds as many queries as fit one psum tile with their scores over ALL keys (4 B each;
  per = floor(psum.tile_bytes / (group x keys x 4))); every K and V chunk is fetched once per query chunk.
  online (FlashAttention-style; Milakov & Gimelshein 2018, arXiv:1805.02867; Dao 2023, FlashAttention-2,
  arXiv:2307.08691): the keys are tiled too, into key blocks of kb = min(kv chunk, keys) keys; a query block
  of Bq queries keeps, per score row (group rows per query), a score tile of kb words, its output
  accumulator of head_dim words and its running max and sum (2 words) in one psum tile:
  Bq = floor(psum.tile_bytes / (group x (kb + head_dim + 2) x 4)) (kb shrinks only when not even one query
  fits); every K and V chunk is fetched once per query block.
  The dense tiling is used when its query chunk is at least as large as the online query block or holds every
  query of the step (it then fetches K/V no more often and needs no rescaling), else the online one. So a
  step with at most kv chunk + head_dim + 2 keys, or whose queries all fit one dense chunk (a decode query
  over up to floor(psum.tile_bytes / (4 group)) keys: 6,144 for 3B on vitallm), keeps the dense tiling.
- LOP: LO codes are scored in chunks of floor(lop.tile_bytes / code_bytes_per_key) keys.
Dual-core load balancing (docs/reference/vitallm.md §3.2): a ternary tile may run on a TINT core or on BoothFlex
(ternary mode); `dual_core=False` restricts BoothFlex to attention (ablation).
Static unit assignment (UnitAssigner, applied to every chunk before it is scheduled or written to a program):
the compiler, not the hardware, decides which physical unit runs each compute instruction. Rule: in program
order, an instruction that several physical units can run (the replicas of its class, e.g. TINT0/TINT1, and
of its alternative class, e.g. BoothFlex) goes to the one whose compile-time load plus the instruction's
cycles on it is smallest (ties: lowest unit index); the load of a unit is the sum of the cycles (sim.units
formulas) of the instructions assigned to it so far in the chunk (one decoder layer of one step; counted
per chunk so that identical layers get identical queues and a program stores their block once). It uses
only the instruction list, never run-time state (DESIGN ASSUMPTION: work-proportional balancing stands in
for the papers' load balancing, which they do not specify at this level), so each unit's queue is fixed in
the program.
A tile that cannot fit its buffer is a WorkloadError (sim.sram.Buffers.check).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import lowbit.sim.isa
from lowbit.sim.config import HwConfig
from lowbit.sim.errors import WorkloadError
from lowbit.sim.isa import (
    B_ACT,
    B_KV,
    B_LOP,
    B_PSUM,
    B_WEIGHT,
    C_DMAKV,
    C_DMAW,
    UNIT_CLASS_BASE,
    class_unit,
    unit_class,
)
from lowbit.sim.nbcache import njit_cached
from lowbit.sim.sram import Buffers
from lowbit.sim.units import catalog

ACC_BYTES = 4  # psum / score word (acc_bits <= 32)


def weight_bits(fmt: str, packing: str = "2bit") -> float:
    """Storage bits per weight: ternary 2bit 2, 5trit 1.6; nvfp4 4.5, mxfp4 4.25, int8 8, bf16 16."""
    if fmt == "ternary":
        return 1.6 if packing == "5trit" else 2.0
    return {"nvfp4": 4.5, "mxfp4": 4.25, "int8": 8.0, "bf16": 16.0}[fmt]


def row_bytes(fmt: str, packing: str, k: int) -> int:
    """Bytes of one weight row of `k` inputs in a tile: 5trit ceil(k/5), else ceil(k * bits / 8)."""
    if fmt == "ternary" and packing == "5trit":
        return math.ceil(k / 5)
    return math.ceil(k * weight_bits(fmt, packing) / 8)


@dataclass(frozen=True)
class LinearPlan:
    """Tiling of one projection: tiles of R rows x kc inputs (nk chunks of the input width) for tc tokens."""

    L: int          # row multiple: lcm of the lanes of the classes that may run a tile
    main: int       # unit class that runs the tiles
    alt: int        # alternative class (-1: none)
    R: int          # rows per tile
    nk: int         # input-width chunks
    kc: int         # inputs per chunk
    tc: int         # tokens per chunk
    spill: bool     # activations go through DRAM (token chunks)
    row_bytes: int  # bytes of one weight row of kc inputs


def lanes_of(cfg: HwConfig, cls: int) -> int:
    """Output lanes (rows per pass) of a projection unit class (the catalogue's `lanes`)."""
    u = class_unit(cls)
    return u.lanes(cfg.section(u.name))


def projection_classes(cfg: HwConfig, where: str, fmt: str, dual_core: bool) -> tuple[int, int]:
    """(main, alt) unit classes that run `fmt` weight tiles: the design's units that can run them, in
    catalogue order; the second one is the dual-core alternative. WorkloadError when none can."""
    able = [u.name for u in catalog.UNITS.values() if cfg.has(u.name) and u.can_run(cfg.section(u.name), fmt)]
    if not able:
        built = [f"{u.name} ({u.summary})" for u in catalog.UNITS.values() if fmt in u.formats]
        hint = (f"units built for {fmt}: {'; '.join(built)}; add one to `units` or set its parameters" if built
                else "no catalogued unit runs them (keep lm_head = \"host\" for bf16 heads)")
        raise WorkloadError(f"{cfg.name}: {where}: no unit runs {fmt} weights in units = {list(cfg.units)}; {hint}")
    main = unit_class(able[0])
    return main, (unit_class(able[1]) if dual_core and len(able) > 1 else -1)


def int8_class(cfg: HwConfig, what: str) -> int:
    """The unit class that runs INT8 x INT8 attention tiles: the design's first unit that runs int8."""
    return projection_classes(cfg, what, "int8", False)[0]


def plan_linear(cfg: HwConfig, bufs: Buffers, name: str, tokens: int, fin: int, fout: int, fmt: str,
                dual_core: bool = True) -> LinearPlan:
    """Tile a `fin` x `fout` projection of `tokens` tokens (rules in the module docstring)."""
    where = f"op {name} ({fmt} {fin}x{fout})"
    main, alt = projection_classes(cfg, where, fmt, dual_core)
    unit = class_unit(main)
    align = unit.align(cfg.section(unit.name))
    if fin % align:
        raise WorkloadError(f"{cfg.name}: {where}: in_features {fin} is not a multiple of the {fmt} "
                            f"block {align}; the tiling cannot cover it")
    L = lanes_of(cfg, main) if alt < 0 else math.lcm(lanes_of(cfg, main), lanes_of(cfg, alt))
    # the weight buffer is split among the physical units that consume weight tiles
    ncons = sum(class_unit(c).copies(cfg.section(class_unit(c).name)) for c in (main, alt) if c >= 0)
    cap = bufs.tile[B_WEIGHT] // ncons
    packing = cfg.tint.weight_packing
    nk = 1
    while True:
        kc = -(-fin // nk)
        kc = -(-kc // align) * align
        if L * row_bytes(fmt, packing, kc) <= cap or kc <= align:
            break
        nk += 1
    rb = row_bytes(fmt, packing, kc)
    bufs.check(B_WEIGHT, L * rb, f"{where}: weight tile of {L} rows x {kc}", cap)
    spill = tokens * fin > bufs.tile[B_ACT]
    tc = tokens
    if spill:
        tc = bufs.tile[B_ACT] // fin
        bufs.check(B_ACT, fin, f"{where}: input activations of 1 token x {fin}")
    pcap = bufs.tile[B_PSUM] // ncons
    if L * tc * ACC_BYTES > pcap:  # fewer tokens per chunk so that L rows of partial sums fit psum
        tc = max(1, pcap // (L * ACC_BYTES))
        spill = spill or tc < tokens
    bufs.check(B_PSUM, L * tc * ACC_BYTES, f"{where}: partial sums {L} rows x {tc} tokens", pcap)
    R = max(L, min(cap // rb, pcap // (tc * ACC_BYTES)) // L * L)
    R = min(R, -(-fout // L) * L)
    return LinearPlan(L, main, alt, R, nk, kc, tc, spill, rb)


def tile_grid(p: LinearPlan, fin: int, fout: int, fmt: str, packing: str) -> tuple[np.ndarray, ...]:
    """Tiles of a plan (row block major, input chunk minor): (rows, inputs, weight bytes, weight byte
    offset) per tile; the same grid serves every token chunk."""
    nr, nkc = -(-fout // p.R), -(-fin // p.kc)
    r0s = np.repeat(np.arange(0, fout, p.R), nkc)
    k0s = np.tile(np.arange(0, fin, p.kc), nr)
    rr = np.minimum(fout, r0s + p.R) - r0s
    kk = np.minimum(fin, k0s + p.kc) - k0s
    if fmt == "ternary" and packing == "5trit":
        wb = rr * -(-kk // 5)
    else:
        wb = -(-(rr * kk * int(weight_bits(fmt, packing) * 4)) // 32)
    woff = np.concatenate([[0], np.cumsum(wb)[:-1]])
    return rr, kk, wb, woff


def tile_cycles(cfg: HwConfig, cls: int, fmt: str, k: int, passes: int) -> int:
    """Cycles of one tile of `passes` passes over `k` inputs on a unit of class `cls` (the catalogue's formula)."""
    u = class_unit(cls)
    return u.tile_cycles(cfg.section(u.name), fmt, k, passes)


def kv_chunk(bufs: Buffers, head_dim: int) -> int:
    """Keys per K (or V) DMA chunk: floor(kv.tile_bytes / head_dim) (INT8)."""
    bufs.check(B_KV, head_dim, f"attention: one key of head_dim {head_dim} (INT8)")
    return bufs.tile[B_KV] // head_dim


def lop_chunk(bufs: Buffers, code_bytes: int, what: str) -> int:
    """Keys per LO-code chunk: floor(lop.tile_bytes / code_bytes)."""
    bufs.check(B_LOP, code_bytes, what)
    return bufs.tile[B_LOP] // code_bytes


def query_chunks(bufs: Buffers, group: int, tokens: int, keys: int) -> list[tuple[int, int]]:
    """Query ranges whose scores (group query heads x keys, ACC_BYTES each) fit one psum tile."""
    per = bufs.tile[B_PSUM] // (group * keys * ACC_BYTES) if keys else tokens
    bufs.check(B_PSUM, group * keys * ACC_BYTES, f"attention scores of 1 query x {keys} keys")
    per = max(1, per)
    return [(q, min(tokens, q + per)) for q in range(0, tokens, per)]


@dataclass(frozen=True)
class AttentionPlan:
    """Tiling of one KV head's attention for `tokens` queries over `keys` keys (module docstring)."""

    online: bool                     # online softmax over key blocks (else dense: scores over all keys)
    queries: list[tuple[int, int]]   # query chunks (dense) / query blocks (online): [q0, q1)
    key_block: int                   # keys per K/V chunk (and per score tile, online)


def online_query_block(bufs: Buffers, group: int, head_dim: int, kb: int) -> int:
    """Queries per online-softmax query block: floor(psum.tile_bytes / (group x (kb + head_dim + 2) x 4))."""
    return bufs.tile[B_PSUM] // (group * (kb + head_dim + 2) * ACC_BYTES)


def attention_plan(bufs: Buffers, group: int, head_dim: int, tokens: int, keys: int) -> AttentionPlan:
    """Dense or online tiling of one KV head's attention (module docstring); WorkloadError when not even one
    query with a key block of one key and its output accumulator fits psum."""
    c = kv_chunk(bufs, head_dim)
    psum = bufs.tile[B_PSUM]
    per = psum // (group * keys * ACC_BYTES) if keys else tokens
    kb = min(c, max(keys, 1))
    bq = online_query_block(bufs, group, head_dim, kb)
    if per >= 1 and (per >= tokens or per >= bq):
        return AttentionPlan(False, query_chunks(bufs, group, tokens, keys), c)
    if bq < 1:  # shrink the key block so that one query's row fits
        kb = psum // (group * ACC_BYTES) - head_dim - 2
        bufs.check(B_PSUM, group * (head_dim + 3) * ACC_BYTES,
                   f"attention (online softmax): score tile of 1 query x 1 key, its output accumulator "
                   f"({head_dim}) and running max/sum, for {group} query heads")
        bq = 1
    bq = min(bq, tokens)
    return AttentionPlan(True, [(q, min(tokens, q + bq)) for q in range(0, tokens, bq)], kb)


def causal_pairs_blocks(q0: int, q1: int, qpos0: int, k0s: np.ndarray, kb: int, keys: int) -> np.ndarray:
    """causal_pairs of queries [q0, q1) with every key block [k0, min(keys, k0 + kb)) of `k0s` (vectorised)."""
    pos = qpos0 + np.arange(q0, q1, dtype=np.int64) + 1  # keys each query sees
    k1s = np.minimum(keys, k0s + kb)
    hi = np.minimum(k1s[:, None], pos[None, :])
    return np.maximum(hi - k0s[:, None], 0).sum(axis=1)


def causal_pairs(q0: int, q1: int, qpos0: int, k0: int, k1: int) -> int:
    """Causal (query, key) pairs: query i (absolute position qpos0 + i) sees keys 0..qpos0+i."""
    tot = 0
    for i in range(q0, q1):
        hi = min(k1, qpos0 + i + 1)
        if hi > k0:
            tot += hi - k0
    return tot


def head_group(L: int, head_dim: int, kv_heads: int) -> int:
    """KV heads per attention pipeline group: the fewest whose hg*head_dim rows are a multiple of L."""
    return min(kv_heads, L // math.gcd(L, head_dim))


# ------------------------------------------------------------------------------------- unit assignment


def physical_units(cfg: HwConfig) -> list[tuple[str, int]]:
    """Physical units (name, class) in scheduler order: the design's catalogued units in catalogue order (a
    replicated unit as name0, name1, ...), then the DMA queues (the same list as lowbit.sim.engine.unit_list)."""
    u: list[tuple[str, int]] = []
    for unit in catalog.UNITS.values():
        if cfg.has(unit.name):
            cls = unit_class(unit.name)
            if unit.replicas is None:
                u.append((unit.name, cls))
            else:
                u += [(f"{unit.name}{i}", cls) for i in range(unit.copies(cfg.section(unit.name)))]
    return u + [("dma_w", C_DMAW), ("dma_kv", C_DMAKV)]


@njit_cached(lowbit.sim.isa)
def _assign(main, alt, cyc, cyc_alt, unit, ucls, load):
    """The static assignment rule (module docstring); returns -(i + 1) for an instruction no unit runs."""
    for i in range(main.shape[0]):
        c = main[i]
        if unit[i] >= 0:
            if c >= UNIT_CLASS_BASE:
                load[unit[i]] += cyc[i]
            continue
        if c < UNIT_CLASS_BASE:
            if c == C_DMAW or c == C_DMAKV:  # a DMA: its queue
                for v in range(ucls.shape[0]):
                    if ucls[v] == c:
                        unit[i] = v
                        break
                if unit[i] < 0:
                    return -(i + 1)
            continue
        best = -1
        bcy = np.int64(0)
        bfin = np.int64(0)
        for v in range(ucls.shape[0]):
            if ucls[v] == c:
                cy = cyc[i]
            elif alt[i] >= 0 and ucls[v] == alt[i]:
                cy = cyc_alt[i]
            else:
                continue
            fin = load[v] + cy
            if best < 0 or fin < bfin:
                best = v
                bcy = cy
                bfin = fin
        if best < 0:
            return -(i + 1)
        unit[i] = best
        if ucls[best] != c:
            main[i] = ucls[best]
            cyc[i] = bcy
        alt[i] = -1
        cyc_alt[i] = 0
        load[best] = bfin
    return 0


class UnitAssigner:
    """The compiler's static unit assignment (module docstring), chunk by chunk."""

    def __init__(self, units: list[tuple[str, int]]) -> None:
        self.units = units
        self.ucls = np.asarray([c for _, c in self.units], np.int64)
        self.load = np.zeros(len(self.units), np.int64)

    def assign(self, cols: dict[str, np.ndarray], keep_load: bool = False) -> dict[str, np.ndarray]:
        """Fix `unit` (and, where the alternative class is chosen, `main` and `cyc`) of every instruction of a
        chunk (`keep_load`: of the next window of the same chunk, lowbit.sim.window); the assigned columns are
        new arrays (a chunk may share its columns with a cached block). WorkloadError when the design has no
        unit for an instruction."""
        out = dict(cols)
        if not keep_load:
            self.load[:] = 0
        for c in ("main", "alt", "cyc", "cyc_alt", "unit"):
            out[c] = np.array(cols[c], np.int64)
        rc = _assign(out["main"], out["alt"], out["cyc"], out["cyc_alt"], out["unit"], self.ucls, self.load)
        if rc != 0:
            i = -rc - 1
            raise WorkloadError(f"instruction {i} of class {lowbit.sim.isa.class_name(int(cols['main'][i]))}: "
                                f"no unit of the design runs it (units: {', '.join(n for n, _ in self.units)})")
        return out

    @classmethod
    def from_config(cls, cfg: HwConfig) -> UnitAssigner:
        return cls(physical_units(cfg))
