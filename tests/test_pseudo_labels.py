"""Pseudo-labels (`pseudo_label`): each filter keeps exactly the examples its rule admits, the stage
trains on the kept examples with the teacher's labels, the keep report counts them, and bad
settings fail before any work."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from test_platform import _csv_task, _tiny_dir
from workbench.config import ConfigError
from workbench.pipeline import PipelineRun, PipelineSpec
from workbench.recipes.data.pool import keep_mask, normalized_entropy


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))


def test_filters_keep_exactly_what_their_rule_admits():
    probs = torch.tensor([[0.95, 0.05], [0.55, 0.45], [0.30, 0.70], [0.08, 0.92], [0.50, 0.50]])
    gold = torch.tensor([0, 1, 1, 0, 0])
    other = torch.tensor([0, 0, 0, 1, 1])
    def kept(rule, **kw):
        return keep_mask(rule, probs, **kw).nonzero().flatten().tolist()

    assert kept("none") == [0, 1, 2, 3, 4]
    assert kept("gold_agreement", gold=gold) == [0, 2, 4]  # teacher argmax 0, 0, 1, 1, 0 (ties: first class)
    assert kept("confidence", threshold=0.9) == [0, 3]
    assert kept("confidence", threshold=0.7) == [0, 2, 3]  # >= threshold
    ent = normalized_entropy(probs)
    assert ent[4] == pytest.approx(1.0) and ent[0] == pytest.approx(-(0.95 * math.log(0.95) + 0.05 * math.log(0.05)) / math.log(2))
    assert kept("entropy", threshold=0.5) == [i for i in range(5) if ent[i] <= 0.5] == [0, 3]
    assert kept("teacher_agreement", other=other) == [0, 1, 3]
    assert kept("student_agreement", other=other) == [0, 1, 3]


def _model_and_task(tmp_path: Path) -> tuple[str, dict]:
    """A tiny BERT whose classifier is scaled up: its predictions and confidences vary from text to
    text (a tiny model trained for a few steps predicts one class with p = 0.5 everywhere)."""
    from transformers import BertForSequenceClassification

    path = _tiny_dir(tmp_path, "tiny")
    model = BertForSequenceClassification.from_pretrained(path)
    with torch.no_grad():
        model.bert.pooler.dense.weight.mul_(20.0)
        model.classifier.weight.mul_(1000.0)
    model.save_pretrained(path)
    return str(path), _csv_task(tmp_path)


def _spec(tmp_path: Path, stages: list[dict], **extra) -> PipelineSpec:
    model, task = _model_and_task(tmp_path)
    return PipelineSpec.from_dict({
        "name": "pl", "model": model, "seed": 0, "task": task,
        "eval": {"speed_batches": [1], "speed_iters": 1, "seq_len": 16},
        "stages": [{"name": "teacher", "recipes": ["finetune"], "train": {"epochs": 1, "batch_size": 16, "lr": 1e-5}},
                   *stages], **extra})


def _pl_stage(name: str, bs: int = 8, **settings) -> dict:
    return {"name": name, "from": "teacher", "recipes": [{"pseudo_label": {"teacher": "teacher", **settings}}],
            "train": {"epochs": 1, "batch_size": bs, "lr": 1e-3}}


def test_pipeline_trains_on_the_kept_pseudo_labels(tmp_path):
    spec = _spec(tmp_path, [
        _pl_stage("s.none"),
        _pl_stage("s.gold", filter="gold_agreement"),
        _pl_stage("s.conf", filter="confidence", threshold=0.6),
        _pl_stage("s.agree", filter="student_agreement", agree_with="s.none"),
    ])
    run = PipelineRun(spec, results_root=tmp_path / "r")
    run.run()
    train = run.train_data.with_format(None)
    texts, gold = train["text"], torch.tensor(train["labels"])
    from workbench.data import Collator

    def logits(model):
        batch = Collator(run.tokenizer)([{k: v for k, v in ex.items() if k not in ("labels",)}
                                         for ex in run.train_data])
        with torch.no_grad():
            return model(**{k: v for k, v in batch.items() if k != "text"}).logits

    probs = logits(run.models["teacher"]).softmax(-1)
    pseudo = probs.argmax(-1)
    expected = {"s.none": torch.ones(len(texts), dtype=torch.bool), "s.gold": pseudo == gold,
                "s.conf": probs.max(-1).values >= 0.6,
                "s.agree": logits(run.models["s.none"]).argmax(-1) == pseudo}
    for stage, mask in expected.items():
        report = json.loads((run.run_dir / "pseudo_labels" / f"{stage}.json").read_text())
        assert report["total"] == len(texts) and report["kept"] == int(mask.sum()) > 0, stage
        assert stage == "s.none" or report["kept"] < report["total"], stage  # each filter drops some here
        assert sum(c["kept"] for c in report["per_class"].values()) == report["kept"]
        assert report["pool_accuracy"] == pytest.approx(float((pseudo == gold).float().mean()), abs=1e-6)
        with open(run.run_dir / "history" / f"{stage}.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == -(-int(mask.sum()) // 8) and "pseudo_ce" in rows[0], stage  # steps over the kept ones
    # what the stage trains on: the kept examples, labelled with the teacher's argmax, not the gold label
    from workbench.recipes.base import RecipeContext, build_recipe

    ctx = RecipeContext(task=run.task, tokenizer=run.tokenizer, run_dir=tmp_path / "again", stage="s.conf",
                        teachers=run.teachers, train_data=run.train_data)
    recipe = build_recipe("pseudo_label", {"teacher": "teacher", "filter": "confidence", "threshold": 0.6}, ctx, "t")
    data = recipe.prepare_data(run.train_data).with_format(None)
    kept = expected["s.conf"].nonzero().flatten().tolist()
    assert data["text"] == [texts[i] for i in kept] and data["labels"] == pseudo[kept].tolist()
    assert data["labels"] != gold[kept].tolist()
    gold_report = json.loads((run.run_dir / "pseudo_labels" / "s.gold.json").read_text())
    assert gold_report["kept_accuracy"] == 1.0
    from workbench.recipes.data.report import keep_table

    table = keep_table(run.run_dir)  # keep.csv / keep.md: one row per pseudo-label stage
    assert {t["stage"]: t["kept"] for t in table} == {s: f"{int(m.sum())}/{len(texts)}" for s, m in expected.items()}
    assert (run.run_dir / "keep.md").exists()


def test_text_file_pool_and_filter_that_keeps_nothing(tmp_path):
    pool = tmp_path / "pool.txt"
    pool.write_text("a really good film\n\n   \nan awful film\nthe film was good number 3\nsome bad plot\n")
    run = PipelineRun(_spec(tmp_path, [_pl_stage("s.pool", bs=2, pool=str(pool))]), results_root=tmp_path / "r")
    run.run()
    report = json.loads((run.run_dir / "pseudo_labels" / "s.pool.json").read_text())
    held_out = {t for s in ("validation", "test") for t in run.task.splits[s]["text"]}
    overlap = int("the film was good number 3" in held_out)
    assert report["dropped_eval_overlap"] == overlap and report["total"] == 4 - overlap  # blank lines skipped
    assert report["pool_accuracy"] is None  # no gold labels in a text file
    stage = _pl_stage("s.none", filter="confidence", threshold=1.0)  # a random tiny teacher is never that sure
    with pytest.raises(ConfigError, match="filter 'confidence' .*threshold 1.0.* kept none"):
        PipelineRun(_spec(tmp_path, [stage]), results_root=tmp_path / "r2").run()
    # under --quick the stage's quick_threshold replaces it (a quick teacher is never confident)
    stage = _pl_stage("s.quick", filter="confidence", threshold=1.0, quick_threshold=0.5)
    run = PipelineRun(_spec(tmp_path, [stage]), quick=True, results_root=tmp_path / "r3")
    run.run()
    report = json.loads((run.run_dir / "pseudo_labels" / "s.quick.json").read_text())
    assert report["kept"] == report["total"] > 0  # two classes: the top probability is always >= 0.5


@pytest.mark.parametrize("settings, match", [
    ({"filter": "confidence"}, "'threshold' is required"),
    ({"filter": "confidence", "threshold": 1.5}, r"'threshold' must be in \(0, 1\]"),
    ({"filter": "entropy", "threshold": 0.0}, r"'threshold' must be in \(0, 1\]"),
    ({"filter": "none", "threshold": 0.5}, "'threshold' goes with"),
    ({"filter": "confidence", "threshold": 0.9, "quick_threshold": 0.0}, r"'quick_threshold' must be in \(0, 1\]"),
    ({"filter": "none", "quick_threshold": 0.5}, "'quick_threshold' goes with"),
    ({"filter": "teacher_agreement"}, "'agree_with' is required"),
    ({"filter": "student_agreement", "agree_with": "later"}, "'agree_with' must name an earlier stage"),
    ({"filter": "teacher_agreement", "agree_with": "no-such-model"}, "'agree_with' must name an earlier stage"),
    ({"filter": "majority"}, "'filter' must be one of"),
    ({"pool": "EMPTY"}, "is empty"),
    ({"pool": "BLANK"}, "only blank lines"),
    ({"pool": "MISSING"}, "does not exist"),
    ({"pool": "BLANK_CSV"}, "only blank texts"),
    ({"pool": "TXT", "filter": "gold_agreement"}, "gold_agreement needs gold labels"),
    ({"pool": "BAD_LABELS"}, "neither the task's class names"),
])
def test_bad_settings_fail_before_any_work(tmp_path, settings, match):
    files = {"EMPTY": "", "BLANK": "\n  \n\n", "TXT": "good\nbad\n", "BLANK_CSV": "text,label\n  ,pos\n",
             "BAD_LABELS": "text,label\ngood,maybe\n"}
    if settings.get("pool") in files:
        suffix = ".csv" if "CSV" in settings["pool"] or "LABELS" in settings["pool"] else ".txt"
        path = tmp_path / f"pool{suffix}"
        path.write_text(files[settings["pool"]])
        settings = {**settings, "pool": str(path)}
    elif settings.get("pool") == "MISSING":
        settings = {**settings, "pool": str(tmp_path / "nope.txt")}
    with pytest.raises(ConfigError, match=match):
        run = PipelineRun(_spec(tmp_path, [_pl_stage("s.x", **settings)]), results_root=tmp_path / "r")
        run._prepare()  # the task-dependent checks (gold label names) run here, before any stage
    assert not (tmp_path / "r" / "pl" / "artifacts").exists()


def test_a_pool_from_parquet_or_a_saved_dataset_keeps_its_gold_labels(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    from workbench.recipes.data.pool import read_pool

    rows = [{"text": f"film {i}", "label": "pos" if i % 2 else "neg"} for i in range(6)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pool.parquet")
    whole = datasets.Dataset.from_list(rows)
    whole.save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"train": whole, "test": whole.select([0])}).save_to_disk(str(tmp_path / "dict"))
    for source in ("pool.parquet", "one", "dict"):
        pool = read_pool(str(tmp_path / source), "text", "label", ["neg", "pos"], "w")
        assert pool.texts == [r["text"] for r in rows] and pool.gold == [i % 2 for i in range(6)], source
    datasets.DatasetDict({"test": whole}).save_to_disk(str(tmp_path / "notrain"))
    with pytest.raises(ConfigError, match="w: 'pool' .*notrain' has no 'train' split"):
        read_pool(str(tmp_path / "notrain"), "text", "label", ["neg", "pos"], "w")
