"""Task registry and loaders: embedded (offline) tasks, Hugging Face datasets, local files.

The embedded tasks live in `embedded`, reading and checking table files in `tables`; this module
holds the task types, the splitting and the loaders, and re-exports those names."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from workbench.config import ConfigError, fail
from workbench.data.embedded import TASKS, EmbeddedTask, list_tasks  # noqa: F401  (re-exported)
from workbench.data.tables import TABLE_SUFFIXES, _columns, _labels_to_ints, read_table, row_unit

SPLITS = ("train", "validation", "test")


@dataclass
class TaskConfig:
    """How to find a task. `name` is an embedded task, `hf:<dataset>` or a local file/folder."""

    name: str
    text_column: str = "text"
    label_column: str = "label"
    text_pair_column: str | None = None
    """The second text of a text-pair task (e.g. 'hypothesis' beside text_column 'premise'):
    the model reads the two as its tokenizer encodes a pair (`workbench.data.pairs`)."""
    subset: str | None = None
    """Hugging Face dataset configuration name (e.g. 'sst2' for 'hf:glue')."""
    max_length: int = 128
    """Tokens per example (longer texts are truncated)."""

    def validate(self, where: str) -> None:
        if self.max_length < 8:
            fail(where, "max_length", f"must be >= 8, got {self.max_length}")
        if self.text_pair_column is not None and (not self.text_pair_column or self.text_pair_column in (
                self.text_column, self.label_column)):
            fail(where, "text_pair_column", f"must name a column other than the text and label columns, got "
                 f"{self.text_pair_column!r}")


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


# --------------------------------------------------------------------------- generic loaders
def _load_local(cfg: TaskConfig, seed: int) -> tuple[datasets.DatasetDict, list[str]]:
    path = Path(cfg.name).expanduser()
    if path.is_dir():
        files = {s: next((p for p in sorted(path.iterdir()) if p.stem == s and p.suffix.lower() in TABLE_SUFFIXES),
                         None) for s in SPLITS}
        if files["train"] is None:
            raise ConfigError(f"task '{cfg.name}': a task folder needs a train file ({', '.join(TABLE_SUFFIXES)}; "
                              "validation and test optional), or is a Hugging Face dataset saved with "
                              "save_to_disk")
        files = {s: f for s, f in files.items() if f is not None}
    else:
        files = {"all": path}
    texts, raw_labels = {}, {}
    for s, f in files.items():
        texts[s], raw_labels[s] = _columns(read_table(f), cfg, f, row_unit(f))
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


def is_saved_dataset(path: Path) -> bool:
    """A folder written by `datasets`' save_to_disk (a DatasetDict, or a single Dataset)."""
    return path.is_dir() and ((path / "dataset_dict.json").is_file()
                              or ((path / "dataset_info.json").is_file() and (path / "state.json").is_file()))


def load_saved_dataset(path: str, where: str) -> datasets.DatasetDict:
    """A folder `is_saved_dataset` recognises, as a DatasetDict (a single Dataset is its train
    split); a folder the datasets library cannot read is a ConfigError starting with `where`."""
    try:
        ds = datasets.load_from_disk(str(Path(path).expanduser()))
    except Exception as exc:  # a damaged folder: the datasets library raises several types
        raise ConfigError(f"{where}: the saved Hugging Face dataset could not be loaded "
                          f"({type(exc).__name__}: {exc})") from None
    return datasets.DatasetDict({"train": ds}) if isinstance(ds, datasets.Dataset) else ds


def _load_saved(cfg: TaskConfig, seed: int) -> tuple[datasets.DatasetDict, list[str]]:
    """A Hugging Face dataset saved with save_to_disk: its splits as from the hub (a single
    Dataset is the train split; validation and test are then carved from it)."""
    if cfg.subset is not None:
        raise ConfigError(f"task '{cfg.name}': 'subset' {cfg.subset!r} is for hf: datasets with configurations; "
                          "a saved dataset folder is one configuration: drop 'subset'")
    return _hf_splits(load_saved_dataset(cfg.name, f"task '{cfg.name}'"), cfg, seed)


def _load_hf(cfg: TaskConfig, seed: int) -> tuple[datasets.DatasetDict, list[str]]:
    name = cfg.name[3:]
    try:
        ds = datasets.load_dataset(name, cfg.subset)
    except (ConnectionError, FileNotFoundError) as exc:
        # offline (the default) and not in the local cache, or no such dataset: say which, and how
        # to allow downloads, instead of the datasets library's traceback
        from workbench.models.registry import allow_download

        how = ("check the name (and 'subset')" if allow_download() else
               "workbench is offline by default: set WORKBENCH_ALLOW_DOWNLOAD=1 to let it download from the hub, "
               "or give a local file or folder as the task")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"task '{cfg.name}': Hugging Face dataset '{name}' could not be loaded ({first}); "
                          f"{how}") from None
    return _hf_splits(ds, cfg, seed)


def _hf_splits(ds: datasets.DatasetDict, cfg: TaskConfig, seed: int) -> tuple[datasets.DatasetDict, list[str]]:
    """The task's splits from a Hugging Face DatasetDict (from the hub or from disk): the text
    and label columns checked like a file's; `valid`/`dev` read as validation; a test split with
    hidden labels (-1) replaced by one carved from train."""
    if "train" not in ds:
        raise ConfigError(f"task '{cfg.name}': the dataset has no 'train' split (splits: {list(ds)})")
    feature = ds["train"].features.get(cfg.label_column)
    texts, raw = {}, {}
    for s in ds:
        if s not in SPLITS and not (s == "valid" or s == "dev"):
            continue
        target = "validation" if s in ("valid", "dev") else s
        cols = ds[s].column_names
        for col, key in ((cfg.text_column, "text_column"), (cfg.label_column, "label_column"),
                         (cfg.text_pair_column, "text_pair_column")):
            if col is not None and col not in cols:
                raise ConfigError(f"task '{cfg.name}': {key} '{col}' not in split '{s}' (columns: {cols})")
        names = [cfg.text_column, cfg.label_column, *([cfg.text_pair_column] if cfg.text_pair_column else [])]
        rows = [(i, dict(zip(names, values))) for i, values in enumerate(zip(*(ds[s][c] for c in names)))]
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
    elif is_saved_dataset(Path(cfg.name).expanduser()):
        splits, names = _load_saved(cfg, seed)
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


def missing_class_notes(task: Task) -> list[str]:
    """One line per class that has no example in some split (a class of 1-2 examples in a
    carved split lands in train only): its accuracy is then not measured there, and macro-F1
    averages over fewer classes than the model predicts. Said, not refused: long-tailed
    tasks are real."""
    notes = []
    counts = {s: np.bincount(np.asarray(task.splits[s]["label"], dtype=np.int64), minlength=task.num_labels)
              for s in SPLITS if s in task.splits}
    for c, name in enumerate(task.label_names):
        empty = [s for s, n in counts.items() if n[c] == 0]
        if empty:
            total = sum(int(n[c]) for n in counts.values())
            notes.append(f"class {name!r} ({total} example{'s' if total != 1 else ''}) has none in "
                         f"{' and '.join(empty)}: it is not measured there; add examples of it, or fix its label")
    return notes
