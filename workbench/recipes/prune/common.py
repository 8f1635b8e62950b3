"""What the pruning recipes share: the checks of their budget settings, the labelled example
batches their importance scores read (the quantization recipes' calibration reads them too),
and the record of what a pruning stage did (`model.config.workbench_pruning`)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workbench.config import ConfigError, fail
from workbench.prune.structure import example_batches, structure
from workbench.targets import validate_target_syntax


def check_fraction(where: str, key: str, value: float | None) -> None:
    if value is not None and not 0.0 < value < 1.0:
        fail(where, key, f"must be a fraction in (0, 1), got {value}")


def check_budget_fields(cfg: Any, where: str) -> None:
    """The fields the retraining-free and gradient-free recipes share: the FLOPs fraction, the
    sample (num_examples, batch_size, seq_len), the least-squares rescale (damp, max_scale), the
    per-layer head cap and the targets."""
    check_fraction(where, "flops", cfg.flops)
    for key in ("num_examples", "batch_size"):
        if getattr(cfg, key) < 1:
            fail(where, key, f"must be >= 1, got {getattr(cfg, key)}")
    if cfg.seq_len is not None and cfg.seq_len <= 0:
        fail(where, "seq_len", f"must be > 0, got {cfg.seq_len}")
    if cfg.damp < 0:
        fail(where, "damp", f"must be >= 0, got {cfg.damp}")
    if cfg.max_scale <= 1:
        fail(where, "max_scale", f"must be > 1, got {cfg.max_scale}")
    if cfg.max_heads_removed is not None and cfg.max_heads_removed < 0:
        fail(where, "max_heads_removed", f"must be >= 0, got {cfg.max_heads_removed}")
    if cfg.targets is not None:
        validate_target_syntax(cfg.targets, where)


def check_max_heads(model: nn.Module, cap: int | None, head_free: torch.Tensor, where: str) -> None:
    """A per-layer cap on removed heads larger than a targeted layer's head count is an error."""
    if cap is None:
        return
    st = structure(model)
    for i in range(st.num_layers):
        if bool(head_free[i].any()) and cap > st.heads[i]:
            fail(where, "max_heads_removed", f"is {cap} but layer {i} has only {st.heads[i]} heads: "
                 "no layer can lose more heads than it has")


def training_batches(ctx: Any, num_examples: int, batch_size: int, where: str) -> list[dict[str, Any]]:
    """Labelled example batches from the stage's training split, collated like the pipeline's."""
    data = ctx.train_data
    if data is None or len(data) == 0:
        raise ConfigError(f"{where}: needs labelled training examples, but the stage has no training split")
    return example_batches(data, ctx.tokenizer, num_examples, batch_size, seed=ctx.seed)


def record_pruning(model: nn.Module, info: dict[str, Any]) -> None:
    """Write what a pruning stage did to `model.config.workbench_pruning` (JSON-safe)."""
    model.config.workbench_pruning = {k: (round(v, 3) if k.endswith("seconds") and isinstance(v, float) else v)
                                      for k, v in info.items()}
