"""Timelines of a simulation, written while it runs (observers of lowbit.sim.engine.simulate).

`PerfettoTimeline` writes Perfetto's binary protobuf trace (lowbit.sim.pftrace), streamed chunk by chunk,
so a whole run (a 3B model, 64 + 128 tokens: ~52 M instructions) goes to disk in bounded memory:
- one track per compute unit, one slice per instruction it ran, named "<step> <op> <sub-kind>" (e.g.
  "decode7 layers.3.attn.q tile"); one track per DMA queue whose child tracks ("lanes") hold its requests
  from issue to completion (requests overlap, and slices on one track must nest, so each request goes to
  the first lane that is free at its issue);
- a "steps" track (one slice per forward step) and a "layers" track (per step and layer, first to last
  compute instruction of the layer, clipped so consecutive layers never overlap);
- counter tracks, per time bin: DRAM bandwidth in GB/s (each DMA's bytes spread evenly over its issue ->
  completion interval) and the occupancy of every SRAM buffer in bytes (time-average of the allocations
  held: a DMA's bytes from its start until the instruction that frees them ends). Bins start at
  `bin_cycles` and double when the run gets long, so there are at most MAX_BINS per counter.
Times are nanoseconds at the config clock. A `Window` keeps only the chunks of some steps and/or layers
(counters: the bins that overlap the kept chunks).

`Timeline` writes Chrome trace-event JSON (one complete event per instruction, thread = unit), capped at
`cap` events because a JSON file of a whole run would be gigabytes; use the Perfetto format for whole runs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from lowbit.sim import pftrace
from lowbit.sim.errors import LowbitError
from lowbit.sim.isa import C_DMAKV, C_DMAW, SUBS, UNIT_CLASS_BASE
from lowbit.sim.sched import Scheduled

MAX_BINS = 1 << 16
MAX_LANES = 4096
ROOT, STEPS, LAYERS, DRAM = 1, 2, 3, 4
BUF_BASE, UNIT_BASE, LANE_BASE = 8, 32, 256


@dataclass(frozen=True)
class Window:
    """Steps (trace step numbers: prefill 0, decode 1..D) and decoder layers to keep, inclusive ranges;
    None keeps all. With a layer range the model-level ops (layer -1) are left out."""

    steps: tuple[int, int] | None = None
    layers: tuple[int, int] | None = None

    @classmethod
    def parse(cls, text: str) -> Window:
        """'steps=A-B', 'layers=A-B' or both, comma-separated ('steps=3' is one step)."""
        got: dict[str, tuple[int, int]] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            m = re.fullmatch(r"(steps|layers)=(\d+)(?:-(\d+))?", part)
            if not m or m.group(1) in got:
                raise LowbitError(f"--timeline-window {text!r}: expected 'steps=A-B', 'layers=A-B' or both, "
                                  "comma-separated (e.g. 'steps=1-4,layers=0-1')")
            a, b = int(m.group(2)), int(m.group(3) or m.group(2))
            if b < a:
                raise LowbitError(f"--timeline-window {text!r}: range {a}-{b} is empty")
            got[m.group(1)] = (a, b)
        if not got:
            raise LowbitError(f"--timeline-window {text!r}: empty")
        return cls(got.get("steps"), got.get("layers"))

    def keeps(self, rec: Scheduled) -> bool:
        if self.steps and not self.steps[0] <= rec.trace_step <= self.steps[1]:
            return False
        return not self.layers or self.layers[0] <= rec.layer <= self.layers[1]

    def keeps_step(self, trace_step: int) -> bool:
        return not self.steps or self.steps[0] <= trace_step <= self.steps[1]


def step_label(phase: str, trace_step: int) -> str:
    return "prefill" if phase == "prefill" else f"decode{trace_step}"


# ------------------------------------------------------------------------------------ Perfetto


@njit(cache=True)
def _lanes(q, s, t, lane_end, nlanes, out):
    """First-fit lane of each DMA request (queue q[i], issue s[i], done t[i]); -1 if MAX_LANES are full."""
    for i in range(q.shape[0]):
        k = q[i]
        lane = -1
        for j in range(nlanes[k]):
            if lane_end[k, j] <= s[i]:
                lane = j
                break
        if lane < 0 and nlanes[k] < lane_end.shape[1]:
            lane = nlanes[k]
            nlanes[k] += 1
        if lane < 0:
            return -1
        lane_end[k, lane] = t[i]
        out[i] = lane
    return 0


@njit(cache=True)
def _spread(acc, row, bin_cycles, s, e, w, per_cycle):
    """Add weights w[i] over [s[i], e[i]) to the bins of acc[row[i]]: w * overlap cycles (per_cycle) or w
    split in proportion to the overlap (a zero-length interval puts w in its bin)."""
    for i in range(s.shape[0]):
        a, b = s[i], e[i]
        if b <= a:
            if not per_cycle:
                acc[row[i], a // bin_cycles] += w[i]
            continue
        k = a // bin_cycles
        while k * bin_cycles < b:
            lo = max(a, k * bin_cycles)
            hi = min(b, (k + 1) * bin_cycles)
            acc[row[i], k] += w[i] * (hi - lo) if per_cycle else w[i] * (hi - lo) / (b - a)
            k += 1


class PerfettoTimeline:
    """Streams a Perfetto protobuf trace to `path` (written to a temporary file, renamed by `close`)."""

    def __init__(self, path: Path, units: list[tuple[str, int]], buffers: list[str], clock_hz: float, *,
                 title: str, window: Window | None = None, bin_cycles: int = 10_000):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp")
        self.units = [n for n, _ in units]
        self.is_dma = np.array([c < UNIT_CLASS_BASE for _, c in units])
        self.queue_of = np.cumsum(self.is_dma) - 1  # DMA queue index of a DMA unit
        self.buffers = list(buffers)
        self.ns = 1e9 / clock_hz
        self.window = window
        self.bin = int(bin_cycles)
        self.dram = np.zeros((1, 1024), np.float64)
        self.occ = np.zeros((len(buffers), 1024), np.float64)
        self.lane_end = np.zeros((int(self.is_dma.sum()), MAX_LANES), np.int64)
        self.nlanes = np.zeros(int(self.is_dma.sum()), np.int64)
        self.lane_uuid: dict[tuple[int, int], int] = {}
        self.slices = {u: 0 for u in self.units}
        self.t_lo, self.t_hi = None, 0
        self.iid = 0
        self.names: dict[str, int] = {}
        self.first_interned = True
        self._pending: list[tuple[int, str]] = []
        self.layer_end = 0
        self.step_info: tuple[str, int] = ("", 0)
        self.f = open(self.tmp, "wb", buffering=1 << 22)  # noqa: SIM115 - closed in close()/abort()
        hdr = [pftrace.track_descriptor(ROOT, title, explicit_children=True),
               pftrace.track_descriptor(STEPS, "steps", ROOT, rank=0),
               pftrace.track_descriptor(LAYERS, "layers", ROOT, rank=1),
               pftrace.track_descriptor(DRAM, "DRAM bandwidth (GB/s)", ROOT, counter_unit="GB/s", rank=2)]
        hdr += [pftrace.track_descriptor(BUF_BASE + j, f"SRAM {b} occupancy (bytes)", ROOT, counter_unit="bytes",
                                         rank=3 + j) for j, b in enumerate(self.buffers)]
        hdr += [pftrace.track_descriptor(UNIT_BASE + i, n, ROOT, rank=16 + i, explicit_children=True)
                for i, n in enumerate(self.units)]
        self.f.write(b"".join(hdr))

    # ------------------------------------------------------------------------------------ observer

    def begin_step(self, step: int, t_barrier: int) -> None:
        self.t_step = t_barrier
        self.names.clear()  # names carry the step, so earlier steps' names never recur

    def add(self, rec: Scheduled, sched: Any, ext_id: int) -> None:
        self.step_info = (rec.phase, rec.trace_step)
        self._counters(rec)
        if self.window is not None and not self.window.keeps(rec):
            return
        a, s, t, u = rec.cols, rec.start, rec.end, rec.unit
        sel = np.nonzero(u >= 0)[0]
        if not len(sel):
            return
        us, ss, ts = u[sel], s[sel], t[sel]
        self.t_lo = int(ss.min()) if self.t_lo is None else min(self.t_lo, int(ss.min()))
        self.t_hi = max(self.t_hi, int(ts.max()))
        track = UNIT_BASE + us
        dma = self.is_dma[us]
        if dma.any():
            di = np.nonzero(dma)[0]
            lane = np.zeros(len(di), np.int64)
            q = self.queue_of[us[di]]
            if _lanes(q, ss[di], ts[di], self.lane_end, self.nlanes, lane) < 0:
                raise LowbitError(f"timeline: more than {MAX_LANES} DMA requests in flight on one queue")
            track[di] = [self._lane(int(uu), int(k)) for uu, k in zip(us[di], lane, strict=True)]
        label = step_label(rec.phase, rec.trace_step)
        code = a["opi"][sel] * len(SUBS) + a["sub"][sel]
        uniq, inv = np.unique(code, return_inverse=True)
        iids = np.array([self._intern(f"{label} {rec.names[c // len(SUBS)]} {SUBS[c % len(SUBS)]}")
                         for c in uniq.tolist()], np.int64)
        self._flush_names()
        tb, te = self._ns(ss), self._ns(ts)
        buf = np.empty(48 * len(sel) + 64, np.uint8)
        n = pftrace.encode_slices(buf, tb, te, track.astype(np.int64), iids[inv])
        self.f.write(buf[:n].tobytes())
        for k, c in zip(*np.unique(us, return_counts=True), strict=True):
            self.slices[self.units[int(k)]] += int(c)
        comp = ~dma
        if comp.any():  # the layer slice: first to last compute instruction, after the previous layer slice
            lo = max(int(ss[comp].min()), self.layer_end)
            hi = max(int(ts[comp].max()), lo)
            name = f"{label} layer {rec.layer}" if rec.layer >= 0 else f"{label} model-level ops"
            self._slice(LAYERS, lo, hi, name)
            self.layer_end = hi

    def end_step(self, step: int, step_end: int) -> None:
        phase, ts = self.step_info
        if self.window is None or self.window.keeps_step(ts):
            self._slice(STEPS, self.t_step, step_end, "prefill" if phase == "prefill" else f"decode step {ts}")

    # ------------------------------------------------------------------------------------ output

    def close(self) -> dict[str, Any]:
        """Write the counters, close and rename the file; returns slices per unit and the file size."""
        lo = 0 if self.t_lo is None else self.t_lo // self.bin
        hi = (self.t_hi + self.bin - 1) // self.bin if self.t_lo is not None else 0
        k = np.arange(lo, max(hi, lo))
        ts = self._ns(k * self.bin)
        gbps = self.dram[0, lo:hi] / (self.bin * self.ns)  # bytes per ns = GB/s
        self.f.write(pftrace.counter_packets(ts, DRAM, gbps))
        for j in range(len(self.buffers)):
            self.f.write(pftrace.counter_packets(ts, BUF_BASE + j, self.occ[j, lo:hi] / self.bin))
        self.f.close()
        os.replace(self.tmp, self.path)
        return {"path": str(self.path), "bytes": self.path.stat().st_size, "slices": dict(self.slices),
                "bin_cycles": self.bin}

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------ helpers

    def _ns(self, cycles: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(cycles, np.float64) * self.ns).astype(np.int64)

    def _intern(self, name: str) -> int:
        iid = self.names.get(name)
        if iid is None:
            self.iid += 1
            iid = self.names[name] = self.iid
            self._pending.append((iid, name))
        return iid

    def _flush_names(self) -> None:
        if self._pending:
            self.f.write(pftrace.interned_names(self._pending, self.first_interned))
            self.first_interned = False
            self._pending = []

    def _lane(self, unit: int, lane: int) -> int:
        key = (unit, lane)
        if key not in self.lane_uuid:
            uuid = LANE_BASE + len(self.lane_uuid)
            self.lane_uuid[key] = uuid
            self.f.write(pftrace.track_descriptor(uuid, f"{self.units[unit]} lane {lane}", UNIT_BASE + unit, rank=lane))
        return self.lane_uuid[key]

    def _slice(self, track: int, lo: int, hi: int, name: str) -> None:
        iid = self._intern(name)
        self._flush_names()
        buf = np.empty(128, np.uint8)
        n = pftrace.encode_slices(buf, self._ns(np.array([lo])), self._ns(np.array([hi])),
                                  np.array([track], np.int64), np.array([iid], np.int64))
        self.f.write(buf[:n].tobytes())

    def _counters(self, rec: Scheduled) -> None:
        """DRAM bytes and buffer allocations of every chunk (also outside the window: bins are filtered at
        the end)."""
        a, s, t = rec.cols, rec.start, rec.end
        dma = np.nonzero(((a["main"] == C_DMAW) | (a["main"] == C_DMAKV)) & (a["nbytes"] > 0))[0]
        fr = np.nonzero(a["free_of"] >= 0)[0]
        fr = fr[(a["buf"][a["free_of"][fr]] >= 0) & (a["alloc"][a["free_of"][fr]] > 0)]
        end = max(int(t.max()) if len(t) else 0, 0)
        while end // self.bin >= MAX_BINS:
            self._coarsen()
        need = end // self.bin + 2
        if need > self.dram.shape[1]:
            grow = max(need, 2 * self.dram.shape[1])
            self.dram = np.pad(self.dram, ((0, 0), (0, grow - self.dram.shape[1])))
            self.occ = np.pad(self.occ, ((0, 0), (0, grow - self.occ.shape[1])))
        if len(dma):
            _spread(self.dram, np.zeros(len(dma), np.int64), self.bin, s[dma], t[dma],
                    a["nbytes"][dma].astype(np.float64), False)
        if len(fr):
            f = a["free_of"][fr]
            _spread(self.occ, a["buf"][f], self.bin, s[f], t[fr], a["alloc"][f].astype(np.float64), True)

    def _coarsen(self) -> None:
        """Double the bin size (sums of neighbouring bins)."""
        for name in ("dram", "occ"):
            x = getattr(self, name)
            if x.shape[1] % 2:
                x = np.pad(x, ((0, 0), (0, 1)))
            setattr(self, name, x[:, 0::2] + x[:, 1::2])
        self.bin *= 2


# ------------------------------------------------------------------------------------ Chrome JSON


class Timeline:
    """Chrome trace-event collector, capped at `cap` events (first steps first); `units` names the threads."""

    def __init__(self, units: list[str], clock_hz: float, cap: int, window: Window | None = None):
        self.units, self.clock, self.cap, self.window = units, clock_hz, cap, window
        self.events: list[dict] = []
        self.truncated_at: int | None = None

    def begin_step(self, step: int, t_barrier: int) -> None:
        pass

    def end_step(self, step: int, step_end: int) -> None:
        pass

    def add(self, rec: Scheduled, sched: Any = None, ext_id: int = -1) -> None:
        """Record one scheduled chunk: an event per instruction that ran on a unit."""
        if self.truncated_at is not None or (self.window is not None and not self.window.keeps(rec)):
            return
        cols, s, t, u, names, step = rec.cols, rec.start, rec.end, rec.unit, rec.names, rec.step
        idx = np.nonzero(u >= 0)[0]
        room = self.cap - len(self.events)
        if len(idx) > room:
            idx = idx[:room]
            self.truncated_at = step
        us = 1e6 / self.clock
        for i in idx.tolist():
            self.events.append({"name": f"{names[cols['opi'][i]]}:{SUBS[cols['sub'][i]]}", "ph": "X", "pid": 0,
                                "tid": int(u[i]), "ts": float(s[i]) * us, "dur": float(t[i] - s[i]) * us,
                                "args": {"step": step}})

    def to_json(self) -> dict:
        meta = [{"name": "thread_name", "ph": "M", "pid": 0, "tid": i, "args": {"name": n}}
                for i, n in enumerate(self.units)]
        note = (f"truncated: first {self.cap} events (stopped in step {self.truncated_at})"
                if self.truncated_at is not None else "complete")
        return {"traceEvents": meta + self.events, "displayTimeUnit": "ns", "otherData": {"lowbit": note}}


# ------------------------------------------------------------------------------------ command-line helpers

PERFETTO_SUFFIXES = (".pftrace", ".perfetto-trace", ".pb")


def open_timeline(path: Path, cfg: Any, title: str, window: str | None = None, cap: int = 200_000):
    """The timeline writer for `lowbit sim --timeline PATH`: Perfetto protobuf for .pftrace /
    .perfetto-trace / .pb (whole run, streamed), Chrome JSON (first `cap` events) for .json."""
    from lowbit.sim.engine import unit_list
    from lowbit.sim.isa import BUFFERS

    path = Path(path)
    win = Window.parse(window) if window else None
    units = unit_list(cfg)
    if path.suffix == ".json":
        return Timeline([n for n, _ in units], cfg.clock_hz, cap, win)
    if path.suffix not in PERFETTO_SUFFIXES:
        raise LowbitError(f"--timeline {path}: use a .pftrace (Perfetto protobuf, whole run) or .json (Chrome "
                          "trace events, capped by --timeline-events) file name")
    if path.exists() and path.is_dir():
        raise LowbitError(f"--timeline {path}: is a directory; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    return PerfettoTimeline(path, units, list(BUFFERS), cfg.clock_hz, title=title, window=win)


def finish_timeline(tl: Any, path: Path) -> str:
    """Close a timeline writer; returns the one-line note `lowbit sim` prints."""
    if isinstance(tl, PerfettoTimeline):
        info = tl.close()
        n = sum(info["slices"].values())
        return (f"timeline: {path} ({info['bytes'] / 2**20:,.1f} MiB, {n:,} instruction slices, counters per "
                f"{info['bin_cycles']:,} cycles; open in https://ui.perfetto.dev)")
    import json

    from lowbit.sim.atomic import atomic_write

    data = tl.to_json()
    atomic_write(path, json.dumps(data))
    return f"timeline: {len(tl.events):,} events, {data['otherData']['lowbit']}"
