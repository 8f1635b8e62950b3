"""Encoder depths known before any stage runs, for checking the layer numbers a recipe names.

The pipeline reads the starting model's depth once, then follows the stages: a recipe that
changes the depth (`Recipe.output_depth`: a student) gives its stage, and every stage built on
it, the new depth. Each recipe then checks its own layer settings (`Recipe.check_depth`) against
`Depths`: a layer past the model it will meet fails while the recipe file is read, not when its
stage starts after the earlier ones trained."""
from __future__ import annotations

from dataclasses import dataclass, field

from workbench.config import ConfigError


@dataclass(frozen=True)
class Depths:
    """What a stage's recipes can know about depths before any work."""

    entering: int
    """Layers of the model the stage starts from (its `from:` stage, or the pipeline's model)."""
    stage: int
    """Layers after the stage's own depth-changing recipes: the model it trains and saves."""
    stages: dict[str, int] = field(default_factory=dict)
    """Earlier stages' final depths, by name (teachers that are stages)."""


def check_layer_numbers(numbers: list[tuple[str | None, str, int]], depths: Depths, where: str) -> None:
    """`Recipe.layer_numbers` (1-based, negative from the end, 0 the embeddings) against the
    stage's depth, or the teacher stage's; a teacher given by name or path is left to the recipe
    (its depth is its own)."""
    for teacher, key, number in numbers:
        n = depths.stage if teacher is None else depths.stages.get(teacher)
        if n is None or abs(number) <= n:
            continue
        side = "this stage's model" if teacher is None else f"teacher '{teacher}' (a stage)"
        raise ConfigError(f"{where}: '{key}' names layer {number}, but {side} has {n} layers "
                          f"(1..{n}, or -1..-{n} from the end)")
