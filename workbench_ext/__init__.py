"""Cython CPU kernels for the workbench runtime (contract: docs/ARCHITECTURE.md, "Kernels").

Modules
-------
``cpu``     CPUID/XCR0 feature detection, AMX permission request, ISA dispatch
            (``features``, ``available_isas``, ``active_isa``, ``set_isa``; extras:
            ``get_num_threads`` / ``set_num_threads`` (the default thread count of all kernels),
            ``measure_clock_ghz``).
``int8``    ``DenseInt8Linear`` / ``BlockSparseInt8Linear`` (1x4 blocks) /
            ``TileSparseInt8Linear`` (16x64 blocks) / ``LibraryInt8Linear`` (torch's ``_int_mm``):
            per-token u8 quantization + u8 x s8 -> s32 GEMM + dequantize/bias, fused.  Paths:
            amx, avx512_vnni, avx2 (exact, s16 vpmaddwd), portable; all bit-identical.
            Extras: ``layer(x, num_threads=, out=)``,
            ``layer.qmatmul(q, zero_point)`` (exact int32 core), constructor ``isa=`` to pin a path,
            sparse ``row_ptr`` / ``col_idx`` / ``values`` / ``block_sparsity``.
``sparse``  ``BlockSparseFp32Linear``: fp32 1x4 block-sparse linear (AVX2+FMA / portable).
``ops``     ``gelu``, ``layernorm``, ``add_bias_residual_layernorm``, ``softmax``,
            ``quantize_per_token``, ``quantize_static`` (all take ``num_threads=``).
``pool``    the thread pool every kernel's parallel loop runs on (``stats``, ``set_spin_us``).

One build runs on any x86-64 CPU: ISA-specific code is compiled with per-function
``__attribute__((target(...)))`` and chosen at run time (``WORKBENCH_ISA`` or ``cpu.set_isa``).
What was executed where: portable and AVX2 on AMD EPYC Zen 2 / Zen 3, AVX-512 VNNI on AMD EPYC
Zen 4 / Zen 5, AMX on a borrowed Intel Emerald Rapids (results/bench/emr-amx/); on every machine
the AVX-512 VNNI and AMX int8 kernels are also checked through ``testing/emulate_isa.c`` (scalar
emulation of their intrinsics) -- the real-hardware tests in tests/test_kernels.py skip on CPUs
without them.

Build with ``python setup.py build_ext --inplace``.
"""
import os as _os

# The kernels' parallel loops run on workbench_ext.pool (wb_pool.h), not on OpenMP: a fork-join
# region waits for every thread of its team, and on a 2-core Zen 4 with one busy process beside
# the 2 threads (`workbench bench --contend 1`) that wait made distilbert int8 b=1 0.68x ONNX
# Runtime int8; in the pool the caller takes the chunks a late worker has not started
# (1.71x in the same setting; results/bench/zen4-pool/). Pool workers spin 0.2 ms between jobs,
# then sleep (WORKBENCH_POOL_SPIN_US): a forward's ops come tens of microseconds apart and waking
# a sleeping vCPU costs about that much.
# OpenMP still gives the default thread count (omp_get_max_threads: OMP_NUM_THREADS,
# cpu.set_num_threads) and runs torch, which shares the process: its threads get the waiting
# policy the kernels had when they ran on OpenMP (a 0.2 ms spin, then sleep), so torch's
# numbers stay comparable with earlier bench runs. GOMP_SPINCOUNT overrides the PASSIVE policy's
# zero spin in libgomp; PASSIVE remains for other OpenMP runtimes. Set before any OpenMP runtime
# starts (the bench's measurement processes get these in their environment,
# `workbench.bench.cli._child_env`); exported values win.
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "20000"}


def openmp_defaults(env: "dict | None" = None) -> dict:
    """`env` (default: this process's environment) with OPENMP_DEFAULTS where it has no value."""
    env = _os.environ if env is None else env
    for key, value in OPENMP_DEFAULTS.items():
        env.setdefault(key, value)
    return env


openmp_defaults()
