"""cocotb chip bench: loads a program's instruction words into the chip (lowbit.rtl.chip), serves its
memory port with the simulator's DRAM model and records every instruction's start and end cycle per queue.

DRAM model behind the port: lowbit.sim.dram.dram_access with the config's parameters (dram_params), fed one
call per request in **tag order** (program order among all DMA instructions): a request that arrives
before an earlier-tagged one waits in the model until that one has arrived, as the simulator's DRAM model
sees its requests in program order (docs/isa.md "Causality"). A request's time is the cycle it crosses
the port (its lane valid, ready high: the bench keeps ready high); its completion E = ceil(done) (at least its
arrival), and its response is driven in cycle E - 1, so the chip shows it completed in cycle E. A
response that would be due before the bench could drive it is counted in `late`; more due responses
than lanes in one cycle in `lane_overflow`.

Read data (with the chip's data path, job["data"]): a weight read's bytes come from the DRAM image (runs
of packed weight row groups at their DRAM addresses, lowbit.rtl.chip_golden) as data beats of `banks` weight-buffer units on the port's one data-beat
channel, in the latest free cycles from the cycle after the request crossed the port up to its response
cycle E - 1 (every beat before the completion); a read whose beats do not fit there is counted in
`data_late`. The act buffer's contents are written through the load port: seeded contents before `start`;
a model's (job["data"]["act_writes"], lowbit.rtl.chip_model) during the run, one word a cycle from the
cycle after the bench sees the SFU word that produces them start (`sfu_queue`), in place of the SFU's
output stream; a word whose last write is not before its SFU instruction's end is counted in `act_late`.
Every psum word an engine writes (`pv_<q>`, `pw_<q>`: TINT and BoothFlex) is recorded in order.

Write data (job["data"]["kv_write"], lowbit.rtl.chip_kv): each dma_kv write's beats (`wdata_valid`, `wdata_id`,
`wdata`) are gathered by the write's id; once its `nbytes` have come they go into the DRAM image (where a
segment holds those addresses) and are recorded (`kv_writes`); a beat after its write's response, or of no
open write, is counted in `wdata_late`. A read served while an earlier-tagged write to its bytes is still
open waits for that write's last beat, then takes the image's bytes (its timing unchanged).

Sampling (cocotb ReadOnly after each rising edge, cycle c = the chip's `cycle`): `pc_<q>` rising from a to
b means instructions a..b-1 started in cycle c - 1; on a compute queue `count_<q>` rising means they ended
in cycle c; on a DMA queue `dfin_<q>` bit i means the request in completion-table slot i, request
dbase + ((i - dbase) mod table), ended in cycle c; `join_done` bit k means join `join_head + k` ended (and
started) in cycle c.
"""

from __future__ import annotations

import bisect
import json
import math
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, ReadOnly, RisingEdge


def _lanes(mask: int) -> list[int]:
    """Indices of the set bits of a per-lane valid/done mask, lowest first."""
    return [k for k in range(mask.bit_length()) if mask >> k & 1]


def _place_beats(dslot: dict, rid: int, data: bytes, beat_bytes: int, lo: int, hi: int,
                 placed: list | None = None) -> int:
    """Put a read's data beats on the data channel: in the latest free cycles of lo .. hi (its response
    cycle), in order; if they do not fit, from lo on in the first free cycles (some after the response:
    returns 1, the read is late). `placed` collects the beats' cycles."""
    beats = [int.from_bytes(data[i:i + beat_bytes], "little") for i in range(0, len(data), beat_bytes)]
    free = [c for c in range(hi, lo - 1, -1) if c not in dslot][:len(beats)]
    late = len(free) < len(beats)
    if late:
        free, c = [], lo
        while len(free) < len(beats):
            if c not in dslot:
                free.append(c)
            c += 1
    for c, b in zip(sorted(free), beats, strict=True):
        dslot[c] = (rid, b)
    if placed is not None:
        placed += free
    return int(late)


def _image_bytes(dram: list, starts: list, addr: int, n: int) -> bytes:
    """`n` bytes of the DRAM image at `addr` (inside one of its segments)."""
    seg = bisect.bisect_right(starts, addr) - 1
    off = addr - starts[seg]
    return dram[seg][1][off:off + n]


def _drive(slots: dict, cyc: int, was: bool, sampled: bool, valid, *fields) -> bool:
    """Drive this cycle's entry of `slots` (cycle -> the fields' values) with `valid` high, or lower `valid` in
    the cycle after one that was driven (`was`); whether this cycle drives one."""
    x = slots.pop(cyc, None)
    if x is not None or was:
        assert not sampled
        valid.value = int(x is not None)
        for f, v in zip(fields, x if x is not None else (), strict=False):
            f.value = v
    return x is not None


def _job() -> dict:
    with open(os.environ["LOWBIT_BENCH_JOB"]) as f:
        return json.load(f)


@cocotb.test()
async def chip_run(dut):
    import numpy as np

    from lowbit.sim.config import load_hw
    from lowbit.sim.dram import dram_access, dram_params, new_dram_state

    job = _job()
    cfg = load_hw(job["hw"], job["sets"])
    params, state = dram_params(cfg), new_dram_state(cfg)
    names = job["queues"]
    words = job["words"]
    lanes = job["resp_lanes"]
    nq = len(names)
    ncnt = nq - 1
    lengths = [len(w) for w in words]
    limit = int(job["max_cycles"])

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.start.value = 0
    dut.load_en.value = 0
    dut.mem__req_ready.value = 1
    dut.mem__resp_valid.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    fj = job["ifetch"]  # the instruction port (lowbit.rtl.chip_fetch): the rings' first words, then requests
    for q, ws in enumerate(words):  # the loader: one word per cycle
        for i, w in enumerate(ws[:fj["depths"][q]]):
            dut.load_en.value = 1
            dut.load_queue.value = q
            dut.load_addr.value = i
            dut.load_word.value = int(w)
            await RisingEdge(dut.clk)
    dj = job.get("data")
    if dj:  # the act buffer's contents, through the load port
        for q_, i, w in [(0, i, w) for i, w in enumerate(dj["act"])] + \
                [(sel, a, w) for a, w, sel in dj.get("sfu_preload", [])]:  # ... and the SFU's buffers
            dut.load_en.value = 1
            dut.load_queue.value = dj["act_queue"] + q_
            dut.load_addr.value = i
            dut.load_word.value = int(w)
            await RisingEdge(dut.clk)
        dut.mem__rdata_valid.value = 0
    dut.load_en.value = 0
    await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)
    dut.start.value = 1
    await RisingEdge(dut.clk)  # start is sampled here: the next cycle is run cycle 0
    dut.start.value = 0

    nt = int(job["dma_table"])
    dmaq = {names.index(n): (getattr(dut, f"dbase_{n}"), getattr(dut, f"dfin_{n}")) for n in job["dma_queues"]}
    pc_h = [getattr(dut, f"pc_{n}") for n in names[:-1]]
    cnt_h = [getattr(dut, f"count_{n}") for n in names[:-1]]
    start = [[-1] * n for n in lengths]
    end = [[-1] * n for n in lengths]
    pc_prev = [0] * ncnt
    cnt_prev = [0] * ncnt
    pending: dict[int, tuple] = {}   # tag -> (arrival, id, addr, nbytes, wr, dcls)
    next_tag = 0
    due: dict[int, list[int]] = {}   # drive cycle -> response ids
    late = overflow = 0
    joins_done = 0
    id_w = job["id_bits"]
    f = job["req_fields"]
    req_bits = job["req_bits"]
    ev_h = dut.event
    cyc = 0  # run cycle of the current sample (0: the cycle after the edge that sampled start)
    driven = False
    # read data (module docstring): cycle -> (id, beat) on the one data-beat channel
    dslot: dict[int, tuple[int, int]] = {}
    ddriven = False
    data_late = 0
    dram = sorted((int(a), bytearray.fromhex(h)) for a, h in dj["dram"].items()) if dj else []
    starts = [a for a, _ in dram]
    beat_bytes = dj["banks"] * dj["unit_bytes"] if dj else 0
    psum_h = [(n, getattr(dut, f"pv_{n}"), getattr(dut, f"pw_{n}"), *dj["fmt"][n]) for n in dj["engines"]] \
        if dj else []
    psum: dict[str, list] = {h[0]: [] for h in psum_h}
    rq_h = [(n, *(getattr(dut, f"{k}_{n}") for k in ("qv", "qd", "qa0", "qa1", "qm0", "qm1", "qw0", "qw1")))
            for n in dj.get("rq", [])] if dj else []
    rq_words: dict[str, list] = {h[0]: [] for h in rq_h}  # each requantizer's bank writes (chip_requant.replay)
    act_writes = {int(i): v for i, v in dj.get("act_writes", {}).items()} if dj else {}
    sfu_q = dj.get("sfu_queue", -1) if dj else -1
    aslot: dict[int, tuple[int, int, int]] = {}  # cycle -> (load queue, address, word) through the load port
    # the engines' write ports the bench records each cycle: (valid, the fields recorded, their list in order)
    taps: list[tuple] = []

    def tap(on, valid: str, *fields: str) -> list[list[int]]:
        out: list[list[int]] = []
        if on:
            taps.append((getattr(dut, valid), [getattr(dut, f) for f in fields], out))
        return out

    sfu_on = bool(dj and dj.get("sfu_data"))
    sfu_words = tap(sfu_on, "sv", "sa", "sw")  # the SFU quantize engine's act buffer writes, (address, word)
    norm_words = tap(sfu_on, "nv", "na", "nw")  # the RMSNorm engine's Q7.8 writes and its amax writes
    amax_words = tap(sfu_on, "mv", "ma", "mw")
    res_words = tap(sfu_on, "rv", "ra", "rw")  # the residual engine's Q7.8 writes
    act_words = tap(sfu_on, "fv", "fa", "fw")  # the gating engine's Q7.8 writes
    gather = dj.get("gather", {}) if dj else {}  # embedding reads: request tag -> its rows' DRAM addresses
    embed_on = bool(dj and dj.get("embed"))  # the embedding writer's beats into X and its rows' S
    ex = tap(embed_on, "ex_v", "ex_a", "ex_w")
    es = tap(embed_on, "es_v", "es_a", "es_w")
    av_on = bool(dj and dj.get("av"))  # the attention output's X and S writes (lowbit.rtl.chip_av)
    avx = tap(av_on, "avx_v", "avx_a", "avx_m", "avx_w")
    avs = tap(av_on, "avs_v", "avs_a", "avs_w")
    rope_on = bool(dj and dj.get("rope"))  # the RoPE engine's quantized queries, keys, row amax (lowbit.rtl.chip_rope)
    rope_w = {"rope_q8": tap(rope_on, "hv", "ha", "hw"), "rope_k8": tap(rope_on, "hkv", "hka", "hkw"),
              "rope_amax": tap(rope_on, "hsv", "hsk", "hsr", "hsa")}
    sfu_writes = {int(i): v for i, v in dj.get("sfu_writes", {}).items()} if dj else {}
    sfu_last: dict[tuple[int, int], tuple[int, int]] = {}  # (SFU word, group) -> (the word the group's writes
    # precede, its last write's cycle)
    adriven = False
    act_last: dict[int, int] = {}  # SFU word -> cycle of its last act write
    kv_checks = {tuple(int(x) for x in k.split(",")): v for k, v in dj.get("kv_checks", {}).items()} if dj else {}
    kdrive: dict[int, int] = {}           # cycle -> kv buffer read address
    ksample: dict[int, list[int]] = {}    # cycle -> the units the kv read port shows
    kv_chunks = kv_units = kv_bad = 0
    data_engines = (0, 1) if dj and dj.get("kv_data") else (0,)
    # the LOP engine (lowbit.rtl.chip_lop.lop_plan): load-port writes of a group's query rows and LO codes once
    # every word they follow has started; its index FIFO writes and done strobes as recorded
    lop = dj.get("lop") if dj else None
    lop_need = [len(e["after"]) for e in lop["writes"]] if lop else []
    lop_wait: dict[tuple[int, int], list[int]] = {}
    for k, e in enumerate(lop["writes"] if lop else []):
        for q_, i_ in e["after"]:
            lop_wait.setdefault((q_, i_), []).append(k)
    lop_last: dict[int, int] = {}
    fill_cyc = {f[0]: [] for f in lop.get("fills", [])} if lop else {}  # LO-code read tag -> its beats' cycles
    lop_idx: list[list] = []
    lop_sdone: list[int] = []
    lop_done: list[int] = []
    # the softmax engine (lowbit.rtl.chip_softmax): its scores, row max and amax_v through the load port from the
    # cycle after its Q K^T tile starts; its INT8 probability and scale writes as recorded
    sm = dj.get("sm") if dj else None
    sm_wait: dict[tuple[int, int], list[tuple[str, int]]] = {}  # ... and the score stage's key scales (chip_scores)
    for kind in ("writes", "sc"):
        for k, e in enumerate(sm[kind] if sm else []):
            sm_wait.setdefault(tuple(e["after"]), []).append((kind, k))
    sm_last: dict[tuple[str, int], int] = {}
    sm_act = tap(sm, "smv", "sma", "smw")
    sm_wa = tap(sm, "swv", "swa", "sww")
    sc_rec = tap(sm and sm["sc_on"], "scv", "scv", "scr", "scj", "scy", "sce", "scm")
    kv_ind = kv_ind_bad = 0  # dma_kv's words issued with the index FIFO's address, those not one run
    # the KV writes' data (lowbit.rtl.chip_kv): id -> [tag, address, bytes, data so far]; a read overlapping an
    # earlier write still open waits for its data: [tag, id, address, bytes, its response cycle]; a write's entry
# gets its response's cycle once the DRAM model has timed it
    kvw_on = bool(dj and dj.get("kv_write"))
    vq_amax = tap(dj and dj.get("vq"), "vqv", "vqa", *(("vqs",) if dj and dj.get("vqs") else ()))  # the V
    # quantizer's rows' amax and, without the scale memory, scale index (lowbit.rtl.chip_vquant)
    ks_on = bool(dj) and hasattr(dut, "ksv")  # the key-scale writes with their cycle (lowbit.rtl.chip_kscales)
    ks_rec: list[list[int]] = []
    wopen: dict[int, list] = {}
    rwait: list[list] = []
    kv_writes: list[list] = []
    wdata_late = 0
    fnext = list(fj["depths"])  # per queue: the next word the port sends
    islot: dict[int, tuple[int, int]] = {}  # cycle -> (queue, beat) on the instruction port's response
    idriven = False
    grants: list[list[int]] = []
    first = True
    skip_to = None  # after a quiet sample: wake at the next due response or the next event, whichever first
    while True:
        sampled = False
        if skip_to is not None:
            cc = ClockCycles(dut.clk, max(1, skip_to - cyc))
            got = await First(RisingEdge(ev_h), cc)
            if got is cc:
                cyc = skip_to
            else:  # an event before the next due response: nothing to drive in this cycle
                await ReadOnly()
                cyc = int(dut.cycle.value)
                sampled = True
            skip_to = None
        elif not first:
            await RisingEdge(dut.clk)
            cyc += 1
        # drive this cycle's responses (decided from earlier samples)
        ids = due.pop(cyc, [])
        if len(ids) > lanes:
            overflow += 1
            due.setdefault(cyc + 1, []).extend(ids[lanes:])
            ids = ids[:lanes]
        if ids or driven:
            assert not sampled
            dut.mem__resp_valid.value = (1 << len(ids)) - 1
            dut.mem__resp_id.value = sum(i << (k * id_w) for k, i in enumerate(ids))
            driven = bool(ids)
        ddriven = _drive(dslot, cyc, ddriven, sampled, dut.mem__rdata_valid, dut.mem__rdata_id, dut.mem__rdata)
        idriven = _drive(islot, cyc, idriven, sampled, dut.if_rv, dut.if_rq, dut.if_rw)
        ka = kdrive.pop(cyc, None)
        if ka is not None:
            assert not sampled
            dut.kv_raddr.value = ka
        adriven = _drive(aslot, cyc, adriven, sampled, dut.load_en, dut.load_queue, dut.load_addr, dut.load_word)
        if not sampled:
            await ReadOnly()
        if first:
            first = False
            assert int(dut.cycle.value) == 0, "bench and chip disagree on run cycle 0"
        want = ksample.pop(cyc, None)
        if want is not None:  # a K/V chunk's units on the kv read port (address driven in the cycle before)
            x, ub = int(dut.kv_rdata.value), 8 * dj["unit_bytes"]
            for j, u in enumerate(want):
                kv_units += 1
                kv_bad += (x >> (j * ub)) & ((1 << ub) - 1) != u
        if not int(ev_h.value):
            if cyc > limit:
                break
            if not driven and not ddriven and not adriven and not idriven:  # driven lanes are cleared first
                skip_to = min(min(due, default=limit + 1), min(dslot, default=limit + 1),
                              min(aslot, default=limit + 1), min(kdrive, default=limit + 1), min(islot, default=limit + 1),
                              min(ksample, default=limit + 1), limit + 1)
            continue
        if int(dut.if_req.value):  # a request: its word's beats after the port's latency, LSB first
            q = int(dut.if_q.value)
            i, nb, bits = fnext[q], fj["beats"][q], fj["bits"]
            w = int(words[q][i]) if i < len(words[q]) else 0  # past the queue's end: invalid words
            for j in range(nb):
                islot[cyc + fj["latency"] + j] = (q, (w >> (j * bits)) & ((1 << bits) - 1))
            fnext[q] += 1
            grants.append([cyc, q])
        for q in range(ncnt):
            p = int(pc_h[q].value)
            if p != pc_prev[q]:
                for i in range(pc_prev[q], p):
                    start[q][i] = cyc - 1
                    if q == sfu_q and i in act_writes:  # its act words, one a cycle from the next cycle
                        c = cyc + 1
                        for x in act_writes[i]:  # (address, word[, load queue past the act buffer's])
                            while c in aslot:
                                c += 1
                            aslot[c] = (dj["act_queue"] + (x[2] if len(x) > 2 else 0), x[0], x[1])
                            act_last[i] = c
                            c += 1
                    if q == sfu_q and i in sfu_writes:  # a later norm's input, after this word's act words
                        c = max(act_last.get(i, cyc), cyc) + 1
                        for g, (dl, ws) in enumerate(sfu_writes[i]):
                            for a, w, sel in ws:
                                while c in aslot:
                                    c += 1
                                aslot[c] = (dj["act_queue"] + sel, a, w)
                                sfu_last[(i, g)] = (dl, c)
                                c += 1
                    for k in lop_wait.get((q, i), []):
                        lop_need[k] -= 1
                        if not lop_need[k]:
                            c = cyc + 1
                            for sel, a, w in lop["writes"][k]["w"]:
                                while c in aslot:
                                    c += 1
                                aslot[c] = (dj["act_queue"] + sel, a, w)
                                lop_last[k] = c
                                c += 1
                    for kind, k in sm_wait.get((q, i), []):
                        c = cyc + 1
                        for a, w in sm[kind][k]["w"]:
                            while c in aslot:
                                c += 1
                            aslot[c] = (dj["act_queue"] + sm["off"], a, w)
                            sm_last[(kind, k)] = c
                            c += 1
                    if (q, i) in kv_checks:  # read its K/V chunk back: a beat of units a cycle
                        a0, n, hx = kv_checks[(q, i)]
                        b = bytes.fromhex(hx)
                        ubytes, nb = dj["unit_bytes"], dj["banks"]
                        units = [int.from_bytes(b[j:j + ubytes], "little") for j in range(0, len(b), ubytes)]
                        kv_chunks += 1
                        c = cyc + 1
                        for r in range(0, n, nb):
                            while c in kdrive:
                                c += 1
                            kdrive[c] = (a0 + r) % dj["k_depth"]
                            ksample[c + 1] = units[r:r + nb]
                            c += 1
                pc_prev[q] = p
            c = int(cnt_h[q].value)
            if q in dmaq:  # requests complete out of order: per request
                fin = int(dmaq[q][1].value)
                if fin:
                    base = int(dmaq[q][0].value)
                    for i in _lanes(fin):
                        end[q][base + (i - base) % nt] = cyc
            elif c != cnt_prev[q]:
                for i in range(cnt_prev[q], c):
                    end[q][i] = cyc
            cnt_prev[q] = c
        for n, pv, pw, planes, acc_bits in psum_h:  # a psum word written this cycle
            if int(pv.value):
                x = int(pw.value)
                acc = [(x >> (lane * acc_bits)) & ((1 << acc_bits) - 1) for lane in range(planes)]
                psum[n].append([[a - (1 << acc_bits) if a >> (acc_bits - 1) else a for a in acc],
                                x >> (planes * acc_bits)])
        for n, v, d, a0, a1, m0, m1, w0, w1 in rq_h:
            en = int(v.value)
            if en:
                rq_words[n].append([cyc, int(d.value), en, [int(a0.value), int(a1.value)],
                                    [int(m0.value), int(m1.value)], [int(w0.value), int(w1.value)]])
        for valid, fields, out in taps:
            if int(valid.value):
                out.append([int(f.value) for f in fields])
        if ks_on and int(dut.ksv.value):
            ks_rec.append([cyc, int(dut.ksi.value), int(dut.ksa.value)])
        if lop:
            if int(dut.lop_ov.value):
                x, n_ = int(dut.lop_oi.value), int(dut.lop_on.value)
                lop_idx.append([cyc, [(x >> (k * lop["count_bits"])) & ((1 << lop["count_bits"]) - 1)
                                      for k in range(n_)]])
            if int(dut.lop_sdone.value):
                lop_sdone.append(cyc)
            if int(dut.lop_done.value):
                lop_done.append(cyc)
            kv_ind += bin(int(dut.kv_ind.value)).count("1")
            kv_ind_bad += int(dut.kv_ind_bad.value)
        jd = int(dut.join_done.value)
        if jd:
            h = int(dut.join_head.value)
            for k in _lanes(jd):
                start[-1][h + k] = end[-1][h + k] = cyc
                joins_done += 1
        rv = int(dut.mem__req_valid.value)
        if rv:
            r = int(dut.mem__req.value)
            for k in _lanes(rv):
                x = r >> (k * req_bits)
                vals = {name: (x >> lo) & ((1 << w) - 1) for name, (lo, w) in f.items()}
                pending[vals["tag"]] = (cyc, vals["id"], vals["addr"], vals["nbytes"], vals["wr"], vals["dcls"])
                if kvw_on and vals["wr"] and vals["id"] >> dj["engine_bit"] == 1:
                    wopen[vals["id"]] = [vals["tag"], vals["addr"], vals["nbytes"], bytearray()]
            while next_tag in pending:  # the DRAM model sees requests in tag order
                t, rid, addr, nb, wr, dc = pending.pop(next_tag)
                done = dram_access(params, state, np.int64(addr), np.int64(nb), float(t), wr != 0, np.int64(dc))
                e = max(int(math.ceil(done)), t)
                if e - 1 < cyc + 1:
                    late += 1
                due.setdefault(max(e - 1, cyc + 1), []).append(rid)
                if wr and rid in wopen and wopen[rid][0] == next_tag:  # its response's cycle: the beats' deadline
                    wopen[rid].append(max(e - 1, cyc + 1))
                seg = bisect.bisect_right(starts, addr) - 1
                if str(next_tag) in gather:  # the step's input rows: the table's rows at its token ids
                    rows = b"".join(_image_bytes(dram, starts, a, dj["row_bytes"]) for a in gather[str(next_tag)])
                    data_late += _place_beats(dslot, rid, rows, beat_bytes, cyc + 1, e - 1)
                elif dj and not wr and rid >> dj["engine_bit"] in data_engines and seg >= 0 \
                        and addr + nb <= starts[seg] + len(dram[seg][1]):
                    if any(w[0] < next_tag and w[1] < addr + nb and addr < w[1] + w[2] for w in wopen.values()):
                        rwait.append([next_tag, rid, addr, nb, e])
                    else:
                        off = addr - starts[seg]
                        data_late += _place_beats(dslot, rid, bytes(dram[seg][1][off:off + nb]), beat_bytes, cyc + 1,
                                                  e - 1, fill_cyc.get(next_tag))
                next_tag += 1
        if kvw_on and int(dut.mem__wdata_valid.value):  # a write-data beat: its bytes once all have come
            wid = int(dut.mem__wdata_id.value)
            w = wopen.get(wid)
            if w is None:  # a beat of no open write
                wdata_late += 1
            else:
                w[3] += int(dut.mem__wdata.value).to_bytes(beat_bytes, "little")
            if w is not None and len(w[3]) >= w[2]:
                del wopen[wid]
                _, a, n_, body = w[:4]
                wdata_late += len(w) > 4 and cyc > w[4]  # its last beat after its response
                kv_writes.append([a, bytes(body[:n_]).hex()])
                seg = bisect.bisect_right(starts, a) - 1
                if seg >= 0 and a + n_ <= starts[seg] + len(dram[seg][1]):
                    dram[seg][1][a - starts[seg]:a - starts[seg] + n_] = body[:n_]
        for x in list(rwait):  # the reads no earlier write still open overlaps: their beats from the image
            t_, rid, addr, nb, e = x
            if any(w[0] < t_ and w[1] < addr + nb and addr < w[1] + w[2] for w in wopen.values()):
                continue
            rwait.remove(x)
            seg = bisect.bisect_right(starts, addr) - 1
            off = addr - starts[seg]
            data_late += _place_beats(dslot, rid, bytes(dram[seg][1][off:off + nb]), beat_bytes, cyc + 1, e - 1,
                                      fill_cyc.get(t_))
        if cnt_prev == lengths[:-1] and joins_done == lengths[-1]:
            break
        if cyc > limit:
            break
    data_late += len(rwait)  # reads whose data never came
    act_late = sum(c >= end[sfu_q][i] for i, c in act_last.items()) + len(set(act_writes) - set(act_last))
    act_late += sum(start[sfu_q][j] < 0 or c >= start[sfu_q][j] for j, c in sfu_last.values()) \
        + sum(len(v) for v in sfu_writes.values()) - len(sfu_last)
    lopq = lop["queue"] if lop else -1
    lop_late = sum(lop_last.get(k, 1 << 62) >= start[lopq][e["before"]] or start[lopq][e["before"]] < 0
                   for k, e in enumerate(lop["writes"])) if lop else 0
    # an LO-code read's beats go into the code memory the previous group's scorer reads up to its lop_score
    # word's end, and must all be in before its own lop_score word starts (chip_lop.lop_read_beats)
    lop_late += sum(not fill_cyc[t] or (j >= 0 and min(fill_cyc[t]) < end[lopq][j]) or max(fill_cyc[t]) >= start[lopq][i]
                    or start[lopq][i] < 0 for t, i, j in lop.get("fills", [])) if lop else 0
    sm_late = sum(sm_last.get(("writes", k), 1 << 62) >= start[sfu_q][e["before"]] or start[sfu_q][e["before"]] < 0
                  for k, e in enumerate(sm["writes"])) if sm else 0
    sc_late = sum(sm_last.get(("sc", k), 1 << 62) >= start[e["before"][0]][e["before"][1]]
                  or start[e["before"][0]][e["before"][1]] < 0 for k, e in enumerate(sm["sc"])) if sm else 0
    res = {"sm_act": sm_act, "sm_wa": sm_wa, "sm_late": sm_late, "sc": sc_rec, "sc_late": sc_late, "kv_ind": kv_ind, "kv_ind_bad": kv_ind_bad, "lop_idx": lop_idx, "lop_sdone": lop_sdone, "lop_done": lop_done, "lop_late": lop_late,
           "lop_fill_beats": sum(len(v) for v in fill_cyc.values()),
           "queues": names, "start": start, "end": end, "cycles": cyc, "late": late, "lane_overflow": overflow,
           "psum": psum, "sfu": sfu_words, "norm": norm_words, "amax": amax_words, "res": res_words, "rq": rq_words, "act": act_words, "avx": avx, "avs": avs, "ex": ex, "es": es, "data_late": data_late, "act_late": act_late, "kv_chunks": kv_chunks,
           "kv_units": kv_units, "kv_mismatches": kv_bad + sum(len(v) for v in ksample.values()),
           "finished": cnt_prev == lengths[:-1] and joins_done == lengths[-1], "dram_requests": next_tag, **rope_w,
           "kv_writes": kv_writes, "ifetch": grants, "vq": vq_amax, "ks": ks_rec, "wdata_late": wdata_late + len(wopen)}
    tmp = job["result"] + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(res, fh)
    os.replace(tmp, job["result"])
