"""summary.md, pareto.png and sensitivity.png of a sweep, and (lowbit.explore.html) sweep.html.

Pareto scatter: decode tokens/s against area, coloured by decode energy/token incl. DRAM, when those are
computed (else the first objectives); the non-dominated points are ringed and the base design is a star.
Sensitivity of an objective to a parameter (main effect): the mean of the objective over the ok points
at each value of the parameter; the table gives (largest mean - smallest mean) / mean over all ok points.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

from lowbit.explore.spec import OBJECTIVES
from lowbit.sim.atomic import atomic_write


def axes(meta: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[str, str, str | None]:
    """(x, y, colour) metrics of the Pareto scatter."""
    have = [m for m in ("area_mm2", "decode_tok_s", "energy_per_token_mj", *meta["objectives"])
            if any(r.get(m) is not None for r in rows)]
    objs = [o for o in meta["objectives"] if o in have]
    x = "area_mm2" if "area_mm2" in have else objs[0]
    y = "decode_tok_s" if "decode_tok_s" in have and x != "decode_tok_s" else next(o for o in objs + have if o != x)
    c = "energy_per_token_mj" if "energy_per_token_mj" in have else next((o for o in objs if o not in (x, y)), None)
    return x, y, c


def base_rows(meta: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose every parameter equals the base design's value."""
    bv = meta.get("base_values", {})
    return [r for r in rows if bv and all(_same(r.get(k), v) for k, v in bv.items())]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b or (isinstance(b, list | tuple) and a == ",".join(map(str, b)))


def sensitivity(meta: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[Any, float]]]:
    """param -> objective -> {value: mean objective over the ok points with that value}."""
    ok = [r for r in rows if r["status"] == "ok"]
    out: dict[str, dict[str, dict[Any, float]]] = {}
    for p in meta["params"]:
        out[p] = {}
        for o in meta["objectives"]:
            groups: dict[Any, list[float]] = {}
            for r in ok:
                if r.get(o) is not None:
                    groups.setdefault(r[p], []).append(float(r[o]))
            out[p][o] = {v: sum(xs) / len(xs) for v, xs in sorted(groups.items(), key=lambda kv: _sort_key(kv[0]))}
    return out


def _sort_key(v: Any) -> tuple:
    return (0, float(v), "") if isinstance(v, int | float) else (1, 0.0, str(v))


def fmt(v: Any, metric: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        if metric == "prefill_latency_s":
            return f"{v:.4f}"
        if abs(v) >= 1e5 and float(v).is_integer():
            return f"{v:.3g}"
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def pareto_png(meta: dict[str, Any], rows: list[dict[str, Any]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y, c = axes(meta, rows)
    ok = [r for r in rows if r["status"] == "ok" and r.get(x) is not None and r.get(y) is not None]
    bad = [r for r in rows if r["status"] == "infeasible" and r.get(x) is not None and r.get(y) is not None]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    if bad:
        ax.scatter([r[x] for r in bad], [r[y] for r in bad], marker="x", s=14, color="0.7", label="violates a constraint")
    colour = {"c": [r[c] for r in ok], "cmap": "viridis"} if c else {"color": "tab:blue"}
    sc = ax.scatter([r[x] for r in ok], [r[y] for r in ok], s=18, zorder=2, **colour)
    front = sorted((r for r in ok if r["pareto"]), key=lambda r: r[x])
    ax.scatter([r[x] for r in front], [r[y] for r in front], s=60, facecolors="none", edgecolors="crimson",
               linewidths=1.2, zorder=3, label=f"Pareto front ({len(front)})")
    base = [r for r in base_rows(meta, rows) if r in ok]
    if base:
        ax.scatter([r[x] for r in base], [r[y] for r in base], marker="*", s=220, color="orange", edgecolors="k",
                   zorder=4, label=f"base design ({meta['base']})")
    if c:
        fig.colorbar(sc, ax=ax).set_label(OBJECTIVES[c].label if c in OBJECTIVES else c)
    ax.set_xlabel(OBJECTIVES[x].label if x in OBJECTIVES else x)
    ax.set_ylabel(OBJECTIVES[y].label if y in OBJECTIVES else y)
    ax.set_title(f"{len(ok)} designs, {', '.join(meta['workloads'])}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def sensitivity_png(meta: dict[str, Any], sens: dict[str, dict[str, dict[Any, float]]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params, objs = meta["params"], meta["objectives"]
    fig, axs = plt.subplots(len(objs), len(params), figsize=(2.3 * len(params) + 0.8, 2.0 * len(objs) + 0.6),
                            squeeze=False, sharey="row")  # one scale per objective: panels compare
    for j, o in enumerate(objs):
        for i, p in enumerate(params):
            ax = axs[j][i]
            d = sens[p][o]
            ax.plot(range(len(d)), list(d.values()), "o-", color="tab:blue")
            ax.set_xticks(range(len(d)), [fmt(v) for v in d], fontsize=7, rotation=30)
            ax.tick_params(axis="y", labelsize=7)
            ax.grid(alpha=0.3)
            if j == len(objs) - 1:
                ax.set_xlabel(p, fontsize=8)
            if i == 0:
                ax.set_ylabel(o, fontsize=8)
    fig.suptitle("Main effects: mean of each objective over the ok points at each parameter value "
                 "(one y scale per row)", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def summary_md(meta: dict[str, Any], rows: list[dict[str, Any]], sens, notes: str = "") -> str:
    objs, params = meta["objectives"], meta["params"]
    st = meta.get("stats", {})
    ok = [r for r in rows if r["status"] == "ok"]
    n_inf = sum(r["status"] == "infeasible" for r in rows)
    n_fail = sum(r["status"] == "failed" for r in rows)
    lines = [f"# Sweep around `{meta['base']}`", ""]
    lines += [f"Spec `{meta['spec_path']}` ({meta['strategy']}), workload {', '.join(meta['workloads'])}; "
              f"{len(rows)} points over {len(params)} parameters: {len(ok)} ok, {n_inf} infeasible, {n_fail} failed. "
              f"Objectives: " + ", ".join(f"{o} ({OBJECTIVES[o].sense})" for o in objs)
              + (f"; constraints: {', '.join(meta['constraints'])}" if meta["constraints"] else "") + ".", ""]
    lines += [f"Regenerate: `lowbit sweep run {meta['spec_path']} --out DIR` (points already in the result cache are "
              f"not recomputed), or re-render this page with `lowbit sweep show DIR`. lowbit {meta['lowbit']}.", ""]
    if st:
        lines += [f"Run: {st.get('computed', 0)} points computed, {st.get('cached', 0)} from the result cache, "
                  f"{st.get('blocks', 0)} RTL block parameterisations synthesised or read from the synthesis cache, "
                  f"{st.get('wall_s', 0):.0f} s wall" + (f" on {st['workers']} Dask workers" if st.get("workers") else "")
                  + ".", ""]
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: -float(r[objs[0]]) if OBJECTIVES[objs[0]].sense == "max"
                   else float(r[objs[0]]))
    lines += [f"## Pareto front ({len(front)} of {len(ok)} ok points)", "", "![Pareto scatter](pareto.png)", ""]
    head = ["point", *params, *objs]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in front[:40]:
        lines.append("| " + " | ".join([str(r["point"]), *(fmt(r[p]) for p in params), *(fmt(r[o], o) for o in objs)]) + " |")
    if len(front) > 40:
        lines.append(f"\n({len(front) - 40} more Pareto points in results.parquet and sweep.html)")
    lines.append("")
    base = base_rows(meta, rows)
    if base:
        lines += ["## Where the base design sits", ""]
        for b in base:
            if b["status"] != "ok":
                lines.append(f"The base design (point {b['point']}) is {b['status']}: {b['reason']}")
                continue
            vals = ", ".join(f"{o} {fmt(b[o], o)}" for o in objs)
            if b["pareto"]:
                lines.append(f"The base design (point {b['point']}: {vals}) is on the Pareto front.")
            else:
                dom = [r for r in ok if r["workload"] == b["workload"] and _dominates(r, b, objs)]
                best = max(dom, key=lambda r: _gain(r, b, objs))
                lines.append(f"The base design (point {b['point']}: {vals}) is dominated by {len(dom)} point(s); "
                             f"e.g. point {best['point']} ({', '.join(f'{p} = {fmt(best[p])}' for p in params if best[p] != b[p])}): "
                             + ", ".join(f"{o} {fmt(best[o], o)} ({_pct(best[o], b[o])})" for o in objs) + ".")
            lines.append("")
    lines += ["## Sensitivity (main effects)", "", "![Sensitivity](sensitivity.png)", "",
              "Spread of the mean of each objective across a parameter's values, relative to its mean over all ok "
              "points (larger: the parameter matters more for that objective).", ""]
    lines += ["| parameter | " + " | ".join(objs) + " |", "|---|" + "---|" * len(objs)]
    overall = {o: sum(float(r[o]) for r in ok if r.get(o) is not None) / max(1, sum(r.get(o) is not None for r in ok))
               for o in objs}
    for p in params:
        cells = []
        for o in objs:
            d = sens[p][o]
            cells.append(f"{100 * (max(d.values()) - min(d.values())) / abs(overall[o]):.1f} %" if d and overall[o] else "–")
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    lines.append("")
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        lines += ["## Infeasible and failed points", ""]
        reasons: dict[str, int] = {}
        for r in bad:  # one line per reason, values of violated constraints left out
            k = f"{r['status']}: " + re.sub(r" \([a-z_0-9]+ = [^)]*\)", "", r["reason"])
            reasons[k] = reasons.get(k, 0) + 1
        for k, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:10]:
            lines.append(f"- {n} × {k}")
        lines.append("")
    if front:
        lines += ["Any point re-runs alone with its `rerun` line (results.parquet, sweep.html), e.g. the first Pareto "
                  "point:", "", "```", front[0]["rerun"], "```", ""]
    if notes:
        lines += [notes.rstrip(), ""]
    return "\n".join(lines)


def _dominates(a: dict, b: dict, objs: list[str]) -> bool:
    s = [(1 if OBJECTIVES[o].sense == "max" else -1) for o in objs]
    va = [k * float(a[o]) for k, o in zip(s, objs, strict=True)]
    vb = [k * float(b[o]) for k, o in zip(s, objs, strict=True)]
    return all(x >= y for x, y in zip(va, vb, strict=True)) and any(x > y for x, y in zip(va, vb, strict=True))


def _gain(a: dict, b: dict, objs: list[str]) -> float:
    return sum((1 if OBJECTIVES[o].sense == "max" else -1) * (float(a[o]) - float(b[o])) / abs(float(b[o]) or 1) for o in objs)


def _pct(a: float, b: float) -> str:
    return f"{100 * (float(a) - float(b)) / float(b):+.1f} %" if b else "–"


def render(meta: dict[str, Any], rows: list[dict[str, Any]], out: Path, notes: str = "") -> list[Path]:
    """Write summary.md, pareto.png, sensitivity.png and sweep.html into `out`; returns their paths."""
    from lowbit.explore.html import sweep_html

    sens = sensitivity(meta, rows)
    files = {"pareto.png": pareto_png(meta, rows), "sensitivity.png": sensitivity_png(meta, sens),
             "summary.md": summary_md(meta, rows, sens, notes), "sweep.html": sweep_html(meta, rows)}
    paths = []
    for name, data in files.items():
        atomic_write(out / name, data)
        paths.append(out / name)
    return paths
