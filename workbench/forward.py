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
    if "attentions" in needs:
        kwargs["output_attentions"] = True
    captured, handles = _capture_qkv(model) if "qkv" in needs else ({}, [])
    try:
        out = model(**inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return ForwardOutputs(
        logits=out.logits, attention_mask=inputs.get("attention_mask"),
        hidden_states=getattr(out, "hidden_states", None) if "hidden_states" in needs else None,
        attentions=getattr(out, "attentions", None) if "attentions" in needs else None,
        qkv={i: tuple(v) for i, v in captured.items()})  # type: ignore[misc]
