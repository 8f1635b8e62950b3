"""Figures (matplotlib, Agg backend: works headless)."""
from workbench.plots.runs import accuracy_vs_throughput  # noqa: F401
