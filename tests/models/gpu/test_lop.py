"""LOP decode attention vs sim.numerics.lop: packed LO codes, INT8 queries, group surrogate scores (sum of
the sim's per-head ``lo_scores`` over the query heads of a KV group) and the group's top-K indices
bit-exact; attention within 1e-2 (relative L2; bf16 output, float32 math) of a float64 softmax over the
sim's K for every query head of the group."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowbit.models.gpu.lop_attn import (
    lo_cache_torch,
    lo_pack_keys_torch,
    lop_attention,
    lop_chunk,
)
from lowbit.sim.numerics.fp import pack_fp4
from lowbit.sim.numerics.int8 import int8_absmax_quantize
from lowbit.sim.numerics.lop import lo_code4, lo_scores, lop_topk


def _setup(seed, b=1, h=4, kvh=2, d=40, mmax=160):
    rng = np.random.default_rng(seed)
    k_i8 = rng.integers(-127, 128, (b, kvh, mmax, d)).astype(np.int8)
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, d, generator=g).to(torch.bfloat16)
    kc = torch.randn(b, kvh, mmax, d, generator=g).to(torch.bfloat16)
    vc = torch.randn(b, kvh, mmax, d, generator=g).to(torch.bfloat16)
    return k_i8, q, kc, vc


def test_lo_pack_matches_sim():
    k_i8, *_ = _setup(1, d=37)
    lo = lo_pack_keys_torch(torch.from_numpy(k_i8)).numpy()
    codes = lo_code4(k_i8)
    codes = np.concatenate([codes, np.zeros(codes.shape[:-1] + (3,), np.uint8)], -1)
    assert np.array_equal(lo, pack_fp4(codes).view("<i4"))
    # the cache: the same words word-major, [.., words, tokens]
    assert np.array_equal(lo_cache_torch(torch.from_numpy(k_i8)).numpy(), np.swapaxes(lo, -1, -2))


# ch: tokens per program; 160 tokens in chunks of 16: the last
# program merges ten partials in two blocks of eight
@pytest.mark.parametrize("nb,mant,ksel,m,h,kvh,ch", [(63, 0, 12, 150, 4, 2, 64), (31, 2, 20, 129, 6, 2, 32),
                                                     (15, 1, 7, 60, 3, 3, 16), (63, 0, 40, 160, 4, 1, 256),
                                                     (63, 0, 30, 100, 8, 1, 64),
                                                     (63, 0, 24, 160, 4, 2, 16)])
def test_lop_scores_topk_attention(device, nb, mant, ksel, m, h, kvh, ch):
    b, d, grp = 2, 40, h // kvh
    k_i8, q, kc, vc = _setup(nb + m, b, h, kvh, d)
    if grp == 8:  # equal heads: |Q_g| up to 8 * 64, the high int8 part of the split query weights in use
        q = q[:, :1].repeat(1, h, 1)
    lo = lo_cache_torch(torch.from_numpy(k_i8))
    out, dbg = lop_attention(q.to(device), kc.to(device), vc.to(device), lo.to(device), m, ksel, n_buckets=nb,
                             mant_bits=mant, chunk=ch, return_debug=True)
    qi = dbg["q_i8"].cpu().numpy().reshape(b, h, d)
    assert np.array_equal(qi, int8_absmax_quantize(q.float().numpy())[0])
    per_head = lo_scores(qi, np.repeat(k_i8[:, :, :m], grp, axis=1))  # [b, h, m]
    sref = per_head.reshape(b, kvh, grp, m).sum(2)
    assert np.array_equal(dbg["scores"].cpu().numpy().reshape(b, kvh, m), sref)
    iref = lop_topk(sref, ksel, n_buckets=nb, mant_bits=mant)  # one list per KV group
    assert np.array_equal(dbg["idx"].cpu().numpy().reshape(b, kvh, ksel), iref)
    qd = q.double().numpy()
    ref = np.zeros((b, h, d))
    for i in range(b):
        for j in range(h):
            sel = iref[i, j // grp]
            s = kc[i, j // grp].double().numpy()[sel] @ qd[i, j] / np.sqrt(d)
            p = np.exp(s - s.max())
            ref[i, j] = (p / p.sum()) @ vc[i, j // grp].double().numpy()[sel]
    got = out.double().cpu().numpy()
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-2
    # a second call reuses the self-resetting counters and gives the same result
    assert torch.equal(lop_attention(q.to(device), kc.to(device), vc.to(device), lo.to(device), m, ksel,
                                     n_buckets=nb, mant_bits=mant, chunk=ch), out)


def test_lop_k_ge_m_is_dense_attention(device):
    k_i8, q, kc, vc = _setup(5)
    m = 100
    lo = lo_cache_torch(torch.from_numpy(k_i8))
    out = lop_attention(q.to(device), kc.to(device), vc.to(device), lo.to(device), m, 1000, chunk=64)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.double().unsqueeze(2), kc[:, :, :m].double().repeat_interleave(2, 1),
        vc[:, :, :m].double().repeat_interleave(2, 1)).squeeze(2)
    assert (torch.linalg.norm(out.double().cpu() - ref) / torch.linalg.norm(ref)).item() < 1e-2
    with pytest.raises(ValueError):
        lop_attention(q, kc, vc, lo, m, 10, n_buckets=64)
    with pytest.raises(ValueError, match="chunk"):
        lop_attention(q, kc, vc, lo, m, 10, chunk=48)


def test_lop_chunk_rule():
    # the smallest power of two from 128 with <= 32 chunks per group and <= 4 programs per SM (8 from 256 tokens)
    assert lop_chunk(5, 1024, 132) == 128  # bitnet-2B4T: 5 x 8 programs
    assert lop_chunk(5, 4096, 132) == 128  # 5 x 32
    assert lop_chunk(5, 8192, 132) == 256  # 5 x 32: 64 chunks of 128 would be too many per group
    assert lop_chunk(32, 4096, 132) == 256  # bitnet-3B: 32 x 16 (32 x 32 > 528)
    assert lop_chunk(32, 8192, 132) == 256  # 32 x 32 = 1024 <= 8 x 132 for chunks of 256
    assert lop_chunk(256, 8192, 132) == 1024  # batch 8: no chunk fits 8 programs per SM: the largest
    assert lop_chunk(1, 100, 132) == 128 and lop_chunk(64, 10**6, 132) == 1024  # the bounds
