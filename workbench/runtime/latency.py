"""Per-layer latency of a compiled engine at a few token counts, interpolated: the cost model the
length search uses to price a `DynamicSpec` on the engine it will run on.

    from workbench.runtime.latency import LatencyTable, latency_table
    table = latency_table(model, seq_len=128)          # compiles (int8) and measures; or
    table = LatencyTable.measure(engine, seq_len=128)  # on an engine you already have
    table.cost(spec)                  # ms for one example of seq_len real tokens run as `spec`
    table.cost(spec, n=40)            # ... of 40 real tokens
    table.cost(spec, exit_layer=2)    # ... that leaves (threshold exit) after layer 2
    table.cost(None)                  # the static network
    table.layer_cost(i, tokens)       # one layer, interpolated; cls_only=True: the leaving layer
    table.save("latency.json"); LatencyTable.load("latency.json")

What is measured: each encoder layer through the dynamic forward's own per-layer call
(`runtime.dynamic_forward.packed_layer`: one compiled call on int8 engines with the compiled
encoder, else `Engine._layer`) on `batch` sequences of t tokens, packed, for every t in
`token_counts` (default: 1 and 1/4, 1/2, 3/4, 1 of seq_len), full and [CLS]-only (the layer an
example leaves at: the last one or a fixed `exit_at`), plus the embeddings (per t) and one
classifier head (exit heads have the same shape). Each point is the minimum over `repeats`
timed calls after a warm-up (the minimum is the work; on a shared machine the rest is waiting),
then made non-decreasing in t (more tokens never cost less). Between points the time is linear
in t, beyond the largest point extrapolated from the last two. Not included: the token
selection and gather between layers (an argsort and a copy of [t, H], small next to a layer).

`cost(spec)` follows the rules of `workbench.models.dynamic`: layer i processes
`kept_counts(length_ratios, n)[i]` tokens; the example leaves after `exit_layer` when given (as
a `DynamicTrace` records it), else after `spec.exit_at`, else after the last layer; with an exit
threshold every exit head before the leaving layer is evaluated too. Milliseconds per example at the measured
batch size (the batch's time divided by `batch`).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from workbench.models.dynamic import DynamicSpec
    from workbench.runtime.engine import Engine


@dataclass
class LatencyTable:
    """Measured milliseconds per example; `layer_ms[i][j]` = layer i at `token_counts[j]`."""

    seq_len: int
    batch: int
    token_counts: list[int]
    layer_ms: list[list[float]]
    cls_ms: list[list[float]]
    """Layer i run for the [CLS] row only (keys and values still over t tokens)."""
    embed_ms: list[float]
    head_ms: float
    threads: int = 1
    isa: str = ""

    # ---- interpolation ------------------------------------------------------------------------
    def _interp(self, values: Sequence[float], tokens: float) -> float:
        t, v = np.asarray(self.token_counts, float), np.asarray(values, float)
        if tokens <= t[-1] or len(t) < 2:
            return float(np.interp(tokens, t, v))
        slope = (v[-1] - v[-2]) / (t[-1] - t[-2])
        return float(v[-1] + slope * (tokens - t[-1]))

    def layer_cost(self, i: int, tokens: float, cls_only: bool = False) -> float:
        return self._interp((self.cls_ms if cls_only else self.layer_ms)[i], tokens)

    def cost(self, spec: "DynamicSpec | None", n: int | None = None, exit_layer: int | None = None) -> float:
        """Milliseconds for one example of `n` real tokens (default `seq_len`) run as `spec`."""
        from workbench.models.dynamic import kept_counts

        L = len(self.layer_ms)
        n = self.seq_len if n is None else int(n)
        ratios = None if spec is None else spec.length_ratios
        tokens = kept_counts(ratios, n) if ratios is not None else [n] * L
        fixed = None if spec is None else spec.exit_at
        leave = int(exit_layer) if exit_layer is not None else (fixed if fixed is not None else L - 1)
        if not 0 <= leave < L:
            raise ValueError(f"exit layer {leave} out of range for a {L}-layer table")
        # the leaving layer runs for [CLS] only when it is known in advance (exit_at, the last)
        cls_only = leave == L - 1 or leave == fixed
        ms = self._interp(self.embed_ms, n) + self.head_ms
        ms += sum(self.layer_cost(i, tokens[i]) for i in range(leave)) + self.layer_cost(leave, tokens[leave], cls_only)
        if spec is not None and spec.exit_threshold is not None:  # exit heads passed on the way
            ms += self.head_ms * sum(1 for x in spec.exit_layers if x < leave)
        return ms

    # ---- measuring ----------------------------------------------------------------------------
    @classmethod
    def measure(cls, engine: "Engine", seq_len: int = 128, token_counts: Sequence[int] | None = None,
                batch: int = 1, repeats: int = 5, seed: int = 0) -> "LatencyTable":
        """Time every layer of `engine` at each token count (see the module docstring)."""
        from workbench.runtime import kernels as K
        from workbench.runtime.dynamic_forward import packed_layer

        if seq_len < 1 or seq_len > engine.max_seq_len:
            raise ValueError(f"seq_len must be in [1, {engine.max_seq_len}], got {seq_len}")
        counts = sorted({int(t) for t in (token_counts or [1] + [max(1, round(seq_len * f))
                                                                 for f in (0.25, 0.5, 0.75, 1.0)])})
        if counts[0] < 1 or counts[-1] > engine.max_seq_len:
            raise ValueError(f"token_counts must be in [1, {engine.max_seq_len}], got {counts}")
        rng = np.random.default_rng(seed)
        L = engine.num_layers
        layer, cls_only, embed = [[0.0] * len(counts) for _ in range(L)], [[0.0] * len(counts) for _ in range(L)], []
        for j, t in enumerate(counts):
            ids = rng.integers(min(1000, engine.vocab_size // 2), engine.vocab_size, (batch, t))
            embed.append(_best(lambda: engine._embed(ids, None), repeats))  # noqa: B023
            h = engine._embed(ids, None)
            lengths = np.full(batch, t, np.int64)
            for i in range(L):
                layer[i][j] = _best(lambda: packed_layer(engine, i, h, lengths), repeats)  # noqa: B023
                cls_only[i][j] = _best(lambda: packed_layer(engine, i, h, lengths, cls_only=True), repeats)  # noqa: B023
                h = packed_layer(engine, i, h, lengths)
        cls_rows = np.ascontiguousarray(h.reshape(batch, -1, engine.hidden_size)[:, 0])
        head = _best(lambda: engine._head(cls_rows), repeats)
        mono = lambda rows: [np.maximum.accumulate(np.asarray(r) / batch).tolist() for r in rows]  # noqa: E731
        return cls(seq_len=int(seq_len), batch=int(batch), token_counts=counts, layer_ms=mono(layer),
                   cls_ms=mono(cls_only), embed_ms=mono([embed])[0], head_ms=head / batch,
                   threads=int(os.environ.get("OMP_NUM_THREADS", "0") or 0), isa=K.active_isa())

    # ---- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LatencyTable":
        return cls(**d)

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=1))
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatencyTable":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _best(fn: Any, repeats: int) -> float:
    """Minimum milliseconds of `repeats` calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def latency_table(model: Any, seq_len: int = 128, quantize: bool = True, **kwargs: Any) -> LatencyTable:
    """Compile `model` (a HF classifier, or an `Engine` / `EngineModule` as is) and measure its table."""
    from workbench.runtime.compiler import compile_model
    from workbench.runtime.engine import Engine

    engine = getattr(model, "engine", model)
    if not isinstance(engine, Engine):
        engine = compile_model(model, quantize=quantize)
    return LatencyTable.measure(engine, seq_len=seq_len, **kwargs)
