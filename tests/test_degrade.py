"""`workbench degrade`: nested, stratified, seed-determined subsets; bad fractions fail before any
work; a tiny two-stage pipeline on two fractions and two seeds writes degradation.csv, summary.csv (slope per
decade from a least-squares fit) and the plot, and a second call reuses every finished stage."""
from __future__ import annotations

import csv
import math
from collections import Counter

import pytest

from test_platform import _csv_task, _tiny_dir
from workbench.config import ConfigError
from workbench.degrade import fit_slope, nested_subsets, parse_fractions


def test_subsets_are_nested_stratified_and_seed_determined():
    labels = [0] * 500 + [1] * 300 + [2] * 200
    fractions = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0]
    subsets = nested_subsets(labels, fractions, seed=3)
    for small, big in zip(subsets, subsets[1:]):
        assert set(small) < set(big)  # nested, strictly growing
    for f, subset in zip(fractions, subsets):
        counts = Counter(labels[i] for i in subset)
        assert counts == {0: round(f * 500), 1: max(1, round(f * 300)), 2: max(1, round(f * 200))}
        assert len(set(subset)) == len(subset) and subset == sorted(subset)
    assert subsets[-1] == list(range(1000))
    assert nested_subsets(labels, fractions, seed=3) == subsets
    assert nested_subsets(labels, fractions, seed=4)[1] != subsets[1]
    # every class keeps at least one example, however small the fraction
    assert Counter(labels[i] for i in nested_subsets(labels, [0.001], seed=0)[0]) == {0: 1, 1: 1, 2: 1}


@pytest.mark.parametrize("text, match", [
    ("0.1,0,1.0", r"0 is outside \(0, 1\]"),
    ("0.5,1.5", r"1.5 is outside \(0, 1\]"),
    ("0.5,0.1", "sorted and distinct"),
    ("0.1,0.1", "sorted and distinct"),
    ("a,b", "comma-separated numbers"),
    ("", "at least one"),
])
def test_bad_fractions_fail(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_fractions(text)


def test_cli_rejects_bad_fractions_before_reading_the_recipe(capsys):
    from workbench.cli import main

    assert main(["degrade", "no-such-recipe.yaml", "--fractions", "0.5,0.25"]) == 2
    assert "sorted and distinct" in capsys.readouterr().err


def test_slope_is_the_least_squares_fit_per_decade():
    slope, intercept = fit_slope([10, 100, 1000], [0.6, 0.7, 0.8])
    assert slope == pytest.approx(0.1) and intercept == pytest.approx(0.5)
    slope, _ = fit_slope([10, 100, 1000, 1000], [0.5, 0.7, 0.8, 0.9])
    assert slope == pytest.approx(0.475 / 2.75)  # Sxy / Sxx over x = 1, 2, 3, 3 (mean 2.25), y mean 0.725
    assert math.isnan(fit_slope([10, 10], [0.5, 0.6])[0])


def test_degrade_runs_each_fraction_and_resumes(tmp_path, monkeypatch):
    from workbench.cli import main

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    model = _tiny_dir(tmp_path, "tiny")
    task = _csv_task(tmp_path)  # 120 examples: 96 train (48 per class)
    recipe = tmp_path / "deg.yaml"
    recipe.write_text(f"""
name: deg
task: {{name: '{task["name"]}', text_column: review, label_column: sentiment}}
model: '{model}'
seed: 0
eval: {{speed_batches: [1], speed_iters: 1, seq_len: 16}}
stages:
  - name: teacher
    recipes: [finetune]
    train: {{epochs: 1, batch_size: 16, lr: 1.0e-3, checkpoint_every: 0}}
  - name: student
    recipes:
      - student: {{layers: [0]}}
      - distill_logits: {{teacher: teacher}}
    train: {{epochs: 1, batch_size: 16, lr: 1.0e-3, checkpoint_every: 0}}
""")
    args = ["degrade", str(recipe), "--fractions", "0.1,1.0", "--seeds", "0,1", "--results", str(tmp_path / "r"),
            "--min-steps", "2"]
    assert main(args) == 0
    folder = tmp_path / "r" / "deg"
    with open(folder / "degradation.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["fraction"], r["n_train"], r["stage"], r["seed"]) for r in rows][:4] == [
        ("0.1", "10", "teacher", "0"), ("0.1", "10", "student", "0"), ("0.1", "10", "teacher", "1"),
        ("0.1", "10", "student", "1")]
    assert sorted({int(r["n_train"]) for r in rows}) == [10, 96] and len(rows) == 8
    with open(folder / "fraction-0.1" / "seed-0" / "history" / "teacher.csv") as f:
        assert len(list(csv.DictReader(f))) == 2  # 10 examples = 1 step per epoch: 2 epochs for --min-steps 2
    with open(folder / "fraction-1" / "seed-0" / "history" / "teacher.csv") as f:
        assert len(list(csv.DictReader(f))) == 6  # 96 examples, batch 16: the written single epoch
    with open(folder / "summary.csv") as f:
        summary = {r["stage"]: r for r in csv.DictReader(f)}
    for stage in ("teacher", "student"):
        rs = [r for r in rows if r["stage"] == stage]
        slope, _ = fit_slope([int(r["n_train"]) for r in rs], [float(r["accuracy"]) for r in rs])
        assert float(summary[stage]["slope_per_decade"]) == pytest.approx(slope)
        small, large = (float(summary[stage][f"accuracy_{k}"]) for k in ("smallest", "largest"))
        assert float(summary[stage]["degradation_pct"]) == pytest.approx(100 * (large - small) / large)
    assert (folder / "degradation.png").stat().st_size > 0
    # again: every stage of every fraction is reused, the same rows come out
    assert main(args) == 0
    with open(folder / "degradation.csv") as f:
        assert list(csv.DictReader(f)) == rows
    import json

    done = json.loads((folder / "fraction-0.1" / "seed-1" / "metrics.json").read_text())
    assert all(s.get("reused_from") for s in done["stages"])
