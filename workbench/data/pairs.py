"""Text-pair tasks (entailment, paraphrase: `task.text_pair_column`).

An example's two texts travel as one string, joined by `PAIR_SEPARATOR`, wherever raw text goes:
the task's `text` column and its fingerprint, the teachers' per-example logit cache, a teacher
with another tokenizer, augmentation's word spans. Every tokenizer call on raw text goes through
`tokenize_texts`, which splits the pair back, so the model sees its tokenizer's own pair
encoding ([SEP] between the texts, segment ids 0 and 1) and truncation shortens the longer text
first."""
from __future__ import annotations

from typing import Any

from workbench.config import ConfigError

PAIR_MARK = "\ue000"
"""A private-use character: no tokenizer vocabulary or natural text holds it."""
PAIR_SEPARATOR = f" {PAIR_MARK} "


def join_pair(first: str, second: str) -> str:
    return f"{first}{PAIR_SEPARATOR}{second}"


def split_texts(texts: list[str]) -> tuple[list[str], list[str] | None]:
    """(first texts, second texts) of joined pairs; (texts, None) when none is a pair."""
    parts = [t.split(PAIR_SEPARATOR, 1) for t in texts]
    pairs = sum(len(p) == 2 for p in parts)
    if pairs == 0:
        return list(texts), None
    if pairs != len(parts):
        raise ConfigError(f"{len(parts) - pairs} of {len(parts)} texts are single texts among text pairs; a "
                          "batch of a pair task holds pairs only")
    return [p[0] for p in parts], [p[1] for p in parts]


def tokenize_texts(tokenizer: Any, texts: list[str], **kwargs: Any) -> Any:
    """`tokenizer(texts, **kwargs)`, with joined pairs given to the tokenizer as pairs."""
    first, second = split_texts(list(texts))
    return tokenizer(first, second, **kwargs) if second is not None else tokenizer(first, **kwargs)
