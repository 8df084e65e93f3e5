"""Fuzz the hardware-config loader: every generated config is either accepted (and then simulates a small
workload to finite, positive numbers) or refused with one line -- never a traceback, never a hang."""

from __future__ import annotations

import copy
import math
import random
from collections import Counter
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from lowbit.sim.config import PRESET_DIR, from_dict, load_config, to_dict
from tests.fuzz.util import CASES, FUZZ, hostile_value, run_case

PRESETS = ["tiny", "vitallm", "vitallm-fp4"]
BASE = {p: to_dict(load_config(p)) for p in PRESETS}
TEXT = {p: (PRESET_DIR / f"{p}.toml").read_bytes() for p in PRESETS}


def _leaves(d, path=()):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(d, list) and d and isinstance(d[0], dict):
        for i, v in enumerate(d):
            yield from _leaves(v, (*path, i))
    else:
        yield path, d


def _parent(d, path):
    for p in path[:-1]:
        d = d[p]
    return d


@st.composite
def mutated_dict(draw):
    data = copy.deepcopy(BASE[draw(st.sampled_from(PRESETS))])
    leaves = list(_leaves(data))
    for _ in range(draw(st.integers(1, 3))):
        path, old = draw(st.sampled_from(leaves))
        kind = draw(st.sampled_from(["value", "scale", "delete", "unknown", "table", "sram"]))
        try:
            parent = _parent(data, path)
            if kind == "value":
                parent[path[-1]] = draw(hostile_value)
            elif kind == "scale" and isinstance(old, int | float) and not isinstance(old, bool):
                f = draw(st.sampled_from([-1, 0, 1e-9, 0.5, 2, 1e3, 1e9, 1e19, 1e300]))
                parent[path[-1]] = type(old)(old * f) if math.isfinite(old * f) else old * f
            elif kind == "delete":
                del parent[path[-1]]
            elif kind == "unknown":
                parent[draw(st.text(min_size=1, max_size=8))] = draw(hostile_value)
            elif kind == "table":
                data[draw(st.sampled_from(list(data)))] = draw(hostile_value)
            elif kind == "sram":
                picked = random.Random(draw(st.integers(0, 99))).choice(data["sram"])
                if not isinstance(picked, dict):
                    continue  # an earlier mutation replaced the sram table with a hostile value
                entry = dict(picked)
                entry.pop(draw(st.sampled_from(["name", "bytes", "banks", "none"])), None)
                data["sram"].append(entry)
        except (KeyError, TypeError, IndexError, AttributeError):
            pass  # the path went away through an earlier mutation
    return data


@st.composite
def mutated_text(draw):
    raw = bytearray(TEXT[draw(st.sampled_from(PRESETS))])
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(raw)))
        op = draw(st.sampled_from(["insert", "delete", "digit", "bytes"]))
        if op == "insert":
            raw[i:i] = draw(st.sampled_from([b"9" * 30, b"e300", b"nan", b"-", b"inf", b'"', b"[", b"\n[dram]\n",
                                             b"\xff\xfe", b"= 1", b"0x7fffffffffffffff"]))
        elif op == "delete":
            del raw[i:i + draw(st.integers(1, 40))]
        elif op == "digit":
            digits = [j for j, c in enumerate(raw) if 48 <= c <= 57]
            if digits:
                raw[draw(st.sampled_from(digits))] = draw(st.sampled_from(b"0123456789"))
        else:
            raw[i:i] = draw(st.binary(max_size=8))
    return bytes(raw)


def _simulates(cfg) -> None:
    """An accepted config runs a small workload to finite, positive numbers (or a one-line WorkloadError)."""
    from lowbit.sim.engine import simulate
    from lowbit.sim.workloads import check_workload, standard_trace, weight_format_for

    tr = standard_trace("bitnet-tiny", 2, 1, weight_format_for(cfg))
    check_workload(cfg, tr)
    r = simulate(cfg, tr)
    assert r.cycles > 0 and math.isfinite(r.decode_tokens_per_s or 1.0)
    assert all(math.isfinite(v) and v >= 0 for v in r.utilization.values())


def test_config_loader_fuzz(tmp_path: Path):
    seen: Counter[str] = Counter()

    @FUZZ
    @given(st.one_of(mutated_dict(), mutated_text()), st.integers(0, 9))
    def case(data, pick):
        if isinstance(data, bytes):
            f = tmp_path / "fuzz.toml"
            f.write_bytes(data)
            cfg, err = run_case(load_config, f, what=f"TOML {data[:200]!r}")
        else:
            cfg, err = run_case(from_dict, data, "fuzz.toml", what=f"config {data!r}"[:2000])
        seen["cases"] += 1
        seen["refused" if err else "accepted"] += 1
        if cfg is not None and pick == 0:  # a tenth of the accepted configs also simulate
            run_case(_simulates, cfg, what=f"simulating {data!r}"[:2000], timeout=20)
            seen["simulated"] += 1

    case()
    assert seen["cases"] >= CASES, seen
    assert seen["accepted"] > 20 and seen["refused"] > CASES // 3, seen  # both sides of the schema are exercised
