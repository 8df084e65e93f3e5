"""Fuzz the command line in-process (lowbit.cli.main): 1,000 generated argument lists over every command and
its options, hostile values included (NaN, inf, 1e12, 2^63, garbage, missing files). Each run succeeds or
fails with status 2 and one line, within the per-case timeout, and leaves no temp entry behind.

The slow bodies of the long commands (training, synthesis, RTL benches, reports, the paper validation) are
replaced by stubs that record their arguments: what is fuzzed is everything before them (option validation,
input loading, size bounds). `sim` and `trace` run for real on small models."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lowbit.sim.atomic import TMP_SUFFIX
from tests.fuzz.util import CASES, FUZZ, assert_clean_exit, cli

INTS = ["0", "1", "2", "3", "-1", "-7", "1e12", "1000000000000", "9223372036854775808", "99999999999999999999999",
        "abc", "", "nan", "inf", "0x10", "4294967296"]
SMALL = ["1", "2", "3"]
FLOATS = ["nan", "inf", "-inf", "1e300", "0", "-1", "0.01", "abc", "1e-300", "10081"]
LISTS = ["128,512", "8,16", "", ",", "1e12", "2,3000", "1,2", "abc", "9223372036854775808", "2," * 40, "-5"]


def _build(draw, tmp: Path) -> list[str]:
    v = lambda pool: draw(st.sampled_from(pool))  # noqa: E731
    n = lambda: v(SMALL) if draw(st.integers(0, 9)) < 7 else v(INTS)  # noqa: E731  mostly valid, some hostile
    f = lambda: v(["0.01", "1"]) if draw(st.integers(0, 9)) < 7 else v(FLOATS)  # noqa: E731
    lst = lambda: v(["128,512", "8,16", "2"]) if draw(st.integers(0, 9)) < 7 else v(LISTS)  # noqa: E731
    path = lambda: v([str(tmp / "out"), str(tmp / "file.txt"), str(tmp / "missing" / "x"), "-",  # noqa: E731
                      str(tmp / "bad.toml"), str(tmp / "trace"), str(tmp)])
    hw = lambda: v(["tiny", "tiny", "vitallm", "nope", str(tmp / "bad.toml"), str(tmp / "missing.toml"), "vitallm-fp4"])  # noqa: E731
    cmd = v(["sim", "sim", "sim", "config show", "config list", "trace info", "trace", "trace", "validate",
             "train-tiny", "eval-tiny", "fp4-sensitivity", "rtl", "verify", "synth", "report", "models list"])
    args: list[str] = cmd.split()
    if cmd == "sim":
        args += ["--model", v(["bitnet-tiny", "bitnet-tiny", "nope", "bitnet-b1.58-3b"]), "--hw", hw()]
        small = args[2] != "bitnet-b1.58-3b"  # the 3B model only with refused token counts (keeps cases short)
        args += ["--prefill", n() if small else v(["-1", "1e12", "1000000000000", "abc"]),
                 "--decode", n() if small else v(["9223372036854775808", "-1"])]
        if draw(st.booleans()):
            args += ["--lop-k", n()]
        if draw(st.booleans()):
            args += ["--timeline", path(), "--timeline-events", n()]
        if draw(st.booleans()):
            args += ["--json", path()]
        if draw(st.booleans()):
            args += ["--schedule", v(["inorder", "dependency-aware", "fifo", ""])]
        if draw(st.booleans()):
            args += ["--trace", v([str(tmp / "trace"), str(tmp / "missing"), str(tmp / "file.txt")])]
        args += v([["--quiet"], ["--no-lop", "--quiet"], ["--weights", v(["nvfp4", "ternary", "fp3"]), "--quiet"]])
    elif cmd == "config show":
        args += [hw()] + (["--json", path()] if draw(st.booleans()) else [])
    elif cmd == "trace info":
        args += [v([str(tmp / "trace"), str(tmp / "missing"), str(tmp / "file.txt"), str(tmp)])]
    elif cmd == "trace":
        args += ["--model", v(["bitnet-tiny", "nope", str(tmp / "missing"), str(tmp), "./x"]),
                 "--prefill", n(), "--decode", n(), "--out", str(tmp / f"t{draw(st.integers(0, 9))}")]
        args += draw(st.sampled_from([[], ["--tensors"], ["--seed", n()], ["--weights", v(["nvfp4", "x"])],
                                      ["--random-init"]]))
    elif cmd == "validate":
        args += [v(["vitallm", "vitallm", "other"]), "--out", path(), "--decode", n(), "--contexts", lst()]
    elif cmd == "train-tiny":
        args += ["--minutes", f(), "--steps", n(), "--batch", n(), "--seq", v(["2", "16", "256"] + INTS),
                 "--out", path(), "--seed", n()]
    elif cmd == "eval-tiny":
        args += [v([str(tmp / "out"), str(tmp / "missing")]), "--windows", n(), "--k", lst()]
    elif cmd == "fp4-sensitivity":
        args += ["--model", v(["minilm", "nope"]), "--format", v(["nvfp4", "mxfp4", "both", "fp3"]),
                 "--sentences", n(), "--windows", n(), "--threads", n(), "--seed", n(), "--out", path()]
    elif cmd == "rtl":
        args += ["--hw", hw(), "--out", path(), "--unit", v(["tint", "booth", "nope", "all", "sfu"])]
    elif cmd == "verify":
        args += ["--hw", hw(), "--unit", v(["tint", "all", "nope"]), "--vectors", n(), "--seed", n()]
    elif cmd == "synth":
        args += ["--hw", hw(), "--unit", v(["tint", "booth", "nope"])] + (["--json", path()] if draw(st.booleans()) else [])
    elif cmd == "report":
        args += ["--hw", hw(), "--model", v(["bitnet-tiny", "nope", "bitnet-b1.58-3b"]), "--out", path(),
                 "--prefill", n(), "--decode", n()]
        if draw(st.booleans()):
            args += ["--notes", v([str(tmp / "file.txt"), str(tmp / "binary.bin"), str(tmp / "missing.md")])]
    return args


@pytest.fixture()
def stubs(monkeypatch, tmp_path):
    """The slow command bodies, replaced by recorders (everything before them runs for real)."""
    pytest.importorskip("torch")
    pytest.importorskip("amaranth")
    import lowbit.cost.report as report
    import lowbit.models.sensitivity as sens
    import lowbit.models.train_tiny as tt
    import lowbit.rtl.cocotb_runner as runner
    import lowbit.rtl.generate as gen
    import lowbit.rtl.synth as synth
    import lowbit.sim.validation as validation

    calls: Counter[str] = Counter()

    def rec(name, ret=None):
        def f(*a, **k):
            calls[name] += 1
            return ret(*a, **k) if callable(ret) else ret
        return f

    monkeypatch.setattr(validation, "build_report", rec("validate", "# report\n"))
    monkeypatch.setattr(tt, "train_tiny", rec("train", {"ternary": {"steps_done": 1}, "total_seconds": 0}))
    monkeypatch.setattr(tt, "evaluate_tiny", rec("eval"))
    monkeypatch.setattr(sens, "fp4_sensitivity", rec("sens", []))
    monkeypatch.setattr(gen, "generate", rec("rtl", lambda cfg, unit, out, **k: [Path(out) / f"{unit}.v"]))
    monkeypatch.setattr(runner, "run_bench", rec("verify", lambda *a, **k: runner.BenchResult(
        unit=a[0], parameters={}, vectors=1, mismatches=0, cycle_checks=0, cycle_mismatches=0)))
    monkeypatch.setattr(synth, "synth_unit", rec("synth", lambda cfg, unit, **k: synth.SynthResult(
        f"lowbit_{unit}", {"dfxtp_1": 1}, 20.0, 20.0, "k", "", {"dfxtp_1": 20.0})))
    monkeypatch.setattr(report, "evaluate", rec("report-eval"))
    monkeypatch.setattr(report, "write_report", rec("report-write", []))
    (tmp_path / "file.txt").write_text("not a directory\n")
    (tmp_path / "binary.bin").write_bytes(b"\xff\xfe\x00\x80")
    (tmp_path / "bad.toml").write_text('name = "x"\nclock_hz = nan\n')
    (tmp_path / "out").mkdir()
    from lowbit.sim.trace import write_trace
    from lowbit.sim.workloads import standard_trace

    write_trace(standard_trace("bitnet-tiny", 2, 1), tmp_path / "trace")
    return calls


def test_cli_fuzz(tmp_path: Path, stubs, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths (`--out -`, `./x`) land in the test's directory
    seen: Counter[str] = Counter()

    @FUZZ
    @given(st.data())
    def case(data):
        argv = _build(data.draw, tmp_path)
        rc, _out, err = cli(argv, timeout=20)
        assert_clean_exit(rc, err, argv)
        left = [p for p in tmp_path.rglob(f"*{TMP_SUFFIX}")]
        assert not left, f"temp entries left by lowbit {argv}: {left}"
        seen["cases"] += 1
        seen[f"{argv[0]}:{rc}"] += 1

    case()
    assert seen["cases"] >= CASES, seen
    # every command both runs and refuses something
    assert seen["sim:0"] and seen["sim:2"] and seen["trace:0"] and seen["trace:2"], seen
