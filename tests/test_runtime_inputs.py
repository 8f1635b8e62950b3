"""`workbench.runtime.inputs.check_inputs`: the compiled pass over a batch's values
(`workbench_ext.ops.scan_batch`) lays out every batch as the NumPy checks do -- trimmed trailing
padding, packable lengths -- and a wrong value still gets NumPy's message naming it."""
from __future__ import annotations

import numpy as np
import pytest

from workbench.runtime.inputs import _check_with_numpy, check_inputs, packable_lengths


class _Engine:
    """What check_inputs reads of an engine."""

    def __init__(self, types: int = 2) -> None:
        self.architecture, self.vocab_size, self.type_vocab_size = "TinyForSequenceClassification", 50, types
        self.max_seq_len, self.max_positions = 16, 16


def _masks(rng: np.random.Generator):
    """Right padding, left padding, holes, empty rows, no padding, trailing all-padding columns."""
    for _ in range(200):
        B, S = rng.integers(1, 5), rng.integers(1, 9)
        counts = rng.integers(0, S + 1, B)
        right = (np.arange(S) < counts[:, None]).astype(np.int64)
        yield right
        yield right[:, ::-1].copy()
        yield rng.integers(0, 2, (B, S))
        yield np.ones((B, S), np.int64)
        yield np.pad(right, ((0, 0), (0, 2)))


@pytest.mark.parametrize("types", [2, 0])
def test_the_compiled_pass_lays_out_batches_as_numpy_does(types):
    engine, rng = _Engine(types), np.random.default_rng(0)
    for mask in _masks(rng):
        ids = rng.integers(0, 50, mask.shape)
        tt = rng.integers(0, max(types, 1), mask.shape)
        fast = check_inputs(engine, ids, mask, tt)
        slow = _check_with_numpy(engine, ids, mask, tt)
        for got, want, name in zip(fast, slow, fast._fields):
            if want is None:
                assert got is None, (name, mask)
            else:
                np.testing.assert_array_equal(got, want, err_msg=f"{name}: {mask.tolist()}")
                assert got.dtype == want.dtype, name
        lengths = packable_lengths(mask[:, :fast.ids.shape[1]])
        assert (lengths is None) == (fast.lengths is None)


def test_every_dtype_the_checks_accept_gets_the_same_layout():
    engine = _Engine()
    ids = np.array([[3, 4, 5, 0], [6, 7, 0, 0]])
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    want = check_inputs(engine, ids, mask, None)
    assert want.ids.shape == (2, 3) and want.lengths.tolist() == [3, 2]
    for i, m in ((ids.astype(np.int32), mask.astype(bool)), (ids.astype(np.uint8), mask.astype(np.float32)),
                 (np.asfortranarray(ids), mask.astype(np.int8)), (ids, None)):
        got = check_inputs(engine, i, m, None)
        np.testing.assert_array_equal(got.ids, want.ids if m is not None else ids)
        if m is not None:
            np.testing.assert_array_equal(got.mask, want.mask)
            np.testing.assert_array_equal(got.lengths, want.lengths)


@pytest.mark.parametrize("bad, message", [
    (dict(ids=np.array([[1, 50]])), r"input_ids must be in \[0, 50\), got \[1, 50\]"),
    (dict(ids=np.array([[-1, 2]])), r"input_ids must be in \[0, 50\), got \[-1, 2\]"),
    (dict(mask=np.array([[1, 2]])), "attention_mask must contain only 0 and 1"),
    (dict(mask=np.array([[1, -1]])), "attention_mask must contain only 0 and 1"),
    (dict(mask=np.array([[1.0, 0.5]])), "attention_mask must contain only 0 and 1"),
    (dict(tt=np.array([[0, 2]])), r"token_type_ids must be in \[0, 2\)"),
    (dict(tt=np.array([[0, -1]])), r"token_type_ids must be in \[0, 2\)"),
    (dict(tt=np.array([[0, 1]]), types=0), "has no token types; token_type_ids must be 0"),
])
def test_a_wrong_value_is_named(bad, message):
    engine = _Engine(bad.get("types", 2))
    ids, mask, tt = bad.get("ids", np.array([[1, 2]])), bad.get("mask", np.array([[1, 1]])), bad.get("tt")
    with pytest.raises(ValueError, match=message):
        check_inputs(engine, ids, mask, tt)
