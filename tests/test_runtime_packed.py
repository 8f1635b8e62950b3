"""Padded batches on the compiled layer loop run without their padding (`Engine.pack_sequences`,
`Int8Encoder.run_packed`): each row's logits are the bits it gets alone, whatever it is batched
with, on every attention precision and kernel ISA; layouts that cannot be packed keep the mask."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from workbench.runtime import compile_model
from workbench.runtime import kernels as K
from workbench.runtime.inputs import packable_lengths

pytestmark = pytest.mark.usefixtures("single_threaded_torch_and_blas")


def _alone(engine, ids, mask):
    """Each row run by itself at its own length (no padding anywhere)."""
    rows = [engine(ids[i:i + 1, :int(mask[i].sum())], mask[i:i + 1, :int(mask[i].sum())])
            for i in range(len(ids))]
    return np.concatenate(rows)


@pytest.fixture(params=["portable", "avx2", "best"])
def isa(request):
    from workbench_ext import cpu

    name = cpu.available_isas()[0] if request.param == "best" else request.param
    if name not in cpu.available_isas():
        pytest.skip(f"{name} not on this CPU")
    cpu.set_isa(name)
    yield name
    cpu.set_isa(None)


@pytest.mark.parametrize("attention", ["fp32", "int8", "bf16"])
def test_packed_rows_are_the_bits_each_row_gets_alone(minilm, isa, attention):
    model, enc = minilm
    engine = compile_model(model, attention=attention, kernel_choice="dense")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert packable_lengths(mask) is not None   # TEXTS: uneven lengths, right padding
    packed = engine(ids, mask)
    np.testing.assert_array_equal(packed, _alone(engine, ids, mask))
    # in another batch (other rows, other order): the same bits per row
    order = [5, 0, 10, 3]
    np.testing.assert_array_equal(engine(ids[order], mask[order]), packed[order])
    # the padded batch, masked, agrees to rounding (int8 activations amplify a last-bit change)
    engine.pack_sequences = False
    np.testing.assert_allclose(engine(ids, mask), packed, atol=0.02)


def test_packing_skips_the_padding_rows(minilm, monkeypatch):
    """The Linears see only the real tokens: the encoder gets sum(lengths) rows, not B x S --
    from the token ids (the whole forward in one call, with the input check in it or after
    `check_inputs`) and from the embeddings (`run_packed`)."""
    model, enc = minilm
    engine = compile_model(model, kernel_choice="dense")
    seen = []
    encoder = engine._encoder
    lengths = enc["attention_mask"].sum(1).tolist()
    assert sum(lengths) < enc["attention_mask"].size
    logits, counts, packed = encoder.classify_tokens(enc["input_ids"], enc["attention_mask"], None, engine.vocab_size,
                                                     engine.type_vocab_size, True, 0, K.isa_code())
    assert packed and counts.tolist() == lengths
    engine(enc["input_ids"], enc["attention_mask"])
    assert engine.last_trace.rows == [sum(lengths)] * engine.num_layers
    monkeypatch.setattr(engine, "_encoder", type("Spy", (), {
        "classifies": True,
        "classify": lambda self, ids, tt, lengths, bias, isa:
            seen.append((ids.shape, list(lengths), bias)) or encoder.classify(ids, tt, lengths, bias, isa),
    })())
    ids32 = enc["input_ids"].astype(np.int32)  # int32 ids: check_inputs, then classify
    engine(ids32, enc["attention_mask"])
    assert seen == [(ids32.shape, lengths, None)]
    seen.clear()
    monkeypatch.setattr(engine, "_encoder", type("Spy", (), {
        "classifies": False,
        "run_packed": lambda self, h, lengths, isa: seen.append((h.shape, list(lengths))) or encoder.run_packed(h, lengths, isa),
    })())
    engine(enc["input_ids"], enc["attention_mask"])
    assert seen == [((sum(lengths), model.config.hidden_size), lengths)]


def test_sparse_and_measured_kernels_pack_too(minilm):
    from workbench.bench.models import prune

    model, enc = minilm
    engine = compile_model(prune(copy.deepcopy(model), 0.8), kernel_choice="measure", choice_shape=(1, 16))
    ids, mask = enc["input_ids"], enc["attention_mask"]
    np.testing.assert_array_equal(engine(ids, mask), _alone(engine, ids, mask))


def test_layouts_that_keep_the_mask():
    right = np.array([[1, 1, 1], [1, 1, 0]])
    np.testing.assert_array_equal(packable_lengths(right), [3, 2])
    assert packable_lengths(np.ones((2, 3))) is None                # no padding to skip
    assert packable_lengths(np.array([[0, 1, 1], [1, 1, 1]])) is None  # left padding
    assert packable_lengths(np.array([[1, 0, 1], [1, 1, 1]])) is None  # a hole
    assert packable_lengths(np.array([[1, 1, 0], [0, 0, 0]])) is None  # an empty row


def test_left_padding_runs_masked(minilm):
    """A left-padded batch is not packed: it runs masked, each row as close to its own run at
    batch 1 (left-padded the same way) as fp32 rounding allows."""
    model, enc = minilm
    engine = compile_model(model, quantize=False)   # fp32: no int8 rounding to amplify differences
    ids, mask = enc["input_ids"], enc["attention_mask"]
    lengths = mask.sum(1)
    left_ids, left_mask = np.zeros_like(ids), np.zeros_like(mask)
    for i, n in enumerate(lengths):
        left_ids[i, -n:], left_mask[i, -n:] = ids[i, :n], 1
    assert packable_lengths(left_mask) is None
    # positions differ under left padding (absolute positions), so compare each row with its own
    # left-padded run at batch 1 instead
    one = [engine(left_ids[i:i + 1], left_mask[i:i + 1]) for i in range(3)]
    np.testing.assert_allclose(engine(left_ids, left_mask)[:3], np.concatenate(one), atol=1e-5)


def test_run_packed_names_bad_inputs(minilm):
    model, _ = minilm
    encoder = compile_model(model)._encoder
    H = model.config.hidden_size
    from workbench_ext import cpu

    isa = cpu.ISA_CODES[cpu.active_isa()]
    with pytest.raises(ValueError, match="at least one token"):
        encoder.run_packed(np.zeros((3, H), np.float32), np.array([3, 0]), isa)
    with pytest.raises(ValueError, match=r"h must be C-contiguous float32 \[5, "):
        encoder.run_packed(np.zeros((4, H), np.float32), np.array([3, 2]), isa)
    with pytest.raises(ValueError, match="lengths must be a 1-D array"):
        encoder.run_packed(np.zeros((3, H), np.float32), np.array([[3]]), isa)


@pytest.mark.parametrize("engine_kind", ["fp32", "bf16", "per-op int8", "removed blocks"])
def test_the_per_op_path_packs_too(minilm, engine_kind):
    """Engines without the compiled loop (fp32 / bf16 weights, layers whose attention or FFN was
    removed, or the per-op int8 path) run a padded batch packed too: attention per sequence."""
    import torch

    from workbench.prune.structure import shrink, structure

    model, enc = minilm
    if engine_kind == "removed blocks":
        model = copy.deepcopy(model)
        st = structure(model)
        heads, neurons = torch.ones(st.num_layers, st.max_heads), torch.ones(st.num_layers, st.max_neurons)
        heads[1], heads[2, :5], neurons[3] = 0, 0, 0   # layer 1: no attention; 2: 7 heads; 3: no FFN
        shrink(model, heads, neurons)
    kwargs = {"fp32": {"quantize": False}, "bf16": {"quantize": False, "dtype": "bf16"}}.get(engine_kind, {})
    engine = compile_model(model, **kwargs)
    if engine_kind == "per-op int8":
        engine._encoder = None
    assert engine._encoder is None
    ids, mask = enc["input_ids"], enc["attention_mask"]
    packed = engine(ids, mask)
    if kwargs:  # fp32 / bf16 weights: BLAS-style GEMMs round differently at other row counts
        np.testing.assert_allclose(packed, _alone(engine, ids, mask), atol=1e-5)
    else:       # int8: exact integer GEMMs, and attention per sequence: the same bits
        np.testing.assert_array_equal(packed, _alone(engine, ids, mask))
    engine.pack_sequences = False
    np.testing.assert_allclose(engine(ids, mask), packed, atol=1e-5 if kwargs else 0.05)
