"""cocotb bench: FP4 core vs sim.numerics.fp4dot.fp4_block_dot (saturate + floor), bit-exact on the raw
accumulator, the sticky overflow flag and the NaN flag; cycles start->done vs sim.units.fp4 (exact).

Vectors = lane outputs (one FP4 block dot product each). Corners: saturating blocks (all +-6 weights with
+-128/127 activations, largest scales -> block-sum, contribution and accumulator saturation), NaN scales,
zero / subnormal / negative (NVFP4) scales, the largest and smallest scale codes, all-zero weights or
activations, k = 1, k not a multiple of the block or of elems_per_cycle, long saturating accumulations.
"""

from __future__ import annotations

import cocotb
import numpy as np

from lowbit.rtl.bench.common import int8, load_job, pack, unpack, write_result
from lowbit.rtl.bench.stream import StreamTile, run_stream, summarize
from lowbit.sim.config import Fp4Config
from lowbit.sim.numerics.fp4dot import fp4_block_dot
from lowbit.sim.numerics.mx import MXFP4Tensor, NVFP4Tensor
from lowbit.sim.units.fp4 import fp4_tile_cycles

UNIT_SCALE = {"mxfp4": 127, "nvfp4": 0x38}  # scale 1.0: padding blocks of a beat (contribute 0)


def _cfg(p: dict) -> Fp4Config:
    return Fp4Config(enabled=True, **{k: v for k, v in p.items() if k in Fp4Config.__dataclass_fields__})


def golden(cfg: Fp4Config, codes: np.ndarray, scales: np.ndarray, a: np.ndarray, k: int):
    """codes (lanes, Kp), scales (lanes, Kp/block), a (k,) -> (acc, ovf, nan) per lane."""
    n = codes.shape[0]
    if cfg.format == "mxfp4":
        w = MXFP4Tensor(codes.astype(np.uint8), scales.astype(np.uint8), (n, k))
    else:
        w = NVFP4Tensor(codes.astype(np.uint8), scales.astype(np.uint8), np.float32(1.0), (n, k))
    with np.errstate(invalid="ignore"):
        r = fp4_block_dot(w, a, block_sum_bits=cfg.block_sum_bits, acc_bits=cfg.acc_bits,
                          frac_bits=cfg.frac_bits, overflow_mode="saturate", shift_rounding="floor")
    return r.acc.astype(np.int64), r.overflow.astype(np.int64), np.isnan(r.value).astype(np.int64)


def make_tile(cfg: Fp4Config, gold: Fp4Config, codes, scales, a, k: int, kind: str) -> StreamTile:
    """codes (passes, lanes, Kp), scales (passes, lanes, Kp/block), a (passes, k)."""
    n, e, blk = cfg.lanes, cfg.elems_per_cycle, cfg.block
    passes, _, kp = codes.shape
    ns = max(1, e // blk)
    nbeat = -(-k // e)
    span = max(nbeat * e, kp)
    beats, expect = [], []
    for p in range(passes):
        expect.append(golden(gold, codes[p], scales[p], a[p], k))
        cp = np.zeros((n, span), np.int64)
        cp[:, :kp] = codes[p]
        ap = np.zeros(span, np.int64)
        ap[:k] = a[p]
        for b in range(nbeat):
            if e >= blk:
                s = np.full((n, ns), UNIT_SCALE[cfg.format], np.int64)
                for j in range(ns):
                    if b * ns + j < scales.shape[2]:
                        s[:, j] = scales[p, :, b * ns + j]
            else:
                s = scales[p, :, (b * e) // blk][:, None]
            beats.append({"codes": pack(cp[:, b * e:(b + 1) * e].reshape(-1), 4),
                          "act": pack(ap[b * e:(b + 1) * e], 8), "scales": pack(s.reshape(-1), 8)})
    return StreamTile(start={"beats": nbeat, "passes": passes}, beats=beats, expect=expect,
                      expect_cycles=fp4_tile_cycles(cfg, k, passes), meta={"kind": kind, "k": k, "passes": passes})


def random_scales(cfg: Fp4Config, rng, shape) -> np.ndarray:
    if cfg.format == "mxfp4":
        # around 2^0 .. with the shift range of the accumulator, plus NaN and extreme codes
        s = 127 + rng.integers(-cfg.frac_bits - 6, cfg.acc_bits - cfg.block_sum_bits + 4, shape)
        r = rng.random(shape)
        s = np.where(r < 0.02, 255, np.where(r < 0.04, rng.choice([0, 254, 1, 253], shape), s))
        return np.clip(s, 0, 255)
    s = rng.integers(0, 256, shape)
    return np.where(rng.random(shape) < 0.4, rng.choice([0x38, 0xB8, 0x40, 0x30, 0x01, 0x7E], shape), s)


def _tile(cfg, gold, rng, k, passes, kind, code_fn=None, scale_fn=None, act_fn=None):
    n, blk = cfg.lanes, cfg.block
    kp = -(-k // blk) * blk
    codes = rng.integers(0, 16, (passes, n, kp)) if code_fn is None else code_fn((passes, n, kp))
    codes[..., k:] = 0
    scales = random_scales(cfg, rng, (passes, n, kp // blk)) if scale_fn is None else scale_fn((passes, n, kp // blk))
    a = int8(rng, (passes, k), float(rng.choice([0.0, 0.1, 0.5]))) if act_fn is None else act_fn((passes, k))
    return make_tile(cfg, gold, codes, scales, a, k, kind)


def tiles_for(cfg: Fp4Config, gold: Fp4Config, rng, n_vectors: int, corners: bool) -> list[StreamTile]:
    blk, e = cfg.block, cfg.elems_per_cycle
    big = max(blk, e)
    tiles = []
    if corners:
        sat_w = lambda s: rng.choice([7, 15], s)  # noqa: E731  (+-6)
        max_a = lambda s: rng.choice([-128, 127], s)  # noqa: E731
        pos_w = lambda s: np.full(s, 7)  # noqa: E731
        neg_a = lambda s: np.full(s, -128)  # noqa: E731
        hi = {"mxfp4": 127 + cfg.acc_bits - cfg.frac_bits - 2, "nvfp4": 0x7E}[cfg.format]
        const = lambda v: (lambda s: np.full(s, v))  # noqa: E731
        tiles.append(_tile(cfg, gold, rng, 2 * big, 2, "saturating", sat_w, None, max_a))
        tiles.append(_tile(cfg, gold, rng, 8 * big, 1, "saturating_acc", pos_w, const(hi), neg_a))
        tiles.append(_tile(cfg, gold, rng, 2 * big, 1, "saturating_block", pos_w, const(UNIT_SCALE[cfg.format]),
                           const(-128)))
        nan = 255 if cfg.format == "mxfp4" else 0x7F
        tiles.append(_tile(cfg, gold, rng, 2 * big, 1, "nan_scale", None,
                           lambda s: np.where(rng.random(s) < 0.3, nan, random_scales(cfg, rng, s))))
        tiles.append(_tile(cfg, gold, rng, big + 3, 1, "zero_w", const(0)))
        tiles.append(_tile(cfg, gold, rng, big + 3, 1, "zero_a", None, None, const(0)))
        tiles.append(_tile(cfg, gold, rng, 1, 2, "k1"))
        tiles.append(_tile(cfg, gold, rng, blk + 3, 2, "k_not_multiple"))
        lo_codes = [0, 1] if cfg.format == "mxfp4" else [0x00, 0x01, 0x81, 0x07]  # zero / subnormal scales
        tiles.append(_tile(cfg, gold, rng, 2 * big, 1, "tiny_scales", sat_w, lambda s: rng.choice(lo_codes, s),
                           max_a))
        top = [254, 253] if cfg.format == "mxfp4" else [0x7E, 0xFE]
        tiles.append(_tile(cfg, gold, rng, 2 * big, 1, "largest_scales", None, lambda s: rng.choice(top, s)))
    have = sum(t.start["passes"] * cfg.lanes for t in tiles)
    while have < n_vectors:
        k = int(rng.integers(1, 4 * big + 1)) if rng.random() < 0.7 else blk * int(rng.integers(1, 5))
        passes = int(rng.integers(1, 4))
        tiles.append(_tile(cfg, gold, rng, k, passes, "random"))
        have += passes * cfg.lanes
    return tiles


@cocotb.test()
async def fp4_bench(dut):
    job = load_job()
    cfg = _cfg(job["parameters"])
    opts = job["options"]
    gold = _cfg({**job["parameters"], **opts.get("override", {})})
    rng = np.random.default_rng(job["seed"])
    tiles = tiles_for(cfg, gold, rng, job["vectors"], opts.get("corners", True))
    n, a_bits = cfg.lanes, cfg.acc_bits

    def collect(d):
        return (unpack(int(d.out_acc.value), a_bits, n), unpack(int(d.out_ovf.value), 1, n, signed=False),
                unpack(int(d.out_nan.value), 1, n, signed=False))

    def bad(t: StreamTile) -> int:
        if len(t.got) != len(t.expect):
            return n * len(t.expect)
        wrong = 0
        for (ga, go, gn), (ea, eo, en) in zip(t.got, t.expect, strict=True):
            wrong += int(np.sum((np.asarray(ga) != ea) | (np.asarray(go) != eo) | (np.asarray(gn) != en)))
        return wrong

    idle = {"codes": 0, "act": 0, "scales": 0, "beats": 0, "passes": 0}
    total = await run_stream(dut, tiles, idle, collect)
    for t in tiles:
        t.expect_cycles += opts.get("cycle_offset", 0)
    res = summarize(tiles, lambda t: n * len(t.expect), bad)
    flags = np.concatenate([np.stack([e[1], e[2]]) for t in tiles for e in t.expect], axis=1)
    res["overflow_vectors"], res["nan_vectors"] = int(flags[0].sum()), int(flags[1].sum())
    res["sim_cycles"] = total
    write_result(job, res)
