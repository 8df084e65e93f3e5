"""`lowbit sim` / `lowbit validate` CLI: outputs, and one-line errors with no output files on bad input."""

from __future__ import annotations

import json

import pytest

from lowbit.cli import main
from tests.cli_util import lowbit


def test_sim_outputs(tmp_path):
    j, tl = tmp_path / "r.json", tmp_path / "t.json"
    p = lowbit("sim", "--model", "bitnet-tiny", "--hw", "tiny", "--prefill", "8", "--decode", "3",
               "--json", str(j), "--timeline", str(tl), "--timeline-events", "50")
    assert p.returncode == 0, p.stderr
    assert "decode tokens/s" in p.stdout
    d = json.loads(j.read_text())
    assert d["decode_tokens"] == 3 and d["cycles"] > 0
    t = json.loads(tl.read_text())
    names = {e["args"]["name"] for e in t["traceEvents"] if e["ph"] == "M"}
    assert {"tint0", "booth", "sfu", "dma_w"} <= names
    assert sum(e["ph"] == "X" for e in t["traceEvents"]) == 50
    assert "truncated" in t["otherData"]["lowbit"]
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


BAD = [
    (["--model", "nope"], "unknown model"),
    (["--hw", "nope"], "unknown hardware preset"),
    (["--model", "bitnet-tiny", "--hw", "tiny", "--weights", "nvfp4"], "FP4 core"),
    (["--model", "bitnet-tiny", "--hw", "tiny", "--prefill", "-1"], "--prefill -1"),
    (["--model", "bitnet-tiny", "--hw", "tiny", "--prefill", "0", "--decode", "0"], "at least one token"),
    (["--model", "bitnet-tiny", "--hw", "tiny", "--schedule", "fifo"], "--schedule"),
    (["--model", "bitnet-tiny", "--hw", "tiny", "--lop-k", "0"], "--lop-k 0"),
    (["--model", "bitnet-tiny", "--hw", "tiny", "--prefill", "300"], "max_positions"),
]


@pytest.mark.parametrize("args,msg", BAD)
def test_bad_input(tmp_path, capsys, args, msg):
    out = tmp_path / "r.json"
    rc = main(["sim", *args, "--json", str(out), "--timeline", str(tmp_path / "t.json"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error:") and msg in err and "\n" not in err
    assert not list(tmp_path.iterdir())


def test_tile_too_large_for_sram(tmp_path, capsys):
    src = (tmp_path / "x.toml")
    from lowbit.sim.config import PRESET_DIR

    text = (PRESET_DIR / "tiny.toml").read_text().replace('name = "act"\nbytes = 2048', 'name = "act"\nbytes = 32')
    assert 'bytes = 32\n' in text
    src.write_text(text.replace('name = "tiny"', 'name = "tiny-small-act"'))
    out = tmp_path / "r.json"
    rc = main(["sim", "--model", "bitnet-tiny", "--hw", str(src), "--json", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "does not fit SRAM buffer 'act'" in err and not out.exists()


def test_trace_model_mismatch(tmp_path, capsys):
    from lowbit.sim.trace import write_trace
    from lowbit.sim.workloads import standard_trace

    d = write_trace(standard_trace("bitnet-tiny", 4, 1), tmp_path / "tr")
    rc = main(["sim", "--trace", str(d), "--model", "bitnet-b1.58-3b", "--hw", "tiny", "--quiet"])
    assert rc == 2 and "disagrees" in capsys.readouterr().err
    rc = main(["sim", "--trace", str(d), "--hw", "tiny", "--quiet", "--json", str(tmp_path / "ok.json")])
    assert rc == 0 and (tmp_path / "ok.json").exists()


def test_validate_unknown_design(capsys):
    assert main(["validate", "nope"]) == 2
    assert "unknown design" in capsys.readouterr().err
