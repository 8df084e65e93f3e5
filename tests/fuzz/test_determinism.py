"""Two runs of the same input give the same output: simulator JSON identical except its `timing` section (host
wall-clock seconds), traces byte-identical."""

from __future__ import annotations

import json

import pytest

from tests.fuzz.util import cli


def test_sim_json_differs_only_in_timing(tmp_path):
    runs = []
    for i in range(2):
        out = tmp_path / f"r{i}.json"
        rc, _, err = cli(["sim", "--model", "bitnet-tiny", "--hw", "tiny", "--prefill", "8", "--decode", "4",
                          "--quiet", "--json", str(out)], timeout=60)
        assert rc == 0, err
        runs.append(json.loads(out.read_text()))
    a, b = runs
    assert a["timing"]["wall_s"] > 0 and "wall_s" not in a  # every wall-clock field is in `timing`
    a.pop("timing")
    b.pop("timing")
    assert a == b


def test_trace_capture_is_byte_identical(tmp_path):
    pytest.importorskip("torch")
    files = []
    for i in range(2):
        out = tmp_path / f"t{i}"
        rc, _, err = cli(["trace", "--model", "bitnet-tiny", "--prefill", "4", "--decode", "2", "--tensors",
                          "--seed", "3", "--out", str(out)], timeout=120)
        assert rc == 0, err
        files.append({p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert files[0] == files[1] and len(files[0]) == 5  # manifest, ops, 3 tensor files
