"""Standard-shape traces: op sequence and MAC counts against hand-computed figures (docs/reference/vitallm.md §4.2)."""

from __future__ import annotations

import pytest

from lowbit.sim.errors import WorkloadError
from lowbit.sim.modelspec import MODELS, get_model
from lowbit.sim.workloads import standard_trace


def test_bitnet_3b_ternary_macs_per_token():
    tr = standard_trace("bitnet-b1.58-3b", 0, 1)
    lin = sum(o["tokens"] * o["in_features"] * o["out_features"] for o in tr.ops if o.op == "linear")
    # docs/reference/vitallm.md §4.2: 26 * (4 * 3200^2 + 3 * 3200 * 8640) = 3,221,504,000 ternary MACs per token.
    assert lin == 26 * (4 * 3200 * 3200 + 3 * 3200 * 8640) == 3_221_504_000
    assert get_model("bitnet-b1.58-3b").projection_params == 3_221_504_000


def test_2b4t_gemv_shapes_match_bitnet_gpu_readme():
    tr = standard_trace("bitnet-b1.58-2b4t", 0, 1)
    shapes = {o.role: (o["out_features"], o["in_features"]) for o in tr.ops if o.op == "linear" and o.layer == 0}
    # docs/reference/numerics.md §1.5: Wqkv 3840x2560 (fused q,k,v), Wo 2560x2560, W13 13824x2560, W2 2560x6912.
    assert shapes["q"][0] + shapes["k"][0] + shapes["v"][0] == 3840
    assert shapes["o"] == (2560, 2560)
    assert shapes["gate"][0] + shapes["up"][0] == 13824
    assert shapes["down"] == (2560, 6912)
    # SubLN: 4 RMSNorms per layer (docs/reference/numerics.md §1.4).
    assert sum(1 for o in tr.ops if o.op == "rmsnorm" and o.layer == 0) == 4


def test_context_grows_by_one_per_decode_step():
    tr = standard_trace("bitnet-tiny", 5, 3)
    ctx = [(o.phase, o.step, o["context"]) for o in tr.ops if o.op == "attn_qk" and o.layer == 0]
    assert ctx == [("prefill", 0, 5), ("decode", 1, 6), ("decode", 2, 7), ("decode", 3, 8)]
    assert all(o["tokens"] == 1 for o in tr.ops if o.phase == "decode")


def test_layer_op_sequence_3b():
    tr = standard_trace("bitnet-b1.58-3b", 0, 1)
    seq = [o.op for o in tr.ops if o.layer == 0]
    assert seq == ["rmsnorm", "quantize", "linear", "linear", "linear", "rope", "kv_append", "attn_qk", "softmax",
                   "attn_av", "quantize", "linear", "elementwise", "rmsnorm", "quantize", "linear", "linear",
                   "activation", "quantize", "linear", "elementwise"]


@pytest.mark.parametrize("p,d", [(0, 0), (-1, 4), (4, -2)])
def test_bad_sizes(p, d):
    with pytest.raises(WorkloadError):
        standard_trace("bitnet-tiny", p, d)


def test_unknown_model_and_too_long():
    with pytest.raises(WorkloadError, match="did you mean 'bitnet-b1.58-3b'"):
        standard_trace("bitnet-b1.58-3", 4, 4)
    with pytest.raises(WorkloadError, match="exceeds"):
        standard_trace("bitnet-tiny", 200, 100)
    assert set(MODELS) >= {"bitnet-b1.58-700m", "bitnet-b1.58-1.3b", "bitnet-b1.58-3b", "bitnet-b1.58-2b4t"}


def test_kv_region_counts_every_sequence():
    """The KV cache region (lowbit.sim.isa: 2^39 - 2^38 B = 256 GiB) holds B sequences of n_layers x kv_heads x
    2 x max_positions x head_dim bytes each: for 3B at max_positions 32,832 that is 26 x 32 x 2 x 32,832 x 100
    = 5,463,244,800 B per sequence, so 50 sequences fit (273.2e9 B) and 51 (278.6e9 B) do not."""
    import dataclasses

    from lowbit.sim.config import load_config
    from lowbit.sim.trace import SeqSpec
    from lowbit.sim.workloads import batch_trace, check_workload

    m = dataclasses.replace(get_model("bitnet-b1.58-3b"), max_positions=32768 + 64)
    cfg = load_config("vitallm")
    check_workload(cfg, batch_trace(m, [SeqSpec(8, 0, 1)] * 50))
    with pytest.raises(WorkloadError, match="KV cache of 259.5 GiB"):
        check_workload(cfg, batch_trace(m, [SeqSpec(8, 0, 1)] * 51))
