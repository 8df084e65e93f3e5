"""The results of a sweep: one table (Parquet, CSV on request) and the non-dominated set.

Columns: point, workload, one column per parameter (named by its path), status (ok | infeasible |
failed), reason, the metrics (lowbit.explore.evaluate.METRICS), pareto (non-dominated among the ok points
of the same workload, on the spec's objectives), timings on the worker (t_sim_s, t_cost_s, t_total_s wall;
t_sim_cpu_s, t_cost_cpu_s, t_cpu_s CPU of the simulation, of the cost model and of the whole point; minflt, its minor page faults), worker, cached, key (the result cache key) and rerun (the `lowbit sim` line of the point). `sweep.json`
beside the table keeps the spec and the run statistics, so `lowbit sweep show DIR` re-renders from the
directory alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lowbit.explore.evaluate import METRICS
from lowbit.explore.spec import OBJECTIVES, SweepSpec, format_value
from lowbit.sim.atomic import atomic_write
from lowbit.sim.errors import LowbitError

TABLE = "results.parquet"
META = "sweep.json"
TIMINGS = ("t_sim_s", "t_cost_s", "t_total_s", "t_sim_cpu_s", "t_cost_cpu_s", "t_cpu_s", "minflt")


def pareto_mask(values: np.ndarray) -> np.ndarray:
    """Rows of `values` (n x k, larger is better in every column) that no other row dominates: row j
    dominates i when it is >= in every column and > in at least one."""
    n = len(values)
    keep = np.ones(n, bool)
    for i in range(n):
        ge = np.all(values >= values[i], axis=1)
        gt = np.any(values > values[i], axis=1)
        keep[i] = not np.any(ge & gt)
    return keep


def mark_pareto(rows: list[dict[str, Any]], objectives: tuple[str, ...]) -> None:
    """Set row["pareto"] in place, per workload, over the ok rows."""
    for r in rows:
        r["pareto"] = False
    for w in sorted({r["workload"] for r in rows}):
        ok = [r for r in rows if r["workload"] == w and r["status"] == "ok"
              and all(r.get(o) is not None for o in objectives)]
        if not ok:
            continue
        signs = np.array([1.0 if OBJECTIVES[o].sense == "max" else -1.0 for o in objectives])
        vals = np.array([[float(r[o]) for o in objectives] for r in ok]) * signs
        for r, k in zip(ok, pareto_mask(vals), strict=True):
            r["pareto"] = bool(k)


def rows_of(spec: SweepSpec, records: list[dict[str, Any]], rerun: dict[int, str]) -> list[dict[str, Any]]:
    """Flat table rows from the runner's records."""
    rows = []
    for rec in records:
        row: dict[str, Any] = {"point": rec["point"], "workload": rec["workload"]}
        for p in spec.params:
            v = rec["values"][p.path]
            row[p.path] = format_value(v) if isinstance(v, list | tuple) else v
        row.update(status=rec["status"], reason=rec.get("reason", ""))
        row.update({m: rec.get(m) for m in METRICS})
        row.update({t: rec.get(t) for t in TIMINGS})
        row.update(worker=rec.get("worker", ""), cached=bool(rec.get("cached")), key=rec.get("key", ""),
                   rerun=rerun.get(rec["point"], ""))
        rows.append(row)
    mark_pareto(rows, spec.objectives)
    return rows


def _columns(rows: list[dict[str, Any]]) -> dict[str, list]:
    cols: dict[str, list] = {k: [] for k in rows[0]} if rows else {}
    for r in rows:
        for k in cols:
            cols[k].append(r.get(k))
    for k, v in cols.items():  # one type per column: ints among floats become floats
        kinds = {type(x) for x in v if x is not None}
        if kinds <= {int, float} and float in kinds:
            cols[k] = [None if x is None else float(x) for x in v]
        elif len(kinds) > 1:
            cols[k] = [None if x is None else str(x) for x in v]
    return cols


def write_table(rows: list[dict[str, Any]], out: Path, csv: bool = False) -> list[Path]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pa.table(_columns(rows))
    paths = [out / TABLE]
    atomic_write_table(paths[0], lambda tmp: pq.write_table(table, tmp))
    if csv:
        paths.append(out / "results.csv")
        atomic_write_table(paths[1], lambda tmp: pacsv.write_csv(table, tmp))
    return paths


def atomic_write_table(path: Path, write) -> None:
    import io

    buf = io.BytesIO()
    write(buf)
    atomic_write(path, buf.getvalue())


def read_table(out: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    p = Path(out) / TABLE
    if not p.exists():
        raise LowbitError(f"{out}: no {TABLE} here; run `lowbit sweep run SPEC --out {out}` first")
    return pq.read_table(p).to_pylist()


def write_meta(out: Path, meta: dict[str, Any]) -> Path:
    p = out / META
    atomic_write(p, json.dumps(meta, indent=1, sort_keys=True, default=str) + "\n")
    return p


def read_meta(out: Path) -> dict[str, Any]:
    p = Path(out) / META
    if not p.exists():
        raise LowbitError(f"{out}: no {META} here; run `lowbit sweep run SPEC --out {out}` first")
    return json.loads(p.read_text())
