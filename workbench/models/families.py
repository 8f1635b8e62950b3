"""The encoder families the workbench supports: where each keeps its parts (`Family`, one
entry of `FAMILIES`), and what a family is told from a Hugging Face config alone
(`check_supported`, `max_sequence_length`: usable while a pipeline is validated, before any
model is built). `workbench.models.arch.architecture` is the adapter that applies a family to
a model; nothing else reads these paths."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workbench.config import ConfigError

ROLES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")
"""The Linear layers of one encoder layer, in forward order."""
NORMS = ("attn_norm", "ffn_norm")
"""The LayerNorms of one encoder layer (post-LN: after attention, after the FFN)."""

SUPPORTED_TEXT = "bert (BERT, MiniLM), distilbert, roberta (RoBERTa, XLM-R), electra (ELECTRA discriminators)"


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
    """"tanh", "relu" or "gelu" (erf), applied after `head_dense`."""
    head_out: str
    """Sequence classifiers: the output Linear (-> num_labels)."""
    word_embeddings: str = "word_embeddings"
    position_embeddings: str = "position_embeddings"
    token_type_embeddings: str | None = "token_type_embeddings"
    embedding_norm: str = "LayerNorm"
    position_offset: bool = False
    """True when position ids start at `padding_idx + 1` and padding tokens take position
    `padding_idx` (RoBERTa's `create_position_ids_from_input_ids`)."""
    same_width: tuple[str, ...] = ()
    """Config attributes that follow the hidden size in a random student whose teacher had them
    equal to it (ELECTRA's `embedding_size`)."""
    embedding_projection: str | None = None
    """Under `base`: the Linear from the embeddings' width to the layers' (ELECTRA-small's
    `embeddings_project`, present when `embedding_size` differs from `hidden_size`)."""

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
    "electra": Family(
        name="electra", model_types=("electra",), base="electra", embeddings="embeddings",
        layers="encoder.layer", roles=_BERT_ROLES, norms=_BERT_NORMS, pooler=None, classifier=("classifier",),
        num_layers_attr="num_hidden_layers", num_heads_attr="num_attention_heads",
        hidden_attr="hidden_size", intermediate_attr="intermediate_size", activation_attr="hidden_act",
        head_dense="classifier.dense", head_activation="gelu", head_out="classifier.out_proj",
        same_width=("embedding_size",), embedding_projection="embeddings_project",
    ),
}

_BY_MODEL_TYPE = {mt: fam for fam in FAMILIES.values() for mt in fam.model_types}


def unsupported_error(where: str, obj: Any, model_type: Any, why: str = "") -> ConfigError:
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
        raise unsupported_error(where, config_or_model, model_type)
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
