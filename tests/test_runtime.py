"""workbench.runtime: the engine against torch on the real MiniLM weights (behaviour, not speed).

Tolerances (the contract documented in workbench/runtime/engine.py):
  fp32 path: |logits - torch| <= 1e-4;
  int8 path: |logits - torch| <= 0.25 * max|torch logits|, no larger than torch's own dynamic
  int8 error, and the same argmax wherever torch's margin is clear of that error.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import warnings

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from workbench.runtime import (  # noqa: E402
    FP32_ATOL, Engine, EngineModule, UnsupportedModelError, compile_model,
)

from conftest import TEXTS  # noqa: E402  (and the `minilm` fixture: real weights, TEXTS padded)

pytestmark = pytest.mark.usefixtures("single_threaded_torch_and_blas")


def _torch_logits(model, enc):
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()


def _engine_logits(engine, enc):
    return engine(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))


def _check_int8(out, ref, model, enc):
    err = np.abs(out - ref).max()
    assert err <= 0.25 * np.abs(ref).max(), (err, np.abs(ref).max())
    # no worse than the peer int8 path (torch dynamic quantization, per-tensor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    torch_err = np.abs(_torch_logits(tq, enc) - ref).max()
    assert err <= torch_err * 1.05, (err, torch_err)
    margin = np.abs(ref[:, 0] - ref[:, 1])
    clear = margin > 2 * err
    assert clear.sum() >= len(ref) // 2
    assert np.array_equal(out[clear].argmax(1), ref[clear].argmax(1))
    assert np.mean(out.argmax(1) == ref.argmax(1)) >= 0.9
    return err


def test_fp32_path_matches_torch(minilm):
    model, enc = minilm
    engine = compile_model(model, quantize=False)
    out, ref = _engine_logits(engine, enc), _torch_logits(model, enc)
    assert out.shape == (len(TEXTS), 2) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=FP32_ATOL, rtol=0)
    assert all(lm["kind"] == "fp32_dense" for lm in engine.meta["linears"].values())


def test_int8_path_bounded_error_and_argmax(minilm):
    model, enc = minilm
    engine = compile_model(model)  # quantize=True by default
    assert all(lm["kind"] == "int8_dense" for lm in engine.meta["linears"].values())
    _check_int8(_engine_logits(engine, enc), _torch_logits(model, enc), model, enc)


def test_int8_ffn_gelu_fused_into_the_kernel_changes_nothing(minilm):
    """Every int8 FFN input layer applies GELU in its epilogue; the logits are bit-identical to
    running GELU as its own op on the layer's output."""
    model, enc = minilm
    engine = compile_model(model)
    engine._encoder = None  # the per-op path (the compiled encoder fuses GELU the same way)
    assert engine._gelu_fused == {f"layers.{i}.ffn1" for i in range(engine.num_layers)}
    fused = _engine_logits(engine, enc)
    engine._gelu_fused = set()
    np.testing.assert_array_equal(fused, _engine_logits(engine, enc))
    assert compile_model(model, quantize=False)._gelu_fused == set()  # fp32: BLAS, then ops.gelu


@pytest.mark.parametrize("per_op", [False, True])
def test_engine_num_threads_is_the_thread_count_of_its_calls(minilm, per_op):
    """`engine.num_threads = n` holds for that engine's calls, on the compiled encoder and op by
    op (it once reached only the NumPy attention): 1 never starts the kernels' pool, 2 does, the
    outputs are the same bits, the kernels' default is left as it was, and a bad value is refused."""
    from workbench_ext import cpu, pool

    model, enc = minilm
    engine = compile_model(model)
    if per_op:
        engine._encoder = None
    assert engine.num_threads is None  # the kernels' default (here torch's 1: see single_threaded_torch_and_blas)
    default = cpu.get_num_threads()
    outs, jobs = {}, {}
    for n in (1, 2):
        engine.num_threads = n
        before = pool.stats()["jobs"]
        outs[n] = _engine_logits(engine, enc)
        jobs[n] = pool.stats()["jobs"] - before
        assert cpu.get_num_threads() == default
    assert jobs[1] == 0 and jobs[2] > 0, jobs
    np.testing.assert_array_equal(outs[1], outs[2])
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(ValueError, match="num_threads"):
            engine.num_threads = bad


@pytest.mark.parametrize("prune_to", [0.0, 0.8])
def test_compiled_encoder_matches_the_per_op_path(minilm, prune_to):
    """The whole int8 encoder in one compiled call (workbench_ext.encoder) gives the same bits
    as running its kernels one Python call at a time, dense and block-sparse, padded batch,
    on repeated calls (kept buffers) and a new shape (new buffers), and at batch 1 (where the
    fused QKV hands each thread its heads' columns: col_segments 3)."""
    from workbench.bench.models import prune

    model, enc = minilm
    if prune_to:
        model = prune(copy.deepcopy(model), prune_to)
    engine = compile_model(model, kernel_choice="sparse" if prune_to else "dense")
    assert engine._encoder is not None and engine.describe()["layer_loop"].startswith("compiled")
    engine.pack_sequences = False  # the padded batch as the per-op path runs it (packed: test_runtime_packed)
    compiled = [_engine_logits(engine, enc), _engine_logits(engine, enc)]
    few, one = ({k: v[:n] for k, v in enc.items()} for n in (3, 1))
    compiled_few, compiled_one = _engine_logits(engine, few), _engine_logits(engine, one)
    encoder, engine._encoder = engine._encoder, None
    np.testing.assert_array_equal(compiled[0], _engine_logits(engine, enc))
    np.testing.assert_array_equal(compiled[1], compiled[0])
    np.testing.assert_array_equal(compiled_few, _engine_logits(engine, few))
    np.testing.assert_array_equal(compiled_one, _engine_logits(engine, one))
    fp32 = compile_model(model, quantize=False)
    assert fp32._encoder is None and fp32.describe()["layer_loop"].startswith("per op")  # fp32: per op


def test_forward_runs_without_gc_pauses_and_restores_gc(minilm, monkeypatch):
    """The checked path (int32 ids); the one-call path's GC pause: tests/test_runtime_one_call.py."""
    import gc
    model, enc = minilm
    enc = {k: v.astype(np.int32) for k, v in enc.items()}
    engine = compile_model(model)
    seen = []
    forward = engine._forward
    monkeypatch.setattr(engine, "_forward", lambda *a: seen.append(gc.isenabled()) or forward(*a))
    assert gc.isenabled()
    _engine_logits(engine, enc)
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:
        _engine_logits(engine, enc)
        assert not gc.isenabled()  # a caller's own setting is left alone
    finally:
        gc.enable()
    monkeypatch.setattr(engine, "_forward", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        _engine_logits(engine, enc)
    assert gc.isenabled()


def test_trailing_padding_does_not_change_logits(minilm):
    model, enc = minilm
    engine = compile_model(model, quantize=False)
    pad = {k: np.pad(v, ((0, 0), (0, 7))) for k, v in enc.items()}  # 7 more padding columns
    np.testing.assert_allclose(_engine_logits(engine, pad), _engine_logits(engine, enc), atol=1e-5)


def test_pruned_model_uses_sparse_kernels_and_matches(minilm):
    from workbench.recipes.prune.magnitude import magnitude_prune_

    model, enc = minilm
    pruned = copy.deepcopy(model)
    magnitude_prune_(pruned, 0.8, block=(1, 4))
    ref = _torch_logits(pruned, enc)
    for quantize in (False, True):
        engine = compile_model(pruned, quantize=quantize, sparse_threshold=0.5)
        kinds = {n: lm["kind"] for n, lm in engine.meta["linears"].items()}
        enc_layers = [n for n in kinds if n.startswith("layers.")]
        assert len(enc_layers) == 6 * 4
        assert all(kinds[n].endswith("_sparse") for n in enc_layers), kinds
        assert kinds["head.pre"].endswith("_dense") and kinds["head.cls"].endswith("_dense")
        assert all(engine.meta["linears"][n]["block_sparsity"] >= 0.8 - 1e-3 for n in enc_layers)
        out = _engine_logits(engine, enc)
        if quantize:
            _check_int8(out, ref, pruned, enc)
        else:
            np.testing.assert_allclose(out, ref, atol=FP32_ATOL, rtol=0)
    # above the threshold nothing is sparse
    dense = compile_model(pruned, sparse_threshold=0.9)
    assert not dense.sparse_layers()


def test_save_load_round_trip_is_identical(minilm, tmp_path):
    from workbench.recipes.prune.magnitude import magnitude_prune_

    model, enc = minilm
    pruned = copy.deepcopy(model)
    magnitude_prune_(pruned, 0.7, block=(1, 4), targets=[r"re:bert\.encoder\.layer\.[0-2]\..*"])  # mixed dense/sparse
    engine = compile_model(pruned)
    assert engine.sparse_layers() and len(engine.sparse_layers()) < 24
    engine.save(tmp_path / "eng")
    files = sorted(p.name for p in (tmp_path / "eng").iterdir())
    assert files == ["engine.json", "engine.safetensors"]
    meta = json.loads((tmp_path / "eng" / "engine.json").read_text())
    assert meta["architecture"] == "BertForSequenceClassification" and meta["quantize"] is True
    loaded = Engine.load(tmp_path / "eng")
    assert EngineModule(loaded).workbench_engine == "workbench-int8-sparse"
    assert loaded.meta["linears"] == engine.meta["linears"]
    assert np.array_equal(_engine_logits(loaded, enc), _engine_logits(engine, enc))
    # and through the nn.Module wrapper
    mod = EngineModule.load(tmp_path / "eng")
    got = mod(**{k: torch.from_numpy(v) for k, v in enc.items()})
    assert isinstance(got.logits, torch.Tensor)
    assert np.array_equal(got.logits.numpy(), _engine_logits(engine, enc))
    with pytest.raises(FileNotFoundError):
        Engine.load(tmp_path / "nowhere")
    # a copy cut short names the file (it raised the JSON parser's / safetensors' own error)
    for name in files:
        shutil.copytree(tmp_path / "eng", tmp_path / "cut", dirs_exist_ok=True)
        (tmp_path / "cut" / name).write_bytes((tmp_path / "eng" / name).read_bytes()[:64])
        with pytest.raises(ValueError, match=f"cut/{name} is .*cut short or was not written by Engine.save"):
            Engine.load(tmp_path / "cut")
    with pytest.raises(NotADirectoryError, match="is a file; an engine is saved as a folder"):
        engine.save(tmp_path / "eng" / "engine.json")
    # storage / sparsity hooks used by workbench.evaluate
    stats = mod.workbench_stats()
    assert stats["nonzero_params"] < stats["params"] == engine.num_parameters()
    on_disk = sum(p.stat().st_size for p in (tmp_path / "eng").iterdir())
    assert abs(stats["disk_bytes"] - on_disk) < 1024
    from workbench.evaluate import storage_stats
    full, quick = storage_stats(mod), storage_stats(mod, compress=False)
    assert 0 < full["zlib_mb"] < full["disk_mb"] == quick["disk_mb"] and quick["zlib_mb"] is None
    sp = mod.workbench_layer_sparsity()
    assert len(sp) == 6 * 6 and sp["bert.encoder.layer.0.attention.self.query"] >= 0.7 - 1e-3
    assert sp["bert.encoder.layer.5.output.dense"] < 0.5


def test_engine_module_and_recipe(minilm):
    from workbench.recipes.base import RECIPES

    model, enc = minilm
    cls = RECIPES["workbench_runtime"]
    cfg = cls.Config()
    assert cfg.quantize is True and cfg.sparse_threshold == 0.5
    module = cls(cls.Config(quantize=False), ctx=None).apply(model)
    assert isinstance(module, EngineModule) and isinstance(module, torch.nn.Module)
    t = {k: torch.from_numpy(v) for k, v in enc.items()}
    out = module(**t, labels=torch.zeros(len(TEXTS), dtype=torch.long))
    np.testing.assert_allclose(out.logits.numpy(), _torch_logits(model, enc), atol=FP32_ATOL)
    assert out.loss is not None and out.loss.ndim == 0
    assert module(t["input_ids"], t["attention_mask"]).logits.shape == (len(TEXTS), 2)
    assert module.config.num_labels == 2
    assert module.workbench_engine == "workbench-fp32"
    assert not hasattr(module, "save_pretrained")  # the pipeline rebuilds compiled stages


@pytest.mark.parametrize("family", ["distilbert", "electra", "electra-small"])
def test_other_families_match_torch(family):
    """DistilBERT (ReLU pre-classifier, no token types) and ELECTRA (a GELU classifier head);
    ELECTRA-small's embeddings are narrower than its layers, projected by a Linear (int8 in the
    int8 engine, whose whole-forward call gives the op-by-op path's bits)."""
    from transformers import (DistilBertConfig, DistilBertForSequenceClassification, ElectraConfig,
                              ElectraForSequenceClassification)

    torch.manual_seed(0)
    if family == "distilbert":
        cfg = DistilBertConfig(dim=64, hidden_dim=128, n_layers=2, n_heads=4, vocab_size=500, num_labels=3)
        model = DistilBertForSequenceClassification(cfg).eval()
    else:
        cfg = ElectraConfig(embedding_size=32 if family == "electra-small" else 64, hidden_size=64,
                            intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=500,
                            num_labels=3)
        model = ElectraForSequenceClassification(cfg).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 500, (3, 20), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    mask[2, 5:] = 0
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits.numpy()
    out = compile_model(model, quantize=False)(ids.numpy(), mask.numpy())
    np.testing.assert_allclose(out, ref, atol=FP32_ATOL, rtol=0)
    engine = compile_model(model)
    out8 = engine(ids.numpy(), mask.numpy())
    assert np.abs(out8 - ref).max() <= 0.25 * np.abs(ref).max()
    if family == "electra-small":
        assert engine._encoder is not None and "embeddings.project" in engine.describe()["linears"]
        engine._encoder = None  # the op-by-op path: the same kernels, one call each
        np.testing.assert_array_equal(engine(ids.numpy(), mask.numpy()), out8)


def test_unsupported_architecture_is_a_clear_error():
    from transformers import BertConfig, BertModel, GPT2Config, GPT2ForSequenceClassification

    gpt = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100))
    with pytest.raises(UnsupportedModelError, match="GPT2ForSequenceClassification.*BertForSequenceClassification"):
        compile_model(gpt)
    bare = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64, vocab_size=100))
    with pytest.raises(UnsupportedModelError, match="BertModel"):
        compile_model(bare)


def test_torch_quantized_model_is_rejected():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    model = DistilBertForSequenceClassification(
        DistilBertConfig(dim=32, hidden_dim=64, n_layers=1, n_heads=2, vocab_size=100)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    with pytest.raises(UnsupportedModelError, match="fp32 torch.nn.Linear"):
        compile_model(q)


def test_bad_inputs_raise(minilm):
    model, enc = minilm
    engine = compile_model(model, quantize=False)
    with pytest.raises(ValueError, match="quantize must be True or False, got 'no'"):  # (it compiled int8)
        compile_model(model, quantize="no")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with pytest.raises(ValueError, match="2-D"):
        engine(ids[0], mask[0])
    with pytest.raises(ValueError, match="attention_mask shape"):
        engine(ids, mask[:, :-1])
    with pytest.raises(ValueError, match="token_type_ids shape"):
        engine(ids, mask, enc["token_type_ids"][:1])
    with pytest.raises(ValueError, match="max_position_embeddings"):
        engine(np.ones((1, 513), np.int64))
    with pytest.raises(ValueError, match="input_ids must be in"):
        engine(ids + 10**6, mask)
    with pytest.raises(TypeError, match="integers"):
        engine(ids.astype(np.float32), mask)
    with pytest.raises(ValueError, match="only 0 and 1"):
        engine(ids, mask * 2)
    with pytest.raises(ValueError, match="non-empty"):
        engine(np.zeros((0, 8), np.int64))
