"""TinyBERT's data augmentation (Jiao et al., 2020, "TinyBERT: Distilling BERT for Natural Language
Understanding", Algorithm 1), as the recipe ``augment``.

For every training sentence, ``copies`` (N) augmented sentences are added, each keeping the
original's label. The sentence is split into words (the teacher tokenizer's pre-tokenizer:
whitespace and punctuation); each word gets up to ``candidates`` (K) replacement candidates:

* a word that is a single piece of the teacher's vocabulary: the teacher's masked-LM head's top-K
  predictions for that word masked in its sentence, when ``use_mlm`` is on and the teacher's model
  folder has a masked-LM head (``AutoModelForMaskedLM`` loads from it with no missing weights);
  otherwise its K nearest neighbours by cosine similarity in the teacher's input word-embedding
  matrix (the paper uses GloVe for this; the embedded MiniLM sentence-transformer has no MLM head,
  so it takes this path);
* **multi-piece words are kept as they are** (the paper replaces them with GloVe neighbours; we
  have no word-level vectors, and the neighbours of a first piece such as "un" are rarely words),
  and so are words without a letter (punctuation, numbers);
* candidates are whole-word vocabulary entries made of letters only (no "##" pieces, special or
  unused tokens), never the word itself.

Each copy then replaces each word that has candidates with probability ``p_replace``, by one of
its candidates drawn uniformly (candidates are computed once per sentence and shared by its
copies, as in the paper's code). Randomness comes from ``seed`` (default: the stage's seed) and
the example's index, so the output is deterministic. The text is rebuilt by replacing the words'
character spans (the rest of the sentence, spacing included, is untouched) and tokenized with the
stage's tokenizer (truncation as in `workbench.data.tokenize`).

Only the training split is augmented (`prepare_data`); validation and test are untouched. The
result is cached under ``cache_dir()/augment/<key>`` (key: the texts and labels, the teacher, the
student tokenizer, the maximum length and every setting), written atomically, and reused.

The recipe adds no loss: combine it with a distillation recipe in the same stage (TinyBERT's
stage 2: ``distill_layers`` with ``prediction: true``).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.config import ConfigError, fail
from workbench.data.pairs import tokenize_texts
from workbench.data.tokenize import save_dataset, tokenizer_key
# the word and candidate machinery; `augment_texts` looks `nearest_neighbours` up in this module,
# where a test replaces it to see whether the neighbour search ran
from workbench.recipes.augment_candidates import (
    _load_mlm, candidate_vocabulary, mlm_candidates, nearest_neighbours, split_words)
from workbench.recipes.base import register_recipe
from workbench.recipes.distill.teacher import TeacherRecipe

_VERSION = 1  # bump when the algorithm changes: old caches are then not reused


@dataclass
class AugmentConfig:
    teacher: str = "teacher"
    """Whose word embeddings (or masked-LM head) give the replacement candidates."""
    copies: int = 4
    """Augmented copies per training example (N; the paper uses 20)."""
    p_replace: float = 0.4
    """Probability of replacing each word that has candidates."""
    candidates: int = 15
    """Candidates per word (K)."""
    seed: int | None = None
    """Default: the stage's seed."""
    use_mlm: bool = True
    """Use the teacher's masked-LM head for single-piece words when its model folder has one."""

    def validate(self, where: str) -> None:
        if self.copies < 1:
            fail(where, "copies", f"must be >= 1, got {self.copies}")
        if not 0.0 <= self.p_replace <= 1.0:
            fail(where, "p_replace", f"must be in [0, 1], got {self.p_replace}")
        if self.candidates < 1:
            fail(where, "candidates", f"must be >= 1, got {self.candidates}")


def _texts_fingerprint(texts: list[str], labels: list[Any]) -> str:
    h = hashlib.sha256()
    for t, y in zip(texts, labels):
        h.update(t.encode())
        h.update(b"\x00" + str(int(y)).encode() + b"\x01")
    return h.hexdigest()


# -------------------------------------------------------------------------------------- recipe
@register_recipe("augment")
class Augment(TeacherRecipe):
    """Add N augmented copies of every training sentence (word replacement, TinyBERT Alg. 1)."""

    Config = AugmentConfig
    uses_architecture = True

    @classmethod
    def contributes_loss(cls, config: AugmentConfig) -> bool:
        return False

    @classmethod
    def teacher_reads(cls, config: AugmentConfig) -> dict[str, set[str]]:
        return {config.teacher: {"embeddings"}}  # (and its masked-LM head, with use_mlm)

    @classmethod
    def requires_training(cls, config: AugmentConfig) -> bool:
        return True  # it changes the training data: a stage that trains, with a distillation loss


    # ------------------------------------------------------------------------------------
    def prepare_data(self, train_data: Any) -> Any:
        import datasets

        from workbench.paths import cache_dir

        c = self.config
        if not isinstance(train_data, datasets.Dataset):
            raise ConfigError(f"{self.where}: needs a datasets.Dataset training split, got {type(train_data).__name__}")
        if "text" not in train_data.column_names:
            raise ConfigError(f"{self.where}: the training split has no 'text' column to augment")
        teacher = self.ctx.teachers.get(c.teacher, set(), self.where)
        plain = train_data.with_format(None)
        texts, labels = list(plain["text"]), list(plain["labels"])
        seed = self.ctx.seed if c.seed is None else c.seed
        mlm = _load_mlm(teacher.model) if c.use_mlm else None
        max_length = self._max_length()
        settings = {"version": _VERSION, "texts": _texts_fingerprint(texts, labels),
                    "teacher": getattr(teacher, "key", teacher.name),
                    "teacher_tokenizer": tokenizer_key(teacher.tokenizer),
                    "tokenizer": tokenizer_key(self.ctx.tokenizer), "max_length": max_length,
                    "columns": sorted(train_data.column_names), "copies": c.copies, "p_replace": c.p_replace,
                    "candidates": c.candidates, "seed": seed, "mlm": mlm[1] if mlm else None}
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
        path = cache_dir() / "augment" / key
        self.cache_path = path
        fmt = train_data.format
        if not (path / "dataset_info.json").exists():
            new_texts, new_labels = self.augment_texts(texts, labels, teacher, seed, mlm[0] if mlm else None)
            full = self._build(plain, new_texts, new_labels, max_length)
            save_dataset(full, path)
        out = datasets.load_from_disk(str(path))
        return out.with_format(fmt["type"], columns=fmt["columns"], output_all_columns=fmt["output_all_columns"],
                               **fmt["format_kwargs"])

    def _max_length(self) -> int:
        cfg = getattr(self.ctx.task, "config", None)
        return getattr(cfg, "max_length", None) or 512

    def _build(self, plain: Any, texts: list[str], labels: list[Any], max_length: int) -> Any:
        import datasets

        enc = tokenize_texts(self.ctx.tokenizer, texts, truncation=True, max_length=max_length)
        extra: dict[str, list[Any]] = {}
        for col in plain.column_names:
            if col == "text":
                extra[col] = texts
            elif col == "labels":
                extra[col] = labels
            elif col in enc:
                extra[col] = list(enc[col])
            else:
                raise ConfigError(f"{self.where}: cannot fill the column '{col}' of augmented examples")
        aug = datasets.Dataset.from_dict(extra, features=plain.features)
        return datasets.concatenate_datasets([plain, aug])

    # ------------------------------------------------------------------------------------
    def augment_texts(self, texts: list[str], labels: list[Any], teacher: Any, seed: int,
                      mlm: Any = None) -> tuple[list[str], list[Any]]:
        """N augmented copies of every text (in order: text 0's copies, text 1's, ...)."""
        c = self.config
        tok = teacher.tokenizer
        allowed, vocab_words = candidate_vocabulary(tok)
        words_per_text = [split_words(tok, t) for t in texts]
        distinct = sorted({w for ws in words_per_text for w, _ in ws if any(ch.isalpha() for ch in w)})
        piece_of: dict[str, int] = {}
        if distinct:
            enc = tok(distinct, add_special_tokens=False)["input_ids"]
            piece_of = {w: ids[0] for w, ids in zip(distinct, enc) if len(ids) == 1}
        if mlm is not None:
            cands = mlm_candidates(mlm, tok, texts, words_per_text, piece_of, allowed, c.candidates,
                                   self._max_length())
        else:
            from workbench.models.arch import architecture

            emb = architecture(teacher.model, self.where).word_embeddings.weight
            ids = sorted(set(piece_of.values()))
            neigh = nearest_neighbours(emb, ids, c.candidates, allowed)
            cands = [[neigh.get(piece_of.get(w, -1), []) if w in piece_of else [] for w, _ in ws]
                     for ws in words_per_text]
        out_texts: list[str] = []
        out_labels: list[Any] = []
        for idx, (text, ws, cs) in enumerate(zip(texts, words_per_text, cands)):
            for copy in range(c.copies):
                rng = np.random.default_rng([seed, idx, copy])
                draws = rng.random(len(ws))
                picks = rng.integers(0, 1 << 30, len(ws))
                pieces, last = [], 0
                for (w, (a, b)), cand, u, pick in zip(ws, cs, draws, picks):
                    if cand and u < c.p_replace:
                        pieces += [text[last:a], vocab_words[cand[int(pick) % len(cand)]]]
                        last = b
                pieces.append(text[last:])
                out_texts.append("".join(pieces))
                out_labels.append(labels[idx])
        return out_texts, out_labels
