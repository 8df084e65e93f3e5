"""Dense decode attention kernel vs a float64 softmax(q·k/sqrt(d)) v per query head (MHA and GQA, contexts
inside, across and at the end of the 64-token blocks, rows zero-padded past head_dim), within 1e-2."""

from __future__ import annotations

import math

import pytest
import torch

from lowbit.models.gpu.decode_attn import dense_attention_fits, dense_decode_attention


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
    assert dense_attention_fits(384, 4) and not dense_attention_fits(385, 4) and not dense_attention_fits(100, 1)
