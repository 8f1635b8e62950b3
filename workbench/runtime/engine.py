"""Our inference engine: a BERT-family sequence classifier compiled onto `workbench_ext` kernels.

`compile_model(hf_model)` (`workbench.runtime.compiler`) reads the weights of a Hugging Face sequence classifier of a family
the architecture adapter knows (`workbench.models.arch`: `BertForSequenceClassification` for
BERT, MiniLM, ...; `DistilBertForSequenceClassification`; `RobertaForSequenceClassification`
and XLM-R / CamemBERT) and builds an `Engine`. The three share the post-LN layer layout; RoBERTa
differs in its position ids (offset by `padding_idx + 1`, padding at `padding_idx`) and its head
(dense -> tanh -> out_proj on [CLS], the same computation as BERT's pooler + classifier).
Layers whose attention heads were pruned keep their own head count, and structurally pruned
models run as shrunk (`workbench.prune.structure.shrink`): uneven head counts and FFN widths per
layer, a layer whose attention was fully removed (0 heads, `HeadlessAttention`) or whose FFN was
(0 neurons) -- such a block adds only its output projection's bias before the residual and
LayerNorm, exactly what torch computes -- and fewer layers than the config says (the engine runs
the layers the module list holds). A zero-width Linear becomes an `empty` entry: no weights, no
kernel call.

* every Linear layer becomes one kernel call. With `quantize=True` weights are int8, symmetric,
  per output channel (`scale = max|w_row| / 127`), activations are quantized per token to u8
  inside the kernel (dynamic quantization); a layer whose 1x4-block sparsity (fraction of
  all-zero groups of 4 consecutive weights along K, measured on the int8 weight) is at least
  `sparse_threshold` runs on `BlockSparseInt8Linear`, the others on `DenseInt8Linear`. With
  `quantize=False` weights stay fp32: sparse layers on `BlockSparseFp32Linear`, dense ones on
  BLAS sgemm (NumPy). Q, K and V are fused into one [3H, H] layer (the decision dense/sparse is
  made on the fused weight); the 1/sqrt(head_dim) attention scale is folded into Q.
* LayerNorm, bias + residual + LayerNorm and GELU run on `workbench_ext.ops`; an int8 FFN input
  layer applies GELU in its epilogue instead (`activation="gelu"`, bit-identical). Attention
  (QK^T, mask, softmax, PV for all heads) is one `workbench_ext.attention` call per layer; the
  pooler's tanh is `workbench_ext.ops.tanh`. See `workbench.runtime.kernels` for the NumPy
  reference kernels, run only when asked for by name.
* the layer loop: an int8 engine whose every layer has attention, an FFN and GELU runs a whole
  static forward, token ids to logits, in one compiled call (`workbench_ext.encoder.Int8Encoder
  .classify`: embeddings, layers, head; bit-identical to `_embed`, the per-op path `_layer` and
  `_head`, which the others -- fp32 / bf16, static grids, removed blocks -- keep; token dropping
  and exits start from its embeddings and call it up to each exit check). The inputs' values are
  checked in one compiled pass (`inputs.check_inputs`); for int64 arrays with no padding or right
  padding that pass and the whole forward are one call (`Int8Encoder.forward_call`), so a
  batch-1 forward runs no NumPy before the kernels. A forward runs with Python's cyclic GC
  paused.
* exact graph-level savings: trailing padding columns shared by the whole batch are dropped, and
  the last encoder layer is only evaluated for the [CLS] row that the classifier reads. A
  right-padded batch runs without its padding at all (`pack_sequences`): the sequences' tokens
  are packed into one set of rows for the Linears and LayerNorms, and attention runs per
  sequence over its own tokens, so on int8 engines each row's logits are the bits that row gets
  alone (fp32 / bf16 weights: BLAS-style GEMMs round differently at other row counts).
* dynamic models (`model.dynamic`, `model.exit_heads`): token dropping between layers and early
  exits run in `workbench.runtime.dynamic_forward` on packed rows: on engines with the
  compiled loop one `Int8Encoder.run_layers` call up to each exit check, the token drops in C;
  else `_layer` with offsets (padded layouts: `_layer` with the mask); the attention hands back
  each key's attention mass (the drop significance).

Accuracy (documented contract, checked by tests/test_runtime.py on the real MiniLM weights with
a seeded std-0.5 two-label head, 16 real sentences, padded batch):
  fp32 path (`quantize=False`): logits within atol 1e-4 of the torch fp32 model (measured 1.4e-6);
  int8 path: max |logit error| <= 0.25 * max |torch logit| and no larger than torch's own dynamic
  int8 (`quantize_dynamic`) error; same argmax wherever torch's margin exceeds twice that error
  (measured: 0.066 at max |logit| 0.88 vs torch dynamic int8 0.318; 80% 1x4-pruned: 0.10 at
  max |logit| 0.57 vs torch 0.18; argmax agreement 16/16 in both, torch int8 15/16 unpruned).

What an engine is made of (`describe`, sizes, sparsity) is reported by `EngineReport`
(`workbench.runtime.engine_report`); its files, `save` / `load`, are `EngineFile`'s
(`workbench.runtime.engine_file`); the op-by-op forward (`_embed`, `_layer`, `_head`) is
`EngineOps`' (`workbench.runtime.engine_ops`). `Engine` inherits all three.
"""
from __future__ import annotations

import contextlib
import functools
import gc
from typing import Any, Iterator

import numpy as np

from workbench.runtime import kernels as K
from workbench.runtime.engine_file import (  # noqa: F401  (the file names: re-exported, importable from here as before)
    FORMAT, FORMAT_VERSION, META_FILE, WEIGHTS_FILE, EngineFile,
)
from workbench.runtime.engine_ops import EngineOps
from workbench.runtime.engine_report import EngineReport
from workbench.runtime.inputs import (  # noqa: F401  (attention_bias: importable from here as before)
    attention_bias, check_inputs, packable_lengths, sequence_offsets,
)

FP32_ATOL = 1e-4


@contextlib.contextmanager
def _no_gc_pauses() -> Iterator[None]:
    """Python's cyclic GC off for one forward: a forward allocates a few hundred small objects
    (no cycles), enough to trigger collections that then walk the caller's whole heap -- a torch
    model included: 4-5 % of a 90 %-sparse DistilBERT forward at batch 1 in `perf`."""
    was = gc.isenabled()
    if was:
        gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# --------------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------------
class Engine(EngineOps, EngineReport, EngineFile):
    """A compiled classifier. `engine(input_ids, attention_mask, token_type_ids=None) -> logits`."""

    # A padded batch (rows of tokens then padding) runs its tokens without the padding (the
    # compiled loop: `Int8Encoder.run_packed`; per op: attention per sequence): no work on
    # padding rows, and each row's logits are the bits it gets alone (int8 engines). False: the
    # padded batch, masked (A/B timing).
    pack_sequences: bool = True

    def __init__(self, meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"not a {FORMAT} v{FORMAT_VERSION} engine: format={meta.get('format')!r} "
                             f"version={meta.get('version')!r}")
        self.meta = meta
        self.tensors = tensors
        self.architecture: str = meta["architecture"]
        self.hidden_size: int = meta["hidden_size"]
        self.num_heads: int = meta["num_heads"]
        self.num_layers: int = meta["num_layers"]
        self.num_labels: int = meta["num_labels"]
        self.max_positions: int = meta["max_positions"]
        self.vocab_size: int = meta["vocab_size"]
        self.type_vocab_size: int = meta["type_vocab_size"]
        # heads per layer (fewer than num_heads in layers whose heads were pruned)
        self.layer_heads: list[int] = list(meta.get("layer_heads") or [self.num_heads] * self.num_layers)
        # "absolute": positions 0..S-1; "padding_offset" (RoBERTa): padding tokens at position
        # padding_idx, the others at padding_idx + 1 + their index among the row's non-padding
        self.position_ids: str = meta.get("position_ids", "absolute")
        self.padding_idx: int | None = meta.get("padding_idx")
        self.max_seq_len: int = self.max_positions - (
            self.padding_idx + 1 if self.position_ids == "padding_offset" else 0)
        self._act = K.ACTIVATIONS[meta["activation"]]
        # attention operands: "fp32", "bf16" (AVX512-BF16) or "int8" (AVX-512 VNNI): compile_model
        self.attention: str = meta.get("attention", "fp32")
        self._eps = {k: float(v) for k, v in meta["eps"].items()}
        from workbench.runtime import choice

        K.require_compiled()  # no silent NumPy engine: fails saying how to build the kernels
        self.num_threads = None  # the kernels' default thread count (see the property)
        self._linears: dict[str, Any] = {}
        self.impls: dict[str, str] = {}
        for name, lm in meta["linears"].items():
            if lm["kind"] == "empty":  # zero-width: never called (see _forward)
                self.impls[name] = "none (zero-width: removed block)"
                continue
            bias = None if lm["bias_fused"] else tensors.get(f"{name}.bias")
            fn, impl = choice.build_linear(name, lm, tensors, bias)  # static grid / kernel kind
            self._linears[name] = fn
            self.impls[name] = impl
        # FFN inputs whose GELU runs inside the int8 kernel's epilogue (bit-identical, one pass less)
        self._gelu_fused: set[str] = {n for n, fn in self._linears.items()
                                      if n.endswith(".ffn1") and meta["activation"] == "gelu" and K.fuses_gelu(fn)}
        # FFN width per layer (0: the layer's FFN was removed)
        self.layer_ffn: list[int] = [int(meta["linears"][f"layers.{i}.ffn1"]["N"]) for i in range(self.num_layers)]
        if len(self.layer_heads) != self.num_layers:
            raise ValueError(f"engine meta: {len(self.layer_heads)} layer head counts for {self.num_layers} layers")
        self._encoder = self._compiled_encoder()  # None: the layers run op by op (_layer)
        self._last_trace: Any = None  # work done by the last call (the last_trace property)

    def _compiled_encoder(self) -> Any:
        """The whole static encoder as one compiled call (`workbench_ext.encoder`) when every
        layer can run there: int8 kernels (dense, block-sparse, library or a row-count switch of them),
        GELU, attention and FFN present. Otherwise None (removed blocks, static grids, fp32 /
        bf16, other activations keep the per-op path, `_layer`)."""
        from workbench.runtime.choice import RowSwitch

        if self.meta["activation"] != "gelu" or min(self.layer_heads, default=0) < 1 or min(self.layer_ffn) < 1:
            return None
        T, d = self.tensors, self.hidden_size // self.num_heads

        def parts(name: str) -> list[tuple[int, Any]]:
            fn = self._linears[name]
            if isinstance(fn, RowSwitch):
                return list(zip(fn.starts, fn.parts))
            return [(0, fn)]

        layers = []
        for i in range(self.num_layers):
            ln = lambda k: (T[f"layers.{i}.{k}.gamma"], T[f"layers.{i}.{k}.beta"], self._eps[f"layers.{i}.{k}"])  # noqa: E731,B023
            layers.append({
                "qkv": parts(f"layers.{i}.qkv"), "out": parts(f"layers.{i}.out"),
                "ffn1": parts(f"layers.{i}.ffn1"), "ffn2": parts(f"layers.{i}.ffn2"),
                "heads": self.layer_heads[i], "head_dim": d, "ln1": ln("ln1"), "ln2": ln("ln2"),
                "out_bias": T[f"layers.{i}.out.bias"], "ffn2_bias": T[f"layers.{i}.ffn2.bias"],
            })
        pad = self.padding_idx if self.position_ids == "padding_offset" else None
        embeddings = {"word": T["embeddings.word"], "position": T["embeddings.position"],
                      "token_type": T.get("embeddings.token_type"), "gamma": T["embeddings.ln.gamma"],
                      "beta": T["embeddings.ln.beta"], "eps": self._eps["embeddings.ln"], "padding_idx": pad,
                      "project": parts("embeddings.project") if "embeddings.project" in self._linears else None}
        heads = {name[:-4]: {"pre": parts(name), "cls": parts(f"{name[:-4]}.cls"),
                             "activation": self.head_activation(name[:-4])}
                 for name in self._linears if name.endswith(".pre")}  # the classifier's and the exit heads
        return K.int8_encoder(layers, self.hidden_size, attention=self.attention, embeddings=embeddings, heads=heads)

    @property
    def _encoder(self) -> Any:
        """The compiled encoder (`workbench_ext.encoder.Int8Encoder`), None when the layers run
        op by op; setting it (None: the per-op path, as tests and breakdowns do) also sets the
        one-call path of static forwards (`_forward_call`: `Int8Encoder.forward_call`)."""
        return self._encoder_impl

    @_encoder.setter
    def _encoder(self, encoder: Any) -> None:
        self._encoder_impl = encoder
        self._forward_call: Any = None
        # an encoder without the one-call entry (a stand-in that wraps `classify`, as tests use)
        # runs the checked path
        if encoder is not None and getattr(encoder, "classifies", False) and hasattr(encoder, "forward_call"):
            encoder.set_input_ranges(self.vocab_size, self.type_vocab_size, self.max_seq_len)
            self._forward_call = encoder.forward_call

    @property
    def num_threads(self) -> int | None:
        """Threads this engine's calls run on; None (the default): the kernels' default
        (OMP_NUM_THREADS, `workbench_ext.cpu.set_num_threads`, else the usable cores). An int
        holds only for this engine's calls (`kernels.kernel_threads`); kernels still use fewer
        on problems too small to split."""
        return self._num_threads

    @num_threads.setter
    def num_threads(self, n: int | None) -> None:
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"num_threads must be None (the kernels' default) or an int >= 1, got {n!r}")
        self._num_threads = n

    # ---- forward -----------------------------------------------------------------------------
    def __call__(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None,
                 **dynamic: Any) -> np.ndarray:
        """`dynamic`: overrides of the compiled `DynamicSpec` (`length_ratios=`, `exit_threshold=`,
        `exit_at=`, `exit_criterion=`, or a whole `spec=`); see `workbench.runtime.dynamic`."""
        spec = None
        if dynamic or self.meta.get("dynamic") is not None:  # a spec to resolve
            from workbench.runtime import dynamic as D

            spec = D.resolve(self, dynamic)
        if spec is None:
            logits = self._classify_in_one_call(input_ids, attention_mask, token_type_ids)
            if logits is not None:
                return logits
        from workbench.runtime.dynamic_forward import forward as dynamic_forward

        K.wake_pool()  # a sleeping worker wakes (~0.1 ms after a pause) while the inputs are checked
        ids, mask, tt, lengths = check_inputs(self, input_ids, attention_mask, token_type_ids)
        with _no_gc_pauses(), K.kernel_threads(self.num_threads):
            if spec is not None:  # token dropping / early exits: workbench.runtime.dynamic_forward
                return dynamic_forward(self, ids, mask, tt, spec)
            return self._forward(ids, mask, tt, lengths)

    @property
    def last_trace(self) -> Any:
        """The work of the last call (a `runtime.dynamic.WorkTrace`), None before the first; a
        static call's is built when first asked for."""
        if callable(self._last_trace):
            self._last_trace = self._last_trace()
        return self._last_trace

    @last_trace.setter
    def last_trace(self, trace: Any) -> None:
        self._last_trace = trace

    def _classify_in_one_call(self, input_ids: Any, attention_mask: Any, token_type_ids: Any
                              ) -> np.ndarray | None:
        """A static forward's logits from one compiled call that also checks the inputs
        (`Int8Encoder.forward_call`), when the engine has the compiled loop and the arrays are
        int64 C-contiguous [B, S] with no padding or right padding: the common batch-1 call then
        runs none of `check_inputs`' NumPy (with the caches cold after the last forward, ~0.1 ms,
        3-4 % of a 90 %-sparse DistilBERT forward) and no Python checks (another 0.04-0.05 ms). The
        same bits as `_forward`. None for every other call (and for a wrong value): `check_inputs`
        then names what is wrong or lays the batch out."""
        if self._forward_call is None:
            return None
        out = self._forward_call(input_ids, attention_mask, token_type_ids, self.pack_sequences,
                                 self._num_threads or 0)
        if out is None:
            return None
        from workbench.runtime.dynamic import static_trace_of_counts

        logits, counts, packed, seq_len = out
        self.last_trace = functools.partial(static_trace_of_counts, counts, seq_len, self.num_layers, packed)
        return logits

    def _forward(self, ids: np.ndarray, mask: np.ndarray, tt: np.ndarray | None,
                 lengths: np.ndarray | None) -> np.ndarray:
        """Logits of a static call on checked inputs (`check_inputs`; lengths: the packable rows')."""
        from workbench.runtime.dynamic import static_trace

        B, S = ids.shape
        L = self.num_layers
        lengths = lengths if self.pack_sequences else None
        self.last_trace = functools.partial(static_trace, mask, L, lengths is not None)
        if self._encoder is not None and self._encoder.classifies:  # token ids to logits in one call
            return self._encoder.classify(np.ascontiguousarray(ids, np.int64),
                                          None if tt is None else np.ascontiguousarray(tt, np.int64), lengths,
                                          None if lengths is not None else attention_bias(mask), K.isa_code())
        h, mask_bias = self._embed(ids, tt), attention_bias(mask)
        if lengths is not None:  # the tokens without the padding, one sequence after another
            h = np.ascontiguousarray(h[mask.reshape(-1) != 0])
        if lengths is not None and self._encoder is not None:  # every layer in one compiled call
            h = self._encoder.run_packed(h, lengths, K.isa_code())
        elif self._encoder is not None:
            h = self._encoder.run(h, B, S, mask_bias, K.isa_code())
        else:
            offsets = None if lengths is None else sequence_offsets(lengths)
            for i in range(L):  # only the [CLS] row of the last layer feeds the classifier
                h = self._layer(i, h, B, S, mask_bias, cls_only=i == L - 1, offsets=offsets)
        return self._head(h)  # [B, H] after the CLS-only last layer

    def __repr__(self) -> str:
        kinds: dict[str, int] = {}
        for lm in self.meta["linears"].values():
            kinds[lm["kind"]] = kinds.get(lm["kind"], 0) + 1
        return (f"Engine({self.architecture}, layers={self.num_layers}, hidden={self.hidden_size}, "
                f"linears={kinds}, isa={K.active_isa()})")
