"""lm_head on the chip (HwConfig.lm_head = its weight format): cycles, DRAM bytes and work against hand counts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lowbit.sim.config import load_config
from lowbit.sim.engine import simulate
from lowbit.sim.errors import ConfigError, WorkloadError
from lowbit.sim.isa import C_DMAW, D_W, EMBED_BASE
from lowbit.sim.modelspec import get_model
from lowbit.sim.workloads import check_workload, standard_trace

TINY = get_model("bitnet-tiny")  # d_model 64, vocab 256, 2 layers, not tied
D, V = 64, 256


def run(lm_head: str, prefill: int, decode: int, model=TINY, observers=()):
    cfg = load_config("tiny").replace(lm_head=lm_head)
    tr = standard_trace(model, prefill, decode)
    check_workload(cfg, tr)
    return simulate(cfg, tr, observers=observers)


@pytest.fixture(scope="module")
def host():
    return run("host", 8, 2)


@pytest.fixture(scope="module")
def int8():
    return run("int8", 8, 2)


def test_host_is_the_default_and_costs_nothing_on_chip(host):
    assert load_config("vitallm").lm_head == "host" and load_config("tiny").lm_head == "host"
    assert "lm_head" not in host.op_cycles
    assert host.lm_head["placement"] == "host"
    assert host.lm_head["macs"] == (8 + 1 + 1) * D * V  # every position, excluded from the chip's time


def test_int8_weight_bytes_once_per_step(host, int8):
    steps = 3  # prefill + 2 decode steps
    assert int8.dram_bytes["weights"] - host.dram_bytes["weights"] == steps * V * D  # 1 B per INT8 weight
    assert int8.lm_head["weight_bytes_per_step"] == V * D
    # the logits leave the chip as bf16, one row per step (prefill: the last position only)
    assert int8.dram_bytes["activations"] - host.dram_bytes["activations"] == steps * V * 2
    assert int8.activity["int8_macs"] - host.activity["int8_macs"] == steps * D * V
    assert int8.lm_head["macs"] == steps * D * V


def test_int8_cycles_by_hand(int8):
    # tiny: INT8 tiles run on BoothFlex only (2 lanes, width 2, latency clog2(4*2) + 2 = 5). Weight tile share
    # 1024 B / 64 B per row -> R = 16 rows, so 256 / 16 = 16 tiles of 16 rows x 64 inputs, each
    # ceil(16/2) = 8 passes x ceil(64/2) = 32 beats + 5 = 261 cycles. The SFU quantizes one row of 64:
    # 2 x ceil(64/4) + 17 (reciprocal) + 6 (latency) = 55, less the absmax pass fused with the final norm
    # (ceil(64/4) = 16) = 39.
    per_step = 16 * (8 * 32 + 5) + (2 * 16 + 17 + 6 - 16)
    assert int8.op_cycles["lm_head"] == 3 * per_step
    assert int8.cycles > run("host", 8, 2).cycles


def test_breakdown_row():
    from lowbit.sim.breakdown import Breakdown
    from lowbit.sim.engine import unit_list

    cfg = load_config("tiny").replace(lm_head="int8")
    tr = standard_trace(TINY, 0, 2)
    r = simulate(cfg, tr, breakdown=Breakdown(TINY.n_layers, unit_list(cfg)))
    row = next(x for x in r.breakdown["phases"]["decode"]["by_op"] if x["op"] == "lm_head")
    assert row["dram_bytes"]["weights"] == 2 * V * D and row["dram_bytes"]["activations"] == 2 * V * 2
    assert row["macs"] == 2 * D * V and row["busy_cycles"]["booth"] == 2 * 16 * (8 * 32 + 5)
    assert row["busy_cycles"]["sfu"] == 2 * (2 * 16 + 17 + 6 - 16)
    assert row["critical_path_cycles"] > 0


def test_ternary_weight_bytes(host):
    t = run("ternary", 0, 3)
    h = run("host", 0, 3)
    assert t.dram_bytes["weights"] - h.dram_bytes["weights"] == 3 * V * D // 4  # 2-bit codes
    assert t.activity["ternary_macs"] - h.activity["ternary_macs"] == 3 * D * V


class Addresses:
    """Observer: DRAM addresses of the lm_head's weight DMAs."""

    def __init__(self):
        self.addr = []

    def begin_step(self, *_):
        pass

    def end_step(self, *_):
        pass

    def add(self, rec, *_):
        c = rec.cols
        names = np.asarray(rec.names + [""])
        sel = (c["main"] == C_DMAW) & (c["dcls"] == D_W) & (names[c["opi"]] == "lm_head")
        self.addr += c["addr"][sel].tolist()


def test_weights_after_the_layers_or_in_the_shared_embedding_table():
    obs = Addresses()
    r = run("int8", 0, 1, observers=(obs,))
    layer_w = (r.dram_bytes["weights"] - V * D) // TINY.n_layers
    assert min(obs.addr) >= TINY.n_layers * layer_w and max(obs.addr) < EMBED_BASE
    tied = dataclasses.replace(TINY, tied_embeddings=True)
    obs = Addresses()
    rt = run("int8", 0, 1, model=tied, observers=(obs,))
    assert min(obs.addr) == EMBED_BASE and max(obs.addr) < EMBED_BASE + V * D
    # one table in INT8 serves the embedding too: a row is 64 B instead of 128 B of bf16
    ht = run("host", 0, 1, model=tied)
    assert rt.dram_bytes["activations"] - ht.dram_bytes["activations"] == V * 2 - D


def test_bad_placements_are_one_line_errors():
    with pytest.raises(ConfigError, match="lm_head = 'accelerator': must be one of 'host', 'ternary', 'int8'"):
        load_config("tiny").replace(lm_head="accelerator")
    cfg = load_config("vitallm").replace(lm_head="nvfp4")  # vitallm has no FP4 core
    with pytest.raises(WorkloadError, match="no unit runs nvfp4 weights") as e:
        check_workload(cfg, standard_trace("bitnet-tiny", 0, 1))
    assert "\n" not in str(e.value)
