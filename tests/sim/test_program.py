"""The program format (lowbit.sim.program): a compiled program runs to exactly the SimResult of the lowered
workload, blocks encode and decode exactly, fields out of their width and bad programs (dependency cycle /
deadlock, buffer overflow, address out of range, unknown opcode, wrong version, truncated file) are refused
by the compiler and by the loader with one line, and docs/isa.md carries the generated field tables."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from lowbit.sim.compile import compile_program, disassemble, run_program
from lowbit.sim.config import load_config
from lowbit.sim.engine import simulate, unit_list
from lowbit.sim.isa import (
    B_KV,
    B_WEIGHT,
    C_BOOTH,
    C_DMAKV,
    C_DMAW,
    C_JOIN,
    C_LOP,
    C_TINT,
    COLS,
    D_KV,
    DEFAULT,
    EXT,
    KV_BASE,
    SUB,
)
from lowbit.sim.program import (
    BLOCK_HEADER,
    INSTR,
    LAYOUTS,
    RECORD,
    T_BLOCK,
    Context,
    ProgramError,
    Queues,
    decode_block,
    encode_block,
    layout_tables,
)
from lowbit.sim.program_io import ProgramReader, read_header, records
from lowbit.sim.sram import Buffers
from lowbit.sim.workloads import standard_trace

ROOT = Path(__file__).resolve().parents[2]


def _same(a, b) -> None:
    da, db = a.to_dict(), b.to_dict()
    da.pop("timing")
    db.pop("timing")
    assert da == db


@pytest.fixture(scope="module")
def tiny_prog(tmp_path_factory):
    path = tmp_path_factory.mktemp("prog") / "tiny.bin"
    st = compile_program(load_config("tiny"), standard_trace("bitnet-tiny", 8, 4), path)
    return path, st


@pytest.mark.parametrize("hw,model,kw", [
    ("tiny", "bitnet-tiny", {}),
    ("tiny", "bitnet-tiny", {"schedule": "inorder", "no_lop": True}),
    ("vitallm", "bitnet-tiny", {"lop_k": 4}),
])
def test_program_runs_to_the_same_result(tmp_path, hw, model, kw):
    """`sim --program` = `sim --model`: every cycle, stall, byte and activity counter (not just the total), and
    the per-op breakdown (critical paths through the same binding predecessors)."""
    from lowbit.sim.breakdown import Breakdown

    cfg = load_config(hw)
    tr = standard_trace(model, 8, 3)
    compile_program(cfg, tr, tmp_path / "p.bin", **kw)
    got = run_program(cfg, tmp_path / "p.bin", breakdown=Breakdown(tr.model.n_layers, unit_list(cfg)))
    want = simulate(cfg, standard_trace(model, 8, 3), breakdown=Breakdown(tr.model.n_layers, unit_list(cfg)), **kw)
    _same(want, got)
    assert got.breakdown is not None
    assert got.cycles > 0 and got.instructions > 0


def test_streaming_reuses_layer_blocks(tiny_prog):
    """Both decoder layers of a step place one block (DRAM bases differ by one layer's weights)."""
    path, st = tiny_prog
    assert (st.steps, st.chunks) == (5, 20)  # prefill + 4 decode steps; embed, 2 layers, final norm each
    assert st.blocks < st.chunks
    slots = {}
    for s, cr in ProgramReader(path).chunk_records():
        slots.setdefault(s["trace_step"] if s["phase"] else 0, []).append((cr.layer, cr.fields["slot"],
                                                                            cr.fields["base_weights"]))
    for step, ch in slots.items():
        (_, s0, b0), (_, s1, b1) = [c for c in ch if c[0] >= 0]
        assert s0 == s1 and b1 > b0, step


def _chunk_cols(cfg, trace):
    """The assigned columns of the first decoder-layer chunk of a workload (as the compiler sees them)."""
    from lowbit.sim.engine import LoweredSteps
    from lowbit.sim.lower import Lowering

    lw = Lowering(cfg, trace.model, "dependency-aware", True, cfg.lop.k)
    for stp in LoweredSteps(lw, trace.steps(), trace.n_chunks()):
        for ch, layer in stp.chunks:
            if layer == 0:
                return ch.cols


def _ctx(cfg):
    return Context(Queues.of(unit_list(cfg)), Buffers.from_config(cfg).capacity_array(), "test")


def test_block_round_trip_is_exact():
    cfg = load_config("tiny")
    cols = _chunk_cols(cfg, standard_trace("bitnet-tiny", 8, 1))
    ctx = _ctx(cfg)
    data = encode_block(cols, 2, ctx)
    slot, blk = decode_block(data, ctx)
    assert slot == 2
    for c in COLS:
        want = cols[c]
        if c in ("jlo", "jhi"):  # an empty join range has no RANGE words: it decodes as (0, 0)
            empty = cols["jhi"] <= cols["jlo"]
            want = np.where(empty, 0, want)
        if c in ("alt", "cyc_alt"):  # assigned: no alternatives left
            assert np.all(cols[c] == DEFAULT[c])
        assert np.array_equal(blk.cols[c], want), c
    assert encode_block(blk.cols, 2, ctx) == data
    n, nq, nr = len(cols["main"]), len(ctx.queues.names), len(blk.ranges)
    # header, dispatch bytes and per-queue counts (each padded to 8 bytes), 64-byte INSTR words, 8-byte RANGEs
    assert INSTR.nbytes == 64 and BLOCK_HEADER.nbytes == 16
    assert len(data) == 16 + -(-n // 8) * 8 + -(-4 * nq // 8) * 8 + 64 * n + 8 * nr
    assert nr == sum(len(np.unique(blk.queue[lo:hi])) for lo, hi in zip(cols["jlo"], cols["jhi"], strict=True)
                     if hi > lo)


def test_fields_out_of_width_are_refused():
    cfg = load_config("tiny")
    cols = dict(_chunk_cols(cfg, standard_trace("bitnet-tiny", 8, 1)))
    i = int(np.nonzero(cols["main"] == C_TINT)[0][0])
    cols["cyc"] = cols["cyc"].copy()
    cols["cyc"][i] = 1 << 32
    with pytest.raises(ProgramError, match=r"INSTR\.cyc = 4294967296 .* does not fit its 32-bit field"):
        encode_block(cols, 0, _ctx(cfg))


def _block(rows):
    return {c: np.asarray([r[c] for r in rows], np.int64) for c in COLS}


def _dma(**kw):
    return {**DEFAULT, "main": C_DMAW, "unit": 4, "nbytes": 64, "buf": B_WEIGHT, "alloc": 64, **kw}


def _tile(**kw):
    return {**DEFAULT, "main": C_TINT, "unit": 0, "cyc": 10, **kw}


def _kv(**kw):  # a K fetch on tiny's dma_kv queue (5) into the KV buffer
    return {**DEFAULT, "main": C_DMAKV, "unit": 5, "nbytes": 16, "addr": KV_BASE, "dcls": D_KV, "buf": B_KV,
            "alloc": 16, "sub": SUB["k_dma"], **kw}


def _topk(**kw):  # a LOP selection on tiny's lop queue (2)
    return {**DEFAULT, "main": C_LOP, "unit": 2, "cyc": 43, "sub": SUB["lop_topk"], **kw}


def _qk(i):  # the BoothFlex tile that consumes (and frees) fetch i
    return {**DEFAULT, "main": C_BOOTH, "unit": 1, "cyc": 10, "dep0": i, "free_of": i}


@pytest.mark.parametrize("rows,pattern", [
    ([_kv(ind=1, nidx=1), _qk(0)], r"indirect K/V fetch 0 names instruction -1, which is no LOP selection \(lop_topk\) "
                                   r"before it"),
    ([_tile(), _kv(ind=1, nidx=1, isel=0), _qk(1)], r"indirect K/V fetch 1 names instruction 0, which is no LOP "
                                                     r"selection"),
    ([_topk(nidx=2), _kv(ind=1, nidx=1, isel=0, dep0=0), _qk(1),
      _kv(ind=1, nidx=2, isel=0, dep0=0, sub=SUB["v_dma"], addr=KV_BASE + 4096), _qk(3)],
     r"LOP selection 0 selects 2 keys but its indirect K fetches take 1 indices; the counts must match"),
    ([_tile(ind=1)], r"instruction 0 \(tint\) is marked indirect but is no K/V cache read"),
    ([_tile(dep0=1), _tile()], r"waits on instruction 1, which does not come before it.*deadlock"),
    ([_tile(), dict(DEFAULT, main=C_JOIN, jlo=0, jhi=3), _tile()], r"join 1 waits on instructions 0..2.*deadlock"),
    ([_dma(alloc=4096, nbytes=4096), _tile(dep0=0, free_of=0)], r"buffer overflow: allocation of 4096 B in 'weight' of 2048 B"),
    # two 1.5 KB tiles whose consumers both come after both DMAs: the second needs the first's bytes first
    ([_dma(alloc=1536), _dma(alloc=1536), _tile(dep0=0, free_of=0), _tile(dep0=1, free_of=1)],
     r"'weight' \(2048 B\) has room only after a release later in the program \(deadlock\)"),
    ([_dma(), _tile(dep0=0)], r"allocates 64 B of 'weight' that nothing in the chunk releases"),
    ([_dma(addr=KV_BASE), _tile(dep0=0, free_of=0)], r"DRAM address out of range: 0x4000000000 \+ 64 B outside the weights region"),
    ([_tile(main=63)], r"unknown opcode 63"),
    ([_tile(unit=4)], r"opcode tint in queue dma_w, which runs dma_w"),
])
def test_compiler_refuses_bad_blocks(rows, pattern):
    with pytest.raises(ProgramError, match=pattern):
        encode_block(_block(rows), 0, _ctx(load_config("tiny")))


# ------------------------------------------------------------------------------------------------ loader


def _first_block(path: Path, pick) -> tuple[int, int, int, dict[str, np.ndarray]]:
    """(offset, instruction count, queues, INSTR fields) of the first decoder-layer BLOCK payload with an
    instruction `pick(fields)` accepts."""
    with open(path, "rb") as f:
        hd = read_header(f, str(path))
        off = f.tell()
        nq = len(hd.queues.names)
        for tag, payload in records(f, str(path)):
            off += RECORD.nbytes
            n = BLOCK_HEADER.one(payload, "t")["n_instr"] if tag == T_BLOCK else 0
            if n > 10:  # a decoder layer's block
                base = BLOCK_HEADER.nbytes + -(-n // 8) * 8 + -(-4 * nq // 8) * 8
                v = INSTR.unpack(np.frombuffer(payload[base:base + n * INSTR.nbytes], "<u8"))
                if any(pick({k: int(a[i]) for k, a in v.items()}) for i in range(n)):
                    return off, n, nq, v
            off += len(payload)
    raise AssertionError("no block")


def _patch_instr(src: Path, dst: Path, pick, **fields) -> None:
    """Copy `src` to `dst` with fields of one INSTR word (the first one `pick(fields)` accepts) changed."""
    data = bytearray(src.read_bytes())
    off, n, nq, v = _first_block(src, pick)
    base = off + BLOCK_HEADER.nbytes + -(-n // 8) * 8 + -(-4 * nq // 8) * 8
    i = next(k for k in range(n) if pick({f: int(a[k]) for f, a in v.items()}))
    one = {f: int(a[i]) for f, a in v.items()} | fields
    data[base + i * INSTR.nbytes:base + (i + 1) * INSTR.nbytes] = INSTR.pack(one, 1, "t").tobytes()
    dst.write_bytes(bytes(data))


def _load(path, hw="tiny"):
    cfg = load_config(hw)
    return run_program(cfg, path)


@pytest.mark.parametrize("pick,fields,pattern", [
    (lambda v: v["w0_kind"] == 1, {"w0_seq": 4000}, r"names token .* which the chunk never signals \(deadlock\)"),
    (lambda v: v["op"] >= 3 and v["w0_kind"] == 1, {"w0_queue": 6, "w0_seq": 0}, r"does not come before it.*deadlock|never signals"),
    (lambda v: v["alloc"] > 0, {"alloc": 1 << 20}, r"buffer overflow"),
    (lambda v: v["alloc"] > 0, {"saddr": 7}, r"SRAM address 7 out of range"),
    (lambda v: v["op"] == C_DMAW, {"addr": 1 << 47}, r"DRAM address out of range"),
    (lambda v: True, {"op": 63}, r"unknown opcode 63"),
    # a decode step's K fetch that takes 7 of its selection's 8 indices, one naming a scoring word (lop#0)
    (lambda v: v["ind"] == 1, {"nidx": 7}, r"LOP selection \d+ selects 8 keys but its indirect K fetches take 7 "
                                           r"indices; the counts must match"),
    (lambda v: v["ind"] == 1, {"ind_seq": 0}, r"indirect K/V fetch \d+ names instruction \d+, which is no LOP "
                                              r"selection \(lop_topk\) before it"),
    (lambda v: v["op"] == C_TINT, {"ind": 1}, r"is marked indirect but is no K/V cache read"),
])
def test_loader_refuses_bad_programs(tiny_prog, tmp_path, pick, fields, pattern):
    path, _ = tiny_prog
    bad = tmp_path / "bad.bin"
    _patch_instr(path, bad, pick, **fields)
    with pytest.raises(ProgramError, match=pattern):
        _load(bad)


def test_loader_refuses_version_magic_config_and_truncation(tiny_prog, tmp_path):
    path, _ = tiny_prog
    data = path.read_bytes()
    bad = tmp_path / "bad.bin"
    bad.write_bytes(data[:8] + (99).to_bytes(2, "little") + data[10:])
    with pytest.raises(ProgramError, match=r"ISA version 99, this lowbit runs version \d+; recompile"):
        _load(bad)
    bad.write_bytes(b"NOTAPROG" + data[8:])
    with pytest.raises(ProgramError, match=r"not a lowbit program"):
        _load(bad)
    for cut in (len(data) - 3, len(data) // 2, 40):
        bad.write_bytes(data[:cut])
        with pytest.raises(ProgramError, match=r"truncated"):
            _load(bad)
    with pytest.raises(ProgramError, match=r"compiled for another hardware config \('tiny'"):
        _load(path, "vitallm")


def test_cli_compile_run_disasm_and_bad_program(tiny_prog, tmp_path, capsys):
    from lowbit.cli import main

    path, _ = tiny_prog
    out = tmp_path / "p.bin"
    assert main(["compile", "--model", "bitnet-tiny", "--hw", "tiny", "--prefill", "8", "--decode", "4",
                 "--program", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: ")
    assert out.read_bytes() == path.read_bytes()  # deterministic, and the CLI writes what the API writes
    assert main(["compile", "--disasm", str(out), "--steps", "1", "--max-chunks", "2"]) == 0
    text = capsys.readouterr().out
    assert "queue tint0" in text and "waits" in text and "frees weight(dma_w#" in text
    bad = tmp_path / "bad.bin"
    bad.write_bytes(out.read_bytes()[:1000])
    for args, err in ((["sim", "--program", str(bad), "--hw", "tiny"], f"error: {bad}: truncated file (no END record); recompile it\n"),
                      (["sim", "--program", str(out), "--hw", "tiny", "--model", "bitnet-tiny"],
                       "error: --program runs the workload compiled into the program; drop --model\n"),
                      (["compile", "--model", "bitnet-tiny", "--hw", "tiny"],
                       "error: lowbit compile: --program PATH names the file to write (or --disasm PATH to read one)\n")):
        assert main(args) == 2
        assert capsys.readouterr().err == err  # one line, no traceback
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.bin", "p.bin"]  # nothing half-written


def test_disassembly_names_queues_and_tokens(tiny_prog):
    path, _ = tiny_prog
    s = io.StringIO()
    assert disassemble(path, s, steps={0}, max_chunks=2) == 2
    text = s.getvalue()
    assert "queues: 0:tint0(tint), 1:booth(booth), 2:lop(lop), 3:sfu(sfu), 4:dma_w(dma_w), 5:dma_kv(dma_kv), " \
           "6:sync(join)" in text
    assert "dma_w#0: dma_w.embed  read activations" in text and "waits input, step-fence" in text


def test_docs_carry_the_generated_tables():
    doc = (ROOT / "docs" / "isa.md").read_text()
    a = doc.index("<!-- BEGIN LAYOUTS")
    a = doc.index("\n", a) + 1
    b = doc.index("<!-- END LAYOUTS -->")
    assert doc[a:b].strip() == layout_tables().strip()
    for lay in LAYOUTS:
        assert all(lay.place[f.name][1] + f.bits <= 64 for f in lay.fields)  # no field straddles a word
    assert EXT == -2


@pytest.mark.parametrize("opts", [
    ["--batch", "3", "--prefill", "8", "--decode", "2"],
    ["--cached", "5,40", "--prefill", "0", "--decode", "3"],
    ["--prefill", "20", "--prefill-chunk", "8", "--decode", "2"],
])
def test_compile_takes_the_workload_options_of_sim(tmp_path, capsys, opts):
    """`lowbit compile --model M <opts> --program p && lowbit sim --program p` = `lowbit sim --model M <opts>`:
    the program runs alone (its metadata carries the batch's sequences)."""
    from lowbit.cli import main

    base = ["--model", "bitnet-tiny", "--hw", "tiny", *opts]
    p = tmp_path / "p.bin"
    assert main(["compile", *base, "--program", str(p)]) == 0
    assert main(["sim", "--program", str(p), "--hw", "tiny", "--json", str(tmp_path / "a.json"), "--quiet"]) == 0
    assert main(["sim", *base, "--json", str(tmp_path / "b.json"), "--quiet"]) == 0
    capsys.readouterr()
    import json

    a, b = (json.loads((tmp_path / f"{x}.json").read_text()) for x in "ab")
    for d in (a, b):
        d.pop("timing")
    assert (a["cycles"], a["instructions"], a["throughput_tokens_per_s"], a["batch"]) == \
        (b["cycles"], b["instructions"], b["throughput_tokens_per_s"], b["batch"])
    assert a == b  # every counter, the per-request times included
    seqs = ProgramReader(p).header.meta.sequences
    if "--batch" in opts:
        assert a["batch"] == 3 and seqs == [{"context": 0, "prefill": 8, "decode": 2}] * 3
    elif "--cached" in opts:
        assert [q["context"] for q in a["requests"]] == [5, 40] and [q["context"] for q in seqs] == [5, 40]
    else:
        assert seqs is None and a["prefill_tokens"] == 20


def test_workload_option_errors_are_the_same_in_compile_and_sim(tiny_prog, tmp_path, capsys):
    from lowbit.cli import main

    path, _ = tiny_prog
    for opts, err in ((["--batch", "3", "--cached", "1,2"], "--batch 3 disagrees with --cached (2 sequences); drop --batch"),
                      (["--batch", "2", "--prefill-chunk", "4"], "--prefill-chunk applies to a one-sequence --model workload"),
                      (["--batch", "0"], "--batch 0: must be in 1..4096"),
                      (["--cached", "1,x"], "--cached")):
        got = []
        for cmd in (["sim"], ["compile", "--program", str(tmp_path / "p.bin")]):
            assert main([*cmd, "--model", "bitnet-tiny", "--hw", "tiny", *opts]) == 2
            e = capsys.readouterr().err
            assert e.count("\n") == 1 and err in e
            got.append(e)
        assert got[0] == got[1]
    assert not (tmp_path / "p.bin").exists()
    for opts, flags in ((["--batch", "2"], "--batch"), (["--prefill", "4", "--weights", "int8"], "--prefill/--weights")):
        assert main(["sim", "--program", str(path), "--hw", "tiny", *opts]) == 2
        assert capsys.readouterr().err == f"error: --program runs the workload compiled into the program; drop {flags}\n"


def test_programs_of_another_format_version_are_refused(tiny_prog, tmp_path):
    """A program of the previous format (version 2: no sequences in its metadata) is refused with one line."""
    import lowbit.sim.isa as isa

    path, _ = tiny_prog
    data = path.read_bytes()
    old = tmp_path / "old.bin"
    old.write_bytes(data[:8] + (isa.ISA_VERSION - 1).to_bytes(2, "little") + data[10:])
    with pytest.raises(ProgramError, match=rf"ISA version {isa.ISA_VERSION - 1}, this lowbit runs version "
                                           rf"{isa.ISA_VERSION}; recompile it with `lowbit compile`$"):
        _load(old)


def test_lop_fetches_are_indirect_and_time_as_before(tmp_path):
    """Data-driven LOP (synthetic q/k, 30 + 2 on tiny: K = 8 of M = 31, 32): every decode K/V fetch is indirect
    through its KV head's lop_topk, which selects min(K, M) = 8 keys, the K words (and the V words) of a head
    take exactly those 8 rows; the program runs to the SimResult of the trace (the gathers' timing), and a
    prefill fetches directly."""
    from lowbit.sim.lop_select import synthetic_qk_trace
    from lowbit.sim.trace_load import load_trace

    cfg = load_config("tiny")
    tr = load_trace(synthetic_qk_trace("bitnet-tiny", 30, 2, tmp_path / "t", seed=1))
    compile_program(cfg, tr, tmp_path / "p.bin")
    want, got = simulate(cfg, tr).to_dict(), run_program(cfg, tmp_path / "p.bin").to_dict()
    for d in (want, got):
        d.pop("timing")
    assert want.pop("notes") == ["LOP: data-driven selection from trace tensors (4 (layer, step) entries)"]
    assert got == {**want, "notes": []}  # the program carries the selections; it computes none
    seen = {"prefill": 0, "decode": 0}
    for s, cr in ProgramReader(tmp_path / "p.bin").chunk_records():
        if cr.layer < 0:
            continue
        a = cr.block.cols
        top = np.flatnonzero((a["main"] == C_LOP) & (a["sub"] == SUB["lop_topk"]))
        kv = np.flatnonzero((a["main"] == C_DMAKV) & np.isin(a["sub"], (SUB["k_dma"], SUB["v_dma"])))
        phase = "decode" if s["phase"] else "prefill"
        seen[phase] += 1
        if phase == "prefill":
            assert len(top) == 0 and not a["ind"][kv].any()
            continue
        assert len(top) == 2 and a["nidx"][top].tolist() == [8, 8] and a["ind"][kv].all()
        for t in top:
            for sub in ("k_dma", "v_dma"):
                mine = kv[(a["isel"][kv] == t) & (a["sub"][kv] == SUB[sub])]
                assert a["nidx"][mine].sum() == 8 == a["nbytes"][mine].sum() // 16  # head_dim 16 B a row
    assert seen == {"prefill": 2, "decode": 4}
