"""Perfetto timelines: the file parses back with Perfetto's own protobuf definitions (the `perfetto` PyPI
package), every instruction is one slice on its unit's track (slice count per unit = the simulator's
instruction count), slices nest on every track, counters integrate back to the DRAM bytes, windows cut
steps and layers, and lowbit's own streaming reader decodes the same events."""

from __future__ import annotations

import collections
import os

import numpy as np
import pytest

from lowbit.sim import pftrace
from lowbit.sim.config import load_config
from lowbit.sim.engine import simulate, unit_list
from lowbit.sim.errors import LowbitError
from lowbit.sim.timeline import Window, open_timeline
from lowbit.sim.workloads import standard_trace

pb = pytest.importorskip("perfetto.protos.perfetto.trace.perfetto_trace_pb2")


def _run(tmp_path, window=None, hw="tiny", prefill=8, decode=4, model="bitnet-tiny"):
    cfg = load_config(hw)
    tr = standard_trace(model, prefill, decode)
    path = tmp_path / "t.pftrace"
    tl = open_timeline(path, cfg, "test run", window)
    r = simulate(cfg, tr, timeline=tl)
    info = tl.close()
    return cfg, r, path, info


def _parse(path):
    t = pb.Trace()
    t.ParseFromString(path.read_bytes())
    tracks, names, events = {}, {}, []
    for p in t.packet:
        if p.HasField("track_descriptor"):
            d = p.track_descriptor
            tracks[d.uuid] = (d.name, d.parent_uuid, d.HasField("counter"))
        if p.HasField("interned_data"):
            names.update({e.iid: e.name for e in p.interned_data.event_names})
        if p.HasField("track_event"):
            te = p.track_event
            events.append((p.timestamp, te.type, te.track_uuid, te.name_iid, te.double_counter_value))
    return tracks, names, events


def test_slices_per_unit_equal_instructions(tmp_path):
    cfg, r, path, info = _run(tmp_path)
    tracks, names, events = _parse(path)
    by_name = {v[0]: u for u, v in tracks.items()}
    begins = collections.Counter(e[2] for e in events if e[1] == 1)
    ends = collections.Counter(e[2] for e in events if e[1] == 2)
    assert begins == ends
    per_unit = collections.Counter()
    for u, n in begins.items():
        name, parent, _ = tracks[u]
        owner = tracks[parent][0] if parent in tracks and tracks[parent][0] in r.instructions_by_unit else name
        per_unit[owner] += n
    for unit, n in r.instructions_by_unit.items():
        assert per_unit[unit] == n, unit
    assert info["slices"] == r.instructions_by_unit
    assert per_unit["steps"] == 1 + 4  # prefill + 4 decode steps
    # slices nest on every track: in file order (Perfetto's tie order) begin/end alternate and end >= begin
    open_at: dict[int, int] = {}
    for ts, typ, trk, _iid, _v in events:
        if typ == 1:
            assert trk not in open_at, f"overlapping slices on {tracks[trk][0]}"
            open_at[trk] = ts
        elif typ == 2:
            assert ts >= open_at.pop(trk)
    # names carry step, op and sub-kind; every begin names an interned string
    got = {names[e[3]] for e in events if e[1] == 1}
    assert "prefill layers.0.attn.q tile" in got and "decode4 layers.1.ffn.down w_dma" in got
    assert {"steps", "layers", "DRAM bandwidth (GB/s)", "SRAM weight occupancy (bytes)"} <= set(by_name)
    # DRAM bandwidth counter: GB/s x bin width (ns) summed = the run's DRAM bytes (bytes spread over each DMA)
    bin_ns = info["bin_cycles"] * 1e9 / cfg.clock_hz
    gbps = [e[4] for e in events if e[1] == 4 and e[2] == by_name["DRAM bandwidth (GB/s)"]]
    assert sum(gbps) * bin_ns == pytest.approx(sum(r.dram_bytes.values()))
    # buffer occupancy never exceeds the buffer
    for b in cfg.sram:
        occ = [e[4] for e in events if e[1] == 4 and e[2] == by_name[f"SRAM {b.name} occupancy (bytes)"]]
        assert max(occ) <= b.bytes


def test_reader_matches_protobuf(tmp_path):
    _cfg, _r, path, _info = _run(tmp_path)
    _tracks, names, events = _parse(path)
    got = []
    headers = []
    for ev, hdr in pftrace.iter_events(path, block=1000):  # small blocks: packets cut at block ends
        got += list(zip(ev["ts"].tolist(), ev["type"].tolist(), ev["track"].tolist(), ev["iid"].tolist(),
                        ev["value"].tolist(), strict=True))
        headers += hdr
    assert got == events
    tr2, names2 = pftrace.descriptors(headers)
    assert names2 == names and {u: d["name"] for u, d in tr2.items()} == {u: v[0] for u, v in _tracks.items()}


def test_window(tmp_path):
    cfg, r, path, info = _run(tmp_path, window="steps=2-3,layers=1")
    tracks, names, events = _parse(path)
    labels = {names[e[3]] for e in events if e[1] == 1 and tracks[e[2]][0] not in ("steps", "layers")}
    assert labels and all(x.startswith(("decode2 layers.1.", "decode3 layers.1.")) for x in labels)
    steps = sorted(names[e[3]] for e in events if e[1] == 1 and tracks[e[2]][0] == "steps")
    assert steps == ["decode step 2", "decode step 3"]
    assert sum(info["slices"].values()) < sum(r.instructions_by_unit.values())


def test_window_parse_and_bad_names(tmp_path):
    assert Window.parse("steps=1-4,layers=0") == Window((1, 4), (0, 0))
    for bad in ("steps=4-1", "step=1", "layers=a", "", "steps=1,steps=2"):
        with pytest.raises(LowbitError):
            Window.parse(bad)
    with pytest.raises(LowbitError, match="pftrace"):
        open_timeline(tmp_path / "t.txt", load_config("tiny"), "x")


def test_encoder_against_protobuf():
    """The numba slice encoder writes what Perfetto's generated classes read (large varints included)."""
    ts_b = np.array([0, 5, 2**40], np.int64)
    ts_e = np.array([5, 2**21, 2**40 + 3], np.int64)
    trk = np.array([3, 300, 2**20], np.int64)
    iid = np.array([1, 127, 128], np.int64)
    buf = np.zeros(1000, np.uint8)
    n = pftrace.encode_slices(buf, ts_b, ts_e, trk, iid)
    t = pb.Trace()
    t.ParseFromString(buf[:n].tobytes())
    got = [(p.timestamp, p.track_event.type, p.track_event.track_uuid, p.track_event.name_iid,
            p.trusted_packet_sequence_id, p.sequence_flags) for p in t.packet]
    want = []
    for i in range(3):
        want += [(int(ts_b[i]), 1, int(trk[i]), int(iid[i]), 1, 2), (int(ts_e[i]), 2, int(trk[i]), 0, 1, 0)]
    assert got == want


def test_units_listed_once(tmp_path):
    cfg, _r, path, _info = _run(tmp_path)
    tracks, _names, _events = _parse(path)
    top = [v[0] for v in tracks.values() if v[1] == 1]
    assert [n for n in top if n in dict(unit_list(cfg))] == [n for n, _ in unit_list(cfg)]


def test_cli_breakdown_and_timeline(tmp_path):
    from tests.cli_util import assert_one_line_error, lowbit

    j, tl = tmp_path / "r.json", tmp_path / "run.pftrace"
    p = lowbit("sim", "--model", "bitnet-tiny", "--hw", "tiny", "--prefill", "8", "--decode", "3", "--breakdown",
               "--breakdown-steps", "2", "--json", str(j), "--timeline", str(tl), "--timeline-window", "steps=1-3",
               env={**os.environ, "COLUMNS": "200"})
    assert p.returncode == 0, p.stderr
    assert "breakdown, decode step 2" in p.stdout and "critical-path cycles" in p.stdout
    assert "instruction slices" in p.stdout and tl.is_file()
    import json

    d = json.loads(j.read_text())
    assert set(d["breakdown"]["phases"]) == {"prefill", "decode", "decode step 2"}
    assert not list(tmp_path.glob(".*"))  # the temporary trace was renamed
    r = lowbit("sim", "--model", "bitnet-tiny", "--hw", "tiny", "--prefill", "4", "--decode", "3",
               "--timeline", str(tmp_path / "w.pftrace"), "--timeline-window", "steps=3-1")
    assert_one_line_error(r, "empty")


@pytest.mark.parametrize("args,pat", [(["--timeline-window", "layers=x"], "expected"),
                                      (["--breakdown-steps", "9"], "decode step"),
                                      (["--timeline", "x.txt"], "pftrace")])
def test_cli_bad_options(tmp_path, monkeypatch, capsys, args, pat):
    from lowbit.cli import main

    monkeypatch.chdir(tmp_path)
    rc = main(["sim", "--model", "bitnet-tiny", "--hw", "tiny", "--prefill", "4", "--decode", "3", "--quiet",
               "--timeline", "w.pftrace", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and pat in err and "\n" not in err
    assert not list(tmp_path.iterdir())  # nothing written, no temporary file left
