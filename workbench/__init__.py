"""workbench: make transformer models small and fast on CPUs.

Distillation, pruning and quantization recipes composed in pipelines, run on our own Cython
sparse/int8 kernels, swept with Optuna, and measured as accuracy vs throughput.
"""
__version__ = "0.1.0"

# Before anything imports torch: workbench_ext's import gives OpenMP (torch's libgomp) a short
# spin (GOMP_SPINCOUNT=20000, about a millisecond here), then sleep, unless the environment says
# otherwise (workbench_ext/__init__.py).
# With libgomp's default torch's threads spin about 10 ms after every parallel op, on the cores
# our runtime's pool threads need: torch calls and engine calls taking turns in one process cost
# the demo student's batch-1 forward 1.18 -> 1.78 ms (results/demo/README.md). libgomp reads
# the setting once, when torch loads it, so it only takes effect when workbench comes first.
import workbench_ext  # noqa: E402,F401
