"""The step's input rows on the chip (docs/rtl.md "Data path", "The step's input rows"): the program's
embedding read (sim.lower `embedding`: one dma_w read of the step's t rows, class D_ACT, into the act side)
brings the embedding table's Q7.8 rows over the memory port's data beats, and `EmbedWriter` writes them
into the first norm's input X (the SFU's Q7.8 buffer half of that norm) while summing each row's S = Σx²
into the S memory, so layer 0's attn_norm reads X and S the chip wrote, in the program's cycles.

- Table format: the deployed model's Q7.8 embedding rows (lowbit.sim.golden_weights.Deployed.embed), int16
  little-endian, d_model x 2 bytes a row: the bf16 row size the lowering charges (DESIGN ASSUMPTION: the
  table is stored in the residual stream's format, so the rows need no conversion; with the lm_head on the
  chip and tied embeddings the lowering charges the lm_head's format instead, which this path refuses).
- The read: the lowering charges the step's rows as one request of t x row bytes at the table's base
  (sim.isa.EMBED_BASE), its DRAM timing; the memory side returns the rows of the step's token ids in
  order (DESIGN ASSUMPTION: the gather by the ids the host hands over with the step, whose sampler chose
  them; the chip bench serves the table's rows at those ids, lowbit.rtl.bench.chip_bench).
- The writer: a dma_w request lane with class D_ACT and no write is an embedding read; at its issue the
  writer takes its completion-table slot and its word's `dbase` (the loader's X word address of the
  norm's half; `dwords` 0 keeps it off the weight buffer's fill). Each data beat of that slot writes its
  `beat_words` = beat bits / (16 sfu.lanes) Q7.8 words at once (one X write port per word of a beat,
  DESIGN ASSUMPTION: the X halves take a beat a cycle) and adds the squares of its elements to the row's
  sum; the row's last beat writes S at the half's statistics row (`STAT_HALF` x the X address's top bit +
  the row); it takes the slot's beats until the request's nbytes / beat bytes have come. A row is
  `row_beats` whole beats (ChipParams.embed_beats, sized to the program's model like
  the LOP engine's head dimension). Every beat comes before or with the read's response, so X and S hold
  the rows when the norm starts (no cycle added).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.chip_ctrl import STAT_DEPTH
from lowbit.rtl.common import count_mismatches
from lowbit.rtl.sfu_stream import STAT_BITS, q78_word
from lowbit.sim.isa import C_DMAW, D_ACT, EMBED_BASE

STAT_HALF = STAT_DEPTH // 2


def beat_words(dims, lanes: int) -> int:
    """Q7.8 words of `lanes` int16 in one memory-port data beat (0 when a beat is not whole words)."""
    bb = dims.banks * dims.unit_bits
    return bb // (16 * lanes) if bb % (16 * lanes) == 0 else 0


class EmbedWriter(wiring.Component):
    """The embedding read's data beats into X and S (module docstring)."""

    def __init__(self, *, n_issue: int, slot_bits: int, banks: int, unit_bits: int, lanes: int, a_bits: int,
                 row_beats: int) -> None:
        self.k = banks * unit_bits // (16 * lanes)
        assert self.k * 16 * lanes == banks * unit_bits and row_beats >= 1
        self.row_beats, self.lanes = row_beats, lanes
        sb = (STAT_DEPTH - 1).bit_length()
        super().__init__({
            "issue": In(n_issue),                                     # lane k issues an embedding read
            "issue_slot": In(data.ArrayLayout(slot_bits, n_issue)),
            "issue_base": In(data.ArrayLayout(a_bits, n_issue)),      # its X word address
            "issue_beats": In(data.ArrayLayout(16, n_issue)),         # its data beats
            "data_valid": In(1),
            "data_slot": In(slot_bits),
            "data": In(banks * unit_bits),
            "x_en": Out(1),
            "x_addr": Out(data.ArrayLayout(a_bits, self.k)),
            "x_data": Out(data.ArrayLayout(q78_word(lanes), self.k)),
            "s_en": Out(1),
            "s_addr": Out(sb),
            "s_data": Out(STAT_BITS),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        ab = len(self.issue_base[0])
        slot = Signal.like(self.data_slot)
        left = Signal(16)  # beats still to come (0: no embedding read in flight)
        xp, sp = Signal(ab), Signal.like(self.s_addr)
        nb = Signal(range(max(2, self.row_beats)))  # one bit at least: a one-beat row (vitallm) stays lint clean
        acc = Signal(STAT_BITS)
        for k in range(len(self.issue)):  # at most one embedding read issues a cycle (the loader checks)
            with m.If(self.issue[k]):
                b = self.issue_base[k]
                m.d.sync += [left.eq(self.issue_beats[k]), slot.eq(self.issue_slot[k]), xp.eq(b),
                             sp.eq(Mux(b[ab - 1], STAT_HALF, 0)), nb.eq(0), acc.eq(0)]
        beat = Signal()
        m.d.comb += beat.eq(self.data_valid & (left != 0) & (self.data_slot == slot))
        words = data.ArrayLayout(q78_word(self.lanes), self.k)(self.data)
        sq = sum(words[j][e] * words[j][e] for j in range(self.k) for e in range(self.lanes))
        tot = Signal(STAT_BITS)
        m.d.comb += [tot.eq(acc + sq), self.x_en.eq(beat), self.s_en.eq(beat & (nb == self.row_beats - 1)),
                     self.s_addr.eq(sp), self.s_data.eq(tot)]
        for j in range(self.k):
            m.d.comb += [self.x_addr[j].eq(xp + j), self.x_data[j].eq(words[j])]
        with m.If(beat):
            m.d.sync += [xp.eq(xp + self.k), left.eq(left - 1)]
            with m.If(nb == self.row_beats - 1):
                m.d.sync += [nb.eq(0), acc.eq(0), sp.eq(sp + 1)]
            with m.Else():
                m.d.sync += [nb.eq(nb + 1), acc.eq(tot)]
        return m


@dataclass
class EmbedPorts:
    """The writer's X writes (one port per beat word) and S write, for lowbit.rtl.chip_sfu.sfu_engines."""

    x: list  # (enable, address, data) per beat word
    s: tuple  # (enable, address, data)


def embed_signature(cfg, dims, p) -> dict:
    """The chip's observation ports of the writer: `ex_v` a beat written, `ex_a` its first X word address,
    `ex_w` its words; `es_v` / `es_a` / `es_w` a row's S."""
    from lowbit.rtl.chip_sfu import sfu_data_ok

    if dims is None or not p.embed_beats or sfu_data_ok(cfg) or not beat_words(dims, cfg.sfu.lanes):
        return {}
    k, sb = beat_words(dims, cfg.sfu.lanes), (STAT_DEPTH - 1).bit_length()
    return {"ex_v": Out(1), "ex_a": Out(dims.a_bits), "ex_w": Out(16 * cfg.sfu.lanes * k),
            "es_v": Out(1), "es_a": Out(sb), "es_w": Out(STAT_BITS)}


def embed_writer(chip, m: Module, dma_w) -> EmbedPorts | None:
    """Instantiate the writer in the chip top `chip` (lowbit.rtl.chip.Chip) behind dma_w's request lanes and
    the memory port's data beats; None where the chip has none (embed_signature)."""
    if not hasattr(chip, "ex_v"):
        return None
    d, p, cfg = chip.dims, chip.p, chip.cfg
    lt = (p.dma_table - 1).bit_length()
    m.submodules.embed = e = EmbedWriter(n_issue=p.dma_issue, slot_bits=lt, banks=d.banks, unit_bits=d.unit_bits,
                                         lanes=cfg.sfu.lanes, a_bits=d.a_bits, row_beats=p.embed_beats)
    for k in range(p.dma_issue):  # engine 0 owns request lanes 0 .. dma_issue - 1
        rq = chip.mem.req[k]
        m.d.comb += [e.issue[k].eq(chip.mem.req_valid[k] & (rq.dcls == D_ACT) & ~rq.wr),
                     e.issue_slot[k].eq(rq.id[:lt]), e.issue_base[k].eq(dma_w.f_addr[k][:d.a_bits]),
                     e.issue_beats[k].eq(rq.nbytes >> ((d.banks * d.unit_bytes).bit_length() - 1))]
    rid = chip.mem.rdata_id
    m.d.comb += [e.data_valid.eq(chip.mem.rdata_valid & (rid[lt:] == 0)), e.data_slot.eq(rid[:lt]),
                 e.data.eq(chip.mem.rdata.as_value()),
                 chip.ex_v.eq(e.x_en), chip.ex_a.eq(e.x_addr[0]), chip.ex_w.eq(e.x_data.as_value()),
                 chip.es_v.eq(e.s_en), chip.es_a.eq(e.s_addr), chip.es_w.eq(e.s_data)]
    return EmbedPorts([(e.x_en, e.x_addr[j], e.x_data[j].as_value()) for j in range(e.k)],
                      (e.s_en, e.s_addr, e.s_data))


# ---------------------------------------------------------------------------------------------- the loader

def embed_reads(img) -> dict[int, int]:
    """step -> the index of its embedding read in dma_w (class D_ACT, no write, at the table's base)."""
    dw = next(q for q, c in enumerate(img.classes) if c == C_DMAW)
    return {w.get("step", 0): i for i, w in enumerate(img.words[dw])
            if w["dcls"] == D_ACT and not w["wr"] and w["addr"] == EMBED_BASE}


def embed_plan(plan, img, cfg, w: dict, r: int, half: int, last: int | None) -> bool:
    """Put norm word `w` (layer 0's attn_norm, of X half `r`, the previous user of that half SFU word `last`)
    on the embedding writer's rows: its step's embedding read writes X from word r x half and S; True when it
    can (the read exists, waits for `last`, its bytes are the golden's rows as whole beats), setting the
    read's `dbase` in `plan.emb_fields`, the table in the DRAM image, the step's ids in `plan.emb_gather`
    and the writer's expected words."""
    d, n, spec = plan.dims, cfg.sfu.lanes, plan.model.spec
    k = beat_words(d, n)
    step = w.get("step", 0)
    di = embed_reads(img).get(step)
    if not k or di is None or (cfg.lm_head != "host" and spec.tied_embeddings):
        return False
    dw = next(q for q, c in enumerate(img.classes) if c == C_DMAW)
    dma = img.words[dw][di]
    gs = plan.model.run.steps[step]
    x = gs.buffers.get("embed.out")
    rb, bb = 2 * spec.d_model, d.banks * d.unit_bytes
    if x is None or dma["nbytes"] != len(gs.ids) * rb or rb % bb or spec.d_model % n or x.shape[0] > STAT_HALF \
            or x.shape[0] * (rb // (2 * n)) > half:
        return False
    if last is not None and dma["thr"][plan.sfu_queue] <= last:
        return False  # the read could write X while the half's last user still reads it
    if plan.emb_beats not in (0, rb // bb):
        return False
    plan.emb_beats = rb // bb
    if EMBED_BASE not in plan.dram:
        plan.dram[EMBED_BASE] = plan.model.dep.embed.astype("<i2").tobytes()
    plan.emb_fields[(dw, di)] = {"dwords": 0, "dbase": r * half}
    plan.emb_gather[dma["tag"]] = [EMBED_BASE + int(t) * rb for t in gs.ids]
    words = np.asarray(x, np.int64).reshape(-1, n)
    base = r * half
    plan.emb_expect_x += [(base + a, int(sum((int(v) & 0xFFFF) << (16 * j) for j, v in enumerate(row))))
                          for a, row in enumerate(words)]
    plan.emb_expect_s += [(r * STAT_HALF + j, int((x[j].astype(np.int64) ** 2).sum())) for j in range(x.shape[0])]
    plan.emb_ops.append(f"step {step}")
    plan.emb_elems += int(x.size)
    return True


def embed_compare(plan, xs: list, ss: list, k: int, lanes: int) -> int:
    """Words and S values the writer wrote that differ from the golden's `embed.out` (missing and extra
    counted): `xs` the beats (first address, k words), `ss` the rows' (address, S)."""
    mask = (1 << (16 * lanes)) - 1
    got = [(a + j, (v >> (16 * lanes * j)) & mask) for a, v in xs for j in range(k)]
    want = plan.emb_expect_x
    bad = count_mismatches(got, want)
    gs = [tuple(s) for s in ss]
    return bad + count_mismatches(gs, plan.emb_expect_s)
