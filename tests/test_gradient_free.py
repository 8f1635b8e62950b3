"""Gradient-free structured pruning with unlabeled data (Nova et al. 2023): the hull and
activation rankings, the budget, no labels and no gradients, rescaling, shrinking, reloading,
bad settings, and a run through the pipeline."""
from __future__ import annotations

import copy

import pytest
import torch

from conftest import tiny_spec, write_tiny_task
from test_structural import context, inputs, logits, tiny, train_data  # noqa: F401
from workbench.config import ConfigError, parse_config
from workbench.models.arch import architecture
from workbench.prune.flops import encoder_macs
from workbench.prune.gradient_free import (
    activation_stats, hull_scores, layer_percentiles, merged_neuron_scores, representative_scores,
)
from workbench.prune.structure import MaskHooks, structure
from workbench.recipes.base import recipe_class
from workbench.recipes.prune.gradient_free import GradientFreePrune, GradientFreePruneConfig, unlabeled_batches
from workbench.recipes.prune.retraining_free import RetrainingFreePruneConfig

WHERE = "stage 'p' recipe 'gradient_free_prune'"


def recipe(ctx, **settings):
    settings = {"flops": 0.4, "num_examples": 48, "batch_size": 16, **settings}
    return GradientFreePrune(parse_config(GradientFreePruneConfig, settings, WHERE), ctx)


# ------------------------------------------------------------------------------ rankings
def test_hull_scores_rank_convex_hull_vertices_and_lone_filters_first():
    from scipy.spatial import ConvexHull

    torch.manual_seed(0)
    pts = torch.randn(120, 2)
    hull = torch.tensor(ConvexHull(pts.numpy()).vertices)
    scores = hull_scores(pts, iters=20)
    rank = scores.argsort(descending=True).argsort().float()
    interior = torch.ones(120, dtype=torch.bool)
    interior[hull] = False
    assert rank[hull].mean() < 0.25 * rank[interior].mean()
    # near-duplicates represent each other: a lone filter outranks every member of a tight cluster
    cluster = torch.cat([torch.randn(10, 6) * 0.01, torch.full((1, 6), 1.0)])
    s = hull_scores(cluster, gamma=1.0)
    assert s[10] > s[:10].max()


def test_activation_stats_are_each_units_effect_on_the_layernorm(word_tokenizer, train_data):
    model = tiny("bert", layers=2)
    batches = unlabeled_batches(context(word_tokenizer, train_data), None, 32, 16, WHERE)
    stats = activation_stats(model, batches)
    assert stats.examples == 32 and stats.head_energy.shape == (2, 4) and stats.neuron_energy.shape == (2, 64)
    assert (stats.neuron_votes >= 0).all() and (stats.neuron_votes <= 1).all()
    # the energy of neuron j in layer 0: the change of the FFN LayerNorm's output when j is masked,
    # to first order; compare with the measured change (summed over neurons: no cancellation)
    arch = architecture(model)
    norm = arch.module(0, "ffn_norm")
    outs = []
    hook = norm.register_forward_hook(lambda m, a, o: outs.append(o.detach()))
    nm = structure(model).ones()[1]
    with torch.no_grad():
        model(input_ids=batches[0]["input_ids"], attention_mask=batches[0]["attention_mask"])
        j = int(stats.neuron_energy[0].argmax())
        nm[0, j] = 0.0
        with MaskHooks(model, None, nm):
            model(input_ids=batches[0]["input_ids"], attention_mask=batches[0]["attention_mask"])
    hook.remove()
    real = batches[0]["attention_mask"].bool()
    measured = (outs[1] - outs[0])[real].pow(2).sum(-1).mean()
    one_batch = activation_stats(model, batches[:1])
    assert float(one_batch.neuron_energy[0, j]) == pytest.approx(float(measured), rel=0.2)


def test_merge_keeps_each_layers_energies_and_orders_by_the_merged_rank():
    energy = torch.tensor([[4.0, 3.0, 2.0, 1.0], [8.0, 0.5, 0.2, 0.1]])
    votes = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.9, 0.1, 0.2, 0.3]])
    rep = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.1, 0.9, 0.3, 0.2]])
    free = torch.ones(2, 4, dtype=torch.bool)
    data_only = merged_neuron_scores(energy, votes, rep, free, 1.0, 0.0)
    assert data_only[0].tolist() == [1.0, 2.0, 3.0, 4.0]  # same multiset of energies, reordered by votes
    hull_only = merged_neuron_scores(energy, votes, rep, free, 0.0, 1.0)
    assert torch.equal(hull_only[1], energy[1, [3, 0, 1, 2]])
    free[1, 0] = False  # not free: keeps its own energy, the others reorder among themselves
    out = merged_neuron_scores(energy, votes, rep, free, 0.0, 1.0)
    assert torch.equal(out[1], energy[1])
    assert layer_percentiles(votes, free)[1].tolist() == [0.0, 0.0, 0.5, 1.0]


# ------------------------------------------------------------------------------ the recipe
@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_meets_the_flops_budget_and_shrinks(word_tokenizer, train_data, family):
    model = tiny(family)
    data = train_data.remove_columns(["token_type_ids"]) if family == "distilbert" else train_data
    r = recipe(context(word_tokenizer, data), flops=0.4)
    assert recipe_class("gradient_free_prune", WHERE) is GradientFreePrune
    assert not GradientFreePrune.requires_training(r.config)
    out = r.apply(model)
    info = out.config.workbench_pruning
    assert info["flops_removed"] >= 0.4 - 1e-9 and info["macs_after"] <= 0.6 * info["macs_before"] + 1e-6
    assert encoder_macs(out, info["seq_len"])["total"] == pytest.approx(info["macs_after"])
    assert info["flops_removed"] < 0.5  # the budget is used, not overshot
    assert info["method"] == "gradient_free_prune" and info["examples"] == 48 and info["pruning_seconds"] > 0
    assert info["peak_rss_mb"] > 0 and len(info["fits"]) == 6 and info["tuned_blocks"] >= 1
    assert sum(info["neurons"]) < 3 * 64
    assert out.config.to_json_string()


def test_labels_are_never_read_and_no_gradient_is_taken(word_tokenizer, train_data, monkeypatch):
    ctx = context(word_tokenizer, train_data)
    batches = unlabeled_batches(ctx, None, 48, 16, WHERE)
    assert all(set(b) <= {"input_ids", "attention_mask", "token_type_ids"} for b in batches)

    def no_grad(*a, **k):
        raise AssertionError("a gradient was taken")

    monkeypatch.setattr(torch.autograd, "grad", no_grad)
    monkeypatch.setattr(torch.Tensor, "backward", no_grad)
    reference = recipe(ctx).masks(tiny("bert"))
    poisoned = train_data.map(lambda ex: {"labels": -10 ** 6}).with_format("torch")  # breaks any loss
    unlabeled = train_data.remove_columns(["labels"])
    for data in (poisoned, unlabeled):
        hm, nm, _ = recipe(context(word_tokenizer, data)).masks(tiny("bert"))
        assert torch.equal(hm, reference[0]) and torch.equal(nm, reference[1])


def test_rescaling_lowers_the_reconstruction_error(word_tokenizer, train_data):
    from workbench.prune.tune import _capture, _rows

    ctx = context(word_tokenizer, train_data)
    model = tiny("bert", layers=2)
    hm0, nm0, _ = recipe(ctx, flops=0.5, rescale=False).masks(model)
    hm, nm, info = recipe(ctx, flops=0.5, damp=0.0, max_scale=100.0).masks(model)
    assert torch.equal(hm != 0, hm0 != 0) and torch.equal(nm != 0, nm0 != 0)  # the same units kept
    assert not torch.equal(nm, nm0)
    batches = unlabeled_batches(ctx, None, 48, 16, WHERE)
    w2 = architecture(model).module(0, "ffn_out").weight.detach().double()
    ones_h, ones_f = structure(model).ones()

    def ffn_error(h, n):  # layer 0's FFN block output (before the LayerNorm) vs the dense model's
        total = 0.0
        for b in batches:
            ref, stu = _capture(model, 0, b, ones_h, ones_f), _capture(model, 0, b, h, n)
            y_ref = _rows(ref["a"], b, False).double() @ w2.T + _rows(ref["r"], b, False).double()
            y = _rows(stu["a"], b, False).double() @ w2.T + _rows(stu["r"], b, False).double()
            total += float((y - y_ref).pow(2).sum())
        return total

    assert ffn_error(hm, nm) < 0.95 * ffn_error(hm, nm0)
    ffn0 = info["fits"][1]
    assert ffn0["block"] == "ffn" and ffn0["applied"] and ffn0["error_after"] < ffn0["error_before"]


def test_shrunk_logits_equal_masked_logits_and_the_saved_model_reloads(word_tokenizer, train_data, tmp_path):
    """The reload reads only the saved folder (config.json with the recorded edits + weights);
    that it also works in a fresh process is `test_structural`'s check of `shrink`'s edits."""
    from workbench.models.edits import load_edited_model

    ctx = context(word_tokenizer, train_data)
    model = tiny("bert")
    ids, mask = inputs()
    hm, nm, _ = recipe(ctx, flops=0.5).masks(model)
    assert (hm == 0).any() and (nm == 0).any() and ((nm != 0) & (nm != 1)).any()  # removed and rescaled units
    with MaskHooks(model, hm, nm):
        masked = logits(model, ids, mask)
    shrunk = recipe(ctx, flops=0.5).apply(copy.deepcopy(model))
    assert torch.allclose(logits(shrunk, ids, mask), masked, atol=1e-5)
    shrunk.save_pretrained(tmp_path / "m")
    again = load_edited_model(tmp_path / "m").eval()
    assert structure(again) == structure(shrunk) and structure(again) != structure(model)
    assert again.config.workbench_pruning["method"] == "gradient_free_prune"
    assert torch.allclose(logits(again, ids, mask), masked, atol=1e-5)


def test_a_corpus_file_is_used_instead_of_the_training_split(word_tokenizer, tmp_path):
    lines = [" ".join(f"w{(7 * i + k) % 115}" for k in range(3 + i % 9)) for i in range(40)]
    (tmp_path / "corpus.txt").write_text("\n".join(lines[:20]) + "\n\n  \n" + "\n".join(lines[20:]) + "\n")
    ctx = context(word_tokenizer, None)  # no training split at all
    r = recipe(ctx, corpus=str(tmp_path / "corpus.txt"), num_examples=2048)
    model = r.apply(tiny("bert"))
    info = model.config.workbench_pruning
    assert info["examples"] == 40 and info["corpus"] == str(tmp_path / "corpus.txt")
    assert info["flops_removed"] >= 0.4 - 1e-9


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("settings,message", [
    ({"flops": 0.0}, "'flops' must be a fraction in \\(0, 1\\)"),
    ({"flops": 1.0}, "'flops' must be a fraction in \\(0, 1\\)"),
    ({"flops": 1.5}, "'flops' must be a fraction in \\(0, 1\\)"),
    ({"flops": -0.1}, "'flops' must be a fraction in \\(0, 1\\)"),
    ({"flops": 0.3, "gamma": 0.0}, "'gamma' must be > 0"),
    ({"flops": 0.3, "hull_iters": 0}, "'hull_iters' must be >= 1"),
    ({"flops": 0.3, "data_weight": 0.0, "representative_weight": 0.0}, "both 0"),
    ({"flops": 0.3, "data_weight": -1.0}, "'data_weight' must be >= 0"),
    ({"flops": 0.3, "targets": []}, "'targets'"),
    ({"flops": 0.3, "corpus": "no/such/file.txt"}, "'corpus' file 'no/such/file.txt' does not exist"),
])
def test_bad_settings_fail_with_a_config_error(settings, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(GradientFreePruneConfig, settings, WHERE)


@pytest.mark.parametrize("config", [GradientFreePruneConfig, RetrainingFreePruneConfig])
@pytest.mark.parametrize("settings,message", [
    ({"num_examples": 0}, "'num_examples' must be >= 1"),
    ({"batch_size": 0}, "'batch_size' must be >= 1"),
    ({"seq_len": 0}, "'seq_len' must be > 0"),
    ({"damp": -0.5}, "'damp' must be >= 0"),
    ({"max_scale": 1.0}, "'max_scale' must be > 1"),
    ({"max_heads_removed": -1}, "'max_heads_removed' must be >= 0"),
])
def test_both_retraining_free_recipes_check_their_shared_fields(config, settings, message):
    """The budget, sample and rescale fields both recipes share (one check for both)."""
    with pytest.raises(ConfigError, match=message):
        parse_config(config, {"flops": 0.3, **settings}, WHERE)


def test_an_empty_corpus_or_unmatched_targets_fail_before_any_work(word_tokenizer, train_data, tmp_path, monkeypatch):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n")
    with pytest.raises(ConfigError, match=f"{WHERE}: 'corpus' file '{empty}' has no text"):
        parse_config(GradientFreePruneConfig, {"flops": 0.3, "corpus": str(empty)}, WHERE)

    def no_work(*a, **k):
        raise AssertionError("work started")

    monkeypatch.setattr("workbench.recipes.prune.gradient_free.activation_stats", no_work)
    ctx = context(word_tokenizer, train_data)
    r = recipe(ctx, flops=0.3)
    r.config.corpus = str(empty)  # emptied after validation: still refused before any forward pass
    with pytest.raises(ConfigError, match="has no text"):
        r.apply(tiny("bert"))
    with pytest.raises(ConfigError, match="'targets' entry 're:.\\*no_such_layer.\\*' matches no"):
        recipe(ctx, targets=["re:.*no_such_layer.*"]).apply(tiny("bert"))
    with pytest.raises(ConfigError, match="'max_heads_removed' is 5 but layer 0 has only 4 heads"):
        recipe(ctx, max_heads_removed=5).apply(tiny("bert"))
    with pytest.raises(ConfigError, match="needs unlabeled text, but the stage has no training split"):
        recipe(context(word_tokenizer, None)).apply(tiny("bert"))
    with pytest.raises(ConfigError, match="'flops' cannot be met"):
        recipe(ctx, flops=0.8, targets=["bert.encoder.layer.0"]).apply(tiny("bert"))
    with pytest.raises(ConfigError, match="'flops' cannot be met"):
        recipe(ctx, flops=0.7, max_heads_removed=1).apply(tiny("bert"))


def test_targets_and_head_cap_are_respected(word_tokenizer, train_data):
    ctx = context(word_tokenizer, train_data)
    model = recipe(ctx, flops=0.3, seq_len=16, targets=["re:bert\\.encoder\\.layer\\.[01]"]).apply(tiny("bert"))
    info = model.config.workbench_pruning
    assert info["flops_removed"] >= 0.3 - 1e-9 and info["heads"][2] == 4 and info["neurons"][2] == 64
    uncapped = recipe(ctx, flops=0.6).apply(tiny("bert")).config.workbench_pruning
    assert min(uncapped["heads"]) < 2  # left alone, some layer loses more than two heads
    capped = recipe(ctx, flops=0.6, max_heads_removed=2).apply(tiny("bert")).config.workbench_pruning
    assert min(capped["heads"]) >= 2 and capped["flops_removed"] >= 0.6 - 1e-9
    assert representative_scores(tiny("bert"), torch.tensor([True, False, False]))[1:].eq(0).all()


# ------------------------------------------------------------------------------ in a pipeline
def test_pipeline_finetune_then_gradient_free_prune(tmp_path, monkeypatch):
    """A tiny local model and CSV task, from YAML: fine-tune, then gradient_free_prune (one-shot);
    a second run reuses the pruned stage from disk with the same metrics."""
    import yaml
    from workbench.pipeline import PipelineRun, PipelineSpec

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    csv_path, folder = write_tiny_task(tmp_path, repeats=20)
    recipe_yaml = tmp_path / "gf.yaml"
    recipe_yaml.write_text(yaml.safe_dump(tiny_spec(csv_path, folder, [
        {"name": "teacher", "recipes": ["finetune"], "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3}},
        {"name": "pruned", "recipes": [{"gradient_free_prune": {"flops": 0.4, "num_examples": 32,
                                                                "batch_size": 16}}]},
    ], name="gf")))
    spec = PipelineSpec.from_yaml(str(recipe_yaml))
    first = {m["stage"]: m for m in PipelineRun(spec, results_root=tmp_path / "r").run()}
    assert first["pruned"]["params"] < first["teacher"]["params"]
    again = PipelineRun(spec, results_root=tmp_path / "r")
    second = {m["stage"]: m for m in again.run()}
    assert "reused_from" in second["pruned"]
    assert second["pruned"]["accuracy"] == first["pruned"]["accuracy"]
    assert second["pruned"]["params"] == first["pruned"]["params"]
    info = again.models["pruned"].config.workbench_pruning
    assert info["method"] == "gradient_free_prune" and info["flops_removed"] >= 0.4 - 1e-9
