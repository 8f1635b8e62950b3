"""Results a researcher can trust: bad data and bad model paths fail before training with a
clear error; degenerate stages are flagged; class weights; quiet cache layer; safe loading.
Tiny models only (`_tiny_dir`: a 2-layer random BERT with the MiniLM tokenizer)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workbench.config import ConfigError
from workbench.data import load_task
from workbench.pipeline import PipelineRun, PipelineSpec

from test_platform import _csv_task, _tiny_dir

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _good_rows(n: int = 30) -> str:
    return "".join(f"a fine film number {i},pos\na dull film number {i},neg\n" for i in range(n))


# ----------------------------------------------------------------------------- bad data
def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    # Excel's "CSV UTF-8" starts the file with U+FEFF; .jsonl files saved by some editors too
    task = load_task(_write(tmp_path / "excel.csv", "\ufefftext,label\n" + _good_rows()))
    assert task.num_labels == 2 and sum(len(task.splits[s]) for s in task.splits) == 60
    rows = "".join(f'{{"text": "film {i}", "label": "{"pos" if i % 2 else "neg"}"}}\n' for i in range(60))
    assert load_task(_write(tmp_path / "bom.jsonl", "\ufeff" + rows)).num_labels == 2


@pytest.mark.parametrize("name, sep, fix", [("semi.csv", ";", "save it with commas"), ("tabs.csv", "\t", "name it .tsv"),
                                            ("commas.tsv", ",", "save it with commas")])
def test_a_table_split_by_another_character_says_so(tmp_path, name, sep, fix):
    text = f"text{sep}label\n" + "".join(f"film {i}{sep}{i % 2}\n" for i in range(30))
    with pytest.raises(ConfigError, match=f"not found; .*separated by {re.escape(repr(sep))}.*{fix}"):
        load_task(_write(tmp_path / name, text))


def test_an_unquoted_comma_or_a_repeated_column_is_named(tmp_path):
    # "the film, was good,pos" read ' was good' as a third class, silently; a header naming
    # 'text' twice kept the last column's values as the texts
    text = "text,label\n" + _good_rows() + "a fine film, truly,pos\n"
    with pytest.raises(ConfigError, match=r"1 row has more fields than the header's 2 \(line 62 has 3\).*double quotes"):
        load_task(_write(tmp_path / "comma.csv", text))
    text = "text,label,text\n" + "".join(f"film {i},{i % 2},x\n" for i in range(60))
    with pytest.raises(ConfigError, match=r"column 'text' appears twice in the header \(columns 1 and 3\)"):
        load_task(_write(tmp_path / "twice.csv", text))
    quoted = "text,label\n" + _good_rows() + '"a fine film, truly",pos\n'
    assert load_task(_write(tmp_path / "quoted.csv", quoted)).num_labels == 2


def test_labels_differing_only_in_case_fail_and_a_class_missing_from_a_split_is_said(tmp_path):
    from workbench.data.tasks import missing_class_notes

    # 'Pos' beside 'pos' became a third class of one example, silently
    with pytest.raises(ConfigError, match=r"differ only in case \('Pos' on 1 row, 'pos' on 30 rows\)"):
        load_task(_write(tmp_path / "case.csv", "text,label\n" + _good_rows() + "a film,Pos\n"))
    rare = load_task(_write(tmp_path / "rare.csv", "text,label\n" + _good_rows() + "a film,meh\n"))
    assert missing_class_notes(rare) == ["class 'meh' (1 example) has none in validation and test: it is not "
                                         "measured there; add examples of it, or fix its label"]
    assert missing_class_notes(load_task(_write(tmp_path / "ok.csv", "text,label\n" + _good_rows()))) == []


def test_empty_file_names_the_file(tmp_path):
    name = _write(tmp_path / "empty.csv", "text,label\n")
    with pytest.raises(ConfigError, match=r"empty\.csv' is empty.*add rows"):
        load_task(name)
    _write(tmp_path / "nothing.jsonl", "")
    with pytest.raises(ConfigError, match=r"nothing\.jsonl' is empty"):
        load_task(str(tmp_path / "nothing.jsonl"))


def test_empty_split_file_in_a_folder_names_that_file(tmp_path):
    folder = tmp_path / "task"
    folder.mkdir()
    _write(folder / "train.csv", "text,label\n" + _good_rows())
    _write(folder / "test.csv", "text,label\n")
    with pytest.raises(ConfigError, match=r"test\.csv' is empty"):
        load_task(str(folder))


def test_too_few_examples_for_a_split_says_what_to_do(tmp_path):
    name = _write(tmp_path / "few.csv", "text,label\n" + _good_rows(3))
    with pytest.raises(ConfigError, match=r"split 'validation' is empty: 6 examples are too few.*add examples"):
        load_task(name)


def test_blank_labels_fail_naming_file_column_and_lines(tmp_path):
    rows = _good_rows() + "an unlabelled film,\n" + "another one, \n"
    name = _write(tmp_path / "blank.csv", "text,label\n" + rows)
    with pytest.raises(ConfigError) as err:
        load_task(name)
    msg = str(err.value)
    assert "blank.csv" in msg and "label column 'label'" in msg and "2 rows" in msg and "lines 62, 63" in msg
    # jsonl: null and a missing key
    lines = [json.dumps({"text": f"t {i}", "label": i % 2}) for i in range(40)]
    lines[3] = json.dumps({"text": "t 3", "label": None})
    name = _write(tmp_path / "blank.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"blank\.jsonl': label column 'label' is blank on 1 row \(line 4\)"):
        load_task(name)


def test_blank_or_non_string_texts_fail(tmp_path):
    name = _write(tmp_path / "t.csv", "text,label\n" + _good_rows() + " ,pos\n")
    with pytest.raises(ConfigError, match=r"t\.csv': text column 'text' is blank or not a string on 1 row \(line 62"):
        load_task(name)
    lines = [json.dumps({"text": f"t {i}", "label": i % 2}) for i in range(40)]
    lines[7] = json.dumps({"text": 42, "label": 1})
    name = _write(tmp_path / "t.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"text column 'text' .* \(line 8: 42\)"):
        load_task(name)


def test_numeric_labels_map_to_0_k_in_sorted_order(tmp_path):
    rows = "".join(f"review {i} {'good' if i % 2 else 'bad'},{1 if i % 2 else -1}\n" for i in range(60))
    task = load_task(_write(tmp_path / "pm.csv", "text,label\n" + rows))
    assert task.label_names == ["-1", "1"]
    assert {y for s in task.splits for y in task.splits[s]["label"]} == {0, 1}
    for s in task.splits:  # -1 -> 0, 1 -> 1
        for text, y in zip(task.splits[s]["text"], task.splits[s]["label"]):
            assert y == (1 if "good" in text else 0)
    # stars 1..5 (jsonl ints): five classes 0..4, not six with an empty class 0
    lines = [json.dumps({"text": f"review {i} with {1 + i % 5} stars", "stars": 1 + i % 5}) for i in range(100)]
    task = load_task({"name": _write(tmp_path / "stars.jsonl", "\n".join(lines) + "\n"), "label_column": "stars"})
    assert task.label_names == ["1", "2", "3", "4", "5"] and task.num_labels == 5
    for text, y in zip(task.splits["train"]["text"], task.splits["train"]["label"]):
        assert text.endswith(f"with {y + 1} stars")


def test_non_integer_numeric_labels_fail_naming_the_values(tmp_path):
    rows = "".join(f"review {i},{0.5 if i % 2 else 1.5}\n" for i in range(40))
    with pytest.raises(ConfigError, match=r"label column 'label' holds numbers that are not integers \(0\.5, 1\.5\)"):
        load_task(_write(tmp_path / "scores.csv", "text,label\n" + rows))


def test_a_single_class_fails(tmp_path):
    rows = "".join(f"review {i},pos\n" for i in range(40))
    with pytest.raises(ConfigError, match=r"1 distinct value \(pos\).*at least two classes"):
        load_task(_write(tmp_path / "one.csv", "text,label\n" + rows))


# ----------------------------------------------------------------------------- bad model paths
def _spec(tmp_path: Path, model: str, stages: list[dict] | None = None, task: dict | None = None) -> PipelineSpec:
    return PipelineSpec.from_dict({
        "name": "p", "model": model, "seed": 0, "task": task or _csv_task(tmp_path),
        "eval": {"speed_batches": [1], "speed_iters": 1, "seq_len": 16},
        "stages": stages or [{"name": "t", "recipes": ["finetune"], "train": {"epochs": 1, "max_steps": 2, "batch_size": 4}}]})


def test_a_folder_that_is_not_a_sequence_classifier_fails_before_training(tmp_path, monkeypatch):
    from transformers import BertConfig, ViTConfig

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    vit = tmp_path / "a-vit"
    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64).save_pretrained(vit)
    with pytest.raises(ConfigError, match=r"a-vit' holds a 'vit' model .*AutoModelForSequenceClassification cannot build"):
        PipelineRun(_spec(tmp_path, str(vit)), results_root=tmp_path / "r").run()
    bad = tmp_path / "bad-config"
    bad.mkdir()
    (bad / "config.json").write_text('{"hidden_size": 32}')
    with pytest.raises(ConfigError, match=r"bad-config': its config.json cannot be read"):
        PipelineRun(_spec(tmp_path, str(bad)), results_root=tmp_path / "r").run()
    no_weights = tmp_path / "no-weights"
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64).save_pretrained(no_weights)
    with pytest.raises(ConfigError, match=r"model folder '.*no-weights' could not be loaded"):
        PipelineRun(_spec(tmp_path, str(no_weights)), results_root=tmp_path / "r").run()
    assert not (tmp_path / "r" / "p" / "checkpoints").exists() and not (tmp_path / "r" / "p" / "history").exists()


def _recipe(tmp_path: Path, task: str, model: str) -> str:
    return _write(tmp_path / "r.yaml", f"name: bad\ntask: {{name: {task}}}\nmodel: {model}\nstages:\n  - name: t\n"
                  "    recipes: [finetune]\n    train: {epochs: 1, max_steps: 2, batch_size: 2}\n")


@pytest.mark.parametrize("case", ["empty", "blank", "missing-model"])
def test_cli_prints_an_error_without_traceback(tmp_path, capsys, case):
    from workbench.cli import main

    empty = _write(tmp_path / "empty.csv", "text,label\n")
    blank = _write(tmp_path / "blank.csv", "text,label\n" + _good_rows() + "an unlabelled film,\n")
    task, model, word = {"empty": (empty, "minilm-l6", "empty.csv"), "blank": (blank, "minilm-l6", "label"),
                         "missing-model": (blank, str(tmp_path / "no-such-model"), "no-such-model")}[case]
    rc = main(["run", _recipe(tmp_path, task, model), "--results", str(tmp_path / "res"), "--fresh"])
    err = capsys.readouterr().err
    assert rc != 0 and err.startswith("workbench: error: ") and word in err and "Traceback" not in err


# ----------------------------------------------------------------------------- degenerate results
def test_prediction_counts_and_the_chance_rule():
    from workbench.data.metrics import chance_macro_f1, classification_metrics, degenerate_reason

    m = classification_metrics(np.array([0, 1, 1, 0, 2]), np.array([0, 1, 0, 0, 1]), 3, counts=True)
    assert m["pred_counts"] == [2, 2, 1] and m["label_counts"] == [3, 2, 0]
    # balanced binary: a coin flip (0.5) beats always-majority (1/3)
    assert chance_macro_f1([50, 50], [50, 50]) == pytest.approx(0.5)
    # everything predicted as the 70% class: 2*0.7/1.7 for that class, 0 for the other
    assert chance_macro_f1([100, 0], [70, 30]) == pytest.approx((2 * 0.7 / 1.7) / 2)
    assert "predicts one class ('neg') for all 100 examples" == degenerate_reason([100, 0], [70, 30], 0.41, ["neg", "pos"])
    # the case: a 3-class imbalanced task, one class for everything
    assert degenerate_reason([0, 0, 100], [10, 12, 78], 0.29).startswith("predicts one class ('2')")
    # macro-F1 0.52 on 100 examples: within 2 * 0.5/sqrt(100) = 0.1 of chance 0.5
    assert "within noise of chance" in degenerate_reason([48, 52], [50, 50], 0.52)
    assert degenerate_reason([480, 520], [500, 500], 0.62) is None  # 0.62 > 0.5 + 1/sqrt(1000)
    assert degenerate_reason([480, 520], [500, 500], 0.85) is None


def test_show_table_and_plot_mark_degenerate_stages(monkeypatch):
    from workbench.plots import runs
    from workbench.results import degenerate_notes, format_stage_table

    stages = [{"stage": "teacher", "engine": "torch-fp32", "accuracy": 0.74, "macro_f1": 0.28, "throughput_b1": 10.0,
               "nonzero_params": 100, "degenerate": "predicts one class ('pos') for all 50 examples"},
              {"stage": "student", "engine": "torch-fp32", "accuracy": 0.9, "macro_f1": 0.9, "throughput_b1": 20.0,
               "nonzero_params": 50, "degenerate": None}]
    lines = format_stage_table(stages, ["stage", "accuracy"]).splitlines()
    assert lines[1].split() == ["teacher", "0.7400", "!"] and lines[2].split() == ["student", "0.9000"]
    assert degenerate_notes(stages) == ["! stage 'teacher': predicts one class ('pos') for all 50 examples"]
    figs = []
    monkeypatch.setattr(runs, "save_figure", lambda fig, path: figs.append(fig))
    runs.accuracy_vs_throughput(stages, Path("unused.png"))
    ax = figs[0].axes[0]
    _, labels = ax.get_legend_handles_labels()
    assert labels == ["teacher (torch-fp32) (degenerate)", "student (torch-fp32)"]
    assert tuple(ax.collections[0].get_facecolor()[0][:3]) == (1.0, 0.0, 0.0)


def test_a_collapsed_stage_is_flagged_in_metrics_output_and_show(tmp_path, monkeypatch, capsys):
    from transformers import BertForSequenceClassification

    from workbench.cli import main

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    path = _tiny_dir(tmp_path, "collapsed")
    model = BertForSequenceClassification.from_pretrained(path)
    with torch.no_grad():  # every example goes to class 0
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([10.0, -10.0]))
    model.save_pretrained(path)
    spec = _spec(tmp_path, str(path), [{"name": "int8", "recipes": ["dynamic_int8"]}])
    metrics = PipelineRun(spec, results_root=tmp_path / "r").run()
    out = capsys.readouterr().out
    assert metrics[0]["degenerate"].startswith("predicts one class ('neg')")
    assert metrics[0]["pred_counts"][1] == 0 and sum(metrics[0]["label_counts"]) == metrics[0]["pred_counts"][0]
    assert re.search(r"\[workbench\]   WARNING stage int8: predicts one class \('neg'\)", out)
    saved = json.loads((tmp_path / "r" / "p" / "metrics.json").read_text())
    assert saved["stages"][0]["degenerate"] == metrics[0]["degenerate"]
    assert main(["show", str(tmp_path / "r" / "p")]) == 0
    shown = capsys.readouterr().out
    assert re.search(r"int8\s+torch-int8\s+0\.\d{4} !", shown) and "! stage 'int8': predicts one class" in shown


# ----------------------------------------------------------------------------- class weights
def _ctx(labels: list[int], num_labels: int = 2):
    import datasets

    from workbench.recipes.base import RecipeContext

    data = datasets.Dataset.from_dict({"labels": labels}).with_format("torch")
    task = SimpleNamespace(num_labels=num_labels)
    return RecipeContext(task=task, tokenizer=None, run_dir=None, stage="s", train_data=data)


def test_finetune_class_weights_balanced_and_explicit():
    from workbench.config import parse_config
    from workbench.recipes.finetune import Finetune, FinetuneConfig

    logits, labels = torch.randn(6, 2), torch.tensor([0, 1, 0, 0, 1, 0])
    state = SimpleNamespace(outputs=SimpleNamespace(logits=logits), batch={"labels": labels})
    r = Finetune(parse_config(FinetuneConfig, {"class_weights": "balanced"}, "w"), _ctx([0, 0, 0, 1]))
    r.on_train_begin(state)
    assert torch.allclose(r.class_weight_tensor(), torch.tensor([4 / (2 * 3), 4 / (2 * 1)]))
    _, ce = r.loss_terms(state)["ce"]
    assert torch.isclose(ce, F.cross_entropy(logits, labels, weight=torch.tensor([2 / 3, 2.0])))
    r = Finetune(parse_config(FinetuneConfig, {"class_weights": [1, 5]}, "w"), _ctx([0, 1]))
    _, ce = r.loss_terms(state)["ce"]
    assert torch.isclose(ce, F.cross_entropy(logits, labels, weight=torch.tensor([1.0, 5.0])))
    r = Finetune(parse_config(FinetuneConfig, {"class_weights": [1, 2, 3]}, "stage 's' recipe 'finetune'"), _ctx([0, 1]))
    with pytest.raises(ConfigError, match=r"'class_weights' lists 3 weights but the task has 2 classes"):
        r.on_train_begin(state)
    for bad in ("balance", [-1, 1], [0, 0]):
        with pytest.raises(ConfigError, match="class_weights"):
            parse_config(FinetuneConfig, {"class_weights": bad}, "w")


def test_distill_logits_ce_term_takes_class_weights():
    from workbench.config import parse_config
    from workbench.recipes.distill.logits import LogitDistill, LogitDistillConfig
    from workbench.recipes.distill.losses import get_loss

    logits, z_t, labels = torch.randn(5, 2), torch.randn(5, 2), torch.tensor([0, 1, 1, 0, 0])
    r = LogitDistill(parse_config(LogitDistillConfig, {"class_weights": "balanced"}, "w"), _ctx([0, 0, 0, 1]))
    r.teacher = SimpleNamespace(outputs=lambda batch: SimpleNamespace(logits=z_t))
    r.divergence = get_loss("kl", "w")
    terms = r.loss_terms(SimpleNamespace(outputs=SimpleNamespace(logits=logits), batch={"labels": labels}))
    assert torch.isclose(terms["ce"][1], F.cross_entropy(logits, labels, weight=torch.tensor([2 / 3, 2.0])))


def test_wrong_number_of_class_weights_fails_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    spec = _spec(tmp_path, "no-model-is-loaded-before-the-check", [
        {"name": "t", "recipes": [{"finetune": {"class_weights": [1.0, 2.0, 3.0]}}], "train": {"max_steps": 2}}])
    with pytest.raises(ConfigError, match=r"stage 't' recipe 'finetune': 'class_weights' lists 3 weights but the task has 2 classes"):
        PipelineRun(spec, results_root=tmp_path / "r").run()


def test_class_weights_train_in_a_pipeline_and_leave_stage_keys_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    model = _tiny_dir(tmp_path, "tiny")
    stages = [{"name": "teacher", "recipes": [{"finetune": {"class_weights": "balanced"}}],
               "train": {"epochs": 1, "max_steps": 2, "batch_size": 8}},
              {"name": "student", "recipes": [{"distill_logits": {"teacher": "teacher", "class_weights": [1.0, 2.0]}}],
               "train": {"epochs": 1, "max_steps": 2, "batch_size": 8}}]
    spec = _spec(tmp_path, str(model), stages)
    metrics = PipelineRun(spec, results_root=tmp_path / "r").run()
    assert [m["stage"] for m in metrics] == ["teacher", "student"]
    assert spec.stages[0].to_dict()["recipes"][0]["finetune"]["class_weights"] == "balanced"
    # a stage that leaves class_weights unset hashes as it did before the setting existed
    plain = _spec(tmp_path, str(model))
    assert plain.stages[0].to_dict()["recipes"][0]["finetune"]["class_weights"] is None  # recipe.yaml: filled in
    assert plain.stages[0].to_dict(for_key=True)["recipes"][0]["finetune"] == {"label_smoothing": 0.0, "weight": 1.0}
    assert spec.stages[0].to_dict(for_key=True)["recipes"][0]["finetune"]["class_weights"] == "balanced"


# ----------------------------------------------------------------------------- quiet output, safe loading
def test_tokenize_cache_layer_prints_no_progress_bars(tmp_path, monkeypatch, capfd):
    import datasets

    from workbench.data import tokenize_task
    from workbench.models import load_model

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    datasets.enable_progress_bars()
    _, tokenizer = load_model("minilm-l6", num_labels=2)
    task = load_task(_csv_task(tmp_path))
    tokenize_task(task, tokenizer)  # tokenizes and saves the cache
    tokenize_task(task, tokenizer)  # loads it
    err = capfd.readouterr().err
    assert "Saving the dataset" not in err and "tokenize" not in err and "Loading weights" not in err
    assert datasets.is_progress_bar_enabled()  # the caller's setting is restored


def test_nothing_in_workbench_unpickles():
    sources = {p: p.read_text() for p in (ROOT / "workbench").rglob("*.py")}
    calls = [(p, m) for p, text in sources.items() for m in re.finditer(r"torch\.load\(([^()]|\([^()]*\))*\)", text)]
    assert calls, "expected the trainer and the teacher cache to load checkpoints"
    for p, m in calls:
        assert "weights_only=True" in m.group(0), f"{p}: {m.group(0)}"
    for p, text in sources.items():
        for pattern in (r"^\s*import pickle", r"pickle\.loads?\(", r"trust_remote_code\s*=\s*True",
                        r"allow_pickle\s*=\s*True", r"yaml\.(unsafe_)?load\((?!.*Loader=yaml\.SafeLoader)"):
            assert not re.search(pattern, text, re.M), f"{p}: {pattern}"


def test_saving_a_stage_prints_no_progress_bar(tmp_path, capfd):
    from transformers.utils import logging as hf_logging

    from workbench.models import load_model
    from workbench.pipeline.store import StageStore

    model, tokenizer = load_model("minilm-l6", num_labels=2)
    hf_logging.enable_progress_bar()
    store = StageStore.__new__(StageStore)
    store.artifact = lambda stage: tmp_path / stage  # only the artifact folder matters here
    store.save("s", model, tokenizer, {"key": "k"}, None)
    assert (tmp_path / "s" / "model" / "config.json").exists()
    err = capfd.readouterr().err
    assert "Writing model shards" not in err and "Loading weights" not in err
    assert hf_logging.is_progress_bar_enabled()  # the caller's setting is restored
