"""Data-driven LOP key selection from a trace's q/k tensors (bit-exact with sim.numerics.lop).

Tensor contract (traces captured with ``--tensors``; also what :func:`synthetic_qk_trace` writes):

* every ``kv_append`` op (prefill and decode, each layer) carries ``tensors = {"k": key, "v": key}``,
  float32 arrays ``[kv_heads, tokens, head_dim]`` (keys after RoPE);
* every DECODE ``attn_qk`` op carries ``tensors = {"q": key}``, float32 ``[heads, head_dim]`` (after RoPE;
  ``[heads, 1, head_dim]`` is accepted too). Prefill ``attn_qk`` needs no tensors.

Selection rule for decode step ``s`` of layer ``l`` (docs/reference/vitallm.md §5.4; docs/reference/numerics.md §8.2):

1. INT8 quantization of the accelerator's K cache and query: ``sim.numerics.int8.int8_absmax_quantize`` over
   the last dim (head_dim), i.e. per token per head.
2. The K cache for step ``s`` is every key appended so far (prefill + decode steps ``<= s``), M = context.
3. Query head ``h`` uses kv head ``h // (heads // kv_heads)`` (GQA); per kv head ONE selection over the group
   score, the sum of ``lo_scores(q_h, K)`` over its query heads:
   ``sim.numerics.lop.lop_group_topk(scores, group, k, n_buckets=cfg.buckets)`` selects ``min(k, M)`` keys
   (the DESIGN ASSUMPTION and its reason: sim/numerics/lop.py; MHA: the per-head rule).
4. The unit fetches, per kv head, those keys (a key and its value are fetched once and used by the whole
   group) -> ``fetched[l, s, kv_head]`` = min(k, M). With LOP disabled (``cfg.enabled = false``) every key
   is fetched.

``kv_fetch_fraction`` = sum(fetched) / sum(M over layers, steps, kv heads): the fraction of K/V rows that
exact attention still reads (the LO surrogate reads are charged separately by the scheduler).

Implementation note: each query head's LO score ``sum_i sign(q_i)sign(k_i)2^(e(q_i)+e(k_i))`` is computed as
a float32 matmul of the signed powers of two. Every product is an integer ``<= 2^14`` and every partial sum an
integer ``<= head_dim * 2^14 <= 2^24`` for head_dim <= 1024, so float32 is exact in any summation order and
equals ``lo_scores`` (tests check this against the library); the group sums are then taken in int64. Streaming: ops are visited in trace order; the
large state is the K cache itself (float32 LO values, all layers); a decode step's queries and new keys are
held until the step ends and then selected in one batch over layers and heads (see :func:`lop_selection`).
Speed (BitNet-3B, 64 + 128 tokens, 2-core host): 22.3 s -> ~2 s user CPU versus one lop_topk call per
(layer, step, kv head); bench/results-sim.md.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lowbit.sim.config import HwConfig, LopConfig
from lowbit.sim.errors import TraceError
from lowbit.sim.modelspec import ModelSpec, get_model
from lowbit.sim.numerics.int8 import int8_absmax_quantize
from lowbit.sim.numerics.lop import leading_one, lop_group_topk
from lowbit.sim.trace import Trace, write_trace
from lowbit.sim.workloads import standard_trace

MAX_EXACT_HEAD_DIM = 1024  # float32 exactness bound (module docstring)
_DEFER_MAX_ELEMS = 1 << 16  # key tensors smaller than this are batched per step; larger ones stored at once,
# in token chunks of about this many elements (quantization is per token and head, so chunking is exact)
_SCORE_CHUNK = 1 << 20  # scores per lop_topk call (bounds its int64 temporaries to ~10 x 8 MiB)


@dataclass
class LopSelection:
    """Per (layer, decode step, kv head) number of keys LOP fetches (min(k, M) with LOP on, M with it off).

    ``fetched[layer, i, kv]`` belongs to decode step ``steps[i]`` whose cache holds ``context[i]`` keys.
    ``indices[(layer, step)][kv]`` (only with ``keep_indices=True``) are the fetched key positions, ascending.
    """

    k: int
    n_buckets: int
    enabled: bool
    layers: int
    heads: int
    kv_heads: int
    steps: np.ndarray      # int64 [S] decode step numbers (1..D)
    context: np.ndarray    # int64 [S] M per step
    fetched: np.ndarray    # int64 [layers, S, kv_heads]
    indices: dict[tuple[int, int], list[np.ndarray]] | None = None
    _step_index: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._step_index = {int(s): i for i, s in enumerate(self.steps)}

    @property
    def kv_fetch_fraction(self) -> float:
        """Fetched keys / keys exact attention would read, over all layers, steps and kv heads."""
        full = int(self.context.sum()) * self.layers * self.kv_heads
        return float(self.fetched.sum()) / full if full else 1.0

    def fetched_for(self, layer: int, step: int) -> np.ndarray:
        """int64 [kv_heads]: keys fetched per kv head at (layer, decode step)."""
        if step not in self._step_index:
            raise KeyError(f"decode step {step} not in this selection (have {self.steps.min()}..{self.steps.max()})")
        return self.fetched[layer, self._step_index[step]]

    def as_counts(self) -> dict[tuple[int, int], np.ndarray]:
        """{(layer, decode step): int64 [kv_heads] fetched keys} -- the form sim.lower's `lop_counts` takes."""
        return {(layer, int(s)): self.fetched[layer, i] for layer in range(self.layers)
                for i, s in enumerate(self.steps)}

    def step_fraction(self) -> np.ndarray:
        """float64 [S]: fetch fraction per decode step (over layers and kv heads)."""
        return self.fetched.sum(axis=(0, 2)) / (self.context * self.layers * self.kv_heads)


class _TensorReader:
    """Reads single tensors by key from a trace's safetensors/.npz files without loading whole files.

    The most recently used file stays open (traces store one file per step and are read in step order), so
    each file is opened once instead of once per tensor."""

    def __init__(self, trace: Trace) -> None:
        if trace.root is None or not trace.tensor_files:
            raise TraceError("trace has no tensor files: LOP selection needs q/k tensors; capture with --tensors "
                             "or generate one with sim.lop_select.synthetic_qk_trace")
        self.where: dict[str, Path] = {}
        for rel in trace.tensor_files:
            path = trace.root / rel
            for key in self._keys(path):
                self.where[key] = path
        self._path: Path | None = None
        self._handle = None
        self._last: tuple[str | None, np.ndarray | None] = (None, None)

    @staticmethod
    def _keys(path: Path) -> list[str]:
        if path.suffix == ".npz":
            with np.load(path) as z:
                return list(z.files)
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            return list(f.keys())

    def _open(self, key: str) -> Path:
        if key not in self.where:
            raise TraceError(f"tensor '{key}' is not in any tensor file of the trace")
        path = self.where[key]
        if path != self._path:
            self.close()
            if path.suffix == ".npz":
                self._handle = np.load(path)
            else:
                from safetensors import safe_open

                self._handle = safe_open(str(path), "np")
            self._path = path
        return path

    def _npz(self, key: str) -> np.ndarray:
        if self._last[0] != key:  # an npz member is read whole; keep it for shape() followed by get()
            self._last = (key, self._handle[key])
        return self._last[1]

    def shape(self, key: str) -> tuple[int, ...]:
        if self._open(key).suffix == ".npz":
            return tuple(self._npz(key).shape)
        return tuple(self._handle.get_slice(key).get_shape())

    def get(self, key: str, tokens: tuple[int, int] | None = None) -> np.ndarray:
        """The tensor, or only ``[:, t0:t1]`` of it (safetensors reads just that slice from disk)."""
        if self._open(key).suffix == ".npz":
            a = self._npz(key)
            return a if tokens is None else a[:, tokens[0]:tokens[1]]
        if tokens is None:
            return self._handle.get_tensor(key)
        return self._handle.get_slice(key)[:, tokens[0]:tokens[1]]

    def close(self) -> None:
        if self._handle is not None and hasattr(self._handle, "close"):
            self._handle.close()
        self._handle, self._path, self._last = None, None, (None, None)


def lo_values(x_int8: np.ndarray) -> np.ndarray:
    """float32 ``sign(x) * 2^floor(log2|x|)`` (0 for x = 0): the per-element LO surrogate value."""
    e = leading_one(x_int8)
    mag = np.where(e < 0, 0, np.left_shift(1, np.maximum(e, 0)))
    return (np.sign(x_int8.astype(np.int64)) * mag).astype(np.float32)


# lo_values of every int8, indexed by the byte's uint8 bit pattern (hot path: one gather per tensor)
_LO_LUT = lo_values(np.arange(256, dtype=np.uint8).view(np.int8))


def _lo_int8(x: np.ndarray) -> np.ndarray:
    """lo_values(int8_absmax_quantize(x)) via the 256-entry table (equal to lo_values by construction)."""
    q = np.ascontiguousarray(int8_absmax_quantize(x)[0])
    return _LO_LUT[q.view(np.uint8)]


@dataclass
class _Query:
    layer: int
    step_i: int
    M: int
    q: np.ndarray  # float32 [H, hd], as read from the trace


def lop_selection(trace: Trace, cfg: LopConfig, k: int | None = None, keep_indices: bool = False) -> LopSelection:
    """Run LOP selection over every decode step of `trace` (see the module docstring for the rule).

    Batched: the small key appends (decode tokens) and decode queries of one step are collected while the
    trace is streamed and processed together when the step ends (one int8 quantization call per tensor
    shape; one lop_topk call over all layers and heads per distinct context M, split into chunks of at most
    ``_SCORE_CHUNK`` scores). This equals per-head calls because int8 absmax quantization and every lop_topk
    stage work row-wise over the leading dims, and appends never move earlier keys, so scoring a query
    against ``cache[:M]`` after the step's remaining appends gives the same scores. Pending state is one
    step's new decode keys and queries; transient memory is bounded by the chunk size.
    """
    kk = cfg.k if k is None else int(k)
    if kk < 0:
        raise ValueError(f"k = {kk}: must be >= 0")
    m = trace.model
    L, H, KV, hd = m.n_layers, m.n_heads, m.n_kv_heads, m.head_dim
    if hd > MAX_EXACT_HEAD_DIM:
        raise TraceError(f"head_dim {hd} > {MAX_EXACT_HEAD_DIM}: the float32 LO score would not be exact")
    group = H // KV
    reader = _TensorReader(trace)
    cap = max(trace.prefill + trace.decode, 1)
    cache = np.zeros((L, KV, cap, hd), np.float32)  # LO values of the quantized keys (the only large state)
    length = [0] * L
    steps = list(range(1, trace.decode + 1))
    sidx = {s: i for i, s in enumerate(steps)}
    fetched = np.zeros((L, len(steps), KV), np.int64)
    context = np.zeros(len(steps), np.int64)
    seen = np.zeros((L, len(steps)), bool)
    indices: dict[tuple[int, int], list[np.ndarray]] | None = {} if keep_indices else None
    pending: list[_Query] = []
    pending_kv: list[tuple[int, int, np.ndarray]] = []  # (layer, first position, float32 keys) of this step
    pending_step: int | None = None

    def store(items: list[tuple[int, int, np.ndarray]]) -> None:
        """Quantize same-shape key tensors in one call and write their LO values to the cache."""
        nonlocal cache
        need = max(n + kt.shape[1] for _, n, kt in items)
        if need > cache.shape[2]:  # grow (only if the trace has more tokens than prefill + decode)
            grown = np.zeros((L, KV, max(need, 2 * cache.shape[2]), hd), np.float32)
            grown[:, :, :cache.shape[2]] = cache
            cache = grown
        lo = _lo_int8(np.stack([kt for _, _, kt in items]))
        for j, (layer, n, kt) in enumerate(items):
            cache[layer, :, n:n + kt.shape[1]] = lo[j]

    def flush() -> None:
        by_shape: dict[tuple[int, ...], list[tuple[int, int, np.ndarray]]] = {}
        for a in pending_kv:
            by_shape.setdefault(a[2].shape, []).append(a)
        for items in by_shape.values():  # one quantization call per shape (per-row rule: same result)
            store(items)
        pending_kv.clear()
        by_m: dict[int, list[_Query]] = {}
        for p in pending:
            by_m.setdefault(p.M, []).append(p)
        for M, same_m in by_m.items():
            per = max(1, _SCORE_CHUNK // (H * M))
            for c in range(0, len(same_m), per):
                select(M, same_m[c:c + per])
        pending.clear()

    def select(M: int, qs: list[_Query]) -> None:
        """One top-K per kv head over its group's summed scores, for queries that all see M keys."""
        n = len(qs)
        picked = None
        if cfg.enabled and kk < M:
            qv = _lo_int8(np.stack([p.q for p in qs])).reshape(n, KV, group, hd)
            scores = np.empty((n, KV, group, M), np.float32)
            for j, p in enumerate(qs):  # exact float32 matmul (module docstring), one layer at a time
                np.matmul(qv[j], cache[p.layer, :, :M].transpose(0, 2, 1), out=scores[j])
            _, picked = lop_group_topk(scores.reshape(n, H, M).astype(np.int64), group, kk, cfg.buckets)
        for j, p in enumerate(qs):
            fetched[p.layer, p.step_i] = M if picked is None else kk
            if indices is not None:
                indices[(p.layer, steps[p.step_i])] = [np.arange(M) if picked is None else picked[j, g]
                                                       for g in range(KV)]

    try:
        for o in trace.ops:
            if (pending or pending_kv) and o.step != pending_step:
                flush()
            if o.op == "kv_append":
                if "k" not in o.tensors:
                    raise TraceError(f"op {o.name} (step {o.step}) has no 'k' tensor; LOP selection needs traces "
                                     "captured with --tensors")
                key, t = o.tensors["k"], o["tokens"]
                if reader.shape(key) != (KV, t, hd):
                    raise TraceError(f"tensor {key}: shape {reader.shape(key)}, expected [kv_heads, tokens, "
                                     f"head_dim] = {(KV, t, hd)}")
                if KV * t * hd >= _DEFER_MAX_ELEMS:  # big (prefill) tensors: read and store now, in token
                    tc = max(1, _DEFER_MAX_ELEMS // (KV * hd))  # chunks, so that no temporary is a layer's size
                    for t0 in range(0, t, tc):
                        kc = np.asarray(reader.get(key, (t0, min(t, t0 + tc))), np.float32)
                        store([(o.layer, length[o.layer] + t0, kc)])
                else:  # small (decode) tensors: batched at the end of the step
                    pending_kv.append((o.layer, length[o.layer], np.asarray(reader.get(key), np.float32)))
                length[o.layer] += t
                pending_step = o.step
            elif o.op == "attn_qk" and o.phase == "decode":
                if "q" not in o.tensors:
                    raise TraceError(f"op {o.name} (decode step {o.step}) has no 'q' tensor; LOP selection needs "
                                     "traces captured with --tensors")
                q = np.asarray(reader.get(o.tensors["q"]), np.float32)
                if q.shape == (H, 1, hd):
                    q = q[:, 0]
                if q.shape != (H, hd):
                    raise TraceError(f"tensor {o.tensors['q']}: shape {q.shape}, expected [heads, head_dim] = "
                                     f"{(H, hd)}")
                M = length[o.layer]
                if M != o["context"]:
                    raise TraceError(f"op {o.name} (decode step {o.step}): K cache holds {M} keys but context = "
                                     f"{o['context']}; every kv_append op needs its 'k' tensor")
                i = sidx[o.step]
                context[i] = M
                seen[o.layer, i] = True
                pending.append(_Query(o.layer, i, M, q))
                pending_step = o.step
        flush()
    finally:
        reader.close()
    if not seen.all():
        missing = np.argwhere(~seen)[0]
        raise TraceError(f"trace has no decode attn_qk op for layer {missing[0]}, step {steps[missing[1]]}")
    return LopSelection(kk, cfg.buckets, cfg.enabled, L, H, KV, np.array(steps, np.int64), context, fetched,
                        indices)


def lop_selected_positions(trace: Trace, cfg: HwConfig, k: int | None = None) -> dict[tuple[int, int], list[np.ndarray]]:
    """{(layer, decode step): per kv head the ascending positions LOP fetches (uint16 up to 65,536 positions,
    else int32)} for the engine (sim.lower fetches each at its own address, sim.kvcache), or {} when the trace
    carries no decode query tensors (LOP then uses fixed-ratio selections). Raises TraceError if tensors are
    incomplete."""
    if not any(o.op == "attn_qk" and o.phase == "decode" and "q" in o.tensors for o in trace.ops):
        return {}
    sel = lop_selection(trace, cfg.lop, k, keep_indices=True)
    dt = np.uint16 if trace.model.max_positions <= 1 << 16 else np.int32  # held for the whole run: compact
    return {key: [np.asarray(a, dt) for a in v] for key, v in (sel.indices or {}).items()}


def lop_selected_counts(trace: Trace, cfg: HwConfig, k: int | None = None) -> dict[tuple[int, int], np.ndarray]:
    """{(layer, decode step): int64 [kv_heads] fetched keys} for the engine, or {} when the trace carries no
    decode query tensors (LOP then falls back to min(k, M)). Raises TraceError if tensors are incomplete."""
    if not any(o.op == "attn_qk" and o.phase == "decode" and "q" in o.tensors for o in trace.ops):
        return {}
    return lop_selection(trace, cfg.lop, k).as_counts()


# ----------------------------------------------------------------------------- writing q/k traces

TensorFn = Callable[[int, str, int], dict[str, np.ndarray]]


def write_qk_trace(model: str | ModelSpec, prefill: int, decode: int, out_dir: str | Path, make: TensorFn,
                   meta: dict | None = None, overwrite: bool = False) -> Path:
    """Write a standard-shape trace whose kv_append / decode attn_qk ops carry tensors from `make`.

    ``make(layer, phase, step)`` returns ``{"k": [KV,T,hd], "v": [KV,T,hd]}`` plus ``"q": [H,hd]`` for decode
    steps (float32). One safetensors file per step (``tensors/step{step:05d}.safetensors``), keys
    ``L{layer}.s{step}.{k|v|q}``; written atomically through sim.trace.write_trace.
    """
    from safetensors.numpy import save_file

    tr = standard_trace(model, prefill, decode)
    tr.ops = list(tr.ops)  # generated step by step (sim.trace.GeneratedOps): materialise to attach tensors
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.tensors.", dir=out.parent))
    try:
        by_step: dict[int, list] = {}
        for o in tr.ops:
            if o.op == "kv_append" or (o.op == "attn_qk" and o.phase == "decode"):
                by_step.setdefault(o.step, []).append(o)
        files = []
        for step, ops in sorted(by_step.items()):
            arrays: dict[str, np.ndarray] = {}
            made: dict[int, dict[str, np.ndarray]] = {}
            for o in ops:
                if o.layer not in made:
                    made[o.layer] = make(o.layer, o.phase, step)
                roles = ("k", "v") if o.op == "kv_append" else ("q",)
                for r in roles:
                    key = f"L{o.layer}.s{step}.{r}"
                    arrays[key] = np.ascontiguousarray(made[o.layer][r], dtype=np.float32)
                    o.tensors[r] = key
            rel = f"step{step:05d}.safetensors"
            save_file(arrays, str(tdir / rel))
            files.append(f"tensors/{rel}")
        tr.tensor_files = files
        tr.meta = {**tr.meta, **(meta or {})}
        return write_trace(tr, out, tensor_dir=tdir, overwrite=overwrite)
    finally:
        shutil.rmtree(tdir, ignore_errors=True)


def synthetic_qk_trace(model: str | ModelSpec, prefill: int, decode: int, out_dir: str | Path,
                       seed: int = 0, overwrite: bool = False) -> Path:
    """Trace with random-but-structured q/k/v (for benchmarks when captured traces are too big).

    Structure (DESIGN CHOICE, to make selection non-trivial): per (layer, kv head) a unit "topic" direction u;
    keys = N(0,1) + a_t * 3u with a_t = 1..3 for ~6 % of tokens ("relevant" keys), token 0 and every 97th token
    are "attention sinks" with 6x the norm along u; each query head = 0.7 N(0,1) + 2.5u + its own
    head-specific offset, so heads of one GQA group agree on the sinks but differ elsewhere.
    Deterministic in `seed` (numpy default_rng([seed, layer, step])).
    """
    m = get_model(model) if isinstance(model, str) else model
    KV, H, hd = m.n_kv_heads, m.n_heads, m.head_dim
    group = H // KV

    def topic(layer: int) -> tuple[np.ndarray, np.ndarray]:
        r = np.random.default_rng([seed, layer, 1 << 20])
        u = r.standard_normal((KV, hd))
        u /= np.linalg.norm(u, axis=-1, keepdims=True)
        off = r.standard_normal((H, hd))
        return u, off

    topics = {layer: topic(layer) for layer in range(m.n_layers)}

    def make(layer: int, phase: str, step: int) -> dict[str, np.ndarray]:
        r = np.random.default_rng([seed, layer, step])
        u, off = topics[layer]
        t = prefill if phase == "prefill" else 1
        pos0 = 0 if phase == "prefill" else prefill + step - 1
        pos = pos0 + np.arange(t)
        a = np.where(r.random((KV, t)) < 0.06, r.integers(1, 4, (KV, t)), 0).astype(np.float64)
        sink = (pos == 0) | (pos % 97 == 0)
        a[:, sink] = 6.0
        k = r.standard_normal((KV, t, hd)) + a[..., None] * 3.0 * u[:, None, :]
        v = r.standard_normal((KV, t, hd))
        out = {"k": k.astype(np.float32), "v": v.astype(np.float32)}
        if phase == "decode":
            q = 0.7 * r.standard_normal((H, hd)) + 2.5 * np.repeat(u, group, axis=0) + off
            out["q"] = q.astype(np.float32)
        return out

    meta = {"generator": "lowbit.sim.lop_select.synthetic_qk_trace", "seed": seed, "tensors": "synthetic q/k/v"}
    return write_qk_trace(m, prefill, decode, out_dir, make, meta=meta, overwrite=overwrite)


# ----------------------------------------------------------------------------- one decode step at long context


def select_positions(q: np.ndarray, keys: np.ndarray, k: int, n_buckets: int) -> np.ndarray:
    """The selection rule (module docstring, steps 1, 3, 4) for one KV head: float32 queries [group, hd] of
    the heads sharing it and its cached keys [M, hd] -> the min(k, M) ascending positions fetched (one
    lop_topk over the group's summed LO scores), all M positions when k >= M."""
    m = keys.shape[0]
    if k >= m:
        return np.arange(m, dtype=np.int64)
    scores = _lo_int8(np.asarray(q, np.float32)) @ _lo_int8(np.asarray(keys, np.float32)).T  # exact (docstring)
    return lop_group_topk(scores.astype(np.int64), scores.shape[0], k, n_buckets)[1][0]


def synthetic_step_positions(model: ModelSpec, context: int, cfg: LopConfig, k: int | None = None,
                             seed: int = 0) -> dict[tuple[int, int], list[np.ndarray]]:
    """Data-driven selections of one decode step (step 1, M = `context` cached keys) on synthetic q/k drawn
    like :func:`synthetic_qk_trace` (a topic direction per layer and KV head, ~6 % relevant keys, attention
    sinks at position 0 and every 97th; same distribution, drawn per KV head so that memory stays one head's
    keys at any context): {(layer, 1): positions per KV head}, the form simulate(lop_positions=...) takes.
    Deterministic in `seed` (numpy default_rng([seed, layer, kv head, 1 << 21]))."""
    kk = cfg.k if k is None else int(k)
    KV, H, hd = model.n_kv_heads, model.n_heads, model.head_dim
    group = H // KV
    out: dict[tuple[int, int], list[np.ndarray]] = {}
    for layer in range(model.n_layers):
        heads = []
        for g in range(KV):
            r = np.random.default_rng([seed, layer, g, 1 << 21])
            u = r.standard_normal(hd)
            u /= np.linalg.norm(u)
            off = r.standard_normal((group, hd))
            pos = np.arange(context)
            a = np.where(r.random(context) < 0.06, r.integers(1, 4, context), 0).astype(np.float32)
            a[(pos == 0) | (pos % 97 == 0)] = 6.0
            keys = r.standard_normal((context, hd), dtype=np.float32) + (a[:, None] * 3.0) * u.astype(np.float32)
            q = 0.7 * r.standard_normal((group, hd)) + 2.5 * u + off
            heads.append(select_positions(q.astype(np.float32), keys, kk, cfg.buckets) if cfg.enabled
                         else np.arange(context, dtype=np.int64))
        out[(layer, 1)] = heads
    return out
