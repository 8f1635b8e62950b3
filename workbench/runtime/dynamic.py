"""Dynamic inference on the engine: per-layer token dropping and early exits, with a work trace.

The rules are those of the torch reference, `workbench.models.dynamic` (`DynamicSpec`,
`keep_count`, `select_tokens`, `dynamic_forward`); `workbench.runtime.dynamic_forward` runs them
on the compiled engine so that the skipped work is really skipped. This module compiles a
model's spec and exit heads, resolves a call's overrides, holds the work trace and the rules a
forward applies (`select`, `exits`, `pooled`).

* token dropping: after layer i, `k = keep_count(length_ratios[i], n, current)` tokens stay per
  example ([CLS] always, then the most attended-to tokens, ties to the lower position, original
  order kept). The significance is a by-product of layer i's own attention (the attention
  kernel sums each key's probabilities over the real queries, per head). The kept rows are
  *gathered*, so every GEMM of the next layer has fewer rows and its attention fewer keys. A
  layer whose attention was removed (0 heads) gives every token significance 0: the first
  tokens are kept, as in the reference.
* exits: after a layer in `exit_layers`, the exit head (`exit.<i>.pre/cls`, compiled like the
  classifier) reads the layer's output pooled as the head was trained (`meta["exit_pooling"]`:
  "mean", the masked mean of the tokens the layer kept, or "cls", the [CLS] row); an example
  leaves when the criterion passes, or always at `exit_at`. The last layer runs for its [CLS]
  row only ("CLS-only last layer"), as the static engine does, and so does a fixed exit
  (`exit_at`) whose head reads [CLS]; a mean-pooled fixed exit runs its layer on every row.
* batches: an example that left is removed from the batch (per-example exits at any batch
  size; the batch stops when every example left). Token counts differ per example: a
  right-padded (or unpadded) batch runs packed, each example's kept rows one after another and
  attention per example, so each layer computes exactly the kept tokens' rows, and an int8
  engine runs the layers up to each exit check in one compiled call, the drops included
  (`Int8Encoder.run_layers`); each example gets the bits it gets alone. Other layouts (left
  padding, holes, `Engine.pack_sequences = False`) run [B, K] rows with K = the largest kept
  count, the rows past an example's own count masked (and computed). `WorkTrace.rows` counts
  the rows computed per layer.

`engine.last_trace` (a `WorkTrace`) records the work of the last call, static or dynamic:
tokens each layer processed per example (0: the layer did not run), the exit layer per
example, and the rows each layer's Q/K/V GEMM computed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from workbench.models.dynamic import DynamicSpec
    from workbench.runtime.engine import Engine

OVERRIDES = ("length_ratios", "exit_threshold", "exit_at", "exit_criterion", "exit_layers")


@dataclass
class WorkTrace:
    """Work done by one engine call."""

    tokens: np.ndarray
    """[B, num_layers] tokens each layer processed for each example (0: the layer did not run)."""
    exit_layer: np.ndarray
    """[B] the layer after which each example left (num_layers - 1: it ran every layer)."""
    rows: list[int] = field(default_factory=list)
    """Per layer run: rows of the batch the Q/K/V GEMM computed (padding rows, if the batch ran
    padded, included)."""
    sources: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list, repr=False)
    """Dynamic calls, per layer run: (the examples still running [Bc], their kept tokens [Bc, S_i]
    bool, those tokens' input positions [Bc, S_i]), as the forward had them (`positions`)."""

    @property
    def layers_run(self) -> np.ndarray:
        return self.exit_layer + 1

    @property
    def positions(self) -> list[np.ndarray]:
        """Dynamic calls, per layer run: [B, S_i] the input positions of the tokens the layer
        processed (-1: a padding slot, or an example that already left). Built when asked for:
        the forward only keeps references."""
        out = []
        for alive, kept, pos in self.sources:
            p = np.full((len(self.tokens), kept.shape[1]), -1, np.int64)
            p[alive] = np.where(kept, pos, -1)
            out.append(p)
        return out


def static_trace(mask: np.ndarray, num_layers: int, packed: bool = False) -> WorkTrace:
    """The trace of a static call: every layer on every real token of every example (`packed`:
    the batch ran without its padding, so its rows are the tokens)."""
    return static_trace_of_counts(mask.sum(1).astype(np.int64), mask.shape[1], num_layers, packed)


def static_trace_of_counts(n: np.ndarray, seq_len: int, num_layers: int, packed: bool = False) -> WorkTrace:
    """`static_trace` from each example's token count `n` [B] and the batch's sequence length."""
    rows = int(n.sum()) if packed else len(n) * seq_len
    return WorkTrace(tokens=np.repeat(n[:, None], num_layers, axis=1),
                     exit_layer=np.full(len(n), num_layers - 1, np.int64), rows=[rows] * num_layers)


# ---------------------------------------------------------------------------------------------
# compiling: the spec and the exit heads of a model
# ---------------------------------------------------------------------------------------------
def read_dynamic(model: Any, raw: dict[str, tuple]) -> dict[str, Any] | None:
    """`model.dynamic` as a dict (for the engine's meta), adding each exit head's two Linears
    to `raw` as `exit.<layer>.pre` / `exit.<layer>.cls`. None for a model with neither; a model
    with exit heads but no spec gets a static spec listing them (exits can then be switched on
    per call)."""
    from workbench.models.dynamic import DynamicSpec, model_spec
    from workbench.runtime.read_model import read_linear

    spec, heads = model_spec(model), getattr(model, "exit_heads", None)
    if spec is None and not heads:
        return None
    for key, head in (heads or {}).items():
        raw[f"exit.{int(key)}.pre"] = read_linear(head.dense, f"exit_heads.{key}.dense")
        raw[f"exit.{int(key)}.cls"] = read_linear(head.out, f"exit_heads.{key}.out")
    if spec is None:
        spec = DynamicSpec(exit_layers=sorted(int(k) for k in heads))
    return spec.to_dict()


def exit_pooling(model: Any) -> dict[str, str]:
    """{layer: pooling} of the model's exit heads (for the engine's meta)."""
    heads = getattr(model, "exit_heads", None) or {}
    return {str(int(k)): str(getattr(head, "pooling", "cls")) for k, head in heads.items()}


def resolve(engine: "Engine", overrides: dict[str, Any]) -> "DynamicSpec | None":
    """The spec one call runs: the compiled one with the call's overrides (`spec=` replaces it
    whole; a given None switches a feature off). None: run the static forward. The same
    overrides as the engine's last call give the same (shared, not to be changed) spec without
    parsing them again: at batch 1 on short sentences that was 5 % of a forward."""
    key = _resolve_key(engine, overrides)
    last = engine.__dict__.get("_resolved")
    if key is not None and last is not None and last[0] == key:
        return last[1]
    spec = _resolve(engine, dict(overrides))
    if key is not None:
        engine._resolved = (key, spec)
    return spec


def _resolve_key(engine: "Engine", overrides: dict[str, Any]) -> tuple | None:
    """What a call's spec depends on, hashable; None (not cached) for `spec=` and unusual values."""
    if "spec" in overrides:
        return None
    items = []
    for name, value in sorted(overrides.items()):
        if isinstance(value, (list, tuple)):
            value = tuple(value)
            if not all(isinstance(v, (int, float)) for v in value):
                return None
        elif value is not None and not isinstance(value, (int, float, str)):
            return None
        items.append((name, value))
    return id(engine.meta.get("dynamic")), tuple(items)


def _resolve(engine: "Engine", overrides: dict[str, Any]) -> "DynamicSpec | None":
    from workbench.models.dynamic import DynamicSpec

    bad = sorted(set(overrides) - set(OVERRIDES) - {"spec"})
    if bad:
        raise TypeError(f"Engine call: unknown keyword(s) {bad}; dynamic overrides are {OVERRIDES} or spec=")
    if "spec" in overrides:
        spec = overrides.pop("spec")
        spec = spec if spec is None or isinstance(spec, DynamicSpec) else DynamicSpec.from_dict(spec)
    else:
        compiled = engine.meta.get("dynamic")
        spec = None if compiled is None else _cached_spec(engine, compiled)
    if overrides:
        spec = (spec or DynamicSpec()).replace(**overrides)
    if spec is None or spec.is_static:
        return None
    spec.check(engine.num_layers, "engine call")
    if spec.exit_threshold is not None and not spec.exit_layers:
        # no exit head to apply it at: the call would run the whole network, silently
        raise ValueError(f"engine call: exit_threshold={spec.exit_threshold} but the engine has no exit heads, so no "
                         "example could exit early; compile a model trained with the early_exit recipe")
    if spec.exit_threshold is not None or spec.exit_at is not None:
        missing = [x for x in spec.exit_layers if f"exit.{x}.pre" not in engine._linears]
        if missing:
            raise ValueError(f"engine call: the spec lists exit layers {missing} but the engine has no exit head "
                             f"there; compile a model whose `exit_heads` hold them")
    return spec


def _cached_spec(engine: "Engine", compiled: dict[str, Any]) -> "DynamicSpec":
    from workbench.models.dynamic import DynamicSpec

    cached = engine.__dict__.get("_dynamic_spec")
    if cached is None or cached[0] is not compiled:  # parsed once per compiled spec
        cached = engine._dynamic_spec = (compiled, DynamicSpec.from_dict(compiled))
    return cached[1].replace()  # a copy: overrides never change the compiled spec


# ---------------------------------------------------------------------------------------------
# the rules a forward applies (workbench.runtime.dynamic_forward runs them)
# ---------------------------------------------------------------------------------------------
def pooling_of(engine: "Engine", layer: int) -> str:
    """How exit `layer`'s head pools its input: "cls" (also for engines saved before pooling was
    recorded) or "mean"."""
    return engine.meta.get("exit_pooling", {}).get(str(layer), "cls")


def pooled(engine: "Engine", layer: int, h: np.ndarray, m: np.ndarray) -> np.ndarray:
    """[B, H] what exit `layer`'s head reads from the layer output h [B * S, H] with mask m
    [B, S]: the [CLS] rows, or the mean of the kept tokens (`models.dynamic.pool`)."""
    B, S = m.shape
    x = h.reshape(B, S, -1)
    if pooling_of(engine, layer) == "cls":
        return np.ascontiguousarray(x[:, 0])
    w = m.astype(np.float32)
    return np.ascontiguousarray(np.einsum("bsh,bs->bh", x, w) / np.maximum(w.sum(1), 1.0)[:, None],
                                dtype=np.float32)


def select(sig: np.ndarray, mask: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`workbench.models.dynamic.select_tokens` in NumPy: sig [B, S] significance, mask [B, S]
    bool, k [B] -> positions to keep [B, max k] (original order) and the new mask [B, max k]."""
    B, S = mask.shape
    score = np.where(mask, sig, -np.inf)
    score[:, 0] = np.inf  # [CLS] always stays
    order = np.argsort(-score, axis=1, kind="stable")  # descending; ties: lower position first
    kmax = int(k.max())
    chosen = order[:, :kmax]
    valid = np.arange(kmax)[None, :] < k[:, None]
    key = np.sort(np.where(valid, chosen, chosen + S), axis=1)  # unused slots after the kept ones
    return np.where(key >= S, key - S, key), valid


def exits(logits: np.ndarray, spec: "DynamicSpec") -> np.ndarray:
    """[B] bool: examples whose exit criterion passes (`models.dynamic._leaves`, float32)."""
    z = logits.astype(np.float32) - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    if spec.exit_criterion == "confidence":
        return p.max(axis=1) >= spec.exit_threshold
    c = p.shape[1]
    if c < 2:
        return np.ones(len(p), bool) if spec.exit_threshold >= 0 else np.zeros(len(p), bool)
    ent = -(p * np.log(np.maximum(p, np.float32(1e-12)))).sum(axis=1) / np.float32(np.log(c))
    return ent <= spec.exit_threshold
