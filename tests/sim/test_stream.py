"""Traces generated step by step (lowbit.sim.trace.GeneratedOps) and chunked prefill: memory independent of
the run's length, results identical to a materialised op list."""

import tracemalloc

from lowbit.sim.config import load_config
from lowbit.sim.engine import simulate
from lowbit.sim.trace import GeneratedOps, Trace
from lowbit.sim.workloads import standard_trace, step_ops

CFG = load_config("tiny")


def test_generated_trace_is_not_materialised():
    tracemalloc.start()
    tr = standard_trace("bitnet-b1.58-3b", 0, 2047)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert isinstance(tr.ops, GeneratedOps)
    per_step = len(step_ops(tr.model, "decode", 1, 1, 1))
    assert len(tr.ops) == 2047 * per_step == 1_123_803
    assert peak < 2 << 20  # two steps' ops built to count them; the 1.1 M-op list would take ~0.5 GiB
    assert tr.n_chunks() == 2047 * (tr.model.n_layers + 2)


def test_generated_equals_materialised():
    gen = standard_trace("bitnet-tiny", 12, 5)
    mat = Trace(gen.model, gen.prefill, gen.decode, list(gen.ops))
    a, b = simulate(CFG, gen), simulate(CFG, mat)
    assert (a.cycles, a.step_cycles, a.dram_bytes, a.activity) == (b.cycles, b.step_cycles, b.dram_bytes, b.activity)


def test_chunked_prefill():
    one = standard_trace("bitnet-tiny", 10, 2)
    assert [o.to_json() for o in standard_trace("bitnet-tiny", 10, 2, prefill_chunk=10).ops] == \
        [o.to_json() for o in one.ops]
    tr = standard_trace("bitnet-tiny", 10, 2, prefill_chunk=4)
    steps = list(tr.steps())
    assert len(steps) == 5 and len(tr.ops) == sum(map(len, steps)) and tr.n_chunks() == 2 * 3 + 3 * 4  # runs: embed, 2 layers (+ final norm, lm_head)
    qk = [(o["tokens"], o["context"]) for s in steps[:3] for o in s if o.op == "attn_qk" and o.layer == 0]
    assert qk == [(4, 4), (4, 8), (2, 10)]  # each chunk attends causally to every earlier position
    assert [sum(o.op == "lm_head" for o in s) for s in steps] == [0, 0, 1, 1, 1]
    r = simulate(CFG, tr)
    # every chunk of <= 8 tokens reads each weight once: 3 chunks + 2 decode steps of 18,432 B (test_batch)
    assert r.dram_bytes["weights"] == 5 * 18432 and len(r.step_cycles) == 5
    assert r.prefill_latency_s == sum(r.step_cycles[:3]) / r.clock_hz
