"""Structural edits, recorded next to the weights so a saved stage reloads into the same shapes.

A Hugging Face config describes uniform models (every layer the same width). A recipe that
makes a model uneven (an FFN shrunk in one layer, heads removed, a trimmed vocabulary, exits)
records each edit with `record_edit(model, op, **args)`; the list travels in `config.json` as
`workbench_edits`. `load_edited_model(path)` builds the model from the config, replays the
edits in order on the fresh (random) weights, then loads the saved tensors, which now fit.
Edits the config already expresses (fewer layers, a narrower student) need no record.

Register a new edit with `@register_edit("name")` on a function `fn(model, **args)` that changes
the model's shapes in place and is deterministic in its arguments.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from workbench.config import ConfigError

EDITS: dict[str, Callable[..., None]] = {}


def register_edit(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def deco(fn: Callable[..., None]) -> Callable[..., None]:
        if name in EDITS and EDITS[name] is not fn:
            raise ValueError(f"structural edit '{name}' is registered twice")
        EDITS[name] = fn
        return fn

    return deco


def record_edit(model: nn.Module, op: str, **args: Any) -> None:
    """Apply the registered edit `op` to `model` and record it in the model's config."""
    if op not in EDITS:
        raise ConfigError(f"unknown structural edit '{op}' (known: {', '.join(sorted(EDITS))})")
    EDITS[op](model, **args)
    model.config.workbench_edits = list(getattr(model.config, "workbench_edits", None) or []) + [{"op": op, **args}]


def replay_edits(model: nn.Module, edits: list[dict[str, Any]]) -> None:
    for edit in edits:
        args = {k: v for k, v in edit.items() if k != "op"}
        if edit["op"] not in EDITS:
            raise ConfigError(f"the saved model needs the structural edit '{edit['op']}', which is not "
                              f"registered here (known: {', '.join(sorted(EDITS))}); import the plugin that defines it")
        EDITS[edit["op"]](model, **args)


def load_edited_model(path: str | Path) -> nn.Module:
    """A model written by `save_pretrained`, with its recorded structural edits replayed."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    edits = list(getattr(config, "workbench_edits", None) or [])
    if not edits:
        return AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True).eval()
    from safetensors.torch import load_file

    config.workbench_edits = []
    model = AutoModelForSequenceClassification.from_config(config)
    replay_edits(model, edits)
    model.config.workbench_edits = edits
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise ConfigError(f"saved model '{path}' has structural edits but no .safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise ConfigError(f"saved model '{path}' does not fit its recorded edits: missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}")
    return model.eval()


def _shrink_linear(lin: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A copy of `lin` keeping the output rows (dim 0) or input columns (dim 1) in `keep`."""
    w = lin.weight.detach().index_select(dim, keep)
    new = nn.Linear(w.shape[1], w.shape[0], bias=lin.bias is not None)
    with torch.no_grad():
        new.weight.copy_(w)
        if lin.bias is not None:
            new.bias.copy_(lin.bias.detach() if dim == 1 else lin.bias.detach()[keep])
    return new


@register_edit("ffn_neurons")
def keep_ffn_neurons(model: nn.Module, layer: int, keep: list[int]) -> None:
    """Keep only the FFN neurons `keep` of encoder layer `layer` (rows of ffn_in, columns of
    ffn_out): the layer's FFN really gets narrower."""
    from workbench.models.arch import architecture

    arch = architecture(model)
    idx = torch.tensor(sorted(keep), dtype=torch.long)
    ffn_in, ffn_out = arch.module(layer, "ffn_in"), arch.module(layer, "ffn_out")
    if len(idx) and int(idx.max()) >= ffn_in.out_features:
        raise ConfigError(f"ffn_neurons: layer {layer} has {ffn_in.out_features} neurons, asked to keep index {int(idx.max())}")
    _replace(model, arch.layer_prefix(layer), ffn_in, _shrink_linear(ffn_in, idx, 0))
    _replace(model, arch.layer_prefix(layer), ffn_out, _shrink_linear(ffn_out, idx, 1))


def _replace(model: nn.Module, prefix: str, old: nn.Module, new: nn.Module) -> None:
    for name, module in model.named_modules():
        if not name.startswith(prefix):
            continue
        for child_name, child in module.named_children():
            if child is old:
                setattr(module, child_name, new)
                return
    raise ValueError(f"module to replace not found under {prefix}")
