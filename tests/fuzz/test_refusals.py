"""Each kind of input that used to be accepted silently (a wrong number, a made-up weight, a hang) or that
crashed with a traceback is now refused before any work, with one line naming the file, the field, the value
and what is allowed -- in-process through the loaders and through lowbit.cli.main."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lowbit.sim.config import from_dict, load_config, to_dict
from lowbit.sim.errors import ConfigError, LowbitError, TraceError
from lowbit.sim.trace import write_trace
from lowbit.sim.trace_load import load_trace
from lowbit.sim.workloads import standard_trace
from tests.fuzz.util import cli

# ----------------------------------------------------------------------------- hardware configs


def _cfg(**edits):
    d = to_dict(load_config("vitallm"))
    for key, v in edits.items():
        node = d
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[leaf] = v
    return from_dict(d, source="my.toml")


CONFIGS = [
    # silent wrong numbers: int64 wrap (fewer cycles), absurd clocks, negative physics
    ({"dram.tRCD_ns": 1e19}, r"my.toml: dram.tRCD_ns = 1e\+19: must be <= 1e\+06 ns"),
    ({"clock_hz": 1e300}, r"my.toml: clock_hz = 1e\+300: must be <= 1e\+11 Hz"),
    ({"supply_v": -0.8}, r"supply_v = -0.8: must be >= 0.3 V"),
    ({"dram.energy_pj_per_bit": -4.0}, r"dram.energy_pj_per_bit = -4.0: must be >= 0 pJ/bit"),
    ({"dram.latency_ns": math.nan}, r"dram.latency_ns = nan: must be finite"),
    # tracebacks before: ZeroDivisionError (burst of 0 bytes), OverflowError (int64), MemoryError (huge counts)
    ({"dram.bus_bits": 1, "dram.burst_length": 1}, r"dram.bus_bits = 1: must be >= 8 bits"),
    ({"sram.0.bytes": 2**70}, r"sram\[0\].bytes = 1180591620717411303424: must be <= 1073741824 bytes"),
    ({"sfu.latency.softmax": 10**30}, r"sfu.latency.softmax = 10{30}: must be <= 65536"),
    ({"dram.channels": 10**9}, r"dram.channels = 1000000000: must be <= 64 channels"),
    ({"tint.cores": 65536}, r"tint: 65536 physical copies; at most 64"),
    ({"sram.0.name": "wieght"}, r"sram\[0\].name = 'wieght': unknown buffer \(did you mean 'weight'\?\)"),
]


@pytest.mark.parametrize("edits,pattern", CONFIGS, ids=[next(iter(e)) for e, _ in CONFIGS])
def test_config_refused(edits, pattern):
    with pytest.raises(ConfigError, match=pattern) as e:
        _cfg(**edits)
    assert "\n" not in str(e.value)


def test_sram_entry_without_name_or_bytes():
    for missing in ("name", "bytes"):
        d = to_dict(load_config("tiny"))
        d["sram"][0].pop(missing)
        with pytest.raises(ConfigError, match=f"sram\\[0\\]: missing required field '{missing}'"):
            from_dict(d, source="my.toml")


# ----------------------------------------------------------------------------- traces


@pytest.fixture()
def trace_dir(tmp_path):
    return write_trace(standard_trace("bitnet-tiny", 3, 2), tmp_path / "tr")


def _ops(root):
    return [json.loads(x) for x in (root / "ops.jsonl").read_text().splitlines()]


def _write_ops(root, ops):
    (root / "ops.jsonl").write_text("".join(json.dumps(o) + "\n" for o in ops))


def _set(root, pick, **fields):
    ops = _ops(root)
    i = next(i for i, o in enumerate(ops) if pick(o))
    ops[i].update(fields)
    _write_ops(root, ops)
    return i + 1


def _swap_phases(root):
    ops = _ops(root)
    pre = [o for o in ops if o["phase"] == "prefill"]
    _write_ops(root, [o for o in ops if o["phase"] == "decode"] + pre)


def _manifest(root, fn):
    m = json.loads((root / "manifest.json").read_text())
    fn(m)
    (root / "manifest.json").write_text(json.dumps(m))  # json.dumps writes NaN as the JSON extension `NaN`


TRACES = [
    ("phases swapped", _swap_phases, r"prefill step 0 after step 2: ops must be in execution order"),
    ("head_dim contradicts the model", lambda r: _set(r, lambda o: o["op"] == "attn_qk", head_dim=32),
     r"attn_qk.head_dim = 32 contradicts model bitnet-tiny \(its head_dim: 16\)"),
    ("heads contradict the model", lambda r: _set(r, lambda o: o["op"] == "rope", heads=8),
     r"rope.heads = 8 contradicts model bitnet-tiny"),
    ("prefill 1e12", lambda r: _manifest(r, lambda m: m.update(prefill=10**12)),
     r"prefill \+ decode = 1000000000002: must be in 1..256"),
    ("NaN eps", lambda r: _manifest(r, lambda m: m["model"].update(norm_eps=float("nan"))),
     r"manifest.json: invalid JSON \(NaN is not a number JSON allows\)"),
    ("layer beyond the model", lambda r: _set(r, lambda o: o["layer"] == 1, layer=2),
     r"layer = 2: model bitnet-tiny has layers 0..1"),
    ("in_features 1e12", lambda r: _set(r, lambda o: o["op"] == "linear", in_features=10**12),
     r"linear.in_features = 1000000000000: must be <= 2147483648"),
    ("in_features contradicts the model", lambda r: _set(r, lambda o: o["op"] == "linear", in_features=96),
     r"linear.in_features = 96 contradicts model bitnet-tiny \(allowed: 64 or 128\)"),
    ("context contradicts the step", lambda r: _set(r, lambda o: o["op"] == "attn_qk" and o["step"] == 2, context=9),
     r"attn_qk.context = 9 contradicts model bitnet-tiny \(prefill \+ step: 5\)"),
    ("a decode step missing", lambda r: (_write_ops(r, [o for o in _ops(r) if o["step"] != 1]),
                                         _manifest(r, lambda m: m.pop("n_ops"))), r"steps \[1\] are missing"),
    ("decode tokens", lambda r: _set(r, lambda o: o["phase"] == "decode", tokens=7),
     r"embedding.tokens = 7 contradicts model bitnet-tiny \(one token per decode step: 1\)"),
    ("gated contradicts the FFN", lambda r: _set(r, lambda o: o["op"] == "activation", gated=False),
     r"activation.gated = false contradicts model bitnet-tiny's ffn_act 'relu2_glu'"),
    ("invalid UTF-8", lambda r: (r / "ops.jsonl").write_bytes(b'{"op": "\xff\xfe"}\n'), r"ops.jsonl:1: not a UTF-8 text file"),
    ("deep nesting", lambda r: (r / "ops.jsonl").write_text("[" * 60000 + "\n"), r"ops.jsonl:1: invalid JSON \(nested too deeply\)"),
]


@pytest.mark.parametrize("desc,breaker,pattern", TRACES, ids=[t[0] for t in TRACES])
def test_trace_refused(trace_dir, desc, breaker, pattern):
    breaker(trace_dir)
    with pytest.raises(TraceError, match=pattern) as e:
        load_trace(trace_dir)
    assert "\n" not in str(e.value)
    rc, _, err = cli(["sim", "--trace", str(trace_dir), "--hw", "tiny", "--quiet"])
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err


def _tensor_trace(tmp_path, k_value=None, garbage=False):
    from lowbit.sim.lop_select import synthetic_qk_trace

    root = synthetic_qk_trace("bitnet-tiny", 3, 1, tmp_path / "qk", seed=0)
    f = root / "tensors" / "step00001.safetensors"
    if garbage:
        f.write_bytes(b"\x00\x01garbage" * 10)
    else:
        from safetensors.numpy import load_file, save_file

        d = load_file(str(f))
        key = next(k for k in d if k.endswith(".k"))
        d[key] = d[key].copy()
        d[key][0, 0, 0] = k_value
        save_file(d, str(f))
    return root


def test_garbage_tensor_file_and_nan_keys(tmp_path):
    with pytest.raises(TraceError, match=r"step00001.safetensors: not a readable safetensors tensor file"):
        load_trace(_tensor_trace(tmp_path / "a", garbage=True))
    with pytest.raises(TraceError, match=r"tensor 'L\d.s1.k' holds NaN or infinite values"):
        load_trace(_tensor_trace(tmp_path / "b", k_value=np.nan))
    with pytest.raises(TraceError, match=r"holds NaN or infinite values"):
        load_trace(_tensor_trace(tmp_path / "c", k_value=np.inf))


def test_workload_bounds_are_named(monkeypatch):
    import dataclasses

    from lowbit.sim import workloads
    from lowbit.sim.modelspec import ModelSpec, get_model
    from lowbit.sim.trace import Trace

    # memory: DRAM footprint against the simulator's address map
    big = ModelSpec("wide", 4096, 2**17, 1024, 1024, 2**19, 2**22, max_positions=2**20)
    with pytest.raises(LowbitError, match=r"weights of .* GiB do not fit the simulator's DRAM address map"):
        workloads.check_workload(load_config("vitallm"), Trace(big, 1, 1, []))
    # a million decode steps: the trace is generated step by step (nothing held up front), and the run is
    # refused by its instruction estimate before any step is simulated
    long_ctx = dataclasses.replace(get_model("bitnet-b1.58-2b4t"), max_positions=2**20)
    with pytest.raises(LowbitError, match=r"tile instructions .* more than the bound"):
        workloads.check_workload(load_config("vitallm"), standard_trace(long_ctx, 1, 2**20 - 1))
    # time: the instruction estimate (3B, 64 + 16 tokens: ~14.2 M, measured 14.23 M) against the bound
    tr = standard_trace("bitnet-b1.58-3b", 64, 16)
    size = workloads.check_workload(load_config("vitallm"), tr)
    assert 14_000_000 < size.instructions < 14_500_000
    monkeypatch.setattr(workloads, "MAX_INSTRUCTIONS", size.instructions - 1)
    with pytest.raises(LowbitError, match=r"~14,\d{3},\d{3} tile instructions .* more than the bound"):
        workloads.check_workload(load_config("vitallm"), tr)
    # and a tile that cannot fit its SRAM buffer is refused before any work, naming the buffer
    with pytest.raises(LowbitError, match=r"does not fit SRAM buffer 'act'"):
        workloads.check_workload(load_config("tiny"), standard_trace("bitnet-b1.58-2b4t", 4, 1))


# ----------------------------------------------------------------------------- command-line hangs


@pytest.mark.parametrize("argv,pattern", [
    (["validate", "vitallm", "--contexts", "1000000000000"], r"--contexts 1000000000000: must be <= 2048 tokens"),
    (["validate", "vitallm", "--decode", "1000000000000"], r"--decode 1000000000000: must be <= 1984 tokens"),
    (["train-tiny", "--minutes", "nan"], r"--minutes nan: must be a finite number"),
    (["train-tiny", "--minutes", "inf"], r"--minutes inf: must be a finite number"),
    (["sim", "--model", "bitnet-tiny", "--hw", "tiny", "--prefill", "1000000000000"], r"--prefill 1000000000000: must be <="),
    (["sim", "--model", "bitnet-tiny", "--hw", "tiny", "--lop-k", "9223372036854775807"], r"--lop-k .*: must be <= 65536"),
    (["trace", "--model", "bitnet-tiny", "--out", "x", "--seed", "4294967296"], r"--seed 4294967296: must be <= 4294967295"),
    (["eval-tiny", ".", "--k", "8,1e12"], r"--k .*'1e12' is not an integer"),
])
def test_option_refused(tmp_path, monkeypatch, argv, pattern):
    import re

    monkeypatch.chdir(tmp_path)
    rc, _, err = cli(argv)
    assert rc == 2 and re.search(pattern, err) and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())  # nothing written


def test_errors_doc_lists_every_error_class():
    """docs/errors.md names every LowbitError subclass lowbit defines, and no other."""
    import re
    from pathlib import Path

    import lowbit.explore.spec  # noqa: F401  (defines SpecError)
    import lowbit.rtl.spice  # noqa: F401  (defines CharacterisationError)
    import lowbit.rtl.synth  # noqa: F401  (defines SynthError)
    import lowbit.sim.program  # noqa: F401  (defines ProgramError)

    def subclasses(c):
        for s in c.__subclasses__():
            if s.__module__.startswith("lowbit."):
                yield s
            yield from subclasses(s)

    doc = (Path(__file__).resolve().parents[2] / "docs" / "errors.md").read_text()
    listed = set(re.findall(r"^\| `(\w+Error)`", doc, re.M))
    assert listed == {c.__name__ for c in subclasses(LowbitError)}
    assert "| 2 |" in doc and "| 130 |" in doc
