"""TinyBERT data augmentation (`augment`): copies, labels, replaced words only, determinism, cache,
the masked-LM path, and a two-stage TinyBERT pipeline on the embedded model."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import workbench.recipes.augment as aug_mod
import workbench.recipes.distill.layers  # noqa: F401  (registers distill_layers)
from workbench.config import ConfigError, parse_config
from workbench.recipes.augment import Augment, AugmentConfig, split_words
from workbench.recipes.base import RecipeContext
from workbench.teachers import Teacher

TEXTS = [
    "A gorgeous, witty and moving film about family.",
    "The plot is thin and the acting is dreadful.",
    "An unforgettable performance by the lead actress.",
    "Too long, too loud and far too silly.",
    "It's a charming little movie with a big heart!",
    "Nothing here is new, but it works.",
]
LABELS = [1, 0, 1, 0, 1, 1]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from workbench.models import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6")[0], local_files_only=True)


@pytest.fixture(scope="module")
def teacher_model(tokenizer):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=128, num_labels=2)
    return BertForSequenceClassification(cfg).eval()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))


class FakeTeachers:
    def __init__(self, model, tokenizer) -> None:
        self.teacher = Teacher("teacher", "teacher-key", model, tokenizer, True, None)

    def get(self, name, needs=None, where="teacher"):
        assert name == "teacher"
        return self.teacher


def _split(tokenizer, texts=TEXTS, labels=LABELS):
    import datasets

    ds = datasets.Dataset.from_dict({"text": texts, "label": labels})
    ds = ds.map(lambda b: tokenizer(b["text"], truncation=True, max_length=64), batched=True)
    return ds.rename_column("label", "labels").with_format("torch")


def _recipe(model, tokenizer, **settings) -> Augment:
    cfg = parse_config(AugmentConfig, settings, "stage 's' recipe 'augment'")
    task = SimpleNamespace(config=SimpleNamespace(max_length=64))
    ctx = RecipeContext(task=task, tokenizer=tokenizer, run_dir=Path("."), stage="s", seed=3,
                        teachers=FakeTeachers(model, tokenizer))
    return Augment(cfg, ctx)


def _words(tokenizer, text):
    return [w for w, _ in split_words(tokenizer, text)]


def test_config_validation():
    with pytest.raises(ConfigError, match="'copies' must be >= 1"):
        parse_config(AugmentConfig, {"copies": 0}, "w")
    with pytest.raises(ConfigError, match="'p_replace' must be in"):
        parse_config(AugmentConfig, {"p_replace": 1.5}, "w")
    assert not Augment.contributes_loss(AugmentConfig()) and Augment.requires_training(AugmentConfig())


def test_copies_labels_and_only_replaced_words_differ(teacher_model, tokenizer):
    train = _split(tokenizer)
    recipe = _recipe(teacher_model, tokenizer, copies=3, p_replace=0.5, candidates=5, use_mlm=False)
    out = recipe.prepare_data(train)
    n = len(TEXTS)
    assert len(out) == n * 4
    assert out.column_names == train.column_names and out.format["type"] == "torch"
    assert out[:n]["text"] == TEXTS  # the originals first, unchanged
    assert torch.equal(out[:n]["labels"], train[:]["labels"])
    replaced = 0
    for i in range(n):
        orig = _words(tokenizer, TEXTS[i])
        for j in range(3):
            row = out[n + 3 * i + j]
            assert int(row["labels"]) == LABELS[i]
            new = _words(tokenizer, row["text"])
            assert len(new) == len(orig)
            for a, b in zip(orig, new):
                if a != b:
                    replaced += 1
                    assert len(tokenizer.tokenize(a)) == 1 and b.isalpha() and a.lower() != b
            # tokenized with the stage tokenizer, like the original split
            assert row["input_ids"].tolist() == tokenizer(row["text"], truncation=True, max_length=64)["input_ids"]
            assert row["attention_mask"].tolist() == [1] * len(row["input_ids"])
    assert replaced > 0
    # punctuation and multi-piece words are never replaced
    for row in out[n:]["text"]:
        assert row.count(",") + row.count(".") + row.count("!") >= 1


def test_deterministic_for_a_seed_and_cache_reused(teacher_model, tokenizer, monkeypatch):
    train = _split(tokenizer)
    a = _recipe(teacher_model, tokenizer, copies=2, seed=7, use_mlm=False).prepare_data(train)
    calls = []
    real = aug_mod.nearest_neighbours
    monkeypatch.setattr(aug_mod, "nearest_neighbours", lambda *x, **k: calls.append(1) or real(*x, **k))
    c = _recipe(teacher_model, tokenizer, copies=2, seed=8, use_mlm=False).prepare_data(train)
    assert calls == [1] and c[:]["text"] != a[:]["text"]  # another seed: computed, and different
    # the same settings again: read from the cache, the neighbour search is not run
    monkeypatch.setattr(aug_mod, "nearest_neighbours", lambda *x, **k: pytest.fail("recomputed"))
    r = _recipe(teacher_model, tokenizer, copies=2, seed=7, use_mlm=False)
    b = r.prepare_data(train)
    assert b[:]["text"] == a[:]["text"] and torch.equal(b[:]["labels"], a[:]["labels"])
    assert r.cache_path.parent.name == "augment" and (r.cache_path / "dataset_info.json").exists()
    assert not r.cache_path.with_name(r.cache_path.name + ".tmp").exists()
    # the seed defaults to the stage's (ctx.seed = 3)
    monkeypatch.setattr(aug_mod, "nearest_neighbours", real)
    d = _recipe(teacher_model, tokenizer, copies=2, use_mlm=False)
    e = _recipe(teacher_model, tokenizer, copies=2, seed=3, use_mlm=False)
    assert d.prepare_data(train)[:]["text"] == e.prepare_data(train)[:]["text"]
    assert d.cache_path == e.cache_path


def test_fresh_computation_is_deterministic(teacher_model, tokenizer):
    r = _recipe(teacher_model, tokenizer, copies=2, use_mlm=False)
    t = r.ctx.teachers.get("teacher")
    assert r.augment_texts(TEXTS, LABELS, t, 5) == r.augment_texts(TEXTS, LABELS, t, 5)
    assert r.augment_texts(TEXTS, LABELS, t, 5) != r.augment_texts(TEXTS, LABELS, t, 6)


def test_masked_lm_head_is_used_when_the_folder_has_one(tokenizer, tmp_path, monkeypatch):
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=128, num_labels=2)
    BertForMaskedLM(cfg).save_pretrained(tmp_path / "mlm")
    teacher = BertForSequenceClassification.from_pretrained(tmp_path / "mlm").eval()
    monkeypatch.setattr(aug_mod, "nearest_neighbours", lambda *x, **k: pytest.fail("embedding fallback used"))
    out = _recipe(teacher, tokenizer, copies=2, p_replace=0.5, candidates=5).prepare_data(_split(tokenizer))
    assert len(out) == 3 * len(TEXTS)
    changed = sum(a != b for a, b in zip(out[len(TEXTS):]["text"], [t for t in TEXTS for _ in range(2)]))
    assert changed > 0


def test_folder_without_mlm_head_falls_back(tokenizer):
    from workbench.models import resolve_model_path
    from transformers import AutoModelForSequenceClassification

    m = AutoModelForSequenceClassification.from_pretrained(resolve_model_path("minilm-l6")[0], num_labels=2)
    assert aug_mod._load_mlm(m) is None


def test_two_stage_tinybert_pipeline(tmp_path):
    """Stage A: a 3-layer student distilled layer by layer; stage B: prediction-layer distillation
    on augmented data (copies 1). The validation split is never augmented."""
    from workbench.pipeline import PipelineRun, PipelineSpec

    spec = PipelineSpec.from_dict({
        "name": "tinybert", "task": "rt-sentiment", "model": "minilm-l6", "seed": 0,
        "quick": {"train_examples": 32, "eval_examples": 16, "epochs": 1, "batch_size": 16, "speed_iters": 1},
        "eval": {"speed_batches": [1], "speed_iters": 1},
        "stages": [
            {"name": "general", "recipes": [{"student": {"layers": [0, 2, 4]}},
                                            {"distill_layers": {"teacher": "minilm-l6", "prediction": False}}],
             "train": {"epochs": 1, "batch_size": 16, "lr": 1.0e-4}},
            {"name": "task", "recipes": [{"augment": {"teacher": "minilm-l6", "copies": 1}},
                                         {"distill_layers": {"teacher": "minilm-l6", "embeddings": False,
                                                             "hidden": False, "attention": False,
                                                             "prediction": True}}],
             "train": {"epochs": 1, "batch_size": 16, "lr": 1.0e-4}},
        ]})
    run = PipelineRun(spec, quick=True, results_root=tmp_path)
    result = run.run()
    n_train = len(run.train_data)
    assert n_train == 32 and len(run.val_data) == 16  # the run's splits are not replaced
    assert len(set(run.val_data.with_format(None)["text"])) == 16
    import csv

    rows_a = list(csv.DictReader(open(run.run_dir / "history" / "general.csv")))
    rows_b = list(csv.DictReader(open(run.run_dir / "history" / "task.csv")))
    assert {"emb", "hidden_l1", "hidden_l3", "attn_l2"} <= set(rows_a[0]) and "pred" not in rows_a[0]
    assert "pred" in rows_b[0] and "hidden_l1" not in rows_b[0]
    # augmented training split: twice the examples, so twice the steps of stage A
    assert len(rows_b) == 2 * len(rows_a) == 2 * -(-n_train // 16)
    assert result is not None
