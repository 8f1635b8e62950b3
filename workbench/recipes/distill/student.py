"""`student`: replace the stage's model by a smaller student built from it.

DistilBERT-style: copy a chosen subset of the teacher's layers (plus embeddings and head), or
build a narrower, randomly initialised student of the same architecture family.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from workbench.config import fail
from workbench.models.student import build_student, check_student_depth, student_depth
from workbench.recipes.base import Recipe, register_recipe
from workbench.recipes.shapes import Shapes


@dataclass
class StudentConfig:
    layers: list[int] | None = None
    """Teacher layer indices to copy, e.g. [0, 2, 4]. Default: every other layer."""
    init: Literal["copy", "random"] = "copy"
    num_layers: int | None = None
    """With init 'random': depth of the new student (default: len(layers) or half the teacher)."""
    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_attention_heads: int | None = None

    def validate(self, where: str) -> None:
        if self.layers is not None and (not self.layers or min(self.layers) < 0):
            fail(where, "layers", f"must be a non-empty list of layer indices >= 0, got {self.layers}")
        if self.layers is not None and len(set(self.layers)) != len(self.layers):
            fail(where, "layers", f"has repeated indices: {self.layers}")
        if self.init == "copy" and any(v is not None for v in (self.hidden_size, self.intermediate_size,
                                                                 self.num_attention_heads)):
            fail(where, "init", "must be 'random' to change hidden_size/intermediate_size/heads "
                 "(copied layers keep the teacher's width)")
        for key in ("num_layers", "hidden_size", "intermediate_size", "num_attention_heads"):
            v = getattr(self, key)
            if v is not None and v < 1:
                fail(where, key, f"must be >= 1, got {v}")


@register_recipe("student")
class Student(Recipe):
    """Build a student from the incoming (teacher) model."""

    Config = StudentConfig
    uses_architecture = True

    @classmethod
    def output_depth(cls, config: StudentConfig, depth: int) -> int:
        return student_depth(depth, config.layers, config.init, config.num_layers)

    @classmethod
    def output_width(cls, config: StudentConfig, width: int | None) -> int | None:
        return config.hidden_size if config.init == "random" and config.hidden_size is not None else width

    @classmethod
    def check_shapes(cls, config: StudentConfig, shapes: Shapes, where: str) -> None:
        """`layers` and `num_layers` against the model the stage starts from."""
        check_student_depth(shapes.entering, config.layers if config.init == "copy" else None, config.num_layers,
                            where)

    def apply(self, model: nn.Module) -> nn.Module:
        c = self.config
        return build_student(model, layers=c.layers, init=c.init, num_layers=c.num_layers,
                             hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                             num_attention_heads=c.num_attention_heads, seed=self.ctx.seed,
                             where=f"stage '{self.ctx.stage}' recipe 'student'")
