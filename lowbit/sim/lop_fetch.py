"""Indirect K/V fetches: the K/V DMA words of a decode step whose LOP drops keys take their rows from the LOP
unit's index FIFO (tile ISA fields `ind`, `nidx`, `isel`; docs/isa.md "Indirect K/V fetches").

Rule: per (sequence, KV head) one lop_topk word selects min(K, M) keys (sim.numerics.lop.lop_group_topk, the
same count whatever the data) and writes their positions, ascending, to its index FIFO. Every K fetch and
every V fetch of that KV head is `ind` = 1 with `isel` = that lop_topk word and `nidx` = the rows it fetches:
the chip takes `nidx` indices in order and fetches row `index` at the K (or V) plane's base + index x
head_dim (sim.kvcache layout); the K words together take all `nidx` of the lop_topk word, and so do the V
words (the chip keeps the indices for the V plane). The compiler knows the positions (data-driven selections
from trace tensors, or the fixed-ratio ones), so each word also keeps the address and size they resolve to:
the simulator times exactly those bytes, in the same order as a direct fetch (the gather rule of
sim.kvcache: a run of adjacent positions is one request). A step whose LOP keeps every key (K >= M) fetches
directly.
"""

from __future__ import annotations

import numpy as np

from lowbit.sim.errors import WorkloadError
from lowbit.sim.isa import C_DMAKV, C_LOP, KV_BASE, SUB
from lowbit.sim.modelspec import ModelSpec

_KV_SUBS = (SUB["k_dma"], SUB["v_dma"])


def mark_indirect(blk: dict[str, np.ndarray], m: ModelSpec, rec: list) -> dict[str, np.ndarray]:
    """`blk` (a layer block with its LOP K/V fetches gathered, layer-0 addresses) with the indirect columns set
    for the KV heads `rec` lists (the lowering's LOP fetch records: (row, g, v, k0, k1, step, ctx, seq); their
    largest k1 is the head's selected keys). Returns a new dict (the block may be cached)."""
    keys: dict[int, int] = {}
    for _row, g, _v, _k0, k1, _step, _ctx, seq in rec:
        lg = seq * m.n_layers * m.n_kv_heads + g
        keys[lg] = max(keys.get(lg, 0), k1)
    main, sub = blk["main"], blk["sub"]
    kv = (main == C_DMAKV) & np.isin(sub, _KV_SUBS)
    lg = (blk["addr"] - KV_BASE) // m.head_dim // m.max_positions // 2  # (seq, layer 0, g) of each fetch
    rows = np.flatnonzero(kv & np.isin(lg, list(keys)))
    out = dict(blk)
    for c in ("ind", "nidx", "isel"):
        out[c] = blk[c].copy()
    top: dict[int, int] = {}
    for r in rows[sub[rows] == SUB["k_dma"]]:  # a K fetch waits on its KV head's lop_topk
        t = int(blk["dep0"][r])
        if t < 0 or main[t] != C_LOP or sub[t] != SUB["lop_topk"] or top.setdefault(int(lg[r]), t) != t:
            raise WorkloadError(f"lowering: LOP K fetch {int(r)} does not follow its KV head's lop_topk "
                                f"(dep0 = {t}); the indirect fetch needs it")
    missing = sorted(set(keys) - set(top))
    if missing:
        raise WorkloadError(f"lowering: LOP fetches of KV plane {missing[0]} have no lop_topk")
    out["ind"][rows] = 1
    out["nidx"][rows] = blk["nbytes"][rows] // m.head_dim
    out["isel"][rows] = [top[int(x)] for x in lg[rows]]
    for x, t in top.items():
        out["nidx"][t] = keys[x]
    return out


__all__ = ["mark_indirect"]
