"""Tiling rules: how a projection or an attention head is cut into tiles that fit the on-chip buffers.

Rules (all derived from the config; DESIGN ASSUMPTIONS stated here, cited in the validation report):
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
- LOP: LO codes are scored in chunks of floor(lop.tile_bytes / code_bytes_per_key) keys.
Dual-core load balancing (docs/reference/vitallm.md §3.2): a ternary tile may run on a TINT core or on BoothFlex
(ternary mode), whichever finishes it first; `dual_core=False` restricts BoothFlex to attention (ablation).
A tile that cannot fit its buffer is a WorkloadError (sim.sram.Buffers.check).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lowbit.sim.config import HwConfig
from lowbit.sim.errors import WorkloadError
from lowbit.sim.isa import B_ACT, B_KV, B_LOP, B_PSUM, B_WEIGHT, C_BOOTH, C_FP4, C_TINT
from lowbit.sim.sram import Buffers
from lowbit.sim.units.booth import booth_int8_tile_cycles, booth_ternary_tile_cycles
from lowbit.sim.units.fp4 import fp4_tile_cycles
from lowbit.sim.units.tint import tint_tile_cycles

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
    """Output lanes of a projection unit class."""
    return {C_TINT: cfg.tint.lanes, C_BOOTH: cfg.booth.lanes, C_FP4: cfg.fp4.lanes}[cls]


def projection_classes(cfg: HwConfig, where: str, fmt: str, dual_core: bool) -> tuple[int, int]:
    """(main, alt) unit classes that run `fmt` weight tiles; WorkloadError when no unit of `cfg` can."""
    if fmt == "ternary":
        if cfg.has("tint"):
            return C_TINT, (C_BOOTH if cfg.has("booth") and cfg.booth.ternary_mode and dual_core else -1)
        if cfg.has("booth") and cfg.booth.ternary_mode:
            return C_BOOTH, -1
        raise WorkloadError(f"{cfg.name}: {where}: ternary weights need a TINT core or a BoothFlex core "
                            "with ternary_mode; use a preset with units tint/booth")
    if fmt in ("nvfp4", "mxfp4"):
        if not cfg.has("fp4"):
            raise WorkloadError(f"{cfg.name}: {where}: {fmt} weights need an FP4 core but units = "
                                f"{list(cfg.units)}; use --hw vitallm-fp4 or a ternary model")
        if cfg.fp4.format != fmt:
            raise WorkloadError(f"{cfg.name}: {where}: the FP4 core is configured for {cfg.fp4.format}, "
                                f"not {fmt}; set fp4.format = \"{fmt}\"")
        return C_FP4, -1
    if fmt == "int8":
        if not cfg.has("booth"):
            raise WorkloadError(f"{cfg.name}: {where}: int8 weights need the BoothFlex core")
        return C_BOOTH, -1
    raise WorkloadError(f"{cfg.name}: {where}: no unit runs {fmt} weights (supported: ternary, int8, "
                        "nvfp4/mxfp4 with an FP4 core); keep lm_head = \"host\" for bf16 heads")


def plan_linear(cfg: HwConfig, bufs: Buffers, name: str, tokens: int, fin: int, fout: int, fmt: str,
                dual_core: bool = True) -> LinearPlan:
    """Tile a `fin` x `fout` projection of `tokens` tokens (rules in the module docstring)."""
    where = f"op {name} ({fmt} {fin}x{fout})"
    main, alt = projection_classes(cfg, where, fmt, dual_core)
    if main == C_FP4 and fin % cfg.fp4.block:
        raise WorkloadError(f"{cfg.name}: {where}: in_features {fin} is not a multiple of the {fmt} "
                            f"block {cfg.fp4.block}; the tiling cannot cover it")
    L = lanes_of(cfg, main) if alt < 0 else math.lcm(lanes_of(cfg, main), lanes_of(cfg, alt))
    ncons = (cfg.tint.cores if main == C_TINT else 1) + (1 if alt >= 0 else 0)
    cap = bufs.tile[B_WEIGHT] // ncons
    align = cfg.fp4.block if main == C_FP4 else 1
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
    """Cycles of one projection tile of `passes` passes over `k` inputs on a unit of class `cls`."""
    if cls == C_TINT:
        return tint_tile_cycles(cfg.tint, k, passes)
    if cls == C_FP4:
        return fp4_tile_cycles(cfg.fp4, k, passes)
    if fmt == "int8":
        return booth_int8_tile_cycles(cfg.booth, k, passes)
    return booth_ternary_tile_cycles(cfg.booth, k, passes)


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
