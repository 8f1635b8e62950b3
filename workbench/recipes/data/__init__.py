"""Recipes that change what a stage trains on: pseudo-labels from a teacher (`pseudo_label`)."""
from workbench.recipes.data import pseudo_labels  # noqa: F401  (registers pseudo_label)
