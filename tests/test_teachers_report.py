"""`workbench compare RUN --teachers`: claims paired by seed, with their verdicts."""
from __future__ import annotations

import pytest

from workbench.config import ConfigError
from workbench.results import read_csv, write_csv
from workbench.teachers_report import Claim, judge, teachers_report

SEEDS_COLUMNS = ["seed", "stage", "engine", "accuracy", "macro_f1", "throughput_b1", "degenerate"]


def _rows(acc: dict[str, list[float]]) -> list[dict]:
    return [{"seed": str(s), "stage": stage, "engine": "torch-fp32", "accuracy": a, "macro_f1": a,
             "throughput_b1": 100.0, "degenerate": ""} for stage, accs in acc.items() for s, a in enumerate(accs)]


@pytest.mark.parametrize("winner, verdict", [
    ([0.85, 0.86, 0.84], "held"),               # +1 point on every seed
    ([0.85, 0.86, 0.825], "held on average"),    # wins 2 of 3, mean still above
    ([0.8405, 0.8495, 0.8300], "tie"),          # within one test sentence on average
    ([0.83, 0.84, 0.82], "did not hold"),
])
def test_better_claim_is_judged_on_paired_seed_differences(winner, verdict):
    rows = _rows({"a": winner, "b": [0.84, 0.85, 0.83]})
    row = judge(Claim("p", "a beats b", "a", "b"), rows, tie=0.001)
    assert row["verdict"] == verdict and row["n"] == 3
    assert row["mean_diff"] == pytest.approx(sum(winner) / 3 - 0.84)


def test_on_par_claim_allows_half_a_point_and_a_missing_stage_gives_no_row():
    rows = _rows({"a": [0.836, 0.846, 0.826], "b": [0.84, 0.85, 0.83]})
    assert judge(Claim("p", "a as good as b", "a", "b", "on_par"), rows, tie=0.001)["verdict"] == "held"
    rows = _rows({"a": [0.83, 0.84, 0.82], "b": [0.84, 0.85, 0.83]})
    assert judge(Claim("p", "a as good as b", "a", "b", "on_par"), rows, tie=0.001)["verdict"] == "did not hold"
    assert judge(Claim("p", "x", "a", "nope"), rows, tie=0.001) is None


def test_report_writes_the_claims_of_a_multi_teacher_run(tmp_path):
    acc = {"teacher": [0.86] * 3, "student.kd": [0.84, 0.85, 0.83], "student.finetune": [0.83, 0.84, 0.83],
           "student.ensemble": [0.85, 0.86, 0.84], "student.prod": [0.83, 0.84, 0.82]}
    write_csv(tmp_path / "seeds.csv", _rows(acc), SEEDS_COLUMNS)
    out = teachers_report(tmp_path)
    by = {(r["winner"], r["baseline"]): r["verdict"] for r in out}
    assert by == {("student.ensemble", "student.kd"): "held", ("student.ensemble", "student.finetune"): "held",
                  ("student.ensemble", "teacher"): "did not hold", ("student.prod", "student.kd"): "did not hold"}
    assert len(read_csv(tmp_path / "claims.csv")) == 4
    table = (tmp_path / "table.md").read_text()
    assert "## Claims" in table and "Baby Llama" in table and "PROD" in table and (tmp_path / "methods.png").exists()


def test_report_of_a_run_without_the_recipes_stages_names_them(tmp_path):
    write_csv(tmp_path / "seeds.csv", _rows({"teacher": [0.86], "copy3.other": [0.8]}), SEEDS_COLUMNS)
    with pytest.raises(ConfigError, match="copy3.other"):
        teachers_report(tmp_path)


def _similarity_run(tmp_path, scores_per_seed: list[dict[str, float]]) -> str:
    """A run folder with student.similarity's recipe and one selection table per seed."""
    import yaml

    from workbench.teacher_similarity import write_selection

    acc = {"teacher": [0.86] * 3, "student.kd": [0.84, 0.85, 0.83], "student.other": [0.80, 0.81, 0.79],
           "student.similarity": [0.845, 0.85, 0.835]}
    write_csv(tmp_path / "seeds.csv", _rows(acc), SEEDS_COLUMNS)
    other = "some/dir/model"
    recipe = {"stages": [{"name": "student.similarity", "recipes": [{"student": {"layers": [0]}}, {
        "distill_multi_teacher": {"teachers": [{"name": "teacher"}, {"name": other, "label": "other"}]}}]}]}
    for seed, scores in enumerate(scores_per_seed):
        (tmp_path / f"seed-{seed}" / "teacher_selection").mkdir(parents=True)
        (tmp_path / f"seed-{seed}" / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        rows = [{"teacher": t, "measure": "logme", "score": scores[t], "weight": 0.5, "examples": 9}
                for t in ("teacher", other)]
        for rank, r in enumerate(sorted(rows, key=lambda r: -r["score"]), 1):
            r["rank"] = rank
        write_selection(rows, tmp_path / f"seed-{seed}" / "teacher_selection" / "student.similarity.csv")
    return other


def test_report_ranks_the_similarity_candidates_by_their_single_teacher_students(tmp_path):
    other = _similarity_run(tmp_path, [{"some/dir/model": -0.2, "teacher": -0.5}])
    teachers_report(tmp_path)
    row = read_csv(tmp_path / "rank_agreement.csv")[0]
    assert row["by_score"] == f"{other} > teacher" and row["by_student_accuracy"] == f"teacher > {other}"
    assert row["best_agrees"] == "False"
    assert "does not give the best student" in (tmp_path / "table.md").read_text()


def test_rank_agreement_averages_the_score_over_the_seeds_tables(tmp_path):
    other = _similarity_run(tmp_path, [{"some/dir/model": -0.2, "teacher": -0.5},
                                       {"some/dir/model": -0.9, "teacher": -0.3}])
    teachers_report(tmp_path)
    row = read_csv(tmp_path / "rank_agreement.csv")[0]
    assert row["by_score"] == f"teacher > {other}" and row["best_agrees"] == "True"
    assert float(row[f"score[{other}]"]) == pytest.approx(-0.55)
