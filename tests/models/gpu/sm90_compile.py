"""Compile the decode-step Triton kernels for sm_90 without a GPU (``ptxas`` ships with the Triton wheel).

Run as a script in a process without ``TRITON_INTERPRET`` (the interpreter replaces ``@triton.jit``
functions, so nothing could be compiled): each host function is called on CPU tensors with its kernel
swapped for a recorder, so the kernel is compiled with exactly the arguments the host code passes, then
with the GPU-only flags (inline PTX, bf16 ``tl.dot``, programmatic dependent launch) switched on. The
interpreter tests check what the kernels compute; this checks that the GPU build of the same code compiles,
which the interpreter cannot (a layout the GPU backend rejects, an inline-asm operand it cannot place).
Prints one line per compiled kernel; exits non-zero on the first failure.
"""

from __future__ import annotations

import inspect
import os
import sys

assert os.environ.get("TRITON_INTERPRET", "0") != "1", "run without TRITON_INTERPRET"

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

_PTR = {torch.float32: "*fp32", torch.bfloat16: "*bf16", torch.float16: "*fp16", torch.int8: "*i8",
        torch.uint8: "*u8", torch.int32: "*i32", torch.int64: "*i64"}


class Recorder:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](*args, **kw)`` records the call."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.calls: list[tuple[tuple, dict]] = []

    def __getitem__(self, grid):
        return lambda *args, **kw: self.calls.append((args, kw))


def compile_sm90(kernel, args: tuple, kw: dict, **overrides):
    """Compile ``kernel`` for sm_90 with the recorded ``args``/``kw`` (constexprs as given, tensors as
    16-byte aligned pointers, integers divisible by 16 marked so, as Triton specializes them at launch)."""
    kw = {**kw, **overrides}
    opts = {"num_warps": kw.pop("num_warps", 4), "num_stages": kw.pop("num_stages", 3)}
    kw.pop("launch_pdl", None)
    fn = kernel.fn
    params = list(inspect.signature(fn).parameters.values())
    sig, consts, attrs = {}, {}, {}
    for i, p in enumerate(params):
        v = args[i] if i < len(args) else kw.get(p.name, p.default)
        if kernel.params[i].is_constexpr:
            sig[p.name] = "constexpr"
            consts[(i,)] = v
        elif isinstance(v, torch.Tensor):
            sig[p.name] = _PTR[v.dtype]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{fn.__name__}: argument {p.name} = {v!r} has no kernel type here")
        elif isinstance(v, int):
            sig[p.name] = "i32" if -2**31 <= v < 2**31 else "i64"
            if v % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[p.name] = "fp32"
    src = ASTSource(fn=kernel, signature=sig, constexprs=consts, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts)


def recorded(module, names: str, fn, *args, **kw) -> list[tuple]:
    """(kernel, args, kw) of each launch of the kernels ``names`` (space-separated attributes of ``module``)
    that ``fn(*args, **kw)`` makes; nothing is run."""
    recs = {n: Recorder(getattr(module, n)) for n in names.split()}
    for n, rec in recs.items():
        setattr(module, n, rec)
    try:
        fn(*args, **kw)
    finally:
        for n, rec in recs.items():
            setattr(module, n, rec.kernel)
    if not all(rec.calls for rec in recs.values()):
        raise RuntimeError(f"not all of {names} were launched")
    return [(rec.kernel, a, k) for rec in recs.values() for a, k in rec.calls]


def _report(what: str, ck) -> None:
    print(f"ok {what}: {len(ck.asm['cubin'])} bytes of sm_90 code", flush=True)


def lop_kernels() -> None:
    from lowbit.models.gpu import lop_attn

    for h, kvh, d in ((4, 4, 100), (8, 2, 128)):  # MHA with an odd head dim, GQA
        m, mmax = 300, 320
        q = torch.zeros(1, h, d, dtype=torch.bfloat16)
        kc = torch.zeros(1, kvh, mmax, d, dtype=torch.bfloat16)
        lo = torch.zeros(1, kvh, lop_attn.lo_words(d), mmax, dtype=torch.int32)
        for dbg in (False, True):
            calls = recorded(lop_attn, "_lop_kernel", lop_attn.lop_attention, q, kc, kc, lo, m, 20, chunk=128,
                             return_debug=dbg)
            for kernel, a, k in calls:
                ck = compile_sm90(kernel, a, k, USE_ASM=True, DOT_F32=False, PDL=True)
                _report(f"lop_attention H{h}/KV{kvh}/d{d} phase {k['PHASE']} debug={dbg}", ck)


def split_attention_kernels() -> None:
    from lowbit.models.gpu import decode_attn

    for h, kvh, d, dc in ((4, 4, 100, 104), (8, 2, 128, 128)):
        q = torch.zeros(1, h, dc, dtype=torch.bfloat16)
        kc = torch.zeros(1, kvh, 256, dc, dtype=torch.bfloat16)
        for kernel, a, k in recorded(decode_attn, "_split_kernel", decode_attn.split_decode_attention, q, kc, kc, 193,
                                     scale=d ** -0.5):
            _report(f"split_decode_attention H{h}/KV{kvh}/dc{dc}", compile_sm90(kernel, a, k, DOT_F32=False, PDL=True))


def row_gemv_kernels() -> None:
    """The whole-row GEMVs of a decode layer: RMSNorm + Wqkv + RoPE/KV append, GLU + SubLN + down with the
    residual, and a row long enough for the FP4 kernel's [words, 8] tiles."""
    from lowbit.models.gpu import fp4, fp4row, rowgemv
    from lowbit.models.gpu.ternary import pack_ternary_gpu_torch

    gen = torch.Generator().manual_seed(0)
    heads, kv, hd, dc = 2, 2, 10, 16
    for n, k, how in (((heads + 2 * kv) * hd, 160, "norm + rope"), (64, 320, "gate"), (32, 8640, "norm")):
        x = torch.zeros(1, 2 * k if how == "gate" else k, dtype=torch.bfloat16)
        g = torch.ones(k, dtype=torch.bfloat16)
        y = torch.zeros(1, n, dtype=torch.bfloat16)
        rope = None
        if how == "norm + rope":
            cache = torch.zeros(1, kv, 8, dc, dtype=torch.bfloat16)
            rope = rowgemv.Rope(torch.ones(hd // 2), torch.zeros(hd // 2), cache, cache.clone(),
                                torch.zeros(1, heads, dc, dtype=torch.bfloat16), heads, kv, hd, 3)
        tw = pack_ternary_gpu_torch(torch.randint(-1, 2, (n, k), generator=gen, dtype=torch.int8), 0.5)
        fws = [fp4.random_fp4_weight_torch(n, k, fmt, "cpu", gen) for fmt in ("nvfp4", "mxfp4")]
        for mod, name, fns, ws in ((rowgemv, "_tgemv_row_kernel", (rowgemv.norm_gemv, rowgemv.gate_gemv), [tw]),
                                   (fp4row, "_fp4_row_kernel", (fp4row.fp4_norm_gemv, fp4row.fp4_gate_gemv), fws)):
            for w in ws:
                call = ((fns[0], x, g, 1e-6, w, None, rope) if how != "gate" else
                        (fns[1], x, "relu2", g, 1e-6, w, y))
                for kernel, a, kk in recorded(mod, name, *call):
                    _report(f"{name} {n}x{k} ({how})", compile_sm90(kernel, a, kk, USE_ASM=True, PDL=True))


def fused_kernels() -> None:
    """RMSNorm / GLU + quantizer rows and RoPE + KV append (with the LO codes of LOP)."""
    from lowbit.models.gpu import fused

    x = torch.zeros(4, 200, dtype=torch.bfloat16)
    g = torch.ones(200, dtype=torch.bfloat16)
    for name, call in (("_rmsnorm_quant_kernel", (fused.rmsnorm_quant, x, g, 1e-6, True)),
                       ("_gate_quant_kernel", (fused.gate_quant, x, "swiglu", g[:100]))):
        for kernel, a, k in recorded(fused, name, *call):
            _report(name, compile_sm90(kernel, a, k, PDL=True))
    heads, kv, mmax = 4, 2, 16
    for hd, dc, lop in ((100, 104, False), (128, 128, True)):  # padded cache rows; the LO codes of LOP
        qkv = torch.zeros(1, (heads + 2 * kv) * hd, dtype=torch.bfloat16)
        cache = torch.zeros(1, kv, mmax, dc, dtype=torch.bfloat16)
        lo = torch.zeros(1, kv, dc // 8, mmax, dtype=torch.int32) if lop else None
        for kernel, a, k in recorded(fused, "_rope_append_kernel", fused.rope_append, qkv, torch.ones(hd // 2),
                                     torch.zeros(hd // 2), heads, kv, cache, cache.clone(), 5, lo_cache=lo,
                                     head_dim=hd):
            _report(f"_rope_append_kernel d{hd}/dc{dc} LO codes {lop}", compile_sm90(kernel, a, k, PDL=True))


def gemm_kernels() -> None:
    """Every autotuner config of the prefill GEMMs (INT8 and bf16-code ternary, FP4 tensor-core), the
    configs the GPU times: one that does not build there is a config the autotuner cannot use."""
    from lowbit.models.gpu import fp4, fp4mma, ternary, ternary_gemm
    from lowbit.models.gpu.ternary import act_quant, pack_ternary_gpu_torch

    gen = torch.Generator().manual_seed(0)
    n, k, m = 96, 320, 40
    x = torch.randn(m, k, generator=gen).to(torch.bfloat16)
    tw = pack_ternary_gpu_torch(torch.randint(-1, 2, (n, k), generator=gen, dtype=torch.int8), 0.5)
    for codes, configs in ((torch.int8, ternary_gemm._GEMM_CONFIGS), (torch.bfloat16, ternary_gemm._TC16_CONFIGS)):
        (kernel, args, kw), = recorded(ternary, "_act_quant_kernel", act_quant, x, codes=codes)
        _report(f"_act_quant_kernel {codes}", compile_sm90(kernel, args, kw))
        a = ternary.QuantAct(args[1], args[2], args[3], k)  # the codes' buffers (not written: nothing ran)
        for split_k in (1, 2):
            calls = recorded(ternary_gemm, "_tgemm_kernel" + " _dequant_acc_kernel" * (split_k > 1),
                             ternary_gemm.ternary_gemm, a, tw, split_k=split_k)
            (kernel, args, kw), rest = calls[0], calls[1:]
            for dk, da, dkw in rest:
                _report("_dequant_acc_kernel", compile_sm90(dk, da, dkw))
            for c in configs:
                ck = compile_sm90(kernel, args, kw, **c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages,
                                  DOT_F32=False)
                _report(f"_tgemm_kernel {codes} split-K {split_k} {c.kwargs}", ck)
    fw = fp4.random_fp4_weight_torch(n, k, "nvfp4", "cpu", gen)
    (kernel, args, kw), = recorded(fp4mma, "_fp4_mma_kernel", fp4mma.fp4_mma, x, fw)
    for c in fp4mma.MMA_CONFIGS:
        ck = compile_sm90(kernel, args, kw, **c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages, DOT_F32=False)
        _report(f"_fp4_mma_kernel {c.kwargs}", ck)


def bad_config() -> None:
    """A negative control: the INT8 GEMM with tiles of 48 columns (``tl.arange`` needs a power of two)."""
    from lowbit.models.gpu import ternary_gemm
    from lowbit.models.gpu.ternary import QuantAct, pack_ternary_gpu_torch

    tw = pack_ternary_gpu_torch(torch.zeros(32, 64, dtype=torch.int8), 1.0)
    a = QuantAct(torch.zeros(8, 64, dtype=torch.int8), torch.zeros(8, dtype=torch.int32), torch.ones(8), 64)
    (kernel, args, kw), = recorded(ternary_gemm, "_tgemm_kernel", ternary_gemm.ternary_gemm, a, tw)
    compile_sm90(kernel, args, kw, BLOCK_N=48, DOT_F32=False)


PARTS = {"lop": lop_kernels, "split": split_attention_kernels, "row": row_gemv_kernels, "fused": fused_kernels,
         "gemm": gemm_kernels, "bad": bad_config}

if __name__ == "__main__":
    for part in sys.argv[1:] or [p for p in PARTS if p != "bad"]:
        PARTS[part]()
