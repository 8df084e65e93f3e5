"""The softmax engine on the chip's data path (docs/rtl.md "Data path", "SFU streams"): an SFU softmax word
(`eng` 5) runs lowbit.rtl.sfu_stream_softmax.SfuSoftmaxStream over a KV group's score rows and then the
p x amax_v absmax quantize, writing the INT8 probabilities P V reads into the act buffer's upper half and
each row's scale into the attention output's scale memory (lowbit.rtl.chip_av).

Rule (sim.golden `_attention`, per query t and head h of KV group g, over the keys j it attends)::

    p      = sfu_softmax(score[h, t, j])                    (UQ1.15, sim.numerics.sfu_reduce; Softermax)
    x_j    = p_j * amax_v[j, g]                             (< 2^30: sim.golden PW_IN_BITS)
    w_amax = max_j x_j;   w8_j = RNE(127 x_j / w_amax)      (sim.numerics.sfu.sfu_absmax_quantize, exact)

Rows (t, h) in the order t x grp + h, `beats` Q7.8 score words each (key r of the row's chunk is element r;
elements past the row's keys are absent). A causal prompt's rows differ in length: row r has `len0` + r //
`grp` keys (`grp` 0: every row `len0`), and the engine gives the stream each beat's valid lanes (`x_live`).
As the stream writes a row's probability words (pass B), each element is multiplied by its key's amax_v
(a word of `lanes` amax_v per beat) into a product memory and the row's max is kept; the cycle after the
row's last write the quantize pass reads the products back, one word a cycle, and writes
RNE(127 x / w_amax) (a restoring division by w_amax, 8 quotient bits: x <= w_amax) to the act buffer
SM_QUANT cycles after each read's start, overlapping the next row's passes. The last row's last INT8 word
lands SOFTMAX_PIPE + SM_QUANT + beats - 1 cycles after its last read, so the loader maps a word only where
that is inside the word (latency.softmax >= that, `sm_fits`): the word ends in its program cycle
with every probability written.

Fields of an `eng` 5 word (lowbit.rtl.chip_ctrl SFU_FIELDS): `rows`, `beats`, `x_addr` row 0's score and
product word and row max (0: the engine's memories hold one word's rows), `o_addr` the act word of row
0 (rows `beats` words apart, chip_pv's layout), `st_addr` the scale row of row 0 (chip_av's rows), `y_addr`
the first row's keys (`len0`), `g_addr` the rows a query (`grp`; 0: equal rows), `t_addr` 1 + the amax_v
word of the chunk's first key in the V quantizer's scale memory (keys of consecutive positions,
lowbit.rtl.chip_vquant), `kg` 1 + the gathered-key recorder entry of its first key (the keys LOP gathers,
lowbit.rtl.chip_kscales: `vs_key` / `vs_kg` name the word and the chunk, the scales come back on `vs_data`).
Where a chip lacks the score stage (lowbit.rtl.chip_scores) or a word both amax_v sources, the score rows,
each row's max and the group's amax_v words are written through the load port (a stand-in) at load queue
`Chip.lop_load() + 2`, address bits SEL.. picking the memory (0 scores, 1 row max, 2 amax_v), in the cycles of
the group's Q K^T tile.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out

from lowbit.rtl.chip_av import SB, WA_BITS
from lowbit.rtl.chip_ctrl import STAT_DEPTH
from lowbit.rtl.common import COUNT_BITS, count_mismatches
from lowbit.rtl.sfu_stream import q78_word
from lowbit.rtl.sfu_stream_softmax import SOFTMAX_PIPE, SfuSoftmaxStream

SM_ENG = 5
SM_WORDS = 64  # score and product words (DESIGN ASSUMPTION: a KV group's rows x beats)
SM_KEYS = 16   # amax_v words: keys / lanes of a group
SM_QUANT = 2   # a product word's read, then divide and write
SEL = 6        # the load address's memory select (bits SEL, SEL + 1)
XB, KB = (SM_WORDS - 1).bit_length(), (SM_KEYS - 1).bit_length()


def sm_ok(cfg, dims) -> bool:
    """Whether the chip has the softmax engine: P V on data (lowbit.rtl.chip.qk_data) and the SFU on data
    (DESIGN ASSUMPTION: the softmax and score plans run from either loader, lowbit.rtl.chip_golden.attn_plan,
    on a TINT or an FP4 core)."""
    from lowbit.rtl.chip import qk_data
    from lowbit.rtl.chip_sfu import sfu_data_ok

    return dims is not None and qk_data(cfg, dims) and not sfu_data_ok(cfg)


def sm_fits(cfg, beats: int) -> bool:
    """Whether a word of `beats` beats a row ends with its last INT8 word written (module docstring)."""
    return SOFTMAX_PIPE + SM_QUANT + beats - 1 <= cfg.sfu.op_latency("softmax")


def sm_signature(cfg, dims) -> dict:
    """The bench's observation ports: INT8 probability writes (valid, act word, word) and scale writes."""
    return {"smv": Out(1), "sma": Out(dims.a_bits), "smw": Out(8 * cfg.sfu.lanes),
            "swv": Out(1), "swa": Out(SB), "sww": Out(WA_BITS)}


def sm_observe(chip, m: Module, sm) -> Signal | int:
    """Drive the chip's observation ports (sm_signature) from the engine's ends `sm` (None: no engine); returns
    its write strobe."""
    if sm is None:
        return 0
    m.d.comb += [chip.smv.eq(sm.a_en), chip.sma.eq(sm.a_addr), chip.smw.eq(sm.a_data),
                 chip.swv.eq(sm.wa_en), chip.swa.eq(sm.wa_addr), chip.sww.eq(sm.wa_data)]
    return sm.a_en | sm.wa_en


@dataclass
class SoftmaxPorts:
    """The engine's ends: the SFU controller's ready / done_next, its act buffer write and its scale write."""

    ready: Signal
    done_next: Signal
    a_en: Signal
    a_addr: Signal
    a_data: Signal
    wa_en: Signal
    wa_addr: Signal
    wa_data: Signal
    x_mem: Memory | None = None   # the score memory and the row-max memory (lowbit.rtl.chip_scores writes them)
    mx_mem: Memory | None = None
    vs_addr: Signal | None = None  # the V quantizer's scale memory: the word the engine reads, its data the cycle
    vs_data: Signal | None = None  # after (lowbit.rtl.chip_vquant drives it; a word's `t_addr` 0: not read)
    vs_key: Signal | None = None  # the amax_v word of the chunk the engine reads and the word's `kg` (a gathered
    vs_kg: Signal | None = None   # chunk's keys, lowbit.rtl.chip_kscales: vs_data then their scales by position)


def rne_div127(x, amax, name: str, m: Module):
    """RNE(127 x / amax) for 0 <= x <= amax (0 where amax is 0): 8 restoring-division steps of 254 x by amax
    give f = floor(254 x / amax) and its remainder; f even rounds down, f odd up unless the remainder is 0
    (a tie) and f // 2 is even."""
    rem = Signal(len(x) + 8, name=f"{name}_r0")
    m.d.comb += rem.eq(x * 254)
    bits = []
    for k in range(7, -1, -1):
        d = (amax << k)
        ge = rem >= d
        nxt = Signal(len(rem), name=f"{name}_r{8 - k}")
        m.d.comb += nxt.eq(Mux(ge, rem - d, rem))
        bits.append(ge)
        rem = nxt
    f = Cat(*reversed(bits))
    half = f[1:]
    up = f[0] & ((rem != 0) | half[0])
    return Mux(amax == 0, 0, half + up)[:8]


def max_tree(m: Module, vals: list, name: str) -> Signal:
    """The max of unsigned `vals` through a balanced tree of named signals, ceil(log2 n) comparators deep.
    Each partial max is a Signal because Amaranth lowers an expression that reads a shared sub-expression
    twice as a tree: the running max Mux(p > acc, p, acc) over n lanes became 2^(n+1) comparators (16 lanes:
    131,087 of 32 bits, and the chip's Verilog conversion ran out of memory)."""
    level = 0
    while len(vals) > 1:
        nxt = []
        for k in range(0, len(vals) - 1, 2):
            a, b = vals[k], vals[k + 1]
            s = Signal(max(len(a), len(b)), name=f"{name}{level}_{k // 2}")
            m.d.comb += s.eq(Mux(a > b, a, b))
            nxt.append(s)
        vals = nxt + vals[len(vals) - len(vals) % 2:]
        level += 1
    return vals[0]


def softmax_engine(m: Module, cfg, dims, ctrl, ld, ld_addr, ld_word) -> SoftmaxPorts:
    """The engine behind the SFU queue's controller `ctrl` (module docstring); `ld`: the load port's write
    strobe of its memories."""
    n = cfg.sfu.lanes
    s = SfuSoftmaxStream(cfg.sfu, a_bits=XB, s_bits=SB, ragged=True)
    m.submodules.sfu_softmax = s
    w = ctrl.word
    go = Signal(name="sm_go")
    m.d.comb += go.eq(ctrl.go & (w.eng == SM_ENG))
    mems = {k: Memory(shape=shape, depth=depth, init=[]) for k, shape, depth in (
        ("x", q78_word(n), SM_WORDS), ("mx", signed(16), STAT_DEPTH), ("va", data.ArrayLayout(16, n), SM_KEYS),
        *((f"px{i}", WA_BITS, SM_WORDS) for i in range(n)))}  # the products, a memory a lane
    for k, mem in mems.items():
        m.submodules[f"sm_{k}"] = mem
    sel = ld_addr[SEL:SEL + 2]
    for k, (name, bits, ab) in enumerate((("x", 16 * n, XB), ("mx", 16, SB), ("va", 16 * n, KB))):
        wp = mems[name].write_port()
        m.d.comb += [wp.en.eq(ld & (sel == k)), wp.addr.eq(ld_addr[:ab]), wp.data.eq(ld_word[:bits])]
    xr, mr, vr = (mems[k].read_port() for k in ("x", "mx", "va"))
    pr = [mems[f"px{i}"].read_port() for i in range(n)]
    m.d.comb += [s.start.eq(go), s.rows.eq(w.rows), s.beats.eq(w.beats), s.x_addr.eq(w.x_addr[:XB]),
                 s.o_addr.eq(w.x_addr[:XB]), s.m_addr.eq(w.x_addr[:SB]), xr.addr.eq(s.x_raddr), s.x_rdata.eq(xr.data),
                 mr.addr.eq(s.m_raddr), s.m_rdata.eq(mr.data)]

    def latch(v, name):
        r = Signal(v.shape(), name=f"sm_{name}")
        with m.If(go):
            m.d.sync += r.eq(v)
        return Mux(go, v, r), r

    beats, beats_r = latch(w.beats, "beats")
    grp, _ = latch(w.g_addr, "grp")
    _, ob = latch(w.o_addr, "ob")
    _, sb0 = latch(w.st_addr, "sb")
    # ---- each read beat's valid lanes: row r has len0 + r // grp keys (x_live, with the read's data)
    b, k, ln = (Signal(COUNT_BITS, name=f"sm_{x}") for x in ("b", "k", "len"))
    pb = Signal(name="sm_pb")
    b_c, pb_c, k_c = Mux(go, 0, b), Mux(go, 0, pb), Mux(go, 0, k)
    ln_c = Mux(go, w.y_addr, ln)
    lastb = b_c == beats - 1
    gend = (k_c + 1 == grp)
    m.d.sync += [b.eq(Mux(lastb, 0, b_c + 1)), pb.eq(pb_c ^ lastb)]
    with m.If(lastb & pb_c):
        m.d.sync += [k.eq(Mux(gend, 0, k_c + 1)), ln.eq(ln_c + gend)]
    with m.Else():
        m.d.sync += [k.eq(k_c), ln.eq(ln_c)]
    live = Signal(n, name="sm_live")
    m.d.sync += live.eq(Cat(*((b_c * n + i) < ln_c for i in range(n))))
    m.d.comb += s.x_live.eq(live)
    # ---- pass B's words times amax_v, the row's max of them
    qb = Signal(COUNT_BITS, name="sm_qb")
    qlast = qb == beats_r - 1
    qb_n = Mux(qlast, 0, qb + 1)
    with m.If(go):
        m.d.sync += qb.eq(0)
    with m.Elif(s.o_wen):
        m.d.sync += qb.eq(qb_n)
    va_i = Mux(go, 0, Mux(s.o_wen, qb_n, qb))
    m.d.comb += vr.addr.eq(va_i)
    # amax_v from the load port's memory, or where the word's t_addr is set from the V quantizer's scale memory,
    # word t_addr - 1 on (lowbit.rtl.chip_vquant: the keys of the chunk are positions from there on)
    tb, _ = latch(w.t_addr, "vsb")
    kg, _ = latch(w.kg, "kg")  # or the gathered keys' (lowbit.rtl.chip_kscales)
    vs_addr, vs_data, vs_on = (Signal(len(w.t_addr), name="sm_vsaddr"), Signal(data.ArrayLayout(16, n), name="sm_vsdata"),
                               Signal(name="sm_vson"))
    vs_key = va_i  # (an expression: a chip without gathered keys leaves no unused net)
    m.d.comb += vs_addr.eq(tb - 1 + va_i)
    m.d.sync += vs_on.eq((tb != 0) | (kg != 0))
    va = Mux(vs_on, vs_data.as_value(), vr.data.as_value())
    prod = [Signal(WA_BITS, name=f"sm_x{i}") for i in range(n)]
    m.d.comb += [prod[i].eq(s.o_wdata[i] * va[16 * i:16 * i + 16]) for i in range(n)]
    for i in range(n):
        pw = mems[f"px{i}"].write_port()
        m.d.comb += [pw.en.eq(s.o_wen), pw.addr.eq(s.o_waddr[:XB]), pw.data.eq(prod[i])]
    amx = Signal(WA_BITS, name="sm_amax")
    new = max_tree(m, [Mux(qb == 0, 0, amx), *prod], "sm_max")
    row, rbase = Signal(SB, name="sm_row"), Signal(XB, name="sm_rbase")
    q_amax, q_base, q_row = Signal(WA_BITS, name="sm_qamax"), Signal(XB, name="sm_qbase"), Signal(SB, name="sm_qrow")
    q_cnt, q_i = Signal(COUNT_BITS, name="sm_qcnt"), Signal(COUNT_BITS, name="sm_qi")
    wa_v = Signal(name="sm_wav")
    rowend = s.o_wen & qlast
    m.d.sync += wa_v.eq(rowend)
    with m.If(go):
        m.d.sync += [row.eq(0), rbase.eq(w.x_addr[:XB])]
    with m.If(s.o_wen):
        m.d.sync += amx.eq(new)
    rd = q_cnt != 0
    with m.If(rowend):
        m.d.sync += [q_amax.eq(new), q_base.eq(rbase), q_row.eq(row), q_cnt.eq(beats_r), q_i.eq(0),
                     row.eq(row + 1), rbase.eq(rbase + beats_r)]
    with m.Elif(rd):
        m.d.sync += [q_cnt.eq(q_cnt - 1), q_i.eq(q_i + 1)]
    # ---- the quantize pass: read a product word, divide each lane by the row's max, write the INT8 word
    m.d.comb += [p_.addr.eq(q_base + q_i) for p_ in pr]
    v1, a1, am1 = Signal(name="sm_v1"), Signal(dims.a_bits, name="sm_a1"), Signal(WA_BITS, name="sm_am1")
    m.d.sync += [v1.eq(rd & ~rowend), a1.eq(ob + q_base + q_i), am1.eq(q_amax)]
    qw = Cat(*(rne_div127(pr[i].data, am1, f"sm_d{i}", m) for i in range(n)))
    ports = SoftmaxPorts(s.ready, s.done_next, v1, a1, qw, wa_v, Signal(SB, name="sm_waddr"), q_amax, mems["x"],
                         mems["mx"], vs_addr, vs_data, vs_key, kg)
    m.d.comb += ports.wa_addr.eq(sb0 + q_row)
    return ports


# ---- the loader (on the host)


@dataclass
class SoftmaxPlan:
    """The softmax words on the engine: their fields, the load-port writes before each (`writes`: after the
    Q K^T tile's start), the expected INT8 words (act word, word) and scales (row, w_amax) in write order, and
    the rows counted."""

    fields: dict[int, dict] = field(default_factory=dict)
    probs: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # word -> its INT8 words (act word, word)
    writes: list[dict] = field(default_factory=list)
    act: list[tuple[int, int]] = field(default_factory=list)
    wa: list[tuple[int, int]] = field(default_factory=list)
    rows: int = 0
    words: list[str] = field(default_factory=list)
    bench_rows: int = 0
    bench_words: list[str] = field(default_factory=list)
    sc_note: str = ""  # why the bench still writes the scores and row maxes (lowbit.rtl.chip_scores)
    keys: dict[int, tuple[int, int, list[int]]] = field(default_factory=dict)  # word -> (layer, KV head, its keys'
    # positions in the chunk's order)
    vs_rows: int = 0  # rows whose keys' amax_v the engine reads from the V quantizer's scale memory


def _v_amax(run, layer: int, kvh: int) -> np.ndarray:
    """amax_v of every cached position of `layer` ([positions, KV heads]), the steps' kv_append rows in order."""
    return np.concatenate([st.buffers[f"layers.{layer}.attn.kv_append.v_amax"].reshape(-1, kvh)
                           for st in run.steps])


def softmax_plan(plan, img, cfg, bq: int, qmap: dict, pv_writes: dict) -> SoftmaxPlan:
    """Map the softmax words whose probabilities P V reads from the act buffer (`pv_writes`, chip_pv.pv_plan's
    writes per softmax word) onto the engine where the word's rows, keys and cycles fit (module docstring);
    their probability and scale writes leave `plan.act_writes` / `plan.av_writes` (the engine's writes, its
    `o_addr` and `beats` in SFU words: chip_attn.part_words of the act words, two a 32-element FP4 act word on
    vitallm-fp4, chip_booth.booth_act). `qmap`: BoothFlex word ->
    (fields, psum words, (step, layer, group)) of the Q K^T and P V tiles on data."""
    from lowbit.rtl.chip_attn import part_words, sfu_group_words
    from lowbit.rtl.chip_booth import booth_act
    from lowbit.rtl.sfu_stream import stream_cycles

    out = SoftmaxPlan()
    m, n = plan.model, cfg.sfu.lanes
    s = m.spec
    grp, kvh = s.n_heads // s.n_kv_heads, s.n_kv_heads
    sq, group_words, _ = sfu_group_words(img, ".attn.softmax")
    qk = {}
    for i, v in qmap.items():
        if img.words[bq][i].get("op", "").endswith(".attn.qk"):
            qk.setdefault(v[2], []).append(i)
    pv_keys = {v[2]: v[0] for i, v in qmap.items() if img.words[bq][i].get("op", "").endswith(".attn.av")}
    for i, w, layer, g in group_words:
        if i not in pv_writes:
            continue
        key = (w["step"], layer, g)
        st = m.run.steps[w["step"]]
        bufs = st.buffers
        T = len(st.ids)
        rows = T * grp
        ws = part_words(pv_writes[i], booth_act(cfg)[1], n)  # in SFU words, as the engine writes them
        f = pv_keys.get(key)
        tiles = qk.get(key, [])
        ok = f is not None and len(tiles) == 1 and len(ws) % rows == 0
        beats = len(ws) // rows if ok else 0
        keys = bufs[f"layers.{layer}.attn.qk.keys"][g * grp:(g + 1) * grp]  # [grp, T, M]
        lens = [int(keys[h, t].sum()) for t in range(T) for h in range(grp)]
        ok = ok and beats > 0 and stream_cycles(cfg.sfu, "softmax", rows, 2 * beats) == w["cyc"] and sm_fits(cfg, beats) \
            and rows * beats <= SM_WORDS and beats <= SM_KEYS and rows <= STAT_DEPTH and max(lens) <= beats * n
        causal = ok and T > 1
        if ok and any(ln_ != lens[0] + (r // grp if causal else 0) for r, ln_ in enumerate(lens)):
            ok = False
        if not ok:
            out.bench_rows += rows
            out.bench_words.append(f"step {w['step']} layer {layer} group {g}")
            continue
        # the chunk's keys: P V's rows hold the golden's w8 at them (chip_pv); the same keys' scores and amax_v
        pos = [int(j) for j in np.flatnonzero(keys.any(axis=(0, 1)))]
        sc = bufs[f"layers.{layer}.attn.qk.scores"][g * grp:(g + 1) * grp][:, :, pos]  # [grp, T, M]
        kk = keys[:, :, pos]
        pad = np.zeros((T, grp, beats * n), np.int64)
        pad[:, :, :len(pos)] = sc.transpose(1, 0, 2)
        mx = [int(np.max(sc[h, t][kk[h, t]])) for t in range(T) for h in range(grp)]
        va = np.zeros(beats * n, np.int64)
        va[:len(pos)] = _v_amax(m.run, layer, kvh)[pos, g]
        wr = [(0, r, _word16(x)) for r, x in enumerate(pad.reshape(-1, n))]
        wr += [(1, r, v & 0xFFFF) for r, v in enumerate(mx)]
        wr += [(2, b, _word16(va[b * n:(b + 1) * n])) for b in range(beats)]
        qi = tiles[0]
        o_addr, st_addr = ws[0][0], g * T * grp
        if len(wr) > img.words[bq][qi]["cyc"] - 2 or st_addr + rows > STAT_DEPTH \
                or any(a != o_addr + k for k, (a, _) in enumerate(ws)):
            out.bench_rows += rows
            out.bench_words.append(f"step {w['step']} layer {layer} group {g}")
            continue
        out.writes.append({"after": [bq, qi], "before": i, "w": [[a | sel << SEL, v] for sel, a, v in wr]})
        wa = bufs[f"layers.{layer}.attn.softmax.w_amax"]
        for r in range(rows):
            t, h = divmod(r, grp)
            out.act += [(a, v) for a, v in ws[r * beats:(r + 1) * beats]]
            out.wa.append((st_addr + r, int(wa[g * grp + h, t])))
        out.fields[i] = {"eng": SM_ENG, "rows": rows, "beats": beats, "x_addr": 0, "o_addr": o_addr,
                         "st_addr": st_addr, "y_addr": lens[0], "g_addr": grp if causal else 0}
        out.probs[i] = list(ws)
        out.keys[i] = (layer, g, pos)
        out.rows += rows
        out.words.append(f"step {w['step']} layer {layer} group {g}")
        plan.act_writes.pop(i, None)
        plan.av_writes.pop(i, None)
    return out


def sm_compare(sm: SoftmaxPlan, r: dict) -> tuple[int, int, int, int, int, int, int, int]:
    """(softmax words on the engine, their rows, INT8 words checked, row scales checked, those differing (missing
    and extra counted), load-port write batches not ended before their word, rows whose probabilities the
    bench wrote, rows whose keys' amax_v the engine read from the V quantizer's scale memory)."""
    bad = 0
    for want, key in ((sm.act, "sm_act"), (sm.wa, "sm_wa")):
        got = [tuple(x) for x in r.get(key, [])]
        bad += count_mismatches(got, want)
    return len(sm.fields), sm.rows, len(sm.act), len(sm.wa), bad, int(r.get("sm_late", 0)), sm.bench_rows, sm.vs_rows


def _word16(x) -> int:
    """A word of 16-bit lanes, lane 0 in the low bits (two's complement)."""
    return sum((int(v) & 0xFFFF) << (16 * k) for k, v in enumerate(x))


__all__ = ["SM_ENG", "max_tree", "sm_ok", "SoftmaxPlan", "SoftmaxPorts", "rne_div127", "sm_compare", "sm_fits", "sm_observe", "sm_signature",
           "softmax_engine", "softmax_plan"]
