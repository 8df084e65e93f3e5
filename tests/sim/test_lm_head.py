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
    assert host.lm_head["macs"] == (1 + 1 + 1) * D * V  # the prompt's last position and each decode token


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


# ---------------------------------------------------------------------------------------------- batched and served


class HeadRows:
    """Observer: per forward step, the lm_head's logits rows (its INT8 tile MACs / (d_model x vocab)) and its
    instruction count."""

    def __init__(self):
        self.rows, self.instr = {}, {}

    def begin_step(self, *_):
        pass

    def end_step(self, *_):
        pass

    def add(self, rec, *_):
        from lowbit.sim.isa import M_INT8

        c = rec.cols
        head = np.asarray([n == "lm_head" for n in rec.names] + [False])[c["opi"]]
        self.rows[rec.step] = self.rows.get(rec.step, 0) + int(c["macs"][head & (c["mcls"] == M_INT8)].sum()) // (D * V)
        self.instr[rec.step] = self.instr.get(rec.step, 0) + int(head.sum())


def test_batched_prefill_gets_one_logits_row_per_sequence():
    """`--batch 3` prefill of 8-token prompts: every prompt ends in the step, so 3 logits rows (not 1, not 24)."""
    from lowbit.sim.trace import SeqSpec
    from lowbit.sim.workloads import batch_trace

    tr = batch_trace(TINY, [SeqSpec(0, 8, 0)] * 3)
    [ops] = list(tr.steps())
    assert [o["logits"] for o in ops if o.op == "lm_head"] == [3]
    cfg = load_config("tiny")
    h = simulate(cfg, tr)
    c = simulate(cfg.replace(lm_head="int8"), tr)
    assert c.lm_head["macs"] == h.lm_head["macs"] == 3 * D * V  # host: the same rows, excluded from time
    assert c.activity["int8_macs"] - h.activity["int8_macs"] == 3 * D * V
    assert c.dram_bytes["weights"] - h.dram_bytes["weights"] == V * D  # read once for the 3 rows
    assert c.dram_bytes["activations"] - h.dram_bytes["activations"] == 3 * V * 2  # 3 bf16 logits rows out
    # BoothFlex: 16 tiles of 16 rows x 64 inputs, 3 tokens x ceil(16/2) = 24 passes x 32 beats + 5; the SFU
    # quantizes 3 rows of 64: 3 x (2 x 16 + 17) + 6, less the fused absmax pass 3 x 16
    assert c.op_cycles["lm_head"] == 16 * (3 * 8 * 32 + 5) + 3 * (2 * 16 + 17) + 6 - 3 * 16
    # the host's lm_head costs the accelerator nothing: same cycles as before the rows were counted per sequence
    assert "lm_head" not in h.op_cycles


def test_served_steps_logits_rows():
    """Served steps (budget 8 tokens): step 1 prefills A and B (2 rows); step 2 decodes A, B and a first chunk
    of C that does not end C's prompt (2 rows); step 3 decodes A, B and ends C's prompt (3 rows). Alone, a
    prompt of 20 tokens in chunks of 8, 8, 4: no lm_head instruction in the first two steps, 1 row in the third."""
    from lowbit.sim.serve import Request, serve

    cfg = load_config("tiny").replace(lm_head="int8")
    obs = HeadRows()
    r = serve(cfg, TINY, [Request(0.0, 4, 3), Request(0.0, 4, 3), Request(0.0, 12, 1)], max_batch=3,
              max_step_tokens=8, observers=(obs,))
    assert r.steps == 3 and [obs.rows[s] for s in range(3)] == [2, 2, 3]
    obs = HeadRows()
    serve(cfg, TINY, [Request(0.0, 20, 2)], max_batch=1, max_step_tokens=8, observers=(obs,))
    assert [obs.rows[s] for s in range(4)] == [0, 0, 1, 1]
    assert obs.instr[0] == obs.instr[1] == 0 and obs.instr[2] > 0


def test_logits_field_is_validated(tmp_path):
    import json

    from lowbit.sim.errors import TraceError
    from lowbit.sim.trace import SeqSpec, write_trace
    from lowbit.sim.trace_load import load_trace
    from lowbit.sim.workloads import batch_trace

    tr = batch_trace(TINY, [SeqSpec(0, 5, 2), SeqSpec(3, 0, 1)])
    write_trace(tr, tmp_path / "t")
    heads = [o for o in load_trace(tmp_path / "t").ops if o.op == "lm_head"]
    assert [(o.step, o["tokens"], o["logits"]) for o in heads] == [(0, 5, 1), (1, 2, 2), (2, 1, 1)]
    for step, value, msg in ((1, 1, r"lm_head.logits = 1 contradicts .*one logits row per sequence in the step: 2"),
                             (2, 2, r"lm_head.logits = 2: more logits rows than the step's tokens \(1\)")):
        lines = [json.loads(x) for x in (tmp_path / "t" / "ops.jsonl").read_text().splitlines()]
        next(x for x in lines if x["op"] == "lm_head" and x["step"] == step)["logits"] = value
        bad = tmp_path / f"bad{step}"
        write_trace(tr, bad)
        (bad / "ops.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        with pytest.raises(TraceError, match=msg):
            load_trace(bad)
