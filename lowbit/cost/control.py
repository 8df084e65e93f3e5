"""Control, DMA and memory-port ESTIMATE: a representative block synthesised in place of the chip top.

The chip's instruction queues, dependency scoreboard, DMA engines and memory port are what `lowbit synth
--chip` synthesises once the chip-top RTL exists; until then their area and power come from this
representative block, built from the program format (sim/program.py) and the design's queue list
(sim/tiling.physical_units + the sync queue). It is an ESTIMATE, reported as such, and is replaced by the
chip-top netlist when that exists. Per queue (DESIGN ASSUMPTIONS, the minimum a controller of the program
format needs):
- the current instruction held decoded in flops (all INSTR fields, sim.program.INSTR), loaded from an
  instruction stream port;
- its three waits checked against the scoreboard: wait k is satisfied when completed[w_queue] > w_seq
  (one `seq_bits` completion counter per queue, a queue-indexed mux and a comparator per wait);
- a cycle counter loaded from `cyc` that runs the unit's busy time down to its completion.
Per DMA queue: a DRAM address counter (`addr` width) and a remaining-bytes counter stepping one burst per
accepted request, an SRAM ring write pointer (`saddr` width) stepping one burst per response; one memory
port: a request register (address + length) and a response data register of one DRAM burst
(`dram.burst_length` x bus width, bytes) towards the SRAM.
Activity: its own RTL toggle rate on random inputs (rtl/activity.measure_component), an upper-side
estimate; it is charged every cycle of a run (controllers and the memory port are not clock-gated).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass

from lowbit.sim.program import INSTR

SEQ_BITS = 24
WAITS = 3


def _field(name: str) -> tuple[int, int]:
    """(bit offset in the flattened instruction, width) of an INSTR field (fields packed in declaration order)."""
    off = 0
    for f in INSTR.fields:
        if f.name == name:
            return off, f.bits
        off += f.bits
    raise KeyError(name)


INSTR_BITS = sum(f.bits for f in INSTR.fields)


@dataclass(frozen=True)
class ControlShape:
    queues: int          # compute + DMA queues + the sync queue
    dma_queues: int
    burst_bytes: int     # one DRAM burst: the response register width


def control_shape(cfg) -> ControlShape:
    from lowbit.sim.tiling import physical_units

    units = physical_units(cfg)
    dma = sum(1 for n, _ in units if n.startswith("dma"))
    d = cfg.dram
    burst = max(1, int(getattr(d, "burst_length", 16)) * int(getattr(d, "bus_bits", 16)) // 8)
    return ControlShape(len(units) + 1, dma, burst)


def build_control(shape: ControlShape):
    """The representative Amaranth block (module docstring)."""
    from amaranth.hdl import Array, Cat, Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    q_n = shape.queues
    a_off, a_bits = _field("addr")
    n_off, n_bits = _field("nbytes")
    c_off, c_bits = _field("cyc")
    s_off, s_bits = _field("saddr")
    waits = [(_field(f"w{k}_kind"), _field(f"w{k}_queue"), _field(f"w{k}_seq")) for k in range(WAITS)]

    class Control(wiring.Component):
        def __init__(self):
            super().__init__({
                "instr": In(INSTR_BITS), "load": In(q_n), "unit_done": In(q_n),
                "issue": Out(q_n), "busy": Out(q_n),
                "req_ready": In(1), "resp_valid": In(1), "resp_data": In(8 * shape.burst_bytes),
                "req_addr": Out(a_bits), "req_valid": Out(1),
                "sram_addr": Out(s_bits), "sram_data": Out(8 * shape.burst_bytes),
            })

        def elaborate(self, platform):
            m = Module()
            done = Array(Signal(SEQ_BITS, name=f"completed{q}") for q in range(q_n))
            issued = Signal(q_n)
            for q in range(q_n):
                cur = Signal(INSTR_BITS, name=f"cur{q}")
                valid = Signal(name=f"valid{q}")
                left = Signal(c_bits, name=f"left{q}")
                with m.If(self.load[q] & ~valid):
                    m.d.sync += [cur.eq(self.instr), valid.eq(1)]
                ok = []
                for (ko, kb), (qo, qb), (so, sb) in waits:
                    kind = cur[ko:ko + kb]
                    ok.append((kind == 0) | (done[cur[qo:qo + qb]] > cur[so:so + sb]))
                go = valid & Cat(*ok).all() & (left == 0)
                m.d.comb += [self.issue[q].eq(go), issued[q].eq(go), self.busy[q].eq(left != 0)]
                with m.If(go):
                    m.d.sync += [left.eq(cur[c_off:c_off + c_bits]), valid.eq(0)]
                with m.Elif(left != 0):
                    m.d.sync += left.eq(left - 1)
                with m.If(self.unit_done[q]):
                    m.d.sync += done[q].eq(done[q] + 1)
            burst = shape.burst_bytes
            for e in range(shape.dma_queues):
                addr = Signal(a_bits, name=f"dma{e}_addr")
                rem = Signal(n_bits, name=f"dma{e}_left")
                ptr = Signal(s_bits, name=f"dma{e}_ring")
                q = q_n - 1 - shape.dma_queues + e  # the DMA queues precede the sync queue
                with m.If(issued[q]):
                    m.d.sync += [addr.eq(self.instr[a_off:a_off + a_bits]), rem.eq(self.instr[n_off:n_off + n_bits]),
                                 ptr.eq(self.instr[s_off:s_off + s_bits])]
                with m.Elif((rem != 0) & self.req_ready):
                    m.d.sync += [addr.eq(addr + burst), rem.eq(rem - burst)]
                with m.If(self.resp_valid):
                    m.d.sync += ptr.eq(ptr + burst)
                if e == 0:
                    m.d.sync += [self.req_addr.eq(addr), self.req_valid.eq(rem != 0), self.sram_addr.eq(ptr)]
            with m.If(self.resp_valid):
                m.d.sync += self.sram_data.eq(self.resp_data)
            return m

    return Control()


@functools.lru_cache(maxsize=64)  # pure in the shape; elaborating it costs ~1 s, asked twice per design
def control_verilog(shape: ControlShape) -> str:
    from amaranth.back import verilog

    dut = build_control(shape)
    return verilog.convert(dut, name="lowbit_control", ports=None)


def control_activity(shape: ControlShape) -> float:
    """Cached toggle rate of the block on random inputs (rtl/activity.measure_component)."""
    from lowbit.rtl.activity import measure_component
    from lowbit.sim.atomic import atomic_write
    from lowbit.sim.cache import cache_dir

    key = hashlib.sha256(f"{control_verilog(shape)}\0300\0{1}".encode()).hexdigest()[:20]
    path = cache_dir("activity") / f"control-{key}.json"
    if path.exists():
        return json.loads(path.read_text())["activity"]
    a = measure_component(build_control(shape), 300, 1)
    atomic_write(path, json.dumps({"unit": "control", "activity": a}))
    return a


def synth_control(cfg, target_ps: float):
    """Timing-driven synthesis of the representative block (rtl/synth.py, characterised Liberty, cached)."""
    import tempfile
    from pathlib import Path

    from lowbit.rtl.synth import synthesize

    text = control_verilog(control_shape(cfg))
    with tempfile.TemporaryDirectory(prefix="lowbit-ctl-") as td:
        p = Path(td) / "lowbit_control.v"
        p.write_text(text)
        return synthesize([p], "lowbit_control", liberty="characterised", target_ps=target_ps)
