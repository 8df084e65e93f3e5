"""The psum requantizer on the chip's data path (docs/rtl.md "Data path", "SFU streams"): a
lowbit.rtl.sfu_stream_requant.PsumRequant behind each projection engine's psum write port (the TINT cores',
BoothFlex's where its ternary tiles run on the data path, and the FP4 core's, lowbit.rtl.chip_fp4), writing the
requantized projection outputs into the SFU's Q7.8 buffers: `attn.o` and `ffn.down` into the residual's y
buffer R (dst 1), which the residual engine reads, `ffn.gate` and `ffn.up` into the gate and up buffers (dst 2,
3), which the gating engine (lowbit.rtl.sfu_stream_act.SfuActStream) reads.

- **Multipliers**: per engine a memory of multiplier words (`lanes` x (m, sh) of a row group: the golden's,
  sim.golden.linear_multipliers for a ternary op, sim.golden_fp4.fp4_row_multipliers for an FP4 one, its
  tensor scale folded in; `row_multipliers`), the ops' row groups one after the other, written through the
  load port before `start` (DESIGN ASSUMPTION, like the norms' gains).
- **Lanes**: an engine's psum word of any lane count up to the SFU's (TINT 6, BoothFlex 4, FP4 6 on vitallm /
  vitallm-fp4) lands in at most two adjacent Q7.8 words, which the two-bank buffer writes in one cycle; a
  wider one gets no requantizer (`rq_queues_of`, its reason in the plan's `rq_refused`), nor does a
  projection with a tile starting inside a row group (a multiplier word is one whole row group).
- **Amax**: the token's amax is the row statistic the quantize engine read for the projection's input (the
  SFU's amax memory, a read port per requantizer), at the quantize word's `st_addr`; the next norm writing
  that region comes after every tile of the projection (the program's dependencies), so it is still there.
- **The drain rule.** A tile's last psum write is in its end cycle E (the simulator's end) and its Q7.8
  results land REQUANT_DELAY = 1 cycle later, so a consumer that starts in cycle E could read a word before
  it lands. The simulator's timing is kept; the loader puts an op's outputs on the requantizer only where the
  program's shapes prove every read comes after the write it needs (`drain_safe`: the consumer starts no
  earlier than each tile's end, reads token t's word w in its cycle t x beats + w, and pass p of a tile with
  P passes of bt beats is written (P - 1 - p) x bt cycles before the tile's end), and the result names the
  residual words that keep the bench's y for this reason (none on the measured programs).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib.memory import Memory

from lowbit.rtl.sfu_stream import q78_word
from lowbit.rtl.sfu_stream_requant import REQUANT_DELAY, PsumRequant, mult_word

RQ_LOAD = 8  # load queue offset (past the act buffer's) of the first requantizer's multiplier memory
DST_R, DST_GATE, DST_UP, DST_Q, DST_K = 1, 2, 3, 4, 5  # the residual's y buffer, the gating engine's gate and
# up buffers, the RoPE's q and k input buffers
DST_V = 7  # the V quantizer's row memory (lowbit.rtl.chip_vquant)
RQ_OPS = {"attn.o": DST_R, "ffn.down": DST_R, "ffn.gate": DST_GATE, "ffn.up": DST_UP, "attn.q": DST_Q,
          "attn.k": DST_K, "attn.v": DST_V}  # layer op -> the Q7.8 buffer its requantized outputs go to
RQ_BUFS = {DST_R: "r", DST_GATE: "gate", DST_UP: "up", (DST_Q, DST_K): "qk", DST_V: "v"}  # dst -> chip_sfu's
# buffer, the RoPE engine's q / k buffer (lowbit.rtl.chip_rope) or the V quantizer's rows, where the chip has them
RESIDUAL_Y = {"attn_residual": "attn.o", "ffn_residual": "ffn.down"}  # residual op -> the projection it adds
DST_LOGITS = 6  # the lm_head's logits (docs/rtl.md "The lm_head on data"): they leave on the write ports, for the host


def rq_dst(op: str) -> int | None:
    """The dst of projection `op`'s requantized outputs (RQ_OPS by layer op, DST_LOGITS for the lm_head), None
    for an op the requantizers do not take."""
    if op == "lm_head":
        return DST_LOGITS
    return RQ_OPS.get(".".join(op.split(".")[2:])) if op.startswith("layers.") else None


class Q78Banks:
    """A Q7.8 buffer of `depth` words as two banks interleaved by word address with a write enable per element
    (the requantizers' writes, lowbit.rtl.sfu_stream_requant) and whole words from the load port (`ld`; None:
    the requantizers' alone)."""

    def __init__(self, m: Module, name: str, lanes: int, depth: int, ld, ld_addr, ld_word) -> None:
        self.m, self.name, self.lanes = m, name, lanes
        self.hb = (depth // 2 - 1).bit_length()
        self.banks = []
        for b in range(2):
            mem = Memory(shape=q78_word(lanes), depth=depth // 2, init=[])
            m.submodules[f"sfu_{name}{b}"] = mem
            if ld is not None:
                wp = mem.write_port(granularity=1)
                m.d.comb += [wp.en.eq(Mux(ld & (ld_addr[0] == b), (1 << lanes) - 1, 0)),
                             wp.addr.eq(ld_addr[1:1 + self.hb]), wp.data.eq(ld_word[:16 * lanes])]
            self.banks.append(mem)

    def writer(self, rq: PsumRequant, dst: int | tuple[int, ...]) -> None:
        """The requantizer `rq`'s writes with `dst` (or any of the tuple's) go here (a write port per bank)."""
        hit = rq.w_dst == dst if isinstance(dst, int) else Cat(*(rq.w_dst == x for x in dst)).any()
        for b, mem in enumerate(self.banks):
            wp = mem.write_port(granularity=1)
            self.m.d.comb += [wp.en.eq(Mux(getattr(rq, f"w{b}_en") & hit, getattr(rq, f"w{b}_mask"), 0)),
                              wp.addr.eq(getattr(rq, f"w{b}_addr")[:self.hb]),
                              wp.data.eq(getattr(rq, f"w{b}_data"))]

    def reader(self, raddr):
        """The word at `raddr` the cycle after (a read port on each bank, the address's low bit picks one)."""
        odd = Signal(name=f"{self.name}_odd")
        self.m.d.sync += odd.eq(raddr[0])
        data_ = []
        for mem in self.banks:
            rp = mem.read_port()
            self.m.d.comb += rp.addr.eq(raddr[1:1 + self.hb])
            data_.append(rp.data)
        return Mux(odd, data_[1].as_value(), data_[0].as_value())


def requantizer(m: Module, name: str, ctrl, eng, lanes: int, acc_bits: int, sfu_lanes: int, a_bits: int,
                mult_depth: int, amax: Memory, ld, ld_addr, ld_word, tail=None) -> PsumRequant:
    """A PsumRequant behind engine `eng` (its `p_valid` / `p_acc`), started with the queue controller `ctrl`'s
    words (their RQ fields), its multiplier memory (`mult_depth` words, load enable `ld`) and a read port on
    the SFU's amax memory. `tail`: the word's last-group rows (None: every group is whole)."""
    from lowbit.rtl.chip_ctrl import STAT_DEPTH
    from lowbit.sim.numerics.sfu import SFU_IN_BITS

    sb, mb = (STAT_DEPTH - 1).bit_length(), (mult_depth - 1).bit_length()
    rq = PsumRequant(lanes=lanes, acc_bits=acc_bits, sfu_lanes=sfu_lanes, a_bits=a_bits, m_bits=mb, s_bits=sb,
                     scale_bits=SFU_IN_BITS, tail=tail is not None)
    m.submodules[f"rq_{name}"] = rq
    mm = Memory(shape=mult_word(lanes), depth=mult_depth, init=[])
    m.submodules[f"mult_{name}"] = mm
    wp, rp, ap = mm.write_port(), mm.read_port(), amax.read_port()
    w = ctrl.word
    m.d.comb += [wp.en.eq(ld), wp.addr.eq(ld_addr[:mb]), wp.data.eq(ld_word[:mult_word(lanes).size]),
                 rp.addr.eq(rq.m_raddr), rq.m_rdata.eq(rp.data), ap.addr.eq(rq.s_raddr), rq.s_rdata.eq(ap.data),
                 rq.start.eq(ctrl.go), rq.groups.eq(w.groups), rq.tokens.eq(w.tokens), rq.off.eq(w.rq_off), rq.o_addr.eq(w.rq_o),
                 rq.o_stride.eq(w.rq_stride), rq.m_addr.eq(w.rq_m), rq.s_addr.eq(w.rq_s), rq.dst.eq(w.rq),
                 rq.p_valid.eq(eng.p_valid), rq.p_acc.eq(eng.p_acc)]
    if tail is not None:
        m.d.comb += rq.tail_lanes.eq(tail)
    return rq


def drain_safe(tiles: list[dict], beats: int, lanes_sfu: int) -> bool:
    """Whether a consumer reading token t's Q7.8 word w in cycle start + t x `beats` + w, and starting no earlier
    than every tile's end, reads each word after the requantizer wrote it (module docstring). `tiles`: dicts
    with r0 (first row), lanes, groups, tokens, tail (last group's rows) and bt (beats a pass)."""
    for x in tiles:
        passes = x["tokens"] * x["groups"]
        for p in range(passes - 1, -1, -1):
            before = (passes - 1 - p) * x["bt"]  # cycles from this pass's psum write to the tile's end
            if before >= REQUANT_DELAY + 1:
                break
            t, g = divmod(p, x["groups"])
            w0 = (x["r0"] + g * x["lanes"]) // lanes_sfu
            if t * beats + w0 + before < REQUANT_DELAY + 1:
                return False
    return True


def rq_queues_of(plan, img, cfg, queues: list[int]) -> list[int]:
    """The queues of `queues` that get a requantizer, with the SFU on the data path (lowbit.rtl.chip_sfu.sfu_data_ok)
    and the whole-model golden: those whose psum word (lowbit.rtl.chip.rq_lanes: TINT, BoothFlex or FP4 lanes,
    any count) is no wider than the SFU's Q7.8 word, so a row group lands in at most two adjacent words (the
    two-bank placement, lowbit.rtl.sfu_stream_requant); the others go to `plan.rq_refused` with the reason."""
    from lowbit.rtl.chip_engines import rq_lanes
    from lowbit.rtl.chip_sfu import sfu_data_ok

    if plan.model is None or sfu_data_ok(cfg):
        return []
    out = []
    for q in queues:
        lanes = rq_lanes(cfg, img.classes[q])[0]
        if lanes > cfg.sfu.lanes:
            plan.rq_refused.append(f"{img.queues[q]}: its {lanes}-lane psum word is wider than the SFU's {cfg.sfu.lanes}"
                                   "-lane Q7.8 word (a row group would span three words)")
        else:
            out.append(q)
    return out


def requant_cover(plan, img, cfg) -> None:
    """The loader's first half (before the SFU words are planned): the (step, op) of every requantized
    projection whose tiles all run on engines with a requantizer (`plan.proj`, lowbit.rtl.chip_golden) and
    cover its output rows once, and whose consumer's reads the drain rule proves safe (`drain_safe`) go to
    `plan.rq_cover`; those failing only the drain rule to `plan.rq_drain`."""
    from lowbit.rtl.chip_rope import rope_drain_safe
    from lowbit.sim.isa import C_BOOTH, C_FP4, C_TINT

    n = cfg.sfu.lanes
    words: dict[tuple[int, str], list] = {}
    for q, ws in enumerate(img.words):
        if img.classes[q] not in (C_TINT, C_BOOTH, C_FP4):
            continue
        for i, w in enumerate(ws):
            op = w.get("op", "")
            if rq_dst(op) is not None and "macs" in w:
                words.setdefault((w["step"], op), []).append((q, i))
    for key, ws in sorted(words.items()):
        if not all(k in plan.proj for k in ws):
            continue
        out = plan.model.run.steps[key[0]].buffers[f"{key[1]}.out"].shape[1]
        tiles = [plan.proj[k] for k in ws]
        rows = sorted((t["r0"], t["r0"] + t["rows"]) for t in tiles)
        if rows[0][0] != 0 or rows[-1][1] != out or any(a[1] != b[0] for a, b in zip(rows, rows[1:], strict=False)):
            continue
        if any(t["r0"] % t["lanes"] for t in tiles):  # a multiplier word holds one whole row group of the op
            plan.rq_refused.append(f"step {key[0]} {key[1]}: a tile starts inside a {tiles[0]['lanes']}-row group")
            continue
        safe = rope_drain_safe(plan, key, tiles, n) if key[1].endswith(("attn.q", "attn.k")) else None
        if key[1].endswith("attn.v"):  # its reader, the V quantizer, reads 2 cycles after the V write's issue,
            safe = True  # which is no earlier than the tile's end (lowbit.rtl.chip_vquant)
        if key[1] == "lm_head" or (drain_safe(tiles, -(-out // n), n) if safe is None else safe):  # lm_head: no
            # reader on the chip, the logits leave
            plan.rq_cover[key] = ws
        else:
            plan.rq_drain.append(f"step {key[0]} {key[1]}")


def requant_fields(plan, img, cfg, fields: dict, sfu_q: int, rq_queues: list[int]) -> str:
    """The loader's second half: each covered tile's RQ fields (lowbit.rtl.chip_ctrl.RQ_FIELDS) in `fields`,
    the multiplier words of every engine in `plan.sfu_preload` (load queue offset RQ_LOAD + the engine's index in
    `rq_queues`), the expected Q7.8 outputs (`plan.rq_expect`) and the multiplier memories' depth; '' or why
    not (a covered projection whose input quantize word does not run on the SFU's quantize engine, so its
    amax is not in the amax memory)."""
    import numpy as np

    from lowbit.rtl.chip_model import input_of

    n = cfg.sfu.lanes
    quant = {(w.get("step"), w.get("op")): i for i, w in enumerate(img.words[sfu_q])} if sfu_q >= 0 else {}
    mbase: dict[tuple[int, str], int] = {}
    mwords: dict[int, list[int]] = {q: [] for q in rq_queues}
    for (step, op), ws in plan.rq_cover.items():
        j = quant.get((step, input_of(op)))
        st = plan.sfu_fields.get(j, {}) if j is not None else {}
        if st.get("eng") != 1:
            return f"the input quantize of {op} (step {step}) does not run on the SFU's quantize engine"
        out = plan.model.run.steps[step].buffers[f"{op}.out"]
        for q, i in ws:
            t = plan.proj[(q, i)]
            if (q, op) not in mbase:
                mm, sh = row_multipliers(plan.model.dep.linears[op], cfg)
                mbase[(q, op)] = len(mwords[q])
                for g in range(-(-len(mm) // t["lanes"])):
                    rows = [min(g * t["lanes"] + j_, len(mm) - 1) for j_ in range(t["lanes"])]
                    mwords[q].append(pack_mult(mm[rows], sh[rows]))
            fields[(q, i)].update({"rq": rq_dst(op), "rq_off": t["r0"] % n,
                                   "rq_o": t["r0"] // n, "rq_stride": -(-out.shape[1] // n),
                                   "rq_m": mbase[(q, op)] + t["r0"] // t["lanes"], "rq_s": st["st_addr"]})
        plan.rq_expect.append((f"step {step} {op}", rq_dst(op), np.asarray(out)))
    depth = max((len(v) for v in mwords.values()), default=0)
    plan.mult_depth = 1 << max(1, (depth - 1).bit_length()) if depth else 0
    for k, q in enumerate(rq_queues):
        plan.sfu_preload += [(a, v, RQ_LOAD + k) for a, v in enumerate(mwords[q])]
    return ""


def row_multipliers(lin, cfg) -> tuple:
    """A projection's per-row requantizer multipliers (m, sh), the golden's (lowbit.sim.golden's runner): an FP4
    projection's tensor scale folded in (sim.golden_fp4.fp4_row_multipliers with fp4.frac_bits), a ternary
    one's wscale (sim.golden.linear_multipliers)."""
    from lowbit.sim.golden import linear_multipliers
    from lowbit.sim.golden_fp4 import fp4_row_multipliers

    return fp4_row_multipliers(lin.fp4, cfg.fp4.frac_bits) if lin.fp4 is not None else linear_multipliers(lin)


def pack_mult(m, sh) -> int:
    """A multiplier word (lowbit.rtl.sfu_stream_requant.mult_word): lane j's m in its low MULT_BITS, sh above."""
    from lowbit.sim.numerics.requant import MULT_BITS

    lb = mult_word(1).size
    return sum((int(a) | int(b) << MULT_BITS) << (lb * j) for j, (a, b) in enumerate(zip(m, sh, strict=True)))


def write_masked(shadow: dict[int, int], word: int, mask: int, data: int, lanes: int) -> None:
    """A recorded Q7.8 word write with a write enable per element: element j (int16, bits 16j..) of `data` goes
    to shadow[word x lanes + j] where bit j of `mask` is set."""
    for j in range(lanes):
        if mask >> j & 1:
            v = (data >> (16 * j)) & 0xFFFF
            shadow[word * lanes + j] = v - (1 << 16) if v >> 15 else v


def replay(writes: list, lanes: int, expect: list, keep: dict | None = None) -> list[tuple[str, int, int]]:
    """The requantizers' recorded bank writes (cycle, dst, enables, addresses, masks, data per bank) replayed in
    time order into each Q7.8 buffer, checked against `expect` (name, dst, the golden's [T, out] outputs) one
    projection after the other per dst, each complete when T x out elements were written (at the elements'
    addresses, an optional 4th [T, out] array, else token t's row from word t x ceil(out / lanes)): (name,
    elements written, elements differing from the golden, missing elements included). `keep`: name -> the
    values written ([T, out], missing elements 0), for the projections named in it."""
    from collections import defaultdict

    import numpy as np

    queue: dict[int, list] = defaultdict(list)
    for e in expect:
        queue[e[1]].append(e)
    shadow: dict[int, dict[int, int]] = defaultdict(dict)
    res = []
    for _, dst, en, addrs, masks, datas in sorted(writes, key=lambda x: x[0]):
        for b in (0, 1):
            if not en >> b & 1:
                continue
            write_masked(shadow[dst], 2 * addrs[b] + b, masks[b], datas[b], lanes)
        while queue[dst]:
            name, _, out, *at = queue[dst][0]
            tok, width = out.shape
            stride = -(-width // lanes) * lanes
            if len(shadow[dst]) < tok * width:
                break
            bad = sum(shadow[dst].get(int(at[0][t, c]) if at else t * stride + c) != int(out[t, c])
                      for t in range(tok) for c in range(width))
            res.append((name, len(shadow[dst]), bad))
            if keep is not None and name in keep:
                keep[name] = np.array([[shadow[dst].get(t * stride + c, 0) for c in range(width)] for t in range(tok)])
            shadow[dst] = {}
            queue[dst].pop(0)
    for dst, left in queue.items():
        res += [(e[0], len(shadow[dst]) if k == 0 else 0, e[2].size) for k, e in enumerate(left)]
    return res
