"""One forward pass that returns exactly what the recipes declared they need.

Students (in the trainer) and teachers (in the teacher service) both go through
`forward_with`, so a recipe reads the same structure from either side: logits always; the
hidden states (embeddings output first, then one per layer), the attention distributions, and
the per-layer query/key/value projections only when asked for.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import nn

MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def model_inputs(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors a Hugging Face encoder takes, from a collated batch (no labels, no text)."""
    return {k: batch[k] for k in MODEL_INPUT_KEYS if k in batch}


@dataclass
class ForwardOutputs:
    logits: torch.Tensor
    attention_mask: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    """[B, L, H] each: the embeddings' output, then every layer's output."""
    attentions: tuple[torch.Tensor, ...] | None = None
    """[B, heads, L, L] attention distributions, one per layer."""
    qkv: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    """layer -> (query, key, value) projections [B, L, H] (before the split into heads)."""

    @property
    def num_layers(self) -> int:
        if self.hidden_states is not None:
            return len(self.hidden_states) - 1
        if self.attentions is not None:
            return len(self.attentions)
        return len(self.qkv)


def _capture_qkv(model: nn.Module) -> tuple[dict[int, list[torch.Tensor]], list[Any]]:
    from workbench.models.arch import architecture

    arch = architecture(model)
    captured: dict[int, list[torch.Tensor]] = {}
    handles = []
    for i in range(arch.num_layers):
        slot = captured.setdefault(i, [None, None, None])  # type: ignore[list-item]
        for j, role in enumerate(("query", "key", "value")):
            def hook(_m: nn.Module, _inp: Any, out: torch.Tensor, slot: list = slot, j: int = j) -> None:
                slot[j] = out
            handles.append(arch.module(i, role).register_forward_hook(hook))
    return captured, handles


def forward_with(model: nn.Module, batch: dict[str, Any], needs: Iterable[str] = ()) -> ForwardOutputs:
    """Run `model` on `batch`, requesting only the outputs named in `needs`."""
    needs = set(needs)
    inputs = model_inputs(batch)
    kwargs: dict[str, Any] = {}
    if "hidden_states" in needs:
        kwargs["output_hidden_states"] = True
    # Attention distributions are rebuilt from the captured queries and keys: Hugging Face's
    # default SDPA attention does not return them (an empty tuple and a warning).
    want_qkv = bool(needs & {"qkv", "attentions"})
    captured, handles = _capture_qkv(model) if want_qkv else ({}, [])
    try:
        out = model(**inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
    qkv = {i: tuple(v) for i, v in captured.items()}
    mask = inputs.get("attention_mask")
    return ForwardOutputs(
        logits=out.logits, attention_mask=mask,
        hidden_states=getattr(out, "hidden_states", None) if "hidden_states" in needs else None,
        attentions=attention_distributions(model, qkv, mask) if "attentions" in needs else None,
        qkv=qkv if "qkv" in needs else {})  # type: ignore[arg-type]


def attention_log_probs(q: torch.Tensor, k: torch.Tensor, num_heads: int,
                        mask: torch.Tensor | None = None) -> torch.Tensor:
    """log softmax(Q_h K_h^T / sqrt(d_h)) per attention head, [B, H, L, L]; q, k are [B, L, D]
    (before the split into heads), mask [B, L] (1 = real token; padding keys get -inf)."""
    b, length, d = q.shape
    if k.shape != q.shape or d % num_heads:
        raise ValueError(f"attention_log_probs: q {tuple(q.shape)} and k {tuple(k.shape)} must have the "
                         f"same shape with a width divisible by num_heads={num_heads}")
    dh = d // num_heads
    qh = q.reshape(b, length, num_heads, dh).transpose(1, 2)
    kh = k.reshape(b, length, num_heads, dh).transpose(1, 2)
    scores = qh @ kh.transpose(-1, -2) / dh ** 0.5
    if mask is not None:
        keys = mask.bool()
        keys = keys | ~keys.any(-1, keepdim=True)  # an all-padding row keeps its keys (no NaN)
        scores = scores.masked_fill(~keys[:, None, None, :], float("-inf"))
    return torch.log_softmax(scores, dim=-1)


def attention_distributions(model: nn.Module, qkv: dict[int, tuple[torch.Tensor, ...]],
                            mask: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """softmax(Q_h K_h^T / sqrt(d_h) + padding mask) per layer: [B, heads, L, L] (before dropout)."""
    from workbench.models.arch import architecture

    arch = architecture(model)
    return tuple(attention_log_probs(qkv[i][0], qkv[i][1], arch.num_heads(i), mask).exp() for i in sorted(qkv))
