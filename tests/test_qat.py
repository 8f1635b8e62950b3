"""`qat`: fake-int8 forward with straight-through gradients, masks that survive it, the converted
int8 model's forward against the fake-quantized one, the saved stage, config checks, and a
finetune -> (magnitude_prune + distill_logits + qat) pipeline on the tiny BERT of test_platform."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench.config import ConfigError, parse_config
from workbench.quantize.observers import quantize_weight, weight_scales
from workbench.recipes.base import RecipeContext, TrainState
from workbench.recipes.quantize.qat import (QAT, ActivationFakeQuant, FakeQuantLinear, QATConfig,
                                            fake_quant_weight)
from workbench.recipes.quantize.static import Int8Linear


def qat(**settings) -> QAT:
    cfg = parse_config(QATConfig, settings, "stage 'q' recipe 'qat'")
    return QAT(cfg, RecipeContext(task=None, tokenizer=None, run_dir=None, stage="q"))


def _inputs(n: int = 6, length: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 120, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0  # padding: the grid must hold its zeros
    return {"input_ids": ids, "attention_mask": mask}


def _state(model: nn.Module, step: int, total: int) -> TrainState:
    return TrainState(model=model, optimizer=None, step=step, total_steps=total, epoch=0, steps_per_epoch=total)


def _train_observers(recipe: QAT, model: nn.Module, steps: int = 4) -> None:
    """`steps` training-mode forwards (observing), then the ranges freeze."""
    recipe.setup(model)
    recipe.on_train_begin(_state(model, 0, steps))
    model.train()
    for step in range(steps):
        recipe.on_step_begin(_state(model, step, steps))
        with torch.no_grad():
            model(**_inputs(seed=step))
    model.eval()
    recipe.on_step_begin(_state(model, steps, steps))


# ------------------------------------------------------------------------------ fake quantization
def test_weight_fake_quant_is_the_int8_grid_keeps_zeros_and_passes_gradients_straight():
    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    w[:, :4] = 0.0  # pruned columns
    w.requires_grad_(True)
    fq = fake_quant_weight(w)
    scales = weight_scales(w)
    assert torch.equal(fq.detach(), quantize_weight(w, scales).float() * scales[:, None])
    assert (fq[:, :4] == 0).all()
    fq.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # straight through


def test_activation_range_is_a_moving_average_then_frozen_and_clips_gradients():
    q = ActivationFakeQuant(ema=0.5)
    q(torch.tensor([-1.0, 3.0]), training=True)
    q(torch.tensor([-3.0, 1.0]), training=True)
    assert (q.lo, q.hi) == (-2.0, 2.0)
    q.freeze(None)
    q(torch.tensor([-100.0, 100.0]), training=True)  # frozen: no longer observed
    assert (q.lo, q.hi) == (-2.0, 2.0)
    scale, zp = q.qparams()
    x = torch.tensor([-5.0, 0.3, 1.0, 5.0], requires_grad=True)
    y = q(x, training=True)
    assert torch.allclose(y.detach(), (torch.clamp(torch.round(x.detach() / scale) + zp, 0, 255) - zp) * scale)
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]  # no gradient outside the grid's range


def test_learned_scales_get_gradients_and_the_conversion_uses_them(tiny_bert):
    recipe = qat(learn_scales=True, freeze_observers_at=0.5, targets=["re:.*layer\\.0\\..*(query|dense)"])
    _train_observers(recipe, tiny_bert)
    scales = list(recipe.owned)
    assert len(scales) == 4 and all(float(s.detach()) != 1.0 for s in scales)  # initialised from the frozen range
    tiny_bert.train()
    tiny_bert(**_inputs()).logits.sum().backward()
    assert all(s.grad is not None and float(s.grad) != 0.0 for s in scales)
    with torch.no_grad():
        scales[0].mul_(1.5)
    first = next(iter(recipe.quantizers))
    recipe.on_train_end(_state(tiny_bert, 4, 4))
    layer = tiny_bert.get_submodule(first)
    assert isinstance(layer, Int8Linear) and layer.input_scale == pytest.approx(float(scales[0].detach()))


# ------------------------------------------------------------------------------ conversion
def test_converted_int8_forward_equals_the_fake_quant_forward_and_keeps_the_masks(tiny_bert):
    from workbench.recipes.prune.magnitude import magnitude_prune_

    masks = magnitude_prune_(tiny_bert, 0.5, (1, 4))
    recipe = qat()
    _train_observers(recipe, tiny_bert)
    fq = [m for m in tiny_bert.modules() if isinstance(m, FakeQuantLinear)]
    assert len(fq) == 4 * 6  # every encoder Linear; pooler and classifier stay fp32
    inputs = _inputs(seed=9)
    with torch.no_grad():
        fake = tiny_bert(**inputs).logits
        plain = {n: m.weight.detach().clone() for n, m in tiny_bert.named_modules() if isinstance(m, FakeQuantLinear)}
    recipe.on_train_end(_state(tiny_bert, 4, 4))
    with torch.no_grad():
        real = tiny_bert(**inputs).logits
    int8 = {n: m for n, m in tiny_bert.named_modules() if isinstance(m, Int8Linear)}
    assert set(int8) == set(masks) == set(plain)
    step = float(fake.max() - fake.min()) / 255  # one step of the logits' own uint8 grid
    diff = float((real - fake).abs().max())
    assert diff <= step
    # the same grids on both sides: here no input lands on a rounding boundary, so only the
    # summation order differs (~1e-9; fp32 weights in the fake-quant forward would give ~1e-5)
    assert diff <= 1e-6
    for name, layer in int8.items():
        assert ((layer.weight_int8 == 0) | masks[name].bool()).all()  # every masked weight is an int8 zero
        assert torch.equal(layer.weight_int8, quantize_weight(plain[name], weight_scales(plain[name])))
    assert tiny_bert.workbench_engine == "torch-int8"
    assert [e["op"] for e in tiny_bert.config.workbench_edits] == ["int8_linear"] * 24


def test_the_converted_model_saves_and_reloads_as_the_same_int8_model(tiny_bert, tmp_path):
    from workbench.models.edits import load_edited_model
    from workbench.pipeline.store import saveable

    recipe = qat(freeze_observers_at=0.0)
    _train_observers(recipe, tiny_bert, steps=2)
    recipe.on_train_end(_state(tiny_bert, 2, 2))
    assert saveable(tiny_bert)  # a trained stage cannot be rebuilt from its recipe: it is saved
    tiny_bert.save_pretrained(tmp_path / "m")
    again = load_edited_model(tmp_path / "m")
    inputs = _inputs(seed=3)
    with torch.no_grad():
        assert torch.equal(again(**inputs).logits, tiny_bert(**inputs).logits)
    assert again.workbench_engine == "torch-int8"


def test_convert_false_ends_with_plain_fp32_linears(tiny_bert):
    recipe = qat(convert=False)
    _train_observers(recipe, tiny_bert, steps=2)
    recipe.on_train_end(_state(tiny_bert, 2, 2))
    assert not any(isinstance(m, (FakeQuantLinear, Int8Linear)) for m in tiny_bert.modules())
    assert all(type(m) is nn.Linear for n, m in tiny_bert.named_modules() if n.endswith("query"))


# ------------------------------------------------------------------------------ config
@pytest.mark.parametrize("settings, says", [
    ({"freeze_observers_at": 1.5}, "'freeze_observers_at' must be a fraction"),
    ({"ema": 0}, "'ema' must be in (0, 1]"),
    ({"learn_scales": True, "freeze_observers_at": 1.0}, "'learn_scales' needs steps after the ranges freeze"),
    ({"weight": "per_tensor"}, "weight"),
])
def test_bad_settings_fail_naming_the_key(settings, says):
    with pytest.raises(ConfigError, match="recipe 'qat'") as err:
        qat(**settings)
    assert says in str(err.value)


def test_qat_must_come_last_and_start_from_fp32(tmp_path, tiny_bert):
    from workbench.pipeline import PipelineSpec
    from workbench.recipes.quantize.dynamic import quantize_dynamic_int8

    stages = [{"name": "s", "recipes": ["qat", "finetune"]}]
    with pytest.raises(ConfigError, match="stage 's' recipe 'qat': list 'qat' last in the stage"):
        PipelineSpec.from_dict({"name": "p", "model": "minilm-l6", "task": "rt-sentiment", "stages": stages})
    with pytest.raises(ConfigError, match="acts during training, which needs a loss"):
        PipelineSpec.from_dict({"name": "p", "model": "minilm-l6", "task": "rt-sentiment",
                                "stages": [{"name": "s", "recipes": ["qat"]}]})
    with pytest.raises(ConfigError, match="is already quantized"):
        qat().apply(quantize_dynamic_int8(tiny_bert))


# ------------------------------------------------------------------------------ a pipeline
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from test_platform import _spec, _tiny_dir

    from workbench.pipeline import PipelineRun

    tmp = tmp_path_factory.mktemp("qat")
    mp = pytest.MonkeyPatch()
    mp.setenv("WORKBENCH_CACHE", str(tmp / "cache"))
    spec = _spec(tmp, [
        {"name": "t", "recipes": ["finetune"], "train": {"epochs": 1, "batch_size": 16, "max_steps": 4, "lr": 1e-3}},
        {"name": "s.qat", "from": "t", "recipes": [
            {"magnitude_prune": {"sparsity": 0.5, "schedule": "cubic", "end": 0.5, "frequency": 2}},
            {"distill_logits": {"teacher": "t"}},
            {"qat": {"freeze_observers_at": 0.5}}],
         "train": {"epochs": 1, "batch_size": 16, "max_steps": 6, "lr": 1e-3}},
    ], str(_tiny_dir(tmp, "tiny")))
    runner = PipelineRun(spec, results_root=tmp / "r")
    metrics = {m["stage"]: m for m in runner.run()}
    yield runner, metrics
    mp.undo()


def test_a_stage_with_pruning_distillation_and_qat_trains_keeps_masks_and_ends_int8(run):
    from workbench.models.edits import load_edited_model

    runner, metrics = run
    model = runner.models["s.qat"]
    int8 = {n: m for n, m in model.named_modules() if isinstance(m, Int8Linear)}
    assert len(int8) == 12 and metrics["s.qat"]["engine"] == "torch-int8"
    for name, layer in int8.items():  # 1x4 blocks pruned to 50% stay zero through QAT and conversion
        blocks = layer.weight_int8.reshape(layer.out_features, -1, 4).abs().sum(-1)
        assert float((blocks == 0).float().mean()) >= 0.5, name
    history = {r["step"] for r in metrics["s.qat"]["history"]} if metrics["s.qat"]["history"] else set()
    assert history or metrics["s.qat"]["train_seconds"] > 0
    saved = runner.store.artifact("s.qat") / "model"
    again = load_edited_model(saved)
    ids = torch.randint(1000, 2000, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids).logits, model(input_ids=ids).logits)


def test_the_qat_stage_compiles_on_our_runtime_with_its_logits(run):
    from workbench.recipes.quantize.static import int8_as_fp32
    from workbench.runtime import compile_model
    from workbench.runtime.module import EngineModule

    runner, _ = run
    model = runner.models["s.qat"]
    fp32 = int8_as_fp32(model)
    assert not any(isinstance(m, Int8Linear) for m in fp32.modules())
    engine = EngineModule(compile_model(fp32), config=fp32.config)
    ids = torch.randint(1000, 2000, (3, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
        got = engine(input_ids=ids, attention_mask=mask).logits
    # the runtime re-quantizes the same int8 weights; its activations are per token (dynamic)
    assert float((got - ref).abs().max()) <= 0.05 + 0.05 * float(ref.abs().max())
