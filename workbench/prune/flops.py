"""Encoder MACs (multiply-accumulates) of a possibly uneven model, from its module shapes.

Counted per layer at sequence length S, hidden size H, head size d, `h` heads and `F` FFN
neurons as they stand in the weights (`workbench.models.arch`), as Kwon et al. (2022) count:

    attention: Q, K, V and output projections 4 * S * H * (h * d), scores Q K^T and the
               weighted sum P V 2 * S * S * (h * d)        -> per head  4*S*H*d + 2*S*S*d
    FFN:       in and out projections 2 * S * H * F        -> per neuron 2*S*H

Biases, LayerNorms, softmax and GELU are left out (linear in S*H, small next to the above);
embeddings and the classifier head are not part of the encoder. FLOPs = 2 * MACs; a budget given
as a *fraction* of FLOPs removed is the same fraction of MACs.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from workbench.models.arch import architecture


def head_macs(hidden_size: int, head_size: int, seq_len: float) -> float:
    """MACs of one attention head at `seq_len` tokens."""
    return 4.0 * seq_len * hidden_size * head_size + 2.0 * seq_len * seq_len * head_size


def neuron_macs(hidden_size: int, seq_len: float) -> float:
    """MACs of one FFN neuron at `seq_len` tokens."""
    return 2.0 * seq_len * hidden_size


def layer_macs(model: nn.Module, seq_len: float) -> list[dict[str, Any]]:
    """Per encoder layer: heads, neurons, attention MACs, FFN MACs and their sum."""
    arch = architecture(model, "flops")
    h, d = arch.hidden_size, arch.head_size
    out = []
    for i in range(arch.num_layers):
        heads = arch.num_heads(i)
        neurons = int(arch.module(i, "ffn_in").out_features)
        attn = heads * head_macs(h, d, seq_len)
        ffn = neurons * neuron_macs(h, seq_len)
        out.append({"layer": i, "heads": heads, "neurons": neurons, "attention": attn, "ffn": ffn,
                    "total": attn + ffn})
    return out


def encoder_macs(model: nn.Module, seq_len: float) -> dict[str, Any]:
    """`{"total": MACs of the encoder, "per_layer": layer_macs(...), "seq_len": seq_len}`."""
    per_layer = layer_macs(model, seq_len)
    return {"total": float(sum(p["total"] for p in per_layer)), "per_layer": per_layer, "seq_len": float(seq_len)}


def masked_macs(head_mask: Any, neuron_mask: Any, hidden_size: int, head_size: int, seq_len: float) -> float:
    """Encoder MACs of a model after removing the zero entries of `head_mask` [L, H] and
    `neuron_mask` [L, F] (padding entries of an uneven model are zero and count nothing)."""
    heads = float((head_mask != 0).sum())
    neurons = float((neuron_mask != 0).sum())
    return heads * head_macs(hidden_size, head_size, seq_len) + neurons * neuron_macs(hidden_size, seq_len)
