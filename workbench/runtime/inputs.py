"""Checking an `Engine` call's inputs before any work (each mistake gets a message naming it), and
what the attention mask says: whether the batch can run without its padding, the additive bias."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from workbench.runtime.engine import Engine


def check_inputs(engine: "Engine", input_ids: Any, attention_mask: Any, token_type_ids: Any
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The engine's inputs as arrays (ids, float 0/1 mask, token types or None), or a ValueError /
    TypeError naming what is wrong: shape, dtype, id range, sequence length, mask values."""
    ids = np.asarray(input_ids)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be 2-D [batch, seq], got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"input_ids must be integers, got dtype {ids.dtype}")
    B, S = ids.shape
    if B == 0 or S == 0:
        raise ValueError(f"input_ids must be non-empty, got shape {ids.shape}")
    if S > engine.max_seq_len:
        raise ValueError(f"sequence length {S} exceeds the model's maximum {engine.max_seq_len} "
                         f"(max_position_embeddings {engine.max_positions})")
    if ids.min() < 0 or ids.max() >= engine.vocab_size:
        raise ValueError(f"input_ids must be in [0, {engine.vocab_size}), got [{ids.min()}, {ids.max()}]")
    if attention_mask is None:
        mask = np.ones((B, S), np.float32)
    else:
        mask = np.asarray(attention_mask)
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask shape {mask.shape} does not match input_ids shape {ids.shape}")
        if not np.all((mask == 0) | (mask == 1)):
            raise ValueError("attention_mask must contain only 0 and 1")
        mask = mask.astype(np.float32)
    tt = None
    if token_type_ids is not None:
        tt = np.asarray(token_type_ids)
        if tt.shape != ids.shape:
            raise ValueError(f"token_type_ids shape {tt.shape} does not match input_ids shape {ids.shape}")
        if not np.issubdtype(tt.dtype, np.integer):
            raise TypeError(f"token_type_ids must be integers, got dtype {tt.dtype}")
        if engine.type_vocab_size == 0:
            if np.any(tt != 0):
                raise ValueError(f"{engine.architecture} has no token types; token_type_ids must be 0")
            tt = None
        elif tt.min() < 0 or tt.max() >= engine.type_vocab_size:
            raise ValueError(f"token_type_ids must be in [0, {engine.type_vocab_size})")
    return ids, mask, tt


def packable_lengths(mask: np.ndarray) -> np.ndarray | None:
    """Each row's token count when the batch can run without its padding (`Engine.pack_sequences`):
    every row is its tokens then padding (1s then 0s, at least one 1) and some row has padding.
    None otherwise: no padding to skip, or a layout (left padding, holes) that keeps the mask."""
    lengths = np.count_nonzero(mask, axis=1)
    if lengths.min() < 1 or lengths.min() == mask.shape[1]:
        return None
    if not np.array_equal(mask != 0, np.arange(mask.shape[1]) < lengths[:, None]):
        return None
    return lengths


def sequence_offsets(lengths: np.ndarray) -> np.ndarray:
    """[B + 1] int64: where each of B packed sequences of `lengths` tokens starts, then the total."""
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def attention_bias(mask: np.ndarray) -> np.ndarray:
    """The additive attention mask as in HF: 0 for tokens, dtype-min for padding; [B, 1, 1, S]."""
    return ((np.float32(1.0) - mask) * np.finfo(np.float32).min).astype(np.float32)[:, None, None, :]
