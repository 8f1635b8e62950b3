"""Checking an `Engine` call's inputs before any work (each mistake gets a message naming it), and
what the attention mask says: whether the batch can run without its padding, the additive bias."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from workbench.runtime.engine import Engine


class Inputs(NamedTuple):
    """An `Engine` call's inputs, checked: ids [B, S'] (integers), mask float32 0/1 [B, S'],
    token types or None, and `lengths` [B] (each row's tokens) when the batch can run packed
    (`packable_lengths`), else None. S' <= S: trailing columns that are padding in every row are
    dropped -- exact, since padded keys get a zero attention weight and only the [CLS] row is read
    (kept when a row is all padding)."""
    ids: np.ndarray
    mask: np.ndarray
    tt: np.ndarray | None
    lengths: np.ndarray | None


def check_inputs(engine: "Engine", input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Inputs:
    """The engine's inputs checked and laid out (`Inputs`), or a ValueError / TypeError naming what
    is wrong: shape, dtype, id range, sequence length, mask values, token types. The values are
    read in one compiled pass (`workbench_ext.ops.scan_batch`) when the arrays are integers;
    NumPy otherwise, and to name a wrong value."""
    ids = np.asarray(input_ids)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be 2-D [batch, seq], got shape {ids.shape}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"input_ids must be integers, got dtype {ids.dtype}")
    B, S = ids.shape
    if B == 0 or S == 0:
        raise ValueError(f"input_ids must be non-empty, got shape {ids.shape}")
    if S > engine.max_seq_len:
        raise ValueError(f"sequence length {S} exceeds the model's maximum {engine.max_seq_len} "
                         f"(max_position_embeddings {engine.max_positions})")
    mask = None if attention_mask is None else np.asarray(attention_mask)
    if mask is not None and mask.shape != ids.shape:
        raise ValueError(f"attention_mask shape {mask.shape} does not match input_ids shape {ids.shape}")
    tt = None if token_type_ids is None else np.asarray(token_type_ids)
    if tt is not None:
        if tt.shape != ids.shape:
            raise ValueError(f"token_type_ids shape {tt.shape} does not match input_ids shape {ids.shape}")
        if tt.dtype.kind not in "iu":
            raise TypeError(f"token_type_ids must be integers, got dtype {tt.dtype}")
    scan = _scan(engine, ids, mask, tt)
    if scan is None:
        return _check_with_numpy(engine, ids, mask, tt)
    counts, prefix, last = scan
    mask = np.ones((B, S), np.float32) if mask is None else mask.astype(np.float32)
    tt = None if tt is None or engine.type_vocab_size == 0 else tt
    return _layout(ids, mask, tt, counts, prefix, last)


def _scan(engine: "Engine", ids: np.ndarray, mask: np.ndarray | None, tt: np.ndarray | None
          ) -> tuple[np.ndarray, bool, int] | None:
    """(counts, prefix, last) from the compiled pass when every value is right; None when it is
    not built, an array is not integers, or a value is wrong (NumPy then says which)."""
    from workbench.runtime.kernels import _ext_ops, _has

    if not _has(_ext_ops, "scan_batch") or (mask is not None and mask.dtype.kind not in "iub"):
        return None
    as64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
    types = engine.type_vocab_size or 1  # no token types: every tt must be 0
    ok, counts, prefix, last = _ext_ops.scan_batch(
        as64(ids), None if mask is None else as64(mask),
        None if tt is None else as64(tt), engine.vocab_size, types)
    return (counts, prefix, last) if ok else None


def _check_with_numpy(engine: "Engine", ids: np.ndarray, mask: np.ndarray | None, tt: np.ndarray | None
                      ) -> Inputs:
    """`check_inputs`' value checks and layout in NumPy: each wrong value raises, naming it."""
    if ids.min() < 0 or ids.max() >= engine.vocab_size:
        raise ValueError(f"input_ids must be in [0, {engine.vocab_size}), got [{ids.min()}, {ids.max()}]")
    if mask is None:
        mask = np.ones(ids.shape, np.float32)
    else:
        if not np.all((mask == 0) | (mask == 1)):
            raise ValueError("attention_mask must contain only 0 and 1")
        mask = mask.astype(np.float32)
    if tt is not None:
        if engine.type_vocab_size == 0:
            if np.any(tt != 0):
                raise ValueError(f"{engine.architecture} has no token types; token_type_ids must be 0")
            tt = None
        elif tt.min() < 0 or tt.max() >= engine.type_vocab_size:
            raise ValueError(f"token_type_ids must be in [0, {engine.type_vocab_size})")
    counts = np.count_nonzero(mask, axis=1)
    valid = np.nonzero(mask.any(axis=0))[0]
    return _layout(ids, mask, tt, counts, _is_prefix(mask, counts), int(valid[-1]) + 1 if valid.size else 0)


def _is_prefix(mask: np.ndarray, counts: np.ndarray) -> bool:
    """Whether every row of the mask is its `counts` 1s, then 0s."""
    return bool(np.array_equal(mask != 0, np.arange(mask.shape[1]) < counts[:, None]))


def _layout(ids: np.ndarray, mask: np.ndarray, tt: np.ndarray | None, counts: np.ndarray, prefix: bool,
            last: int) -> Inputs:
    """`Inputs` from each row's token count, whether every row is its tokens then padding, and 1 +
    the last column holding a token."""
    S = ids.shape[1]
    if counts.min() > 0 and last < S:  # trailing columns that are padding in every row
        ids, mask = ids[:, :last], mask[:, :last]
        tt = None if tt is None else tt[:, :last]
        S = last
    return Inputs(ids, mask, tt, _packable(counts, prefix, S))


def _packable(counts: np.ndarray, prefix: bool, S: int) -> np.ndarray | None:
    """`packable_lengths` from the mask's row counts and whether each row is its 1s then 0s."""
    if not prefix or counts.min() < 1 or counts.min() == S:
        return None
    return counts


def packable_lengths(mask: np.ndarray) -> np.ndarray | None:
    """Each row's token count when the batch can run without its padding (`Engine.pack_sequences`):
    every row is its tokens then padding (1s then 0s, at least one 1) and some row has padding.
    None otherwise: no padding to skip, or a layout (left padding, holes) that keeps the mask."""
    counts = np.count_nonzero(mask, axis=1)
    return _packable(counts, _is_prefix(mask, counts), mask.shape[1])


def sequence_offsets(lengths: np.ndarray) -> np.ndarray:
    """[B + 1] int64: where each of B packed sequences of `lengths` tokens starts, then the total."""
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def attention_bias(mask: np.ndarray) -> np.ndarray:
    """The additive attention mask as in HF: 0 for tokens, dtype-min for padding; [B, 1, 1, S]."""
    return ((np.float32(1.0) - mask) * np.finfo(np.float32).min).astype(np.float32)[:, None, None, :]
