"""Serving with continuous batching (lowbit.sim.serve): token times against the step-by-step simulation,
the admission rule, chunked prefill, the Poisson generator and the request file."""

import json

import numpy as np
import pytest

from lowbit.sim.config import load_config
from lowbit.sim.engine import simulate
from lowbit.sim.errors import WorkloadError
from lowbit.sim.modelspec import get_model
from lowbit.sim.serve import Request, load_requests, poisson_requests, serve
from lowbit.sim.workloads import standard_trace
from tests.cli_util import assert_one_line_error, lowbit

CFG = load_config("tiny")
TINY = get_model("bitnet-tiny")


def test_one_request_is_the_standard_trace():
    # one request alone: its steps are a prefill of P tokens and O - 1 decode steps, exactly the standard
    # trace; TTFT = its prefill latency, every later token one decode step's end
    r = serve(CFG, TINY, [Request(0.0, 16, 5)], max_batch=1)
    ref = simulate(CFG, standard_trace("bitnet-tiny", 16, 4))
    ends = np.cumsum(ref.step_cycles) / ref.clock_hz
    assert r.sim["cycles"] == ref.cycles and r.steps == 5
    q = r.per_request[0]
    assert q["first_token_s"] == q["ttft_s"] == ends[0] == ref.prefill_latency_s
    assert q["last_token_s"] == ends[-1]
    assert r.itl_s["max"] == pytest.approx(np.diff(ends).max())
    assert r.output_tokens == 5 and r.throughput_tokens_per_s == pytest.approx(5 / ends[-1])


def test_admission_first_come_first_served_up_to_max_batch():
    reqs = [Request(0.0, 8, 4), Request(0.0, 8, 4)]
    one = serve(CFG, TINY, reqs, max_batch=1)
    a, b = one.per_request
    assert b["first_token_s"] > a["last_token_s"]  # the second waits for the first's KV-cache slot
    assert one.steps == 8 and one.mean_batch == 1
    two = serve(CFG, TINY, reqs, max_batch=2)
    a, b = two.per_request
    assert a["first_token_s"] == b["first_token_s"]  # both prompts prefilled in the first step
    assert a["last_token_s"] == b["last_token_s"] and two.steps == 4 and two.mean_batch == 2
    # weights read once per step: 18,432 B for a step of <= 8 tokens (test_batch); 8 steps vs a 16-token prefill
    # step (as a standard 16-token prefill reads them) + 3 decode steps
    assert one.sim["dram_bytes"]["weights"] == 8 * 18432
    pre16 = simulate(CFG, standard_trace("bitnet-tiny", 16, 0)).dram_bytes["weights"]
    assert two.sim["dram_bytes"]["weights"] == pre16 + 3 * 18432


def test_chunked_prefill_and_decode_first():
    # budget 8 tokens/step: request 0 (prompt 4) prefills in step 1 and decodes from step 2; request 1
    # (prompt 20) gets 8 - 4 = 4 tokens in step 1, then 7 per step (8 minus request 0's decode token)
    reqs = [Request(0.0, 4, 6), Request(0.0, 20, 2)]
    r = serve(CFG, TINY, reqs, max_batch=2, max_step_tokens=8)
    # request 1's prompt: 4 + 7 + 7 + 2 = 20 over steps 1-4, first token at the end of step 4, then 1 decode
    # step; request 0: first token at step 1, five decode steps (2..6)
    assert r.steps == 6
    q0, q1 = r.per_request
    assert q1["first_token_s"] < q0["last_token_s"]
    with pytest.raises(WorkloadError, match="must be >= --max-batch"):
        serve(CFG, TINY, reqs, max_batch=4, max_step_tokens=2)


def test_idle_gap_until_the_next_arrival():
    r = serve(CFG, TINY, [Request(0.0, 8, 2), Request(1.0, 8, 2)], max_batch=2)
    q0, q1 = r.per_request
    assert q0["last_token_s"] < 1.0 < q1["first_token_s"] < 1.001
    assert r.busy_fraction < 0.01 and r.duration_s == pytest.approx(q1["last_token_s"])


def test_poisson_requests_seeded():
    a = poisson_requests(20000, 10.0, (8, 16), (1, 4), seed=3)
    assert a == poisson_requests(20000, 10.0, (8, 16), (1, 4), seed=3)
    gaps = np.diff([0.0] + [r.arrival_s for r in a])
    assert abs(gaps.mean() - 0.1) < 3 * 0.1 / np.sqrt(len(gaps))  # exponential: sd = mean
    assert {r.prompt for r in a} == set(range(8, 17)) and {r.output for r in a} == {1, 2, 3, 4}


def test_request_file_and_cli(tmp_path):
    f = tmp_path / "req.jsonl"
    f.write_text('{"arrival_s": 0.0, "prompt": 8, "output": 3}\n{"arrival_s": 0.0001, "prompt": 12, "output": 2}\n')
    assert load_requests(f) == [Request(0.0, 8, 3), Request(0.0001, 12, 2)]
    out = tmp_path / "r.json"
    r = lowbit("serve", "--model", "bitnet-tiny", "--hw", "tiny", "--requests", str(f), "--json", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    j = json.loads(out.read_text())
    assert j["requests"] == 2 and j["output_tokens"] == 5 and set(j["ttft_s"]) >= {"p50", "p90", "p99"}
    f.write_text('{"arrival_s": -1, "prompt": 8, "output": 3}\n')
    assert_one_line_error(lowbit("serve", "--model", "bitnet-tiny", "--hw", "tiny", "--requests", str(f)),
                          r"req.jsonl:1.*arrival_s")
    assert_one_line_error(lowbit("serve", "--model", "bitnet-tiny", "--hw", "tiny", "--prompt", "9-3"),
                          r"--prompt '9-3': the low end is above the high end")
