"""GPU software baseline: Triton kernels for ternary W1.58A8 and FP4 (NVFP4/MXFP4) linear
layers, LOP decode attention, a CUDA-graph whole-model decode step and the `lowbit bench-gpu` benchmark.

torch and triton are imported by these modules (never from lowbit.sim). On a machine without CUDA the kernels
run under the Triton interpreter (set ``TRITON_INTERPRET=1`` before importing triton; tests/models/gpu/conftest.py does).
"""
