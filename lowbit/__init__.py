"""lowbit: co-design toolkit for low-bit (ternary, FP4) LLM accelerators.

Layers, each importing only the ones below it:
    lowbit.sim     torch-free core: numerics, hardware config, units, workloads, lowering, scheduler, DRAM
    lowbit.rtl     Amaranth generators, cocotb verification, yosys synthesis      (extra: lowbit[rtl])
    lowbit.models  PyTorch models, trace capture, FP4 PTQ, Triton GPU kernels     (extras: [torch], [gpu])
    lowbit.cost    area / energy / power from simulator activity and synthesised netlists; reports
    lowbit.cli     the `lowbit` command, assembled from each package's own commands
"""

__version__ = "0.1.0"
