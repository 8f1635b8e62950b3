"""Which compiled `workbench_ext` kernels this process has; the runtime's kernels are reached from here.

Every kernel function has the signature of the `workbench_ext` API in docs/ARCHITECTURE.md. An
engine refuses to run without the compiled kernels (`require_compiled`: the error says how to
build them); the NumPy reference implementations with the *same numerics* run only when
requested (WORKBENCH_KERNELS=numpy or `allow_numpy()`), e.g. to test on a machine without a
compiler.
`kernel_report()` says which path each op is on; `Engine.describe()` includes it.

This module holds the compiled modules' handles and the availability / ISA checks. The kernels
are split by job and re-exported here, so callers keep using `kernels.X`:
  * `linear.py`: weight quantization and sparsity, the Linear layers (`make_linear`);
  * `ops.py`: elementwise ops, activations, attention, the compiled layer loop;
  * `threads.py`: the kernels' thread count, BLAS threads and the attention thread pool.

The NumPy fallbacks are deliberately plain: they are the specification the kernels are tested
against, not a fast path.
"""
from __future__ import annotations

import functools
import os
from typing import Any

# The kernels' parallel loops run on their own thread pool (`workbench_ext.pool`); the OpenMP
# waiting policy that torch gets is set by `import workbench_ext`: `workbench_ext.OPENMP_DEFAULTS`.

import importlib

# why each compiled module that did not import failed (a missing build, or e.g. a bad
# WORKBENCH_POOL_SPIN_US): require_compiled names it
_IMPORT_ERRORS: dict[str, str] = {}


def _import_ext(name: str) -> Any:
    """workbench_ext.<name>, or None (the reason kept in _IMPORT_ERRORS): each module may be
    absent while the extension is being written or built."""
    try:
        return importlib.import_module(f"workbench_ext.{name}")
    except Exception as exc:  # pragma: no cover - depends on the build
        _IMPORT_ERRORS[name] = f"{type(exc).__name__}: {exc}"
        return None


_ext_int8 = _import_ext("int8")
_ext_sparse = _import_ext("sparse")
_ext_ops = _import_ext("ops")
_ext_cpu = _import_ext("cpu")
_ext_attn = _import_ext("attention")
_ext_encoder = _import_ext("encoder")  # the compiled layer loop (engines fall back to per-op calls)
_ext_bf16 = _import_ext("bf16")        # optional: only dtype="bf16" engines use it (else fp32 BLAS)
_ext_pool = _import_ext("pool")


def wake_pool() -> None:
    """Wake the kernels' pool workers if they sleep (`workbench_ext.pool.wake`), so that their
    wake-up overlaps the serial work before a forward's first parallel kernel; nothing without
    the compiled pool."""
    if _ext_pool is not None:
        _ext_pool.wake()

# The compiled modules an engine needs; without them the engine refuses to run (a NumPy run is
# 10-100x slower and would be measured as if it were the runtime) unless NumPy is asked for by
# name: WORKBENCH_KERNELS=numpy in the environment, or `allow_numpy()`.
REQUIRED = {"int8": "_ext_int8", "sparse": "_ext_sparse", "ops": "_ext_ops", "cpu": "_ext_cpu",
            "attention": "_ext_attn"}
BUILD_HINT = ("build them with `make build` (or `.venv/bin/python setup.py build_ext --inplace` in the "
              "repository root); to run the slow NumPy reference path instead, ask for it by name: "
              "WORKBENCH_KERNELS=numpy")
_ALLOW_NUMPY = False


class KernelsMissingError(RuntimeError):
    """The compiled `workbench_ext` kernels are not importable and NumPy was not asked for."""


def allow_numpy(on: bool = True) -> None:
    """Let engines run on the NumPy reference kernels when compiled ones are missing."""
    global _ALLOW_NUMPY
    _ALLOW_NUMPY = bool(on)


def numpy_requested() -> bool:
    return _ALLOW_NUMPY or os.environ.get("WORKBENCH_KERNELS", "").strip().lower() == "numpy"


def missing_modules() -> list[str]:
    g = globals()
    return [name for name, var in REQUIRED.items() if g[var] is None]


def require_compiled() -> None:
    """Raise `KernelsMissingError` (saying how to build them) when a compiled module is missing,
    unless the NumPy path was asked for by name."""
    missing = missing_modules()
    if missing and not numpy_requested():
        broken = [f"workbench_ext.{m} ({_IMPORT_ERRORS[m]})" for m in missing
                  if m in _IMPORT_ERRORS and not _IMPORT_ERRORS[m].startswith(("ModuleNotFoundError", "ImportError"))]
        if broken:   # built, but refused to load: building again would not help
            raise KernelsMissingError(f"the workbench runtime's compiled kernels failed to load: {'; '.join(broken)}")
        raise KernelsMissingError(
            f"the workbench runtime's compiled kernels are missing (workbench_ext.{', workbench_ext.'.join(missing)} "
            f"not importable): {BUILD_HINT}")


def _has(mod: Any, name: str) -> bool:
    return mod is not None and hasattr(mod, name)


def active_isa() -> str:
    if _ext_cpu is not None:
        try:
            return str(_ext_cpu.active_isa())
        except Exception:  # pragma: no cover
            return "unknown"
    return "numpy"


def has_tile_sparse() -> bool:
    """The tile-sparse int8 kernel is built and runs here (AMX or AVX-512 VNNI is the active ISA);
    elsewhere the tile-sparse layer is the dense kernel under another name, so it is never a
    candidate."""
    return _has(_ext_int8, "TileSparseInt8Linear") and active_isa() in ("amx", "avx512_vnni")


@functools.lru_cache(maxsize=None)
def library_int8_problem() -> str | None:
    """Why the library int8 GEMM (torch's `_int_mm`, oneDNN: `int8.LibraryInt8Linear`) cannot run
    in this process, or None when it can (checked once, on a 1x64x8 product)."""
    if not _has(_ext_int8, "library_int8_available"):
        return "workbench_ext.int8 has no LibraryInt8Linear (rebuild the kernels)"
    return _ext_int8.library_int8_available()


def int8_layer_classes() -> tuple[type, ...]:
    """The compiled int8 layer classes whose calls the compiled layer loop can make and whose
    epilogue fuses GELU (a build from before a class existed simply lacks it)."""
    names = ("DenseInt8Linear", "BlockSparseInt8Linear", "LibraryInt8Linear")
    return tuple(getattr(_ext_int8, n) for n in names if _has(_ext_int8, n))


def has_library_int8() -> bool:
    """The library int8 layer runs here: a candidate of the per-layer kernel choice."""
    return library_int8_problem() is None


def has_fused_attention() -> bool:
    return _has(_ext_attn, "attention")


def has_bf16() -> bool:
    """The bf16 kernel is built and this CPU runs it natively (AVX512-BF16)."""
    return _has(_ext_bf16, "Bf16Linear") and bool(_ext_bf16.has_avx512_bf16())


def isa_code() -> int:
    """The active ISA as the kernels' C code (workbench_ext.cpu.ISA_CODES)."""
    return int(_ext_cpu.ISA_CODES[_ext_cpu.active_isa()])


def kernel_report() -> dict[str, str]:
    """Which implementation each op uses in this process."""
    def src(mod: Any, name: str, modname: str) -> str:
        return f"workbench_ext.{modname}.{name}" if _has(mod, name) else "numpy-fallback"

    return {
        "isa": active_isa(),
        "DenseInt8Linear": src(_ext_int8, "DenseInt8Linear", "int8"),
        "BlockSparseInt8Linear": src(_ext_int8, "BlockSparseInt8Linear", "int8"),
        "TileSparseInt8Linear": (src(_ext_int8, "TileSparseInt8Linear", "int8")
                                 + ("" if has_tile_sparse() else " (no AMX or AVX-512 VNNI here: runs the dense kernel)")),
        "LibraryInt8Linear": ("workbench_ext.int8.LibraryInt8Linear (torch._int_mm, oneDNN)" if has_library_int8()
                              else f"not available: {library_int8_problem()}"),
        "BlockSparseFp32Linear": src(_ext_sparse, "BlockSparseFp32Linear", "sparse"),
        "gelu": src(_ext_ops, "gelu", "ops"),
        "layernorm": src(_ext_ops, "layernorm", "ops"),
        "add_bias_residual_layernorm": src(_ext_ops, "add_bias_residual_layernorm", "ops"),
        "softmax": src(_ext_ops, "softmax", "ops"),
        "quantize_per_token": src(_ext_ops, "quantize_per_token", "ops"),
        "Bf16Linear": ("workbench_ext.bf16.Bf16Linear[avx512_bf16]" if has_bf16()
                       else "numpy(BLAS sgemm, fp32): no AVX512-BF16" if _ext_bf16 is not None else "not built"),
        "layer_loop": ("workbench_ext.encoder.Int8Encoder (int8 engines: one compiled call per forward)"
                       if _ext_encoder is not None else "python (one call per op)"),
        "attention": ("workbench_ext.attention.attention (fused, threaded over heads)" if has_fused_attention()
                      else "numpy(BLAS sgemm, 1 BLAS thread, heads split over Python threads)"),
    }


# The kernels, re-exported so that `kernels.X` keeps working. Imported last: linear.py and ops.py
# import the handles above from this module, so they must exist before these imports run.
from workbench.runtime.linear import (  # noqa: E402,F401
    BLOCK, PAIR_BOUND, TILE, bf16_round, block_sparsity, fuses_gelu, make_linear, quantize_weight_per_channel,
    tile_sparsity)
from workbench.runtime.ops import (  # noqa: E402,F401
    ACTIVATIONS, ATTENTION_PRECISIONS, add_bias_residual_layernorm, attention, attention_bf16_path,
    attention_int8_runs, embed_rows, fused_attention, gelu, gelu_tanh, int8_encoder, layernorm, qkv_views, relu,
    softmax, tanh)
from workbench.runtime.threads import (  # noqa: E402,F401
    attention_blas_threads, default_threads, kernel_threads, parallel_run)
