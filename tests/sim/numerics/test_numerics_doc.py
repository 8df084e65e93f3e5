"""docs/numerics.md names, for every rule, edge case and difference, the test that asserts it: those tests
exist, and the oracle tests' difference labels are the doc's."""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = (HERE.parents[2] / "docs" / "numerics.md").read_text(encoding="utf-8")
TESTS = {p.name: p.read_text(encoding="utf-8") for p in HERE.glob("test_*.py")}


def test_every_cited_test_exists():
    cited = set(re.findall(r"`(test_[a-z0-9_]+)`", DOC))
    defined = {m for src in TESTS.values() for m in re.findall(r"^def (test_[a-z0-9_]+)", src, re.M)}
    assert len(cited) > 30
    assert cited - defined == set()
    files = set(re.findall(r"`(test_[a-z0-9_]+\.py)`", DOC))
    assert files and files <= set(TESTS)


def test_oracle_difference_labels_are_documented():
    labels = set(re.findall(r'rows\[[^\]]*\] = "([a-z0-9 .-]+)"', TESTS["test_oracle_mx.py"]))
    assert {"code-0 block elements", "inf block scale", "nan-block elements", "float32 log2"} <= labels
    for label in labels - {"same"}:
        assert f'("{label}")' in DOC, label
