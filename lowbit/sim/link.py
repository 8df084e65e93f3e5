"""Chip-to-chip link: the `[link]` config section and the transfer and collective timing rules.

A multi-chip system (lowbit.sim.multichip) connects N identical accelerators in a ring: every chip has one
link to the next chip and one from the previous one, each `bandwidth_gbps` GB/s in each direction. One
message of b bytes over one link takes

    t(b) = latency_ns + b / bandwidth_gbps   [ns]

and costs b * 8 * energy_pj_per_bit. Collectives are the ring algorithms (Patarasuk & Yuan, "Bandwidth
optimal all-reduce algorithms for clusters of workstations", JPDC 69(2), 2009), used by NCCL and by
Megatron-LM's tensor parallelism (Shoeybi et al., arXiv 1909.08053):

    all-reduce of S bytes on N chips = reduce-scatter + all-gather = 2 (N - 1) hops; in each hop every chip
    sends one chunk of ceil(S / N) bytes to its neighbour, all links at once;
    time = 2 (N - 1) * t(ceil(S / N)); bytes on all links together = N * 2 (N - 1) * ceil(S / N)
    point-to-point (a pipeline stage handing its output to the next) = 1 hop of S bytes: t(S), S bytes.

Default numbers (the vitallm preset cites them): a UCIe 1.0 standard-package (2D) module, 16 lanes per
direction at 16 GT/s = 32 GB/s per direction, 0.5 pJ/bit (UCIe 1.0 specification, 2022; D. Das Sharma et al.,
"Universal Chiplet Interconnect Express (UCIe): An Open Industry Standard for Innovations with Chiplets at
Package Level", IEEE TCPMT 12(9), 2022: 0.5 pJ/b for 2D packaging at <= 16 GT/s, ~2 ns PHY + adapter
round trip). latency_ns = 20 is a DESIGN ASSUMPTION: the cited ~2 ns PHY/adapter plus the DMA engine and
on-chip routing at both ends of a message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lowbit.sim.schema import Range


@dataclass(frozen=True, kw_only=True)
class LinkConfig:
    """[link]: one chip-to-chip link of the ring, per direction."""

    bandwidth_gbps: float = 32.0     # GB/s per direction (1 GB = 1e9 bytes)
    latency_ns: float = 20.0         # per message: DMA setup, routing, PHY and adapter
    energy_pj_per_bit: float = 0.5   # per bit moved over the link

    def message_ns(self, nbytes: int) -> float:
        """t(b) = latency_ns + b / bandwidth_gbps (ns); 0 for an empty message."""
        return self.latency_ns + nbytes / self.bandwidth_gbps if nbytes > 0 else 0.0

    def energy_j(self, nbytes: int) -> float:
        return nbytes * 8 * self.energy_pj_per_bit * 1e-12


LINK_RANGES = {
    "bandwidth_gbps": Range(1e-3, 1e5, "GB/s", lo_open=False, why="1 MB/s..100 TB/s per link"),
    "latency_ns": Range(0, 1e6, "ns", why="a message takes at most 1 ms to start"),
    "energy_pj_per_bit": Range(0, 1000, "pJ/bit"),
}


@dataclass(frozen=True)
class Collective:
    """One collective (or point-to-point transfer): S bytes among `chips` chips."""

    kind: str      # "all-reduce" | "send"
    nbytes: int    # S: the payload (bytes of the whole tensor)
    chips: int

    @property
    def hops(self) -> int:
        """Sequential link messages on the critical path."""
        if self.kind == "send":
            return 1
        return 2 * (self.chips - 1)

    @property
    def chunk(self) -> int:
        """Bytes of one message."""
        return self.nbytes if self.kind == "send" else math.ceil(self.nbytes / self.chips)

    @property
    def link_bytes(self) -> int:
        """Bytes over all links together: all-reduce N * 2(N - 1) * ceil(S/N); send S."""
        if self.kind == "send":
            return self.nbytes
        return self.chips * self.hops * self.chunk

    def ns(self, link: LinkConfig) -> float:
        """Time on the critical path: hops * t(chunk)."""
        return self.hops * link.message_ns(self.chunk) if self.chips > 1 or self.kind == "send" else 0.0

    def busy_ns(self, link: LinkConfig) -> float:
        """Data time of the busiest link: hops * chunk / bandwidth (no latency)."""
        return self.hops * self.chunk / link.bandwidth_gbps if self.chips > 1 or self.kind == "send" else 0.0


def cycles(ns: float, clock_hz: float) -> int:
    """ns -> whole cycles at `clock_hz` (rounded up)."""
    return math.ceil(ns * clock_hz * 1e-9 - 1e-9) if ns > 0 else 0
