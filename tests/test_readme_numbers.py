"""Every number the README quotes equals the one in the committed report it comes from (`make reports`
regenerates those reports; this test fails when the README and the reports drift apart)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _read(path: str) -> str:
    return (ROOT / path).read_text()


def _one(pattern: str, text: str, what: str) -> re.Match:
    m = list(re.finditer(pattern, text, re.M))
    assert len(m) == 1, f"{what}: pattern {pattern!r} matched {len(m)} times"
    return m[0]


def _num(s: str) -> float:
    return float(s.replace(",", "").replace("−", "-"))


def test_validation_headline():
    rep = _read("reports/validation-vitallm.md")
    tok = _one(r"\| decode tokens/s \| ([\d.]+) \| 70\.70 \[J\] / 72\.46 \[C\]", README, "README decode").group(1)
    assert f"| decode tokens/s | {tok} | 70.70 [J] |" in rep
    pre = _one(r"\| 64-token prefill latency \| ([\d.]+) s \|", README, "README prefill").group(1)
    assert f"| prefill latency, 64 tokens | {pre} s | 0.88 s [C] |" in rep


def test_validation_ablations():
    rep = _read("reports/validation-vitallm.md")
    m = _one(r"KV plus LO-code traffic ([\d.]+)×/([\d.]+)×/([\d.]+)×/([\d.]+)× lower at context "
             r"(\d+)/(\d+)/(\d+)/(\d+)", README, "README LOP ablation")
    net = {}
    for row in re.finditer(r"^\| (\d+) \| [\d,]+ \| [\d,]+ \| [\d,]+ \| ([\d.]+)x \| ([\d.]+)x \|", rep, re.M):
        net[int(row.group(1))] = (float(row.group(2)), float(row.group(3)))
    for i in range(4):
        ctx, quoted = int(m.group(5 + i)), float(m.group(1 + i))
        assert round(net[ctx][0], 1) == quoted, (ctx, net[ctx], quoted)
    m = _one(r"K\+V alone ([\d.]+)×/([\d.]+)×/([\d.]+)×/([\d.]+)×", README, "README K+V only")
    for i, ctx in enumerate(sorted(net)):
        assert round(net[ctx][1]) == float(m.group(1 + i))
    sched = _one(r"dependency-aware vs in-order: \+([\d.]+) % decode", README, "README scheduling").group(1)
    assert re.search(rf"\| 64 \+ 128, decode tok/s \| [\d.]+ \| [\d.]+ \| \+{re.escape(sched)} % \|", rep)
    single = _one(r"without it ([\d.]+) tok/s", README, "README dual-core").group(1)
    row = _one(r"dual-core load balancing off \(BoothFlex: attention only\), 64 \+ 128 decode tok/s \| ([\d.]+)",
               rep, "report dual-core").group(1)
    assert round(float(row), 1) == float(single)


def test_simulator_speed():
    rep = _read("bench/results-sim.md")
    m = _one(r"64-token prefill \+ 128 decode tokens with data-driven LOP = ([\d.]+)·10⁹ simulated cycles in "
             r"\*\*([\d.]+) s wall /\s+([\d.]+) s CPU\*\*", README, "README speed")
    cycles = _num(_one(r"\| simulated cycles \| ([\d,]+) \|", rep, "bench cycles").group(1))
    assert round(cycles / 1e9, 2) == float(m.group(1))
    assert f"| simulate() wall time (LOP selection + lowering + scheduling) | **{m.group(2)} s** |" in rep
    assert f"| simulate() user CPU time | **{m.group(3)} s** |" in rep
    rate = _one(r"\((\d+) M simulated cycles per wall second", README, "README rate").group(1)
    assert f"| simulated cycles per wall second | **{rate}." in rep
    load = _one(r"\(load average ([\d.]+)\)", README, "README load").group(1)
    assert re.search(rf"before / after the headline run: \*\*[\d./]+\*\* / \*\*{re.escape(load)}/", rep)
    peak = _one(r"peak resident set ([\d,]+) MiB during the 3B run", README, "README RSS").group(1)
    assert re.search(rf"/ peak RSS during it \(VmHWM\) \| \d+ MiB / {peak} MiB \|", rep)
    step = _one(r"\(([\d.]+) CPU-s per 3B decode step\)", README, "README per step").group(1)
    assert re.search(rf"^\| 128 \| [\d.]+ \| [\d.]+ \| {re.escape(step)}\d? \|", rep, re.M)


def test_area_power_report():
    rep = _read("reports/vitallm/report.md")
    m = _one(r"vitallm comes out at ([\d.]+) mm² \(paper 0\.223 / 0\.214 mm²,\s+\+(\d+) % / \+(\d+) %\) and\s+([\d.]+) mW "
             r"decode core power \(paper 65\.97 mW, −(\d+) %\)", README.replace("\n", " "), "README area/power")
    row = _one(r"^\| vitallm \| ([\d.]+) \| ([^|]+) \| ([^|]+) \| ([\d.]+) \| ([^|]+) \|", rep, "report vitallm row")
    assert round(float(row.group(1)), 3) == float(m.group(1))
    assert (row.group(2).strip(), row.group(3).strip()) == (f"+{m.group(2)} %", f"+{m.group(3)} %")
    assert round(float(row.group(4)), 1) == float(m.group(4))
    assert row.group(5).strip() == f"-{m.group(5)} %"  # the README prints a typographic minus


def test_fp4_sensitivity():
    rep = _read("reports/fp4-sensitivity-minilm/sensitivity.md")
    m = _one(r"cosine ([\d.]+)\s+NVFP4 / ([\d.]+) MXFP4 when everything is quantized", README, "README FP4")
    every = [float(x) for x in re.findall(r"^\| everything \| ([\d.]+) \|", rep, re.M)]
    assert [round(x, 3) for x in every] == [float(m.group(1)), float(m.group(2))]


def test_accuracy_tiny():
    rep = _read("reports/accuracy-tiny.md")
    m = _one(r"held-out perplexity in float \(([\d.]+)\), ternary \(([\d.]+)\),\s+ternary \+ LOP \(K = 32: ([\d.]+); "
             r"K = 8: ([\d.]+)\)", README, "README accuracy")

    def ppl(name: str) -> float:
        return float(_one(rf"^\| {re.escape(name)} \| ([\d.]+) \|", rep, name).group(1))

    got = [ppl("float baseline (same arch, same steps)"), ppl("ternary (W1.58 A8, QAT)"),
           ppl("ternary + LOP K=32"), ppl("ternary + LOP K=8")]
    assert [f"{x:.3f}" for x in got] == list(m.groups())
    steps = _one(r"ternary byte-level LM\s+for (\d+) seeded steps", README, "steps").group(1)
    assert f"**{steps} steps** (seed 0)" in rep


def test_gpu_baseline():
    g = json.loads(_read("reports/gpu-baseline.json"))
    m = _one(r"BitNet-3B decode: (\d+) tok/s ternary vs (\d+) tok/s bf16", README, "README GPU")
    dec = {r["kernel"]: r["tokens_per_s"] for r in g["decode"]
           if r["model"] == "bitnet-b1.58-3b" and r.get("attn") == "dense" and r.get("batch", 1) == 1
           and r.get("context") == 192}
    assert (round(dec["ternary"]), round(dec["bf16"])) == (int(m.group(1)), int(m.group(2)))


def test_breakdown_table_and_figures():
    rep = _read("reports/roofline/roofline.md")
    start = README.index("| op | critical-path cycles |")
    table = README[start:README.index("\n\n", start)]
    assert table in rep  # the README's breakdown table is the report's, verbatim
    for fig in ("reports/roofline/roofline.png", "reports/timeline/timeline.png"):
        assert f"]({fig})" in README and (ROOT / fig).read_bytes()[:4] == b"\x89PNG"


def test_batching_and_memory():
    rep = _read("reports/validation-vitallm.md")
    m = _one(r"decode\s+throughput is ([\d.]+) tokens/s at batch 1 and ([\d.]+) at batch 16 \(([\d.]+)x\), because the "
             r"TINT cores are already ([\d.]+) % busy at batch 1 .*?\(([\d,]+) weight bytes per step at batch 1, "
             r"([\d,]+) at batch 16\)", README.replace("\n", " "), "README batching")
    b1 = _one(r"^\| 1 \| ([\d.]+) \| 1\.00x \| [\d.]+ \| ([\d,]+) \| [\d,]+ \| [\d.]+ % \| ([\d.]+) % \|$", rep, "batch 1")
    b16 = _one(r"^\| 16 \| ([\d.]+) \| ([\d.]+)x \| [\d.]+ \| ([\d,]+) \|", rep, "batch 16")
    assert (m.group(1), m.group(5), m.group(4)) == (b1.group(1), b1.group(2), b1.group(3))
    assert (m.group(2), m.group(3), m.group(6)) == (b16.group(1), b16.group(2), b16.group(3))
    s = _one(r"time to first token ([\d.]+) s p50 / ([\d.]+) s p99, inter-token latency ([\d.]+) ms p50 \(p99 "
             r"([\d.]+) ms:[^)]*\), ([\d.]+) output tokens/s", README.replace("\n", " "), "README serving")
    ttft = _one(r"^\| time to first token, s \| ([\d.]+) \| [\d.]+ \| ([\d.]+) \|$", rep, "report TTFT")
    itl = _one(r"^\| inter-token latency, ms \| ([\d.]+) \| [\d.]+ \| ([\d.]+) \|$", rep, "report ITL")
    thr = _one(r"^Throughput ([\d.]+) output tokens/s", rep, "report throughput")
    assert s.groups() == (ttft.group(1), ttft.group(2), itl.group(1), itl.group(2), thr.group(1))
    big = _one(r"DRAM is ([\d.]+) %\s+busy at batch 16, yet throughput stays compute-bound at ([\d.]+) tokens/s "
               r"\(([\d.]+)x\)", README, "README batch-sized buffers")
    row = _one(r"^\| 16, batch-sized buffers \| ([\d.]+) \| ([\d.]+)x \| [\d.]+ \| [\d,]+ \| [\d,]+ \| "
               r"([\d.]+) % \|", rep, "report batch-sized buffers")
    assert (big.group(2), big.group(3), big.group(1)) == row.groups()
    mem = _read("bench/results-memory.md")
    flat = README.replace("\n", " ")
    lo, hi = _one(r"peak RSS = VmHWM of a fresh process\): ([\d,]+)–([\d,]+) MiB over the decode and context cases",
                  flat, "README memory").groups()
    rss = [int(r) for r in re.findall(r"^\| [\d,]+ \| - \| vitallm \| (?:128|1,024|16) \| .* \| ([\d,]+) \| [\d,]+ \|$",
                                     mem[:mem.index("## Prefill")], re.M)]
    assert len(rss) == 5 and (min(rss), max(rss)) == (int(lo), int(hi))
    assert f"peak RSS over the decode and context cases is {hi} MiB" in mem

    def prefill(tokens: str) -> tuple[str, ...]:
        """(instructions, CPU s, peak RSS MiB) of the online-softmax one-step prefill of `tokens` in the bench."""
        row = _one(rf"^\| {tokens} \| - \| vitallm \| 1 \| ([\d,]+) \| [\d,]+ \| [\d,]+ \| [\d.]+ \| ([\d.]+) \| "
                   rf"\d+ \| ([\d,]+) \|", mem, f"bench prefill {tokens}")
        return row.groups()

    ins, cpu, peak = prefill("1,024")
    assert f"{peak} MiB at 1,024 ({int(ins.replace(',', '')) / 1e6:.1f} M tile instructions, {cpu} CPU-s" in flat
    ins, cpu, peak = prefill("8,192")
    assert f"{peak} MiB at 8,192 ({int(ins.replace(',', '')):.2e} tile instructions, {float(cpu):.0f} CPU-s" \
        .replace("e+0", "e") in flat
    ins, cpu, peak = prefill("32,768")
    assert f"at {peak} MiB ({int(ins.replace(',', '')):.2e} tile instructions, {float(cpu):,.0f} CPU-s" \
        .replace("e+0", "e") in flat


@pytest.mark.parametrize("path", ["reports/validation-vitallm.md", "bench/results-sim.md", "reports/vitallm/report.md",
                                  "reports/accuracy-tiny.md", "reports/roofline/roofline.md",
                                  "bench/results-memory.md"])
def test_reports_regenerated_by_make_reports(path):
    """Every report the README quotes is produced by a command of the `reports` target."""
    mk = _read("Makefile")
    target = mk[mk.index("\nreports:"):]
    produced = {"reports/validation-vitallm.md": "lowbit validate vitallm --out reports",
                "bench/results-sim.md": "bench/bench_sim.py",
                "reports/vitallm/report.md": "--out reports/vitallm",
                "reports/accuracy-tiny.md": "--report reports/accuracy-tiny.md",
                "reports/roofline/roofline.md": "--out reports/roofline",
                "bench/results-memory.md": "bench/bench_memory.py"}
    assert produced[path] in target and path in README


def test_program_size():
    rep = _read("bench/results-program.md")
    m = _one(r"The 3B 64 \+ 128 run is a ([\d.]+) MiB file \(([\d,]+)\s+instructions; .*?compiled in ([\d.]+) s of CPU",
             README.replace("\n", " "), "README program")
    assert f"({m.group(1)} MiB)" in rep and f"| instructions | {m.group(2)} in" in rep
    assert f"{m.group(3)} s CPU, peak RSS" in rep
