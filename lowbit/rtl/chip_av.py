"""The attention output on the chip's data path (docs/rtl.md "Data path"): BoothFlex's P V psum words through a
requantizer into the SFU's norm input buffer X and S memory, where attn_sub_norm (SubLN) reads them.

Rule (sim.golden `_attention`): ``attn.av.out[t, h x hd + d] = requant(av.acc[h, t, d], w_amax[h, t], m_av,
sh_av)``, one multiplier for every output (sim.golden.attn_multipliers' ``av``: 1 / (127^2 x 2^15)) and the
scale of row (t, h) the amax of its probabilities times amax_v (the golden's `attn.softmax.w_amax`, the
statistic of the softmax word's p x amax_v quantize). The requantizer is a
lowbit.rtl.sfu_stream_requant.PsumRequant with that multiplier as a constant (`const_mult`), its scale from
a `WA_BITS`-bit statistics memory of one row per (query, head) (`s_every`: the row advances every head_dim /
lanes passes) and its Q7.8 results written into X with a write enable per element: a P V tile's outputs
(query t, head h of KV group g, dimension d) are elements (g grp + h) hd + d of row t, so a pass of `lanes`
outputs is inside one X word when lanes divides sfu.lanes and sfu.lanes divides head_dim (`av_ok`).

S: attn_sub_norm reads each row's S = sum of x^2 from the S memory. The writer accumulates it as it writes
X: a pass's sum of squares is added to its row's running sum and the sum written to S (read-modify-write:
at a row's first pass in a tile the S row is read at the psum write and used the cycle after, or 0 on the
tile that writes the row first, `av` bit 2), so S holds the row's sum once the last pass is written.

The drain rule (as lowbit.rtl.chip_requant.drain_safe): pass p of a tile is written to X and S 1 cycle
after its psum write, which is the sum of the later passes' beats before the tile's end; a later P V tile
of the same step and layer ends at least its `cyc` later; attn_sub_norm starts no earlier than the last one
ends and reads row r's S in its cycle r x beats + lag and word w in r x beats + w + lag (lag:
lowbit.rtl.sfu_stream.rms_lag, 2 where latency.rmsnorm is 12). The loader puts X (and S) on the chip for a
step and layer only where every read comes at least 2 cycles after its write; where S fails, S stays the
bench's and X is the chip's. A decode step's one row, whose last pass is written in the norm's cycle 1,
passes with the lag of 2 (without it, S read in the norm's cycle 0 would be stale).

Fields of a P V word (lowbit.rtl.chip_ctrl AV_FIELDS): `av` (bit 0 X, bit 1 S, bit 2 the tile writes its
rows' S first), `av_n` passes a query, `av_o` / `av_stride` the X word of its first output and the words a
row, `av_s` the S row of its first query, `av_w` the statistics row of its first (query, head), `av_g`
passes a head. The scales are written by the softmax engine (lowbit.rtl.chip_softmax), or where a softmax word
is not on it through the load port (load queue offset AV_LOAD) in the softmax word's cycles, after its
probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out

from lowbit.rtl.chip_ctrl import STAT_DEPTH
from lowbit.rtl.sfu_stream import STAT_BITS, q78_word

WA_BITS = 31  # the P V scale: p (UQ1.15, <= 2^15) x amax_v (< 2^15) < 2^30 (sim.golden PW_IN_BITS)
SB = (STAT_DEPTH - 1).bit_length()
AV_X, AV_S, AV_INIT = 1, 2, 4  # `av` bits
AV_LOAD = 7  # the scale memory's load queue offset past the act buffer's (lowbit.rtl.chip.Chip)


def av_ok(cfg, dims) -> bool:
    """Whether the chip has the attention-output writer: P V on data (lowbit.rtl.chip.qk_data), the SFU on
    data and BoothFlex's psum word inside one X word (lanes divides sfu.lanes); its plan runs from either
    loader (lowbit.rtl.chip_golden.attn_plan, on a TINT or an FP4 core)."""
    from lowbit.rtl.chip import qk_data
    from lowbit.rtl.chip_sfu import sfu_data_ok

    return (dims is not None and qk_data(cfg, dims) and not sfu_data_ok(cfg)
            and cfg.sfu.lanes % cfg.booth.lanes == 0)


@dataclass
class AvPorts:
    """The writer's ports on the SFU's X and S memories (lowbit.rtl.chip_sfu.sfu_engines)."""

    x_en: Signal
    x_addr: Signal
    x_data: Signal
    x_mask: Signal
    s_en: Signal
    s_addr: Signal
    s_data: Signal
    s_raddr: Signal
    s_rdata: Signal


def av_ports(cfg, dims) -> AvPorts:
    n = cfg.sfu.lanes
    return AvPorts(Signal(name="avx_en"), Signal(dims.a_bits, name="avx_addr"), Signal(q78_word(n), name="avx_data"),
                   Signal(n, name="avx_mask"), Signal(name="avs_en"), Signal(SB, name="avs_addr"),
                   Signal(STAT_BITS, name="avs_data"), Signal(SB, name="avs_raddr"), Signal(STAT_BITS, name="avs_rdata"))


def av_signature(cfg, dims) -> dict:
    """The bench's observation ports: X writes (valid, word, element mask, data) and S writes (valid, row, S)."""
    n = cfg.sfu.lanes
    return {"avx_v": Out(1), "avx_a": Out(dims.a_bits), "avx_m": Out(n), "avx_w": Out(16 * n),
            "avs_v": Out(1), "avs_a": Out(SB), "avs_w": Out(STAT_BITS)}


def av_engine(chip, m: Module, ctrl, eng, ports: AvPorts, sm=None):
    """The requantizer behind BoothFlex's psum port (`eng`, queue controller `ctrl`), its scale memory
    (written through the chip's load port at AV_LOAD, and by the softmax engine `sm`,
    lowbit.rtl.chip_softmax.SoftmaxPorts, in the cycles it writes a row's scale), the X writes and S
    accumulation (module docstring); returns its write strobe."""
    from lowbit.rtl.sfu_stream_requant import PsumRequant
    from lowbit.sim.golden import attn_multipliers

    cfg, d = chip.cfg, chip.dims
    n, b = cfg.sfu.lanes, cfg.booth
    rq = PsumRequant(lanes=b.lanes, acc_bits=b.acc_bits, sfu_lanes=n, a_bits=d.a_bits, m_bits=1, s_bits=SB,
                     scale_bits=WA_BITS, tail=False, const_mult=attn_multipliers(1)["av"],  # independent of hd
                     s_every=True, x_bits=SB + 3)
    m.submodules.rq_av = rq
    wa = Memory(shape=WA_BITS, depth=STAT_DEPTH, init=[])
    m.submodules.av_scale = wa
    wp, rp = wa.write_port(), wa.read_port()
    w = ctrl.word
    ld = chip.load_en & (chip.load_queue == len(chip.names) + AV_LOAD)
    if sm is None:
        m.d.comb += [wp.en.eq(ld), wp.addr.eq(chip.load_addr[:SB]), wp.data.eq(chip.load_word[:WA_BITS])]
    else:
        m.d.comb += [wp.en.eq(ld | sm.wa_en), wp.addr.eq(Mux(sm.wa_en, sm.wa_addr, chip.load_addr[:SB])),
                     wp.data.eq(Mux(sm.wa_en, sm.wa_data, chip.load_word[:WA_BITS]))]
    m.d.comb += [
                 rp.addr.eq(rq.s_raddr), rq.s_rdata.eq(rp.data),
                 rq.start.eq(ctrl.go), rq.dst.eq(w.av), rq.groups.eq(w.av_n), rq.tokens.eq(w.nq),  # off 0 (undriven)
                 rq.o_addr.eq(w.av_o), rq.o_stride.eq(w.av_stride), rq.s_addr.eq(w.av_w), rq.s_groups.eq(w.av_g),
                 rq.x.eq(Cat(w.av_s, w.av)), rq.p_valid.eq(eng.p_valid), rq.p_acc.eq(eng.p_acc)]
    odd = rq.w1_en  # a pass is inside one word: one bank writes
    en = rq.w0_en | rq.w1_en
    mask = Mux(odd, rq.w1_mask, rq.w0_mask)
    dat = Mux(odd, rq.w1_data.as_value(), rq.w0_data.as_value())
    m.d.comb += [ports.x_en.eq(en), ports.x_addr.eq(Mux(odd, Cat(1, rq.w1_addr), Cat(0, rq.w0_addr))),
                 ports.x_data.eq(dat), ports.x_mask.eq(mask)]
    # S: the row's running sum of squares (module docstring)
    m.d.comb += ports.s_raddr.eq(rq.p_x[:SB] + rq.p_tok)
    sq = 0
    for j in range(n):
        v = rq.w0_data[j]  # the same element of either bank's word
        v = Mux(odd, rq.w1_data[j], v)
        sq = sq + Mux(mask[j], v * v, 0)
    run = Signal(STAT_BITS, name="avs_run")
    base = Mux(rq.w_g0, Mux(rq.w_x[SB + 2], 0, ports.s_rdata), run)
    new = Signal(STAT_BITS, name="avs_new")
    m.d.comb += [new.eq(base + sq), ports.s_en.eq(en & rq.w_x[SB + 1]), ports.s_addr.eq(rq.w_x[:SB] + rq.w_tok),
                 ports.s_data.eq(new)]
    with m.If(en):
        m.d.sync += run.eq(new)
    m.d.comb += [chip.avx_v.eq(en), chip.avx_a.eq(ports.x_addr), chip.avx_m.eq(mask), chip.avx_w.eq(dat),
                 chip.avs_v.eq(ports.s_en), chip.avs_a.eq(ports.s_addr), chip.avs_w.eq(new)]
    return en


# ---- the loader (on the host)


def av_plan(plan, img, cfg, bq: int, pmap: dict, load_off: int) -> None:
    """Before the SFU's norms are placed (lowbit.rtl.chip_sfu.sfu_norms): the steps and layers whose P V tiles
    all run on data (`pmap`, lowbit.rtl.chip_pv.pv_plan) and pass the drain rule, with each tile's fields less
    the X region (`plan.av_cand[(step, layer)]`), and the scales' load-port writes (load queue offset
    `load_off`) in the softmax words' cycles, after their probabilities (`plan.av_writes`)."""
    from lowbit.rtl.chip_attn import sfu_group_words
    from lowbit.rtl.chip_sfu import STAT_HALF
    from lowbit.rtl.sfu_stream import rms_lag
    from lowbit.sim.attention import pv_pass_keys

    m, b, n = plan.model, cfg.booth, cfg.sfu.lanes
    s = m.spec
    hd, grp, H = s.head_dim, s.n_heads // s.n_kv_heads, s.n_heads
    if not s.subln or hd % n or n % b.lanes:
        return
    nb, per = H * hd // n, hd // b.lanes  # X words a row, passes a head
    lag = rms_lag(cfg.sfu)
    tiles: dict[tuple[int, int], list] = {}
    for i, w in enumerate(img.words[bq]):
        if w.get("op", "").endswith(".attn.av"):
            tiles.setdefault((w["step"], int(w["op"].split(".")[1])), []).append(i)
    sq, group_words, _ = sfu_group_words(img, ".attn.softmax")
    smax = {(w["step"], layer, g): i for i, w, layer, g in group_words}
    for (step, layer), idx in tiles.items():
        bufs = m.run.steps[step].buffers
        T = len(m.run.steps[step].ids)
        if not all(i in pmap for i in idx) or T > STAT_HALF or T * H > STAT_DEPTH:
            continue
        seen = np.zeros((s.n_kv_heads, T), bool)
        fields, s_ok, x_ok, later = {}, True, True, 0
        for i in reversed(idx):  # the drain rule, from the last tile back
            f, _, (_, _, g), q0 = pmap[i]
            nq, pos0 = f["nq"], f["pos0"]  # causal: query t attends to keys 0 .. pos0 + t
            runs = pv_pass_keys(pos0, pos0 + nq, nq, grp * hd, b.lanes)
            beats = [-(-k // b.width) for k, c in runs for _ in range(c)]
            after = np.cumsum([0, *beats[::-1]])[::-1][1:]  # beats of the passes after each pass
            for p, bf in enumerate(after):
                t, r = divmod(p, grp * per)
                row, word = q0 + t, (g * grp * hd + r * b.lanes) // n
                slack = int(bf) + later + row * nb + lag  # the norm reads rms_lag cycles after its walk
                s_ok &= not (r == grp * per - 1 and slack < 2)
                x_ok &= slack + word >= 2
            later += img.words[bq][i]["cyc"]
        for i in idx:  # in queue order: the tile writing a row's S first starts it from 0
            f, _, (_, _, g), q0 = pmap[i]
            rows = slice(q0, q0 + f["nq"])
            first = not seen[:, rows].any()
            if not first and not seen[:, rows].any(axis=0).all():
                x_ok = False  # a tile writes some of its rows first and some not
            seen[g, rows] = True
            fields[i] = {"av_n": grp * per, "av_g": per, "av_w": (g * T + q0) * grp, "q0": q0, "g": g,
                         "init": first}
        if not x_ok or not seen.all():
            continue
        wa = bufs[f"layers.{layer}.attn.softmax.w_amax"]  # [H, T]
        ok = True
        for g in range(s.n_kv_heads):
            j = smax.get((step, layer, g))
            ws = [((g * T + t) * grp + h, int(wa[g * grp + h, t]), load_off) for t in range(T) for h in range(grp)]
            if j is None or len(plan.act_writes.get(j, [])) + len(ws) > img.words[sq][j]["cyc"] - 2:
                ok = False
                break
            plan.av_writes[j] = ws
        if ok:
            plan.av_cand[(step, layer)] = {"tiles": fields, "s": s_ok, "T": T, "nb": nb}


def av_fields(plan, cfg, fields: dict, bq: int) -> None:
    """After the norms are placed: the P V words' `av` fields where attn_sub_norm of their step and layer runs
    on the RMSNorm engine in X region r (`plan.av_norm`), and the expected X and S (`plan.av_expect`)."""
    from lowbit.rtl.chip_sfu import STAT_HALF

    half = plan.dims.a_depth // 2
    hd = plan.model.spec.head_dim
    grp = plan.model.spec.n_heads // plan.model.spec.n_kv_heads
    n = cfg.sfu.lanes
    for key, r in sorted(plan.av_norm.items()):
        c = plan.av_cand[key]
        for i, t in c["tiles"].items():
            fields[(bq, i)].update({
                "av": AV_X | (AV_S if c["s"] else 0) | (AV_INIT if t["init"] else 0), "av_n": t["av_n"],
                "av_o": r * half + t["q0"] * c["nb"] + t["g"] * grp * hd // n, "av_stride": c["nb"],
                "av_s": r * STAT_HALF + t["q0"], "av_w": t["av_w"], "av_g": t["av_g"]})
        out = plan.model.run.steps[key[0]].buffers[f"layers.{key[1]}.attn.av.out"]
        plan.av_expect.append((f"step {key[0]} layer {key[1]}", r * half, c["nb"], np.asarray(out),
                               r * STAT_HALF if c["s"] else -1))


def av_compare(expect: list, xw: list, sw: list, lanes: int, b_lanes: int) -> list[tuple[str, int, int, int, int]]:
    """The writer's recorded X writes ([word, mask, data]) and S writes ([row, S]) cut per step and layer in
    order (each writes T x H x hd / `b_lanes` passes), replayed and compared with the golden's `attn.av.out`
    and its rows' sum of squares: (name, elements written, elements differing, S rows, S rows differing),
    missing elements and rows counted as differing."""
    from lowbit.rtl.chip_requant import write_masked

    res = []
    kx = ks = 0
    for name, base, nb, out, s0 in expect:
        T, width = out.shape
        passes = T * width // b_lanes
        shadow: dict[int, int] = {}
        for a, mask, dat in xw[kx:kx + passes]:
            write_masked(shadow, a - base, mask, dat, lanes)
        kx += passes
        bad = sum(shadow.get(t * nb * lanes + c) != int(out[t, c]) for t in range(T) for c in range(width))
        srows = sbad = 0
        if s0 >= 0:
            last: dict[int, int] = {}
            for row, v in sw[ks:ks + passes]:
                last[row] = v
            ks += passes
            want = (out.astype(np.int64) ** 2).sum(axis=1)
            srows = T
            sbad = sum(last.get(s0 + t) != int(want[t]) for t in range(T)) + len(set(last) - set(range(s0, s0 + T)))
        res.append((name, len(shadow), bad, srows, sbad))
    return res
