"""Student builders: fewer layers copied from the teacher, or a narrower random model."""
from __future__ import annotations

import copy

import torch
from torch import nn

from workbench.config import ConfigError
from workbench.models.arch import architecture


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
    arch = architecture(teacher, where)
    teacher_layers = arch.layers
    depth = len(teacher_layers)
    if init == "copy":
        chosen = list(layers) if layers is not None else default_layers(depth)
        check_student_depth(depth, chosen, None, where)
        # copy everything but the layer stack, then the chosen layers (copies, not shared)
        memo = {id(teacher_layers): nn.ModuleList()}
        student = copy.deepcopy(teacher, memo)
        architecture(student, where).set_layers(
            nn.ModuleList([copy.deepcopy(teacher_layers[i]) for i in chosen]))
        return student
    check_student_depth(depth, None, num_layers, where)
    fam = arch.family
    config = copy.deepcopy(teacher.config)
    setattr(config, fam.num_layers_attr, student_depth(depth, layers, init, num_layers))
    for attr, value in ((fam.hidden_attr, hidden_size), (fam.intermediate_attr, intermediate_size),
                        (fam.num_heads_attr, num_attention_heads)):
        if value is not None:
            setattr(config, attr, value)
    hidden, heads = getattr(config, fam.hidden_attr), getattr(config, fam.num_heads_attr)
    for attr in fam.same_width:  # ELECTRA's embedding_size follows the hidden size where the
        # teacher's did; a teacher that projects its embeddings (ELECTRA-small) keeps its width
        if getattr(teacher.config, attr, None) == getattr(teacher.config, fam.hidden_attr):
            setattr(config, attr, hidden)
    if hidden % heads:
        raise ConfigError(f"{where}: hidden_size {hidden} is not divisible by num_attention_heads {heads}")
    torch.manual_seed(seed)
    return type(teacher)(config).eval()


def default_layers(depth: int) -> list[int]:
    """The layers a copied student keeps by default: every other one, from the first."""
    return list(range(0, depth, 2))


def student_depth(depth: int, layers: list[int] | None, init: str, num_layers: int | None) -> int:
    """Layers of the student `build_student` makes from a `depth`-layer teacher."""
    if init == "copy":
        return len(layers) if layers is not None else len(default_layers(depth))
    return num_layers or (len(layers) if layers else max(1, depth // 2))


def check_student_depth(depth: int, layers: list[int] | None, num_layers: int | None, where: str) -> None:
    """The layers a student copies exist in its `depth`-layer teacher, and a random student is
    no deeper than it (so no stage is deeper than the pipeline's starting model: the pipeline
    checks `layers` against that model before any stage trains)."""
    bad = [i for i in layers or [] if i >= depth]
    if bad:
        raise ConfigError(f"{where}: 'layers' {bad} out of range: the teacher has {depth} layers (0..{depth - 1})")
    if num_layers is not None and num_layers > depth:
        raise ConfigError(f"{where}: 'num_layers' {num_layers} is more than the teacher's {depth} layers; "
                          "a student is at most as deep as its teacher")
