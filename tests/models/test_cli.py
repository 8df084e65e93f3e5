"""`lowbit trace` end to end in a subprocess, as a user runs it, including the error paths."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from lowbit.sim.trace_load import load_trace  # noqa: E402
from lowbit.sim.workloads import standard_trace  # noqa: E402
from tests.cli_util import lowbit  # noqa: E402


def test_trace_cli_end_to_end(tmp_path):
    out = tmp_path / "tiny"
    r = lowbit("trace", "--model", "bitnet-tiny", "--prefill", "6", "--decode", "2", "--out", str(out), "--tensors")
    assert r.returncode == 0, r.stderr
    assert f"wrote trace {out}" in r.stdout
    tr = load_trace(out)
    assert [(o.op, o.name, o.args) for o in tr.ops] == [(o.op, o.name, o.args) for o in standard_trace("bitnet-tiny", 6, 2).ops]
    assert len(tr.tensor_files) == 3
    r = lowbit("trace", "info", str(out), "--json", "-")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ops"] == len(tr.ops)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # no temp dirs left behind


def test_trace_cli_encoder(tmp_path):
    r = lowbit("trace", "--model", "all-minilm-l6-v2", "--prefill", "8", "--decode", "0", "--weights", "ternary",
               "--out", str(tmp_path / "m"))
    assert r.returncode == 0, r.stderr
    tr = load_trace(tmp_path / "m")
    assert tr.meta["architecture"] == "BertModel" and tr.model.weight_format == "ternary"
    assert {o.args["weight_format"] for o in tr.ops if o.op == "linear"} == {"ternary"}
    assert sum(o.op == "quantize" for o in tr.ops) == 4 * 6
    r = lowbit("models", "list")
    assert r.returncode == 0 and "bitnet-b1.58-2b4t" in r.stdout and "BertModel" in r.stdout


@pytest.mark.parametrize("args,message", [
    (["--model", "bitnet-tiny", "--prefill", "0"], "--prefill 0 --decode 16: need --prefill > 0"),
    (["--model", "bitnet-tiny", "--decode", "-3"], "need --prefill > 0 and --decode >= 0"),
    (["--model", "bitnet-tiny", "--decode", "0"], "bitnet-tiny is a decoder; need --decode >= 1"),
    (["--model", "NODIR"], "model directory not found: "),
    (["--model", "bitnet-3b"], "unknown model 'bitnet-3b' (did you mean"),
    (["--model", "GPT2DIR"], "unsupported architecture GPT2LMHeadModel; supported: LlamaForCausalLM, "),
    (["--model", "bitnet-tiny", "--out", "EXISTS"], "already exists"),
])
def test_trace_cli_errors(tmp_path, capsys, args, message):
    """In-process through lowbit.cli.main (same code path as the console script, without a torch import each)."""
    from lowbit.cli import main

    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    (tmp_path / "exists").mkdir()
    subst = {"NODIR": str(tmp_path / "missing"), "GPT2DIR": str(gpt2), "EXISTS": str(tmp_path / "exists")}
    args = [subst.get(a, a) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    assert main(["trace", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists", "gpt2"]


def test_trace_cli_error_subprocess(tmp_path):
    """A real process: exit code 2, one line on stderr, no traceback, nothing written."""
    r = lowbit("trace", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and r.stderr.startswith("error: model directory not found")
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []
