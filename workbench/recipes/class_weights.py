"""The `class_weights` setting of the recipes with a label cross-entropy (`finetune`,
`distill_logits`): null, "balanced", or one weight per class; checked without the task
(`validate_class_weights`), against it (`check_class_weights`), and turned into the weight
tensor of `F.cross_entropy` (`class_weights`)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from workbench.config import ConfigError, fail

if TYPE_CHECKING:
    from workbench.recipes.base import RecipeContext

ClassWeights = str | list[float] | None
"""The type of a `class_weights` setting: null, "balanced", or one weight per class."""


def validate_class_weights(value: ClassWeights, where: str) -> None:
    """The part of a `class_weights` check that needs no task (in a Config's `validate`)."""
    if value is None:
        return
    if isinstance(value, str):
        if value != "balanced":
            fail(where, "class_weights", f"must be null, \"balanced\" or a list of one weight per class, got {value!r}")
        return
    if not value or any(w < 0 for w in value) or not any(w > 0 for w in value):
        fail(where, "class_weights", f"must list one weight >= 0 per class, not all zero, got {value!r}")


def check_class_weights(value: ClassWeights, num_labels: int, where: str) -> None:
    """A list of class weights must have one weight per class of the task."""
    if isinstance(value, (list, tuple)) and len(value) != num_labels:
        fail(where, "class_weights", f"lists {len(value)} weight{'s' if len(value) != 1 else ''} but the task has "
             f"{num_labels} classes; give one weight per class (in label order) or use \"balanced\"")


def class_weights(value: ClassWeights, ctx: "RecipeContext", where: str) -> torch.Tensor | None:
    """`class_weights` as a float tensor of one weight per class (None for null). "balanced":
    n_samples / (n_classes * count_c) from the labels of `ctx.train_data`; a class absent from
    the training split gets weight 0 (it never occurs in a training batch)."""
    if value is None:
        return None
    num_labels = ctx.task.num_labels
    if isinstance(value, str):
        data = ctx.train_data
        if data is None:
            labels = []
        elif hasattr(data, "with_format"):  # a datasets.Dataset: the column as a plain list
            labels = [int(y) for y in data.with_format(None)["labels"]]
        else:
            labels = [int(ex["labels"]) for ex in data]
        if not labels:
            raise ConfigError(f"{where}: 'class_weights' is \"balanced\" but the stage has no training labels")
        counts = torch.bincount(torch.tensor(labels, dtype=torch.long), minlength=num_labels).double()
        weights = torch.where(counts > 0, counts.sum() / (num_labels * counts.clamp(min=1)), torch.zeros_like(counts))
        return weights.float()
    check_class_weights(value, num_labels, where)
    return torch.tensor([float(w) for w in value], dtype=torch.float32)
