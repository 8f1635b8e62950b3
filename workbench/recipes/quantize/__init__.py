"""Quantization recipes."""
from workbench.recipes.quantize.dynamic import DynamicInt8, quantize_dynamic_int8  # noqa: F401
from workbench.recipes.quantize.smoothquant import SmoothQuant  # noqa: F401
from workbench.recipes.quantize.static import Int8Linear, StaticInt8  # noqa: F401
from workbench.recipes.quantize.qat import QAT  # noqa: F401
