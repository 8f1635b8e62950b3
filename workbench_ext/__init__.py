"""Cython CPU kernels for the workbench runtime (contract: docs/ARCHITECTURE.md, "Kernels").

Modules
-------
``cpu``     CPUID/XCR0 feature detection, AMX permission request, ISA dispatch
            (``features``, ``available_isas``, ``active_isa``, ``set_isa``; extras:
            ``get_num_threads`` / ``set_num_threads`` (OpenMP default for all kernels),
            ``measure_clock_ghz``).
``int8``    ``DenseInt8Linear`` / ``BlockSparseInt8Linear``: per-token u8 quantization +
            u8 x s8 -> s32 GEMM + dequantize/bias, fused.  Paths: amx, avx512_vnni, avx2 (exact,
            s16 vpmaddwd), portable; all bit-identical.  Extras: ``layer(x, num_threads=, out=)``,
            ``layer.qmatmul(q, zero_point)`` (exact int32 core), constructor ``isa=`` to pin a path,
            sparse ``row_ptr`` / ``col_idx`` / ``values`` / ``block_sparsity``.
``sparse``  ``BlockSparseFp32Linear``: fp32 1x4 block-sparse linear (AVX2+FMA / portable).
``ops``     ``gelu``, ``layernorm``, ``add_bias_residual_layernorm``, ``softmax``,
            ``quantize_per_token``, ``quantize_static`` (all take ``num_threads=``).

One build runs on any x86-64 CPU: ISA-specific code is compiled with per-function
``__attribute__((target(...)))`` and chosen at run time (``WORKBENCH_ISA`` or ``cpu.set_isa``).
What was executed where: portable and AVX2 on the development machine (AMD EPYC Zen3, AVX2+FMA);
AVX-512 VNNI and AMX only through ``testing/emulate_isa.c`` (scalar emulation of their
intrinsics) -- the real-hardware tests in tests/test_kernels.py skip on CPUs without them.

Build with ``python setup.py build_ext --inplace``.
"""
import os as _os

# OpenMP threads that spin while waiting (libgomp's default) stall every parallel region for a
# scheduler slice when the cores are shared; PASSIVE costs microseconds on an idle machine. Set
# before the kernels' OpenMP runtime starts; an exported value wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

