"""Q K^T tiles on the chip's data path (BoothFlex's INT8 mode, lowbit.rtl.chip_booth.QkWalk): which of a
program's attention tiles the loader maps onto the whole-model golden (lowbit.rtl.chip_model), their data
fields, the act words of the quantized query and the psum words expected (docs/rtl.md "Data path").

A Q K^T tile of KV head g runs when its K chunk (the dma_kv read it releases, lowbit.rtl.chip_golden's kv
data) holds K rows of that head only and each query of the tile attends (the golden's `qk.keys`) to a prefix
of the chunk's keys, one key longer per query: keys 0 .. n-1 in order with causal queries (prefill, or a
decode step whose LOP keeps every key), or the K rows a decode step's LOP selects, gathered through the
index FIFO in ascending key order, which its one query attends to all of (the program compiled from the
golden's selections, lowbit.rtl.chip_model.compile_from_golden). The word's `pos0` is the first query's
keys in the chunk less one (its position in prefill, the gathered count less one in such a decode step).
Outputs (query t, head h of the group, chunk row r) in that order, `lanes` a pass: the golden's
`layers.L.attn.qk.acc[h, t, pos[r]]`, pos[r] the key at chunk row r, a last pass's lanes past the tile's
outputs 0.

The quantized queries (`layers.L.attn.qk.q8`, [T, H, hd]) sit in the act buffer's upper half (DESIGN
ASSUMPTION: the projections' inputs use the lower half), group g's rows (t, h) at a_depth / 2 + (g T grp
+ t grp + h) hd / w in BoothFlex's act words of w INT8 (lowbit.rtl.chip_booth.booth_act; whole act words:
`whole_words`), written by the bench in the cycles of the step's and layer's g-th RoPE word
(the SFU pass that produces them; docs/golden.md: q to INT8 is fused in it), or of its one RoPE word where
it has one (`vitallm`: every group's rows), as chip_model does for the projections' inputs.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from lowbit.sim.isa import C_SFU, KV_BASE


def qk_plan(plan, img, cfg, bq: int, chunks: dict[tuple[int, int], tuple[int, list[int]]],
            lower: int) -> tuple[dict[int, tuple[dict, list, tuple[int, int, int], tuple[int, list[int]]]],
                                 dict[int, list]]:
    """(BoothFlex word index -> (data fields, expected psum words, (step, layer, group), (first query, the
    chunk's key positions)), SFU word index -> act writes) of the Q K^T tiles of queue `bq` that map onto the
    golden. `chunks`: a K/V chunk's allocating DMA -> (kv buffer unit address, DRAM row addresses); `lower`:
    act words the projections use."""
    from lowbit.rtl.chip_booth import booth_act
    from lowbit.sim.units.booth import booth_int8_tile_cycles

    m, b, dims = plan.model, cfg.booth, plan.dims
    (tw, ratio), ub = booth_act(cfg), dims.unit_bytes
    s = m.spec
    hd, kvh, grp = s.head_dim, s.n_kv_heads, s.n_heads // s.n_kv_heads
    half = dims.a_depth // 2
    if hd % tw or hd % b.width or lower > half:
        return {}, {}
    qs = hd // tw
    out: dict[int, tuple[dict, list, tuple[int, int, int], tuple[int, list[int]]]] = {}
    nextq: dict[tuple[int, int, int], int] = {}
    for i, w, dbase, layer, g, pos in head_chunk_words(plan, img, bq, chunks, ".attn.qk", 0):
        st = m.run.steps[w["step"]]
        T, q0 = len(st.ids), nextq.get((w["step"], layer, g), 0)
        outs = w["macs"] // hd
        nq, a, ok = tile_queries(st.buffers[f"layers.{layer}.attn.qk.keys"], g, grp, q0, pos, outs, grp)
        nextq[(w["step"], layer, g)] = q0 + nq
        passes = -(-outs // b.lanes)
        if not ok or passes > dims.p_depth or booth_int8_tile_cycles(b, hd, passes) != w["cyc"] \
                or T * s.n_heads * qs > dims.a_depth - half:
            continue
        acc = st.buffers[f"layers.{layer}.attn.qk.acc"]
        vals = [int(acc[g * grp + h, t, pos[r]]) for t in range(q0, q0 + nq) for h in range(grp)
                for r in range(a + t - q0 + 1)]
        vals += [0] * (passes * b.lanes - len(vals))
        words = [(tuple(vals[p * b.lanes:(p + 1) * b.lanes]), 0) for p in range(passes)]
        fields = {"eng": 2, "beats": hd // b.width, "groups": passes, "tokens": 1, "nq": nq, "grp": grp,
                  "pos0": a, "k_addr": dbase, "k_stride": hd // ub, "w_addr": 0,
                  "a_addr": half + (g * T + q0) * grp * qs, "a_stride": qs}
        out[i] = (fields, words, (w["step"], layer, g), (q0, pos))
    # the queries: the g-th RoPE word of a step and layer writes group g's rows where there is one a KV head;
    # a step and layer with one RoPE word (vitallm) writes every group's rows in it
    need = {v[2] for v in out.values()}
    writes: dict[int, list] = {}
    done: set[tuple[int, int, int]] = set()
    _sq, group_words, seen = sfu_group_words(img, ".attn.rope")
    for i, w, layer, g in group_words:
        n = seen[(w["step"], layer)]
        groups = [g] if n == kvh else range(kvh) if n == 1 else []
        q8 = m.run.steps[w["step"]].buffers[f"layers.{layer}.attn.qk.q8"]
        ws = []
        for gg in (gg for gg in groups if (w["step"], layer, gg) in need):
            rows = q8[:, gg * grp:(gg + 1) * grp].reshape(-1, tw)
            base = half + gg * q8.shape[0] * grp * qs
            ws += [(base + r, i8_word(x)) for r, x in enumerate(rows)]
            done.add((w["step"], layer, gg))
        ws = whole_words(ws, ratio, tw)
        if ws is None or len(ws) > w["cyc"] - 2:
            done -= {(w["step"], layer, gg) for gg in groups}
        elif ws:
            writes[i] = ws
    return {k: v for k, v in out.items() if v[2] in done}, writes


def head_chunk_words(plan, img, bq: int, chunks: dict[tuple[int, int], tuple[int, list[int]]], suffix: str,
                     v: int) -> Iterator[tuple[int, dict, int, int, int, list[int]]]:
    """(word index, word, kv unit address, layer L, KV head g, key positions) of queue `bq`'s words of op
    `layers.L<suffix>` whose chunk (the dma_kv read the word releases) holds rows of one plane only, layer L's
    K (v 0) or V (v 1) rows of KV head g (sim.kvcache.kv_addr), positions in the chunk's order: keys 0 .. n-1
    in prefill, a decode step's LOP selection, ascending, as the index FIFO delivers it."""
    s = plan.model.spec
    hd, kvh, mp = s.head_dim, s.n_kv_heads, s.max_positions
    for i, w in enumerate(img.words[bq]):
        src = (w.get("free_q", -1), w.get("free_i", -1))
        if not w.get("op", "").endswith(suffix) or src not in chunks or not chunks[src][1]:
            continue
        dbase, addrs = chunks[src]
        idx = [(a - KV_BASE) // hd for a in addrs]
        plane, layer = idx[0] // mp, int(w["op"].split(".")[1])
        if plane % 2 == v and plane // 2 // kvh == layer and all(x // mp == plane for x in idx):
            yield i, w, dbase, layer, plane // 2 % kvh, [x - plane * mp for x in idx]


def tile_queries(keys: np.ndarray, g: int, grp: int, q0: int, pos: list[int], outs: int,
                 per: int) -> tuple[int, int, bool]:
    """(queries, a, ok) of an attention tile from query q0 of KV head g over a chunk of keys at positions
    `pos`: queries are taken while their outputs (per x the chunk's keys each attends to, the golden's
    `qk.keys` [H, T, M]) stay within `outs`; ok when they are exactly `outs` and query q0 + t attends, in every
    head of the group, to the chunk's first a + t + 1 keys and no key outside it (the walker's rule,
    chip_booth.QkWalk, `pos0` = a: causal prefill a = position of q0, a decode step over n gathered keys
    a = n - 1)."""
    n, nq, ok, first = 0, 0, True, -1
    while n < outs and q0 + nq < keys.shape[1]:
        t = q0 + nq
        att = np.flatnonzero(keys[g * grp, t]).tolist()
        c = sum(x in att for x in pos)
        ok &= att == pos[:c] and all((keys[g * grp + h, t] == keys[g * grp, t]).all() for h in range(grp))
        first = c - 1 if nq == 0 else first
        ok &= c == first + nq + 1
        n += per * c
        nq += 1
    return nq, first, ok and n == outs and nq > 0


def i8_word(x) -> int:
    """An act-buffer word from its INT8 elements (element e in bits 8e .. 8e + 7)."""
    return sum((int(v) & 0xFF) << (8 * e) for e, v in enumerate(x))


def whole_words(ws: list[tuple[int, int]], ratio: int, elems: int) -> list[tuple[int, int]] | None:
    """The act buffer words of BoothFlex word writes `ws` ((address, word) of `elems` INT8): address a is part
    a mod ratio of act word a div ratio, at its elements (a mod ratio) elems .. (lowbit.rtl.chip_booth.booth_act);
    None unless every part of each is among `ws` (the load port writes whole act words)."""
    if ratio == 1:
        return ws
    parts: dict[int, dict[int, int]] = {}
    for a, v in ws:
        parts.setdefault(a // ratio, {})[a % ratio] = v
    if any(len(p) != ratio for p in parts.values()):
        return None
    return [(a, sum(v << (8 * elems * k) for k, v in p.items())) for a, p in sorted(parts.items())]


def part_words(ws: list[tuple[int, int]], ratio: int, elems: int) -> list[tuple[int, int]]:
    """The BoothFlex (SFU) words of act buffer word writes `ws`, whole_words' inverse: act word a's part k
    (its elements k elems ..) at address a ratio + k, the words the SFU's engines write (chip_sfu.act_writes)."""
    if ratio == 1:
        return ws
    mask = (1 << (8 * elems)) - 1
    return [(a * ratio + k, v >> (8 * elems * k) & mask) for a, v in ws for k in range(ratio)]


def sfu_group_words(img, suffix: str) -> tuple[int, list[tuple[int, dict, int, int]], dict[tuple[int, int], int]]:
    """The SFU queue's index, its words of op `layers.L<suffix>` as (index, word, layer, g) in program order, where
    the g-th such word of a step and layer is KV group g's, and the count of such words per (step, layer)."""
    sq = next((q for q, c in enumerate(img.classes) if c == C_SFU), -1)
    found: list[tuple[int, dict, int, int]] = []
    seen: dict[tuple[int, int], int] = {}
    for i, w in enumerate(img.words[sq] if sq >= 0 else []):
        if not w.get("op", "").endswith(suffix):
            continue
        layer = int(w["op"].split(".")[1])
        g = seen.get((w["step"], layer), 0)
        seen[(w["step"], layer)] = g + 1
        found.append((i, w, layer, g))
    return sq, found, seen


def qk_cover(plan, out: dict) -> tuple[int, int, int]:
    """(Q K^T tiles mapped, `layers.L.attn.qk.acc` buffers whose every attended element a psum word checks,
    the golden's qk.acc buffers: steps x layers)."""
    m = plan.model
    cov: dict[tuple[int, int], np.ndarray] = {}
    grp = m.spec.n_heads // m.spec.n_kv_heads
    for f, _, (step, layer, g), (q0, pos) in out.values():
        keys = m.run.steps[step].buffers[f"layers.{layer}.attn.qk.keys"]
        c = cov.setdefault((step, layer), ~keys)
        for t in range(f["nq"]):
            c[g * grp:(g + 1) * grp, q0 + t, pos[:f["pos0"] + t + 1]] = True
    return len(out), sum(bool(c.all()) for c in cov.values()), len(m.run.steps) * m.spec.n_layers
