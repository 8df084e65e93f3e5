"""The chip's data (docs/rtl.md "Data path"): what the loader adds to a program's instruction image for the
data path, the DRAM and act-buffer contents the chip bench preloads, and the hardware-exact golden of every
psum word the TINT queues write (sim.numerics applied to the same weights and activations).

Loader rules (`data_plan`, on the host, like the rest of lowbit.rtl.chip_image):
- a weight DMA (dma_w, allocating in the weight ring) fills `dwords` = nbytes / word bytes TINT words from
  `dbase` = its allocation's byte address / word bytes (the ring's byte addresses and the weight buffer's
  word addresses wrap together: the buffer holds the ring's capacity in words, lowbit.rtl.chip_data.data_dims);
- a TINT word's tile shape comes from its program fields: rows = macs / rbytes2, k = macs / (wbytes / 4),
  tokens = rbytes2 / k (sim.lower: macs = rows k tokens, rbytes2 = k tokens, wbytes = 4 rows tokens), so
  beats = ceil(k / tree_width), row groups = ceil(rows / lanes); its weights are the allocation of the DMA
  it releases (`w_addr`); the loader checks beats x groups x tokens against the word's `cyc` (the
  sim.units formula) and the DMA's bytes against the packed tile;
- activations (DESIGN ASSUMPTION, no unit writes the act buffer yet): a projection's input is at the act
  buffer's start, token after token, `beats` words each (`a_addr` 0, `a_stride` beats);
- psum: each tile's passes go to its core's psum bank after the previous tile's, wrapping at the bank's depth.

Contents: every weight tile is seeded-random ternary weights (numpy default_rng([seed, DRAM address]), so a
tile read again in a later step has the same bytes), packed with lowbit.rtl.chip_data.pack_tile at the
program's DRAM address; the act buffer is seeded-random INT8. The golden of a tile is
sim.numerics.tint.tint_dot of its weights (rows padded with zero rows to whole groups) and each token's
activations: one psum word per (token, row group), in the order the engine writes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lowbit.rtl.chip_data import DataDims, data_dims, pack_tile
from lowbit.rtl.chip_image import ChipImage
from lowbit.sim.config import HwConfig
from lowbit.sim.isa import B_WEIGHT, C_DMAW, C_TINT

DATA_FIELDS = {"tint": ("beats", "groups", "tokens", "w_addr", "a_addr", "a_stride", "p_addr"),
               "dma": ("dwords", "dbase")}


@dataclass
class DataPlan:
    """The data path's preloads and golden for one program image."""

    dims: DataDims
    dram: dict[int, bytes] = field(default_factory=dict)  # DRAM byte address of a weight tile -> its bytes
    act: np.ndarray | None = None                          # act buffer words [a_depth, tree_width] int8
    expect: dict[str, list[tuple[tuple[int, ...], int]]] = field(default_factory=dict)  # per TINT queue:
    # psum words in write order, (accumulator per lane, overflow flags as a lane bit mask)
    tiles: dict[str, int] = field(default_factory=dict)   # TINT tiles per queue


def weight_banks(cfg: HwConfig) -> int:
    """Weight-buffer banks (= TINT words per memory-port data beat): the smallest power of two whose beat
    carries at least the DRAM's peak bytes per clock cycle (DESIGN ASSUMPTION: the port never limits the
    DRAM model's bandwidth), at least 2."""
    wb = 2 * cfg.tint.lanes * cfg.tint.tree_width / 8
    need = math.ceil(cfg.dram.peak_bytes_per_s / cfg.clock_hz / wb)
    return 1 << max(1, (need - 1).bit_length())


def data_plan(img: ChipImage, cfg: HwConfig, seed: int = 0) -> tuple[DataPlan | None, str]:
    """Fill the data fields of `img`'s TINT and dma_w words (module docstring) and build the preloads and
    golden; (None, why) when this program or config has no data path (the image is then left as it was)."""
    from lowbit.sim.numerics.tint import tint_dot
    from lowbit.sim.units.tint import tint_tile_cycles

    if not cfg.has("tint"):
        return None, "the design has no TINT core"
    dims, why = data_dims(cfg, weight_banks(cfg))
    if dims is None:
        return None, why
    t = cfg.tint
    wb = dims.word_bytes
    tq = [q for q, c in enumerate(img.classes) if c == C_TINT]
    dw = next(q for q, c in enumerate(img.classes) if c == C_DMAW)
    plan = DataPlan(dims)
    fields: dict[tuple[int, int], dict] = {}
    for i, w in enumerate(img.words[dw]):
        if w["alloc_en"] and w["buf"] == B_WEIGHT and not w["wr"]:
            if w["nbytes"] % wb or w["sbyte"] % wb:
                return None, (f"weight DMA {i} ({w['nbytes']} bytes at ring byte {w['sbyte']}) is not whole "
                              f"{wb}-byte TINT words")
            fields[(dw, i)] = {"dwords": w["nbytes"] // wb, "dbase": w["sbyte"] // wb}
    rng_act = np.random.default_rng([seed, 1 << 40])
    plan.act = rng_act.integers(-128, 128, size=(dims.a_depth, t.tree_width)).astype(np.int64)
    shapes: dict[int, tuple[int, int]] = {}
    weights: dict[int, np.ndarray] = {}
    for q in tq:
        name = img.queues[q]
        out: list[tuple[tuple[int, ...], int]] = []
        pnext = 0
        for i, w in enumerate(img.words[q]):
            src = (w.get("free_q", -1), w.get("free_i", -1))
            if src not in fields or w["rbuf"] != B_WEIGHT or not w["rbytes2"] or not w["wbytes"]:
                return None, f"{name} word {i} does not read a weight tile from the weight ring"
            rows, k = w["macs"] // w["rbytes2"], w["macs"] // (w["wbytes"] // 4)
            tokens = w["rbytes2"] // k if k else 0
            if rows * k * tokens != w["macs"] or k * tokens != w["rbytes2"] or 4 * rows * tokens != w["wbytes"]:
                return None, f"{name} word {i}: no tile shape gives macs {w['macs']}, rbytes2 {w['rbytes2']}"
            beats, groups = -(-k // t.tree_width), -(-rows // t.lanes)
            d = img.words[src[0]][src[1]]
            if tint_tile_cycles(t, k, tokens * groups) != w["cyc"]:
                return None, f"{name} word {i}: {rows} x {k} x {tokens} tokens is not its {w['cyc']} cycles"
            if groups * beats * wb != d["nbytes"]:
                return None, f"{name} word {i}: its weight DMA's {d['nbytes']} bytes are not a {rows} x {k} tile"
            if tokens * beats > dims.a_depth or tokens * groups > dims.p_depth:
                return None, f"{name} word {i}: {tokens} tokens of {beats} words do not fit the act / psum buffers"
            addr = d["addr"]
            if shapes.setdefault(addr, (rows, k)) != (rows, k):
                return None, f"the weight tile at DRAM address {addr} is read with two shapes"
            if addr not in weights:
                weights[addr] = np.random.default_rng([seed, addr]).integers(-1, 2, size=(rows, k)).astype(np.int8)
                plan.dram[addr] = pack_tile(weights[addr], t.lanes, t.tree_width)
            fields[(q, i)] = {"beats": beats, "groups": groups, "tokens": tokens, "w_addr": fields[src]["dbase"],
                              "a_addr": 0, "a_stride": beats, "p_addr": pnext % dims.p_depth}
            pnext += tokens * groups
            wpad = np.zeros((groups * t.lanes, k), np.int8)
            wpad[:rows] = weights[addr]
            acts = plan.act[:tokens * beats].reshape(tokens, beats * t.tree_width)[:, :k]
            acc, ovf = tint_dot(wpad[None, :, :], acts[:, None, :], t.tree_width, t.acc_bits)
            for tok in range(tokens):
                for g in range(groups):
                    sl = slice(g * t.lanes, (g + 1) * t.lanes)
                    mask = sum(int(b) << lane for lane, b in enumerate(ovf[tok, sl]))
                    out.append((tuple(int(x) for x in acc[tok, sl]), mask))
        plan.expect[name] = out
        plan.tiles[name] = len(img.words[q])
    # weight tiles the TINT cores do not read (BoothFlex's): packed ternary weights of the DMA's size
    for (q, i), f in fields.items():
        if q == dw and img.words[q][i]["addr"] not in plan.dram:
            d = img.words[q][i]
            codes = np.random.default_rng([seed, d["addr"]]).integers(-1, 2, size=(f["dwords"], 4 * wb))
            plan.dram[d["addr"]] = pack_tile(codes.astype(np.int8), 1, 4 * wb)
    for q, ws in ((q, img.words[q]) for q in (*tq, dw)):
        kind = "tint" if q in tq else "dma"
        for i, w in enumerate(ws):
            w.update(fields.get((q, i), dict.fromkeys(DATA_FIELDS[kind], 0)))
    return plan, ""


def act_word(x: np.ndarray) -> int:
    """An act buffer word: `tree_width` INT8, element 0 in the low byte."""
    return sum((int(v) & 0xFF) << (8 * i) for i, v in enumerate(x))


def compare_psum(want: list[tuple[tuple[int, ...], int]], got: list) -> int:
    """psum words that differ (value or overflow flags), counting missing and extra words."""
    n = sum(tuple(g[0]) != w[0] or int(g[1]) != w[1] for w, g in zip(want, got, strict=False))
    return n + abs(len(want) - len(got))
