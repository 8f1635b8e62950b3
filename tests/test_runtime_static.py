"""The static-scale int8 entry point: calibrated per-tensor activation grids on our kernels.

Kernel level: `layer.static(x, scale, zp)` equals the exact integer reference on every ISA the
CPU has (bit-identical across ISAs). Layer level: a `static_int8` layer (`Int8Linear`, calibrated
with an observer) moved onto the runtime keeps the calibrated scale / zero point and gives the
torch reference's output up to the codes that round differently at a tie (at most one step)."""
import numpy as np
import pytest
import torch

cpu = pytest.importorskip("workbench_ext.cpu", reason="workbench_ext not built")
from workbench_ext import int8, ops  # noqa: E402

from conftest import tiny_spec, write_tiny_task  # noqa: E402

from workbench.quantize.observers import make_observer, quantize_affine  # noqa: E402
from workbench.recipes.quantize.static import Int8Linear  # noqa: E402
from workbench.runtime.static import StaticInt8Linear  # noqa: E402


@pytest.fixture(params=cpu.available_isas())
def isa(request):
    cpu.set_isa(request.param)
    yield request.param
    cpu.set_isa(None)


@pytest.mark.parametrize("M,K,N", [(1, 3, 5), (7, 67, 9), (33, 200, 48)])
def test_static_entry_exact(isa, M, K, N):
    rng = np.random.default_rng(M * 1000 + K)
    w = rng.integers(-127, 128, size=(N, K)).astype(np.int8)
    ws = (rng.random(N).astype(np.float32) + 0.5) * np.float32(0.01)
    b = rng.standard_normal(N).astype(np.float32)
    x = (rng.standard_normal((M, K)) * 3).astype(np.float32)
    scale, zp = np.float32(0.031), 97
    q = ops.quantize_static(x, float(scale), zp)
    acc = (q.astype(np.int64) - zp) @ w.astype(np.int64).T
    ref = acc.astype(np.float32) * (scale * ws)[None, :] + b
    for cls in (int8.DenseInt8Linear, int8.BlockSparseInt8Linear):
        y = cls(w, ws, b).static(x, float(scale), zp)
        np.testing.assert_array_equal(y, ref.astype(np.float32))


def test_static_entry_rejects_bad_grid():
    layer = int8.DenseInt8Linear(np.ones((2, 3), np.int8), np.ones(2, np.float32), None)
    x = np.ones((1, 3), np.float32)
    for s, z in ((0.0, 0), (-1.0, 0), (float("nan"), 0), (0.1, 256), (0.1, -1), (0.1, 1.5)):
        with pytest.raises(ValueError):
            layer.static(x, s, z)


def test_static_int8_layer_on_runtime_matches_torch():
    torch.manual_seed(0)
    lin = torch.nn.Linear(96, 40)
    calib = torch.randn(64, 96) * 2 + 0.5
    obs = make_observer("minmax")
    obs.observe(calib)
    scale, zp = obs.qparams()
    ref_layer = Int8Linear(lin, scale, zp)
    ours = StaticInt8Linear.from_module(ref_layer)
    # the runtime uses the calibrated grid, unchanged
    assert ours.input_scale == ref_layer.input_scale and ours.input_zero_point == ref_layer.input_zero_point
    x = torch.randn(17, 96) * 2.5  # some values outside the calibrated range: clamped alike
    with torch.no_grad():
        want = ref_layer(x).numpy()
    got = ours(x.numpy())
    # codes: ours (x * 1/s) vs torch (x / s) differ by at most one step, at ties
    q_ours = ops.quantize_static(x.numpy(), float(scale), int(zp)).astype(np.int64)
    q_torch = quantize_affine(x, scale, zp).numpy().astype(np.int64)
    dq = q_ours - q_torch
    assert np.abs(dq).max() <= 1
    # the output difference is exactly what the differing codes explain (one step each)
    w = ref_layer.weight_int8.numpy().astype(np.int64)
    explained = (dq @ w.T) * (float(scale) * ref_layer.weight_scale.double().numpy())
    np.testing.assert_allclose(got - want, explained, atol=1e-4)
    assert np.abs(got - want).max() <= float(scale) * np.abs(w).sum(1).max() * ref_layer.weight_scale.max().item() + 1e-4


# ------------------------------------------------------------------ a whole static_int8 model
def _static_model(model, tok, **settings):
    import datasets

    from workbench.config import parse_config
    from workbench.recipes.base import RecipeContext
    from workbench.recipes.quantize.static import StaticInt8, StaticInt8Config

    rng = np.random.default_rng(0)
    texts = [" ".join(f"w{w}" for w in rng.integers(0, 115, int(rng.integers(3, 14)))) for _ in range(32)]
    data = datasets.Dataset.from_dict({"labels": [i % 2 for i in range(32)], **tok(texts)}).with_format("torch")
    recipe = StaticInt8(parse_config(StaticInt8Config, {"num_examples": 32, "batch_size": 16, **settings}, "q"),
                        RecipeContext(task=None, tokenizer=tok, run_dir=None, stage="q", train_data=data))
    return recipe.apply(model)


def _batch():
    rng = np.random.default_rng(1)
    ids = rng.integers(5, 120, (8, 12))
    ids[:, 0] = 2
    mask = np.ones_like(ids)
    mask[3, 7:] = 0
    mask[5, 10:] = 0
    return ids, mask


def _step(model) -> float:
    """One quantization step of the logits: one input code of the classifier moved by one."""
    cls = model.classifier
    return float(cls.input_scale * (cls.weight_scale * cls.weight_int8.abs().amax(1).float()).max())


def _check_engine_matches(model, engine):
    ids, mask = _batch()
    with torch.no_grad():
        want = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
    got = engine(ids, mask)
    assert np.abs(got - want).max() <= _step(model), (np.abs(got - want).max(), _step(model))
    return got


def test_engine_from_static_int8_uses_the_calibrated_grids(tiny_bert, word_tokenizer):
    from workbench.runtime import compile_model

    with torch.no_grad():  # logits large enough that a wrong grid would show
        tiny_bert.classifier.weight.mul_(40)
    model = _static_model(tiny_bert, word_tokenizer)
    engine = compile_model(model)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, Int8Linear)}
    for name, lm in engine.meta["linears"].items():  # every Linear on its module's own grid
        assert lm["kind"].startswith("int8_") and len(lm["static"]) == 1, name
        srcs = [layers[src] for src, _ in lm["sources"]]
        assert all(lm["static"][0]["input_scale"] == m.input_scale for m in srcs), name
        assert all(lm["static"][0]["input_zero_point"] == m.input_zero_point for m in srcs), name
    # the int8 weights are the stage's own, not re-quantized
    q = layers["bert.encoder.layer.0.attention.self.query"]
    np.testing.assert_array_equal(engine.tensors["layers.0.qkv.weight"][:32], q.weight_int8.numpy())
    assert "static" in engine.describe()["kernels_per_layer"]
    got = _check_engine_matches(model, engine)
    assert np.abs(got).max() > 50 * _step(model)  # the bound is tight relative to the logits
    # per-token (dynamic) quantization would not match: the static grid is what the engine runs
    dyn = compile_model(_int8_as_fp32(model))(*_batch())
    assert np.abs(dyn - got).max() > _step(model)
    # another grid for the classifier: the engine follows it as torch does
    model.classifier.input_scale *= 3
    _check_engine_matches(model, compile_model(model))


def _int8_as_fp32(model):
    from workbench.recipes.quantize.static import int8_as_fp32

    return int8_as_fp32(model)


def test_engine_with_per_layer_grids_and_smoothing(tiny_bert, word_tokenizer):
    """QAT learns a grid per layer: Q, K and V then run on one kernel per grid; smoothquant's
    per-channel input smoothing is applied before the static quantization."""
    from workbench.recipes.quantize.smoothquant import SmoothQuant, SmoothQuantConfig  # noqa: F401
    from workbench.runtime import compile_model

    model = _static_model(tiny_bert, word_tokenizer)
    att = model.bert.encoder.layer[1].attention.self
    att.key.input_scale *= 1.5
    att.value.input_zero_point = min(255, att.value.input_zero_point + 7)
    model.bert.encoder.layer[2].intermediate.dense.smooth = torch.linspace(0.5, 2.0, 32)
    engine = compile_model(model, kernel_choice="sparse")  # the block-sparse static kernel too
    assert len(engine.meta["linears"]["layers.1.qkv"]["static"]) == 3
    assert len(engine.meta["linears"]["layers.0.qkv"]["static"]) == 1
    assert engine.meta["linears"]["layers.2.ffn1"]["static"][0]["smooth"]
    _check_engine_matches(model, engine)
    _check_engine_matches(model, compile_model(model, kernel_choice="dense"))


def test_partly_static_model_compiles(tiny_bert, word_tokenizer):
    """`targets` naming some Linears: those keep their grid, the others run the dynamic path."""
    from workbench.runtime import compile_model

    model = _static_model(tiny_bert, word_tokenizer, targets=["re:.*layer\\.1\\.(attention\\.self\\.query|output).*"])
    engine = compile_model(model)
    lin = engine.meta["linears"]
    assert lin["layers.1.ffn2"].get("static") and not lin["layers.1.qkv"].get("static")  # Q alone: fp32 path
    assert not lin["layers.0.ffn2"].get("static")
    ids, mask = _batch()
    with torch.no_grad():
        want = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
    assert np.abs(engine(ids, mask) - want).max() < 0.25 * np.abs(want).max() + 1e-3


def test_pipeline_static_int8_then_workbench_runtime(tmp_path, monkeypatch):
    from workbench.pipeline import PipelineRun, PipelineSpec
    from workbench.runtime import EngineModule

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    csv_path, folder = write_tiny_task(tmp_path, repeats=10)
    spec = PipelineSpec.from_dict(tiny_spec(csv_path, folder, [
        {"name": "int8", "recipes": [{"static_int8": {"num_examples": 16}}]},
        {"name": "rt", "recipes": [{"workbench_runtime": {"kernel_choice": "dense"}}]},
    ]))
    run = PipelineRun(spec, results_root=tmp_path / "r")
    metrics = {m["stage"]: m for m in run.run()}
    module = run.models["rt"]
    assert isinstance(module, EngineModule)
    assert all(lm.get("static") for lm in module.engine.meta["linears"].values())
    assert metrics["rt"]["accuracy"] == pytest.approx(metrics["int8"]["accuracy"], abs=0.05)
    assert metrics["rt"]["kernels"] == {"int8_dense+static": 2 * 4 + 2}
