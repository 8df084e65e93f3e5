"""Trace format v1: round trip, and one-line errors for each kind of broken trace a user may hand us."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lowbit.sim.errors import OutputError, TraceError
from lowbit.sim.trace import write_trace
from lowbit.sim.trace_load import load_trace
from lowbit.sim.workloads import standard_trace
from tests.cli_util import assert_one_line_error, lowbit


@pytest.fixture()
def tiny_trace_dir(tmp_path):
    return write_trace(standard_trace("bitnet-tiny", 4, 2), tmp_path / "tr")


def test_round_trip(tiny_trace_dir):
    orig = standard_trace("bitnet-tiny", 4, 2)
    back = load_trace(tiny_trace_dir)
    assert back.model == orig.model and back.prefill == 4 and back.decode == 2
    assert [o.to_json() for o in back.ops] == [o.to_json() for o in orig.ops]
    r = lowbit("trace", "info", str(tiny_trace_dir), "--json", "-")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ops"] == len(orig.ops)


def test_tensors_are_referenced_and_loaded(tmp_path):
    from safetensors.numpy import save_file

    tr = standard_trace("bitnet-tiny", 4, 1)
    tdir = tmp_path / "staging"
    tdir.mkdir()
    q = np.arange(4 * 16, dtype=np.float32).reshape(4, 16)
    save_file({"L0.s1.q": q}, str(tdir / "step1.safetensors"))
    tr.tensor_files = ["tensors/step1.safetensors"]
    next(o for o in tr.ops if o.op == "attn_qk" and o.step == 1 and o.layer == 0).tensors["q"] = "L0.s1.q"
    root = write_trace(tr, tmp_path / "tr", tensor_dir=tdir)
    back = load_trace(root)
    np.testing.assert_array_equal(back.load_tensor("L0.s1.q"), q)
    with pytest.raises(TraceError, match="tensor 'nope' not found"):
        back.load_tensor("nope")


def _edit_manifest(root, fn):
    p = root / "manifest.json"
    m = json.loads(p.read_text())
    fn(m)
    p.write_text(json.dumps(m))


def _edit_first_op(root, fn):
    p = root / "ops.jsonl"
    lines = p.read_text().splitlines()
    d = json.loads(lines[1])
    fn(d)
    lines[1] = json.dumps(d)
    p.write_text("\n".join(lines) + "\n")


def _edit_op(root, kind, fn, nth=0):
    """Edit the `nth` op of kind `kind` in ops.jsonl."""
    p = root / "ops.jsonl"
    lines = p.read_text().splitlines()
    idx = [i for i, line in enumerate(lines) if json.loads(line)["op"] == kind][nth]
    d = json.loads(lines[idx])
    fn(d)
    lines[idx] = json.dumps(d)
    p.write_text("\n".join(lines) + "\n")


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


BAD_TRACES = [
    ("truncated manifest", lambda r: _truncate(r / "manifest.json", 0.5), r"manifest.json: invalid JSON .*truncated"),
    ("wrong version", lambda r: _edit_manifest(r, lambda m: m.update(version=7)), r"trace version 7 is not supported"),
    ("not a trace", lambda r: _edit_manifest(r, lambda m: m.update(format="onnx")), r"'format' must be 'lowbit-trace'"),
    ("missing tensor file", lambda r: _edit_manifest(r, lambda m: m.update(tensor_files=["tensors/a.safetensors"])),
     r"tensor file 'tensors/a.safetensors' listed in manifest.json is missing"),
    ("unknown op", lambda r: _edit_first_op(r, lambda d: d.update(op="rmsnrom")), r"unknown op 'rmsnrom' \(did you mean 'rmsnorm'\?\)"),
    ("missing field", lambda r: _edit_first_op(r, lambda d: d.pop("dim")), r"op 'rmsnorm' is missing required field 'dim'"),
    ("wrong type", lambda r: _edit_first_op(r, lambda d: d.update(tokens="4")), r"rmsnorm.tokens = '4': must be an integer"),
    ("negative size", lambda r: _edit_first_op(r, lambda d: d.update(dim=-64)), r"rmsnorm.dim = -64: must be > 0"),
    ("bad phase", lambda r: _edit_first_op(r, lambda d: d.update(phase="decoding")), r"phase = 'decoding'"),
    ("truncated op list", lambda r: _truncate(r / "ops.jsonl", 0.5), r"(invalid JSON|the trace is incomplete)"),
    ("unknown model field", lambda r: _edit_manifest(r, lambda m: m["model"].update(n_layer=2)), r"model has unknown field\(s\) n_layer"),
    ("bad model dims", lambda r: _edit_manifest(r, lambda m: m["model"].update(n_heads=3)), r"d_model 64 not divisible by n_heads 3"),
    ("tensor ref without files", lambda r: _edit_op(r, "attn_qk", lambda d: d.update(tensors={"q": "x"})), r"references tensors but manifest.json lists no tensor_files"),
    ("tensor on an op without tensors", lambda r: _edit_first_op(r, lambda d: d.update(tensors={"q": "x"})), r"op 'rmsnorm' carries tensors \['q'\]; allowed: none"),
    ("missing ops file", lambda r: (r / "ops.jsonl").unlink(), r"ops.jsonl is missing"),
]


@pytest.mark.parametrize("desc,breaker,pattern", BAD_TRACES, ids=[b[0] for b in BAD_TRACES])
def test_bad_trace_one_line_error(tiny_trace_dir, desc, breaker, pattern):
    breaker(tiny_trace_dir)
    r = lowbit("trace", "info", str(tiny_trace_dir))
    assert_one_line_error(r, pattern, desc)


def test_missing_directory_and_non_trace_dir(tmp_path):
    r = lowbit("trace", "info", str(tmp_path / "nope"))
    assert r.returncode == 2 and "trace directory not found" in r.stderr
    r = lowbit("trace", "info", str(tmp_path))
    assert r.returncode == 2 and "no manifest.json" in r.stderr


def test_write_is_atomic_and_refuses_overwrite(tmp_path, monkeypatch):
    tr = standard_trace("bitnet-tiny", 2, 1)
    out = write_trace(tr, tmp_path / "t")
    with pytest.raises(TraceError, match="already exists"):
        write_trace(tr, out)
    # A failure half-way leaves neither the target nor a temp dir behind.
    import lowbit.sim.trace as st

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(st.json, "dumps", boom)
    with pytest.raises(OutputError, match="t2: no space left on device"):
        write_trace(tr, tmp_path / "t2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]
    shutil.rmtree(out)
