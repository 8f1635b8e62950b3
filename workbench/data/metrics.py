"""Accuracy and macro-F1."""
from __future__ import annotations

import numpy as np


def classification_metrics(predictions: np.ndarray, labels: np.ndarray, num_labels: int) -> dict[str, float]:
    """Accuracy and macro-averaged F1 (a class absent from both gets no vote, as in sklearn's
    `zero_division=0` over the classes that occur)."""
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
    return {"accuracy": float(np.mean(predictions == labels)) if labels.size else 0.0,
            "macro_f1": float(np.mean(f1s)) if f1s else 0.0}
