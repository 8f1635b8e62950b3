"""A static forward's input check and forward in one compiled call (`Int8Encoder.classify_tokens`,
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
