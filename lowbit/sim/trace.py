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

Reading a trace, with every field checked against its model: lowbit.sim.trace_load.load_trace.

LayerNorm (encoders such as BERT/MiniLM) is recorded as kind `rmsnorm` with role "layernorm": on the SFU
both are two passes over the row (statistics, then normalise), so they share a timing model.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lowbit.sim.atomic import atomic_dir, output_error
from lowbit.sim.errors import TraceError
from lowbit.sim.modelspec import WEIGHT_FORMATS, ModelSpec

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
