"""`lowbit verify --chip` reports a wrong chip: bitnet-tiny prefill 2 + decode 3 on the tiny preset (the chip
build of test_chip's run) with one thing changed after the golden and the simulator's schedule were made, and
exactly the mismatches that change predicts."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("amaranth")
pytest.importorskip("cocotb")

DOWN = "layers.1.ffn.down"  # the last projection: its output reaches only the residual stream and the final norm


def _cli_fails(monkeypatch, r, tmp_path) -> str:
    """`lowbit verify --chip` on the result `r`: its exit code must be non-zero; returns its error message."""
    from typer.testing import CliRunner

    import lowbit.rtl.chip_run as cr
    from lowbit.cli import app

    prog = tmp_path / "prog.bin"
    monkeypatch.setattr(cr, "verify_chip", lambda *a, **k: r)
    out = CliRunner().invoke(app, ["verify", "--chip", "--hw", "tiny", "--program", str(prog)])
    assert out.exit_code != 0
    return str(out.exception)


def test_one_flipped_weight_bit_shows_in_the_projections_psum_words(monkeypatch, tmp_path):
    """One bit of the DRAM image's packed ternary weights of layers.1.ffn.down flipped (row 0, an input every
    token reads non-zero: its 2-bit code w + 1, lowbit.rtl.chip_data.pack_tile): every psum word holding
    row 0 differs from the golden's, one a token in all 4 steps (the weights are read again each step); the
    requantized output and the residual stream after it differ exactly in the tokens whose row-0 output
    sim.numerics.requant and residual_add change, the schedule not at all."""
    import numpy as np

    from lowbit.rtl.chip_data import pack_tile
    from lowbit.rtl.chip_model import input_of
    from lowbit.sim.config import load_hw
    from lowbit.sim.golden import linear_multipliers
    from lowbit.sim.numerics.requant import requant, residual_add
    from tests.rtl.chip_perturb import verify_perturbed

    hit = {}

    def flip(plan):
        x = np.concatenate([st.buffers[f"{input_of(DOWN)}.q"] for st in plan.model.run.steps])
        kk = int(np.argmax((x != 0).sum(0)))
        a, t = plan.model.base[DOWN], load_hw("tiny", []).tint
        lanes, tw = t.lanes, t.tree_width  # row 0's group: `lanes` rows, `tree_width` codes a lane and beat
        w = plan.model.rows(DOWN, 0, lanes, "test").copy()
        old, old_w = pack_tile(w, lanes, tw), w[0, kk]
        w[0, kk] = {-1: 0, 0: -1, 1: -1}[int(w[0, kk])]  # codes 0b00 <-> 0b01, 0b10 -> 0b00: one bit each
        new = pack_tile(w, lanes, tw)
        assert plan.dram[a] == old
        assert sum(bin(p ^ q).count("1") for p, q in zip(old, new, strict=True)) == 1
        plan.dram[a] = new
        hit["want"], hit["kk"], hit["delta"] = int((x[:, kk] != 0).sum()), kk, int(w[0, kk]) - int(old_w)

    r, plan = verify_perturbed(monkeypatch, tmp_path, flip)
    assert hit["want"] == 5  # 2 + 1 + 1 + 1 tokens
    assert r.finished and r.mismatches == 0 and r.chip_cycles == r.sim_cycles
    assert sum(q.data_mismatches for q in r.queues) == 5
    # the row-0 output each token gets from the changed accumulator, and the residual stream it is added to
    lin = plan.model.dep.linears[DOWN]
    m, sh = linear_multipliers(lin)
    rq_bad, res_bad = {}, 0
    for i, st in enumerate(plan.model.run.steps):
        b = st.buffers
        acc = b[f"{DOWN}.acc"][:, 0] + hit["delta"] * b[f"{input_of(DOWN)}.q"][:, hit["kk"]]
        y = requant(acc, b[f"{input_of(DOWN)}.amax"], m[0], sh[0])
        rq_bad[f"step {i} {DOWN}"] = int((y != b[f"{DOWN}.out"][:, 0]).sum())
        res = residual_add(b["layers.1.attn_residual.out"][:, 0], y)
        res_bad += int((res != b["layers.1.ffn_residual.out"][:, 0]).sum())
    assert sum(rq_bad.values()) == res_bad == 5  # 2 + 1 + 1 + 1 tokens' row 0 rounds differently
    assert {name: n for name, _, n in r.rq if n} == {k: n for k, n in rq_bad.items() if n}
    assert r.res[3] == res_bad
    assert r.sfu[3] == r.act[3] == r.sm[4] == r.sc[3] == 0 and all(x[2] == 0 for x in r.av)
    assert not r.ok
    assert ": 5 psum words differ from the whole-model golden" in _cli_fails(monkeypatch, r, tmp_path)


def test_one_changed_instruction_cycle_count_shows_per_queue(monkeypatch, tmp_path):
    """The chip given the program with the last LOP word 3 cycles longer, the simulator the compiled one: every
    instruction's start and end differ exactly where `lowbit sim` of the changed program puts them (the LOP
    word's end, the indirect K/V reads waiting on it, the weight reads the DRAM model then serves later), per
    queue; the LOP engine's done still meets the simulator's end of that word and the data stay exact."""
    import lowbit.rtl.chip_run as cr
    from lowbit.rtl.chip_image import reference_schedule
    from lowbit.rtl.chip_model import compile_from_golden
    from lowbit.sim.config import load_hw
    from lowbit.sim.isa import C_LOP
    from tests.rtl.chip_perturb import rewrite_program

    cfg = load_hw("tiny", [])
    src, dst = tmp_path / "prog.bin", tmp_path / "longer.bin"
    compile_from_golden(cfg, "bitnet-tiny", 2, 3, src, seed=0)

    def longer(chunks):
        n, (stp, ch, layer) = next((n, c) for n, c in reversed(list(enumerate(chunks)))
                                   if (c[1].cols["main"] == C_LOP).any())
        cyc = ch.cols["cyc"].copy()
        cyc[max(i for i, m in enumerate(ch.cols["main"]) if m == C_LOP)] += 3
        chunks[n] = (stp, dataclasses.replace(ch, cols={**ch.cols, "cyc": cyc}), layer)

    rewrite_program(src, dst, cfg, longer)
    ref, total = reference_schedule(src, cfg)
    want, _ = reference_schedule(dst, cfg)
    real = cr.reference_schedule
    monkeypatch.setattr(cr, "reference_schedule", lambda path, c: real(src, c))
    r = cr.verify_chip(cfg, dst, "tiny", [])
    exp = cr.compare(ref, [q.start for q in want], [q.end for q in want])
    assert [(q.name, q.start_mismatches, q.end_mismatches, q.max_diff) for q in r.queues] == \
        [(q.name, q.start_mismatches, q.end_mismatches, q.max_diff) for q in exp]
    per = {q.name: (q.start_mismatches, q.end_mismatches) for q in r.queues}
    assert per == {"tint0": (0, 0), "booth": (0, 0), "lop": (0, 1), "sfu": (0, 0), "dma_w": (0, 4),
                   "dma_kv": (2, 2), "sync": (0, 0)}
    assert r.lop_engine[2] == r.lop_engine[3] == 0 and r.ok is False
    assert r.sim_cycles == r.chip_cycles == total and r.data_mismatches == 0
    assert _cli_fails(monkeypatch, r, tmp_path) == "chip RTL differs from lowbit sim: 9 mismatches"


@pytest.mark.slow
def test_one_golden_kv_byte_changed_shows_in_the_kv_write_check(monkeypatch, tmp_path):
    """One bit of the golden's bytes of the last K row the chip writes to DRAM (kv_append.k8, the RoPE engine's
    row on the chip) flipped: the KV-write check counts exactly that byte in the K plane and nothing else."""
    from tests.rtl.chip_perturb import verify_perturbed

    hit = {}

    def flip(plan):
        a = max(a for a, (plane, _) in plan.kvw.expect.items() if plane == "k")
        plane, want = plan.kvw.expect[a]
        plan.kvw.expect[a] = (plane, bytes([want[0] ^ 1]) + want[1:])
        for q, b in plan.kvw.expect.values():
            hit[q] = hit.get(q, 0) + len(b)

    r, _ = verify_perturbed(monkeypatch, tmp_path, flip)
    assert "k" in hit and r.kvw["planes"] == {q: (n, int(q == "k")) for q, n in hit.items()}
    assert r.mismatches == 0 and r.data_mismatches == 0 and r.kvw["late"] == 0 and not r.ok
    assert _cli_fails(monkeypatch, r, tmp_path) == ("chip RTL differs from lowbit sim: KV writes: 1 written bytes "
                                                    "differ from the golden's, 0 beats after their write's response")
