"""Reading a trace directory (lowbit.sim.trace's format): bounds, the checks of every manifest field and op
against its model, and `load_trace`. Every problem is one TraceError naming the file, line and field."""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from lowbit.sim.errors import TraceError, WorkloadError, did_you_mean
from lowbit.sim.modelspec import ModelSpec
from lowbit.sim.schema import Range, as_bool, as_int, as_str, clip, short
from lowbit.sim.trace import (
    FORMAT,
    OP_FIELDS,
    OP_KINDS,
    OPTIONAL_ARGS,
    OPTIONAL_FIELDS,
    PER_SEQUENCE,
    PHASES,
    VERSION,
    Op,
    SeqSpec,
    Trace,
    _json,
    _read_tensor,
    _tensor_index,
)

# Bounds on what a trace may hold (memory before any simulation): an op record costs ~0.5 KiB in memory.
MAX_OPS = 2**23                    # 8,388,608 ops (~4 GiB of op records); a 4k-token 2B4T trace has ~3.3 M
MAX_MANIFEST_BYTES = 16 << 20      # manifest.json
MAX_LINE_BYTES = 64 << 10          # one line of ops.jsonl
FIELD = Range(0, 2**31, lo_open=True, integer=True)  # any size field, before the model cross-check
INDEX = Range(-1, 2**31, integer=True)


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


