"""Dynamic inference, what a model runs: the spec (`DynamicSpec`), its exit heads and the rules
that count the tokens each layer keeps.

A model carries its dynamic behaviour as `model.dynamic`, a `DynamicSpec`, and its extra exit
classifiers as `model.exit_heads` (an `nn.ModuleDict` keyed by `str(layer)`). Both are saved
with the model through the structural edits of `workbench.models.edits` (`exit_heads`,
`dynamic_spec`), so `load_edited_model` rebuilds them.

The torch reference forward (`workbench.models.dynamic.dynamic_forward`) and the runtime
(`workbench.runtime.dynamic`, `workbench.runtime.latency`) follow these rules:

* Token count kept after layer i (0-based): with n = the example's non-padding tokens at the
  input ([CLS] and [SEP] included), `k_i = min(current, max(1, ceil(length_ratios[i] * n)))`
  (`keep_count`). Dropping happens on layer i's OUTPUT, using layer i's attention; which tokens
  stay is `workbench.models.dynamic.select_tokens`.
* Exits: after a layer listed in `exit_layers` (and only after the layers that ran), the exit
  head reads the layer's output pooled as it was trained (`ExitHead.pooling`: the masked mean
  of the kept tokens, or the [CLS] state). `exit_at` = always leave after that layer; otherwise with
  `exit_threshold` set, an example leaves when the criterion passes: "entropy" = normalized
  entropy of the softmax <= threshold, "confidence" = max probability >= threshold. The model's
  own classifier is the exit after the last layer. An example that left runs no further layer
  (it is removed from the batch: the trace counts the work actually done).
* Spec None / all ratios 1.0 / no threshold and no `exit_at` -> the model's normal logits
  (`DynamicSpec.is_static`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from workbench.config import ConfigError

CRITERIA = ("entropy", "confidence")


@dataclass
class DynamicSpec:
    """How a model runs dynamically (see the module docstring for the exact rules)."""

    length_ratios: list[float] | None = None
    """One per encoder layer, non-increasing, in (0, 1]; None = no token dropping."""
    exit_layers: list[int] = field(default_factory=list)
    """0-based layers with an exit head (the last layer's exit is the model's classifier)."""
    exit_criterion: str = "entropy"
    exit_threshold: float | None = None
    """None = no confidence-based exit."""
    exit_at: int | None = None
    """Fixed exit: every example leaves after this layer."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "DynamicSpec":
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"dynamic spec: unknown keys {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        spec = cls(**d)
        if spec.length_ratios is not None:
            spec.length_ratios = [float(r) for r in spec.length_ratios]
        spec.exit_layers = sorted(int(x) for x in spec.exit_layers)
        return spec

    def replace(self, **changes: Any) -> "DynamicSpec":
        return DynamicSpec.from_dict({**self.to_dict(), **changes})

    def check(self, num_layers: int, where: str = "dynamic spec") -> "DynamicSpec":
        """Raise ConfigError when the spec does not fit a model of `num_layers` layers."""
        r = self.length_ratios
        if r is not None:
            if len(r) != num_layers:
                raise ConfigError(f"{where}: length_ratios has {len(r)} values, the model has {num_layers} layers; "
                                  f"give one ratio per layer")
            if any(not 0 < x <= 1 for x in r) or any(b > a + 1e-12 for a, b in zip(r, r[1:])):
                raise ConfigError(f"{where}: length_ratios {r} must be in (0, 1] and non-increasing")
        bad = [x for x in self.exit_layers if not 0 <= x < num_layers - 1]
        if bad:
            raise ConfigError(f"{where}: exit_layers {bad} out of range; use layers 0..{num_layers - 2} "
                              f"(the last layer's exit is the model's classifier)")
        if self.exit_criterion not in CRITERIA:
            raise ConfigError(f"{where}: exit_criterion '{self.exit_criterion}' unknown; use one of {CRITERIA}")
        if self.exit_at is not None and self.exit_at not in self.exit_layers + [num_layers - 1]:
            raise ConfigError(f"{where}: exit_at={self.exit_at} has no exit head; use one of "
                              f"{self.exit_layers + [num_layers - 1]}")
        return self

    @property
    def is_static(self) -> bool:
        no_drop = self.length_ratios is None or all(x >= 1.0 for x in self.length_ratios)
        return no_drop and self.exit_threshold is None and self.exit_at is None


def model_spec(model: nn.Module) -> DynamicSpec | None:
    """The spec a model carries (`model.dynamic`), or None."""
    spec = getattr(model, "dynamic", None)
    return spec if isinstance(spec, DynamicSpec) else None


EXIT_POOLING = ("mean", "cls")


class ExitHead(nn.Module):
    """An intermediate classifier: pool the layer's tokens, then Linear(H, H) -> tanh ->
    Linear(H, labels) (BERT's pooler + classifier shape); dropout before the output layer while
    training. `pooling` "mean": the masked mean of the tokens the layer kept (sentence models such
    as MiniLM carry the sentence in the mean, not in an early layer's [CLS]); "cls": the [CLS] state."""

    def __init__(self, hidden: int, num_labels: int, dropout: float = 0.1, pooling: str = "cls") -> None:
        super().__init__()
        if pooling not in EXIT_POOLING:
            raise ConfigError(f"exit head: pooling must be one of {EXIT_POOLING}, got {pooling!r}")
        self.pooling = pooling
        self.dense = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, num_labels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, labels] from a layer's output [B, S, H] and its token mask [B, S]."""
        return self.out(self.dropout(torch.tanh(self.dense(pool(hidden, mask, self.pooling)))))


def pool(hidden: torch.Tensor, mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """[B, H]: the [CLS] row ("cls") or the mean of the rows `mask` marks ("mean")."""
    if pooling == "cls":
        return hidden[:, 0]
    if mask is None:
        return hidden.mean(1)
    m = mask.to(hidden.dtype)[:, :, None]
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


def keep_count(ratio: float, n: int, current: int) -> int:
    """Tokens kept after a layer: min(current, max(1, ceil(ratio * n))). The 1e-6 guards against
    float products such as 0.3 * 10 = 3.0000000000000004 rounding up."""
    return min(int(current), max(1, math.ceil(float(ratio) * int(n) - 1e-6)))


def kept_counts(ratios: list[float] | None, n: int) -> list[int]:
    """Tokens processed by each layer for an input of n real tokens (layer 0 sees all n)."""
    if ratios is None:
        return []
    out, cur = [], int(n)
    for r in ratios:
        out.append(cur)
        cur = keep_count(r, n, cur)
    return out
