"""Batched decode: weights fetched once per step for all sequences, per-sequence attention and KV traffic,
per-request times; the batched trace format on disk (lowbit.sim.trace, docs/batching.md)."""

import json

import pytest

from lowbit.sim.config import load_config
from lowbit.sim.engine import simulate
from lowbit.sim.errors import TraceError, WorkloadError
from lowbit.sim.modelspec import get_model
from lowbit.sim.trace import SeqSpec, write_trace
from lowbit.sim.trace_load import load_trace
from lowbit.sim.workloads import batch_trace, standard_trace
from tests.cli_util import assert_one_line_error
from tests.cli_util import lowbit as run_lowbit

TINY = get_model("bitnet-tiny")  # 2 layers, d 64, 4 heads / 2 KV heads of 16, d_ffn 128 (gated)
HD, G, L = 16, 2, 2


def sim(seqs, **kw):
    return simulate(load_config("tiny"), batch_trace("bitnet-tiny", seqs), **kw)


def test_weights_fetched_once_per_step_for_the_batch():
    # ternary projections at 2 bits per weight: (64*(2*64 + 2*32) + 3*64*128) * 2 layers * 2/8 = 18,432 B/step
    per_step = TINY.projection_params * 2 // 8
    assert per_step == 18432
    one = sim([SeqSpec(20, 0, 3)])
    two = sim([SeqSpec(20, 0, 3), SeqSpec(100, 0, 3)])
    assert one.dram_bytes["weights"] == two.dram_bytes["weights"] == 3 * per_step
    assert two.batch == 2 and one.batch == 1


def test_dense_kv_bytes_per_sequence_by_hand():
    # one decode step, no LOP: per layer and KV head, read K and V of all context = cached + 1 keys (INT8,
    # head_dim bytes each) and write the new token's K and V: L*G*(2*(c+1)*hd + 2*hd) = 128*(c + 2)
    for c in (20, 100):
        assert sim([SeqSpec(c, 0, 1)], no_lop=True).dram_bytes["kv"] == L * G * (2 * (c + 1) * HD + 2 * HD) == 128 * (c + 2)
    both = sim([SeqSpec(20, 0, 1), SeqSpec(100, 0, 1)], no_lop=True)
    assert both.dram_bytes["kv"] == 128 * 22 + 128 * 102 == 15872


def test_kv_and_lo_code_bytes_add_up_per_sequence_with_lop():
    a, b = sim([SeqSpec(20, 0, 3)]), sim([SeqSpec(100, 0, 3)])
    ab = sim([SeqSpec(20, 0, 3), SeqSpec(100, 0, 3)])
    for cls in ("kv", "lop"):
        assert ab.dram_bytes[cls] == a.dram_bytes[cls] + b.dram_bytes[cls]
    for key in ("kv_dense_bytes", "kv_read_bytes", "lop_bytes"):
        assert ab.lop[key] == a.lop[key] + b.lop[key]


def test_batch_of_one_is_the_standard_trace():
    r0 = simulate(load_config("tiny"), standard_trace("bitnet-tiny", 16, 4))
    r1 = sim([SeqSpec(0, 16, 4)])
    assert (r1.cycles, r1.dram_bytes, r1.step_cycles) == (r0.cycles, r0.dram_bytes, r0.step_cycles)
    assert r1.throughput_tokens_per_s == r0.throughput_tokens_per_s == r0.decode_tokens_per_s


def test_per_request_times_follow_the_steps():
    r = sim([SeqSpec(0, 8, 2), SeqSpec(0, 16, 4)])
    ends = [sum(r.step_cycles[:i + 1]) / r.clock_hz for i in range(len(r.step_cycles))]
    assert len(r.step_cycles) == 5  # prefill of both prompts, then 4 decode steps (sequence 0 leaves after 2)
    q0, q1 = r.requests
    assert q0["first_token_s"] == q1["first_token_s"] == ends[0] == r.prefill_latency_s
    assert q0["last_token_s"] == ends[2] and q1["last_token_s"] == ends[4] == r.cycles / r.clock_hz
    assert r.throughput_tokens_per_s == pytest.approx(6 / (ends[4] - ends[0]))
    # steps 3 and 4 run one sequence: their linear ops have tokens = 1
    steps = list(batch_trace("bitnet-tiny", [SeqSpec(0, 8, 2), SeqSpec(0, 16, 4)]).steps())
    assert {o["tokens"] for o in steps[0] if o.op == "linear"} == {24}
    assert {o["tokens"] for o in steps[2] if o.op == "linear"} == {2}
    assert {o["tokens"] for o in steps[3] if o.op == "linear"} == {1}
    assert [(o.seq, o["context"]) for o in steps[2] if o.op == "attn_qk" and o.layer == 0] == [(0, 10), (1, 18)]


def test_batched_trace_roundtrip(tmp_path):
    tr = batch_trace("bitnet-tiny", [SeqSpec(5, 0, 2), SeqSpec(30, 0, 3)])
    write_trace(tr, tmp_path / "t")
    man = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert man["sequences"] == [{"context": 5, "prefill": 0, "decode": 2}, {"context": 30, "prefill": 0, "decode": 3}]
    assert man["n_ops"] == len(list(tr.ops))
    back = load_trace(tmp_path / "t")
    assert back.batch == 2
    cfg = load_config("tiny")
    assert simulate(cfg, back).cycles == simulate(cfg, tr).cycles


def _edit(root, fn):
    lines = [json.loads(x) for x in (root / "ops.jsonl").read_text().splitlines()]
    fn(lines)
    (root / "ops.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_batched_trace_checks(tmp_path):
    tr = batch_trace("bitnet-tiny", [SeqSpec(5, 0, 2), SeqSpec(30, 0, 3)])
    for name, fn, msg in (
        ("shared tokens", lambda ls: next(x for x in ls if x["op"] == "linear").update(tokens=1),
         r"tokens = 1 contradicts .*tokens of the step's sequences"),
        ("context", lambda ls: next(x for x in ls if x["op"] == "attn_qk" and x.get("seq")).update(context=7),
         r"context = 7 contradicts"),
        ("seq on a shared op", lambda ls: next(x for x in ls if x["op"] == "linear").update(seq=1),
         r"op 'linear' has seq = 1"),
        ("finished sequence", lambda ls: [x.update(seq=0) for x in ls if x["step"] == 3 and x.get("seq") == 1],
         r"seq = 0: sequence not in decode step 3"),
    ):
        d = tmp_path / name.replace(" ", "_")
        write_trace(tr, d)
        _edit(d, fn)
        with pytest.raises(TraceError, match=msg):
            load_trace(d)


def test_batch_bounds():
    with pytest.raises(WorkloadError, match="max_positions 256"):
        batch_trace("bitnet-tiny", [SeqSpec(250, 0, 8)])
    with pytest.raises(WorkloadError, match="at least one sequence"):
        batch_trace("bitnet-tiny", [])


def test_cli_batch(tmp_path):
    out = tmp_path / "r.json"
    r = run_lowbit("sim", "--model", "bitnet-tiny", "--hw", "tiny", "--prefill", "0", "--decode", "2",
                   "--cached", "20,100", "--no-lop", "--json", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    j = json.loads(out.read_text())
    assert j["batch"] == 2 and j["dram_bytes"]["kv"] == 128 * 22 + 128 * 102 + 128 * 23 + 128 * 103
    assert [q["context"] for q in j["requests"]] == [20, 100]
    assert_one_line_error(run_lowbit("sim", "--model", "bitnet-tiny", "--hw", "tiny", "--batch", "3", "--cached", "1,2"),
                          r"--batch 3 disagrees with --cached \(2 sequences\)")
