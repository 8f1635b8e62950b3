"""Dynamic inference, training side (issue #10): the torch reference `dynamic_forward` (static
equivalence, tokens per layer, early exits), the saved spec, `length_adaptive`, `early_exit` and
`length_search` (budget respected, impossible budget refused)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from workbench.config import ConfigError
from workbench.models.arch import architecture
from workbench.models.dynamic import (
    DynamicSpec, dynamic_forward, kept_counts, model_spec, select_tokens, set_dynamic,
)
from workbench.models.edits import load_edited_model, record_edit
from workbench.recipes.base import RecipeContext, StageCheck, build_recipe, recipe_class
from workbench.teachers import TeacherService
from workbench.train import TrainConfig, Trainer


def tiny(family: str = "bert", layers: int = 4, seed: int = 0) -> torch.nn.Module:
    from transformers import (
        BertConfig, BertForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification,
        RobertaConfig, RobertaForSequenceClassification,
    )

    torch.manual_seed(seed)
    if family == "distilbert":
        return DistilBertForSequenceClassification(DistilBertConfig(
            vocab_size=120, dim=32, n_layers=layers, n_heads=4, hidden_dim=64, max_position_embeddings=64)).eval()
    if family in ("electra", "electra-small"):  # -small: narrower embeddings, projected to the layers' width
        from transformers import ElectraConfig, ElectraForSequenceClassification

        return ElectraForSequenceClassification(ElectraConfig(
            vocab_size=120, embedding_size=32 if family == "electra" else 16, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=66, num_labels=2)).eval()
    cls, cfg = (RobertaForSequenceClassification, RobertaConfig) if family == "roberta" else \
        (BertForSequenceClassification, BertConfig)
    return cls(cfg(vocab_size=120, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                   intermediate_size=64, max_position_embeddings=66, num_labels=2)).eval()


def batch(b: int = 4, length: int = 14, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 120, (b, length), generator=g)
    mask = torch.ones_like(ids)
    for i, n in enumerate([length, 9, 4, 11][:b]):
        mask[i, n:] = 0
    ids[mask == 0] = 0
    return ids, mask


# ------------------------------------------------------------------ the torch reference
@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "electra", "electra-small"])
def test_full_length_without_exits_equals_the_static_model(family):
    model = tiny(family)
    ids, mask = batch()
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
        record_edit(model, "exit_heads", layers=[0, 1])  # heads present, no threshold: never used
        for spec in (None, DynamicSpec(), DynamicSpec(length_ratios=[1.0] * 4, exit_layers=[0, 1])):
            out, trace = dynamic_forward(model, ids, mask, spec, return_trace=True)
            assert torch.allclose(out, ref, atol=1e-5), (spec, (out - ref).abs().max())
            assert trace.exit_layer.tolist() == [3] * 4
            assert trace.tokens.tolist() == [[n] * 4 for n in mask.sum(1).tolist()]


def _rows_per_layer(model, fn):
    """Calls fn() and returns, per layer, the [rows, tokens] shapes its query projection saw."""
    arch = architecture(model)
    seen: dict[int, list[tuple[int, int]]] = {i: [] for i in range(arch.num_layers)}
    hooks = [arch.module(i, "query").register_forward_hook(
        lambda m, inp, out, i=i: seen[i].append(tuple(inp[0].shape[:2]))) for i in range(arch.num_layers)]
    try:
        fn()
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_a_length_configuration_processes_exactly_the_configured_tokens():
    model = tiny()
    ratios = [0.8, 0.5, 0.5, 0.25]
    ids, mask = batch()
    for i in range(ids.shape[0]):  # one example at a time: the layers' inputs carry no padding
        n = int(mask[i].sum())
        one = ids[i:i + 1, :n]
        seen = _rows_per_layer(model, lambda: dynamic_forward(model, one, spec=DynamicSpec(length_ratios=ratios)))
        want = kept_counts(ratios, n)
        assert [seen[layer][0][1] for layer in range(4)] == want
        # k_i = min(current, max(1, ceil(r_i n))): e.g. 14 tokens -> 14, ceil(.8*14)=12, 7, 7
        assert want[0] == n and want[1] == min(n, max(1, -(-8 * n // 10)))
    # the batched trace says the same for every example, padding notwithstanding
    _, trace = dynamic_forward(model, ids, mask, DynamicSpec(length_ratios=ratios), return_trace=True)
    assert trace.tokens.tolist() == [kept_counts(ratios, int(n)) for n in mask.sum(1)]


def test_batched_dropping_equals_one_example_at_a_time():
    model = tiny()
    ids, mask = batch()
    spec = DynamicSpec(length_ratios=[0.7, 0.5, 0.3, 0.3])
    with torch.no_grad():
        together = dynamic_forward(model, ids, mask, spec)
        alone = torch.cat([dynamic_forward(model, ids[i:i + 1, :int(mask[i].sum())], spec=spec) for i in range(4)])
        static = model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(together, alone, atol=1e-5)
    assert (together - static).abs().max() > 1e-5  # dropping tokens did change the result


def test_selection_keeps_cls_and_the_most_significant_tokens_in_order_ties_to_lower_positions():
    probs = torch.zeros(1, 1, 6, 6)
    probs[0, 0, :, 4] = 0.5   # token 4 most attended
    probs[0, 0, :, 2] = 0.25  # tokens 2 and 3 tie: 2 (lower position) wins
    probs[0, 0, :, 3] = 0.25
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    probs[0, 0, 5, :] = 9.0   # a padding query row: ignored
    idx, new_mask = select_tokens(probs, mask, torch.tensor([3]))
    assert idx.tolist() == [[0, 2, 4]] and new_mask.tolist() == [[True, True, True]]


# ------------------------------------------------------------------ early exits
def _exit_model(pooling: str = "cls"):
    model = tiny()
    record_edit(model, "exit_heads", layers=[0, 1, 2], pooling=pooling)
    return model


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_an_example_that_exits_at_layer_k_runs_no_layer_above_k(pooling):
    model = _exit_model(pooling)
    ids, mask = batch()
    spec = DynamicSpec(exit_layers=[0, 1, 2], exit_at=1)
    seen = _rows_per_layer(model, lambda: dynamic_forward(model, ids, mask, spec))
    assert seen[2] == [] and seen[3] == [] and seen[1] == [(4, 14)]
    with torch.no_grad():
        out, trace = dynamic_forward(model, ids, mask, spec, return_trace=True)
        full = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        assert torch.allclose(out, model.exit_heads["1"](full.hidden_states[2], mask), atol=1e-5)
    assert trace.exit_layer.tolist() == [1] * 4 and trace.tokens[:, 2:].sum() == 0

    # per example, by threshold: the examples whose exit-0 entropy passes leave after layer 0
    with torch.no_grad():
        p = torch.softmax(model.exit_heads["0"](full.hidden_states[1], mask), -1)
    ent = -(p * p.log()).sum(-1) / np.log(2)
    th = float(ent.sort().values[1:3].mean())  # two examples pass, two do not
    spec = DynamicSpec(exit_layers=[0, 1, 2], exit_threshold=th)
    seen = _rows_per_layer(model, lambda: dynamic_forward(model, ids, mask, spec))
    _, trace = dynamic_forward(model, ids, mask, spec, return_trace=True)
    left = (ent <= th)
    assert trace.exit_layer[left].tolist() == [0, 0] and (trace.exit_layer[~left] > 0).all()
    assert seen[1][0][0] == 2  # layer 1 ran on the two examples that stayed, not on all four
    assert (trace.tokens[left, 1:] == 0).all()


def test_spec_and_exit_heads_are_saved_and_drive_the_model_call(tmp_path):
    model = _exit_model()
    spec = DynamicSpec(length_ratios=[0.8, 0.5, 0.5, 0.5], exit_layers=[0, 1, 2], exit_threshold=0.3)
    record_edit(model, "dynamic_spec", spec=spec.to_dict())
    ids, mask = batch()
    with torch.no_grad():
        want = dynamic_forward(model, ids, mask)
        assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, want)  # the call is dynamic
        model.save_pretrained(tmp_path / "m")
        back = load_edited_model(tmp_path / "m")
        assert model_spec(back) == spec and sorted(back.exit_heads) == ["0", "1", "2"]
        assert torch.allclose(back(input_ids=ids, attention_mask=mask).logits, want, atol=1e-6)
        # hidden states only exist for the static network: asking for them runs it
        static = back(input_ids=ids, attention_mask=mask, output_hidden_states=True).logits
        set_dynamic(back, None)
        assert torch.equal(static, back(input_ids=ids, attention_mask=mask).logits)


def test_spec_errors_name_the_problem():
    with pytest.raises(ConfigError, match="non-increasing"):
        DynamicSpec(length_ratios=[0.5, 0.8, 0.8, 0.8]).check(4)
    with pytest.raises(ConfigError, match="one ratio per layer"):
        DynamicSpec(length_ratios=[0.5]).check(4)
    with pytest.raises(ConfigError, match="no exit head"):
        dynamic_forward(tiny(), *batch(), DynamicSpec(exit_layers=[1], exit_at=1))


# ------------------------------------------------------------------ training recipes
def collate(rows):
    n = max(len(r["input_ids"]) for r in rows)
    ids = torch.tensor([r["input_ids"] + [0] * (n - len(r["input_ids"])) for r in rows])
    mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (n - len(r["input_ids"])) for r in rows])
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([r["labels"] for r in rows])}


def tiny_data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = int(torch.randint(6, 14, (1,), generator=g))
        ids = torch.randint(10, 120, (length,), generator=g).tolist()
        ids[1] = 5 + i % 2  # the label is in one token: learnable
        rows.append({"input_ids": ids, "labels": i % 2})
    return rows


def ctx(tmp_path, teacher=None):
    service = TeacherService(None, 2, tmp_path, lambda name: (teacher, "tkey") if name == "teacher" else None)
    return RecipeContext(task=None, tokenizer=None, run_dir=tmp_path, stage="s", teachers=service,
                         previous_stages=["teacher"])


def test_length_adaptive_and_early_exit_train_subnetworks_and_exits(tmp_path):
    model, teacher = tiny(layers=3), tiny(layers=2, seed=3)
    c = ctx(tmp_path, teacher)
    recipes = [build_recipe("length_adaptive", {"num_sandwich": 2}, c, "x"),
               build_recipe("early_exit", {"teacher": "teacher"}, c, "x"),
               build_recipe("finetune", {}, c, "x")]
    for r in recipes:
        model = r.apply(model)
    assert sorted(model.exit_heads) == ["0", "1"]
    before = model.exit_heads["0"].out.weight.detach().clone()
    cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-3, warmup=0.0, checkpoint_every=0, group_by_length=False)
    trainer = Trainer(model, tiny_data(), collate, cfg, recipes, seed=0, checkpoint_dir=None)
    trainer.train()
    log = trainer.step_log
    assert {"length_kd", "exit_ce", "exit_self_kd", "exit_teacher_kd", "ce"} <= set(log[0])
    assert all(np.isfinite(row["length_kd"]) and row["length_kd"] >= 0 for row in log)
    assert not torch.equal(model.exit_heads["0"].out.weight, before)  # the exits learned
    assert model_spec(model).exit_layers == [0, 1]  # saved with the model
    # sandwich: the smallest configuration and random non-increasing ones, the same for a step
    la = recipes[0]
    configs = la.configs(7)
    assert configs == la.configs(7) and len(configs) == 3
    assert configs[0] == pytest.approx([0.8, 0.64, 0.512])
    assert all(all(a >= b >= 0.05 for a, b in zip(cf, cf[1:])) for cf in configs)


def test_mean_pooled_exits_read_the_kept_tokens_and_are_the_recipe_default(tmp_path):
    """The default exit head reads the masked mean of its layer's tokens: padding (and, in
    `dynamic_forward`, dropped tokens) never count; a "cls" head reads position 0 only; the
    pooling is saved with the edit."""
    c = ctx(tmp_path)
    model = build_recipe("early_exit", {}, c, "x").apply(tiny(layers=3))
    head = model.exit_heads["0"].eval()
    assert head.pooling == "mean"
    h = torch.randn(2, 5, head.dense.in_features)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    changed = h.clone()
    changed[0, 3:] += 100.0  # padding of example 0
    with torch.no_grad():
        assert torch.allclose(head(h, mask), head(changed, mask), atol=1e-6)
        assert torch.allclose(head(h, mask)[0], head(h[:1, :3])[0], atol=1e-6)  # == mean of the 3 real
        head.pooling = "cls"
        changed = h.clone()
        changed[:, 1:] += 100.0
        assert torch.allclose(head(h, mask), head(changed, mask), atol=1e-6)
    with pytest.raises(ConfigError, match="pooling"):
        build_recipe("early_exit", {"pooling": "max"}, c, "x")


def test_exit_heads_learn_at_their_own_rate(tmp_path):
    """At a fine-tuning lr the new exit heads barely move; head_lr_scale gives them their own
    optimizer groups at lr x scale (the backbone keeps the stage's lr)."""
    c = ctx(tmp_path)
    cfg = TrainConfig(epochs=1, batch_size=4, lr=5e-5, warmup=0.0, checkpoint_every=0, group_by_length=False)
    moved = {}
    for scale in (1.0, 20.0):
        model = tiny(layers=3)
        recipes = [build_recipe("early_exit", {"head_lr_scale": scale}, c, "x"), build_recipe("finetune", {}, c, "x")]
        for r in recipes:
            model = r.apply(model)
        before = model.exit_heads["1"].out.weight.detach().clone()
        trainer = Trainer(model, tiny_data(), collate, cfg, recipes, seed=0, checkpoint_dir=None)
        trainer.train()
        heads = {id(p) for p in model.exit_heads.parameters()}
        for g in trainer.optimizer.param_groups if scale != 1.0 else []:
            ids = {id(p) for p in g["params"]}
            assert ids <= heads or not ids & heads  # a group holds heads only, or no head
            assert g["initial_lr"] == pytest.approx(5e-5 * (scale if ids & heads else 1.0))
        moved[scale] = float((model.exit_heads["1"].out.weight.detach() - before).abs().max())
    assert moved[20.0] > 5 * moved[1.0]
    with pytest.raises(ConfigError, match="head_lr_scale"):
        build_recipe("early_exit", {"head_lr_scale": 0}, c, "x")


def test_dynamic_training_recipes_need_a_full_model_loss_and_valid_exits(tmp_path):
    check = StageCheck(stage="s", earlier=[], recipes=["length_adaptive"], trains=True, where="stage 's'")
    with pytest.raises(ConfigError, match="finetune or distill_logits"):
        recipe_class("length_adaptive", "x").check_stage(None, check)
    with pytest.raises(ConfigError, match="exit_layers"):
        build_recipe("early_exit", {"exit_layers": [3]}, ctx(tmp_path), "x").apply(tiny(layers=4))
    with pytest.raises(ConfigError, match="length_drop_prob"):
        build_recipe("length_adaptive", {"length_drop_prob": 1.5}, ctx(tmp_path), "x")
    with pytest.raises(ConfigError, match=r"'num_sandwich' must be in 0\.\.16 .*got 200"):
        build_recipe("length_adaptive", {"num_sandwich": 200}, ctx(tmp_path), "x")
    with pytest.raises(ConfigError, match="'teacher_weight' is set .* but no 'teacher' is given"):
        build_recipe("early_exit", {"teacher_weight": 2.0}, ctx(tmp_path), "x")  # (it was ignored)
    for key, value in (("batch_size", 0), ("seed", -1)):  # range(0, n, 0) / NumPy's seeding, late
        with pytest.raises(ConfigError, match=f"'{key}' must be >= "):
            build_recipe("length_search", {key: value}, ctx(tmp_path), "x")
    # checked against the depth the stage will have too, before any stage trains (a 4-layer
    # stage model has exits after layers 0..2)
    from workbench.recipes.base import Shapes

    early_exit = recipe_class("early_exit", "x")
    early_exit.check_shapes(early_exit.Config(exit_layers=[0, 2]), Shapes(entering=6, stage=4), "x")
    with pytest.raises(ConfigError, match=r"'exit_layers' \[3\] out of range: the model has 4 layers"):
        early_exit.check_shapes(early_exit.Config(exit_layers=[0, 3]), Shapes(entering=6, stage=4), "x")


# ------------------------------------------------------------------ length search
def _search(tmp_path, budget, model=None, **cfg):
    from workbench.dynamic.latency import token_cost
    from workbench.dynamic.search import Validation

    model = model or tiny(layers=3)
    r = build_recipe("length_search", {"budget": budget, "trials": 12, "latency": "tokens", **cfg},
                     ctx(tmp_path), "x")
    r.cost_fn = token_cost
    r.validation = lambda: Validation(tiny_data(24, seed=4), collate, batch_size=8)
    return r, r.apply(model)


def test_length_search_respects_its_budget_and_saves_the_choice(tmp_path):
    model = tiny(layers=3)
    record_edit(model, "exit_heads", layers=[0, 1])
    record_edit(model, "dynamic_spec", spec=DynamicSpec(exit_layers=[0, 1]).to_dict())
    _, model = _search(tmp_path, 0.7, model)
    rows = list(csv.DictReader(open(tmp_path / "dynamic" / "s" / "length_pareto.csv")))
    lengths = [r for r in rows if r["kind"] == "length"]
    chosen = [r for r in lengths if r["chosen"] == "True"]
    assert len(lengths) >= 5 and len(chosen) == 1
    assert float(chosen[0]["cost_fraction"]) <= 0.7
    best_within = max(float(r["val_accuracy"]) for r in lengths if float(r["cost_fraction"]) <= 0.7)
    assert float(chosen[0]["val_accuracy"]) == best_within
    assert any(r["pareto"] == "True" for r in lengths)
    assert [r["kind"] for r in rows].count("exit") == 6  # the threshold sweep: the model has exits
    spec = model_spec(model)
    assert spec.length_ratios == json.loads(chosen[0]["length_ratios"]) and spec.exit_layers == [0, 1]
    # the saved spec's cost, recomputed: tokens processed by the chosen configuration
    ns = [len(r["input_ids"]) for r in tiny_data(24, seed=4)]
    cost = np.mean([sum(kept_counts(spec.length_ratios, n)) for n in ns])
    assert cost <= 0.7 * np.mean([3 * n for n in ns]) + 1e-9
    assert json.loads((tmp_path / "dynamic" / "s" / "dynamic.json").read_text())["length_ratios"] == spec.length_ratios


def test_an_impossible_budget_fails_before_the_search(tmp_path):
    # 3 layers: layer 0 always sees every token, so no configuration costs under 1/3 of full
    with pytest.raises(ConfigError, match="'budget' 0.3 is below what the smallest configuration costs"):
        _search(tmp_path, 0.3)
    assert not (tmp_path / "dynamic").exists()


def test_the_search_picks_the_most_accurate_configuration_within_the_budget():
    from workbench.dynamic.search import choose, search

    # more tokens kept = more accurate and more costly: the budget binds
    def evaluate(ratios):
        return sum(ratios[:-1]) / 2, 1.0 + sum(ratios[:-1])

    cands = search(evaluate, num_layers=3, trials=30, seed=0, min_step=0.25, step=0.05)
    full = max(c.cost for c in cands)
    assert full == 3.0 and len(cands) >= 10
    best = choose(cands, 0.6 * full)
    assert best.cost <= 0.6 * full
    assert best.accuracy == max(c.accuracy for c in cands if c.cost <= 0.6 * full)
    assert max(c.accuracy for c in cands) > best.accuracy  # the unconstrained best was over budget
    with pytest.raises(ConfigError, match="no configuration fits the budget"):
        choose(cands, 0.1)
