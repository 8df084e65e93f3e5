"""GPU-baseline tests run on the CPU through the Triton interpreter (docs/reference/toolchain.md §4.5, §3 item 11).

TRITON_INTERPRET must be set before triton is imported, so it is set here, at collection time of this
directory, unless a CUDA device is present (then the same tests run the compiled kernels).
"""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the first import of triton
pytest.importorskip("triton")


@pytest.fixture
def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
