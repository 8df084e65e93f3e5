"""Documentation checks: every `docs/reference/<file>.md §N.M` citation resolves to a heading of that file,
nothing refers to paths outside the repository, and the examples of docs/api.md run and print what the doc
says they print."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference"
TEXT_SUFFIXES = {".py", ".md", ".toml", ".txt", ".json", ".html", ".log", ".cfg", ".ini", ".yml", ".yaml", ".sh"}
CITING_ROOTS = ("lowbit", "tests", "bench", "docs", "reports", "README.md")

# `docs/reference/vitallm.md §5.2`, `... §5.2/§6`, `... §2.4, §3`, `... §1.5 / §1.6`, `[x](docs/reference/x.md) §4`
CITATION = re.compile(r"docs/reference/([A-Za-z0-9_-]+)\.md\)?((?:\s*[/,]?\s*§\s*\d+(?:\.\d+)*)*)")
SECTION = re.compile(r"§\s*(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#{1,6}\s+(\d+(?:\.\d+)*)\.?\s", re.M)


def repo_files() -> list[Path]:
    """Text files of the repository: git's list when available, else a walk without build/venv folders."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        paths = [ROOT / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "build", "out", "__pycache__", ".hypothesis", ".ruff_cache", ".pytest_cache"}
        paths = [p for p in ROOT.rglob("*") if not skip.intersection(p.relative_to(ROOT).parts)]
    return [p for p in paths if p.is_file() and (p.suffix in TEXT_SUFFIXES or p.name == "Makefile")]


def read(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return ""


def citations() -> list[tuple[str, int, str, list[str]]]:
    """(file, line, cited reference file, cited sections) for every citation under CITING_ROOTS."""
    found = []
    for p in repo_files():
        rel = p.relative_to(ROOT).as_posix()
        if not rel.startswith(CITING_ROOTS) or p.name == "test_docs.py":
            continue
        text = read(p)
        for m in CITATION.finditer(text):
            found.append((rel, text.count("\n", 0, m.start()) + 1, m.group(1), SECTION.findall(m.group(2))))
    return found


def headings(name: str) -> set[str]:
    return set(HEADING.findall((REFERENCE / f"{name}.md").read_text(encoding="utf-8")))


def test_heading_parser():
    text = "# Title\n## 1. How to read\n### 1.1 Parameters\n## 10. Sources\n#### 8.2.1 Deep\nnot ## 3. a heading\n"
    assert set(HEADING.findall(text)) == {"1", "1.1", "10", "8.2.1"}


def test_citation_parser():
    text = ("(docs/reference/vitallm.md §5.2/§6) docs/reference/numerics.md §2.4, §3): x "
            "docs/reference/numerics.md §1.5 / §1.6 docs/reference/toolchain.md docs/reference/numerics.md §8.2. "
            "[t](docs/reference/toolchain.md) §4.7")
    got = [(m.group(1), SECTION.findall(m.group(2))) for m in CITATION.finditer(text)]
    assert got == [("vitallm", ["5.2", "6"]), ("numerics", ["2.4", "3"]), ("numerics", ["1.5", "1.6"]),
                   ("toolchain", []), ("numerics", ["8.2"]), ("toolchain", ["4.7"])]


def test_reference_citations_resolve():
    found = citations()
    assert len(found) > 100  # the code cites the references throughout; an empty scan means a broken scan
    bad = []
    for rel, line, name, sections in found:
        path = REFERENCE / f"{name}.md"
        if not path.is_file():
            bad.append(f"{rel}:{line}: docs/reference/{name}.md does not exist")
            continue
        have = headings(name)
        bad += [f"{rel}:{line}: docs/reference/{name}.md has no section §{s}" for s in sections if s not in have]
    assert not bad, "\n".join(bad)


def test_reference_sections_numbered():
    for name in ("vitallm", "numerics", "toolchain"):
        assert {"1", "2", "3"} <= headings(name), name


def test_nothing_points_outside_the_repository():
    # Built from pieces so that this file does not match itself.
    patterns = ["/" + "work/", ".." + "/shared", "shared" + "/reference"]
    bad = []
    for p in repo_files():
        for n, line in enumerate(read(p).splitlines(), 1):
            bad += [f"{p.relative_to(ROOT)}:{n}: {pat}" for pat in patterns if pat in line]
    assert not bad, "\n".join(bad)


def api_blocks() -> list[tuple[str, str | None]]:
    """(python code, expected stdout or None) for each ```python block of docs/api.md, in order; a ```text
    block that directly follows a python block is its expected output."""
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    blocks = [(m.group(1), m.group(2), m.end(), m.start()) for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.S)]
    out = []
    for i, (lang, body, _, _) in enumerate(blocks):
        if lang != "python":
            continue
        expected = None
        if i + 1 < len(blocks):
            nlang, nbody, _, nstart = blocks[i + 1]
            if nlang == "text" and text[blocks[i][2]:nstart].strip() == "":
                expected = nbody
        out.append((body, expected))
    return out


def test_api_examples_run(tmp_path, monkeypatch):
    pytest.importorskip("torch")  # the capture example runs a PyTorch model
    monkeypatch.chdir(tmp_path)
    blocks = api_blocks()
    assert len(blocks) >= 8 and sum(e is not None for _, e in blocks) >= 8
    ns: dict = {"__name__": "docs_api"}
    for i, (code, expected) in enumerate(blocks, 1):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(code, f"docs/api.md python block {i}", "exec"), ns)
        if expected is not None:
            assert buf.getvalue() == expected, f"docs/api.md python block {i} printed:\n{buf.getvalue()}"
