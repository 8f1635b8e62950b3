"""Which teacher suits this task? Transferability of each candidate's features to the target
task (DistillNearest / DistillWeighted: Borup, Phoo & Hariharan, 2023, "Distilling from Similar
Tasks for Transfer Learning on a Budget").

Each candidate (an earlier stage, or a model name or path: a model fine-tuned on another task is
the interesting case) embeds the target task's own training texts; the score says how well those
frozen features predict the target's labels. No source data is needed, only the source models.
The target's labels are used by the score alone (LogME needs them; so does the kNN score).

* ``logme`` -- LogME (You, Liu, Wang & Long, 2021, "LogME: Practical Assessment of Pre-trained
  Models for Transfer Learning"): the log marginal evidence per example of a Bayesian linear
  regression from the features to each class's one-hot column, its two hyper-parameters fitted by
  the paper's fixed-point iteration, averaged over classes. Higher is better; comparable across
  models on the same data, not across tasks.
* ``knn`` -- leave-one-out k-nearest-neighbour accuracy under cosine similarity (k = 10).

Features are the teacher's last hidden states mean-pooled over real tokens (``mean``) or its
first token (``cls``). `score_teachers` ranks candidates; `similarity_weights` turns scores into
distillation weights (softmax at a temperature, optionally only the top k: DistillNearest is
top 1); `write_selection` writes the table; `rank_agreement` compares the score's ranking with
the accuracy of students each distilled from one candidate (a multi-seed run's `seeds.csv`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch

from workbench.config import ConfigError
from workbench.forward import forward_with

Measure = Literal["logme", "knn"]
Pooling = Literal["mean", "cls"]


def pool(hidden: torch.Tensor, mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """[B, L, D] -> [B, D]: the first token, or the mean over real tokens."""
    if pooling == "cls":
        return hidden[:, 0]
    if mask is None:
        return hidden.mean(1)
    m = mask.to(hidden.dtype)[..., None]
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


def logme(features: np.ndarray, labels: np.ndarray, iterations: int = 100) -> float:
    """LogME of features [N, D] for integer labels [N]: mean over classes of the per-example log
    evidence of a Bayesian ridge regression onto that class's 0/1 column."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    s2 = s ** 2
    evidences = []
    for k in np.unique(y):
        t = (y == k).astype(np.float64)
        x2 = (u.T @ t) ** 2
        outside = max(float(t @ t - x2.sum()), 0.0)  # the part of t outside the span of the features
        alpha, beta = 1.0, 1.0
        for _ in range(iterations):
            gamma = float((beta * s2 / (alpha + beta * s2)).sum())
            m2 = float((beta ** 2 * s2 * x2 / (alpha + beta * s2) ** 2).sum())
            res2 = float((alpha ** 2 * x2 / (alpha + beta * s2) ** 2).sum()) + outside
            new_alpha, new_beta = gamma / (m2 + 1e-10), (n - gamma) / (res2 + 1e-10)
            done = abs(new_alpha / new_beta - alpha / beta) / (alpha / beta) < 1e-5
            alpha, beta = new_alpha, new_beta
            if done:
                break
        log_det = float(np.log(alpha + beta * s2).sum()) + (d - len(s2)) * math.log(alpha)
        evidence = (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - 0.5 * log_det
                    - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * math.log(2 * math.pi))
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def knn_score(features: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Leave-one-out kNN accuracy (cosine similarity, majority vote of the k nearest)."""
    f = torch.nn.functional.normalize(torch.as_tensor(features, dtype=torch.float32), dim=-1)
    y = torch.as_tensor(labels, dtype=torch.long)
    sim = f @ f.T
    sim.fill_diagonal_(-float("inf"))
    nearest = sim.topk(min(k, len(y) - 1), dim=-1).indices
    votes = torch.nn.functional.one_hot(y[nearest], int(y.max()) + 1).sum(1)
    return float((votes.argmax(-1) == y).float().mean())


@torch.no_grad()
def teacher_features(teacher: Any, data: Any, collate: Any, pooling: str = "mean",
                     batch_size: int = 32) -> np.ndarray:
    """Pooled last-layer features of a `workbench.teachers.Teacher` on every example of `data`."""
    out = []
    for i in range(0, len(data), batch_size):
        batch = collate([data[j] for j in range(i, min(i + batch_size, len(data)))])
        inputs = teacher._inputs(batch)  # the teacher's own tokenizer reads the raw text
        h = forward_with(teacher.model, inputs, {"hidden_states"}).hidden_states[-1]
        out.append(pool(h.float(), inputs.get("attention_mask"), pooling))
    return torch.cat(out).numpy()


def score_teachers(teachers: dict[str, Any], data: Any, collate: Any, measure: str = "logme",
                   pooling: str = "mean", max_examples: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """One row per candidate: teacher, measure, score, rank (1 = best), on up to `max_examples`
    training examples (a seeded subset; the same for every candidate)."""
    n = len(data)
    if n < 2:
        raise ConfigError(f"teacher similarity: needs at least 2 training examples, got {n}")
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_examples].sort().values.tolist()
    subset = data.select(idx) if hasattr(data, "select") else [data[i] for i in idx]
    labels = np.array([int(subset[i]["labels"]) for i in range(len(subset))])
    rows = []
    for name, teacher in teachers.items():
        f = teacher_features(teacher, subset, collate, pooling)
        score = logme(f, labels) if measure == "logme" else knn_score(f, labels)
        rows.append({"teacher": name, "measure": measure, "score": score, "examples": len(subset)})
    for rank, r in enumerate(sorted(rows, key=lambda r: -r["score"]), 1):
        r["rank"] = rank
    return rows


def similarity_weights(scores: Sequence[float], temperature: float = 0.1, top: int | None = None) -> list[float]:
    """softmax(score / temperature) over the candidates, zero outside the `top` best (top=1:
    DistillNearest, all: DistillWeighted)."""
    s = torch.tensor(list(scores), dtype=torch.float64)
    keep = torch.ones_like(s, dtype=torch.bool)
    if top is not None and top < len(s):
        keep[:] = False
        keep[s.topk(top).indices] = True
    w = torch.softmax((s / temperature).masked_fill(~keep, -float("inf")), 0)
    return [float(x) for x in w]


def write_selection(rows: list[dict[str, Any]], path: Path) -> None:
    from workbench.results import write_csv

    write_csv(path, sorted(rows, key=lambda r: r["rank"]),
              ["rank", "teacher", "measure", "score", "weight", "examples"])


def rank_agreement(seeds_csv: Path, selection_csv: Path | Sequence[Path], students: dict[str, str]) -> dict[str, Any]:
    """Does the score rank the candidates the way their students end up? `students` maps each
    candidate to the stage distilled from it alone; `selection_csv` is one selection table or
    several (one per seed: each candidate's score is their mean). Returns one row: the two orders,
    Kendall's tau between score and mean student accuracy, and whether the best-scored is the best
    student."""
    from scipy.stats import kendalltau

    from workbench.results import read_csv

    tables = [selection_csv] if isinstance(selection_csv, (str, Path)) else list(selection_csv)
    per_teacher: dict[str, list[float]] = {}
    for table in tables:
        for r in read_csv(table):
            per_teacher.setdefault(r["teacher"], []).append(float(r["score"]))
    scores = {t: sum(v) / len(v) for t, v in per_teacher.items()}
    rows = read_csv(seeds_csv)
    acc = {}
    for teacher, stage in students.items():
        vals = [float(r["accuracy"]) for r in rows if r["stage"] == stage]
        if not vals or teacher not in scores:
            raise ConfigError(f"rank_agreement: no accuracy for stage '{stage}' in {seeds_csv} or no score for "
                              f"teacher '{teacher}' in {', '.join(str(t) for t in tables)}")
        acc[teacher] = sum(vals) / len(vals)
    names = list(students)
    by_score = sorted(names, key=lambda t: -scores[t])
    by_student = sorted(names, key=lambda t: -acc[t])
    tau = kendalltau([scores[t] for t in names], [acc[t] for t in names]).statistic if len(names) > 1 else float("nan")
    return {"by_score": " > ".join(by_score), "by_student_accuracy": " > ".join(by_student),
            "kendall_tau": float(tau), "best_agrees": by_score[0] == by_student[0],
            **{f"acc[{t}]": round(acc[t], 4) for t in names}, **{f"score[{t}]": round(scores[t], 4) for t in names}}
