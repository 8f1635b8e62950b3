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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from workbench.config import ConfigError, fail
from workbench.data.tokenize import save_dataset, tokenizer_key
from workbench.recipes.base import register_recipe
from workbench.recipes.distill.teacher import TeacherRecipe

_VERSION = 1  # bump when the algorithm changes: old caches are then not reused
_FALLBACK_WORDS = re.compile(r"\w+|[^\w\s]")


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


# ------------------------------------------------------------------------------------- helpers
def split_words(tokenizer: Any, text: str) -> list[tuple[str, tuple[int, int]]]:
    """Words of `text` with their character spans, as the tokenizer's pre-tokenizer splits them."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None) if backend is not None else None
    if pre is not None:
        return [(text[a:b], (a, b)) for _, (a, b) in pre.pre_tokenize_str(text)]
    return [(m.group(), m.span()) for m in _FALLBACK_WORDS.finditer(text)]


def candidate_vocabulary(tokenizer: Any) -> tuple[torch.Tensor, list[str]]:
    """(allowed [V] bool, word [V]): vocabulary entries that are whole words of letters."""
    vocab = tokenizer.get_vocab()
    size = max(len(tokenizer), max(vocab.values()) + 1)
    allowed = torch.zeros(size, dtype=torch.bool)
    words = [""] * size
    special = set(tokenizer.all_special_ids)
    wordpiece = any(t.startswith("##") for t in vocab)
    for tok, i in vocab.items():
        if i in special or tok.startswith("##") or tok.startswith("[") or tok.startswith("<"):
            continue
        word = tok if wordpiece else tokenizer.convert_tokens_to_string([tok]).strip()
        if word.isalpha():
            allowed[i], words[i] = True, word
    return allowed, words


def nearest_neighbours(embeddings: torch.Tensor, ids: list[int], k: int, allowed: torch.Tensor,
                       chunk: int = 1024) -> dict[int, list[int]]:
    """The `k` nearest allowed vocabulary ids of each id by cosine similarity of the rows of
    `embeddings` [V, D] (the id itself excluded); one matrix product per chunk of ids."""
    e = F.normalize(embeddings.detach().float(), dim=-1)
    v = e.shape[0]
    block = ~allowed[:v]
    k = min(k, int(allowed[:v].sum()) - 1) if int(allowed[:v].sum()) > 1 else 0
    out: dict[int, list[int]] = {}
    if k <= 0:
        return {i: [] for i in ids}
    with torch.no_grad():
        for s in range(0, len(ids), chunk):
            part = torch.tensor(ids[s:s + chunk], dtype=torch.long)
            sims = e[part] @ e.T
            sims[:, block] = -float("inf")
            sims[torch.arange(len(part)), part] = -float("inf")
            top = sims.topk(k, dim=-1).indices
            for i, row in zip(part.tolist(), top.tolist()):
                out[i] = row
    return out


def _load_mlm(model: Any) -> tuple[Any, str] | None:
    """The teacher folder's masked-LM model, when it has a trained MLM head."""
    path = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    if not path or not (Path(path) / "config.json").exists():
        return None
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        mlm, info = AutoModelForMaskedLM.from_pretrained(path, local_files_only=True, output_loading_info=True)
    except (OSError, ValueError, KeyError):
        return None
    finally:
        hf_logging.set_verbosity(verbosity)
    if info.get("missing_keys"):
        return None  # no trained head in the folder (e.g. a sentence-transformer encoder)
    return mlm.float().eval(), str(Path(path).resolve())


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

        enc = self.ctx.tokenizer(texts, truncation=True, max_length=max_length)
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
            cands = self._mlm_candidates(mlm, tok, texts, words_per_text, piece_of, allowed)
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

    @torch.no_grad()
    def _mlm_candidates(self, mlm: Any, tok: Any, texts: list[str], words_per_text: list[list],
                        piece_of: dict[str, int], allowed: torch.Tensor, batch_size: int = 64) -> list[list[list[int]]]:
        """Per text, per word: the MLM's top-K allowed predictions with that word masked."""
        k = self.config.candidates
        cands: list[list[list[int]]] = [[[] for _ in ws] for ws in words_per_text]
        jobs: list[tuple[int, int, list[int], int]] = []  # (text, word, input ids, masked position)
        enc = tok(texts, truncation=True, max_length=self._max_length(), return_offsets_mapping=True,
                  return_special_tokens_mask=True)
        for t, ws in enumerate(words_per_text):
            ids = enc["input_ids"][t]
            by_span = {tuple(span): p for p, (span, sp) in enumerate(zip(enc["offset_mapping"][t],
                                                                      enc["special_tokens_mask"][t])) if not sp}
            for w, (word, span) in enumerate(ws):
                pos = by_span.get(tuple(span))
                if word not in piece_of or pos is None:  # multi-piece, or cut off by truncation
                    continue
                masked = list(ids)
                masked[pos] = tok.mask_token_id
                jobs.append((t, w, masked, pos))
        jobs.sort(key=lambda j: len(j[2]))
        v = mlm.config.vocab_size
        block = ~allowed[:v]
        for s in range(0, len(jobs), batch_size):
            part = jobs[s:s + batch_size]
            length = max(len(j[2]) for j in part)
            ids = torch.full((len(part), length), tok.pad_token_id or 0, dtype=torch.long)
            mask = torch.zeros(len(part), length, dtype=torch.long)
            for r, (_, _, x, _) in enumerate(part):
                ids[r, :len(x)], mask[r, :len(x)] = torch.tensor(x), 1
            logits = mlm(input_ids=ids, attention_mask=mask).logits
            rows = logits[torch.arange(len(part)), torch.tensor([j[3] for j in part])].float()
            rows[:, block] = -float("inf")
            for r, (t, w, _, _) in enumerate(part):
                rows[r, piece_of[words_per_text[t][w][0]]] = -float("inf")
            top = rows.topk(min(k, int((~block).sum()) - 1), dim=-1).indices
            for r, (t, w, _, _) in enumerate(part):
                cands[t][w] = top[r].tolist()
        return cands
