"""lowbit trace format v1: the only contract between `models` (PyTorch capture) and `sim`.

On disk a trace is a directory:
    manifest.json   {"format": "lowbit-trace", "version": 1, "model": {ModelSpec fields},
                     "prefill": P, "decode": D, "n_ops": N, "tensor_files": ["tensors/xxx.safetensors", ...],
                     "meta": {...free-form provenance...}}
    ops.jsonl       one op per line, in execution order (see OP_FIELDS)
    tensors/        optional safetensors (or .npz) files; an op names its tensors as {"q": "key"} and the key
                    must exist in one of manifest.tensor_files.

Every op carries: op (kind), name, layer (-1 for model-level ops), phase ("prefill"|"decode"), step
(0 for prefill, 1..D for decode steps) and the kind's own integer/string fields below.

Batched traces (B sequences decoded together): the manifest adds "sequences": [{"context": C_b, "prefill": P_b,
"decode": D_b}, ...] (C_b tokens already in sequence b's KV cache when the trace starts, P_b prompt tokens
prefilled in step 0, D_b decode steps; manifest prefill = sum of P_b, decode = max of D_b). The attention ops
(kv_append, attn_qk, softmax, attn_av) are per sequence and carry "seq": b (their tokens and context are
sequence b's); every other op runs once per step over the tokens of all sequences of that step. Sequence b
takes part in decode steps 1..D_b. docs/batching.md describes the format and the serving mode.

An lm_head op may carry "logits": the positions whose logits the step produces, one per sequence whose last
position (the end of its prompt, or a decode token) is in the step (logits_rows). Batched steps carry it (in a
batched trace: the number of sequences in the step); without it (one-sequence traces) the rule is the one of a
single sequence: every decode token, the last prompt position.

LayerNorm (encoders such as BERT/MiniLM) is recorded as kind `rmsnorm` with role "layernorm": on the SFU
both are two passes over the row (statistics, then normalise), so they share a timing model.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lowbit.sim.atomic import atomic_dir, output_error
from lowbit.sim.errors import TraceError, WorkloadError, did_you_mean
from lowbit.sim.modelspec import WEIGHT_FORMATS, ModelSpec
from lowbit.sim.schema import Range, as_bool, as_int, as_str, clip, short

FORMAT = "lowbit-trace"
VERSION = 1
PHASES = ("prefill", "decode")

# Required per-kind fields: name -> type (int or str or a tuple of allowed strings).
OP_FIELDS: dict[str, dict[str, Any]] = {
    "embedding": {"tokens": int, "dim": int, "vocab": int},
    "rmsnorm": {"tokens": int, "dim": int},
    "quantize": {"tokens": int, "dim": int},
    "linear": {"tokens": int, "in_features": int, "out_features": int, "weight_format": WEIGHT_FORMATS},
    "rope": {"tokens": int, "heads": int, "kv_heads": int, "head_dim": int},
    "kv_append": {"tokens": int, "kv_heads": int, "head_dim": int, "context": int},
    "attn_qk": {"tokens": int, "heads": int, "kv_heads": int, "head_dim": int, "context": int},
    "softmax": {"tokens": int, "heads": int, "context": int},
    "attn_av": {"tokens": int, "heads": int, "kv_heads": int, "head_dim": int, "context": int},
    "activation": {"tokens": int, "dim": int, "fn": ("relu2", "relu", "silu", "gelu"), "gated": bool},
    "elementwise": {"tokens": int, "dim": int, "fn": ("add", "mul")},
    "lm_head": {"tokens": int, "in_features": int, "out_features": int, "weight_format": WEIGHT_FORMATS},
}
OP_KINDS = tuple(OP_FIELDS)
# Optional fields any op may carry ("seq": the sequence of a per-sequence op in a batched trace).
OPTIONAL_FIELDS = {"role": str, "tensors": dict, "seq": int}
# Optional integer fields of one kind, kept in the op's args when present ("logits": module docstring).
OPTIONAL_ARGS: dict[str, tuple[str, ...]] = {"lm_head": ("logits",)}
# Op kinds that run per sequence in a batched trace (each sequence attends to its own KV cache).
PER_SEQUENCE = ("kv_append", "attn_qk", "softmax", "attn_av")


@dataclass
class Op:
    """One traced operation. `args` holds the kind's fields (OP_FIELDS); `tensors` maps role -> tensor key."""

    op: str
    name: str
    layer: int
    phase: str
    step: int
    args: dict[str, Any]
    role: str = ""
    tensors: dict[str, str] = field(default_factory=dict)
    seq: int = 0  # sequence index of a per-sequence op in a batched trace

    def __getitem__(self, key: str) -> Any:
        return self.args[key]

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"op": self.op, "name": self.name, "layer": self.layer, "phase": self.phase,
                             "step": self.step, **self.args}
        if self.role:
            d["role"] = self.role
        if self.tensors:
            d["tensors"] = self.tensors
        if self.seq:
            d["seq"] = self.seq
        return d


def logits_rows(o: Op) -> int:
    """Positions whose logits an lm_head op produces: its "logits" field (batched and served steps: one per
    sequence whose last position is in the step; 0 in a step that only continues prompts), else a single
    sequence's rule: every decode token, and in prefill the prompt's last position only (DESIGN CHOICE, as
    llama.cpp and vLLM compute only the logits generation samples from)."""
    if "logits" in o.args:
        return o.args["logits"]
    return o.args["tokens"] if o.phase == "decode" else 1


@dataclass(frozen=True)
class SeqSpec:
    """One sequence of a batched trace: `context` tokens already cached, `prefill` prompt tokens in step 0,
    `decode` decode steps (it takes part in steps 1..decode)."""

    context: int = 0
    prefill: int = 0
    decode: int = 0


class GeneratedOps:
    """A trace's op list generated step by step on demand (memory independent of the number of steps):
    `step_fn(i)` returns the ops of the i-th forward step. Iterating yields every op; `steps()` yields whole
    steps; len() is the op count. `probe_fn(i)`, if given, returns step i's ops for a one-layer copy of the
    model, whose decoder layer stands for all n_layers identical ones (cheap workload estimates)."""

    def __init__(self, n_steps: int, step_fn: Any, n_ops: int, chunks: int, probe_fn: Any = None) -> None:
        self.n_steps, self.step_fn, self.n_ops, self.chunks = n_steps, step_fn, n_ops, chunks
        self.probe_fn = probe_fn

    def steps(self) -> Iterator[list[Op]]:
        return (self.step_fn(i) for i in range(self.n_steps))

    def __iter__(self) -> Iterator[Op]:
        for ops in self.steps():
            yield from ops

    def __len__(self) -> int:
        return self.n_ops

    def __getitem__(self, i: int) -> Op:
        return list(self)[i]


def chunk_count(ops: list[Op]) -> int:
    """Chunks the engine lowers one step into: runs of consecutive ops of one layer."""
    return 1 + sum(1 for a, b in zip(ops, ops[1:], strict=False) if a.layer != b.layer)


@dataclass
class Trace:
    """A workload: model shape, phases and the ordered op list; `root` is set when loaded from disk."""

    model: ModelSpec
    prefill: int
    decode: int
    ops: list[Op]
    tensor_files: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    root: Path | None = None
    sequences: list[SeqSpec] | None = None  # batched traces: one entry per sequence (None: one sequence)

    @property
    def batch(self) -> int:
        return len(self.sequences) if self.sequences else 1

    def steps(self) -> Iterator[list[Op]]:
        """The ops grouped by forward step (prefill, then each decode step), generated lazily when the trace
        is (GeneratedOps)."""
        if isinstance(self.ops, GeneratedOps):
            yield from self.ops.steps()
            return
        cur: list[Op] = []
        key = None
        for o in self.ops:
            k = (o.phase, o.step)
            if k != key and cur:
                yield cur
                cur = []
            key = k
            cur.append(o)
        if cur:
            yield cur

    def n_chunks(self) -> int:
        """Chunks (one layer of one step) the engine lowers the trace into."""
        if isinstance(self.ops, GeneratedOps):
            return self.ops.chunks
        return sum(chunk_count(ops) for ops in self.steps())

    def has_tensors(self) -> bool:
        return not isinstance(self.ops, GeneratedOps) and any(o.tensors for o in self.ops)

    def summary(self) -> dict[str, Any]:
        kinds = Counter(o.op for o in self.ops)
        macs = {"linear": 0, "attention": 0}
        for o in self.ops:
            if o.op in ("linear", "lm_head"):  # an lm_head with "logits": only those rows
                rows = o.args.get("logits", o["tokens"]) if o.op == "lm_head" else o["tokens"]
                macs["linear"] += rows * o["in_features"] * o["out_features"]
            elif o.op in ("attn_qk", "attn_av"):
                macs["attention"] += o["tokens"] * o["heads"] * o["head_dim"] * o["context"]
        return {"model": self.model.name, "layers": self.model.n_layers, "prefill": self.prefill,
                "decode": self.decode, "ops": len(self.ops), "ops_by_kind": dict(kinds), "macs": macs,
                "tensors": len(self.tensor_files)}

    def load_tensor(self, key: str) -> Any:
        """Return a numpy array stored under `key` in one of the trace's tensor files."""
        if self.root is None:
            raise TraceError(f"tensor '{key}' requested from an in-memory trace with no tensor files")
        for rel in self.tensor_files:
            path = self.root / rel
            if key in _tensor_keys(path):
                return _read_tensor(path, key)
        raise TraceError(f"{self.root}: tensor '{key}' not found in any of {self.tensor_files}")


# Bounds on what a trace may hold (memory before any simulation): an op record costs ~0.5 KiB in memory.
MAX_OPS = 2**23                    # 8,388,608 ops (~4 GiB of op records); a 4k-token 2B4T trace has ~3.3 M
MAX_MANIFEST_BYTES = 16 << 20      # manifest.json
MAX_LINE_BYTES = 64 << 10          # one line of ops.jsonl
FIELD = Range(0, 2**31, lo_open=True, integer=True)  # any size field, before the model cross-check
INDEX = Range(-1, 2**31, integer=True)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _json(text: str | bytes, where: str, what: str = "invalid JSON") -> Any:
    """json.loads that refuses NaN/Infinity and turns every parse failure into a one-line TraceError."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise TraceError(f"{where}: {what} ({e.msg} at line {e.lineno} col {e.colno}); the file may be truncated") from None
    except UnicodeDecodeError:
        raise TraceError(f"{where}: not a UTF-8 text file") from None
    except (ValueError, RecursionError) as e:  # NaN/Infinity, a > 4300-digit number, nesting too deep
        msg = str(e).splitlines()[0] if isinstance(e, ValueError) else "nested too deeply"
        raise TraceError(f"{where}: {what} ({msg})") from None


_KEY_CACHE: dict[tuple[str, float], dict[str, tuple[str, tuple[int, ...]]]] = {}


def _tensor_index(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{key: (dtype, shape)} of a safetensors or .npz file, from its header (TraceError if unreadable)."""
    try:
        cache_key = (str(path), path.stat().st_mtime)
        if cache_key not in _KEY_CACHE:
            if path.suffix == ".npz":
                import numpy as np

                with np.load(path, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
                    _KEY_CACHE[cache_key] = {k: (a.dtype.name, tuple(a.shape)) for k, a in arrays.items()}
            else:
                from safetensors import safe_open

                with safe_open(str(path), "np") as f:
                    idx = {}
                    for k in f.keys():
                        sl = f.get_slice(k)
                        idx[k] = (str(sl.get_dtype()).lower(), tuple(sl.get_shape()))
                    _KEY_CACHE[cache_key] = idx
        return _KEY_CACHE[cache_key]
    except Exception as e:  # SafetensorError, BadZipFile, ValueError, OSError...: an unreadable file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise TraceError(f"{path}: not a readable {'.npz' if path.suffix == '.npz' else 'safetensors'} "
                         f"tensor file ({first}); re-capture the trace") from None


def _tensor_keys(path: Path) -> set[str]:
    return set(_tensor_index(path))


def _read_tensor(path: Path, key: str) -> Any:
    import numpy as np

    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return z[key]
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            return f.get_tensor(key)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise TraceError(f"{path}: cannot read tensor '{key}' ({first}); re-capture the trace") from None


# ----------------------------------------------------------------------------- validation


def _check_op(d: Any, where: str) -> Op:
    """One op line: its kind, the common fields and the kind's own fields, each with its type and range."""
    if not isinstance(d, dict):
        raise TraceError(f"{where}: an op must be a JSON object, got {type(d).__name__}")
    kind = d.get("op")
    if not isinstance(kind, str) or kind not in OP_FIELDS:
        raise TraceError(f"{where}: unknown op {short(kind)}{did_you_mean(str(kind), OP_KINDS)}; allowed: {', '.join(OP_KINDS)}")
    for key in ("name", "layer", "phase", "step"):
        if key not in d:
            raise TraceError(f"{where}: op '{kind}' is missing required field '{key}'")
    name = as_str(d["name"], where, "name", TraceError, max_len=1024)
    layer = as_int(d["layer"], where, "layer", INDEX, TraceError)
    step = as_int(d["step"], where, "step", Range(0, 2**31, integer=True), TraceError)
    if d["phase"] not in PHASES:
        raise TraceError(f"{where}: phase = {short(d['phase'])}: must be 'prefill' or 'decode'")
    args: dict[str, Any] = {}
    for key, tp in OP_FIELDS[kind].items():
        if key not in d:
            raise TraceError(f"{where}: op '{kind}' is missing required field '{key}'")
        v = d[key]
        if isinstance(tp, tuple):
            if not isinstance(v, str) or v not in tp:
                raise TraceError(f"{where}: {kind}.{key} = {short(v)}: must be one of {', '.join(tp)}")
        elif tp is bool:
            as_bool(v, where, f"{kind}.{key}", TraceError)
        else:
            as_int(v, where, f"{kind}.{key}", FIELD, TraceError)
        args[key] = v
    for key in OPTIONAL_ARGS.get(kind, ()):
        if key in d:
            args[key] = as_int(d[key], where, f"{kind}.{key}", Range(0, 2**31, integer=True), TraceError)
    if args.get("logits", 0) > args.get("tokens", 0):
        raise TraceError(f"{where}: {kind}.logits = {args['logits']}: more logits rows than the step's tokens "
                         f"({args['tokens']})")
    known = set(OP_FIELDS[kind]) | {"op", "name", "layer", "phase", "step"} | set(OPTIONAL_FIELDS) \
        | set(OPTIONAL_ARGS.get(kind, ()))
    extra = set(d) - known
    if extra:
        raise TraceError(f"{where}: op '{kind}' has unknown field(s) {clip(', '.join(sorted(map(str, extra))))}")
    role = as_str(d.get("role", ""), where, "role", TraceError, max_len=64)
    tensors = d.get("tensors", {})
    if not isinstance(tensors, dict) or not all(isinstance(v, str) and len(v) <= 1024 for v in tensors.values()):
        raise TraceError(f"{where}: 'tensors' must map names to tensor keys (strings)")
    if set(tensors) - TENSOR_ROLES.get(kind, set()):
        raise TraceError(f"{where}: op '{kind}' carries tensors {short(sorted(tensors))}; allowed: "
                         f"{', '.join(sorted(TENSOR_ROLES.get(kind, ()))) or 'none'}")
    seq = as_int(d.get("seq", 0), where, "seq", Range(0, 2**16, integer=True), TraceError)
    if seq and kind not in PER_SEQUENCE:
        raise TraceError(f"{where}: op '{kind}' has seq = {seq}; only the per-sequence ops "
                         f"({', '.join(PER_SEQUENCE)}) name a sequence")
    return Op(kind, name, layer, d["phase"], step, args, role, tensors, seq)


# Tensor roles an op may carry (the LOP selection contract, lowbit.sim.lop_select).
TENSOR_ROLES = {"kv_append": {"k", "v"}, "attn_qk": {"q"}}


def _check_model(d: Any, where: str) -> ModelSpec:
    if not isinstance(d, dict):
        raise TraceError(f"{where}: 'model' must be an object")
    allowed = {f.name for f in fields(ModelSpec)}
    unknown = set(d) - allowed
    if unknown:
        raise TraceError(f"{where}: model has unknown field(s) {clip(', '.join(sorted(map(str, unknown))))}")
    required = [f.name for f in fields(ModelSpec) if f.default is MISSING]
    missing = [f for f in required if f not in d]
    if missing:
        raise TraceError(f"{where}: model is missing field(s) {', '.join(missing)}")
    spec = ModelSpec(**d)
    try:
        spec.validate()
    except WorkloadError as e:  # -> TraceError with location
        raise TraceError(f"{where}: {e}") from None
    return spec


def _uniq(*widths: int) -> tuple[int, ...]:
    """The distinct widths, in order (the attention width n_heads * head_dim is d_model in most models)."""
    return tuple(dict.fromkeys(widths))


class _Expect:
    """What every op of a trace must agree with: its model's shape and the trace's phases (cross-field rules).

    - step: prefill ops are step 0 (only when prefill > 0); decode ops are steps 1..decode; steps appear in
      order (all of prefill, then decode step 1, 2, ...) and every one of them is present;
    - layer: -1 (model level) or 0..n_layers-1;
    - tokens: prefill tokens in prefill, 1 in a decode step; context: prefill, or prefill + step in decode;
      an lm_head's logits (if present): 1, or in a batched trace the number of sequences in the step;
    - shapes: heads, kv_heads, head_dim as the model's; a linear's in/out features among the model's
      projection widths, lm_head d_model -> vocab; norms, quantize and residuals over d_model or d_ffn,
      the activation over d_ffn with `gated` as the model's FFN.
    """

    def __init__(self, m: ModelSpec, prefill: int, decode: int, seqs: list[SeqSpec] | None = None) -> None:
        self.m, self.P, self.D, self.seqs = m, prefill, decode, seqs
        d, F, hd, A = m.d_model, m.d_ffn, m.head_dim, m.attn_dim  # A: attention width (q out, o in)
        self.fixed = {"heads": m.n_heads, "kv_heads": m.n_kv_heads, "head_dim": hd}
        self.dims = {
            ("linear", "in_features"): _uniq(d, A, F), ("linear", "out_features"): _uniq(d, A, m.n_kv_heads * hd, F),
            ("lm_head", "in_features"): (d,), ("lm_head", "out_features"): (m.vocab,),
            ("embedding", "dim"): (d,), ("rmsnorm", "dim"): _uniq(d, A, F), ("quantize", "dim"): _uniq(d, A, F),
            ("elementwise", "dim"): (d, F), ("activation", "dim"): (F,),
        }
        self.key = (-1, -1)  # (order of the current step, step)
        self.seen: list[int] = []

    def check(self, o: Op, where: str) -> None:
        m = self.m
        if o.phase == "prefill":
            if o.step != 0 or self.P == 0:
                raise TraceError(f"{where}: prefill op at step {o.step}: prefill ops are step 0, and only when "
                                 f"the manifest's prefill ({self.P}) is > 0")
            order = 0
        else:
            if not 1 <= o.step <= self.D:
                raise TraceError(f"{where}: decode step {o.step}: must be in 1..{self.D} (the manifest's decode)")
            order = o.step
        if order < self.key[0]:
            raise TraceError(f"{where}: {o.phase} step {o.step} after step {self.key[1]}: ops must be in execution "
                             "order (prefill, then decode steps 1, 2, ...)")
        if order != self.key[0]:
            self.key = (order, o.step)
            self.seen.append(order)
        if o.layer >= m.n_layers:
            raise TraceError(f"{where}: layer = {o.layer}: model {m.name} has layers 0..{m.n_layers - 1} (-1: model level)")
        tokens = self.P if o.phase == "prefill" else 1
        context = self.P if o.phase == "prefill" else self.P + o.step
        logits = 1
        if self.seqs is not None:
            tokens, context, logits = self._batched(o, where)
        for key, v in o.args.items():
            want: tuple[int, ...] | None
            if key == "tokens":
                want = (tokens,)
            elif key == "logits":
                want = (logits,)
            elif key == "context":
                want = (context,) if context is not None else None
            elif key in self.fixed:
                want = (self.fixed[key],)
            elif key == "vocab":  # token, position or token-type tables (BERT): at most the larger of the two
                if v > max(m.vocab, m.max_positions):
                    raise TraceError(f"{where}: {o.op}.vocab = {v}: more rows than the model's vocab {m.vocab} "
                                     f"and max_positions {m.max_positions}")
                continue
            else:
                want = self.dims.get((o.op, key))
            if want is not None and v not in want:
                raise TraceError(f"{where}: {o.op}.{key} = {v} contradicts model {m.name} "
                                 f"({self._why(key, o.phase)}: {' or '.join(map(str, want))})")
        if o.op == "activation" and o.args["gated"] != m.gated:
            raise TraceError(f"{where}: activation.gated = {str(o.args['gated']).lower()} contradicts model "
                             f"{m.name}'s ffn_act '{m.ffn_act}'")

    def _batched(self, o: Op, where: str) -> tuple[int, int | None, int]:
        """(tokens, context, logits) an op of a batched trace must have: a per-sequence op its sequence's, any
        other op the tokens of all sequences in its step (context: not checked); logits: one per sequence in
        the step (each ends its prompt in step 0, or decodes a token)."""
        seqs = self.seqs or []
        if o.phase == "prefill":
            live = [b for b, q in enumerate(seqs) if q.prefill]
        else:
            live = [b for b, q in enumerate(seqs) if q.decode >= o.step]
        if o.op not in PER_SEQUENCE:
            return (sum(seqs[b].prefill for b in live) if o.phase == "prefill" else len(live)), None, len(live)
        if o.seq not in live:
            raise TraceError(f"{where}: seq = {o.seq}: sequence not in {o.phase} step {o.step} (sequences there: "
                             f"{short(live)})")
        q = seqs[o.seq]
        if o.phase == "prefill":
            return q.prefill, q.context + q.prefill, 0
        return 1, q.context + q.prefill + o.step, 0

    def _why(self, key: str, phase: str) -> str:
        if key == "logits":
            return "one logits row per sequence in the step" if self.seqs is not None else "one sequence"
        if self.seqs is not None and key in ("tokens", "context"):
            return "manifest sequences: " + ("tokens of the step's sequences (its own, for a per-sequence op)"
                                             if key == "tokens" else "the sequence's context + prefill (+ step)")
        if key == "tokens":
            return "prefill tokens" if phase == "prefill" else "one token per decode step"
        if key == "context":
            return "prefill" if phase == "prefill" else "prefill + step"
        return f"its {key}" if key in self.fixed else "allowed"

    def finish(self, where: str) -> None:
        want = ([0] if self.P else []) + list(range(1, self.D + 1))
        if self.seen != want:
            missing = sorted(set(want) - set(self.seen))
            raise TraceError(f"{where}: steps {missing[:5]}{'...' if len(missing) > 5 else ''} are missing "
                             f"(prefill {self.P}, decode {self.D} need step 0 and steps 1..{self.D}); the trace "
                             "is incomplete")


def load_trace(root: str | Path, check_tensors: bool = True) -> Trace:
    """Load and validate a trace directory; raise TraceError with a one-line explanation on any problem.

    Checks, before any simulation: the manifest and every op against the schema (types, ranges), every op
    against the model and the phases (`_Expect`), the size bounds (MAX_OPS, MAX_MANIFEST_BYTES,
    MAX_LINE_BYTES) and, with `check_tensors`, every referenced tensor: present, float, finite, and shaped
    as the LOP contract says (k, v: [kv_heads, tokens, head_dim]; q: [heads, head_dim] or [heads, 1, head_dim])."""
    root = Path(root)
    if not root.is_dir():
        raise TraceError(f"trace directory not found: {root} (create one with `lowbit trace --out {root}`)")
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise TraceError(f"{root}: no manifest.json — not a lowbit trace directory")
    try:
        size = mpath.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise TraceError(f"{mpath}: {size} bytes; a manifest is at most {MAX_MANIFEST_BYTES} bytes")
        man = _json(mpath.read_bytes(), str(mpath))
    except OSError as e:
        raise TraceError(f"{mpath}: cannot read ({e.strerror or e})") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise TraceError(f"{mpath}: 'format' must be '{FORMAT}'")
    if man.get("version") != VERSION or isinstance(man.get("version"), bool):
        raise TraceError(f"{mpath}: trace version {short(man.get('version'))} is not supported (this lowbit reads version {VERSION}); re-capture the trace")
    for key in ("model", "prefill", "decode"):
        if key not in man:
            raise TraceError(f"{mpath}: missing required field '{key}'")
    model = _check_model(man["model"], str(mpath))
    for key in ("prefill", "decode"):
        if isinstance(man[key], bool) or not isinstance(man[key], int) or man[key] < 0:
            raise TraceError(f"{mpath}: '{key}' = {short(man[key])}: must be an integer >= 0")
    P, D = man["prefill"], man["decode"]
    seqs = _check_sequences(man.get("sequences"), str(mpath), P, D)
    if P + D == 0 or P + D > model.max_positions:
        raise TraceError(f"{mpath}: prefill + decode = {P + D}: must be in 1..{model.max_positions} "
                         f"(model {model.name}'s max_positions)")
    n_ops = man.get("n_ops")
    if n_ops is not None:
        as_int(n_ops, str(mpath), "n_ops", Range(0, MAX_OPS, integer=True), TraceError)
    meta = man.get("meta", {})
    if not isinstance(meta, dict):
        raise TraceError(f"{mpath}: 'meta' must be an object")
    tfiles = man.get("tensor_files", [])
    if not isinstance(tfiles, list) or not all(isinstance(t, str) for t in tfiles):
        raise TraceError(f"{mpath}: 'tensor_files' must be a list of paths")
    for t in tfiles:
        p = Path(t)
        if p.is_absolute() or ".." in p.parts or not (root / t).is_file():
            raise TraceError(f"{root}: tensor file {short(t)} listed in manifest.json is missing "
                             "(tensor files are relative paths inside the trace directory)")
    opath = root / "ops.jsonl"
    if not opath.is_file():
        raise TraceError(f"{root}: ops.jsonl is missing")
    expect = _Expect(model, P, D, seqs)
    ops: list[Op] = []
    try:
        with opath.open("rb") as f:
            for i, raw in enumerate(f, 1):
                if len(raw) > MAX_LINE_BYTES:
                    raise TraceError(f"{opath}:{i}: a line of {len(raw)} bytes; an op is at most {MAX_LINE_BYTES}")
                if not raw.strip():
                    continue
                if len(ops) >= MAX_OPS:
                    raise TraceError(f"{opath}: more than {MAX_OPS} ops (the bound on a trace held in memory); "
                                     "capture fewer steps")
                where = f"{opath}:{i}"
                o = _check_op(_json(raw, where), where)
                expect.check(o, where)
                ops.append(o)
    except OSError as e:
        raise TraceError(f"{opath}: cannot read ({e.strerror or e})") from None
    if n_ops is not None and n_ops != len(ops):
        raise TraceError(f"{opath}: has {len(ops)} ops but manifest.json says n_ops = {n_ops}; the trace is incomplete")
    expect.finish(str(opath))
    tr = Trace(model, P, D, ops, tfiles, meta, root, seqs)
    if seqs is not None and tfiles:
        raise TraceError(f"{mpath}: a batched trace ('sequences') cannot carry tensors; data-driven LOP selection "
                         "reads a one-sequence trace")
    if seqs is not None and any(q.context + q.prefill + q.decode > model.max_positions for q in seqs):
        raise TraceError(f"{mpath}: a sequence's context + prefill + decode exceeds model {model.name}'s "
                         f"max_positions {model.max_positions}")
    if check_tensors and tfiles:
        _check_tensors(tr, opath)
    elif check_tensors:
        for i, o in enumerate(ops, 1):
            if o.tensors:
                raise TraceError(f"{opath}:{i}: op references tensors but manifest.json lists no tensor_files")
    return tr


MAX_SEQUENCES = 4096


def _check_sequences(v: Any, where: str, P: int, D: int) -> list[SeqSpec] | None:
    """The manifest's optional "sequences" list; prefill must be their sum of prefill, decode their max decode."""
    if v is None:
        return None
    if not isinstance(v, list) or not 1 <= len(v) <= MAX_SEQUENCES:
        raise TraceError(f"{where}: 'sequences' must be a list of 1..{MAX_SEQUENCES} objects")
    out = []
    for i, d in enumerate(v):
        if not isinstance(d, dict) or set(d) - {"context", "prefill", "decode"}:
            raise TraceError(f"{where}: sequences[{i}] must be an object with context, prefill, decode")
        out.append(SeqSpec(**{k: as_int(d.get(k, 0), where, f"sequences[{i}].{k}", Range(0, 2**20, integer=True),
                                         TraceError) for k in ("context", "prefill", "decode")}))
    if sum(q.prefill for q in out) != P or max(q.decode for q in out) != D:
        raise TraceError(f"{where}: prefill {P} / decode {D} must be the sum of the sequences' prefill "
                         f"({sum(q.prefill for q in out)}) and the largest decode ({max(q.decode for q in out)})")
    return out


def _check_tensors(tr: Trace, opath: Path) -> None:
    """Every referenced tensor exists, is a float array of the contract's shape, and holds finite values."""
    assert tr.root is not None
    m = tr.model
    where_key: dict[str, Path] = {}
    index: dict[str, tuple[str, tuple[int, ...]]] = {}
    for t in tr.tensor_files:
        for k, v in _tensor_index(tr.root / t).items():
            where_key.setdefault(k, tr.root / t)
            index.setdefault(k, v)
    by_file: dict[Path, list[str]] = {}
    for i, o in enumerate(tr.ops, 1):
        for role, key in o.tensors.items():
            if key not in index:
                raise TraceError(f"{opath}:{i}: tensor '{key}' is not in any tensor file")
            dtype, shape = index[key]
            if o.op == "kv_append":
                want: tuple[tuple[int, ...], ...] = ((m.n_kv_heads, o["tokens"], m.head_dim),)
            else:
                want = ((m.n_heads, m.head_dim), (m.n_heads, 1, m.head_dim))
            if shape not in want:
                raise TraceError(f"{opath}:{i}: tensor '{key}' ({role}) has shape {list(shape)}; "
                                 f"the op needs {' or '.join(str(list(w)) for w in want)}")
            if not dtype.startswith(("float", "f16", "f32", "f64", "bf16")):
                raise TraceError(f"{opath}:{i}: tensor '{key}' ({role}) is {dtype}; must be a float tensor")
            by_file.setdefault(where_key[key], []).append(key)
    import numpy as np

    for path, keys in by_file.items():
        for key in dict.fromkeys(keys):
            a = _read_tensor(path, key)
            if not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all():
                raise TraceError(f"{path}: tensor '{key}' holds NaN or infinite values; re-capture the trace")


# ----------------------------------------------------------------------------- writing


def write_trace(trace: Trace, out: str | Path, tensor_dir: str | Path | None = None,
                overwrite: bool = False) -> Path:
    """Write atomically: everything goes to a locked temp dir next to `out`, renamed into place at the end
    (lowbit.sim.atomic); a failure or a kill leaves no partial trace.

    `tensor_dir`, if given, is a directory whose files (already listed in trace.tensor_files relative to the
    trace root, e.g. 'tensors/step1.safetensors') are moved into the new trace.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise TraceError(f"output directory {out} already exists; choose another --out or remove it")
    try:
        with atomic_dir(out, overwrite=overwrite) as tmp:
            if tensor_dir is not None:
                shutil.move(str(tensor_dir), tmp / "tensors")
            with (tmp / "ops.jsonl").open("w") as f:
                for o in trace.ops:
                    f.write(json.dumps(o.to_json(), separators=(",", ":"), allow_nan=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            man = {"format": FORMAT, "version": VERSION, "model": trace.model.to_dict(), "prefill": trace.prefill,
                   "decode": trace.decode, "n_ops": len(trace.ops), "tensor_files": trace.tensor_files,
                   "meta": trace.meta}
            if trace.sequences is not None:
                man["sequences"] = [asdict(q) for q in trace.sequences]
            with (tmp / "manifest.json").open("w") as f:
                f.write(json.dumps(man, indent=1, allow_nan=False))
                f.flush()
                os.fsync(f.fileno())
    except OSError as e:
        raise output_error(out, e) from None
    except ValueError as e:  # allow_nan=False: a NaN/inf in the model or meta is a bug of the producer
        raise TraceError(f"{out}: cannot write a trace with a non-finite number ({e})") from None
    return out


def iter_layer_ops(ops: Iterable[Op], layer: int) -> Iterator[Op]:
    return (o for o in ops if o.layer == layer)
