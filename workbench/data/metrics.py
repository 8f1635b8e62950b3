"""Accuracy and macro-F1, per-class prediction counts, and the check for degenerate results."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def classification_metrics(predictions: np.ndarray, labels: np.ndarray, num_labels: int,
                           counts: bool = False) -> dict[str, Any]:
    """Accuracy and macro-averaged F1 (a class absent from both gets no vote, as in sklearn's
    `zero_division=0` over the classes that occur). With `counts`, also `pred_counts` and
    `label_counts`: how many examples were predicted as / labelled with each class."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions shape {predictions.shape} != labels shape {labels.shape}")
    f1s = []
    for c in range(num_labels):
        tp = np.sum((predictions == c) & (labels == c))
        fp = np.sum((predictions == c) & (labels != c))
        fn = np.sum((predictions != c) & (labels == c))
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    out: dict[str, Any] = {"accuracy": float(np.mean(predictions == labels)) if labels.size else 0.0,
                           "macro_f1": float(np.mean(f1s)) if f1s else 0.0}
    if counts:
        out["pred_counts"] = [int(np.sum(predictions == c)) for c in range(num_labels)]
        out["label_counts"] = [int(np.sum(labels == c)) for c in range(num_labels)]
    return out


def chance_macro_f1(pred_counts: Sequence[int], label_counts: Sequence[int]) -> float:
    """The macro-F1 a classifier gets without looking at the input: the larger of
    (a) the majority-class predictor's macro-F1 (every example gets the most frequent label), and
    (b) the expected macro-F1 of predictions drawn at random with the evaluated model's own class
        frequencies q (per class 2·p·q / (p + q), p the label frequency),
    averaged over the classes that occur, as `classification_metrics` does."""
    p = np.asarray(label_counts, dtype=float)
    q = np.asarray(pred_counts, dtype=float)
    n = p.sum()
    if n <= 0:
        return 0.0
    p, q = p / n, q / max(q.sum(), 1.0)
    present = p > 0
    m = int(np.argmax(p))
    majority = (2 * p[m] / (p[m] + 1.0)) / int(present.sum())
    occur = (p + q) > 0
    shuffled = float(np.mean(2 * p[occur] * q[occur] / (p[occur] + q[occur])))
    return float(max(majority, shuffled))


def degenerate_reason(pred_counts: Sequence[int], label_counts: Sequence[int], macro_f1: float,
                      label_names: Sequence[str] | None = None) -> str | None:
    """Why a measured result is not better than guessing, or None when it is.

    Degenerate when the model predicts one class for every example (of a set with more than one
    class), or when its macro-F1 is within noise of chance: not above `chance_macro_f1` plus two
    standard errors, taking the largest standard error of an accuracy measured on n examples,
    0.5 / sqrt(n) (a margin of 1 / sqrt(n): 0.03 on 1,000 examples, 0.06 on 300).
    """
    n = int(sum(label_counts))
    if n == 0:
        return None
    used = [c for c, k in enumerate(pred_counts) if k > 0]
    if len(used) == 1 and sum(1 for k in label_counts if k > 0) > 1:
        c = used[0]
        name = label_names[c] if label_names is not None and c < len(label_names) else str(c)
        return f"predicts one class ('{name}') for all {n} examples"
    chance = chance_macro_f1(pred_counts, label_counts)
    margin = 1.0 / math.sqrt(n)
    if macro_f1 <= chance + margin:
        return (f"macro-F1 {macro_f1:.4f} is within noise of chance ({chance:.4f} without looking at the "
                f"input, + 2 standard errors = {chance + margin:.4f} on {n} examples)")
    return None
