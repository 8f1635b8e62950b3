"""Recipes, selectable by name. Importing this package registers the built-in ones."""
from workbench.recipes.base import (  # noqa: F401
    RECIPES, Recipe, RecipeContext, TrainState, build_recipe, recipe_class, register_recipe,
)
from workbench.recipes import distill, finetune, prune, quantize  # noqa: F401

try:  # the runtime recipe needs the compiled kernels; without them the rest still works
    import workbench.runtime  # noqa: F401
except ImportError:  # pragma: no cover
    pass
