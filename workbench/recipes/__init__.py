"""Recipes, selectable by name. Importing this package registers the built-in ones."""
from workbench.recipes.base import (  # noqa: F401
    RECIPES, Recipe, RecipeContext, TrainState, build_recipe, recipe_class, register_recipe,
)
from workbench.recipes import augment, distill, dynamic, finetune, prune, quantize  # noqa: F401
from workbench.recipes import data  # noqa: F401,E402  (registers pseudo_label)
from workbench import runtime  # noqa: F401,E402  (registers `workbench_runtime`)
