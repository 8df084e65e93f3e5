"""The one cache root: $LOWBIT_CACHE_DIR, else $XDG_CACHE_HOME/lowbit, else ~/.cache/lowbit."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowbit.sim.cache import KINDS, cache_dir, cache_root


def test_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LOWBIT_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_root() == tmp_path / "home" / ".cache" / "lowbit"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # invalid per XDG: ignored
    assert cache_root() == tmp_path / "home" / ".cache" / "lowbit"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "lowbit"
    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    assert cache_dir("synth") == tmp_path / "mine" / "synth"


def test_every_kind_under_the_root_and_nothing_in_the_source_tree(tmp_path, monkeypatch):
    monkeypatch.delenv("LOWBIT_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    repo = Path(__file__).resolve().parents[2]
    for kind in KINDS:
        d = cache_dir(kind)
        assert d.parent == tmp_path / ".cache" / "lowbit" and not d.is_relative_to(repo)
    with pytest.raises(ValueError, match="unknown cache kind 'nope'"):
        cache_dir("nope")
