"""The unlabeled pool a teacher labels, and the rules that decide which pseudo-labels to keep.

A pool is read from a file or a dataset, like a task is, but a label column is optional: where
gold labels exist they are only used to *measure* the pseudo-labels (and by the
`gold_agreement` filter), never to train on. The filters are pure functions of the teacher's
probabilities (and gold labels or a second model's predictions), so a test can state exactly
which examples each one admits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workbench.config import ConfigError
from workbench.data.tables import TABLE_SUFFIXES, read_table
from workbench.data.tasks import is_saved_dataset, load_saved_dataset

FILTERS = ("none", "gold_agreement", "confidence", "entropy", "teacher_agreement", "student_agreement")
THRESHOLD_FILTERS = ("confidence", "entropy")
AGREEMENT_FILTERS = ("teacher_agreement", "student_agreement")


@dataclass
class Pool:
    """Texts to pseudo-label, with gold labels (class indices of the task) where they exist."""

    texts: list[str]
    gold: list[int] | None
    source: str


def read_pool(source: str, text_column: str, label_column: str | None, label_names: list[str] | None,
              where: str) -> Pool:
    """A pool from a text file (one example per non-blank line), a .csv/.tsv/.jsonl/.json/.parquet
    table (the `text_column`; gold labels from `label_column` when the table has it), a dataset
    saved with save_to_disk or `hf:<dataset>` (its train split). `label_names`: the task's
    classes, to map gold labels given by name or index (None: labels are not mapped, only checked
    to exist)."""
    if source.startswith("hf:"):
        return _read_hf(source, text_column, label_column, label_names, where)
    path = Path(source).expanduser()
    if is_saved_dataset(path):
        return _read_saved(source, text_column, label_column, label_names, where)
    if not path.is_file():
        raise ConfigError(f"{where}: 'pool' file '{source}' does not exist; give a text file (one example per "
                          "line), a .csv/.tsv/.jsonl/.json/.parquet table, a Hugging Face dataset saved with "
                          "save_to_disk, hf:<dataset>, or null for the task's training split")
    if path.suffix.lower() in TABLE_SUFFIXES:
        rows = read_table(path)
        if not rows:
            raise ConfigError(f"{where}: 'pool' file '{source}' is empty (no rows); add examples")
        if not any(text_column in r for _, r in rows):
            found = sorted({str(k) for _, r in rows for k in r})
            raise ConfigError(f"{where}: 'pool' file '{source}' has no text column '{text_column}' (columns: "
                              f"{found}); set 'text_column'")
        kept = [(n, r) for n, r in rows if isinstance(r.get(text_column), str) and r[text_column].strip()]
        if not kept:
            raise ConfigError(f"{where}: 'pool' file '{source}' has only blank texts in '{text_column}'")
        texts = [r[text_column] for _, r in kept]
        gold = None
        if label_column and all(label_column in r and str(r[label_column]).strip() for _, r in kept):
            gold = _map_labels([r[label_column] for _, r in kept], label_names, where, source)
        return Pool(texts, gold, str(path))
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: 'pool' file '{source}' is not UTF-8 text ({exc.reason}); save it as UTF-8") from None
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise ConfigError(f"{where}: 'pool' file '{source}' is empty or holds only blank lines; put one "
                          "example per line")
    return Pool(texts, None, str(path))


def _read_hf(source: str, text_column: str, label_column: str | None, label_names: list[str] | None,
             where: str) -> Pool:
    import datasets

    try:
        ds = datasets.load_dataset(source[3:], split="train")
    except Exception as exc:  # offline, unknown name, ...: the library's message, named
        raise ConfigError(f"{where}: 'pool' {source!r} could not be loaded: {exc}") from None
    return _dataset_pool(ds, source, text_column, label_column, label_names, where)


def _read_saved(source: str, text_column: str, label_column: str | None, label_names: list[str] | None,
                where: str) -> Pool:
    """A dataset saved with save_to_disk: the Dataset, or a DatasetDict's train split."""
    splits = load_saved_dataset(source, f"{where}: 'pool' {source!r}")
    if "train" not in splits:
        raise ConfigError(f"{where}: 'pool' {source!r} has no 'train' split (splits: {list(splits)})")
    return _dataset_pool(splits["train"], source, text_column, label_column, label_names, where)


def _dataset_pool(ds: Any, source: str, text_column: str, label_column: str | None,
                  label_names: list[str] | None, where: str) -> Pool:
    if text_column not in ds.column_names:
        raise ConfigError(f"{where}: 'pool' {source!r} has no text column '{text_column}' "
                          f"(columns: {ds.column_names}); set 'text_column'")
    texts = [t for t in ds[text_column] if isinstance(t, str) and t.strip()]
    if not texts:
        raise ConfigError(f"{where}: 'pool' {source!r} has no non-blank texts")
    gold = None
    if label_column and label_column in ds.column_names and len(texts) == len(ds):
        gold = _map_labels(list(ds[label_column]), label_names, where, source)
    return Pool(texts, gold, source)


def _map_labels(values: list[Any], names: list[str] | None, where: str, source: str) -> list[int]:
    """Gold labels as class indices of the task: by class name, else as integer indices."""
    if names is None:
        return [0] * len(values)
    by_name = {n: i for i, n in enumerate(names)}
    keys = [v.strip() if isinstance(v, str) else v for v in values]
    if all(isinstance(k, str) and k in by_name for k in keys):
        return [by_name[k] for k in keys]
    try:
        ints = [int(k) for k in keys]
    except (TypeError, ValueError):
        ints = None
    if ints is not None and all(0 <= i < len(names) for i in ints) and all(float(k) == int(k) for k in keys):
        return ints
    bad = sorted({str(k) for k in keys if not (isinstance(k, str) and k in by_name)})[:5]
    raise ConfigError(f"{where}: 'pool' {source!r}: gold labels {bad} are neither the task's class names "
                      f"({names}) nor class indices 0..{len(names) - 1}; fix them or set label_column: null")


# ------------------------------------------------------------------------------------ filters
def normalized_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy of each row divided by log(K): 0 for a one-hot row, 1 for the uniform one, so a
    threshold means the same thing for any number of classes."""
    k = probs.shape[-1]
    h = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
    return h / math.log(k) if k > 1 else torch.zeros_like(h)


def keep_mask(rule: str, probs: torch.Tensor, *, gold: torch.Tensor | None = None,
              other: torch.Tensor | None = None, threshold: float | None = None) -> torch.Tensor:
    """Which pseudo-labels (argmax of `probs` [N, K]) a rule admits, as a bool tensor [N]:

    * none: all;
    * gold_agreement: the teacher's label equals the gold label (Distil-Whisper's heuristic);
    * confidence: the teacher's top probability >= threshold;
    * entropy: the normalized entropy (`normalized_entropy`) <= threshold;
    * teacher_agreement / student_agreement: the teacher's label equals `other` (the second
      model's predicted labels [N]).
    """
    pred = probs.argmax(-1)
    if rule == "none":
        return torch.ones_like(pred, dtype=torch.bool)
    if rule == "gold_agreement":
        assert gold is not None
        return pred == gold
    if rule == "confidence":
        return probs.max(-1).values >= threshold
    if rule == "entropy":
        return normalized_entropy(probs) <= threshold
    if rule in AGREEMENT_FILTERS:
        assert other is not None
        return pred == other
    raise ValueError(f"unknown filter {rule!r}")
