"""SmoothQuant: an exact fp32 equivalence that moves activation outliers into the weights, and
what it does for static / dynamic int8 on a model with an outlier channel."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.config import ConfigError, parse_config
from workbench.recipes.base import RecipeContext, StageCheck
from workbench.recipes.quantize.dynamic import DynamicInt8, DynamicInt8Config
from workbench.recipes.quantize.smoothquant import InputSmoothing, SmoothQuant, SmoothQuantConfig, smoothing_scales
from workbench.recipes.quantize.static import StaticInt8, StaticInt8Config, Int8Linear

WHERE = "stage 'q' recipe 'smoothquant'"


@pytest.fixture
def batch(word_tokenizer):
    return word_tokenizer([" ".join(f"w{i}" for i in range(j, j + 9)) for j in range(40)], return_tensors="pt",
                          padding=True)


@pytest.fixture
def outlier_bert(tiny_bert):
    """tiny_bert with an outlier channel (x30) in every LayerNorm output, as in real BERTs."""
    with torch.no_grad():
        for name, m in tiny_bert.named_modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight[5] *= 30
                m.bias[5] *= 30
    return tiny_bert


def ctx(tok, data):
    return RecipeContext(task=None, tokenizer=tok, run_dir=None, stage="q", train_data=data)


def smooth(tok, data, **settings):
    return SmoothQuant(parse_config(SmoothQuantConfig, {"num_examples": 32, **settings}, WHERE), ctx(tok, data))


def static(tok, data, model):
    return StaticInt8(StaticInt8Config(num_examples=32), ctx(tok, data)).apply(model)


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def test_scales_by_hand():
    s = smoothing_scales(torch.tensor([4.0, 9.0, 0.0]), torch.tensor([[1.0, -4.0, 2.0], [0.5, 1.0, 1.0]]), 0.5)
    assert torch.allclose(s, torch.tensor([2.0 / 1.0, 3.0 / 2.0, 1.0]))  # sqrt(4)/sqrt(1), sqrt(9)/sqrt(4), zero -> 1


def test_fp32_logits_unchanged_and_outliers_migrated(outlier_bert, word_tokenizer, train_data, batch):
    smoothed = smooth(word_tokenizer, train_data).apply(outlier_bert)
    assert torch.allclose(logits(smoothed, batch), logits(outlier_bert, batch), atol=1e-5)
    hooked = [n for n, m in smoothed.named_modules() if any(isinstance(h, InputSmoothing) for h in m._forward_pre_hooks.values())]
    assert len(hooked) == 4 * 4 and all(n.endswith(("query", "key", "value", "intermediate.dense")) for n in hooked)

    def spread(model):  # max over channels / median over channels of max|x|, as the query layer's matmul sees it
        seen = []
        q = model.bert.encoder.layer[1].attention.self.query
        h = q.register_forward_pre_hook(lambda m, a: seen.append(a[0]), prepend=False)
        logits(model, batch)
        h.remove()
        amax = seen[0].abs().reshape(-1, seen[0].shape[-1]).amax(0)
        return float(amax.max() / amax.median())

    assert spread(smoothed) < spread(outlier_bert) / 3


def test_alpha_zero_is_the_identity(outlier_bert, word_tokenizer, train_data):
    smoothed = smooth(word_tokenizer, train_data, alpha=0.0, targets=["bert.encoder.layer.0.attention.self.query"]).apply(outlier_bert)
    q, q0 = smoothed.bert.encoder.layer[0].attention.self.query, outlier_bert.bert.encoder.layer[0].attention.self.query
    s = next(iter(q._forward_pre_hooks.values())).inv_scale
    assert torch.allclose(q.weight * s, q0.weight)  # alpha 0: s = 1 / max|W_j|, all of it in the weights' scale


def test_it_helps_static_int8_on_outliers(outlier_bert, word_tokenizer, train_data, batch):
    def query_out(model):  # layer 1's query projection: its input has the outlier channel
        seen = []
        h = model.bert.encoder.layer[1].attention.self.query.register_forward_hook(lambda m, a, out: seen.append(out))
        logits(model, batch)
        h.remove()
        return seen[0]

    plain = static(word_tokenizer, train_data, outlier_bert)
    smoothed = static(word_tokenizer, train_data, smooth(word_tokenizer, train_data).apply(outlier_bert))
    folded = [m for m in smoothed.modules() if isinstance(m, Int8Linear) and m.smooth is not None]
    assert len(folded) == 16 and not any(m._forward_pre_hooks for m in folded)  # the 1/s moved into the layer
    ref = query_out(outlier_bert)

    def error(model):
        return float((query_out(model) - ref).abs().mean() / ref.abs().mean())

    print(f"static int8 relative error of a query projection: plain {error(plain):.4f}, smoothed {error(smoothed):.4f}")
    assert error(smoothed) < 0.6 * error(plain)  # 0.0039 vs 0.0081 when written


def test_then_dynamic_int8_runs(outlier_bert, word_tokenizer, train_data, batch):
    smoothed = smooth(word_tokenizer, train_data).apply(outlier_bert)
    q = DynamicInt8(DynamicInt8Config(), ctx(word_tokenizer, train_data)).apply(smoothed)
    query = q.bert.encoder.layer[0].attention.self.query
    assert hasattr(query, "_packed_params")
    assert any(isinstance(h, InputSmoothing) for h in query._forward_pre_hooks.values())  # torch kept the hook
    ref = logits(outlier_bert, batch)
    assert (logits(q, batch) - ref).abs().max() < 0.2 * ref.abs().max()


@pytest.mark.parametrize("settings, key", [({"alpha": 1.5}, "alpha"), ({"alpha": -0.1}, "alpha"),
                                           ({"num_examples": 0}, "num_examples"), ({"batch_size": 0}, "batch_size"),
                                           ({"targets": "query"}, "targets")])
def test_bad_config_fails_naming_the_key(settings, key):
    with pytest.raises(ConfigError, match=f"recipe 'smoothquant': '{key}'"):
        parse_config(SmoothQuantConfig, settings, WHERE)


def test_target_matching_nothing_fails_before_work(tiny_bert, word_tokenizer):
    with pytest.raises(ConfigError, match="'targets' entry 're:.*nothing.*' matches no Linear"):
        smooth(word_tokenizer, None, targets=["re:.*nothing.*"]).apply(tiny_bert)  # no data: work would fail


@pytest.mark.parametrize("recipes, ok", [(["smoothquant", "static_int8"], True), (["smoothquant", "dynamic_int8"], True),
                                         (["smoothquant"], False), (["static_int8", "smoothquant"], False)])
def test_stage_needs_a_quantizer_after_it(recipes, ok):
    check = StageCheck(stage="q", earlier=[], recipes=recipes, trains=False, where=WHERE)
    if ok:
        SmoothQuant.check_stage(SmoothQuantConfig(), check)
    else:
        with pytest.raises(ConfigError, match="needs 'static_int8' or 'dynamic_int8' after it"):
            SmoothQuant.check_stage(SmoothQuantConfig(), check)
