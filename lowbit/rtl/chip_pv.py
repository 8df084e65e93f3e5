"""P V tiles on the chip's data path (BoothFlex's INT8 mode, `eng` 3, lowbit.rtl.chip_booth.QkWalk): which
of a program's score . V tiles the loader maps onto the whole-model golden (lowbit.rtl.chip_model), their data
fields, the act words of the quantized probabilities and the psum words expected (docs/rtl.md "Data path").

A P V tile of KV head g runs when its V chunk (the dma_kv read it releases) holds V rows of that head only
and its queries attend to a prefix of the chunk's keys one key longer per query (lowbit.rtl.chip_attn
.tile_queries, the rule its Q K^T tiles follow: keys 0 .. n-1 with causal queries, or a decode step's
LOP-gathered keys, ascending, all attended). Outputs (query t, head h of the group, dimension d) in that
order, `lanes` a pass: the golden's `layers.L.attn.av.acc[h, t, d]`, a last pass's lanes past the tile's
outputs 0. A pass takes its longest row's beats, as the program times it (sim.attention.pv_pass_keys,
sim.units.booth.booth_int8_pass_cycles) and the walker counts them (chip_booth.QkWalk.pass_beats): the
word's `beats` are the tile's in all, `pos0` its first query's keys in the chunk less one.

The probabilities the P V tiles multiply are the golden's `layers.L.attn.softmax.w8` (softmax output x
amax_v, absmax-quantized to INT8 per row: golden `_attention`). DESIGN ASSUMPTION: they sit in the act
buffer's upper half after the queries (lowbit.rtl.chip_attn), row (t, h) of group g at base + ((g T + t) grp
+ h) ps, `ps` words a row (element r the probability of the chunk's row r, the golden's w8 at that key;
the chunk's keys rounded up to whole beats, zero-padded, in BoothFlex words; a group's rows whole act words,
else its tiles stay timers: chip_attn.whole_words), written in the cycles of the step's and layer's g-th
softmax word by the SFU's softmax engine (lowbit.rtl.chip_softmax, which takes these writes over), or else by
the bench as it writes the queries in their RoPE words' cycles.
"""

from __future__ import annotations

import numpy as np

from lowbit.rtl.chip_attn import head_chunk_words, i8_word, sfu_group_words, tile_queries, whole_words
from lowbit.rtl.common import COUNT_BITS


def pv_plan(plan, img, cfg, bq: int, chunks: dict[tuple[int, int], tuple[int, list[int]]],
            lower: int) -> tuple[dict[int, tuple[dict, list, tuple[int, int, int], int]], dict[int, list]]:
    """(BoothFlex word index -> (data fields, expected psum words, (step, layer, group), first query), SFU
    word index -> act writes) of the P V tiles of queue `bq` that map onto the golden; arguments as
    chip_attn.qk_plan's."""
    from lowbit.rtl.chip_booth import booth_act
    from lowbit.sim.attention import pv_pass_keys
    from lowbit.sim.units.booth import booth_int8_pass_cycles

    m, b, dims = plan.model, cfg.booth, plan.dims
    (tw, ratio), ub = booth_act(cfg), dims.unit_bytes
    s = m.spec
    hd, kvh, grp = s.head_dim, s.n_kv_heads, s.n_heads // s.n_kv_heads
    half = dims.a_depth // 2
    if hd % tw or hd % ub or lower > half:
        return {}, {}
    qs = hd // tw
    out: dict[int, tuple[dict, list, tuple[int, int, int], int]] = {}
    nextq: dict[tuple[int, int, int], int] = {}
    rows: dict[tuple[int, int], tuple[int, int]] = {}  # (step, layer) -> (P rows' base, words a row)
    keys_of: dict[tuple[int, int, int], list[int]] = {}  # (step, layer, group) -> its V chunks' key positions
    for i, w, dbase, layer, g, pos in head_chunk_words(plan, img, bq, chunks, ".attn.av", 1):
        st = m.run.steps[w["step"]]
        T, q0, M = len(st.ids), nextq.get((w["step"], layer, g), 0), len(pos)
        nq, a, ok = tile_queries(st.buffers[f"layers.{layer}.attn.qk.keys"], g, grp, q0, pos, w["macs"], grp * hd)
        nextq[(w["step"], layer, g)] = q0 + nq
        ps = -(-(-(-M // b.width) * b.width) // tw)  # BoothFlex words a row (a group's rows whole act words)
        base, ps = rows.setdefault((w["step"], layer), (half + T * s.n_heads * qs, ps))
        outs = nq * grp * hd
        passes = -(-outs // b.lanes)
        runs = pv_pass_keys(a, M, nq, grp * hd, b.lanes)  # (keys, passes): ragged passes
        beats = sum(c * -(-k // b.width) for k, c in runs)
        if not ok or keys_of.setdefault((w["step"], layer, g), pos) != pos or M > ps * tw \
                or passes > dims.p_depth or beats >> COUNT_BITS or booth_int8_pass_cycles(b, list(runs)) != w["cyc"] \
                or base + T * s.n_heads * ps > dims.a_depth:
            continue
        acc = st.buffers[f"layers.{layer}.attn.av.acc"]
        vals = [int(acc[g * grp + h, t, d]) for t in range(q0, q0 + nq) for h in range(grp) for d in range(hd)]
        vals += [0] * (passes * b.lanes - len(vals))
        words = [(tuple(vals[p * b.lanes:(p + 1) * b.lanes]), 0) for p in range(passes)]
        fields = {"eng": 3, "beats": beats, "groups": passes, "tokens": 1, "nq": nq, "grp": grp, "pos0": a,
                  "k_addr": dbase, "k_stride": hd // ub, "w_addr": 0,
                  "a_addr": base + (g * T + q0) * grp * ps, "a_stride": ps}
        out[i] = (fields, words, (w["step"], layer, g), q0)
    # the probabilities: the g-th softmax word of a step and layer writes group g's rows, over its chunk's keys
    need = {v[2] for v in out.values()}
    writes: dict[int, list] = {}
    sq, group_words, seen = sfu_group_words(img, ".attn.softmax")
    for i, w, layer, g in group_words:
        if (w["step"], layer, g) not in need:
            continue
        base, ps = rows[(w["step"], layer)]
        pos = keys_of[(w["step"], layer, g)]
        w8 = m.run.steps[w["step"]].buffers[f"layers.{layer}.attn.softmax.w8"]  # [H, T, M]
        T = w8.shape[1]
        pad = np.zeros((grp, T, ps * tw), np.int64)
        pad[:, :, :len(pos)] = w8[g * grp:(g + 1) * grp][:, :, pos]
        r = pad.transpose(1, 0, 2).reshape(-1, tw)  # rows (t, h), ps words each
        b0 = base + g * T * grp * ps
        ws = whole_words([(b0 + j, i8_word(x)) for j, x in enumerate(r)], ratio, tw)
        if ws is None or len(ws) > w["cyc"] - 2:
            out = {k: v for k, v in out.items() if v[2] != (w["step"], layer, g)}
            continue
        writes[i] = ws
    # a group whose softmax words are not one a KV head (a query-blocked step) keeps its tiles timers
    bad = {(st_, ly) for (st_, ly), c in seen.items() if c != kvh}
    out = {k: v for k, v in out.items() if v[2][:2] not in bad}
    writes = {i: ws for i, ws in writes.items()
              if (img.words[sq][i]["step"], int(img.words[sq][i]["op"].split(".")[1])) not in bad}
    return out, writes


def pv_cover(plan, out: dict) -> tuple[int, int, int]:
    """(P V tiles mapped, `layers.L.attn.av.acc` buffers whose every element a psum word checks, the
    golden's av.acc buffers: steps x layers)."""
    m = plan.model
    cov: dict[tuple[int, int], np.ndarray] = {}
    s = m.spec
    grp = s.n_heads // s.n_kv_heads
    for f, _, (step, layer, g), q0 in out.values():
        c = cov.setdefault((step, layer), np.zeros((s.n_heads, len(m.run.steps[step].ids)), bool))
        c[g * grp:(g + 1) * grp, q0:q0 + f["nq"]] = True
    return len(out), sum(bool(c.all()) for c in cov.values()), len(m.run.steps) * s.n_layers
