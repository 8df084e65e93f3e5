"""Q K^T tiles on the chip's data path (BoothFlex's INT8 mode, lowbit.rtl.chip_booth.QkWalk): which of a
program's attention tiles the loader maps onto the whole-model golden (lowbit.rtl.chip_model), their data
fields, the act words of the quantized query and the psum words expected (docs/rtl.md "Data path").

A Q K^T tile of KV head g runs when its K chunk (the dma_kv read it releases, lowbit.rtl.chip_golden's kv
data) holds the K rows of keys 0 .. n-1 of that head in order and every query of the tile attends to all
keys up to its own position (prefill, or a decode step whose LOP keeps every key: the golden's
`qk.keys`); a decode step whose LOP drops keys reads the program's fixed-ratio positions, not the golden's
selection, and stays a timer. Outputs (query t, head h of the group, key j) in that order, `lanes` a pass:
the golden's `layers.L.attn.qk.acc[h, t, j]`, a last pass's lanes past the tile's outputs 0.

The quantized queries (`layers.L.attn.qk.q8`, [T, H, hd]) sit in the act buffer's upper half (DESIGN
ASSUMPTION: the projections' inputs use the lower half), group g's rows (t, h) at a_depth / 2 + (g T grp
+ t grp + h) hd / tree_width, written by the bench in the cycles of the step's and layer's g-th RoPE word
(the SFU pass that produces them; docs/golden.md: q to INT8 is fused in it), as chip_model does for the
projections' inputs.
"""

from __future__ import annotations

import numpy as np

from lowbit.sim.isa import C_SFU, KV_BASE


def qk_plan(plan, img, cfg, bq: int, chunks: dict[tuple[int, int], tuple[int, list[int]]],
            lower: int) -> tuple[dict[int, tuple[dict, list, tuple[int, int, int]]], dict[int, list]]:
    """(BoothFlex word index -> (data fields, expected psum words, (step, layer, group)), SFU word index ->
    act writes) of the Q K^T tiles of queue `bq` that map onto the golden. `chunks`: a K/V chunk's
    allocating DMA -> (kv buffer unit address, DRAM row addresses); `lower`: act words the projections use."""
    from lowbit.sim.units.booth import booth_int8_tile_cycles

    m, b, dims = plan.model, cfg.booth, plan.dims
    s, tw, ub = m.spec, cfg.tint.tree_width, dims.unit_bytes
    hd, kvh, grp = s.head_dim, s.n_kv_heads, s.n_heads // s.n_kv_heads
    half = dims.a_depth // 2
    if hd % tw or hd % b.width or lower > half:
        return {}, {}
    qs = hd // tw
    out: dict[int, tuple[dict, list, tuple[int, int, int]]] = {}
    nextq: dict[tuple[int, int, int], int] = {}
    for i, w in enumerate(img.words[bq]):
        src = (w.get("free_q", -1), w.get("free_i", -1))
        if not w.get("op", "").endswith(".attn.qk") or src not in chunks:
            continue
        dbase, addrs = chunks[src]
        layer, st = int(w["op"].split(".")[1]), m.run.steps[w["step"]]
        idx = [(a - KV_BASE) // hd for a in addrs]
        plane = idx[0] // s.max_positions
        pos = [x - plane * s.max_positions for x in idx]
        if plane % 2 or plane // 2 // kvh != layer or pos != list(range(len(pos))):
            continue  # not the K rows of keys 0 .. n-1 of one head of this layer
        g, T, p0 = plane // 2 % kvh, len(st.ids), st.start
        q0 = nextq.get((w["step"], layer, g), 0)
        outs, nq, n = w["macs"] // hd, 0, 0
        while n < outs and q0 + nq < T:
            n += grp * (p0 + q0 + nq + 1)
            nq += 1
        nextq[(w["step"], layer, g)] = q0 + nq
        keys = st.buffers[f"layers.{layer}.attn.qk.keys"]
        passes = -(-outs // b.lanes)
        causal = all(keys[g * grp + h, t, :p0 + t + 1].all() and not keys[g * grp + h, t, p0 + t + 1:].any()
                     for t in range(q0, q0 + nq) for h in range(grp))
        if n != outs or p0 + q0 + nq > len(pos) or not causal or passes > dims.p_depth \
                or booth_int8_tile_cycles(b, hd, passes) != w["cyc"] or T * s.n_heads * qs > dims.a_depth - half:
            continue
        acc = st.buffers[f"layers.{layer}.attn.qk.acc"]
        vals = [int(acc[g * grp + h, t, j]) for t in range(q0, q0 + nq) for h in range(grp) for j in range(p0 + t + 1)]
        vals += [0] * (passes * b.lanes - len(vals))
        words = [(tuple(vals[p * b.lanes:(p + 1) * b.lanes]), 0) for p in range(passes)]
        fields = {"eng": 2, "beats": hd // b.width, "groups": passes, "tokens": 1, "nq": nq, "grp": grp,
                  "pos0": p0 + q0, "k_addr": dbase, "k_stride": hd // ub, "w_addr": 0,
                  "a_addr": half + (g * T + q0) * grp * qs, "a_stride": qs}
        out[i] = (fields, words, (w["step"], layer, g))
    # the queries: the g-th RoPE word of a step and layer writes group g's rows
    need = {v[2] for v in out.values()}
    writes: dict[int, list] = {}
    _sq, group_words, _n = sfu_group_words(img, ".attn.rope")
    for i, w, layer, g in group_words:
        if (w["step"], layer, g) not in need:
            continue
        q8 = m.run.steps[w["step"]].buffers[f"layers.{layer}.attn.qk.q8"]
        rows = q8[:, g * grp:(g + 1) * grp].reshape(-1, tw)
        base = half + g * q8.shape[0] * grp * qs
        ws = [(base + r, i8_word(x)) for r, x in enumerate(rows)]
        if len(ws) > w["cyc"] - 2:
            out = {k: v for k, v in out.items() if v[2] != (w["step"], layer, g)}
            continue
        writes[i] = ws
    return out, writes


def i8_word(x) -> int:
    """An act-buffer word from its INT8 elements (element e in bits 8e .. 8e + 7)."""
    return sum((int(v) & 0xFF) << (8 * e) for e, v in enumerate(x))


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
    for f, _, (step, layer, g) in out.values():
        st = m.run.steps[step]
        keys = st.buffers[f"layers.{layer}.attn.qk.keys"]
        c = cov.setdefault((step, layer), ~keys)
        for t in range(f["pos0"] - st.start, f["pos0"] - st.start + f["nq"]):
            c[g * grp:(g + 1) * grp, t, :st.start + t + 1] = True
    return len(out), sum(bool(c.all()) for c in cov.values()), len(m.run.steps) * m.spec.n_layers
