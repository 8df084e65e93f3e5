"""dma_kv's K/V chunk reads on data (docs/rtl.md "Data path"): the loader's data fields of the reads into the kv
ring, the golden's K/V rows they bring in the DRAM image (the rows the program writes itself left zero:
lowbit.rtl.chip_kv.kv_written) and, per consumer, the chunk's units the bench reads back at its start."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lowbit.rtl.chip_image import ChipImage
from lowbit.rtl.chip_kv import kv_written
from lowbit.sim.isa import B_KV

if TYPE_CHECKING:
    from lowbit.rtl.chip_golden import DataPlan


def kv_reads(plan: DataPlan, img: ChipImage, kq: int) -> dict[tuple[int, int], dict]:
    """dma_kv's reads of K/V chunks into the kv ring: their data fields (units from the allocation's unit
    address), the golden's K/V rows at their DRAM addresses in the image, and per consumer (the word that
    releases the chunk) the chunk's units to read back at its start, where that read (a beat a cycle, the
    cycle after its start on) ends before the consumer does."""
    ub, banks, hd = plan.dims.unit_bytes, plan.dims.banks, plan.model.spec.head_dim
    rows = plan.model.kv_rows()
    plan.kv_written = kv_written(plan, img, kq)  # the rows the program writes: not in the image (chip_kv)
    out: dict[tuple[int, int], dict] = {}
    chunk: dict[tuple[int, int], bytes] = {}
    cur = None  # the chunk being filled: its allocating DMA
    rows_of: dict[tuple[int, int], list[int]] = {}
    for i, w in enumerate(img.words[kq]):
        if w["wr"] or (w["alloc_en"] and w["buf"] != B_KV):
            cur = None
            continue
        addrs = range(w["addr"], w["addr"] + w["nbytes"], hd)
        ok = w["nbytes"] % ub == 0 and w["nbytes"] % hd == 0 and all(a in rows for a in addrs)
        if w["alloc_en"]:  # a chunk's allocation: its first rows from the allocation's start
            cur = (kq, i) if ok and w["sbyte"] % ub == 0 else None
            if cur is not None:
                out[cur] = {"dwords": w["nbytes"] // ub, "dbase": w["sbyte"] // ub}
                chunk[cur] = b""
                room = w["alloc"]
        elif cur is not None and ok and len(chunk[cur]) + w["nbytes"] <= room:  # a gather's further rows
            out[(kq, i)] = {"dwords": w["nbytes"] // ub,
                            "dbase": (out[cur]["dbase"] + len(chunk[cur]) // ub) % plan.dims.k_depth}
        else:
            cur = None
            continue
        if cur is not None:
            for a in addrs:
                plan.dram[a] = bytes(len(rows[a])) if a in plan.kv_written else rows[a]
            chunk[cur] += b"".join(rows[a] for a in addrs)
            rows_of.setdefault(cur, []).extend(addrs)
    for key in chunk:  # the checks read the chunk's units from its allocation's start
        out[key] = {**out[key], "check": len(chunk[key]) // ub}
        plan.kv_chunks[key] = (out[key]["dbase"], rows_of.get(key, []))
    for q, ws in enumerate(img.words):
        for i, w in enumerate(ws):
            src = (w.get("free_q", -1), w.get("free_i", -1))
            if src in chunk and "cyc" in w and -(-out[src]["check"] // banks) + 2 <= w["cyc"]:
                plan.kv_checks[(q, i)] = (out[src]["dbase"], out[src]["check"], chunk[src])
    return {k: {"dwords": v["dwords"], "dbase": v["dbase"]} for k, v in out.items()}


__all__ = ["kv_reads"]
