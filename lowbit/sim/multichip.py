"""Multi-chip systems: N identical accelerators, tensor- or pipeline-parallel, joined by chip-to-chip links.

Partitioning (Megatron-LM, Shoeybi et al., arXiv 1909.08053, §3; GPipe, Huang et al., arXiv 1811.06965):
- Tensor parallel ("tp"): every decoder layer is split across all chips. q/k/v and gate/up are column-split
  (each chip computes out_features / N outputs: n_heads / N query heads with their n_kv_heads / N KV heads,
  d_ffn / N FFN features), o and down row-split (in_features / N), so attention runs on each chip's own heads
  and KV cache, and the outputs of o and down are partial sums: an all-reduce of tokens x d_model bf16 values
  (2 B each, DESIGN ASSUMPTION: the residual stream stays bf16) follows each. The per-token statistics of an
  RMSNorm or an absmax quantizer over a split vector (SubLN's sub-norms; the quantizers before o and down)
  are all-reduced too (4 B per token), so the N chips compute exactly what one chip does. The embedding,
  the other norms, quantizers and residual adds run on every chip over the whole d_model; an on-chip
  lm_head is column-split over the vocabulary (ceil(vocab / N) rows per chip; the host gathers the logits).
- Pipeline parallel ("pp"): the layers are split into N contiguous stages (sizes differ by at most one,
  the larger first); the embedding runs on the first stage, the final norm and lm_head on the last. Each stage
  sends its output (tokens x d_model bf16) to the next. `micro_batches` M > 1 puts M independent sequences of
  the trace in flight (one micro-batch each, GPipe-style): while stage s works on one, stage s+1 works on
  the previous one.

Timing. Each chip's share is simulated cycle by cycle (sim.engine); the chips are then composed with the
link model (sim.link: ring all-reduce, point-to-point sends):
- tp: the chips are identical, so one chip is simulated; an all-reduce is blocking (the residual add and
  everything after it need the sum), so step k takes c[k] + sum of its collectives' times, where c[k] is
  the chip's own step (DESIGN ASSUMPTION, conservative: weight prefetch under an all-reduce is not credited).
- pp: stage s takes c_s[k] cycles in step k; one hop l_k = t(tokens x d_model x 2). A prefill step (one, or
  one per chunk of a chunked prefill) of M sequences fills the pipeline: sum_s c_s[k] + (N-1) l_k + (M-1)
  max_s c_s[k]. A decode step generates one token per sequence; with M sequences in flight it takes
  max(M max_s c_s[k], sum_s c_s[k] + (N-1) l_k): the busiest stage's load or one token's trip through all
  stages, whichever is longer.
Per-chip utilisation = a unit's busy cycles on that chip (x M for pp) / the system's cycles. Link bytes
count every byte on every link; link utilisation is the busiest link's data time / the system's time;
link critical-path cycles are the link time on a step's dependency chain (tp: every collective; pp: one
token's trip through the stages), summed over the steps.
Data-driven LOP selection (trace tensors) is not partitioned: chips select min(K, M) keys per head.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from lowbit.sim.config import HwConfig
from lowbit.sim.engine import SimResult, simulate
from lowbit.sim.errors import WorkloadError
from lowbit.sim.link import Collective, cycles
from lowbit.sim.modelspec import ModelSpec
from lowbit.sim.trace import GeneratedOps, Op, Trace, chunk_count
from lowbit.sim.workloads import check_workload

PARALLEL = ("tp", "pp")
MAX_CHIPS = 256
ACT_BYTES = 2    # residual stream / partial sums on the links: bf16 (DESIGN ASSUMPTION)
STAT_BYTES = 4   # one fp32 statistic per token (sum of squares, absmax)
COLUMN_ROLES = ("q", "k", "v", "gate", "up")
ROW_ROLES = ("o", "down")
HEAD_OPS = ("rope", "kv_append", "attn_qk", "softmax", "attn_av")


@dataclass
class MultiChipResult:
    """Everything `lowbit sim --chips N --json` writes. Times in seconds, cycles at clock_hz."""

    model: str
    hw: str
    parallel: str
    chips: int
    micro_batches: int
    schedule: str
    prefill_tokens: int
    decode_tokens: int           # tokens generated, all sequences together
    clock_hz: float
    cycles: int
    prefill_cycles: int
    decode_cycles: int
    prefill_latency_s: float | None
    decode_tokens_per_s: float | None
    link: dict[str, Any]         # config, bytes, busy and critical-path cycles, utilisation, energy
    per_chip: list[dict[str, Any]]  # chip, layers / share, utilization, busy cycles, DRAM bytes
    step_cycles: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    chip_results: list[dict[str, Any]] = field(default_factory=list)  # the simulated chips' SimResults

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)


# ---------------------------------------------------------------------------------------------- partitioning


def _shard_model(m: ModelSpec, n: int) -> ModelSpec:
    """The model one tensor-parallel chip holds: n_heads / n, n_kv_heads / n, d_ffn / n, same head_dim."""
    if n == 1:
        return m
    return dataclasses.replace(m, n_heads=m.n_heads // n, n_kv_heads=m.n_kv_heads // n, d_ffn=m.d_ffn // n,
                               head_dim=m.head_dim, name=f"{m.name} (1/{n} tp)")


def _check_tp(m: ModelSpec, n: int) -> None:
    for what, v in (("n_heads", m.n_heads), ("n_kv_heads", m.n_kv_heads), ("d_ffn", m.d_ffn)):
        if v % n:
            ok = [c for c in range(1, min(v, MAX_CHIPS) + 1) if m.n_heads % c == 0 and m.n_kv_heads % c == 0
                  and m.d_ffn % c == 0]
            raise WorkloadError(f"--chips {n} --parallel tp: model {m.name} has {what} = {v}, not divisible by "
                                f"{n} chips; tp chip counts for it: {', '.join(map(str, ok))} (or --parallel pp)")


def _div(v: int, n: int, what: str, o: Op) -> int:
    if v % n:
        raise WorkloadError(f"--parallel tp: op {o.name}: {what} = {v} is not divisible by {n} chips")
    return v // n


def _tp_step(ops: list[Op], n: int, lm_head_on_chip: bool) -> tuple[list[Op], list[Collective]]:
    """One forward step's ops as one tensor-parallel chip runs them, and the step's collectives."""
    out: list[Op] = []
    coll: list[Collective] = []
    region = ""  # "attn": between attention and o; "ffn": between up/gate and down (vectors split n ways)
    for o in ops:
        a = dict(o.args)
        t = a.get("tokens", 1)
        if o.op == "linear":
            if o.role in COLUMN_ROLES:
                a["out_features"] = _div(a["out_features"], n, "out_features", o)
                region = "ffn" if o.role in ("gate", "up") else region
            elif o.role in ROW_ROLES:
                a["in_features"] = _div(a["in_features"], n, "in_features", o)
                coll.append(Collective("all-reduce", t * a["out_features"] * ACT_BYTES, n))
                region = ""
            else:
                raise WorkloadError(f"--parallel tp: op {o.name} has role '{o.role}'; tensor parallelism splits "
                                    f"projections by role ({', '.join(COLUMN_ROLES + ROW_ROLES)})")
        elif o.op in HEAD_OPS:
            for f in ("heads", "kv_heads"):
                if f in a:
                    a[f] = _div(a[f], n, f, o)
            if o.op == "attn_av":
                region = "attn"
        elif o.op == "lm_head" and lm_head_on_chip:
            a["out_features"] = -(-a["out_features"] // n)
        elif region and o.op in ("rmsnorm", "quantize", "elementwise", "activation"):
            a["dim"] = _div(a["dim"], n, "dim", o)
            if o.op in ("rmsnorm", "quantize"):
                coll.append(Collective("all-reduce", t * STAT_BYTES, n))
        out.append(dataclasses.replace(o, args=a, tensors={}))
    return out, coll


def _source(trace: Trace) -> tuple[int, Callable[[int], list[Op]], Callable[[int], list[Op]] | None]:
    """(steps, ops of step i, ops of step i for a one-layer copy or None) of a generated or listed trace."""
    g = trace.ops
    if isinstance(g, GeneratedOps):
        return g.n_steps, g.step_fn, g.probe_fn
    steps = list(trace.steps())
    return len(steps), steps.__getitem__, None


def _trace(trace: Trace, model: ModelSpec, n_steps: int, step_fn: Callable[[int], list[Op]],
           probe_fn: Callable[[int], list[Op]] | None, n_ops: int, chunks: int) -> Trace:
    """`trace` with another model and its steps generated by `step_fn` (step boundaries kept as they are)."""
    ops = GeneratedOps(n_steps, step_fn, n_ops, chunks, probe_fn)
    return dataclasses.replace(trace, model=model, ops=ops, tensor_files=[])  # type: ignore[arg-type]


def tp_partition(trace: Trace, n: int, lm_head_on_chip: bool) -> tuple[Trace, list[list[Collective]]]:
    """One chip's share of `trace` under tensor parallelism on `n` chips (generated step by step), and per
    step the collectives (module docstring)."""
    m = trace.model
    _check_tp(m, n)
    n_steps, get, probe = _source(trace)
    colls, n_ops, chunks = [], 0, 0
    for i in range(n_steps):
        ops, c = _tp_step(get(i), n, lm_head_on_chip)
        colls.append(c)
        n_ops += len(ops)
        chunks += chunk_count(ops)
    shard = _trace(trace, _shard_model(m, n), n_steps, lambda i: _tp_step(get(i), n, lm_head_on_chip)[0],
                   (lambda i: _tp_step(probe(i), n, lm_head_on_chip)[0]) if probe else None, n_ops, chunks)
    return shard, colls


def stage_layers(n_layers: int, n: int) -> list[range]:
    """Contiguous layer ranges of n pipeline stages (sizes differ by at most one, the larger first)."""
    if n > n_layers:
        raise WorkloadError(f"--chips {n} --parallel pp: only {n_layers} layers to split into {n} stages; "
                            f"use at most {n_layers} chips")
    out, lo = [], 0
    for s in range(n):
        size = n_layers // n + (s < n_layers % n)
        out.append(range(lo, lo + size))
        lo += size
    return out


def _pp_step(ops: list[Op], ranges: list[range], s: int) -> list[Op]:
    """Stage s's ops of one step (layers renumbered from 0): model-level ops before the first decoder layer
    run on the first stage, those after it on the last."""
    r = ranges[s]
    out, seen = [], False
    for o in ops:
        if o.layer < 0:
            if (s == len(ranges) - 1) if seen else (s == 0):
                out.append(dataclasses.replace(o, tensors={}))
        else:
            seen = True
            if o.layer in r:
                out.append(dataclasses.replace(o, layer=o.layer - r.start, tensors={}))
    return out


def pp_partition(trace: Trace, n: int) -> tuple[list[Trace], list[list[Collective]]]:
    """The stages' traces (generated step by step) under pipeline parallelism on `n` chips, and per step the
    sends between consecutive stages (module docstring)."""
    m = trace.model
    ranges = stage_layers(m.n_layers, n)
    n_steps, get, _probe = _source(trace)
    colls: list[list[Collective]] = []
    n_ops, chunks = [0] * n, [0] * n
    for i in range(n_steps):
        ops = get(i)
        tokens = ops[0].args.get("tokens", 1) if ops else 0
        colls.append([Collective("send", tokens * m.d_model * ACT_BYTES, 2) for _ in range(n - 1)])
        for s in range(n):
            so = _pp_step(ops, ranges, s)
            n_ops[s] += len(so)
            chunks[s] += chunk_count(so) if so else 0
    out = []
    for s, r in enumerate(ranges):
        sm = m if n == 1 else dataclasses.replace(m, n_layers=len(r), name=f"{m.name} (layers {r.start}-{r.stop - 1})")
        out.append(_trace(trace, sm, n_steps, lambda i, s=s: _pp_step(get(i), ranges, s), None, n_ops[s], chunks[s]))
    return out, colls


# ---------------------------------------------------------------------------------------------- simulation


def simulate_multichip(cfg: HwConfig, trace: Trace, chips: int, parallel: str = "tp",
                       schedule: str = "dependency-aware", lop_k: int | None = None, no_lop: bool = False,
                       micro_batches: int = 1, progress: Callable[[int, int], None] | None = None) -> MultiChipResult:
    """Simulate `trace` on `chips` copies of `cfg` (module docstring). One chip is the plain simulation."""
    if parallel not in PARALLEL:
        raise WorkloadError(f"--parallel {parallel}: must be one of {', '.join(PARALLEL)}")
    if not 1 <= chips <= MAX_CHIPS:
        raise WorkloadError(f"--chips {chips}: must be in 1..{MAX_CHIPS}")
    if not 1 <= micro_batches <= 4096:
        raise WorkloadError(f"--micro-batches {micro_batches}: must be in 1..4096")
    if micro_batches > 1 and parallel != "pp":
        raise WorkloadError(f"--micro-batches {micro_batches}: micro-batching is a pipeline-parallel schedule; "
                            "use --parallel pp (or a batched trace for tp)")
    notes = []
    if any(o.tensors for o in trace.ops) and chips > 1:
        notes.append("LOP: the trace's q/k tensors are not partitioned across chips; min(K, M) keys per head")
    on_chip = cfg.lm_head != "host"
    if parallel == "tp":
        shard, colls = tp_partition(trace, chips, on_chip)
        parts = [shard]
    else:
        parts, colls = pp_partition(trace, chips)
    for p in parts:
        check_workload(cfg, p, lop_k=lop_k, no_lop=no_lop)
    results = _run(cfg, parts, schedule, lop_k, no_lop, progress)
    res = (_compose_tp if parallel == "tp" else _compose_pp)(cfg, results, colls, chips, micro_batches)
    step_cycles, prefill_cycles, link = res
    total = sum(step_cycles)
    dec = total - prefill_cycles
    seqs = getattr(trace, "sequences", None)  # a batched trace generates one token per sequence and step
    D = (sum(q.decode for q in seqs) if seqs else trace.decode) * micro_batches
    clk = cfg.clock_hz
    per_chip = _per_chip(parallel, results, parts, chips, micro_batches, total, cfg)
    link["energy_j"] = cfg.link.energy_j(link["bytes"])
    link["utilization"] = link["busy_cycles"] / total if total else 0.0
    return MultiChipResult(
        model=trace.model.name, hw=cfg.name, parallel=parallel, chips=chips, micro_batches=micro_batches,
        schedule=schedule, prefill_tokens=trace.prefill * micro_batches, decode_tokens=D, clock_hz=clk,
        cycles=int(total), prefill_cycles=int(prefill_cycles), decode_cycles=int(dec),
        prefill_latency_s=prefill_cycles / clk if trace.prefill else None,
        decode_tokens_per_s=D / (dec / clk) if D and dec else None, link=link, per_chip=per_chip,
        step_cycles=step_cycles, notes=notes + [n for r in results for n in r.notes],
        chip_results=[r.to_dict() for r in results])


def _run(cfg: HwConfig, parts: list[Trace], schedule: str, lop_k: int | None, no_lop: bool,
         progress: Callable[[int, int], None] | None) -> list[SimResult]:
    """Simulate every distinct chip trace; progress counts chunks over all of them."""
    totals = [p.n_chunks() for p in parts]
    out = []
    for i, p in enumerate(parts):
        base = sum(totals[:i])

        def prog(d: int, _t: int, base: int = base) -> None:
            if progress is not None:
                progress(base + d, sum(totals))

        out.append(simulate(cfg, p, schedule=schedule, lop_k=lop_k, no_lop=no_lop, progress=prog))
    return out


def _prefill_steps(r: SimResult) -> int:
    """Forward steps of the prefill (several with chunked prefill): those whose cycles add up to prefill_cycles."""
    acc = 0
    for k, c in enumerate(r.step_cycles):
        if acc >= r.prefill_cycles:
            return k
        acc += c
    return len(r.step_cycles)


def _compose_tp(cfg: HwConfig, results: list[SimResult], colls: list[list[Collective]], chips: int,
                micro_batches: int) -> tuple[list[int], int, dict]:
    r = results[0]
    clk, link = cfg.clock_hz, cfg.link
    steps, crit, busy, nbytes = [], 0, 0.0, 0
    for c, cs in zip(r.step_cycles, colls, strict=True):
        lc = sum(cycles(x.ns(link), clk) for x in cs)
        steps.append(int(c) + lc)
        crit += lc
        busy += sum(x.busy_ns(link) for x in cs)
        nbytes += sum(x.link_bytes for x in cs)
    pre = sum(steps[:_prefill_steps(r)])
    n_coll = sum(len(cs) for cs in colls)
    return steps, pre, _link_summary(cfg, nbytes, busy, crit, n_coll, chips if chips > 1 else 0)


def _compose_pp(cfg: HwConfig, results: list[SimResult], colls: list[list[Collective]], chips: int,
                micro_batches: int) -> tuple[list[int], int, dict]:
    clk, link, M = cfg.clock_hz, cfg.link, micro_batches
    n_pre = _prefill_steps(results[0])
    steps, crit, nbytes = [], 0, 0
    busy_per_link = [0.0] * max(1, chips - 1)
    for k, cs in enumerate(colls):
        c = [int(r.step_cycles[k]) for r in results]
        lk = [cycles(x.ns(link), clk) for x in cs]
        chain = sum(c) + sum(lk)
        if k < n_pre:  # the pipeline fills with the M prompts
            steps.append(chain + (M - 1) * max(c))
        else:
            steps.append(max(M * max(c), chain))
        crit += sum(lk)
        for i, x in enumerate(cs):
            busy_per_link[i] += M * x.busy_ns(link)
            nbytes += M * x.link_bytes
    pre = sum(steps[:n_pre])
    busy = max(busy_per_link)
    return steps, pre, _link_summary(cfg, nbytes, busy, crit, sum(len(cs) for cs in colls) * M,
                                     chips - 1 if chips > 1 else 0)


def _link_summary(cfg: HwConfig, nbytes: int, busy_ns: float, crit: int, n: int, links: int) -> dict:
    return {"bandwidth_gbps": cfg.link.bandwidth_gbps, "latency_ns": cfg.link.latency_ns,
            "energy_pj_per_bit": cfg.link.energy_pj_per_bit, "links": links, "bytes": int(nbytes),
            "transfers": n, "busy_cycles": cycles(busy_ns, cfg.clock_hz), "critical_path_cycles": int(crit)}


def _per_chip(parallel: str, results: list[SimResult], parts: list[Trace], chips: int, M: int, total: int,
              cfg: HwConfig) -> list[dict]:
    """Per chip: its share, utilisation of every unit over the system's cycles, busy cycles, DRAM bytes."""
    out = []
    for i in range(chips):
        r = results[0] if parallel == "tp" else results[i]
        k = 1 if parallel == "tp" else M
        busy = {u: k * v for u, v in r.activity["busy_cycles"].items()}
        util = {u: (b / total if total else 0.0) for u, b in busy.items()}
        util["dram"] = k * r.utilization.get("dram", 0.0) * r.cycles / total if total else 0.0
        share = f"1/{chips} of every layer" if parallel == "tp" else \
            f"layers {_layer_span(parts, i)}"
        out.append({"chip": i, "share": share, "utilization": util, "busy_cycles": busy,
                    "dram_bytes": {c: k * v for c, v in r.dram_bytes.items()}, "cycles_alone": int(r.cycles),
                    "weight_bytes_per_decode_step": _decode_weight_bytes(r)})
    return out


def _decode_weight_bytes(r: SimResult) -> int | None:
    """Weight bytes one decode step reads on this chip (each of its weights once: its share of the model)."""
    steps = len(r.step_cycles) - _prefill_steps(r)
    if not steps:
        return None
    pre = (r.prefill_activity or {}).get("dram_bytes", {}).get("weights", 0)
    return (r.dram_bytes["weights"] - pre) // steps


def _layer_span(parts: list[Trace], i: int) -> str:
    before = sum(p.model.n_layers for p in parts[:i])
    return f"{before}-{before + parts[i].model.n_layers - 1}"


__all__ = ["simulate_multichip", "MultiChipResult", "tp_partition", "pp_partition", "stage_layers", "PARALLEL"]
