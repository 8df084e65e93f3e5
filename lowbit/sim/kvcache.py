"""KV-cache layout in DRAM and the scattered (gather) fetches of LOP-selected keys (docs/kv-cache.md).

Layout (INT8 K and V, 4-bit LO codes; P = the model's max_positions, L layers, G = KV heads, hd = head_dim,
cb = ceil(hd * 4 / 8) LO-code bytes per key; s = the sequence of a batched trace, 0 otherwise):

    K[s, l, g, p]  at KV_BASE  + ((((s * L + l) * G + g) * 2 + 0) * P + p) * hd
    V[s, l, g, p]  at KV_BASE  + ((((s * L + l) * G + g) * 2 + 1) * P + p) * hd
    LO[s, l, g, p] at LOP_BASE + (((s * L + l) * G + g) * P + p) * cb

so the keys of one (layer, KV head) are one contiguous plane in position order, its values the next plane,
and a position beyond P would land in the next head's plane (the lowering refuses it). DESIGN CHOICE: planes
per (layer, head) keep dense attention's K (or V) reads sequential (row-buffer hits, sim.dram), and a KV
head's K plane is read on its own before its V plane, as attention needs them; no padding: a key of hd = 100
bytes straddles 32-byte bursts.

Gather rule (coalescing): the positions LOP selects for one KV head are sorted ascending and cut into chunks
of kv_chunk keys (the KV buffer tile, sim.tiling); inside a chunk, every maximal run of adjacent positions
(p, p + 1, ...) is one DMA of run_length * hd bytes at the run's first address; a chunk of r > 1 runs becomes
r DMAs (the first allocates the chunk's buffer bytes) and a zero-time join the attention tile waits for. A
chunk of one run is a single DMA, exactly what dense attention issues. The DRAM model (sim.dram) then
charges each run its own row hits and misses and the partial bursts at its ends.

Fixed-ratio selection (no q/k tensors): K = min(k, M) positions floor(i * M / K), i = 0..K-1, spread
evenly over the context. DESIGN ASSUMPTION: which keys a real query selects is unknown without tensors;
evenly spread keys are never adjacent for K <= M/2 (no coalescing), like scattered top-K selections, where
the former model fetched K adjacent keys as one block.
"""

from __future__ import annotations

import numpy as np

from lowbit.sim.isa import C_JOIN, COLS, KV_BASE, LOP_BASE, SUB
from lowbit.sim.modelspec import ModelSpec
from lowbit.sim.numerics.lop import LOP_SURROGATE_BITS_PER_ELEM


def code_bytes(m: ModelSpec) -> int:
    """LO-code bytes per key of one head: ceil(head_dim * 4 / 8)."""
    return -(-m.head_dim * LOP_SURROGATE_BITS_PER_ELEM // 8)


def kv_addr(m: ModelSpec, layer: int, g: int, v: bool, pos: int, seq: int = 0) -> int:
    """DRAM address of the K (v=False) or V row of position `pos` of KV head g of `layer` of sequence `seq`
    (module docstring)."""
    lg = (seq * m.n_layers + layer) * m.n_kv_heads + g
    return KV_BASE + ((lg * 2 + int(v)) * m.max_positions + pos) * m.head_dim


def lo_addr(m: ModelSpec, layer: int, g: int, pos: int, seq: int = 0) -> int:
    """DRAM address of the LO codes of key `pos` of KV head g of `layer` of sequence `seq`."""
    lg = (seq * m.n_layers + layer) * m.n_kv_heads + g
    return LOP_BASE + (lg * m.max_positions + pos) * code_bytes(m)


def layer_offsets(m: ModelSpec) -> tuple[int, int]:
    """Bytes between consecutive layers' KV planes and LO-code planes: (2 G P hd, G P cb)."""
    return 2 * m.n_kv_heads * m.max_positions * m.head_dim, m.n_kv_heads * m.max_positions * code_bytes(m)


def fixed_positions(m_keys: int, k: int) -> np.ndarray:
    """Fixed-ratio selection: K = min(k, M) positions floor(i * M / K) (module docstring)."""
    kk = min(k, m_keys)
    return (np.arange(kk, dtype=np.int64) * m_keys) // max(kk, 1)


def runs(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximal runs of adjacent positions in ascending `pos`: (first position, length) per run."""
    pos = np.asarray(pos, np.int64)
    if len(pos) == 0:
        return pos, pos
    brk = np.flatnonzero(np.diff(pos) != 1) + 1
    starts = np.concatenate([[0], brk])
    ends = np.concatenate([brk, [len(pos)]])
    return pos[starts], ends - starts


def expand_gathers(blk: dict[str, np.ndarray], rows: np.ndarray, seg_addr: list[np.ndarray],
                   seg_bytes: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Replace DMA row rows[j] of a lowered block by the DMAs of its segments (seg_addr[j], seg_bytes[j]).

    One segment: the row keeps its place, with the segment's address and size. r > 1 segments: r DMA rows
    (copies of the row; only the first allocates its buffer bytes) then a join over them; dependencies on
    the old row point to the join, its buffer release (free_of) to the first DMA, and every other index
    column (dep*, free_of, jlo, jhi) shifts by the rows inserted before it."""
    n = len(blk["main"])
    reps = np.ones(n, np.int64)
    rows = np.asarray(rows, np.int64)
    nseg = np.array([len(a) for a in seg_addr], np.int64)
    multi = nseg > 1
    reps[rows[multi]] = nseg[multi] + 1
    start = np.zeros(n + 1, np.int64)
    np.cumsum(reps, out=start[1:])
    last = start[1:] - 1           # new index of each old row's last piece (the join, or the row itself)
    out = {c: np.repeat(blk[c], reps) for c in COLS}
    for c in ("dep0", "dep1", "dep2"):
        v = blk[c]
        out[c] = np.repeat(np.where(v >= 0, last[np.maximum(v, 0)], v), reps)
    v = blk["free_of"]
    out["free_of"] = np.repeat(np.where(v >= 0, start[np.maximum(v, 0)], v), reps)
    out["jlo"] = np.repeat(start[blk["jlo"]], reps)
    out["jhi"] = np.repeat(start[blk["jhi"]], reps)
    for j, r in enumerate(rows.tolist()):
        a, b = np.asarray(seg_addr[j], np.int64), np.asarray(seg_bytes[j], np.int64)
        s0 = int(start[r])
        k = len(a)
        out["addr"][s0:s0 + k] = a
        out["nbytes"][s0:s0 + k] = b
        out["wbytes"][s0:s0 + k] = b
        if k > 1:
            out["alloc"][s0 + 1:s0 + k] = 0
            out["buf"][s0 + 1:s0 + k] = -1
            jn = s0 + k
            for c, val in (("main", C_JOIN), ("nbytes", 0), ("addr", 0), ("wr", 0), ("dcls", 0), ("buf", -1),
                           ("alloc", 0), ("free_of", -1), ("dep0", -1), ("dep1", -1), ("dep2", -1),
                           ("jlo", s0), ("jhi", s0 + k), ("sub", SUB["join"]), ("macs", 0), ("mcls", -1),
                           ("rbuf", -1), ("rbytes", 0), ("rbuf2", -1), ("rbytes2", 0), ("wbuf", -1),
                           ("wbytes", 0)):
                out[c][jn] = val
    return out
