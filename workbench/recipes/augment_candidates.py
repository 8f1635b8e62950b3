"""Replacement candidates for the ``augment`` recipe's words (TinyBERT Alg. 1; the algorithm is
described in `workbench.recipes.augment`): a sentence's words with their character spans, the
vocabulary entries a word may become, and per word the teacher's masked-LM predictions or, without
an MLM head, the nearest neighbours in its word-embedding matrix.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

_FALLBACK_WORDS = re.compile(r"\w+|[^\w\s]")


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


@torch.no_grad()
def mlm_candidates(mlm: Any, tok: Any, texts: list[str], words_per_text: list[list], piece_of: dict[str, int],
                   allowed: torch.Tensor, k: int, max_length: int, batch_size: int = 64) -> list[list[list[int]]]:
    """Per text, per word: the MLM's top-`k` allowed predictions with that word masked (texts cut
    at `max_length` tokens, as the stage tokenizes them)."""
    cands: list[list[list[int]]] = [[[] for _ in ws] for ws in words_per_text]
    jobs: list[tuple[int, int, list[int], int]] = []  # (text, word, input ids, masked position)
    enc = tok(texts, truncation=True, max_length=max_length, return_offsets_mapping=True,
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
