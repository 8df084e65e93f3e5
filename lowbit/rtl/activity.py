"""Switching-activity calibration: toggle rate of a generated unit on random data (Amaranth simulator).

Rule: drive the unit busy with uniformly random data inputs (tile protocol of rtl/common.py: `start` pulse
with `beats`/`passes`/`rows`/`m`/`k` set so the tile lasts the whole run, restarted whenever `ready` rises), record a VCD
and count bit toggles of every net except clock and reset (lowbit.rtl.waves.count_toggles).
activity = toggles / (net bits x cycles).
This is an RTL-net activity (registers and named combinational nets), used as the average toggle
probability per cell output per active cycle in cost/energy.py (assumption: mapped gates toggle like the
RTL nets they implement; glitches are not modelled).
Results are cached under ``cache_dir("activity")`` (lowbit.sim.cache), keyed by the generated Verilog's hash.
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
from pathlib import Path

from lowbit.rtl.generate import build_verilog
from lowbit.rtl.registry import get_unit
from lowbit.rtl.waves import count_toggles
from lowbit.sim.atomic import atomic_write
from lowbit.sim.cache import cache_dir

CONTROL = ("start", "beats", "passes", "rows", "m", "k")


def measure_component(dut, cycles: int = 300, seed: int = 1) -> float:
    """Toggle rate of an Amaranth wiring.Component driven with random data for `cycles` cycles."""
    from amaranth.hdl import Value
    from amaranth.sim import Simulator

    rng = random.Random(seed)
    ins, ctrl = [], {}
    for name, member in dut.signature.members.items():
        if member.flow.name != "In":
            continue
        sig = Value.cast(getattr(dut, name))
        (ctrl.__setitem__(name, sig) if name in CONTROL else ins.append(sig))
    ready = Value.cast(dut.ready) if "ready" in dut.signature.members else None
    sim = Simulator(dut)
    sim.add_clock(1e-9)

    async def bench(ctx):
        for c in range(cycles):
            for s in ins:
                ctx.set(s, rng.getrandbits(len(s)))
            # tile sizes that keep the unit busy for the whole run: beats ~ cycles, one pass/row, M keys ~ 16/cycle
            for name, val in (("beats", cycles), ("passes", 1), ("rows", 1), ("m", 16 * cycles), ("k", 32)):
                if name in ctrl:
                    ctx.set(ctrl[name], min(val, 2 ** len(ctrl[name]) - 1))
            if "start" in ctrl:
                go = c == 0 or (ready is not None and ctx.get(ready))
                ctx.set(ctrl["start"], 1 if go else 0)
            await ctx.tick()

    sim.add_testbench(bench)
    with tempfile.TemporaryDirectory() as td:
        vcd = Path(td) / "a.vcd"
        with sim.write_vcd(str(vcd)):
            sim.run()
        return count_toggles(vcd).rate(cycles, exclude=("clk", "rst"))


def unit_activity(cfg, unit: str, cycles: int = 300, seed: int = 1) -> float:
    """Cached toggle rate of one registered RTL unit of `cfg`."""
    spec = get_unit(unit)
    g = build_verilog(unit, spec.section_cfg(cfg))
    key = hashlib.sha256(f"{g.verilog}\0{cycles}\0{seed}".encode()).hexdigest()[:20]
    path = cache_dir("activity") / f"{unit}-{key}.json"
    if path.exists():
        return json.loads(path.read_text())["activity"]
    a = measure_component(spec.build(spec.section_cfg(cfg)), cycles, seed)
    atomic_write(path, json.dumps({"unit": unit, "activity": a, "cycles": cycles, "seed": seed}))
    return a
