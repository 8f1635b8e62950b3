"""Shared fixtures. Everything runs offline on the embedded model and data."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WORKBENCH_PROGRESS", "0")
os.environ.setdefault("WORKBENCH_SPEED_PROCESS", "same")  # one worker process per stage: only in test_speed_process

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def tiny_bert():
    """A small random BERT classifier (2 labels) for fast behavioural tests."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=2)
    return BertForSequenceClassification(cfg).eval()
