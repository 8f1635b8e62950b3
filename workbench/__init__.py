"""workbench: make transformer models small and fast on CPUs.

Distillation, pruning and quantization recipes composed in pipelines, run on our own Cython
sparse/int8 kernels, swept with Optuna, and measured as accuracy vs throughput.
"""
__version__ = "0.1.0"
