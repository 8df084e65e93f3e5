"""Whole-model decode step on the GPU kernels (random weights, real shapes), captured in a CUDA graph.

Same per-layer op sequence as ``sim.workloads.layer_ops`` (BitNet b1.58 block, docs/reference/numerics.md §1.4):
RMSNorm -> [quantize] -> Wqkv (fused, one scale per projection) -> RoPE -> KV append -> attention ->
[attn_sub_norm if SubLN] -> Wo -> residual -> RMSNorm -> W13 (fused gate|up) -> act (SwiGLU / ReLU² GLU)
-> [ffn_sub_norm] -> W2 -> residual; then the final RMSNorm and (optionally) the bf16 lm_head.

Linear layers: ``ternary`` (act_quant + GEMV), ``nvfp4`` / ``mxfp4`` (bf16 x FP4 GEMV) or ``bf16``
(torch ``F.linear``, the baseline). Attention: torch SDPA over the bf16 KV cache (``dense``) or LOP
(``lop``: also keeps the 4-bit LO-code cache of INT8 keys and selects ``k_sel`` tokens).
Elementwise ops are plain torch; the CUDA graph removes their launch gaps. The step is replayed at a fixed
position (``context`` tokens already cached), which is what one decode step of the simulator's trace costs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lowbit.sim.modelspec import ModelSpec, get_model

from .fp4 import fp4_gemv, random_fp4_weight_torch
from .lop_attn import lo_pack_keys_torch, lop_attention
from .ternary import act_quant, pack_ternary_gpu_torch, ternary_gemv

__all__ = ["DecodeModel", "build_model", "time_decode_step"]


@dataclass
class _Layer:
    wqkv: object
    wo: object
    w13: object
    w2: object
    norms: dict = field(default_factory=dict)


def _ternary(n, k, nscales, dev, gen):
    codes = torch.randint(-1, 2, (n, k), dtype=torch.int8, device=dev, generator=gen)
    scales = torch.rand(nscales, device=dev, generator=gen) * 0.5 + 0.5
    return pack_ternary_gpu_torch(codes, scales.repeat_interleave(n // nscales))


def _bf16(n, k, dev, gen):
    return (torch.randn(n, k, device=dev, generator=gen) / math.sqrt(k)).to(torch.bfloat16)


class DecodeModel:
    """Random-weight decoder of ``spec`` shapes; ``fmt`` in {ternary, nvfp4, mxfp4, bf16}."""

    def __init__(self, spec: ModelSpec, fmt: str, batch: int, max_ctx: int, attn: str = "dense", k_sel: int = 256,
                 lm_head: bool = False, device="cuda", seed: int = 0):
        if fmt not in ("ternary", "nvfp4", "mxfp4", "bf16"):
            raise ValueError(f"unknown weight format {fmt!r}")
        if attn not in ("dense", "lop"):
            raise ValueError(f"unknown attention {attn!r}")
        self.spec, self.fmt, self.batch, self.attn, self.k_sel = spec, fmt, batch, attn, k_sel
        gen = torch.Generator(device=device).manual_seed(seed)
        d, hd, H, KVH, Fd = spec.d_model, spec.head_dim, spec.n_heads, spec.n_kv_heads, spec.d_ffn
        nqkv = (H + 2 * KVH) * hd
        nff = 2 * Fd if spec.gated else Fd
        self.layers = []
        for _ in range(spec.n_layers):
            if fmt == "ternary":
                mk = lambda n, k, ns: _ternary(n, k, ns, device, gen)  # noqa: E731
            elif fmt == "bf16":
                mk = lambda n, k, ns: _bf16(n, k, device, gen)  # noqa: E731
            else:
                mk = lambda n, k, ns: random_fp4_weight_torch(n, k, fmt, device, gen)  # noqa: E731
            lay = _Layer(mk(nqkv, d, 1), mk(d, H * hd, 1), mk(nff, d, 2 if spec.gated else 1), mk(d, Fd, 1))
            for nm, dim in [("attn", d), ("ffn", d)] + ([("attn_sub", d), ("ffn_sub", Fd)] if spec.subln else []):
                lay.norms[nm] = (1 + 0.1 * torch.randn(dim, device=device, generator=gen)).to(torch.bfloat16)
            self.layers.append(lay)
        self.final_norm = torch.ones(d, dtype=torch.bfloat16, device=device)
        self.lm_head = _bf16(spec.vocab, d, device, gen) if lm_head else None
        self.k_cache = torch.randn(spec.n_layers, batch, KVH, max_ctx, hd, device=device, generator=gen).to(torch.bfloat16)
        self.v_cache = torch.randn(spec.n_layers, batch, KVH, max_ctx, hd, device=device, generator=gen).to(torch.bfloat16)
        self.lo_cache = None
        if attn == "lop":
            ki8 = torch.randint(-127, 128, (spec.n_layers, batch, KVH, max_ctx, hd), dtype=torch.int8, device=device,
                                generator=gen)
            self.lo_cache = lo_pack_keys_torch(ki8)
        self.max_ctx = max_ctx

    def weight_bytes(self) -> int:
        tot = 0
        for lay in self.layers:
            for w in (lay.wqkv, lay.wo, lay.w13, lay.w2):
                tot += w.numel() * w.element_size() if isinstance(w, torch.Tensor) else w.nbytes
        return tot

    def _lin(self, x, w):
        if self.fmt == "bf16":
            return F.linear(x, w)
        if self.fmt == "ternary":
            return ternary_gemv(act_quant(x, write_q=False), w)
        return fp4_gemv(x, w)

    def _rope(self, x, rot):
        # interleaved-pair RoPE as one complex multiply (3 kernels instead of ~10)
        xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(xc * rot).flatten(-2).to(torch.bfloat16)

    def step(self, x: torch.Tensor, pos: int) -> torch.Tensor:
        """One decode step for ``batch`` tokens at position ``pos`` (context = pos + 1 after the append)."""
        s = self.spec
        d, hd, H, KVH = s.d_model, s.head_dim, s.n_heads, s.n_kv_heads
        B = x.shape[0]
        inv = 1.0 / (s.rope_theta ** (torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd))
        rot = torch.polar(torch.ones_like(inv), pos * inv)
        eps = s.norm_eps
        for li, lay in enumerate(self.layers):
            n = F.rms_norm(x, (d,), lay.norms["attn"], eps)
            qkv = self._lin(n, lay.wqkv)
            q = qkv[:, : H * hd].view(B, H, hd)
            k = qkv[:, H * hd: (H + KVH) * hd].view(B, KVH, hd)
            v = qkv[:, (H + KVH) * hd:].view(B, KVH, hd)
            q, k = self._rope(q, rot), self._rope(k, rot)
            self.k_cache[li, :, :, pos] = k
            self.v_cache[li, :, :, pos] = v
            ctx = pos + 1
            if self.attn == "lop":
                kq = act_quant(k.reshape(B * KVH, hd), write_q=True).q[:, :hd]
                self.lo_cache[li, :, :, pos] = lo_pack_keys_torch(kq.view(B, KVH, hd))
                a = lop_attention(q, self.k_cache[li], self.v_cache[li], self.lo_cache[li], ctx, self.k_sel)
            else:
                a = F.scaled_dot_product_attention(q.unsqueeze(2), self.k_cache[li, :, :, :ctx],
                                                   self.v_cache[li, :, :, :ctx], enable_gqa=H != KVH).squeeze(2)
            a = a.reshape(B, H * hd)
            if s.subln:
                a = F.rms_norm(a, (d,), lay.norms["attn_sub"], eps)
            x = x + self._lin(a, lay.wo)
            n = F.rms_norm(x, (d,), lay.norms["ffn"], eps)
            h = self._lin(n, lay.w13)
            if s.gated:
                g, u = h[:, : s.d_ffn], h[:, s.d_ffn:]
                h = (F.silu(g) if s.ffn_act == "swiglu" else torch.relu(g).square()) * u
            else:
                h = torch.relu(h).square() if s.ffn_act == "relu2" else F.gelu(h)
            if s.subln:
                h = F.rms_norm(h, (s.d_ffn,), lay.norms["ffn_sub"], eps)
            x = x + self._lin(h, lay.w2)
        x = F.rms_norm(x, (d,), self.final_norm, eps)
        if self.lm_head is not None:
            return F.linear(x, self.lm_head)
        return x


def build_model(name: str, fmt: str, batch: int = 1, context: int = 192, attn: str = "dense", k_sel: int = 256,
                lm_head: bool = False) -> DecodeModel:
    spec = get_model(name)
    return DecodeModel(spec, fmt, batch, context + 1, attn=attn, k_sel=k_sel, lm_head=lm_head)


def time_decode_step(model: DecodeModel, context: int, iters: int = 50, profile: bool = False) -> dict:
    """Capture one decode step (position ``context``) in a CUDA graph; median replay time over ``iters``.
    ``profile``: also the 12 costliest kernel names per step (torch profiler over 3 replays)."""
    B, d = model.batch, model.spec.d_model
    x = (torch.randn(B, d, device="cuda") * 0.5).to(torch.bfloat16)
    for _ in range(3):  # autotune + compile outside the capture
        model.step(x, context)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = model.step(x, context)
    for _ in range(5):
        g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3)
    times.sort()
    med = times[len(times) // 2]
    ok = bool(torch.isfinite(out.float()).all())
    res = {"step_us": med, "tokens_per_s": B * 1e6 / med, "finite": ok, "weight_bytes": model.weight_bytes()}
    if profile:
        try:
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as tprof

            with tprof(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(3):
                    g.replay()
                torch.cuda.synchronize()
            tot: dict[str, float] = {}
            for ev in prof.events():
                if ev.device_type == torch.autograd.DeviceType.CUDA:
                    tot[ev.name] = tot.get(ev.name, 0.0) + ev.device_time / 3
            res["profile"] = sorted(tot.items(), key=lambda kv: -kv[1])[:12]
        except Exception as e:  # profiling is a diagnostic only
            res["profile"] = [(f"profiler failed: {type(e).__name__}: {e}", 0.0)]
    return res
