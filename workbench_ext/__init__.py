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

# How the kernels' OpenMP threads wait between parallel regions (a forward runs ~60 of them, tens
# of microseconds apart). PASSIVE alone puts them to sleep at once, and waking a sleeping vCPU
# costs tens of microseconds per region, at random: on a quiet 2-core VM, distilbert int8 at
# batch 1 ran 64-72 samples/s (90 %-sparse 70-90) in fresh processes. libgomp's own default
# spins ~3 ms per region, which stalls everything when the cores are shared (measured 10x slower
# forwards on a busy machine). A short spin, then sleep, serves both: GOMP_SPINCOUNT=20000
# (~0.2 ms) gave 83-87 samples/s dense and 115-133 sparse in the same back-to-back runs
# (ONNX Runtime int8, which spins in its own pool: 74-79). It is a trade, measured on Zen 4
# (distilbert and MiniLM b=1, 2 threads): with one of the two cores shared by a busy process
# (`workbench bench --contend 1`) the spinning thread keeps its late partner off the core, and
# GOMP_SPINCOUNT=2000 ran 2-4x faster there (distilbert 1.58x ORT int8 instead of 0.65x); but
# when forwards come after idle gaps (the bench's interleaved rounds, a server between
# requests) 2000 lost: 90 %-sparse b=1 fell from 2.5-3.3x to 1.0-1.7x ORT int8 (two alternating
# A/B pairs), the first forwards after a 0.1 s idle taking ~3x longer (likely the vCPUs halting
# between regions, each wake then going through the hypervisor; not measured directly). The
# default keeps the idle-gap case fast; export GOMP_SPINCOUNT=2000 where cores are shared.
# GOMP_SPINCOUNT overrides the PASSIVE policy's zero spin in libgomp; PASSIVE remains for other
# OpenMP runtimes. Set before any OpenMP runtime starts (torch shares libgomp: the measurement
# processes get these in their environment, `workbench.bench.cli._child_env`); exported values win.
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "20000"}


def openmp_defaults(env: "dict | None" = None) -> dict:
    """`env` (default: this process's environment) with OPENMP_DEFAULTS where it has no value."""
    env = _os.environ if env is None else env
    for key, value in OPENMP_DEFAULTS.items():
        env.setdefault(key, value)
    return env


openmp_defaults()
