"""Quantization recipes."""
from workbench.recipes.quantize.dynamic import DynamicInt8, quantize_dynamic_int8  # noqa: F401
