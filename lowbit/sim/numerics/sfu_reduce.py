"""Fixed-point RMSNorm and softmax of the SFU (golden models of rtl/sfu_rmsnorm.py and rtl/sfu_softmax.py).

Both are per-row reductions over the last axis, integer-exact, no float anywhere in the datapath. Formats
(two's complement, ``Qm.n`` = m integer bits incl. sign, n fraction bits):

* activations ``x`` (RMSNorm input and output, softmax input): signed 16-bit **Q7.8** (``ACT_FRAC`` = 8);
  RMSNorm is scale invariant, so its input's binary point matters only for ``eps``;
* RMSNorm gain ``g``: signed 16-bit **Q5.10** (``GAIN_FRAC`` = 10);
* softmax output: unsigned 16-bit **UQ1.15** (``PROB_FRAC`` = 15; 1.0 = 32768 is representable).

Final roundings are round-half-up (``(v + 2^(s-1)) >> s``, one adder; ties toward +inf) followed by
saturation to the output format. All intermediate products truncate (floor), as written below; the RTL
computes exactly these integers.

RMSNorm (Zhang & Sennrich 2019, arXiv 1910.07467; HF ``LlamaRMSNorm``: ``y = g * x / sqrt(mean(x^2) + eps)``)::

    S    = sum_i x_i^2                            # exact (<= 2^46)
    v    = S + eps_q,  eps_q = RNE(eps * dim * 2^(2 x_frac))   # per-op constant (rmsnorm_consts)
    b    = bit_length(v);  2k = b - 24 + ((b - 24) & 1)      # even shift: m has 23 or 24 bits
    m    = v >> 2k  (v << -2k when 2k < 0)        # mu = m / 2^22 in [1, 4), v ~ mu * 2^(22 + 2k)
    y0   = T[i] - ((T[i] - T[i+1]) * d >> 18),  i = m >> 18, d = m mod 2^18   # chord of 1/sqrt(mu)
    t    = y0^2 >> 23;  u = m * t >> 22;  y1 = y0 * (3 * 2^23 - u) >> 24      # one Newton-Raphson step
    R    = y1 * sd >> 24,  sd = RNE(sqrt(dim) * 2^(23 - e_sd)),  e_sd = floor(log2 dim) // 2
    out  = sat16((x_i * g_i * R + 2^(s-1)) >> s),  s = 35 + k - e_sd

with ``T[i] = RNE(2^23 / sqrt(i / 16))`` for i = 16..64 (49 entries). The reciprocal square root is the
classic table-seed + Newton-Raphson iteration ``y <- y (3 - mu y^2) / 2`` (J.-M. Muller, *Elementary
Functions: Algorithms and Implementation*, 3rd ed., Birkhauser 2016, §2.2 (Newton-Raphson for 1/sqrt) and
§4 (table lookup with linear interpolation)): the linearly interpolated 48-interval seed is within 2^-11.4
relative, one NR step squares that to ~2^-22. ``1 / rms = sqrt(dim) / sqrt(v)``, so the per-op constants
``sd`` and ``e_sd`` carry ``sqrt(dim)`` and no divider is needed (DESIGN ASSUMPTION: the instruction
carries ``eps_q``, ``sd`` and ``e_sd``, computed by the compiler from dim and eps). An all-zero row with
``eps_q = 0`` gives zeros. SubLN (BitNet b1.58's extra norms before o_proj and down_proj) is the same op
with its own gain.

Softmax (max-subtracted, base 2 as in Softermax, Stevens et al., DAC 2021, arXiv 2103.09301)::

    mx   = max_i x_i                                   # pass 1
    z_i  = (x_i - mx) * L2E >> 7,  L2E = RNE(log2(e) * 2^15) = 47274       # Q.16, z_i <= 0
    n_i  = -(z_i >> 16),  f_i = z_i mod 2^16            # 2^z = 2^-n * 2^(f/2^16)
    p2_i = E[j] + ((E[j+1] - E[j]) * d >> 9),  j = f >> 9, d = f mod 2^9    # 2^(f/2^16) in Q1.20
    e_i  = (p2_i + (2^n_i >> 1)) >> n_i                 # rounded (an unbiased sum); 0 when n_i >= 22
    Z    = sum_i e_i                                    # pass 2 (>= 2^20: the max element gives 2^20)
    b    = bit_length(Z);  sig = Z << (24 - b)  (>> when b > 24)        # sigma = sig / 2^23 in [1, 2)
    r0   = C[i] - ((C[i] - C[i+1]) * d >> 18),  i = (sig >> 18) - 32, d = sig mod 2^18   # chord of 1/sigma
    r1   = r0 * (2^24 - (sig * r0 >> 23)) >> 23        # one Newton-Raphson step, r ~ 2^23 / sigma
    p_i  = min((e_i * r1 + 2^(s-1)) >> s, 2^15),  s = b + 7                 # pass 3 (e_i recomputed)

with ``E[j] = RNE(2^(j/128) * 2^20)`` (j = 0..128) and ``C[i] = RNE(2^23 / (1 + i/32))`` (i = 0..32). 2^f is a
128-interval table with linear interpolation (Muller §4; chord error <= 2^-17 relative); 1/Z is seed + NR
``r <- r (2 - sigma r)`` (Muller §2.2). The exponentials are recomputed in pass 3 instead of stored (three
passes, sim.units.sfu.SFU_PASSES).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = [
    "ACT_BITS", "ACT_FRAC", "as_fixed_ints", "GAIN_FRAC", "PROB_FRAC", "RSQRT_TABLE", "EXP2_TABLE", "RECIP_TABLE", "L2E",
    "rmsnorm_consts", "sfu_rmsnorm", "sfu_rsqrt", "sfu_softmax", "sfu_exp2", "sfu_recip",
]

ACT_BITS = 16
ACT_FRAC = 8
GAIN_FRAC = 10
PROB_FRAC = 15
L2E = round(math.log2(math.e) * 2**15)  # 47274

RSQRT_TABLE = tuple(int(np.rint(2**23 / math.sqrt(i / 16))) for i in range(16, 65))
"""T[i - 16]: 1/sqrt(i/16) in Q1.23 at the 49 interval ends of mu in [1, 4) (RNE)."""
EXP2_TABLE = tuple(int(np.rint(2 ** (j / 128) * 2**20)) for j in range(129))
"""E[j]: 2^(j/128) in Q1.20 (RNE), j = 0..128."""
RECIP_TABLE = tuple(int(np.rint(2**23 / (1 + i / 32))) for i in range(33))
"""C[i]: 1/(1 + i/32) in Q1.23 (RNE), i = 0..32."""

_I16 = (-(1 << 15), (1 << 15) - 1)


def as_fixed_ints(name: str, a: npt.ArrayLike, bits: int = ACT_BITS) -> np.ndarray:
    v = np.asarray(a)
    if not np.issubdtype(v.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array (signed {bits}-bit fixed point), got {v.dtype}")
    if v.ndim == 0 or v.shape[-1] == 0:
        raise ValueError(f"{name} must have a non-empty last (feature) dimension")
    v = v.astype(np.int64)
    if v.min() < -(1 << (bits - 1)) or v.max() >= 1 << (bits - 1):
        raise ValueError(f"{name} must be signed {bits}-bit integers")
    return v


def rmsnorm_consts(dim: int, eps: float = 1e-6, x_frac: int = ACT_FRAC) -> tuple[int, int, int]:
    """Per-op constants ``(eps_q, sd, e_sd)`` for a row of ``dim`` elements (module docstring)."""
    if not 1 <= dim < 1 << 16:
        raise ValueError(f"dim must be in 1..65535, got {dim}")
    if not 0 <= eps < 1:
        raise ValueError(f"eps must be in [0, 1), got {eps}")
    e_sd = (dim.bit_length() - 1) // 2
    sd = int(np.rint(math.sqrt(dim) * 2 ** (23 - e_sd)))
    eps_q = int(np.rint(eps * dim * 4**x_frac))
    if eps_q >= 1 << 32:
        raise ValueError(f"eps * dim * 2^(2 x_frac) = {eps_q} does not fit the 32-bit eps constant")
    return eps_q, sd, e_sd


def sfu_rsqrt(v: int) -> tuple[int, int]:
    """``(y1, k)`` with ``y1 / 2^23 ~ 1 / sqrt(v / 2^(22 + 2k))`` for an integer v in 1..2^48 (module docstring)."""
    if not 1 <= v < 1 << 48:
        raise ValueError(f"v must be in 1..2^48-1, got {v}")
    b = v.bit_length()
    k2 = b - 24 + ((b - 24) & 1)
    m = v >> k2 if k2 >= 0 else v << -k2
    i, d = (m >> 18) - 16, m & ((1 << 18) - 1)
    y0 = RSQRT_TABLE[i] - (((RSQRT_TABLE[i] - RSQRT_TABLE[i + 1]) * d) >> 18)
    t = (y0 * y0) >> 23
    u = (m * t) >> 22
    y1 = (y0 * ((3 << 23) - u)) >> 24
    return y1, k2 // 2


def sfu_rmsnorm(x: npt.ArrayLike, g: npt.ArrayLike, eps: float = 1e-6, x_frac: int = ACT_FRAC) -> np.ndarray:
    """Fixed-point RMSNorm over the last axis: x Q7.8 int16 values (any binary point ``x_frac``), gain ``g``
    Q5.10 (broadcast to x), output Q7.8 int16 (saturated). Rule: module docstring."""
    a = as_fixed_ints("x", x)
    gg = np.broadcast_to(as_fixed_ints("g", g), a.shape)
    dim = a.shape[-1]
    eps_q, sd, e_sd = rmsnorm_consts(dim, eps, x_frac)
    flat = a.reshape(-1, dim)
    gf = gg.reshape(-1, dim)
    out = np.zeros(flat.shape, np.int64)
    for r in range(flat.shape[0]):
        v = int((flat[r] * flat[r]).sum()) + eps_q
        if v == 0:
            continue  # all-zero row, eps_q = 0: x_i * g_i = 0
        y1, k = sfu_rsqrt(v)
        big = (y1 * sd) >> 24
        s = 35 + k - e_sd
        p = flat[r] * gf[r] * big
        out[r] = np.clip((p + (1 << (s - 1))) >> s, *_I16)
    return out.reshape(a.shape).astype(np.int16)


def sfu_exp2(z: npt.ArrayLike) -> np.ndarray:
    """2^(z / 2^16) in Q1.20 for integer z <= 0 (module docstring: table + linear interpolation, shift)."""
    zz = np.asarray(z, dtype=np.int64)
    if zz.size and zz.max() > 0:
        raise ValueError("sfu_exp2 takes z <= 0")
    tab = np.array(EXP2_TABLE, np.int64)
    n = -(zz >> 16)
    f = zz & 0xFFFF
    j, d = f >> 9, f & 511
    p2 = tab[j] + (((tab[j + 1] - tab[j]) * d) >> 9)
    nn = np.minimum(n, 22)
    return np.where(n >= 22, 0, (p2 + ((np.int64(1) << nn) >> 1)) >> nn)


def sfu_recip(z: int) -> tuple[int, int]:
    """``(r1, b)``: ``r1 / 2^23 ~ 2^(b-1) / z`` for an integer z in 1..2^48 (module docstring)."""
    if not 1 <= z < 1 << 48:
        raise ValueError(f"z must be in 1..2^48-1, got {z}")
    b = z.bit_length()
    sig = z << (24 - b) if b <= 24 else z >> (b - 24)
    i, d = (sig >> 18) - 32, sig & ((1 << 18) - 1)
    r0 = RECIP_TABLE[i] - (((RECIP_TABLE[i] - RECIP_TABLE[i + 1]) * d) >> 18)
    r1 = (r0 * ((1 << 24) - ((sig * r0) >> 23))) >> 23
    return r1, b


def sfu_softmax_exps(x: npt.ArrayLike) -> np.ndarray:
    """Passes 1-2 of the softmax: e_i = 2^((x_i - max x) log2 e) in Q1.20 per row (module docstring)."""
    a = as_fixed_ints("x", x)
    z = ((a - a.max(axis=-1, keepdims=True)) * L2E) >> 7
    return sfu_exp2(z)


def sfu_softmax(x: npt.ArrayLike) -> np.ndarray:
    """Fixed-point softmax over the last axis: x Q7.8 int16 scores -> UQ1.15 probabilities (uint16)."""
    e = sfu_softmax_exps(x)
    dim = e.shape[-1]
    flat = e.reshape(-1, dim)
    out = np.zeros(flat.shape, np.int64)
    for r in range(flat.shape[0]):
        r1, b = sfu_recip(int(flat[r].sum()))
        s = b + 7
        out[r] = np.minimum((flat[r] * r1 + (1 << (s - 1))) >> s, 1 << 15)
    return out.reshape(e.shape).astype(np.uint16)
