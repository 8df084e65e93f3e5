"""The one on-disk cache of lowbit: where every derived artefact is kept between runs.

Root: ``$LOWBIT_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/lowbit``, else ``~/.cache/lowbit``
(XDG Base Directory Specification). Each kind of artefact has one sub-directory:

- ``synth/<key>/``: yosys netlist statistics of one Verilog text (lowbit.rtl.synth);
- ``verilog/<unit>-<key>.v``: generated Verilog + port list (lowbit.rtl.generate);
- ``sim/<simulator>-<unit>-<key>/``: one Verilator/Icarus build per Verilog text (lowbit.rtl.cocotb_runner);
- ``runs/<unit>-*/``: bench runs (job, result, log, ``dump.vcd`` with waves);
- ``activity/<unit>-<key>.json``: switching activity on random data (lowbit.rtl.activity).
- ``sweep/``: design-space sweep results per point (lowbit.explore.store);
- ``liberty/<cell>-<key>.json``: transistor-level characterisation of one sky130 cell (lowbit.rtl.characterize).

Every entry is keyed by a hash of everything it depends on and written to a temp name first, then
renamed into place, so an interrupted run never leaves an entry that a later run would trust. Deleting
the directory (or part of it) is always safe: entries are rebuilt on demand.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "LOWBIT_CACHE_DIR"
KINDS = ("synth", "verilog", "sim", "runs", "activity", "sweep", "liberty")


def cache_root() -> Path:
    """$LOWBIT_CACHE_DIR, else $XDG_CACHE_HOME/lowbit, else ~/.cache/lowbit (read on every call)."""
    env = os.environ.get(ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    # XDG: a relative $XDG_CACHE_HOME is invalid and must be ignored
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "lowbit"


def cache_dir(kind: str) -> Path:
    """The sub-directory for one kind of artefact (one of KINDS); not created here."""
    if kind not in KINDS:
        raise ValueError(f"unknown cache kind {kind!r}; one of {', '.join(KINDS)}")
    return cache_root() / kind
