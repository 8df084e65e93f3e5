"""Every figure and claim of the committed sweep's hand-written notes (reports/sweep-vitallm/notes.md) against the
sweep's own results table: when the sweep is recomputed (`make reports`), this test lists each statement of the
notes whose number or claim no longer holds, with the value the new table gives."""

from __future__ import annotations

import re
from pathlib import Path
from statistics import mean

import pytest

ROOT = Path(__file__).resolve().parents[2]
DIR = ROOT / "reports" / "sweep-vitallm"
BASE = 121   # the vitallm preset's own values (tests/explore/test_readme_sweep.py checks which point it is)
P198 = 198   # 3 TINT cores, 1 GHz, 4 channels, K = 16, 16 KiB weight SRAM


@pytest.fixture(scope="module")
def rows():
    pq = pytest.importorskip("pyarrow.parquet")
    return {r["point"]: r for r in pq.read_table(DIR / "results.parquet").to_pylist()}


def _by(rows: dict, param: str, metric: str) -> dict:
    """Mean of `metric` over the ok points at each value of `param` (a main effect)."""
    vals = sorted({r[param] for r in rows.values()})
    return {v: mean(r[metric] for r in rows.values() if r[param] == v and r["status"] == "ok") for v in vals}


def _pct(new: float, old: float, digits: int = 1) -> str:
    return f"{100 * (new / old - 1):+.{digits}f} %".replace("-", "−")


def statements(rows: dict) -> list[tuple[str, str | bool]]:
    """(statement of the notes, the text it must contain -- or whether its claim holds) from the results."""
    ok = [r for r in rows.values() if r["status"] == "ok"]
    front = [r for r in ok if r["pareto"]]
    base, p198 = rows[BASE], rows[P198]
    tok = {c: [r["decode_tok_s"] for r in ok if r["dram.channels"] == c] for c in (2, 4, 8)}
    chan = _by(rows, "dram.channels", "decode_tok_s")
    spread = {p: (max(m.values()) - min(m.values())) for p in ("tint.cores", "clock_hz", "dram.channels", "lop.k",
                                                                "sram.weight.bytes")
              for m in [_by(rows, p, "decode_tok_s")]}
    core = rows[82]["area_mm2"] - rows[1]["area_mm2"]   # 2 vs 1 TINT core, all else equal
    sram = rows[1]["area_mm2"] - rows[0]["area_mm2"]    # 32 vs 16 KiB weight SRAM
    cores = _by(rows, "tint.cores", "decode_tok_s")
    wsram = _by(rows, "sram.weight.bytes", "decode_tok_s")
    warea = _by(rows, "sram.weight.bytes", "area_mm2")
    dominating = [r for r in ok if r["point"] != BASE and r["decode_tok_s"] >= base["decode_tok_s"]
                  and r["area_mm2"] <= base["area_mm2"] and r["energy_per_token_mj"] <= base["energy_per_token_mj"]]
    ceiling = max(r["decode_tok_s"] for r in ok if r["clock_hz"] == base["clock_hz"] and r["dram.channels"] == 4)
    energy = [r["energy_per_token_mj"] for r in ok]
    e_k, e_sram = _by(rows, "lop.k", "energy_per_token_mj"), _by(rows, "sram.weight.bytes", "energy_per_token_mj")
    k = _by(rows, "lop.k", "decode_tok_s")
    return [
        ("every design meets the area constraint", len(ok) == len(rows) and f"All {len(rows)} designs" or False),
        ("the largest area", f"the largest is {max(r['area_mm2'] for r in ok):.3f} mm²"),
        ("decode range on 2 channels", f"{min(tok[2]):.1f}–{max(tok[2]):.1f} tok/s"),
        ("ceiling on 4 channels", f"cap the fastest designs at about {max(tok[4]):.0f} tok/s"),
        ("ceiling on 8 channels", f"8 channels at {max(tok[8]):.0f} tok/s"),
        ("mean decode per channel count", f"{chan[2]:.1f} / {chan[4]:.1f} / {chan[8]:.1f} tok/s for 2 / 4 / 8 channels"),
        ("DRAM channels are the largest main effect on tok/s", max(spread, key=spread.get) == "dram.channels"),
        ("area of one more TINT core", f"adds {core:.3f} mm² ({100 * core / base['area_mm2']:.1f} % of vitallm)"),
        ("area of 16 KiB of weight SRAM", f"16 KiB of weight SRAM costs {sram:.3f} mm²"),
        ("mean decode per TINT core count", f"{cores[1]:.1f} / {cores[2]:.1f} / {cores[3]:.1f} tok/s for 1 / 2 / 3 cores"),
        ("16 -> 64 KiB weight SRAM", f"{wsram[16384]:.1f} → {wsram[65536]:.1f} tok/s for "
                                     f"+{warea[65536] - warea[16384]:.3f} mm²"),
        ("the base design's objectives", f"{base['decode_tok_s']:.2f} tok/s, {base['area_mm2']:.4f} mm², "
                                         f"{base['energy_per_token_mj']:.2f} mJ/token"),
        ("how many designs dominate the base design", f"is dominated by {len(dominating)} designs"),
        ("point 198 dominates the base design", p198 in dominating),
        ("point 198 against the base design",
         f"{p198['decode_tok_s']:.2f} tok/s ({_pct(p198['decode_tok_s'], base['decode_tok_s'])}), "
         f"{p198['area_mm2']:.4f} mm² ({_pct(p198['area_mm2'], base['area_mm2'])}), "
         f"{p198['energy_per_token_mj']:.2f} mJ ({_pct(p198['energy_per_token_mj'], base['energy_per_token_mj'])})"),
        ("point 198 reaches the 4-channel ceiling at 1 GHz (within 1 %)", p198["decode_tok_s"] >= 0.99 * ceiling),
        ("the base design against that ceiling",
         f"Its {base['decode_tok_s']:.2f} tok/s is {100 * (1 - base['decode_tok_s'] / ceiling):.0f} % below that "
         f"ceiling ({ceiling:.2f} tok/s"),
        ("energy per token range", f"{min(energy):.1f}–{max(energy):.1f} mJ per decoded token"),
        ("the base design's core energy per token",
         f"about {base['decode_power_mw'] / base['decode_tok_s']:.1f} mJ (vitallm: {base['decode_power_mw']:.1f} mW at "
         f"{base['decode_tok_s']:.1f} tok/s)"),
        ("no parameter moves energy/token by more than 2 %", max(energy) / min(energy) - 1 <= 0.02),
        ("smaller LOP K lowers energy/token", e_k[16] < e_k[32] < e_k[64]),
        ("larger weight SRAM raises energy/token", e_sram[16384] < e_sram[32768] < e_sram[65536]),
        ("K = 16 on every front point", all(r["lop.k"] == 16 for r in front)),
        ("mean decode per LOP K", f"{k[16]:.1f} / {k[32]:.1f} / {k[64]:.1f} tok/s mean for K = 16 / 32 / 64"),
        ("every front point runs at 1.2 GHz", all(r["clock_hz"] == 1.2e9 for r in front)),
    ]


def test_notes_follow_the_results(rows):
    notes = re.sub(r"\s+", " ", (DIR / "notes.md").read_text())
    wrong = [f"{name}: {'does not hold' if want is False else 'expected ' + repr(want)}"
             for name, want in statements(rows) if want is False or (isinstance(want, str) and want not in notes)]
    assert not wrong, "reports/sweep-vitallm/notes.md no longer matches results.parquet:\n" + "\n".join(wrong)
