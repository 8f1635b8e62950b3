"""`compile_model(act_bits=7)`: the int8 engine with 7-bit per-token activations, on the real
MiniLM weights (fixtures and the int8 contract from test_runtime.py)."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from test_runtime import _engine_logits, _torch_logits  # (the minilm fixture: conftest.py)
from workbench.runtime import Engine, compile_model

pytestmark = pytest.mark.usefixtures("single_threaded_torch_and_blas")


def _torch_int8_error(model, enc, ref):
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    return np.abs(_torch_logits(tq, enc) - ref).max()


def test_act7_engine_every_int8_layer_and_the_int8_contract(minilm):
    model, enc = minilm
    engine = compile_model(model, act_bits=7)
    assert engine.describe()["act_bits"] == 7
    assert all(lm["act_bits"] == 7 for lm in engine.meta["linears"].values())
    assert all("act_bits=7" in impl for impl in engine.impls.values()), engine.impls
    assert engine._encoder is not None   # the compiled layer loop runs the 7-bit layers too
    out, ref = _engine_logits(engine, enc), _torch_logits(model, enc)
    out8 = _engine_logits(compile_model(model), enc)
    err7, err8 = np.abs(out - ref).max(), np.abs(out8 - ref).max()
    # measured: 0.149 against 0.068 at 8 bits and torch's dynamic int8 0.318, max |logit| 0.88;
    # one bit fewer is about twice the step, and the result stays within torch's own int8 error
    assert 0 < err8 < err7 <= 4 * err8, (err7, err8)
    assert err7 <= 0.25 * np.abs(ref).max()
    assert err7 <= _torch_int8_error(model, enc, ref)
    assert np.mean(out.argmax(1) == ref.argmax(1)) >= 0.9


@pytest.mark.parametrize("prune_to", [0.0, 0.8])
def test_act7_compiled_encoder_matches_per_op_and_survives_save_load(minilm, prune_to, tmp_path):
    from workbench.bench.models import prune

    model, enc = minilm
    if prune_to:
        model = prune(copy.deepcopy(model), prune_to)
    engine = compile_model(model, act_bits=7, kernel_choice="sparse" if prune_to else "dense")
    compiled = _engine_logits(engine, enc)
    engine.save(tmp_path / "eng")
    loaded = Engine.load(tmp_path / "eng")
    assert loaded.meta["act_bits"] == 7 and loaded.meta["linears"] == engine.meta["linears"]
    np.testing.assert_array_equal(_engine_logits(loaded, enc), compiled)
    engine._encoder = None
    np.testing.assert_array_equal(_engine_logits(engine, enc), compiled)


def test_act7_numpy_reference_layers_agree(minilm, monkeypatch):
    """The NumPy int8 reference quantizes onto the same 7-bit grid as the kernels."""
    from workbench.runtime import linear

    rng = np.random.default_rng(3)
    x = (rng.standard_normal((6, 40)) * 2).astype(np.float32)
    w = rng.integers(-127, 128, size=(9, 40)).astype(np.int8)
    ws = np.full(9, 0.01, np.float32)
    kernel, impl = linear.make_linear("int8_dense", w, ws, None, act_bits=7)
    assert "act_bits=7" in impl
    ref = linear._NumpyInt8Linear(w, ws, None, act_bits=7)
    np.testing.assert_allclose(kernel(x), ref(x), rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(linear, "_ext_ops", None)   # the pure NumPy quantizer: same grid
    np.testing.assert_allclose(kernel(x), ref(x), rtol=1e-5, atol=1e-6)


def test_act7_bad_settings_are_clear_errors(minilm):
    from workbench.config import ConfigError
    from workbench.recipes.base import RECIPES

    model, _ = minilm
    with pytest.raises(ValueError, match="act_bits must be 7 or 8"):
        compile_model(model, act_bits=4)
    with pytest.raises(ValueError, match="act_bits=7 applies to int8 engines only"):
        compile_model(model, quantize=False, act_bits=7)
    cls = RECIPES["workbench_runtime"]
    with pytest.raises(ConfigError, match="act_bits"):
        cls(cls.Config(quantize=False, act_bits=7), ctx=None).config.validate("stage runtime")


def test_bench_has_7_bit_engines():
    from workbench.bench.engines import DEFAULT_ENGINES, ENGINES

    assert ENGINES["wb-int8-a7"].act_bits == 7 and ENGINES["wb-int8-sp90-a7"].act_bits == 7
    assert ENGINES["wb-int8-sp90-a7"].sparsity == 0.9 and ENGINES["wb-int8"].act_bits == 8
    assert not any(e.endswith("-a7") for e in DEFAULT_ENGINES)   # opt-in
