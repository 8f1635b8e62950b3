"""Head and FFN-neuron masks, their importance, and physical shrinking.

Masks are float tensors `head_mask [L, Hmax]` and `neuron_mask [L, Fmax]` (Hmax / Fmax: the
largest head count / FFN width over the layers as they stand; the padding entries of an uneven
model are 0 and never chosen). `MaskHooks(model, head_mask, neuron_mask)` applies them with
forward pre-hooks on the architecture adapter's modules (`workbench.models.arch`):

* the head mask multiplies each head's context, i.e. the input of `attn_out` split by heads;
* the neuron mask multiplies the FFN's intermediate activations, i.e. the input of `ffn_out`.

A mask entry may be any number (mask tuning stores per-unit scales in it); 0 removes the unit.
`shrink(model, head_mask, neuron_mask)` folds the non-zero entries into the columns of `attn_out`
/ `ffn_out` and removes the zero ones physically through recorded structural edits (`heads`,
`ffn_neurons` in `workbench.models.edits`), so the saved model reloads with
`load_edited_model` in a fresh process. A layer left with no head or no neuron keeps a
zero-width block: its attention (or FFN) then adds only the output projection's bias before the
residual and LayerNorm, exactly what the masked model computes (`HeadlessAttention`).

Importance (higher = more important), all shaped like the masks:

* `magnitude_scores`: L1 norm of a unit's weights (a head's rows of Q, K, V and its columns of
  the output projection; a neuron's row of `ffn_in` and column of `ffn_out`);
* `mask_gradients` -> per-batch gradients of the loss w.r.t. the masks (all ones), from which
  `taylor_scores` = sum_batches |g| (first-order Taylor, Michel et al. 2019) and
  `fisher_scores` = sum_batches g^2 (diagonal Fisher, Kwon et al. 2022).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn

from workbench.models.arch import architecture
from workbench.models.edits import record_edit


@dataclass(frozen=True)
class Structure:
    """Heads and FFN neurons per layer as the weights stand."""

    heads: tuple[int, ...]
    neurons: tuple[int, ...]
    head_size: int
    hidden_size: int

    @property
    def num_layers(self) -> int:
        return len(self.heads)

    @property
    def max_heads(self) -> int:
        return max(self.heads, default=0)

    @property
    def max_neurons(self) -> int:
        return max(self.neurons, default=0)

    def valid(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Bool masks [L, Hmax], [L, Fmax]: True where a head / neuron exists."""
        h = torch.arange(self.max_heads)[None, :] < torch.tensor(self.heads)[:, None]
        f = torch.arange(self.max_neurons)[None, :] < torch.tensor(self.neurons)[:, None]
        return h, f

    def ones(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks keeping every existing unit (float; padding entries 0)."""
        h, f = self.valid()
        return h.float(), f.float()


def structure(model: nn.Module) -> Structure:
    arch = architecture(model, "structure")
    return Structure(heads=tuple(arch.num_heads(i) for i in range(arch.num_layers)),
                     neurons=tuple(int(arch.module(i, "ffn_in").out_features) for i in range(arch.num_layers)),
                     head_size=arch.head_size, hidden_size=arch.hidden_size)


class MaskHooks:
    """Apply head / neuron masks to `model` until `remove()` (or the end of a `with` block).

    The hooks read `self.head_mask` / `self.neuron_mask` at every call, so a schedule may replace
    or edit them in place between steps; tensors that require grad collect mask gradients."""

    def __init__(self, model: nn.Module, head_mask: torch.Tensor | None = None,
                 neuron_mask: torch.Tensor | None = None) -> None:
        arch = architecture(model, "MaskHooks")
        self.head_mask, self.neuron_mask = head_mask, neuron_mask
        self.handles: list[Any] = []
        d = arch.head_size
        for i in range(arch.num_layers):
            nh = arch.num_heads(i)

            def on_context(_m: nn.Module, args: tuple, i: int = i, nh: int = nh) -> tuple | None:
                if self.head_mask is None:
                    return None
                m = self.head_mask[i, :nh].to(args[0].dtype).repeat_interleave(d)
                return (args[0] * m,) + tuple(args[1:])

            def on_activation(_m: nn.Module, args: tuple, i: int = i) -> tuple | None:
                if self.neuron_mask is None:
                    return None
                m = self.neuron_mask[i, : args[0].shape[-1]].to(args[0].dtype)
                return (args[0] * m,) + tuple(args[1:])

            self.handles.append(arch.module(i, "attn_out").register_forward_pre_hook(on_context))
            self.handles.append(arch.module(i, "ffn_out").register_forward_pre_hook(on_activation))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def __enter__(self) -> "MaskHooks":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


# ------------------------------------------------------------------------------ importance
@torch.no_grad()
def magnitude_scores(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """L1 weight norm per head [L, Hmax] and per neuron [L, Fmax] (padding entries 0)."""
    arch, st = architecture(model, "magnitude_scores"), structure(model)
    heads, neurons = torch.zeros(st.num_layers, st.max_heads), torch.zeros(st.num_layers, st.max_neurons)
    d = st.head_size
    for i in range(st.num_layers):
        nh = st.heads[i]
        if nh:
            rows = sum(arch.module(i, r).weight.detach().abs().sum(1) for r in ("query", "key", "value"))
            cols = arch.module(i, "attn_out").weight.detach().abs().sum(0)
            heads[i, :nh] = (rows + cols).view(nh, d).sum(1).float()
        if st.neurons[i]:
            neurons[i, : st.neurons[i]] = (arch.module(i, "ffn_in").weight.detach().abs().sum(1)
                                           + arch.module(i, "ffn_out").weight.detach().abs().sum(0)).float()
    return heads, neurons


def batch_loss(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """The task loss of `model` on a collated batch (cross-entropy on `labels`)."""
    from workbench.forward import model_inputs

    logits = model(**model_inputs(batch)).logits
    return nn.functional.cross_entropy(logits, batch["labels"])


def mask_gradients(model: nn.Module, batches: Iterable[dict[str, Any]],
                   head_mask: torch.Tensor | None = None, neuron_mask: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-batch gradients of the loss w.r.t. the masks (default: all ones), evaluated with the
    model in eval mode (no dropout): `[N, L, Hmax]`, `[N, L, Fmax]`. Only the mask gradients are
    computed (the weights' `.grad` stay untouched)."""
    st = structure(model)
    ones_h, ones_f = st.ones()
    hm = (ones_h if head_mask is None else head_mask.detach().float().clone()).requires_grad_(True)
    nm = (ones_f if neuron_mask is None else neuron_mask.detach().float().clone()).requires_grad_(True)
    was_training = model.training
    model.eval()
    hg, ng = [], []
    try:
        with MaskHooks(model, hm, nm):
            for batch in batches:
                loss = batch_loss(model, batch)
                g_h, g_n = torch.autograd.grad(loss, [hm, nm], allow_unused=True)
                hg.append(torch.zeros_like(hm) if g_h is None else g_h.detach())
                ng.append(torch.zeros_like(nm) if g_n is None else g_n.detach())
    finally:
        model.train(was_training)
    if not hg:
        raise ValueError("mask_gradients: no batches")
    return torch.stack(hg), torch.stack(ng)


def taylor_scores(grads: torch.Tensor) -> torch.Tensor:
    """First-order Taylor importance: sum over batches of |dL/dmask|."""
    return grads.abs().sum(0)


def fisher_scores(grads: torch.Tensor) -> torch.Tensor:
    """Diagonal Fisher importance: sum over batches of (dL/dmask)^2."""
    return grads.pow(2).sum(0)


def example_batches(data: Any, tokenizer: Any, num_examples: int, batch_size: int, seed: int = 0
                    ) -> list[dict[str, Any]]:
    """`num_examples` examples of a tokenized split (at most all of it), drawn by `seed`,
    collated into batches by the pipeline's `workbench.data.Collator`."""
    from workbench.data import Collator

    n = len(data)
    if n == 0:
        raise ValueError("example_batches: the split is empty")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)[: min(num_examples, n)].tolist()
    collate = Collator(tokenizer)
    return [collate([data[j] for j in order[k:k + batch_size]]) for k in range(0, len(order), batch_size)]


def mean_length(batches: Iterable[dict[str, Any]]) -> float:
    """Mean number of real (non-padding) tokens per example."""
    total, count = 0, 0
    for b in batches:
        m = b["attention_mask"]
        total, count = total + int(m.sum()), count + int(m.shape[0])
    return total / max(1, count)


# ------------------------------------------------------------------------------ shrinking
@torch.no_grad()
def fold_masks(model: nn.Module, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> None:
    """Multiply the columns of `attn_out` (per head) and `ffn_out` (per neuron) by the mask
    values: the unmasked model then computes what the masked one did."""
    arch, st = architecture(model, "fold_masks"), structure(model)
    for i in range(st.num_layers):
        nh, nf = st.heads[i], st.neurons[i]
        if nh:
            w = arch.module(i, "attn_out").weight
            w.mul_(head_mask[i, :nh].to(w.dtype).repeat_interleave(st.head_size)[None, :])
        if nf:
            w = arch.module(i, "ffn_out").weight
            w.mul_(neuron_mask[i, :nf].to(w.dtype)[None, :])


@torch.no_grad()
def shrink(model: nn.Module, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> dict[str, Any]:
    """Fold the masks into the weights, then remove every zero-mask head and neuron physically
    (recorded `heads` / `ffn_neurons` edits, replayed by `load_edited_model`). Returns
    `{"heads": [kept per layer], "neurons": [kept per layer], "attention_removed": [layers],
    "ffn_removed": [layers]}`."""
    st = structure(model)
    if tuple(head_mask.shape) != (st.num_layers, st.max_heads) or \
            tuple(neuron_mask.shape) != (st.num_layers, st.max_neurons):
        raise ValueError(f"shrink: masks {tuple(head_mask.shape)}, {tuple(neuron_mask.shape)} do not fit the model "
                         f"({st.num_layers} layers, {st.max_heads} heads, {st.max_neurons} neurons at most)")
    fold_masks(model, head_mask, neuron_mask)
    kept_h, kept_f, attn_gone, ffn_gone = [], [], [], []
    for i in range(st.num_layers):
        heads = [h for h in range(st.heads[i]) if float(head_mask[i, h]) != 0.0]
        neurons = [j for j in range(st.neurons[i]) if float(neuron_mask[i, j]) != 0.0]
        if len(heads) < st.heads[i]:
            record_edit(model, "heads", layer=i, keep=heads)
        if len(neurons) < st.neurons[i]:
            record_edit(model, "ffn_neurons", layer=i, keep=neurons)
        kept_h.append(len(heads))
        kept_f.append(len(neurons))
        if not heads and st.heads[i]:
            attn_gone.append(i)
        if not neurons and st.neurons[i]:
            ffn_gone.append(i)
    return {"heads": kept_h, "neurons": kept_f, "attention_removed": attn_gone, "ffn_removed": ffn_gone}


ATTENTION_ROLES = ("query", "key", "value", "attn_out")
FFN_ROLES = ("ffn_in", "ffn_out")


def selected_units(model: nn.Module, targets: list[str] | None, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Which existing heads and neurons a recipe may remove (bool [L, Hmax], [L, Fmax]).

    `targets` entries (exact names or `re:` patterns, `workbench.targets`) are matched against
    the encoder layers (`bert.encoder.layer.3`: its heads and neurons) and the layers' Linear
    modules (an attention projection such as `...attention.self.query`: that layer's heads;
    `...intermediate.dense` / `...output.dense`: its neurons). None: every layer. An entry
    matching nothing is a ConfigError."""
    from workbench.targets import resolve_targets

    arch, st = architecture(model, where), structure(model)
    valid_h, valid_f = st.valid()
    if targets is None:
        return valid_h, valid_f
    candidates: dict[str, nn.Module] = {}
    kind: dict[str, tuple[int, str]] = {}
    for i in range(st.num_layers):
        candidates[arch.layer_prefix(i)] = arch.layers[i]
        kind[arch.layer_prefix(i)] = (i, "layer")
        for role in ATTENTION_ROLES + FFN_ROLES:
            name = arch.module_name(i, role)
            candidates[name], kind[name] = arch.module(i, role), (i, "attention" if role in ATTENTION_ROLES else "ffn")
    chosen = resolve_targets(model, targets, where, kind=nn.Module, candidates=candidates)
    heads, neurons = torch.zeros_like(valid_h), torch.zeros_like(valid_f)
    for name in chosen:
        i, what = kind[name]
        if what in ("layer", "attention"):
            heads[i] = valid_h[i]
        if what in ("layer", "ffn"):
            neurons[i] = valid_f[i]
    return heads, neurons
