"""Distillation: the KD loss against a hand computation, and the student builders."""
from __future__ import annotations

import math

import pytest
import torch

from workbench.config import ConfigError
from workbench.models import build_student
from workbench.models.arch import architecture
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
    layers = architecture(student).layers
    teacher_layers = architecture(tiny_bert).layers
    assert len(layers) == 2 and student.config.num_hidden_layers == 2
    for mine, theirs in zip(layers, [teacher_layers[0], teacher_layers[3]]):
        for (n1, p1), (n2, p2) in zip(mine.named_parameters(), theirs.named_parameters()):
            assert n1 == n2 and torch.equal(p1, p2)
            assert p1.data_ptr() != p2.data_ptr()  # a copy, not shared storage
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, tiny_bert.bert.embeddings.word_embeddings.weight)
    assert architecture(tiny_bert).num_layers == 4  # teacher untouched
    out = student(input_ids=torch.randint(0, 120, (2, 8))).logits
    assert out.shape == (2, 2)


def test_student_defaults_and_narrow_random(tiny_bert):
    assert architecture(build_student(tiny_bert)).num_layers == 2  # every other layer
    narrow = build_student(tiny_bert, init="random", num_layers=1, hidden_size=16, num_attention_heads=2,
                           intermediate_size=32)
    assert narrow.config.hidden_size == 16 and architecture(narrow).num_layers == 1
    assert narrow(input_ids=torch.randint(0, 120, (2, 8))).logits.shape == (2, 2)
    with pytest.raises(ConfigError, match="out of range: the teacher has 4 layers"):
        build_student(tiny_bert, layers=[0, 7])
    with pytest.raises(ConfigError, match="not divisible"):
        build_student(tiny_bert, init="random", hidden_size=30, num_attention_heads=4)
    with pytest.raises(ConfigError, match="'num_layers' 5 is more than the teacher's 4 layers"):
        build_student(tiny_bert, init="random", num_layers=5)


def test_student_layers_out_of_range_fail_before_the_first_stage_trains(tmp_path, monkeypatch):
    from conftest import tiny_spec, write_tiny_task

    from workbench.pipeline import PipelineRun, PipelineSpec

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    csv_path, folder = write_tiny_task(tmp_path, repeats=5)  # 2 layers
    for student in ({"layers": [0, 9]}, {"init": "random", "num_layers": 3}):
        spec = PipelineSpec.from_dict(tiny_spec(csv_path, folder, [
            {"name": "ft", "recipes": ["finetune"], "train": {"epochs": 1}},
            {"name": "st", "recipes": [{"student": student}, {"distill_logits": {"teacher": "ft"}}],
             "train": {"epochs": 1}}]))
        with pytest.raises(ConfigError, match="stage 'st' recipe 'student': .* the teacher('s| has) 2 layers"):
            PipelineRun(spec, results_root=tmp_path / "r").run()
        assert not (tmp_path / "r").exists()  # nothing ran: stage 'ft' did not train first


def test_distilbert_student():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    cfg = DistilBertConfig(vocab_size=100, dim=32, n_layers=4, n_heads=4, hidden_dim=64, max_position_embeddings=32)
    teacher = DistilBertForSequenceClassification(cfg).eval()
    student = build_student(teacher, layers=[1, 2])
    assert len(student.distilbert.transformer.layer) == 2
    assert student(input_ids=torch.randint(0, 100, (1, 8))).logits.shape == (1, 2)


def _service(tmp_path, model, key="k1"):
    from workbench.teachers import TeacherService

    holder = {"teacher": (model, key)}
    return TeacherService(None, 2, tmp_path, lambda n: holder.get(n)), holder


def test_teacher_logits_are_cached_per_example_outside_the_model(tiny_bert, tmp_path):
    calls = []
    tiny_bert.register_forward_hook(lambda m, i, o: calls.append(1))
    service, _ = _service(tmp_path, tiny_bert)
    teacher = service.get("teacher", set())
    ids = torch.randint(1, 120, (4, 10))
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    texts = ["a", "b", "c", "d"]
    first = teacher.outputs({"input_ids": ids, "attention_mask": mask, "text": texts}).logits
    with torch.no_grad():
        direct = tiny_bert(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(first, direct, atol=1e-6)
    n = len(calls)
    # the same examples in another order and padding: no new teacher forward, same logits
    perm = [2, 0, 3, 1]
    again = teacher.outputs({"input_ids": ids[perm], "attention_mask": mask[perm],
                             "text": [texts[i] for i in perm]}).logits
    assert len(calls) == n and torch.equal(again, first[perm])
    assert not any("cache" in k for k in vars(tiny_bert))  # nothing stored on the model object
    service.save()  # persisted for a resumed run, and read back by a new service
    fresh, _ = _service(tmp_path, tiny_bert)
    assert torch.equal(fresh.get("teacher", set()).outputs({"input_ids": ids, "attention_mask": mask,
                                                            "text": texts}).logits, first)
    assert len(calls) == n


def test_a_retrained_teacher_is_a_new_teacher(tiny_bert, tmp_path):
    """A stage trained further (a new stage key) never receives the old teacher's cached outputs."""
    import copy

    service, holder = _service(tmp_path, tiny_bert)
    batch = {"input_ids": torch.randint(1, 120, (2, 6)), "text": ["x", "y"]}
    old = service.get("teacher", set()).outputs(batch).logits
    changed = copy.deepcopy(tiny_bert)
    with torch.no_grad():
        changed.classifier.bias.add_(5.0)
    holder["teacher"] = (changed, "k2")
    new = service.get("teacher", set()).outputs({**batch}).logits
    assert not torch.allclose(new, old)
    assert torch.allclose(new, old + 5.0, atol=1e-5)


def test_distilling_leaves_the_shared_teacher_trainable(tiny_bert, tmp_path):
    """A later stage may train `from: teacher` after another stage distilled from it."""
    service, _ = _service(tmp_path, tiny_bert)
    service.get("teacher", set()).outputs({"input_ids": torch.randint(1, 120, (2, 6)), "text": ["p", "q"]})
    assert all(p.requires_grad for p in tiny_bert.parameters())
