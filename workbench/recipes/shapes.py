"""Encoder depths and attention widths known before any stage runs, for checking the settings
a recipe sizes by them (layer numbers, relation heads).

The pipeline reads the starting model's depth and attention width once, then follows the
stages: a recipe that changes them (`Recipe.output_depth`: a student; `Recipe.output_width`: a
narrower student, or pruning that removes heads and so leaves layers of different widths) gives
its stage, and every stage built on it, the new value. Each recipe then checks its own settings
(`Recipe.check_shapes`) against `Shapes`: a layer past the model it will meet, or relation heads
that do not divide its width, fail while the recipe file is read, not when its stage starts
after the earlier ones trained."""
from __future__ import annotations

from dataclasses import dataclass, field

from workbench.config import ConfigError


@dataclass(frozen=True)
class Shapes:
    """What a stage's recipes can know about depths and widths before any work."""

    entering: int
    """Layers of the model the stage starts from (its `from:` stage, or the pipeline's model)."""
    stage: int
    """Layers after the stage's own depth-changing recipes: the model it trains and saves."""
    stages: dict[str, int] = field(default_factory=dict)
    """Earlier stages' final depths, by name (teachers that are stages)."""
    width: int | None = None
    """Query/key/value width (heads x head size) of every layer of the stage's model after its
    own recipes; None where it is not one number known in advance (heads removed by pruning)."""
    widths: dict[str, int | None] = field(default_factory=dict)
    """Earlier stages' final widths, by name, as `width`."""


def check_layer_numbers(numbers: list[tuple[str | None, str, int]], shapes: Shapes, where: str) -> None:
    """`Recipe.layer_numbers` (1-based, negative from the end, 0 the embeddings) against the
    stage's depth, or the teacher stage's; a teacher given by name or path is left to the recipe
    (its depth is its own)."""
    for teacher, key, number in numbers:
        n = shapes.stage if teacher is None else shapes.stages.get(teacher)
        if n is None or abs(number) <= n:
            continue
        side = "this stage's model" if teacher is None else f"teacher '{teacher}' (a stage)"
        raise ConfigError(f"{where}: '{key}' names layer {number}, but {side} has {n} layers "
                          f"(1..{n}, or -1..-{n} from the end)")
