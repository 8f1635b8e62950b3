"""`compile_model`: a Hugging Face BERT-family sequence classifier -> an `Engine`.

Reads the model (`workbench.runtime.read_model`), fuses Q/K/V (the attention scale folded into
Q), quantizes the weights per output channel, and picks each Linear's kernel
(`workbench.runtime.choice`); the `Engine` docstring says what runs where.
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from workbench.runtime import kernels as K
from workbench.runtime.engine import FORMAT, FORMAT_VERSION, Engine
from workbench.runtime.ops import ATTENTION_PRECISIONS
from workbench.runtime.read_model import UnsupportedModelError, read_model

# Linear layers whose bias is applied in the fused bias + residual + LayerNorm op.
_BIAS_FUSED = ("out", "ffn2")


def compile_model(hf_model: Any, *, quantize: bool = True, sparse_threshold: float = 0.5,
                  kernel_choice: str = "threshold", choice_shape: tuple[int, int] = (1, 128),
                  choice_batches: tuple[int, ...] = (), dtype: str | None = None,
                  attention: str = "fp32", act_bits: int = 8, int8_weights: str = "auto") -> Engine:
    """Compile a Hugging Face BERT-family sequence classifier into an `Engine`.

    quantize: int8 weights (per output channel) with dynamic per-token activation quantization;
        False keeps fp32 weights. Layers of a `static_int8` / `qat` stage (`Int8Linear`) keep
        their own int8 weights and calibrated activation grid (`workbench.runtime.static`).
    sparse_threshold: with kernel_choice "threshold", a Linear whose fraction of all-zero 1x4
        blocks is >= this runs on the block-sparse kernel; values > 1 never use the sparse kernels.
    kernel_choice: "threshold" | "measure" (time the candidate kernels at `choice_shape` =
        (batch, seq) and keep the fastest) | "dense" | "sparse" | "library" (every int8 Linear
        on torch's `_int_mm`, oneDNN, same outputs) (`workbench.runtime.choice`).
    choice_batches: more batch sizes (at choice_shape's seq) for "measure" to time; a Linear
        whose fastest kernel changes with the batch keeps one kernel per range of row counts.
    dtype: "bf16" runs the dense fp32 Linears in bf16 (AVX512-BF16; fp32 where the CPU has none,
        `describe()` says which); overrides `quantize`. None: "int8" if quantize else "fp32".
    attention: "fp32", or "bf16": q, k, v and the probabilities rounded to bf16 with fp32 sums
        (~2^-9 relative per operand) on CPUs with AVX512-BF16 or AMX-BF16 (on Zen 4 the attention
        kernel runs ~1.4-1.5x faster, README "bf16 attention"); elsewhere the engine runs fp32
        attention and `describe()` says so. "int8": q, k, v and the softmax weights on int8 grids
        with int32 sums (q per query row, k per key after subtracting the keys' mean, v per
        head_dim column, the weights as rint(255 exp(x - max))) on CPUs with AVX-512 VNNI (on Zen 4
        the attention kernel runs ~2x faster than fp32, README "int8 attention"); elsewhere fp32,
        and `describe()` says so.
    act_bits: 8, or 7 (opt-in): the int8 Linears quantize their activations per token onto
        [0, 127] instead of [0, 255]. The integer products stay exact; on AVX2 the dense kernel
        then uses vpmaddubsw, faster per GEMM (README "7-bit activations" has the accuracy and
        speed measured). Layers with a calibrated static grid keep 8 bits.
    int8_weights: "per_channel" (symmetric int8 per output channel), "pair_bounded" (the same,
        with every k-pair kept within |w[2j]| + |w[2j+1]| <= 128, so on AVX2 CPUs without VNNI the
        exact vpmaddubsw kernel multiplies 8-bit activations: README "Pair-bounded weights" has
        what it costs in accuracy and gains in speed), or "auto": "pair_bounded" where the int8
        kernels run on AVX2 (`workbench_ext.cpu.active_isa()`) with 8-bit activations, else
        "per_channel". The engine records the choice (`describe()["int8_weights"]`); a saved
        engine keeps its weights, and every ISA computes them exactly.
    """
    from workbench.runtime import choice as C
    from workbench.runtime import static as S

    arch = type(hf_model).__name__
    if not isinstance(quantize, (bool, np.bool_)):  # "no" or "false" would be truthy: int8
        raise ValueError(f"quantize must be True or False, got {quantize!r}")
    if not isinstance(sparse_threshold, (int, float)) or sparse_threshold < 0:
        raise ValueError(f"sparse_threshold must be a number >= 0, got {sparse_threshold!r}")
    C.check_mode(kernel_choice)
    if (not isinstance(choice_shape, (tuple, list)) or len(choice_shape) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in choice_shape)):
        raise ValueError(f"choice_shape must be (batch, seq), two ints >= 1, got {choice_shape!r}")
    if any(not isinstance(b, int) or b < 1 for b in choice_batches):
        raise ValueError(f"choice_batches must be batch sizes >= 1, got {choice_batches!r}")
    shapes = (tuple(choice_shape), tuple((b, choice_shape[1]) for b in choice_batches))
    dtype = dtype or ("int8" if quantize else "fp32")
    if dtype not in ("int8", "fp32", "bf16"):
        raise ValueError(f"dtype must be 'int8', 'fp32' or 'bf16', got {dtype!r}")
    if attention not in ATTENTION_PRECISIONS:
        raise ValueError(f"attention must be one of {ATTENTION_PRECISIONS}, got {attention!r}")
    if act_bits not in (7, 8):
        raise ValueError(f"act_bits must be 7 or 8, got {act_bits!r}")
    if act_bits == 7 and dtype != "int8":
        raise ValueError(f"act_bits=7 applies to int8 engines only (dtype={dtype!r})")
    if int8_weights not in INT8_WEIGHTS:
        raise ValueError(f"int8_weights must be one of {INT8_WEIGHTS}, got {int8_weights!r}")
    quantize = dtype == "int8"
    pair_bounded = quantize and resolve_int8_weights(int8_weights, act_bits) == "pair_bounded"
    meta, tensors, raw = read_model(hf_model)
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
        if quantize and act_bits == 7:
            entry["act_bits"] = 7
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
            wq8, scale = K.quantize_weight_per_channel(w, pair_bounded=pair_bounded)
            tensors[f"{name}.weight"], tensors[f"{name}.scale"] = wq8, scale
            sp = K.block_sparsity(wq8)
            entry["tile_sparsity"] = round(K.tile_sparsity(wq8), 6)
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
        "kernel_choice": kernel_choice, "dtype": dtype, "attention": attention, "act_bits": int(act_bits),
        "int8_weights": ("pair_bounded" if pair_bounded else "per_channel") if quantize else None,
        "num_labels": int(raw["head.cls"][0].shape[0]), "linears": linears_meta,
        "hf_config": json.loads(json.dumps(hf_config, default=str)),
    }, **({"dynamic": dynamic} if dynamic else {}))
    engine = Engine(meta, tensors)
    if kernel_choice == "measure":   # library-kernel picks stay only if whole forwards gain
        from workbench.runtime import library_check

        engine = library_check.check(engine, [tuple(choice_shape), *shapes[1]], Engine)
    return engine


INT8_WEIGHTS = ("auto", "per_channel", "pair_bounded")


def resolve_int8_weights(int8_weights: str, act_bits: int = 8) -> str:
    """"auto" -> "pair_bounded" where it pays: the int8 kernels run on AVX2 here (no VNNI, whose
    s32 dot products are exact for any int8 weights) with 8-bit activations (7-bit ones are
    exact on the vpmaddubsw kernel with any weights); else "per_channel"."""
    if int8_weights != "auto":
        return int8_weights
    return "pair_bounded" if act_bits == 8 and K.active_isa() == "avx2" else "per_channel"


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
        rows=C.layer_rows(name, num_layers, *shape), more_rows=tuple(C.layer_rows(name, num_layers, *s) for s in more),
        tile_sparsity=entry.get("tile_sparsity", 0.0), library=not entry.get("static"))
