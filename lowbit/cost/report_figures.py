"""`lowbit report`'s figures: area and decode-power breakdowns, energy per token, tokens/s and FOM (PNG bytes)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from lowbit.cost.paper import PAPER

if TYPE_CHECKING:
    from lowbit.cost.report import DesignResult

SMALL_SHARE = 0.03  # stacked-bar components below this share of every bar are grouped as "other"


def _stack(ax, names: list[str], comps: dict[str, list[float]], cmap, unit: str) -> None:
    """Stacked bars; components that are < SMALL_SHARE of every bar are summed into one labelled "other"
    segment (its members listed in the legend), and each bar's total is written on top."""
    totals = [sum(v[k] for v in comps.values()) for k in range(len(names))]
    big = {c: v for c, v in comps.items() if any(t and x / t >= SMALL_SHARE for x, t in zip(v, totals, strict=True))}
    small = [c for c in comps if c not in big]
    if small:
        big[f"other ({', '.join(small)})"] = [sum(comps[c][k] for c in small) for k in range(len(names))]
    bottom = [0.0] * len(names)
    for i, (c, vals) in enumerate(big.items()):
        ax.bar(names, vals, bottom=bottom, label=c if len(c) < 60 else c[:57] + "...)",
               color="0.75" if c.startswith("other") else cmap(i % 20))
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    for k, t in enumerate(totals):
        ax.annotate(f"{t:.3g} {unit}", (k, t), ha="center", va="bottom", fontsize=7, xytext=(0, 1),
                    textcoords="offset points")


def fig_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def figures(results: list[DesignResult]) -> dict[str, bytes]:
    """PNG bytes: area breakdown, decode power breakdown, energy per token, tokens/s + FOM."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name for r in results]
    out: dict[str, bytes] = {}
    # area: logic units + SRAM buffers, stacked, mm²
    cmap = plt.get_cmap("tab20")
    area: dict[str, list[float]] = {}
    for k, r in enumerate(results):
        for label, v in ([(u.name, u.area_um2) for u in r.hw.units] + [(f"SRAM {s.name}", s.area_um2) for s in r.hw.srams]
                         + [(p.name, p.area_um2) for p in r.hw.chip if p.area_um2]):
            area.setdefault(label, [0.0] * len(results))[k] += v / 1e6
    fig, ax = plt.subplots(figsize=(8, 4))
    _stack(ax, names, area, cmap, "mm²")
    ax.axhline(PAPER["area_mm2"][0], color="k", ls="--", lw=1, label="paper 0.223 mm² [J]")
    ax.axhline(PAPER["area_mm2_silicon"][0], color="gray", ls=":", lw=1, label="silicon 0.214 mm² [C]")
    ax.set_ylabel("area (mm²)")
    ax.set_title("Area breakdown (units placed at 70 % utilisation + SRAM macros)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    out["area"] = fig_png(fig)
    # power: decode, per unit + SRAM buffer + leakage (DRAM in the energy figure)
    power: dict[str, list[float]] = {}
    for k, r in enumerate(results):
        d = r.decode
        if not d or not d.time_s:
            continue
        parts = ([(u, e) for u, e in d.logic_j.items()] + [(f"SRAM {b}", e) for b, e in d.sram_by_buffer_j.items()]
                 + list(d.chip_j.items()))
        for label, e in parts + [("leakage", d.leak_j)]:
            power.setdefault(label, [0.0] * len(results))[k] += e / d.time_s * 1e3
    fig, ax = plt.subplots(figsize=(8, 4))
    _stack(ax, names, power, cmap, "mW")
    ax.axhline(PAPER["power_mw"][0], color="k", ls="--", lw=1, label="paper 65.97 mW [J]")
    ax.set_ylabel("decode core power (mW)")
    ax.set_title("Power breakdown, decode (DRAM excluded)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    out["power"] = fig_png(fig)
    # energy per token: core (prefill, decode) and DRAM (decode) side by side, log scale (DRAM dominates)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    x = range(len(results))
    w = 0.27
    pre = [(r.prefill.energy_per_token_j * 1e3) if r.prefill else 0 for r in results]
    dec = [(r.decode.energy_per_token_j * 1e3) if r.decode else 0 for r in results]
    dram = [(r.decode.dram_j / r.decode.tokens * 1e3) if r.decode and r.decode.tokens else 0 for r in results]
    for bars in (ax.bar([i - w for i in x], pre, w, label="prefill, core"),
                 ax.bar(list(x), dec, w, label="decode, core"),
                 ax.bar([i + w for i in x], dram, w, label="decode, DRAM only", hatch="//", alpha=0.6)):
        ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=1)
    ax.axhline(PAPER["energy_per_token_mj"][0], color="k", ls="--", lw=1, label="paper core 0.933 mJ (inferred)")
    ax.set_yscale("log")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("mJ / token (log)")
    ax.set_title("Energy per token")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    out["energy"] = fig_png(fig)
    # throughput and FOM
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.4))
    a1.bar(names, [r.decode.tokens_per_s if r.decode else 0 for r in results], color="tab:blue")
    a1.axhline(PAPER["tokens_per_s"][0], color="k", ls="--", lw=1)
    a1.set_title("decode tokens/s (paper 70.70)")
    a2.bar(names, [r.fom for r in results], color="tab:green")
    a2.axhline(PAPER["fom_tops_per_mm2_w"][0], color="k", ls="--", lw=1)
    a2.set_title("FOM TOPS/mm²/W (paper 17.4)")
    for a in (a1, a2):
        a.tick_params(axis="x", labelsize=8)
    out["perf"] = fig_png(fig)
    return out
