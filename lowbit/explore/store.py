"""The sweep result cache: one JSON file per computed point, keyed by `lowbit.explore.evaluate.point_key`.

Location: ``<cache root>/sweep/<key[:2]>/<key>.json`` (the cache root of lowbit.sim.cache:
$LOWBIT_CACHE_DIR, $XDG_CACHE_HOME/lowbit or ~/.cache/lowbit; never inside the repository), or a directory
given with `lowbit sweep run --cache DIR`. The client writes an entry as soon as a point's result arrives
(temp file + rename, lowbit.sim.atomic), so an interrupted sweep loses nothing it had received and a
re-run computes only the missing points. Points that failed (an exception, a dead worker) are not
stored: a re-run retries them. Infeasible points are stored (the same inputs give the same reason).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lowbit.sim.atomic import atomic_write
from lowbit.sim.cache import cache_dir


def default_dir() -> Path:
    return cache_dir("sweep")


class ResultCache:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else default_dir()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        p = self.path(key)
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):  # unreadable: recompute (the write is atomic, so this is outside damage)
            return None

    def put(self, key: str, record: dict[str, Any]) -> None:
        atomic_write(self.path(key), json.dumps(record, sort_keys=True))

    def count(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.json")) if self.root.exists() else 0
