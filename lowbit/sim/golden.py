"""Hardware-exact golden of whole forward steps: the integers every chip buffer holds when a ternary model runs
prefill P + decode D steps (the definition of what the chip computes; docs/golden.md lists every stage's format
and source). numpy only, sim.numerics applied to the deployed weights (lowbit.sim.golden_weights). On a preset
with an FP4 core the projections are NVFP4 / MXFP4 and run on it (lowbit.sim.golden_fp4); the rest is unchanged.

Per step (op names and order of sim.workloads.layer_ops; units as sim.lower assigns them)::

    embed (Q7.8 rows) -> per layer:
      attn_norm (SFU RMSNorm) -> attn_quant (SFU absmax INT8) -> attn.q/k/v (TINT: ternary x INT8, int acc with
      overflow flag) -> requant to Q7.8 -> attn.rope (SFU RoPE of q, k) -> per token and head absmax INT8 of q, k, v
      -> attn.kv_append (INT8 K, V and their amax; 4-bit LO codes of K) -> [decode with LOP: attn.lop (LO scores
      per query head, summed per KV group, one comparison-free top-K per KV head)] -> attn.qk (BoothFlex INT8 x
      INT8) -> requant (x amax_q amax_k / (127^2 sqrt(hd))) -> attn.softmax (SFU, UQ1.15) -> p x amax_v, absmax
      INT8 -> attn.av (BoothFlex) -> requant -> [attn_sub_norm] -> o_quant -> attn.o -> requant -> attn_residual
      (saturating add) -> ffn_norm -> ffn_quant -> ffn.gate, ffn.up -> ffn.act (SFU ReLU^2 / SiLU gating)
      -> [ffn_sub_norm] -> down_quant -> ffn.down -> ffn_residual
    -> final_norm -> lm_quant -> lm_head (INT8 on BoothFlex, or ternary on TINT) -> logits (Q7.8)

Attention tiling: the lowering's dense tiling (every query's scores over all its keys in one psum chunk; query
chunks do not change any rounding). Shapes the lowering tiles with online softmax (running max and rescaling
across key blocks) are refused: that tiling rounds differently and is not in this golden. Only the last
position of each step produces logits (sim.lower's on-chip lm_head rule) unless ``all_logits``.

Records: ``GoldenStep.buffers[f"{op}.{buffer}"]`` (e.g. ``layers.0.attn.q.acc``, ``layers.1.attn.softmax.p``,
``lm_head.logits``); the keys and shapes are listed in docs/golden.md and by :func:`buffer_keys`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lowbit.sim.config import HwConfig
from lowbit.sim.errors import WorkloadError
from lowbit.sim.golden_fp4 import fp4_accumulate, fp4_row_multipliers
from lowbit.sim.golden_weights import Deployed, DeployedLinear, linear_names
from lowbit.sim.numerics.booth import booth_multiply
from lowbit.sim.numerics.lop import lo_code4, lo_decode4, lop_group_topk
from lowbit.sim.numerics.requant import fixed_multiplier, requant, residual_add
from lowbit.sim.numerics.sfu import sfu_absmax_quantize
from lowbit.sim.numerics.sfu_elem import rope_table, sfu_act, sfu_rope
from lowbit.sim.numerics.sfu_reduce import sfu_rmsnorm, sfu_softmax
from lowbit.sim.numerics.tint import tint_dot
from lowbit.sim.sram import Buffers
from lowbit.sim.tiling import attention_plan

__all__ = ["GoldenSettings", "GoldenStep", "GoldenRun", "golden_run", "buffer_keys", "diff_runs", "attn_multipliers",
           "linear_multipliers"]

ACT_IN_BITS = 16   # SFU absmax quantizer input: Q7.8 activations
PW_IN_BITS = 32    # ... and p x amax_v products (< 2^30)


@dataclass(frozen=True, kw_only=True)
class GoldenSettings:
    """The hardware parameters the golden's integers depend on (from a HwConfig: :meth:`from_hw`)."""

    tree_width: int          # TINT adder-tree width (accumulation granularity of the overflow flag)
    tint_acc_bits: int
    booth_width: int         # BoothFlex products per lane per cycle
    booth_acc_bits: int
    booth_ternary: bool      # BoothFlex may also run ternary projection tiles (dual core)
    lop: bool
    lop_k: int
    lop_buckets: int
    lop_score_bits: int
    lm_head: str = "int8"
    proj: str = "ternary"    # projections' format: "ternary" (TINT / BoothFlex) or "nvfp4" / "mxfp4" (FP4 core)
    fp4_block_sum_bits: int = 16
    fp4_acc_bits: int = 32
    fp4_frac_bits: int = 8

    @classmethod
    def from_hw(cls, cfg: HwConfig, lop: bool | None = None) -> GoldenSettings:
        """Settings of `cfg`; `lop` overrides cfg.lop.enabled. A "host" lm_head is computed as the chip's INT8
        lm_head (the golden's logits are on-chip integers; docs/golden.md)."""
        lm = cfg.lm_head if cfg.lm_head in ("int8", "ternary") else "int8"
        if cfg.lm_head in ("nvfp4", "mxfp4"):
            raise WorkloadError(f"{cfg.name}: lm_head '{cfg.lm_head}': the golden runs the lm_head as int8 or ternary; "
                                "set lm_head = \"int8\"")
        f = cfg.fp4
        return cls(tree_width=cfg.tint.tree_width, tint_acc_bits=cfg.tint.acc_bits, booth_width=cfg.booth.width,
                   booth_acc_bits=cfg.booth.acc_bits, booth_ternary=cfg.booth.ternary_mode,
                   lop=cfg.lop.enabled if lop is None else lop, lop_k=cfg.lop.k, lop_buckets=cfg.lop.buckets,
                   lop_score_bits=cfg.lop.score_bits, lm_head=lm, proj=f.format if f.enabled else "ternary",
                   fp4_block_sum_bits=f.block_sum_bits, fp4_acc_bits=f.acc_bits, fp4_frac_bits=f.frac_bits)


@dataclass
class GoldenStep:
    """One forward step: phase, first position, its token ids and every buffer's integers."""

    phase: str
    start: int
    ids: np.ndarray
    buffers: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def logits(self) -> np.ndarray:
        """Q7.8 logits of the positions that produce them (int64 [rows, vocab])."""
        return self.buffers["lm_head.logits"]


@dataclass
class GoldenRun:
    """Prefill + decode steps (``steps[0]`` is the prefill when P > 0) and the tokens fed."""

    steps: list[GoldenStep]
    tokens: np.ndarray

    def float_logits(self) -> np.ndarray:
        """Every step's logits rows as reals (Q7.8 / 256), stacked."""
        return np.concatenate([s.logits for s in self.steps]).astype(np.float64) / 256.0


def attn_multipliers(head_dim: int) -> dict[str, tuple[int, int]]:
    """Requantization constants of attention (sim.numerics.requant.fixed_multiplier): scores
    ``1 / (127^2 * 2^8 * sqrt(hd))`` of acc x amax_q x amax_k, outputs ``1 / (127^2 * 2^15)`` of acc x amax_pw."""
    return {"qk": fixed_multiplier(1.0 / (127.0 * 127.0 * 256.0 * math.sqrt(head_dim))),
            "av": fixed_multiplier(1.0 / (127.0 * 127.0 * 32768.0))}


def linear_multipliers(lin: DeployedLinear) -> tuple[np.ndarray, np.ndarray]:
    """Per output row (m, sh) of the real multiplier wscale / 127 (acc x amax x that = the Q7.8 output)."""
    ms = [fixed_multiplier(float(w) / 127.0) for w in lin.wscale]
    return np.array([m for m, _ in ms], np.int64), np.array([s for _, s in ms], np.int64)


def _prefix_overflow(terms: np.ndarray, chunk: int, acc_bits: int) -> np.ndarray:
    """Sticky overflow of an ``acc_bits`` accumulator adding ``chunk`` terms per cycle (last axis), per row."""
    k = terms.shape[-1]
    n = -(-k // chunk)
    pad = np.zeros(terms.shape[:-1] + (n * chunk - k,), np.int64)
    sums = np.concatenate([terms, pad], axis=-1).reshape(terms.shape[:-1] + (n, chunk)).sum(-1)
    pre = np.cumsum(sums, axis=-1)
    lim = 1 << (acc_bits - 1)
    return np.any((pre < -lim) | (pre >= lim), axis=-1)


class _Golden:
    def __init__(self, dep: Deployed, st: GoldenSettings, cfg: HwConfig) -> None:
        self.dep, self.st, self.cfg, self.spec = dep, st, cfg, dep.spec
        self.bufs = Buffers.from_config(cfg)
        s = self.spec
        self.mult = {n: fp4_row_multipliers(lin.fp4, st.fp4_frac_bits) if lin.fp4 is not None
                     else linear_multipliers(lin) for n, lin in dep.linears.items()}
        self.att = attn_multipliers(s.head_dim)
        self.cos, self.sin = rope_table(np.arange(s.max_positions), s.head_dim, s.rope_theta)
        L, KV, hd = s.n_layers, s.n_kv_heads, s.head_dim
        self.k8 = np.zeros((L, 0, KV, hd), np.int64)
        self.v8 = np.zeros((L, 0, KV, hd), np.int64)
        self.ka = np.zeros((L, 0, KV), np.int64)
        self.va = np.zeros((L, 0, KV), np.int64)
        self.lo = np.zeros((L, 0, KV, hd), np.int64)

    # -- units
    def _booth_dot(self, a: np.ndarray, b: np.ndarray, what: str) -> np.ndarray:
        """BoothFlex INT8 x INT8 dot products over the last axis (radix-4 Booth products, exact sum)."""
        prod = booth_multiply(a, b, 8)
        if np.any(_prefix_overflow(prod, self.st.booth_width, self.st.booth_acc_bits)):
            raise WorkloadError(f"{what}: the BoothFlex accumulator ({self.st.booth_acc_bits} bits) overflows; "
                                "widen booth.acc_bits")
        return prod.sum(-1)

    def _linear(self, b: dict, name: str, xq: np.ndarray, amax: np.ndarray) -> np.ndarray:
        lin = self.dep.linears[name]
        st = self.st
        if lin.fmt == "ternary":
            acc, ovf = tint_dot(lin.codes, xq[:, None, :], st.tree_width, st.tint_acc_bits)
            if st.booth_ternary:  # a ternary tile may also run on BoothFlex (static assignment): both must hold it
                ovf = ovf | tint_dot(lin.codes, xq[:, None, :], 4 * st.booth_width, st.booth_acc_bits)[1]
            if np.any(ovf):
                raise WorkloadError(f"{name}: a ternary accumulator (tint.acc_bits {st.tint_acc_bits}, booth.acc_bits "
                                    f"{st.booth_acc_bits}) overflows; widen it")
        elif lin.fp4 is not None:
            acc = fp4_accumulate(lin.fp4, xq, block_sum_bits=st.fp4_block_sum_bits, acc_bits=st.fp4_acc_bits,
                                 frac_bits=st.fp4_frac_bits, what=name)
            if acc.size and np.abs(acc).max() >= 1 << 31:
                raise WorkloadError(f"{name}: an FP4 accumulator exceeds the requantizer's 32-bit input; "
                                    "use fp4.acc_bits <= 32")
        else:
            acc = self._booth_dot(xq[:, None, :].astype(np.int64), lin.codes[None].astype(np.int64), name)
        m, sh = self.mult[name]
        y = requant(acc, amax, m[None, :], sh[None, :])
        b[f"{name}.acc"], b[f"{name}.out"] = acc, y
        return y

    def _norm(self, b: dict, name: str, x: np.ndarray) -> np.ndarray:
        y = sfu_rmsnorm(x, self.dep.norms[name], self.spec.norm_eps).astype(np.int64)
        b[f"{name}.out"] = y
        return y

    def _quant(self, b: dict, name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q, amax = sfu_absmax_quantize(x, ACT_IN_BITS)
        b[f"{name}.q"], b[f"{name}.amax"] = q.astype(np.int64), amax[..., 0]
        return q.astype(np.int64), amax

    # -- attention
    def _attention(self, b: dict, layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray, start: int,
                   decode: bool) -> np.ndarray:
        s, st = self.spec, self.st
        T, H, KV, hd = q.shape[0], s.n_heads, s.n_kv_heads, s.head_dim
        grp = H // KV
        p = f"layers.{layer}.attn"
        q8, qa = sfu_absmax_quantize(q, ACT_IN_BITS)
        k8, ka = sfu_absmax_quantize(k, ACT_IN_BITS)
        v8, va = sfu_absmax_quantize(v, ACT_IN_BITS)
        q8, k8, v8 = (a.astype(np.int64) for a in (q8, k8, v8))
        qa, ka, va = qa[..., 0], ka[..., 0], va[..., 0]
        lo = lo_code4(k8).astype(np.int64)
        b[f"{p}.qk.q8"], b[f"{p}.qk.q_amax"] = q8, qa
        for n, a in (("k8", k8), ("k_amax", ka), ("v8", v8), ("v_amax", va), ("lo", lo)):
            b[f"{p}.kv_append.{n}"] = a
        self.k8 = _append(self.k8, layer, k8)
        self.v8 = _append(self.v8, layer, v8)
        self.ka = _append(self.ka, layer, ka)
        self.va = _append(self.va, layer, va)
        self.lo = _append(self.lo, layer, lo)
        M = start + T
        plan = attention_plan(self.bufs, grp, hd, T, M)
        if plan.online:
            raise WorkloadError(f"{s.name} on {self.cfg.name}: {T} queries x {M} keys are tiled with online softmax "
                                "(rescaled across key blocks), which the golden does not model; use a shorter prompt "
                                "or a larger psum buffer")
        K8, V8 = self.k8[layer, :M], self.v8[layer, :M]
        KA, VA = self.ka[layer, :M], self.va[layer, :M]
        keys = np.arange(M)[None, :] <= (start + np.arange(T))[:, None]  # [T, M] causal
        keys = np.broadcast_to(keys, (H, T, M)).copy()
        if decode and st.lop:
            keys = self._lop(b, p, q8, self.lo[layer, :M], keys)
        hdr = (H, T, M)
        qk, sc, pr, w8 = (np.zeros(hdr, np.int64) for _ in range(4))
        wa = np.zeros((H, T), np.int64)
        acc_av = np.zeros((H, T, hd), np.int64)
        (m_qk, sh_qk), (m_av, sh_av) = self.att["qk"], self.att["av"]
        for h in range(H):
            g = h // grp
            for t in range(T):
                j = np.flatnonzero(keys[h, t])
                acc = self._booth_dot(q8[t, h][None, :], K8[j, g], f"{p}.qk")
                score = requant(acc, qa[t, h] * KA[j, g], m_qk, sh_qk)
                prob = sfu_softmax(score[None])[0].astype(np.int64)
                wq, amx = sfu_absmax_quantize((prob * VA[j, g])[None], PW_IN_BITS)
                wq = wq[0].astype(np.int64)
                qk[h, t, j], sc[h, t, j], pr[h, t, j], w8[h, t, j] = acc, score, prob, wq
                wa[h, t] = amx[0, 0]
                acc_av[h, t] = self._booth_dot(wq[None, :], V8[j, g].T, f"{p}.av")
        out = requant(acc_av, wa[..., None], m_av, sh_av)  # [H, T, hd]
        out = out.transpose(1, 0, 2).reshape(T, H * hd)
        b[f"{p}.qk.keys"], b[f"{p}.qk.acc"], b[f"{p}.qk.scores"] = keys, qk, sc
        b[f"{p}.softmax.p"], b[f"{p}.softmax.w8"], b[f"{p}.softmax.w_amax"] = pr, w8, wa
        b[f"{p}.av.acc"], b[f"{p}.av.out"] = acc_av, out
        return out

    def _lop(self, b: dict, p: str, q8: np.ndarray, lo: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """LO scores from the stored 4-bit codes per query head, summed per KV group, one top-K per KV head over
        the group scores (sim.numerics.lop.lop_group_topk; decode: T = 1)."""
        s, st = self.spec, self.st
        H, KV = s.n_heads, s.n_kv_heads
        grp = H // KV
        M = lo.shape[0]
        kpow = lo_decode4(lo)  # [M, KV, hd] signed powers of two
        qpow = lo_decode4(lo_code4(q8[0]))  # [H, hd]
        scores = np.stack([kpow[:, h // grp] @ qpow[h] for h in range(H)])  # [H, M]
        gsum, idx = lop_group_topk(scores, grp, st.lop_k, st.lop_buckets)  # [KV, M], [KV, min(K, M)]
        lim = 1 << (st.lop_score_bits - 1)
        for what, a in (("LO scores", scores), ("LO group scores", gsum)):
            if np.any((a < -lim) | (a >= lim)):
                raise WorkloadError(f"{p}: {what} exceed lop.score_bits {st.lop_score_bits}; widen it")
        sel = np.zeros((KV, M), bool)
        sel[np.arange(KV)[:, None], idx] = True
        b[f"{p}.lop.scores"], b[f"{p}.lop.group_scores"], b[f"{p}.lop.sel"] = scores, gsum, sel
        return keys & np.repeat(sel, grp, axis=0)[:, None, :]

    # -- a step
    def step(self, ids: np.ndarray, start: int, phase: str, all_logits: bool) -> GoldenStep:
        s = self.spec
        T = len(ids)
        if start + T > s.max_positions:
            raise WorkloadError(f"positions up to {start + T} exceed {s.name}'s max_positions {s.max_positions}")
        gs = GoldenStep(phase, start, np.asarray(ids, np.int64))
        b = gs.buffers
        x = self.dep.embed[gs.ids]
        b["embed.out"] = x
        cos, sin = self.cos[start:start + T, None, :], self.sin[start:start + T, None, :]
        for layer in range(s.n_layers):
            p = f"layers.{layer}"
            n = self._norm(b, f"{p}.attn_norm", x)
            xq, am = self._quant(b, f"{p}.attn_quant", n)
            q = self._linear(b, f"{p}.attn.q", xq, am).reshape(T, s.n_heads, s.head_dim)
            k = self._linear(b, f"{p}.attn.k", xq, am).reshape(T, s.n_kv_heads, s.head_dim)
            v = self._linear(b, f"{p}.attn.v", xq, am).reshape(T, s.n_kv_heads, s.head_dim)
            q, k = sfu_rope(q, cos, sin).astype(np.int64), sfu_rope(k, cos, sin).astype(np.int64)
            b[f"{p}.attn.rope.q"], b[f"{p}.attn.rope.k"] = q, k
            a = self._attention(b, layer, q, k, v, start, phase == "decode" and T == 1)
            if s.subln:
                a = self._norm(b, f"{p}.attn_sub_norm", a)
            aq, am = self._quant(b, f"{p}.o_quant", a)
            x = residual_add(x, self._linear(b, f"{p}.attn.o", aq, am))
            b[f"{p}.attn_residual.out"] = x
            n = self._norm(b, f"{p}.ffn_norm", x)
            xq, am = self._quant(b, f"{p}.ffn_quant", n)
            up = self._linear(b, f"{p}.ffn.up", xq, am)
            gate = self._linear(b, f"{p}.ffn.gate", xq, am)
            f = sfu_act(gate, up, "relu2" if s.ffn_act == "relu2_glu" else "silu").astype(np.int64)
            b[f"{p}.ffn.act.out"] = f
            if s.subln:
                f = self._norm(b, f"{p}.ffn_sub_norm", f)
            fq, am = self._quant(b, f"{p}.down_quant", f)
            x = residual_add(x, self._linear(b, f"{p}.ffn.down", fq, am))
            b[f"{p}.ffn_residual.out"] = x
        rows = x if all_logits else x[-1:]
        n = self._norm(b, "final_norm", rows)
        xq, am = self._quant(b, "lm_quant", n)
        b["lm_head.logits"] = self._linear(b, "lm_head", xq, am)
        return gs


def _append(cache: np.ndarray, layer: int, new: np.ndarray) -> np.ndarray:
    """Write `new` [T, ...] after layer `layer`'s filled positions (the cache grows on layer 0's append)."""
    if layer == 0:
        cache = np.concatenate([cache, np.zeros((cache.shape[0],) + new.shape, np.int64)], axis=1)
    cache[layer, -new.shape[0]:] = new
    return cache


def golden_run(dep: Deployed, cfg: HwConfig, prompt: np.ndarray | list[int], decode: int | list[int] = 0, *,
               lop: bool | None = None, all_logits: bool = False,
               settings: GoldenSettings | None = None) -> GoldenRun:
    """Prefill `prompt` in one step, then decode steps: `decode` a count (greedy: each step feeds the previous
    step's argmax logit, lowest index on ties) or the list of token ids to feed. `lop` overrides cfg.lop.enabled."""
    st = settings or GoldenSettings.from_hw(cfg, lop)
    if dep.linears["lm_head"].fmt != st.lm_head:
        raise WorkloadError(f"deployed lm_head is {dep.linears['lm_head'].fmt}, the settings say {st.lm_head}; "
                            f"deploy with lm_head='{st.lm_head}'")
    fmts = {dep.linears[n].fmt for i in range(dep.spec.n_layers) for n in linear_names(dep.spec, i)}
    if fmts != {st.proj}:
        raise WorkloadError(f"deployed projections are {', '.join(sorted(fmts))}, {cfg.name}'s core runs {st.proj}; "
                            f"deploy with proj='{st.proj}'")
    spec = dep.spec
    ids = np.asarray(prompt, np.int64).reshape(-1)
    feed = None if isinstance(decode, int | np.integer) else np.asarray(decode, np.int64).reshape(-1)
    n_dec = int(decode) if feed is None else len(feed)
    allowed = (ids, feed) if feed is not None else (ids,)
    for arr in allowed:
        if arr.size and (arr.min() < 0 or arr.max() >= spec.vocab):
            raise WorkloadError(f"token ids must lie in 0..{spec.vocab - 1} for {spec.name}")
    if ids.size == 0:
        raise WorkloadError("prompt: need at least one token")
    g = _Golden(dep, st, cfg)
    steps = [g.step(ids, 0, "prefill", all_logits)]
    tokens = list(ids)
    for i in range(n_dec):
        nxt = int(np.argmax(steps[-1].logits[-1])) if feed is None else int(feed[i])
        tokens.append(nxt)
        steps.append(g.step(np.array([nxt]), len(tokens) - 1, "decode", all_logits))
    return GoldenRun(steps, np.asarray(tokens, np.int64))


def buffer_keys(run: GoldenRun) -> dict[str, list[tuple[int, ...]]]:
    """Every recorded buffer key with its shape in each step."""
    out: dict[str, list[tuple[int, ...]]] = {}
    for s in run.steps:
        for k, v in s.buffers.items():
            out.setdefault(k, []).append(tuple(np.shape(v)))
    return out


def diff_runs(ref: GoldenRun, other: list[dict[str, np.ndarray]], keys: list[str] | None = None) -> list[str]:
    """Mismatches between `ref`'s buffers and `other` (one dict of buffers per step, e.g. a chip bench's reads):
    one line per differing buffer (step, key, count of differing elements, first index), [] when bit-exact.
    `keys` restricts the comparison; a key missing on either side is a mismatch."""
    lines = []
    if len(other) != len(ref.steps):
        return [f"steps: reference has {len(ref.steps)}, other {len(other)}"]
    for i, (s, o) in enumerate(zip(ref.steps, other, strict=True)):
        names = keys if keys is not None else sorted(set(s.buffers) | set(o))
        for k in names:
            if k not in s.buffers or k not in o:
                lines.append(f"step {i} {k}: missing on the {'reference' if k not in s.buffers else 'other'} side")
                continue
            a, c = np.asarray(s.buffers[k]), np.asarray(o[k])
            if a.shape != c.shape:
                lines.append(f"step {i} {k}: shape {a.shape} vs {c.shape}")
                continue
            bad = np.argwhere(a.astype(np.int64) != c.astype(np.int64))
            if len(bad):
                at = tuple(int(v) for v in bad[0])
                lines.append(f"step {i} {k}: {len(bad)} of {a.size} differ, first at {at} "
                             f"({a[at]} vs {c[at]})")
    return lines
