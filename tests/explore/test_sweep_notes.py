"""Every figure and claim of the committed sweep's hand-written notes (reports/sweep-vitallm/notes.md) against the
sweep's own results table: when the sweep is recomputed (`make reports`), this test lists each statement of the
notes whose number or claim no longer holds, with the value the new table gives."""

from __future__ import annotations

import json
import re
from pathlib import Path
from statistics import mean

import pytest

ROOT = Path(__file__).resolve().parents[2]
DIR = ROOT / "reports" / "sweep-vitallm"
BASE = 86   # the vitallm preset's own values (tests/explore/test_committed_sweep.py checks which point it is)
P81 = 81    # 2 TINT cores, 4 channels, 16 KiB weight SRAM, K = 16, 8 BoothFlex lanes
PARAMS = ("tint.cores", "dram.channels", "sram.weight.bytes", "lop.k", "booth.lanes")


@pytest.fixture(scope="module")
def rows():
    pq = pytest.importorskip("pyarrow.parquet")
    return {r["point"]: r for r in pq.read_table(DIR / "results.parquet").to_pylist()}


def _pt(rows: dict, cores: int, channels: int, weight: int, k: int, lanes: int) -> dict:
    (r,) = [r for r in rows.values() if tuple(r[p] for p in PARAMS) == (cores, channels, weight, k, lanes)]
    return r


def _by(rows: dict, param: str, metric: str) -> dict:
    """Mean of `metric` over all designs at each value of `param` (a main effect of the full grid, constraint aside)."""
    vals = sorted({r[param] for r in rows.values()})
    return {v: mean(r[metric] for r in rows.values() if r[param] == v) for v in vals}


def _pct(new: float, old: float, digits: int = 1) -> str:
    return f"{100 * (new / old - 1):+.{digits}f} %".replace("-", "−")


def _seq(d: dict, fmt: str = ".1f") -> str:
    return " / ".join(format(v, fmt) for v in d.values())


def statements(rows: dict) -> list[tuple[str, str | bool]]:
    """(statement of the notes, the text it must contain -- or whether its claim holds) from the results."""
    ok = [r for r in rows.values() if r["status"] == "ok"]
    over = [r for r in rows.values() if r["status"] == "infeasible"]
    front = [r for r in ok if r["pareto"]]
    base, p81 = rows[BASE], rows[P81]
    tok = {c: [r["decode_tok_s"] for r in rows.values() if r["dram.channels"] == c] for c in (2, 4, 6, 8)}
    effects = {p: _by(rows, p, "decode_tok_s") for p in PARAMS}
    spread = {p: max(m.values()) - min(m.values()) for p, m in effects.items()}
    core = _pt(rows, 3, 4, 32768, 32, 4)["area_mm2"] - base["area_mm2"]
    lanes = _pt(rows, 2, 4, 32768, 32, 8)["area_mm2"] - base["area_mm2"]
    sram = base["area_mm2"] - _pt(rows, 2, 4, 16384, 32, 4)["area_mm2"]
    warea = _by(rows, "sram.weight.bytes", "area_mm2")
    area_spread = {p: max(m.values()) - min(m.values()) for p in PARAMS for m in [_by(rows, p, "area_mm2")]}
    dominating = [r for r in ok if r["point"] != BASE and r["decode_tok_s"] >= base["decode_tok_s"]
                  and r["area_mm2"] <= base["area_mm2"] and r["energy_per_token_mj"] <= base["energy_per_token_mj"]]
    own = [r for r in dominating if r["dram.channels"] == base["dram.channels"]]
    ceiling = max((r for r in rows.values() if r["dram.channels"] == 4), key=lambda r: r["decode_tok_s"])
    energy = [r["energy_per_token_mj"] for r in rows.values()]
    core_mj = [r["decode_power_mw"] / r["decode_tok_s"] for r in rows.values()]
    e_k, e_sram = _by(rows, "lop.k", "energy_per_token_mj"), _by(rows, "sram.weight.bytes", "energy_per_token_mj")
    lo, hi = min(front, key=lambda r: r["decode_tok_s"]), max(front, key=lambda r: r["decode_tok_s"])
    cores4 = [_pt(rows, c, 4, 16384, 16, 8)["decode_tok_s"] for c in (2, 3, 4)]
    metrics = json.loads((ROOT / "reports" / "vitallm" / "metrics.json").read_text())["vitallm"]
    return [
        ("the base design's area", f"(point {BASE}) measures {base['area_mm2']:.4f} mm²"),
        ("the report's chip-netlist vitallm", metrics["power_model"] == "liberty"
         and f"from its chip netlist instead, {metrics['area_mm2']:.3f} mm²"),
        ("designs within the area budget", f"leaves {len(ok)} of the {len(rows)} designs"),
        ("what is over the budget: 64 and 128 KiB", all(r["status"] == "infeasible" for r in rows.values()
                                                        if r["sram.weight.bytes"] >= 65536)
         and f"({min(r['area_mm2'] for r in rows.values() if r['sram.weight.bytes'] >= 65536):.3f} mm² and more)"),
        ("what is over the budget: 32 KiB", sorted({(r["tint.cores"], r["booth.lanes"]) for r in over
                                                    if r["sram.weight.bytes"] == 32768}) == [(4, 8)]
         and f"the {sum(r['sram.weight.bytes'] == 32768 for r in over)} designs with 32 KiB, 4 TINT cores and 8 BoothFlex"),
        ("decode range on 2 channels", f"{min(tok[2]):.1f}–{max(tok[2]):.1f} tok/s"),
        ("ceilings on 4, 6, 8 channels", f"cap the fastest designs at about {max(tok[4]):.0f} tok/s, 6 channels at "
                                         f"{max(tok[6]):.0f}, 8 channels at {max(tok[8]):.0f} tok/s"),
        ("mean decode per channel count", f"{_seq(effects['dram.channels'])} tok/s for 2 / 4 / 6 / 8 channels"),
        ("main effects on tok/s in order", sorted(spread, key=spread.get, reverse=True) ==
         ["dram.channels", "tint.cores", "booth.lanes", "sram.weight.bytes", "lop.k"]),
        ("mean decode per TINT core count", f"({_seq(effects['tint.cores'])} tok/s for 1 / 2 / 3 / 4 cores)"),
        ("mean decode per BoothFlex lanes", f"({_seq(effects['booth.lanes'])} tok/s for 4 / 8 lanes)"),
        ("mean decode per weight SRAM", f"({effects['sram.weight.bytes'][16384]:.1f} → "
                                        f"{effects['sram.weight.bytes'][131072]:.1f} tok/s for 16 → 128 KiB)"),
        ("area of one more TINT core", f"adds {core:.4f} mm² ({100 * core / base['area_mm2']:.1f} % of vitallm)"),
        ("area of 4 more BoothFlex lanes", f"4 more BoothFlex lanes {lanes:.4f} mm²"),
        ("area of 16 KiB of weight SRAM", f"16 KiB of weight SRAM costs {sram:.4f} mm²"),
        ("weight SRAM is the largest main effect on area", max(area_spread, key=area_spread.get) == "sram.weight.bytes"
         and f"({warea[16384]:.3f} → {warea[131072]:.3f} mm² mean for 16 → 128 KiB)"),
        ("every front point: 8 channels, K = 16, 16 KiB", all((r["dram.channels"], r["lop.k"], r["sram.weight.bytes"])
                                                              == (8, 16, 16384) for r in front)),
        ("the front's ends", f"the {len(front)} front points trade cores and BoothFlex lanes"),
        ("the front's ends, values", f"from {lo['decode_tok_s']:.2f} tok/s at {lo['area_mm2']:.4f} mm² "
                                     f"({lo['tint.cores']} core, {lo['booth.lanes']} lanes) to {hi['decode_tok_s']:.2f} "
                                     f"tok/s at {hi['area_mm2']:.4f} mm² ({hi['tint.cores']} cores, {hi['booth.lanes']} lanes)"),
        ("the base design's objectives", f"{base['decode_tok_s']:.2f} tok/s, {base['area_mm2']:.4f} mm², "
                                         f"{base['energy_per_token_mj']:.2f} mJ/token"),
        ("how many designs dominate the base design", f"is dominated by {len(dominating)} designs, {len(own)} of them"),
        ("point 81 is the best of those on 4 channels", max(own, key=lambda r: r["decode_tok_s"]) is p81),
        ("point 81 against the base design",
         f"{p81['decode_tok_s']:.2f} tok/s ({_pct(p81['decode_tok_s'], base['decode_tok_s'])}), "
         f"{p81['area_mm2']:.4f} mm² ({_pct(p81['area_mm2'], base['area_mm2'])}), "
         f"{p81['energy_per_token_mj']:.2f} mJ ({_pct(p81['energy_per_token_mj'], base['energy_per_token_mj'])})"),
        ("point 81 keeps the base's cores and channels", (p81["tint.cores"], p81["dram.channels"], p81["booth.lanes"])
         == (base["tint.cores"], base["dram.channels"], 8)),
        ("point 81 reaches the 4-channel ceiling (within 1 %)", p81["decode_tok_s"] >= 0.99 * ceiling["decode_tok_s"]),
        ("the base design against that ceiling",
         f"{base['decode_tok_s']:.2f} tok/s is {100 * (1 - base['decode_tok_s'] / ceiling['decode_tok_s']):.0f} % below "
         f"that ceiling ({ceiling['decode_tok_s']:.2f} tok/s, point {ceiling['point']}, over the area budget)"),
        ("the ceiling point is over the budget", ceiling["status"] == "infeasible"),
        ("more TINT cores on 4 channels", f"{cores4[0]:.2f} / {cores4[1]:.2f} / {cores4[2]:.2f} tok/s with 2 / 3 / 4 cores"),
        ("energy per token range", f"{min(energy):.2f}–{max(energy):.2f} mJ per decoded token"),
        ("core energy per token range", f"is {min(core_mj):.2f}–{max(core_mj):.2f} mJ"),
        ("the base design's core energy per token",
         f"(vitallm: {base['decode_power_mw']:.1f} mW at {base['decode_tok_s']:.1f} tok/s, "
         f"{base['decode_power_mw'] / base['decode_tok_s']:.2f} mJ)"),
        ("no parameter moves energy/token by more than 2 %", max(energy) / min(energy) - 1 <= 0.02),
        ("K = 16 lowers energy/token", e_k[16] < e_k[32] and f"{e_k[16]:.2f} vs {e_k[32]:.2f} mJ mean for K = 16 / 32"),
        ("larger weight SRAM raises energy/token", list(e_sram.values()) == sorted(e_sram.values())
         and f"{e_sram[16384]:.2f} → {e_sram[131072]:.2f} mJ mean for 16 → 128 KiB"),
        ("mean decode per LOP K", f"({_seq(effects['lop.k'])} tok/s mean for K = 16 / 32)"),
    ]


def test_notes_follow_the_results(rows):
    notes = re.sub(r"\s+", " ", (DIR / "notes.md").read_text())
    wrong = [f"{name}: {'does not hold' if want is False else 'expected ' + repr(want)}"
             for name, want in statements(rows) if want is False or (isinstance(want, str) and want not in notes)]
    assert not wrong, "reports/sweep-vitallm/notes.md no longer matches results.parquet:\n" + "\n".join(wrong)
