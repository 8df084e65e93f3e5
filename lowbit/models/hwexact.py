"""Hardware-exact mode of the BitNet model in PyTorch: the chip's forward step as torch int64 tensor ops.

The same data path and formats as the numpy golden (lowbit.sim.golden; docs/golden.md), written independently
with torch ops on integer-valued tensors: TINT/BoothFlex dot products as exact int64 matmuls with the
accumulators' sticky overflow flags, the SFU's RMSNorm (table + Newton-Raphson 1/sqrt), absmax INT8 quantizer
(round half to even of 127 x / amax by integer division), RoPE, ReLU^2 / SiLU gating, base-2 softmax (table
exp2, Newton-Raphson reciprocal), the requantizer and the saturating residual add (sim.numerics.requant), LO
codes and the comparison-free top-K of each KV group's summed LO scores (lowbit.models.lop_attention
.lop_select), and the FP4 core's W4A8 block dot product (E2M1 codes and E4M3 / E8M0 block scales decoded
from their bit fields, exact block sums, scale shifts flooring, every register's range checked) for NVFP4 /
MXFP4 projections. Only compile-time data are shared
with the golden: the deployed weights (lowbit.sim.golden_weights.deploy), the RoPE table and the SFU's ROM
tables and per-op constants (sim.numerics.sfu_reduce / sfu_elem), the bits a program carries.

    hw = HwExactBitNet.from_model(model, load_config("tiny"))      # or HwExactBitNet(deploy(...), settings)
    steps = hw.run(prompt, decode=3)                               # [{buffer key: numpy array}, ...] per step

Buffer keys, shapes and order are the golden's (lowbit.sim.golden.diff_runs compares them).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from lowbit.models.bitnet import BitNet
from lowbit.models.lop_attention import LopAttention, lop_select
from lowbit.sim import golden
from lowbit.sim.config import HwConfig, load_config
from lowbit.sim.errors import WorkloadError
from lowbit.sim.golden import GoldenSettings, attn_multipliers
from lowbit.sim.golden_fp4 import fp4_multiplier
from lowbit.sim.golden_weights import Deployed, deploy, seeded_weights
from lowbit.sim.modelspec import ModelSpec, get_model
from lowbit.sim.numerics.requant import MULT_BITS, fixed_multiplier
from lowbit.sim.numerics.sfu_elem import SIG_FRAC, SIGMOID_TABLE, TRIG_FRAC, rope_table
from lowbit.sim.numerics.sfu_reduce import EXP2_TABLE, L2E, RECIP_TABLE, RSQRT_TABLE, rmsnorm_consts

I64 = torch.int64
_RSQRT = torch.tensor(RSQRT_TABLE, dtype=I64)
_EXP2 = torch.tensor(EXP2_TABLE, dtype=I64)
_RECIP = torch.tensor(RECIP_TABLE, dtype=I64)
_SIG = torch.tensor(SIGMOID_TABLE, dtype=I64)


def _bitlen(v: torch.Tensor) -> torch.Tensor:
    """bit_length of non-negative int64 values below 2^53 (exponent of the exact float64)."""
    return torch.frexp(v.to(torch.float64))[1].to(I64)


def _shr(v: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """v >> s for s >= 0, v << -s for s < 0 (elementwise)."""
    return torch.where(s >= 0, v >> s.clamp(min=0), v << (-s).clamp(min=0))


def _sat(v: torch.Tensor, bits: int = 16) -> torch.Tensor:
    return v.clamp(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def rmsnorm(x: torch.Tensor, g: torch.Tensor, eps: float) -> torch.Tensor:
    """SFU RMSNorm over the last axis (Q7.8 in/out, Q5.10 gain; sim.numerics.sfu_reduce's rule)."""
    eps_q, sd, e_sd = rmsnorm_consts(x.shape[-1], eps)
    v = (x * x).sum(-1, keepdim=True) + eps_q
    b = _bitlen(v)
    k2 = b - 24 + ((b - 24) & 1)
    m = _shr(v, k2)
    i = ((m >> 18) - 16).clamp(0, 47)
    d = m & ((1 << 18) - 1)
    t0, t1 = _RSQRT[i], _RSQRT[i + 1]
    y0 = t0 - (((t0 - t1) * d) >> 18)
    u = (m * ((y0 * y0) >> 23)) >> 22
    y1 = (y0 * ((3 << 23) - u)) >> 24
    big = (y1 * sd) >> 24
    s = 35 + k2 // 2 - e_sd
    out = _sat((x * g * big + (1 << (s - 1))) >> s)
    return torch.where(v == 0, torch.zeros_like(out), out)


def absmax_quant(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row absmax INT8: ``q = sign(x) RNE(127 |x| / amax)`` (exact integer division), amax [..., 1]."""
    mag = x.abs()
    amax = mag.amax(-1, keepdim=True)
    den = amax.clamp(min=1)
    num = 127 * mag
    qd = num // den
    r = num - qd * den
    up = (2 * r > den) | ((2 * r == den) & (qd % 2 == 1))
    q = (qd + up.to(I64)).clamp(max=127)
    return torch.where(x < 0, -q, q), amax


def requant(acc: torch.Tensor, scale: torch.Tensor, m: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """sim.numerics.requant.requant: G = scale m normalised to 16 bits, rounding right shift, int16 saturation."""
    G = scale * m
    e = (_bitlen(G) - MULT_BITS).clamp(min=0)
    s = sh - e
    if bool(((s < 1) | (s > 62)).any()):
        raise WorkloadError("requantizer shift out of 1..62: multiplier out of range")
    return _sat((acc * (G >> e) + (torch.ones_like(s) << (s - 1))) >> s)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE in Q7.8 with Q2.14 cos/sin, round half up, int16 saturation."""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    half = 1 << (TRIG_FRAC - 1)
    return _sat(torch.cat([(x1 * cos - x2 * sin + half) >> TRIG_FRAC, (x2 * cos + x1 * sin + half) >> TRIG_FRAC], -1))


def gated_act(g: torch.Tensor, u: torch.Tensor, fn: str) -> torch.Tensor:
    """fn(g) * u in Q7.8: ReLU^2 or SiLU with the UQ1.20 table-interpolated logistic."""
    if fn == "relu2":
        r = g.clamp(min=0)
        prod, sh = r * r * u, 16
    else:
        mag = g.abs()
        j = (mag >> 4).clamp(max=255)
        s = _SIG[j] + (((_SIG[j + 1] - _SIG[j]) * (mag & 15)) >> 4)
        s = torch.where(mag >= 16 << 8, torch.full_like(s, 1 << SIG_FRAC), s)
        s = torch.where(g < 0, (1 << SIG_FRAC) - s, s)
        prod, sh = g * s * u, SIG_FRAC + 8
    return _sat((prod + (1 << (sh - 1))) >> sh)


def softmax(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SFU softmax over the masked entries of each row (Q7.8 -> UQ1.15); unmasked entries give 0."""
    mx = torch.where(mask, x, torch.full_like(x, -(1 << 40))).amax(-1, keepdim=True)
    z = ((x - mx) * L2E) >> 7
    z = torch.where(mask, z, torch.zeros_like(z))
    n, f = -(z >> 16), z & 0xFFFF
    j, d = f >> 9, f & 511
    p2 = _EXP2[j] + (((_EXP2[j + 1] - _EXP2[j]) * d) >> 9)
    nn_ = n.clamp(max=22)
    e = torch.where(n >= 22, torch.zeros_like(p2), (p2 + ((torch.ones_like(nn_) << nn_) >> 1)) >> nn_)
    e = torch.where(mask, e, torch.zeros_like(e))
    Z = e.sum(-1, keepdim=True)
    b = _bitlen(Z)
    sig = _shr(Z, b - 24)
    i, d2 = (sig >> 18) - 32, sig & ((1 << 18) - 1)
    r0 = _RECIP[i] - (((_RECIP[i] - _RECIP[i + 1]) * d2) >> 18)
    r1 = (r0 * ((1 << 24) - ((sig * r0) >> 23))) >> 23
    s = b + 7
    return ((e * r1 + (torch.ones_like(s) << (s - 1))) >> s).clamp(max=1 << 15)


def lo_code(x: torch.Tensor) -> torch.Tensor:
    """4-bit LO codes of INT8 values (|x| <= 127): 0 for zero, else (sign << 3) | (floor(log2|x|) + 1)."""
    e = (_bitlen(x.abs()) - 1).clamp(max=6)
    return torch.where(x == 0, torch.zeros_like(x), ((x < 0).to(I64) << 3) | (e + 1))


def lo_value(code: torch.Tensor) -> torch.Tensor:
    mag = torch.where(code & 7 == 0, torch.zeros_like(code), torch.ones_like(code) << ((code & 7) - 1).clamp(min=0))
    return torch.where(code >> 3 == 1, -mag, mag)


def _overflow(terms: torch.Tensor, chunk: int, bits: int) -> bool:
    """Sticky overflow of a `bits` accumulator adding `chunk` terms of the last axis per cycle."""
    k = terms.shape[-1]
    pad = (-k) % chunk
    t = torch.nn.functional.pad(terms, (0, pad)).reshape(*terms.shape[:-1], -1, chunk).sum(-1)
    pre = t.cumsum(-1)
    return bool(((pre < -(1 << (bits - 1))) | (pre >= 1 << (bits - 1))).any())


def fp4_scale_terms(scales: torch.Tensor, fmt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Block scale codes as (significand, exponent), scale = sig * 2^exp: E4M3 (sign, 4-bit exponent bias 7,
    3-bit mantissa; subnormals at 2^-6) or E8M0 (2^(e-127)); a NaN code (E4M3 S.1111.111, E8M0 0xFF) is refused."""
    s = scales.to(I64)
    if fmt == "mxfp4":
        if bool((s == 0xFF).any()):
            raise WorkloadError("a NaN MXFP4 block scale")
        return torch.ones_like(s), s - 127
    if bool(((s & 0x7F) == 0x7F).any()):
        raise WorkloadError("a NaN NVFP4 block scale")
    e, m = (s >> 3) & 15, s & 7
    sig = torch.where(e == 0, m, 8 + m)
    return torch.where(s >= 128, -sig, sig), torch.where(e == 0, torch.full_like(e, -9), e - 10)


def fp4_dot(codes: torch.Tensor, scales: torch.Tensor, fmt: str, xq: torch.Tensor, *, block_sum_bits: int,
            acc_bits: int, frac_bits: int, what: str) -> torch.Tensor:
    """FP4 core accumulators [T, N] of E2M1 codes [N, Kp] with block scales [N, nb] and INT8 rows xq [T, K]:
    2*E2M1 as integers ((2 + m) << (e - 1), m for e = 0), exact block sums, times the scale's significand, shifted
    by its exponent - 1 + frac_bits (right shifts floor), summed block after block; an overflow of the block sum,
    a contribution or any prefix sum (the block order) is refused."""
    c = codes.to(I64)
    e, m = (c >> 1) & 3, c & 1
    w2 = torch.where(e == 0, m, (2 + m) << (e - 1).clamp(min=0))
    w2 = torch.where(c >= 8, -w2, w2)
    n, kp = w2.shape
    nb = scales.shape[-1]
    x = torch.nn.functional.pad(xq, (0, kp - xq.shape[-1]))
    S = (w2.reshape(n, nb, -1)[None] * x.reshape(x.shape[0], 1, nb, -1)).sum(-1)  # [T, N, nb]
    sig, ex = fp4_scale_terms(scales, fmt)
    sh = (ex - 1 + frac_bits)[None]
    P = S * sig[None]
    contrib = torch.where(sh >= 0, P << sh.clamp(min=0, max=62), P >> (-sh).clamp(min=0, max=62))
    lim_s, lim_a = 1 << (block_sum_bits - 1), 1 << (acc_bits - 1)
    pre = contrib.cumsum(-1)
    bad = ((S < -lim_s) | (S >= lim_s)).any() or ((contrib < -lim_a) | (contrib >= lim_a)).any()
    if bool(bad) or bool(((pre < -lim_a) | (pre >= lim_a)).any()):
        raise WorkloadError(f"{what}: an FP4 register overflows")
    return pre[..., -1]


def _mults(wscale: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    ms = [fixed_multiplier(float(w) / 127.0) for w in wscale]
    return torch.tensor([m for m, _ in ms], dtype=I64), torch.tensor([s for _, s in ms], dtype=I64)


class HwExactBitNet:
    """The chip's forward steps for deployed weights, in torch int64 (module docstring)."""

    def __init__(self, dep: Deployed, settings: GoldenSettings, cfg: HwConfig) -> None:
        self.spec, self.st, self.cfg = dep.spec, settings, cfg
        self.embed = torch.from_numpy(dep.embed.astype(np.int64))
        self.norms = {k: torch.from_numpy(v.astype(np.int64)) for k, v in dep.norms.items()}
        self.lin = {k: (torch.from_numpy(v.codes.astype(np.int64)), v.fmt, *_mults(v.wscale))
                    for k, v in dep.linears.items() if v.fp4 is None}
        for k, v in dep.linears.items():
            if v.fp4 is not None:  # E2M1 codes and block-scale codes; the tensor scale folded into (m, sh)
                m, sh = fp4_multiplier(v.fp4, settings.fp4_frac_bits)
                self.lin[k] = ((torch.from_numpy(v.fp4.codes.astype(np.int64)),
                                torch.from_numpy(v.fp4.scales.astype(np.int64))), v.fmt, torch.tensor(m), torch.tensor(sh))
        self.att = {k: (torch.tensor(m), torch.tensor(s)) for k, (m, s) in attn_multipliers(self.spec.head_dim).items()}
        cos, sin = rope_table(np.arange(self.spec.max_positions), self.spec.head_dim, self.spec.rope_theta)
        self.cos, self.sin = torch.from_numpy(cos), torch.from_numpy(sin)

    @classmethod
    def from_model(cls, model: torch.nn.Module, cfg: HwConfig, lop: bool | None = None) -> HwExactBitNet:
        """Deploy a float lowbit.models.bitnet.BitNet's weights (state dict names) for `cfg`."""
        st = GoldenSettings.from_hw(cfg, lop)
        w = {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
        return cls(deploy(model.spec, w, st.lm_head, st.proj), st, cfg)

    # -- units
    def _booth(self, a: torch.Tensor, b: torch.Tensor, what: str) -> torch.Tensor:
        prod = a * b
        if _overflow(prod, self.st.booth_width, self.st.booth_acc_bits):
            raise WorkloadError(f"{what}: the BoothFlex accumulator overflows")
        return prod.sum(-1)

    def _linear(self, b: dict, name: str, xq: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
        codes, fmt, m, sh = self.lin[name]
        st = self.st
        if fmt == "ternary":
            terms = codes[None] * xq[:, None, :]
            ovf = _overflow(terms, st.tree_width, st.tint_acc_bits)
            if st.booth_ternary:
                ovf = ovf or _overflow(terms, 4 * st.booth_width, st.booth_acc_bits)
            if ovf:
                raise WorkloadError(f"{name}: a ternary accumulator overflows")
            acc = xq @ codes.T
        elif fmt in ("nvfp4", "mxfp4"):
            acc = fp4_dot(*codes, fmt, xq, block_sum_bits=st.fp4_block_sum_bits, acc_bits=st.fp4_acc_bits,
                          frac_bits=st.fp4_frac_bits, what=name)
            if bool((acc.abs() >= 1 << 31).any()):
                raise WorkloadError(f"{name}: an FP4 accumulator exceeds the requantizer's 32-bit input")
        else:
            acc = self._booth(xq[:, None, :], codes[None], name)
        y = requant(acc, amax, m[None], sh[None])
        b[f"{name}.acc"], b[f"{name}.out"] = acc, y
        return y

    def _norm(self, b: dict, name: str, x: torch.Tensor) -> torch.Tensor:
        y = rmsnorm(x, self.norms[name], self.spec.norm_eps)
        b[f"{name}.out"] = y
        return y

    def _quant(self, b: dict, name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, amax = absmax_quant(x)
        b[f"{name}.q"], b[f"{name}.amax"] = q, amax[..., 0]
        return q, amax

    def _attention(self, b: dict, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int,
                   decode: bool) -> torch.Tensor:
        s, st = self.spec, self.st
        T, H, KV, hd = q.shape[0], s.n_heads, s.n_kv_heads, s.head_dim
        grp = H // KV
        p = f"layers.{layer}.attn"
        (q8, qa), (k8, ka), (v8, va) = absmax_quant(q), absmax_quant(k), absmax_quant(v)
        qa, ka, va = qa[..., 0], ka[..., 0], va[..., 0]
        lo = lo_code(k8)
        b[f"{p}.qk.q8"], b[f"{p}.qk.q_amax"] = q8, qa
        for n, a in (("k8", k8), ("k_amax", ka), ("v8", v8), ("v_amax", va), ("lo", lo)):
            b[f"{p}.kv_append.{n}"] = a
        c = self.cache[layer]
        for n, a in (("k8", k8), ("v8", v8), ("ka", ka), ("va", va), ("lo", lo)):
            c[n] = torch.cat([c[n], a]) if n in c else a
        M = start + T
        K8, V8, KA, VA = (c[n][:M].transpose(0, 1) for n in ("k8", "v8", "ka", "va"))  # KV-major
        rep = torch.arange(H) // grp
        keys = (torch.arange(M)[None, :] <= (start + torch.arange(T))[:, None]).expand(H, T, M)
        if decode and st.lop:
            scores = lo_value(lo_code(q8[0]))[:, None, :] @ lo_value(c["lo"][:M]).permute(1, 2, 0)[rep]  # [H,1,M]
            scores = scores[:, 0]
            gsum = scores.reshape(KV, grp, M).sum(1)  # one top-K per KV head over its group's summed scores
            lim = 1 << (st.lop_score_bits - 1)
            if any(bool(((a < -lim) | (a >= lim)).any()) for a in (scores, gsum)):
                raise WorkloadError(f"{p}: LO scores exceed lop.score_bits")
            sel = lop_select(gsum, st.lop_k, None, st.lop_buckets)
            b[f"{p}.lop.scores"], b[f"{p}.lop.group_scores"], b[f"{p}.lop.sel"] = scores, gsum, sel
            keys = keys & sel[rep][:, None, :]
        qh = q8.transpose(0, 1)  # [H, T, hd]
        prod = qh[:, :, None, :] * K8[rep][:, None, :, :] * keys[..., None]  # [H, T, M, hd]
        if _overflow(prod, st.booth_width, st.booth_acc_bits):
            raise WorkloadError(f"{p}.qk: the BoothFlex accumulator overflows")
        qk = prod.sum(-1)
        (m_qk, sh_qk), (m_av, sh_av) = self.att["qk"], self.att["av"]
        score = requant(qk, qa.transpose(0, 1)[:, :, None] * KA[rep][:, None, :], m_qk, sh_qk) * keys
        prob = softmax(score, keys)
        w8, wa = absmax_quant(prob * VA[rep][:, None, :])
        # P.V accumulates over the selected keys in ascending order (compact them for the overflow flag)
        order = torch.argsort((~keys).to(I64), dim=-1, stable=True)
        wc = torch.gather(w8, -1, order)
        vc = V8[rep][:, None].expand(H, T, M, hd).gather(2, order[..., None].expand(H, T, M, hd))
        terms = wc[..., None, :] * vc.transpose(-1, -2)  # [H, T, hd, M]
        if _overflow(terms, st.booth_width, st.booth_acc_bits):
            raise WorkloadError(f"{p}.av: the BoothFlex accumulator overflows")
        acc_av = terms.sum(-1)
        out = requant(acc_av, wa, m_av, sh_av).transpose(0, 1).reshape(T, H * hd)
        b[f"{p}.qk.keys"], b[f"{p}.qk.acc"], b[f"{p}.qk.scores"] = keys, qk, score
        b[f"{p}.softmax.p"], b[f"{p}.softmax.w8"], b[f"{p}.softmax.w_amax"] = prob, w8, wa[..., 0]
        b[f"{p}.av.acc"], b[f"{p}.av.out"] = acc_av, out
        return out

    def step(self, ids: torch.Tensor, start: int, decode: bool, all_logits: bool) -> dict[str, torch.Tensor]:
        s = self.spec
        T = ids.shape[0]
        b: dict[str, torch.Tensor] = {}
        x = self.embed[ids]
        b["embed.out"] = x
        cos, sin = self.cos[start:start + T, None], self.sin[start:start + T, None]
        act = "relu2" if s.ffn_act == "relu2_glu" else "silu"
        for layer in range(s.n_layers):
            p = f"layers.{layer}"
            xq, am = self._quant(b, f"{p}.attn_quant", self._norm(b, f"{p}.attn_norm", x))
            q = self._linear(b, f"{p}.attn.q", xq, am).reshape(T, s.n_heads, s.head_dim)
            k = self._linear(b, f"{p}.attn.k", xq, am).reshape(T, s.n_kv_heads, s.head_dim)
            v = self._linear(b, f"{p}.attn.v", xq, am).reshape(T, s.n_kv_heads, s.head_dim)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            b[f"{p}.attn.rope.q"], b[f"{p}.attn.rope.k"] = q, k
            a = self._attention(b, layer, q, k, v, start, decode)
            if s.subln:
                a = self._norm(b, f"{p}.attn_sub_norm", a)
            aq, am = self._quant(b, f"{p}.o_quant", a)
            x = _sat(x + self._linear(b, f"{p}.attn.o", aq, am))
            b[f"{p}.attn_residual.out"] = x
            xq, am = self._quant(b, f"{p}.ffn_quant", self._norm(b, f"{p}.ffn_norm", x))
            up = self._linear(b, f"{p}.ffn.up", xq, am)
            f = gated_act(self._linear(b, f"{p}.ffn.gate", xq, am), up, act)
            b[f"{p}.ffn.act.out"] = f
            if s.subln:
                f = self._norm(b, f"{p}.ffn_sub_norm", f)
            fq, am = self._quant(b, f"{p}.down_quant", f)
            x = _sat(x + self._linear(b, f"{p}.ffn.down", fq, am))
            b[f"{p}.ffn_residual.out"] = x
        xq, am = self._quant(b, "lm_quant", self._norm(b, "final_norm", x if all_logits else x[-1:]))
        b["lm_head.logits"] = self._linear(b, "lm_head", xq, am)
        return b

    @torch.no_grad()
    def run(self, prompt: list[int] | np.ndarray | torch.Tensor, decode: int | list[int] = 0,
            all_logits: bool = False) -> list[dict[str, np.ndarray]]:
        """Prefill then decode steps (greedy when `decode` is a count; lowest index on ties), as the golden's
        golden_run; returns each step's buffers as numpy arrays."""
        self.cache: list[dict[str, torch.Tensor]] = [{} for _ in range(self.spec.n_layers)]
        ids = torch.as_tensor(np.asarray(prompt), dtype=I64).reshape(-1)
        feed = None if isinstance(decode, int | np.integer) else list(decode)
        steps = [self.step(ids, 0, False, all_logits)]
        pos = ids.shape[0]
        for i in range(decode if feed is None else len(feed)):
            nxt = int(torch.argmax(steps[-1]["lm_head.logits"][-1])) if feed is None else int(feed[i])
            steps.append(self.step(torch.tensor([nxt]), pos, True, all_logits))
            pos += 1
        return [{k: v.numpy() for k, v in st.items()} for st in steps]


def float_logits(model: torch.nn.Module, tokens: np.ndarray, prefill: int) -> np.ndarray:
    """Every position's logits of the float PyTorch model: `prefill` tokens in one step, then one per step."""
    with torch.no_grad():
        cache = model.new_cache(1, len(tokens))
        out = [model(torch.as_tensor(tokens[None, :prefill]), cache, 0)[0]]
        out += [model(torch.as_tensor(tokens[None, i:i + 1]), cache, i)[0] for i in range(prefill, len(tokens))]
    return torch.cat(out).double().numpy()


def float_agreement(spec: ModelSpec, cfg: HwConfig, seeds: Iterable[int], lop: bool, prefill: int = 8,
                    decode: int = 3) -> dict[str, float]:
    """Hardware-exact logits (lowbit.sim.golden, Q7.8 / 256) against the float BitNet on the same seeded weights
    (lowbit.sim.golden_weights.seeded_weights) and a seeded prompt, every position of prefill + greedy decode:
    mean and min cosine, top-1 agreement. The float model attends with LopAttention (cfg's k and buckets) when
    `lop`."""
    cos, top = [], []
    for seed in seeds:
        w = seeded_weights(spec, seed)
        prompt = np.random.default_rng(100 + seed).integers(0, spec.vocab, prefill)
        run = golden.golden_run(deploy(spec, w), cfg, prompt, decode, lop=lop, all_logits=True)
        model = BitNet(spec)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in w.items()}, strict=False)
        if lop:
            model.attn_fn = LopAttention(k=cfg.lop.k, n_buckets=cfg.lop.buckets)
        a, b = run.float_logits(), float_logits(model, run.tokens, prefill)
        cos += list((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))
        top += list(a.argmax(1) == b.argmax(1))
    return {"mean_cos": float(np.mean(cos)), "min_cos": float(np.min(cos)), "top1": float(np.mean(top)),
            "positions": len(cos)}


def main() -> None:
    """Print the float-vs-hardware-exact agreement table of docs/golden.md (bitnet-tiny on tiny, seeds 0-7)."""
    spec, cfg = get_model("bitnet-tiny"), load_config("tiny")
    print("| LOP | positions | mean cosine | min cosine | top-1 agreement |\n|---|---|---|---|---|")
    for lop in (False, True):
        r = float_agreement(spec, cfg, range(8), lop)
        print(f"| {'on' if lop else 'off'} | {r['positions']} | {r['mean_cos']:.4f} | {r['min_cos']:.4f} | "
              f"{r['top1']:.3f} |")


__all__ = ["HwExactBitNet", "absmax_quant", "float_agreement", "float_logits", "fp4_dot", "fp4_scale_terms",
           "gated_act", "lo_code", "requant", "rmsnorm", "rope", "softmax"]

if __name__ == "__main__":
    main()
