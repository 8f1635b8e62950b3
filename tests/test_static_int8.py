"""Static int8: observers against hand computations, the exact integer layer, calibration on a
tiny BERT, `targets`, bad configs, and a finetune -> static_int8 pipeline."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import TINY_TASK_VOCAB, tiny_spec, write_tiny_task
from workbench.config import ConfigError, parse_config
from workbench.quantize.observers import (MinMaxObserver, MSEObserver, PercentileObserver, affine_qparams,
                                          fake_quantize_affine, quantize_weight, weight_scales)
from workbench.recipes.base import RecipeContext
from workbench.recipes.quantize.static import StaticInt8, StaticInt8Config, Int8Linear


def ctx(tok, data):
    return RecipeContext(task=None, tokenizer=tok, run_dir=None, stage="q", train_data=data)


def static(tok, data, **settings):
    return StaticInt8(parse_config(StaticInt8Config, settings, "stage 'q' recipe 'static_int8'"), ctx(tok, data))


# ------------------------------------------------------------------------------ observers
def test_minmax_qparams_by_hand():
    obs = MinMaxObserver()
    obs.observe(torch.tensor([-1.0, 0.5]))
    obs.observe(torch.tensor([[2.0, 0.0]]))
    scale, zp = obs.qparams()
    assert scale == pytest.approx(3 / 255) and zp == 85  # 1 / (3/255) = 85
    assert affine_qparams(1.0, 3.0) == (pytest.approx(3 / 255), 0)  # the range is widened to contain 0
    assert affine_qparams(0.0, 0.0) == (1.0, 0)


def test_percentile_clips_both_tails():
    obs = PercentileObserver(99.0)
    obs.observe(torch.arange(-5000, 5001).float())  # 10001 values: the 1st / 99th percentiles are -4900 / 4900
    lo, hi = obs.range()
    assert lo == pytest.approx(-4900) and hi == pytest.approx(4900)
    assert obs.qparams()[0] == pytest.approx(9800 / 255)
    full = PercentileObserver(100.0)
    full.observe(torch.tensor([-1.0, 7.0]))
    assert full.range() == (pytest.approx(-1.0), pytest.approx(7.0))


def test_mse_beats_minmax_on_an_outlier():
    # one value of 100 among 200000 N(0, 1): min-max spends its 255 steps on the outlier
    x = torch.cat([torch.randn(200_000, generator=torch.Generator().manual_seed(0)), torch.tensor([100.0])])
    mse, mm = MSEObserver(), MinMaxObserver()
    for chunk in x.split(50_001):  # batches small enough to be kept whole in the sample
        mse.observe(chunk)
        mm.observe(chunk)

    def err(qp):
        return float(((fake_quantize_affine(x, *qp) - x) ** 2).mean())

    assert mse.range()[1] < 100  # the outlier is clipped
    assert err(mse.qparams()) < 0.9 * err(mm.qparams())


def test_per_channel_weight_scales_by_hand():
    w = torch.tensor([[1.0, -2.0], [0.5, 0.25], [0.0, 0.0]])
    s = weight_scales(w)
    assert torch.allclose(s, torch.tensor([2 / 127, 0.5 / 127, 1.0]))
    assert quantize_weight(w, s).tolist() == [[64, -127], [127, 64], [0, 0]]  # 63.5 rounds to even


# ------------------------------------------------------------------------------ the layer
def test_static_linear_equals_integer_reference():
    torch.manual_seed(0)
    lin = nn.Linear(6, 3)
    x = torch.randn(4, 6) * 2  # some values beyond the grid's [-2.35, 2.65]: clipped
    scale, zp = 5.0 / 255, 120
    layer = Int8Linear(lin, scale, zp)
    qw = layer.weight_int8.tolist()
    codes = [[min(max(int(torch.round(v / scale)) + zp, 0), 255) for v in row] for row in x]
    acc = [[sum((c - zp) * w for c, w in zip(crow, wrow)) for wrow in qw] for crow in codes]  # python ints
    ref = torch.tensor(acc, dtype=torch.float64) * (scale * layer.weight_scale.double()) + lin.bias.double()
    assert torch.equal(layer(x), ref.float())
    inside = x.clamp(-2.3, 2.6)
    assert torch.allclose(layer(inside), lin(inside), atol=0.05)  # and close to the fp32 layer within its range


# ------------------------------------------------------------------------------ the recipe
def test_calibrated_model_is_close_to_fp32(tiny_bert, word_tokenizer, train_data):
    batch = word_tokenizer([" ".join(f"w{i}" for i in range(j, j + 9)) for j in range(40)], return_tensors="pt", padding=True)
    with torch.no_grad():
        ref = tiny_bert(**batch).logits
        for observer in ("minmax", "percentile", "mse"):
            q = static(word_tokenizer, train_data, observer=observer, num_examples=32, batch_size=16).apply(tiny_bert)
            assert sum(isinstance(m, Int8Linear) for m in q.modules()) == 4 * 6 + 2  # + pooler, classifier
            out = q(**batch).logits
            assert (out - ref).abs().max() < 0.2 * ref.abs().max(), observer
            assert (out.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.8, observer
    assert not any(isinstance(m, Int8Linear) for m in tiny_bert.modules())  # the input model is untouched


def test_targets_leave_the_others_fp32(tiny_bert, word_tokenizer, train_data):
    q = static(word_tokenizer, train_data, targets=["re:.*layer\\.1\\..*"], num_examples=16).apply(tiny_bert)
    quantized = {n for n, m in q.named_modules() if isinstance(m, Int8Linear)}
    assert len(quantized) == 6 and all(".layer.1." in n for n in quantized)
    assert isinstance(q.bert.encoder.layer[0].attention.self.query, nn.Linear)
    assert isinstance(q.classifier, nn.Linear)


@pytest.mark.parametrize("settings, key", [
    ({"observer": "entropy"}, "observer"),
    ({"percentile": 50}, "percentile"),
    ({"percentile": 100.5}, "percentile"),
    ({"num_examples": 0}, "num_examples"),
    ({"batch_size": 0}, "batch_size"),
    ({"targets": []}, "targets"),
])
def test_bad_config_fails_naming_the_key(settings, key):
    with pytest.raises(ConfigError, match=f"recipe 'static_int8': '{key}'"):
        parse_config(StaticInt8Config, settings, "stage 'q' recipe 'static_int8'")


def test_target_matching_nothing_fails_before_calibration(tiny_bert, word_tokenizer):
    recipe = static(word_tokenizer, None, targets=["re:.*nothing.*"])  # no training data: calibration would fail
    with pytest.raises(ConfigError, match="'targets' entry 're:.*nothing.*' matches no Linear"):
        recipe.apply(tiny_bert)


def test_pipeline_finetune_then_static_int8(tmp_path, monkeypatch):
    from workbench.pipeline import PipelineRun, PipelineSpec

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    csv_path, folder = write_tiny_task(tmp_path, repeats=20)
    spec = PipelineSpec.from_dict(tiny_spec(csv_path, folder, [
        {"name": "teacher", "recipes": ["finetune"], "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3}},
        {"name": "int8", "recipes": ["smoothquant", {"static_int8": {"num_examples": 32}}]},
    ]))
    run = PipelineRun(spec, results_root=tmp_path / "r")
    metrics = {m["stage"]: m for m in run.run()}
    assert abs(metrics["int8"]["accuracy"] - metrics["teacher"]["accuracy"]) <= 0.1
    assert any(isinstance(m, Int8Linear) for m in run.models["int8"].modules())
    # saved as recorded int8_linear edits: reloads with the same layers, scales and smoothing
    from workbench.models.edits import load_edited_model

    saved = tmp_path / "r" / "s" / "artifacts" / "int8" / "model"
    reloaded = load_edited_model(saved).eval()
    live = run.models["int8"].eval()
    ids = torch.randint(5, len(TINY_TASK_VOCAB), (3, 12))
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, live(input_ids=ids).logits)
    layers = {n: m for n, m in reloaded.named_modules() if isinstance(m, Int8Linear)}
    smoothed = [n for n, m in layers.items() if m.smooth is not None]
    assert smoothed and all(torch.equal(layers[n].smooth, live.get_submodule(n).smooth) for n in smoothed)
    assert not all(torch.all(layers[n].smooth == 1) for n in smoothed)  # the saved factors, not the placeholder
    assert all(m.input_scale == live.get_submodule(n).input_scale for n, m in layers.items())
