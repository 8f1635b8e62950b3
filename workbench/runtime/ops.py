"""The encoder's ops besides its Linear layers: LayerNorm, softmax, the activations and attention
(on `workbench_ext.ops` / `workbench_ext.attention` when present, NumPy otherwise) and the
compiled layer loop (`workbench_ext.encoder` only).

The Linear layers are in `linear.py`; the compiled modules' handles and the availability checks
(`has_fused_attention`) in `kernels.py`, which re-exports everything here.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from workbench.runtime import kernels  # _ext_attn is read through the module: tests patch it there
from workbench.runtime.kernels import _ext_encoder, _ext_int8, _ext_ops, _has
from workbench.runtime.threads import attention_blas_threads, parallel_run


# --------------------------------------------------------------------------------------------
# elementwise ops: workbench_ext.ops when present, NumPy otherwise
# --------------------------------------------------------------------------------------------
def _np_layernorm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    xc = x - mean
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    return (xc / np.sqrt(var + np.float32(eps)) * gamma + beta).astype(np.float32, copy=False)


def embed_rows(table: np.ndarray, ids: np.ndarray, add: np.ndarray | None = None,
               add_ids: np.ndarray | None = None) -> np.ndarray:
    """``table[ids] + add[add_ids]`` as float32 [ids.size, H] (`table` float32 or float16; the
    int8 engines keep the word embeddings in fp16): one parallel pass on workbench_ext.ops,
    NumPy otherwise; the same bits either way."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if add is not None:
        add_ids = np.ascontiguousarray(add_ids, dtype=np.int64)
    if _has(_ext_ops, "embed_rows"):
        return _ext_ops.embed_rows(table, ids, add, add_ids)
    x = table[ids.reshape(-1)].astype(np.float32, copy=False)
    if add is not None:
        x += add[add_ids.reshape(-1)]
    return x


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


def tanh(x: np.ndarray) -> np.ndarray:
    """The classifier heads' tanh on workbench_ext.ops (libm tanhf, as the compiled encoder's
    head computes it), NumPy otherwise."""
    if _has(_ext_ops, "tanh"):
        return _ext_ops.tanh(np.ascontiguousarray(x, dtype=np.float32))
    return np.tanh(x)


def relu(x: np.ndarray) -> np.ndarray:
    # No kernel needed: NumPy's maximum is already a single vectorised pass.
    return np.maximum(x, np.float32(0.0))


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gelu": gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": relu,
}


# attention's operand precisions (`compile_model(attention=...)`; the same tuple as
# workbench_ext.attention.PRECISIONS, which tests check, kept here so the NumPy path needs no
# build): fp32; bf16 where the CPU has AVX512-BF16 or AMX-BF16; int8 where it has AVX-512 VNNI
ATTENTION_PRECISIONS = ("fp32", "bf16", "int8")


# --------------------------------------------------------------------------------------------
# fused attention and the layer loop: workbench_ext.attention / workbench_ext.encoder only
# --------------------------------------------------------------------------------------------
def fused_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask_bias: np.ndarray,
                    num_threads: int | None = None, significance: bool = False, precision: str = "fp32") -> Any:
    """All heads at once: softmax(q k + mask) v -> [B, R, nh, d] (workbench_ext.attention);
    significance=True: (ctx, sig [B, nh, S]), sig = the probabilities summed over real queries.
    precision "bf16": bf16 operands where the CPU has them (`attention_bf16_path`); "int8": int8
    operands on AVX-512 VNNI (`attention_int8_runs`)."""
    return kernels._ext_attn.attention(q, k, v, np.ascontiguousarray(mask_bias, dtype=np.float32),
                                       num_threads=num_threads, significance=significance, precision=precision)


def qkv_views(qkv: np.ndarray, B: int, S: int, nh: int, d: int, cls_only: bool
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q [B, nh, rows, d] (rows: S, or 1 for the [CLS] rows), k [B, nh, d, S], v [B, nh, S, d]:
    views of the fused QKV output [B*S, 3*nh*d], as `kernels.attention` takes them."""
    x = qkv.reshape(B, S, 3, nh, d)
    q = (x[:, :1, 0] if cls_only else x[:, :, 0]).transpose(0, 2, 1, 3)
    return q, x[:, :, 1].transpose(0, 2, 3, 1), x[:, :, 2].transpose(0, 2, 1, 3)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask_bias: np.ndarray,
              sig: np.ndarray | None = None, precision: str = "fp32", num_threads: int = 1) -> np.ndarray:
    """softmax(q k + mask) v for q [B, nh, R, d], k [B, nh, d, S], v [B, nh, S, d] (views; the
    1/sqrt(d) scale already in q) -> [B, R, nh, d] (C-contiguous, i.e. [B*R, H] rows).
    `sig` [B, nh, S] (R == S): set to the probabilities summed over the non-padding queries
    (token dropping's significance). On `workbench_ext.attention` when built (all heads in one
    call, `precision` one of ATTENTION_PRECISIONS); otherwise the NumPy reference in fp32: BLAS with 1 thread
    each, the (batch, head) pairs split over `num_threads` Python threads when worth it."""
    if kernels.has_fused_attention():
        if sig is None:
            return fused_attention(q, k, v, mask_bias, precision=precision)
        ctx, sig[...] = fused_attention(q, k, v, mask_bias, significance=True, precision=precision)
        return ctx
    B, nh, R, d = q.shape
    S = k.shape[-1]
    ctx = np.empty((B, R, nh, d), np.float32)

    def part(b0: int, b1: int, h0: int, h1: int, nt: int | None) -> None:
        scores = np.matmul(q[b0:b1, h0:h1], k[b0:b1, h0:h1])
        scores += mask_bias[b0:b1]
        probs = softmax(scores.reshape(-1, S), num_threads=nt).reshape(scores.shape)
        ctx[b0:b1, :, h0:h1, :] = np.matmul(probs, v[b0:b1, h0:h1]).transpose(0, 2, 1, 3)
        if sig is not None:  # queries masked as the keys are (R == S): [b, 1, 1, S] x [b, h, S, S]
            qmask = (mask_bias[b0:b1] == 0).astype(np.float32)
            sig[b0:b1, h0:h1] = np.matmul(qmask, probs)[:, :, 0]

    n = num_threads if B * nh * R * S * d >= 1 << 20 else 1
    with attention_blas_threads():
        if n <= 1:
            part(0, B, 0, nh, None)
        elif B >= n:
            cuts = np.linspace(0, B, n + 1).round().astype(int)
            parallel_run([lambda a=a, b=b: part(a, b, 0, nh, 1) for a, b in zip(cuts[:-1], cuts[1:]) if b > a])
        else:
            cuts = np.linspace(0, nh, n + 1).round().astype(int)
            parallel_run([lambda a=a, b=b: part(0, B, a, b, 1) for a, b in zip(cuts[:-1], cuts[1:]) if b > a])
    return ctx


def attention_int8_runs() -> bool:
    """Whether attention precision "int8" runs on int8 operands here (AVX-512 VNNI); else fp32."""
    return kernels._ext_attn is not None and kernels._ext_attn.int8_runs()


def attention_bf16_path() -> str | None:
    """Where attention precision "bf16" runs here: "amx", "avx512_bf16", or None (fp32 kernels)."""
    return None if kernels._ext_attn is None else kernels._ext_attn.bf16_path()


def int8_encoder(layers: list[dict[str, Any]], hidden_size: int, attention: str = "fp32",
                 embeddings: dict[str, Any] | None = None, heads: dict[str, dict[str, Any]] | None = None) -> Any:
    """`workbench_ext.encoder.Int8Encoder` on these layers (the whole encoder in one compiled
    call), or None when it is not built or a layer's Linear is not a compiled int8 kernel. With
    `embeddings` and `heads` (name -> pre, cls, tanh; "head" the classifier's) whose Linears are
    compiled int8 kernels too, the encoder also runs whole forwards, token ids to logits
    (`classify`), and the heads by name; other heads leave it without them."""
    if _ext_encoder is None or _ext_int8 is None:
        return None
    kinds = kernels.int8_layer_classes()
    if not all(isinstance(fn, kinds) for layer in layers for r in ("qkv", "out", "ffn1", "ffn2")
               for _, fn in layer[r]):
        return None
    project = (embeddings or {}).get("project") or []  # ELECTRA-small's embedding projection
    if heads is None or not all(isinstance(fn, kinds) for h in heads.values() for r in ("pre", "cls")
                                for _, fn in h[r]) or not all(isinstance(fn, kinds) for _, fn in project):
        embeddings = heads = None
    return _ext_encoder.Int8Encoder(layers, hidden_size, attention=attention, embeddings=embeddings, heads=heads)
