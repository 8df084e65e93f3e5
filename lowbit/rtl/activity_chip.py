"""Switching activity of the chip top's modules from a real run on the chip bench (prefill + decode steps).

Rule: compile `model` (prefill + decode) for the config (lowbit.rtl.chip_model.compile_from_golden), run it
on the chip bench (lowbit.rtl.chip_run.verify_chip: it must match `lowbit sim` with 0 mismatches), then run
the same job again on a build of the same Verilog with Verilator's VCD trace and count bit toggles per
module scope (lowbit.rtl.waves.count_toggles). A VCD scope path `TOP.lowbit_chip.a.b` is the Amaranth module
`lowbit_chip.a.b`; a net belongs to the deepest scope among its aliases (a port belongs to the child it
enters or leaves). Per module: toggles and net bits (clock and reset left out); arrays Verilator does not
trace (memories) are the SRAM macros, costed apart.
Busy cycles per queue of the run: the union of its instructions' [start, end) intervals from the bench.
Results are cached under ``cache_dir("activity")``, keyed by the chip sources, the config and the workload.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lowbit.sim.errors import LowbitError

SKIP = ("clk", "rst")


@dataclass
class ChipActivity:
    """Toggles per chip module over one chip-bench run."""

    hw: str
    workload: str
    cycles: int                               # the run's cycles (chip = sim)
    busy: dict[str, int]                      # queue -> busy cycles (union of instruction intervals)
    modules: dict[str, list[int]]             # module -> [bit toggles, net bits]
    verilog: str                              # the Verilog file the bench ran (its synthesis is the chip's netlist)
    params: dict                              # the chip's ChipParams
    seconds: float = 0.0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def busy_cycles(start: list[list[int]], end: list[list[int]], names: list[str]) -> dict[str, int]:
    """Per queue: cycles covered by at least one of its instructions' [start, end) intervals."""
    out = {}
    for n, ss, es in zip(names, start, end, strict=True):
        tot, hi = 0, None
        for s, e in sorted(zip(ss, es, strict=True)):
            if hi is None or s >= hi:
                tot += e - s
                hi = e
            elif e > hi:
                tot += e - hi
                hi = e
        out[n] = tot
    return out


def module_toggles(toggles, top: str = "lowbit_chip", skip: tuple[str, ...] = SKIP) -> dict[str, list[int]]:
    """Per module (Amaranth's hierarchical module name): [bit toggles, net bits] of the nets it owns."""
    out: dict[str, list[int]] = {}
    for net in toggles.nets.values():
        if net.short_names() & set(skip) or not net.bits:
            continue
        scopes = []
        for n in net.names:
            parts = n.split(".")[:-1]
            if top in parts:
                scopes.append(parts[parts.index(top):])
        if not scopes:
            continue
        mod = ".".join(max(scopes, key=len))
        acc = out.setdefault(mod, [0, 0])
        acc[0] += net.toggles
        acc[1] += net.bits
    return dict(sorted(out.items()))


def _key(cfg, model: str, prefill: int, decode: int, seed: int) -> str:
    from lowbit.rtl.chip_run import _sources_digest
    from lowbit.sim.program import config_hash

    return hashlib.sha256(f"{_sources_digest()}|{config_hash(cfg).hex()}|{model}|{prefill}|{decode}|{seed}"
                          .encode()).hexdigest()[:20]


def chip_activity(cfg, hw: str, sets: list[str] | None = None, model: str = "bitnet-tiny", prefill: int = 4,
                  decode: int = 2, seed: int = 0, progress=print) -> ChipActivity:
    """Cached ChipActivity of `model` (prefill + decode) on the chip of `cfg` (module docstring)."""
    import time

    from lowbit.sim.atomic import atomic_write, locked
    from lowbit.sim.cache import cache_dir

    d = cache_dir("activity")
    path = d / f"chip-{cfg.name}-{_key(cfg, model, prefill, decode, seed)}.json"
    with locked(d / f".{path.name}.lock"):
        if path.exists():
            return ChipActivity(**json.loads(path.read_text()))
        t0 = time.perf_counter()
        a = _measure(cfg, hw, sets or [], model, prefill, decode, seed, progress)
        a.seconds = time.perf_counter() - t0
        atomic_write(path, json.dumps(a.to_json()))
    return a


def _measure(cfg, hw: str, sets: list[str], model: str, prefill: int, decode: int, seed: int,
             progress) -> ChipActivity:
    from cocotb_tools.runner import get_runner

    from lowbit.rtl import cocotb_runner as cr
    from lowbit.rtl.chip_model import compile_from_golden
    from lowbit.rtl.chip_run import verify_chip
    from lowbit.rtl.waves import count_toggles

    label = f"{model} prefill {prefill} + decode {decode}"
    with tempfile.TemporaryDirectory(prefix="lowbit-chipact-") as td:
        tmp = Path(td)
        prog = tmp / "prog.bin"
        progress(f"[{cfg.name}] chip activity: compiling {label} and running it on the chip bench...")
        compile_from_golden(cfg, model, prefill, decode, prog, seed)
        r = verify_chip(cfg, prog, hw, sets, run_dir=tmp / "run", seed=seed)
        if not r.ok:
            raise LowbitError(f"chip activity of {cfg.name}: the chip run of {label} does not match lowbit sim "
                              f"(run `lowbit verify --chip --hw {hw} --model {model} --prefill {prefill} "
                              f"--decode {decode}`); no activity is taken from it")
        res = json.loads((tmp / "run" / "result.json").read_text())
        text = Path(r.verilog).read_text()
        progress(f"[{cfg.name}] chip activity: building the chip with VCD tracing and running it again...")
        bdir, _v = cr.build_verilog_text(cr.find_simulator("verilator"), "chip", text, "lowbit_chip", waves=True)
        wdir = tmp / "waves"
        wdir.mkdir()
        job = json.loads((tmp / "run" / "job.json").read_text())
        job["result"] = str(wdir / "result.json")
        (wdir / "job.json").write_text(json.dumps(job))
        runner = cr._in_group(get_runner("verilator"))
        try:
            runner.test(hdl_toplevel="lowbit_chip", hdl_toplevel_lang="verilog",
                        test_module="lowbit.rtl.bench.chip_bench", build_dir=bdir, test_dir=wdir,
                        results_xml=str(wdir / "results.xml"), log_file=wdir / "sim.log", waves=True,
                        extra_env={"LOWBIT_BENCH_JOB": str(wdir / "job.json")})
        except (RuntimeError, SystemExit) as e:
            raise LowbitError(f"chip bench with waves failed ({e}); log {wdir / 'sim.log'}") from None
        again = json.loads((wdir / "result.json").read_text())
        if again["start"] != res["start"] or again["end"] != res["end"]:
            raise LowbitError("the traced chip run differs from the untraced one; no activity is taken from it")
        vcd = wdir / "dump.vcd"
        progress(f"[{cfg.name}] chip activity: counting toggles in {vcd.stat().st_size / 1e6:,.0f} MB of VCD...")
        mods = module_toggles(count_toggles(vcd))
        keep = cache_dir_verilog(text)
    cycles = max((e for q in res["end"] for e in q), default=0)
    return ChipActivity(cfg.name, label, cycles, busy_cycles(res["start"], res["end"], res["queues"]), mods,
                        str(keep), dataclasses.asdict(r.params))


def cache_dir_verilog(text: str) -> Path:
    """The chip Verilog kept beside the activity (content-addressed), for its synthesis."""
    from lowbit.sim.atomic import atomic_write
    from lowbit.sim.cache import cache_dir

    p = cache_dir("verilog") / f"chip-act-{hashlib.sha256(text.encode()).hexdigest()[:20]}.v"
    if not p.exists():
        atomic_write(p, text)
    return p

