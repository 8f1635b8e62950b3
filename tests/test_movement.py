"""`movement_prune` (Sanh et al. 2020) and N:M patterns (`magnitude_prune`'s and movement's):
owned scores that train and are not saved, exact hard sparsity, soft movement's L1 term, a
constructed case where movement and magnitude disagree, exact 2:4 groups, a quick pipeline under
`distill_logits`, and bad settings failing before training."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

from workbench.config import ConfigError
from workbench.recipes.base import RecipeContext, TrainState, build_recipe
from workbench.recipes.prune.magnitude import block_mask, magnitude_prune_, prunable_linears
from workbench.train import TrainConfig, Trainer

from test_distill_relations import bert, collate, make_batch, one_thread, tiny_data  # noqa: F401
from test_prune import blocks_all_zero_or_dense

WHERE = "stage 's'"


def ctx() -> RecipeContext:
    return RecipeContext(task=None, tokenizer=None, run_dir=None, stage="s")


def train(model, settings, tmp_path=None, epochs=3, n=16, score_lr=None):
    """Fine-tune `model` with movement pruning for `epochs` x n/4 steps; returns (recipe, trainer)."""
    settings = {**settings, **({"score_lr": score_lr} if score_lr else {})}
    recipe = build_recipe("movement_prune", settings, ctx(), WHERE)
    recipes = [build_recipe("finetune", {}, ctx(), WHERE), recipe]
    for r in recipes:
        model = r.apply(model)
    cfg = TrainConfig(epochs=epochs, batch_size=4, lr=1e-3, warmup=0.0, checkpoint_every=0, group_by_length=False)
    trainer = Trainer(model, tiny_data(n), collate, cfg, recipes, seed=0,
                      checkpoint_dir=tmp_path / "ckpt" if tmp_path else None)
    trainer.train()
    return recipe, trainer


def groups_of(w: torch.Tensor, m: int = 4) -> torch.Tensor:
    return w.reshape(w.shape[0], -1, m)


def test_keep_top_drops_exactly_the_lowest_with_ties_broken_by_position():
    """The selection (kthvalue) that movement pruning runs every step equals a stable sort."""
    from workbench.recipes.prune.magnitude import keep_top

    g = torch.Generator().manual_seed(0)
    for trial in range(100):
        shape = tuple(torch.randint(1, 12, (2,), generator=g).tolist())
        scores = torch.randint(0, 3, shape, generator=g).float() if trial % 2 else torch.randn(shape, generator=g)
        for sparsity in (0.0, 0.3, 0.5, 0.9):
            n_zero = round(sparsity * scores.numel())
            ref = torch.ones(scores.numel(), dtype=torch.bool)
            ref[torch.sort(scores.flatten(), stable=True).indices[:n_zero]] = False
            assert torch.equal(keep_top(scores, sparsity), ref.reshape(shape)), (scores, sparsity)


def test_scores_are_owned_trained_checkpointed_and_not_saved(tmp_path):
    model = bert(layers=2)
    keys = set(model.state_dict())
    recipe, _ = train(model, {"sparsity": 0.5}, tmp_path)
    layers = prunable_linears(model)
    assert isinstance(recipe.owned, nn.ParameterDict) and len(recipe.owned) == len(layers) == 12
    for name, lin in layers.items():
        assert recipe.scores(name).shape == lin.weight.shape
        assert recipe.scores(name).abs().sum() > 0, f"{name}: scores never trained (they start at 0)"
        assert "forward" not in lin.__dict__  # the plain Linear forward is back
    assert set(model.state_dict()) == keys  # no score tensors in the model
    saved = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)["owned"][1]
    assert set(saved) == set(recipe.owned) and all(torch.equal(saved[k], recipe.owned[k]) for k in saved)
    model.save_pretrained(tmp_path / "saved")
    from safetensors.torch import load_file

    assert set(load_file(tmp_path / "saved" / "model.safetensors")) == keys


@pytest.mark.parametrize("block,sparsity", [((1, 1), 0.5), ((1, 4), 0.75)])
def test_hard_movement_hits_the_target_sparsity_exactly(block, sparsity):
    model = bert(layers=2)
    recipe, trainer = train(model, {"sparsity": sparsity, "block": list(block), "end": 0.5}, epochs=2, n=8)
    for name, lin in prunable_linears(model).items():
        n_blocks = lin.weight.numel() // (block[0] * block[1])
        assert int((lin.weight == 0).sum()) == round(sparsity * n_blocks) * block[0] * block[1], name
        assert blocks_all_zero_or_dense(lin.weight.detach(), *block)
    assert recipe.sparsity() == pytest.approx(sparsity)


def test_the_forward_pass_uses_the_masked_weights():
    model, batch = bert(layers=2), make_batch()
    recipe = build_recipe("movement_prune", {"sparsity": 0.6}, ctx(), WHERE)
    recipe.setup(model)
    torch.manual_seed(1)
    for p in recipe.owned.values():
        p.data.normal_()
    opt = torch.optim.AdamW(list(model.parameters()) + list(recipe.owned.parameters()), lr=1e-3)
    state = TrainState(model, opt, 10, 10, 0, 10)
    recipe.on_train_begin(state)  # step 10 of 10: the final sparsity
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    plain = bert(layers=2)  # the same weights, masked for good
    with torch.no_grad():
        for name, lin in prunable_linears(plain).items():
            lin.weight.mul_(recipe.mask(name))
    out = model(**inputs).logits
    ref = plain(**inputs).logits
    assert torch.allclose(out, ref, atol=1e-6)
    # straight-through: dL/dscore = dL/dW' * W (pruned weights too), dL/dW = dL/dW' * mask
    out.sum().backward()
    ref.sum().backward()
    name = "bert.encoder.layer.0.attention.self.query"
    lin, ref_lin = prunable_linears(model)[name], prunable_linears(plain)[name]
    mask = recipe.mask(name).detach()
    assert 0 < int((mask == 0).sum()) < mask.numel()
    score_grad = recipe.owned[name.replace(".", "-")].grad.view(lin.weight.shape)
    assert torch.allclose(score_grad, ref_lin.weight.grad * lin.weight.detach(), atol=1e-7)
    assert torch.allclose(lin.weight.grad, ref_lin.weight.grad * mask, atol=1e-7)
    assert score_grad[mask == 0].abs().sum() > 0


def test_movement_keeps_the_weights_moving_away_from_zero_not_the_largest():
    """Large weights trained toward (and past) zero, small ones away from it: movement prunes the
    large ones, magnitude the small ones."""
    torch.manual_seed(0)
    lin = nn.Linear(8, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, -3.0, 3.0, -3.0, 0.1, -0.1, 0.1, -0.1]]))
    model = nn.Sequential(lin)
    target = torch.tensor([-1.0, 1.0, -1.0, 1.0, 1.0, -1.0, 1.0, -1.0])
    recipe = build_recipe("movement_prune", {"sparsity": 0.5, "targets": ["0"], "end": 1.0}, ctx(), WHERE)
    recipe.apply(model)
    recipe.setup(model)
    opt = torch.optim.AdamW([lin.weight, *recipe.owned.parameters()], lr=1e-3, weight_decay=0.0)
    state = TrainState(model, opt, 0, 20, 0, 20)
    recipe.on_train_begin(state)
    x = torch.randn(64, 8)
    for step in range(20):
        state.step = step
        recipe.on_step_begin(state)
        loss = nn.functional.mse_loss(model(x).squeeze(-1), x @ target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        state.step = step + 1
        recipe.on_after_optimizer_step(state)
    before_end = lin.weight.detach().clone()
    recipe.on_train_end(state)
    kept = (lin.weight != 0).flatten().tolist()
    assert kept == [False] * 4 + [True] * 4  # the small weights that grew
    assert before_end.abs()[0, :4].min() > 2.5  # ... while the pruned ones were still the largest
    assert block_mask(before_end, 0.5, (1, 1)).flatten().tolist() == [1.0] * 4 + [0.0] * 4


def test_soft_movement_l1_term_is_logged_and_makes_models_sparser():
    def run(l1_weight):
        model = bert(layers=2)
        recipe, trainer = train(model, {"method": "soft", "l1_weight": l1_weight, "threshold": 0.4, "end": 0.5},
                                epochs=3, n=16, score_lr=0.1)
        assert all("movement_l1" in row and "ce" in row for row in trainer.step_log)
        for name, lin in prunable_linears(model).items():  # the final mask: sigmoid(score) > threshold
            keep = torch.sigmoid(recipe.scores(name).detach()) > 0.4
            assert torch.equal(lin.weight != 0, keep), name
        zeros = sum(int((lin.weight == 0).sum()) for lin in prunable_linears(model).values())
        return zeros / sum(lin.weight.numel() for lin in prunable_linears(model).values()), trainer.step_log

    weak, log = run(1e-4)
    strong, _ = run(1e4)
    assert log[0]["movement_l1"] == pytest.approx(0.5)  # sigmoid(0): the scores start at 0
    assert strong > weak + 0.5, (weak, strong)


def test_two_four_pattern_holds_in_every_group_for_magnitude_and_movement():
    model = bert(layers=2)
    before = {n: lin.weight.detach().clone() for n, lin in prunable_linears(model).items()}
    magnitude_prune_(model, 0.5, targets=None, pattern=(2, 4))
    for name, lin in prunable_linears(model).items():
        kept = groups_of(lin.weight != 0)
        assert torch.all(kept.sum(-1) == 2), name
        top2 = groups_of(before[name].abs()).topk(2, dim=-1).indices
        assert torch.all(kept.gather(-1, top2)), f"{name}: a kept weight is not among its group's 2 largest"

    # gradual magnitude: 4 -> 3 -> 2 kept per group on the cubic schedule; the recipe's config
    recipe = build_recipe("magnitude_prune", {"sparsity": 0.5, "pattern": "2:4", "schedule": "cubic",
                                              "frequency": 1}, ctx(), WHERE)
    model = recipe.apply(bert(layers=2))
    state = TrainState(model, None, 0, 10, 0, 10)
    counts = {int(groups_of(prunable_linears(model)["bert.encoder.layer.1.output.dense"].weight != 0).sum(-1).min())}
    for step in range(1, 11):
        state.step = step
        recipe.on_after_optimizer_step(state)
        w = prunable_linears(model)["bert.encoder.layer.1.output.dense"].weight
        counts |= set(groups_of(w != 0).sum(-1).unique().tolist())
    assert counts == {2, 3, 4}

    model = bert(layers=2)
    recipe, _ = train(model, {"pattern": "2:4"}, epochs=2, n=8)
    assert recipe.config.sparsity == 0.5  # movement fills it in
    for name, lin in prunable_linears(model).items():
        kept = groups_of(lin.weight != 0)
        assert torch.all(kept.sum(-1) == 2), name
        top2 = groups_of(recipe.scores(name).detach()).topk(2, dim=-1).indices
        assert torch.all(kept.gather(-1, top2)), f"{name}: movement kept a weight outside its group's top-2 scores"


def test_pipeline_teacher_then_movement_under_distillation(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from test_platform import _csv_task, _tiny_dir
    from workbench.pipeline import PipelineRun, PipelineSpec

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    spec = PipelineSpec.from_dict({
        "name": "mv", "model": str(_tiny_dir(tmp_path, "tiny")), "seed": 0, "task": _csv_task(tmp_path),
        "eval": {"speed_batches": [1], "speed_iters": 1, "seq_len": 16},
        "stages": [
            {"name": "teacher", "recipes": ["finetune"], "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3}},
            {"name": "pruned", "recipes": [{"movement_prune": {"sparsity": 0.6, "end": 0.5}},
                                           {"distill_logits": {"teacher": "teacher"}}],
             "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3}}]})
    metrics = PipelineRun(spec, results_root=tmp_path / "r").run()
    run = tmp_path / "r" / "mv"
    pruned = metrics[1]
    assert pruned["stage"] == "pruned" and all(v == pytest.approx(0.6, abs=1e-3) for v in pruned["per_layer_sparsity"].values())
    assert {"kd_logits", "ce"} <= set(next(csv.DictReader((run / "history" / "pruned.csv").open())))
    saved = {s: load_file(run / "artifacts" / s / "model" / "model.safetensors") for s in ("teacher", "pruned")}
    assert set(saved["pruned"]) == set(saved["teacher"])
    recorded = json.loads((run / "metrics.json").read_text())["stages"]
    assert recorded[1]["nonzero_params"] < recorded[0]["nonzero_params"] - 1000


@pytest.mark.parametrize("settings,key", [
    ({"pattern": "3:2", "sparsity": 0.5}, "pattern"), ({"pattern": "2-4"}, "pattern"), ({"sparsity": 1.0}, "sparsity"),
    ({"sparsity": -0.1}, "sparsity"), ({}, "sparsity"), ({"pattern": "2:4", "sparsity": 0.7}, "sparsity"),
    ({"pattern": "2:4", "block": [1, 4]}, "block"), ({"method": "soft"}, "l1_weight"),
    ({"method": "soft", "l1_weight": 1.0, "sparsity": 0.5}, "sparsity"),
    ({"method": "soft", "l1_weight": 1.0, "threshold": 1.5}, "threshold"),
    ({"sparsity": 0.5, "targets": []}, "targets"),
])
def test_bad_settings_fail_with_a_config_error(settings, key):
    with pytest.raises(ConfigError, match=rf"recipe 'movement_prune': '{key}'"):
        build_recipe("movement_prune", settings, ctx(), WHERE)
    if key in ("pattern", "sparsity") and "method" not in settings and "block" not in settings:
        settings = {"sparsity": 0.5, **settings} if key == "pattern" else settings  # required there
        with pytest.raises(ConfigError, match=rf"recipe 'magnitude_prune': '{key}'"):
            build_recipe("magnitude_prune", settings, ctx(), WHERE)


def test_targets_matching_nothing_fail_when_the_stage_starts(tmp_path, monkeypatch):
    from test_platform import _csv_task, _tiny_dir
    from workbench.pipeline import PipelineRun, PipelineSpec

    for recipe in ("movement_prune", "magnitude_prune"):
        with pytest.raises(ConfigError, match=rf"recipe '{recipe}': 'targets' entry 're:.*attn.*' matches no"):
            build_recipe(recipe, {"sparsity": 0.5, "targets": ["re:.*attn.*"]}, ctx(), WHERE).apply(bert(layers=2))
    with pytest.raises(ConfigError, match=r"'bert.encoder.layer.0.attention.self.query' has 30"):
        odd = nn.Linear(30, 8)  # 30 inputs: not a multiple of 4
        model = bert(layers=2)
        model.bert.encoder.layer[0].attention.self.query = odd
        build_recipe("movement_prune", {"pattern": "2:4"}, ctx(), WHERE).apply(model)
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    spec = PipelineSpec.from_dict({
        "name": "bad", "model": str(_tiny_dir(tmp_path, "tiny")), "seed": 0, "task": _csv_task(tmp_path),
        "stages": [{"name": "p", "recipes": ["finetune", {"movement_prune": {"sparsity": 0.5, "targets": ["nope"]}}]}]})
    with pytest.raises(ConfigError, match="stage 'p' recipe 'movement_prune': 'targets' entry 'nope'"):
        PipelineRun(spec, results_root=tmp_path / "r").run()
    assert not (tmp_path / "r" / "bad" / "history" / "p.csv").exists()  # nothing trained
