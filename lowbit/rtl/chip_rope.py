"""RoPE and the per-head query / key quantize in the chip top (docs/rtl.md "The SFU on data"): the RoPE stream
engine (lowbit.rtl.sfu_stream_rope) rotates the q and k head rows the psum requantizers write (lowbit.rtl.
chip_requant, dst 4 and 5), and lowbit.rtl.sfu_stream_headq quantizes each rotated head row to INT8 with its
amax, writing the queries into the act buffer's upper half where Q K^T reads them (lowbit.rtl.chip_attn), all
in the cycles of the program's RoPE word (SFU word `eng` 6).

- **The q / k buffer** (`qk`): a Q7.8 buffer of two banks with a write enable per element (the requantizers'
  writes). A step and layer's RoPE words each cover a block of `nh` KV heads from head g0 (sim.attention's
  head groups: `tiny` one a KV head, `vitallm` one for both): block b holds its tokens one after the other,
  token t's row the block's grp x nh q heads then its nh k heads, `tokw` = (grp + 1) nh beats words, from
  word `base` (the blocks of a step and layer one after the other). The RoPE word then streams rows =
  T x (grp + 1) x nh head rows from `base`, `hpp` = (grp + 1) nh rows a position (its `rows` and `cyc` are the
  program's). The q / k projection tiles' RQ fields address this layout (`rope_fields`), and the drain rule is
  taken for it, the engine reading a row's partner word with its word (`rope_drain_safe`).
- **The table**: the compiler's `rope_table` (sim.numerics.sfu_elem, Q2.14) of the program's positions in the
  engine's word order (`rope_table_words`), loaded through the load port before `start` (DESIGN ASSUMPTION,
  like the norms' gains), `rope_depth` words (a power of two); a word's first table word is its step's first
  position x beats.
- **Outputs**: the queries' INT8 words at the act buffer's upper half, group g's rows (t, h) from
  a_depth / 2 + g T grp beats (the Q K^T tiles' `a_addr`); the keys' INT8 words and every row's amax leave on
  observation ports (`hk*`, `hs*`) for the check against the golden's kv_append.k8, qk.q_amax and
  kv_append.k_amax.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.hdl import Module
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out

from lowbit.rtl.chip_attn import i8_word
from lowbit.rtl.chip_ctrl import ROPE_T_BITS
from lowbit.rtl.common import count_mismatches
from lowbit.rtl.sfu_stream_headq import HEADQ_PIPE, SfuHeadQuant
from lowbit.rtl.sfu_stream_rope import SfuRopeStream, rope_layout_ok, rope_table_words, trig_word

ROPE_ENG = 6     # the SFU word's `eng` of a RoPE word on the engine


@dataclass
class RopeBlock:
    """One RoPE word's head rows in the q / k buffer (module docstring)."""

    word: int
    step: int
    layer: int
    g0: int
    nh: int
    tokens: int
    base: int
    tokw: int


@dataclass
class RopePlan:
    """The RoPE words' placement, the table and the expected outputs (chip_rope's module docstring)."""

    blocks: dict[tuple[int, int], list[RopeBlock]] = field(default_factory=dict)  # (step, layer) -> blocks
    beats: int = 0
    fields: dict[int, dict] = field(default_factory=dict)  # RoPE word -> its SFU word fields (eng 6)
    table: list[int] = field(default_factory=list)       # table words
    depth: int = 0
    q8: list[tuple[int, int]] = field(default_factory=list)   # the queries' act writes (address, word), in order
    k8: list[tuple[int, int]] = field(default_factory=list)   # the keys' words (index, word), in order
    amax: list[tuple[int, int, int]] = field(default_factory=list)  # (k row, row index, amax) in order
    on_chip: list[str] = field(default_factory=list)   # 'step S layers.L.attn.rope' words on the engine
    bench: list[str] = field(default_factory=list)     # RoPE words left timers: 'step S op (why)'
    rows: int = 0                                       # head rows the engine rotates and quantizes


def rope_blocks(plan, img, cfg) -> tuple[dict[tuple[int, int], list[RopeBlock]], int]:
    """The q / k buffer layout of every step and layer (module docstring), and the head rows' words (beats);
    ({}, 0) where the model's head rows are no whole SFU words or do not fit."""
    from lowbit.rtl.chip_attn import sfu_group_words

    if plan.model is None:
        return {}, 0
    s, n = plan.model.spec, cfg.sfu.lanes
    hd, kvh, grp = s.head_dim, s.n_kv_heads, s.n_heads // s.n_kv_heads
    if hd % n or not rope_layout_ok(hd, n):
        return {}, 0
    beats = hd // n
    out: dict[tuple[int, int], list[RopeBlock]] = {}
    _sq, words, _seen = sfu_group_words(img, ".attn.rope")
    for i, w, layer, _g in words:
        T = len(plan.model.run.steps[w["step"]].ids)
        rows = w.get("macs", 0) // hd
        blk = out.setdefault((w["step"], layer), [])
        g0 = sum(b.nh for b in blk)
        base = sum(b.tokens * b.tokw for b in blk)
        if rows % (T * (grp + 1)):
            out[(w["step"], layer)] = []
            continue
        nh = rows // (T * (grp + 1))
        blk.append(RopeBlock(i, w["step"], layer, g0, nh, T, base, (grp + 1) * nh * beats))
    good = {k: v for k, v in out.items() if v and sum(b.nh for b in v) == kvh
            and sum(b.tokens * b.tokw for b in v) <= plan.dims.a_depth}
    return good, beats


def _block_of(blocks: list[RopeBlock], head: int) -> RopeBlock | None:
    return next((b for b in blocks if b.g0 <= head < b.g0 + b.nh), None)


def elem_addr(plan, blocks: list[RopeBlock], kind: str, t: int, c: int, lanes: int) -> int:
    """Element address in the q / k buffer of output column c of token t of attn.q (kind 'q') or attn.k ('k')."""
    s = plan.model.spec
    hd, grp = s.head_dim, s.n_heads // s.n_kv_heads
    b = _block_of(blocks, c // hd // (grp if kind == "q" else 1))
    off = c - b.g0 * grp * hd if kind == "q" else b.nh * grp * hd + c - b.g0 * hd
    return (b.base + t * b.tokw) * lanes + off


def rope_drain_safe(plan, key: tuple[int, str], tiles: list[dict], lanes_sfu: int) -> bool | None:
    """The drain rule (lowbit.rtl.chip_requant) for a q / k projection in the q / k buffer's layout: the RoPE word
    reads a block's token t, word w (and its row's partner word w + beats / 2 with the first half's words) in its
    cycle t x tokw + w, from no earlier than every tile's end; None where the step and layer have no layout."""
    from lowbit.rtl.sfu_stream_requant import REQUANT_DELAY

    step, op = key
    layer, kind = int(op.split(".")[1]), op.split(".")[-1]
    blocks = (plan.rope.blocks if plan.rope is not None else {}).get((step, layer))
    if not blocks:
        return None
    s = plan.model.spec
    hd, grp = s.head_dim, s.n_heads // s.n_kv_heads
    beats = hd // lanes_sfu
    hb = beats // 2
    for x in tiles:
        per = grp * hd if kind == "q" else hd
        b = _block_of(blocks, x["r0"] // per)
        if b is None or _block_of(blocks, (x["r0"] + x["rows"] - 1) // per) is not b:
            return False
        passes = x["tokens"] * x["groups"]
        for p in range(passes):
            before = (passes - 1 - p) * x["bt"]
            t, g = divmod(p, x["groups"])
            r_lo = x["r0"] + g * x["lanes"]
            r_hi = min(r_lo + x["lanes"], x["r0"] + x["rows"])
            for c in range(r_lo, r_hi):
                e = elem_addr(plan, blocks, kind, t, c, lanes_sfu) - b.base * lanes_sfu
                w = e // lanes_sfu - t * b.tokw
                rb = w % beats
                first = w - hb if beats > 1 and rb >= hb else w  # read with its partner, hb words earlier
                if t * b.tokw + first + before < REQUANT_DELAY + 1:
                    return False
    return True


def rope_fields(plan, fields: dict, cfg) -> None:
    """The q / k projection tiles' RQ fields in the q / k buffer's layout, and the requantizers' expected
    outputs' addresses there (the 4th element of plan.rq_expect's entries)."""
    if plan.rope is None or not plan.rope.blocks:
        return
    n = cfg.sfu.lanes
    for (step, op), ws in plan.rq_cover.items():
        if not op.endswith(("attn.q", "attn.k")) or not plan.rope.blocks.get((step, int(op.split(".")[1]))):
            continue
        kind, blocks = op.split(".")[-1], plan.rope.blocks[(step, int(op.split(".")[1]))]
        for q, i in ws:
            t = plan.proj[(q, i)]
            e0 = elem_addr(plan, blocks, kind, 0, t["r0"], n)
            per = plan.model.spec.head_dim * (plan.model.spec.n_heads // plan.model.spec.n_kv_heads if kind == "q" else 1)
            fields[(q, i)].update({"rq_off": e0 % n, "rq_o": e0 // n, "rq_stride": _block_of(blocks, t["r0"] // per).tokw})
    for k, e in enumerate(plan.rq_expect):
        name, dst, out = e[:3]
        step, op = int(name.split()[1]), name.split()[2]
        blocks = plan.rope.blocks.get((step, int(op.split(".")[1]))) if op.endswith(("attn.q", "attn.k")) else None
        if blocks:
            kind = op.split(".")[-1]
            addr = np.array([[elem_addr(plan, blocks, kind, t, c, n) for c in range(out.shape[1])]
                             for t in range(out.shape[0])])
            plan.rq_expect[k] = (name, dst, out, addr)


def rope_plan(plan, img, cfg) -> None:
    """Put the RoPE words on the engine where their q and k come from the requantizers (plan.rq_cover), their
    `cyc` is the engine's and the quantize fits their latency; drop the bench's query writes for them
    (plan.act_writes) and set the fields, the table and the expected outputs in plan.rope."""
    from lowbit.rtl.sfu_stream import stream_cycles
    from lowbit.sim.numerics.sfu_elem import rope_table

    rp = plan.rope
    if rp is None or not rp.blocks:
        return
    s, n, d = plan.model.spec, cfg.sfu.lanes, plan.dims
    hd, grp, beats = s.head_dim, s.n_heads // s.n_kv_heads, rp.beats
    half = d.a_depth // 2
    words = img.words[plan.sfu_queue]
    positions = max(st.start + len(st.ids) for st in plan.model.run.steps)
    for (step, layer), blocks in sorted(rp.blocks.items()):
        st = plan.model.run.steps[step]
        T = len(st.ids)
        bufs = st.buffers
        p = f"layers.{layer}.attn"
        q8, k8 = bufs[f"{p}.qk.q8"], bufs[f"layers.{layer}.attn.kv_append.k8"]
        qa, ka = bufs[f"{p}.qk.q_amax"], bufs[f"layers.{layer}.attn.kv_append.k_amax"]
        for b in blocks:
            w = words[b.word]
            rows = T * (grp + 1) * b.nh
            name = f"step {step} {w['op']}"
            why = ""
            if not all((step, f"{p}.{x}") in plan.rq_cover for x in ("q", "k")):
                why = "its q or k is not requantized on the chip"
            elif stream_cycles(cfg.sfu, "rope", rows, beats) != w["cyc"]:
                why = f"its {w['cyc']} cycles are not the engine's"
            elif cfg.sfu.op_latency("rope") < beats + HEADQ_PIPE:
                why = f"sfu.latency.rope {cfg.sfu.op_latency('rope')} is below the quantize's {beats + HEADQ_PIPE}"
            elif T * s.n_heads * beats > d.a_depth - half:
                why = "its queries do not fit the act buffer's upper half"
            elif positions * beats > 1 << ROPE_T_BITS:
                why = f"the table of {positions} positions exceeds {1 << ROPE_T_BITS} words"
            if why:
                rp.bench.append(f"{name} ({why})")
                continue
            plan.act_writes.pop(b.word, None)  # the bench's query rows (lowbit.rtl.chip_attn.qk_plan)
            rp.fields[b.word] = {"eng": ROPE_ENG, "rows": rows, "beats": beats, "x_addr": b.base,
                                 "o_addr": half + b.g0 * T * grp * beats, "hpp": (grp + 1) * b.nh,
                                 "nq": grp * b.nh, "grp": grp, "gstride": T * grp, "half": hd // 2,
                                 "t_addr": st.start * beats}
            rp.on_chip.append(name)
            rp.rows += rows
            for t in range(T):
                for j in range((grp + 1) * b.nh):
                    if j < grp * b.nh:
                        h = b.g0 * grp + j
                        row = (j // grp) * T * grp + t * grp + j % grp
                        vals, amax = q8[t, h], int(qa[t, h])
                        rp.q8 += [(half + (b.g0 * T * grp + row) * beats + x, i8_word(vals[x * n:(x + 1) * n]))
                                  for x in range(beats)]
                        rp.amax.append((0, row, amax))
                    else:
                        kk = j - grp * b.nh
                        g = b.g0 + kk
                        vals, amax = k8[t, g], int(ka[t, g])
                        rp.k8 += [((t * b.nh + kk) * beats + x, i8_word(vals[x * n:(x + 1) * n])) for x in range(beats)]
                        rp.amax.append((1, t * b.nh + kk, amax))
    if rp.fields:
        cos, sin = rope_table(np.arange(positions), hd, s.rope_theta)
        rp.table = [sum((int(e["cos"]) & 0xFFFF | (int(e["sin"]) & 0xFFFF) << 16) << (32 * j) for j, e in enumerate(wd))
                    for wd in rope_table_words(cos, sin, hd, n)]
        rp.depth = 1 << max(1, (len(rp.table) - 1).bit_length())
    plan.sfu_fields.update(rp.fields)


def rope_signature(cfg, dims) -> dict:
    """The observation ports: the queries' act writes (`hv`, `ha`, `hw`), the keys' INT8 words (`hkv`, `hka`,
    `hkw`) and each row's amax (`hsv`, `hsk` k row, `hsr` row index, `hsa`)."""
    n, ab = cfg.sfu.lanes, dims.a_bits
    return {"hv": Out(1), "ha": Out(ab), "hw": Out(8 * n), "hkv": Out(1), "hka": Out(ab), "hkw": Out(8 * n),
            "hsv": Out(1), "hsk": Out(1), "hsr": Out(ab), "hsa": Out(17)}


def rope_load(chip) -> int:
    """The load port's queue number of the RoPE table: past the LOP engine's two and the softmax engine's
    (lowbit.rtl.chip.Chip.lop_load, lowbit.rtl.chip_softmax)."""
    return chip.lop_load() + 3


def rope_engine(chip, m: Module, ctrl):
    """The q / k buffer (lowbit.rtl.chip_requant.Q78Banks, the requantizers' writes), the RoPE engine, its table
    memory (written through the load port at `rope_load`) and the per-head quantize in `m`, started by the SFU
    queue's words with `eng` 6; returns (engine, quantize, q / k buffer); the quantize's `q_*` port writes the
    act buffer (lowbit.rtl.chip_sfu.act_writes)."""
    from lowbit.rtl.chip_requant import Q78Banks

    cfg, d, p = chip.cfg, chip.dims, chip.p
    n = cfg.sfu.lanes
    qk = Q78Banks(m, "qk", n, d.a_depth, None, None, None)
    ld, ld_addr, ld_word = chip.load_en & (chip.load_queue == rope_load(chip)), chip.load_addr, chip.load_word
    tb = (p.rope_depth - 1).bit_length()
    m.submodules.sfu_rope = r = SfuRopeStream(cfg.sfu, a_bits=d.a_bits, t_bits=tb)
    m.submodules.sfu_headq = h = SfuHeadQuant(n, max_beats=p.rope_beats, a_bits=d.a_bits)
    m.submodules.rope_table = tm = Memory(shape=trig_word(n), depth=p.rope_depth, init=[])
    tw, tr = tm.write_port(), tm.read_port()
    w = ctrl.word
    go = ctrl.go & (w.eng == ROPE_ENG)
    m.d.comb += [tw.en.eq(ld), tw.addr.eq(ld_addr[:tb]), tw.data.eq(ld_word[:trig_word(n).size]),
                 tr.addr.eq(r.t_raddr), r.t_rdata.eq(tr.data),
                 r.x_rdata.eq(qk.reader(r.x_raddr)), r.y_rdata.eq(qk.reader(r.y_raddr)),
                 r.start.eq(go), r.rows.eq(w.rows), r.beats.eq(w.beats), r.hpp.eq(w.hpp), r.half.eq(w.half),
                 r.x_addr.eq(w.x_addr), r.o_addr.eq(0), r.t_addr.eq(w.t_addr[:tb]), r.a_addr.eq(0),
                 h.start.eq(go), h.beats.eq(w.beats), h.hpp.eq(w.hpp), h.nq.eq(w.nq), h.grp.eq(w.grp),
                 h.gstride.eq(w.gstride), h.o_addr.eq(w.o_addr),
                 h.i_wen.eq(r.o_wen), h.i_wdata.eq(r.o_wdata), h.a_wen.eq(r.a_wen), h.a_wdata.eq(r.a_wdata),
                 chip.hv.eq(h.q_wen), chip.ha.eq(h.q_waddr), chip.hw.eq(h.q_wdata), chip.hkv.eq(h.k_wen),
                 chip.hka.eq(h.k_waddr), chip.hkw.eq(h.k_wdata), chip.hsv.eq(h.s_wen), chip.hsk.eq(h.s_k),
                 chip.hsr.eq(h.s_row), chip.hsa.eq(h.s_amax)]
    return r, h, qk


def rope_compare(rp: RopePlan, r: dict) -> tuple[int, int, int, int, int, int, int]:
    """(RoPE words on the engine, query act words, differing, key words, differing, row amax, differing), the
    recorded writes against the golden's qk.q8, kv_append.k8 and their rows' amax, in order (missing and extra
    ones counted)."""
    out = [len(rp.on_chip)]
    for key, want in (("rope_q8", rp.q8), ("rope_k8", rp.k8), ("rope_amax", rp.amax)):
        got = [tuple(x) for x in r.get(key, [])]
        out += [len(want), count_mismatches(got, want)]
    return tuple(out)


__all__ = ["ROPE_ENG", "RopeBlock", "RopePlan", "elem_addr", "rope_blocks",
           "rope_compare", "rope_drain_safe", "rope_engine", "rope_fields", "rope_plan", "rope_signature"]
