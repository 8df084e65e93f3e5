"""`lowbit train-tiny` / `eval-tiny` (models/train_tiny.py): data split, a few steps, loadable checkpoint, eval."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")

from lowbit.cli import main  # noqa: E402
from lowbit.models.train_tiny import (  # noqa: E402
    evaluate_tiny,
    is_held_out,
    load_checkpoint,
    load_corpus,
    stdlib_files,
)
from lowbit.sim.errors import LowbitError  # noqa: E402

torch.set_num_threads(1)


def test_split_is_by_file_and_deterministic():
    files = stdlib_files()
    held = [r for r, _ in files if is_held_out(r)]
    assert 0.05 < len(held) / len(files) < 0.15
    assert not any(r.startswith(("test/", "site-packages/")) for r, _ in files)
    assert is_held_out(held[0]) and held == [r for r, _ in stdlib_files() if is_held_out(r)]
    a, n_a = load_corpus("heldout", 5000)
    b, _ = load_corpus("heldout", 5000)
    assert len(a) == 5000 and (a == b).all() and n_a >= 1
    first = next(p for r, p in files if is_held_out(r))
    assert a.tobytes().startswith(first.read_bytes()[:100])
    t, _ = load_corpus("train", 5000)
    assert not t.tobytes().startswith(first.read_bytes()[:100])


def test_train_few_steps_checkpoint_and_eval(tmp_path, capsys):
    out = tmp_path / "ck"
    rc = main(["train-tiny", "--out", str(out), "--steps", "3", "--minutes", "2", "--seq", "32", "--batch", "2",
               "--no-eval"])
    assert rc == 0, capsys.readouterr().err
    meta = json.loads((out / "train.json").read_text())
    assert meta["ternary"]["steps_done"] == 3 and meta["float"]["steps_done"] == 3
    assert math.isfinite(meta["ternary"]["final_train_loss"])
    tern, flt = load_checkpoint(out / "ternary.pt"), load_checkpoint(out / "float.pt")
    assert tern.quantized and not flt.quantized
    x = torch.randint(0, 256, (1, 16))
    assert tern(x).shape == (1, 16, 256)
    res = evaluate_tiny(out, ks=(4,), windows=1, log=lambda s: None)
    names = [r["config"] for r in res["rows"]]
    assert names[0].startswith("ternary") and any("LOP K=4" in n for n in names)
    assert any("NVFP4" in n for n in names) and any("MXFP4" in n for n in names)
    assert all(math.isfinite(r["ppl"]) and 1 < r["ppl"] < 400 for r in res["rows"])
    assert (out / "eval.json").is_file() and not list(out.glob("*.tmp"))


def test_bad_inputs(tmp_path, capsys):
    assert main(["train-tiny", "--out", str(tmp_path / "x"), "--seq", "1000"]) == 2
    assert main(["eval-tiny", str(tmp_path / "missing")]) == 2
    errs = capsys.readouterr().err.strip().splitlines()
    assert len(errs) == 2 and all(e.startswith("error: ") for e in errs)
    (tmp_path / "ternary.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(LowbitError, match="not a train-tiny checkpoint"):
        load_checkpoint(tmp_path)
