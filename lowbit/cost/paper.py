"""The published VitaLLM numbers every report compares with, and the FOM counting rule."""

# Published numbers (docs/reference/vitallm.md §3.6): [J] arXiv 2604.27396, [C] arXiv 2605.00320 (16 nm silicon).
PAPER = {
    "area_mm2": (0.223, "[J]"), "area_mm2_silicon": (0.214, "[C]"), "power_mw": (65.97, "[J]"),
    "fom_tops_per_mm2_w": (17.4, "[J]"), "tokens_per_s": (70.70, "[J]"), "tokens_per_s_silicon": (72.46, "[C]"),
    "prefill_s_64": (0.88, "[C]"), "sram_kb": (120, "[C]"), "energy_per_token_mj": (0.933, "inferred: 65.97 mW / 70.70 tok/s"),
}
FOM_RULE = ("1 op = 1 MAC (ternary, INT8 or FP4) of projections + attention; LOP/SFU work not counted; "
            "TOPS = decode MACs / decode time; power = decode core power (logic + SRAM + leakage, no DRAM); "
            "FOM = TOPS / (mm² · W). The papers do not state their op-counting rule (docs/reference/vitallm.md §4.4): "
            "17.4 TOPS/mm²/W x 0.223 mm² x 65.97 mW = 0.256 TOPS, i.e. 256 ops/cycle at 1 GHz, which matches "
            "1 op per ternary MAC on a 256-MAC/cycle machine. Counting 2 ops/MAC doubles every FOM below.")
