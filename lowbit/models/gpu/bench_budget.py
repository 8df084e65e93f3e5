"""The GPU benchmark's wall-clock budget, and the continuation of a run that its budget cut short.

Every unit of work of :mod:`.bench` (one shape of a linear section, one attention context, one decode
configuration, the odd-shape checks) asks :meth:`Budget.ok` before it starts, under a name unique in the
run (``"linear gemm 3200x3200"``, with the units inside it named ``"linear gemm 3200x3200 M=64"``). Once
the budget is spent a unit is skipped and listed with :data:`BUDGET_WHY`. ``bench-gpu --resume`` runs the
units a finished run in the same directory skipped for its budget, and only those (:func:`resume`), adding
their rows to its ``gpu-baseline.json``: on machines that allow only a few minutes per command, a complete
run is one run in parts. Each unit seeds its own random data, so a unit's inputs do not depend on which
units ran before it.
"""

from __future__ import annotations

import json
import time
import zlib
from pathlib import Path

from lowbit.sim.errors import LowbitError

BUDGET_WHY = "time budget (--budget-s) spent"


def _related(what: str, unit: str) -> bool:
    # the same unit, or one inside the other ("linear gemm 3200x3200" holds "linear gemm 3200x3200 M=64")
    return what == unit or what.startswith(unit + " ") or unit.startswith(what + " ")


class Budget:
    """Wall-clock budget: ``ok(what)`` is False (and records ``what`` as skipped) once it is spent.
    ``only`` (a resumed run): just these units and the units inside them run; the others were done
    before and are passed over without a record."""

    def __init__(self, seconds: float, skipped: list, only: set[str] | None = None):
        self.end = time.monotonic() + seconds
        self.skipped = skipped
        self.only = only

    def ok(self, what: str) -> bool:
        if self.only is not None and not any(_related(what, u) for u in self.only):
            return False
        if time.monotonic() < self.end:
            return True
        self.skipped.append({"what": what, "why": BUDGET_WHY})
        return False


def unit_seed(seed: int, unit: str) -> int:
    """The seed of one unit's random data: the run's seed and the unit's name (CRC-32), so that a unit draws
    the same inputs whichever units ran before it."""
    return (seed * 1_000_003 + zlib.crc32(unit.encode())) % 2**62


# what a resumed run must share with the run it continues
_SAME = ("schema", "device", "torch", "triton", "seed")


def resume(path: Path, fresh: dict) -> tuple[dict, set[str]]:
    """The data of the finished run in ``path`` (``gpu-baseline.json``) to continue, with the units its
    budget skipped removed from its skip list, and those units. ``fresh``: this run's header (device,
    versions, seed). Refused with a one-line :class:`LowbitError` where there is no such run, it did not
    finish (a killed run's rows are not trusted), it skipped nothing for its budget, or it was measured
    with another GPU, software or seed."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise LowbitError(f"--resume: no {path} to continue; run bench-gpu without --resume first") from None
    except (OSError, ValueError) as e:
        raise LowbitError(f"--resume: {path} is unreadable ({type(e).__name__}); run bench-gpu without --resume") from None
    if not isinstance(data, dict) or not data.get("finished"):
        raise LowbitError(f"--resume: the run in {path} did not finish (killed before its end); rerun it without --resume")
    for key in _SAME:
        if data.get(key) != fresh.get(key):
            raise LowbitError(f"--resume: {path} has {key} {data.get(key)!r}, this run {fresh.get(key)!r}; "
                              "continue it with the same GPU, software and seed, or start anew without --resume")
    pending = {s["what"] for s in data.get("skipped", []) if s.get("why") == BUDGET_WHY}
    if not pending:
        raise LowbitError(f"--resume: the run in {path} skipped nothing for its budget; there is nothing to continue")
    data["skipped"] = [s for s in data["skipped"] if s.get("why") != BUDGET_WHY]
    data.setdefault("parts", []).append({k: fresh[k] for k in ("created", "copy_gbps") if k in fresh})
    data["finished"] = False
    return data, pending
