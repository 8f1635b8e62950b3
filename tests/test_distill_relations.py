"""`distill_relations` (MiniLM v1 / MiniLMv2): zero for a copy, positive otherwise, across widths,
padding masked, its config errors, and training lowers it (the pipeline test is in test_distill_multihead)."""
from __future__ import annotations

import copy

import pytest
import torch

from workbench.config import ConfigError
from workbench.recipes.base import RecipeContext, TrainState, build_recipe
from workbench.recipes.distill import minilm  # noqa: F401  (registers distill_relations)
from workbench.forward import forward_with
from workbench.teachers import TeacherService
from workbench.train import TrainConfig, Trainer


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is faster than two on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def bert(hidden=32, heads=4, layers=4, seed=0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=120, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=2 * hidden, max_position_embeddings=64, num_labels=2,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg).eval()


def make_ctx(teacher, tmp_path):
    service = TeacherService(None, 2, tmp_path, lambda name: (teacher, "tkey") if name == "teacher" else None)
    return RecipeContext(task=None, tokenizer=None, run_dir=tmp_path, stage="s", teachers=service,
                         previous_stages=["teacher"])


def make_batch(seed=1, b=3, length=9):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 120, (b, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    mask[2, 4:] = 0
    ids = ids * mask
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 0][:b])}


def terms_for(recipe, student, batch):
    recipe.setup(student)
    out = forward_with(student, batch, recipe.needs())
    state = TrainState(student, None, 0, 1, 0, 1, batch=batch, outputs=out)
    return recipe.loss_terms(state)


@pytest.mark.parametrize("version,names", [(1, {"attn", "rel_vv"}), (2, {"rel_qq", "rel_kk", "rel_vv"})])
def test_zero_for_a_copy_positive_otherwise(tmp_path, version, names):
    teacher = bert()
    batch = make_batch()
    settings = {"version": version, "relation_heads": 8}
    same = terms_for(build_recipe("distill_relations", settings, make_ctx(teacher, tmp_path), "x"),
                     copy.deepcopy(teacher), batch)
    assert set(same) == names
    for name, (w, v) in same.items():
        assert w == 1.0 and abs(float(v.detach())) < 1e-9, (name, float(v.detach()))
    other = terms_for(build_recipe("distill_relations", {**settings, "weight": 0.5},
                                   make_ctx(teacher, tmp_path), "x"), bert(seed=7), batch)
    for name, (w, v) in other.items():  # random BERTs attend almost uniformly: small but clearly > 0
        assert w == 0.5 and float(v.detach()) > 1e-6, (name, float(v.detach()))
    # the same model, but its layer 2 imitating the teacher's last layer: positive too
    shifted = terms_for(build_recipe("distill_relations", {**settings, "student_layer": 2},
                                     make_ctx(teacher, tmp_path), "x"), copy.deepcopy(teacher), batch)
    assert all(float(v.detach()) > 1e-6 for _, v in shifted.values())


@pytest.mark.parametrize("version", [1, 2])
def test_padding_is_masked(tmp_path, version):
    """Other tokens under the padding change no term (padding keys and queries are ignored)."""
    teacher, student = bert(hidden=48, heads=4), bert(hidden=32, heads=4, layers=2, seed=3)
    batch = make_batch()
    other = dict(batch, input_ids=torch.where(batch["attention_mask"].bool(), batch["input_ids"], 77))
    recipe = build_recipe("distill_relations", {"version": version, "relation_heads": 8},
                          make_ctx(teacher, tmp_path), "x")
    a, b = terms_for(recipe, student, batch), terms_for(recipe, student, other)
    for name in a:
        assert float(a[name][1].detach()) == pytest.approx(float(b[name][1].detach()), rel=1e-5), name


def test_v1_attention_matches_the_models_own_attention(tmp_path):
    """The attention distributions recomputed from Q and K are the model's (eager) attention."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, attn_implementation="eager")
    model = BertForSequenceClassification(cfg).eval()
    batch = make_batch()
    with torch.no_grad():
        out = forward_with(model, batch, {"qkv"})
        eager = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      output_attentions=True).attentions[1]
    q, k, _ = out.qkv[1]
    mine = minilm.attention_log_probs(q, k, 4, batch["attention_mask"]).exp()
    keys = batch["attention_mask"].bool()[:, None, None, :]
    assert torch.allclose(mine, eager * keys, atol=1e-5)


def test_v2_across_widths_and_heads(tmp_path):
    teacher, student = bert(hidden=48, heads=6), bert(hidden=32, heads=4, layers=2, seed=3)
    batch = make_batch()
    for heads in (4, 8, 16):
        recipe = build_recipe("distill_relations", {"relation_heads": heads, "teacher_layer": 3},
                              make_ctx(teacher, tmp_path), "x")
        terms = terms_for(recipe, student, batch)
        assert set(terms) == {"rel_qq", "rel_kk", "rel_vv"}
        assert all(torch.isfinite(v) and float(v.detach()) > 0 for _, v in terms.values())
    student.zero_grad()
    sum(v for _, v in terms.values()).backward()
    for role in ("query", "key", "value"):
        assert student.bert.encoder.layer[1].attention.self.__getattr__(role).weight.grad.abs().sum() > 0
    # version 1 across widths is fine with equal head counts ...
    v1 = build_recipe("distill_relations", {"version": 1}, make_ctx(bert(hidden=48, heads=4), tmp_path), "x")
    assert set(terms_for(v1, student, batch)) == {"attn", "rel_vv"}
    # ... and refused, pointing at version 2, with different ones
    v1 = build_recipe("distill_relations", {"version": 1}, make_ctx(teacher, tmp_path), "x")
    with pytest.raises(ConfigError, match=r"student layer 2 has 4 and teacher layer 4 has 6.*version: 2"):
        v1.setup(student)


def test_config_errors(tmp_path):
    teacher, student = bert(hidden=48, heads=6), bert(hidden=32, heads=4, layers=2)
    recipe = build_recipe("distill_relations", {"relation_heads": 12}, make_ctx(teacher, tmp_path), "stage 's'")
    with pytest.raises(ConfigError, match=r"'relation_heads' 12 must divide both the student's query/key/value "
                                          r"width 32 and the teacher's 48"):
        recipe.setup(student)
    recipe = build_recipe("distill_relations", {"relation_heads": 4, "teacher_layer": 5},
                          make_ctx(teacher, tmp_path), "x")
    with pytest.raises(ConfigError, match=r"'teacher_layer' is 5, but the teacher 'teacher' has 4 layers"):
        recipe.setup(student)
    with pytest.raises(ConfigError, match="'version' must be 1"):
        build_recipe("distill_relations", {"version": 3}, make_ctx(teacher, tmp_path), "x")
    with pytest.raises(ConfigError, match="'student_layer'"):
        build_recipe("distill_relations", {"student_layer": 0}, make_ctx(teacher, tmp_path), "x")


def collate(rows):
    n = max(len(r["input_ids"]) for r in rows)
    ids = torch.tensor([r["input_ids"] + [0] * (n - len(r["input_ids"])) for r in rows])
    mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (n - len(r["input_ids"])) for r in rows])
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([r["label"] for r in rows])}


def tiny_data(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(1, 120, (int(torch.randint(5, 12, (1,), generator=g)),),
                                        generator=g).tolist(), "label": i % 2} for i in range(n)]


@pytest.mark.parametrize("version", [1, 2])
def test_relation_loss_falls_with_training(tmp_path, version):
    teacher = bert(hidden=48, heads=4)
    student = bert(hidden=32, heads=4, layers=2, seed=5)
    recipe = build_recipe("distill_relations", {"version": version, "relation_heads": 8},
                          make_ctx(teacher, tmp_path), "x")
    before = copy.deepcopy(student.classifier.weight)
    cfg = TrainConfig(epochs=15, batch_size=4, lr=3e-3, warmup=0.0, checkpoint_every=0, group_by_length=False)
    trainer = Trainer(student, tiny_data(), collate, cfg, [recipe], seed=0, checkpoint_dir=None)
    trainer.train()
    names = ["attn", "rel_vv"] if version == 1 else ["rel_qq", "rel_kk", "rel_vv"]
    log = trainer.step_log
    assert len(log) == 30 and all(set(names) <= set(row) for row in log)
    first = sum(row["loss"] for row in log[:4]) / 4
    last = sum(row["loss"] for row in log[-4:]) / 4
    assert last < 0.5 * first, (first, last)
    # relations alone train only the encoder: the classifier gets no gradient
    assert torch.equal(student.classifier.weight, before)
