"""Token dropping and early exits on packed batches (`runtime.dynamic_forward`): each layer on the
kept tokens' rows only, in one compiled call on int8 engines (`Int8Encoder.run_layers`, with the
attention significance), and each example gets the bits it gets alone."""
from __future__ import annotations

import numpy as np
import pytest

from test_runtime_dynamic import EXITS, RATIOS, _inputs, model  # noqa: F401  (fixtures)
from workbench.models.dynamic import DynamicSpec
from workbench.runtime import compile_model
from workbench.runtime.dynamic_forward import packed_layer
from workbench_ext import cpu

pytestmark = pytest.mark.usefixtures("single_threaded_torch_and_blas")


def _isa() -> int:
    return cpu.ISA_CODES[cpu.active_isa()]


def _exit_threshold(engine, ids, mask) -> float:
    """An entropy threshold at which some examples leave after layer 0 and some do not."""
    logits = engine(ids, mask, exit_at=0)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ent = -(p * np.log(p)).sum(1) / np.log(p.shape[1])
    return float(np.median(ent))


@pytest.mark.parametrize("model", ["cls", "mean"], indirect=True)
@pytest.mark.parametrize("attention", ["fp32", "int8"])
def test_each_example_gets_the_bits_it_gets_alone(model, attention):
    engine = compile_model(model, quantize=True, attention=attention)
    assert engine._encoder is not None  # the layers run as compiled calls
    ids, mask = _inputs(batch=6, seed=4)
    thr = _exit_threshold(engine, ids, mask)
    calls = {"drop": {}, "exit": {"exit_threshold": thr, "length_ratios": None},
             "both": {"exit_threshold": thr}}
    for name, kw in calls.items():
        out = engine(ids, mask, **kw)
        trace = engine.last_trace
        if name != "drop":
            assert 0 < (trace.exit_layer == 0).sum() < len(ids), name  # some leave, some stay
        for b in range(len(ids)):
            n = int(mask[b].sum())
            alone = engine(ids[b:b + 1, :n], mask[b:b + 1, :n], **kw)
            np.testing.assert_array_equal(alone[0], out[b], err_msg=f"{name}, example {b}")
            assert engine.last_trace.exit_layer[0] == trace.exit_layer[b]
            np.testing.assert_array_equal(engine.last_trace.tokens[0], trace.tokens[b])
        # and in another batch, another order
        order = [3, 0, 5]
        np.testing.assert_array_equal(engine(ids[order], mask[order], **kw), out[order], err_msg=name)


@pytest.mark.parametrize("model", ["mean"], indirect=True)
def test_compiled_layers_equal_the_per_op_layers(model):
    """`run_layers` (one compiled call per layer, significance in C) gives the bits of the per-op
    path (`Engine._layer` with offsets), and at batch 1 those of the padded loop."""
    ids, mask = _inputs(batch=6, seed=4)
    compiled = compile_model(model, quantize=True)
    assert compiled.describe()["layer_loop"].startswith(
        "compiled: workbench_ext.encoder.Int8Encoder, one call per forward (token ids to logits); "
        "token dropping and exits: one call up to each exit check")
    per_op = compile_model(model, quantize=True)
    per_op._encoder = None
    thr = _exit_threshold(compiled, ids, mask)
    # the last: an exit check after layer 2 only, so layers 0-2 run in one call with drops and
    # layer 2's significance (for the drop after it)
    for kw in ({}, {"exit_threshold": thr}, {"exit_at": 2}, {"exit_threshold": thr, "exit_layers": [2]}):
        out = compiled(ids, mask, **kw)
        np.testing.assert_array_equal(per_op(ids, mask, **kw), out, err_msg=str(kw))
        np.testing.assert_array_equal(per_op.last_trace.tokens, compiled.last_trace.tokens)
        n = int(mask[1].sum())
        per_op.pack_sequences = False
        np.testing.assert_array_equal(per_op(ids[1:2, :n], mask[1:2, :n], **kw), compiled(ids[1:2, :n], mask[1:2, :n], **kw))
        per_op.pack_sequences = True


def test_significance_is_each_sequences_own(model):
    """run_layers' sig: sequence b's [nh, n_b] block at nh * offset_b, the bits the attention
    kernel's significance gives that sequence alone."""
    engine = compile_model(model, quantize=True)
    ids, mask = _inputs(batch=3)
    lengths = mask.sum(1)
    h = np.ascontiguousarray(engine._embed(ids, None)[mask.reshape(-1) != 0])
    nh, T = engine.layer_heads[0], int(lengths.sum())
    sig = np.full(nh * T, np.nan, np.float32)
    out = engine._encoder.run_layers(h, lengths, 0, 1, _isa(), sig=sig)
    assert out.shape == h.shape and not np.isnan(sig).any()
    at = 0
    for b, n in enumerate(lengths):
        own = np.empty((1, nh, n), np.float32)
        alone = engine._layer(0, np.ascontiguousarray(h[at:at + n]), 1, n, np.zeros((1, 1, 1, n), np.float32), sig=own)
        np.testing.assert_array_equal(sig[nh * at:nh * (at + n)].reshape(1, nh, n), own, err_msg=f"sequence {b}")
        np.testing.assert_array_equal(out[at:at + n], alone)
        np.testing.assert_allclose(own.sum(1).sum(1), n * nh, rtol=1e-5)  # each query's probabilities sum to 1
        at += n
    # the per-op path's layout is the same
    per_op = np.full(nh * T, np.nan, np.float32)
    engine._layer(0, h, 3, int(lengths.max()), None, sig=per_op, offsets=np.concatenate([[0], np.cumsum(lengths)]))
    np.testing.assert_array_equal(per_op, sig)


def test_packed_layer_runs_a_range_of_the_static_encoder(model):
    """run_layers over all layers, the last [CLS]-only, is run_packed; layer by layer too."""
    engine = compile_model(model, quantize=True)
    ids, mask = _inputs(batch=4)
    lengths = mask.sum(1)
    h = np.ascontiguousarray(engine._embed(ids, None)[mask.reshape(-1) != 0])
    L = engine.num_layers
    whole = engine._encoder.run_packed(h, lengths, _isa())
    np.testing.assert_array_equal(engine._encoder.run_layers(h, lengths, 0, L, _isa(), cls_only=True), whole)
    x = h
    for i in range(L):
        x = packed_layer(engine, i, x, lengths, cls_only=i == L - 1)
    np.testing.assert_array_equal(x, whole)


def test_run_layers_names_bad_inputs(model):
    engine = compile_model(model, quantize=True)
    enc, H = engine._encoder, engine.hidden_size
    h, lengths = np.zeros((5, H), np.float32), np.array([3, 2])
    nh = engine.layer_heads[0]
    with pytest.raises(ValueError, match=r"need 0 <= first < stop <= 4"):
        enc.run_layers(h, lengths, 2, 2, _isa())
    with pytest.raises(ValueError, match=r"need 0 <= first < stop"):
        enc.run_layers(h, lengths, 0, 5, _isa())
    with pytest.raises(ValueError, match="cannot go with cls_only"):
        enc.run_layers(h, lengths, 0, 1, _isa(), sig=np.zeros(nh * 5, np.float32), cls_only=True)
    with pytest.raises(ValueError, match=rf"sig must be C-contiguous float32 with {nh * 5} elements"):
        enc.run_layers(h, lengths, 0, 1, _isa(), sig=np.zeros(nh * 4, np.float32))
    with pytest.raises(ValueError, match="sig must be"):
        enc.run_layers(h, lengths, 0, 1, _isa(), sig=np.zeros(nh * 5, np.float64))
    with pytest.raises(ValueError, match="at least one token"):
        enc.run_layers(h, np.array([5, 0]), 0, 1, _isa())


def test_left_padding_keeps_the_padded_loop(model):
    """A left-padded batch cannot be packed: it runs the padded loop (B x largest rows)."""
    engine = compile_model(model, quantize=False)
    ids, mask = _inputs(batch=3)
    lengths = mask.sum(1)
    left_ids, left_mask = np.zeros_like(ids), np.zeros_like(mask)
    for i, n in enumerate(lengths):
        left_ids[i, -n:], left_mask[i, -n:] = ids[i, :n], 1
    engine(left_ids, left_mask, spec=DynamicSpec(length_ratios=RATIOS, exit_layers=EXITS))
    assert engine.last_trace.rows[0] == left_mask.size
    engine(ids, mask, spec=DynamicSpec(length_ratios=RATIOS, exit_layers=EXITS))
    assert engine.last_trace.rows[0] == int(lengths.sum())


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.7])
def test_compiled_drops_keep_what_select_keeps(model, fraction):
    """run_layers' drops (in C) keep the tokens `select` picks from the layer's significance:
    [CLS] first (also when it is not the most attended: fraction 0 keeps it alone), then the
    most attended, in their order."""
    from workbench.runtime.dynamic import select

    engine = compile_model(model, quantize=True)
    ids, mask = _inputs(batch=6, seed=4)
    lengths = mask.sum(1)
    h = np.ascontiguousarray(engine._embed(ids, None)[mask.reshape(-1) != 0])
    nh, T = engine.layer_heads[0], int(lengths.sum())
    sig = np.empty(nh * T, np.float32)
    engine._encoder.run_layers(h, lengths, 0, 1, _isa(), sig=sig)
    total = np.zeros((len(lengths), lengths.max()), np.float32)
    at = 0
    for b, n in enumerate(lengths):
        total[b, :n] = sig[nh * at:nh * (at + n)].reshape(nh, n).sum(0)
        at += n
    assert (total[:, 1:].max(1) > total[:, 0]).any()  # [CLS] is not always the most attended
    k = np.maximum(1, np.ceil(fraction * lengths)).astype(np.int32)
    chosen = np.empty(int(k.sum()), np.int32)
    out = engine._encoder.run_layers(h, lengths, 0, 2, _isa(), keep=k[None, :], chosen=chosen)
    idx, valid = select(total, np.arange(lengths.max())[None, :] < lengths[:, None], k)
    np.testing.assert_array_equal(chosen, idx[valid])
    assert out.shape == (int(k.sum()), engine.hidden_size)
    with pytest.raises(ValueError, match="keep must be"):
        engine._encoder.run_layers(h, lengths, 0, 2, _isa(), keep=k[None, :2], chosen=chosen)
    with pytest.raises(ValueError, match="chosen must be"):
        engine._encoder.run_layers(h, lengths, 0, 2, _isa(), keep=k[None, :], chosen=chosen[:-1])


def test_each_call_runs_its_own_overrides(model):
    """The engine reuses the spec of its last call's overrides (`dynamic.resolve`): other values,
    a list changed in place, None, and no overrides each run their own spec."""
    from workbench.models.dynamic import kept_counts

    engine = compile_model(model, quantize=True)
    ids, mask = _inputs()
    n = int(mask[0].sum())
    one = ids[:1, :n], mask[:1, :n]
    ratios = [0.5, 0.5, 0.5, 0.5]
    for r in (RATIOS, ratios, RATIOS, None, ratios):
        engine(*one, length_ratios=r)
        assert engine.last_trace.tokens.tolist() == [kept_counts(r, n) if r else [n] * 4], r
    ratios[0] = 0.9  # the same list object, other values
    engine(*one, length_ratios=ratios)
    assert engine.last_trace.tokens.tolist() == [kept_counts(ratios, n)]
    engine(*one)  # the compiled spec
    assert engine.last_trace.tokens.tolist() == [kept_counts(RATIOS, n)]
