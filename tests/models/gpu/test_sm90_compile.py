"""The GPU build of the kernels compiles for sm_90 (Hopper), on a machine without a GPU, with the arguments
their host functions pass: ``sm90_compile.py`` in a process without ``TRITON_INTERPRET`` (the interpreter
tests beside this one check what the kernels compute, not that the GPU backend accepts them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("sm90_compile.py")


def _compile(part: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, str(SCRIPT), part], env=env, capture_output=True, text=True, timeout=900)


# kernels compiled per part: LOP 2 layouts x (plain, debug) x 3 phases; split attention MHA + GQA; three
# whole-row GEMV shapes x (ternary, NVFP4, MXFP4); norm/GLU quantizers + two RoPE appends; the GEMMs'
# quantizer x 2, their configs x split-K 1 and 2 plus the split-K dequantisation, the FP4 MMA configs
@pytest.mark.parametrize("part,at_least", [("lop", 8), ("split", 2), ("row", 9), ("fused", 4), ("gemm", 30)])
def test_kernels_compile_for_sm90(part, at_least):
    r = _compile(part)
    assert r.returncode == 0, r.stderr[-3000:]
    done = [line for line in r.stdout.splitlines() if line.startswith("ok ")]
    assert len(done) >= at_least, r.stdout


def test_a_config_the_backend_refuses_fails():
    r = _compile("bad")
    assert r.returncode != 0 and "power of 2" in r.stderr, r.stderr[-2000:]
