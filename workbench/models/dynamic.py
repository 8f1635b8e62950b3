"""Dynamic inference, torch reference: per-layer token dropping (length-adaptive) and early
exits, run as a model's `DynamicSpec` says.

The spec, the exit heads and the counting and exit rules are in `workbench.models.dynamic_spec`
(re-exported here, so `workbench.models.dynamic` keeps offering every name it always had).
`dynamic_forward` is the reference the runtime must match; it implements those rules plus the
choice of the tokens that stay:

* Selection (`select_tokens`): significance of current token j = sum over heads and over the
  current non-padding query tokens q of attention_prob[h, q, j]. [CLS] (position 0) is always
  kept; the other k_i - 1 are the most significant of the rest, ties broken by lower position;
  kept tokens stay in their original order.

The forward is written layer by layer through the architecture adapter (`workbench.models.arch`)
for the post-LN BERT family (BERT, MiniLM, DistilBERT, RoBERTa); dropout follows `model.training`
with the config's probabilities, so the same function trains sub-networks (length_adaptive).
`set_dynamic` makes calling a model run it this way (`dynamic_call`).
"""
from __future__ import annotations

import math
import types
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench.config import ConfigError
from workbench.models.dynamic_spec import (  # noqa: F401  (re-exported: callers import them from here)
    CRITERIA, EXIT_POOLING, DynamicSpec, ExitHead, keep_count, kept_counts, model_spec, pool,
)


def token_significance(probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, L] attention received by each key token: sum over heads and real query tokens."""
    return (probs * mask[:, None, :, None].to(probs.dtype)).sum(dim=(1, 2))


def select_tokens(probs: torch.Tensor | None, mask: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions to keep per example ([B, K] long, in original order, K = max k) and the new
    mask ([B, K] bool). probs: [B, heads, L, L] (None: a layer without heads, every score 0)."""
    b, length = mask.shape
    mask = mask.bool()
    sig = token_significance(probs, mask) if probs is not None and probs.shape[1] else mask.new_zeros(b, length, dtype=torch.float32)
    score = sig.float().masked_fill(~mask, float("-inf"))
    score[:, 0] = float("inf")  # [CLS] always stays
    order = torch.sort(score, dim=1, descending=True, stable=True).indices  # ties: lower position first
    kmax = int(k.max())
    chosen = order[:, :kmax]
    valid = torch.arange(kmax, device=mask.device)[None, :] < k[:, None]
    key = torch.where(valid, chosen, chosen + length)  # unused slots sort after the kept ones
    key = torch.sort(key, dim=1).values
    return torch.where(key >= length, key - length, key), valid


@dataclass
class DynamicTrace:
    """Work done by one `dynamic_forward` call."""

    tokens: torch.Tensor
    """[B, num_layers] tokens each layer processed for each example (0: the layer did not run)."""
    exit_layer: torch.Tensor
    """[B] the layer after which each example left."""

    @property
    def layers_run(self) -> torch.Tensor:
        return self.exit_layer + 1


def _dropouts(config: Any) -> tuple[float, float]:
    hidden = getattr(config, "hidden_dropout_prob", getattr(config, "dropout", 0.0)) or 0.0
    attn = getattr(config, "attention_probs_dropout_prob", getattr(config, "attention_dropout", 0.0)) or 0.0
    return float(hidden), float(attn)


def _activation(config: Any, arch: Any) -> Any:
    from transformers.activations import ACT2FN

    return ACT2FN[getattr(config, arch.family.activation_attr)]


def _layer(arch: Any, i: int, h: torch.Tensor, mask: torch.Tensor, act: Any, p_hidden: float, p_attn: float,
           training: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One post-LN encoder layer; returns the output and the attention probabilities."""
    from workbench.forward import attention_log_probs

    b, length, _ = h.shape
    q, k, v = (arch.module(i, r)(h) for r in ("query", "key", "value"))
    nh = arch.num_heads(i)
    probs = None
    if nh:
        d = arch.head_size
        probs = attention_log_probs(q, k, nh, mask).exp()
        vh = v.reshape(b, length, nh, d).transpose(1, 2)
        ctx = (F.dropout(probs, p_attn, training) @ vh).transpose(1, 2).reshape(b, length, nh * d)
    else:
        ctx = h.new_zeros(b, length, 0)
    a = arch.module(i, "attn_norm")(h + F.dropout(arch.module(i, "attn_out")(ctx), p_hidden, training))
    f = arch.module(i, "ffn_out")(act(arch.module(i, "ffn_in")(a)))
    return arch.module(i, "ffn_norm")(a + F.dropout(f, p_hidden, training)), probs


HEAD_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "gelu": F.gelu}
"""`Family.head_activation` -> the function between a classifier head's two Linears."""


def classify(model: nn.Module, cls: torch.Tensor) -> torch.Tensor:
    """The model's own sequence-classification head on the [CLS] state [B, H]."""
    from workbench.models.arch import architecture

    fam = architecture(model).family
    p_hidden, _ = _dropouts(model.config)
    x = model.get_submodule(fam.head_dense)(F.dropout(cls, p_hidden, model.training) if fam.pooler is None else cls)
    x = HEAD_ACTIVATIONS[fam.head_activation](x)
    return model.get_submodule(fam.head_out)(F.dropout(x, p_hidden, model.training))


def _leaves(logits: torch.Tensor, spec: DynamicSpec) -> torch.Tensor:
    """[B] bool: examples whose exit criterion passes."""
    p = torch.softmax(logits.float(), dim=-1)
    if spec.exit_criterion == "confidence":
        return p.max(dim=-1).values >= spec.exit_threshold
    c = p.shape[-1]
    ent = -(p * torch.log(p.clamp_min(1e-12))).sum(-1) / math.log(c) if c > 1 else torch.zeros_like(p[:, 0])
    return ent <= spec.exit_threshold


def dynamic_forward(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    spec: DynamicSpec | None = None, token_type_ids: torch.Tensor | None = None,
                    return_trace: bool = False) -> torch.Tensor | tuple[torch.Tensor, DynamicTrace]:
    """Logits [B, labels] of `model` run as `spec` says (spec None: the model's own `dynamic`,
    and a model without one runs statically). With `return_trace`, also the work done."""
    from workbench.models.arch import architecture

    arch = architecture(model, "dynamic_forward")
    spec = spec if spec is not None else model_spec(model) or DynamicSpec()
    num_layers = arch.num_layers
    spec.check(num_layers)
    heads = getattr(model, "exit_heads", None)
    use_exits = spec.exit_at is not None or spec.exit_threshold is not None
    if use_exits:
        missing = [x for x in spec.exit_layers if heads is None or str(x) not in heads]
        if missing:
            raise ConfigError(f"dynamic_forward: the spec lists exit layers {missing} but the model has no exit "
                              f"head there (heads: {sorted(heads) if heads is not None else []})")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    emb_kwargs: dict[str, Any] = {"input_ids": input_ids}
    if arch.family.token_type_embeddings and token_type_ids is not None:
        emb_kwargs["token_type_ids"] = token_type_ids
    h = arch.embed(**emb_kwargs)
    mask = attention_mask.bool()
    b = input_ids.shape[0]
    n = mask.sum(1)
    act = _activation(model.config, arch)
    p_hidden, p_attn = _dropouts(model.config)
    training = model.training
    active = torch.arange(b, device=input_ids.device)
    tokens = torch.zeros(b, num_layers, dtype=torch.long)
    exit_layer = torch.full((b,), num_layers - 1, dtype=torch.long)
    parts: list[tuple[torch.Tensor, torch.Tensor]] = []  # (original rows, logits)
    ratios = spec.length_ratios
    for i in range(num_layers):
        tokens[active.cpu(), i] = mask.sum(1).cpu()
        h, probs = _layer(arch, i, h, mask, act, p_hidden, p_attn, training)
        if i == num_layers - 1:
            parts.append((active, classify(model, h[:, 0])))
            break
        if use_exits and i in spec.exit_layers:
            logits = heads[str(i)](h, mask)
            done = torch.ones(len(active), dtype=torch.bool, device=h.device) if spec.exit_at == i else \
                _leaves(logits, spec) if spec.exit_threshold is not None else \
                torch.zeros(len(active), dtype=torch.bool, device=h.device)
            if bool(done.any()):
                parts.append((active[done], logits[done]))
                exit_layer[active[done].cpu()] = i
                stay = ~done
                active, h, mask, n = active[stay], h[stay], mask[stay], n[stay]
                probs = probs[stay] if probs is not None else None
                if not len(active):
                    break
        if ratios is not None and ratios[i] < 1.0:
            cur = mask.sum(1)
            k = torch.tensor([keep_count(ratios[i], int(nn_), int(c)) for nn_, c in zip(n.tolist(), cur.tolist())],
                             dtype=torch.long, device=h.device)
            if bool((k < cur).any()):
                idx, mask = select_tokens(probs, mask, k)
                h = torch.gather(h, 1, idx[:, :, None].expand(-1, -1, h.shape[-1]))
    num_labels = parts[0][1].shape[-1]
    out = parts[0][1].new_zeros(b, num_labels)
    for rows, logits in parts:
        out = out.index_copy(0, rows, logits)
    if return_trace:
        return out, DynamicTrace(tokens=tokens, exit_layer=exit_layer)
    return out


def set_dynamic(model: nn.Module, spec: DynamicSpec | None) -> None:
    """Attach `spec` as `model.dynamic` so that calling the model runs it dynamically.

    Everything that calls a stage's model (evaluation, speed measurement, the speed worker that
    rebuilds it from its edits, `eval_other`) then measures the dynamic network without knowing
    about it: the model's `forward` is replaced, on this instance only, by `dynamic_call`, which
    uses `dynamic_forward` when the spec is not static and no hidden states or attentions are
    asked for (only the static network has them; the trainer's `forward_with` then gets the
    static forward). `spec=None` removes both. Saved through the `dynamic_spec` edit."""
    if spec is None:
        model.__dict__.pop("forward", None)
        if hasattr(model, "dynamic"):
            del model.dynamic
        return
    spec.check(_num_layers(model), "dynamic spec")
    model.dynamic = spec
    model.forward = types.MethodType(dynamic_call, model)


def _num_layers(model: nn.Module) -> int:
    from workbench.models.arch import architecture

    return architecture(model, "dynamic spec").num_layers


def dynamic_call(self: nn.Module, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                 **kwargs: Any) -> Any:
    """The `forward` of a model with a `DynamicSpec` (see `set_dynamic`): Hugging Face's call
    signature, a `SequenceClassifierOutput` with the logits (and the loss when labels are given);
    the work done is kept in `self.last_trace`."""
    spec = model_spec(self)
    asks_more = any(kwargs.get(k) for k in ("output_hidden_states", "output_attentions", "inputs_embeds",
                                            "position_ids"))
    if spec is None or spec.is_static or asks_more or input_ids is None:
        return type(self).forward(self, input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids, labels=labels, **kwargs)
    from transformers.modeling_outputs import SequenceClassifierOutput

    logits, self.last_trace = dynamic_forward(self, input_ids, attention_mask, spec, token_type_ids,
                                              return_trace=True)
    loss = F.cross_entropy(logits, labels) if labels is not None else None
    return SequenceClassifierOutput(loss=loss, logits=logits)
