"""Distillation recipes: the student builder and the losses that train it."""
from workbench.recipes.distill import losses  # noqa: F401  (registers the losses)
from workbench.recipes.distill.layers import LayerDistill, LayerDistillConfig  # noqa: F401
from workbench.recipes.distill.logits import LogitDistill, kd_loss  # noqa: F401
from workbench.recipes.distill.student import Student  # noqa: F401
from workbench.recipes.distill.minilm import RelationDistill  # noqa: F401  (distill_relations)
from workbench.recipes.distill.multihead import MultiHeadDistill  # noqa: F401  (distill_multihead)
from workbench.recipes.distill.multi_teacher import MultiTeacherDistill  # noqa: F401  (distill_multi_teacher)
from workbench.recipes.distill.unic import UnicDistill  # noqa: F401  (distill_unic)
from workbench.recipes.distill.progressive import ProgressiveDistill  # noqa: F401  (distill_progressive)
