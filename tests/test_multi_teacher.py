"""Many teachers: `distill_multi_teacher` (ensemble targets are the weighted mean; a dropped
teacher gives no gradient; learned weights train), `distill_unic` (ladder heads train and are
absent from the saved student), `distill_progressive` (teacher switches, disagreement weights),
and the teacher-similarity scores (LogME, kNN) that rank and weight candidates."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workbench.config import ConfigError
from workbench.forward import forward_with
from workbench.recipes.base import RecipeContext, TrainState, build_recipe
from workbench.recipes.distill.many_teachers import keep_mask
from workbench.recipes.distill.multi_teacher import ensemble_log_probs
from workbench.recipes.distill.progressive import disagreement_weights
from workbench.recipes.distill.relations import row_kl
from workbench.teacher_similarity import knn_score, logme, score_teachers, similarity_weights
from workbench.teachers import TeacherService
from workbench.train import TrainConfig, Trainer

from test_distill_relations import bert, collate, make_batch, one_thread, tiny_data  # noqa: F401


def sharp(model, scale=40.0):
    """Random BERTs predict almost uniformly; a scaled head gives distinct, confident outputs."""
    with torch.no_grad():
        model.classifier.weight.mul_(scale)
    return model


def ctx_with(teachers: dict, tmp_path, seed=0):
    service = TeacherService(None, 2, tmp_path, lambda n: (teachers[n], f"key-{n}") if n in teachers else None)
    return RecipeContext(task=None, tokenizer=None, run_dir=tmp_path, stage="s", seed=seed, teachers=service,
                         previous_stages=list(teachers))


def terms(recipe, student, batch, step=0):
    recipe.setup(student)
    out = forward_with(student, batch, recipe.needs())
    return recipe.loss_terms(TrainState(student, None, step, 10, 0, 10, batch=batch, outputs=out))


def test_ensemble_log_probs_is_the_weighted_mean():
    z = [torch.tensor([[2.0, -1.0, 0.5]]), torch.tensor([[-1.0, 3.0, 0.0]])]
    w = torch.tensor([0.25, 0.75])
    probs = ensemble_log_probs(z, w, 2.0, "probs").exp()
    assert torch.allclose(probs, 0.25 * F.softmax(z[0] / 2, -1) + 0.75 * F.softmax(z[1] / 2, -1), atol=1e-6)
    logits = ensemble_log_probs(z, w, 2.0, "logits").exp()
    assert torch.allclose(logits, F.softmax((0.25 * z[0] + 0.75 * z[1]) / 2, -1), atol=1e-6)
    assert not torch.allclose(probs, logits, atol=1e-3)


@pytest.mark.parametrize("average", ["probs", "logits"])
def test_ensemble_term_is_kl_to_the_weighted_mean(tmp_path, average):
    t1, t2, student = sharp(bert(seed=1)), sharp(bert(seed=2)), bert(layers=2, seed=3)
    batch = make_batch()
    recipe = build_recipe("distill_multi_teacher", {
        "teachers": [{"name": "a", "weight": 1.0}, {"name": "b", "weight": 3.0}], "average": average,
        "temperature": 2.0, "alpha": 0.7}, ctx_with({"a": t1, "b": t2}, tmp_path), "x")
    got = terms(recipe, student, batch)
    assert set(got) == {"kd_ensemble", "ce"}
    with torch.no_grad():
        z1, z2, zs = (forward_with(m, batch).logits for m in (t1, t2, student))
    if average == "probs":
        target = 0.25 * F.softmax(z1 / 2, -1) + 0.75 * F.softmax(z2 / 2, -1)
    else:
        target = F.softmax((0.25 * z1 + 0.75 * z2) / 2, -1)
    want = (target * (target.log() - F.log_softmax(zs / 2, -1))).sum(-1).mean()
    weight, value = got["kd_ensemble"]
    assert weight == pytest.approx(0.7 * 4) and float(value.detach()) == pytest.approx(float(want.detach()), rel=1e-4)
    assert float(want.detach()) > 1e-3
    assert got["ce"][0] == pytest.approx(0.3)


def test_keep_mask_keeps_the_worst_teacher_and_is_reproducible():
    for step in range(50):
        keep = keep_mask([0.1, 5.0, 0.3], 0.9, seed=4, step=step)
        assert keep[1] and keep == keep_mask([0.1, 5.0, 0.3], 0.9, seed=4, step=step)
    drops = sum(not keep_mask([0.1, 5.0, 0.3], 0.5, 4, s)[0] for s in range(400))
    assert 150 < drops < 250
    assert keep_mask([1.0, 2.0], 0.0, 0, 0) == [True, True]


def _dropped_step(losses_fn, p=0.9):
    for step in range(100):
        if not all(keep_mask(losses_fn(), p, 0, step)):
            return step
    raise AssertionError("no step dropped a teacher")


def test_a_dropped_teacher_gives_no_loss_and_no_gradient(tmp_path):
    t1, t2 = bert(seed=1), bert(hidden=48, seed=2)
    student = bert(layers=2, seed=3)
    batch = make_batch()
    settings = {"teachers": [{"name": "a", "target": "features"}, {"name": "b", "target": "features"}],
                "combine": "per_teacher", "teacher_drop": 0.9, "alpha": 1.0}
    recipe = build_recipe("distill_multi_teacher", settings, ctx_with({"a": t1, "b": t2}, tmp_path), "x")
    first = terms(recipe, student, batch, step=0)
    losses = [float(first["feat_a"][1].detach()), float(first["feat_b"][1].detach())]
    step = _dropped_step(lambda: losses)
    keep = keep_mask(losses, 0.9, 0, step)
    got = terms(recipe, student, batch, step=step)
    dropped = ["a", "b"][keep.index(False)]
    kept = ["a", "b"][keep.index(True)]
    assert got[f"feat_{dropped}"][0] == 0.0 and not got[f"feat_{dropped}"][1].requires_grad
    assert got[f"feat_{kept}"][0] == 1.0
    loss = sum(w * v for w, v in got.values() if w != 0.0)  # as the trainer sums
    loss.backward()
    assert recipe.owned.proj[dropped].weight.grad is None
    assert recipe.owned.proj[kept].weight.grad.abs().sum() > 0
    # ensemble of logit teachers: the dropped one is left out of the target
    t1, t2 = sharp(bert(seed=1)), sharp(bert(seed=2))
    recipe = build_recipe("distill_multi_teacher", {"teachers": ["a", "b"], "teacher_drop": 0.9, "alpha": 1.0},
                          ctx_with({"a": t1, "b": t2}, tmp_path), "x")
    with torch.no_grad():
        log_s = F.log_softmax(forward_with(student, batch).logits / 2, -1)
        kl = [row_kl(F.log_softmax(forward_with(t, batch).logits / 2, -1), log_s).mean() for t in (t1, t2)]
    step = _dropped_step(lambda: [float(v) for v in kl])
    keep = keep_mask([float(v) for v in kl], 0.9, 0, step)
    got = terms(recipe, student, batch, step=step)
    assert set(got) == {"kd_ensemble"}
    assert float(got["kd_ensemble"][1].detach()) == pytest.approx(float(kl[keep.index(True)]), rel=1e-5)
    assert float(kl[0]) != pytest.approx(float(kl[1]), rel=1e-2)


def test_learned_weights_get_gradients_and_are_logged(tmp_path):
    t1, t2, student = bert(seed=1), bert(seed=2), bert(layers=2, seed=3)
    recipe = build_recipe("distill_multi_teacher", {"teachers": ["a", {"name": "b", "weight": 3.0}],
                                                    "weighting": "learned"}, ctx_with({"a": t1, "b": t2}, tmp_path), "x")
    got = terms(recipe, student, make_batch())
    assert torch.allclose(torch.softmax(recipe.owned.log_w, 0), torch.tensor([0.25, 0.75]))
    assert got["w_a"][0] == 0.0 and float(got["w_b"][1].detach()) == pytest.approx(0.75)
    sum(w * v for w, v in got.values() if w != 0.0).backward()
    assert recipe.owned.log_w.grad is not None and recipe.owned.log_w.grad.abs().sum() > 0


@pytest.mark.parametrize("recipe_name,settings", [
    ("distill_unic", {"teachers": [{"name": "a", "target": "features"}, "b"], "ladder": [1, -1], "head_hidden": 8,
                      "teacher_drop": 0.0}),
    ("distill_multi_teacher", {"teachers": [{"name": "a", "target": "features"}, "b"]}),
])
def test_projector_heads_train_and_are_absent_from_the_saved_student(tmp_path, recipe_name, settings):
    teachers = {"a": bert(hidden=48, seed=1), "b": bert(seed=2)}
    student = bert(layers=2, seed=3)
    keys_before = set(student.state_dict())
    recipe = build_recipe(recipe_name, settings, ctx_with(teachers, tmp_path), "x")
    cfg = TrainConfig(epochs=1, batch_size=4, lr=1e-3, warmup=0.0, checkpoint_every=0, group_by_length=False)
    data = [{**r, "labels": r["label"]} for r in tiny_data()]
    Trainer(student, data, collate, cfg, [recipe], seed=0, checkpoint_dir=tmp_path / "ckpt").train()
    owned = list(recipe.owned.parameters())
    assert owned and all(p.grad is not None for p in owned)
    if recipe_name == "distill_unic":
        assert set(recipe.owned) == {"a", "b"} and set(recipe.owned["a"]) == {"l1", "l2"}
        assert recipe.owned["a"]["l1"][-1].out_features == 48 and recipe.owned["b"]["l2"][-1].out_features == 2
    assert set(student.state_dict()) == keys_before
    assert torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)["owned"][0]
    student.save_pretrained(tmp_path / "saved")
    from safetensors.torch import load_file

    on_disk = load_file(tmp_path / "saved" / "model.safetensors")
    assert set(on_disk) <= keys_before
    shapes = {tuple(p.shape) for p in owned if p.ndim == 2}
    assert not any(tuple(t.shape) in shapes - {(2, 32)} for t in on_disk.values())


def test_progressive_switches_teachers_and_weights_disagreements(tmp_path):
    weak, strong, student = bert(layers=1, seed=1), bert(seed=2), bert(layers=2, seed=3)
    recipe = build_recipe("distill_progressive", {"teachers": ["weak", "strong"], "switch_at": [0.3],
                                                  "curriculum_start": 0.5, "focus": 0.8},
                          ctx_with({"weak": weak, "strong": strong}, tmp_path), "x")
    assert [recipe.current(s, 10) for s in (0, 2, 3, 9)] == [0, 0, 1, 1]
    assert [recipe.focus_at(s, 10) for s in (0, 4, 5)] == [0.0, 0.0, 0.0] and recipe.focus_at(10, 10) == pytest.approx(0.8)
    recipe.on_train_begin(None)
    batch = make_batch()
    out = forward_with(student, batch)
    for step, teacher in ((0, weak), (9, strong)):
        got = recipe.loss_terms(TrainState(student, None, step, 10, 0, 10, batch=batch, outputs=out))
        assert float(got["prod_teacher"][1].detach()) == (teacher is strong)
        with torch.no_grad():
            zt = teacher(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits
        per = row_kl(F.log_softmax(zt / 2, -1), F.log_softmax(out.logits / 2, -1))
        w = disagreement_weights(zt, out.logits, recipe.focus_at(step, 10))
        assert float(got["kd_logits"][1].detach()) == pytest.approx(float((w * per).mean().detach()), rel=1e-5)
    zt = torch.tensor([[3.0, -3.0], [3.0, -3.0], [0.0, 0.0]])
    zs = torch.tensor([[3.0, -3.0], [-3.0, 3.0], [0.0, 0.0]])
    w = disagreement_weights(zt, zs, 1.0)
    assert float(w.mean()) == pytest.approx(1.0) and w[1] > 2.9 and w[0] < 1e-3
    assert torch.equal(disagreement_weights(zt, zs, 0.0), torch.ones(3))


def test_logme_and_knn_rank_informative_features_first():
    g = np.random.default_rng(0)
    y = np.arange(300) % 3
    good = np.eye(3)[y] * 2.0 + g.normal(size=(300, 3)) * 0.5
    good = np.concatenate([good, g.normal(size=(300, 13))], 1)
    noise = g.normal(size=(300, 16))
    assert logme(good, y) > logme(noise, y) + 0.1
    assert knn_score(good, y) > 0.9 > 0.5 > knn_score(noise, y)
    assert similarity_weights([1.0, 0.5, 0.0], 0.1, top=1) == [1.0, 0.0, 0.0]
    w = similarity_weights([1.0, 0.5], 0.5)
    assert w[0] == pytest.approx(1 / (1 + np.exp(-1.0))) and sum(w) == pytest.approx(1.0)


def test_score_teachers_prefers_the_teacher_trained_on_the_task(tmp_path):
    data = [{**r, "labels": r["label"]} for r in tiny_data(n=48, seed=2)]
    trained = bert(seed=1)
    cfg = TrainConfig(epochs=8, batch_size=8, lr=3e-3, warmup=0.0, checkpoint_every=0, group_by_length=False)
    Trainer(trained, data, collate, cfg, [build_recipe("finetune", {}, ctx_with({}, tmp_path), "x")], seed=0,
            checkpoint_dir=None).train()
    service = ctx_with({"trained": trained, "random": bert(seed=9)}, tmp_path).teachers
    rows = score_teachers({n: service.get(n) for n in ("random", "trained")}, data, collate, "knn", max_examples=48)
    assert {r["teacher"]: r["rank"] for r in rows} == {"trained": 1, "random": 2}


def test_config_errors(tmp_path):
    ctx = ctx_with({}, tmp_path)
    for name, settings, key in [
        ("distill_multi_teacher", {"teachers": []}, "teachers"),
        ("distill_multi_teacher", {"teachers": ["a", "a"]}, "teachers"),
        ("distill_multi_teacher", {"teachers": [{"name": "a", "weight": 0}]}, "teachers"),
        ("distill_multi_teacher", {"teachers": ["a"], "teacher_drop": 1.0}, "teacher_drop"),
        ("distill_multi_teacher", {"teachers": ["a"], "feature_loss": "cosin"}, "cosine"),
        ("distill_unic", {"teachers": ["a"], "ladder": [0]}, "ladder"),
        ("distill_progressive", {"teachers": ["a", "b"], "switch_at": [0.6, 0.3]}, "switch_at"),
        ("distill_progressive", {"teachers": ["a", "b", "c"], "switch_at": [0.5]}, "switch_at"),
    ]:
        with pytest.raises(ConfigError, match=key):
            build_recipe(name, settings, ctx, "stage 's'")
    # a local folder whose head has 5 classes cannot give logits to a 2-class task
    folder = tmp_path / "bbc"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"id2label": {str(i): str(i) for i in range(5)}}))
    from workbench.recipes.base import recipe_class

    task = type("T", (), {"num_labels": 2, "name": "rt-sentiment"})()
    for name in ("distill_multi_teacher", "distill_unic"):
        cls = recipe_class(name, "x")
        cfg = build_recipe(name, {"teachers": [str(folder)]}, ctx, "x").config
        with pytest.raises(ConfigError, match="target: features"):
            cls.check_task(cfg, task, "x")
        cls.check_task(build_recipe(name, {"teachers": [{"name": str(folder), "target": "features"}]}, ctx, "x").config,
                       task, "x")


def test_a_path_teacher_is_checked_when_the_run_starts_not_when_the_file_is_read(tmp_path):
    from workbench.pipeline.spec import PipelineSpec
    from workbench.recipes.base import recipe_class

    missing = str(tmp_path / "nowhere" / "model")
    spec = PipelineSpec.from_dict({"task": "rt-sentiment", "model": "minilm-l6", "stages": [
        {"name": "teacher", "recipes": ["finetune"]},
        {"name": "s.p", "recipes": [{"distill_progressive": {"teachers": [missing, "teacher"]}}]},
        {"name": "s.m", "recipes": [{"distill_multi_teacher": {"teachers": ["teacher", {"name": missing}]}}]}]})
    task = type("T", (), {"num_labels": 2, "name": "rt-sentiment"})()
    for stage, key in ((1, "teachers\\[0\\]"), (2, "teachers\\[1\\].name")):
        name, cfg = spec.stages[stage].recipes[0]
        with pytest.raises(ConfigError, match=f"{key}' is the path .*holds no model"):
            recipe_class(name, "x").check_task(cfg, task, "x")
    with pytest.raises(ConfigError, match="teachers\\[0\\].name' must name an earlier stage"):
        PipelineSpec.from_dict({"task": "rt-sentiment", "model": "minilm-l6", "stages": [
            {"name": "s", "recipes": [{"distill_multi_teacher": {"teachers": ["teachr"]}}]}]})


def test_rank_agreement_compares_the_score_order_with_the_students(tmp_path):
    from workbench.results import write_csv
    from workbench.teacher_similarity import rank_agreement, write_selection

    write_selection([{"rank": 1, "teacher": "teacher", "measure": "logme", "score": -0.4, "weight": 0.9, "examples": 9},
                     {"rank": 2, "teacher": "bbc/model", "measure": "logme", "score": -0.6, "weight": 0.1, "examples": 9}],
                    tmp_path / "sel.csv")
    rows = [{"seed": s, "stage": st, "accuracy": a} for s in (0, 1)
            for st, a in (("student.kd", 0.84 + s / 100), ("student.bbc", 0.80))]
    write_csv(tmp_path / "seeds.csv", rows, ["seed", "stage", "accuracy"])
    row = rank_agreement(tmp_path / "seeds.csv", tmp_path / "sel.csv", {"teacher": "student.kd", "bbc/model": "student.bbc"})
    assert row["best_agrees"] and row["kendall_tau"] == pytest.approx(1.0)
    assert row["by_score"] == row["by_student_accuracy"] == "teacher > bbc/model" and row["acc[teacher]"] == 0.845
    rows = [{**r, "accuracy": 0.9 if r["stage"] == "student.bbc" else r["accuracy"]} for r in rows]
    write_csv(tmp_path / "seeds.csv", rows, ["seed", "stage", "accuracy"])
    row = rank_agreement(tmp_path / "seeds.csv", tmp_path / "sel.csv", {"teacher": "student.kd", "bbc/model": "student.bbc"})
    assert not row["best_agrees"] and row["kendall_tau"] == pytest.approx(-1.0)
    with pytest.raises(ConfigError, match="student.nope"):
        rank_agreement(tmp_path / "seeds.csv", tmp_path / "sel.csv", {"teacher": "student.nope"})
