"""Pruning recipes."""
from workbench.recipes.prune.magnitude import MagnitudePrune, magnitude_prune_  # noqa: F401
