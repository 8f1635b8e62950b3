"""Cost models for the length search: what running a model as a `DynamicSpec` costs per example.

A cost model is any callable `cost(spec, tokens, exit_layer) -> float`: `tokens` is the int
array [examples, layers] of tokens each layer processed (0: the example had left), `exit_layer`
[examples] the layer each example left after, both as `DynamicTrace` records them on the
validation examples; it returns the mean cost per example. The search only compares a
configuration's cost with the full-length model's on the same examples, so units do not matter.

* `runtime_cost`: milliseconds on our runtime, from the engine's per-layer latency table
  (`workbench.runtime.latency`: every layer timed at a few token counts, int8, interpolated),
  priced with the spec's own rules (`LatencyTable.cost(spec, n, exit_layer)`);
* `token_cost`: tokens processed over all layers (a FLOPs proxy): deterministic, for tests.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from torch import nn

from workbench.models.dynamic import DynamicSpec

CostFn = Callable[[DynamicSpec, np.ndarray, np.ndarray], float]

DEFAULT_TOKEN_COUNTS = (1, 8, 16, 32, 64, 128)


def token_cost(spec: DynamicSpec, tokens: np.ndarray, exit_layer: np.ndarray) -> float:
    """Mean tokens processed per example, summed over the layers that ran."""
    tokens = np.asarray(tokens)
    return float(tokens.sum(axis=1).mean()) if tokens.size else 0.0


class RuntimeCost:
    """Mean milliseconds per example on the runtime engine (`workbench.runtime.latency`)."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self._memo: dict[tuple[Any, ...], float] = {}

    def __call__(self, spec: DynamicSpec, tokens: np.ndarray, exit_layer: np.ndarray) -> float:
        n = np.asarray(tokens)[:, 0] if np.asarray(tokens).size else np.zeros(0, dtype=int)
        if not len(n):
            return 0.0
        key = tuple(spec.length_ratios or ()), spec.exit_at, spec.exit_threshold is not None, tuple(spec.exit_layers)
        total = 0.0
        for ni, ei in zip(n.tolist(), np.asarray(exit_layer).tolist()):
            k = (*key, ni, ei)
            if k not in self._memo:
                self._memo[k] = self.table.cost(spec, n=int(ni), exit_layer=int(ei))
            total += self._memo[k]
        return total / len(n)

    def to_dict(self) -> dict[str, Any]:
        return {"source": "workbench runtime latency table", **self.table.to_dict()}


def runtime_cost(model: nn.Module, token_counts: tuple[int, ...] = DEFAULT_TOKEN_COUNTS, quantize: bool = True,
                 repeats: int = 5) -> RuntimeCost:
    """Compile `model` on our runtime (int8 by default) and measure its per-layer latency table."""
    from workbench.models.families import max_sequence_length
    from workbench.runtime.latency import latency_table

    # no example is longer than the model's position table (the pipeline truncates there): counts
    # past it are measured at it (a 64-position model failed on the default 128)
    limit = max_sequence_length(model) or max(token_counts)
    counts = sorted(set(min(int(t), limit) for t in token_counts))
    table = latency_table(model, seq_len=counts[-1], quantize=quantize, token_counts=counts, repeats=repeats)
    return RuntimeCost(table)
