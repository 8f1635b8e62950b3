"""`trim_vocab`: keep only the vocabulary a corpus uses ("Load What You Need", Abdaoui et al.).

One-shot, no training. The kept tokens: every token of the corpus that occurs at least
`min_count` times, plus every special / added token (plus, for BPE, what merging needs; see
`workbench.models.vocab`). The corpus is

* `corpus: null` (default): the stage's training texts (the quick subset under `--quick`);
* `corpus: path` or a list of paths: text files, one text per line (blank lines skipped),
  instead of the training texts;
* `extra_corpus: [paths]`: more text files whose tokens are kept as well, on top of `corpus`
  (e.g. unlabelled in-domain text, or the texts the model will be served on), so the trimmed
  model does not lose words the training split happens to miss.

The embedding matrix and the tokenizer shrink together; the recipe replaces the stage's tokenizer
(`ctx.tokenizer`), the pipeline re-tokenizes the stage's data with it, measures the stage with it
and saves it next to the model, and later stages start from both. `strict: true` keeps the
tokenizer's full vocabulary so that a removed token is recognised and rejected, naming it, when a
text is tokenized for the stage (its evaluation, a later stage's training) instead of being
mapped to [UNK] / re-split.

Recorded in `model.config.workbench_pruning` (and in the stage's metrics): `vocab_before`,
`vocab_after`, `params_before`, `params_after`, `embedding_mb_saved` (fp32 rows removed),
`pruning_seconds`. Editing a corpus file in place does not change the stage's key: re-run such a
stage with `--fresh` (or rename the file).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from torch import nn

from workbench.config import ConfigError, fail
from workbench.models.vocab import (
    count_tokens, embedding_rows, plan_keep, trim_embeddings, trim_tokenizer,
)
from workbench.recipes.base import Recipe, register_recipe
from workbench.recipes.prune.common import record_pruning


def _paths(value: str | list[str] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def read_corpus(path: str | Path) -> Iterator[str]:
    """The non-blank lines of a text file, stripped."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield line.strip()


def check_corpus_file(path: str, key: str, where: str) -> None:
    """A corpus file must exist, be UTF-8 text and hold at least one non-blank line."""
    p = Path(path).expanduser()
    if not p.is_file():
        fail(where, key, f"names '{path}', which is not a file; give a text file with one text per line")
    try:
        next(read_corpus(p))
    except StopIteration:
        fail(where, key, f"names '{path}', which holds no text (empty or only blank lines); give one text per line")
    except UnicodeDecodeError as exc:
        fail(where, key, f"names '{path}', which is not UTF-8 text ({exc.reason} at byte {exc.start})")


@dataclass
class TrimVocabConfig:
    corpus: str | list[str] | None = None
    """Text file(s), one text per line, whose tokens are kept; null: the stage's training texts."""
    extra_corpus: list[str] = field(default_factory=list)
    """More text files whose tokens are kept too (added to `corpus` / the training texts)."""
    min_count: int = 1
    """Keep a token only when it occurs at least this often in the corpus (specials always)."""
    strict: bool = False
    """A text using a removed token fails, naming it, instead of mapping to [UNK] / re-splitting."""

    def validate(self, where: str) -> None:
        if isinstance(self.corpus, list) and not self.corpus:
            fail(where, "corpus", "is an empty list; give text files, or null for the stage's training texts")
        for key in ("corpus", "extra_corpus"):
            for path in _paths(getattr(self, key)):
                check_corpus_file(path, key, where)
        if self.min_count < 1:
            fail(where, "min_count", f"must be >= 1, got {self.min_count}")


@register_recipe("trim_vocab")
class TrimVocab(Recipe):
    """Shrink the word embeddings and the tokenizer to the tokens a corpus uses."""

    Config = TrimVocabConfig
    replaces_vocabulary = True

    def texts(self) -> Iterator[str]:
        """The corpus texts: `corpus` files (or the stage's training texts), then `extra_corpus`."""
        cfg = self.config
        if cfg.corpus is None:
            data = self.ctx.train_data
            if data is None or len(data) == 0 or "text" not in data.column_names:
                raise ConfigError(f"{self.where}: 'corpus' is null (the stage's training texts) but the stage has "
                                  "no training texts; give 'corpus: path/to/texts.txt'")
            yield from data.with_format(None)["text"]
        for path in _paths(cfg.corpus) + list(cfg.extra_corpus):
            yield from read_corpus(Path(path).expanduser())

    def apply(self, model: nn.Module) -> nn.Module:
        cfg, tokenizer = self.config, self.ctx.tokenizer
        if not hasattr(model, "get_input_embeddings"):
            raise ConfigError(f"{self.where}: {type(model).__name__} is not a Hugging Face model; "
                              "trim the vocabulary before quantizing or compiling")
        t0 = time.perf_counter()
        vocab_before = embedding_rows(model)
        if len(tokenizer) > vocab_before:  # trimmed before: the strict tokenizer's removed tokens
            raise ConfigError(f"{self.where}: the model's vocabulary was already trimmed strictly "
                              f"({len(tokenizer)} tokenizer entries, {vocab_before} embeddings); trim once")
        params_before = sum(p.numel() for p in model.parameters())
        counts = count_tokens(tokenizer, self.texts())
        keep = plan_keep(tokenizer, [i for i, n in counts.items() if n >= cfg.min_count], self.where)
        new_tokenizer = trim_tokenizer(tokenizer, keep, strict=cfg.strict, where=self.where)
        trim_embeddings(model, keep, self.where)
        width = model.get_input_embeddings().embedding_dim
        params_after = sum(p.numel() for p in model.parameters())
        model.config.workbench_vocab = {"stage": self.ctx.stage, "size": len(keep), "strict": cfg.strict}
        record_pruning(model, {
            "stage": self.ctx.stage, "method": "trim_vocab", "pruning_seconds": time.perf_counter() - t0,
            "vocab_before": vocab_before, "vocab_after": len(keep), "params_before": params_before,
            "params_after": params_after,
            "embedding_mb_saved": round((vocab_before - len(keep)) * width * 4 / 2**20, 3), "strict": cfg.strict})
        self.ctx.tokenizer = new_tokenizer
        return model

