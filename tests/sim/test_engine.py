"""End-to-end simulator tests: a hand-verified in-order run, determinism, JSON keys, policy ordering."""

from __future__ import annotations

import json

import pytest

from lowbit.sim.breakdown import Breakdown
from lowbit.sim.config import load_config
from lowbit.sim.engine import simulate, unit_list
from lowbit.sim.errors import WorkloadError
from lowbit.sim.timeline import Timeline
from lowbit.sim.workloads import standard_trace

# ------------------------------------------------------------------------------------------------ by hand
# Preset `tiny` (200 MHz; TINT 1 core x 2 lanes x 4; BoothFlex 2x2; SFU 4 lanes; simple DRAM: 1 x16 channel
# at 4266 MT/s x 0.8 efficiency = 34.128 B/cycle, latency 100 ns = 20 cycles; transfers serialise on the
# bus, the latency is pipelined). Model `bitnet-tiny` (d 64, 4 heads / 2 KV heads, head_dim 16, FFN 128,
# ReLU^2 GLU, SubLN), one decode step at context 1, LOP off, in-order: every op starts when the previous
# op's last instruction ends, so the total is the sum of per-op durations below.
#
# DMA of n bytes issued at T on an idle bus ends at ceil(T + 20 + n / 34.128); a second one issued at T
# starts on the bus when the first's transfer ends.
# Linear 64 -> 64 (ternary, 2 bit): L = lcm(2, 2) = 2 rows; weight share = 1024 B tile / 2 consumers = 512 B;
#   R = 512 B / 16 B per row = 32 rows -> 2 tiles of 512 B. TINT: 16 passes x ceil(64/4) + (2 + 2) = 260;
#   BoothFlex ternary: 16 x ceil(64/8) + (3 + 2) = 133. DMA0 ends 36, DMA1 ends ceil(2*15.0023 + 20) = 51,
#   DMA2 66, DMA3 81.
# Linear 64 -> 32 (k, v): one tile; 64 -> 128 (gate, up) and 128 -> 64 (down, 16-row tiles of k = 128): 4
#   tiles of 512 B, each 260 cycles on TINT or 133 on BoothFlex.
# Static unit assignment (sim.tiling.UnitAssigner): each tile goes to the unit whose compile-time load (sum of
#   the cycles assigned to it so far in the chunk, attention included) plus the tile is smallest, ties TINT.
#   Loads (TINT, booth) from (0,0) per layer -> choice per tile: q B T; k B; v B; qk/av add 2*13 + 2*21 to
#   booth (260,467); o T B; gate B T B B; up T B B T; down B B T B.
# In order, each op's tiles start when their DMA ends and their unit is free:
#   q (B,T): booth [36,169], TINT [51,311] -> 311; k, v (B): 36 + 133 = 169; o (T,B): [36,296], [51,184] -> 296;
#   B T B B: [36,169] [51,311] [169,302] [302,435] -> 435; T B B T: [36,296] [51,184] [184,317] [296,556] -> 556;
#   B B T B: [36,169] [169,302] [66,326] [302,435] -> 435.
# kv_append: two 32 B writes (K+V of one KV head): ends ceil(20 + 32/34.128) = 21 and
#   ceil(2*0.9376 + 20) = 22 -> 22.
# attn_qk: per KV head a 16 B K read (ends 21, 21) + QK on BoothFlex INT8: 2 dots -> 1 pass x ceil(16/2) + 5
#   = 13; heads serialise on BoothFlex: 21 + 13 + 13 = 47.
# softmax: per KV head 2 rows x 3 passes x ceil(1/4) + 16 = 22; two heads on the SFU: 44.
# attn_av: 16 B V read (21) + 32 outputs / 2 lanes = 16 passes x ceil(1/2) + 5 = 21 per head: 21 + 21 + 21 = 63.
# SFU (rows x passes x ceil(dim/4) + latency): rmsnorm 64: 2*16+12 = 44; rope 6 rows x 16: 6*4+8 = 32;
#   residual add 64: 16+2 = 18; activation 128: 32+6 = 38; rmsnorm 128: 64+12 = 76; quantize adds a
#   17-cycle reciprocal stall per row (ceil((24 + 2 + 7) / 2)): quantize 64: 2*16+17+6 = 55;
#   quantize 128: 64+17+6 = 87.
LAYER = [44, 55, 311, 169, 169, 32, 22, 47, 44, 63,  # attn_norm quant q k v rope kv_append qk softmax av
         44, 55, 296, 18,                              # attn_sub_norm o_quant o residual
         44, 55, 435, 556, 38, 76, 87, 435, 18]        # ffn_norm quant gate up act ffn_sub_norm quant down residual
EMBED = 24  # 128 B bf16 row: ceil(20 + 128/34.128)
FINAL_NORM = 44  # lm_head on the host: 0 accelerator cycles


def test_tiny_inorder_by_hand():
    r = simulate(load_config("tiny"), standard_trace("bitnet-tiny", 0, 1), "inorder", no_lop=True)
    assert r.cycles == EMBED + 2 * sum(LAYER) + FINAL_NORM
    assert r.decode_tokens_per_s == pytest.approx(200e6 / r.cycles)


def test_tiny_inorder_breakdown_by_hand():
    """In-order, every op runs alone between the previous op's end and its own, so the critical path owns
    exactly the per-op durations above (summed per op group over the 2 layers)."""
    cfg = load_config("tiny")
    tr = standard_trace("bitnet-tiny", 0, 1)
    r = simulate(cfg, tr, "inorder", no_lop=True, breakdown=Breakdown(tr.model.n_layers, unit_list(cfg)))
    (norm, quant, q, k, v, rope, kva, qk, smax, av, subn, oq, o, res, fn, fq, gate, up, act, fsub, dq, down,
     res2) = LAYER
    want = {"embedding": EMBED, "rmsnorm": 2 * (norm + subn + fn + fsub) + FINAL_NORM,
            "quantize": 2 * (quant + oq + fq + dq), "q": 2 * q, "k": 2 * k, "v": 2 * v, "rope": 2 * rope,
            "attention": 2 * (kva + qk + av), "softmax": 2 * smax, "o": 2 * o, "elementwise": 2 * (res + res2),
            "gate": 2 * gate, "up": 2 * up, "activation": 2 * act, "down": 2 * down}
    dec = r.breakdown["phases"]["decode"]
    assert {x["op"]: x["critical_path_cycles"] for x in dec["by_op"]} == want
    assert {x["layer"]: x["critical_path_cycles"] for x in dec["by_layer"]} == \
        {-1: EMBED + FINAL_NORM, 0: sum(LAYER), 1: sum(LAYER)}
    by = {x["op"]: {**x, "mix": tuple(x["critical_path_by_constraint"].values())} for x in dec["by_op"]}
    # (compute, dram, dependency, buffer). q per layer: tile1 on TINT [51, 311] is what the next op waited for
    # (its result: dependency 260); it started when its DMA (queued behind DMA0 on the bus) ended at 51 (dram)
    assert by["q"]["mix"] == (0, 2 * 51, 2 * 260, 0) and by["q"]["binding"] == "dependency"
    # softmax: head 1 waits for the SFU busy with head 0 (compute 22), the next op for head 1 (dependency 22)
    assert by["softmax"]["mix"] == (2 * 22, 0, 2 * 22, 0)
    # rmsnorm: one SFU instruction per norm, each awaited by the next op, except the final norm, which ends
    # the step (compute)
    assert by["rmsnorm"]["mix"] == (FINAL_NORM, 0, 2 * (norm + subn + fn + fsub), 0)
    # the embedding is one DMA of one bf16 row; q is 64 x 64 ternary weights at 2 bit = 1024 B, 4096 MACs
    assert by["embedding"]["dram_bytes"]["activations"] == 128 and by["embedding"]["binding"] == "dram"
    assert by["q"]["dram_bytes"]["weights"] == 2 * 1024 and by["q"]["macs"] == 2 * 64 * 64
    assert by["q"]["operational_intensity"] == 4.0


def _run(policy="dependency-aware", **kw):
    return simulate(load_config("tiny"), standard_trace("bitnet-tiny", 8, 4), policy, **kw)


def test_deterministic_and_json_keys():
    a = _run().to_dict()
    b = _run().to_dict()
    assert set(a["timing"]) == {"wall_s", "lop_select_s", "lower_s", "schedule_s"}
    a.pop("timing")  # host timings are not simulated quantities: the only part that may differ
    b.pop("timing")
    assert a == b
    d = json.loads(_run().to_json())
    for k in ("decode_tokens_per_s", "prefill_latency_s", "cycles", "utilization", "dram_bytes", "stalls",
              "activity", "op_cycles", "lop"):
        assert k in d
    assert set(d["dram_bytes"]) == {"weights", "kv", "activations", "lop"}
    for k in ("ternary_macs", "int8_macs", "fp4_macs", "lop_elems", "sfu_elems", "sram_read_bytes",
              "sram_write_bytes", "dram_bytes"):
        assert k in d["activity"]
    assert set(d["utilization"]) >= {"tint0", "booth", "lop", "sfu", "dram"}
    # activity: every ternary MAC of the trace's projections is executed exactly once
    m = standard_trace("bitnet-tiny", 8, 4).model
    assert d["activity"]["ternary_macs"] == m.projection_params * (8 + 4)


def test_timeline_agrees_with_counters():
    """Per-unit event durations of the Perfetto timeline sum to the busy cycles the engine folds."""
    cfg = load_config("tiny")
    units = unit_list(cfg)
    tl = Timeline([n for n, _ in units], cfg.clock_hz, 1_000_000)
    r = simulate(cfg, standard_trace("bitnet-tiny", 8, 4), timeline=tl)
    doc = tl.to_json()
    assert doc["otherData"]["lowbit"] == "complete"
    cycles: dict[str, float] = {}
    for ev in doc["traceEvents"]:
        if ev["ph"] == "X":
            name = units[ev["tid"]][0]
            cycles[name] = cycles.get(name, 0.0) + ev["dur"] * cfg.clock_hz / 1e6
    busy = r.activity["busy_cycles"]
    assert set(busy) == {"tint0", "booth", "lop", "sfu"}
    for name, c in busy.items():
        assert cycles.get(name, 0.0) == pytest.approx(c, rel=1e-9)
    assert max(ev["ts"] + ev["dur"] for ev in doc["traceEvents"] if ev["ph"] == "X") <= r.cycles * 1e6 / cfg.clock_hz
    short = Timeline([n for n, _ in units], cfg.clock_hz, 10)
    simulate(cfg, standard_trace("bitnet-tiny", 8, 4), timeline=short)
    assert len(short.events) == 10 and short.to_json()["otherData"]["lowbit"].startswith("truncated")


def test_inorder_not_faster():
    for kw in ({}, {"no_lop": True}):
        assert _run("inorder", **kw).cycles >= _run("dependency-aware", **kw).cycles


def test_lop_reduces_kv_traffic():
    on = _run(lop_k=2)
    off = _run(no_lop=True)
    assert on.lop["kv_read_bytes"] < on.lop["kv_dense_bytes"]
    assert on.dram_bytes["kv"] < off.dram_bytes["kv"]
    assert off.dram_bytes["lop"] == 0 and on.dram_bytes["lop"] > 0


def test_3b_decode_step_policies():
    cfg = load_config("vitallm")
    from lowbit.sim.validation import decode_step_trace

    tr = decode_step_trace("bitnet-b1.58-3b", 256)
    dep = simulate(cfg, tr, "dependency-aware")
    ino = simulate(cfg, tr, "inorder")
    assert ino.cycles >= dep.cycles
    # compute floor: 3.22 G ternary MACs at 256 MAC/cycle
    assert dep.cycles > tr.model.projection_params / 256


def test_bad_inputs():
    with pytest.raises(WorkloadError, match="FP4 core"):
        simulate(load_config("tiny"), standard_trace("bitnet-tiny", 4, 1, "nvfp4"))
    with pytest.raises(WorkloadError, match="lop-k"):
        _run(lop_k=0)
    def with_sram(**sizes):
        base = {"weight": 2048, "act": 2048, "kv": 1024, "lop": 512, "psum": 1024, "sfu": 512}
        base.update(sizes)
        return load_config("tiny").replace(sram=[{"name": k, "bytes": v} for k, v in base.items()])

    # one token's 64 input activations cannot fit a 16 B act tile (32 B double-buffered)
    with pytest.raises(WorkloadError, match="'act'.*16 B per tile"):
        simulate(with_sram(act=32), standard_trace("bitnet-tiny", 0, 1))
    # one key (head_dim 16, INT8) does not fit an 8 B kv tile
    with pytest.raises(WorkloadError, match="'kv'"):
        simulate(with_sram(kv=16), standard_trace("bitnet-tiny", 0, 1))


def test_dims_the_tiling_cannot_cover():
    import dataclasses

    from lowbit.sim.modelspec import get_model

    m = dataclasses.replace(get_model("bitnet-tiny"), name="odd", d_model=72, d_ffn=136)
    with pytest.raises(WorkloadError, match="not a multiple of the nvfp4 block 16"):
        simulate(load_config("vitallm-fp4"), standard_trace(m, 2, 1, "nvfp4"))
