"""Fuzz the trace loader: every generated trace directory is either accepted (and then simulates) or refused
with one line -- never a traceback, never a hang. Mutations start from a valid trace with q/k/v tensors."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lowbit.sim.config import load_config
from lowbit.sim.lop_select import synthetic_qk_trace
from lowbit.sim.trace_load import load_trace
from tests.fuzz.util import CASES, FUZZ, HOSTILE_NUMBERS, hostile_value, run_case

P, D = 3, 2


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, bytes]:
    root = synthetic_qk_trace("bitnet-tiny", P, D, tmp_path_factory.mktemp("fz") / "base", seed=1)
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _nan_tensor_file() -> bytes:
    from safetensors.numpy import save

    k = np.zeros((2, 1, 16), np.float32)
    k[0, 0, 3] = np.nan
    return save({"L0.s1.k": k, "L0.s1.v": k, "L0.s1.q": np.zeros((4, 16), np.float32)})


FIELD_VALUES = st.sampled_from(HOSTILE_NUMBERS + [P, D, P + 1, 16, 64, 128, 256, 4, 2, "decode", "prefill", True,
                                                  None, "nvfp4", 10**12, -1])


@st.composite
def mutation(draw):
    """(kind, details) of one change to the base trace."""
    return draw(st.sampled_from(["manifest_field", "model_field", "op_field", "op_delete_field", "op_unknown_field",
                                 "swap_lines", "drop_line", "dup_line", "garbage_line", "bytes", "truncate",
                                 "tensor_garbage", "tensor_nan", "manifest_garbage"])), draw(st.randoms())


def _apply(files: dict[str, bytes], kind: str, rnd, draw) -> None:
    try:  # an earlier mutation may have broken the files: then only byte-level mutations apply
        man = json.loads(files["manifest.json"])
        lines = files["ops.jsonl"].decode().splitlines()
        i = rnd.randrange(len(lines))
        op = json.loads(lines[i])
        assert isinstance(man, dict) and isinstance(man.get("model"), dict) and isinstance(op, dict)
    except (ValueError, RecursionError, AssertionError, KeyError):
        kind = kind if kind in ("bytes", "truncate", "tensor_garbage", "tensor_nan", "manifest_garbage") else "bytes"
        man, lines, op, i = None, None, None, 0
    if kind == "manifest_field":
        man[rnd.choice(["prefill", "decode", "n_ops", "version", "format", "tensor_files", "meta", "model"])] = draw(
            hostile_value if rnd.random() < 0.5 else FIELD_VALUES)
    elif kind == "model_field":
        man["model"][rnd.choice(list(man["model"]) + ["extra"])] = draw(FIELD_VALUES if rnd.random() < 0.7 else hostile_value)
    elif kind == "op_field":
        op[rnd.choice(list(op) + ["tensors"])] = draw(FIELD_VALUES if rnd.random() < 0.7 else hostile_value)
        lines[i] = json.dumps(op)
    elif kind == "op_delete_field":
        op.pop(rnd.choice(list(op)))
        lines[i] = json.dumps(op)
    elif kind == "op_unknown_field":
        op[draw(st.text(max_size=6))] = draw(hostile_value)
        lines[i] = json.dumps(op)
    elif kind == "swap_lines":
        j = rnd.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "drop_line":
        del lines[i]
    elif kind == "dup_line":
        lines.insert(i, lines[i])
    elif kind == "garbage_line":
        lines.insert(i, draw(st.sampled_from(["{", "[]", "null", "NaN", '{"op": NaN}', "[" * 5000, "1e999",
                                              '{"op":"rmsnorm"}', "9" * 5000])))
    if man is not None:
        files["manifest.json"] = json.dumps(man).encode()
        files["ops.jsonl"] = ("\n".join(lines) + "\n").encode()
    if kind == "bytes":
        name = rnd.choice(sorted(files))
        b = bytearray(files[name])
        at = rnd.randrange(len(b) + 1)
        b[at:at] = draw(st.binary(min_size=1, max_size=8)) if rnd.random() < 0.5 else b"\xff\xfe\x80"
        files[name] = bytes(b)
    elif kind == "truncate":
        name = rnd.choice(sorted(files))
        files[name] = files[name][: rnd.randrange(len(files[name]) + 1)]
    elif kind == "tensor_garbage":
        files[rnd.choice(sorted(n for n in files if n.startswith("tensors/")))] = draw(st.binary(max_size=64))
    elif kind == "tensor_nan":
        files["tensors/step00001.safetensors"] = _nan_tensor_file()
    elif kind == "manifest_garbage":
        files["manifest.json"] = draw(st.sampled_from([b"", b"[]", b"NaN", b"{" * 100000, b"\xff" * 10,
                                                       b'{"format": "lowbit-trace", "version": 1e999}']))


def _simulates(tr) -> None:
    from lowbit.sim.engine import simulate
    from lowbit.sim.workloads import check_workload

    cfg = load_config("tiny")
    check_workload(cfg, tr)
    r = simulate(cfg, tr)
    assert r.cycles > 0 and all(math.isfinite(v) for v in r.utilization.values())


def test_trace_loader_fuzz(tmp_path: Path, base):
    seen: Counter[str] = Counter()

    @FUZZ
    @given(st.lists(mutation(), min_size=1, max_size=3), st.integers(0, 9), st.data())
    def case(muts, pick, data):
        files = dict(base)
        for kind, rnd in muts:
            _apply(files, kind, rnd, data.draw)
        root = tmp_path / "t"  # the same file names every case: overwritten in place
        for name, content in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(content)
        what = f"mutations {[k for k, _ in muts]}"
        tr, err = run_case(load_trace, root, what=what)
        seen["cases"] += 1
        seen["refused" if err else "accepted"] += 1
        if tr is not None and pick == 0:
            run_case(_simulates, tr, what=f"simulating after {what}", timeout=20)
            seen["simulated"] += 1

    case()
    assert seen["cases"] >= CASES, seen
    # most mutations break the trace; the few that keep it valid (a value changed within its range) must load
    assert seen["accepted"] >= 3 and seen["refused"] > CASES // 2, seen
