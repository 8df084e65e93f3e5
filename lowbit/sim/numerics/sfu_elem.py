"""Fixed-point elementwise SFU ops: RoPE and the FFN activations (SiLU / ReLU^2, gated or not), golden models
of rtl/sfu_rope.py and rtl/sfu_act.py; plus the float <-> fixed conversions the tests and models use.

Formats (two's complement, ``Qm.n``): activations signed 16-bit **Q7.8** (sim.numerics.sfu_reduce.ACT_FRAC);
RoPE cos/sin signed 16-bit **Q2.14** (``TRIG_FRAC`` = 14, so +-1.0 = +-16384 is exact); the sigmoid table
unsigned **UQ1.20** (``SIG_FRAC`` = 20: the negative side 1 - sigmoid keeps ~2^-21 absolute precision). Final roundings are round-half-up (``(v + 2^(s-1)) >> s``) then saturation to int16;
intermediate products are exact.

RoPE (Su et al. 2021, RoFormer, arXiv 2104.09864; the rotate-half layout of HF ``apply_rotary_pos_emb``:
``q * cos + rotate_half(q) * sin`` with ``rotate_half(q) = cat(-q[h:], q[:h])``, h = head_dim / 2)::

    cos_q[p, i], sin_q[p, i] = RNE(cos(p w_i) * 2^14), RNE(sin(p w_i) * 2^14),  w_i = base^(-2i / head_dim)
    out[i]     = sat16((x[i] cos_q - x[i+h] sin_q + 2^13) >> 14)
    out[i+h]   = sat16((x[i+h] cos_q + x[i] sin_q + 2^13) >> 14)        i = 0 .. h-1

The table is computed in float64 by the compiler (``rope_table``) and streamed from SRAM beside the
activations (DESIGN ASSUMPTION: no on-chip sin/cos generator; HF computes the same angles in float32).

Activation, with the gate ``g`` and up ``u`` projections in Q7.8 (GLU variants: Shazeer 2020, arXiv
2002.05202; ReLU^2: So et al. 2021 (Primer), arXiv 2109.08668, used gated by BitNet b1.58 2B4T)::

    silu:   sig(g) = table + linear interpolation of the logistic over |g| in [0, 16), 256 intervals:
                     s = S[j] + ((S[j+1] - S[j]) * d >> 4),  j = |g| >> 4, d = |g| mod 16,  S[j] = RNE(2^20 / (1 + e^(-j/16)))
                     s = 2^20 for |g| >= 16;  g < 0: 2^20 - s        (sigmoid(-x) = 1 - sigmoid(x))
            a = g * s  (Q.28, shift 20)
    relu2:  a = max(g, 0)^2  (Q.16, shift 8)
    gated:  y = sat16((a * u + 2^(sh+7)) >> (sh + 8));  ungated: y = sat16((a + 2^(sh-1)) >> sh)

Table + linear interpolation (J.-M. Muller, *Elementary Functions*, 3rd ed. 2016, §4): the logistic's
chord error over 1/16 intervals is <= 2^-14.4 (plus table rounding 2^-21); the product is rounded once.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from lowbit.sim.numerics.sfu_reduce import ACT_FRAC, as_fixed_ints

__all__ = ["TRIG_FRAC", "SIG_FRAC", "SIGMOID_TABLE", "ACT_FNS", "to_fixed", "from_fixed", "rope_table", "sfu_rope",
           "sfu_sigmoid", "sfu_act"]

TRIG_FRAC = 14
SIG_FRAC = 20
SIGMOID_TABLE = tuple(int(np.rint(2**SIG_FRAC / (1 + math.exp(-j / 16)))) for j in range(257))
"""S[j]: logistic(j/16) in UQ1.20 (RNE), j = 0..256."""
ACT_FNS = ("silu", "relu2")
_I16 = (-(1 << 15), (1 << 15) - 1)


def to_fixed(x: npt.ArrayLike, frac: int = ACT_FRAC, bits: int = 16) -> np.ndarray:
    """Float -> signed ``bits``-bit fixed point with ``frac`` fraction bits: RNE, saturating (int64 array)."""
    v = np.rint(np.asarray(x, dtype=np.float64) * 2.0**frac)
    return np.clip(v, -(1 << (bits - 1)), (1 << (bits - 1)) - 1).astype(np.int64)


def from_fixed(q: npt.ArrayLike, frac: int = ACT_FRAC) -> np.ndarray:
    """Fixed point -> float64 (exact)."""
    return np.asarray(q, dtype=np.float64) * 2.0**-frac


def rope_table(positions: npt.ArrayLike, head_dim: int, base: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """``(cos_q, sin_q)``, each ``(len(positions), head_dim // 2)`` int64 in Q2.14 (module docstring)."""
    if head_dim < 2 or head_dim % 2:
        raise ValueError(f"head_dim must be even and >= 2, got {head_dim}")
    p = np.asarray(positions, dtype=np.float64).reshape(-1)
    w = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    ang = np.outer(p, w)
    return to_fixed(np.cos(ang), TRIG_FRAC), to_fixed(np.sin(ang), TRIG_FRAC)


def sfu_rope(x: npt.ArrayLike, cos_q: npt.ArrayLike, sin_q: npt.ArrayLike) -> np.ndarray:
    """Rotate-half RoPE of Q7.8 rows ``x`` (..., head_dim) with Q2.14 ``cos_q``/``sin_q`` (..., head_dim/2),
    broadcast against x's leading axes. Returns Q7.8 int16."""
    a = as_fixed_ints("x", x)
    c = as_fixed_ints("cos_q", cos_q)
    s = as_fixed_ints("sin_q", sin_q)
    h = a.shape[-1] // 2
    if a.shape[-1] % 2 or c.shape[-1] != h or s.shape[-1] != h:
        raise ValueError(f"x's last axis must be even and cos/sin's half of it, got {a.shape}, {c.shape}, {s.shape}")
    x1, x2 = a[..., :h], a[..., h:]
    half = 1 << (TRIG_FRAC - 1)
    o1 = (x1 * c - x2 * s + half) >> TRIG_FRAC
    o2 = (x2 * c + x1 * s + half) >> TRIG_FRAC
    return np.clip(np.concatenate([o1, o2], axis=-1), *_I16).astype(np.int16)


def sfu_sigmoid(g: npt.ArrayLike) -> np.ndarray:
    """logistic(g) in UQ1.20 for Q7.8 integers g (module docstring)."""
    a = np.asarray(g, dtype=np.int64)
    mag = np.abs(a)
    tab = np.array(SIGMOID_TABLE, np.int64)
    j = np.minimum(mag >> 4, 255)
    d = mag & 15
    s = np.where(mag >= 16 << 8, 1 << SIG_FRAC, tab[j] + (((tab[j + 1] - tab[j]) * d) >> 4))
    return np.where(a < 0, (1 << SIG_FRAC) - s, s)


def sfu_act(g: npt.ArrayLike, up: npt.ArrayLike | None = None, fn: str = "silu") -> np.ndarray:
    """``fn(g) * up`` (gated) or ``fn(g)`` with Q7.8 inputs and output (int16, saturated); fn in ACT_FNS."""
    if fn not in ACT_FNS:
        raise ValueError(f"fn must be one of {', '.join(ACT_FNS)}, got {fn!r}")
    a = as_fixed_ints("gate", g)
    if fn == "silu":
        prod, sh = a * sfu_sigmoid(a), SIG_FRAC
    else:
        r = np.maximum(a, 0)
        prod, sh = r * r, 8
    if up is not None:
        u = as_fixed_ints("up", up)
        if u.shape != a.shape:
            raise ValueError(f"gate and up must have one shape, got {a.shape} and {u.shape}")
        prod, sh = prod * u, sh + 8
    return np.clip((prod + (1 << (sh - 1))) >> sh, *_I16).astype(np.int16)
