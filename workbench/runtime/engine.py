"""Our inference engine: a BERT-family sequence classifier compiled onto `workbench_ext` kernels.

`compile_model(hf_model)` reads the weights of a Hugging Face sequence classifier of a family
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
  pooler's tanh is NumPy. See `workbench.runtime.kernels` for the NumPy reference kernels, run
  only when asked for by name.
* the layer loop: an int8 engine whose every layer has attention, an FFN and GELU runs the whole
  encoder in one compiled call (`workbench_ext.encoder.Int8Encoder`, bit-identical to the per-op
  path `_layer`, which the others -- fp32 / bf16, static grids, removed blocks, token dropping
  -- keep). A forward runs with Python's cyclic GC paused.
* exact graph-level savings: trailing padding columns shared by the whole batch are dropped, and
  the last encoder layer is only evaluated for the [CLS] row that the classifier reads.
* dynamic models (`model.dynamic`, `model.exit_heads`): token dropping between layers and early
  exits run in `workbench.runtime.dynamic` on the per-layer methods `_embed` / `_layer` /
  `_head`; `_attention(..., sig=)` hands it each key's attention mass (the drop significance).

Accuracy (documented contract, checked by tests/test_runtime.py on the real MiniLM weights with
a seeded std-0.5 two-label head, 16 real sentences, padded batch):
  fp32 path (`quantize=False`): logits within atol 1e-4 of the torch fp32 model (measured 1.4e-6);
  int8 path: max |logit error| <= 0.25 * max |torch logit| and no larger than torch's own dynamic
  int8 (`quantize_dynamic`) error; same argmax wherever torch's margin exceeds twice that error
  (measured: 0.066 at max |logit| 0.88 vs torch dynamic int8 0.318; 80% 1x4-pruned: 0.10 at
  max |logit| 0.57 vs torch 0.18; argmax agreement 16/16 in both, torch int8 15/16 unpruned).

Engines are saved as `engine.safetensors` (int8 weights, scales, biases, fp32 tensors; int8 engines keep word embeddings in fp16) plus
`engine.json` (architecture, shapes, which layers are sparse); no pickle. Packed kernel formats
are rebuilt at load time.
"""
from __future__ import annotations

import contextlib
import gc
import json
import math
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from workbench.runtime import kernels as K

FORMAT = "workbench-engine"
FORMAT_VERSION = 1
SUPPORTED_ARCHITECTURES = ("BertForSequenceClassification", "DistilBertForSequenceClassification",
                           "RobertaForSequenceClassification", "XLMRobertaForSequenceClassification",
                           "CamembertForSequenceClassification")
WEIGHTS_FILE = "engine.safetensors"
META_FILE = "engine.json"
FP32_ATOL = 1e-4


class UnsupportedModelError(ValueError):
    """The model is not one `compile_model` knows how to run."""


# --------------------------------------------------------------------------------------------
# reading a Hugging Face model
# --------------------------------------------------------------------------------------------
def _np(t: Any) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu").float().numpy(), dtype=np.float32)


def _linear(mod: Any, where: str) -> tuple[np.ndarray, np.ndarray | None, str]:
    from torch import nn

    from workbench.runtime.static import read_static

    static = None if isinstance(mod, nn.Linear) else read_static(mod)  # static_int8 / qat: kept as is
    if static is not None:
        return static, static.bias, where
    if not isinstance(mod, nn.Linear):
        raise UnsupportedModelError(
            f"compile_model expects fp32 torch.nn.Linear layers; {where} is "
            f"{type(mod).__module__}.{type(mod).__name__} (compile the model before applying "
            "torch quantization: the workbench runtime quantizes the weights itself)")
    w = mod.weight  # with torch.nn.utils.prune this is already weight_orig * weight_mask
    return _np(w), (None if mod.bias is None else _np(mod.bias)), where


def _activation_name(act: Any, where: str) -> str:
    if not isinstance(act, str) or act not in K.ACTIVATIONS:
        raise UnsupportedModelError(
            f"{where}: activation {act!r} is not supported (supported: {sorted(K.ACTIVATIONS)})")
    return act


def _ln(ln: Any) -> tuple[np.ndarray, np.ndarray, float]:
    return _np(ln.weight), _np(ln.bias), float(ln.eps)


def _read(model: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, tuple]]:
    """Weights of a BERT / DistilBERT / RoBERTa sequence classifier, read through the
    architecture adapter (`workbench.models.arch`): one reader for every family, whose layers
    share the post-LN layout (Q, K, V, attention output, LN, FFN in/out, LN)."""
    from workbench.config import ConfigError
    from workbench.models.arch import architecture

    name = type(model).__name__
    try:
        arch = architecture(model, "compile_model")
    except ConfigError as exc:
        raise _unsupported(name, str(exc)) from None
    fam, cfg = arch.family, model.config
    if not name.endswith("ForSequenceClassification"):
        raise _unsupported(name, "only sequence classifiers can be compiled")
    if getattr(cfg, "position_embedding_type", "absolute") not in (None, "absolute"):
        raise UnsupportedModelError(
            f"position_embedding_type={cfg.position_embedding_type!r} is not supported (only 'absolute')")
    if getattr(cfg, "is_decoder", False):
        raise UnsupportedModelError(f"decoder {fam.name} models are not supported")
    if fam.pooler and arch.head_modules().get(fam.pooler) is None:
        raise UnsupportedModelError(f"a {name} without pooler is not supported")
    emb = arch.embeddings
    t: dict[str, np.ndarray] = {
        "embeddings.word": _np(arch.word_embeddings.weight),
        "embeddings.position": _np(getattr(emb, fam.position_embeddings).weight),
    }
    if fam.token_type_embeddings:
        t["embeddings.token_type"] = _np(getattr(emb, fam.token_type_embeddings).weight)
    g, b, eps_emb = _ln(getattr(emb, fam.embedding_norm))
    t["embeddings.ln.gamma"], t["embeddings.ln.beta"] = g, b
    act = _activation_name(getattr(cfg, fam.activation_attr), f"config.{fam.activation_attr}")
    linears: dict[str, tuple] = {}
    eps: dict[str, float] = {"embeddings.ln": eps_emb}
    layer_heads = []
    for i in range(arch.num_layers):
        def lin(role: str) -> tuple[np.ndarray, np.ndarray | None, str]:
            return _linear(arch.module(i, role), arch.module_name(i, role))  # noqa: B023

        linears[f"layers.{i}.qkv"] = (lin("query"), lin("key"), lin("value"))
        linears[f"layers.{i}.out"] = lin("attn_out")
        linears[f"layers.{i}.ffn1"] = lin("ffn_in")
        linears[f"layers.{i}.ffn2"] = lin("ffn_out")
        for key, role in ((f"layers.{i}.ln1", "attn_norm"), (f"layers.{i}.ln2", "ffn_norm")):
            t[f"{key}.gamma"], t[f"{key}.beta"], eps[key] = _ln(arch.module(i, role))
        q, k, v = (w for w, _, _ in linears[f"layers.{i}.qkv"])
        if not q.shape == k.shape == v.shape or q.shape[0] % arch.head_size:  # 0 rows: attention removed
            raise UnsupportedModelError(
                f"{arch.layer_prefix(i)}: query/key/value shapes {q.shape}, {k.shape}, {v.shape} are not "
                f"whole heads of size {arch.head_size}")
        layer_heads.append(q.shape[0] // arch.head_size)
    linears["head.pre"] = _linear(model.get_submodule(fam.head_dense), fam.head_dense)
    linears["head.cls"] = _linear(model.get_submodule(fam.head_out), fam.head_out)
    heads = arch.config_num_heads
    meta = {
        "hidden_size": arch.hidden_size, "num_heads": heads,
        "num_layers": arch.num_layers, "activation": act,
        "vocab_size": int(t["embeddings.word"].shape[0]),
        "max_positions": int(t["embeddings.position"].shape[0]),
        "type_vocab_size": int(t["embeddings.token_type"].shape[0]) if "embeddings.token_type" in t else 0,
        "head": "pooler_tanh" if fam.head_activation == "tanh" else "pre_classifier_relu", "eps": eps,
    }
    if any(h != heads for h in layer_heads):  # pruned heads
        meta["layer_heads"] = layer_heads
    if fam.position_offset:
        # RoBERTa: padding tokens sit at position padding_idx, the others count from padding_idx + 1
        meta["position_ids"] = "padding_offset"
        meta["padding_idx"] = int(emb.padding_idx if getattr(emb, "padding_idx", None) is not None
                                  else cfg.pad_token_id)
    return meta, t, linears


def _unsupported(name: str, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"workbench runtime cannot compile a {name}: supported architectures are "
        f"{', '.join(SUPPORTED_ARCHITECTURES)} (BERT, MiniLM, DistilBERT and RoBERTa/XLM-R sequence "
        f"classifiers); {why}")


# Linear layers whose bias is applied in the fused bias + residual + LayerNorm op.
_BIAS_FUSED = ("out", "ffn2")


def attention_bias(mask: np.ndarray) -> np.ndarray:
    """The additive attention mask as in HF: 0 for tokens, dtype-min for padding; [B, 1, 1, S]."""
    return ((np.float32(1.0) - mask) * np.finfo(np.float32).min).astype(np.float32)[:, None, None, :]


def compile_model(hf_model: Any, *, quantize: bool = True, sparse_threshold: float = 0.5,
                  kernel_choice: str = "threshold", choice_shape: tuple[int, int] = (1, 128),
                  choice_batches: tuple[int, ...] = (), dtype: str | None = None) -> "Engine":
    """Compile a Hugging Face BERT-family sequence classifier into an `Engine`.

    quantize: int8 weights (per output channel) with dynamic per-token activation quantization;
        False keeps fp32 weights. Layers of a `static_int8` / `qat` stage (`Int8Linear`) keep
        their own int8 weights and calibrated activation grid (`workbench.runtime.static`).
    sparse_threshold: with kernel_choice "threshold", a Linear whose fraction of all-zero 1x4
        blocks is >= this runs on the block-sparse kernel; values > 1 never use the sparse kernels.
    kernel_choice: "threshold" | "measure" (time the candidate kernels at `choice_shape` =
        (batch, seq) and keep the fastest) | "dense" | "sparse" (`workbench.runtime.choice`).
    choice_batches: more batch sizes (at choice_shape's seq) for "measure" to time; a Linear
        whose fastest kernel changes with the batch keeps one kernel per range of row counts.
    dtype: "bf16" runs the dense fp32 Linears in bf16 (AVX512-BF16; fp32 where the CPU has none,
        `describe()` says which); overrides `quantize`. None: "int8" if quantize else "fp32".
    """
    from workbench.runtime import choice as C
    from workbench.runtime import static as S

    arch = type(hf_model).__name__
    if not isinstance(sparse_threshold, (int, float)) or sparse_threshold < 0:
        raise ValueError(f"sparse_threshold must be a number >= 0, got {sparse_threshold!r}")
    C.check_mode(kernel_choice)
    if any(not isinstance(b, int) or b < 1 for b in choice_batches):
        raise ValueError(f"choice_batches must be batch sizes >= 1, got {choice_batches!r}")
    shapes = (tuple(choice_shape), tuple((b, choice_shape[1]) for b in choice_batches))
    dtype = dtype or ("int8" if quantize else "fp32")
    if dtype not in ("int8", "fp32", "bf16"):
        raise ValueError(f"dtype must be 'int8', 'fp32' or 'bf16', got {dtype!r}")
    quantize = dtype == "int8"
    meta, tensors, raw = _read(hf_model)
    from workbench.runtime.dynamic import exit_pooling, read_dynamic

    dynamic = read_dynamic(hf_model, raw)  # model.dynamic + exit heads (adds exit.<i>.pre/cls)
    if dynamic:
        meta["exit_pooling"] = exit_pooling(hf_model)
    H, nh = meta["hidden_size"], meta["num_heads"]
    if H % nh:
        raise UnsupportedModelError(f"hidden size {H} is not divisible by {nh} heads")
    q_scale = np.float32(1.0 / math.sqrt(H // nh))

    linears_meta: dict[str, dict[str, Any]] = {}
    for name, value in raw.items():
        entry = S.compile_static(name, value, q_scale, tensors)  # None unless static_int8 / qat
        if entry is not None:
            _choose(name, entry, "int8", tensors, meta["num_layers"], kernel_choice, sparse_threshold, shapes)
            linears_meta[name] = entry
            continue
        value = S.as_fp32(value)  # a group only partly static runs as fp32 weights
        if name.endswith(".qkv"):
            (wq, bq, nq), (wk, bk, nk), (wv, bv, nv) = value
            sources = [[nq, int(wq.shape[0])], [nk, int(wk.shape[0])], [nv, int(wv.shape[0])]]
            zeros = lambda n: np.zeros(n, np.float32)  # noqa: E731
            w = np.concatenate([wq * q_scale, wk, wv], axis=0)
            b = np.concatenate([(bq if bq is not None else zeros(wq.shape[0])) * q_scale,
                                bk if bk is not None else zeros(wk.shape[0]),
                                bv if bv is not None else zeros(wv.shape[0])])
        else:
            w, b, src = value
            sources = [[src, int(w.shape[0])]]
        N, Kdim = w.shape
        entry: dict[str, Any] = {"N": int(N), "K": int(Kdim), "sources": sources}
        if N == 0 or Kdim == 0:
            # a removed block (0 heads / 0 FFN neurons): nothing to multiply; the output is the
            # bias alone (N > 0, K = 0: attn_out / ffn2 of a removed block) or nothing (N = 0)
            entry.update({"kind": "empty", "block_sparsity": 0.0, "bias_fused": name.split(".")[-1] in _BIAS_FUSED})
            if N:
                tensors[f"{name}.bias"] = np.ascontiguousarray(b if b is not None else np.zeros(N, np.float32),
                                                               dtype=np.float32)
            linears_meta[name] = entry
            continue
        if quantize:
            wq8, scale = K.quantize_weight_per_channel(w)
            tensors[f"{name}.weight"], tensors[f"{name}.scale"] = wq8, scale
            sp = K.block_sparsity(wq8)
        else:
            tensors[f"{name}.weight"] = np.ascontiguousarray(w, dtype=np.float32)
            sp = K.block_sparsity(w)
        # any K: the sparse kernels zero-pad K to whole 1x4 blocks (a structurally pruned FFN has
        # an arbitrary width, e.g. 921 neurons, and may still be block-sparse)
        entry["block_sparsity"] = round(sp, 6)
        if b is not None:
            tensors[f"{name}.bias"] = np.ascontiguousarray(b, dtype=np.float32)
        elif name.split(".")[-1] in _BIAS_FUSED:  # the fused op needs a bias vector
            tensors[f"{name}.bias"] = np.zeros(N, np.float32)
        _choose(name, entry, dtype, tensors, meta["num_layers"], kernel_choice, sparse_threshold, shapes)
        linears_meta[name] = entry

    if quantize and not any(lm.get("static") for lm in linears_meta.values()):
        # int8 engines keep the word embeddings (most of a small model's bytes) in fp16: half the
        # size, rounding error ~5e-4 relative, far below the int8 Linears' own error.
        tensors["embeddings.word"] = tensors["embeddings.word"].astype(np.float16)
    try:
        hf_config = hf_model.config.to_dict()
    except Exception:  # pragma: no cover
        hf_config = {}
    meta.update({
        "format": FORMAT, "version": FORMAT_VERSION, "architecture": arch,
        "quantize": bool(quantize), "sparse_threshold": float(sparse_threshold),
        "kernel_choice": kernel_choice, "dtype": dtype,
        "num_labels": int(raw["head.cls"][0].shape[0]), "linears": linears_meta,
        "hf_config": json.loads(json.dumps(hf_config, default=str)),
    }, **({"dynamic": dynamic} if dynamic else {}))
    return Engine(meta, tensors)


def _choose(name: str, entry: dict[str, Any], family: str, tensors: dict[str, np.ndarray], num_layers: int,
            mode: str, threshold: float, shapes: tuple[tuple[int, int], tuple[tuple[int, int], ...]]) -> None:
    """Set entry["kind"] (the kernel this Linear runs on) and entry["choice"] (how it was chosen)."""
    from workbench.runtime import choice as C

    entry["bias_fused"] = name.split(".")[-1] in _BIAS_FUSED
    bias = None if entry["bias_fused"] else tensors.get(f"{name}.bias")
    build = lambda kind: C.build_linear(name, {**entry, "kind": kind}, tensors, bias)[0]  # noqa: E731
    shape, more = shapes
    entry["kind"], entry["choice"] = C.choose(
        name, family, entry["block_sparsity"], build, entry["K"], mode=mode, threshold=threshold,
        rows=C.layer_rows(name, num_layers, *shape), more_rows=tuple(C.layer_rows(name, num_layers, *s) for s in more))


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
class Engine:
    """A compiled classifier. `engine(input_ids, attention_mask, token_type_ids=None) -> logits`."""

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
        self._eps = {k: float(v) for k, v in meta["eps"].items()}
        from workbench.runtime import choice

        K.require_compiled()  # no silent NumPy engine: fails saying how to build the kernels
        # threads for the attention heads (the kernels' own OpenMP pools follow OMP_NUM_THREADS)
        self.num_threads: int = K.default_threads()
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
        self.last_trace: dict[str, Any] | None = None  # work done by the last call (runtime.dynamic)

    def _compiled_encoder(self) -> Any:
        """The whole static encoder as one compiled call (`workbench_ext.encoder`) when every
        layer can run there: int8 kernels (dense, block-sparse or a row-count switch of them),
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
        return K.int8_encoder(layers, self.hidden_size)

    # ---- inputs ------------------------------------------------------------------------------
    def _check_inputs(self, input_ids: Any, attention_mask: Any, token_type_ids: Any
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        ids = np.asarray(input_ids)
        if ids.ndim != 2:
            raise ValueError(f"input_ids must be 2-D [batch, seq], got shape {ids.shape}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"input_ids must be integers, got dtype {ids.dtype}")
        B, S = ids.shape
        if B == 0 or S == 0:
            raise ValueError(f"input_ids must be non-empty, got shape {ids.shape}")
        if S > self.max_seq_len:
            raise ValueError(f"sequence length {S} exceeds the model's maximum {self.max_seq_len} "
                             f"(max_position_embeddings {self.max_positions})")
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(f"input_ids must be in [0, {self.vocab_size}), got [{ids.min()}, {ids.max()}]")
        if attention_mask is None:
            mask = np.ones((B, S), np.float32)
        else:
            mask = np.asarray(attention_mask)
            if mask.shape != ids.shape:
                raise ValueError(f"attention_mask shape {mask.shape} does not match input_ids shape {ids.shape}")
            if not np.all((mask == 0) | (mask == 1)):
                raise ValueError("attention_mask must contain only 0 and 1")
            mask = mask.astype(np.float32)
        tt = None
        if token_type_ids is not None:
            tt = np.asarray(token_type_ids)
            if tt.shape != ids.shape:
                raise ValueError(f"token_type_ids shape {tt.shape} does not match input_ids shape {ids.shape}")
            if not np.issubdtype(tt.dtype, np.integer):
                raise TypeError(f"token_type_ids must be integers, got dtype {tt.dtype}")
            if self.type_vocab_size == 0:
                if np.any(tt != 0):
                    raise ValueError(f"{self.architecture} has no token types; token_type_ids must be 0")
                tt = None
            elif tt.min() < 0 or tt.max() >= self.type_vocab_size:
                raise ValueError(f"token_type_ids must be in [0, {self.type_vocab_size})")
        return ids, mask, tt

    # ---- forward -----------------------------------------------------------------------------
    def __call__(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None,
                 **dynamic: Any) -> np.ndarray:
        """`dynamic`: overrides of the compiled `DynamicSpec` (`length_ratios=`, `exit_threshold=`,
        `exit_at=`, `exit_criterion=`, or a whole `spec=`); see `workbench.runtime.dynamic`."""
        from workbench.runtime import dynamic as D

        spec = D.resolve(self, dynamic)
        ids, mask, tt = self._check_inputs(input_ids, attention_mask, token_type_ids)
        # Drop trailing columns that are padding in every row: exact, since padded keys get a
        # zero attention weight and only the [CLS] row is read (not when a row is all padding).
        valid = mask.any(axis=0)
        if mask.any(axis=1).all() and not valid.all():
            S_eff = int(np.nonzero(valid)[0][-1]) + 1
            ids, mask = ids[:, :S_eff], mask[:, :S_eff]
            tt = None if tt is None else tt[:, :S_eff]
        with _no_gc_pauses():
            if spec is not None:  # token dropping / early exits: workbench.runtime.dynamic
                return D.forward(self, ids, mask, tt, spec)
            return self._forward(ids, mask, tt)

    def _forward(self, ids: np.ndarray, mask: np.ndarray, tt: np.ndarray | None) -> np.ndarray:
        from workbench.runtime.dynamic import static_trace

        B, S = ids.shape
        h, mask_bias, L = self._embed(ids, tt), attention_bias(mask), self.num_layers
        if self._encoder is not None:  # every layer in one compiled call
            h = self._encoder.run(h, B, S, mask_bias, K.isa_code())
        else:
            for i in range(L):  # only the [CLS] row of the last layer feeds the classifier
                h = self._layer(i, h, B, S, mask_bias, cls_only=i == L - 1)
        self.last_trace = static_trace(mask, L)
        return self._head(h)  # [B, H] after the CLS-only last layer

    def _embed(self, ids: np.ndarray, tt: np.ndarray | None) -> np.ndarray:
        """Embeddings + LayerNorm: [B*S, H] rows."""
        T = self.tensors
        B, S = ids.shape
        H = self.hidden_size
        x = T["embeddings.word"][ids].astype(np.float32, copy=False)
        if self.position_ids == "padding_offset":
            real = ids != self.padding_idx
            x += T["embeddings.position"][np.cumsum(real, axis=1) * real + self.padding_idx]
        else:
            x += T["embeddings.position"][:S]
        if "embeddings.token_type" in T:
            x += T["embeddings.token_type"][0] if tt is None else T["embeddings.token_type"][tt]
        return K.layernorm(x.reshape(B * S, H), T["embeddings.ln.gamma"], T["embeddings.ln.beta"],
                           self._eps["embeddings.ln"])

    def _layer(self, i: int, h: np.ndarray, B: int, S: int, mask_bias: np.ndarray, cls_only: bool = False,
               sig: np.ndarray | None = None) -> np.ndarray:
        """Encoder layer `i` on `h` [B*S, H] -> [B*S, H], or [B, H] (the [CLS] rows) when
        `cls_only`. `sig` [B, nh, S]: filled with each key's attention summed over the
        non-padding queries, per head (token dropping's significance, `runtime.dynamic`)."""
        T, lin, H = self.tensors, self._linears, self.hidden_size
        d, nh = H // self.num_heads, self.layer_heads[i]
        residual = np.ascontiguousarray(h.reshape(B, S, H)[:, 0]) if cls_only else h
        ln1 = (T[f"layers.{i}.ln1.gamma"], T[f"layers.{i}.ln1.beta"], self._eps[f"layers.{i}.ln1"])
        if nh == 0:  # attention removed: the block adds only its output projection's bias
            h = K.layernorm(residual + T[f"layers.{i}.out.bias"], *ln1)
        else:
            qkv = lin[f"layers.{i}.qkv"](h).reshape(B, S, 3, nh, d)
            k = qkv[:, :, 1].transpose(0, 2, 3, 1)  # [B, nh, d, S]
            v = qkv[:, :, 2].transpose(0, 2, 1, 3)  # [B, nh, S, d]
            q = (qkv[:, :1, 0] if cls_only else qkv[:, :, 0]).transpose(0, 2, 1, 3)  # [B, nh, rows, d]
            ctx = self._attention(q, k, v, mask_bias, sig).reshape(residual.shape[0], nh * d)
            attn = lin[f"layers.{i}.out"](ctx)
            h = K.add_bias_residual_layernorm(attn, T[f"layers.{i}.out.bias"], residual, *ln1)
        ln2 = (T[f"layers.{i}.ln2.gamma"], T[f"layers.{i}.ln2.beta"], self._eps[f"layers.{i}.ln2"])
        if self.layer_ffn[i] == 0:  # FFN removed: only ffn_out's bias
            return K.layernorm(h + T[f"layers.{i}.ffn2.bias"], *ln2)
        ffn1 = f"layers.{i}.ffn1"
        f = lin[ffn1](h, activation="gelu") if ffn1 in self._gelu_fused else self._act(lin[ffn1](h))
        f2 = lin[f"layers.{i}.ffn2"](np.ascontiguousarray(f))
        return K.add_bias_residual_layernorm(f2, T[f"layers.{i}.ffn2.bias"], h, *ln2)

    def _head(self, cls: np.ndarray, name: str = "head") -> np.ndarray:
        """The classifier on the [CLS] rows [B, H]; `name` "exit.<layer>": an exit head (tanh)."""
        pre = self._linears[f"{name}.pre"](cls)
        # tanh / ReLU on [B, H]: tiny, NumPy (no kernel for tanh in workbench_ext)
        tanh = name != "head" or self.meta["head"] == "pooler_tanh"
        pre = np.tanh(pre) if tanh else np.maximum(pre, np.float32(0))
        return np.ascontiguousarray(self._linears[f"{name}.cls"](np.ascontiguousarray(pre, dtype=np.float32)))

    def _attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, mask_bias: np.ndarray,
                   sig: np.ndarray | None = None) -> np.ndarray:
        """softmax(q k + mask) v for q [B, nh, R, d], k [B, nh, d, S], v [B, nh, S, d] (views);
        returns [B, R, nh, d] (C-contiguous, i.e. [B*R, H] rows). NumPy BLAS with 1 thread each,
        the (batch, head) pairs split over `self.num_threads` Python threads when worth it.
        `sig` [B, nh, S] (R == S): set to the probabilities summed over the non-padding queries
        (by the fused kernel too: token dropping keeps its compiled attention)."""
        if K.has_fused_attention():  # all heads in one compiled OpenMP call
            if sig is None:
                return K.fused_attention(q, k, v, mask_bias)
            ctx, sig[...] = K.fused_attention(q, k, v, mask_bias, significance=True)
            return ctx
        B, nh, R, d = q.shape
        S = k.shape[-1]
        ctx = np.empty((B, R, nh, d), np.float32)

        def part(b0: int, b1: int, h0: int, h1: int, nt: int | None) -> None:
            scores = np.matmul(q[b0:b1, h0:h1], k[b0:b1, h0:h1])  # scale already folded into Q
            scores += mask_bias[b0:b1]
            probs = K.softmax(scores.reshape(-1, S), num_threads=nt).reshape(scores.shape)
            ctx[b0:b1, :, h0:h1, :] = np.matmul(probs, v[b0:b1, h0:h1]).transpose(0, 2, 1, 3)
            if sig is not None:  # queries masked as the keys are (R == S): [b, 1, 1, S] x [b, h, S, S]
                qmask = (mask_bias[b0:b1] == 0).astype(np.float32)
                sig[b0:b1, h0:h1] = np.matmul(qmask, probs)[:, :, 0]

        n = self.num_threads if B * nh * R * S * d >= 1 << 20 else 1
        with K.attention_blas_threads():
            if n <= 1:
                part(0, B, 0, nh, None)
            elif B >= n:
                cuts = np.linspace(0, B, n + 1).round().astype(int)
                K.parallel_run([lambda a=a, b=b: part(a, b, 0, nh, 1) for a, b in zip(cuts[:-1], cuts[1:]) if b > a])
            else:
                cuts = np.linspace(0, nh, n + 1).round().astype(int)
                K.parallel_run([lambda a=a, b=b: part(0, B, a, b, 1) for a, b in zip(cuts[:-1], cuts[1:]) if b > a])
        return ctx

    # ---- introspection -----------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        from workbench.runtime import choice

        return {
            "architecture": self.architecture,
            "quantize": self.meta["quantize"],
            "sparse_threshold": self.meta["sparse_threshold"],
            "kernel_choice": self.meta.get("kernel_choice", "threshold"), "dtype": self.meta.get("dtype"),
            "kernels_per_layer": choice.layer_summary(self.meta),
            "layer_loop": ("compiled: workbench_ext.encoder.Int8Encoder, one call per forward" if self._encoder is not None
                           else "per op: one Python call per kernel"),
            "linears": {n: {**lm, "impl": self.impls[n]} for n, lm in self.meta["linears"].items()},
            "kernels": K.kernel_report(),
        }

    def sparse_layers(self) -> list[str]:
        return [n for n, lm in self.meta["linears"].items() if lm["kind"].endswith("sparse")]

    def num_parameters(self) -> int:
        """Weights and biases as in the source model (quantization scales not counted)."""
        return int(sum(a.size for n, a in self.tensors.items() if not n.endswith(".scale")))

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.tensors.values()))

    def nonzero_parameters(self) -> int:
        return int(sum(np.count_nonzero(a) for n, a in self.tensors.items() if not n.endswith(".scale")))

    def layer_sparsity(self) -> dict[str, float]:
        """Fraction of zero weights per source encoder Linear (HF module names), as stored (int8
        weights count the values that quantized to 0)."""
        out: dict[str, float] = {}
        for name, lm in self.meta["linears"].items():
            if not name.startswith("layers."):
                continue
            w, row = self.tensors.get(f"{name}.weight"), 0
            for src, rows in lm.get("sources", [[name, lm["N"]]]):
                part = None if w is None else w[row:row + rows]
                out[src] = float(np.mean(part == 0)) if part is not None and part.size else 0.0
                row += rows
        return out

    def serialized(self) -> bytes:
        """The engine's safetensors bytes, as `save` writes them (plus the JSON beside it)."""
        from safetensors.numpy import save

        return save({k: np.ascontiguousarray(v) for k, v in self.tensors.items()},
                    metadata={"format": FORMAT, "version": str(FORMAT_VERSION)})

    # ---- persistence -------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tmp_w, tmp_m = d / (WEIGHTS_FILE + ".tmp"), d / (META_FILE + ".tmp")
        tmp_w.write_bytes(self.serialized())
        tmp_m.write_text(json.dumps(self.meta, indent=1, sort_keys=True))
        os.replace(tmp_w, d / WEIGHTS_FILE)
        os.replace(tmp_m, d / META_FILE)
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Engine":
        from safetensors.numpy import load_file

        d = Path(directory)
        if not (d / META_FILE).is_file() or not (d / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{d} does not hold a saved engine ({META_FILE} + {WEIGHTS_FILE})")
        meta = json.loads((d / META_FILE).read_text())
        tensors = {k: np.ascontiguousarray(v) for k, v in load_file(str(d / WEIGHTS_FILE)).items()}
        return cls(meta, tensors)

    def __repr__(self) -> str:
        kinds: dict[str, int] = {}
        for lm in self.meta["linears"].values():
            kinds[lm["kind"]] = kinds.get(lm["kind"], 0) + 1
        return (f"Engine({self.architecture}, layers={self.num_layers}, hidden={self.hidden_size}, "
                f"linears={kinds}, isa={K.active_isa()})")
