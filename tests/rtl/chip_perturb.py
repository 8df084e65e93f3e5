"""`lowbit verify --chip` of bitnet-tiny with the loader's data plan changed after the golden was computed: the
check-can-fail runs of the chip bench share it."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def verify_perturbed(monkeypatch, tmp_path: Path, edit: Callable, *, hw: str = "tiny", prefill: int = 2,
                     decode: int = 3, image: bool = False):
    """(verify result, the edited plan): `edit(plan)` changes each data plan the loader makes before the bench
    runs it (prompt of `prefill` tokens, `decode` steps, program compiled from the golden's LOP selections);
    with `image`, `edit(plan, img)` also gets the chip image the plan was made for (its words' data fields)."""
    import lowbit.rtl.chip_run as cr
    from lowbit.rtl.chip_model import compile_from_golden
    from lowbit.sim.config import load_hw

    real, seen = cr.data_plan, {}

    def perturbed(img, cfg, seed=0, model=None):
        plan, why = real(img, cfg, seed, model)
        if plan is not None:
            edit(plan, img) if image else edit(plan)
            seen["plan"] = plan
        return plan, why

    monkeypatch.setattr(cr, "data_plan", perturbed)
    cfg = load_hw(hw, [])
    path = tmp_path / "prog.bin"
    compile_from_golden(cfg, "bitnet-tiny", prefill, decode, path, seed=0)
    return cr.verify_chip(cfg, path, hw, []), seen.get("plan")


def rewrite_program(src: Path, dst: Path, cfg, edit: Callable) -> None:
    """Copy the program `src` to `dst` through lowbit.sim.program_io, `edit(chunks)` changing the list of its
    (step, chunk, layer) in between (a chunk's columns copied before they change: decoded blocks are shared)."""
    from lowbit.sim.engine import unit_list
    from lowbit.sim.program_io import ProgramReader, ProgramWriter

    rd = ProgramReader(src)
    chunks = [(stp, ch, layer) for stp in rd for ch, layer in stp.chunks]
    edit(chunks)
    with open(dst, "wb") as f:
        w = ProgramWriter(f, cfg, unit_list(cfg), rd.header.caps, rd.header.meta)
        last = None
        for stp, ch, layer in chunks:
            if stp is not last:
                w.step(stp.phase, stp.trace_step)
                last = stp
            w.chunk(ch, layer, stp.roles)
        w.end()
