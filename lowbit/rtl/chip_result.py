"""What `verify_chip` returns: per-queue start/end comparisons with `lowbit sim --program` and the counts of
every engine's data checked against the whole-model golden (ChipResult.ok is the verdict)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lowbit.rtl.chip_kv import kv_ok

if TYPE_CHECKING:
    from lowbit.rtl.chip import ChipParams


@dataclass
class QueueCompare:
    """One queue: instructions, start/end cycles differing from the simulator, the largest difference."""

    name: str
    instructions: int
    start_mismatches: int
    end_mismatches: int
    max_diff: int
    first: str = ""
    data_words: int = -1       # psum words checked against the golden (-1: the queue's unit runs no data)
    data_mismatches: int = 0


@dataclass
class ChipResult:
    queues: list[QueueCompare]
    sim_cycles: int
    chip_cycles: int
    finished: bool
    late: int
    lane_overflow: int
    dram_requests: int
    seconds: float
    verilog: Path | None = None
    notes: list[str] = field(default_factory=list)
    params: ChipParams | None = None

    data_late: int = 0      # read-data beats the port could not deliver before their response
    data_note: str = ""     # why the chip has no data path ('' when it has one)
    data_ref: str = ""      # what the psum words are checked against
    act_late: int = 0       # SFU words whose act-buffer writes did not end before the instruction
    acc_buffers: tuple[int, int, list[str]] = (0, 0, [])  # whole-model golden: DataPlan.acc_buffers()
    kv_chunks: int = 0      # K/V chunks read back from the kv buffer at their consumer's start
    kv_units: int = 0       # ... their buffer units
    kv_mismatches: int = 0  # units that differ from the golden's K/V rows
    qk: tuple[int, int, int] = (0, 0, 0)  # Q K^T tiles on the data path, qk.acc buffers complete, of all
    sfu: tuple[int, int, int, int] = (0, 0, 0, 0)  # quantize words on the SFU engine, their INT8 act words,
    # elements, words differing from the golden's <op>.q (lowbit.rtl.chip_sfu)
    norm: tuple[int, int, int, int] = (0, 0, 0, 0)  # RMSNorm words on the SFU engine, their Q7.8 words,
    # elements, words and row amax differing from the golden's <norm>.out
    res: tuple[int, int, int, int] = (0, 0, 0, 0)  # residual words on the SFU engine, their Q7.8 words,
    # elements, words differing from the golden's <residual>.out
    pv: tuple[int, int, int] = (0, 0, 0)  # P V tiles on the data path, av.acc buffers complete, of all
    rq: list[tuple[str, int, int]] = field(default_factory=list)  # per requantized projection (lowbit.rtl.chip_requant):
    # 'step S op', Q7.8 elements the requantizers wrote, elements differing from the golden's <op>.out
    rq_drain: list[str] = field(default_factory=list)  # projections the drain rule keeps off the requantizers
    rq_refused: list[str] = field(default_factory=list)  # engines or projections the requantizers cannot map, why
    attn_note: str = ""  # why attention (Q K^T, softmax, P V, the V quantizer) stays off data, where the
    # requantizers run (lowbit.rtl.chip_run.attn_note)
    lop: tuple[int, int, int, str] = (0, 0, 0, "")  # the golden's LOP selections that drop keys, the K/V rows
    # the program's dma_kv fetches for them, rows differing from the golden's lop.sel, the first difference
    # (lowbit.rtl.chip_model.lop_fetch_check)
    lop_engine: tuple[int, int, int, int, str] = (0, 0, 0, 0, "")  # the chip's LOP engine: groups, indices,
    # index mismatches against the golden's lop.sel, done cycles off the LOP words' ends, the first difference
    lop_late: int = 0   # groups' query or LO-code write batches not ended before their lop_score word, and
    # LO-code reads with a data beat outside (the previous group's lop_score end, their own lop_score start)
    lop_fill: tuple[int, int] = (0, 0)  # groups whose LO codes the chip routes from their read's data beats, beats
    lop_note: str = ""  # LOP words left timers and why
    lop_chip_q: int = 0  # LOP groups whose query rows the RoPE engine writes (lowbit.rtl.chip_lop.lop_queries)
    kv_ind: tuple[int, int, int] = (0, 0, 0)  # dma_kv's indirect words, those issued taking their address and
    # size from the LOP index FIFO, those whose indices were not one run of adjacent keys
    act: tuple[int, int, int, int] = (0, 0, 0, 0)  # gating words on the SFU's gating engine, their Q7.8 words,
    # elements, words differing from the golden's <op>.act.out
    av: list[tuple[str, int, int, int, int]] = field(default_factory=list)  # per step and layer whose attention
    # output the chip writes (lowbit.rtl.chip_av.av_compare): name, X elements, differing, S rows, differing
    logits: dict = field(default_factory=dict)  # 'step S lm_head' -> the chip's Q7.8 logits [rows, vocab] (the
    # lm_head on the chip: the requantizers' DST_LOGITS)
    embed: tuple[int, int, int, int] = (0, 0, 0, 0)  # embedding reads on the chip's writer (lowbit.rtl.chip_embed),
    # their X words, elements, X words and row S values differing from the golden's embed.out
    sm: tuple[int, ...] = (0, 0, 0, 0, 0, 0, 0, 0)  # lowbit.rtl.chip_softmax.sm_compare
    sc: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)  # lowbit.rtl.chip_scores.sc_compare
    ks: tuple[int, int, int, int, int, int] = (0, 0, 0, 0, 0, 0)  # lowbit.rtl.chip_kscales.ks_compare
    rope: tuple[int, ...] = (0, 0, 0, 0, 0, 0, 0)  # RoPE words on the chip's RoPE engine, query act words,
    # differing, key words, differing, row amax, differing (lowbit.rtl.chip_rope.rope_compare)
    rope_bench: list[str] = field(default_factory=list)  # RoPE words left timers (the bench writes their queries)
    kvw: dict = field(default_factory=dict)  # the KV writes' data (lowbit.rtl.chip_kv.kv_result)
    feed: tuple[int, int, int, int, int] = (0, 0, 0, -1, 0)  # the instruction port (lowbit.rtl.chip_fetch): words
    # fetched, port cycles, words the rule predicts late on the simulator's schedule, least slack, the chip's requests
    # differing from the rule's on its own schedule

    @property
    def mismatches(self) -> int:
        return sum(q.start_mismatches + q.end_mismatches for q in self.queues)

    @property
    def data_mismatches(self) -> int:
        return sum(q.data_mismatches for q in self.queues)

    @property
    def data_words(self) -> int:
        return sum(max(q.data_words, 0) for q in self.queues)

    @property
    def ok(self) -> bool:
        return (self.finished and self.mismatches == 0 and self.sim_cycles == self.chip_cycles
                and self.late == 0 and self.lane_overflow == 0 and self.data_mismatches == 0
                and self.data_late == 0 and self.act_late == 0 and self.kv_mismatches == 0 and self.sfu[3] == 0
                and self.norm[3] == 0 and self.res[3] == 0 and all(b == 0 for _, _, b in self.rq)
                and self.act[3] == 0 and self.embed[3] == 0 and all(x[2] == 0 and x[4] == 0 for x in self.av) and self.lop[2] == 0
                and self.lop_engine[2] == 0 and self.lop_engine[3] == 0
                and self.lop_late == 0 and self.kv_ind[2] == 0 and self.kv_ind[0] == self.kv_ind[1]
                and self.sm[4] == 0 and self.sm[5] == 0 and self.sc[3] == 0 and self.sc[4] == 0
                and self.ks[3] == 0 and self.ks[4] == 0
                and self.rope[2] == 0 and self.rope[4] == 0 and self.rope[6] == 0 and kv_ok(self.kvw)
                and self.feed[2] == 0 and self.feed[4] == 0)
