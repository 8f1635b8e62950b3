"""A static forward's input check and forward in one compiled call (`Int8Encoder.forward_call`,
`Engine._classify_in_one_call`): the common calls -- int64 arrays, no padding or right padding --
skip `check_inputs` and get its bits; every other call, and every wrong value, takes the checked
path, which names what is wrong."""
from __future__ import annotations

import gc
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from test_arch import ids_and_mask, tiny  # noqa: E402

import workbench.runtime.engine as engine_module  # noqa: E402
from workbench.runtime import compile_model  # noqa: E402
from workbench.runtime import kernels as K  # noqa: E402
from workbench.runtime.dynamic import static_trace  # noqa: E402
from workbench.runtime.inputs import check_inputs  # noqa: E402


@pytest.fixture(scope="module")
def bert():
    from workbench.bench.models import prune

    return compile_model(prune(tiny("bert"), 0.8), kernel_choice="sparse")


def _checked(engine, ids, mask, tt=None):
    """The logits of the checked path: `check_inputs`, then `_forward`."""
    return engine._forward(*check_inputs(engine, ids, mask, tt))


def _count_checks(monkeypatch):
    calls = []
    monkeypatch.setattr(engine_module, "check_inputs", lambda *a: calls.append(1) or check_inputs(*a))
    return calls


def test_common_calls_skip_the_python_check_and_keep_its_bits(bert, monkeypatch):
    ids, mask = (t.numpy() for t in ids_and_mask())
    tt = np.zeros_like(ids)
    tt[:, 6:] = 1
    ones = np.ones_like(mask)
    cases = {"right padding (packed)": (ids, mask, None), "no padding": (ids, ones, None),
             "no mask": (ids, None, None), "token types": (ids, mask, tt), "batch of one": (ids[1:2], ones[1:2], None)}
    want = {name: _checked(bert, *args) for name, args in cases.items()}
    calls = _count_checks(monkeypatch)
    for name, args in cases.items():
        got = bert(*args)
        np.testing.assert_array_equal(got, want[name], err_msg=name)
        trace = static_trace((ones if args[1] is None else args[1]).astype(np.float32), bert.num_layers,
                             packed=args[1] is mask)
        np.testing.assert_array_equal(bert.last_trace.tokens, trace.tokens, err_msg=name)
        assert bert.last_trace.rows == trace.rows, name
    assert calls == []


def test_other_calls_take_the_checked_path(bert, monkeypatch):
    ids, mask = (t.numpy() for t in ids_and_mask())
    hole = mask.copy()
    hole[0, 3] = 0
    empty_row = mask.copy()
    empty_row[2] = 0
    cases = {"int32 ids": (ids.astype(np.int32), mask), "int32 mask": (ids, mask.astype(np.int32)),
             "left padding": (ids, mask[:, ::-1].copy()), "a hole": (ids, hole), "a row of padding": (ids, empty_row),
             "not contiguous": (np.asfortranarray(ids), mask), "a list": (ids.tolist(), mask)}
    calls = _count_checks(monkeypatch)
    for name, (i, m) in cases.items():
        before = len(calls)
        np.testing.assert_array_equal(bert(i, m), _checked(bert, i, m), err_msg=name)
        assert len(calls) == before + 1, name
    bert.pack_sequences = False  # right padding then runs masked, as check_inputs lays it out
    try:
        before = len(calls)
        np.testing.assert_array_equal(bert(ids, mask), _checked(bert, ids, mask))
        assert len(calls) == before + 1
    finally:
        del bert.pack_sequences


def test_wrong_values_are_named_by_the_checked_path(bert):
    ids, mask = (t.numpy() for t in ids_and_mask())
    big = ids.copy()
    big[1, 2] = 120
    two = mask.copy()
    two[0, 0] = 2
    tt = np.full_like(ids, 2)
    long = np.ones((1, 65), np.int64)
    for args, match in (((big, mask), r"input_ids must be in \[0, 120\)"), ((ids, two), "only 0 and 1"),
                        ((ids, mask, tt), r"token_type_ids must be in \[0, 2\)"), ((long, None), "exceeds")):
        with pytest.raises(ValueError, match=match):
            bert(*args)
    distil = compile_model(tiny("distilbert"))
    with pytest.raises(ValueError, match="no token types"):
        distil(ids, mask, np.ones_like(ids))
    np.testing.assert_array_equal(distil(ids, mask, np.zeros_like(ids)), distil(ids, mask))


def test_classify_tokens_pauses_gc_and_sets_threads_for_its_call_only(bert):
    """GC is off while the compiled call allocates (a collection there would walk the caller's
    whole heap), and back on after it, also after an error; `threads` holds for the call only."""
    from workbench_ext import cpu

    enc, isa = bert._encoder, K.isa_code()
    ids, mask = (t.numpy() for t in ids_and_mask())
    args = (ids, mask, None, 120, 2, True)
    enc.classify_tokens(*args, 0, isa)
    old, events = gc.get_threshold(), []

    def seen(phase, info):
        events.append(phase)

    gc.collect()
    gc.callbacks.append(seen)
    gc.set_threshold(1)  # a collection at nearly every allocation, unless GC is off
    try:
        out = enc.classify_tokens(ids, mask, None, 120, 2, True, 0, isa)  # no *args: a tuple before the call
    finally:
        gc.set_threshold(*old)
        gc.callbacks.remove(seen)
    assert events == [] and gc.isenabled() and out is not None
    with pytest.raises(ValueError, match="position"):  # a sequence longer than the position table
        enc.classify_tokens(np.ones((1, 65), np.int64), None, None, 120, 2, True, 0, isa)
    assert gc.isenabled()
    default = cpu.get_num_threads()
    for n in (1, 2):  # that 2 starts the pool: test_runtime's num_threads test (MiniLM, large enough to split)
        np.testing.assert_array_equal(enc.classify_tokens(*args, n, isa)[0], out[0])
        assert cpu.get_num_threads() == default


def _int8_kernels(engine):
    """The compiled int8 Linears behind an engine's layers (a RowSwitch's every part)."""
    out = []
    for fn in engine._linears.values():
        parts = getattr(fn, "parts", None)
        out += [p for _, p in parts] if parts else [fn]
    return [k for k in out if isinstance(k, K.int8_layer_classes())]


def test_the_compiled_forward_runs_every_linear_on_the_isa_it_was_given(bert):
    """The encoder resolves the ISA once per forward (classify_tokens' `isa`) and hands it to each
    Linear, so the Linears run on it, not on what the cpu module says at that moment: each of
    them is then packed for it. Every ISA path gives the same bits."""
    from workbench_ext import cpu

    enc = bert._encoder
    ids, mask = (t.numpy() for t in ids_and_mask())
    best = cpu.available_isas()[0]
    want = enc.classify_tokens(ids, mask, None, 120, 2, True, 0, cpu.ISA_CODES[best])[0]
    assert {k.isa for k in _int8_kernels(bert)} == {best}
    for name in cpu.available_isas()[1:]:
        got = enc.classify_tokens(ids, mask, None, 120, 2, True, 0, cpu.ISA_CODES[name])[0]
        assert {k.isa for k in _int8_kernels(bert)} == {name}, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    bert(ids, mask)   # a plain call: the active ISA again
    assert {k.isa for k in _int8_kernels(bert)} == {cpu.active_isa()}


def test_the_engine_call_reads_the_isa_threads_and_packing_at_each_call(bert):
    """`Engine.__call__`'s compiled fast path (`Int8Encoder.forward_call`) reads the active ISA
    in C at every call (a `set_isa` between calls holds), and takes the engine's `num_threads`
    and `pack_sequences` as they are at that call."""
    from workbench_ext import cpu

    ids, mask = (t.numpy() for t in ids_and_mask())
    want = _checked(bert, ids, mask)
    for name in cpu.available_isas()[::-1]:
        cpu.set_isa(name)
        try:
            np.testing.assert_array_equal(bert(ids, mask), want, err_msg=name)
            assert {k.isa for k in _int8_kernels(bert)} == {name}, name
        finally:
            cpu.set_isa(None)
    seen, fast = [], bert._forward_call
    bert._forward_call = lambda *a: seen.append(a[3:]) or fast(*a)
    try:
        bert.num_threads, bert.pack_sequences = 1, False
        bert(ids, np.ones_like(mask))
        bert.num_threads = None
        del bert.pack_sequences
        bert(ids, np.ones_like(mask))
    finally:
        bert.num_threads = None
        bert.__dict__.pop("pack_sequences", None)   # back to the class default
        bert._forward_call = fast
    assert seen == [(False, 1), (True, 0)]


def test_the_fast_call_leaves_odd_arrays_to_the_checked_path(bert, monkeypatch):
    """forward_call returns None, before any work, for what its C checks do not cover: an ndarray
    subclass, a mask or token types of another shape, a sequence past the position table, token
    types on a model without them; the checked path then runs (and names what is wrong)."""
    ids, mask = (t.numpy() for t in ids_and_mask())
    enc = bert._encoder

    class Sub(np.ndarray):
        pass

    assert enc.forward_call(ids, mask, None, True, 0) is not None
    for name, args in {"subclass": (ids.view(Sub), mask), "mask shape": (ids, mask[:, :-1].copy()),
                       "types shape": (ids, mask, np.zeros((ids.shape[0], 3), np.int64)),
                       "too long": (np.ones((1, 65), np.int64), None)}.items():
        assert enc.forward_call(*args + (None,) * (3 - len(args)), True, 0) is None, name
    calls = _count_checks(monkeypatch)
    np.testing.assert_array_equal(bert(ids.view(Sub), mask), _checked(bert, ids, mask))
    with pytest.raises(ValueError, match="attention_mask"):
        bert(ids, mask[:, :-1].copy())
    assert len(calls) == 2
    distil = compile_model(tiny("distilbert"))
    assert distil._encoder.forward_call(ids, mask, np.zeros_like(ids), True, 0) is None


def test_setting_the_encoder_sets_the_one_call_path(bert, monkeypatch):
    """`engine._encoder = None` (the per-op path, as tests and breakdowns set it) also turns the
    one-call path off, so the call runs op by op; putting the encoder back turns it on."""
    ids, mask = (t.numpy() for t in ids_and_mask())
    encoder, layers = bert._encoder, []
    layer = bert._layer
    monkeypatch.setattr(bert, "_layer", lambda *a, **k: layers.append(1) or layer(*a, **k))
    bert._encoder = None
    try:
        assert bert._forward_call is None
        per_op = bert(ids, mask)
        assert len(layers) == bert.num_layers
    finally:
        bert._encoder = encoder
    assert bert._forward_call is not None
    np.testing.assert_array_equal(bert(ids, mask), per_op)  # the same bits either way
    assert len(layers) == bert.num_layers
