"""Running a `DynamicSpec` on the engine: token dropping and early exits (see
`workbench.runtime.dynamic` for the rules and the work trace).

A batch is either *packed* -- the kept tokens' rows of each example one after another, no
padding, as `Engine.pack_sequences` runs static batches -- or *padded* (B x the largest count,
the rows past an example's own count masked). Packed is the default: every right-padded or
unpadded batch (all of them after the first dropping layer), so the GEMMs compute exactly the
kept tokens' rows, attention runs per example over its own tokens, and an int8 engine whose
layers the compiled encoder runs (`workbench_ext.encoder.Int8Encoder.run_layers`) runs each
layer in one compiled call, significance included. Each example then gets the bits it gets
alone. Padded: left padding, masks with holes, and `Engine.pack_sequences = False`; its layers
run op by op (`Engine._layer`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from workbench.runtime import kernels as K
from workbench.runtime.dynamic import WorkTrace
from workbench.runtime.inputs import attention_bias, packable_lengths

if TYPE_CHECKING:  # pragma: no cover
    from workbench.models.dynamic import DynamicSpec
    from workbench.runtime.engine import Engine


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


def packed_layer(engine: "Engine", i: int, h: np.ndarray, lengths: np.ndarray, cls_only: bool = False,
                 sig: np.ndarray | None = None) -> np.ndarray:
    """Layer i on packed sequences (h [sum(lengths), H], each sequence's rows after the previous
    one's) -> [sum(lengths), H], or the [CLS] rows [B, H] with `cls_only`: one compiled call
    (`Int8Encoder.run_layers`) where the engine has the compiled encoder, else `Engine._layer`
    with attention per sequence. `sig`: None or float32 [nh * sum(lengths)], set to the
    significance (`run_layers`' layout). The unit of work of the dynamic forward, and what
    `runtime.latency` times."""
    if engine._encoder is not None:
        return engine._encoder.run_layers(h, lengths, i, i + 1, K.isa_code(), sig=sig, cls_only=cls_only)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return engine._layer(i, h, len(lengths), int(np.max(lengths)), None, cls_only=cls_only, sig=sig, offsets=offsets)


@dataclass
class _Batch:
    """The examples still running and the tokens each keeps. `m` [Bc, Sc] marks each example's
    kept tokens (slots past them: padding), `pos` [Bc, Sc] their input positions, `alive` [Bc] the
    original example of each, `n` [Bc] its real tokens at the input. `h`: the hidden rows, packed
    [m.sum(), H] or padded [Bc * Sc, H]."""

    h: np.ndarray
    m: np.ndarray
    pos: np.ndarray
    alive: np.ndarray
    n: np.ndarray
    packed: bool

    @classmethod
    def start(cls, engine: "Engine", ids: np.ndarray, mask: np.ndarray, tt: np.ndarray | None) -> "_Batch":
        B, S = ids.shape
        m = mask.astype(bool)
        packed = engine.pack_sequences and (m.all() or packable_lengths(mask) is not None)
        h = engine._embed(ids, tt)
        if packed and not m.all():
            h = np.ascontiguousarray(h[m.reshape(-1)])
        return cls(h, m, np.broadcast_to(np.arange(S), (B, S)), np.arange(B), m.sum(1), packed)

    @property
    def counts(self) -> np.ndarray:
        return self.m.sum(1)

    def _offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    def rows(self) -> int:
        """Rows a layer's Q/K/V GEMM computes on this batch."""
        return int(self.m.sum()) if self.packed else self.m.size

    def run(self, engine: "Engine", i: int, cls_only: bool = False, significance: bool = False
            ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Layer i on the batch: ([Bc, H] the [CLS] rows when `cls_only`, else None and `h`
        becomes the layer's output; [Bc, Sc] each kept token's attention significance summed
        over the heads when asked for, else None)."""
        Bc, Sc = self.m.shape
        nh = engine.layer_heads[i]
        cur = self.counts
        sig = None
        if significance and nh:
            sig = np.empty(nh * int(cur.sum()), np.float32) if self.packed else np.empty((Bc, nh, Sc), np.float32)
        if self.packed:
            out = packed_layer(engine, i, self.h, cur, cls_only, sig)
        else:
            out = engine._layer(i, self.h, Bc, Sc, attention_bias(self.m), cls_only=cls_only, sig=sig)
        if not cls_only:
            self.h, out = out, None
        total = None
        if significance:
            total = np.zeros(self.m.shape, np.float32)  # no attention (0 heads): the first tokens stay
            if sig is not None and not self.packed:
                total = sig.sum(axis=1)
            elif sig is not None:  # sequence b's block [nh, cur[b]] at nh * offsets[b]
                offs = self._offsets()
                b_of = np.repeat(np.arange(Bc), cur)
                token = np.arange(len(b_of)) - offs[b_of]
                at = (nh * offs[b_of] + token)[None, :] + np.arange(nh)[:, None] * cur[b_of][None, :]
                total[self.m] = sig[at].sum(axis=0)  # heads summed in order, as sig.sum(axis=1)
        return out, total

    def pooled(self, engine: "Engine", i: int) -> np.ndarray:
        """[Bc, H] what exit i's head reads from `h` (`pooled`)."""
        if not self.packed:
            return pooled(engine, i, self.h, self.m)
        if pooling_of(engine, i) == "cls":
            return np.ascontiguousarray(self.h[self._offsets()[:-1]])
        padded = np.zeros((self.m.size, self.h.shape[1]), np.float32)
        padded[self.m.reshape(-1)] = self.h
        return pooled(engine, i, padded, self.m)

    def keep_examples(self, stay: np.ndarray) -> None:
        """Only the examples `stay` [Bc] bool go on (the others left at an exit)."""
        if self.packed:
            self.h = self.h[np.repeat(stay, self.counts)]
        else:
            Bc, Sc = self.m.shape
            self.h = np.ascontiguousarray(self.h.reshape(Bc, Sc, -1)[stay]).reshape(-1, self.h.shape[1])
        self.m, self.pos, self.alive, self.n = self.m[stay], self.pos[stay], self.alive[stay], self.n[stay]

    def keep_tokens(self, k: np.ndarray, significance: np.ndarray) -> None:
        """Each example keeps its k [Bc] most significant tokens ([CLS] first; `select`): the
        gather, so the next layer's GEMMs and attention run on those rows only."""
        offs = self._offsets()
        idx, m = select(significance, self.m, k)
        Bc, Sc = self.m.shape
        if self.packed:
            self.h = self.h[(offs[:-1, None] + idx)[m]]
        else:
            self.h = np.take_along_axis(self.h.reshape(Bc, Sc, -1), idx[:, :, None], axis=1).reshape(Bc * idx.shape[1], -1)
        self.pos, self.m = np.take_along_axis(self.pos, idx, axis=1), m


def forward(engine: "Engine", ids: np.ndarray, mask: np.ndarray, tt: np.ndarray | None,
            spec: "DynamicSpec") -> np.ndarray:
    """Logits [B, labels] of the engine run as `spec` says; sets `engine.last_trace`."""
    from workbench.models.dynamic import keep_count

    B = ids.shape[0]
    L = engine.num_layers
    ratios = spec.length_ratios
    use_exits = spec.exit_at is not None or spec.exit_threshold is not None
    last = spec.exit_at if spec.exit_at is not None else L - 1
    batch = _Batch.start(engine, ids, mask, tt)
    out = np.zeros((B, engine.num_labels), np.float32)
    trace = WorkTrace(tokens=np.zeros((B, L), np.int64), exit_layer=np.full(B, L - 1, np.int64))
    for i in range(last + 1):
        cur, alive = batch.counts, batch.alive
        trace.tokens[alive, i] = cur
        trace.rows.append(batch.rows())
        trace.positions.append(np.full((B, batch.m.shape[1]), -1, np.int64))
        trace.positions[-1][alive] = np.where(batch.m, batch.pos, -1)
        if i == last:  # the classifier, or a fixed exit: [CLS] rows only, unless the head reads the mean
            if i == L - 1 or pooling_of(engine, i) == "cls":
                feats = batch.run(engine, i, cls_only=True)[0]
            else:
                batch.run(engine, i)
                feats = batch.pooled(engine, i)
            out[alive] = engine._head(feats, "head" if i == L - 1 else f"exit.{i}")
            trace.exit_layer[alive] = i
            break
        k = None
        if ratios is not None and ratios[i] < 1.0:
            k = np.array([keep_count(ratios[i], int(a), int(c)) for a, c in zip(batch.n, cur)], np.int64)
            k = k if (k < cur).any() else None
        _, significance = batch.run(engine, i, significance=k is not None)
        if use_exits and i in spec.exit_layers and spec.exit_threshold is not None:
            logits = engine._head(batch.pooled(engine, i), f"exit.{i}")
            done = exits(logits, spec)
            if done.any():
                out[alive[done]] = logits[done]
                trace.exit_layer[alive[done]] = i
                if done.all():
                    break
                stay = ~done
                batch.keep_examples(stay)
                if k is not None:
                    k, cur, significance = k[stay], cur[stay], significance[stay]
                    k = k if (k < cur).any() else None
        if k is not None:
            batch.keep_tokens(k, significance)
    engine.last_trace = trace
    return out
