"""Switching activity of the chip top's modules from a real run on the chip bench (prefill + decode steps).

Rule: compile `model` (prefill + decode) for the config (lowbit.rtl.chip_model.compile_from_golden), run it
on the chip bench (lowbit.rtl.chip_run.verify_chip: it must match `lowbit sim` with 0 mismatches), then run
the same job again on a build of the same Verilog with Verilator's VCD trace and count bit toggles per
module (module_toggles). A VCD scope path `TOP.lowbit_chip.a.b` lies in the Amaranth module `lowbit_chip.a.b`
(the deepest module on the path: Verilator adds scopes for arrays and structs); a net belongs to the deepest
module among its aliases (a port belongs to the child it enters or leaves). A module that belongs to a
compute queue's engine (owner: `eng_<q>`, `rq_<q>`, the LOP engine, the SFU engines) has its toggles counted
only in the cycles that queue is busy (DESIGN ASSUMPTION, as in the power model: an idle engine is
clock-gated, so what its logic does between instructions costs nothing); the other modules (controllers,
scoreboard, DMA, memory port) in every run cycle. Per module: toggles and net bits (clock and reset left
out); memories Verilator does not trace are the SRAM macros, costed apart.
Busy cycles per queue of the run: the union of its instructions' [start, end) intervals from the bench.
Results are cached under ``cache_dir("activity")``, keyed by the chip's sources (chip_sources_digest), the
config and the workload.
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
TOP = "lowbit_chip"
KEY_VERSION = "2"


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


def load_activity(path: str | Path, cfg=None) -> ChipActivity:
    """A stored ChipActivity (JSON of ChipActivity.to_json); LowbitError in one line if it cannot be used."""
    try:
        a = ChipActivity(**json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError) as e:
        raise LowbitError(f"chip activity {path}: not a readable chip-activity JSON ({e})") from None
    if cfg is not None and a.hw != cfg.name:
        raise LowbitError(f"chip activity {path} is of {a.hw}, not {cfg.name}")
    if not Path(a.verilog).exists():
        raise LowbitError(f"chip activity {path}: its chip Verilog {a.verilog} is missing (rerun without a stored "
                          "activity to run the chip bench again)")
    return a


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


DMA_PREFIXES = ("q_dma_", "fill", "kvfill", "ring_")


def owner(module: str, queues: list[str], top: str = TOP) -> tuple[str, str]:
    """(part, queue) of a chip module: part is a unit name (tint, booth, fp4, lop, sfu), "dma" or "control";
    queue the compute queue whose busy cycles it is charged ('' for every cycle)."""
    parts = module.split(".")
    inst = parts[1] if len(parts) > 1 and parts[0] == top else ""
    for pre in ("eng_", "rq_"):
        if inst.startswith(pre) and inst[len(pre):] in queues:
            q = inst[len(pre):]
            return q.rstrip("0123456789"), q
    if inst == "lop_engine" and "lop" in queues:
        return "lop", "lop"
    if inst.startswith("sfu_") and "sfu" in queues:
        return "sfu", "sfu"
    if inst.startswith(DMA_PREFIXES):
        return "dma", ""
    return "control", ""


def module_of(scope: list[str], modules: set[str], top: str = TOP) -> str | None:
    """The deepest chip module a VCD scope path lies in (Verilator adds scopes for arrays and structs)."""
    if top not in scope:
        return None
    parts = scope[scope.index(top):]
    for k in range(len(parts), 0, -1):
        name = ".".join(parts[:k])
        if name in modules:
            return name
    return None


def busy_mask(start: list[int], end: list[int], cycles: int) -> bytearray:
    """1 for every run cycle in the union of the [start, end) intervals."""
    m = bytearray(cycles + 1)
    for s, e in zip(start, end, strict=True):
        m[max(0, s):min(e, cycles + 1)] = b"\x01" * max(0, min(e, cycles + 1) - max(0, s))
    return m


def module_toggles(vcd_path, modules: set[str], masks: dict[str, bytearray], top: str = TOP,
                   skip: tuple[str, ...] = SKIP) -> dict[str, list[int]]:
    """Per chip module: [bit toggles, net bits] of the nets it owns (module docstring), a toggle counted only in
    the run cycles its owner is busy (masks[module]; a module without a mask: every run cycle). The run cycle
    of a toggle is the value of the chip's `cycle` counter after that timestamp's changes; toggles before the
    counter first reaches 1 (loading the program) are not counted."""
    from lowbit.rtl.waves import _known_value, read_declarations, value_changes

    with open(vcd_path) as f:
        nets = read_declarations(f)  # which identifier belongs to which module
        own: dict[str, str] = {}
        cyc_id = None
        for ident, net in nets.items():
            if any(n.split(".")[-1] == "cycle" and n.split(".")[-2:-1] == [top] for n in net.names):
                cyc_id = ident
            if net.short_names() & set(skip) or not net.bits:
                continue
            scopes = [n.split(".")[:-1] for n in net.names]
            mods = [m for m in (module_of(sc, modules, top) for sc in scopes) if m]
            if mods:
                own[ident] = max(mods, key=lambda m: m.count("."))
        if cyc_id is None:
            raise ValueError(f"no `{top}.cycle` net in {vcd_path}: cannot place toggles in run cycles")
        width = {i: nets[i].width for i in own}
        width[cyc_id] = nets[cyc_id].width
        last: dict[str, int | None] = {}
        pending: dict[str, int] = {}
        out = {m: [0, 0] for m in set(own.values())}
        for i, m in own.items():
            out[m][1] += nets[i].bits
        cycle = 0
        started = False

        def flush() -> None:
            if started:
                for i, n in pending.items():
                    mk = masks.get(own[i])
                    if mk is None or (cycle < len(mk) and mk[cycle]):
                        out[own[i]][0] += n
            pending.clear()

        for ident, val in value_changes(f):
            if ident is None:
                flush()
                continue
            if ident not in width:
                continue
            v = _known_value(val, width[ident])
            if ident == cyc_id and v is not None:
                cycle = v
                started = started or v >= 1
            if ident not in own:
                continue
            prev = last.get(ident)
            if prev is not None and v is not None and prev != v:
                pending[ident] = pending.get(ident, 0) + (prev ^ v).bit_count()
            last[ident] = v
        flush()
    return dict(sorted(out.items()))


# lowbit/rtl files that neither build the chip nor run its bench (synthesis, costing, this module): left out of
# the cache key, so changing them does not rerun the chip bench
NOT_CHIP = ("activity.py", "activity_chip.py", "characterize.py", "cli.py", "liberty.py", "lint.py", "spice.py",
            "sta.py", "synth.py", "synth_hier.py", "waves.py", "chip_report.py")


def chip_sources_digest() -> str:
    """Hash of the sources the chip and its bench are built from (lowbit/rtl and its bench, NOT_CHIP left out)
    and the Amaranth version."""
    import amaranth

    here = Path(__file__).resolve().parent
    h = hashlib.sha256(amaranth.__version__.encode())
    for f in sorted([*here.glob("*.py"), *(here / "bench").glob("*.py")]):
        if f.name not in NOT_CHIP or f.parent.name == "bench":
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _key(cfg, model: str, prefill: int, decode: int, seed: int) -> str:
    from lowbit.sim.program import config_hash

    return hashlib.sha256(f"{KEY_VERSION}|{chip_sources_digest()}|{config_hash(cfg).hex()}|{model}|{prefill}|"
                          f"{decode}|{seed}".encode()).hexdigest()[:20]


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
    from lowbit.rtl.synth_hier import split_modules

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
        cycles = max((e for q in res["end"] for e in q), default=0)
        names = set(split_modules(text))
        qmask = {q: busy_mask(s, e, cycles) for q, s, e in zip(res["queues"], res["start"], res["end"], strict=True)}
        masks = {m: qmask[q] for m in names for _p, q in [owner(m, res["queues"])] if q}
        mods = module_toggles(vcd, names, masks)
        keep = cache_dir_verilog(text)
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

