"""The kernels the runtime calls: `workbench_ext`, or NumPy stand-ins when asked for by name.

Every function here has the signature of the `workbench_ext` API in docs/ARCHITECTURE.md. An
engine refuses to run without the compiled kernels (`require_compiled`: the error says how to
build them); the NumPy reference implementations with the *same numerics* run only when
requested (WORKBENCH_KERNELS=numpy or `allow_numpy()`), e.g. to test on a machine without a
compiler.
`kernel_report()` says which path each op is on; `Engine.describe()` includes it.

The NumPy fallbacks are deliberately plain: they are the specification the kernels are tested
against, not a fast path.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable

import numpy as np

# The OpenMP waiting policy (a short spin, then sleep) is set by `import workbench_ext`, before
# its runtime starts: `workbench_ext.OPENMP_DEFAULTS`.

try:  # the compiled kernels; each module may be absent while the extension is being written
    from workbench_ext import int8 as _ext_int8  # type: ignore[attr-defined]
except Exception:  # pragma: no cover - depends on the build
    _ext_int8 = None
try:
    from workbench_ext import sparse as _ext_sparse  # type: ignore[attr-defined]
except Exception:  # pragma: no cover
    _ext_sparse = None
try:
    from workbench_ext import ops as _ext_ops  # type: ignore[attr-defined]
except Exception:  # pragma: no cover
    _ext_ops = None
try:
    from workbench_ext import cpu as _ext_cpu  # type: ignore[attr-defined]
except Exception:  # pragma: no cover
    _ext_cpu = None
try:
    from workbench_ext import attention as _ext_attn  # type: ignore[attr-defined]
except Exception:  # pragma: no cover
    _ext_attn = None
try:  # the compiled layer loop (engines fall back to per-op Python calls without it)
    from workbench_ext import encoder as _ext_encoder  # type: ignore[attr-defined]
except Exception:  # pragma: no cover
    _ext_encoder = None
try:  # optional: only `dtype="bf16"` engines use it, and fall back to fp32 BLAS without it
    from workbench_ext import bf16 as _ext_bf16  # type: ignore[attr-defined]
except Exception:  # pragma: no cover
    _ext_bf16 = None

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
        raise KernelsMissingError(
            f"the workbench runtime's compiled kernels are missing (workbench_ext.{', workbench_ext.'.join(missing)} "
            f"not importable): {BUILD_HINT}")

BLOCK = 4  # 1x4 blocks along K: the sparse kernels' layout


def _has(mod: Any, name: str) -> bool:
    return mod is not None and hasattr(mod, name)


def active_isa() -> str:
    if _ext_cpu is not None:
        try:
            return str(_ext_cpu.active_isa())
        except Exception:  # pragma: no cover
            return "unknown"
    return "numpy"


# --------------------------------------------------------------------------------------------
# weight quantization (done once, at compile time, in NumPy: not a hot path)
# --------------------------------------------------------------------------------------------
def quantize_weight_per_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel: w ~= w_s8 * scale[:, None], w_s8 in [-127, 127]."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return np.ascontiguousarray(q), scale


def block_sparsity(w: np.ndarray, block: int = BLOCK) -> float:
    """Fraction of all-zero 1 x `block` blocks along K (ragged tail padded with zeros)."""
    n, k = w.shape
    if n == 0 or k == 0:
        return 0.0
    pad = (-k) % block
    if pad:
        w = np.concatenate([w, np.zeros((n, pad), dtype=w.dtype)], axis=1)
    blocks = w.reshape(n, -1, block)
    return float(np.mean(~blocks.any(axis=2)))


TILE = (16, 64)
"""The weight block one AMX tile multiply covers: 16 output columns x 64 inputs."""


def tile_sparsity(w: np.ndarray) -> float:
    """Fraction of all-zero 16 x 64 blocks (`TILE`; ragged edges padded with zeros): the blocks
    the AMX tile-sparse kernel skips."""
    n, k = w.shape
    if n == 0 or k == 0:
        return 0.0
    r, c = TILE
    nz = np.zeros((-(-n // r) * r, -(-k // c) * c), dtype=bool)
    nz[:n, :k] = w != 0
    return float(np.mean(~nz.reshape(nz.shape[0] // r, r, -1, c).any(axis=(1, 3))))


def has_tile_sparse() -> bool:
    """The tile-sparse int8 kernel is built and runs here (AMX is the active ISA); elsewhere the
    tile-sparse layer is the dense kernel under another name, so it is never a candidate."""
    return _has(_ext_int8, "TileSparseInt8Linear") and active_isa() == "amx"


# --------------------------------------------------------------------------------------------
# activation quantization (fallback for ops.quantize_per_token)
# --------------------------------------------------------------------------------------------
def _np_quantize_per_token(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric u8 per row, the range always including 0 (as the kernels do)."""
    lo = np.minimum(x.min(axis=1), 0.0)
    hi = np.maximum(x.max(axis=1), 0.0)
    scale = ((hi - lo) / 255.0).astype(np.float32)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    zp = np.clip(np.rint(-lo / scale), 0, 255).astype(np.int32)
    q = np.clip(np.rint(x / scale[:, None]) + zp[:, None], 0, 255).astype(np.uint8)
    return q, scale, zp


# --------------------------------------------------------------------------------------------
# Linear layers
# --------------------------------------------------------------------------------------------
class _NumpyFp32Linear:
    """y = x @ w.T + b with BLAS sgemm (dense fp32; also the fallback for the sparse fp32 kernel)."""

    isa = "numpy"

    def __init__(self, w: np.ndarray, bias: np.ndarray | None) -> None:
        self.N, self.K = w.shape
        self._wt = np.ascontiguousarray(w.T)  # [K, N]: x @ wt is one sgemm
        self._b = bias

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self._wt
        if self._b is not None:
            y += self._b
        return y


class _NumpyInt8Linear:
    """Reference for the int8 kernels: per-token u8 activations x per-channel s8 weights.

    Same quantization as the kernels; the integer dot products are accumulated in fp32 by BLAS
    (not bit-exact to an int32 accumulator, but within fp32 rounding of it)."""

    isa = "numpy"

    def __init__(self, w_s8: np.ndarray, w_scale: np.ndarray, bias: np.ndarray | None) -> None:
        self.N, self.K = w_s8.shape
        self._wt = np.ascontiguousarray(w_s8.T.astype(np.float32))
        self._ws = w_scale.astype(np.float32)
        self._b = bias
        self.nnz_blocks = int(round((1.0 - block_sparsity(w_s8)) * self.N * math.ceil(self.K / BLOCK)))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if _has(_ext_ops, "quantize_per_token"):
            q, s, zp = _ext_ops.quantize_per_token(x)
        else:
            q, s, zp = _np_quantize_per_token(x)
        xq = q.astype(np.float32) - zp.astype(np.float32)[:, None]  # exact small integers
        acc = xq @ self._wt
        y = acc * s[:, None] * self._ws[None, :]
        if self._b is not None:
            y += self._b
        return y.astype(np.float32, copy=False)


def fuses_gelu(layer: Any) -> bool:
    """`layer(x, activation="gelu")` works: a compiled int8 layer that applies GELU in its
    epilogue (bit-identical to `gelu(layer(x))`); a `RowSwitch` when all its kernels do."""
    parts = getattr(layer, "parts", None)
    if parts:
        return all(fuses_gelu(p) for p in parts)
    return (_ext_int8 is not None and "gelu" in getattr(_ext_int8, "ACTIVATIONS", ())
            and isinstance(layer, (_ext_int8.DenseInt8Linear, _ext_int8.BlockSparseInt8Linear)))


def make_linear(kind: str, weight: np.ndarray, scale: np.ndarray | None,
                bias: np.ndarray | None) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """Build the callable for one Linear layer and name the implementation it runs on.

    kind: "int8_dense" | "int8_sparse" | "int8_tile_sparse" (weight int8 [N, K] + scale) or
          "fp32_dense" | "fp32_sparse" | "bf16_dense" (weight float32 [N, K]; bf16 runs on
          AVX512-BF16 when the CPU has it, else as fp32 BLAS -- the name returned says which).
    """
    weight = np.ascontiguousarray(weight)
    bias = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    if kind == "int8_dense":
        scale = np.ascontiguousarray(scale, dtype=np.float32)
        if _has(_ext_int8, "DenseInt8Linear"):
            lin = _ext_int8.DenseInt8Linear(weight, scale, bias)
            return lin, f"workbench_ext.int8.DenseInt8Linear[{getattr(lin, 'isa', '?')}]"
        return _NumpyInt8Linear(weight, scale, bias), "numpy-fallback(int8 dense)"
    if kind == "int8_tile_sparse":
        scale = np.ascontiguousarray(scale, dtype=np.float32)
        if _has(_ext_int8, "TileSparseInt8Linear"):
            lin = _ext_int8.TileSparseInt8Linear(weight, scale, bias)
            runs = "" if lin.isa == "amx" else ": the dense kernel, no AMX tiles to skip here"
            return lin, f"workbench_ext.int8.TileSparseInt8Linear[{lin.isa}]{runs}"
        return _NumpyInt8Linear(weight, scale, bias), "numpy-fallback(int8 tile-sparse)"
    if kind == "int8_sparse":
        scale = np.ascontiguousarray(scale, dtype=np.float32)
        if _has(_ext_int8, "BlockSparseInt8Linear"):
            lin = _ext_int8.BlockSparseInt8Linear(weight, scale, bias)
            return lin, f"workbench_ext.int8.BlockSparseInt8Linear[{getattr(lin, 'isa', '?')}]"
        return _NumpyInt8Linear(weight, scale, bias), "numpy-fallback(int8 sparse)"
    if kind == "fp32_sparse":
        if _has(_ext_sparse, "BlockSparseFp32Linear"):
            lin = _ext_sparse.BlockSparseFp32Linear(weight.astype(np.float32, copy=False), bias)
            return lin, f"workbench_ext.sparse.BlockSparseFp32Linear[{getattr(lin, 'isa', '?')}]"
        return _NumpyFp32Linear(weight, bias), "numpy-fallback(fp32 sparse)"
    if kind == "bf16_dense":
        if has_bf16():
            lin = _ext_bf16.Bf16Linear(weight.astype(np.float32, copy=False), bias)
            return lin, f"workbench_ext.bf16.Bf16Linear[{lin.isa}]"
        return _NumpyFp32Linear(weight, bias), "numpy(BLAS sgemm): fp32, no AVX512-BF16 on this CPU"
    if kind == "fp32_dense":
        # No dense fp32 kernel in workbench_ext by design: BLAS sgemm is the reference here.
        return _NumpyFp32Linear(weight, bias), "numpy(BLAS sgemm)"
    raise ValueError(f"unknown linear kind {kind!r}")


# --------------------------------------------------------------------------------------------
# elementwise ops: workbench_ext.ops when present, NumPy otherwise
# --------------------------------------------------------------------------------------------
def _np_layernorm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    xc = x - mean
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    return (xc / np.sqrt(var + np.float32(eps)) * gamma + beta).astype(np.float32, copy=False)


def layernorm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    if _has(_ext_ops, "layernorm"):
        return _ext_ops.layernorm(x, gamma, beta, float(eps))
    return _np_layernorm(x, gamma, beta, eps)


def add_bias_residual_layernorm(x: np.ndarray, bias: np.ndarray, residual: np.ndarray,
                                gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    if _has(_ext_ops, "add_bias_residual_layernorm"):
        return _ext_ops.add_bias_residual_layernorm(x, bias, residual, gamma, beta, float(eps))
    return _np_layernorm(x + bias + residual, gamma, beta, eps)


def softmax(x: np.ndarray, num_threads: int | None = None) -> np.ndarray:
    """Over the last dim of a 2-D C-contiguous float32 array."""
    if _has(_ext_ops, "softmax"):
        return _ext_ops.softmax(x) if num_threads is None else _ext_ops.softmax(x, num_threads=num_threads)
    m = x.max(axis=-1, keepdims=True)
    e = np.exp(x - m)
    e /= e.sum(axis=-1, keepdims=True)
    return e


def _np_gelu(x: np.ndarray) -> np.ndarray:
    try:
        from scipy.special import erf
    except ImportError:  # pragma: no cover
        erf = np.vectorize(math.erf, otypes=[np.float32])
    return (0.5 * x * (1.0 + erf(x * np.float32(1.0 / math.sqrt(2.0))))).astype(np.float32, copy=False)


def gelu(x: np.ndarray) -> np.ndarray:
    """erf GELU (BERT's "gelu")."""
    if _has(_ext_ops, "gelu"):
        return _ext_ops.gelu(x)
    return _np_gelu(x)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    # No kernel for the tanh approximation ("gelu_new"): NumPy only (rare in BERT checkpoints).
    c = np.float32(math.sqrt(2.0 / math.pi))
    return (0.5 * x * (1.0 + np.tanh(c * (x + np.float32(0.044715) * x * x * x)))).astype(np.float32, copy=False)


def relu(x: np.ndarray) -> np.ndarray:
    # No kernel needed: NumPy's maximum is already a single vectorised pass.
    return np.maximum(x, np.float32(0.0))


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gelu": gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": relu,
}


# --------------------------------------------------------------------------------------------
# attention matmuls: NumPy BLAS, single-threaded
# --------------------------------------------------------------------------------------------
_BLAS_CTL: Any = None


def attention_blas_threads() -> Any:
    """Context manager: NumPy's BLAS limited to 1 thread for the attention matmuls.

    There is no attention kernel in workbench_ext; QK^T and PV are many small GEMMs
    ([S, d] x [d, S] per head) where a multi-threaded OpenBLAS spends far more time waking and
    spinning threads (which then fight our OpenMP kernels for the cores) than computing: 2 threads
    measured up to 100x slower than 1 on a busy 2-core machine. Costs ~20 us per use."""
    global _BLAS_CTL
    if _BLAS_CTL is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS_CTL = ThreadpoolController().select(user_api="blas")
        except Exception:  # pragma: no cover - threadpoolctl missing: leave BLAS as it is
            _BLAS_CTL = False
    if _BLAS_CTL is False or not _BLAS_CTL.lib_controllers:
        import contextlib

        return contextlib.nullcontext()
    return _BLAS_CTL.limit(limits=1)


def default_threads() -> int:
    """The thread count the kernels use: OMP_NUM_THREADS, else the CPUs this process may use."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0])
        if n >= 1:
            return n
    except ValueError:
        pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_POOL: Any = None


def parallel_run(tasks: list[Callable[[], None]]) -> None:
    """Run independent NumPy tasks on Python threads (NumPy releases the GIL in matmul and the
    kernels release it too); used to spread the attention heads over cores with 1-thread BLAS."""
    global _POOL
    if len(tasks) <= 1:
        for t in tasks:
            t()
        return
    if _POOL is None or _POOL._max_workers < len(tasks):
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=len(tasks), thread_name_prefix="wb-attn")
    futures = [_POOL.submit(t) for t in tasks[1:]]
    tasks[0]()  # the calling thread does one share
    for f in futures:
        f.result()


def has_fused_attention() -> bool:
    return _has(_ext_attn, "attention")


def fused_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask_bias: np.ndarray,
                    num_threads: int | None = None, significance: bool = False) -> Any:
    """All heads at once: softmax(q k + mask) v -> [B, R, nh, d] (workbench_ext.attention);
    significance=True: (ctx, sig [B, nh, S]), sig = the probabilities summed over real queries."""
    return _ext_attn.attention(q, k, v, np.ascontiguousarray(mask_bias, dtype=np.float32), num_threads=num_threads,
                               significance=significance)


def isa_code() -> int:
    """The active ISA as the kernels' C code (workbench_ext.cpu.ISA_CODES)."""
    return int(_ext_cpu.ISA_CODES[_ext_cpu.active_isa()])


def int8_encoder(layers: list[dict[str, Any]], hidden_size: int) -> Any:
    """`workbench_ext.encoder.Int8Encoder` on these layers (the whole encoder in one compiled
    call), or None when it is not built or a layer's Linear is not a compiled int8 kernel."""
    if _ext_encoder is None or _ext_int8 is None:
        return None
    kinds = (_ext_int8.DenseInt8Linear, _ext_int8.BlockSparseInt8Linear)
    if not all(isinstance(fn, kinds) for layer in layers for r in ("qkv", "out", "ffn1", "ffn2")
               for _, fn in layer[r]):
        return None
    return _ext_encoder.Int8Encoder(layers, hidden_size)


def has_bf16() -> bool:
    """The bf16 kernel is built and this CPU runs it natively (AVX512-BF16)."""
    return _has(_ext_bf16, "Bf16Linear") and bool(_ext_bf16.has_avx512_bf16())


def bf16_round(x: np.ndarray) -> np.ndarray:
    """float32 -> nearest bf16 (ties to even; fp32 denormals to signed zero; NaN stays NaN), as
    float32: the NumPy specification of the kernels' conversion."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    den = (u & 0x7F800000) == 0
    r = ((u + np.uint32(0x7FFF) + ((u >> 16) & 1)) & np.uint32(0xFFFF0000)).astype(np.uint32)
    r = np.where(den, u & np.uint32(0x80000000), r)
    r = np.where(nan, (u | np.uint32(0x00400000)) & np.uint32(0xFFFF0000), r)
    return r.astype(np.uint32).view(np.float32)


def kernel_report() -> dict[str, str]:
    """Which implementation each op uses in this process."""
    def src(mod: Any, name: str, modname: str) -> str:
        return f"workbench_ext.{modname}.{name}" if _has(mod, name) else "numpy-fallback"

    return {
        "isa": active_isa(),
        "DenseInt8Linear": src(_ext_int8, "DenseInt8Linear", "int8"),
        "BlockSparseInt8Linear": src(_ext_int8, "BlockSparseInt8Linear", "int8"),
        "TileSparseInt8Linear": (src(_ext_int8, "TileSparseInt8Linear", "int8")
                                 + ("" if has_tile_sparse() else " (no AMX here: runs the dense kernel)")),
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
        "attention": ("workbench_ext.attention.attention (fused, OpenMP over heads)" if has_fused_attention()
                      else "numpy(BLAS sgemm, 1 BLAS thread, heads split over Python threads)"),
    }
