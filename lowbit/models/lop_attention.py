"""LOP (Leading-One Prediction) top-K sparse attention in PyTorch, with sim.numerics' selection rule.

Per layer and head (docs/reference/vitallm.md §5.4; docs/reference/numerics.md §8.2; golden model ``sim/numerics/lop.py``):

1. q and k (post-RoPE, as cached) are quantized to INT8 **per token per head** with BitNet's absmax rule
   ``s = 127 * (1 / max(max|x|, 1e-5))``, ``q = clip(round(x*s), -128, 127)`` over head_dim
   (``sim.numerics.int8.int8_absmax_quantize``, float64, half-to-even) -- :func:`int8_absmax_torch`.
2. Surrogate ``s_hat[t, j] = sum_i sign(q_i) sign(k_ji) 2^(e(q_i) + e(k_ji))`` with ``e = floor(log2|x|)``
   over non-zero pairs (``sim.numerics.lop.lo_scores``) -- :func:`lo_scores_torch` (exact in float64:
   ``|s_hat| <= head_dim * 2^14 < 2^53``).
3. Comparison-free top-K over the keys each query may see (causal): signed leading-one bucket of
   ``s_hat`` (``lop_bucket``), histogram, threshold bucket scanned from the top, every key above it plus
   the lowest-index keys of the threshold bucket, exactly ``min(K, visible)`` keys
   (``sim.numerics.lop.lop_topk``) -- :func:`lop_select`.
4. Attention itself is the ordinary float ``softmax(q k^T / sqrt(d)) v`` restricted to the selected keys
   (the other scores are set to -inf). Modelling choice: the accelerator recomputes exact INT8 scores for
   the survivors; here the survivors' scores stay float so only the selection effect is measured.

GQA: query head ``h`` reads KV head ``h // (H / KV)`` (transformers ``repeat_kv``, SDPA ``enable_gqa``), and
the query heads of a KV head share one selection: step 3 runs once per KV head over the group score, the sum
of its heads' ``s_hat`` (``sim.numerics.lop.lop_group_topk``; the DESIGN ASSUMPTION and its reason are in
``sim/numerics/lop.py``; with one query head per KV head it is the per-head rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from lowbit.sim.numerics.int8 import INT8_ABSMAX_EPS
from lowbit.sim.numerics.lop import LOP_DEFAULT_N_BUCKETS


def int8_absmax_torch(x: torch.Tensor, eps: float = INT8_ABSMAX_EPS) -> torch.Tensor:
    """Per-row (last dim) absmax INT8 codes as float64, exactly ``sim.numerics.int8.int8_absmax_quantize``."""
    x64 = x.detach().to(torch.float64)
    s = torch.reciprocal(x64.abs().amax(dim=-1, keepdim=True).clamp(min=eps)) * 127.0
    return (x64 * s).round().clamp(-128, 127)


def signed_pow2(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * 2^floor(log2|x|)`` for integer-valued float64 ``x`` (0 for 0), via frexp (exact)."""
    m, e = torch.frexp(x.abs())
    mag = torch.where(x == 0, torch.zeros_like(x), torch.ldexp(torch.ones_like(x), e - 1))
    return torch.sign(x) * mag


def lo_scores_torch(q_int: torch.Tensor, k_int: torch.Tensor) -> torch.Tensor:
    """LO surrogate scores: q [..., T, d], k [..., S, d] (INT8 values, float64) -> int64 [..., T, S]."""
    return (signed_pow2(q_int) @ signed_pow2(k_int).transpose(-1, -2)).to(torch.int64)


def lop_bucket_torch(scores: torch.Tensor, n_buckets: int = LOP_DEFAULT_N_BUCKETS, mant_bits: int = 0) -> torch.Tensor:
    """``sim.numerics.lop.lop_bucket`` on int64 tensors: offset-binary signed leading-one (+ mant bits)."""
    if n_buckets < 3 or n_buckets % 2 == 0:
        raise ValueError(f"n_buckets must be odd and >= 3, got {n_buckets}")
    a = scores.abs()
    _, ex = torch.frexp(a.to(torch.float64))
    e = ex.to(torch.int64) - 1  # -1 for zero
    ep = e.clamp(min=0)
    one = torch.ones_like(a)
    below = a - torch.where(e < 0, torch.zeros_like(a), torch.bitwise_left_shift(one, ep))
    f = torch.where(ep >= mant_bits,
                    torch.bitwise_right_shift(below, (ep - mant_bits).clamp(min=0)),
                    torch.bitwise_left_shift(below, (mant_bits - ep).clamp(min=0)))
    mag = torch.where(a == 0, torch.zeros_like(a), torch.bitwise_left_shift(ep + 1, mant_bits) | f)
    half = (n_buckets - 1) // 2
    return half + torch.sign(scores) * mag.clamp(max=half)


def lop_select(scores: torch.Tensor, k: int, visible: torch.Tensor | None = None,
               n_buckets: int = LOP_DEFAULT_N_BUCKETS, mant_bits: int = 0) -> torch.Tensor:
    """Boolean keep-mask [..., S]: ``sim.numerics.lop.lop_topk`` over the visible keys of each row.

    ``visible`` (broadcastable bool [..., S]) restricts the candidates (causal mask); invisible keys are
    never selected and do not count towards M.
    """
    if k < 0:
        raise ValueError("k must be >= 0")
    b = lop_bucket_torch(scores, n_buckets, mant_bits)
    if visible is None:
        visible = torch.ones_like(b, dtype=torch.bool)
    visible = visible.expand_as(b)
    b = torch.where(visible, b, torch.full_like(b, -1))
    need = visible.sum(-1).clamp(max=k)
    hist = torch.zeros(*b.shape[:-1], n_buckets, dtype=torch.int64)
    hist.scatter_add_(-1, b.clamp(min=0), visible.to(torch.int64))
    cum_desc = hist.flip(-1).cumsum(-1).flip(-1)  # cum_desc[t] = count(bucket >= t)
    t = (cum_desc >= need[..., None]).sum(-1) - 1
    t = torch.where(need == 0, torch.full_like(t, n_buckets), t)[..., None]
    above = b > t
    at = b == t
    n_fill = need[..., None] - above.sum(-1, keepdim=True)
    at_i = at.to(torch.int64)
    rank = at_i.cumsum(-1) - at_i
    return above | (at & (rank < n_fill))


@dataclass
class LopAttention:
    """An ``AttnFn`` for :class:`models.bitnet.BitNet` (``model.attn_fn = LopAttention(k=32)``).

    Records ``kept`` / ``visible`` key counts so the mean kept fraction can be reported.
    """

    k: int
    n_buckets: int = LOP_DEFAULT_N_BUCKETS
    mant_bits: int = 0
    oracle: bool = False  # True: keep the exact top-K float scores instead (reference for the LOP error)
    # with `oracle`: one exact top-K per KV head over its query heads' summed float scores, the sharing of the
    # GQA rule without LOP's ranking error (equal to the per-head oracle when each KV head has one query head)
    shared: bool = False
    kept: int = field(default=0, init=False)
    visible: int = field(default=0, init=False)
    hits: int = field(default=0, init=False)  # LOP-kept keys that are also in the exact top-K

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int, offset: int) -> torch.Tensor:
        B, H, T, hd = q.shape
        S, KV = k.shape[2], k.shape[1]
        if H % KV:
            raise ValueError(f"query heads {H} not a multiple of KV heads {KV}")
        g = H // KV
        kr = k.repeat_interleave(g, dim=1)
        vr = v.repeat_interleave(g, dim=1)
        vis = torch.arange(S)[None, :] <= (offset + torch.arange(T))[:, None]  # [T, S]
        att = (q @ kr.transpose(-1, -2)) / math.sqrt(hd)
        idx = att.masked_fill(~vis, float("-inf")).topk(min(self.k, S), dim=-1).indices
        exact = torch.zeros_like(vis.expand_as(att)).scatter_(-1, idx, True) & vis  # exact top-K (float)
        if self.oracle and self.shared:
            sg = att.view(B, KV, g, T, S).sum(2).masked_fill(~vis, float("-inf"))
            top = sg.topk(min(self.k, S), dim=-1).indices
            keep = (torch.zeros_like(sg, dtype=torch.bool).scatter_(-1, top, True) & vis).repeat_interleave(g, dim=1)
        elif self.oracle:
            keep = exact
        else:
            # INT8 per token per head; one top-K per KV head over its query heads' summed scores (module doc)
            qg = int8_absmax_torch(q).view(B, KV, g, T, hd)
            scores = lo_scores_torch(qg, int8_absmax_torch(k)[:, :, None])  # [B, KV, g, T, S]
            keep = lop_select(scores.sum(2), self.k, vis, self.n_buckets, self.mant_bits)
            keep = keep.repeat_interleave(g, dim=1)
        self.hits += int((keep & exact).sum())
        self.kept += int(keep.sum())
        self.visible += int(vis.sum()) * B * H
        att = att.masked_fill(~keep, float("-inf")).softmax(-1)
        return att @ vr

    @property
    def kept_fraction(self) -> float:
        return self.kept / self.visible if self.visible else float("nan")

    @property
    def recall(self) -> float:
        """Fraction of the exact top-K keys (by float q.k) that the selection kept (1.0 for the oracle)."""
        return self.hits / self.kept if self.kept else float("nan")
