"""Figures (matplotlib, Agg backend: works headless).

Each `*_figure` function returns the matplotlib Figure (inspect its Axes, or save it with
`save_figure(fig, path)`); the plain-named ones save a PNG atomically and return its path.
"""
from workbench.plots.runs import (  # noqa: F401
    accuracy_vs_throughput, per_layer_sparsity, per_layer_sparsity_figure, save_figure, stage_waterfall,
    stage_waterfall_figure)
from workbench.plots.sweep import (  # noqa: F401
    importance_figure, param_importance, param_importances, pareto_figure, pareto_front, pareto_indices,
    read_peers)

__all__ = ["accuracy_vs_throughput", "importance_figure", "param_importance", "param_importances", "pareto_figure",
           "pareto_front", "pareto_indices", "per_layer_sparsity", "per_layer_sparsity_figure", "read_peers",
           "save_figure", "stage_waterfall", "stage_waterfall_figure"]
