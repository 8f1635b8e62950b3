"""Student builders: fewer layers copied from the teacher, or a narrower random model."""
from __future__ import annotations

import copy

import torch
from torch import nn

from workbench.config import ConfigError


def encoder_layers(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """(parent module, attribute name, layer list) of a transformer encoder's layer stack.

    Works for BERT/MiniLM (`bert.encoder.layer`), DistilBERT (`distilbert.transformer.layer`),
    RoBERTa and friends: the longest ModuleList whose attribute is `layer` or `layers`.
    """
    best = None
    for name, module in model.named_modules():
        for attr in ("layer", "layers"):
            child = getattr(module, attr, None)
            if isinstance(child, nn.ModuleList) and (best is None or len(child) > len(best[2])):
                best = (module, attr, child)
    if best is None:
        raise ConfigError(f"cannot find the encoder layer stack of {type(model).__name__}")
    return best


def build_student(teacher: nn.Module, layers: list[int] | None = None, init: str = "copy",
                  num_layers: int | None = None, hidden_size: int | None = None,
                  intermediate_size: int | None = None, num_attention_heads: int | None = None,
                  seed: int = 0, where: str = "student") -> nn.Module:
    """A smaller model of the teacher's class.

    init="copy": DistilBERT-style initialisation, the teacher's embeddings, head and the encoder
    layers listed in `layers` (default: every other layer).
    init="random": a model of the same family built from a modified config (fewer layers and/or
    narrower), randomly initialised with `seed`.
    """
    _, _, teacher_layers = encoder_layers(teacher)
    depth = len(teacher_layers)
    if init == "copy":
        chosen = list(layers) if layers is not None else list(range(0, depth, 2))
        bad = [i for i in chosen if i >= depth]
        if bad:
            raise ConfigError(f"{where}: 'layers' {bad} out of range: the teacher has {depth} layers (0..{depth - 1})")
        student = copy.deepcopy(teacher)
        parent, attr, _ = encoder_layers(student)
        kept = nn.ModuleList([copy.deepcopy(teacher_layers[i]) for i in chosen])
        for new_idx, layer in enumerate(kept):
            for sub in layer.modules():  # keep per-layer indices (used by caches) consistent
                if hasattr(sub, "layer_idx"):
                    sub.layer_idx = new_idx
        setattr(parent, attr, kept)
        student.config.num_hidden_layers = len(chosen)
        return student
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = num_layers or (len(layers) if layers else max(1, depth // 2))
    for key, value in (("hidden_size", hidden_size), ("intermediate_size", intermediate_size),
                       ("num_attention_heads", num_attention_heads)):
        if value is not None:
            setattr(config, key, value)
    heads = config.num_attention_heads
    if config.hidden_size % heads:
        raise ConfigError(f"{where}: hidden_size {config.hidden_size} is not divisible by "
                          f"num_attention_heads {heads}")
    torch.manual_seed(seed)
    return type(teacher)(config).eval()
