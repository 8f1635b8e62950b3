"""Quantization building blocks (calibration observers); the recipes live in
`workbench.recipes.quantize` (`dynamic_int8`, `static_int8`, `smoothquant`)."""
