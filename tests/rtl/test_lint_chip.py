"""The Verilog of the whole vitallm chips lints clean with Verilator -Wall (lowbit.rtl.lint's waivers): the chip
`lowbit verify --chip --hw vitallm[-fp4] --model bitnet-tiny --prefill 4 --decode 2` generates and runs (its
sizes from the program: chip_run.params_for, the data path, requantizers and the LOP engine where it has them)."""

from __future__ import annotations

import pytest

pytest.importorskip("amaranth")
pytest.importorskip("cocotb")


class _Built(Exception):
    """Raised in place of the Verilator build: the chip's Verilog key, the bench not run."""


@pytest.mark.slow
@pytest.mark.parametrize("hw", ["vitallm", "vitallm-fp4"])
def test_vitallm_chip_verilog_lints_clean(hw, tmp_path, monkeypatch):
    from lowbit.rtl import chip_run
    from lowbit.rtl.lint import lint
    from lowbit.sim.cache import cache_dir
    from lowbit.sim.cli import build_trace
    from lowbit.sim.compile import compile_program
    from lowbit.sim.config import load_hw

    cfg = load_hw(hw, [])
    prog = tmp_path / "prog.bin"
    compile_program(cfg, build_trace("bitnet-tiny", None, 4, 2, cfg, None), prog)
    built = {}

    def build(cfg_, p):
        _, built["key"] = chip_run.chip_verilog_cached(cfg_, p)
        built["params"] = p
        raise _Built

    monkeypatch.setattr(chip_run, "_build", build)
    with pytest.raises(_Built):
        chip_run.verify_chip(cfg, prog, hw)
    p = built["params"]
    # the chip the bench runs: its data path and multi-issue DMA queues (banked instruction rings), with the
    # requantizers (vitallm-fp4's behind its FP4 engine), the LOP engine and the V quantizer
    assert p.data_banks > 0 and p.dma_issue > 1 and p.join_window > 1
    assert p.mult_depth > 0 and p.lop_grp > 0 and p.kvw_depth > 0 and p.vquant[0] > 0
    v = cache_dir("verilog") / f"chip-{built['key']}.v"
    # BoothFlex's attention tiles on data on both (QkWalk's registers), vitallm-fp4's without a weight read port
    # (an attention-only engine: lowbit.rtl.chip_booth.booth_data)
    text = v.read_text()
    ports = next(ln for ln in text.splitlines() if ln.startswith("module \\lowbit_chip.eng_booth "))
    assert "qk_pv" in text and "k_raddr" in ports and ("w_raddr" in ports) == (hw == "vitallm")
    # the softmax engine, the score stage and the attention output's writer on both (chip_softmax.sm_ok)
    assert "sfu_softmax" in text and "sc_qs" in text and "rq_av" in text
    r = lint(v, "lowbit_chip")
    assert r.ok, r.errors[:5]
    assert r.waived  # the documented waivers apply (Amaranth's idioms), nothing else
