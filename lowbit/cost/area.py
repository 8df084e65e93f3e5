"""Technology scaling (Stillmaker & Baas 2017) and the logic placement / leakage assumptions (SRAM: cost/sram.py).

Scaling source: A. Stillmaker and B. Baas, "Scaling equations for the accurate prediction of CMOS device
performance from 180 nm to 7 nm", Integration, the VLSI Journal 58 (2017) 74-81,
doi:10.1016/j.vlsi.2017.02.002 (with the authors' published erratum to the §4.2.1 example). Tables used:
the node-to-node area factors and the per-node polynomial fits (cubic in Vdd for delay, quadratic for energy
and power), with separate HP/LP fits at 45 nm and below. Coefficients transcribed from the paper's tables
(cross-checked against the MIT-licensed transcription in github.com/wromaszkan/nodeScale and the erratum's
worked example: 32 nm HP @ 0.9 V -> 0.4571, 65 nm @ 1.3 V -> 2.604).
Range: 7..180 nm. Nodes between table nodes are interpolated geometrically in log(node) (assumption).

ASSUMPTIONS (stated in every report):
- sky130_fd_sc_hd is a 130 nm-class library: we map it to the paper's 130 nm node at its 1.8 V core supply.
  The paper's 130 nm PTM fit is centred on lower supplies, so the 1.8 V point is an extrapolation of the fit.
- Nodes <= 45 nm use the HP (high-performance) fits; FinFET 16 nm logic is closer to HP than LP PTM cards.
"""

from __future__ import annotations

import math

from lowbit.sim.errors import LowbitError

NODES = (180, 130, 90, 65, 45, 32, 20, 16, 14, 10, 7)
NODE_RANGE = (7, 180)
SKY130_NODE_NM = 130.0
SKY130_VDD = 1.8

# AREA[a][b] = area at node b / area at node a (Stillmaker & Baas 2017, area scaling table).
_AREA_ROWS = {
    180: (1, 0.34, 0.15, 0.08, 0.053, 0.025, 0.011, 0.01, 0.0093, 0.0055, 0.0032),
    130: (2.9, 1, 0.44, 0.23, 0.16, 0.072, 0.033, 0.03, 0.027, 0.016, 0.0092),
    90: (6.6, 2.3, 1, 0.53, 0.35, 0.16, 0.075, 0.067, 0.061, 0.036, 0.021),
    65: (12, 4.3, 1.9, 1, 0.66, 0.31, 0.14, 0.13, 0.12, 0.068, 0.039),
    45: (19, 6.4, 2.8, 1.5, 1, 0.46, 0.21, 0.19, 0.17, 0.1, 0.059),
    32: (40, 14, 6.1, 3.3, 2.2, 1, 0.46, 0.41, 0.38, 0.22, 0.13),
    20: (88, 30, 13, 7.1, 4.7, 2.2, 1, 0.89, 0.82, 0.48, 0.28),
    16: (99, 34, 15, 7.9, 5.3, 2.4, 1.1, 1, 0.91, 0.54, 0.31),
    14: (110, 37, 16, 8.7, 5.8, 2.7, 1.2, 1.1, 1, 0.59, 0.34),
    10: (180, 63, 28, 15, 9.8, 4.5, 2.1, 1.9, 1.7, 1, 0.58),
    7: (320, 110, 48, 25, 17, 7.8, 3.6, 3.2, 2.9, 1.7, 1),
}
AREA = {a: dict(zip(NODES, row, strict=True)) for a, row in _AREA_ROWS.items()}

# Per-node fits: delay = d3 V^3 + d2 V^2 + d1 V + d0; energy = e2 V^2 + e1 V + e0; power = p2 V^2 + p1 V + p0.
_FITS = {
    "180": (0, 97.09, -356.7, 406.5, 0, 24.64, -17.98, 0, 101000, -79720),
    "130": (-76.65, 334.9, -493.4, 275.8, 7.171, -6.709, 2.904, 27020, -15450, 5630),
    "90": (-60.34, 262.5, -384.2, 210.9, 4.762, -4.781, 2.092, 17320, -11230, 4328),
    "65": (-53.3, 230.4, -333.9, 178.6, 3.755, -4.398, 1.975, 12890, -10510, 4362),
    "HP45": (-501.6, 1567, -1619, 566.1, 1.018, -0.3107, 0.1539, 5462, -1760, 522.4),
    "HP32": (-1047, 2982, -2797, 873.5, 0.8367, -0.4341, 0.1701, 4001, -1733, 533.6),
    "HP20": (0, 34.63, -66.37, 41.15, 0.373, -0.1582, 0.04104, 2922, -1286, 299.9),
    "HP16": (0, 24.8, -47.52, 28.87, 0.2958, -0.1241, 0.03024, 2133, -882.6, 197.7),
    "HP14": (-40.66, 109.2, -100.6, 35.92, 0.2363, -0.09675, 0.02239, 1675, -711, 159),
    "HP10": (-34.95, 93.65, -85.99, 30.4, 0.2068, -0.09311, 0.02375, 1456, -621.6, 143.8),
    "HP7": (-28.58, 76.6, -70.26, 24.69, 0.1776, -0.09097, 0.02447, 1179, -515.7, 123.4),
    "LP45": (-285.7, 1239, -1795, 898.8, 1.103, -0.362, 0.2767, 6297, -3009, 1124),
    "LP32": (-325.9, 1374, -1922, 913.2, 0.9559, -0.7823, 0.471, 4557, -3037, 1323),
    "LP20": (-160.5, 514.1, -558.6, 217.5, 0.2632, -0.14, 0.06841, 2096, -962.4, 287.1),
    "LP16": (-114.6, 366.7, -397.4, 153.6, 0.2139, -0.1187, 0.05639, 1609, -715.5, 205.7),
    "LP14": (-85.37, 271.6, -292.2, 111.4, 0.1556, -0.06472, 0.03066, 1259, -554.1, 152.3),
    "LP10": (-71.76, 228.6, -246.3, 93.91, 0.1261, -0.0518, 0.02769, 1046, -422.7, 118.9),
    "LP7": (-61.79, 196.1, -210.3, 79.55, 0.09365, -0.03409, 0.02043, 815.2, -307.3, 87.54),
}


def check_node(node_nm: float) -> None:
    lo, hi = NODE_RANGE
    if not lo <= node_nm <= hi:
        raise LowbitError(f"node_nm = {node_nm:g}: outside the Stillmaker & Baas 2017 scaling model's range "
                          f"{lo}..{hi} nm; pick a node in {lo}..{hi}")


def _key(node: int, flavor: str) -> str:
    return f"{flavor}{node}" if node <= 45 else str(node)


def _bracket(node_nm: float) -> tuple[int, int, float]:
    """Table nodes (big, small) around node_nm and the log-interpolation weight of `small`."""
    check_node(node_nm)
    for big, small in zip(NODES, NODES[1:], strict=False):
        if small <= node_nm <= big:
            if node_nm == big:
                return big, big, 0.0
            t = (math.log(big) - math.log(node_nm)) / (math.log(big) - math.log(small))
            return big, small, t
    raise AssertionError(node_nm)


def _interp(f, node_nm: float) -> float:
    big, small, t = _bracket(node_nm)
    a, b = f(big), f(small)
    if a <= 0 or b <= 0:
        raise LowbitError(f"scaling fit gives a non-positive factor near {node_nm:g} nm; supply voltage outside the fit")
    return math.exp((1 - t) * math.log(a) + t * math.log(b))


def area_factor(src_nm: float, dst_nm: float) -> float:
    """Multiply an area at src_nm by this to get it at dst_nm (table value between table nodes)."""
    check_node(src_nm)
    check_node(dst_nm)
    return _interp(lambda s: _interp(lambda d: AREA[s][d], dst_nm), src_nm)


def energy_fit(node_nm: float, vdd: float, flavor: str = "HP") -> float:
    """Stillmaker-Baas energy factor (dimensionless, ratio-only) of node at vdd."""
    def f(n: int) -> float:
        e2, e1, e0 = _FITS[_key(n, flavor)][4:7]
        return e2 * vdd * vdd + e1 * vdd + e0
    return _interp(f, node_nm)


def delay_fit(node_nm: float, vdd: float, flavor: str = "HP") -> float:
    def f(n: int) -> float:
        d3, d2, d1, d0 = _FITS[_key(n, flavor)][0:4]
        return ((d3 * vdd + d2) * vdd + d1) * vdd + d0
    return _interp(f, node_nm)


def energy_factor(src_nm: float, src_v: float, dst_nm: float, dst_v: float, flavor: str = "HP") -> float:
    """Multiply an energy per operation at (src_nm, src_v) by this to get it at (dst_nm, dst_v)."""
    return energy_fit(dst_nm, dst_v, flavor) / energy_fit(src_nm, src_v, flavor)


def delay_factor(src_nm: float, src_v: float, dst_nm: float, dst_v: float, flavor: str = "HP") -> float:
    return delay_fit(dst_nm, dst_v, flavor) / delay_fit(src_nm, src_v, flavor)


def sky130_to(node_nm: float, vdd: float) -> tuple[float, float]:
    """(area factor, energy factor) from sky130 HD at 1.8 V (treated as 130 nm) to (node_nm, vdd)."""
    return area_factor(SKY130_NODE_NM, node_nm), energy_factor(SKY130_NODE_NM, SKY130_VDD, node_nm, vdd)


# ----------------------------------------------------------------------------- logic placement / leakage

# ASSUMPTION: placed-and-routed block area = standard-cell area / utilisation (typical 70 % row utilisation).
PLACEMENT_UTILISATION = 0.70
# ASSUMPTION: logic leakage power density at 16 nm FinFET, TT, 25 C: 10 nW per µm² of cell area
# (order of magnitude for SVT standard cells; no published Liberty available to us). Scaled to other nodes
# with the ratio of the Stillmaker power fits is NOT attempted: leakage is reported as an assumption.
LOGIC_LEAK_W_PER_UM2 = 10e-9
