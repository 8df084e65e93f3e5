"""Multi-chip systems (lowbit.sim.multichip): link bytes and cycles against hand counts, 1 chip = plain."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from lowbit.sim.config import load_config
from lowbit.sim.engine import simulate
from lowbit.sim.errors import WorkloadError
from lowbit.sim.link import Collective, LinkConfig, cycles
from lowbit.sim.multichip import simulate_multichip, stage_layers, tp_partition
from lowbit.sim.workloads import standard_trace

CFG = load_config("tiny")        # 200 MHz; [link] defaults: 32 GB/s, 20 ns, 0.5 pJ/bit
TR = standard_trace("bitnet-tiny", 8, 4)  # d_model 64, 2 layers, SubLN, 4 heads / 2 KV heads, d_ffn 128
D, LAYERS = 64, 2
TOKENS = (8, 1, 1, 1, 1)         # per step: prefill, then 4 decode steps


@pytest.fixture(scope="module")
def plain():
    return simulate(CFG, TR)


@pytest.mark.parametrize("parallel", ["tp", "pp"])
def test_one_chip_is_the_plain_simulation(plain, parallel):
    r = simulate_multichip(CFG, TR, 1, parallel)
    assert (r.cycles, r.prefill_cycles, r.decode_cycles) == (plain.cycles, plain.prefill_cycles, plain.decode_cycles)
    assert r.step_cycles == plain.step_cycles and r.decode_tokens_per_s == plain.decode_tokens_per_s
    assert r.per_chip[0]["utilization"] == pytest.approx(plain.utilization, rel=1e-12)
    assert r.per_chip[0]["dram_bytes"] == plain.dram_bytes
    assert r.link["bytes"] == 0 and r.link["critical_path_cycles"] == 0


def test_ring_all_reduce_by_hand():
    # 2 (N - 1) hops of ceil(S / N) bytes; every chip sends in every hop
    c = Collective("all-reduce", 128, 4)
    assert (c.hops, c.chunk, c.link_bytes) == (6, 32, 4 * 6 * 32)
    link = LinkConfig(bandwidth_gbps=32.0, latency_ns=20.0, energy_pj_per_bit=0.5)
    assert c.ns(link) == 6 * (20 + 32 / 32)
    assert cycles(c.ns(link), 2e8) == math.ceil(126 * 0.2)
    assert Collective("send", 1000, 2).link_bytes == 1000 and Collective("all-reduce", 128, 1).link_bytes == 0


def test_tp_link_bytes_are_the_partial_sums_crossing_the_partition(plain):
    r = simulate_multichip(CFG, TR, 2, "tp")
    N = 2
    # per layer and step: the outputs of o and down (t x d_model bf16 partial sums, all-reduced) and the
    # per-token statistics of the four norms/quantizers over split vectors (attn_sub_norm, o_quant,
    # ffn_sub_norm, down_quant: 4 B each); a ring all-reduce puts 2 (N - 1) x S bytes on the links
    per_token = 2 * (D * 2) + 4 * 4
    assert r.link["bytes"] == sum(LAYERS * 2 * (N - 1) * per_token * t for t in TOKENS)
    assert r.link["energy_j"] == pytest.approx(r.link["bytes"] * 8 * 0.5e-12)
    # a decode step = the chip's step + its all-reduces, blocking: o/down 2 hops of 64 B: 2 x (20 + 2) ns
    # = 44 ns = 8.8 -> 9 cycles at 200 MHz; a statistic 2 hops of 2 B: 40.125 ns -> 9 cycles
    chip = r.chip_results[0]
    for k in range(1, 5):
        assert r.step_cycles[k] - chip["step_cycles"][k] == LAYERS * (2 * 9 + 4 * 9)
    assert r.decode_tokens_per_s > 1.4 * plain.decode_tokens_per_s
    # each chip holds half of every projection: half the weight bytes (2-bit rows of 64 or 128 inputs)
    assert 2 * r.per_chip[0]["dram_bytes"]["weights"] == plain.dram_bytes["weights"]
    # one decode step reads each of the chip's weights once: 2 layers x (q,o 64x64; k,v 64x32; gate,up,down
    # 64x128), halved, at 2 bit
    assert r.per_chip[0]["weight_bytes_per_decode_step"] == 2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128) // 2 // 4
    assert r.per_chip[0] == {**r.per_chip[1], "chip": 0}


def test_tp_partition_shapes():
    shard, colls = tp_partition(TR, 2, lm_head_on_chip=False)
    m = shard.model
    assert (m.n_heads, m.n_kv_heads, m.d_ffn, m.head_dim) == (2, 1, 64, 16)
    lin = {o.role: (o["in_features"], o["out_features"]) for o in shard.ops if o.op == "linear" and o.step == 1}
    assert lin == {"q": (64, 32), "k": (64, 16), "v": (64, 16), "o": (32, 64), "gate": (64, 64), "up": (64, 64),
                   "down": (64, 64)}
    assert [len(c) for c in colls] == [LAYERS * 6] * 5


def test_pp_link_bytes_and_pipeline_by_hand():
    assert [(r.start, r.stop) for r in stage_layers(26, 4)] == [(0, 7), (7, 14), (14, 20), (20, 26)]
    M = 3
    r = simulate_multichip(CFG, TR, 2, "pp", micro_batches=M)
    # each step, stage 0 sends its output (t x d_model bf16) to stage 1, once per micro-batch
    assert r.link["bytes"] == M * sum(t * D * 2 for t in TOKENS)
    c0, c1 = (x["step_cycles"] for x in r.chip_results)
    hop = [cycles(20 + t * D * 2 / 32, 2e8) for t in TOKENS]
    assert r.step_cycles[0] == c0[0] + c1[0] + hop[0] + (M - 1) * max(c0[0], c1[0])
    for k in range(1, 5):
        assert r.step_cycles[k] == max(M * max(c0[k], c1[k]), c0[k] + c1[k] + hop[k])
    assert r.decode_tokens == M * 4 and r.per_chip[1]["share"] == "layers 1-1"


def test_chunked_prefill_keeps_its_steps():
    tr = standard_trace("bitnet-tiny", 8, 2, prefill_chunk=4)  # 2 prefill steps of 4 tokens, 2 decode steps
    plain = simulate(CFG, tr)
    one = simulate_multichip(CFG, tr, 1, "tp")
    assert (one.step_cycles, one.prefill_cycles) == (plain.step_cycles, plain.prefill_cycles)
    r = simulate_multichip(CFG, tr, 2, "pp")
    assert len(r.step_cycles) == 4 and r.prefill_cycles == sum(r.step_cycles[:2])
    assert r.link["bytes"] == (4 + 4 + 1 + 1) * D * 2


def test_batched_trace_counts_every_sequence():
    from lowbit.sim.trace import SeqSpec
    from lowbit.sim.workloads import batch_trace

    tr = batch_trace("bitnet-tiny", [SeqSpec(prefill=8, decode=2), SeqSpec(prefill=8, decode=2)])
    plain = simulate(CFG, tr)
    r = simulate_multichip(CFG, tr, 2, "tp")
    assert r.decode_tokens == 4 and r.decode_tokens_per_s == 4 / (r.decode_cycles / CFG.clock_hz)
    assert simulate_multichip(CFG, tr, 1, "tp").step_cycles == plain.step_cycles
    # a decode step of 2 sequences all-reduces 2 tokens' partial sums after o and down
    assert r.link["bytes"] == LAYERS * 2 * (2 * (D * 2) + 4 * 4) * (16 + 2 + 2)


def test_bad_partitions_are_one_line_errors():
    with pytest.raises(WorkloadError, match="n_kv_heads = 2, not divisible by 4 chips; tp chip counts for it: 1, 2"):
        simulate_multichip(CFG, TR, 4, "tp")
    with pytest.raises(WorkloadError, match="only 2 layers to split into 3 stages"):
        simulate_multichip(CFG, TR, 3, "pp")
    with pytest.raises(WorkloadError, match="micro-batching is a pipeline-parallel schedule"):
        simulate_multichip(CFG, TR, 2, "tp", micro_batches=2)


def test_cli(tmp_path):
    lowbit = [sys.executable, "-c", "from lowbit.cli import run; run()"]
    args = ["sim", "--model", "bitnet-tiny", "--hw", "tiny", "--prefill", "8", "--decode", "4"]
    p = subprocess.run(lowbit + args + ["--chips", "2", "--parallel", "pp", "--json", "-"], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert (r["chips"], r["parallel"], r["link"]["bytes"]) == (2, "pp", sum(t * D * 2 for t in TOKENS))
    p = subprocess.run(lowbit + args + ["--chips", "0"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "--chips" in p.stderr
