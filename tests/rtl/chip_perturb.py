"""`lowbit verify --chip` of bitnet-tiny with the loader's data plan changed after the golden was computed: the
check-can-fail runs of the chip bench share it."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def verify_perturbed(monkeypatch, tmp_path: Path, edit: Callable, *, hw: str = "tiny", prefill: int = 2,
                     decode: int = 3):
    """(verify result, the edited plan): `edit(plan)` changes each data plan the loader makes before the bench
    runs it (prompt of `prefill` tokens, `decode` steps, program compiled from the golden's LOP selections)."""
    import lowbit.rtl.chip_run as cr
    from lowbit.rtl.chip_model import compile_from_golden
    from lowbit.sim.config import load_hw

    real, seen = cr.data_plan, {}

    def perturbed(img, cfg, seed=0, model=None):
        plan, why = real(img, cfg, seed, model)
        if plan is not None:
            edit(plan)
            seen["plan"] = plan
        return plan, why

    monkeypatch.setattr(cr, "data_plan", perturbed)
    cfg = load_hw(hw, [])
    path = tmp_path / "prog.bin"
    compile_from_golden(cfg, "bitnet-tiny", prefill, decode, path, seed=0)
    return cr.verify_chip(cfg, path, hw, []), seen.get("plan")
