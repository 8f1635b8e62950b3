"""TinyBERT layer distillation (`distill_layers`): layer maps, projections, loss terms, training."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import workbench.recipes.distill.layers  # noqa: F401  (registers distill_layers)
from workbench.config import ConfigError, parse_config
from workbench.forward import forward_with
from workbench.models import build_student
from workbench.recipes.base import RecipeContext
from workbench.recipes.distill.layer_map import layer_pairs
from workbench.recipes.distill.layers import LayerDistill, LayerDistillConfig
from workbench.teachers import Teacher
from workbench.train import Trainer, TrainConfig

WHERE = "stage 's' recipe 'distill_layers'"


class FakeTeachers:
    """The teacher service's `get`, serving one in-memory model."""

    def __init__(self, model, same_tokenizer: bool = True) -> None:
        self.teacher = Teacher("teacher", "k", model, None, same_tokenizer, None)

    def get(self, name, needs=None, where="teacher"):
        assert name == "teacher"
        self.teacher.require(set(needs or ()), where)
        return self.teacher


def _recipe(teacher, **settings) -> LayerDistill:
    cfg = parse_config(LayerDistillConfig, settings, WHERE)
    ctx = RecipeContext(task=None, tokenizer=None, run_dir=Path("."), stage="s", teachers=FakeTeachers(teacher))
    return LayerDistill(cfg, ctx)


def _examples(n: int = 16, seed: int = 1) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = 5 + i % 6
        out.append({"input_ids": torch.randint(1, 120, (length,), generator=g),
                    "attention_mask": torch.ones(length, dtype=torch.long), "labels": torch.tensor(i % 2)})
    return out


def _collate(examples: list[dict]) -> dict:
    length = max(len(e["input_ids"]) for e in examples)
    ids = torch.zeros(len(examples), length, dtype=torch.long)
    mask = torch.zeros(len(examples), length, dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, :len(e["input_ids"])] = e["input_ids"]
        mask[i, :len(e["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.stack([e["labels"] for e in examples])}


def _train(student, recipe, steps: int, lr: float = 3e-3) -> Trainer:
    cfg = TrainConfig(epochs=100, batch_size=4, lr=lr, warmup=0.0, checkpoint_every=0, max_steps=steps,
                      group_by_length=False)
    trainer = Trainer(student, _examples(), _collate, cfg, [recipe], seed=0, checkpoint_dir=None)
    trainer.train()
    return trainer


@torch.no_grad()
def _mapped_hidden_mse(student, teacher, pairs, project=None) -> float:
    batch = _collate(_examples())
    s = forward_with(student, batch, {"hidden_states"})
    t = forward_with(teacher, batch, {"hidden_states"})
    mask = batch["attention_mask"].bool()
    total = 0.0
    for m, g in pairs.items():
        h = s.hidden_states[m] if project is None else project(s.hidden_states[m])
        total += float(((h - t.hidden_states[g]) ** 2).mean(-1)[mask].mean())
    return total


def test_layer_maps_give_the_documented_pairs():
    assert layer_pairs("uniform", 2, 4, WHERE) == {0: 0, 1: 2, 2: 4}
    assert layer_pairs("uniform", 3, 6, WHERE) == {0: 0, 1: 2, 2: 4, 3: 6}
    assert layer_pairs("uniform", 4, 6, WHERE) == {0: 0, 1: 2, 2: 3, 3: 5, 4: 6}  # 1.5 and 4.5 round up
    assert layer_pairs("last", 2, 4, WHERE) == {0: 0, 1: 3, 2: 4}
    assert layer_pairs({1: 1, "2": 3}, 2, 4, WHERE) == {0: 0, 1: 1, 2: 3}
    assert layer_pairs({0: 1, 2: 4}, 2, 4, WHERE) == {0: 1, 2: 4}
    with pytest.raises(ConfigError, match="'last' needs a teacher at least as deep"):
        layer_pairs("last", 5, 4, WHERE)
    with pytest.raises(ConfigError, match=r"'layer_map\[2\]'.*teacher layer 7 is out of range"):
        layer_pairs({2: 7}, 2, 4, WHERE)


def test_config_validation():
    with pytest.raises(ConfigError, match="enable at least one part"):
        parse_config(LayerDistillConfig, {"embeddings": False, "hidden": False, "attention": False}, WHERE)
    with pytest.raises(ConfigError, match="'layer_map' must be one of"):
        parse_config(LayerDistillConfig, {"layer_map": "uniformly"}, WHERE)
    with pytest.raises(ConfigError, match="unknown distillation loss 'msee'"):
        parse_config(LayerDistillConfig, {"hidden_loss": "msee"}, WHERE)
    cfg = parse_config(LayerDistillConfig, {"layer_map": {"1": 2}}, WHERE)
    assert cfg.layer_map == {1: 2}


def test_wrong_explicit_map_names_the_key(tiny_bert):
    student = build_student(tiny_bert, layers=[0, 2])
    recipe = _recipe(tiny_bert, layer_map={1: 2, 9: 4})
    with pytest.raises(ConfigError, match=r"recipe 'distill_layers': 'layer_map\[9\]' student layer 9 is out of "
                                          r"range: the student has 2 layers"):
        recipe.setup(student)


def test_needs_and_teacher_with_another_tokenizer(tiny_bert):
    student = build_student(tiny_bert, layers=[0, 2])
    assert _recipe(tiny_bert).needs() == {"hidden_states", "attentions"}
    assert _recipe(tiny_bert, embeddings=False, hidden=False, attention=False, prediction=True).needs() == set()
    assert _recipe(tiny_bert, attention=False).needs() == {"hidden_states"}
    recipe = _recipe(tiny_bert)
    recipe.ctx.teachers = FakeTeachers(tiny_bert, same_tokenizer=False)
    with pytest.raises(ConfigError, match="teacher 'teacher' has a different tokenizer"):
        recipe.setup(student)


def test_training_reduces_the_mapped_hidden_mse(tiny_bert):
    student = build_student(tiny_bert, init="random", num_layers=2, hidden_size=32, num_attention_heads=4,
                            intermediate_size=64)
    pairs = {1: 2, 2: 4}
    before = _mapped_hidden_mse(student, tiny_bert, pairs)
    recipe = _recipe(tiny_bert, layer_map="uniform")
    trainer = _train(student, recipe, steps=25)
    assert recipe.owned is None  # same width: no projection
    assert set(trainer.step_log[0]) >= {"emb", "hidden_l1", "hidden_l2", "attn_l1", "attn_l2"}
    assert "pred" not in trainer.step_log[0]
    after = _mapped_hidden_mse(student, tiny_bert, pairs)
    assert after < 0.5 * before, (before, after)
    # the student's attention implementation is restored after the stage
    assert student.config._attn_implementation == tiny_bert.config._attn_implementation


def test_narrow_student_trains_a_projection(tiny_bert):
    student = build_student(tiny_bert, init="random", num_layers=2, hidden_size=16, num_attention_heads=2,
                            intermediate_size=32)
    recipe = _recipe(tiny_bert, layer_map="last")
    recipe.setup(student)
    assert isinstance(recipe.owned.W_h, torch.nn.Linear) and recipe.owned.W_h.weight.shape == (32, 16)
    assert recipe.owned.W_e.weight.shape == (32, 16)
    # one step by hand: the projection receives gradients, and it is not part of the student
    recipe.on_train_begin(_state(student))
    batch = _collate(_examples(4))
    state = _state(student, batch, forward_with(student, batch, recipe.needs()))
    terms = recipe.loss_terms(state)
    assert set(terms) == {"emb", "hidden_l1", "hidden_l2", "attn_l1", "attn_l2"}  # 2 vs 4 heads: averaged
    sum(w * v for w, v in terms.values()).backward()
    assert recipe.owned.W_h.weight.grad is not None and recipe.owned.W_h.weight.grad.abs().sum() > 0
    assert recipe.owned.W_e.weight.grad is not None and recipe.owned.W_e.weight.grad.abs().sum() > 0
    recipe.on_train_end(state)
    student_params = {id(p) for p in student.parameters()}
    assert all(id(p) not in student_params for p in recipe.owned.parameters())
    assert not any("W_h" in k or "W_e" in k for k in student.state_dict())
    # the trainer optimises it: the mapped (projected) MSE falls and W_h moves
    student2 = build_student(tiny_bert, init="random", num_layers=2, hidden_size=16, num_attention_heads=2,
                             intermediate_size=32)
    recipe2 = _recipe(tiny_bert, layer_map="last")
    recipe2.setup(student2)
    w0 = recipe2.owned.W_h.weight.detach().clone()
    before = _mapped_hidden_mse(student2, tiny_bert, {1: 3, 2: 4}, recipe2.owned.W_h)
    _train(student2, recipe2, steps=25)
    assert not torch.equal(w0, recipe2.owned.W_h.weight)
    after = _mapped_hidden_mse(student2, tiny_bert, {1: 3, 2: 4}, recipe2.owned.W_h)
    assert after < 0.5 * before, (before, after)


def _state(model, batch=None, outputs=None):
    from workbench.recipes.base import TrainState

    return TrainState(model=model, optimizer=None, step=0, total_steps=1, epoch=0, steps_per_epoch=1,
                      batch=batch, outputs=outputs)


def test_prediction_term_is_the_soft_cross_entropy(tiny_bert):
    student = build_student(tiny_bert, layers=[1, 3])
    T = 2.0
    recipe = _recipe(tiny_bert, embeddings=False, hidden=False, attention=False, prediction=True, temperature=T,
                     prediction_weight=0.7)
    recipe.setup(student)
    assert recipe.owned is None
    batch = _collate(_examples(3))
    state = _state(student, batch, forward_with(student, batch, recipe.needs()))
    terms = recipe.loss_terms(state)
    assert set(terms) == {"pred"} and terms["pred"][0] == 0.7
    with torch.no_grad():
        zs = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.tolist()
        zt = tiny_bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.tolist()

    def softmax(v):
        e = [math.exp(x / T) for x in v]
        return [x / sum(e) for x in e]

    expected = sum(-sum(pt * math.log(ps) for pt, ps in zip(softmax(t), softmax(s))) for s, t in zip(zs, zt)) / 3
    assert float(terms["pred"][1].detach()) == pytest.approx(expected, rel=1e-5)


def test_attention_padding_is_masked(tiny_bert):
    """Changing the padded positions' attention does not change the attention term."""
    student = build_student(tiny_bert, layers=[0, 2])
    recipe = _recipe(tiny_bert, embeddings=False, hidden=False, layer_map={1: 1})
    recipe.setup(student)
    a_s = torch.softmax(torch.randn(2, 4, 5, 5), -1)
    a_t = torch.softmax(torch.randn(2, 4, 5, 5), -1)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    base = recipe._attention_term(a_s, a_t, mask)
    noisy = a_s.clone()
    noisy[1, :, 3:, :] = 0.3  # padded query rows
    noisy[1, :, :, 3:] = 0.7  # padded key columns
    assert float(recipe._attention_term(noisy, a_t, mask)) == pytest.approx(float(base), rel=1e-6)


def test_attention_terms_under_sdpa_attention(tiny_bert):
    """Under Hugging Face's SDPA attention (which returns no attention weights) the attention
    terms still exist: the distributions are rebuilt from the captured queries and keys."""
    tiny_bert.set_attn_implementation("sdpa")
    student = build_student(tiny_bert, layers=[0, 2])
    recipe = _recipe(tiny_bert)
    recipe.setup(student)
    batch = _collate(_examples(4))
    terms = recipe.loss_terms(_state(student, batch, forward_with(student, batch, recipe.needs())))
    assert {"attn_l1", "attn_l2"} <= set(terms) and all(float(terms[k][1].detach()) >= 0 for k in ("attn_l1", "attn_l2"))
