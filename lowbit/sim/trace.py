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

LayerNorm (encoders such as BERT/MiniLM) is recorded as kind `rmsnorm` with role "layernorm": on the SFU
both are two passes over the row (statistics, then normalise), so they share a timing model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lowbit.sim.errors import TraceError, WorkloadError, did_you_mean
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
# Optional fields any op may carry.
OPTIONAL_FIELDS = {"role": str, "tensors": dict}


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

    def __getitem__(self, key: str) -> Any:
        return self.args[key]

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"op": self.op, "name": self.name, "layer": self.layer, "phase": self.phase,
                             "step": self.step, **self.args}
        if self.role:
            d["role"] = self.role
        if self.tensors:
            d["tensors"] = self.tensors
        return d


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

    def summary(self) -> dict[str, Any]:
        kinds = Counter(o.op for o in self.ops)
        macs = {"linear": 0, "attention": 0}
        for o in self.ops:
            if o.op in ("linear", "lm_head"):
                macs["linear"] += o["tokens"] * o["in_features"] * o["out_features"]
            elif o.op in ("attn_qk", "attn_av"):
                macs["attention"] += o["tokens"] * o["heads"] * o["head_dim"] * o["context"]
        return {"model": self.model.name, "layers": self.model.n_layers, "prefill": self.prefill,
                "decode": self.decode, "ops": len(self.ops), "ops_by_kind": dict(kinds), "macs": macs,
                "tensors": len(self.tensor_files)}

    def load_tensor(self, key: str) -> Any:
        """Return a numpy array stored under `key` in one of the trace's tensor files."""
        import numpy as np

        if self.root is None:
            raise TraceError(f"tensor '{key}' requested from an in-memory trace with no tensor files")
        for rel in self.tensor_files:
            path = self.root / rel
            keys = _tensor_keys(path)
            if key in keys:
                if path.suffix == ".npz":
                    with np.load(path) as z:
                        return z[key]
                from safetensors.numpy import load_file

                return load_file(str(path))[key]
        raise TraceError(f"{self.root}: tensor '{key}' not found in any of {self.tensor_files}")


_KEY_CACHE: dict[tuple[str, float], set[str]] = {}


def _tensor_keys(path: Path) -> set[str]:
    cache_key = (str(path), path.stat().st_mtime)
    if cache_key not in _KEY_CACHE:
        if path.suffix == ".npz":
            import numpy as np

            with np.load(path) as z:
                _KEY_CACHE[cache_key] = set(z.files)
        else:
            from safetensors import safe_open

            with safe_open(str(path), "np") as f:
                _KEY_CACHE[cache_key] = set(f.keys())
    return _KEY_CACHE[cache_key]


# ----------------------------------------------------------------------------- validation


def _check_op(d: Any, where: str) -> Op:
    if not isinstance(d, dict):
        raise TraceError(f"{where}: an op must be a JSON object, got {type(d).__name__}")
    kind = d.get("op")
    if kind not in OP_FIELDS:
        raise TraceError(f"{where}: unknown op '{kind}'{did_you_mean(str(kind), OP_KINDS)}; allowed: {', '.join(OP_KINDS)}")
    for key, tp in (("name", str), ("layer", int), ("phase", str), ("step", int)):
        if key not in d:
            raise TraceError(f"{where}: op '{kind}' is missing required field '{key}'")
        if not isinstance(d[key], tp) or isinstance(d[key], bool):
            raise TraceError(f"{where}: field '{key}' = {d[key]!r} must be {tp.__name__}")
    if d["phase"] not in PHASES:
        raise TraceError(f"{where}: phase = {d['phase']!r}: must be 'prefill' or 'decode'")
    args: dict[str, Any] = {}
    for key, tp in OP_FIELDS[kind].items():
        if key not in d:
            raise TraceError(f"{where}: op '{kind}' is missing required field '{key}'")
        v = d[key]
        if isinstance(tp, tuple):
            if v not in tp:
                raise TraceError(f"{where}: {kind}.{key} = {v!r}: must be one of {', '.join(tp)}")
        elif tp is bool:
            if not isinstance(v, bool):
                raise TraceError(f"{where}: {kind}.{key} = {v!r}: must be true or false")
        elif tp is int:
            if not isinstance(v, int) or isinstance(v, bool):
                raise TraceError(f"{where}: {kind}.{key} = {v!r}: must be an integer")
            if v <= 0:
                raise TraceError(f"{where}: {kind}.{key} = {v}: must be > 0")
        args[key] = v
    known = set(OP_FIELDS[kind]) | {"op", "name", "layer", "phase", "step"} | set(OPTIONAL_FIELDS)
    extra = set(d) - known
    if extra:
        raise TraceError(f"{where}: op '{kind}' has unknown field(s) {', '.join(sorted(extra))}")
    tensors = d.get("tensors", {})
    if not isinstance(tensors, dict) or not all(isinstance(v, str) for v in tensors.values()):
        raise TraceError(f"{where}: 'tensors' must map names to tensor keys (strings)")
    return Op(kind, d["name"], d["layer"], d["phase"], d["step"], args, d.get("role", ""), tensors)


def _check_model(d: Any, where: str) -> ModelSpec:
    if not isinstance(d, dict):
        raise TraceError(f"{where}: 'model' must be an object")
    allowed = {f.name for f in fields(ModelSpec)}
    unknown = set(d) - allowed
    if unknown:
        raise TraceError(f"{where}: model has unknown field(s) {', '.join(sorted(unknown))}")
    try:
        spec = ModelSpec(**d)
    except TypeError as e:
        raise TraceError(f"{where}: model is missing fields: {e}") from None
    for f in ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_ffn", "vocab"):
        v = getattr(spec, f)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise TraceError(f"{where}: model.{f} = {v!r}: must be a positive integer")
    try:
        spec.validate()
    except WorkloadError as e:  # -> TraceError with location
        raise TraceError(f"{where}: {e}") from None
    return spec


def load_trace(root: str | Path, check_tensors: bool = True) -> Trace:
    """Load and validate a trace directory; raise TraceError with a one-line explanation on any problem."""
    root = Path(root)
    if not root.is_dir():
        raise TraceError(f"trace directory not found: {root} (create one with `lowbit trace --out {root}`)")
    mpath = root / "manifest.json"
    if not mpath.exists():
        raise TraceError(f"{root}: no manifest.json — not a lowbit trace directory")
    try:
        man = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise TraceError(f"{mpath}: invalid JSON ({e.msg} at line {e.lineno} col {e.colno}); the file may be truncated") from None
    except UnicodeDecodeError:
        raise TraceError(f"{mpath}: not a UTF-8 text file") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise TraceError(f"{mpath}: 'format' must be '{FORMAT}'")
    if man.get("version") != VERSION:
        raise TraceError(f"{mpath}: trace version {man.get('version')!r} is not supported (this lowbit reads version {VERSION}); re-capture the trace")
    for key in ("model", "prefill", "decode"):
        if key not in man:
            raise TraceError(f"{mpath}: missing required field '{key}'")
    for key in ("prefill", "decode"):
        if not isinstance(man[key], int) or isinstance(man[key], bool) or man[key] < 0:
            raise TraceError(f"{mpath}: '{key}' = {man[key]!r}: must be an integer >= 0")
    model = _check_model(man["model"], str(mpath))
    tfiles = man.get("tensor_files", [])
    if not isinstance(tfiles, list) or not all(isinstance(t, str) for t in tfiles):
        raise TraceError(f"{mpath}: 'tensor_files' must be a list of paths")
    for t in tfiles:
        if not (root / t).exists():
            raise TraceError(f"{root}: tensor file '{t}' listed in manifest.json is missing")
    opath = root / "ops.jsonl"
    if not opath.exists():
        raise TraceError(f"{root}: ops.jsonl is missing")
    ops: list[Op] = []
    with opath.open() as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise TraceError(f"{opath}:{i}: invalid JSON ({e.msg}); the file may be truncated") from None
            ops.append(_check_op(d, f"{opath}:{i}"))
    if "n_ops" in man and man["n_ops"] != len(ops):
        raise TraceError(f"{opath}: has {len(ops)} ops but manifest.json says n_ops = {man['n_ops']}; the trace is incomplete")
    tr = Trace(model, man["prefill"], man["decode"], ops, tfiles, man.get("meta", {}), root)
    if check_tensors and tfiles:
        known = set().union(*(_tensor_keys(root / t) for t in tfiles))
        for i, o in enumerate(ops, 1):
            for key in o.tensors.values():
                if key not in known:
                    raise TraceError(f"{opath}:{i}: tensor '{key}' is not in any tensor file")
    elif check_tensors:
        for i, o in enumerate(ops, 1):
            if o.tensors:
                raise TraceError(f"{opath}:{i}: op references tensors but manifest.json lists no tensor_files")
    return tr


# ----------------------------------------------------------------------------- writing


def write_trace(trace: Trace, out: str | Path, tensor_dir: str | Path | None = None,
                overwrite: bool = False) -> Path:
    """Write atomically: everything goes to a temp dir next to `out`, renamed into place at the end.

    `tensor_dir`, if given, is a directory whose files (already listed in trace.tensor_files relative to the
    trace root, e.g. 'tensors/step1.safetensors') are moved into the new trace.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise TraceError(f"output directory {out} already exists; choose another --out or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if tensor_dir is not None:
            shutil.move(str(tensor_dir), tmp / "tensors")
        with (tmp / "ops.jsonl").open("w") as f:
            for o in trace.ops:
                f.write(json.dumps(o.to_json(), separators=(",", ":")) + "\n")
        man = {"format": FORMAT, "version": VERSION, "model": asdict(trace.model), "prefill": trace.prefill,
               "decode": trace.decode, "n_ops": len(trace.ops), "tensor_files": trace.tensor_files,
               "meta": trace.meta}
        (tmp / "manifest.json").write_text(json.dumps(man, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def iter_layer_ops(ops: Iterable[Op], layer: int) -> Iterator[Op]:
    return (o for o in ops if o.layer == layer)
