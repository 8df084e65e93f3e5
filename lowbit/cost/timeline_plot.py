"""`lowbit plot-timeline`: a PNG overview of a Perfetto timeline written by `lowbit sim --timeline X.pftrace`.

Read from the trace file itself (lowbit.sim.pftrace.iter_events, streamed in blocks, two passes: time range,
then binning), so the picture shows what the file holds:
- one strip per unit track: the fraction of each time bin the unit is busy (its slices' overlap with the
  bin); a DMA queue's strip is the mean number of requests in flight (its lanes' slices summed);
- the "steps" track's slices as step boundaries (prefill shaded);
- the DRAM bandwidth counter (GB/s) and the SRAM buffer occupancy counters (bytes), as written.
Every time bin of the picture is `duration / bins` ns wide.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numba import njit

from lowbit.sim import pftrace
from lowbit.sim.atomic import atomic_write
from lowbit.sim.errors import LowbitError


@njit(cache=True)
def _busy(ts, typ, trk, slot, open_ts, busy, bin_ns):
    """Slices of depth 1 per track: add each [begin, end) to busy[slot[track]] by bin overlap (ns)."""
    for i in range(ts.shape[0]):
        t = trk[i]
        if t >= slot.shape[0] or slot[t] < 0:
            continue
        if typ[i] == 1:
            open_ts[t] = ts[i]
        elif typ[i] == 2 and open_ts[t] >= 0:
            a, b = open_ts[t], ts[i]
            open_ts[t] = -1
            k = a // bin_ns
            while k * bin_ns < b and k < busy.shape[1]:
                lo = max(a, k * bin_ns)
                hi = min(b, (k + 1) * bin_ns)
                busy[slot[t], k] += hi - lo
                k += 1


def read_timeline(path: Path, bins: int = 1600) -> dict:
    """Binned contents of a timeline: unit names, busy[unit, bin] (fraction or mean requests in flight),
    step starts, counters {name: (ts, values)}, bin width in ns."""
    path = Path(path)
    if not path.is_file():
        raise LowbitError(f"{path}: no such timeline file; write one with `lowbit sim --timeline {path.name}`")
    headers: list[bytes] = []
    t_max = 0
    try:
        for ev, hdr in pftrace.iter_events(path):
            headers += hdr
            if len(ev["ts"]):
                t_max = max(t_max, int(ev["ts"].max()))
    except ValueError as e:
        raise LowbitError(str(e)) from None
    tracks, _names = pftrace.descriptors(headers)
    root = next((u for u, d in tracks.items() if d["parent"] == 0), None)
    units = [u for u, d in tracks.items() if d["parent"] == root and not d["counter"]
             and d["name"] not in ("steps", "layers")]
    if root is None or not units or t_max == 0:
        raise LowbitError(f"{path}: not a lowbit simulator timeline (no unit tracks or no events)")
    steps_uuid = next((u for u, d in tracks.items() if d["name"] == "steps"), -1)
    slot = np.full(max(tracks) + 1, -1, np.int64)
    for i, u in enumerate(units):
        slot[u] = i
    for u, d in tracks.items():
        if d["parent"] in units:  # DMA lanes count for their queue
            slot[u] = units.index(d["parent"])
    bin_ns = max(1, -(-t_max // bins))
    busy = np.zeros((len(units), bins), np.float64)
    open_ts = np.full(len(slot), -1, np.int64)
    step_starts: list[np.ndarray] = []
    counters: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for ev, _hdr in pftrace.iter_events(path):
        _busy(ev["ts"], ev["type"], ev["track"], slot, open_ts, busy, bin_ns)
        step_starts.append(ev["ts"][(ev["type"] == 1) & (ev["track"] == steps_uuid)])
        c = ev["type"] == 4
        for u in np.unique(ev["track"][c]).tolist():
            m = c & (ev["track"] == u)
            counters.setdefault(u, []).append((ev["ts"][m], ev["value"][m]))
    return {"units": [tracks[u]["name"] for u in units], "busy": busy / bin_ns, "bin_ns": bin_ns,
            "t_max": t_max, "steps": np.sort(np.concatenate(step_starts)) if step_starts else np.zeros(0),
            "counters": {tracks[u]["name"]: (np.concatenate([a for a, _ in v]), np.concatenate([b for _, b in v]))
                         for u, v in counters.items()},
            "title": tracks[root]["name"]}


def render(data: dict) -> bytes:
    """PNG of `read_timeline`'s data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = 1e-6
    units = data["units"]
    fig, (a0, a1, a2) = plt.subplots(3, 1, figsize=(13, 2.2 + 0.32 * len(units) + 4.2), sharex=True,
                                     gridspec_kw={"height_ratios": [0.32 * len(units) + 0.6, 2.0, 2.0]})
    ext = [0, data["t_max"] * ms, len(units) - 0.5, -0.5]
    busy = data["busy"]
    show = busy.copy()
    for i, n in enumerate(units):  # DMA queues: requests in flight, scaled to their own maximum
        if n.startswith("dma") and show[i].max() > 0:
            show[i] = show[i] / show[i].max()
    im = a0.imshow(np.clip(show, 0, 1), aspect="auto", interpolation="nearest", extent=ext, cmap="viridis",
                   vmin=0, vmax=1)
    a0.set_yticks(range(len(units)),
                  [f"{n} (in flight, max {busy[i].max():.1f})" if n.startswith("dma") else n
                   for i, n in enumerate(units)], fontsize=8)
    fig.colorbar(im, ax=a0, pad=0.01, fraction=0.02).set_label("busy fraction per bin", fontsize=8)
    st = data["steps"] * ms
    if len(st) > 1:
        a0.axvline(st[1], color="w", lw=0.8)
        for a in (a1, a2):
            a.axvspan(0, st[1], color="0.85", alpha=0.35, lw=0)
    a0.set_title(f"{data['title']}: {data['t_max'] * ms:,.1f} ms, {len(st)} steps (prefill: left of the white line / shaded; "
                 f"{data['bin_ns'] * ms * 1e3:,.1f} µs per pixel column)", fontsize=10)
    for name, (ts, v) in data["counters"].items():
        o = np.argsort(ts, kind="stable")
        if name.startswith("DRAM"):
            a1.plot(ts[o] * ms, v[o], lw=0.6, color="tab:red", drawstyle="steps-post")
            a1.set_ylabel("DRAM GB/s", fontsize=8)
        else:
            a2.plot(ts[o] * ms, v[o] / 1024, lw=0.7, label=name.replace(" occupancy (bytes)", ""),
                    drawstyle="steps-post")
    a2.set_ylabel("SRAM occupancy (KiB)", fontsize=8)
    a2.legend(fontsize=7, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.28), frameon=False)
    a2.set_xlabel("time (ms)")
    for a in (a1, a2):
        a.grid(True, alpha=0.3)
        a.margins(x=0)
    fig.tight_layout()
    from lowbit.cost.report_figures import fig_png

    return fig_png(fig)


def plot_timeline(path: Path, out_dir: Path, bins: int = 1600) -> Path:
    """Write OUT_DIR/timeline.png from a Perfetto timeline."""
    png = render(read_timeline(path, bins))
    out = Path(out_dir) / "timeline.png"
    atomic_write(out, png)
    return out
