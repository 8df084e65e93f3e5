"""bench-gpu's flag parsing (the benchmark itself needs a CUDA GPU)."""

from __future__ import annotations

import pytest

from lowbit.models.gpu.bench import parse_gemm_batches
from lowbit.sim.errors import LowbitError


def test_parse_gemm_batches():
    assert parse_gemm_batches("64,512") == (64, 512)
    assert parse_gemm_batches(" 16 ,64,") == (16, 64)
    for bad in ("8,64", "", "64,x", ","):
        with pytest.raises(LowbitError, match="--gemm-batches"):
            parse_gemm_batches(bad)
