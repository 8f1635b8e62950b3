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

from dataclasses import dataclass
from typing import Any

from torch import nn

from workbench.config import ConfigError

ROLES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")
"""The Linear layers of one encoder layer, in forward order."""
NORMS = ("attn_norm", "ffn_norm")
"""The LayerNorms of one encoder layer (post-LN: after attention, after the FFN)."""

SUPPORTED_TEXT = "bert (BERT, MiniLM), distilbert, roberta (RoBERTa, XLM-R)"


@dataclass(frozen=True)
class Family:
    """Where one encoder family keeps its parts. Paths are dotted attribute paths; `embeddings`
    and `layers` are relative to the base model (`model.<base>`), `roles` and `norms` relative
    to one layer, `pooler`, `classifier` and the `head_*` paths relative to the task model."""

    name: str
    model_types: tuple[str, ...]
    """`config.model_type` values of this family."""
    base: str
    """Attribute of the task model holding the base model (`bert`, `distilbert`, `roberta`)."""
    embeddings: str
    layers: str
    """The encoder's nn.ModuleList, relative to the base model."""
    roles: dict[str, str]
    """ROLES -> path inside a layer."""
    norms: dict[str, str]
    """NORMS -> path inside a layer."""
    pooler: str | None
    """The pooler, relative to the task model (None: the family's classifiers have none)."""
    classifier: tuple[str, ...]
    """Classification-head modules after the pooler, relative to the task model."""
    num_layers_attr: str
    num_heads_attr: str
    hidden_attr: str
    intermediate_attr: str
    activation_attr: str
    """Config attribute naming the FFN activation (`hidden_act` / `activation`)."""
    head_dense: str
    """Sequence classifiers: the Linear applied to the [CLS] vector before the output layer."""
    head_activation: str
    """"tanh" or "relu", applied after `head_dense`."""
    head_out: str
    """Sequence classifiers: the output Linear (-> num_labels)."""
    word_embeddings: str = "word_embeddings"
    position_embeddings: str = "position_embeddings"
    token_type_embeddings: str | None = "token_type_embeddings"
    embedding_norm: str = "LayerNorm"
    position_offset: bool = False
    """True when position ids start at `padding_idx + 1` and padding tokens take position
    `padding_idx` (RoBERTa's `create_position_ids_from_input_ids`)."""

    def __hash__(self) -> int:  # the dict fields are not hashable; a family is its name
        return hash(self.name)

    def __post_init__(self) -> None:
        missing = [r for r in ROLES if r not in self.roles] + [n for n in NORMS if n not in self.norms]
        if missing:  # pragma: no cover - a programming error in FAMILIES
            raise ValueError(f"family {self.name}: no path for {missing}")


_BERT_ROLES = {
    "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
    "attn_out": "attention.output.dense", "ffn_in": "intermediate.dense", "ffn_out": "output.dense",
}
_BERT_NORMS = {"attn_norm": "attention.output.LayerNorm", "ffn_norm": "output.LayerNorm"}

FAMILIES: dict[str, Family] = {
    "bert": Family(
        name="bert", model_types=("bert",), base="bert", embeddings="embeddings", layers="encoder.layer",
        roles=_BERT_ROLES, norms=_BERT_NORMS, pooler="bert.pooler", classifier=("classifier",),
        num_layers_attr="num_hidden_layers", num_heads_attr="num_attention_heads",
        hidden_attr="hidden_size", intermediate_attr="intermediate_size", activation_attr="hidden_act",
        head_dense="bert.pooler.dense", head_activation="tanh", head_out="classifier",
    ),
    "distilbert": Family(
        name="distilbert", model_types=("distilbert",), base="distilbert", embeddings="embeddings",
        layers="transformer.layer",
        roles={"query": "attention.q_lin", "key": "attention.k_lin", "value": "attention.v_lin",
               "attn_out": "attention.out_lin", "ffn_in": "ffn.lin1", "ffn_out": "ffn.lin2"},
        norms={"attn_norm": "sa_layer_norm", "ffn_norm": "output_layer_norm"},
        pooler=None, classifier=("pre_classifier", "classifier"),
        num_layers_attr="n_layers", num_heads_attr="n_heads", hidden_attr="dim",
        intermediate_attr="hidden_dim", activation_attr="activation",
        head_dense="pre_classifier", head_activation="relu", head_out="classifier",
        token_type_embeddings=None,
    ),
    "roberta": Family(
        name="roberta", model_types=("roberta", "xlm-roberta", "camembert"), base="roberta",
        embeddings="embeddings", layers="encoder.layer", roles=_BERT_ROLES, norms=_BERT_NORMS,
        pooler=None, classifier=("classifier",),
        num_layers_attr="num_hidden_layers", num_heads_attr="num_attention_heads",
        hidden_attr="hidden_size", intermediate_attr="intermediate_size", activation_attr="hidden_act",
        head_dense="classifier.dense", head_activation="tanh", head_out="classifier.out_proj",
        position_offset=True,
    ),
}

_BY_MODEL_TYPE = {mt: fam for fam in FAMILIES.values() for mt in fam.model_types}


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


def _unsupported(where: str, obj: Any, model_type: Any, why: str = "") -> ConfigError:
    mt = f"model_type '{model_type}'" if model_type else "no model_type"
    extra = f" ({why})" if why else ""
    return ConfigError(f"{where}: {type(obj).__name__} ({mt}) is not a supported encoder family{extra}; "
                       f"supported: {SUPPORTED_TEXT}")


def check_supported(config_or_model: Any, where: str) -> Family:
    """The family of a model or of a Hugging Face config, from `model_type` alone (no module
    tree needed: usable while a pipeline is validated, before any model is built).
    Unsupported -> ConfigError naming the class and the supported families."""
    config = getattr(config_or_model, "config", config_or_model)
    model_type = getattr(config, "model_type", None)
    family = _BY_MODEL_TYPE.get(model_type)
    if family is None:
        raise _unsupported(where, config_or_model, model_type)
    return family


def max_sequence_length(config_or_model: Any) -> int | None:
    """Tokens one sequence may hold: the position table's rows, less the `padding_idx + 1` that
    a family whose positions start after the padding index (RoBERTa) cannot use; None when the
    config has no `max_position_embeddings` (then the model sets no limit we know of)."""
    config = getattr(config_or_model, "config", config_or_model)
    rows = getattr(config, "max_position_embeddings", None)
    if not isinstance(rows, int):
        return None
    family = _BY_MODEL_TYPE.get(getattr(config, "model_type", None))
    if family is not None and family.position_offset:
        rows -= int(getattr(config, "pad_token_id", None) or 0) + 1
    return rows


def architecture(model: nn.Module, where: str = "model") -> "Architecture":
    """The adapter for `model`: its family by `config.model_type`, checked against the module
    tree (the task model must hold the base model at `family.base` and the layer stack)."""
    family = check_supported(model, where)
    model_type = model.config.model_type
    if not _has(model, family.base):
        raise _unsupported(where, model, model_type,
                           f"expected a task model such as a {family.name} sequence classifier, with the "
                           f"base model at '{family.base}'")
    layers_path = f"{family.base}.{family.layers}"
    if not (_has(model, layers_path) and isinstance(_get(model, layers_path), nn.ModuleList)):
        raise _unsupported(where, model, model_type, f"no layer list at '{layers_path}'")
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
