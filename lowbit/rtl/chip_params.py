"""The chip's sizes (lowbit.rtl.chip): every one a DESIGN ASSUMPTION, per generated chip; lowbit.rtl.chip_run
`params_for` sizes the program-dependent ones to a program and its schedule."""

from __future__ import annotations

from dataclasses import dataclass


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def ring_depth(p: ChipParams, reads: int) -> int:
    """Words in the instruction ring of a queue whose controller reads `reads` words a cycle (lowbit.rtl.chip_fetch):
    `ifetch_depth`, or the reads rounded up to a power of two where they are more (the window then spans the ring
    and a slot is refilled once the head has passed it)."""
    return max(_pow2(p.ifetch_depth), _pow2(reads))


@dataclass(frozen=True)
class ChipParams:
    """Sizes of the chip's control structures (DESIGN ASSUMPTIONS, per generated chip)."""

    ifetch_depth: int = 8      # instruction ring words of an in-order queue (lowbit.rtl.chip_fetch)
    ifetch_bits: int = 64      # instruction port beat (bits a cycle)
    ifetch_latency: int = 64   # cycles from an instruction request to its first beat
    seq_bits: int = 16         # instruction counts / thresholds
    dma_issue: int = 12        # DMA instructions an engine may issue in one cycle
    dma_table: int = 32        # outstanding requests per engine (completion table)
    ring_entries: int = 8      # live allocations per buffer
    resp_lanes: int = 4        # memory-port responses per cycle
    join_window: int = 8       # joins checked per cycle
    data_banks: int = 0        # weight-buffer banks = buffer units per memory-port data beat; 0: no data path
    mult_depth: int = 0        # requantizer multiplier words per engine (lowbit.rtl.chip_requant); 0: none
    lop_grp: int = 0           # the LOP engine's query heads per KV head (lowbit.rtl.chip_lop); 0: no engine
    lop_hd: int = 0            # ... its head dimension
    lop_depth: int = 0         # ... and the keys its code memory holds (a power of two)
    lop_qrows: int = 0         # ... its query rows, written by the RoPE engine (a power of two); 0: by the bench
    embed_beats: int = 0       # data beats of an embedding row (lowbit.rtl.chip_embed); 0: no embedding writer
    rope_depth: int = 0        # the RoPE table's words (lowbit.rtl.chip_rope; a power of two); 0: no RoPE engine
    rope_beats: int = 0        # ... and the words of a head row its quantize holds
    score_mult: tuple[int, int] = (0, 0)  # the Q K^T score stage's multiplier (lowbit.rtl.chip_scores); 0: none
    kvw_depth: int = 0         # the KV writes' source units (lowbit.rtl.chip_kv; a power of two); 0: no write data
    vquant: tuple[int, ...] = (0, 0, 0, 0, 0)  # the V quantizer's (rows, head_dim, KV heads, positions, layers) (chip_vquant)
    kgather: int = 0           # the gathered keys' scale-index recorder entries (chip_kscales); 0: none

    @property
    def addr_bits(self) -> int:
        """Bits of a ring address (the loader's instruction addresses)."""
        return (ring_depth(self, max(self.dma_issue, self.join_window)) - 1).bit_length()

    @property
    def id_bits(self) -> int:
        return 1 + (self.dma_table - 1).bit_length()
