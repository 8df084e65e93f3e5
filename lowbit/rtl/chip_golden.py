"""The chip's data (docs/rtl.md "Data path"): what the loader adds to a program's instruction image for the
data path, the DRAM and act-buffer contents the chip bench preloads, and the hardware-exact golden of every
psum word the TINT queues write (sim.numerics applied to the same weights and activations).

Loader rules (`data_plan`, on the host, like the rest of lowbit.rtl.chip_image):
- a weight DMA (dma_w, allocating in the weight ring) fills `dwords` = nbytes / unit bytes buffer units
  from `dbase` = its allocation's byte address / unit bytes (the ring's byte addresses and the weight
  buffer's unit addresses wrap together: the buffer holds the ring's capacity in units,
  lowbit.rtl.chip_data.data_dims);
- a TINT word's tile shape comes from its program fields: rows = macs / rbytes2, k = macs / (wbytes / 4),
  tokens = rbytes2 / k (sim.lower: macs = rows k tokens, rbytes2 = k tokens, wbytes = 4 rows tokens), so
  beats = ceil(k / tree_width), row groups = ceil(rows / lanes), the last holding `tail_lanes` rows (its
  words are those rows' codes only, `tail_step` units each, as the program's byte counts have them); its weights are the allocation of the DMA
  it releases (`w_addr`); the loader checks beats x groups x tokens against the word's `cyc` (the
  sim.units formula) and the DMA's bytes against the packed tile;
- activations (DESIGN ASSUMPTION, no unit writes the act buffer yet): a projection's input is at the act
  buffer's start, token after token, `beats` words each (`a_addr` 0, `a_stride` beats);
- psum: each tile's passes go to its core's psum bank after the previous tile's, wrapping at the bank's depth;
- a BoothFlex word that releases a weight tile of whole row groups, whose k is whole Booth beats and whose
  `cyc` is booth_ternary_tile_cycles of that shape, runs on the chip's BoothEngine (`eng` 1, its beats
  Booth beats of 4 width elements; lowbit.rtl.chip_booth, where the config allows it), every other one
  (the attention tiles) keeps its cycle count.

Contents with a model (`data_plan(..., model=)`, lowbit.rtl.chip_model): the model's deployed codes at each
tile's rows, the golden's INT8 activations written in their quantize words' cycles (`act_writes`), and the
golden's accumulators as each tile's psum words; where the kv buffer holds data, the golden's K/V rows for
dma_kv's chunk reads (read back at their consumers' start, lowbit.rtl.chip_kvread) and BoothFlex's Q K^T
tiles (lowbit.rtl.chip_attn). Without one (seeded contents, the fallback where the
golden does not cover a program): the weights are seeded-random ternary row groups (`lanes` rows x k, numpy default_rng([seed,
DRAM address of the group]); a matrix's last group only its remaining rows), packed with lowbit.rtl.chip_data.pack_tile at the
program's DRAM addresses. Tile order is row group after row group, so a projection's weights are one
layout in DRAM whatever its tiles' row counts (a prefill and a decode step tile the same matrix
differently) and a tile read again in a later step gets the same bytes. The act buffer is seeded-random
INT8. The golden of a tile is sim.numerics.tint.tint_dot of its row groups' weights and each token's
activations: one psum word per (token, row group), in the order the engine writes them (a BoothFlex
tile's with tree width 4 width and BoothFlex's accumulator: its ternary mode sums 4 width products a beat
into the same wrapping accumulator, rtl/booth.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lowbit.rtl.chip_attn import qk_cover, qk_plan
from lowbit.rtl.chip_av import AV_LOAD, av_fields, av_ok, av_plan
from lowbit.rtl.chip_ctrl import AV_FIELDS, RQ_FIELDS
from lowbit.rtl.chip_data import DataDims, data_dims, pack_tile
from lowbit.rtl.chip_image import ChipImage
from lowbit.rtl.chip_kscales import ks_tiles
from lowbit.rtl.chip_kv import KvWritePlan, kv_write_plan
from lowbit.rtl.chip_kvread import kv_reads
from lowbit.rtl.chip_lop import lo_image
from lowbit.rtl.chip_model import ModelContents, NoMapping, input_of
from lowbit.rtl.chip_pv import pv_cover, pv_plan
from lowbit.rtl.chip_requant import requant_cover, requant_fields, rq_queues_of
from lowbit.rtl.chip_rope import RopePlan, rope_blocks, rope_fields, rope_plan
from lowbit.rtl.chip_scores import ScorePlan, score_plan, scores_on_chip
from lowbit.rtl.chip_sfu import act_ratio, sfu_data_ok, sfu_norms, sfu_plan
from lowbit.rtl.chip_softmax import SoftmaxPlan, sm_ok, softmax_plan
from lowbit.sim.config import HwConfig
from lowbit.sim.isa import B_WEIGHT, C_BOOTH, C_DMAKV, C_DMAW, C_SFU, C_TINT

DATA_FIELDS = {"tint": ("beats", "groups", "tokens", "tail_lanes", "tail_step", "w_addr", "a_addr", "a_stride",
                        "p_addr", *RQ_FIELDS),
               "booth": ("eng", "beats", "groups", "tokens", "w_addr", "a_addr", "a_stride", "p_addr", "nq", "grp",
                         "pos0", "k_addr", "k_stride", "tgroups", "tail_step", *RQ_FIELDS, *AV_FIELDS, "ks", "kg"),
               "dma": ("dwords", "dbase"), "dma_kv": ("dwords", "dbase"),
               "sfu": ("eng", "rows", "beats", "x_addr", "o_addr", "st_addr", "g_addr", "eps_q", "sd", "e_sd",
                       "y_addr", "fn", "hpp", "nq", "grp", "gstride", "half", "t_addr", "kg")}


@dataclass
class DataPlan:
    """The data path's preloads and golden for one program image."""

    dims: DataDims
    dram: dict[int, bytes] = field(default_factory=dict)  # DRAM byte address of a weight row group -> its bytes
    act: np.ndarray | None = None                          # act buffer words [a_depth, tree_width] int8 (seeded)
    expect: dict[str, list[tuple[tuple[int, ...], int]]] = field(default_factory=dict)  # per TINT queue:
    # psum words in write order, (accumulator per lane, overflow flags as a lane bit mask)
    tiles: dict[str, int] = field(default_factory=dict)   # tiles on the data path per queue
    fmt: dict[str, tuple[int, int]] = field(default_factory=dict)  # per queue: psum lanes, accumulator bits
    model: ModelContents | None = None                     # the whole-model golden the contents come from
    sfu_queue: int = -1                                    # the queue whose quantize words write the act buffer
    act_writes: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # SFU word -> (act address, word)
    cover: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)  # (step, op) -> acc elements checked
    kv_checks: dict[tuple[int, int], tuple[int, int, bytes]] = field(default_factory=dict)  # a K/V chunk's
    # consumer (queue, index) -> (kv buffer unit address, units, the golden's bytes) read back at its start
    kv_chunks: dict[tuple[int, int], tuple[int, list[int]]] = field(default_factory=dict)  # allocating K/V
    # read -> (kv buffer unit address, the DRAM addresses of its rows in order)
    qk: tuple[int, int, int] = (0, 0, 0)  # Q K^T tiles on the data path, qk.acc buffers complete, of all
    pv: tuple[int, int, int] = (0, 0, 0)  # P V tiles on the data path, av.acc buffers complete, of all
    sfu_fields: dict[int, dict] = field(default_factory=dict)  # SFU word -> its quantize engine fields
    sfu_expect: list[tuple[int, int]] = field(default_factory=list)  # the engine's act writes (address, word)
    sfu_ops: list[str] = field(default_factory=list)  # the quantize words on the engine: 'step S op'
    sfu_elems: int = 0  # golden elements those words hold (<op>.q, tail lanes not counted)
    sfu_norm: dict[int, tuple[int, bool]] = field(default_factory=dict)  # norm word -> (region, on the engine)
    sfu_writes: dict[int, list[tuple[int, list]]] = field(default_factory=dict)  # SFU word -> [(the word they
    # must precede, load-port writes (address, word, load queue past the act buffer's))] from its start on
    sfu_preload: list[tuple[int, int, int]] = field(default_factory=list)  # load-port writes before `start`
    norm_expect: list[tuple[int, int]] = field(default_factory=list)  # RMSNorm engine's Q7.8 writes
    amax_expect: list[tuple[int, int]] = field(default_factory=list)  # ... and its rows' amax
    norm_ops: list[str] = field(default_factory=list)
    norm_elems: int = 0
    res_expect: list[tuple[int, int]] = field(default_factory=list)  # the residual engine's Q7.8 writes
    res_ops: list[str] = field(default_factory=list)
    res_elems: int = 0
    act_expect: list[tuple[int, int]] = field(default_factory=list)  # the gating engine's Q7.8 writes
    act_ops: list[str] = field(default_factory=list)
    act_elems: int = 0
    proj: dict[tuple[int, int], dict] = field(default_factory=dict)  # projection tile on an engine -> its shape
    # (op, step, r0, rows, tokens, groups, bt, lanes, tail: lowbit.rtl.chip_requant)
    rq_cover: dict[tuple[int, str], list] = field(default_factory=dict)  # (step, op) requantized on the chip ->
    # its tiles
    rq_drain: list[str] = field(default_factory=list)  # projections the drain rule keeps off the requantizer
    rq_refused: list[str] = field(default_factory=list)  # engines or projections the requantizers cannot map, why
    rq_expect: list = field(default_factory=list)  # (name, dst, the golden's <op>.out[, its element addresses]) in
    # time order per dst
    mult_depth: int = 0  # the requantizers' multiplier memory depth (0: no requantizer)
    av_cand: dict[tuple[int, int], dict] = field(default_factory=dict)  # (step, layer) whose attention output
    # the chip can write (lowbit.rtl.chip_av.av_plan)
    av_norm: dict[tuple[int, int], int] = field(default_factory=dict)  # ... whose attn_sub_norm runs on the
    # engine: its X region
    av_expect: list = field(default_factory=list)  # (name, X base, words a row, attn.av.out, S base or -1)
    av_writes: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)  # softmax word -> the scales'
    # load-port writes after its act writes (address, w_amax, load queue past the act buffer's)
    emb_fields: dict[tuple[int, int], dict] = field(default_factory=dict)  # embedding read -> its X address
    emb_gather: dict[int, list[int]] = field(default_factory=dict)  # its request tag -> its rows' DRAM addresses
    emb_expect_x: list[tuple[int, int]] = field(default_factory=list)  # the embedding writer's X words
    emb_expect_s: list[tuple[int, int]] = field(default_factory=list)  # ... and its rows' S
    emb_ops: list[str] = field(default_factory=list)
    emb_elems: int = 0
    emb_beats: int = 0  # data beats a row (ChipParams.embed_beats; 0: no embedding read on the writer)
    sm: SoftmaxPlan | None = None  # the softmax words on the softmax engine (lowbit.rtl.chip_softmax)
    rope: RopePlan | None = None  # the RoPE words on the chip's RoPE engine (lowbit.rtl.chip_rope)
    sc: ScorePlan | None = None  # the Q K^T tiles on the score stage (lowbit.rtl.chip_scores)
    kv_written: dict = field(default_factory=dict)  # DRAM address -> (plane, the golden's bytes) of the rows the
    # program's KV writes put in DRAM (lowbit.rtl.chip_kv.kv_written)
    kvw: KvWritePlan | None = None  # the KV writes' sources (lowbit.rtl.chip_kv)

    def acc_buffers(self) -> tuple[int, int, list[str]]:
        """(accumulator buffers every element of which a psum word checks, buffers with any, the golden's
        projection accumulator buffers without any: 'step S op')."""
        if self.model is None:
            return 0, 0, []
        full = sum(bool(c.all()) for c in self.cover.values())
        absent = [f"step {i} {k[:-4]}" for i, st in enumerate(self.model.run.steps) for k in st.buffers
                  if k.endswith(".acc") and k[:-4] in self.model.dep.linears and (i, k[:-4]) not in self.cover]
        return full, len(self.cover), absent


def data_plan(img: ChipImage, cfg: HwConfig, seed: int = 0,
              model: ModelContents | None = None) -> tuple[DataPlan | None, str]:
    """Fill the data fields of `img`'s TINT and dma_w words (module docstring) and build the preloads and
    golden: seeded contents checked against sim.numerics, or with `model` (lowbit.rtl.chip_model) the
    whole-model golden's weights, activations and accumulators; (None, why) when this program or config has
    no data path or a tile has no place in `model` (the image is then left as it was)."""
    try:
        return _data_plan(img, cfg, seed, model)
    except NoMapping as e:
        return None, str(e)


def attn_plan(plan: DataPlan, img: ChipImage, cfg: HwConfig, q: int) -> dict:
    """BoothFlex word index -> (data fields, expected psum words, ...) of queue `q`'s Q K^T and P V tiles on
    the golden (lowbit.rtl.chip_attn.qk_plan, lowbit.rtl.chip_pv.pv_plan; plan.qk / plan.pv their cover),
    the bench's query and probability writes in plan.act_writes and, where the chip has them, the attention
    output (lowbit.rtl.chip_av) and the softmax words with the score stage (lowbit.rtl.chip_softmax,
    lowbit.rtl.chip_scores). The projections' inputs hold the act buffer's first `lower` BoothFlex words: a
    step's tokens x the widest input's act words (act_elems INT8), booth_act's ratio BoothFlex words each."""
    from lowbit.rtl.chip import act_elems
    from lowbit.rtl.chip_booth import booth_act

    s, dims = plan.model.spec, plan.dims
    lower = booth_act(cfg)[1] * max(len(st.ids) for st in plan.model.run.steps) * -(
        -max(s.d_model, s.d_ffn, s.attn_dim) // act_elems(cfg))
    qmap, qwrites = qk_plan(plan, img, cfg, q, plan.kv_chunks, lower)
    plan.act_writes.update(qwrites)
    plan.qk = qk_cover(plan, qmap)
    pmap, pwrites = pv_plan(plan, img, cfg, q, plan.kv_chunks, lower)
    plan.act_writes.update(pwrites)
    plan.pv = pv_cover(plan, pmap)
    qmap.update({i: v[:3] for i, v in pmap.items()})
    if av_ok(cfg, dims):  # the attention output into X and S (lowbit.rtl.chip_av)
        av_plan(plan, img, cfg, q, pmap, AV_LOAD)
    if sm_ok(cfg, dims):  # the softmax words on the SFU's softmax engine (lowbit.rtl.chip_softmax)
        plan.sm = softmax_plan(plan, img, cfg, q, qmap, pwrites)
        plan.sc = score_plan(plan, img, cfg, q, qmap)
        plan.sfu_fields.update(plan.sm.fields)
    return qmap


def attention_fields(plan: DataPlan, img: ChipImage, cfg: HwConfig, fields: dict, bq: list[int],
                     kq: int | None) -> None:
    """After the requantizers' plan, in this order (each reads the fields the one before set): the score stage,
    softmax words and attention output (chip_scores.scores_on_chip, chip_av.av_fields on BoothFlex queue bq[0]),
    then, where dma_kv queue `kq` carries the KV writes' data, their fields (chip_kv, after the RoPE words'
    placement) and the Q K^T tiles' k_amax read by position (chip_kscales)."""
    scores_on_chip(plan)
    if plan.av_norm:
        av_fields(plan, cfg, fields, bq[0])
    if kq is not None:
        plan.kvw = kv_write_plan(plan, img, cfg, kq, plan.kv_written)
        fields.update(plan.kvw.fields)
        if plan.kvw.vquant[0]:
            ks_tiles(plan, plan.kvw.vquant, img.words[kq])
            for k, (f, v, _) in (plan.sc.ks.items() if plan.sc is not None else ()):
                fields[k][f] = v


def _data_plan(img: ChipImage, cfg: HwConfig, seed: int, model: ModelContents | None) -> tuple[DataPlan | None, str]:
    from lowbit.rtl.chip import booth_data, qk_data
    from lowbit.sim.numerics.tint import tint_dot
    from lowbit.sim.units.booth import booth_ternary_tile_cycles
    from lowbit.sim.units.tint import tint_tile_cycles

    if not cfg.has("tint"):
        if cfg.has("fp4"):  # FP4 tiles (lowbit.rtl.chip_fp4)
            from lowbit.rtl.chip_fp4 import fp4_data_plan

            return fp4_data_plan(img, cfg, seed, model)
        return None, "the design has no TINT core"
    dims, why = data_dims(cfg)
    if dims is None:
        return None, why
    t = cfg.tint
    wb, ub = dims.word_bytes, dims.unit_bytes
    tq = [q for q, c in enumerate(img.classes) if c == C_TINT]
    dw = next(q for q, c in enumerate(img.classes) if c == C_DMAW)
    plan = DataPlan(dims, model=model)
    fields: dict[tuple[int, int], dict] = {}
    for i, w in enumerate(img.words[dw]):
        if w["alloc_en"] and w["buf"] == B_WEIGHT and not w["wr"]:
            if w["nbytes"] % ub or w["sbyte"] % ub:
                return None, (f"weight DMA {i} ({w['nbytes']} bytes at ring byte {w['sbyte']}) is not whole "
                              f"{ub}-byte buffer units")
            fields[(dw, i)] = {"dwords": w["nbytes"] // ub, "dbase": w["sbyte"] // ub}
    if model is None:
        rng_act = np.random.default_rng([seed, 1 << 40])
        plan.act = rng_act.integers(-128, 128, size=(dims.a_depth, t.tree_width)).astype(np.int64)
    # the weights: one row group (`lanes` rows x k) per group address, shared by every tile that reads it
    consumer = {(w["free_q"], w["free_i"]): w for ws in img.words for w in ws if w.get("free") and "macs" in w}
    groups_w: dict[int, np.ndarray] = {}
    tile_w: dict[tuple[int, int], np.ndarray] = {}
    row0: dict[tuple[int, int], int] = {}  # weight DMA -> its tile's first row in the model's matrix
    lane_bytes = t.tree_width // 4  # one lane's codes of one beat (2 bits each; data_dims: whole bytes a word)
    for key in fields:
        d, c = img.words[key[0]][key[1]], consumer.get(key)
        shape = tile_shape(c) if c is not None else None
        if shape is None or -(-shape[1] // t.tree_width) * shape[0] * t.tree_width * 2 != 8 * d["nbytes"]:
            continue  # not a tile of TINT geometry: no contents (a TINT word reading it is refused below)
        rows, k, _ = shape
        beats, groups = -(-k // t.tree_width), -(-rows // t.lanes)
        what = f"weight DMA {key[1]} (op {c.get('op')}, step {c.get('step')})"
        r0 = row0[key] = model.first_row(c["op"], d["addr"], k, what) if model is not None else 0
        parts = []
        for g in range(groups):
            a = d["addr"] + g * beats * wb
            real = min(t.lanes, rows - g * t.lanes)
            if a not in groups_w:
                gw = np.zeros((t.lanes, k), np.int8)
                if model is not None:
                    gw[:real] = model.rows(c["op"], r0 + g * t.lanes, real, what)
                else:
                    gw[:real] = np.random.default_rng([seed, a]).integers(-1, 2, size=(real, k))
                groups_w[a] = gw
                plan.dram[a] = pack_tile(gw[:real], real, t.tree_width)  # a last group's words: its rows only
            if groups_w[a].shape[1] != k or groups_w[a][real:].any() or len(plan.dram[a]) != beats * real * lane_bytes:
                return None, f"the weight row group at DRAM address {a} is read as two different tiles"
            if model is not None and not np.array_equal(groups_w[a][:real], model.rows(c["op"], r0 + g * t.lanes,
                                                                                        real, what)):
                return None, f"the weight row group at DRAM address {a} holds rows of two ops"
            parts.append(groups_w[a])
        tile_w[key] = np.concatenate(parts)
    reads: dict[tuple[int, str], int] = {}  # (step, quantize op) -> act words per token, of the tiles reading it

    def golden_words(w: dict, src: tuple[int, int], rows: int, tokens: int, k: int, lanes: int, what: str) -> list:
        """A tile's expected psum words from the golden's accumulators (module docstring of chip_model)."""
        model.acts(w["step"], w["op"], tokens, k, what)  # the tile reads that op's whole input
        r0 = row0[src]
        reads[(w["step"], input_of(w["op"]))] = -(-k // t.tree_width)
        acc = model.acc(w["step"], w["op"], r0, rows)
        cov = plan.cover.setdefault((w["step"], w["op"]), np.zeros(model.run.steps[w["step"]].buffers[
            f"{w['op']}.acc"].shape, bool))
        cov[:, r0:r0 + rows] = True
        pad = np.zeros((tokens, -(-rows // lanes) * lanes), np.int64)
        pad[:, :rows] = acc
        return _psum_words(pad, np.zeros(pad.shape, bool), lanes)

    for q in tq:
        name = img.queues[q]
        out: list[tuple[tuple[int, ...], int]] = []
        pnext = 0
        for i, w in enumerate(img.words[q]):
            src = (w.get("free_q", -1), w.get("free_i", -1))
            if src not in fields or w["rbuf"] != B_WEIGHT:
                return None, f"{name} word {i} does not read a weight tile from the weight ring"
            shape = tile_shape(w)
            if shape is None:
                return None, f"{name} word {i}: no tile shape gives macs {w['macs']}, rbytes2 {w['rbytes2']}"
            rows, k, tokens = shape
            beats, groups = -(-k // t.tree_width), -(-rows // t.lanes)
            if tint_tile_cycles(t, k, tokens * groups) != w["cyc"]:
                return None, f"{name} word {i}: {rows} x {k} x {tokens} tokens is not its {w['cyc']} cycles"
            if src not in tile_w:
                d = img.words[src[0]][src[1]]
                return None, f"{name} word {i}: its weight DMA's {d['nbytes']} bytes are not a {rows} x {k} tile"
            if tokens * beats > dims.a_depth or tokens * groups > dims.p_depth:
                return None, f"{name} word {i}: {tokens} tokens of {beats} words do not fit the act / psum buffers"
            tail = rows - (groups - 1) * t.lanes
            if tail * lane_bytes % ub:
                return None, f"{name} word {i}: its last row group's {tail}-row words are no whole {ub}-byte units"
            fields[(q, i)] = {"beats": beats, "groups": groups, "tokens": tokens, "tail_lanes": tail,
                              "tail_step": tail * lane_bytes // ub, "w_addr": fields[src]["dbase"],
                              "a_addr": 0, "a_stride": beats, "p_addr": pnext % dims.p_depth}
            pnext += tokens * groups
            if model is not None:
                out += golden_words(w, src, rows, tokens, k, t.lanes, f"{name} word {i} ({w['op']}, step {w['step']})")
                plan.proj[(q, i)] = {"op": w["op"], "step": w["step"], "r0": row0[src], "rows": rows, "tokens": tokens,
                                     "groups": groups, "bt": beats, "lanes": t.lanes, "tail": tail}
                continue
            acts = plan.act[:tokens * beats].reshape(tokens, beats * t.tree_width)[:, :k]
            acc, ovf = tint_dot(tile_w[src][None, :, :], acts[:, None, :], t.tree_width, t.acc_bits)
            out += _psum_words(acc, ovf, t.lanes)
        plan.expect[name] = out
        plan.tiles[name] = len(img.words[q])
        plan.fmt[name] = (t.lanes, t.acc_bits)
    kq = next((q for q, c in enumerate(img.classes) if c == C_DMAKV), -1)
    kqs = (kq,) if dims.k_depth and kq >= 0 else ()
    if kqs and model is not None:
        fields.update(kv_reads(plan, img, kq))
        lo_image(plan, img, kq)  # the LO-code reads' bytes (chip_lop)
    bq = [q for q, c in enumerate(img.classes) if c == C_BOOTH] if booth_data(cfg) else []
    for q in bq:  # BoothFlex: its ternary weight tiles on the engine, Q K^T where it can, the rest timers
        b, per = cfg.booth, 4 * cfg.booth.width
        out, pnext, n = [], 0, 0
        qmap: dict = {}
        if model is not None and qk_data(cfg, dims):
            qmap = attn_plan(plan, img, cfg, q)
        for i, w in enumerate(img.words[q]):
            if i in qmap:  # a Q K^T tile (lowbit.rtl.chip_attn)
                fields[(q, i)] = {**qmap[i][0], "p_addr": pnext % dims.p_depth}
                out += qmap[i][1]
                pnext += qmap[i][0]["groups"]
                n += 1
                continue
            src, shape = (w.get("free_q", -1), w.get("free_i", -1)), tile_shape(w)
            if src not in tile_w or w["rbuf"] != B_WEIGHT or shape is None:
                continue
            rows, k, tokens = shape
            groups, tg = rows // b.lanes, -(-rows // t.lanes)  # Booth passes, TINT row groups (chip_booth_regroup)
            tail = (rows - (tg - 1) * t.lanes) * lane_bytes
            if rows % b.lanes or k % per or booth_ternary_tile_cycles(b, k, tokens * groups) != w["cyc"] \
                    or tokens * k // t.tree_width > dims.a_depth or tokens * groups > dims.p_depth or tail % ub:
                continue
            fields[(q, i)] = {"eng": 1, "beats": k // per, "groups": groups, "tokens": tokens,
                              "w_addr": fields[src]["dbase"], "a_addr": 0, "a_stride": k // t.tree_width,
                              "p_addr": pnext % dims.p_depth, "tgroups": tg, "tail_step": tail // ub}
            pnext += tokens * groups
            n += 1
            if model is not None:
                out += golden_words(w, src, rows, tokens, k, b.lanes,
                                    f"{img.queues[q]} word {i} ({w['op']}, step {w['step']})")
                plan.proj[(q, i)] = {"op": w["op"], "step": w["step"], "r0": row0[src], "rows": rows, "tokens": tokens,
                                     "groups": groups, "bt": k // per, "lanes": b.lanes, "tail": b.lanes}
                continue
            acts = plan.act[:tokens * k // t.tree_width].reshape(tokens, k)
            acc, ovf = tint_dot(tile_w[src][None, :rows, :], acts[:, None, :], per, b.acc_bits)
            out += _psum_words(acc, ovf, b.lanes)
        plan.expect[img.queues[q]] = out
        plan.tiles[img.queues[q]] = n
        plan.fmt[img.queues[q]] = (b.lanes, b.acc_bits)
    why = requant_plan(plan, img, cfg, fields, reads, t.tree_width, sorted((*tq, *bq)))
    if why:
        return None, why
    attention_fields(plan, img, cfg, fields, bq, kq if kqs and model is not None else None)
    sq = [q for q, c in enumerate(img.classes) if c == C_SFU and not sfu_data_ok(cfg)]
    fields.update({(q, i): f for q in sq for i, f in plan.sfu_fields.items()})
    fields.update(plan.emb_fields)
    for q, ws in ((q, img.words[q]) for q in (*tq, *bq, dw, *kqs, *sq)):
        kind = ("tint" if q in tq else "booth" if q in bq else "dma" if q == dw else "sfu" if q in sq
                else "dma_kv")
        for i, w in enumerate(ws):
            w.update({**dict.fromkeys(DATA_FIELDS[kind], 0), **fields.get((q, i), {})})
    return plan, ""


def requant_plan(plan: DataPlan, img: ChipImage, cfg: HwConfig, fields: dict, reads: dict[tuple[int, str], int],
                 tw: int, queues: list[int]) -> str:
    """The requantizers' part of the loader (lowbit.rtl.chip_requant), after the projection tiles' fields and
    `plan.proj`: requantizers behind the engines of `queues` whose psum word fits the SFU's (rq_queues), the
    RoPE engine's q / k layout and the projections they cover (requant_cover), the act buffer's writes
    (`_act_writes`, `tw` INT8 a word), then their RQ fields and multiplier words (requant_fields) and the RoPE
    words on the engine (lowbit.rtl.chip_rope); '' or why not."""
    rq_queues = rq_queues_of(plan, img, cfg, queues)
    plan.proj = {k: v for k, v in plan.proj.items() if k[0] in rq_queues}
    if rq_queues:
        plan.rope = RopePlan(*rope_blocks(plan, img, cfg))
        requant_cover(plan, img, cfg)
    if plan.model is not None:
        why = _act_writes(plan, img, reads, tw, cfg)
        if why:
            return why
    if rq_queues:
        why = requant_fields(plan, img, cfg, fields, plan.sfu_queue, rq_queues)
        if why:
            return why
        rope_fields(plan, fields, cfg)
        rope_plan(plan, img, cfg)
    return ""


def _act_writes(plan: DataPlan, img: ChipImage, reads: dict[tuple[int, str], int], tw: int, cfg: HwConfig) -> str:
    """The act buffer's contents per quantize word of the SFU queue (chip_model's module docstring): the
    golden's INT8 rows, token after token from address 0, `beats` words a token, written by the SFU's
    quantize engine from its input (lowbit.rtl.chip_sfu.sfu_plan) where the chip has it, else by the bench
    in the word's cycles; '' or why not."""
    sq = next((q for q, c in enumerate(img.classes) if c == C_SFU), -1)
    plan.sfu_queue = sq
    engine = sq >= 0 and not sfu_data_ok(cfg)
    ratio = act_ratio(cfg) if engine else 1  # the quantize engine's words in an act word (chip_sfu.act_ratio)
    if engine:
        sfu_norms(plan, img, cfg)
    done = set()
    for i, w in enumerate(img.words[sq] if sq >= 0 else []):
        key = (w.get("step", -1), w.get("op", ""))
        x = plan.model.quant(*key)
        if key not in reads:  # no tile on the data path reads it: the engine still runs it where it can
            if engine and x is not None and w["op"].endswith("_quant"):
                sfu_plan(plan, img, cfg, i, key, -(-x.shape[1] // tw) * ratio)
            continue
        beats = reads[key]
        if engine and sfu_plan(plan, img, cfg, i, key, beats * ratio):
            done.add(key)
            continue
        pad = np.zeros((x.shape[0], beats * tw), np.int64)
        pad[:, :x.shape[1]] = x
        words = [act_word(v) for v in pad.reshape(-1, tw)]
        if len(words) > w["cyc"] - 2:
            return (f"{img.queues[sq]} word {i} ({key[1]}, step {key[0]}): its {len(words)} act words do not fit "
                    f"its {w['cyc']} cycles at one a cycle")
        plan.act_writes[i] = list(enumerate(words))
        done.add(key)
    missing = sorted(set(reads) - done)
    if missing:
        return f"no SFU quantize word writes '{missing[0][1]}' of step {missing[0][0]}, which tiles read"
    return ""


def _psum_words(acc: np.ndarray, ovf: np.ndarray, lanes: int) -> list[tuple[tuple[int, ...], int]]:
    """A tile's psum words in write order (token, then row group): accumulators and the overflow lane mask."""
    out = []
    for tok in range(acc.shape[0]):
        for g in range(acc.shape[1] // lanes):
            sl = slice(g * lanes, (g + 1) * lanes)
            out.append((tuple(int(x) for x in acc[tok, sl]), sum(int(v) << lane for lane, v in enumerate(ovf[tok, sl]))))
    return out


def tile_shape(w: dict) -> tuple[int, int, int] | None:
    """(rows, k, tokens) of a projection tile's compute word: rows = macs / rbytes2, k = macs / (wbytes / 4),
    tokens = rbytes2 / k (sim.lower's accounting); None when the fields are no such product."""
    if not w.get("rbytes2") or not w.get("wbytes") or w["wbytes"] % 4:
        return None
    rows, k = w["macs"] // w["rbytes2"], w["macs"] // (w["wbytes"] // 4)
    tokens = w["rbytes2"] // k if k else 0
    if not tokens or rows * k * tokens != w["macs"] or k * tokens != w["rbytes2"] or 4 * rows * tokens != w["wbytes"]:
        return None
    return rows, k, tokens


def segments(dram: dict[int, bytes]) -> dict[int, bytes]:
    """The DRAM image as maximal runs of contiguous bytes (start address -> bytes)."""
    out: dict[int, bytes] = {}
    last = None
    for a in sorted(dram):
        if last is not None and last + len(out[last]) == a:
            out[last] += dram[a]
        else:
            out[a] = dram[a]
            last = a
    return out


def act_word(x: np.ndarray) -> int:
    """An act buffer word: `tree_width` INT8, element 0 in the low byte."""
    return sum((int(v) & 0xFF) << (8 * i) for i, v in enumerate(x))


def compare_psum(want: list[tuple[tuple[int, ...], int]], got: list) -> int:
    """psum words that differ (value or overflow flags), counting missing and extra words."""
    n = sum(tuple(g[0]) != w[0] or int(g[1]) != w[1] for w, g in zip(want, got, strict=False))
    return n + abs(len(want) - len(got))
