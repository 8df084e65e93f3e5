"""The SFU's norm-chain stream engines (lowbit.rtl.sfu_stream, sfu_stream_act) on the Amaranth simulator: a
decoder layer's residual add (or FFN gating) -> RMSNorm -> absmax quantize run on buffers, bit-exact with the hardware-exact golden's recorded
buffers (bitnet-tiny on `tiny`) and with sim.numerics, each word's cycles equal to the program's SFU word."""

from __future__ import annotations

import dataclasses
import gc

import numpy as np
import pytest

pytest.importorskip("amaranth")

from lowbit.rtl.sfu_stream import stream_cycles  # noqa: E402
from lowbit.rtl.sfu_stream_chain import SfuNormChain  # noqa: E402
from lowbit.sim.config import load_hw  # noqa: E402
from lowbit.sim.errors import LowbitError  # noqa: E402
from lowbit.sim.numerics.requant import residual_add  # noqa: E402
from lowbit.sim.numerics.sfu import sfu_absmax_quantize  # noqa: E402
from lowbit.sim.numerics.sfu_reduce import rmsnorm_consts, sfu_rmsnorm  # noqa: E402
from lowbit.sim.units.sfu import SFU_PASSES, SfuConfig, sfu_cycles  # noqa: E402

PROMPT, DECODE = [3, 141, 59, 26], 2
X, Y, O, N, Q, G, S, A = 0, 64, 0, 128, 16, 0, 0, 32  # buffer word addresses of the runs below


def _words(a: np.ndarray, lanes: int) -> np.ndarray:
    """Rows [rows, dim] as buffer words [rows * beats, lanes], tail lanes zero."""
    a = np.atleast_2d(a)
    beats = -(-a.shape[1] // lanes)
    p = np.zeros((a.shape[0], beats * lanes), np.int64)
    p[:, :a.shape[1]] = a
    return p.reshape(-1, lanes)


def _pack(w, bits: int = 16) -> int:
    return sum((int(v) & ((1 << bits) - 1)) << (bits * i) for i, v in enumerate(w))


def run_chain(sfu: SfuConfig, loads: list[tuple[int, int, np.ndarray]], ops: list[tuple[str, int, int, dict]]):
    """Load buffers (sel, base, words), run the engines one after the other, each started in the previous
    one's done cycle; returns (cycles start -> done per op, Q7.8 words, INT8 words, statistics)."""
    from amaranth.sim import Simulator

    dut = SfuNormChain(sfu, depth=256)
    out: dict = {}

    async def bench(ctx):
        for sel, base, words in loads:
            for i, w in enumerate(words):
                for k, v in (("valid", 1), ("sel", sel), ("addr", base + i), ("data", w if sel == 2 else _pack(w))):
                    ctx.set(getattr(dut, f"ld_{k}"), int(v))
                await ctx.tick()
        ctx.set(dut.ld_valid, 0)
        cycles = []
        for e, rows, beats, fields in ops:
            assert ctx.get(getattr(dut, f"{e}_ready"))
            ctx.set(getattr(dut, f"{e}_start"), 1)
            for k, v in dict(rows=rows, beats=beats, **fields).items():
                ctx.set(getattr(dut, f"{e}_{k}"), v)
            await ctx.tick()
            ctx.set(getattr(dut, f"{e}_start"), 0)
            c = 1
            while not ctx.get(getattr(dut, f"{e}_done")):
                await ctx.tick()
                c += 1
            cycles.append(c)  # the next op starts in this, the done cycle
        out["cycles"] = cycles
        r16, r8, st = [], [], []
        for a in range(256):
            ctx.set(dut.rb_addr, a)
            await ctx.tick()
            r16.append(list(ctx.get(dut.rb_q78)))
            r8.append(list(ctx.get(dut.rb_int8)))
            st.append(ctx.get(dut.rb_stat))
        out["mem"] = np.array(r16), np.array(r8), np.array(st, np.int64)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out["cycles"], *out["mem"]


def _rows(words: np.ndarray, base: int, rows: int, dim: int, lanes: int) -> np.ndarray:
    beats = -(-dim // lanes)
    return words[base:base + rows * beats].reshape(rows, beats * lanes)[:, :dim]


def _tails(words: np.ndarray, base: int, rows: int, dim: int, lanes: int) -> np.ndarray:
    beats = -(-dim // lanes)
    return words[base:base + rows * beats].reshape(rows, beats * lanes)[:, dim:]


def chain_ops(rows: int, beats: int, dim: int, eps: float, residual: bool = True) -> list:
    eps_q, sd, e_sd = rmsnorm_consts(dim, eps)
    ops = [("res", rows, beats, dict(x_addr=X, y_addr=Y, o_addr=O, st_addr=S))] if residual else []
    return ops + [("rms", rows, beats, dict(x_addr=O, g_addr=G, o_addr=N, s_addr=S, a_addr=A, eps_q=eps_q, sd=sd,
                                            e_sd=e_sd)),
                  ("q", rows, beats, dict(x_addr=N, o_addr=Q, a_addr=A))]


@pytest.fixture(scope="module")
def tiny_layer():
    """bitnet-tiny on `tiny`: the golden of prefill 4 + decode 2 and the SFU words of that program."""
    from lowbit.sim.golden import golden_run
    from lowbit.sim.golden_weights import deploy, seeded_weights
    from lowbit.sim.modelspec import get_model

    spec, cfg = get_model("bitnet-tiny"), load_hw("tiny", [])
    dep = deploy(spec, seeded_weights(spec, seed=0))
    return spec, cfg, dep, golden_run(dep, cfg, PROMPT, DECODE)


@pytest.fixture(scope="module")
def sfu_words(tmp_path_factory):
    """{(phase, op name): cycles} of the SFU words of bitnet-tiny's program on `tiny`, prefill 4 + decode 2."""
    from lowbit.sim.cli import build_trace
    from lowbit.sim.compile import compile_program
    from lowbit.sim.isa import C_SFU
    from lowbit.sim.program_io import ProgramReader

    cfg = load_hw("tiny", [])
    path = tmp_path_factory.mktemp("sfu") / "prog.bin"
    compile_program(cfg, build_trace("bitnet-tiny", None, len(PROMPT), DECODE, cfg, None), path)
    words: dict[tuple[int, str], set[int]] = {}
    for s, cr in ProgramReader(path).chunk_records():
        a = cr.chunk.cols
        for i in np.nonzero(a["main"] == C_SFU)[0]:
            words.setdefault((int(s["phase"]), cr.chunk.names[int(a["opi"][i])]), set()).add(int(a["cyc"][i]))
    return {k: v.pop() for k, v in words.items() if len(v) == 1}


# (step, x, y, residual out, norm, quantize): the residual add feeding the next RMSNorm and its quantize
CHAINS = {
    "prefill_ffn": (0, "embed.out", "layers.0.attn.o.out", "layers.0.attn_residual", "layers.0.ffn_norm",
                    "layers.0.ffn_quant"),
    "decode_next_layer": (2, "layers.0.attn_residual.out", "layers.0.ffn.down.out", "layers.0.ffn_residual",
                          "layers.1.attn_norm", "layers.1.attn_quant"),
    "decode_final_norm": (1, "layers.1.attn_residual.out", "layers.1.ffn.down.out", "layers.1.ffn_residual",
                          "final_norm", "lm_quant"),
}


@pytest.mark.parametrize("chain", CHAINS)
def test_norm_chain_matches_the_golden_and_the_program(chain, tiny_layer, sfu_words):
    spec, cfg, dep, run = tiny_layer
    step, xk, yk, res, norm, quant = CHAINS[chain]
    b = run.steps[step].buffers
    x, y = b[xk], b[yk]
    rows, dim = x.shape
    lanes = cfg.sfu.lanes
    beats = -(-dim // lanes)
    g = dep.norms[norm]
    cycles, q78, i8, st = run_chain(cfg.sfu, [(0, X, _words(x, lanes)), (0, Y, _words(y, lanes)),
                                              (1, G, _words(g, lanes))], chain_ops(rows, beats, dim, spec.norm_eps))
    assert np.array_equal(_rows(q78, O, rows, dim, lanes), b[f"{res}.out"])
    assert st[S:S + rows].tolist() == (b[f"{res}.out"] ** 2).sum(-1).tolist()   # the fused sum of squares
    assert np.array_equal(_rows(q78, N, rows, dim, lanes), b[f"{norm}.out"])
    assert np.array_equal(_rows(i8, Q, rows, dim, lanes), b[f"{quant}.q"])
    assert st[A:A + rows].tolist() == b[f"{quant}.amax"].tolist()              # the fused absmax
    assert np.count_nonzero(b[f"{quant}.q"]) > rows * dim // 2
    # each engine ends when the program's word does (tiny: latencies 2, 12, 6; D_recip 17); `tiny` runs the
    # lm_head on the host, so its program has no lm_quant word: that one is held to sim.units' fused formula
    want = [rows * beats + 2, rows * beats + 12, rows * (beats + 17) + 6]
    phase = 0 if step == 0 else 1
    prog = [sfu_words.get((phase, k), w) for k, w in zip((res, norm, quant), want, strict=True)]
    assert (phase, quant) in sfu_words or quant == "lm_quant"
    assert cycles == prog == want


@pytest.mark.parametrize("step", [0, 2])
def test_subln_chain_from_the_gating_matches_the_golden(step, tiny_layer, sfu_words):
    """The FFN's SubLN chain (dim = ffn 128): the ReLU^2-GLU gating of gate and up writes its output and the
    rows' S, SubLN's RMSNorm (its own gain) and down_proj's quantize follow: the golden's ffn.act.out,
    ffn_sub_norm.out and down_quant, each word the program's."""
    spec, cfg, dep, run = tiny_layer
    b = run.steps[step].buffers
    gate, up = b["layers.0.ffn.gate.out"], b["layers.0.ffn.up.out"]
    rows, dim = gate.shape
    lanes = cfg.sfu.lanes
    beats = dim // lanes
    assert spec.ffn_act == "relu2_glu"
    up_addr = X + rows * beats  # after the gate's words; the gating writes in place over the gate
    act = [("act", rows, beats, dict(g_addr=X, u_addr=up_addr, o_addr=O, st_addr=S, fn=1, gated=1))]
    cycles, q78, i8, st = run_chain(
        cfg.sfu, [(0, X, _words(gate, lanes)), (0, up_addr, _words(up, lanes)),
                  (1, G, _words(dep.norms["layers.0.ffn_sub_norm"], lanes))],
        act + chain_ops(rows, beats, dim, spec.norm_eps, residual=False))
    f = b["layers.0.ffn.act.out"]
    assert np.array_equal(_rows(q78, O, rows, dim, lanes), f)
    assert st[S:S + rows].tolist() == (f ** 2).sum(-1).tolist()
    assert np.array_equal(_rows(q78, N, rows, dim, lanes), b["layers.0.ffn_sub_norm.out"])
    assert np.array_equal(_rows(i8, Q, rows, dim, lanes), b["layers.0.down_quant.q"])
    assert st[A:A + rows].tolist() == b["layers.0.down_quant.amax"].tolist()
    ph = 0 if step == 0 else 1
    prog = [sfu_words[(ph, f"layers.0.{k}")] for k in ("ffn.act", "ffn_sub_norm", "down_quant")]
    assert cycles == prog == [rows * beats + 6, rows * beats + 12, rows * (beats + 17) + 6]


@pytest.mark.parametrize("hw, gated", [("vitallm", 1), ("tiny", 0)])
def test_silu_gating_matches_numerics(hw, gated):
    """SiLU, gated (SwiGLU) and not, gates across the sigmoid table's range and past it, a tail of lanes."""
    from lowbit.sim.numerics.sfu_elem import sfu_act

    sfu = load_hw(hw, []).sfu
    rng = np.random.default_rng(2)
    dim, lanes = 40 if hw == "vitallm" else 10, sfu.lanes
    beats = -(-dim // lanes)
    g = rng.integers(-6000, 6000, size=(2, dim))
    g[0, :4] = [-32768, 32767, 16 << 8, -(16 << 8) + 1]
    u = rng.integers(-4000, 4000, size=(2, dim))
    ops = [("act", 2, beats, dict(g_addr=X, u_addr=Y, o_addr=O, st_addr=S, fn=0, gated=gated))]
    cycles, q78, _, st = run_chain(sfu, [(0, X, _words(g, lanes)), (0, Y, _words(u, lanes))], ops)
    want = sfu_act(g, u if gated else None, "silu").astype(np.int64)
    assert np.array_equal(_rows(q78, O, 2, dim, lanes), want)
    assert not _tails(q78, O, 2, dim, lanes).any()
    assert st[S:S + 2].tolist() == (want ** 2).sum(-1).tolist()
    assert cycles == [sfu_cycles(sfu, "activation", 2, dim)]


def _edge_rows(rng, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Three rows: saturating adds both ways, an all-zero sum, random values."""
    x = rng.integers(-3000, 3000, size=(3, dim))
    y = rng.integers(-3000, 3000, size=(3, dim))
    x[0, ::2], y[0, ::2] = 32767, 5
    x[0, 1::2], y[0, 1::2] = -32768, -9
    y[1] = -x[1]
    return x, y


@pytest.mark.parametrize("hw, sfu_lat", [("vitallm", None), ("tiny", {"elementwise": 2, "rmsnorm": 10, "quantize": 3})])
def test_engines_match_numerics_with_tail_lanes_and_edges(hw, sfu_lat):
    """vitallm's 16 lanes with dim 100 (7 beats, 12 tail lanes) and eps = 0; the least latencies on tiny
    (every write lands before the done cycle in which the next word starts)."""
    sfu = load_hw(hw, []).sfu
    if sfu_lat:
        sfu = dataclasses.replace(sfu, latency={**sfu.latency, **sfu_lat})
    lanes, dim = sfu.lanes, 100 if hw == "vitallm" else 37
    beats = -(-dim // lanes)
    rng = np.random.default_rng(5)
    x, y = _edge_rows(rng, dim)
    g = rng.integers(-2048, 2048, size=dim)
    cycles, q78, i8, st = run_chain(sfu, [(0, X, _words(x, lanes)), (0, Y, _words(y, lanes)), (1, G, _words(g, lanes))],
                                    chain_ops(3, beats, dim, 0.0))
    r = residual_add(x, y)
    n = sfu_rmsnorm(r, g, eps=0.0)
    q, amax = sfu_absmax_quantize(n, 16)
    assert r[0].min() == -32768 and r[0].max() == 32767 and not r[1].any()
    assert np.array_equal(_rows(q78, O, 3, dim, lanes), r)
    assert np.array_equal(_rows(q78, N, 3, dim, lanes), n)
    assert np.array_equal(_rows(i8, Q, 3, dim, lanes), q) and not q[1].any()
    assert st[A:A + 3].tolist() == amax[:, 0].tolist()
    for words, base in ((q78, O), (q78, N), (i8, Q)):
        assert not _tails(words, base, 3, dim, lanes).any()   # tail lanes stay zero
    want = [stream_cycles(sfu, op, 3, beats) for op in ("elementwise", "rmsnorm", "quantize")]
    fused = [sfu_cycles(sfu, op, 3, dim) - (3 * beats if SFU_PASSES[op] > 1 else 0)
             for op in ("elementwise", "rmsnorm", "quantize")]
    assert cycles == want == fused


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")  # built to be checked, not elaborated
@pytest.mark.parametrize("op, least", [("activation", 6), ("elementwise", 2), ("rmsnorm", 10), ("quantize", 3)])
def test_engines_refuse_a_latency_below_their_pipeline(op, least):
    from lowbit.rtl.sfu_stream import SfuQuantStream, SfuResidualStream, SfuRmsNormStream
    from lowbit.rtl.sfu_stream_act import SfuActStream

    make = {"activation": lambda c: SfuActStream(c, a_bits=8, s_bits=6),
            "elementwise": lambda c: SfuResidualStream(c, a_bits=8, s_bits=6),
            "rmsnorm": lambda c: SfuRmsNormStream(c, a_bits=8, g_bits=6, s_bits=6),
            "quantize": lambda c: SfuQuantStream(c, a_bits=8, q_bits=8, s_bits=6)}[op]
    lat = SfuConfig().latency
    make(SfuConfig(lanes=4, latency={**lat, op: least}))
    with pytest.raises(LowbitError, match=f"sfu.latency.{op} = {least - 1}: .* raise it to >= {least}"):
        make(SfuConfig(lanes=4, latency={**lat, op: least - 1}))
    gc.collect()  # the built and the refused objects' unused-elaboratable warnings, under this test's filter


def test_stream_engines_lint_clean(tmp_path):
    """verilator --lint-only -Wall on the chain at vitallm's SFU, whose Verilog holds each engine (gating,
    residual, RMSNorm, quantize) as a module (rtl.lint's waivers only)."""
    from lowbit.rtl.lint import lint_component

    top = "lowbit_sfu_stream_chain"
    r, text = lint_component(SfuNormChain(load_hw("vitallm", []).sfu, depth=128), top, tmp_path)
    assert all(f"module \\{top}.{e} " in text for e in ("act", "res", "rms", "q"))
    assert r.ok, r.errors[:5]


def _rms_late_s(sfu: SfuConfig, x: np.ndarray, g: np.ndarray, s_lands: int) -> tuple[np.ndarray, int]:
    """SfuRmsNormStream over one row whose S memory holds a stale 0 until the edge into cycle `s_lands` (a
    producer still writing it as the word starts), with synchronous-read X, gain and S memories in the bench;
    returns (the Q7.8 words written, cycles start -> done)."""
    from amaranth.sim import Simulator

    from lowbit.rtl.sfu_stream import SfuRmsNormStream

    lanes, dim = sfu.lanes, x.shape[-1]
    beats = -(-dim // lanes)
    xw, gw = _words(x, lanes), _words(g, lanes)
    s = int((x.astype(np.int64) ** 2).sum())
    eps_q, sd, e_sd = rmsnorm_consts(dim, 0.0)
    dut = SfuRmsNormStream(sfu, a_bits=8, g_bits=6, s_bits=6)
    out: dict = {"y": np.zeros((beats, lanes), np.int64)}

    async def bench(ctx):
        for k, v in dict(start=1, rows=1, beats=beats, x_addr=0, g_addr=0, o_addr=0, s_addr=3, a_addr=0,
                         eps_q=eps_q, sd=sd, e_sd=e_sd).items():
            ctx.set(getattr(dut, k), v)
        c = 0
        while not ctx.get(dut.done):
            xa, ga, sa = ctx.get(dut.x_raddr), ctx.get(dut.g_raddr), ctx.get(dut.s_raddr)
            if ctx.get(dut.o_wen):
                out["y"][ctx.get(dut.o_waddr)] = list(ctx.get(dut.o_wdata))
            stat = s if sa == 3 and c >= s_lands else 0
            await ctx.tick()
            c += 1
            ctx.set(dut.start, 0)
            ctx.set(dut.x_rdata, [int(v) for v in xw[xa % beats]])
            ctx.set(dut.g_rdata, [int(v) for v in gw[ga % beats]])
            ctx.set(dut.s_rdata, stat)
        out["cycles"] = c

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out["y"].reshape(1, -1)[:, :dim], out["cycles"]


def test_rmsnorm_reads_s_late_where_its_latency_allows():
    """latency.rmsnorm 12 (tiny's) leaves rms_lag = 2 cycles above RMSNORM_PIPE: the engine reads S in the word's
    cycle 2, so a row whose S lands in cycle 2 (the attention output's last pass in decode, lowbit.rtl.chip_av)
    normalises exactly (sim.numerics.sfu_reduce.sfu_rmsnorm), in the program's cycles; at the least latency 10
    it reads S in cycle 0 and normalises the stale 0 instead (the check can fail)."""
    from lowbit.rtl.sfu_stream import rms_lag

    rng = np.random.default_rng(7)
    dim = 37
    x, g = rng.integers(-3000, 3000, size=(1, dim)), rng.integers(-2048, 2048, size=dim)
    want = sfu_rmsnorm(x, g, eps=0.0)
    late = SfuConfig(lanes=4, latency={**SfuConfig().latency, "rmsnorm": 12})
    least = SfuConfig(lanes=4, latency={**SfuConfig().latency, "rmsnorm": 10})
    assert (rms_lag(late), rms_lag(least)) == (2, 0)
    y, cycles = _rms_late_s(late, x, g, 2)
    assert np.array_equal(y, want) and cycles == stream_cycles(late, "rmsnorm", 1, 10) == 10 + 12
    y, cycles = _rms_late_s(late, x, g, 3)  # one cycle later than the lag: stale
    assert not np.array_equal(y, want)
    y, cycles = _rms_late_s(least, x, g, 2)
    assert not np.array_equal(y, want) and cycles == 10 + 10
    assert np.array_equal(_rms_late_s(least, x, g, 0)[0], want)
