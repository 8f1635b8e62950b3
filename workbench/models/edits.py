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

import warnings
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
    if any(edit["op"] not in EDITS for edit in edits):
        import workbench.recipes  # noqa: F401  (recipes register their edits, e.g. int8_linear, on import)
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
    with warnings.catch_warnings():  # a zero-width Linear (every head or neuron removed) warns on init
        warnings.simplefilter("ignore", UserWarning)
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


class HeadlessAttention(nn.Module):
    """The self-attention of a layer whose heads were all removed (a `heads` edit keeping none).

    It keeps the (zero-row) query/key/value projections under their own names, so the adapter's
    paths and the state-dict keys stay the same, and returns a zero-width context [B, L, 0]. The
    attention output projection (`attn_out`, now [H, 0]) then gives exactly its bias, so the
    layer still runs: `LayerNorm(residual + attn_out.bias)`, which is what the masked model
    computes when every head's context is multiplied by 0. Where the output projection lives
    inside the attention module (DistilBERT's `out_lin`), it is applied here.
    """

    def __init__(self, old: nn.Module, qkv_names: tuple[str, str, str], out_name: str | None) -> None:
        super().__init__()
        for name, child in old.named_children():
            if isinstance(child, nn.Linear):
                setattr(self, name, child)
        self.qkv_names, self.out_name = qkv_names, out_name
        self.is_causal, self.layer_idx = False, getattr(old, "layer_idx", None)

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        for name in self.qkv_names:  # zero-width outputs; hooks on the projections still fire
            getattr(self, name)(hidden_states)
        ctx = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)
        return (getattr(self, self.out_name)(ctx) if self.out_name else ctx), None


def _head_rows(keep: torch.Tensor, head_size: int) -> torch.Tensor:
    return (keep[:, None] * head_size + torch.arange(head_size)[None, :]).flatten()


@register_edit("heads")
def keep_heads(model: nn.Module, layer: int, keep: list[int]) -> None:
    """Keep only the attention heads `keep` (numbered as the layer stands) of encoder layer
    `layer`: their rows of query/key/value and their columns of the attention output projection.
    The self-attention module's head-count attributes (`num_attention_heads`, `all_head_size`;
    DistilBERT's `n_heads`) follow, so layers may end with different head counts. Keeping no head
    replaces the self-attention with `HeadlessAttention` (the block then adds only its bias)."""
    from workbench.models.arch import architecture

    arch = architecture(model)
    d, n = arch.head_size, arch.num_heads(layer)
    heads = sorted(set(int(h) for h in keep))
    if heads and (heads[0] < 0 or heads[-1] >= n):
        raise ConfigError(f"heads: layer {layer} has {n} heads, asked to keep {heads}")
    rows = _head_rows(torch.tensor(heads, dtype=torch.long), d)
    prefix = arch.layer_prefix(layer)
    for role in ("query", "key", "value"):
        old = arch.module(layer, role)
        _replace(model, prefix, old, _shrink_linear(old, rows, 0))
    out = arch.module(layer, "attn_out")
    _replace(model, prefix, out, _shrink_linear(out, rows, 1))
    q_path = arch.family.roles["query"]
    parent_path = q_path.rpartition(".")[0]
    attn = arch.layers[layer].get_submodule(parent_path)
    for attr, value in (("num_attention_heads", len(heads)), ("n_heads", len(heads)),
                        ("all_head_size", len(heads) * d)):
        if hasattr(attn, attr):
            setattr(attn, attr, value)
    if not heads and not isinstance(attn, HeadlessAttention):
        names = tuple(arch.family.roles[r].rpartition(".")[2] for r in ("query", "key", "value"))
        out_parent, _, out_name = arch.family.roles["attn_out"].rpartition(".")
        inner_out = out_name if out_parent == parent_path else None
        _replace(model, prefix, attn, HeadlessAttention(attn, names, inner_out))  # type: ignore[arg-type]


@register_edit("exit_heads")
def add_exit_heads(model: nn.Module, layers: list[int], pooling: str = "cls") -> None:
    """Give the model an intermediate classifier (`ExitHead`, reading the layer's tokens as
    `pooling` says) after each encoder layer in `layers`, in `model.exit_heads` (keyed by
    `str(layer)`); heads already there are kept. `pooling` defaults to "cls", what a record
    written before the option existed meant."""
    from workbench.models.arch import architecture
    from workbench.models.dynamic import ExitHead

    arch = architecture(model)
    heads = getattr(model, "exit_heads", None)
    if not isinstance(heads, nn.ModuleDict):
        heads = nn.ModuleDict()
    p = float(getattr(model.config, "hidden_dropout_prob", getattr(model.config, "dropout", 0.1)) or 0.0)
    for layer in layers:
        if str(int(layer)) not in heads:
            heads[str(int(layer))] = ExitHead(arch.hidden_size, int(model.config.num_labels), p, pooling)
    model.exit_heads = heads.train(model.training)  # a new module starts in training mode


@register_edit("dynamic_spec")
def set_dynamic_spec(model: nn.Module, spec: dict[str, Any]) -> None:
    """Set `model.dynamic` (a `DynamicSpec`; calling the model then runs it dynamically, see
    `workbench.models.dynamic.set_dynamic`); a later record replaces an earlier one."""
    from workbench.models.dynamic import DynamicSpec, set_dynamic

    set_dynamic(model, DynamicSpec.from_dict(spec))
