"""The cocotb driver of every unit bench: issue tiles per the lowbit/rtl/common.py cycle convention, collect
outputs, summarise mismatches and cycle counts.

At the falling edge inside cycle c the driver reads the registered outputs (their values in cycle c) and
drives the inputs sampled at the rising edge that ends cycle c. A tile's start is driven in the first
cycle the unit is ``ready``; its beats follow back to back (``None`` = an idle cycle inside the tile,
e.g. the top-K scan phase), so tiles overlap where the unit allows it.
cycles(start -> done) = (cycle with done high) - (cycle with start high).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StreamTile:
    start: dict[str, int]
    beats: list[dict[str, int] | None]
    expect: Any
    expect_cycles: int
    meta: dict[str, Any] = field(default_factory=dict)
    got: list[Any] = field(default_factory=list)
    start_cycle: int = -1
    cycles: int = -1


async def run_stream(dut, tiles: list[StreamTile], idle: dict[str, int], collect: Callable[[Any], Any]) -> int:
    """Drive all tiles; on every cycle with ``out_valid`` append ``collect(dut)`` to the oldest pending
    tile's ``got``; ``done`` closes it. Returns the number of simulated cycles."""
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import FallingEdge

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    ports = {name: getattr(dut, name) for name in set(idle) | {"start"}}
    dut.rst.value = 1
    dut.start.value = 0
    for name, v in idle.items():
        ports[name].value = v
    for _ in range(3):
        await FallingEdge(dut.clk)
    dut.rst.value = 0
    pending: deque[StreamTile] = deque()
    todo = deque(tiles)
    feeding: StreamTile | None = None
    beat_i = 0
    cycle = 0
    limit = sum(len(t.beats) + t.expect_cycles for t in tiles) + 1000
    out_valid, done, ready, start = dut.out_valid, dut.done, dut.ready, dut.start
    last: dict[str, int] = dict(idle)
    while (todo or pending or feeding) and cycle < limit:
        await FallingEdge(dut.clk)  # middle of cycle `cycle`
        if int(out_valid.value) and pending:
            pending[0].got.append(collect(dut))
        if int(done.value) and pending:
            t = pending.popleft()
            t.cycles = cycle - t.start_cycle
        drive: dict[str, int] | None
        if feeding is not None:
            drive = feeding.beats[beat_i]
            beat_i += 1
            if beat_i == len(feeding.beats):
                feeding = None
            start.value = 0
        elif todo and int(ready.value):
            feeding = todo.popleft()
            beat_i = 0
            feeding.start_cycle = cycle
            pending.append(feeding)
            drive = feeding.start
            start.value = 1
            if not feeding.beats:
                feeding = None
        else:
            drive = None
            start.value = 0
        for name, v in (drive or idle).items():
            if last.get(name) != v:
                ports[name].value = v
                last[name] = v
        cycle += 1
    return cycle


def summarize(tiles: list[StreamTile], count: Callable[[StreamTile], int],
              bad: Callable[[StreamTile], int], max_examples: int = 5,
              examples: Callable[[int, StreamTile], list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Result dict in the lowbit.rtl.cocotb_runner format: vectors (Σ count), mismatches (Σ bad), cycle checks
    (one per tile: start -> done vs expect_cycles), and up to `max_examples` failure examples --
    ``examples(tile_index, tile)`` for a failing tile, else its shortened got / want."""
    vectors = mismatches = cyc_bad = 0
    found: list[dict[str, Any]] = []
    cycles = []
    for ti, t in enumerate(tiles):
        n = count(t)
        b = bad(t)
        vectors += n
        mismatches += b
        if b and len(found) < max_examples:
            found += examples(ti, t) if examples else [
                {"tile": ti, **t.meta, "got": repr(t.got)[:400], "want": repr(t.expect)[:400]}]
        if t.cycles != t.expect_cycles:
            cyc_bad += 1
        cycles.append({**t.meta, "sim": int(t.expect_cycles), "rtl": int(t.cycles)})
    return {"vectors": vectors, "mismatches": mismatches, "cycle_checks": len(tiles),
            "cycle_mismatches": cyc_bad, "examples": found[:max_examples], "cycles": cycles}
