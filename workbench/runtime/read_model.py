"""Reading a Hugging Face BERT-family sequence classifier into plain arrays for `compile_model`.

One reader for every family the architecture adapter (`workbench.models.arch`) knows: their layers
share the post-LN layout (Q, K, V, attention output, LN, FFN in/out, LN). A layer of a
`static_int8` / `qat` stage is returned as its static record (`workbench.runtime.static`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from workbench.runtime import kernels as K

HEAD_ACTIVATIONS = {"pooler_tanh": "tanh", "pre_classifier_relu": "relu", "classifier_gelu": "gelu"}
"""The engine's meta "head" (what sits between the classifier's two Linears: BERT's pooler,
RoBERTa's classifier; DistilBERT's pre-classifier; ELECTRA's classifier) -> its activation."""

SUPPORTED_ARCHITECTURES = ("BertForSequenceClassification", "DistilBertForSequenceClassification",
                           "RobertaForSequenceClassification", "XLMRobertaForSequenceClassification",
                           "CamembertForSequenceClassification", "ElectraForSequenceClassification")


class UnsupportedModelError(ValueError):
    """The model is not one `compile_model` knows how to run."""


def _np(t: Any) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu").float().numpy(), dtype=np.float32)


def read_linear(mod: Any, where: str) -> tuple[np.ndarray, np.ndarray | None, str]:
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


def read_model(model: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, tuple]]:
    """Weights of a BERT / DistilBERT / RoBERTa / ELECTRA sequence classifier, read through the
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
            return read_linear(arch.module(i, role), arch.module_name(i, role))  # noqa: B023

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
    project = arch.embedding_projection
    if project is not None:  # ELECTRA-small: the embeddings' LayerNorm output, widened to the layers'
        linears["embeddings.project"] = read_linear(project, arch.embedding_projection_name)
    linears["head.pre"] = read_linear(model.get_submodule(fam.head_dense), fam.head_dense)
    linears["head.cls"] = read_linear(model.get_submodule(fam.head_out), fam.head_out)
    heads = arch.config_num_heads
    meta = {
        "hidden_size": arch.hidden_size, "num_heads": heads,
        "num_layers": arch.num_layers, "activation": act,
        "vocab_size": int(t["embeddings.word"].shape[0]),
        "max_positions": int(t["embeddings.position"].shape[0]),
        "type_vocab_size": int(t["embeddings.token_type"].shape[0]) if "embeddings.token_type" in t else 0,
        "head": next(k for k, a in HEAD_ACTIVATIONS.items() if a == fam.head_activation), "eps": eps,
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
        f"{', '.join(SUPPORTED_ARCHITECTURES)} (BERT, MiniLM, DistilBERT, RoBERTa/XLM-R and ELECTRA sequence "
        f"classifiers); {why}")
