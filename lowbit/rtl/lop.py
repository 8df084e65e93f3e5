"""LOP unit RTL (docs/reference/vitallm.md §5.4): leading-one surrogate scoring + comparison-free top-K.

Two components, each with its own start/done and its own sim/units formula (the LOP tile is "score all M
keys, then select K"; the score SRAM between them is outside these units):

``LopScore`` -- ``lanes`` keys x ``width`` elements per beat, bit-exact with
``sim.numerics.lop.lo_scores(q, lo_decode4(kcode))``:
  * the query chunk arrives as INT8 (``q``, shared by all lanes); a leading-one detector gives
    e(q) = floor(log2|q|) (0..7, |-128| -> 7), a zero flag and the sign;
  * keys arrive as the 4-bit stored LO codes of sim.numerics.lop.lo_code4 (0 = zero, else
    ``sign<<3 | (e+1)``, e in 0..6);
  * stage 0 registers the signed power of two ``±2^(e(q)+e(k))`` per element (|term| <= 2^13),
    then a registered adder tree (clog2(width) levels) and the ``score_bits`` accumulator (wrapping,
    sticky overflow -- never set when validate(cfg, head_dim) passed).
  Tile = ``passes`` key groups (ceil(M/lanes), tail lanes zero-coded by the driver) x ``beats`` chunks
  (ceil(d/width), tail elements zero). Timing exactly as rtl/common.py: cycles(start -> done) =
  passes*beats + 1 + clog2(width) + 1 = sim.units.lop.lop_score_cycles(cfg, M, d).

``LopTopK`` -- comparison-free top-K (radix/bucket select), bit-exact with
``sim.numerics.lop.lop_topk(scores, k, n_buckets=buckets)`` (mant_bits = 0):
  * bucket(s) = L + sign(s)*min(bitlen|s|, L), L = (buckets-1)/2 (leading-one position, offset binary);
  * pass 1 (P = ceil(M/lanes) beats, ``lanes`` scores per beat): one-hot bucket decode, ``buckets``
    counters incremented by the per-bucket popcount of the beat;
  * scan (``buckets`` cycles, no input): walks the counters from the top bucket, one per cycle, adding
    to a running count until it reaches need = min(K, M); that bucket is the threshold t, the buckets
    above it form a bit mask and fill = need - count(> t);
  * pass 2 (P beats, the same scores again): token selected iff mask[bucket] or (bucket == t and it is
    among the first ``fill`` tokens of bucket t in index order -- a per-beat prefix count, lowest index
    wins). ``out_sel`` (one bit per lane, token = ``out_base`` + lane) is valid with ``out_valid``.
  The only magnitude compares are on counts (running count vs need, prefix vs fill), never between scores.
  Timing: start in cycle 0 (with ``m``, ``k``), pass-1 beats in cycles 1..P, scan phase cycles
  P+1..P+buckets (the scan datapath runs one cycle behind, after the last histogram update), pass-2 beats
  in cycles P+buckets+1..2P+buckets, then 2 registers (bucket decode, select) -> done in cycle
  2P + buckets + 2 = sim.units.lop.lop_topk_cycles(cfg, M). ``ready`` rises after the last pass-2 beat.
  M >= 1 (a start with m = 0 is ignored, as in rtl/common.TileSequencer); M, K < 2^16.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from lowbit.rtl.common import COUNT_BITS, bit_length, delay, pipelined_tree, wrap_accumulate
from lowbit.rtl.common import TileSequencer as _Seq
from lowbit.sim.config import LopConfig
from lowbit.sim.errors import LowbitError

TERM_MAX_LOG2 = 13
"""Largest |term| is 2^(7+6): e(q) <= 7 (q = -128) and stored key codes carry e <= 6 (lo_code4)."""


def score_bits_required(n_elems: int) -> int:
    """Signed bits holding any sum of ``n_elems`` terms of magnitude <= 2^13 exactly."""
    return (n_elems << TERM_MAX_LOG2).bit_length() + 1


def max_head_dim(cfg: LopConfig) -> int:
    """Longest key the score accumulator holds exactly: floor((2^(score_bits-1) - 1) / 2^13)."""
    return ((1 << (cfg.score_bits - 1)) - 1) >> TERM_MAX_LOG2


def validate(cfg: LopConfig, head_dim: int | None = None) -> None:
    """Reject LOP parameters this RTL cannot realise (LowbitError naming the field)."""
    if cfg.lanes < 1 or cfg.width < 1:
        raise LowbitError(f"lop.lanes = {cfg.lanes}, lop.width = {cfg.width}: both must be >= 1")
    if cfg.exp_bits != 3:
        raise LowbitError(f"lop.exp_bits = {cfg.exp_bits}: the RTL leading-one detector of INT8 is 3 bits; set 3")
    if cfg.score_bits > 63:
        raise LowbitError(f"lop.score_bits = {cfg.score_bits}: the RTL/golden model support at most 63 bits")
    need = score_bits_required(cfg.width)
    if cfg.score_bits < need:
        raise LowbitError(
            f"lop.score_bits = {cfg.score_bits} cannot hold one beat's shift-add sum (width {cfg.width} x 2^13 "
            f"needs {need} bits); raise lop.score_bits to >= {need}")
    if head_dim is not None and cfg.score_bits < score_bits_required(head_dim):
        raise LowbitError(
            f"lop.score_bits = {cfg.score_bits} cannot hold a head_dim {head_dim} surrogate score exactly "
            f"(head_dim x 2^13 needs {score_bits_required(head_dim)} bits); raise lop.score_bits")
    if cfg.buckets < 3 or cfg.buckets % 2 == 0:
        raise LowbitError(f"lop.buckets = {cfg.buckets}: must be odd and >= 3")
    if cfg.buckets > 1023:
        raise LowbitError(f"lop.buckets = {cfg.buckets}: the histogram RTL supports at most 1023 buckets")


class LopScore(wiring.Component):
    """LO surrogate scoring. Ports (flat little-endian arrays in Verilog):

    start, beats[16] (= ceil(d/width)), passes[16] (= ceil(M/lanes)) -> ready;
    q: width x signed 8 (query chunk of this beat); kcode: lanes*width x 4 bit (lane l, element i at
    index l*width + i: key ``pass*lanes + l``); out_score: lanes x signed score_bits; out_ovf: lanes;
    out_valid (per key group), done.
    """

    def __init__(self, cfg: LopConfig):
        validate(cfg)
        self.cfg = cfg
        n, w = cfg.lanes, cfg.width
        super().__init__({
            "start": In(1),
            "beats": In(COUNT_BITS),
            "passes": In(COUNT_BITS),
            "ready": Out(1),
            "q": In(data.ArrayLayout(signed(8), w)),
            "kcode": In(data.ArrayLayout(4, n * w)),
            "out_score": Out(data.ArrayLayout(signed(cfg.score_bits), n)),
            "out_ovf": Out(n),
            "out_valid": Out(1),
            "done": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        n, w = self.cfg.lanes, self.cfg.width
        seq = _Seq(m, self.start, self.beats, self.passes)
        m.d.comb += self.ready.eq(seq.ready)

        # query leading-one detectors (shared by all lanes)
        q_neg, q_e, q_nz = [], [], []
        for i in range(w):
            a = self.q[i]
            mag = Signal(8, name=f"qmag{i}")
            m.d.comb += mag.eq(Mux(a < 0, -a, a))  # |-128| = 128 fits 8 unsigned bits
            bl = bit_length(m, mag, f"qbl{i}")
            q_neg.append(a < 0)
            q_nz.append(bl != 0)
            q_e.append((bl - 1)[:3])

        # stage 0: decode key codes, add exponents, register the signed power of two
        tree_out = []
        depth = 0
        for lane in range(n):
            rows = []
            for i in range(w):
                c = self.kcode[lane * w + i]
                k_nz = c[:3] != 0
                k_e = (c[:3] - 1)[:3]
                e = Signal(4, name=f"e_{lane}_{i}")
                m.d.comb += e.eq(q_e[i] + k_e)
                mag = Signal(TERM_MAX_LOG2 + 1, name=f"pow_{lane}_{i}")
                m.d.comb += mag.eq(Const(1, 1) << e)
                r = Signal(signed(TERM_MAX_LOG2 + 2), name=f"term_{lane}_{i}")
                neg = q_neg[i] ^ c[3]
                m.d.sync += r.eq(Mux(q_nz[i] & k_nz, Mux(neg, -mag, mag), 0))
                rows.append(r)
            s, depth = pipelined_tree(m, rows, f"tree{lane}")
            tree_out.append(s)
        valid, pass_last, tile_last = [delay(m, v, 1 + depth, f"tag{j}") for j, v in
                                       enumerate([seq.tags.valid, seq.tags.pass_last, seq.tags.tile_last])]
        for lane in range(n):
            acc = Signal(signed(self.cfg.score_bits), name=f"acc{lane}")
            ovf = Signal(name=f"ovf{lane}")
            wrap_accumulate(m, acc, ovf, tree_out[lane], valid, pass_last,
                            self.out_score[lane], self.out_ovf[lane])
        m.d.sync += [self.out_valid.eq(valid & pass_last), self.done.eq(valid & tile_last)]
        return m


class LopTopK(wiring.Component):
    """Comparison-free top-K. Ports: start, m[16], k[16] -> ready; scores: lanes x signed score_bits
    (pass 1 and pass 2 beats, token ``beat*lanes + l`` on lane l; lanes >= M ignored);
    out_sel: lanes bits, out_base[16] (token index of lane 0), out_valid (per pass-2 beat), done;
    out_thresh (threshold bucket, valid with out_valid)."""

    def __init__(self, cfg: LopConfig):
        validate(cfg)
        self.cfg = cfg
        super().__init__({
            "start": In(1),
            "m": In(COUNT_BITS),
            "k": In(COUNT_BITS),
            "ready": Out(1),
            "scores": In(data.ArrayLayout(signed(cfg.score_bits), cfg.lanes)),
            "out_sel": Out(cfg.lanes),
            "out_base": Out(COUNT_BITS),
            "out_thresh": Out(range(cfg.buckets + 1)),
            "out_valid": Out(1),
            "done": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        n, nb, sb = cfg.lanes, cfg.buckets, cfg.score_bits
        half = (nb - 1) // 2
        cnt_w = COUNT_BITS + 1  # token counters reach M + lanes - 1

        # ---- sequencer: P1 beats, SCAN (nb cycles), P2 beats
        busy = Signal()
        in_p1, in_scan = Signal(), Signal()  # phase flags (one-hot with "pass 2" = neither)
        tok = Signal(cnt_w)
        scan_i = Signal(range(nb))
        m_r = Signal(COUNT_BITS)
        need = Signal(COUNT_BITS)
        last_beat = (tok + n) >= m_r
        with m.If(busy):
            with m.If(in_p1):
                m.d.sync += tok.eq(tok + n)
                with m.If(last_beat):
                    m.d.sync += [in_p1.eq(0), in_scan.eq(1), tok.eq(0), scan_i.eq(0)]
            with m.Elif(in_scan):
                m.d.sync += scan_i.eq(scan_i + 1)
                with m.If(scan_i == nb - 1):
                    m.d.sync += in_scan.eq(0)
            with m.Else():
                m.d.sync += tok.eq(tok + n)
                with m.If(last_beat):
                    m.d.sync += busy.eq(0)
        with m.Elif(self.start & self.m.any()):
            m.d.sync += [busy.eq(1), in_p1.eq(1), in_scan.eq(0), tok.eq(0), m_r.eq(self.m),
                         need.eq(Mux(self.k < self.m, self.k, self.m))]
        m.d.comb += self.ready.eq(~busy)
        p1 = busy & in_p1
        scan = busy & in_scan
        p2 = busy & ~in_p1 & ~in_scan

        # ---- stage B (beats of both passes): bucket of every score, lane-valid mask
        bk_w = range(nb)
        bks, vld = [], []
        for lane in range(n):
            s = self.scores[lane]
            mag = Signal(sb, name=f"smag{lane}")
            m.d.comb += mag.eq(Mux(s < 0, -s, s))  # |-2^(sb-1)| fits sb unsigned bits
            bl = bit_length(m, mag, f"sbl{lane}")
            sat = Mux(bl > half, half, bl) if half < sb else bl  # saturate only if reachable
            b = Signal(bk_w, name=f"bk{lane}")
            m.d.sync += b.eq(Mux(s < 0, half - sat, half + sat))
            v = Signal(name=f"bv{lane}")
            m.d.sync += v.eq((p1 | p2) & ((tok + lane) < m_r))
            bks.append(b)
            vld.append(v)
        p1_r, p2_r, last_r = Signal(), Signal(), Signal()
        base_r = Signal(COUNT_BITS)
        m.d.sync += [p1_r.eq(p1), p2_r.eq(p2), last_r.eq(p2 & last_beat), base_r.eq(tok)]

        # ---- histogram (pass 1): per-bucket popcount of the one-hot decoded lanes
        hist = [Signal(COUNT_BITS, name=f"hist{b}") for b in range(nb)]
        with m.If(self.start & ~busy):
            m.d.sync += [h.eq(0) for h in hist]
        with m.Elif(p1_r):
            for b in range(nb):
                hits = [vld[lane] & (bks[lane] == b) for lane in range(n)]
                m.d.sync += hist[b].eq(hist[b] + sum(hits[1:], hits[0]))

        # ---- scan: one bucket per cycle, from the top, one cycle behind the scan phase
        scan_r = delay(m, scan, 1, "scan")
        first_r = delay(m, scan & (scan_i == 0), 1, "scan_first")
        idx_r = delay(m, scan_i, 1, "scan_idx")
        bsel = Signal(bk_w)
        m.d.comb += bsel.eq(nb - 1 - idx_r)
        h = Const(0, COUNT_BITS)  # one-hot read mux (every bucket index is covered, no case statement)
        for b in range(nb):
            h = h | Mux(bsel == b, hist[b], 0)
        found = Signal()
        cum = Signal(COUNT_BITS + 1)
        mask = Signal(nb)
        thresh = Signal(range(nb + 1))
        rem = Signal(COUNT_BITS)
        c_in = Mux(first_r, 0, cum)
        f_in = Mux(first_r, 0, found)
        mk_in = Mux(first_r, 0, mask)
        nsum = c_in + h
        hit = ~f_in & (nsum >= need)
        with m.If(scan_r):
            m.d.sync += [found.eq(f_in | hit), cum.eq(Mux(f_in | hit, c_in, nsum)),
                         mask.eq(Mux(f_in | hit, mk_in, mk_in | (Const(1, nb) << bsel)))]
            with m.If(hit):
                m.d.sync += [thresh.eq(bsel), rem.eq(need - c_in)]

        # ---- select (pass 2): above-threshold mask lookup + lowest-index fill of bucket t
        sel = []
        pre = Const(0, range(n + 1))
        for lane in range(n):
            at = vld[lane] & (bks[lane] == thresh)
            above = vld[lane] & mask.bit_select(bks[lane], 1)
            sel.append(above | (at & (pre < rem)))
            pre = pre + at
        n_at = Signal(range(n + 1))
        m.d.comb += n_at.eq(pre)
        with m.If(p2_r):
            m.d.sync += rem.eq(Mux(n_at < rem, rem - n_at, 0))
        m.d.sync += [self.out_valid.eq(p2_r), self.done.eq(p2_r & last_r), self.out_sel.eq(Cat(*sel)),
                     self.out_base.eq(base_r), self.out_thresh.eq(thresh)]
        return m


__all__ = ["LopScore", "LopTopK", "validate", "max_head_dim", "score_bits_required"]
