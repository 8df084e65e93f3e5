"""The tile ISA definition (sim.isa): class numbering, the field table and the scheduler's argument order,
agreement with the unit catalogue, and the Emitter's block placement checked against hand-built arrays."""

from __future__ import annotations

import inspect
import re

import numpy as np

from lowbit.sim import isa
from lowbit.sim.config import load_config
from lowbit.sim.engine import unit_list
from lowbit.sim.sched import _kernel
from lowbit.sim.units import catalog

BUILTIN = (catalog.TINT, catalog.BOOTH, catalog.FP4, catalog.LOP, catalog.SFU)


def test_class_numbering():
    assert (isa.C_JOIN, isa.C_DMAW, isa.C_DMAKV) == (0, 1, 2)
    compute = (isa.C_TINT, isa.C_BOOTH, isa.C_FP4, isa.C_LOP, isa.C_SFU)
    assert compute == tuple(range(isa.UNIT_CLASS_BASE, isa.UNIT_CLASS_BASE + 5))
    assert isa.UNIT_CLASS_BASE == len(isa.FIXED_CLASSES) == 3
    assert [isa.class_name(c) for c in compute] == [u.name for u in BUILTIN]
    assert [isa.class_unit(c) for c in compute] == list(BUILTIN)
    assert isa.FIXED_CLASSES[1:] == tuple(r.name for r in catalog.DMA_QUEUES)


def test_unit_list_classes():
    for preset in ("vitallm", "vitallm-fp4", "tiny"):
        cfg = load_config(preset)
        units = unit_list(cfg)
        for name, cls in units:
            assert re.fullmatch(rf"{isa.class_name(cls)}\d*", name)
        assert [n for n, c in units if c >= isa.UNIT_CLASS_BASE][-1] == "sfu"
        assert units[-2:] == [("dma_w", isa.C_DMAW), ("dma_kv", isa.C_DMAKV)]
    assert sum(1 for _, c in unit_list(load_config("vitallm")) if c == isa.C_TINT) == load_config("vitallm").tint.cores


def test_field_table():
    assert isa.COLS[:len(isa.SCHED_COLS)] == isa.SCHED_COLS
    assert set(isa.DEFAULT) == set(isa.COLS) - {"main"}
    assert set(isa.IDX_COLS) <= set(isa.SCHED_COLS)
    # the scheduler kernel takes the scheduler columns first, in this order
    assert tuple(inspect.signature(_kernel.py_func).parameters)[:len(isa.SCHED_COLS)] == isa.SCHED_COLS
    # enumerations agree with the unit catalogue's work counters and SRAM buffers
    assert isa.ACTIVITY == catalog.WORK
    assert set(w for u in BUILTIN for w in u.work) == set(catalog.WORK)
    assert isa.BUFFERS == tuple(r.name for r in catalog.SRAM_BUFFERS)
    assert len(isa.DRAM_CLASSES) == 4 and isa.SUBS[isa.SUB["join"]] == "join"


def test_emit_defaults_and_empty_finish():
    e = isa.Emitter()
    assert all(len(v) == 0 for v in e.finish().values())
    i = e.emit(isa.C_SFU, cyc=5, dep0=isa.EXT)
    a = e.finish()
    assert i == 0 and a["main"][0] == isa.C_SFU and a["cyc"][0] == 5 and a["dep0"][0] == -2
    assert a["barrier"][0] == 1 and a["alt"][0] == -1 and a["buf"][0] == -1 and a["dep1"][0] == -1


def _block() -> dict[str, np.ndarray]:
    b = isa.Emitter()
    b.emit(isa.C_DMAW, addr=100, dcls=isa.D_W, dep0=isa.EXT, buf=isa.B_WEIGHT, alloc=8, opi=7)
    b.emit(isa.C_DMAKV, addr=200, dcls=isa.D_KV, dep0=0, opi=7)
    b.emit(isa.C_BOOTH, addr=300, dcls=isa.D_KV, dep0=1, dep1=isa.EXT, free_of=0, opi=7)
    b.emit(isa.C_JOIN, jlo=0, jhi=3, opi=7)
    return b.finish()


def test_add_block_places_a_cached_block():
    e = isa.Emitter()
    e.emit(isa.C_SFU, cyc=1)
    e.emit(isa.C_SFU, cyc=2, dep0=0)
    last = e.add_block(_block(), 1, (1000, 50_000, 0, 0))
    assert last == 5
    a = e.finish()
    assert a["dep0"].tolist() == [-1, 0, 1, 2, 3, -1]       # local indices + 2, EXT -> 1
    assert a["dep1"].tolist() == [-1, -1, -1, -1, 1, -1]
    assert a["free_of"].tolist() == [-1, -1, -1, -1, 2, -1]
    assert a["jlo"][5] == 2 and a["jhi"][5] == 5
    assert a["addr"].tolist() == [0, 0, 1100, 50_200, 300, 0]  # only DMAs move, by their class's offset
    assert a["opi"].tolist() == [0, 0, 7, 7, 7, 7]
    e2 = isa.Emitter()
    e2.add_block(_block(), 9, (0, 0, 0, 0), opi=3)
    assert e2.finish()["opi"].tolist() == [3, 3, 3, 3]
