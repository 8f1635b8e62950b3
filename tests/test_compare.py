"""`workbench compare`: the method table of a --seeds run, and `--with` joining the methods of
another run that started from the same models (same step stages, same accuracy on every seed)."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from workbench.config import ConfigError

FIELDS = ["seed", "stage", "accuracy", "macro_f1", "throughput_b1", "nonzero_params", "train_seconds", "degenerate"]


def _run(folder: Path, stages: dict[str, list[float]]) -> Path:
    """A run folder whose seeds.csv holds `stages` (name -> accuracy per seed 0, 1, 2)."""
    folder.mkdir(parents=True)
    with (folder / "seeds.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for stage, accs in stages.items():
            for seed, acc in enumerate(accs):
                w.writerow({"seed": seed, "stage": stage, "accuracy": acc, "macro_f1": acc, "throughput_b1": 100.0,
                            "nonzero_params": int(acc * 1e6), "train_seconds": 1.0, "degenerate": ""})
    return folder


def _table(folder: Path) -> str:
    return (folder / "table.md").read_text()


STEPS = {"teacher": [0.86, 0.86, 0.86], "student": [0.84, 0.84, 0.84]}


def test_compare_joins_the_methods_of_a_run_from_the_same_start(tmp_path):
    from workbench.pipeline.compare import compare

    main = _run(tmp_path / "movement", {**STEPS, "b90.magnitude": [0.80, 0.81, 0.80], "b90.hard": [0.82, 0.81, 0.82]})
    soft = _run(main / "soft", {**STEPS, "b90.soft": [0.83, 0.83, 0.84]})
    table = compare(main, [soft])
    by_method = {r["method"]: r for r in table}
    assert set(by_method) == {"magnitude", "hard", "soft"}
    assert by_method["soft"]["vs_best"] == "+0.0000" and by_method["soft"]["run"] == "soft"
    assert by_method["hard"]["vs_best"] == "-0.0167" and by_method["hard"]["run"] == "."
    text = _table(main)
    assert "| run |" in text and "Compare throughput only between rows of one run" in text
    assert by_method["soft"]["nonzero"] == "0.83M"  # the mean of the seeds' non-zero parameters
    with (main / "summary.csv").open() as f:
        summary = list(csv.DictReader(f))
    assert {r["run"] for r in summary if r["method"] == "soft"} == {"soft"} and len(summary) == 9
    # without --with: this run's methods alone, no run column
    compare(main)
    assert "| soft |" not in _table(main) and "| run |" not in _table(main)


@pytest.mark.parametrize("other, expected", [
    ({"teacher": [0.86, 0.86, 0.86], "student": [0.84, 0.8399, 0.84], "b90.soft": [0.8, 0.8, 0.8]},
     "stage 'student' of seed 1 scored 0.839900 there and 0.840000"),
    ({**STEPS, "b90.magnitude": [0.8, 0.8, 0.8]}, "method stage(s) b90.magnitude are in both runs"),
    ({"b90.soft": [0.8, 0.8, 0.8]}, "shares no step stage"),
    ({"teacher": [0.86, 0.86], "student": [0.84, 0.84], "b90.soft": [0.8, 0.8]}, "its seeds (0, 1) differ"),
])
def test_compare_refuses_a_run_that_did_not_start_from_the_same_models(tmp_path, other, expected):
    from workbench.pipeline.compare import compare

    main = _run(tmp_path / "movement", {**STEPS, "b90.magnitude": [0.80, 0.81, 0.80]})
    before = sorted(p.name for p in main.iterdir())
    with pytest.raises(ConfigError, match="compare --with") as err:
        compare(main, [_run(tmp_path / "other", other)])
    assert expected in str(err.value)
    assert sorted(p.name for p in main.iterdir()) == before  # nothing written


def test_compare_refuses_a_shared_step_missing_for_a_seed(tmp_path):
    from workbench.pipeline.compare import compare

    main = _run(tmp_path / "movement", {**STEPS, "b90.magnitude": [0.80, 0.81, 0.80]})
    with (main / "seeds.csv").open() as f:   # seed 2 of the student lost (a run cut short)
        kept = [line for line in f if not line.startswith("2,student,")]
    (main / "seeds.csv").write_text("".join(kept))
    with pytest.raises(ConfigError, match="stage 'student' has no row for seed 2 in"):
        compare(main, [_run(tmp_path / "soft", {**STEPS, "b90.soft": [0.83, 0.83, 0.84]})])


def test_movement_same_run_recipe_repeats_both_movement_recipes():
    """results/movement/same_run/recipe.yaml says its stages are recipes/movement.yaml's and
    recipes/movement_soft.yaml's, unchanged (the README's one-run timing relies on it)."""
    import yaml

    repo = Path(__file__).resolve().parents[1]
    hard, soft, same = (yaml.safe_load((repo / p).read_text()) for p in (
        "recipes/movement.yaml", "recipes/movement_soft.yaml", "results/movement/same_run/recipe.yaml"))
    assert soft["stages"][:2] == hard["stages"][:2]          # the same teacher and student
    assert same["stages"] == hard["stages"] + soft["stages"][2:]
    assert {k: v for k, v in same.items() if k not in ("name", "stages")} == \
        {k: v for k, v in hard.items() if k not in ("name", "stages")}


def test_cli_compare_with(tmp_path, capsys):
    from workbench.cli import main

    run = _run(tmp_path / "movement", {**STEPS, "b90.magnitude": [0.80, 0.81, 0.80]})
    soft = _run(tmp_path / "soft", {**STEPS, "b90.soft": [0.83, 0.83, 0.84]})
    assert main(["compare", str(run), "--with", str(soft)]) == 0
    assert "| b90 | soft |" in capsys.readouterr().out
    assert main(["compare", str(run), "--with", str(tmp_path / "nope")]) == 2
    assert f"no run at '{tmp_path / 'nope'}'" in capsys.readouterr().err
    assert main(["compare", str(run), "--with", str(soft), "--structural"]) == 2
    assert "--with joins method tables" in capsys.readouterr().err
