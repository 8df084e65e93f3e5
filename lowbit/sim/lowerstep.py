"""Step assembly: one forward step's ops -> per-layer instruction chunks (see sim.lower for the tiling
rules and the two scheduling policies). Dependency-aware attention is lowered here with head-level
pipelining; identical decoder layers share one cached block per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lowbit.sim.errors import WorkloadError
from lowbit.sim.lower import (
    ACT_BASE,
    D_ACT,
    D_KV,
    D_LOP,
    EXT,
    LOP_BASE,
    Emitter,
    Lowering,
    S,
    weight_bits,
)
from lowbit.sim.sched import C_DMAKV, C_DMAW, C_JOIN
from lowbit.sim.sram import B_ACT
from lowbit.sim.trace import Op

# ---------------------------------------------------------------------------------------------- one step

ATTN_SECTION = ("linear", "linear", "linear", "rope", "kv_append", "attn_qk", "softmax", "attn_av")


@dataclass
class StepStats:
    """Static per-step counters the engine aggregates (LOP accounting)."""

    kv_dense_bytes: int = 0   # K+V bytes dense attention would read in LOP-eligible steps
    kv_read_bytes: int = 0    # K+V bytes actually read in those steps
    lop_bytes: int = 0        # LO-code bytes read in those steps
    lm_head_macs: int = 0
    lm_head_bytes: int = 0


def _sig(lw: Lowering, run: list[Op]) -> tuple:
    keys = []
    for o in run:
        if o.op == "attn_qk" and lw.use_lop(o):
            keys.append(tuple(lw.selected(o.layer, o.step, g, o["context"]) for g in range(lw.G)))
    return (tuple((o.op, o.role, o.phase, tuple(sorted(o.args.items()))) for o in run), tuple(keys))


def lower_runs(lw: Lowering, ops: list[Op]):
    """Lower the ops of one forward step, one chunk per run of ops with the same layer (see module
    docstring). Yields (arrays, names, kinds, stats, out) per chunk; `out` is the index of the chunk's final
    instruction (its end is the next chunk's input time) or -1 when the chunk only passes its input on.
    In a chunk, dependency EXT (-2) means "the previous chunk's output".

    Decoder layers with the same op shapes (and LOP selections) lower to the same instruction block up to
    DRAM addresses, so one block per distinct layer signature is built and placed per layer (speed)."""
    runs: list[list[Op]] = []
    for o in ops:
        if runs and runs[-1][0].layer == o.layer:
            runs[-1].append(o)
        else:
            runs.append([o])
    m = lw.model
    strides = (0, lw.G * 2 * m.max_positions * lw.hd, 0, lw.G * m.max_positions * lw.code_bytes)
    if len(lw.layer_cache) > 4:  # layer blocks of earlier steps (other contexts) are not reused: bound memory
        lw.layer_cache.clear()
    for run in runs:
        layer = run[0].layer
        e = Emitter()
        names: list[str] = []
        kinds: list[str] = []
        st = StepStats()
        if layer < 0:
            out = _lower_ops(lw, e, run, EXT, names, kinds, st)
            yield e.finish(), names, kinds, st, (out if out >= 0 else -1)
            continue
        key = _sig(lw, run)
        hit = lw.layer_cache.get(key)
        if hit is None:
            e2 = Emitter()
            st2 = StepStats()
            _lower_ops(lw, e2, run, EXT, [], [], st2)
            hit = (e2.finish(), st2)
            lw.layer_cache[key] = hit
        blk, st2 = hit
        if lw.layer_wbytes == 0:
            lw.layer_wbytes = lw.wtop
        offs = (layer * lw.layer_wbytes, layer * strides[1], 0, layer * strides[3])
        out = e.add_layer(blk, EXT, 0, offs)
        for f in ("kv_dense_bytes", "kv_read_bytes", "lop_bytes", "lm_head_macs", "lm_head_bytes"):
            setattr(st, f, getattr(st2, f))
        yield e.finish(), [o.name for o in run], [o.op for o in run], st, out


def _lower_ops(lw: Lowering, e: Emitter, ops: list[Op], d_in: int, names: list[str], kinds: list[str],
               st: StepStats) -> int:
    """Lower `ops` (in order) into `e`; the first op depends on `d_in`; returns the last op's join."""
    pending: list[int] = [d_in] if d_in != -1 else []  # joins the next op depends on
    shared: int | None = None     # input dep of the previous linear (q/k/v, gate/up share it)
    prev_lin: tuple | None = None
    att: dict[int, int] = {}      # kv head -> keys attended (set by attn_qk, used by softmax/attn_av)
    G, grp = lw.G, lw.grp

    def dep1() -> int:
        if not pending:
            return -1
        if len(pending) == 1:
            return pending[0]
        d = (pending + [-1, -1])[:3]
        return e.emit(C_JOIN, dep0=d[0], dep1=d[1], dep2=d[2], opi=len(names) - 1, sub=S["join"])

    def reg(op: Op) -> int:
        names.append(op.name)
        kinds.append(op.op)
        return len(names) - 1

    i = 0
    while i < len(ops):
        op = ops[i]
        sect = tuple(o.op for o in ops[i:i + 8])
        if lw.dep_aware and sect == ATTN_SECTION and op.role == "q":
            j = _fused_attention(lw, e, ops[i:i + 8], dep1(), reg, st)
            pending, shared, prev_lin = [j], None, None
            i += 8
            continue
        opi = reg(op)
        k = op.op
        if k == "linear" or (k == "lm_head" and lw.cfg.lm_head == "accelerator"):
            sig = (op["tokens"], op["in_features"])
            if lw.dep_aware and prev_lin == sig and shared is not None:
                ext = shared
                j = lw.add_linear(e, op, opi, ext)
                pending = pending + [j]
            else:
                ext = dep1()
                j = lw.add_linear(e, op, opi, ext)
                pending = [j]
            shared, prev_lin = ext, sig
            i += 1
            continue
        prev_lin, shared = None, None
        d = dep1()
        t = op["tokens"] if "tokens" in op.args else 1
        if k == "lm_head":  # on the host: excluded from accelerator time
            st.lm_head_macs += t * op["in_features"] * op["out_features"]
            st.lm_head_bytes += math.ceil(op["in_features"] * op["out_features"] * weight_bits(op["weight_format"]) / 8)
            j = d
        elif k == "embedding":
            j = e.emit(C_DMAW, nbytes=t * op["dim"] * 2, addr=ACT_BASE + (2 << 30), dcls=D_ACT, dep0=d, opi=opi,
                       sub=S["embed"], wbuf=B_ACT, wbytes=t * op["dim"] * 2)
        elif k in ("rmsnorm", "quantize", "elementwise", "activation"):
            j = lw.sfu(e, k, t, op["dim"], opi, (d,))
        elif k == "rope":
            j = lw.sfu(e, "rope", t * (op["heads"] + op["kv_heads"]), op["head_dim"], opi, (d,))
        elif k == "kv_append":
            first = e.n
            for g in range(G):
                _kv_write(lw, e, op, opi, g, d, st)
            j = e.emit(C_JOIN, jlo=first, jhi=e.n, opi=opi, sub=S["join"])
        elif k == "attn_qk":
            first = e.n
            ctx = op["context"]
            for g in range(G):
                keys, dep_k = ctx, d
                if lw.use_lop(op):
                    dep_k = lw.emit_lop(e, op, opi, g, ctx, (d, d))
                    keys = lw.selected(op.layer, op.step, g, ctx)
                    _lop_stats(lw, st, ctx, keys)
                att[g] = keys
                for q0, q1 in lw.qchunks(t, keys):
                    lw.emit_qk(e, op, opi, g, q0, q1, keys, ctx, dep_k, d, t > 1)
            j = e.emit(C_JOIN, jlo=first, jhi=e.n, opi=opi, sub=S["join"])
        elif k == "softmax":
            first = e.n
            for g in range(G):
                keys = att.get(g, op["context"])
                for q0, q1 in lw.qchunks(t, keys):
                    lw.sfu(e, "softmax", (q1 - q0) * grp, keys, opi, (d,))
            j = e.emit(C_JOIN, jlo=first, jhi=e.n, opi=opi, sub=S["join"])
        elif k == "attn_av":
            first = e.n
            for g in range(G):
                keys = att.get(g, op["context"])
                for q0, q1 in lw.qchunks(t, keys):
                    lw.emit_av(e, op, opi, g, q0, q1, keys, op["context"], d, d, t > 1)
            j = e.emit(C_JOIN, jlo=first, jhi=e.n, opi=opi, sub=S["join"])
        else:  # pragma: no cover - trace validation rejects unknown kinds
            raise WorkloadError(f"op {op.name}: kind '{k}' is not supported by the simulator")
        pending = [j] if j != -1 else []
        i += 1
    return dep1()


def _kv_write(lw: Lowering, e: Emitter, op: Op, opi: int, g: int, dep: int, st: StepStats,
              dep2: int = -1) -> int:
    """Write the new tokens' K and V (INT8) and, with LOP in DRAM, their LO codes."""
    t, hd = op["tokens"], lw.hd
    pos = op["context"] - t
    j = e.emit(C_DMAKV, nbytes=2 * t * hd, addr=lw.kv_addr(0, g, False) + pos * hd, wr=1, dcls=D_KV,
               dep0=dep, dep1=dep2, opi=opi, sub=S["kv_wr"], rbuf=B_ACT, rbytes=2 * t * hd)
    if lw.lop_on and lw.cfg.lop.surrogate_storage == "dram":
        cb = lw.code_bytes
        j = e.emit(C_DMAKV, nbytes=t * cb, addr=LOP_BASE + ((0 * lw.G + g) * lw.model.max_positions + pos)
                   * cb, wr=1, dcls=D_LOP, dep0=dep, dep1=dep2, opi=opi, sub=S["kv_wr"], rbuf=B_ACT,
                   rbytes=t * cb)
    return j


def _lop_stats(lw: Lowering, st: StepStats, ctx: int, keys: int) -> None:
    st.kv_dense_bytes += 2 * ctx * lw.hd
    st.kv_read_bytes += 2 * keys * lw.hd
    if lw.cfg.lop.surrogate_storage == "dram":
        st.lop_bytes += ctx * lw.code_bytes


def _fused_attention(lw: Lowering, e: Emitter, ops: list[Op], d_in: int, reg, st: StepStats) -> int:
    """Dependency-aware attention block with head-level pipelining: Q/K/V tiles of KV head g+1 are listed
    before the attention of head g, so the projection cores work on g+1 while BoothFlex runs g."""
    q, k, v, rope, kva, qk, sm, av = ops
    opis = [reg(o) for o in ops]
    G, grp, hd = lw.G, lw.grp, lw.hd
    t = q["tokens"]
    first = e.n

    # pipeline unit: hg KV heads, so that hg*head_dim rows are a multiple of the tile row multiple L
    L = lw.plan_linear(q, t, q["in_features"], q["out_features"], q["weight_format"]).L
    hg = min(G, L // math.gcd(L, hd))
    groups = [(g0, min(G, g0 + hg)) for g0 in range(0, G, hg)]

    def proj(g0: int, g1: int) -> tuple[int, int, int, int, int]:
        nh = g1 - g0
        jq = lw.add_linear(e, q, opis[0], d_in, fout=nh * grp * hd, row0=g0 * grp * hd)
        jk = lw.add_linear(e, k, opis[1], d_in, fout=nh * hd, row0=g0 * hd)
        jv = lw.add_linear(e, v, opis[2], d_in, fout=nh * hd, row0=g0 * hd)
        r = lw.sfu(e, "rope", t * (grp + 1) * nh, hd, opis[3], (jq, jk))
        w = -1
        for g in range(g0, g1):
            w = _kv_write(lw, e, kva, opis[4], g, r, st, jv)
        return g0, g1, r, jv, w

    def attn(g0: int, g1: int, r: int, jv: int, w: int) -> None:
        ctx = qk["context"]
        for g in range(g0, g1):
            keys = ctx
            dep_k = w if t > 1 else -1  # decode: cached K/V are already in DRAM -> prefetch early
            if lw.use_lop(qk):
                dep_k = lw.emit_lop(e, qk, opis[5], g, ctx, (-1, r))
                keys = lw.selected(qk.layer, qk.step, g, ctx)
                _lop_stats(lw, st, ctx, keys)
            for q0, q1 in lw.qchunks(t, keys):
                jqk = lw.emit_qk(e, qk, opis[5], g, q0, q1, keys, ctx, dep_k, r, t > 1)
                s_ = lw.sfu(e, "softmax", (q1 - q0) * grp, keys, opis[6], (jqk,))
                lw.emit_av(e, av, opis[7], g, q0, q1, keys, ctx, dep_k if dep_k >= 0 else jv, s_, t > 1)

    prev = proj(*groups[0])
    for gr in groups[1:]:
        cur = proj(*gr)
        attn(*prev)
        prev = cur
    attn(*prev)
    return e.emit(C_JOIN, jlo=first, jhi=e.n, opi=opis[7], sub=S["join"])
