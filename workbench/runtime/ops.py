"""The encoder's ops besides its Linear layers: LayerNorm, softmax and the activations (on
`workbench_ext.ops` when present, NumPy otherwise), fused attention and the compiled layer loop
(`workbench_ext.attention` / `workbench_ext.encoder` only).

The Linear layers are in `linear.py`; the compiled modules' handles and the availability checks
(`has_fused_attention`) in `kernels.py`, which re-exports everything here.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from workbench.runtime import kernels  # _ext_attn is read through the module: tests patch it there
from workbench.runtime.kernels import _ext_encoder, _ext_int8, _ext_ops, _has


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
# fused attention and the layer loop: workbench_ext.attention / workbench_ext.encoder only
# --------------------------------------------------------------------------------------------
def fused_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask_bias: np.ndarray,
                    num_threads: int | None = None, significance: bool = False, precision: str = "fp32") -> Any:
    """All heads at once: softmax(q k + mask) v -> [B, R, nh, d] (workbench_ext.attention);
    significance=True: (ctx, sig [B, nh, S]), sig = the probabilities summed over real queries.
    precision "bf16": bf16 operands where the CPU has them (`attention_bf16_path`)."""
    return kernels._ext_attn.attention(q, k, v, np.ascontiguousarray(mask_bias, dtype=np.float32),
                                       num_threads=num_threads, significance=significance, precision=precision)


def attention_bf16_path() -> str | None:
    """Where attention precision "bf16" runs here: "amx", "avx512_bf16", or None (fp32 kernels)."""
    return None if kernels._ext_attn is None else kernels._ext_attn.bf16_path()


def int8_encoder(layers: list[dict[str, Any]], hidden_size: int, attention: str = "fp32") -> Any:
    """`workbench_ext.encoder.Int8Encoder` on these layers (the whole encoder in one compiled
    call), or None when it is not built or a layer's Linear is not a compiled int8 kernel."""
    if _ext_encoder is None or _ext_int8 is None:
        return None
    kinds = (_ext_int8.DenseInt8Linear, _ext_int8.BlockSparseInt8Linear)
    if not all(isinstance(fn, kinds) for layer in layers for r in ("qkv", "out", "ffn1", "ffn2")
               for _, fn in layer[r]):
        return None
    return _ext_encoder.Int8Encoder(layers, hidden_size, attention=attention)
