"""Run a program on the chip RTL and compare it with `lowbit sim --program`: `verify_chip` builds the chip's
Verilog for the config (cached by content), builds it with Verilator (cached like the unit benches,
lowbit.rtl.cocotb_runner), runs the chip bench (lowbit.rtl.bench.chip_bench) and compares every
instruction's start and end cycle per queue with the simulator's schedule (lowbit.rtl.chip_image).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from collections import Counter
from itertools import accumulate
from pathlib import Path

from amaranth.lib.data import StructLayout

from lowbit.rtl.chip import (
    RING_OWNER,
    ChipParams,
    booth_data,
    chip_verilog,
    queue_kind,
    rq_engines,
    word_dims,
    word_kind,
)
from lowbit.rtl.chip_ctrl import pack_word, word_layout
from lowbit.rtl.chip_data import data_dims
from lowbit.rtl.chip_fetch import feed_schedule, ring_depth, word_beats
from lowbit.rtl.chip_golden import act_word, compare_psum, data_plan, segments
from lowbit.rtl.chip_image import ChipImage, QueueTimes, build_image, reference_schedule
from lowbit.rtl.chip_kv import kv_params, kv_preload, kv_result
from lowbit.rtl.chip_requant import RQ_LOAD
from lowbit.rtl.chip_result import ChipResult, QueueCompare
from lowbit.rtl.chip_sfu import sfu_data_ok
from lowbit.rtl.chip_softmax import sm_ok
from lowbit.rtl.common import COUNT_BITS, count_mismatches
from lowbit.sim.config import HwConfig
from lowbit.sim.errors import LowbitError
from lowbit.sim.program import ProgramError
from lowbit.sim.sched import MAXLIVE


def params_for(img: ChipImage, ref: list[QueueTimes] | None = None, data_banks: int = 0) -> ChipParams:
    """Chip parameters that run the image: counts wide enough for its longest queue (the instruction rings,
    lowbit.rtl.chip_fetch, do not depend on the program). Given the simulator's schedule `ref`, the structures the schedule
    fills are sized to it (powers of two): request lanes per DMA engine (`dma_issue`: the most requests one
    engine issues in one cycle; the simulator issues DMAs at no per-request cost), completion-table
    entries (`dma_table`: the most requests of one engine issued and not yet retired in order) and ring
    entries (`ring_entries`: the most live allocations of one ring, retired in allocation order). A chip
    with less issues later, which the bench reports as mismatches. Without `ref`: ChipParams' defaults and
    ring entries for the most allocations a ring can hold (capacity / smallest allocation). `data_banks`:
    the data path's weight banks (lowbit.rtl.chip_data.data_dims; 0 without the data path)."""
    seq_bits = max(16, _pow2(img.longest() + 1).bit_length() + 1)
    if ref is None:
        entries = 2  # the simulator holds at most sched.MAXLIVE live allocations per buffer
        while entries < min(img.ring_live, MAXLIVE):
            entries *= 2
        return ChipParams(seq_bits=seq_bits, ring_entries=entries, data_banks=data_banks)
    issue, table, live = schedule_needs(img, ref)
    return ChipParams(seq_bits=seq_bits, dma_issue=issue, dma_table=_pow2(table),
                      ring_entries=_pow2(live), data_banks=data_banks)


def _pow2(n: int) -> int:
    """The smallest power of two >= max(n, 2)."""
    return 1 << (max(n, 2) - 1).bit_length()


def schedule_needs(img: ChipImage, ref: list[QueueTimes]) -> tuple[int, int, int]:
    """(most requests one DMA engine issues in a cycle, most requests of one engine outstanding in its
    completion table, most live allocations of one ring) in the schedule `ref`. A table entry is free again
    the cycle after its request retires in order (the engine's retire register); a ring entry returns in the
    cycle its allocation and every earlier one of the ring are released (lowbit.rtl.chip_ring)."""
    from bisect import bisect_left, bisect_right

    issue = table = live = 1
    for q in img.dma_queues:
        st, en = ref[q].start, ref[q].end
        if not st:
            continue
        issue = max(issue, max(Counter(st).values()))
        ss, rs = sorted(st), sorted(accumulate(en, max))  # in-order retirement: the running latest end
        table = max(table, max(bisect_right(ss, t) - bisect_left(rs, t) for t in set(st)))
    allocs: dict[int, list[int]] = {}
    rel: dict[tuple[int, int], int] = {}
    for q, ws in enumerate(img.words):
        for i, w in enumerate(ws):
            if w["alloc_en"]:
                allocs.setdefault(w["buf"], []).append(ref[q].start[i])
            if w["free"]:
                rel[(w["free_buf"], w["free_slot"])] = ref[q].end[i]
    for b, iss in allocs.items():
        ss, rs = sorted(iss), sorted(accumulate((rel.get((b, k), 1 << 62) for k in range(len(iss))), max))
        live = max(live, max(bisect_right(ss, t) - bisect_right(rs, t) for t in set(iss)))
    return issue, table, live


def _sources_digest() -> str:
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(here.glob("*.py")):  # the chip top and every unit and stream engine it instantiates
        h.update(f.read_bytes())
    import amaranth

    h.update(amaranth.__version__.encode())
    return h.hexdigest()


def chip_verilog_cached(cfg: HwConfig, p: ChipParams) -> tuple[str, str]:
    """(Verilog text, content key) of the chip for cfg and p, converted once per key."""
    from lowbit.sim.atomic import atomic_write, locked
    from lowbit.sim.cache import cache_dir
    from lowbit.sim.program import config_hash

    key = hashlib.sha256(f"{_sources_digest()}|{config_hash(cfg).hex()}|{p}".encode()).hexdigest()[:20]
    d = cache_dir("verilog")
    f = d / f"chip-{key}.v"
    with locked(d / f".chip-{key}.lock"):
        if not f.exists():
            atomic_write(f, chip_verilog(cfg, p))
    return f.read_text(), key


def _build(cfg: HwConfig, p: ChipParams) -> tuple[Path, Path]:
    """Verilator build directory (cached by Verilog content) and the Verilog file."""
    from lowbit.rtl import cocotb_runner as cr

    v, _ = chip_verilog_cached(cfg, p)
    return cr.build_verilog_text(cr.find_simulator("verilator"), "chip", v, "lowbit_chip")


def _check_image(img: ChipImage, p: ChipParams) -> None:
    for buf, q in img.ring_queue.items():
        if RING_OWNER.get(buf) != q:
            raise ProgramError(f"the program fills ring '{buf}' from {q}; the chip's ring is filled by "
                               f"{RING_OWNER.get(buf, 'no DMA queue')}")
    if (img.longest() + 1 + (1 << p.addr_bits)).bit_length() >= p.seq_bits:
        raise ProgramError(f"a queue holds {img.longest()} instructions; the chip's {p.seq_bits}-bit instruction "
                           f"counts need {(img.longest() + 1 + (1 << p.addr_bits)).bit_length() + 1}: generate it "
                           f"with a larger ChipParams.seq_bits")


def _reads(p: ChipParams, cls: int) -> int:
    """Instruction words a queue's controller reads a cycle: a DMA engine's issue lanes, the join window, else 1."""
    kind = queue_kind(cls)
    return p.dma_issue if kind == "dma" else p.join_window if kind == "join" else 1


def _lop_word(name: str, i: int, w: dict, lp, plan) -> dict:
    """Word `i` of queue `name` with the LOP engine's fields: a LOP word's `eng`, `m`, `k` (chip_lop.lop_plan);
    a dma_kv word's `ind`, `nidx` and `plane`, an indirect one's `addr` the plane's row 0 (sim.kvcache.kv_addr:
    its rows' addresses come from the index FIFO)."""
    if name == "lop":
        return {**w, "eng": 0, "m": 0, "k": 0, "qrow": 0, **lp.fields.get(i, {})}
    if name != "dma_kv":
        return w
    if not w.get("ind"):
        return {**w, "ind": 0, "nidx": 0, "plane": 0}
    from lowbit.sim.isa import KV_BASE

    s = plan.model.spec
    plane = s.max_positions * s.head_dim
    lgv = (w["addr"] - KV_BASE) // plane  # (layer, KV head) x 2 + plane
    return {**w, "plane": lgv % 2, "addr": KV_BASE + lgv * plane}


def _rope_preload(rp, cfg: HwConfig, p: ChipParams, img: ChipImage) -> list:
    """The RoPE table's load-port writes before `start` (lowbit.rtl.chip_rope.rope_load)."""
    if rp is None:
        return []
    return [(a, v, RQ_LOAD + _nrq(cfg, p, img) + 3) for a, v in enumerate(rp.table)]


def _nrq(cfg: HwConfig, p: ChipParams, img: ChipImage) -> int:
    """The chip's requantizers with the SFU on data (their multiplier memories' load queues)."""
    kinds = [word_kind(n, c, True, booth_data(cfg), True) for n, c in zip(img.queues, img.classes, strict=True)]
    return len(rq_engines(cfg, p, img.queues, img.classes, kinds)) if not sfu_data_ok(cfg) else 0


def attn_note(cfg: HwConfig, plan) -> str:
    """Why BoothFlex's attention tiles (and so the score stage, the softmax and P V behind them) stay timers on a
    chip whose requantizers run (plan.rq_cover): BoothFlex has no data path (lowbit.rtl.chip_booth.booth_data:
    beside a TINT core, or on an FP4 design with act words a whole number of BoothFlex's), or the kv buffer
    holds no data (DataDims.k_depth 0); '' where Q K^T runs on data or there is no requantizer."""
    if plan is None or not plan.rq_cover or plan.qk[0]:
        return ""
    if not booth_data(cfg):
        return "BoothFlex has no data path on this design (lowbit.rtl.chip_booth.booth_data)" + (
            " and the kv buffer holds no data" if not plan.dims.k_depth else "")
    return "the kv buffer holds no data" if not plan.dims.k_depth else "no Q K^T tile fits the score stage's rules"


def compare(ref: list[QueueTimes], start: list[list[int]], end: list[list[int]]) -> list[QueueCompare]:
    """Per queue: how many instructions start or end at another cycle than in the simulator."""
    out = []
    for q, r in enumerate(ref):
        sm = em = mx = 0
        first = ""
        for i, (s0, e0) in enumerate(zip(r.start, r.end, strict=True)):
            s1, e1 = start[q][i], end[q][i]
            if s1 != s0 or e1 != e0:
                sm += s1 != s0
                em += e1 != e0
                mx = max(mx, abs(s1 - s0) if s1 >= 0 else 1 << 62, abs(e1 - e0) if e1 >= 0 else 1 << 62)
                if not first:
                    first = f"#{i}: sim {s0}->{e0}, chip {s1}->{e1}"
        out.append(QueueCompare(r.name, len(r.start), sm, em, mx, first))
    return out


def verify_chip(cfg: HwConfig, program: str | Path, hw: str, sets: list[str] | None = None,
                run_dir: str | Path | None = None, params: ChipParams | None = None, data: bool = True,
                seed: int = 0, contents: str = "model") -> ChipResult:
    """Run `program` (compiled for cfg, named `hw` with `sets` for the bench process) on the chip RTL and
    compare its schedule with the simulator's and, where the chip has the data path (`data` and a config
    and program it supports, lowbit.rtl.chip_golden.data_plan), every psum word with its golden.
    `contents` "model": the program's model with seeded weights and prompt (`seed`) through the
    whole-model golden (lowbit.rtl.chip_model: deployed weights, the golden's activations and
    accumulators), falling back to "seeded" (random weights and activations against sim.numerics; the
    result's `data_ref` says which and why) where the golden does not cover the program.
    `params`: the chip's sizes (default: params_for the program)."""
    from cocotb_tools.runner import get_runner

    from lowbit.rtl import cocotb_runner as cr
    from lowbit.rtl.chip_dma import request_layout
    from lowbit.sim.atomic import atomic_write, temp_dir
    from lowbit.sim.cache import cache_dir

    if contents not in ("model", "seeded"):
        raise LowbitError(f"contents '{contents}': the data path's contents are 'model' or 'seeded'")
    t0 = time.perf_counter()
    img = build_image(program, cfg)
    ref, sim_cycles = reference_schedule(program, cfg)
    plan, why, ref_note = None, "the data path is off", ""
    if data and contents == "model" and data_dims(cfg)[0] is not None:
        from lowbit.rtl.chip_model import model_contents
        from lowbit.sim.program_io import ProgramReader

        model, ref_note = model_contents(img, cfg, ProgramReader(program).header.meta, seed)
        if model is not None:
            plan, why = data_plan(img, cfg, seed, model)
            ref_note = why if plan is None else ""
    if data and plan is None:
        plan, why = data_plan(img, cfg, seed)
    if params is not None and not params.data_banks:
        plan, why = None, "the chip is generated without the data path"
    p = params if params is not None else params_for(img, ref, plan.dims.banks if plan else 0)
    if plan is not None and plan.mult_depth > p.mult_depth:
        if params is not None:
            raise LowbitError(f"the chip's requantizers hold {p.mult_depth} multiplier words, the program needs "
                              f"{plan.mult_depth}; generate it with ChipParams.mult_depth >= {plan.mult_depth}")
        p = dataclasses.replace(p, mult_depth=plan.mult_depth)
    if plan is not None and plan.emb_beats != p.embed_beats:
        if params is not None:
            raise LowbitError(f"the chip's embedding writer takes rows of {p.embed_beats} data beats, the program's "
                              f"are {plan.emb_beats}; generate it with ChipParams.embed_beats = {plan.emb_beats}")
        p = dataclasses.replace(p, embed_beats=plan.emb_beats)
    rp = plan.rope if plan is not None and plan.rope is not None and plan.rope.fields else None
    if rp is not None and params is None:
        p = dataclasses.replace(p, rope_depth=rp.depth, rope_beats=rp.beats)
    elif rp is not None and (p.rope_depth < rp.depth or p.rope_beats < rp.beats):
        raise LowbitError(f"the chip's RoPE table holds {p.rope_depth} words of {p.rope_beats}-word head rows, the "
                          f"program needs {rp.depth} of {rp.beats}; generate it with ChipParams.rope_depth >= "
                          f"{rp.depth} and rope_beats >= {rp.beats}")
    if plan is not None and plan.sc is not None:  # the Q K^T score stage's multiplier (lowbit.rtl.chip_scores)
        from lowbit.sim.golden import attn_multipliers

        p = dataclasses.replace(p, score_mult=attn_multipliers(plan.model.spec.head_dim)["qk"],
                                kgather=plan.sc.kg_depth)  # the gathered keys' recorder (chip_kscales)
    p = kv_params(plan, p, params is not None)
    lp = None
    if plan is not None and plan.model is not None and cfg.has("lop") and plan.dims.k_depth:
        from lowbit.rtl.chip_lop import fill_keys, lop_plan, lop_q_ok

        kinds = [word_kind(n, c, True, booth_data(cfg), not sfu_data_ok(cfg)) for n, c in zip(img.queues, img.classes,
                                                                                           strict=True)]
        nrq = len(rq_engines(cfg, p, img.queues, img.classes, kinds)) if not sfu_data_ok(cfg) else 0
        lp = lop_plan(img, cfg.lop, plan.model, RQ_LOAD + nrq, rp is not None and lop_q_ok(
            cfg, p.rope_beats, plan.model.spec.head_dim), frozenset(rp.fields) if rp is not None else frozenset(),
            fill_keys(plan.dims, plan.model.spec.head_dim) > 0)
        if lp is not None and lp.fields and params is None:
            p = dataclasses.replace(p, lop_grp=lp.grp, lop_hd=lp.hd, lop_depth=lp.depth, lop_qrows=lp.q_rows)
        elif lp is not None and lp.fields:
            lp.note, lp.fields, lp.writes, lp.expect = "the chip is generated without the LOP engine", {}, [], {}
    elif plan is not None and plan.model is not None and cfg.has("lop") and cfg.lop.enabled:
        from lowbit.rtl.chip_lop import LopPlan

        lp = LopPlan(0, 0, 0, note="the LOP words stay timers: the kv buffer holds no data on this config (the "
                                   "engine's index FIFO drives dma_kv's data path)")
    _check_image(img, p)
    bdir, vfile = _build(cfg, p)
    n_thr = img.n_thr
    dims = plan.dims if plan else None
    bd = plan is not None and booth_data(cfg)
    sd = plan is not None and not sfu_data_ok(cfg)
    lop_on = p.lop_grp > 0
    kinds = [word_kind(n, c, plan is not None, bd, sd, lop_on) for n, c in zip(img.queues, img.classes, strict=True)]
    wbits = [StructLayout.cast(word_layout(k, n_thr, len(img.dma_queues), p.seq_bits, word_dims(n, dims))).size
             for k, n in zip(kinds, img.queues, strict=True)]
    depths = [ring_depth(p, _reads(p, c)) for c in img.classes]
    ifetch = {"depths": depths, "beats": [word_beats(b, p.ifetch_bits) for b in wbits], "bits": p.ifetch_bits,
              "latency": p.ifetch_latency}
    words = [[pack_word(k, n_thr, p.seq_bits, _lop_word(n, i, w, lp, plan) if lop_on else w, word_dims(n, dims))
              for i, w in enumerate(ws)] for n, k, ws in zip(img.queues, kinds, img.words, strict=True)]
    djob = None
    if plan is not None:
        tq = list(plan.expect)
        djob = {"banks": dims.banks, "unit_bytes": dims.unit_bytes, "act_queue": len(img.queues),
                "act": [] if plan.act is None else [act_word(x) for x in plan.act],
                "act_writes": {str(i): plan.act_writes.get(i, []) + plan.av_writes.get(i, [])
                               for i in {*plan.act_writes, *plan.av_writes}}, "sfu_queue": plan.sfu_queue,
                "kv_checks": {f"{q},{i}": [a, n, b.hex()] for (q, i), (a, n, b) in plan.kv_checks.items()},
                "k_depth": dims.k_depth, "kv_data": bool(plan.kv_checks),
                "dram": {str(a): b.hex() for a, b in segments(plan.dram).items()},
                "engines": tq, "fmt": plan.fmt, "sfu_data": sd,
                "sfu_writes": {str(i): [[d, ws] for d, ws in gs] for i, gs in plan.sfu_writes.items()},
                "sfu_preload": plan.sfu_preload + _rope_preload(rp, cfg, p, img) + kv_preload(
                    plan if p.kvw_depth else None, _nrq(cfg, p, img)), "kv_write": bool(p.kvw_depth) and plan.kvw is not None, "vq": bool(p.kvw_depth and p.vquant[0]), "vqs": bool(p.kvw_depth and p.vquant[0]) and not (
                    sd and sm_ok(cfg, dims)), "rope": rp is not None, "rq": rq_engines(cfg, p, img.queues, img.classes, kinds) if sd else [],
                "sfu_lanes": cfg.sfu.lanes, "av": bool(plan.av_expect), "embed": bool(plan.emb_ops),
                "gather": {str(t): a for t, a in plan.emb_gather.items()}, "row_bytes": 2 * plan.model.spec.d_model
                if plan.model is not None else 0,
                "engine_bit": (p.dma_table - 1).bit_length(),
                "lop": {"writes": lp.writes, "queue": img.queues.index("lop"), "count_bits": COUNT_BITS,
                        "fills": [[img.words[img.queues.index("dma_kv")][r]["tag"], i, j] for r, i, j in lp.fills]}
                if lop_on else None}
        if sd and plan.sm is not None and plan.sm.fields:  # the softmax engine's memories (lowbit.rtl.chip_softmax)
            djob["sm"] = {"writes": plan.sm.writes, "off": RQ_LOAD + len(djob["rq"]) + 2,
                          "sc": plan.sc.writes if plan.sc is not None else [], "sc_on": plan.sc is not None,
                          "sc_lanes": cfg.booth.lanes}
    lay = request_layout(p.id_bits)
    req_fields = {name: (fld.offset, fld.width) for name, fld in lay}
    req_bits = lay.size
    limit = 2 * sim_cycles + 10_000

    def run_in(rdir: Path) -> dict:
        job = {"hw": hw, "sets": list(sets or []), "queues": list(img.queues), "words": words,
               "resp_lanes": p.resp_lanes, "id_bits": p.id_bits, "req_fields": req_fields, "req_bits": req_bits,
               "dma_queues": [img.queues[q] for q in img.dma_queues], "dma_table": p.dma_table,
               "max_cycles": limit, "data": djob, "ifetch": ifetch,
               "result": str(rdir / "result.json")}
        atomic_write(rdir / "job.json", json.dumps(job))
        runner = cr._in_group(get_runner("verilator"))
        log = rdir / "sim.log"
        try:
            runner.test(hdl_toplevel="lowbit_chip", hdl_toplevel_lang="verilog",
                        test_module="lowbit.rtl.bench.chip_bench", build_dir=bdir, test_dir=rdir,
                        results_xml=str(rdir / "results.xml"), log_file=log,
                        extra_env={"LOWBIT_BENCH_JOB": str(rdir / "job.json")})
        except (RuntimeError, SystemExit) as e:
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise LowbitError(f"chip bench failed to run ({e}); log {log}:\n{tail}") from None
        if not (rdir / "result.json").exists():
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise LowbitError(f"chip bench wrote no result; log {log}:\n{tail}")
        return json.loads((rdir / "result.json").read_text())

    if run_dir is None:
        runs = cache_dir("runs")
        with temp_dir(runs, "chip") as tmp:
            r = run_in(tmp)
            keep = Path(tempfile.mkdtemp(prefix="chip-", dir=runs))
            os.replace(tmp, keep)
    else:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        r = run_in(Path(run_dir))
    ref_lop = ref[img.queues.index("lop")] if "lop" in img.queues else None
    qc = compare(ref, r["start"], r["end"])
    feed = feed_schedule([x.start for x in ref], depths, ifetch["beats"], p.ifetch_latency, len(img.queues) - 1)
    sfu = (0, 0, 0, 0)
    if plan is not None and plan.sfu_expect:
        got = [tuple(x) for x in r.get("sfu", [])]
        want = plan.sfu_expect
        bad = count_mismatches(got, want)
        sfu = (len(plan.sfu_ops), len(want), plan.sfu_elems, bad)
    norm = (0, 0, 0, 0)
    if plan is not None and plan.norm_expect:
        bad = 0
        for key, want in (("norm", plan.norm_expect), ("amax", plan.amax_expect)):
            got = [tuple(x) for x in r.get(key, [])]
            bad += count_mismatches(got, want)
        norm = (len(plan.norm_ops), len(plan.norm_expect), plan.norm_elems, bad)
    res = (0, 0, 0, 0)
    if plan is not None and plan.res_expect:
        got = [tuple(x) for x in r.get("res", [])]
        bad = count_mismatches(got, plan.res_expect)
        res = (len(plan.res_ops), len(plan.res_expect), plan.res_elems, bad)
    if plan is not None:
        for q in qc:
            if q.name in plan.expect:
                q.data_words = len(plan.expect[q.name])
                q.data_mismatches = compare_psum(plan.expect[q.name], r["psum"][q.name])
    chip_cycles = max((e for q in r["end"] for e in q), default=0)
    notes = [f"{img.hulls} instructions wait on DMA requests that are not one run (they wait on its hull)"] \
        if img.hulls else []
    ref = ""
    if plan is not None:
        ref = (f"the whole-model golden (lowbit.sim.golden: {plan.model.spec.name}, seeded weights and prompt, "
               f"seed {seed})" if plan.model is not None else
               "sim.numerics on seeded weights and activations" + (f" (no whole-model golden: {ref_note})"
                                                                   if ref_note else ""))
    res = ChipResult(qc, sim_cycles, chip_cycles, bool(r["finished"]), int(r["late"]), int(r["lane_overflow"]),
                      int(r["dram_requests"]), time.perf_counter() - t0, vfile, notes, p,
                      int(r.get("data_late", 0)), why, ref, int(r.get("act_late", 0)),
                      plan.acc_buffers() if plan is not None else (0, 0, []), int(r.get("kv_chunks", 0)),
                      int(r.get("kv_units", 0)), int(r.get("kv_mismatches", 0)),
                      plan.qk if plan is not None else (0, 0, 0), sfu, norm, res)
    res.pv = plan.pv if plan is not None else (0, 0, 0)
    # the port's requests against the rule played on the chip's own schedule (a timing mismatch shows above)
    own = feed_schedule([[c if c >= 0 else 1 << 40 for c in q] for q in r["start"]], depths, ifetch["beats"],
                        p.ifetch_latency, len(img.queues) - 1)
    grants = [tuple(g) for g in r.get("ifetch", []) if g[0] <= own.end]
    res.feed = (feed.fetched, feed.busy, len(feed.late), feed.min_slack, count_mismatches(grants, own.grants))
    if plan is not None and plan.rq_expect:
        from lowbit.rtl.chip_requant import replay

        res.logits = {e[0]: None for e in plan.rq_expect if e[0].endswith(" lm_head")}
        res.rq = replay([x for v in r.get("rq", {}).values() for x in v], cfg.sfu.lanes, plan.rq_expect, res.logits)
    res.rq_drain = plan.rq_drain if plan is not None else []
    res.rq_refused = plan.rq_refused if plan is not None else []
    res.attn_note = attn_note(cfg, plan)
    if lp is not None:
        res.lop_note, res.lop_chip_q = lp.note, lp.chip_q
        if lop_on:
            from lowbit.rtl.chip_lop import lop_compare

            res.lop_engine = lop_compare(lp, ref_lop, r)
            res.lop_late = int(r.get("lop_late", 0))
            res.lop_fill = (len(lp.fills), int(r.get("lop_fill_beats", 0)))
            res.kv_ind = (sum(bool(w.get("ind")) for w in img.words[img.queues.index("dma_kv")]),
                          int(r.get("kv_ind", 0)), int(r.get("kv_ind_bad", 0)))
    if plan is not None and plan.model is not None:
        from lowbit.rtl.chip_model import lop_fetch_check

        res.lop = lop_fetch_check(img, plan.model)
    if plan is not None and plan.av_expect:
        from lowbit.rtl.chip_av import av_compare

        res.av = av_compare(plan.av_expect, r.get("avx", []), r.get("avs", []), cfg.sfu.lanes, cfg.booth.lanes)
    if plan is not None and plan.emb_ops:
        from lowbit.rtl.chip_embed import beat_words, embed_compare

        res.embed = (len(plan.emb_ops), len(plan.emb_expect_x), plan.emb_elems,
                     embed_compare(plan, r.get("ex", []), r.get("es", []), beat_words(dims, cfg.sfu.lanes), cfg.sfu.lanes))
    if plan is not None and plan.sm is not None:
        from lowbit.rtl.chip_scores import sc_compare
        from lowbit.rtl.chip_softmax import sm_compare

        res.sm = sm_compare(plan.sm, r)
        res.sc = sc_compare(plan.sc, r, cfg.booth.lanes)
        if plan.sc is not None:
            from lowbit.rtl.chip_kscales import ks_compare

            res.ks = ks_compare(plan, r)
    if rp is not None:
        from lowbit.rtl.chip_rope import rope_compare

        res.rope = rope_compare(rp, r)
    res.rope_bench = plan.rope.bench if plan is not None and plan.rope is not None else []
    res.kvw = kv_result(plan if p.kvw_depth else None, r)
    if plan is not None and plan.act_expect:
        got = [tuple(x) for x in r.get("act", [])]
        bad = count_mismatches(got, plan.act_expect)
        res.act = (len(plan.act_ops), len(plan.act_expect), plan.act_elems, bad)
    return res
