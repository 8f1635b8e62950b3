"""Did the teachers-and-data papers' claims hold? `workbench compare RUN --teachers`.

For a multi-seed run of `recipes/multi_teacher.yaml` or `recipes/pseudo_labels.yaml` this writes
the method table of `workbench compare` (`summary.csv`, `table.md`, `methods.png`), then

* `claims.csv`: one row per claim: the paper, the claim as tested here, the two stages compared,
  their mean test accuracy, the paired difference (same seed, same data order) as mean ± std over
  seeds, on how many seeds the claimed winner won, and the verdict;
* a "Claims" section appended to `table.md` saying, per claim, whether it held here;
* for a pseudo-label run, the keep report (`keep.csv`, `keep.md`: `workbench.recipes.data.report`);
* for a run with a similarity-weighted stage, `rank_agreement.csv`: does the transferability score
  (LogME) rank the candidate teachers the way the students distilled from each alone end up?

A claim "better" holds when the mean paired difference is above one test sentence's worth of
accuracy (`tie`) and the claimed winner won on every seed; above `tie` but not on every seed is
"held on average"; within `tie` either way is "tie"; below is "did not hold". A claim "on par"
holds when the mean difference is above -`par` (0.5 points: about five test sentences of
rt-sentiment), fixed before the runs were looked at.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from workbench.config import ConfigError
from workbench.results import atomic_write_text, read_csv, write_csv

PAR = 0.005
"""An "on par" claim holds above -PAR (0.5 points: about five test sentences of rt-sentiment)."""
COLUMNS = ["paper", "claim", "winner", "baseline", "kind", "acc_winner", "acc_baseline", "mean_diff", "std_diff",
           "wins", "n", "verdict"]


@dataclass(frozen=True)
class Claim:
    paper: str
    claim: str
    winner: str
    """The stage the paper says does better (or as well)."""
    baseline: str
    kind: Literal["better", "on_par"] = "better"


MULTI_TEACHER = [
    Claim("Baby Llama", "KD from an ensemble of teachers beats KD from one", "student.ensemble", "student.kd"),
    Claim("Baby Llama", "the ensemble-distilled student beats training without distillation",
          "student.ensemble", "student.finetune"),
    Claim("Baby Llama", "the ensemble-distilled student beats its stronger teacher (the 6-layer teacher; the "
          "weaker one is student.kd, the row above)", "student.ensemble", "teacher"),
    Claim("UNIC", "ladder projectors + teacher dropping over several teachers beat single-teacher KD",
          "student.unic", "student.kd"),
    Claim("Distilling from Similar Tasks (DistillWeighted)", "similarity-weighted teachers beat the best single "
          "teacher's KD", "student.similarity", "student.kd"),
    Claim("Distilling from Similar Tasks (DistillWeighted)", "similarity-weighted distillation beats plain "
          "fine-tuning", "student.similarity", "student.finetune"),
    Claim("PROD", "progressive teachers + a disagreement curriculum beat KD from the strongest teacher alone",
          "student.prod", "student.kd"),
]
PSEUDO_LABELS = [
    Claim("Distil-Whisper", "pseudo-labels filtered by agreement with gold beat unfiltered pseudo-labels",
          "copy3.pl_gold_agree", "copy3.pl_none"),
    Claim("uDistil-Whisper", "a label-free filter (teacher/student agreement) beats no filter",
          "copy3.pl_student_agree", "copy3.pl_none"),
    Claim("uDistil-Whisper", "a label-free filter (teacher/student agreement) is on par with the gold filter",
          "copy3.pl_student_agree", "copy3.pl_gold_agree", "on_par"),
    Claim("uDistil-Whisper", "a label-free filter (teacher confidence >= 0.9) beats no filter",
          "copy3.pl_confidence", "copy3.pl_none"),
    Claim("uDistil-Whisper", "a label-free filter (teacher confidence >= 0.9) is on par with the gold filter",
          "copy3.pl_confidence", "copy3.pl_gold_agree", "on_par"),
    Claim("Pre-trained Summarization Distillation", "shrink-and-fine-tune beats KD (their CNN/DM finding)",
          "copy3.finetune", "copy3.kd_logits"),
    Claim("Pre-trained Summarization Distillation", "shrink-and-fine-tune beats pseudo-labels (CNN/DM; "
          "on XSUM pseudo-labels won)", "copy3.finetune", "copy3.pl_none"),
]


def _accuracy_by_seed(rows: list[dict[str, Any]], stage: str) -> dict[str, float]:
    return {r["seed"]: float(r["accuracy"]) for r in rows if r["stage"] == stage and r.get("accuracy") not in ("", None)}


def judge(claim: Claim, rows: list[dict[str, Any]], tie: float, par: float = PAR) -> dict[str, Any] | None:
    """The claim's row, or None when the run lacks one of its stages. Differences are paired by seed."""
    a, b = _accuracy_by_seed(rows, claim.winner), _accuracy_by_seed(rows, claim.baseline)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    mean = statistics.fmean(diffs)
    std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    wins = sum(d > 0 for d in diffs)
    if claim.kind == "on_par":
        verdict = "held" if mean > -par else "did not hold"
    elif abs(mean) <= tie:
        verdict = "tie"
    elif mean > 0:
        verdict = "held" if wins == len(seeds) else "held on average"
    else:
        verdict = "did not hold"
    return {"paper": claim.paper, "claim": claim.claim, "winner": claim.winner, "baseline": claim.baseline,
            "kind": claim.kind, "acc_winner": statistics.fmean(a[s] for s in seeds),
            "acc_baseline": statistics.fmean(b[s] for s in seeds), "mean_diff": mean, "std_diff": std,
            "wins": wins, "n": len(seeds), "verdict": verdict}


def _test_size(folder: Path) -> int | None:
    from workbench.results import read_json

    for metrics in sorted(folder.glob("seed-*/metrics.json")):
        n = read_json(metrics).get("eval_examples")
        if n:
            return int(n)
    return None


def _single_teacher_students(folder: Path, stages: set[str]) -> dict[str, str]:
    """{candidate name: the stage distilled from it alone}: the run's own `teacher` taught
    `student.kd`; any other candidate of `student.similarity` (by its `label`) `student.<label>`."""
    import yaml

    spec = yaml.safe_load((sorted(folder.glob("seed-*/recipe.yaml"))[0]).read_text())
    stage = next(s for s in spec["stages"] if s["name"] == "student.similarity")
    entries = next(r["distill_multi_teacher"]["teachers"] for r in stage["recipes"] if "distill_multi_teacher" in r)
    out = {}
    for e in entries:
        name, label = (e, e) if isinstance(e, str) else (e["name"], e.get("label") or e["name"])
        student = "student.kd" if name == "teacher" else f"student.{label}"
        if student in stages:
            out[name] = student
    return out


def _rank_agreement(folder: Path, stages: set[str]) -> dict[str, Any] | None:
    """LogME's ranking of the similarity stage's candidates (score averaged over the seeds' tables)
    vs their single-teacher students."""
    from workbench.teacher_similarity import rank_agreement

    tables = sorted(folder.glob("seed-*/teacher_selection/student.similarity.csv"))
    if not tables:
        return None
    students = _single_teacher_students(folder, stages)
    if len(students) < 2:
        return None
    return rank_agreement(folder / "seeds.csv", tables, students)


def teachers_report(folder: Path | str) -> list[dict[str, Any]]:
    """Method table, claims, and (where they apply) keep and rank-agreement reports for `folder`."""
    from workbench.pipeline.compare import compare
    from workbench.recipes.data.report import keep_table

    folder = Path(folder)
    compare(folder)
    rows = read_csv(folder / "seeds.csv")
    stages = {r["stage"] for r in rows}
    claims = [c for c in MULTI_TEACHER + PSEUDO_LABELS if c.winner in stages and c.baseline in stages]
    if not claims:
        raise ConfigError(f"{folder}: no stages of recipes/multi_teacher.yaml or recipes/pseudo_labels.yaml "
                          f"(found {', '.join(sorted(stages))})")
    n_test = _test_size(folder)
    tie = 1.0 / n_test if n_test else 0.001
    out = [r for r in (judge(c, rows, tie) for c in claims) if r is not None]
    write_csv(folder / "claims.csv", out, COLUMNS)
    lines = ["", "## Claims", "",
             f"Paired by seed (winner minus baseline, test accuracy in points); tie: within one test sentence "
             f"({100 * tie:.2f} points); on par: above -{100 * PAR:.1f} points.", ""]
    for r in out:
        lines.append(f"- {r['paper']}: {r['claim']} (`{r['winner']}` vs `{r['baseline']}`: "
                     f"{100 * r['acc_winner']:.2f} vs {100 * r['acc_baseline']:.2f}, "
                     f"{100 * r['mean_diff']:+.2f} ± {100 * r['std_diff']:.2f}, won {r['wins']}/{r['n']} seeds): "
                     f"**{r['verdict']}**.")
    if any(folder.glob("seed-*/pseudo_labels")):
        keep_table(folder)
        lines += ["", "Pseudo-labels kept: see `keep.md`."]
    agreement = _rank_agreement(folder, stages)
    if agreement is not None:
        write_csv(folder / "rank_agreement.csv", [agreement])
        lines += ["", f"- DistillNearest: LogME ranks the candidates {agreement['by_score']}; their single-teacher "
                      f"students rank {agreement['by_student_accuracy']}: the best-scored teacher "
                      f"{'gives' if agreement['best_agrees'] else 'does not give'} the best student "
                      f"(`rank_agreement.csv`)."]
    table = folder / "table.md"
    atomic_write_text(table, table.read_text() + "\n".join(lines) + "\n")
    return out
