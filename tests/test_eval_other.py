"""`workbench eval RUN --task TASK`: a finished run's stages measured on another task with the
same labels (a domain-shift check). Tiny: a 2-layer BERT fine-tuned 3 steps on the CSV task of
test_platform, then dynamic int8 (not saved: rebuilt for the check)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.config import ConfigError

from test_platform import _spec, _tiny_dir


def _other_task(tmp: Path, labels: tuple[str, str] = ("pos", "neg"), name: str = "other") -> Path:
    """A task folder with its own splits; the test split is 7:3, the others balanced, so the
    split measured shows in the numbers even for a model that predicts one class."""
    pos, neg = labels

    def rows(n_pos: int, n_neg: int, start: int) -> str:
        return "text,label\n" + "".join(f"a {'fine' if y == pos else 'dreary'} show episode {start + i},{y}\n"
                                        for i, y in enumerate([pos] * n_pos + [neg] * n_neg))

    folder = tmp / name
    folder.mkdir()
    for split, (n_pos, n_neg) in {"train": (20, 20), "validation": (3, 3), "test": (7, 3)}.items():
        (folder / f"{split}.csv").write_text(rows(n_pos, n_neg, 100 * len(split)))
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from workbench.pipeline import PipelineRun

    tmp = tmp_path_factory.mktemp("eval")
    mp = pytest.MonkeyPatch()
    mp.setenv("WORKBENCH_CACHE", str(tmp / "cache"))
    spec = _spec(tmp, [{"name": "t", "recipes": ["finetune"], "train": {"epochs": 1, "batch_size": 16, "max_steps": 3}},
                       {"name": "int8", "recipes": ["dynamic_int8"]}], str(_tiny_dir(tmp, "tiny")))
    PipelineRun(spec, results_root=tmp / "r").run()
    yield tmp, tmp / "r" / "p"
    mp.undo()


def test_eval_measures_every_finished_stage_on_the_other_task(run, capsys, monkeypatch):
    from workbench.cli import main
    from workbench.data import Collator, load_task, tokenize_task
    from workbench.evaluate import accuracy_metrics
    from workbench.models.edits import load_edited_model
    from workbench.models.vocab import load_stage_tokenizer
    from workbench.results import read_csv

    tmp, folder = run
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp / "cache"))
    other = _other_task(tmp)
    assert main(["eval", str(folder), "--task", str(other)]) == 0
    out = capsys.readouterr().out
    rows = read_csv(folder / "eval-other.csv")
    assert [r["stage"] for r in rows] == ["t", "int8"]
    assert [r["engine"] for r in rows] == ["torch-fp32", "torch-int8"]  # int8 rebuilt from t, not skipped
    assert {r["examples"] for r in rows} == {"10"} and {r["split"] for r in rows} == {"test"}  # not the 6 of validation
    # the numbers are the stage's model on the other task's test split, and the run's own beside them
    task = load_task(str(other))
    model, tok = load_edited_model(folder / "artifacts/t/model"), load_stage_tokenizer(folder / "artifacts/t/model")
    direct = accuracy_metrics(model, tokenize_task(task, tok)["test"], Collator(tok), 2)
    assert float(rows[0]["accuracy"]) == pytest.approx(direct["accuracy"], abs=1e-6)
    own = {s["stage"]: s for s in json.loads((folder / "metrics.json").read_text())["stages"]}
    assert float(rows[0]["run_accuracy"]) == pytest.approx(own["t"]["accuracy"], abs=1e-6)
    assert float(rows[1]["params"]) == own["int8"]["params"]  # size and speed: the run's, task-independent
    # the table of `workbench show`, with the run's own accuracy beside the other task's
    header = out.splitlines()[1].split()
    assert header[:5] == ["stage", "engine", "accuracy", "macro_f1", "run_accuracy"] and "throughput_b1" in header
    assert f"written: {folder / 'eval-other.csv'}" in out
    assert not list(folder.glob(".eval-other.csv.*"))  # written atomically: no temporary left behind
    # one stage again: its row is replaced, the other stage's row is kept
    assert main(["eval", str(folder), "--task", str(other), "--stage", "int8"]) == 0
    assert [r["stage"] for r in read_csv(folder / "eval-other.csv")] == ["t", "int8"]


def test_eval_refuses_another_label_set_naming_both(run, capsys, monkeypatch):
    from workbench.cli import main
    from workbench.pipeline.eval_other import evaluate_run

    tmp, folder = run
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp / "cache"))
    other = _other_task(tmp, ("good", "bad"), "graded")
    with pytest.raises(ConfigError, match=r"labels \[bad, good\] but run 'p' was trained on .* with the labels "
                                          r"\[neg, pos\]; a domain-shift check needs the same label set"):
        evaluate_run(folder, str(other))
    assert not (folder / "eval-graded.csv").exists()
    assert main(["eval", str(folder), "--task", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("workbench: error: ") and "Traceback" not in err


@pytest.mark.parametrize("args, expected", [
    (["--stage", "nope"], "run 'p' has no stage 'nope' (stages: t, int8)"),
    (["--split", "dev"], "--split must be one of train, validation, test, got 'dev'"),
])
def test_eval_bad_arguments_fail_before_any_model_loads(run, args, expected, monkeypatch):
    from workbench.pipeline.eval_other import evaluate_run

    tmp, folder = run
    kwargs = {"stage": args[1]} if args[0] == "--stage" else {"split": args[1]}
    with pytest.raises(ConfigError) as err:
        evaluate_run(folder, "no-such-task-is-loaded-first", **kwargs)
    assert expected in str(err.value)


def test_eval_of_a_folder_without_a_run_says_what_it_needs(tmp_path):
    from workbench.pipeline.eval_other import evaluate_run

    with pytest.raises(ConfigError, match=r"no finished run at .*looked for .*metrics.json"):
        evaluate_run(tmp_path, "rt-sentiment")


def test_eval_of_a_file_with_other_columns_names_the_flags(tmp_path, monkeypatch, capsys):
    """The other task's columns are 'text' and 'label' unless told: a file with other names fails
    naming the command-line flag (the message said to set them "in the recipe"), and runs with it."""
    from conftest import tiny_spec, write_tiny_task

    from workbench.cli import main
    from workbench.pipeline import PipelineRun, PipelineSpec

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    csv_path, folder = write_tiny_task(tmp_path, repeats=5)
    stages = [{"name": "t", "recipes": ["finetune"], "train": {"epochs": 1, "batch_size": 16, "max_steps": 2}}]
    PipelineRun(PipelineSpec.from_dict(tiny_spec(csv_path, folder, stages)), results_root=tmp_path / "r").run()
    other = tmp_path / "other.csv"
    other.write_text("review,sentiment\n" + "".join(f"a {w} show {i},{y}\n" for i in range(20)
                                                     for w, y in (("good", "pos"), ("awful", "neg"))))
    run = str(tmp_path / "r" / "s")
    assert main(["eval", run, "--task", str(other)]) == 2
    err = capsys.readouterr().err
    assert "text_column 'text' not found" in err and "--text-column for `workbench eval`" in err
    assert main(["eval", run, "--task", str(other), "--text-column", "review", "--label-column", "sentiment"]) == 0
    assert (tmp_path / "r" / "s" / "eval-other.csv").exists()
