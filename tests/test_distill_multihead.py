"""`distill_multihead` (DistilHuBERT): owned prediction heads that train, checkpoint and are
dropped from the saved student; the per-head loss against a hand computation; training lowers it;
and a quick pipeline with distill_relations and distill_multihead on the embedded model."""
from __future__ import annotations

import csv
import math

import pytest
import torch

from workbench.config import ConfigError
from workbench.forward import forward_with
from workbench.recipes.base import TrainState, build_recipe
from workbench.recipes.distill import minilm  # noqa: F401  (registers distill_relations)
from workbench.recipes.distill import multihead
from workbench.train import TrainConfig, Trainer

from test_distill_relations import bert, collate, make_batch, make_ctx, one_thread, tiny_data  # noqa: F401


def setup_terms(recipe, student, batch):
    recipe.setup(student)
    out = forward_with(student, batch, recipe.needs())
    return recipe.loss_terms(TrainState(student, None, 0, 1, 0, 1, batch=batch, outputs=out))


def test_default_teacher_layers():
    assert multihead.default_teacher_layers(12) == [4, 8, 12]
    assert multihead.default_teacher_layers(6) == [2, 4, 6]
    assert multihead.default_teacher_layers(4) == [1, 3, 4]
    assert multihead.default_teacher_layers(1) == [1]


def test_heads_are_owned_get_gradients_and_are_not_saved(tmp_path):
    teacher, student = bert(hidden=48, heads=4, layers=6), bert(hidden=32, heads=4, layers=2, seed=3)
    keys_before = set(student.state_dict())
    recipe = build_recipe("distill_multihead", {}, make_ctx(teacher, tmp_path), "x")
    terms = setup_terms(recipe, student, make_batch())
    assert set(terms) == {"head_l2", "head_l4", "head_l6"}
    assert isinstance(recipe.owned, torch.nn.ModuleDict) and set(recipe.owned) == {"l2", "l4", "l6"}
    assert all(isinstance(h, torch.nn.Linear) and h.weight.shape == (48, 32) for h in recipe.owned.values())
    sum(w * v for w, v in terms.values()).backward()
    for head in recipe.owned.values():
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert student.bert.encoder.layer[1].output.dense.weight.grad.abs().sum() > 0

    # trained by the Trainer: the heads are in the checkpoint, not in the student nor its saved folder
    recipe = build_recipe("distill_multihead", {"head_hidden": 16, "teacher_layers": [3, -1]},
                          make_ctx(teacher, tmp_path), "x")
    cfg = TrainConfig(epochs=1, batch_size=4, lr=1e-3, warmup=0.0, checkpoint_every=0, group_by_length=False)
    Trainer(student, tiny_data(), collate, cfg, [recipe], seed=0, checkpoint_dir=tmp_path / "ckpt").train()
    assert isinstance(recipe.owned["l3"], torch.nn.Sequential) and set(recipe.owned) == {"l3", "l6"}
    owned = {p.data_ptr() for p in recipe.owned.parameters()}
    assert set(student.state_dict()) == keys_before
    assert not owned & {t.data_ptr() for t in student.state_dict().values()}
    assert not any(m is h for m in student.modules() for h in recipe.owned.modules())
    saved = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)["owned"][0]
    assert set(saved) == {f"{k}.{p}" for k, h in recipe.owned.items() for p in h.state_dict()}
    student.save_pretrained(tmp_path / "saved")
    from safetensors.torch import load_file

    on_disk = load_file(tmp_path / "saved" / "model.safetensors")
    assert set(on_disk) <= keys_before | {"classifier.weight", "classifier.bias"}
    assert not any(t.shape in {(16, 32), (48, 16)} for t in on_disk.values())


def test_head_loss_matches_hand_computation(tmp_path):
    teacher, student = bert(hidden=48, heads=4, layers=2), bert(hidden=32, heads=4, layers=1, seed=3)
    ids = torch.tensor([[5, 17, 33, 0, 0], [8, 9, 71, 100, 2]])
    batch = {"input_ids": ids, "attention_mask": (ids > 0).long(), "labels": torch.tensor([0, 1])}
    l1w, lam = 0.7, 1.3
    recipe = build_recipe("distill_multihead", {"teacher_layers": [1], "l1_weight": l1w, "cos_weight": lam},
                          make_ctx(teacher, tmp_path), "x")
    terms = setup_terms(recipe, student, batch)
    assert set(terms) == {"head_l1"} and terms["head_l1"][0] == 1.0
    with torch.no_grad():
        h_s = student(**{k: batch[k] for k in ("input_ids", "attention_mask")},
                      output_hidden_states=True).hidden_states[-1]
        h_t = teacher(**{k: batch[k] for k in ("input_ids", "attention_mask")},
                      output_hidden_states=True).hidden_states[1]
    w, b = recipe.owned["l1"].weight.tolist(), recipe.owned["l1"].bias.tolist()
    total, count = 0.0, 0
    for i in range(2):
        for j in range(5):
            if not batch["attention_mask"][i, j]:
                continue
            x, t = h_s[i, j].tolist(), h_t[i, j].tolist()
            pred = [sum(wr[c] * x[c] for c in range(32)) + br for wr, br in zip(w, b)]
            l1 = sum(abs(p - q) for p, q in zip(pred, t)) / 48
            cos = sum(p * q for p, q in zip(pred, t)) / (math.sqrt(sum(p * p for p in pred)) *
                                                        math.sqrt(sum(q * q for q in t)))
            total += l1w * l1 + lam * -math.log(1.0 / (1.0 + math.exp(-cos)))
            count += 1
    assert count == 8
    assert float(terms["head_l1"][1].detach()) == pytest.approx(total / count, rel=1e-5)
    # padding is masked out: changing the padded teacher rows changes nothing
    h_t2 = h_t.clone()
    h_t2[0, 3:] += 100.0
    pred = recipe.owned["l1"](h_s)
    m = batch["attention_mask"]
    assert float(multihead.head_loss(pred, h_t2, m, l1w, lam).detach()) == pytest.approx(
        float(multihead.head_loss(pred, h_t, m, l1w, lam).detach()), rel=1e-6)


def test_multihead_loss_falls_with_training(tmp_path):
    teacher, student = bert(hidden=48, heads=4, layers=6), bert(hidden=32, heads=4, layers=2, seed=5)
    recipe = build_recipe("distill_multihead", {}, make_ctx(teacher, tmp_path), "x")
    cfg = TrainConfig(epochs=15, batch_size=4, lr=3e-3, warmup=0.0, checkpoint_every=0, group_by_length=False)
    trainer = Trainer(student, tiny_data(), collate, cfg, [recipe], seed=0, checkpoint_dir=None)
    trainer.train()
    log = trainer.step_log
    assert len(log) == 30 and all({"head_l2", "head_l4", "head_l6"} <= set(r) for r in log)
    first = sum(r["loss"] for r in log[:4]) / 4
    last = sum(r["loss"] for r in log[-4:]) / 4
    assert last < 0.7 * first, (first, last)


def test_config_errors(tmp_path):
    teacher, student = bert(hidden=48, heads=4, layers=4), bert(hidden=32, heads=4, layers=2)
    with pytest.raises(ConfigError, match=r"'teacher_layers' is 5, but the teacher 'teacher' has 4 layers"):
        build_recipe("distill_multihead", {"teacher_layers": [2, 5]}, make_ctx(teacher, tmp_path), "x").setup(student)
    with pytest.raises(ConfigError, match=r"'teacher_layers' names a layer twice"):
        build_recipe("distill_multihead", {"teacher_layers": [4, -1]}, make_ctx(teacher, tmp_path), "x").setup(student)
    with pytest.raises(ConfigError, match=r"'student_layer' is 3, but the student has 2 layers"):
        build_recipe("distill_multihead", {"student_layer": 3}, make_ctx(teacher, tmp_path), "x").setup(student)
    for bad in ({"teacher_layers": []}, {"teacher_layers": [0]}, {"l1_weight": 0, "cos_weight": 0},
                {"head_hidden": 0}, {"cos_weight": -1.0}):
        with pytest.raises(ConfigError):
            build_recipe("distill_multihead", bad, make_ctx(teacher, tmp_path), "x")


def test_pipeline_relations_and_multihead_on_the_embedded_model(tmp_path):
    from workbench.pipeline import PipelineRun, PipelineSpec

    spec = PipelineSpec.from_dict({
        "name": "minilm-heads", "task": "rt-sentiment", "model": "minilm-l6", "seed": 0,
        "eval": {"speed_batches": [1], "speed_iters": 1},
        "quick": {"train_examples": 64, "eval_examples": 32, "epochs": 1, "batch_size": 16, "speed_iters": 1},
        "stages": [
            {"name": "teacher", "recipes": ["finetune"], "train": {"epochs": 1, "batch_size": 16}},
            {"name": "student", "recipes": [
                {"student": {"layers": [0, 2, 4]}},
                {"distill_relations": {"teacher": "teacher", "version": 2, "relation_heads": 12}},
                {"distill_logits": {"teacher": "teacher"}}],
             "train": {"epochs": 1, "batch_size": 16, "lr": 1e-4}},
            {"name": "heads", "recipes": [
                {"distill_multihead": {"teacher": "teacher"}}, "finetune"],
             "train": {"epochs": 1, "batch_size": 16, "lr": 1e-4}},
        ]})
    metrics = PipelineRun(spec, quick=True, results_root=tmp_path).run()
    assert [m["stage"] for m in metrics] == ["teacher", "student", "heads"]
    run = tmp_path / "minilm-heads"
    cols = {s: set(next(csv.DictReader((run / "history" / f"{s}.csv").open()))) for s in ("student", "heads")}
    assert {"rel_qq", "rel_kk", "rel_vv", "kd_logits", "ce"} <= cols["student"]
    assert {"head_l2", "head_l4", "head_l6", "ce"} <= cols["heads"]
    from safetensors.torch import load_file

    student_keys = set(load_file(run / "artifacts" / "student" / "model" / "model.safetensors"))
    assert set(load_file(run / "artifacts" / "heads" / "model" / "model.safetensors")) == student_keys
