"""Cython CPU kernels for the workbench runtime (see docs/ARCHITECTURE.md, "Kernels").

Modules: ``cpu`` (feature detection, ISA dispatch), ``int8`` (dense / 1x4 block-sparse int8
linear), ``sparse`` (fp32 1x4 block-sparse linear), ``ops`` (GELU, LayerNorm, softmax,
quantization).  Build with ``python setup.py build_ext --inplace``.
"""
