"""Running a `DynamicSpec` on the engine: token dropping and early exits (see
`workbench.runtime.dynamic` for the rules and the work trace).

A batch is either *packed* -- the kept tokens' rows of each example one after another, no
padding, as `Engine.pack_sequences` runs static batches -- or *padded* (B x the largest count,
the rows past an example's own count masked). Packed is the default: every right-padded or
unpadded batch (all of them after the first dropping layer), so the GEMMs compute exactly the
kept tokens' rows, attention runs per example over its own tokens, and an int8 engine whose
layers the compiled encoder runs runs the layers up to each exit check in one compiled call,
the significance and the token drops included (`workbench_ext.encoder.Int8Encoder.run_layers`).
Each example then gets the bits it gets alone. Other engines run packed batches a layer at a
time (`packed_layer`). Padded: left padding, masks with holes, and
`Engine.pack_sequences = False`; its layers run op by op (`Engine._layer`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from workbench.runtime import kernels as K
from workbench.runtime.dynamic import WorkTrace, exits, pooled, pooling_of, select
from workbench.runtime.inputs import attention_bias, packable_lengths, sequence_offsets

if TYPE_CHECKING:  # pragma: no cover
    from workbench.models.dynamic import DynamicSpec
    from workbench.runtime.engine import Engine


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
    return engine._layer(i, h, len(lengths), int(np.max(lengths)), None, cls_only=cls_only, sig=sig,
                         offsets=sequence_offsets(lengths))


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
    _of: np.ndarray | None = field(default=None, init=False, repr=False)  # the m counts/offsets are of
    _counts: np.ndarray | None = field(default=None, init=False, repr=False)
    _offs: np.ndarray | None = field(default=None, init=False, repr=False)

    @classmethod
    def start(cls, engine: "Engine", ids: np.ndarray, mask: np.ndarray, tt: np.ndarray | None) -> "_Batch":
        B, S = ids.shape
        m = mask.astype(bool)
        packed = engine.pack_sequences and (m.all() or packable_lengths(mask) is not None)
        encoder = engine._encoder
        if packed and encoder is not None and encoder.classifies:  # the packed rows' embeddings, compiled
            h = encoder.embed(np.ascontiguousarray(ids, np.int64), None if tt is None else
                              np.ascontiguousarray(tt, np.int64), m.sum(1), K.isa_code())
        else:
            h = engine._embed(ids, tt)
            if packed and not m.all():
                h = np.ascontiguousarray(h[m.reshape(-1)])
        return cls(h, m, np.broadcast_to(np.arange(S), (B, S)), np.arange(B), m.sum(1), packed)

    def _count(self) -> None:
        """Counts and offsets of the current m, once per m (m is replaced, never changed in place)."""
        if self._of is not self.m:
            self._counts = self.m.sum(1)
            self._offs = sequence_offsets(self._counts)
            self._of = self.m

    @property
    def counts(self) -> np.ndarray:
        """[Bc] the tokens each example keeps."""
        self._count()
        return self._counts

    def _offsets(self) -> np.ndarray:
        """[Bc + 1] where each example's rows start in a packed `h`."""
        self._count()
        return self._offs

    def record(self, trace: WorkTrace, i: int) -> None:
        """Layer i's work in `trace`: the tokens each example processes, the rows computed, their
        input positions."""
        counts = self.counts
        trace.tokens[self.alive, i] = counts
        trace.rows.append(int(counts.sum()) if self.packed else self.m.size)
        trace.sources.append((self.alive, self.m, self.pos))  # never changed in place: replaced

    def run(self, engine: "Engine", first: int, last: int, keeps: list[np.ndarray], trace: WorkTrace,
            cls_only: bool = False, significance: bool = False) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Layers first..last on the batch, each example keeping keeps[t] [Bc] tokens after layer
        first + t (t < last - first): one compiled call for them all, the drops in C -- more than
        one layer only where the batch is packed and the engine has the compiled encoder. Records
        each layer in `trace`. Returns ([Bc, H] layer last's [CLS] rows when `cls_only`, else None
        and `h` becomes its output; [Bc, Sc] each kept token's attention significance in layer
        last, summed over the heads, when asked for, else None)."""
        nh = engine.layer_heads[last]
        if last > first and not (self.packed and engine._encoder is not None):
            raise ValueError("_Batch.run: several layers in one call need a packed batch and the compiled encoder")
        if last > first:
            self.record(trace, first)
            cur = self.counts
            keep = np.stack(keeps).astype(np.int32)
            chosen = np.empty(int(keep.sum()), np.int32)
            total_rows = int(keep[-1].sum())
            sig = np.empty(nh * total_rows, np.float32) if significance else None
            out = engine._encoder.run_layers(self.h, cur, first, last + 1, K.isa_code(), sig=sig,
                                             cls_only=cls_only, keep=keep, chosen=chosen)
            at = 0
            for t, k in enumerate(keep):  # the kept positions, drop after drop
                self._kept(k.astype(np.int64), chosen[at:at + int(k.sum())])
                at += int(k.sum())
                self.record(trace, first + t + 1)
        else:
            self.record(trace, last)
            out, sig = self._one(engine, last, cls_only, significance)
        if not cls_only:
            self.h, out = out, None
        return out, self._totals(sig, nh) if significance else None

    def _one(self, engine: "Engine", i: int, cls_only: bool = False, significance: bool = False
             ) -> tuple[np.ndarray, np.ndarray | None]:
        """Layer i alone: (its output, the significance as the kernels give it, or None)."""
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
        return out, sig

    def _totals(self, sig: np.ndarray | None, nh: int) -> np.ndarray:
        """[Bc, Sc] the significance summed over the heads, head 0 first (None: no attention, 0 heads:
        every token 0, so the first tokens stay)."""
        total = np.zeros(self.m.shape, np.float32)
        if sig is not None and not self.packed:
            total = sig.sum(axis=1)
        elif sig is not None:  # sequence b's block [nh, cur[b]] at nh * offsets[b]
            cur, offs = self.counts, self._offsets()
            b_of = np.repeat(np.arange(len(cur)), cur)
            token = np.arange(len(b_of)) - offs[b_of]
            at = (nh * offs[b_of] + token)[None, :] + np.arange(nh)[:, None] * cur[b_of][None, :]
            total[self.m] = sig[at].sum(axis=0)  # heads summed in order, as sig.sum(axis=1)
        return total

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

    def _kept(self, k: np.ndarray, chosen: np.ndarray) -> None:
        """The positions and mask after a drop made in compiled code: each example kept k [Bc]
        tokens, `chosen` their indices among its tokens before, example after example."""
        offs = self._offsets()
        flat = self.pos[self.m][offs[np.repeat(np.arange(len(k)), k)] + chosen]
        m = np.arange(int(k.max()))[None, :] < k[:, None]
        pos = np.zeros(m.shape, np.int64)
        pos[m] = flat
        self.pos, self.m = pos, m


def forward(engine: "Engine", ids: np.ndarray, mask: np.ndarray, tt: np.ndarray | None,
            spec: "DynamicSpec") -> np.ndarray:
    """Logits [B, labels] of the engine run as `spec` says; sets `engine.last_trace`.

    The layers between two exit checks (and the last) run as one `_Batch.run`: on the compiled
    encoder, one call, token dropping included."""
    from workbench.models.dynamic import keep_count

    B = ids.shape[0]
    L = engine.num_layers
    ratios = spec.length_ratios
    last = spec.exit_at if spec.exit_at is not None else L - 1
    checks = set(spec.exit_layers) if spec.exit_threshold is not None else set()
    batch = _Batch.start(engine, ids, mask, tt)
    fuse = batch.packed and engine._encoder is not None
    out = np.zeros((B, engine.num_labels), np.float32)
    trace = WorkTrace(tokens=np.zeros((B, L), np.int64), exit_layer=np.full(B, L - 1, np.int64))

    def kept_after(i: int, cur: np.ndarray) -> np.ndarray:
        """Tokens each example keeps after layer i (its current count: no drop)."""
        if ratios is None or ratios[i] >= 1.0:
            return cur
        return np.array([keep_count(ratios[i], int(a), int(c)) for a, c in zip(batch.n, cur)], np.int64)

    first = 0
    while True:
        stop = first  # the layer this run ends with: an exit check, or the last
        while fuse and stop < last and stop not in checks:
            stop += 1
        keeps, cur = [], batch.counts
        for i in range(first, stop):
            keeps.append(kept_after(i, cur))
            cur = keeps[-1]
        if stop == last:  # the classifier, or a fixed exit: [CLS] rows only, unless the head reads the mean
            cls_read = stop == L - 1 or pooling_of(engine, stop) == "cls"
            feats, _ = batch.run(engine, first, stop, keeps, trace, cls_only=cls_read)
            if not cls_read:
                feats = batch.pooled(engine, stop)
            out[batch.alive] = engine._head(feats, "head" if stop == L - 1 else f"exit.{stop}")
            trace.exit_layer[batch.alive] = stop
            break
        k = kept_after(stop, cur)
        drop = bool((k < cur).any())
        _, significance = batch.run(engine, first, stop, keeps, trace, significance=drop)
        if stop in checks:
            logits = engine._head(batch.pooled(engine, stop), f"exit.{stop}")
            done = exits(logits, spec)
            if done.any():
                out[batch.alive[done]] = logits[done]
                trace.exit_layer[batch.alive[done]] = stop
                if done.all():
                    break
                stay = ~done
                batch.keep_examples(stay)
                if drop:
                    k, significance = k[stay], significance[stay]
                    drop = bool((k < batch.counts).any())
        if drop:
            batch.keep_tokens(k, significance)
        first = stop + 1
    engine.last_trace = trace
    return out
