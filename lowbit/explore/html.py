"""sweep.html: a self-contained interactive page of a sweep (no network: the data and the script are inline).

An SVG scatter of the ok points (axes and colour chosen from the computed metrics, the Pareto front ringed,
the base design a star); hovering a point shows its design (parameters), its metrics and the `lowbit sim`
line that re-runs it; clicking pins it. Below, the table of the Pareto front.
"""

from __future__ import annotations

import html
import json
from typing import Any

from lowbit.explore.evaluate import METRICS
from lowbit.explore.render import axes, base_rows, fmt
from lowbit.explore.spec import OBJECTIVES

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.2em;color:#222;max-width:1100px}
#plot{border:1px solid #ccc;background:#fff}
#tip{position:absolute;display:none;background:#fffef4;border:1px solid #999;padding:6px 8px;font-size:12px;
 box-shadow:2px 2px 6px rgba(0,0,0,.2);max-width:520px;pointer-events:none;white-space:pre-wrap}
.ctl{margin:.4em 0} select{margin-right:1em} table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right} th{background:#f3f3f3}
circle.pt{stroke:#333;stroke-width:.5} circle.front{stroke:crimson;stroke-width:2}
code{font-size:11px}
"""

# The page's script (written for this page; no library). Data: DATA = {rows, params, metrics, labels, x, y, c}.
_JS = r"""
const W = 820, H = 480, M = {l: 70, r: 110, t: 20, b: 50};
const svgNS = "http://www.w3.org/2000/svg";
function el(tag, attrs, parent) {
  const e = document.createElementNS(svgNS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}
function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") {
    if (Number.isInteger(v)) return Math.abs(v) >= 1e6 ? v.toExponential(3) : String(v);
    return Math.abs(v) >= 1e4 ? v.toFixed(0) : v.toPrecision(4);
  }
  return String(v);
}
function ticks(lo, hi, n) {
  const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n || 1)));
  const err = (hi - lo) / n / step;
  const s = step * (err >= 7.5 ? 10 : err >= 3.5 ? 5 : err >= 1.5 ? 2 : 1);
  const out = [];
  for (let v = Math.ceil(lo / s) * s; v <= hi + 1e-12 * Math.abs(hi); v += s) out.push(v);
  return out;
}
function colour(t) {  // viridis, 5 stops, linear in between
  const s = [[68,1,84],[59,82,139],[33,145,140],[94,201,98],[253,231,37]];
  const x = Math.max(0, Math.min(1, t)) * (s.length - 1), i = Math.min(Math.floor(x), s.length - 2), f = x - i;
  const c = s[i].map((a, k) => Math.round(a + f * (s[i + 1][k] - a)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}
function tipText(r) {
  const lines = [`point ${r.point}  (${r.workload})${r.pareto ? "  — Pareto front" : ""}${r.base ? "  — base design" : ""}`, ""];
  lines.push("design:");
  for (const p of DATA.params) lines.push(`  ${p} = ${fmt(r[p])}`);
  lines.push("", "metrics:");
  for (const m of DATA.metrics) if (r[m] !== null && r[m] !== undefined) lines.push(`  ${DATA.labels[m] || m}: ${fmt(r[m])}`);
  lines.push("", "re-run: " + r.rerun);
  return lines.join("\n");
}
function draw() {
  const x = document.getElementById("xsel").value, y = document.getElementById("ysel").value;
  const c = document.getElementById("csel").value;
  const svg = document.getElementById("plot");
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const rows = DATA.rows.filter(r => r[x] !== null && r[y] !== null);
  const ext = k => { const v = rows.map(r => r[k]).filter(v => v !== null); return [Math.min(...v), Math.max(...v)]; };
  const pad = ([a, b]) => { const d = (b - a) || Math.abs(a) || 1; return [a - 0.05 * d, b + 0.05 * d]; };
  const [x0, x1] = pad(ext(x)), [y0, y1] = pad(ext(y));
  const sx = v => M.l + (v - x0) / (x1 - x0) * (W - M.l - M.r), sy = v => H - M.b - (v - y0) / (y1 - y0) * (H - M.t - M.b);
  const [c0, c1] = c ? ext(c) : [0, 1];
  const axis = el("g", {"class": "axes"}, svg);
  el("line", {x1: M.l, y1: H - M.b, x2: W - M.r, y2: H - M.b, stroke: "#333"}, axis);
  el("line", {x1: M.l, y1: M.t, x2: M.l, y2: H - M.b, stroke: "#333"}, axis);
  for (const v of ticks(x0, x1, 8)) {
    el("line", {x1: sx(v), x2: sx(v), y1: M.t, y2: H - M.b, stroke: "#eee"}, axis);
    el("text", {x: sx(v), y: H - M.b + 16, "text-anchor": "middle", "font-size": 11}, axis).textContent = fmt(v);
  }
  for (const v of ticks(y0, y1, 8)) {
    el("line", {x1: M.l, x2: W - M.r, y1: sy(v), y2: sy(v), stroke: "#eee"}, axis);
    el("text", {x: M.l - 6, y: sy(v) + 4, "text-anchor": "end", "font-size": 11}, axis).textContent = fmt(v);
  }
  el("text", {x: (M.l + W - M.r) / 2, y: H - 10, "text-anchor": "middle", "font-size": 13}, axis).textContent = DATA.labels[x] || x;
  el("text", {x: 16, y: (M.t + H - M.b) / 2, "text-anchor": "middle", "font-size": 13,
              transform: `rotate(-90 16 ${(M.t + H - M.b) / 2})`}, axis).textContent = DATA.labels[y] || y;
  if (c) {  // colour bar
    for (let i = 0; i < 50; i++)
      el("rect", {x: W - M.r + 30, y: M.t + (49 - i) * (H - M.t - M.b) / 50, width: 14, height: (H - M.t - M.b) / 50 + 0.5,
                  fill: colour(i / 49)}, axis);
    el("text", {x: W - M.r + 48, y: M.t + 10, "font-size": 10}, axis).textContent = fmt(c1);
    el("text", {x: W - M.r + 48, y: H - M.b, "font-size": 10}, axis).textContent = fmt(c0);
    el("text", {x: W - M.r + 26, y: H - M.b + 16, "font-size": 10}, axis).textContent = (DATA.labels[c] || c).slice(0, 22);
  }
  const pts = el("g", {"class": "points"}, svg);
  const tip = document.getElementById("tip");
  const order = rows.slice().sort((a, b) => (a.pareto - b.pareto) || (a.base - b.base));
  for (const r of order) {
    const fill = c && r[c] !== null ? colour((r[c] - c0) / ((c1 - c0) || 1)) : "steelblue";
    const attrs = {cx: sx(r[x]), cy: sy(r[y]), r: r.base ? 8 : (r.pareto ? 6 : 4), fill: fill,
                   "class": "pt" + (r.pareto ? " front" : ""), "data-point": r.point};
    const e = el("circle", attrs, pts);
    if (r.base) { e.style.stroke = "orange"; e.style.strokeWidth = "3"; }
    e.addEventListener("mouseenter", ev => {
      tip.textContent = tipText(r);
      tip.style.display = "block";
      tip.style.left = (ev.pageX + 14) + "px";
      tip.style.top = (ev.pageY + 10) + "px";
    });
    e.addEventListener("mouseleave", () => { if (!tip.dataset.pinned) tip.style.display = "none"; });
    e.addEventListener("click", () => { tip.dataset.pinned = tip.dataset.pinned ? "" : "1"; });
  }
  document.getElementById("count").textContent = `${rows.length} designs shown`;
}
function init() {
  for (const [id, def] of [["xsel", DATA.x], ["ysel", DATA.y], ["csel", DATA.c]]) {
    const s = document.getElementById(id);
    if (id === "csel") s.appendChild(new Option("(none)", ""));
    for (const m of DATA.metrics) s.appendChild(new Option(DATA.labels[m] || m, m));
    s.value = def || "";
    s.addEventListener("change", draw);
  }
  draw();
}
document.addEventListener("DOMContentLoaded", init);
"""


def sweep_html(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    x, y, c = axes(meta, rows)
    ok = [r for r in rows if r["status"] == "ok"]
    base = {r["point"] for r in base_rows(meta, rows)}
    metrics = [m for m in METRICS if any(r.get(m) is not None for r in ok)]
    keep = ["point", "workload", "pareto", "rerun", *meta["params"], *metrics]
    data = {"rows": [{**{k: r.get(k) for k in keep}, "base": r["point"] in base} for r in ok],
            "params": meta["params"], "metrics": metrics, "x": x, "y": y, "c": c,
            "labels": {m: OBJECTIVES[m].label for m in metrics if m in OBJECTIVES}}
    blob = json.dumps(data, default=str).replace("</", "<\\/")  # never closes the script element
    objs = meta["objectives"]
    front = [r for r in ok if r["pareto"]]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["point", *meta["params"], *objs])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v, k))}</td>" for k, v in
                   [("point", r["point"]), *((p, r[p]) for p in meta["params"]), *((o, r[o]) for o in objs)]) + "</tr>"
                   for r in front)
    n_bad = len(rows) - len(ok)
    title = f"lowbit sweep around {meta['base']}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{len(rows)} points ({meta['strategy']}, {html.escape(', '.join(meta['workloads']))}): {len(ok)} ok, {n_bad} infeasible or
failed; {len(front)} on the Pareto front of {html.escape(', '.join(f"{o} ({OBJECTIVES[o].sense})" for o in objs))}.
Hover a point to see its design; click to pin the box. Red rings: Pareto front; orange ring: the base design.</p>
<div class="ctl">x <select id="xsel"></select> y <select id="ysel"></select> colour <select id="csel"></select>
<span id="count"></span></div>
<svg id="plot" width="820" height="480" xmlns="http://www.w3.org/2000/svg"></svg>
<div id="tip"></div>
<h2>Pareto front</h2>
<table><tr>{head}</tr>{body}</table>
<p><small>lowbit {html.escape(str(meta.get('lowbit', '')))}; spec {html.escape(meta['spec_path'])}; no network needed.</small></p>
<script>const DATA = {blob};</script>
<script>{_JS}</script>
</body></html>
"""
