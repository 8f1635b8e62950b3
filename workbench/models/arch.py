"""One architecture adapter: where an encoder family keeps its embeddings, layers and heads.

Every piece of the workbench that needs to know *where* a model's parts live (pruning's default
targets, per-layer sparsity, the student builder, the runtime's weight reader, distillation
hooks) asks this module instead of guessing from module names:

    arch = architecture(model, where="stage 'pruned' recipe 'magnitude_prune'")
    arch.layers                     # the encoder's nn.ModuleList
    arch.module(3, "query")         # bert.encoder.layer.3.attention.self.query
    arch.encoder_linears()          # {qualified name: Linear} in layer order
    arch.head_modules()             # pooler / pre_classifier / classifier

Supported families (matched by `config.model_type`, then checked against the module tree):

* `bert`: BERT, MiniLM and other `BertFor*` models (`bert.encoder.layer`);
* `distilbert`: `DistilBertFor*` (`distilbert.transformer.layer`);
* `roberta`: RoBERTa, XLM-R, CamemBERT (`roberta.encoder.layer`; the BERT layer layout,
  positions offset by `padding_idx + 1`, a `RobertaClassificationHead` instead of a pooler).

A torch dynamic-int8 copy (`torch.ao.quantization.quantize_dynamic`) keeps the same module
paths, so the adapter works on it too; its Linears are then quantized modules (a `weight()`
method and `_packed_params` instead of a `weight` parameter).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from workbench.models.families import NORMS, ROLES, Family, check_supported, unsupported_error


def _get(root: nn.Module, path: str) -> Any:
    obj: Any = root
    for part in path.split(".") if path else ():
        obj = obj[int(part)] if part.isdigit() and isinstance(obj, (nn.ModuleList, nn.Sequential)) \
            else getattr(obj, part)
    return obj


def _has(root: nn.Module, path: str) -> bool:
    try:
        _get(root, path)
    except (AttributeError, IndexError):
        return False
    return True


def architecture(model: nn.Module, where: str = "model") -> "Architecture":
    """The adapter for `model`: its family by `config.model_type`, checked against the module
    tree (the task model must hold the base model at `family.base` and the layer stack)."""
    family = check_supported(model, where)
    model_type = model.config.model_type
    if not _has(model, family.base):
        raise unsupported_error(where, model, model_type,
                                f"expected a task model such as a {family.name} sequence classifier, with the "
                                f"base model at '{family.base}'")
    layers_path = f"{family.base}.{family.layers}"
    if not (_has(model, layers_path) and isinstance(_get(model, layers_path), nn.ModuleList)):
        raise unsupported_error(where, model, model_type, f"no layer list at '{layers_path}'")
    return Architecture(family, model)


def _is_linear_like(m: Any) -> bool:
    """A Linear, or a torch-quantized one (dynamic int8 keeps `_packed_params`)."""
    return isinstance(m, nn.Linear) or hasattr(m, "_packed_params") or \
        (isinstance(m, nn.Module) and hasattr(m, "weight") and hasattr(m, "in_features"))


class Architecture:
    """A `Family` bound to one model instance."""

    def __init__(self, family: Family, model: nn.Module) -> None:
        self.family = family
        self.model = model

    def __repr__(self) -> str:
        return f"Architecture({self.family.name}, {type(self.model).__name__}, layers={self.num_layers})"

    # ---- parts -------------------------------------------------------------------------------
    @property
    def base(self) -> nn.Module:
        return _get(self.model, self.family.base)

    @property
    def embeddings(self) -> nn.Module:
        return _get(self.base, self.family.embeddings)

    @property
    def word_embeddings(self) -> nn.Embedding:
        return _get(self.embeddings, self.family.word_embeddings)

    @property
    def embedding_projection(self) -> nn.Module | None:
        """The Linear from the embeddings' width to the layers' (ELECTRA-small), else None."""
        path = self.family.embedding_projection
        return _get(self.base, path) if path and _has(self.base, path) else None

    @property
    def embedding_projection_name(self) -> str:
        """Its qualified name (e.g. "electra.embeddings_project"); "" for a family without one."""
        path = self.family.embedding_projection
        return f"{self.family.base}.{path}" if path else ""

    def embed(self, **inputs: Any) -> Any:
        """The first layer's input: the embeddings module on `inputs` (input_ids, token_type_ids),
        then the projection to the layers' width where the family has one."""
        h = self.embeddings(**inputs)
        project = self.embedding_projection
        return h if project is None else project(h)

    @property
    def layers(self) -> nn.ModuleList:
        return _get(self.base, self.family.layers)

    @property
    def layers_path(self) -> str:
        """Qualified name of the layer list, e.g. "bert.encoder.layer"."""
        return f"{self.family.base}.{self.family.layers}"

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return int(getattr(self.config, self.family.hidden_attr))

    @property
    def intermediate_size(self) -> int:
        return int(getattr(self.config, self.family.intermediate_attr))

    @property
    def config_num_heads(self) -> int:
        return int(getattr(self.config, self.family.num_heads_attr))

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.config_num_heads

    def num_heads(self, i: int) -> int:
        """Heads of layer `i` as the weights stand (fewer than the config's after head pruning)."""
        return int(self.module(i, "query").out_features) // self.head_size

    # ---- per-layer modules -------------------------------------------------------------------
    def _check_index(self, i: int) -> int:
        n = self.num_layers
        if not isinstance(i, int) or not -n <= i < n:
            raise IndexError(f"layer {i} out of range: {type(self.model).__name__} has {n} layers")
        return i % n

    def layer_prefix(self, i: int) -> str:
        """Qualified name of layer `i`, e.g. "bert.encoder.layer.3"."""
        return f"{self.layers_path}.{self._check_index(i)}"

    def _role_path(self, role: str) -> str:
        path = self.family.roles.get(role) or self.family.norms.get(role)
        if path is None:
            raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES + NORMS)}")
        return path

    def module_name(self, i: int, role: str) -> str:
        """Qualified name of `role` in layer `i`, e.g. "bert.encoder.layer.3.attention.self.query"."""
        return f"{self.layer_prefix(i)}.{self._role_path(role)}"

    def module(self, i: int, role: str) -> nn.Module:
        """The module of `role` (ROLES or NORMS) in layer `i`."""
        path = self._role_path(role)
        return _get(self.layers[self._check_index(i)], path)

    def encoder_linears(self) -> dict[str, nn.Module]:
        """Every encoder Linear by qualified name, layer by layer in ROLES order (plain or
        torch-quantized modules)."""
        out: dict[str, nn.Module] = {}
        for i in range(self.num_layers):
            for role in ROLES:
                m = self.module(i, role)
                if _is_linear_like(m):
                    out[self.module_name(i, role)] = m
        return out

    def head_modules(self) -> dict[str, nn.Module]:
        """The pooler (when the family has one) and the classifier modules, by qualified name;
        those the model lacks (e.g. a BertModel-based task model without pooler) are left out."""
        names = ([self.family.pooler] if self.family.pooler else []) + list(self.family.classifier)
        return {n: _get(self.model, n) for n in names if _has(self.model, n) and _get(self.model, n) is not None}

    # ---- surgery -----------------------------------------------------------------------------
    def set_layers(self, layers: nn.ModuleList) -> None:
        """Replace the encoder's layer stack; updates the config's layer count and any per-layer
        `layer_idx` attributes (used by HF caches) to the new positions."""
        if not isinstance(layers, nn.ModuleList):
            layers = nn.ModuleList(layers)
        parent_path, _, attr = self.family.layers.rpartition(".")
        parent = _get(self.base, parent_path)
        for new_idx, layer in enumerate(layers):
            for sub in layer.modules():
                if hasattr(sub, "layer_idx"):
                    sub.layer_idx = new_idx
        setattr(parent, attr, layers)
        for cfg in (self.config, getattr(self.base, "config", None)):  # usually the same object
            if cfg is not None:
                setattr(cfg, self.family.num_layers_attr, len(layers))
