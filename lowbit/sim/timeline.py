"""Chrome/Perfetto trace-event timeline of a simulation: one complete event ("ph": "X") per instruction that
ran on a unit (thread = unit, named "<op>:<sub-kind>", times in microseconds at the config clock)."""

from __future__ import annotations

import numpy as np

from lowbit.sim.isa import SUBS


class Timeline:
    """Trace-event collector, capped at `cap` events (first steps first); `units` names the threads."""

    def __init__(self, units: list[str], clock_hz: float, cap: int):
        self.units, self.clock, self.cap = units, clock_hz, cap
        self.events: list[dict] = []
        self.truncated_at: int | None = None

    def add(self, step: int, cols: dict[str, np.ndarray], s: np.ndarray, t: np.ndarray, u: np.ndarray,
            names: list[str]) -> None:
        """Record one scheduled chunk: columns `cols` (sim.isa), per-instruction start `s`, end `t`, unit `u`
        (-1: none), op names indexed by column `opi`."""
        if self.truncated_at is not None:
            return
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
