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


def gather_segments(pos: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The gather rule for many DMA rows at once: row j fetches positions pos[bounds[j]:bounds[j + 1]]
    (ascending); returns per run (row j, first position, length), runs in row order. A run ends where the
    next position is not adjacent or the next row begins."""
    pos = np.asarray(pos, np.int64)
    bounds = np.asarray(bounds, np.int64)
    brk = np.zeros(len(pos), bool)
    if len(pos):
        brk[0] = True
        brk[1:] = np.diff(pos) != 1
        brk[bounds[:-1][bounds[:-1] < len(pos)]] = True
    first = np.flatnonzero(brk)
    length = np.diff(np.append(first, len(pos)))
    row = np.searchsorted(bounds, first, side="right") - 1
    return row, pos[first], length


def expand_gathers(blk: dict[str, np.ndarray], rows: np.ndarray, seg_row: np.ndarray, seg_addr: np.ndarray,
                   seg_bytes: np.ndarray) -> dict[str, np.ndarray]:
    """Replace DMA row rows[j] of a lowered block by the DMAs of its segments (the entries of seg_addr,
    seg_bytes whose seg_row is j, in order; every row has at least one).

    One segment: the row keeps its place, with the segment's address and size. r > 1 segments: r DMA rows
    (copies of the row; only the first allocates its buffer bytes) then a join over them; dependencies on
    the old row point to the join, its buffer release (free_of) to the first DMA, and every other index
    column (dep*, free_of, jlo, jhi) shifts by the rows inserted before it."""
    n = len(blk["main"])
    rows = np.asarray(rows, np.int64)
    seg_row = np.asarray(seg_row, np.int64)
    nseg = np.bincount(seg_row, minlength=len(rows))
    rank = np.arange(len(seg_row)) - np.searchsorted(seg_row, seg_row)  # segment's place within its row
    if not (nseg > 1).any():  # every row is one run: addresses only
        out = dict(blk)
        for c, v in (("addr", seg_addr), ("nbytes", seg_bytes), ("wbytes", seg_bytes)):
            out[c] = blk[c].copy()
            out[c][rows] = v
        return out
    reps = np.ones(n, np.int64)
    multi = nseg > 1
    reps[rows[multi]] = nseg[multi] + 1
    start = np.zeros(n + 1, np.int64)
    np.cumsum(reps, out=start[1:])
    last = start[1:] - 1           # new index of each old row's last piece (the join, or the row itself)
    src = np.repeat(np.arange(n), reps)
    out = {c: blk[c].take(src) for c in COLS}
    for c in ("dep0", "dep1", "dep2"):
        v = out[c]
        out[c] = np.where(v >= 0, last.take(np.maximum(v, 0)), v)
    v = out["free_of"]
    out["free_of"] = np.where(v >= 0, start.take(np.maximum(v, 0)), v)
    out["jlo"] = start.take(out["jlo"])
    out["jhi"] = start.take(out["jhi"])
    at = start[rows].take(seg_row) + rank
    out["addr"][at] = seg_addr
    out["nbytes"][at] = seg_bytes
    out["wbytes"][at] = seg_bytes
    extra = at[rank > 0]
    out["alloc"][extra] = 0
    out["buf"][extra] = -1
    jr = rows[multi]
    jn = start[jr] + nseg[multi]
    for c, val in (("main", C_JOIN), ("nbytes", 0), ("addr", 0), ("wr", 0), ("dcls", 0), ("buf", -1),
                   ("alloc", 0), ("free_of", -1), ("dep0", -1), ("dep1", -1), ("dep2", -1), ("sub", SUB["join"]),
                   ("macs", 0), ("mcls", -1), ("rbuf", -1), ("rbytes", 0), ("rbuf2", -1), ("rbytes2", 0),
                   ("wbuf", -1), ("wbytes", 0)):
        out[c][jn] = val
    out["jlo"][jn] = start[jr]
    out["jhi"][jn] = jn
    return out
