"""On-chip SRAM buffer model: capacities, double buffering and the tile-fit rule.

Rule: a tile that cannot fit its buffer is a *config error* (WorkloadError naming the buffer, the
tile bytes and the usable capacity), never a silent spill. A double-buffered buffer offers half its bytes
to one tile (`SramBuffer.tile_bytes`), so the next tile can be filled while the current one is used.

At run time the scheduler treats every buffer as a byte pool of its full capacity: a DMA that fills a tile
allocates its bytes when it starts and the instruction that consumes the tile frees them when it ends; a
DMA waits (stall reason "buffer") until the pool has room. This module only holds the static side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowbit.sim.config import HwConfig
from lowbit.sim.errors import WorkloadError
from lowbit.sim.isa import BUFFERS


@dataclass(frozen=True)
class Buffers:
    """Capacities (bytes) and per-tile usable bytes of the logical buffers (sim.isa.BUFFERS) of a config."""

    capacity: tuple[int, ...]
    tile: tuple[int, ...]
    design: str

    @classmethod
    def from_config(cls, cfg: HwConfig) -> Buffers:
        cap, tile = [], []
        for name in BUFFERS:
            b = next((x for x in cfg.sram if x.name == name), None)
            cap.append(b.bytes if b else 0)
            tile.append(b.tile_bytes if b else 0)
        return cls(tuple(cap), tuple(tile), cfg.name)

    def capacity_array(self) -> np.ndarray:
        return np.asarray(self.capacity, np.int64)

    def check(self, buf: int, nbytes: int, what: str, usable: int | None = None) -> None:
        """Raise WorkloadError if a `nbytes` tile does not fit buffer `buf` (usable bytes per tile)."""
        cap = self.tile[buf] if usable is None else usable
        if nbytes > cap:
            name = BUFFERS[buf]
            total = self.capacity[buf]
            if total == 0:
                raise WorkloadError(f"{self.design}: {what} needs SRAM buffer '{name}' ({nbytes} B) but the design "
                                    f"has none; add a [[sram]] entry named '{name}'")
            raise WorkloadError(
                f"{self.design}: {what}: tile of {nbytes} B does not fit SRAM buffer '{name}' "
                f"(usable {cap} B per tile of {total} B); enlarge [[sram]] '{name}' or shrink the workload")
