"""The whole static forward in one compiled call (`Int8Encoder.classify`: embeddings, every layer,
the classifier head): the same bits as the per-op path and as the encoder call between the
Python embeddings and head, for each family's embeddings (BERT token types, RoBERTa's padding
offset positions, DistilBERT without token types) and head (tanh pooler, ReLU pre-classifier),
packed, masked and unpadded batches; argument errors name the argument."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from test_arch import ids_and_mask, tiny  # noqa: E402

from workbench.runtime import compile_model  # noqa: E402
from workbench.runtime import kernels as K  # noqa: E402
from workbench.runtime.dynamic import static_trace  # noqa: E402


def _three_ways(engine, ids, mask, tt=None):
    """Logits from classify, from the encoder between Python's embeddings and head, op by op."""
    encoder = engine._encoder
    assert encoder is not None and encoder.classifies
    whole = engine(ids, mask, tt)
    layers_only = type("LayersOnly", (), {"classifies": False, "run": encoder.run, "run_packed": encoder.run_packed})()
    engine._encoder = layers_only
    try:
        between = engine(ids, mask, tt)
        engine._encoder = None
        per_op = engine(ids, mask, tt)
    finally:
        engine._encoder = encoder
    return whole, between, per_op


def _layouts(family):
    ids, mask = (t.numpy() for t in ids_and_mask(pad_id=1 if family == "roberta" else 0))
    left = mask[:, ::-1].copy()     # left padding: the mask is kept (no packing)
    yield "packed", ids, mask
    yield "left padding", ids, left
    yield "no padding", ids, np.ones_like(mask)
    yield "batch of one", ids[1:2, :10], mask[1:2, :10]


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "electra", "electra-small"])
def test_whole_forward_is_the_per_op_forward(family):
    model = tiny(family, num_labels=3)
    engine = compile_model(model, kernel_choice="dense")
    for layout, ids, mask in _layouts(family):
        whole, between, per_op = _three_ways(engine, ids, mask)
        assert whole.shape == (len(ids), 3) and whole.dtype == np.float32
        np.testing.assert_array_equal(whole, between, err_msg=layout)
        np.testing.assert_array_equal(whole, per_op, err_msg=layout)
    if family == "roberta":  # a real token whose id is the padding id: position padding_idx, as in HF
        ids, mask = (t.numpy() for t in ids_and_mask(pad_id=1))
        ids[0, 3] = 1
        whole, between, per_op = _three_ways(engine, ids, mask)
        np.testing.assert_array_equal(whole, per_op)
        np.testing.assert_array_equal(whole, between)


def test_token_types_and_sparse_kernels():
    from workbench.bench.models import prune

    model = prune(tiny("bert"), 0.8)
    engine = compile_model(model, kernel_choice="sparse")
    ids, mask = (t.numpy() for t in ids_and_mask())
    tt = np.zeros_like(ids)
    tt[:, 6:] = 1
    for types in (None, tt, tt.astype(np.int32)):
        whole, between, per_op = _three_ways(engine, ids, mask, types)
        np.testing.assert_array_equal(whole, per_op)
        np.testing.assert_array_equal(whole, between)
    assert not np.array_equal(engine(ids, mask, tt), engine(ids, mask))  # the types are read


def test_the_trace_of_a_static_call_is_built_when_asked_for():
    engine = compile_model(tiny("bert"))
    ids, mask = (t.numpy() for t in ids_and_mask())
    engine(ids, mask)
    trace, want = engine.last_trace, static_trace(mask.astype(np.float32), engine.num_layers, packed=True)
    assert trace is engine.last_trace       # built once
    np.testing.assert_array_equal(trace.tokens, want.tokens)
    assert trace.rows == want.rows == [int(mask.sum())] * engine.num_layers


def test_heads_that_are_not_int8_kernels_leave_the_encoder_without_ends():
    """`int8_encoder` gives the encoder its ends only with an int8 head; without them `classify`
    refuses, and the engine runs the encoder between Python's embeddings and head."""
    engine = compile_model(tiny("bert"))
    assert engine._encoder.classifies
    lin = engine._linears
    ln = (np.ones(32, np.float32), np.zeros(32, np.float32), 1e-12)
    layer = {"qkv": [(0, lin["layers.0.qkv"])], "out": [(0, lin["layers.0.out"])],
             "ffn1": [(0, lin["layers.0.ffn1"])], "ffn2": [(0, lin["layers.0.ffn2"])], "heads": 4, "head_dim": 8,
             "ln1": ln, "ln2": ln, "out_bias": np.zeros(32, np.float32), "ffn2_bias": np.zeros(32, np.float32)}
    embeddings = {"word": np.zeros((10, 32), np.float32), "position": np.zeros((8, 32), np.float32),
                  "token_type": None, "gamma": ln[0], "beta": ln[1], "eps": 1e-12, "padding_idx": None}
    numpy_head = {"pre": [(0, lambda x: x)], "cls": [(0, lambda x: x)], "activation": "tanh"}
    int8_head = {"pre": [(0, lin["head.pre"])], "cls": [(0, lin["head.cls"])], "activation": "tanh"}
    assert K.int8_encoder([layer], 32, embeddings=embeddings, heads={"head": int8_head}).classifies
    assert not K.int8_encoder([layer], 32, embeddings=embeddings, heads={"head": numpy_head}).classifies
    assert not K.int8_encoder([layer], 32, embeddings=embeddings,
                              heads={"head": int8_head, "exit.0": numpy_head}).classifies
    bare = K.int8_encoder([layer], 32)
    assert not bare.classifies
    with pytest.raises(ValueError, match="classify needs both"):
        bare.classify(np.zeros((1, 4), np.int64), None, None, np.zeros((1, 4), np.float32), K.isa_code())
    with pytest.raises(ValueError, match="no head 'head'"):
        bare.head("head", np.zeros((1, 32), np.float32))
    with pytest.raises(ValueError, match="heads must include the classifier's"):
        K.int8_encoder([layer], 32, embeddings=embeddings, heads={"exit.0": int8_head})


def test_classify_names_a_wrong_argument():
    engine = compile_model(tiny("bert"))
    encoder, isa = engine._encoder, K.isa_code()
    ids = np.full((2, 5), 7, np.int64)
    bias = np.zeros((2, 5), np.float32)
    cases = [
        ((ids.astype(np.int32), None, None, bias), TypeError, "ids must have dtype int64"),
        ((ids, np.zeros((2, 4), np.int64), None, bias), ValueError, "tt must have the shape of ids"),
        ((ids, None, [5], bias), ValueError, "one count per row"),
        ((ids, None, [5, 6], bias), ValueError, "at most 5"),
        ((ids, None, [5, 0], bias), ValueError, "at least one token"),
        ((ids, None, None, bias[:1]), ValueError, "mask_bias must be"),
        ((np.full((2, 5), 120, np.int64), None, None, bias), ValueError, r"input_ids must be in \[0, 120\), got 120"),
        ((ids, np.full((2, 5), 2, np.int64), None, bias), ValueError, r"token_type_ids must be in \[0, 2\)"),
    ]
    for args, err, match in cases:
        with pytest.raises(err, match=match):
            encoder.classify(*args, isa)
    with pytest.raises(ValueError, match=r"cls_rows must be \[B >= 1, 32\]"):
        encoder.head("head", np.zeros((2, 31), np.float32))
    with pytest.raises(TypeError, match="cls_rows must have dtype float32"):
        encoder.head("head", np.zeros((2, 32)))
    np.testing.assert_array_equal(encoder.classify(ids, None, [5, 3], None, isa)[1],
                                  encoder.classify(ids[1:, :3].copy(), None, None, bias[:1, :3].copy(), isa)[0])


def test_the_heads_tanh_is_tanh():
    x = np.linspace(-6, 6, 1001, dtype=np.float32).reshape(7, 143)
    y = K.tanh(x)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, np.tanh(x.astype(np.float64)), rtol=0, atol=2e-7)


@pytest.mark.parametrize("kernels", ["dense", "sparse"])
def test_ffn_row_blocks_keep_every_bit(kernels):
    """`_set_ffn_block_rows(n)`: each layer's FFN and LayerNorm n rows at a time, the same logits
    (every kernel is per row), packed and masked batches, and a block that is not a divisor."""
    from workbench.bench.models import prune
    from workbench_ext import encoder

    engine = compile_model(prune(tiny("bert"), 0.8), kernel_choice=kernels)
    ids, mask = (t.numpy() for t in ids_and_mask())
    layouts = {"packed": (ids, mask), "left padding": (ids, mask[:, ::-1].copy())}
    want = {k: engine(*v) for k, v in layouts.items()}
    try:
        for rows in (1, 5, 16):
            assert encoder._set_ffn_block_rows(rows) in (0, 1, 5)
            for k, v in layouts.items():
                np.testing.assert_array_equal(engine(*v), want[k], err_msg=f"{rows} rows, {k}")
    finally:
        encoder._set_ffn_block_rows(0)
    with pytest.raises(ValueError, match="rows must be >= 0"):
        encoder._set_ffn_block_rows(-1)
