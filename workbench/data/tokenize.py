"""Tokenization, cached on disk by (task contents, tokenizer, max length)."""
from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Iterator

import datasets

from workbench.data.pairs import tokenize_texts
from workbench.paths import cache_dir
from workbench.results import atomic_dir


def tokenizer_key(tokenizer: Any) -> str:
    vocab = tokenizer.get_vocab()
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    h.update(str(sorted(vocab.items())[:50_000]).encode())
    h.update(str(getattr(tokenizer, "do_lower_case", "")).encode())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """No `datasets` progress bars inside (the per-split "tokenize" / "Saving the dataset" bars of
    the cache layer: short steps, one bar per split); the earlier setting is restored after."""
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def save_dataset(data: Any, path: Any) -> None:
    """`save_to_disk` into a private temporary folder, then rename (`atomic_dir`): a half-written
    cache is never read, and two processes caching the same data at once do not collide."""
    with quiet_datasets(), atomic_dir(path) as tmp:
        data.save_to_disk(str(tmp))


def tokenize_task(task: Any, tokenizer: Any, max_length: int | None = None) -> datasets.DatasetDict:
    """input_ids / attention_mask (/ token_type_ids) + labels per split, as torch tensors, and
    the raw `text` (teachers with another tokenizer and data augmentation read it).

    Padding is dynamic (per batch, in `Collator`), so only truncation happens here.
    """
    max_length = max_length or task.config.max_length
    key = f"{task.fingerprint}-{tokenizer_key(tokenizer)}-{max_length}-text"
    path = cache_dir() / "tokenized" / key
    with quiet_datasets():
        if (path / "dataset_dict.json").exists():
            tokenized = datasets.load_from_disk(str(path))
        else:
            tokenized = task.splits.map(
                lambda b: tokenize_texts(tokenizer, b["text"], truncation=True, max_length=max_length),
                batched=True, desc="tokenize")
            tokenized = tokenized.rename_column("label", "labels")
            save_dataset(tokenized, path)
            tokenized = datasets.load_from_disk(str(path))
    return tokenized.with_format("torch")


class Collator:
    """Pads a list of tokenized examples into a batch of tensors (dynamic padding); the raw
    texts, when present, travel beside them as `batch["text"]` (a list of str)."""

    def __init__(self, tokenizer: Any) -> None:
        from transformers import DataCollatorWithPadding

        self.pad = DataCollatorWithPadding(tokenizer, return_tensors="pt")

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        texts = [ex["text"] for ex in examples] if examples and "text" in examples[0] else None
        batch = self.pad([{k: v for k, v in ex.items() if k != "text"} for ex in examples])
        if texts is not None:
            batch["text"] = texts
        return batch
