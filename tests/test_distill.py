"""Distillation: the KD loss against a hand computation, and the student builders."""
from __future__ import annotations

import math

import pytest
import torch

from workbench.config import ConfigError
from workbench.models import build_student, encoder_layers
from workbench.recipes.distill.logits import kd_loss


def test_kd_loss_matches_hand_computation():
    s = torch.tensor([[2.0, 0.0], [0.5, 1.5]])
    t = torch.tensor([[1.0, 1.0], [0.0, 3.0]])
    y = torch.tensor([0, 1])
    T, alpha = 2.0, 0.7

    def softmax(v):
        e = [math.exp(x) for x in v]
        return [x / sum(e) for x in e]

    kl = 0.0
    ce = 0.0
    for i in range(2):
        p_t = softmax([x / T for x in t[i].tolist()])
        p_s = softmax([x / T for x in s[i].tolist()])
        kl += sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s))
        ce += -math.log(softmax(s[i].tolist())[y[i]])
    expected = alpha * T * T * kl / 2 + (1 - alpha) * ce / 2
    assert float(kd_loss(s, t, y, T, alpha)) == pytest.approx(expected, rel=1e-6)
    # alpha = 0 is plain cross-entropy; identical logits give zero soft loss
    assert float(kd_loss(s, t, y, T, 0.0)) == pytest.approx(ce / 2, rel=1e-6)
    assert float(kd_loss(t, t, y, T, 1.0)) == pytest.approx(0.0, abs=1e-7)


def test_student_copies_chosen_layers(tiny_bert):
    student = build_student(tiny_bert, layers=[0, 3])
    _, _, layers = encoder_layers(student)
    _, _, teacher_layers = encoder_layers(tiny_bert)
    assert len(layers) == 2 and student.config.num_hidden_layers == 2
    for mine, theirs in zip(layers, [teacher_layers[0], teacher_layers[3]]):
        for (n1, p1), (n2, p2) in zip(mine.named_parameters(), theirs.named_parameters()):
            assert n1 == n2 and torch.equal(p1, p2)
            assert p1.data_ptr() != p2.data_ptr()  # a copy, not shared storage
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, tiny_bert.bert.embeddings.word_embeddings.weight)
    assert len(encoder_layers(tiny_bert)[2]) == 4  # teacher untouched
    out = student(input_ids=torch.randint(0, 120, (2, 8))).logits
    assert out.shape == (2, 2)


def test_student_defaults_and_narrow_random(tiny_bert):
    assert len(encoder_layers(build_student(tiny_bert))[2]) == 2  # every other layer
    narrow = build_student(tiny_bert, init="random", num_layers=1, hidden_size=16, num_attention_heads=2,
                           intermediate_size=32)
    assert narrow.config.hidden_size == 16 and len(encoder_layers(narrow)[2]) == 1
    assert narrow(input_ids=torch.randint(0, 120, (2, 8))).logits.shape == (2, 2)
    with pytest.raises(ConfigError, match="out of range: the teacher has 4 layers"):
        build_student(tiny_bert, layers=[0, 7])
    with pytest.raises(ConfigError, match="not divisible"):
        build_student(tiny_bert, init="random", hidden_size=30, num_attention_heads=4)


def test_distilbert_student():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    cfg = DistilBertConfig(vocab_size=100, dim=32, n_layers=4, n_heads=4, hidden_dim=64, max_position_embeddings=32)
    teacher = DistilBertForSequenceClassification(cfg).eval()
    student = build_student(teacher, layers=[1, 2])
    assert len(student.distilbert.transformer.layer) == 2
    assert student(input_ids=torch.randint(0, 100, (1, 8))).logits.shape == (1, 2)


def test_teacher_logits_are_memoised_per_example(tiny_bert):
    from workbench.recipes.base import RecipeContext
    from workbench.recipes.distill.logits import LogitDistill, LogitDistillConfig

    calls = []
    tiny_bert.register_forward_hook(lambda m, i, o: calls.append(1))
    ctx = RecipeContext(task=None, tokenizer=None, run_dir=None, stage="s",
                        load_stage_model=lambda name: tiny_bert, previous_stages=["teacher"])
    recipe = LogitDistill(LogitDistillConfig(), ctx)
    recipe.on_train_begin(None)
    ids = torch.randint(1, 120, (4, 10))
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    first = recipe._teacher_logits({"input_ids": ids, "attention_mask": mask})
    with torch.no_grad():
        direct = tiny_bert(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(first, direct, atol=1e-6)
    n = len(calls)
    # the same examples in another order and padding: no new teacher forward, same logits
    perm = torch.tensor([2, 0, 3, 1])
    again = recipe._teacher_logits({"input_ids": ids[perm], "attention_mask": mask[perm]})
    assert len(calls) == n and torch.equal(again, first[perm])


def test_distilling_leaves_the_shared_teacher_trainable(tiny_bert):
    """A later stage may train `from: teacher` after another stage distilled from it."""
    from workbench.recipes.base import RecipeContext
    from workbench.recipes.distill.logits import LogitDistill, LogitDistillConfig

    ctx = RecipeContext(task=None, tokenizer=None, run_dir=None, stage="s",
                        load_stage_model=lambda name: tiny_bert, previous_stages=["teacher"])
    LogitDistill(LogitDistillConfig(), ctx).on_train_begin(None)
    assert all(p.requires_grad for p in tiny_bert.parameters())
