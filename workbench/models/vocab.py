"""Vocabulary trimming ("Load What You Need", Abdaoui et al., 2020): keep only the tokens a corpus
uses, and shrink the word-embedding matrix and the tokenizer together.

Most of a small encoder's parameters can sit in its embedding matrix (MiniLM-L6: 11.7M of 22.7M,
30,522 rows of which one task uses a few thousand). Rows no text ever looks up cost disk and
memory but no compute; removing them changes no output for a text whose tokens are all kept.

The plan is a list of the *old* ids to keep, ascending; a kept token's new id is its position in
that list, so the relative order of ids (and so the padding id 0 of BERT and 1 of RoBERTa) is
preserved. Always kept: every special / added token; for BPE also the base symbols (tokens no
merge produces: for byte-level BPE the 256 bytes, so any text stays encodable) and both parts of
every merge whose result is kept, so that a kept text is merged exactly as before.

The tokenizer is rebuilt from its `tokenizer.json` (WordPiece: BERT, MiniLM, DistilBERT; BPE with
merges: RoBERTa, GPT-2 style) and maps text straight to the new ids:

* non-strict: the vocabulary holds only the kept tokens. A word whose pieces are all kept
  tokenizes exactly as before; a word that needed a removed piece is re-split into kept pieces
  where WordPiece / BPE can (e.g. `play ##ing`), else it becomes [UNK] (WordPiece) or bytes (BPE).
* strict: the removed tokens stay in the tokenizer *after* the kept ones (ids >= the model's
  vocabulary size), so every text tokenizes exactly as with the original tokenizer and a removed
  token is recognisable; `check_token_ids` (the pipeline runs it whenever it tokenizes for such
  a stage) rejects it with an error naming the tokens. Only the embedding matrix shrinks.

The model's new size is in its config (`vocab_size`), so `from_pretrained` reloads it with no
structural edit; `config.workbench_vocab` records the trim (and marks the saved tokenizer as the
one to use with the stage).
"""
from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from workbench.config import ConfigError
from workbench.data.pairs import PAIR_SEPARATOR

SUPPORTED = ("WordPiece", "BPE")


def backend_json(tokenizer: Any, where: str) -> dict[str, Any]:
    """The tokenizer's `tokenizers` description (tokenizer.json), or a ConfigError naming the
    tokenizer class when it is not a trimmable fast tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError(f"{where}: cannot trim the vocabulary of {type(tokenizer).__name__}: it is not a fast "
                          f"(`tokenizers`) tokenizer; supported: {', '.join(SUPPORTED)} fast tokenizers")
    spec = json.loads(backend.to_str())
    kind = spec["model"].get("type")
    if kind not in SUPPORTED:
        raise ConfigError(f"{where}: cannot trim the vocabulary of {type(tokenizer).__name__}: its model is "
                          f"{kind}, supported are {', '.join(SUPPORTED)} (BERT/MiniLM word pieces, RoBERTa BPE)")
    if kind == "BPE" and (spec["model"].get("continuing_subword_prefix") or spec["model"].get("end_of_word_suffix")):
        raise ConfigError(f"{where}: cannot trim the vocabulary of {type(tokenizer).__name__}: a BPE with a "
                          "subword prefix / end-of-word suffix is not supported (plain and byte-level BPE are)")
    return spec


def count_tokens(tokenizer: Any, texts: Iterable[str], batch_size: int = 1000) -> Counter[int]:
    """How often each token id occurs in `texts` (no truncation, no special tokens)."""
    counts: Counter[int] = Counter()
    batch: list[str] = []

    def flush() -> None:
        for ids in tokenizer(batch, add_special_tokens=False, truncation=False)["input_ids"]:
            counts.update(ids)
        batch.clear()

    for text in texts:
        batch.append(text.replace(PAIR_SEPARATOR, " "))  # a pair task's two texts: their tokens alike
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return counts


def _merges(spec: dict[str, Any]) -> list[tuple[str, str]]:
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in spec["model"].get("merges") or []]


def plan_keep(tokenizer: Any, used: Iterable[int], where: str = "trim_vocab") -> list[int]:
    """The old ids to keep (ascending): `used` plus the special / added tokens, and for BPE the
    base symbols and the parts of every kept merge (so kept texts merge exactly as before)."""
    spec = backend_json(tokenizer, where)
    vocab: dict[str, int] = spec["model"]["vocab"]
    size = max(vocab.values()) + 1
    keep = {int(i) for i in used if 0 <= int(i) < size}
    keep |= {int(t["id"]) for t in spec.get("added_tokens") or []}
    keep |= {int(i) for i in tokenizer.all_special_ids if i is not None}
    unk = spec["model"].get("unk_token")
    if unk in vocab:
        keep.add(vocab[unk])
    if spec["model"]["type"] == "BPE":
        merges = [(a, b) for a, b in _merges(spec) if a + b in vocab]
        produced = {a + b for a, b in merges}
        keep |= {i for tok, i in vocab.items() if tok not in produced}  # base symbols
        names = {i: tok for tok, i in vocab.items()}
        kept = {names[i] for i in keep if i in names}
        changed = True
        while changed:  # parts are made by lower-ranked merges: one reverse pass nearly always does
            changed = False
            for a, b in reversed(merges):
                if a + b in kept and not (a in kept and b in kept):
                    kept |= {a, b}
                    changed = True
        keep |= {vocab[t] for t in kept}
    return sorted(keep)


def _remap_processor(node: Any, new_id: dict[int, int]) -> Any:
    """The post-processor (templates adding [CLS]/[SEP], <s>/</s>) with its token ids remapped."""
    if isinstance(node, list):
        return [_remap_processor(n, new_id) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _remap_processor(v, new_id) for k, v in node.items()}
    if "ids" in out and "tokens" in out:  # TemplateProcessing special token
        out["ids"] = [new_id[int(i)] for i in out["ids"]]
    for key in ("sep", "cls"):  # BertProcessing / RobertaProcessing: [token, id]
        if isinstance(out.get(key), list) and len(out[key]) == 2 and isinstance(out[key][1], int):
            out[key] = [out[key][0], new_id[out[key][1]]]
    return out


def trim_tokenizer(tokenizer: Any, keep: list[int], strict: bool = False, where: str = "trim_vocab") -> Any:
    """A tokenizer of the same class whose ids are the positions in `keep` (see the module doc
    for strict); written to a temporary folder and loaded back, so it saves and reloads as any
    Hugging Face tokenizer."""
    from transformers import AutoTokenizer

    spec = backend_json(tokenizer, where)
    model = spec["model"]
    names = {i: tok for tok, i in model["vocab"].items()}
    order = list(keep) + ([i for i in sorted(names) if i not in set(keep)] if strict else [])
    new_id = {old: new for new, old in enumerate(order)}
    model["vocab"] = {names[old]: new for new, old in enumerate(order)}
    if model["type"] == "BPE" and not strict:
        kept = set(model["vocab"])
        model["merges"] = [[a, b] for a, b in _merges(spec) if a in kept and b in kept and a + b in kept]
    for token in spec.get("added_tokens") or []:
        token["id"] = new_id[int(token["id"])]
    if spec.get("post_processor") is not None:
        spec["post_processor"] = _remap_processor(spec["post_processor"], new_id)
    if isinstance(spec.get("padding"), dict) and spec["padding"].get("pad_id") is not None:
        spec["padding"]["pad_id"] = new_id[int(spec["padding"]["pad_id"])]
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        for stale in ("vocab.txt", "vocab.json", "merges.txt"):  # the rebuilt tokenizer.json is the source
            (Path(tmp) / stale).unlink(missing_ok=True)
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
        trimmed = AutoTokenizer.from_pretrained(tmp, local_files_only=True)
    trimmed.name_or_path = getattr(tokenizer, "name_or_path", "")
    return trimmed


def _resized(old: nn.Module, rows: torch.Tensor, padding_idx: int | None) -> nn.Module:
    """A copy of an Embedding (or a tied Linear output layer) keeping `rows`."""
    if isinstance(old, nn.Embedding):
        new = nn.Embedding(len(rows), old.embedding_dim, padding_idx=padding_idx)
        with torch.no_grad():
            new.weight.copy_(old.weight.detach()[rows])
        return new
    if isinstance(old, nn.Linear):
        new_lin = nn.Linear(old.in_features, len(rows), bias=old.bias is not None)
        with torch.no_grad():
            new_lin.weight.copy_(old.weight.detach()[rows])
            if old.bias is not None:
                new_lin.bias.copy_(old.bias.detach()[rows])
        return new_lin
    raise ConfigError(f"trim_vocab: cannot trim a {type(old).__name__} embedding (expected nn.Embedding)")


def trim_embeddings(model: nn.Module, keep: list[int], where: str = "trim_vocab") -> None:
    """Keep the rows `keep` of the input embeddings (and of an output layer over the vocabulary,
    re-tied when the model ties them) and update the config's vocab size and token ids."""
    emb = model.get_input_embeddings()
    if not isinstance(emb, nn.Embedding):
        raise ConfigError(f"{where}: {type(model).__name__} has no nn.Embedding input embeddings to trim")
    if keep and keep[-1] >= emb.num_embeddings:
        raise ConfigError(f"{where}: the tokenizer has id {keep[-1]} but the model's embedding has only "
                          f"{emb.num_embeddings} rows; the tokenizer does not belong to this model")
    rows = torch.tensor(keep, dtype=torch.long)
    new_id = {old: new for new, old in enumerate(keep)}
    config = model.config
    pad = getattr(config, "pad_token_id", None)
    if isinstance(pad, int) and pad in new_id and new_id[pad] != pad:
        raise ConfigError(f"{where}: the padding token's id would move from {pad} to {new_id[pad]} "
                          "(position ids depend on it in some families); not supported")
    padding_idx = new_id.get(emb.padding_idx) if emb.padding_idx is not None else None
    model.set_input_embeddings(_resized(emb, rows, padding_idx))
    out = model.get_output_embeddings()
    if out is not None:
        model.set_output_embeddings(_resized(out, rows, None))
        if getattr(config, "tie_word_embeddings", False):
            model.tie_weights()
    config.vocab_size = len(keep)
    for attr in ("bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value in new_id:
            setattr(config, attr, new_id[value])


def check_token_ids(tokenizer: Any, input_ids: Iterable[Iterable[int]], vocab_size: int, where: str) -> None:
    """Fail, naming the tokens, when a tokenized text uses an id the model's (trimmed) embedding
    does not have: a token removed by a strict `trim_vocab`."""
    bad: Counter[int] = Counter()
    for ids in input_ids:
        t = torch.as_tensor(ids)
        if t.numel() and int(t.max()) >= vocab_size:
            bad.update(int(i) for i in t[t >= vocab_size])
    if bad:
        tokens = tokenizer.convert_ids_to_tokens([i for i, _ in bad.most_common(10)])
        raise ConfigError(f"{where}: {sum(bad.values())} token(s) were removed by a strict trim_vocab: "
                          f"{', '.join(repr(t) for t in tokens)}{' ...' if len(bad) > 10 else ''}; add texts "
                          "holding them to the trim's 'corpus' / 'extra_corpus', or set 'strict: false' "
                          "(they are then re-split or mapped to [UNK])")


def embedding_rows(model: nn.Module) -> int:
    """The number of rows of the model's input embedding (its real vocabulary size)."""
    return int(model.get_input_embeddings().num_embeddings)


def check_stage_tokens(tokenizer: Any, model: nn.Module, splits: dict[str, Any], where: str) -> None:
    """Every tokenized split (a `datasets.Dataset`) uses only ids the model has: the guard of a
    strictly trimmed stage, run by the pipeline whenever it tokenizes for it."""
    size = embedding_rows(model)
    for name, data in splits.items():
        check_token_ids(tokenizer, data.with_format(None)["input_ids"], size, f"{where}: the {name} split")


def load_stage_tokenizer(path: str | Path) -> Any:
    """The tokenizer saved with a stage (a trimmed stage's own vocabulary)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
