"""TINT core lane: ternary weight x INT8 activation dot product with a finite-width accumulator.

Model (docs/reference/vitallm.md §5.2): each cycle a lane takes ``tree_width`` (code, activation) pairs; each pair
passes ``+a``, ``-a`` or ``0`` (no multiplier) into an adder tree whose output is exact (the tree is
``8 + ceil(log2 tree_width) + 1`` bits wide, never the bottleneck); the tree sum is added into a signed
``acc_bits``-bit accumulator with two's-complement wraparound. A sticky overflow flag is set when any
accumulation leaves ``[-2^(acc_bits-1), 2^(acc_bits-1)-1]``. The tail cycle is zero-padded.

Vectorization argument (why we need no per-cycle loop): until the first overflow the register holds
the exact prefix sum, so the sticky flag is ``any(prefix sum out of range)``; wraparound is addition
mod ``2^acc_bits``, so the final register is ``wrap(total)`` regardless of intermediate wraps. The
tests check this against a cycle-by-cycle Python big-int model.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .rounding import int_range, wrap_signed

__all__ = [
    "tint_cycles",
    "tint_tree_sums",
    "tint_dot",
    "tint_acc_bits_required",
]


def tint_cycles(k: int, tree_width: int) -> int:
    """Cycles for one lane to reduce a length-``k`` dot product: ``ceil(k / tree_width)``."""
    if tree_width < 1:
        raise ValueError(f"tree_width must be >= 1, got {tree_width}")
    return -(-int(k) // int(tree_width))


def tint_tree_sums(codes: npt.ArrayLike, acts: npt.ArrayLike, tree_width: int) -> np.ndarray:
    """Per-cycle adder-tree outputs, shape ``(..., ceil(K/tree_width))`` int64.

    Cycle ``c`` sums ``select(w_k, a_k)`` for ``k`` in ``[c*T, (c+1)*T)`` where ``select`` is ``+a``
    (w=1), ``-a`` (w=-1) or ``0`` (w=0) and ``T = tree_width``; the last cycle is zero-padded.
    ``codes`` (ternary) and ``acts`` (INT8) broadcast over leading dims; last dims must match.
    """
    w = np.asarray(codes)
    a = np.asarray(acts)
    if not (np.issubdtype(w.dtype, np.integer) and np.issubdtype(a.dtype, np.integer)):
        raise TypeError("codes and acts must be integer arrays")
    if w.size and (w.min() < -1 or w.max() > 1):
        raise ValueError("codes must be ternary {-1, 0, 1}")
    if a.size and (a.min() < -128 or a.max() > 127):
        raise ValueError("acts must be INT8 [-128, 127]")
    if w.ndim == 0 or a.ndim == 0 or w.shape[-1] != a.shape[-1]:
        raise ValueError(f"last dims must match: codes {w.shape}, acts {a.shape}")
    k = w.shape[-1]
    n_cyc = tint_cycles(k, tree_width)
    a64 = a.astype(np.int64)
    # mux, not multiply: +a / -a / 0
    sel = np.where(w == 1, a64, np.where(w == -1, -a64, np.int64(0)))
    pad = n_cyc * tree_width - k
    if pad:
        sel = np.concatenate([sel, np.zeros(sel.shape[:-1] + (pad,), np.int64)], axis=-1)
    return sel.reshape(sel.shape[:-1] + (n_cyc, tree_width)).sum(axis=-1)


def tint_dot(
    codes: npt.ArrayLike, acts: npt.ArrayLike, tree_width: int, acc_bits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ternary x INT8 dot product over the last axis in a ``acc_bits``-bit wrapping accumulator.

    Returns ``(acc int64, overflow bool)`` over the broadcast leading dims: ``acc`` is the register
    content (``wrap(sum_k w_k a_k)`` to ``acc_bits`` two's complement); ``overflow`` is sticky, set if
    any cycle's accumulation ``acc + tree_sum`` left the signed range (docs/reference/vitallm.md §5.2, §4.2). With
    ``acc_bits >= tint_acc_bits_required(K)`` the result is exact and ``overflow`` is False.
    ``1 <= acc_bits <= 63``.
    """
    if not 1 <= acc_bits <= 63:
        raise ValueError(f"acc_bits must be in [1, 63], got {acc_bits}")
    sums = tint_tree_sums(codes, acts, tree_width)
    lo, hi = int_range(acc_bits, signed=True)
    prefix = np.cumsum(sums, axis=-1)  # exact register contents up to the first overflow
    overflow = np.any((prefix < lo) | (prefix > hi), axis=-1)
    total = prefix[..., -1] if prefix.shape[-1] else np.zeros(prefix.shape[:-1], np.int64)
    return wrap_signed(total, acc_bits), overflow


def tint_acc_bits_required(k: int, act_max: int = 128) -> int:
    """Smallest signed accumulator width that holds any length-``k`` ternary x INT8 dot product exactly.

    ``|sum| <= k * act_max`` (the bound ``+k*act_max`` is reached with w=-1, a=-128), so the width is
    ``bit_length(k*act_max) + 1`` (docs/reference/vitallm.md §1.1/§4.2: k=8640, act_max=128 -> 22 bits; docs/reference/numerics.md §9
    item 1: k=6912, act_max=127 -> 21 bits).
    """
    if k < 0 or act_max < 0:
        raise ValueError("k and act_max must be >= 0")
    return (int(k) * int(act_max)).bit_length() + 1
