"""Structural pruning (issue 9): head / neuron masks, shrinking, reload, FLOPs, Kwon et al.'s
retraining-free pruning, the structured_prune recipe, the runtime on uneven heads."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import tiny_spec, write_tiny_task
from workbench.config import ConfigError, parse_config
from workbench.models.arch import architecture
from workbench.prune.flops import encoder_macs, head_macs, masked_macs, neuron_macs
from workbench.prune.search import rearrange, remove_lowest, search_budget
from workbench.prune.structure import (
    MaskHooks, example_batches, fisher_scores, magnitude_scores, mask_gradients, shrink, structure,
)
from workbench.prune.tune import tune_masks
from workbench.recipes.base import RecipeContext, TrainState
from workbench.recipes.prune.retraining_free import RetrainingFreePrune, RetrainingFreePruneConfig
from workbench.recipes.prune.structured import StructuredPrune, StructuredPruneConfig


# ------------------------------------------------------------------------------ fixtures
def tiny(family: str = "bert", layers: int = 3, seed: int = 0):
    from transformers import (BertConfig, BertForSequenceClassification, DistilBertConfig,
                              DistilBertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification)

    torch.manual_seed(seed)
    if family == "distilbert":
        cfg = DistilBertConfig(vocab_size=120, dim=32, n_layers=layers, n_heads=4, hidden_dim=64,
                               max_position_embeddings=64, num_labels=2, initializer_range=0.2)
        return DistilBertForSequenceClassification(cfg).eval()
    kw = dict(vocab_size=120, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=64,
              max_position_embeddings=70, num_labels=2, initializer_range=0.2)
    if family == "roberta":
        return RobertaForSequenceClassification(RobertaConfig(pad_token_id=1, **kw)).eval()
    if family in ("electra", "electra-small"):  # -small: narrower embeddings, projected to the layers' width
        from transformers import ElectraConfig, ElectraForSequenceClassification

        return ElectraForSequenceClassification(ElectraConfig(embedding_size=32 if family == "electra" else 16,
                                                              **kw)).eval()
    return BertForSequenceClassification(BertConfig(**kw)).eval()


def inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 120, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    ids[1, 8:] = 0
    return ids, mask


def logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


@pytest.fixture(scope="module")
def train_data(word_tokenizer):
    """A tokenized training split like the pipeline's (input_ids, attention_mask, labels, text)."""
    import datasets

    rng = np.random.default_rng(0)
    texts, labels = [], []
    for _ in range(96):
        n = int(rng.integers(3, 14))
        words = rng.integers(0, 115, n)
        texts.append(" ".join(f"w{w}" for w in words))
        labels.append(int(words.mean() > 57))
    enc = word_tokenizer(texts, truncation=True, max_length=32)
    ds = datasets.Dataset.from_dict({"text": texts, "labels": labels, "input_ids": enc["input_ids"],
                                     "attention_mask": enc["attention_mask"], "token_type_ids": enc["token_type_ids"]})
    return ds.with_format("torch")


def context(word_tokenizer, train_data, stage="pruned"):
    return RecipeContext(task=None, tokenizer=word_tokenizer, run_dir=None, stage=stage, train_data=train_data)


def some_masks(model, scales=False):
    st = structure(model)
    hm, nm = st.ones()
    hm[0, 1] = 0
    hm[1, [0, 3]] = 0
    nm[0, :20] = 0
    nm[2, 5:9] = 0
    if scales:
        hm[2] *= torch.tensor([1.5, 0.5, 1.0, 2.0])
        nm[1] *= torch.linspace(0.5, 1.5, nm.shape[1])
    return hm, nm


# ------------------------------------------------------------------------------ masks
@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "electra"])
def test_masks_remove_exactly_the_chosen_heads_and_neurons(family):
    model = tiny(family)
    arch = architecture(model)
    ids, mask = inputs()
    hm, nm = some_masks(model)
    seen = {}
    hooks_seen = [arch.module(i, role).register_forward_pre_hook(
        lambda m, a, key=(i, role): seen.__setitem__(key, a[0].detach().clone()))
        for i in range(3) for role in ("attn_out", "ffn_out")]
    with MaskHooks(model, hm, nm):  # registered after the spies: they see the unmasked inputs
        masked = logits(model, ids, mask)
    for h in hooks_seen:
        h.remove()
    # the same computation by zeroing the chosen heads' output columns / neurons' columns by hand
    manual = tiny(family)
    manual.load_state_dict(model.state_dict())
    with torch.no_grad():
        for i in range(3):
            arch_m = architecture(manual)
            arch_m.module(i, "attn_out").weight.mul_(hm[i].repeat_interleave(8))
            arch_m.module(i, "ffn_out").weight.mul_(nm[i])
    assert torch.allclose(masked, logits(manual, ids, mask), atol=1e-6)
    assert not torch.allclose(masked, logits(model, ids, mask), atol=1e-4)  # the masks did something
    # with the hooks on, attn_out / ffn_out receive exact zeros exactly where the mask is 0
    got = {}
    spies = [arch.module(i, role).register_forward_hook(
        lambda m, a, o, key=(i, role): got.__setitem__(key, a[0].detach().clone()))
        for i in range(3) for role in ("attn_out", "ffn_out")]
    with MaskHooks(model, hm, nm):
        logits(model, ids, mask)
    for h in spies:
        h.remove()
    for i in range(3):
        ctx = got[(i, "attn_out")].view(3, 12, 4, 8)
        zero_heads = (ctx == 0).all(dim=(0, 1, 3))
        assert zero_heads.tolist() == (hm[i] == 0).tolist()
        act = got[(i, "ffn_out")]
        assert (act == 0).all(dim=(0, 1)).tolist() == (nm[i] == 0).tolist()


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "electra", "electra-small"])
def test_shrink_gives_the_masked_logits_and_smaller_layers(family):
    model = tiny(family)
    ids, mask = inputs()
    hm, nm = some_masks(model, scales=True)
    hm[1] = 0  # layer 1 loses its whole attention, layer 0 its whole FFN
    nm[0] = 0
    with MaskHooks(model, hm, nm):
        masked = logits(model, ids, mask)
    params = sum(p.numel() for p in model.parameters())
    summary = shrink(model, hm, nm)
    assert summary["heads"] == [3, 0, 4] and summary["neurons"] == [0, 64, 60]
    assert summary["attention_removed"] == [1] and summary["ffn_removed"] == [0]
    arch = architecture(model)
    assert [arch.num_heads(i) for i in range(3)] == [3, 0, 4]
    assert arch.module(0, "query").weight.shape == (24, 32) and arch.module(0, "attn_out").weight.shape == (32, 24)
    assert arch.module(2, "ffn_in").out_features == 60
    assert sum(p.numel() for p in model.parameters()) < params
    assert torch.allclose(logits(model, ids, mask), masked, atol=1e-5)
    assert [e["op"] for e in model.config.workbench_edits].count("heads") == 2


def test_a_shrunk_model_reloads_in_a_fresh_process(tmp_path):
    model = tiny("bert")
    ids, mask = inputs()
    hm, nm = some_masks(model, scales=True)
    hm[1] = 0
    nm[0] = 0
    shrink(model, hm, nm)
    before = logits(model, ids, mask)
    model.save_pretrained(tmp_path / "m")
    torch.save((ids, mask), tmp_path / "in.pt")
    code = ("import sys, torch; from workbench.models.edits import load_edited_model; "
            "from workbench.models.arch import architecture; "
            "m = load_edited_model(sys.argv[1]); ids, mask = torch.load(sys.argv[2]); a = architecture(m); "
            "print([a.num_heads(i) for i in range(a.num_layers)], [a.module(i, 'ffn_in').out_features for i in range(3)]); "
            "torch.save(m(input_ids=ids, attention_mask=mask).logits.detach(), sys.argv[3])")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m"), str(tmp_path / "in.pt"), str(tmp_path / "o.pt")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[3, 0, 4] [0, 64, 60]"
    assert torch.allclose(torch.load(tmp_path / "o.pt"), before, atol=1e-6)


def test_the_runtime_runs_uneven_heads_and_ffn_widths():
    from workbench.runtime import compile_model

    model = tiny("bert")
    ids, mask = inputs()
    hm, nm = some_masks(model, scales=True)
    shrink(model, hm, nm)
    assert [architecture(model).num_heads(i) for i in range(3)] == [3, 2, 4]
    engine = compile_model(model, quantize=False)
    assert engine.layer_heads == [3, 2, 4]
    got = engine(ids.numpy(), mask.numpy())
    assert np.abs(got - logits(model, ids, mask).numpy()).max() < 1e-4


# ------------------------------------------------------------------------------ FLOPs
def test_encoder_macs_count_heads_and_neurons_per_layer():
    model = tiny("bert")
    seq = 20.0
    macs = encoder_macs(model, seq)
    per_head = 4 * seq * 32 * 8 + 2 * seq * seq * 8
    assert head_macs(32, 8, seq) == per_head and neuron_macs(32, seq) == 2 * seq * 32
    assert macs["total"] == pytest.approx(3 * (4 * per_head + 64 * 2 * seq * 32))
    hm, nm = some_masks(model)
    predicted = masked_macs(hm, nm, 32, 8, seq)
    shrink(model, hm, nm)
    after = encoder_macs(model, seq)
    assert after["total"] == pytest.approx(predicted)
    assert [p["heads"] for p in after["per_layer"]] == [3, 2, 4]
    assert after["per_layer"][0]["ffn"] == pytest.approx(44 * 2 * seq * 32)


def test_search_meets_the_budget_and_maximises_kept_importance():
    torch.manual_seed(0)
    hs, ns = torch.rand(2, 3), torch.rand(2, 5)
    free_h, free_n = torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 5, dtype=torch.bool)
    none_h, none_n = torch.zeros_like(free_h), torch.zeros_like(free_n)
    ch, cn = 3.0, 1.0
    for budget in (4.0, 9.5, 15.0, 20.0):
        keep_h, keep_n = search_budget(hs, ns, free_h, free_n, none_h, none_n, ch, cn, budget)
        assert float(keep_h.sum()) * ch + float(keep_n.sum()) * cn <= budget
        best = 0.0  # brute force over every subset split (heads by count, neurons by count)
        for k in range(7):
            for n in range(11):
                if k * ch + n * cn <= budget:
                    best = max(best, float(hs.flatten().sort(descending=True).values[:k].sum()
                                           + ns.flatten().sort(descending=True).values[:n].sum()))
        assert float(hs[keep_h].sum() + ns[keep_n].sum()) == pytest.approx(best)
    # fixed units are always kept and count against the budget; too many of them: None
    fixed_h = none_h.clone()
    fixed_h[0, 0] = True
    keep_h, _ = search_budget(hs, ns, free_h, free_n, fixed_h, none_n, ch, cn, 5.0)
    assert bool(keep_h[0, 0])
    assert search_budget(hs, ns, free_h, free_n, fixed_h, none_n, ch, cn, 2.0) is None


def test_remove_lowest_respects_a_per_layer_cap():
    scores = torch.tensor([[0.1, 0.2, 0.3, 0.9], [0.5, 0.6, 0.7, 0.8]])
    free, keep = torch.ones(2, 4, dtype=torch.bool), torch.ones(2, 4, dtype=torch.bool)
    out = remove_lowest(scores, free, keep, 3)
    assert out.tolist() == [[False, False, False, True], [True] * 4]
    out = remove_lowest(scores, free, keep, 3, max_per_layer=2)
    assert out.tolist() == [[False, False, True, True], [False, True, True, True]]
    assert remove_lowest(scores, free, keep, 4, max_per_layer=2) is not None
    assert remove_lowest(scores, free, keep, 5, max_per_layer=2) is None  # 2 layers x 2 at most
    removed = ~torch.tensor([[False, True, True, True], [True] * 4])  # layer 0 already lost one
    assert remove_lowest(scores, free, ~removed, 2, max_per_layer=2, removed_before=removed).tolist() == \
        [[False, False, True, True], [False, True, True, True]]


def test_rearrangement_keeps_counts_and_lowers_the_summed_gradient():
    torch.manual_seed(3)
    grads = torch.randn(16, 2, 10)
    grads[:, 0, :4] += torch.tensor([1.0, -1.0, 1.0, -1.0])  # pairs that cancel when removed together
    keep = torch.ones(2, 10, dtype=torch.bool)
    keep[0, torch.argsort(fisher_scores(grads)[0])[:5]] = False
    keep[1, :3] = False
    free = torch.ones_like(keep)
    new = rearrange(keep, free, grads)
    assert new.sum(1).tolist() == keep.sum(1).tolist()

    def objective(k, layer):
        return float(grads[:, layer, ~k[layer]].sum(1).pow(2).sum())

    assert objective(new, 0) <= objective(keep, 0) + 1e-9
    assert objective(new, 1) <= objective(keep, 1) + 1e-9


# ------------------------------------------------------------------------------ importance
def test_importance_scores(word_tokenizer, train_data):
    model = tiny("bert")
    mh, mn = magnitude_scores(model)
    arch = architecture(model)
    w = sum(arch.module(1, r).weight[8:16].abs().sum() for r in ("query", "key", "value")) \
        + arch.module(1, "attn_out").weight[:, 8:16].abs().sum()
    assert float(mh[1, 1]) == pytest.approx(float(w.detach()), rel=1e-5)
    batches = example_batches(train_data, word_tokenizer, 40, 16)
    assert [len(b["labels"]) for b in batches] == [16, 16, 8]
    hg, ng = mask_gradients(model, batches)
    assert hg.shape == (3, 3, 4) and ng.shape == (3, 3, 64)
    assert all(p.grad is None for p in model.parameters())
    # the gradient w.r.t. a head's mask is the loss change of scaling that head (finite difference)
    from workbench.prune.structure import batch_loss

    hm, nm = structure(model).ones()
    eps = 1e-3
    with torch.no_grad():
        hm2 = hm.clone()
        hm2[2, 1] += eps
        with MaskHooks(model, hm2, nm):
            up = batch_loss(model, batches[0])
        hm2[2, 1] -= 2 * eps
        with MaskHooks(model, hm2, nm):
            down = batch_loss(model, batches[0])
    assert float(hg[0, 2, 1]) == pytest.approx(float(up - down) / (2 * eps), rel=1e-2, abs=1e-5)


# ------------------------------------------------------------------------------ least squares
def test_least_squares_lowers_the_layer_reconstruction_error(word_tokenizer, train_data):
    model = tiny("bert", layers=2)
    batches = example_batches(train_data, word_tokenizer, 64, 16)
    hm, nm = structure(model).ones()
    hm[:, :2] = 0
    nm[:, ::2] = 0

    def ffn_error(h, n, layer=0):  # the pruned FFN block's output vs the dense one, layer 0
        from workbench.prune.tune import _capture, _rows

        w2 = architecture(model).module(layer, "ffn_out").weight.detach().double()
        ones_h, ones_f = structure(model).ones()
        total = 0.0
        for b in batches:
            ref, stu = _capture(model, layer, b, ones_h, ones_f), _capture(model, layer, b, h, n)
            y_ref = _rows(ref["a"], b, False).double() @ w2.T + _rows(ref["r"], b, False).double()
            y = _rows(stu["a"], b, False).double() @ w2.T + _rows(stu["r"], b, False).double()
            total += float((y - y_ref).pow(2).sum())
        return total

    th, tn, report = tune_masks(model, batches, hm, nm, damp=0.0, max_scale=100.0)
    assert ((th == 0) == (hm == 0)).all() and ((tn == 0) == (nm == 0)).all()  # removed units stay removed
    assert len(report.fits) == 4
    for fit in report.fits:
        assert fit.error_after <= fit.error_before * (1 + 1e-9)
    ffn0 = report.fits[1]
    assert ffn0.block == "ffn" and ffn0.applied and ffn0.error_after < 0.9 * ffn0.error_before
    # measured independently: the tuned layer-0 FFN output is closer to the dense one
    assert ffn_error(th, tn) < ffn_error(th, nm)
    assert ffn_error(th, tn) == pytest.approx(ffn0.error_after, rel=1e-3)
    # a tight scale limit gives up on the layer instead
    _, tn2, rep2 = tune_masks(model, batches, hm, nm, damp=0.0, max_scale=1.0001)
    assert any(not f.applied and "scale" in f.reason for f in rep2.fits)
    assert all(torch.equal(tn2[f.layer], nm[f.layer]) for f in rep2.fits if f.block == "ffn" and not f.applied)


# ------------------------------------------------------------------------------ recipes
@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "electra"])
def test_retraining_free_prune_meets_the_flops_budget_and_shrinks(word_tokenizer, train_data, family):
    model = tiny(family)
    ids, mask = inputs()
    cfg = parse_config(RetrainingFreePruneConfig, {"flops": 0.4, "num_examples": 64, "batch_size": 16}, "t")
    assert not RetrainingFreePrune.requires_training(cfg) and not RetrainingFreePrune.contributes_loss(cfg)
    data = train_data.remove_columns(["token_type_ids"]) if family == "distilbert" else train_data
    out = RetrainingFreePrune(cfg, context(word_tokenizer, data)).apply(model)
    info = out.config.workbench_pruning
    assert info["flops_removed"] >= 0.4 - 1e-9
    assert info["macs_after"] <= 0.6 * info["macs_before"] + 1e-6
    assert encoder_macs(out, info["seq_len"])["total"] == pytest.approx(info["macs_after"])
    assert info["pruning_seconds"] > 0 and info["stage"] == "pruned" and len(info["fits"]) == 6
    assert info["tuned_blocks"] >= 1
    assert logits(out, ids, mask).shape == (3, 2)
    assert out.config.to_json_string()  # the record is JSON-safe (save_pretrained writes it)


def test_structured_prune_oneshot_fisher_and_magnitude(word_tokenizer, train_data):
    ctx = context(word_tokenizer, train_data)
    model = tiny("bert")
    cfg = parse_config(StructuredPruneConfig, {"heads": 0.5, "neurons": 0.25, "criterion": "magnitude"}, "t")
    StructuredPrune(cfg, ctx).apply(model)
    st = structure(model)
    assert sum(st.heads) == 6 and sum(st.neurons) == 3 * 64 - 48
    model = tiny("bert")
    cfg = parse_config(StructuredPruneConfig, {"flops": 0.3, "criterion": "fisher", "num_examples": 32,
                                               "max_heads_removed": 3}, "t")
    StructuredPrune(cfg, ctx).apply(model)
    info = model.config.workbench_pruning
    assert info["flops_removed"] >= 0.3 - 1e-9 and min(info["heads"]) >= 1
    model = tiny("bert")
    cfg = parse_config(StructuredPruneConfig, {"flops": 0.3, "seq_len": 16,
                                               "targets": ["re:bert\\.encoder\\.layer\\.[01]"]}, "t")
    StructuredPrune(cfg, ctx).apply(model)
    info = model.config.workbench_pruning
    assert info["flops_removed"] >= 0.3 - 1e-9 and info["heads"][2] == 4 and info["neurons"][2] == 64


def test_structured_prune_gradual_masks_then_shrinks(word_tokenizer, train_data):
    model = tiny("bert")
    cfg = parse_config(StructuredPruneConfig, {"heads": 0.5, "neurons": 0.5, "criterion": "taylor",
                                               "schedule": "gradual", "end": 0.5, "frequency": 2}, "t")
    assert StructuredPrune.requires_training(cfg)
    recipe = StructuredPrune(cfg, context(word_tokenizer, train_data))
    model = recipe.apply(model)
    assert structure(model).heads == (4, 4, 4)  # nothing removed before training
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    state = TrainState(model, opt, 0, 12, 0, 12)
    recipe.on_train_begin(state)
    batches = example_batches(train_data, word_tokenizer, 48, 4)
    fractions = []
    for step in range(1, 13):
        model.train()
        loss = torch.nn.functional.cross_entropy(model(input_ids=batches[step - 1]["input_ids"],
                                                       attention_mask=batches[step - 1]["attention_mask"]).logits,
                                                 batches[step - 1]["labels"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        state.step = step
        recipe.on_after_optimizer_step(state)
        fractions.append(recipe.fraction)
    assert fractions[0] == 0 and 0 < fractions[3] < fractions[5] == 1.0
    saved = recipe.state_dict()
    recipe.on_train_end(state)
    assert sum(structure(model).heads) == 6 and sum(structure(model).neurons) == 96
    assert model.config.workbench_pruning["schedule"] == "gradual"
    assert saved["head_keep"].sum() == 6


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("settings,key", [
    ({"flops": 0.0}, "flops"), ({"flops": 1.0}, "flops"), ({"flops": -0.2}, "flops"), ({"flops": 1.5}, "flops"),
    ({"heads": 1.0}, "heads"), ({"neurons": 0.0}, "neurons"), ({}, "flops"),
    ({"flops": 0.3, "heads": 0.2}, "flops"), ({"heads": 0.2, "max_heads_removed": -1}, "max_heads_removed"),
    ({"heads": 0.2, "targets": []}, "targets"),
])
def test_structured_prune_rejects_bad_budgets(settings, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        parse_config(StructuredPruneConfig, settings, "stage 'p' recipe 'structured_prune'")


@pytest.mark.parametrize("flops", [0.0, 1.0, 2.0, -0.5])
def test_retraining_free_rejects_a_budget_outside_0_1(flops):
    with pytest.raises(ConfigError, match="'flops' must be a fraction in \\(0, 1\\)"):
        parse_config(RetrainingFreePruneConfig, {"flops": flops}, "stage 'p' recipe 'retraining_free_prune'")


def test_targets_matching_nothing_and_impossible_caps_fail_before_work(word_tokenizer, train_data):
    ctx = context(word_tokenizer, train_data)
    for cls, conf in ((StructuredPrune, StructuredPruneConfig), (RetrainingFreePrune, RetrainingFreePruneConfig)):
        cfg = parse_config(conf, {"flops": 0.3, "targets": ["re:.*no_such_layer.*"]}, "t")
        with pytest.raises(ConfigError, match="'targets' entry 're:.\\*no_such_layer.\\*' matches no"):
            cls(cfg, ctx).apply(tiny("bert"))
        cfg = parse_config(conf, {"flops": 0.3, "max_heads_removed": 5}, "t")
        with pytest.raises(ConfigError, match="'max_heads_removed' is 5 but layer 0 has only 4 heads"):
            cls(cfg, ctx).apply(tiny("bert"))
    cfg = parse_config(StructuredPruneConfig, {"heads": 0.9, "max_heads_removed": 2}, "t")
    with pytest.raises(ConfigError, match="'max_heads_removed'"):
        StructuredPrune(cfg, ctx).apply(tiny("bert"))
    cfg = parse_config(StructuredPruneConfig, {"heads": 0.5, "targets": ["re:.*intermediate.*"]}, "t")
    with pytest.raises(ConfigError, match="'targets' selects no attention head"):
        StructuredPrune(cfg, ctx).apply(tiny("bert"))
    cfg = parse_config(RetrainingFreePruneConfig, {"flops": 0.8, "targets": ["bert.encoder.layer.0"]}, "t")
    with pytest.raises(ConfigError, match="'flops' cannot be met"):
        RetrainingFreePrune(cfg, ctx).apply(tiny("bert"))
    cfg = parse_config(RetrainingFreePruneConfig, {"flops": 0.3}, "t")
    with pytest.raises(ConfigError, match="needs labelled training examples"):
        RetrainingFreePrune(cfg, context(word_tokenizer, None)).apply(tiny("bert"))


# ------------------------------------------------------------------------------ in a pipeline
def test_pipeline_stages_prune_shrink_save_and_reload(tmp_path, monkeypatch):
    """A tiny local model and CSV task: fine-tune, then Kwon (one-shot, no training), gradual
    structured pruning while fine-tuning, one-shot magnitude; a second run reuses every stage
    from disk (load_edited_model) with the same metrics."""
    from workbench.pipeline import PipelineRun, PipelineSpec

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    csv_path, folder = write_tiny_task(tmp_path, repeats=30)
    train = {"epochs": 1, "batch_size": 16, "lr": 1e-3}
    spec = PipelineSpec.from_dict(tiny_spec(csv_path, folder, [
        {"name": "teacher", "recipes": ["finetune"], "train": train},
        {"name": "kwon", "from": "teacher",
         "recipes": [{"retraining_free_prune": {"flops": 0.4, "num_examples": 64, "batch_size": 16}}]},
        {"name": "gradual", "from": "teacher", "train": train,
         "recipes": [{"structured_prune": {"flops": 0.4, "criterion": "fisher", "schedule": "gradual",
                                           "frequency": 1, "num_examples": 32}}, "finetune"]},
        {"name": "magnitude", "from": "teacher",
         "recipes": [{"structured_prune": {"heads": 0.5, "neurons": 0.5, "max_heads_removed": 3}}]},
    ]))
    first = {m["stage"]: m for m in PipelineRun(spec, results_root=tmp_path / "r").run()}
    assert first["kwon"]["params"] < first["teacher"]["params"]
    assert first["gradual"]["params"] < first["teacher"]["params"]
    again = PipelineRun(spec, results_root=tmp_path / "r")
    second = {m["stage"]: m for m in again.run()}
    for name in ("kwon", "gradual", "magnitude"):
        assert "reused_from" in second[name]
        assert second[name]["accuracy"] == first[name]["accuracy"] and second[name]["params"] == first[name]["params"]
        info = again.models[name].config.workbench_pruning
        assert info["stage"] == name and info["pruning_seconds"] >= 0
        assert name == "magnitude" or info["flops_removed"] >= 0.4 - 1e-9
