"""Random and adversarial float32 blocks shared by the FP4 oracle tests.

Each family aims at one rule boundary: E2M1 ties at a known power-of-two scale, block maxima one ulp
either side of the points where the shared exponent changes (2^k for FLOOR, 6·2^k for RCEIL),
float32 subnormals and the underflow of amax/6, values near the float32 maximum, saturation in
[6X, 8X), signed zeros and single non-zero elements.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
E2M1_GRID = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
E2M1_TIES = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])


def _ulp_neighbours(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """v itself, or the float32 one ulp above or below, at random."""
    v = v.astype(F32)
    pick = rng.integers(0, 3, v.shape)
    up, down = np.nextafter(v, F32(np.inf)), np.nextafter(v, F32(0))
    return np.where(pick == 0, v, np.where(pick == 1, up, down)).astype(F32)


def adversarial_blocks(rng: np.random.Generator, n: int, block: int) -> np.ndarray:
    """``n`` finite float32 blocks [n, block], the families in equal shares (shuffled)."""
    fams = []
    m = -(-n // 8)
    sign = lambda shape: np.where(rng.random(shape) < 0.5, -1.0, 1.0)  # noqa: E731
    # 1. Gaussian over a wide exponent range.
    fams.append(rng.standard_normal((m, block)) * np.exp2(rng.integers(-60, 60, (m, 1))))
    # 2. Exact E2M1 grid points and midpoints at X = 2^k, amax in [4, 8)·X sets X under FLOOR.
    k = rng.integers(-127, 121, (m, 1)).astype(np.float64)
    vals = rng.choice(np.concatenate([E2M1_GRID, E2M1_TIES]), (m, block)) * sign((m, block))
    vals[:, 0] = rng.choice([4.0, 5.0, 6.0, 7.0], m)
    fams.append(vals * np.exp2(k))
    # 3. Block max one ulp around 2^k and 6·2^k (FLOOR / RCEIL exponent boundaries).
    k = rng.integers(-126, 126, (m, 1)).astype(np.float64)
    edge = np.exp2(k) * rng.choice([1.0, 6.0, 3.0, 1.5], (m, 1))
    b = rng.random((m, block)) * edge * sign((m, block))
    b[:, :1] = _ulp_neighbours(edge, rng)
    fams.append(b)
    # 4. Float32 subnormals and the amax/6 underflow region (multiples of 2^-149).
    ints = rng.integers(-60, 61, (m, block)) * np.where(rng.random((m, 1)) < 0.5, 1, 2.0**20)
    fams.append(ints * 2.0**-149)
    # 5. Near the float32 maximum.
    fams.append(rng.random((m, block)) * sign((m, block)) * 2.0**127 * rng.choice([1.0, 1.99], (m, 1)))
    # 6. Saturation: values in [6X, 8X) with X = 2^k.
    k = rng.integers(-100, 100, (m, 1)).astype(np.float64)
    fams.append((6.0 + 2.0 * rng.random((m, block))) * np.exp2(k) * sign((m, block)))
    # 7. Signed zeros, all-zero blocks and single non-zero elements.
    z = np.where(rng.random((m, block)) < 0.5, -0.0, 0.0)
    one = rng.integers(0, block, m)
    keep = rng.random(m) < 0.5
    z[np.arange(m)[keep], one[keep]] = rng.standard_normal(keep.sum()) * 2.0 ** rng.integers(
        -140, 100, keep.sum()
    )
    fams.append(z)
    # 8. Negative values that round to -0 next to a large one (sign of zero codes).
    s = rng.random((m, block)) * -0.2
    s[:, 0] = 4.0
    fams.append(s * np.exp2(rng.integers(-20, 20, (m, 1))))
    out = np.concatenate(fams)[:n]
    with np.errstate(over="ignore"):
        out = out.astype(F32)
    out = np.where(np.isfinite(out), out, F32(3.0e38))
    return out[rng.permutation(len(out))]
