"""Pruning recipes."""
from workbench.recipes.prune.magnitude import MagnitudePrune, magnitude_prune_  # noqa: F401
from workbench.recipes.prune.structured import StructuredPrune  # noqa: F401
from workbench.recipes.prune.retraining_free import RetrainingFreePrune  # noqa: F401
from workbench.recipes.prune.gradient_free import GradientFreePrune  # noqa: F401
from workbench.recipes.prune.movement import MovementPrune  # noqa: F401
from workbench.recipes.prune.vocab import TrimVocab  # noqa: F401
from workbench.recipes.prune.neuron_order import SortFfnNeurons  # noqa: F401
