"""Dense decode attention kernel vs a float64 softmax(q·k/sqrt(d)) v per query head (MHA and GQA, contexts
inside, across and at the end of the 64-token blocks, rows zero-padded past head_dim), within 1e-2."""

from __future__ import annotations

import math

import pytest
import torch

from lowbit.models.gpu.decode_attn import dense_decode_attention, split_attention_fits


def _ref(q, kc, vc, m, hd):
    h, kvh = q.shape[1], kc.shape[1]
    k = kc[:, :, :m, :hd].double().repeat_interleave(h // kvh, 1)
    v = vc[:, :, :m].double().repeat_interleave(h // kvh, 1)
    s = torch.einsum("bhd,bhmd->bhm", q[..., :hd].double(), k) / math.sqrt(hd)
    return torch.einsum("bhm,bhmd->bhd", torch.softmax(s, -1), v)


@pytest.mark.parametrize("b,h,kvh,d,hd,m", [(2, 4, 4, 40, 40, 100), (1, 6, 2, 16, 12, 1), (2, 8, 1, 24, 24, 129),
                                            (1, 3, 3, 40, 40, 64)])
def test_dense_decode_attention_matches_float64(device, b, h, kvh, d, hd, m):
    g = torch.Generator().manual_seed(h * 1000 + m)
    q = torch.randn(b, h, d, generator=g)
    kc, vc = torch.randn(b, kvh, 140, d, generator=g), torch.randn(b, kvh, 140, d, generator=g)
    q[..., hd:] = 0  # zero padding past head_dim, as the decode step stores it
    kc[..., hd:] = 0
    vc[..., hd:] = 0
    q, kc, vc = (x.to(torch.bfloat16) for x in (q, kc, vc))
    got = dense_decode_attention(q.to(device), kc.to(device), vc.to(device), m, scale=1 / math.sqrt(hd)).cpu()
    ref = _ref(q, kc, vc, m, hd)
    assert (torch.linalg.norm(got.double() - ref) / torch.linalg.norm(ref)).item() < 1e-2
    assert not got[..., hd:].any()
    # a context one token shorter is a different result (the check above can fail)
    ref2 = _ref(q, kc, vc, m - 1, hd) if m > 1 else torch.zeros_like(ref)
    assert (torch.linalg.norm(got.double() - ref2) / torch.linalg.norm(ref)).item() > 1e-2


def test_dense_decode_attention_refuses_bad_shapes():
    q = torch.zeros(1, 6, 16, dtype=torch.bfloat16)
    kc = torch.zeros(1, 4, 8, 16, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="bad shapes"):
        dense_decode_attention(q, kc, kc, 4)  # 6 heads over 4 KV heads
    with pytest.raises(ValueError, match="bad shapes"):
        dense_decode_attention(q[:, :4], kc, kc, 9)  # context past the cache
    assert split_attention_fits(384) and not split_attention_fits(385)


def _inputs(b, h, kvh, d, hd, mmax, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, d, generator=g)
    kc, vc = torch.randn(b, kvh, mmax, d, generator=g), torch.randn(b, kvh, mmax, d, generator=g)
    for x in (q, kc, vc):
        x[..., hd:] = 0
    return tuple(x.to(torch.bfloat16) for x in (q, kc, vc))


@pytest.mark.parametrize("b,h,kvh,d,hd", [(1, 3, 3, 16, 10), (2, 4, 2, 8, 8), (1, 6, 2, 16, 16)])
@pytest.mark.parametrize("m", [1, 5, 37, 100])
@pytest.mark.parametrize("splits", [1, 3, 4])
@pytest.mark.parametrize("combine", ["last", "kernel"])
def test_split_decode_attention_matches_float64_and_sdpa(device, b, h, kvh, d, hd, m, splits, combine):
    import torch.nn.functional as F

    from lowbit.models.gpu.decode_attn import split_decode_attention, split_plan

    q, kc, vc = _inputs(b, h, kvh, d, hd, 101, seed=h * 1000 + m * 10 + splits)
    ns = split_plan(m, b * kvh, device, splits)[0]
    assert ns == min(splits, m) or (m == 5 and splits == 4 and ns == 3)  # ceil(5 / ceil(5/4)) = 3
    got = split_decode_attention(q.to(device), kc.to(device), vc.to(device), m, scale=1 / math.sqrt(hd),
                                 splits=splits, block_tokens=16, combine=combine).cpu()
    ref = _ref(q, kc, vc, m, hd)
    scale = ref.abs().max().item()
    assert (got.double() - ref).abs().max().item() <= 1e-2 * scale
    sdpa = F.scaled_dot_product_attention(q.unsqueeze(2).float(), kc[:, :, :m].float(), vc[:, :, :m].float(),
                                          scale=1 / math.sqrt(hd), enable_gqa=h != kvh).squeeze(2)
    assert (got.float() - sdpa).abs().max().item() <= 1e-2 * scale
    assert not got[..., hd:].any()
    # a context one token shorter is a different result (the checks above can fail)
    ref2 = _ref(q, kc, vc, m - 1, hd) if m > 1 else torch.zeros_like(ref)
    assert (got.double() - ref2).abs().max().item() > 1e-2 * scale


@pytest.mark.parametrize("dot", [False, True])
def test_split_decode_attention_replays_identically(device, dot):
    from lowbit.models.gpu.decode_attn import _SPLIT_SCRATCH, split_decode_attention

    q, kc, vc = _inputs(2, 4, 2, 16, 12, 80, seed=7)
    q, kc, vc = q.to(device), kc.to(device), vc.to(device)
    outs = [split_decode_attention(q, kc, vc, 70, splits=4, block_tokens=16, dot=dot) for _ in range(2)]
    assert torch.equal(outs[0], outs[1])
    cnts = [v[3] for k, v in _SPLIT_SCRATCH.items() if k[0] == str(q.device)]
    assert cnts and all(not c.any() for c in cnts)  # the last program reset its group's counter
    # the same partials combined by the second launch give the same output
    assert torch.equal(outs[0], split_decode_attention(q, kc, vc, 70, splits=4, block_tokens=16, dot=dot,
                                                       combine="kernel"))
    # the kernel path differs from a one-split run only by rounding
    one = split_decode_attention(q, kc, vc, 70, splits=1, dot=dot)
    assert (one.float() - outs[0].float()).abs().max().item() <= 1e-2 * one.float().abs().max().item()


def test_split_plan_and_bad_arguments():
    from lowbit.models.gpu.decode_attn import split_decode_attention, split_plan

    assert split_plan(193, 32, "cpu") == (1, 193, 64)  # 4 "SMs" off CUDA: at most 16 programs, one split each
    assert split_plan(193, 1, "cpu") == (13, 15, 16)  # 16 tokens a split: ceil(193 / 16) = 13, 15 tokens each
    assert split_plan(193, 8, "cpu") == (2, 97, 64)
    assert split_plan(1000, 1, "cpu") == (4, 250, 64)  # past SPLIT_MAX_CTX: about one program per SM
    assert split_plan(193, 32, "cpu", splits=4, block_tokens=32) == (4, 49, 32)
    assert split_plan(20, 1, "cpu") == (2, 10, 16)  # at least 16 tokens a split by default
    assert split_plan(5, 1, "cpu", splits=9) == (5, 1, 16)
    q = torch.zeros(1, 4, 16, dtype=torch.bfloat16)
    kc = torch.zeros(1, 2, 8, 16, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="bad shapes"):
        split_decode_attention(q, kc, kc, 9)
    with pytest.raises(ValueError, match="unknown combine"):
        split_decode_attention(q, kc, kc, 4, combine="first")


@pytest.mark.parametrize("combine", ["last", "kernel"])
def test_split_decode_attention_large_scores(device, combine):
    """Scores in the hundreds (exp overflows float32 past 88): the combine must rescale by the max."""
    from lowbit.models.gpu.decode_attn import split_decode_attention

    q, kc, vc = _inputs(1, 2, 1, 16, 16, 64, seed=3)
    q = (q.float() * 60).to(torch.bfloat16)
    got = split_decode_attention(q.to(device), kc.to(device), vc.to(device), 64, splits=4, block_tokens=16,
                                 combine=combine).cpu()
    ref = _ref(q, kc, vc, 64, 16)
    assert torch.isfinite(got).all()
    assert (got.double() - ref).abs().max().item() <= 1e-2 * ref.abs().max().item()


def test_dense_variants_agree(device):
    """The variants the GPU timing (bench_attention.time_dense_attention) compares give one result."""
    from lowbit.models.gpu.bench_attention import dense_variants

    q, kc, vc = _inputs(1, 4, 2, 16, 12, 41, seed=11)
    q, kc, vc = q.to(device), kc.to(device), vc.to(device)
    outs = {k: f().cpu() for k, f in dense_variants(q, kc, vc, 40, 12, splits=3, block_tokens=16).items()}
    assert set(outs) == {"sdpa", "dense", "split_last", "split_kernel"}
    ref = _ref(q.cpu(), kc.cpu(), vc.cpu(), 40, 12)
    for name, o in outs.items():
        assert o.shape == (1, 4, 16), name
        assert (o.double() - ref).abs().max().item() <= 1e-2 * ref.abs().max().item(), name
    assert torch.equal(outs["split_last"], outs["split_kernel"])
