"""Serving: replay a request arrival list on one accelerator with continuous batching (`lowbit serve`).

Requests: arrival time (s), prompt tokens, output tokens; from a JSON-lines file (one object per line:
{"arrival_s": 0.0, "prompt": 64, "output": 32}; docs/batching.md) or drawn by `poisson_requests` (arrivals
of a Poisson process: exponential inter-arrival times of mean 1/rate, seeded numpy Generator).

Scheduler (iteration-level continuous batching, Orca, OSDI'22; chunked prefill with a per-step token
budget, Sarathi-Serve, OSDI'24). At every step boundary:
  1. requests that produced their last token leave and free their KV-cache slot;
  2. arrived requests are admitted first-come first-served while fewer than `max_batch` are running (a
     slot = one sequence's KV-cache region, lowbit.sim.kvcache);
  3. the step holds one decode token of every running request whose prompt is done, then prompt tokens of
     the admitted requests still prefilling, in admission order, up to `max_step_tokens` tokens in the step
     (None: whole prompts), so a long prompt is prefilled in chunks across steps while others decode.
Token times: a request's first token is produced by the step that ends its prompt (time to first token =
that step's end - arrival); each later token by one decode step (inter-token latency = the gap between a
request's consecutive tokens). Output tokens = 1 (from the prompt's step) + decode steps. A step's lm_head
computes one logits row per request that gets a token in it (its "logits", lowbit.sim.trace.logits_rows):
a prompt chunk that does not end its prompt gets none.

Timing is exact, not approximated per batch composition: every step is lowered and scheduled cycle by cycle
in one continuous simulation (lowbit.sim.engine, state carried across steps), the steps generated on the fly
as the simulated clock reaches each arrival. One modelling choice: when no request is in the system the
accelerator idles until the next arrival; that gap is not simulated (serving time = simulated time + idle
gaps), the next step starting where the previous one ended.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lowbit.sim.config import HwConfig
from lowbit.sim.errors import WorkloadError
from lowbit.sim.modelspec import ModelSpec
from lowbit.sim.schema import Range, as_float, as_int
from lowbit.sim.trace import GeneratedOps, Op, SeqSpec, Trace
from lowbit.sim.workloads import batch_trace, batched_step_ops, check_workload

MAX_REQUESTS = 100_000
PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Request:
    """One request: arrival time (s), prompt tokens, output tokens (>= 1)."""

    arrival_s: float
    prompt: int
    output: int


def load_requests(path: str | Path) -> list[Request]:
    """Read a JSON-lines request file (module docstring); WorkloadError naming the line and field otherwise."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise WorkloadError(f"{path}: cannot read the request file ({getattr(e, 'strerror', None) or e})") from None
    out: list[Request] = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise WorkloadError(f"{where}: invalid JSON ({e.msg}); one request object per line") from None
        if not isinstance(d, dict) or set(d) != {"arrival_s", "prompt", "output"}:
            raise WorkloadError(f'{where}: a request is {{"arrival_s": S, "prompt": N, "output": N}}, got {line[:80]!r}')
        out.append(Request(as_float(d["arrival_s"], where, "arrival_s", Range(0, 1e9), WorkloadError),
                           as_int(d["prompt"], where, "prompt", Range(1, 2**20, "tokens", integer=True), WorkloadError),
                           as_int(d["output"], where, "output", Range(1, 2**20, "tokens", integer=True), WorkloadError)))
        if len(out) > MAX_REQUESTS:
            raise WorkloadError(f"{path}: more than {MAX_REQUESTS:,} requests")
    if not out:
        raise WorkloadError(f"{path}: no requests")
    return out


def write_requests(reqs: list[Request], path: str | Path) -> None:
    from lowbit.sim.atomic import atomic_write

    atomic_write(Path(path), "".join(json.dumps(asdict(r)) + "\n" for r in reqs))


def poisson_requests(n: int, rate: float, prompt: tuple[int, int], output: tuple[int, int],
                     seed: int = 0) -> list[Request]:
    """`n` requests arriving as a Poisson process of `rate` requests/s (first at t = 0 + one inter-arrival),
    prompt and output lengths uniform in the inclusive ranges, from numpy's default_rng(seed)."""
    if not 1 <= n <= MAX_REQUESTS or not rate > 0 or not math.isfinite(rate):
        raise WorkloadError(f"poisson requests: n = {n} must be in 1..{MAX_REQUESTS:,} and rate = {rate} > 0")
    for what, (lo, hi) in (("prompt", prompt), ("output", output)):
        if not 1 <= lo <= hi:
            raise WorkloadError(f"poisson requests: {what} range {lo}-{hi}: need 1 <= low <= high")
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1.0 / rate, n))
    p = rng.integers(prompt[0], prompt[1] + 1, n)
    o = rng.integers(output[0], output[1] + 1, n)
    return [Request(float(a), int(b), int(c)) for a, b, c in zip(t, p, o, strict=True)]


@dataclass
class _Live:
    """A request in the system: its slot (KV-cache region), prompt tokens done, tokens produced, token times."""

    idx: int
    req: Request
    slot: int
    done_prompt: int = 0
    produced: int = 0
    times: list[float] = field(default_factory=list)


class _Batcher:
    """The step source (module docstring: the scheduler) and, as an engine observer, the step clock."""

    def __init__(self, m: ModelSpec, reqs: list[Request], max_batch: int, max_step_tokens: int | None,
                 clock_hz: float) -> None:
        self.m, self.max_batch, self.budget, self.clk = m, max_batch, max_step_tokens, clock_hz
        self.order = sorted(range(len(reqs)), key=lambda i: (reqs[i].arrival_s, i))
        self.reqs = reqs
        self.t_end = 0            # simulated cycles at the end of the last step
        self.idle_s = 0.0         # idle gaps added to the simulated time
        self.done: list[_Live] = []
        self.batch_sizes: list[int] = []
        self.step_tokens: list[int] = []

    # engine observer protocol (lowbit.sim.engine): only the step ends matter here
    def begin_step(self, step: int, t_barrier: int) -> None: ...

    def add(self, rec: Any, sched: Any, ext_id: int) -> None: ...

    def end_step(self, step: int, step_end: int) -> None:
        self.t_end = step_end

    def now(self) -> float:
        return self.t_end / self.clk + self.idle_s

    def steps(self) -> Iterator[list[Op]]:
        nxt = 0                       # next request (in arrival order) not yet queued
        waiting: list[int] = []
        running: list[_Live] = []
        free = list(range(self.max_batch))
        step = 0
        while nxt < len(self.order) or waiting or running:
            now = self.now()
            while nxt < len(self.order) and self.reqs[self.order[nxt]].arrival_s <= now:
                waiting.append(self.order[nxt])
                nxt += 1
            if not waiting and not running:  # idle until the next arrival
                self.idle_s += self.reqs[self.order[nxt]].arrival_s - now
                continue
            while waiting and free:
                i = waiting.pop(0)
                running.append(_Live(i, self.reqs[i], free.pop(0)))
            parts: list[tuple[int, int, int, str]] = []
            took: list[tuple[_Live, int]] = []
            for r in running:  # decode first: one token per request past its prompt
                if r.done_prompt == r.req.prompt:
                    parts.append((r.slot, 1, r.req.prompt + r.produced, "decode"))
                    took.append((r, 1))
            left = math.inf if self.budget is None else self.budget - len(parts)
            for r in running:
                if r.done_prompt < r.req.prompt and left > 0:
                    n = int(min(r.req.prompt - r.done_prompt, left))
                    parts.append((r.slot, n, r.done_prompt + n, "prefill"))
                    took.append((r, n))
                    left -= n
            phase = "prefill" if any(p[3] == "prefill" for p in parts) else "decode"
            step += 1
            self.batch_sizes.append(len(parts))
            self.step_tokens.append(sum(p[1] for p in parts))
            # logits: a decode token, or a prompt chunk that ends its prompt (the request's first output token)
            logits = sum(1 for r, n in took if r.done_prompt == r.req.prompt or r.done_prompt + n == r.req.prompt)
            yield batched_step_ops(self.m, phase, step, sorted(parts), logits)
            t = self.now()
            for r, n in took:
                if r.done_prompt < r.req.prompt:
                    r.done_prompt += n
                    if r.done_prompt < r.req.prompt:
                        continue
                r.produced += 1
                r.times.append(t)
            for r in [r for r in running if r.produced == r.req.output]:
                running.remove(r)
                free.append(r.slot)
                free.sort()
                self.done.append(r)


@dataclass
class ServeResult:
    """What `lowbit serve --json` writes: latency percentiles (s), throughput and the simulation's totals."""

    model: str
    hw: str
    requests: int
    max_batch: int
    max_step_tokens: int | None
    duration_s: float
    output_tokens: int
    throughput_tokens_per_s: float
    requests_per_s: float
    ttft_s: dict[str, float]
    itl_s: dict[str, float]
    e2e_s: dict[str, float]
    steps: int
    mean_batch: float
    busy_fraction: float
    sim: dict[str, Any]
    per_request: list[dict[str, Any]]
    timing: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def _pct(x: list[float]) -> dict[str, float]:
    a = np.asarray(x, float)
    if not len(a):
        return {}
    return {**{f"p{p}": float(np.percentile(a, p)) for p in PERCENTILES}, "mean": float(a.mean()),
            "max": float(a.max())}


def serve(cfg: HwConfig, m: ModelSpec, reqs: list[Request], *, max_batch: int = 8,
          max_step_tokens: int | None = None, schedule: str = "dependency-aware", lop_k: int | None = None,
          no_lop: bool = False, progress: Any = None, observers: tuple = ()) -> ServeResult:
    """Replay `reqs` with continuous batching (module docstring) and report latency percentiles and
    throughput; `observers` see every scheduled chunk (lowbit.sim.engine.simulate). WorkloadError before any simulation for a request longer than the model's context or a
    batch whose KV cache or step does not fit the simulator's bounds."""
    from lowbit.sim.engine import simulate

    m.validate()
    if not 1 <= max_batch <= 4096:
        raise WorkloadError(f"--max-batch {max_batch}: must be in 1..4096")
    if max_step_tokens is not None and not max_batch <= max_step_tokens <= 2**20:
        raise WorkloadError(f"--max-step-tokens {max_step_tokens}: must be >= --max-batch ({max_batch}) so every "
                            "running request can decode in a step")
    if not reqs:
        raise WorkloadError("no requests to serve")
    for i, r in enumerate(reqs):
        if r.prompt + r.output > m.max_positions:
            raise WorkloadError(f"request {i}: prompt {r.prompt} + output {r.output} exceeds {m.name}'s "
                                f"max_positions {m.max_positions}")
    # the largest step shapes before any work: max_batch sequences decoding at the longest context, and the
    # largest prompt chunk of one step
    longest = max(r.prompt + r.output for r in reqs)
    check_workload(cfg, batch_trace(m, [SeqSpec(longest - 1, 0, 1)] * max_batch), lop_k=lop_k, no_lop=no_lop)
    chunk = max(r.prompt for r in reqs) if max_step_tokens is None else min(max(r.prompt for r in reqs),
                                                                              max_step_tokens)
    check_workload(cfg, batch_trace(m, [SeqSpec(0, chunk, 1)]), lop_k=lop_k, no_lop=no_lop)
    b = _Batcher(m, reqs, max_batch, max_step_tokens, cfg.clock_hz)
    ops = _DynamicOps(b, progress, len(reqs))
    trace = Trace(m, sum(r.prompt for r in reqs), sum(r.output - 1 for r in reqs), ops,  # type: ignore[arg-type]
                  meta={"generator": "lowbit.sim.serve"})
    res = simulate(cfg, trace, schedule=schedule, lop_k=lop_k, no_lop=no_lop, observers=(b, *observers))
    done = sorted(b.done, key=lambda r: r.idx)
    ttft = [r.times[0] - r.req.arrival_s for r in done]
    itl = [t1 - t0 for r in done for t0, t1 in zip(r.times, r.times[1:], strict=False)]
    e2e = [r.times[-1] - r.req.arrival_s for r in done]
    t0 = min(r.arrival_s for r in reqs)
    dur = max(r.times[-1] for r in done) - t0
    n_out = sum(r.req.output for r in done)
    sim_s = res.cycles / cfg.clock_hz
    return ServeResult(
        model=m.name, hw=cfg.name, requests=len(reqs), max_batch=max_batch, max_step_tokens=max_step_tokens,
        duration_s=dur, output_tokens=n_out, throughput_tokens_per_s=n_out / dur if dur else 0.0,
        requests_per_s=len(done) / dur if dur else 0.0, ttft_s=_pct(ttft), itl_s=_pct(itl), e2e_s=_pct(e2e),
        steps=len(b.batch_sizes), mean_batch=float(np.mean(b.batch_sizes)),
        busy_fraction=sim_s / (sim_s + b.idle_s) if sim_s else 0.0,
        sim={"cycles": res.cycles, "clock_hz": res.clock_hz, "utilization": res.utilization,
             "dram_bytes": res.dram_bytes, "lop": res.lop, "instructions": res.instructions,
             "activity": res.activity},
        per_request=[{"arrival_s": r.req.arrival_s, "prompt": r.req.prompt, "output": r.req.output,
                      "first_token_s": r.times[0], "last_token_s": r.times[-1], "ttft_s": r.times[0] - r.req.arrival_s}
                     for r in done],
        timing=res.timing)


class _DynamicOps(GeneratedOps):
    """The op source of a served run: steps come from the batcher as the simulated clock advances."""

    def __init__(self, b: _Batcher, progress: Any, n_req: int) -> None:
        super().__init__(0, None, 0, 0)
        self.b, self.progress, self.n_req = b, progress, n_req

    def steps(self) -> Iterator[list[Op]]:
        for ops in self.b.steps():
            if self.progress is not None:
                self.progress(len(self.b.done), self.n_req)
            yield ops


# ---------------------------------------------------------------------------------------------- report section

BATCHES = (1, 2, 4, 8, 16)
CURVE_CACHED, CURVE_STEPS = 128, 8
LOAD = {"n": 16, "rate": 2.0, "prompt": (32, 96), "output": (16, 48), "seed": 0, "max_batch": 8}
# DESIGN ASSUMPTION for the second curve: activation and psum buffers large enough for 16 tokens of the widest
# projection input (8,640 for the 3B's down projection), so a step's tokens share one weight fetch
BATCH_SRAM = ("sram.act.bytes=1048576", "sram.psum.bytes=524288")
BATCHES_SRAM = (4, 16)
JOBS = len(BATCHES) + len(BATCHES_SRAM) + 1


def section(model: str = "bitnet-b1.58-3b", hw: str = "vitallm", tick: Any = None) -> str:
    """The validation report's batching section: decode throughput vs batch size (B sequences with
    CURVE_CACHED cached tokens each, CURVE_STEPS decode steps) and one served Poisson load (LOAD)."""
    from lowbit.sim.config import apply_sets, load_config
    from lowbit.sim.engine import simulate
    from lowbit.sim.modelspec import get_model

    cfg, m = load_config(hw), get_model(model)
    big = apply_sets(cfg, list(BATCH_SRAM))
    rows = []
    for c, Bs, tag in ((cfg, BATCHES, ""), (big, BATCHES_SRAM, ", batch-sized buffers")):
        for B in Bs:
            r = simulate(c, batch_trace(m, [SeqSpec(CURVE_CACHED, 0, CURVE_STEPS)] * B))
            rows.append((B, tag, r))
            if tick:
                tick()
    base = rows[0][2].throughput_tokens_per_s or 1.0
    out = ["## Batched decode and serving\n",
           f"{m.name} on `{cfg.name}`: B sequences decoded together, each with {CURVE_CACHED} tokens already in its "
           f"KV cache, {CURVE_STEPS} decode steps (`lowbit sim --cached {','.join([str(CURVE_CACHED)] * 2)},... "
           f"--prefill 0 --decode {CURVE_STEPS}`). Each projection runs once per step over the B tokens; each "
           "sequence reads its own KV cache and LO codes (LOP on). A projection's tokens share one weight fetch "
           "only while their input activations and partial sums fit one token chunk (lowbit.sim.tiling."
           "plan_linear); vitallm's buffers hold one token of the 8,640-wide down-projection input, so its weights "
           f"are re-read per token. The rows marked *batch-sized buffers* add `--set {' --set '.join(BATCH_SRAM)}` "
           "(design assumption), where every weight is read once per step.\n",
           "| batch | decode tokens/s (all sequences) | x batch 1 | per sequence tokens/s | weight bytes / step | "
           "KV + LO-code bytes / step / sequence | DRAM busy | TINT0 busy |",
           "|---|---|---|---|---|---|---|---|"]
    for B, tag, r in rows:
        n = len(r.step_cycles)
        kv = (r.dram_bytes["kv"] + r.dram_bytes.get("lop", 0)) / (n * B)
        out.append(f"| {B}{tag} | {r.throughput_tokens_per_s:.1f} | {r.throughput_tokens_per_s / base:.2f}x | "
                   f"{r.decode_tokens_per_s:.2f} | {r.dram_bytes['weights'] // n:,} | {kv:,.0f} | "
                   f"{100 * r.utilization['dram']:.1f} % | {100 * r.utilization.get('tint0', 0):.1f} % |")
    L = LOAD
    reqs = poisson_requests(L["n"], L["rate"], L["prompt"], L["output"], L["seed"])
    s = serve(cfg, m, reqs, max_batch=L["max_batch"])
    if tick:
        tick()
    out += ["", f"Serving (`lowbit serve --model {m.name} --hw {cfg.name} --n {L['n']} --rate {L['rate']:g} --prompt "
                f"{L['prompt'][0]}-{L['prompt'][1]} --output {L['output'][0]}-{L['output'][1]} --seed {L['seed']} "
                f"--max-batch {L['max_batch']}`): continuous batching, every step simulated (lowbit.sim.serve).\n",
            "| metric | p50 | p90 | p99 |", "|---|---|---|---|"]
    for what, d in (("time to first token, s", s.ttft_s), ("inter-token latency, ms", s.itl_s),
                    ("end-to-end latency, s", s.e2e_s)):
        k = 1e3 if "ms" in what else 1.0
        out.append(f"| {what} | " + " | ".join(f"{k * d[f'p{p}']:.3f}" for p in PERCENTILES) + " |")
    out.append(f"\nThroughput {s.throughput_tokens_per_s:.1f} output tokens/s over {s.duration_s:.1f} s, mean batch "
               f"{s.mean_batch:.2f} over {s.steps} steps, accelerator busy {100 * s.busy_fraction:.0f} % of the time.\n")
    return "\n".join(out) + "\n"


__all__ = ["Request", "ServeResult", "load_requests", "poisson_requests", "serve", "write_requests"]
