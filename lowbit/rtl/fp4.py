"""FP4 core RTL: ``lanes`` W4A8 block dot-product lanes (MXFP4 or NVFP4), bit-exact with
``sim.numerics.fp4dot.fp4_block_dot(..., overflow_mode="saturate", shift_rounding="floor")``.

Per beat every lane takes ``elems_per_cycle`` (E) E2M1 weight codes and the block scale code(s); the INT8
activation chunk is shared by all lanes (design assumption as in rtl/tint.py: lanes = output rows of one
token). Datapath (sim/numerics/fp4dot.py module docstring, steps 1-4):

1. stage 0: ``p = (2*E2M1) * a`` (exact, |p| <= 1536, 12-bit signed) registered per element;
2. registered adder tree, clog2(E) levels. E >= block: one sub-tree per block (clog2(block) levels, then
   delay registers up to clog2(E)); E < block: a block spans block/E beats and a block-sum register adds
   the partial sums (the pass's last beat also ends a block, so K need not be a multiple of the block);
   the exact block sum is then saturated to ``block_sum_bits``;
3. block-scale stage (register): MX E8M0 -> shift ``code - 128 + frac_bits``; NVFP4 E4M3 -> multiply by the
   signed 4-bit significand (8+mmm, or mmm when subnormal), shift ``E - 11 + frac_bits`` (-9 - 1 when
   subnormal). Left shifts saturate to ``acc_bits``; right shifts are arithmetic (floor). NaN scales
   (MX 0xFF, E4M3 S.1111.111) contribute 0 and set the lane's sticky ``out_nan``;
4. accumulator stage (register): the block contributions of the beat are added in block order, each add
   saturating at ``acc_bits``; ``out_ovf`` is sticky over block-sum, contribution and accumulator
   overflow (the golden ``Fp4DotResult.overflow``).

Not in the RTL: the float output scales (tensor scale, activation scale) and the ``inexact`` counter.
Timing (rtl/common.py convention): latency = 1 + clog2(E) + 1 + 1 = sim.units.fp4.fp4_latency;
cycles(start -> done) = passes*ceil(k/E) + latency = fp4_tile_cycles(cfg, k, passes).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import COUNT_BITS, delay, pipelined_tree
from lowbit.rtl.common import TileSequencer as _Seq
from lowbit.sim.config import Fp4Config
from lowbit.sim.errors import LowbitError
from lowbit.sim.units import clog2

W2 = (0, 1, 2, 3, 4, 6, 8, 12)  # 2 * E2M1 magnitude for code & 7 (docs/reference/numerics.md §2.2), exact integers
MAX_FRAC_BITS = 255


def exact_block_sum_bits(block: int) -> int:
    """Signed width of an exact block sum: block * 12 * 128 (sim.numerics.fp4dot.fp4_block_sum_bits)."""
    return (block * 12 * 128).bit_length() + 1


def scaled_sum_bits(cfg: Fp4Config) -> int:
    """Width of the block sum times the scale significand (MX: 1; NVFP4: signed 4-bit -> +5 bits)."""
    return cfg.block_sum_bits + (5 if cfg.format == "nvfp4" else 0)


def validate(cfg: Fp4Config) -> None:
    """Reject FP4 parameters this RTL cannot realise (LowbitError naming the field)."""
    if cfg.lanes < 1 or cfg.elems_per_cycle < 1:
        raise LowbitError(f"fp4.lanes = {cfg.lanes}, fp4.elems_per_cycle = {cfg.elems_per_cycle}: must be >= 1")
    e, b = cfg.elems_per_cycle, cfg.block
    if e % b and b % e:
        raise LowbitError(f"fp4.elems_per_cycle = {e}: must divide or be a multiple of the {cfg.format} block {b}")
    if not 2 <= cfg.block_sum_bits <= 40:
        raise LowbitError(f"fp4.block_sum_bits = {cfg.block_sum_bits}: the RTL supports 2..40")
    need = scaled_sum_bits(cfg)
    if cfg.acc_bits < need:
        raise LowbitError(
            f"fp4.acc_bits = {cfg.acc_bits} cannot hold one unshifted scaled block sum ({cfg.format}: "
            f"block_sum_bits {cfg.block_sum_bits} -> {need} bits); raise fp4.acc_bits to >= {need}")
    if cfg.acc_bits > 62:
        raise LowbitError(f"fp4.acc_bits = {cfg.acc_bits}: the RTL/golden model support at most 62 bits")
    if not 0 <= cfg.frac_bits <= MAX_FRAC_BITS:
        raise LowbitError(f"fp4.frac_bits = {cfg.frac_bits}: the RTL shifter supports 0..{MAX_FRAC_BITS}")


class Fp4Core(wiring.Component):
    """W4A8 FP4 core. Ports (flat little-endian arrays in Verilog):

    start, beats[16] (= ceil(k/E)), passes[16] -> ready; codes: lanes*E x 4 bit (lane l, element i at
    l*E + i); act: E x signed 8; scales: lanes*S x 8 bit (S = max(1, E/block); lane l, block j of the
    beat at l*S + j; for E < block the current block's scale on every beat of it); out_acc: lanes x
    signed acc_bits; out_ovf, out_nan: lanes; out_valid (per pass), done.
    """

    def __init__(self, cfg: Fp4Config):
        validate(cfg)
        self.cfg = cfg
        n, e = cfg.lanes, cfg.elems_per_cycle
        self.n_scales = max(1, e // cfg.block)
        super().__init__({
            "start": In(1),
            "beats": In(COUNT_BITS),
            "passes": In(COUNT_BITS),
            "ready": Out(1),
            "codes": In(data.ArrayLayout(4, n * e)),
            "act": In(data.ArrayLayout(signed(8), e)),
            "scales": In(data.ArrayLayout(8, n * self.n_scales)),
            "out_acc": Out(data.ArrayLayout(signed(cfg.acc_bits), n)),
            "out_ovf": Out(n),
            "out_nan": Out(n),
            "out_valid": Out(1),
            "done": Out(1),
        })

    def _scale_apply(self, m: Module, s_exact, code, name: str):
        """Combinational steps 2b-3: saturate the exact block sum, apply the block scale.

        Returns (contribution signed acc_bits, overflow, nan)."""
        cfg = self.cfg
        bs, acc = cfg.block_sum_bits, cfg.acc_bits
        lo_b, hi_b = -(1 << (bs - 1)), (1 << (bs - 1)) - 1
        s_over = (s_exact < lo_b) | (s_exact > hi_b)
        s = Signal(signed(bs), name=f"{name}_s")
        m.d.comb += s.eq(Mux(s_exact < lo_b, lo_b, Mux(s_exact > hi_b, hi_b, s_exact)))
        # sh = block exponent + frac_bits (signed expression): MX -128..126+F, NV -10..4+F
        if cfg.format == "mxfp4":
            nan = code == 0xFF
            p = Signal(signed(bs), name=f"{name}_p")
            m.d.comb += p.eq(Mux(nan, 0, s))
            sh = Cat(code, Const(0, 2)).as_signed() - 128 + cfg.frac_bits
        else:
            e_f, m_f = code[3:7], code[0:3]
            nan = code[0:7] == 0x7F
            m4 = Signal(4, name=f"{name}_m4")
            m.d.comb += m4.eq(Mux(e_f == 0, m_f, Cat(m_f, Const(1, 1))))
            mant = Signal(signed(5), name=f"{name}_mant")
            m.d.comb += mant.eq(Mux(nan, 0, Mux(code[7], -m4, m4)))
            p = Signal(signed(bs + 5), name=f"{name}_p")
            m.d.comb += p.eq(s * mant)
            sh = Mux(e_f == 0, -10, Cat(e_f, Const(0, 2)).as_signed() - 11) + cfg.frac_bits
        wp = len(p)
        lo, hi = -(1 << (acc - 1)), (1 << (acc - 1)) - 1
        # left shift, amount clipped to acc_bits (any non-zero p shifted that far is out of range)
        shl = Signal(range(acc + 1), name=f"{name}_shl")
        m.d.comb += shl.eq(Mux(sh >= acc, acc, sh[:len(shl)]))
        wide = Signal(signed(wp + acc), name=f"{name}_wide")
        m.d.comb += wide.eq(p << shl)
        l_over = (wide < lo) | (wide > hi)
        lv = Mux(l_over, Mux(p < 0, lo, hi), wide)
        # right shift (floor), amount clipped to wp (the result is then 0 or -1 already)
        shr = Signal(range(wp + 1), name=f"{name}_shr")
        m.d.comb += shr.eq(Mux(-sh >= wp, wp, (-sh)[:len(shr)]))
        rv = p >> shr  # arithmetic: p is signed; |rv| <= |p| fits acc_bits (validate: acc_bits >= wp)
        c = Signal(signed(acc), name=f"{name}_c")
        m.d.comb += c.eq(Mux(sh >= 0, lv, rv))
        return c, s_over | ((sh >= 0) & l_over), nan

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        n, e, blk, acc_w = cfg.lanes, cfg.elems_per_cycle, cfg.block, cfg.acc_bits
        ns = self.n_scales
        seq = _Seq(m, self.start, self.beats, self.passes)
        m.d.comb += self.ready.eq(seq.ready)
        depth = clog2(e)
        tags = [delay(m, v, 1 + depth, f"tag{j}")
                for j, v in enumerate([seq.tags.valid, seq.tags.pass_last, seq.tags.tile_last])]
        valid, pass_last, tile_last = tags
        # scale codes travel with the data to the scale stage
        scales = [delay(m, self.scales[i], 1 + depth, f"scale{i}") for i in range(n * ns)]

        # stage 0: E2M1 decode x INT8 product
        prods = []
        for lane in range(n):
            row = []
            for i in range(e):
                c = self.codes[lane * e + i]
                mag = Signal(4, name=f"w2_{lane}_{i}")
                with m.Switch(c[:3]):
                    for code, v in enumerate(W2):
                        with m.Case(code):
                            m.d.comb += mag.eq(v)
                w2 = Mux(c[3], -mag, mag)
                r = Signal(signed(12), name=f"prod_{lane}_{i}")
                m.d.sync += r.eq(w2 * self.act[i])
                row.append(r)
            prods.append(row)

        # stage 1..depth: block-sum trees; scale stage; accumulator stage
        for lane in range(n):
            contribs = []  # (valid, contribution, overflow, nan) registered at the scale stage
            if e >= blk:
                for j in range(ns):
                    s, d = pipelined_tree(m, prods[lane][j * blk:(j + 1) * blk], f"t{lane}_{j}")
                    s = delay(m, s, depth - d, f"t{lane}_{j}_pad")
                    c, o, nan = self._scale_apply(m, s, scales[lane * ns + j], f"sc{lane}_{j}")
                    rc, ro, rn = Signal.like(c, name=f"c{lane}_{j}"), Signal(name=f"co{lane}_{j}"), \
                        Signal(name=f"cn{lane}_{j}")
                    m.d.sync += [rc.eq(c), ro.eq(valid & o), rn.eq(valid & nan)]
                    contribs.append((rc, ro, rn))
                cvalid = Signal(name=f"cv{lane}")
                m.d.sync += cvalid.eq(valid)
            else:
                part, _ = pipelined_tree(m, prods[lane], f"t{lane}")
                bpb = blk // e
                bsum = Signal(signed(exact_block_sum_bits(blk)), name=f"bsum{lane}")
                bib = Signal(range(bpb), name=f"bib{lane}")
                total = Signal(signed(exact_block_sum_bits(blk)), name=f"btot{lane}")
                m.d.comb += total.eq(bsum + part)
                end = (bib == bpb - 1) | pass_last
                c, o, nan = self._scale_apply(m, total, scales[lane], f"sc{lane}")
                rc, ro, rn = Signal.like(c, name=f"c{lane}"), Signal(name=f"co{lane}"), Signal(name=f"cn{lane}")
                cvalid = Signal(name=f"cv{lane}")
                m.d.sync += cvalid.eq(valid & end)
                with m.If(valid):
                    with m.If(end):
                        m.d.sync += [bsum.eq(0), bib.eq(0), rc.eq(c), ro.eq(o), rn.eq(nan)]
                    with m.Else():
                        m.d.sync += [bsum.eq(total), bib.eq(bib + 1)]
                contribs.append((rc, ro, rn))

            # accumulator: blocks of the beat in order, each add saturating
            accr = Signal(signed(acc_w), name=f"acc{lane}")
            ovf = Signal(name=f"ovf{lane}")
            nanf = Signal(name=f"nan{lane}")
            a, flag, nflag = accr, ovf, nanf
            lo, hi = -(1 << (acc_w - 1)), (1 << (acc_w - 1)) - 1
            for j, (rc, ro, rn) in enumerate(contribs):
                ssum = Signal(signed(acc_w + 1), name=f"asum{lane}_{j}")
                m.d.comb += ssum.eq(a + Mux(cvalid, rc, 0))
                over = (ssum < lo) | (ssum > hi)
                sat = Signal(signed(acc_w), name=f"asat{lane}_{j}")
                m.d.comb += sat.eq(Mux(ssum < lo, lo, Mux(ssum > hi, hi, ssum)))
                a = sat
                flag = flag | (cvalid & (ro | over))
                nflag = nflag | (cvalid & rn)
            v2, pl2 = delay(m, valid, 1, f"v2_{lane}"), delay(m, pass_last, 1, f"pl2_{lane}")
            with m.If(v2):
                with m.If(pl2):
                    m.d.sync += [self.out_acc[lane].eq(a), self.out_ovf[lane].eq(flag),
                                 self.out_nan[lane].eq(nflag), accr.eq(0), ovf.eq(0), nanf.eq(0)]
                with m.Else():
                    m.d.sync += [accr.eq(a), ovf.eq(flag), nanf.eq(nflag)]
        v2, pl2, tl2 = (delay(m, x, 1, f"out_tag{j}") for j, x in enumerate([valid, pass_last, tile_last]))
        m.d.sync += [self.out_valid.eq(v2 & pl2), self.done.eq(v2 & tl2)]
        return m


__all__ = ["Fp4Core", "validate", "exact_block_sum_bits"]
