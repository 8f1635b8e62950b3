"""The runtime's Linear layers: compiled `workbench_ext` int8 / sparse / bf16 layers, or their NumPy references.

`make_linear` builds the callable for one layer and names the implementation it runs on. The
weight helpers (per-channel int8 quantization, 1x4-block and 16x64-tile sparsity, bf16 rounding)
run once, at compile time, in NumPy; with the NumPy layers they are the specification the
kernels are tested against. The compiled modules' handles and the availability checks are in
`kernels.py`, which re-exports everything here.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from workbench.runtime import kernels  # has_bf16 is called through the module: tests patch it there
from workbench.runtime.kernels import _ext_bf16, _ext_int8, _ext_ops, _ext_sparse, _has


BLOCK = 4  # 1x4 blocks along K: the sparse kernels' layout


# --------------------------------------------------------------------------------------------
# weight quantization (done once, at compile time, in NumPy: not a hot path)
# --------------------------------------------------------------------------------------------
PAIR_BOUND = 128
"""`pair_bounded` weights: |w[2j]| + |w[2j+1]| <= 128 in every row, so u8 x s8 vpmaddubsw pair
sums of 8-bit activations (<= 255 * 128 = 32640) never saturate int16."""


def quantize_weight_per_channel(w: np.ndarray, pair_bounded: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel: w ~= w_s8 * scale[:, None], w_s8 in [-127, 127].

    pair_bounded: also keep every k-pair within |w_s8[2j]| + |w_s8[2j+1]| <= `PAIR_BOUND` (128),
    which lets AVX2 CPUs without VNNI multiply 8-bit activations with the exact vpmaddubsw kernel
    (README "Pair-bounded weights"). The row's scale becomes max(max|w| / 127, max pair |w| sum
    / 128): about 1.25x coarser steps than plain int8 on trained BERT weights (weight error
    ~1.55x in MSE), against 2x for ONNX Runtime's 7-bit `reduce_range` weights. Rescaling the
    whole row was measured against clipping the offending pairs at the plain scale, and every
    scale between: on MiniLM's weights clipping had 47x the error, the best per-row scale 0.7 %
    less than the rescale. Rounding can still put a pair at 129; its element rounded up the most
    then moves one step towards zero."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    amax = np.abs(w).max(axis=1) if w.size else np.zeros(w.shape[0], np.float32)
    if pair_bounded and w.size:
        wp = np.abs(np.concatenate([w, np.zeros((w.shape[0], w.shape[1] % 2), np.float32)], axis=1))
        pair_max = (wp[:, 0::2] + wp[:, 1::2]).max(axis=1)
        amax = np.maximum(amax, pair_max * np.float32(127.0 / PAIR_BOUND))
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    x = w / scale[:, None]
    q = np.clip(np.rint(x), -127, 127)
    if pair_bounded and w.size:
        _fix_pairs(x, q)
    return np.ascontiguousarray(q.astype(np.int8)), scale


def _fix_pairs(x: np.ndarray, q: np.ndarray) -> None:
    """In place: pairs of the rounded `q` (from `x`, |x0| + |x1| <= 128 up to fp32 rounding) whose
    |q0| + |q1| rounded up past `PAIR_BOUND` lose one step on the element rounded up the most."""
    n2 = q.shape[1] // 2 * 2
    q0, q1, x0, x1 = q[:, 0:n2:2], q[:, 1:n2:2], x[:, 0:n2:2], x[:, 1:n2:2]
    over = np.abs(q0) + np.abs(q1) > PAIR_BOUND
    if not over.any():
        return
    first = (np.abs(q0) - np.abs(x0)) >= (np.abs(q1) - np.abs(x1))
    q0 -= np.where(over & first, np.sign(q0), 0)
    q1 -= np.where(over & ~first, np.sign(q1), 0)


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


# --------------------------------------------------------------------------------------------
# activation quantization (fallback for ops.quantize_per_token)
# --------------------------------------------------------------------------------------------
def _np_quantize_per_token(x: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric u8 per row onto [0, 2^bits - 1], the range always including 0 (as the kernels do)."""
    qmax = float((1 << bits) - 1)
    lo = np.minimum(x.min(axis=1), 0.0)
    hi = np.maximum(x.max(axis=1), 0.0)
    scale = ((hi - lo) / np.float32(qmax)).astype(np.float32)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    zp = np.clip(np.rint(-lo / scale), 0, qmax).astype(np.int32)
    q = np.clip(np.rint(x / scale[:, None]) + zp[:, None], 0, qmax).astype(np.uint8)
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

    def __init__(self, w_s8: np.ndarray, w_scale: np.ndarray, bias: np.ndarray | None,
                 act_bits: int = 8) -> None:
        self.N, self.K = w_s8.shape
        self.act_bits = act_bits
        self._wt = np.ascontiguousarray(w_s8.T.astype(np.float32))
        self._ws = w_scale.astype(np.float32)
        self._b = bias
        self.nnz_blocks = int(round((1.0 - block_sparsity(w_s8)) * self.N * math.ceil(self.K / BLOCK)))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if _has(_ext_ops, "quantize_per_token"):
            q, s, zp = _ext_ops.quantize_per_token(x, bits=self.act_bits)
        else:
            q, s, zp = _np_quantize_per_token(x, self.act_bits)
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
            and isinstance(layer, kernels.int8_layer_classes()))


def _pairs_tag(lin: Any) -> str:
    """", pair-bounded" for an 8-bit layer whose weights let AVX2 run the u8 kernel."""
    return ", pair-bounded" if getattr(lin, "act_bits", 8) == 8 and getattr(lin, "pair_bounded", False) else ""


def make_linear(kind: str, weight: np.ndarray, scale: np.ndarray | None,
                bias: np.ndarray | None, act_bits: int = 8) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """Build the callable for one Linear layer and name the implementation it runs on.

    kind: "int8_dense" | "int8_sparse" | "int8_tile_sparse" | "int8_library" (torch's `_int_mm`,
          oneDNN, between this package's quantization and epilogue: the dense kernel's outputs;
          where it does not run, e.g. a saved engine loaded elsewhere, the dense kernel, and the
          name returned says so) (weight int8 [N, K] + scale) or
          "fp32_dense" | "fp32_sparse" | "bf16_dense" (weight float32 [N, K]; bf16 runs on
          AVX512-BF16 when the CPU has it, else as fp32 BLAS -- the name returned says which).
    act_bits: the int8 kinds' per-token activation grid, 8 or 7 (`compile_model(act_bits=)`).
    """
    if act_bits not in (7, 8):
        raise ValueError(f"act_bits must be 7 or 8, got {act_bits!r}")
    tag = ", act_bits=7" if act_bits == 7 else ""
    weight = np.ascontiguousarray(weight)
    bias = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    if kind == "int8_dense":
        scale = np.ascontiguousarray(scale, dtype=np.float32)
        if _has(_ext_int8, "DenseInt8Linear"):
            lin = _ext_int8.DenseInt8Linear(weight, scale, bias, act_bits=act_bits)
            return lin, f"workbench_ext.int8.DenseInt8Linear[{getattr(lin, 'isa', '?')}{tag}{_pairs_tag(lin)}]"
        return _NumpyInt8Linear(weight, scale, bias, act_bits), f"numpy-fallback(int8 dense{tag})"
    if kind == "int8_tile_sparse":
        scale = np.ascontiguousarray(scale, dtype=np.float32)
        if _has(_ext_int8, "TileSparseInt8Linear"):
            lin = _ext_int8.TileSparseInt8Linear(weight, scale, bias, act_bits=act_bits)
            runs = "" if lin.isa in ("amx", "avx512_vnni") else ": the dense kernel, no tile kernel for this ISA"
            return lin, f"workbench_ext.int8.TileSparseInt8Linear[{lin.isa}{tag}]{runs}"
        return _NumpyInt8Linear(weight, scale, bias, act_bits), f"numpy-fallback(int8 tile-sparse{tag})"
    if kind == "int8_library":
        if kernels.has_library_int8():
            scale = np.ascontiguousarray(scale, dtype=np.float32)
            lin = _ext_int8.LibraryInt8Linear(weight, scale, bias, act_bits=act_bits)
            return lin, f"workbench_ext.int8.LibraryInt8Linear[torch._int_mm (oneDNN), epilogue {lin.isa}{tag}]"
        lin, impl = make_linear("int8_dense", weight, scale, bias, act_bits)
        return lin, f"{impl} (int8_library asked for, same outputs: {kernels.library_int8_problem()})"
    if kind == "int8_sparse":
        scale = np.ascontiguousarray(scale, dtype=np.float32)
        if _has(_ext_int8, "BlockSparseInt8Linear"):
            lin = _ext_int8.BlockSparseInt8Linear(weight, scale, bias, act_bits=act_bits)
            return lin, f"workbench_ext.int8.BlockSparseInt8Linear[{getattr(lin, 'isa', '?')}{tag}{_pairs_tag(lin)}]"
        return _NumpyInt8Linear(weight, scale, bias, act_bits), f"numpy-fallback(int8 sparse{tag})"
    if kind == "fp32_sparse":
        if _has(_ext_sparse, "BlockSparseFp32Linear"):
            lin = _ext_sparse.BlockSparseFp32Linear(weight.astype(np.float32, copy=False), bias)
            return lin, f"workbench_ext.sparse.BlockSparseFp32Linear[{getattr(lin, 'isa', '?')}]"
        return _NumpyFp32Linear(weight, bias), "numpy-fallback(fp32 sparse)"
    if kind == "bf16_dense":
        if kernels.has_bf16():
            lin = _ext_bf16.Bf16Linear(weight.astype(np.float32, copy=False), bias)
            return lin, f"workbench_ext.bf16.Bf16Linear[{lin.isa}]"
        return _NumpyFp32Linear(weight, bias), "numpy(BLAS sgemm): fp32, no AVX512-BF16 on this CPU"
    if kind == "fp32_dense":
        # No dense fp32 kernel in workbench_ext by design: BLAS sgemm is the reference here.
        return _NumpyFp32Linear(weight, bias), "numpy(BLAS sgemm)"
    raise ValueError(f"unknown linear kind {kind!r}")
