"""The op-by-op forward of an `Engine` (`EngineOps`, a mixin of `workbench.runtime.engine.Engine`):
the embeddings, one encoder layer and the heads as one kernel call each, for the engines the
compiled layer loop (`workbench_ext.encoder.Int8Encoder`) does not run -- fp32 / bf16 weights,
static grids, removed blocks -- and for token dropping's padded layouts. On int8 engines it gives
the compiled loop's bits (tests/test_runtime_whole_forward.py)."""
from __future__ import annotations

from typing import Any

import numpy as np

from workbench.runtime import kernels as K
from workbench.runtime.read_model import HEAD_ACTIVATIONS

HEAD_FUNCTIONS = {"tanh": K.tanh, "gelu": K.gelu, "relu": lambda x: np.maximum(x, np.float32(0))}
"""A head's activation by name: workbench_ext.ops' tanh / GELU (the functions the compiled
encoder's head calls) and NumPy's ReLU (whose bits it copies)."""


class EngineOps:
    """`Engine._embed`, `_layer`, `_head`, `_attention`: one op per kernel call."""

    # set by Engine.__init__
    meta: dict[str, Any]
    tensors: dict[str, np.ndarray]
    hidden_size: int
    num_heads: int
    layer_heads: list[int]
    layer_ffn: list[int]
    position_ids: str
    padding_idx: int
    attention: str
    num_threads: int | None
    _linears: dict[str, Any]
    _eps: dict[str, float]
    _gelu_fused: set[str]
    _encoder: Any
    _act: Any

    def _embed(self, ids: np.ndarray, tt: np.ndarray | None) -> np.ndarray:
        """Embeddings + LayerNorm (+ the projection to the layers' width, ELECTRA-small): [B*S, H] rows."""
        T = self.tensors
        B, S = ids.shape
        H = int(T["embeddings.word"].shape[1])  # the embeddings' width
        if self.position_ids == "padding_offset":
            real = ids != self.padding_idx
            positions = np.cumsum(real, axis=1) * real + self.padding_idx
        else:
            positions = np.broadcast_to(np.arange(S), (B, S))
        x = K.embed_rows(T["embeddings.word"], ids, T["embeddings.position"], positions).reshape(B, S, H)
        if "embeddings.token_type" in T:
            x += T["embeddings.token_type"][0] if tt is None else T["embeddings.token_type"][tt]
        x = K.layernorm(x.reshape(B * S, H), T["embeddings.ln.gamma"], T["embeddings.ln.beta"],
                        self._eps["embeddings.ln"])
        project = self._linears.get("embeddings.project")
        return x if project is None else project(x)

    def _layer(self, i: int, h: np.ndarray, B: int, S: int, mask_bias: np.ndarray | None, cls_only: bool = False,
               sig: np.ndarray | None = None, offsets: np.ndarray | None = None) -> np.ndarray:
        """Encoder layer `i` on `h` [B*S, H] -> [B*S, H], or [B, H] (the [CLS] rows) when
        `cls_only`. `sig` [B, nh, S]: filled with each key's attention summed over the
        non-padding queries, per head (token dropping's significance, `runtime.dynamic`).
        `offsets` [B + 1]: `h` holds B packed sequences (rows offsets[b]..offsets[b+1]-1, no
        padding; mask_bias and S unused), and attention runs on each by itself; `sig` is then
        flat [nh * T], sequence b's [nh, its length] block at nh * offsets[b]
        (`Int8Encoder.run_layers`' layout)."""
        T, lin, H = self.tensors, self._linears, self.hidden_size
        d, nh = H // self.num_heads, self.layer_heads[i]
        cls_rows = offsets[:-1] if offsets is not None else np.arange(B) * S
        residual = np.ascontiguousarray(h[cls_rows]) if cls_only else h
        ln1 = (T[f"layers.{i}.ln1.gamma"], T[f"layers.{i}.ln1.beta"], self._eps[f"layers.{i}.ln1"])
        if nh == 0:  # attention removed: the block adds only its output projection's bias
            h = K.layernorm(residual + T[f"layers.{i}.out.bias"], *ln1)
        else:
            qkv = lin[f"layers.{i}.qkv"](h)
            if offsets is None:
                ctx = self._attention(*K.qkv_views(qkv, B, S, nh, d, cls_only), mask_bias, sig)
            else:  # each sequence as a batch of one at its own length: the bits it gets alone
                parts = []
                for a, b in zip(offsets[:-1], offsets[1:]):
                    views = K.qkv_views(qkv[a:b], 1, b - a, nh, d, cls_only)
                    own = None if sig is None else sig[nh * a:nh * b].reshape(1, nh, b - a)
                    parts.append(self._attention(*views, np.zeros((1, 1, 1, b - a), np.float32), own).reshape(-1, nh * d))
                ctx = np.concatenate(parts)
            attn = lin[f"layers.{i}.out"](ctx.reshape(residual.shape[0], nh * d))
            h = K.add_bias_residual_layernorm(attn, T[f"layers.{i}.out.bias"], residual, *ln1)
        ln2 = (T[f"layers.{i}.ln2.gamma"], T[f"layers.{i}.ln2.beta"], self._eps[f"layers.{i}.ln2"])
        if self.layer_ffn[i] == 0:  # FFN removed: only ffn_out's bias
            return K.layernorm(h + T[f"layers.{i}.ffn2.bias"], *ln2)
        ffn1 = f"layers.{i}.ffn1"
        f = lin[ffn1](h, activation="gelu") if ffn1 in self._gelu_fused else self._act(lin[ffn1](h))
        f2 = lin[f"layers.{i}.ffn2"](np.ascontiguousarray(f))
        return K.add_bias_residual_layernorm(f2, T[f"layers.{i}.ffn2.bias"], h, *ln2)

    def head_activation(self, name: str = "head") -> str:
        """Between head `name`'s two Linears: the classifier's as its family has it (meta
        "head"), tanh for an exit head."""
        return HEAD_ACTIVATIONS[self.meta["head"]] if name == "head" else "tanh"

    def _head(self, cls: np.ndarray, name: str = "head") -> np.ndarray:
        """The classifier on the [CLS] rows [B, H]; `name` "exit.<layer>": an exit head (tanh). On the
        compiled encoder when it has the head (the same bits)."""
        if self._encoder is not None and self._encoder.classifies:
            return self._encoder.head(name, np.ascontiguousarray(cls, dtype=np.float32))
        pre = self._linears[f"{name}.pre"](cls)
        pre = HEAD_FUNCTIONS[self.head_activation(name)](pre)
        return np.ascontiguousarray(self._linears[f"{name}.cls"](np.ascontiguousarray(pre, dtype=np.float32)))

    def _attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, mask_bias: np.ndarray,
                   sig: np.ndarray | None = None) -> np.ndarray:
        """softmax(q k + mask) v for q [B, nh, R, d], k [B, nh, d, S], v [B, nh, S, d] (views) ->
        [B, R, nh, d] in the engine's attention precision (`kernels.attention`); `sig` [B, nh, S]
        (R == S): set to the probabilities summed over the non-padding queries."""
        return K.attention(q, k, v, mask_bias, sig, precision=self.attention,
                           num_threads=self.num_threads or K.default_threads())
