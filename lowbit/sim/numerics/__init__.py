"""Bit-exact golden-model numerics shared by the simulator, the RTL benches, the PyTorch models and the GPU
kernels. numpy only. One module per format or datapath; every function states its rule and source.

Modules: rounding, ternary (BitNet absmean), int8 (per-token absmax), packing (2-bit / base-3 ternary),
booth (radix-4 Booth, ternary mode, bit-serial), tint (TINT adder-tree lanes), lop (leading-one surrogate
and comparison-free top-K), fp (E2M1/E4M3/E8M0 codecs), mx (MXFP4 / NVFP4), fp4dot (W4A8 hardware dot),
sfu / sfu_elem / sfu_reduce (the SFU's fixed-point ops), requant (accumulator -> Q7.8 requantization, residual add).
"""

from lowbit.sim.numerics.booth import (
    booth_digits,
    booth_encode,
    booth_multiply,
    booth_partial_products,
    booth_serial_cycles,
    booth_serial_multiply,
    booth_ternary_dot,
)
from lowbit.sim.numerics.fp import (
    e2m1_decode,
    e2m1_encode,
    e4m3_decode,
    e4m3_encode,
    e8m0_decode,
    e8m0_encode,
    e8m0_from_exponent,
    pack_fp4,
    unpack_fp4,
)
from lowbit.sim.numerics.fp4dot import Fp4DotResult, fp4_block_dot, fp4_dot_exact, fp4_min_widths
from lowbit.sim.numerics.int8 import (
    dequantize_accumulator,
    int8_absmax_quantize,
    int8_dequantize,
    int8_matmul_dequant,
    int_matmul_exact,
)
from lowbit.sim.numerics.lop import (
    LOP_SURROGATE_BITS_PER_ELEM,
    leading_one,
    lo_encode,
    lo_scores,
    lop_bucket,
    lop_topk,
)
from lowbit.sim.numerics.mx import (
    MXFP4Tensor,
    NVFP4Tensor,
    fp4_fakequant,
    mxfp4_dequantize,
    mxfp4_quantize,
    nvfp4_dequantize,
    nvfp4_quantize,
)
from lowbit.sim.numerics.packing import (
    pack_ternary_2bit,
    pack_ternary_base3,
    unpack_ternary_2bit,
    unpack_ternary_base3,
)
from lowbit.sim.numerics.requant import fixed_multiplier, requant, residual_add
from lowbit.sim.numerics.rounding import round_half_even
from lowbit.sim.numerics.ternary import ternary_dequantize, ternary_quantize
from lowbit.sim.numerics.tint import tint_acc_bits_required, tint_dot

__all__ = [
    "Fp4DotResult",
    "LOP_SURROGATE_BITS_PER_ELEM",
    "MXFP4Tensor",
    "NVFP4Tensor",
    "booth_digits",
    "booth_encode",
    "booth_multiply",
    "booth_partial_products",
    "booth_serial_cycles",
    "booth_serial_multiply",
    "booth_ternary_dot",
    "dequantize_accumulator",
    "e2m1_decode",
    "e2m1_encode",
    "e4m3_decode",
    "e4m3_encode",
    "e8m0_decode",
    "e8m0_encode",
    "e8m0_from_exponent",
    "fixed_multiplier",
    "fp4_block_dot",
    "fp4_dot_exact",
    "fp4_fakequant",
    "fp4_min_widths",
    "int8_absmax_quantize",
    "int8_dequantize",
    "int8_matmul_dequant",
    "int_matmul_exact",
    "leading_one",
    "lo_encode",
    "lo_scores",
    "lop_bucket",
    "lop_topk",
    "mxfp4_dequantize",
    "mxfp4_quantize",
    "nvfp4_dequantize",
    "nvfp4_quantize",
    "pack_fp4",
    "pack_ternary_2bit",
    "pack_ternary_base3",
    "requant",
    "residual_add",
    "round_half_even",
    "ternary_dequantize",
    "ternary_quantize",
    "tint_acc_bits_required",
    "tint_dot",
    "unpack_fp4",
    "unpack_ternary_2bit",
    "unpack_ternary_base3",
]
