"""Whole-model decode step on the GPU kernels (random weights, real shapes), captured in a CUDA graph.

Same per-layer op sequence as ``sim.workloads.layer_ops`` (BitNet b1.58 block, docs/reference/numerics.md §1.4):
RMSNorm -> [quantize] -> Wqkv (fused, one scale per projection) -> RoPE -> KV append -> attention ->
[attn_sub_norm if SubLN] -> Wo -> residual -> RMSNorm -> W13 (fused gate|up) -> act (SwiGLU / ReLU² GLU)
-> [ffn_sub_norm] -> W2 -> residual; then the final RMSNorm and (optionally) the bf16 lm_head.

Formats: ``ternary`` runs the fused kernels of :mod:`.fused` around the dp4a GEMV (per layer: norm+quant,
Wqkv, RoPE+append [+ LO codes], attention, [SubLN+quant], Wo+residual, norm+quant, W13, gate[+SubLN]+quant,
W2+residual: nine launches plus attention; for one token each norm+quant+GEMV and gate+quant+GEMV chain is
one launch of the whole-row GEMV, :func:`.rowgemv.norm_gemv` / :func:`.rowgemv.gate_gemv`, and without LOP
the RoPE + KV append is that Wqkv launch's epilogue (:class:`.rowgemv.Rope`, ``rope_epilogue``) — gated
FFNs such as bitnet-2B4T's: four launches per layer plus attention, five with LOP or ``rope_epilogue``
off); ``nvfp4`` / ``mxfp4`` (bf16 x FP4 GEMV) run the same
chain on :mod:`.fp4row`'s single-token kernel (norm + Wqkv + RoPE + KV append, [SubLN +] Wo + residual, norm + W13,
GLU [+ SubLN] + W2 + residual: four launches per layer plus attention, configs tuned on the model's own cold
weights by :meth:`DecodeModel.tune`), the torch ops for more than one token (``fused=False``: always);
``bf16`` (torch ``F.linear``, the baseline) runs the plain torch elementwise ops. ``compile=True`` wraps the torch layer in
``torch.compile(mode="max-autotune-no-cudagraphs")`` (the step is captured in a CUDA graph either way, so
this is ``max-autotune`` with its CUDA graph made by :func:`time_decode_step`).
Attention: over the bf16 KV cache (``dense``: torch SDPA for ``bf16``; for the low-bit formats the
split-context Triton kernel :func:`.decode_attn.split_decode_attention` up to
:data:`.decode_attn.SPLIT_MAX_CTX` tokens, SDPA beyond; ``LOWBIT_GPU_ATTN``, read into :data:`ATTN_MODE`,
overrides this for the low-bit formats: ``split`` = the split kernel at every context, ``dense`` = the
one-program-per-group kernel :func:`.decode_attn.dense_decode_attention`, ``sdpa`` = always SDPA) or LOP
(``lop``: also keeps the 4-bit LO-code cache of the INT8 keys and selects ``k_sel`` tokens per KV group). The step is replayed at a fixed position
(``context`` tokens already cached), which is what one decode step of the simulator's trace costs.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lowbit.sim.modelspec import ModelSpec, get_model

from .decode_attn import dense_decode_attention, split_attention_fits, split_decode_attention
from .fp4 import fp4_gemv, random_fp4_weight_torch
from .fp4row import fp4_gate_gemv, fp4_norm_gemv, tune_cold
from .fused import rmsnorm_quant, rope_append
from .lop_attn import lo_cache_torch, lo_pack_keys_torch, lop_attention
from .rowgemv import Rope, gate_gemv, norm_gemv
from .ternary import act_quant, graph_capture, pack_ternary_gpu_torch, ternary_gemv

# Dense decode attention of the low-bit formats: "auto" (split_decode_attention where split_attention_fits,
# else SDPA), "split" (split_decode_attention everywhere), "dense" (dense_decode_attention everywhere) or
# "sdpa" (torch SDPA everywhere); read when a step is built or captured, so a script may also assign it.
ATTN_MODE = os.environ.get("LOWBIT_GPU_ATTN", "auto")
ATTN_MODES = ("auto", "split", "dense", "sdpa")

__all__ = ["DecodeModel", "build_model", "time_decode_step", "gpu_energy_j"]


@dataclass
class _Layer:
    wqkv: object
    wo: object
    w13: object
    w2: object
    norms: dict = field(default_factory=dict)


def _ternary(n, k, nscales, dev, gen, pad_heads=None):
    # pad_heads (heads, dc): each head's k / heads columns followed by zero columns up to dc
    codes = torch.randint(-1, 2, (n, k), dtype=torch.int8, device=dev, generator=gen)
    if pad_heads is not None:
        heads, dc = pad_heads
        codes = F.pad(codes.view(n, heads, k // heads), (0, dc - k // heads)).reshape(n, heads * dc)
    scales = torch.rand(nscales, device=dev, generator=gen) * 0.5 + 0.5
    return pack_ternary_gpu_torch(codes, scales.repeat_interleave(n // nscales))


def _fp4_padded(n, heads, hd, dc, fmt, dev, gen):
    # FP4 weight over the zero-padded attention rows: each head's hd columns, then dc - hd zero codes
    # (dc - hd < 8 and hd a multiple of 4 with dc a multiple of 8: the pad is the high nibbles of one word)
    if dc % 8 or hd % 4 or dc - hd != 4:
        raise ValueError(f"FP4 head padding supports hd = dc - 4 with dc a multiple of 8, got {hd} -> {dc}")
    w = random_fp4_weight_torch(n, heads * dc, fmt, dev, gen)
    w.words.view(n, heads, dc // 8)[..., -1] &= 0xFFFF
    return w


def _bf16(n, k, dev, gen):
    return (torch.randn(n, k, device=dev, generator=gen) / math.sqrt(k)).to(torch.bfloat16)


class DecodeModel:
    """Random-weight decoder of ``spec`` shapes; ``fmt`` in {ternary, nvfp4, mxfp4, bf16}."""

    def __init__(self, spec: ModelSpec, fmt: str, batch: int, max_ctx: int, attn: str = "dense", k_sel: int = 256,
                 lm_head: bool = False, device="cuda", seed: int = 0, fused: bool = True, compile: bool = False):
        if fmt not in ("ternary", "nvfp4", "mxfp4", "bf16"):
            raise ValueError(f"unknown weight format {fmt!r}")
        if attn not in ("dense", "lop"):
            raise ValueError(f"unknown attention {attn!r}")
        self.spec, self.fmt, self.batch, self.attn, self.k_sel = spec, fmt, batch, attn, k_sel
        self.fused = fused and fmt != "bf16"
        gen = torch.Generator(device=device).manual_seed(seed)
        d, hd, H, KVH, Fd = spec.d_model, spec.head_dim, spec.n_heads, spec.n_kv_heads, spec.d_ffn
        # dense attention: cache rows padded with zeros to a multiple of 8 (flash SDPA copies the whole cache
        # into a padded buffer on every call otherwise: measured 24.6 vs 10.6 us at 3B shapes, 193 tokens)
        self.hd_cache = hd if attn == "lop" else -(-hd // 8) * 8
        # fused ternary without SubLN: Wo gets zero columns on the head padding, so the attention output is
        # consumed as stored (no copy of the unpadded rows); the pad is zero, so absmax, codes and sums match
        self._pad_wo = self.fused and not spec.subln and self.hd_cache != hd
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
            wqkv = mk(nqkv, d, 1)
            # Wo reads the zero-padded attention rows directly: the same codes with zero columns on the pad
            if not self._pad_wo:
                wo = mk(d, H * hd, 1)
            elif fmt == "ternary":
                wo = _ternary(d, H * hd, 1, device, gen, (H, self.hd_cache))
            else:
                wo = _fp4_padded(d, H, hd, self.hd_cache, fmt, device, gen)
            lay = _Layer(wqkv, wo, mk(nff, d, 2 if spec.gated else 1), mk(d, Fd, 1))
            for nm, dim in [("attn", d), ("ffn", d)] + ([("attn_sub", d), ("ffn_sub", Fd)] if spec.subln else []):
                lay.norms[nm] = (1 + 0.1 * torch.randn(dim, device=device, generator=gen)).to(torch.bfloat16)
            self.layers.append(lay)
        self.final_norm = torch.ones(d, dtype=torch.bfloat16, device=device)
        self.lm_head = _bf16(spec.vocab, d, device, gen) if lm_head else None
        pad = (0, self.hd_cache - hd)
        self.k_cache = F.pad(torch.randn(spec.n_layers, batch, KVH, max_ctx, hd, device=device, generator=gen), pad).to(
            torch.bfloat16)
        self.v_cache = F.pad(torch.randn(spec.n_layers, batch, KVH, max_ctx, hd, device=device, generator=gen), pad).to(
            torch.bfloat16)
        self.lo_cache = None
        if attn == "lop":
            ki8 = torch.randint(-127, 128, (spec.n_layers, batch, KVH, max_ctx, hd), dtype=torch.int8, device=device,
                                generator=gen)
            self.lo_cache = lo_cache_torch(ki8)
        self.max_ctx = max_ctx
        # one token without LOP: the rotated queries' buffer of the Wqkv GEMV's RoPE epilogue (padding stays zero)
        self.rope_epilogue = True
        self._q1 = torch.zeros(1, H, self.hd_cache, dtype=torch.bfloat16, device=device)
        # RoPE inverse frequencies theta^(-2i/d): constants of the model, computed once
        self.inv_freq = 1.0 / (spec.rope_theta ** (torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd))
        self._layer_fn = self._torch_layer
        if compile:
            self._layer_fn = torch.compile(self._torch_layer, mode="max-autotune-no-cudagraphs", dynamic=False)

    def weight_bytes(self) -> int:
        tot = 0
        for lay in self.layers:
            for w in (lay.wqkv, lay.wo, lay.w13, lay.w2):
                tot += w.numel() * w.element_size() if isinstance(w, torch.Tensor) else w.nbytes
        return tot

    def tune(self) -> dict:
        """Cold-weight config choice of the single-token FP4 GEMVs (:func:`.fp4row.tune_cold`), each role
        (Wqkv, Wo, W13, W2 with their prologues) timed over all layers' weights; {role: (config, µs each)}."""
        s = self.spec
        if not (self.fused and self.fmt != "ternary" and self.batch == 1 and self.k_cache.is_cuda):
            return {}
        gen = torch.Generator(device=self.k_cache.device).manual_seed(1)
        rnd = lambda k: torch.randn(1, k, device=self.k_cache.device, generator=gen).to(torch.bfloat16)  # noqa: E731
        L = self.layers
        x, a, h = rnd(s.d_model), rnd(L[0].wo.k), rnd(L[0].w13.n)
        cs = torch.ones(s.head_dim // 2, device=x.device)
        rope = Rope(cs, cs, self.k_cache[0], self.v_cache[0], self._q1, s.n_heads, s.n_kv_heads, s.head_dim, 0)
        roles = {"qkv": [dict(x=x, w=lay.wqkv, norm=lay.norms["attn"], rope=rope if self.rope_epilogue else None)
                         for lay in L],
                 "o": [dict(x=a, w=lay.wo, norm=lay.norms.get("attn_sub"), residual=x) for lay in L],
                 "w13": [dict(x=x, w=lay.w13, norm=lay.norms["ffn"]) for lay in L]}
        if s.gated:
            act = "swiglu" if s.ffn_act == "swiglu" else "relu2"
            roles["w2"] = [dict(x=h, w=lay.w2, gate=act, norm=lay.norms.get("ffn_sub"), residual=x) for lay in L]
        return {role: tune_cold(calls) for role, calls in roles.items()}

    def _lin(self, x, w):
        if self.fmt == "bf16":
            return F.linear(x, w)
        if self.fmt == "ternary":
            return ternary_gemv(act_quant(x), w)
        return fp4_gemv(x, w)

    def _attend(self, q, kc, vc, lo, ctx, keep_pad: bool = False):
        s = self.spec
        if self.attn == "lop":
            return lop_attention(q, kc, vc, lo, ctx, self.k_sel)
        hd, dc = s.head_dim, self.hd_cache
        if q.shape[-1] != dc:
            q = F.pad(q, (0, dc - hd))
        if ATTN_MODE not in ATTN_MODES:
            raise ValueError(f"LOWBIT_GPU_ATTN={ATTN_MODE!r}: not one of {ATTN_MODES}")
        sc, low = 1.0 / math.sqrt(hd), self.fmt != "bf16"
        if low and (ATTN_MODE == "split" or ATTN_MODE == "auto" and split_attention_fits(ctx)):
            o = split_decode_attention(q, kc, vc, ctx, scale=sc)
        elif low and ATTN_MODE == "dense":
            o = dense_decode_attention(q, kc, vc, ctx, scale=sc)
        else:
            o = F.scaled_dot_product_attention(q.unsqueeze(2), kc[:, :, :ctx], vc[:, :, :ctx], scale=sc,
                                               enable_gqa=s.n_heads != s.n_kv_heads).squeeze(2)
        return o if dc == hd or keep_pad else o[..., :hd]

    def _torch_layer(self, x, wqkv, wo, w13, w2, n_attn, n_ffn, n_asub, n_fsub, kc, vc, lo, rot, pos: int):
        s = self.spec
        d, hd, H, KVH = s.d_model, s.head_dim, s.n_heads, s.n_kv_heads
        B, eps = x.shape[0], s.norm_eps
        n = F.rms_norm(x, (d,), n_attn, eps)
        qkv = self._lin(n, wqkv)
        q = qkv[:, : H * hd].view(B, H, hd)
        k = qkv[:, H * hd: (H + KVH) * hd].view(B, KVH, hd)
        v = qkv[:, (H + KVH) * hd:].view(B, KVH, hd)
        q, k = _rope(q, rot), _rope(k, rot)
        kc[:, :, pos, :hd] = k
        vc[:, :, pos, :hd] = v
        if lo is not None:
            kq = act_quant(k.reshape(B * KVH, hd)).q[:, :hd]
            lo[:, :, :, pos] = lo_pack_keys_torch(kq.view(B, KVH, hd))
        a = self._attend(q, kc, vc, lo, pos + 1).reshape(B, H * hd)
        if n_asub is not None:
            a = F.rms_norm(a, (d,), n_asub, eps)
        x = x + self._lin(a, wo)
        n = F.rms_norm(x, (d,), n_ffn, eps)
        h = self._lin(n, w13)
        if s.gated:
            g, u = h[:, : s.d_ffn], h[:, s.d_ffn:]
            h = (F.silu(g) if s.ffn_act == "swiglu" else torch.relu(g).square()) * u
        else:
            h = torch.relu(h).square() if s.ffn_act == "relu2" else F.gelu(h)
        if n_fsub is not None:
            h = F.rms_norm(h, (s.d_ffn,), n_fsub, eps)
        return x + self._lin(h, w2)

    def _qkv(self, norm_gemv_fn, x, lay, kc, vc, lo, cos, sin, pos: int):
        """RMSNorm + Wqkv, RoPE and KV append (the rotated queries): for one token without LOP in the GEMV's
        epilogue (:class:`.rowgemv.Rope`), else :func:`.fused.rope_append` on its output."""
        s = self.spec
        H, KVH, eps = s.n_heads, s.n_kv_heads, s.norm_eps
        if x.shape[0] == 1 and lo is None and self.rope_epilogue:
            return norm_gemv_fn(x, lay.norms["attn"], eps, lay.wqkv,
                                rope=Rope(cos, sin, kc, vc, self._q1, H, KVH, s.head_dim, pos))
        qkv = norm_gemv_fn(x, lay.norms["attn"], eps, lay.wqkv)
        return rope_append(qkv, cos, sin, H, KVH, kc, vc, pos, lo, head_dim=s.head_dim)

    def _fused_layer(self, x, lay, kc, vc, lo, cos, sin, pos: int):
        if self.fmt != "ternary":
            return self._fused_fp4_layer(x, lay, kc, vc, lo, cos, sin, pos)
        s = self.spec
        eps = s.norm_eps
        B = x.shape[0]
        q = self._qkv(norm_gemv, x, lay, kc, vc, lo, cos, sin, pos)
        a = self._attend(q, kc, vc, lo, pos + 1, keep_pad=self._pad_wo)
        a = a.reshape(B, a.shape[1] * a.shape[2])
        if s.subln:
            x = norm_gemv(a, lay.norms["attn_sub"], eps, lay.wo, residual=x)
        else:  # the quantizer fused in the GEMV
            x = ternary_gemv(a, lay.wo, residual=x)
        h = norm_gemv(x, lay.norms["ffn"], eps, lay.w13)
        if s.gated:
            return gate_gemv(h, "swiglu" if s.ffn_act == "swiglu" else "relu2", lay.norms.get("ffn_sub"), eps, lay.w2,
                             residual=x)
        h = torch.relu(h).square() if s.ffn_act == "relu2" else F.gelu(h)
        return ternary_gemv(rmsnorm_quant(h, lay.norms.get("ffn_sub"), eps), lay.w2, residual=x)

    def _fused_fp4_layer(self, x, lay, kc, vc, lo, cos, sin, pos: int):
        # the ternary layer's launches with bf16 activations: norm + Wqkv, RoPE + append, attention,
        # [SubLN +] Wo + residual, norm + W13, GLU [+ SubLN] + W2 + residual (fp4row: one launch each for one token)
        s = self.spec
        eps = s.norm_eps
        B = x.shape[0]
        q = self._qkv(fp4_norm_gemv, x, lay, kc, vc, lo, cos, sin, pos)
        a = self._attend(q, kc, vc, lo, pos + 1, keep_pad=self._pad_wo)
        a = a.reshape(B, a.shape[1] * a.shape[2])
        x = fp4_norm_gemv(a, lay.norms.get("attn_sub"), eps, lay.wo, residual=x)
        h = fp4_norm_gemv(x, lay.norms["ffn"], eps, lay.w13)
        if s.gated:
            return fp4_gate_gemv(h, "swiglu" if s.ffn_act == "swiglu" else "relu2", lay.norms.get("ffn_sub"), eps,
                                 lay.w2, residual=x)
        h = torch.relu(h).square() if s.ffn_act == "relu2" else F.gelu(h)
        return fp4_norm_gemv(h, lay.norms.get("ffn_sub"), eps, lay.w2, residual=x)

    def step(self, x: torch.Tensor, pos: int) -> torch.Tensor:
        """One decode step for ``batch`` tokens at position ``pos`` (context = pos + 1 after the append)."""
        s = self.spec
        ang = pos * self.inv_freq
        rot = None if self.fused else torch.polar(torch.ones_like(ang), ang)
        cos, sin = torch.cos(ang), torch.sin(ang)
        for li, lay in enumerate(self.layers):
            lo = self.lo_cache[li] if self.lo_cache is not None else None
            if self.fused:
                x = self._fused_layer(x, lay, self.k_cache[li], self.v_cache[li], lo, cos, sin, pos)
            else:
                x = self._layer_fn(x, lay.wqkv, lay.wo, lay.w13, lay.w2, lay.norms["attn"], lay.norms["ffn"],
                                   lay.norms.get("attn_sub"), lay.norms.get("ffn_sub"), self.k_cache[li],
                                   self.v_cache[li], lo, rot, pos)
        x = F.rms_norm(x, (s.d_model,), self.final_norm, s.norm_eps)
        if self.lm_head is not None:
            return F.linear(x, self.lm_head)
        return x


def _rope(x, rot):
    # interleaved-pair RoPE as one complex multiply (3 kernels instead of ~10)
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * rot).flatten(-2).to(torch.bfloat16)


def build_model(name: str, fmt: str, batch: int = 1, context: int = 192, attn: str = "dense", k_sel: int = 256,
                lm_head: bool = False, seed: int = 0, fused: bool = True, compile: bool = False) -> DecodeModel:
    spec = get_model(name)
    return DecodeModel(spec, fmt, batch, context + 1, attn=attn, k_sel=k_sel, lm_head=lm_head, seed=seed,
                       fused=fused, compile=compile)


def gpu_energy_j():
    """A reader of the GPU's cumulative energy in joules (NVML ``nvmlDeviceGetTotalEnergyConsumption``, mJ
    since the driver loaded; Volta and later), or a string saying why there is none."""
    try:
        import pynvml
    except ImportError:
        return "nvidia-ml-py (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
        idx = torch.cuda.current_device()
        h = pynvml.nvmlDeviceGetHandleByIndex(idx)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
    except Exception as e:  # noqa: BLE001 - any NVML failure means: no energy figures
        return f"NVML energy counter unavailable: {type(e).__name__}: {e}"
    return lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1e3


def time_decode_step(model: DecodeModel, context: int, iters: int = 50, profile: bool = False,
                     energy=None, energy_s: float = 1.0) -> dict:
    """Capture one decode step (position ``context``) in a CUDA graph; median replay time over ``iters``.
    ``profile``: also the 12 costliest kernel names per step (torch profiler over 3 replays).
    ``energy`` (from :func:`gpu_energy_j`): replays back to back for about ``energy_s`` seconds and
    returns joules per step (energy counter difference / steps)."""
    B, d = model.batch, model.spec.d_model
    x = (torch.randn(B, d, device="cuda") * 0.5).to(torch.bfloat16)
    tuned = model.tune() if hasattr(model, "tune") else {}
    for _ in range(3):  # autotune + compile outside the capture
        model.step(x, context)
    torch.cuda.synchronize()
    g, out = graph_capture(lambda: model.step(x, context))
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
    if tuned:
        res["tuned"] = {role: {"config": cfg, "us": us} for role, (cfg, us) in tuned.items()}
    if callable(energy):
        n = max(10, int(energy_s * 1e6 / med))
        torch.cuda.synchronize()
        e0, t0 = energy(), time.perf_counter()
        for _ in range(n):
            g.replay()
        torch.cuda.synchronize()
        e1, t1 = energy(), time.perf_counter()
        res["j_per_token"] = (e1 - e0) / (n * B)
        res["avg_w"] = (e1 - e0) / (t1 - t0)
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
