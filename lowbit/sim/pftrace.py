"""Perfetto's binary trace format, written and read without the perfetto package: the protobuf wire format
(protobuf.dev, "Encoding") of the few messages a simulator timeline needs, from Perfetto's
protos/perfetto/trace/trace.proto and trace_packet.proto (field numbers below).

A trace is `Trace { repeated TracePacket packet = 1; }`, i.e. a concatenation of length-prefixed packets,
so it can be streamed: the file never has to be held in memory. Used here:
- TracePacket: timestamp = 8 (ns), trusted_packet_sequence_id = 10, track_event = 11, interned_data = 12,
  sequence_flags = 13 (1: incremental state cleared, 2: needs incremental state), track_descriptor = 60;
- TrackEvent: type = 9 (1 slice begin, 2 slice end, 4 counter), name_iid = 10, track_uuid = 11,
  double_counter_value = 44;
- TrackDescriptor: uuid = 1, name = 2, parent_uuid = 5, counter = 8 (CounterDescriptor: unit_name = 6),
  child_ordering = 11 (3: explicit), sibling_order_rank = 12;
- InternedData: event_names = 2 (EventName: iid = 1, name = 2).
Slices on one track must nest; ties at equal timestamps are ordered by file position (Perfetto's trace
sorter breaks timestamp ties by the order in which it read the events), so an end written before a begin
at the same timestamp closes the earlier slice first.

Reading (`iter_events`) decodes exactly these fields, in numba, block by block; tests check it against
Perfetto's own protobuf definitions (the `perfetto` PyPI package).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from numba import njit

SEQ_ID = 1
FLAG_CLEARED, FLAG_NEEDS = 1, 2
T_BEGIN, T_END, T_COUNTER = 1, 2, 4

# ------------------------------------------------------------------------------------ Python encoding


def varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fv(field: int, v: int) -> bytes:
    """A varint field."""
    return varint(field << 3) + varint(v)


def fb(field: int, data: bytes | str) -> bytes:
    """A length-delimited field (bytes, string or an encoded message)."""
    d = data.encode() if isinstance(data, str) else data
    return varint((field << 3) | 2) + varint(len(d)) + d


def packet(body: bytes) -> bytes:
    """One Trace.packet entry."""
    return fb(1, body)


def track_descriptor(uuid: int, name: str, parent: int = 0, counter_unit: str | None = None,
                     rank: int | None = None, explicit_children: bool = False) -> bytes:
    td = fv(1, uuid) + fb(2, name)
    if parent:
        td += fv(5, parent)
    if counter_unit is not None:
        td += fb(8, fb(6, counter_unit))
    if explicit_children:
        td += fv(11, 3)
    if rank is not None:
        td += fv(12, rank)
    return packet(fv(10, SEQ_ID) + fb(60, td))


def interned_names(names: list[tuple[int, str]], first: bool) -> bytes:
    body = b"".join(fb(2, fv(1, iid) + fb(2, n)) for iid, n in names)
    flags = FLAG_CLEARED | FLAG_NEEDS if first else FLAG_NEEDS
    return packet(fv(10, SEQ_ID) + fv(13, flags) + fb(12, body))


def counter_packets(ts: np.ndarray, uuid: int, values: np.ndarray) -> bytes:
    """Counter events (python loop; counters are few: one per time bin)."""
    out = bytearray()
    for t, v in zip(ts.tolist(), values.tolist(), strict=True):
        te = fv(9, T_COUNTER) + fv(11, uuid) + varint((44 << 3) | 1) + struct.pack("<d", float(v))
        out += packet(fv(8, int(t)) + fv(10, SEQ_ID) + fb(11, te))
    return bytes(out)


# ------------------------------------------------------------------------------------ numba encoding


@njit(cache=True)
def _vlen(v):
    n = 1
    while v >= 128:
        v >>= 7
        n += 1
    return n


@njit(cache=True)
def _put(buf, pos, v):
    while v >= 128:
        buf[pos] = (v & 0x7F) | 0x80
        v >>= 7
        pos += 1
    buf[pos] = v
    return pos + 1


@njit(cache=True)
def encode_slices(buf, ts_b, ts_e, track, iid):
    """Begin + end packets of every slice i (begin at ts_b[i] on track[i] named iid[i], end at ts_e[i]),
    in order; returns the bytes written into `buf` (>= 48 bytes per slice of room)."""
    pos = 0
    for i in range(ts_b.shape[0]):
        # begin: TrackEvent{type=1, track_uuid, name_iid}
        te = 2 + 1 + _vlen(track[i]) + 1 + _vlen(iid[i])
        body = 1 + _vlen(ts_b[i]) + 2 + 2 + 1 + _vlen(te) + te
        buf[pos] = 0x0A
        pos = _put(buf, pos + 1, body)
        buf[pos] = 0x40
        pos = _put(buf, pos + 1, ts_b[i])
        buf[pos] = 0x50
        buf[pos + 1] = 1
        buf[pos + 2] = 0x68
        buf[pos + 3] = FLAG_NEEDS
        buf[pos + 4] = 0x5A
        pos = _put(buf, pos + 5, te)
        buf[pos] = 0x48
        buf[pos + 1] = T_BEGIN
        buf[pos + 2] = 0x58
        pos = _put(buf, pos + 3, track[i])
        buf[pos] = 0x50
        pos = _put(buf, pos + 1, iid[i])
        # end: TrackEvent{type=2, track_uuid}
        te = 2 + 1 + _vlen(track[i])
        body = 1 + _vlen(ts_e[i]) + 2 + 1 + _vlen(te) + te
        buf[pos] = 0x0A
        pos = _put(buf, pos + 1, body)
        buf[pos] = 0x40
        pos = _put(buf, pos + 1, ts_e[i])
        buf[pos] = 0x50
        buf[pos + 1] = 1
        buf[pos + 2] = 0x5A
        pos = _put(buf, pos + 3, te)
        buf[pos] = 0x48
        buf[pos + 1] = T_END
        buf[pos + 2] = 0x58
        pos = _put(buf, pos + 3, track[i])
    return pos


# ------------------------------------------------------------------------------------ reading


@njit(cache=True)
def _get(buf, pos):
    v = np.int64(0)
    shift = 0
    while True:
        b = buf[pos]
        v |= np.int64(b & 0x7F) << shift
        pos += 1
        if b < 128:
            return v, pos
        shift += 7


@njit(cache=True)
def _skip(buf, pos, wt):
    if wt == 0:
        _, pos = _get(buf, pos)
    elif wt == 1:
        pos += 8
    elif wt == 2:
        n, pos = _get(buf, pos)
        pos += n
    elif wt == 5:
        pos += 4
    return pos


@njit(cache=True)
def _decode(buf, end, o_ts, o_type, o_track, o_iid, o_val, o_other):
    """Decode whole packets in buf[:end]: track events into the o_* arrays, offsets and lengths of other
    packets into o_other; returns (bytes consumed, events, others)."""
    pos = 0
    n = 0
    m = 0
    while pos < end:
        if n >= o_ts.shape[0] or m >= o_other.shape[0]:
            break
        start = pos
        if buf[pos] != 0x0A:
            return -1, n, m
        q = pos + 1
        ln = np.int64(0)
        shift = 0
        ok = False
        while q < end:
            byte = buf[q]
            ln |= np.int64(byte & 0x7F) << shift
            q += 1
            if byte < 128:
                ok = True
                break
            shift += 7
        if not ok or q + ln > end:
            break  # the packet continues in the next block
        p = q
        stop = q + ln
        ts = np.int64(0)
        te_lo = -1
        te_hi = -1
        while p < stop:
            key, p = _get(buf, p)
            f = key >> 3
            wt = key & 7
            if f == 8 and wt == 0:
                ts, p = _get(buf, p)
            elif f == 11 and wt == 2:
                ln2, p = _get(buf, p)
                te_lo = p
                te_hi = p + ln2
                p = te_hi
            else:
                p = _skip(buf, p, wt)
        if te_lo >= 0:
            typ = np.int64(0)
            trk = np.int64(0)
            iid = np.int64(0)
            val = 0.0
            p = te_lo
            while p < te_hi:
                key, p = _get(buf, p)
                f = key >> 3
                wt = key & 7
                if f == 9 and wt == 0:
                    typ, p = _get(buf, p)
                elif f == 11 and wt == 0:
                    trk, p = _get(buf, p)
                elif f == 10 and wt == 0:
                    iid, p = _get(buf, p)
                elif f == 44 and wt == 1:
                    val = buf[p:p + 8].copy().view(np.float64)[0]
                    p += 8
                else:
                    p = _skip(buf, p, wt)
            o_ts[n] = ts
            o_type[n] = typ
            o_track[n] = trk
            o_iid[n] = iid
            o_val[n] = val
            n += 1
        else:
            o_other[m, 0] = start
            o_other[m, 1] = stop - start
            m += 1
        pos = stop
    return pos, n, m


def iter_events(path: Path, block: int = 32 << 20) -> Iterator[tuple[dict[str, np.ndarray], list[bytes]]]:
    """Stream a trace file: per block, the track events as arrays (ts, type, track, iid, value) and the
    other packets (descriptors, interned data) as raw TracePacket bodies."""
    with open(path, "rb") as f:
        rest = b""
        while True:
            chunk = f.read(block)
            data = rest + chunk
            if not data:
                return
            buf = np.frombuffer(data, np.uint8)
            cap = len(data) // 8 + 16
            ev = {k: np.zeros(cap, np.int64) for k in ("ts", "type", "track", "iid")}
            ev["value"] = np.zeros(cap, np.float64)
            other = np.zeros((cap // 4 + 16, 2), np.int64)
            used, n, m = _decode(buf, len(data), ev["ts"], ev["type"], ev["track"], ev["iid"], ev["value"], other)
            if used < 0:
                raise ValueError(f"{path}: not a Perfetto protobuf trace (bad packet framing)")
            hdr = [_body(data, int(o), int(ln)) for o, ln in other[:m]]
            yield {k: v[:n] for k, v in ev.items()}, hdr
            rest = data[used:]
            if not chunk:
                if rest:
                    raise ValueError(f"{path}: truncated Perfetto trace ({len(rest)} bytes left over)")
                return


def _body(data: bytes, off: int, ln: int) -> bytes:
    """The TracePacket body of the Trace.packet entry at data[off:off+ln]."""
    _, p = _pyget(data, off)
    n, p = _pyget(data, p)
    return data[p:p + n]


def _pyget(data: bytes, pos: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        b = data[pos]
        v |= (b & 0x7F) << shift
        pos += 1
        if b < 128:
            return v, pos
        shift += 7


def fields(msg: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field, wire type, value) of an encoded message (varint and length-delimited fields)."""
    p = 0
    while p < len(msg):
        key, p = _pyget(msg, p)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, p = _pyget(msg, p)
            yield f, wt, v
        elif wt == 2:
            n, p = _pyget(msg, p)
            yield f, wt, msg[p:p + n]
            p += n
        elif wt == 1:
            yield f, wt, msg[p:p + 8]
            p += 8
        elif wt == 5:
            yield f, wt, msg[p:p + 4]
            p += 4
        else:
            raise ValueError(f"unsupported wire type {wt}")


def descriptors(headers: list[bytes]) -> tuple[dict[int, dict], dict[int, str]]:
    """Track descriptors {uuid: {"name", "parent", "counter"}} and interned event names {iid: name} of
    the non-event packets `iter_events` returned."""
    tracks: dict[int, dict] = {}
    names: dict[int, str] = {}
    for body in headers:
        for f, _wt, v in fields(body):
            if f == 60 and isinstance(v, bytes):
                d: dict = {"name": "", "parent": 0, "counter": False}
                uuid = 0
                for g, _w, x in fields(v):
                    if g == 1:
                        uuid = int(x)  # type: ignore[arg-type]
                    elif g == 2:
                        d["name"] = bytes(x).decode()  # type: ignore[arg-type]
                    elif g == 5:
                        d["parent"] = int(x)  # type: ignore[arg-type]
                    elif g == 8:
                        d["counter"] = True
                tracks[uuid] = d
            elif f == 12 and isinstance(v, bytes):
                for g, _w, x in fields(v):
                    if g == 2 and isinstance(x, bytes):
                        e = dict((h, y) for h, _z, y in fields(x))
                        names[int(e.get(1, 0))] = bytes(e.get(2, b"")).decode()  # type: ignore[arg-type]
    return tracks, names
